import DistillONNX
import Foundation
import XCTest

/// One crafted file per rejection rule (Tests/Fixtures/hostile/manifest.json): each must fail
/// with an `ONNXError` whose message names the problem.
struct HostileCase: Decodable {
  let file: String
  let rule: String
  let expect: String
  let setup: String?

  static func all() throws -> [HostileCase] {
    let data = try Data(contentsOf: fixtures.appendingPathComponent("hostile/manifest.json"))
    return try JSONDecoder().decode([HostileCase].self, from: data)
  }

  /// Copies the file into a fresh directory (`root/model/NAME`) and creates what `setup` asks for
  /// around it; returns the model's path.
  func prepare() throws -> String {
    let root = try temporaryDirectory()
    let directory = root.appendingPathComponent("model")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let path = directory.appendingPathComponent(file)
    try FileManager.default.copyItem(at: fixtures.appendingPathComponent("hostile/\(file)"), to: path)
    let sixteenBytes = Data(repeating: 7, count: 16)
    let parts = (setup ?? "").split(separator: ":").map(String.init)
    switch parts.first {
    case "symlink":
      try sixteenBytes.write(to: directory.appendingPathComponent("target.bin"))
      try FileManager.default.createSymbolicLink(
        atPath: directory.appendingPathComponent(parts[1]).path, withDestinationPath: "target.bin")
    case "file":
      try Data(repeating: 7, count: Int(parts[2])!).write(to: directory.appendingPathComponent(parts[1]))
    case "secret":
      try sixteenBytes.write(to: directory.appendingPathComponent(parts[1]).standardizedFileURL)
    default:
      break
    }
    return path.path
  }
}

final class HostileFileTests: XCTestCase {
  func testEveryHostileFileIsRejectedWithItsReason() throws {
    let cases = try HostileCase.all()
    XCTAssertGreaterThanOrEqual(cases.count, 25)
    for hostile in cases {
      let path = try hostile.prepare()
      XCTAssertThrowsError(try ModelFile.read(path), hostile.rule) { error in
        let message = String(describing: error)
        XCTAssertTrue(error is ONNXError, "\(hostile.file): \(type(of: error))")
        XCTAssertTrue(
          message.lowercased().contains(hostile.expect.lowercased()),
          "\(hostile.file) (\(hostile.rule)): expected '\(hostile.expect)' in: \(message)")
        XCTAssertTrue(message.contains(hostile.file), "\(hostile.file): message does not name the file: \(message)")
      }
    }
  }

  /// Every prefix of a valid model is either a valid model or a clean error, never a crash.
  func testEveryTruncationOfAModelFailsCleanly() throws {
    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: fixtureModel("if_subgraph"))))
    for length in 0..<bytes.count {
      XCTAssertThrowsError(try ModelFile.decode(Array(bytes[..<length])), "prefix of \(length) bytes was accepted")
    }
    XCTAssertNoThrow(try ModelFile.decode(bytes))
  }

  /// Found by the fuzzer: an attribute whose type is a negative enum value decodes as undefined
  /// instead of trapping, and the model round-trips.
  func testNegativeAttributeTypeDecodesAsUndefined() throws {
    let path = fixtures.appendingPathComponent("fuzz/attribute_type_negative.onnx").path
    let model = try ModelFile.read(path)
    let attribute = try XCTUnwrap(model.graph?.nodes.first?.attributes.first)
    XCTAssertEqual(attribute.value.typeCode, 0)
    XCTAssertNoThrow(try ModelFile.decode(ModelFile.encode(model)))
  }
}
