import DistillCore
import Foundation

/// Reads `.npy` arrays (format versions 1-3, little-endian, C order).
public enum NumpyFile {
  public static func read(_ path: String) throws -> Tensor {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw ONNXError.unreadable(file: path, reason: "no such file or permission denied")
    }
    let bytes = [UInt8](data)
    func fail(_ problem: String) -> ONNXError {
      ONNXError.unreadable(file: path, reason: "not a valid .npy file: \(problem)")
    }
    guard bytes.count >= 12, bytes[0] == 0x93, Array(bytes[1..<6]) == Array("NUMPY".utf8) else {
      throw fail("no NUMPY magic")
    }
    let major = bytes[6]
    let headerLength =
      major == 1
      ? Int(bytes[8]) | Int(bytes[9]) << 8
      : Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
    let headerStart = major == 1 ? 10 : 12
    guard headerStart + headerLength <= bytes.count else { throw fail("truncated header") }
    let header = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)
    func field(_ key: String) -> String? {
      guard let range = header.range(of: "'\(key)':") else { return nil }
      return String(header[range.upperBound...]).trimmingCharacters(in: .whitespaces)
    }
    guard let descr = field("descr")?.split(separator: "'").first.map(String.init) else { throw fail("no descr") }
    if field("fortran_order")?.hasPrefix("True") == true {
      throw fail("Fortran order is not supported; save with np.ascontiguousarray")
    }
    guard let shapeText = field("shape"), let open = shapeText.firstIndex(of: "("),
      let close = shapeText.firstIndex(of: ")")
    else {
      throw fail("no shape")
    }
    let shape = try shapeText[shapeText.index(after: open)..<close].split(separator: ",").map { part -> Int in
      guard let value = Int(part.trimmingCharacters(in: .whitespaces)), value >= 0 else {
        throw fail("bad shape \(shapeText)")
      }
      return value
    }
    let types: [String: DataType] = [
      "<f4": .float, "<f8": .double, "<f2": .float16, "<i8": .int64, "<i4": .int32, "<i2": .int16, "|i1": .int8,
      "|u1": .uint8, "<u2": .uint16, "<u4": .uint32, "<u8": .uint64, "|b1": .bool,
    ]
    guard let type = types[descr] else { throw fail("dtype \(descr) is not supported") }
    let payload = Array(bytes[(headerStart + headerLength)...])
    guard let size = TensorValue.checkedSize(dims: shape.map { Int64($0) }, dataType: type),
      Int64(payload.count) == size.bytes
    else {
      throw fail("the data has \(payload.count) bytes, shape \(shape) of \(descr) needs a different amount")
    }
    return try Tensor(TensorValue(name: nil, dataType: type, dims: shape.map { Int64($0) }, bytes: payload))
  }
}
