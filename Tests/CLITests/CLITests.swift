import Foundation
import XCTest

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .appendingPathComponent("Fixtures")

struct RunResult {
  let status: Int32
  let terminatedBySignal: Bool
  let stdout: String
  let stderr: String
}

/// Runs the built `distill` binary (next to the test bundle) and collects its output.
func distill(_ arguments: [String]) throws -> RunResult {
  let binary = Bundle.main.bundleURL.appendingPathComponent("distill")
  guard FileManager.default.isExecutableFile(atPath: binary.path) else {
    throw XCTSkip("distill binary not built at \(binary.path); run swift build first")
  }
  let process = Process()
  process.executableURL = binary
  process.arguments = arguments
  let out = Pipe(), err = Pipe()
  process.standardOutput = out
  process.standardError = err
  try process.run()
  let stdout = out.fileHandleForReading.readDataToEndOfFile()
  let stderr = err.fileHandleForReading.readDataToEndOfFile()
  process.waitUntilExit()
  return RunResult(
    status: process.terminationStatus, terminatedBySignal: process.terminationReason == .uncaughtSignal,
    stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
}

func model(_ name: String) -> String { fixtures.appendingPathComponent("models/\(name)/model.onnx").path }

final class CLITests: XCTestCase {
  func testHelpListsTheSubcommands() throws {
    let result = try distill(["--help"])
    XCTAssertEqual(result.status, 0)
    XCTAssertTrue(result.stdout.contains("inspect"))
    XCTAssertTrue(result.stdout.contains("export"))
  }

  func testInspectShowsSummaryNodesAndTaps() throws {
    let result = try distill(["inspect", model("tiny_fpn")])
    XCTAssertEqual(result.status, 0, result.stderr)
    let text = result.stdout
    XCTAssertTrue(text.contains("ir_version 8, opsets: ai.onnx 17"))
    XCTAssertTrue(text.contains("images  float32 [1,3,64,64]"))
    XCTAssertTrue(text.contains("scores  float32 [1,336,3]"))
    XCTAssertTrue(text.contains("fpn/lateral4_out [1,16,8,8]"), "inferred shape of a lateral conv")
    XCTAssertTrue(text.contains("stride 4  fpn/p3_out  [1,16,16,16]"))
    XCTAssertTrue(text.contains("stride 16  fpn/p5_out  [1,16,4,4]"))
    XCTAssertTrue(text.contains("stride 8  head/cls/p4_out  [1,3,8,8]"))
  }

  func testInspectJSONAndNodeFilter() throws {
    let result = try distill(["inspect", model("tiny_fpn"), "--json", "--nodes", "^fpn/p[0-9]$"])
    XCTAssertEqual(result.status, 0, result.stderr)
    let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
    let nodes = try XCTUnwrap(object["nodes"] as? [[String: Any]])
    XCTAssertEqual(nodes.compactMap { $0["name"] as? String }, ["fpn/p3", "fpn/p4", "fpn/p5"])
    XCTAssertEqual(nodes.first?["op"] as? String, "Conv")
    XCTAssertEqual(nodes.first?["inputs"] as? [String], ["fpn/merge3_out", "fpn/p3/weight", "fpn/p3/bias"])
    XCTAssertEqual(nodes.first?["outputs"] as? [String], ["fpn/p3_out"])
    XCTAssertEqual((object["inputs"] as? [[String: Any]])?.first?["name"] as? String, "images")
    XCTAssertEqual((object["outputs"] as? [[String: Any]])?.count, 2)
    XCTAssertGreaterThan((object["initializers"] as? [Any])?.count ?? 0, 10)
    let taps = try XCTUnwrap(object["taps"] as? [String: Any])
    XCTAssertEqual((taps["features"] as? [[String: Any]])?.compactMap { $0["stride"] as? Int }, [4, 8, 16])
  }

  func testInspectFixesSymbolicInputShapes() throws {
    let result = try distill(["inspect", model("symbolic_dims"), "--input-shape", "input=2x3x32x48"])
    XCTAssertEqual(result.status, 0, result.stderr)
    XCTAssertTrue(result.stdout.contains("[2,3,32,48]"), result.stdout)
    let wrong = try distill(["inspect", model("symbolic_dims"), "--input-shape", "nope=1x3x8x8"])
    XCTAssertNotEqual(wrong.status, 0)
    XCTAssertTrue(wrong.stderr.contains("no input of that name"), wrong.stderr)
  }

  func testInspectShowsUnknownOps() throws {
    let result = try distill(["inspect", model("attributes_custom_op")])
    XCTAssertEqual(result.status, 0, result.stderr)
    XCTAssertTrue(result.stdout.contains("com.example::MyOp"), result.stdout)
  }

  func testHostileFilesExitWithStatusOneAndAReason() throws {
    struct Case: Decodable {
      let file: String
      let expect: String
      let setup: String?
    }
    let data = try Data(contentsOf: fixtures.appendingPathComponent("hostile/manifest.json"))
    for hostile in try JSONDecoder().decode([Case].self, from: data) where hostile.setup == nil {
      let result = try distill(["inspect", fixtures.appendingPathComponent("hostile/\(hostile.file)").path])
      XCTAssertFalse(result.terminatedBySignal, "\(hostile.file) crashed")
      XCTAssertEqual(result.status, 1, "\(hostile.file): \(result.stderr)")
      XCTAssertTrue(result.stderr.lowercased().contains(hostile.expect), "\(hostile.file): \(result.stderr)")
      XCTAssertEqual(result.stdout, "", "\(hostile.file) printed a partial report")
    }
  }

  func testExportWritesAModelThatReadsBackIdentically() throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("distill-cli-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let out = directory.appendingPathComponent("out.onnx").path
    let result = try distill(["export", model("tiny_fpn"), "--out", out])
    XCTAssertEqual(result.status, 0, result.stderr)
    XCTAssertEqual(FileManager.default.contents(atPath: out), FileManager.default.contents(atPath: model("tiny_fpn")))
  }

  func testExportRefusesToReplaceTheInputAndRefusesCheckpoints() throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("distill-cli-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let path = directory.appendingPathComponent("model.onnx").path
    try FileManager.default.copyItem(atPath: model("tiny_fpn"), toPath: path)
    let same = try distill(["export", path, "--out", path])
    XCTAssertEqual(same.status, 1)
    XCTAssertTrue(same.stderr.contains("refusing to overwrite the input model"), same.stderr)
    XCTAssertEqual(FileManager.default.contents(atPath: path), FileManager.default.contents(atPath: model("tiny_fpn")))

    let checkpoint = try distill(["export", path, "--out", path + ".2", "--checkpoint", "x.ckpt"])
    XCTAssertNotEqual(checkpoint.status, 0)
    XCTAssertTrue(checkpoint.stderr.contains("cannot train yet"), checkpoint.stderr)
    XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".2"))
  }
}
