import Foundation

/// An error in a COCO annotation or results file (or in detections handed to `COCOEvaluator`).
/// The description names the file and the entry (by id, or by index when the entry has no id),
/// and for malformed JSON the line and column of the first syntax error.
public struct COCOError: Error, CustomStringConvertible, Equatable, Sendable {
  public let description: String

  public init(_ description: String) { self.description = description }
}

/// Reading of COCO JSON files: decoding with syntax errors located by line and column and type
/// errors located by their path in the document (`annotations[3].bbox[1]`).
///
/// JSONDecoder, not JSONSerialization: on Linux the latter reads long decimals (0.8999999999999999,
/// as Python writes float64 values) through NSDecimalNumber and returns doubles a few ulps off.
enum COCOJSON {
  static func decode<Document: Decodable>(_ type: Document.Type, from path: String) throws -> Document {
    let data: Data
    do {
      data = try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
      throw COCOError("\(path): cannot read the file (\(error.localizedDescription))")
    }
    do {
      return try JSONDecoder().decode(Document.self, from: data)
    } catch let error as DecodingError {
      // The decoder may report a type error before a syntax error further on; syntax comes first.
      let bytes = [UInt8](data)
      if let syntax = JSONSyntaxScan.firstError(in: bytes) {
        let (line, column) = JSONSyntaxScan.lineAndColumn(of: syntax.offset, in: bytes)
        throw COCOError("\(path):\(line):\(column): malformed JSON: \(syntax.message)")
      }
      switch error {
      case .dataCorrupted(let context) where context.codingPath.isEmpty:
        throw COCOError("\(path): malformed JSON (\(context.debugDescription))")
      case .dataCorrupted(let context):
        throw COCOError("\(path): \(location(context.codingPath)): \(context.debugDescription)")
      case .typeMismatch(let expected, let context), .valueNotFound(let expected, let context):
        throw COCOError("\(path): \(location(context.codingPath)): expected \(describe(expected))")
      case .keyNotFound(let key, let context):
        throw COCOError("\(path): \(location(context.codingPath)): missing \"\(key.stringValue)\"")
      @unknown default:
        throw COCOError("\(path): \(error)")
      }
    }
  }

  /// `annotations[3].bbox`; `the top level` for the empty path.
  static func location(_ codingPath: [any CodingKey]) -> String {
    guard !codingPath.isEmpty else { return "the top level" }
    return codingPath.enumerated().map { position, key in
      if let index = key.intValue { return "[\(index)]" }
      return position == 0 ? key.stringValue : ".\(key.stringValue)"
    }.joined()
  }

  private static func describe(_ type: Any.Type) -> String {
    switch type {
    case is Int.Type: return "an integer"
    case is Double.Type: return "a number"
    case is String.Type: return "a string"
    case is Bool.Type: return "true or false"
    case is [Any].Type: return "a list"
    case is [String: Any].Type: return "an object"
    default:
      let name = "\(type)"
      return name.hasPrefix("Array") ? "a list" : name.hasPrefix("Dictionary") ? "an object" : name
    }
  }

  /// A COCO `[x, y, width, height]` box: four finite numbers, width and height not negative.
  static func isValidBox(_ box: [Double]) -> Bool {
    box.count == 4 && box.allSatisfy(\.isFinite) && box[2] >= 0 && box[3] >= 0
  }

  /// A COCO flag such as `iscrowd`: 0/1 or false/true.
  struct Flag: Decodable {
    let value: Bool

    init(from decoder: any Decoder) throws {
      let container = try decoder.singleValueContainer()
      if let value = try? container.decode(Bool.self) {
        self.value = value
        return
      }
      guard let number = try? container.decode(Int.self), number == 0 || number == 1 else {
        throw DecodingError.dataCorruptedError(in: container, debugDescription: "expected 0 or 1")
      }
      value = number == 1
    }
  }
}

/// A validating scan of JSON text that finds the first syntax error and its byte offset. It runs
/// without recursion (nesting depth costs only a byte per level), so hostile input cannot exhaust the stack.
enum JSONSyntaxScan {
  struct SyntaxError { let offset: Int; let message: String }

  private enum Expectation { case value, valueOrClose, key, keyOrClose, colon, commaOrClose }

  /// The first syntax error in `bytes` (RFC 8259 grammar; a leading UTF-8 byte order mark is allowed), or nil.
  static func firstError(in bytes: [UInt8]) -> SyntaxError? {
    var index = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
    var openers: [(byte: UInt8, offset: Int)] = []
    var expectation = Expectation.value
    let count = bytes.count
    while true {
      while index < count, bytes[index] == 0x20 || bytes[index] == 0x09 || bytes[index] == 0x0A || bytes[index] == 0x0D {
        index += 1
      }
      guard index < count else {
        if let open = openers.last {
          let (line, column) = lineAndColumn(of: open.offset, in: bytes)
          let name = open.byte == UInt8(ascii: "{") ? "object" : "array"
          return SyntaxError(offset: count, message: "unexpected end of file: the \(name) opened at line \(line), column \(column) is not closed")
        }
        return expectation == .commaOrClose ? nil : SyntaxError(offset: count, message: "unexpected end of file, expected a value")
      }
      let byte = bytes[index]
      switch expectation {
      case .value, .valueOrClose:
        if expectation == .valueOrClose, byte == UInt8(ascii: "]") {
          openers.removeLast()
          index += 1
          expectation = .commaOrClose
          continue
        }
        switch byte {
        case UInt8(ascii: "{"):
          openers.append((byte, index))
          index += 1
          expectation = .keyOrClose
        case UInt8(ascii: "["):
          openers.append((byte, index))
          index += 1
          expectation = .valueOrClose
        case UInt8(ascii: "\""):
          if let error = scanString(bytes, &index) { return error }
          expectation = .commaOrClose
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
          if let error = scanNumber(bytes, &index) { return error }
          expectation = .commaOrClose
        case UInt8(ascii: "t"), UInt8(ascii: "f"), UInt8(ascii: "n"):
          let literal = byte == UInt8(ascii: "t") ? "true" : byte == UInt8(ascii: "f") ? "false" : "null"
          guard bytes[index...].starts(with: literal.utf8) else {
            return SyntaxError(offset: index, message: "invalid literal, expected '\(literal)'")
          }
          index += literal.utf8.count
          expectation = .commaOrClose
        default:
          return SyntaxError(offset: index, message: "expected a value, found \(describe(byte))")
        }
      case .key, .keyOrClose:
        if expectation == .keyOrClose, byte == UInt8(ascii: "}") {
          openers.removeLast()
          index += 1
          expectation = .commaOrClose
        } else if byte == UInt8(ascii: "\"") {
          if let error = scanString(bytes, &index) { return error }
          expectation = .colon
        } else {
          return SyntaxError(offset: index, message: "expected a string key, found \(describe(byte))")
        }
      case .colon:
        guard byte == UInt8(ascii: ":") else {
          return SyntaxError(offset: index, message: "expected ':' after the key, found \(describe(byte))")
        }
        index += 1
        expectation = .value
      case .commaOrClose:
        guard let open = openers.last else {
          return SyntaxError(offset: index, message: "unexpected \(describe(byte)) after the top-level value")
        }
        let close = open.byte == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: "]")
        if byte == UInt8(ascii: ",") {
          index += 1
          expectation = open.byte == UInt8(ascii: "{") ? .key : .value
        } else if byte == close {
          openers.removeLast()
          index += 1
        } else {
          return SyntaxError(offset: index, message: "expected ',' or '\(Character(UnicodeScalar(close)))', found \(describe(byte))")
        }
      }
    }
  }

  /// 1-based line and column (in characters, counting UTF-8 sequences once) of a byte offset.
  static func lineAndColumn(of offset: Int, in bytes: [UInt8]) -> (line: Int, column: Int) {
    var line = 1, column = 1
    for byte in bytes[..<min(offset, bytes.count)] {
      if byte == 0x0A {
        line += 1
        column = 1
      } else if byte & 0xC0 != 0x80 {
        column += 1
      }
    }
    return (line, column)
  }

  private static func describe(_ byte: UInt8) -> String {
    (0x21..<0x7F).contains(byte) ? "'\(Character(UnicodeScalar(byte)))'" : String(format: "byte 0x%02X", byte)
  }

  private static func scanString(_ bytes: [UInt8], _ index: inout Int) -> SyntaxError? {
    let start = index
    index += 1
    while index < bytes.count {
      let byte = bytes[index]
      if byte == UInt8(ascii: "\"") {
        index += 1
        return nil
      }
      if byte < 0x20 { return SyntaxError(offset: index, message: "control character \(describe(byte)) inside a string") }
      if byte == UInt8(ascii: "\\") {
        guard index + 1 < bytes.count else { break }
        let escaped = bytes[index + 1]
        if escaped == UInt8(ascii: "u") {
          let hex = bytes[(index + 2)..<min(index + 6, bytes.count)]
          guard hex.count == 4, hex.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x66) }) else {
            return SyntaxError(offset: index, message: "invalid \\u escape (expected four hex digits)")
          }
          index += 6
        } else if "\"\\/bfnrt".utf8.contains(escaped) {
          index += 2
        } else {
          return SyntaxError(offset: index, message: "invalid escape \\\(Character(UnicodeScalar(escaped)))")
        }
        continue
      }
      index += 1
    }
    return SyntaxError(offset: start, message: "unterminated string")
  }

  private static func scanNumber(_ bytes: [UInt8], _ index: inout Int) -> SyntaxError? {
    let start = index
    func digits() -> Int {
      let first = index
      while index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39 { index += 1 }
      return index - first
    }
    if bytes[index] == UInt8(ascii: "-") { index += 1 }
    if index < bytes.count, bytes[index] == UInt8(ascii: "0") {
      index += 1
    } else if digits() == 0 {
      return SyntaxError(offset: start, message: "invalid number (no digits)")
    }
    if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
      index += 1
      if digits() == 0 { return SyntaxError(offset: start, message: "invalid number (no digits after '.')") }
    }
    if index < bytes.count, bytes[index] | 0x20 == UInt8(ascii: "e") {
      index += 1
      if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
      if digits() == 0 { return SyntaxError(offset: start, message: "invalid number (no digits in the exponent)") }
    }
    return nil
  }
}
