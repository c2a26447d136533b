import DistillCore

/// Conversions between a tensor's typed protobuf field (`float_data`, `int32_data`, ...) and the
/// packed little-endian bytes the IR holds, following the field rules of `TensorProto`.
enum TypedPayload {
  enum Field: String {
    case floats = "float_data", int32s = "int32_data", int64s = "int64_data", doubles = "double_data"
    case uint64s = "uint64_data", strings = "string_data"
  }

  /// The field `TensorProto` uses for elements of `type`.
  static func field(for type: DataType) -> Field? {
    switch type.rawValue {
    case 1, 14: return .floats
    case 2, 3, 4, 5, 6, 9, 10, 16, 17, 18, 19, 20: return .int32s
    case 7: return .int64s
    case 8: return .strings
    case 11, 15: return .doubles
    case 12, 13: return .uint64s
    default: return nil
    }
  }

  /// Complex numbers take two values of their field.
  static func valuesPerElement(_ type: DataType) -> Int { type == .complex64 || type == .complex128 ? 2 : 1 }

  private static func bytes<T>(of values: [T]) -> [UInt8] {
    values.withUnsafeBytes { Array($0) }
  }

  private static func values<T>(of bytes: [UInt8], _: T.Type) -> [T] {
    let count = bytes.count / MemoryLayout<T>.stride
    return [T](unsafeUninitializedCapacity: count) { buffer, initialized in
      bytes.withUnsafeBytes { raw in
        _ = memcpyBuffer(UnsafeMutableRawBufferPointer(buffer), raw, count * MemoryLayout<T>.stride)
      }
      initialized = count
    }
  }

  private static func memcpyBuffer(_ to: UnsafeMutableRawBufferPointer, _ from: UnsafeRawBufferPointer, _ count: Int)
    -> Int
  {
    if count > 0 { to.baseAddress!.copyMemory(from: from.baseAddress!, byteCount: count) }
    return count
  }

  static func pack(_ values: [Float], as type: DataType) -> [UInt8] { bytes(of: values) }
  static func pack(_ values: [Int64], as type: DataType) -> [UInt8] { bytes(of: values) }
  static func pack(_ values: [Double], as type: DataType) -> [UInt8] { bytes(of: values) }

  /// `int32_data` holds each element of a narrower type in its low bits.
  static func pack(_ values: [Int32], as type: DataType) -> [UInt8] {
    switch type.byteSize {
    case 1: return values.map { UInt8(truncatingIfNeeded: $0) }
    case 2: return bytes(of: values.map { UInt16(truncatingIfNeeded: $0) })
    default: return bytes(of: values)
    }
  }

  static func pack(_ values: [UInt64], as type: DataType) -> [UInt8] {
    type == .uint32 ? bytes(of: values.map { UInt32(truncatingIfNeeded: $0) }) : bytes(of: values)
  }

  static func unpack(_ bytes: [UInt8], as type: DataType) -> [Float] { values(of: bytes, Float.self) }
  static func unpack(_ bytes: [UInt8], as type: DataType) -> [Int64] { values(of: bytes, Int64.self) }
  static func unpack(_ bytes: [UInt8], as type: DataType) -> [Double] { values(of: bytes, Double.self) }

  /// Signed narrow types are sign-extended, the rest (unsigned, bool, float16 bit patterns) zero-extended.
  static func unpack(_ bytes: [UInt8], as type: DataType) -> [Int32] {
    switch type {
    case .int8: return bytes.map { Int32(Int8(bitPattern: $0)) }
    case .int16: return values(of: bytes, Int16.self).map { Int32($0) }
    case .int32: return values(of: bytes, Int32.self)
    default:
      return type.byteSize == 2 ? values(of: bytes, UInt16.self).map { Int32($0) } : bytes.map { Int32($0) }
    }
  }

  static func unpack(_ bytes: [UInt8], as type: DataType) -> [UInt64] {
    type == .uint32 ? values(of: bytes, UInt32.self).map { UInt64($0) } : values(of: bytes, UInt64.self)
  }
}
