/// An ONNX tensor element type (`TensorProto.DataType`), kept as its raw enum value so that
/// types newer than this build survive a round trip.
public struct DataType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  public let rawValue: Int32
  public init(rawValue: Int32) { self.rawValue = rawValue }

  public static let undefined = DataType(rawValue: 0)
  public static let float = DataType(rawValue: 1)
  public static let uint8 = DataType(rawValue: 2)
  public static let int8 = DataType(rawValue: 3)
  public static let uint16 = DataType(rawValue: 4)
  public static let int16 = DataType(rawValue: 5)
  public static let int32 = DataType(rawValue: 6)
  public static let int64 = DataType(rawValue: 7)
  public static let string = DataType(rawValue: 8)
  public static let bool = DataType(rawValue: 9)
  public static let float16 = DataType(rawValue: 10)
  public static let double = DataType(rawValue: 11)
  public static let uint32 = DataType(rawValue: 12)
  public static let uint64 = DataType(rawValue: 13)
  public static let complex64 = DataType(rawValue: 14)
  public static let complex128 = DataType(rawValue: 15)
  public static let bfloat16 = DataType(rawValue: 16)

  private static let names: [Int32: String] = [
    0: "undefined", 1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    8: "string", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 14: "complex64",
    15: "complex128", 16: "bfloat16", 17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2",
    20: "float8e5m2fnuz", 21: "uint4", 22: "int4",
  ]

  public var description: String { Self.names[rawValue] ?? "dtype(\(rawValue))" }

  /// Bytes per element in `raw_data` (little-endian, packed); nil for strings, sub-byte and unknown types.
  public var byteSize: Int? {
    switch rawValue {
    case 1, 6, 12: return 4
    case 2, 3, 9, 17, 18, 19, 20: return 1
    case 4, 5, 10, 16: return 2
    case 7, 11, 13, 14: return 8
    case 15: return 16
    default: return nil
    }
  }

  public var isFloatingPoint: Bool { [1, 10, 11, 16].contains(rawValue) }
}
