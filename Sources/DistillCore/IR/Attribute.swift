/// An ONNX `AttributeProto`.
public struct Attribute: Sendable {
  public var name: String
  public var value: AttributeValue
  public var docString: String?
  /// For attributes of nodes inside a function body that refer to the function's attributes.
  public var refAttrName: String?
  public var unknownFields: [UnknownField] = []

  public init(name: String, value: AttributeValue, docString: String? = nil, refAttrName: String? = nil) {
    self.name = name
    self.value = value
    self.docString = docString
    self.refAttrName = refAttrName
  }
}

/// The value of an attribute, one case per `AttributeProto.AttributeType`.
public enum AttributeValue: Sendable {
  case undefined
  case float(Float)
  case int(Int64)
  case string([UInt8])
  case tensor(TensorValue)
  case graph(Graph)
  case sparseTensor(OpaqueMessage)
  case typeProto(OpaqueMessage)
  case floats([Float])
  case ints([Int64])
  case strings([[UInt8]])
  case tensors([TensorValue])
  case graphs([Graph])
  case sparseTensors([OpaqueMessage])
  case typeProtos([OpaqueMessage])

  /// The `AttributeProto.AttributeType` number of this case.
  public var typeCode: Int32 {
    switch self {
    case .undefined: 0
    case .float: 1
    case .int: 2
    case .string: 3
    case .tensor: 4
    case .graph: 5
    case .floats: 6
    case .ints: 7
    case .strings: 8
    case .tensors: 9
    case .graphs: 10
    case .sparseTensor: 11
    case .sparseTensors: 12
    case .typeProto: 13
    case .typeProtos: 14
    }
  }

  public var kindName: String {
    [
      "undefined", "float", "int", "string", "tensor", "graph", "floats", "ints", "strings", "tensors",
      "graphs", "sparse_tensor", "sparse_tensors", "type_proto", "type_protos",
    ][Int(typeCode)]
  }
}
