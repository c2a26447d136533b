/// One dimension of a tensor shape: a number, a symbolic name, or nothing known.
public struct ShapeDimension: Hashable, Sendable, CustomStringConvertible {
  public var value: Int64?
  public var param: String?
  public var denotation: String?
  public init(value: Int64? = nil, param: String? = nil, denotation: String? = nil) {
    self.value = value
    self.param = param
    self.denotation = denotation
  }
  public var description: String { value.map(String.init) ?? param ?? "?" }
}

/// An ONNX `TypeProto`: tensor types are modelled, other kinds are carried whole.
public enum ValueType: Sendable {
  /// `shape` is nil when the rank is unknown.
  case tensor(elementType: DataType, shape: [ShapeDimension]?, denotation: String?)
  case other(OpaqueMessage)

  public var elementType: DataType? {
    if case .tensor(let type, _, _) = self { return type }
    return nil
  }
  public var shape: [ShapeDimension]? {
    if case .tensor(_, let shape, _) = self { return shape }
    return nil
  }
}

/// An ONNX `ValueInfoProto`: a named value with its declared type.
public struct ValueInfo: Sendable {
  public var name: String
  public var type: ValueType?
  public var docString: String?
  public var unknownFields: [UnknownField] = []
  public init(name: String, type: ValueType? = nil, docString: String? = nil) {
    self.name = name
    self.type = type
    self.docString = docString
  }
}
