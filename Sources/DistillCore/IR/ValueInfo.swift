/// One dimension of a tensor shape: a number, a symbolic name, or nothing known. A negative
/// `value` (older paddle2onnx and tf2onnx write -1 for a dynamic dimension) is kept as written, for
/// export, and means unknown: read sizes through `size`.
public struct ShapeDimension: Hashable, Sendable, CustomStringConvertible {
  public var value: Int64?
  public var param: String?
  public var denotation: String?
  public init(value: Int64? = nil, param: String? = nil, denotation: String? = nil) {
    self.value = value
    self.param = param
    self.denotation = denotation
  }
  /// The known size: `value` when it is not negative.
  public var size: Int64? { value.flatMap { $0 >= 0 ? $0 : nil } }
  /// Declared as a negative number (read as unknown).
  public var isNegative: Bool { (value ?? 0) < 0 }
  public var description: String { size.map(String.init) ?? param ?? "?" }
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
