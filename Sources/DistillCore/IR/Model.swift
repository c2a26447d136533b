/// A protobuf field this build does not model, kept as read so that export writes it back.
public struct UnknownField: Hashable, Sendable {
  public var tag: UInt32
  public var wireType: UInt8
  public var data: [UInt8]
  public init(tag: UInt32, wireType: UInt8, data: [UInt8]) {
    self.tag = tag
    self.wireType = wireType
    self.data = data
  }
}

/// A whole protobuf message carried without being modelled (functions, training info, sparse
/// tensors, non-tensor types): its serialized bytes, written back unchanged.
public struct OpaqueMessage: Hashable, Sendable {
  public var bytes: [UInt8]
  public init(bytes: [UInt8]) { self.bytes = bytes }
}

public struct OperatorSetID: Hashable, Sendable {
  /// "" (or "ai.onnx") is the default operator set; nil when the file left the field out.
  public var domain: String?
  public var version: Int64
  public init(domain: String?, version: Int64) {
    self.domain = domain
    self.version = version
  }
}

public struct StringPair: Hashable, Sendable {
  public var key: String
  public var value: String
  public init(key: String, value: String) {
    self.key = key
    self.value = value
  }
}

/// An ONNX `ModelProto`. Optional properties are nil when the file did not carry the field.
public struct Model: Sendable {
  public var irVersion: Int64?
  public var opsetImports: [OperatorSetID] = []
  public var producerName: String?
  public var producerVersion: String?
  public var domain: String?
  public var modelVersion: Int64?
  public var docString: String?
  public var graph: Graph?
  public var metadataProps: [StringPair] = []
  public var trainingInfo: [OpaqueMessage] = []
  public var functions: [OpaqueMessage] = []
  public var unknownFields: [UnknownField] = []

  public init() {}

  /// The opset version the model imports for `domain` ("" and "ai.onnx" are the same domain).
  public func opsetVersion(forDomain domain: String) -> Int64? {
    let wanted = Graph.canonicalDomain(domain)
    return opsetImports.last { Graph.canonicalDomain($0.domain ?? "") == wanted }?.version
  }
}
