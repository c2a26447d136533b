import DistillCore
import DistillONNX
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

  /// Older paddle2onnx/tf2onnx exports write -1 for a dynamic dimension in declared types.
  func testNegativeDeclaredDimensionsInspectAndRun() throws {
    let inspected = try distill(["inspect", model("negative_dims")])
    XCTAssertEqual(inspected.status, 0, inspected.stderr)
    XCTAssertTrue(inspected.stdout.contains("x  float32 [?,3,?,?]"), inspected.stdout)
    XCTAssertEqual(inspected.stdout.components(separatedBy: "declare -1 for a dimension").count, 2, "said once: \(inspected.stdout)")
    XCTAssertTrue(inspected.stdout.contains("conv1_out [?,8,?,?]"), inspected.stdout)
    let fixed = try distill(["inspect", model("negative_dims"), "--input-shape", "x=1x3x48x192"])
    XCTAssertTrue(fixed.stdout.contains("conv1_out [1,8,24,96]"), fixed.stdout)
    let out = try temporaryDirectory()
    let data = fixtures.appendingPathComponent("models/negative_dims/test_data_set_0").path
    let run = try distill(["run", model("negative_dims"), "--data", data, "--output-dir", out])
    XCTAssertEqual(run.status, 0, run.stderr)
    let actual = try Tensor(ModelFile.readTensor("\(out)/output_0.pb"))
    let expected = try Tensor(ModelFile.readTensor("\(data)/output_0.pb"))
    XCTAssertEqual(actual.shape, [2, 2])
    for (a, e) in zip(actual.floats, expected.floats) { XCTAssertEqual(a, e, accuracy: 1e-5) }
    // A wrong rank is still refused.
    let bad = try temporaryDirectory()
    try ModelFile.writeTensor(Tensor(shape: [3, 48, 96], floats: [Float](repeating: 0.5, count: 3 * 48 * 96)).tensorValue(name: "x"), to: "\(bad)/input_0.pb")
    let refused = try distill(["run", model("negative_dims"), "--data", bad])
    XCTAssertEqual(refused.status, 1)
    XCTAssertTrue(refused.stderr.contains("the model declares [?,3,?,?]"), refused.stderr)
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

  func testExportRefusesToReplaceTheInputAndMissingCheckpoints() throws {
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
    XCTAssertTrue(checkpoint.stderr.contains("x.ckpt: no such file"), checkpoint.stderr)
    XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".2"))
  }

  func temporaryDirectory() throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("distill-cli-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
  }

  func testRunWritesOutputsThatMatchOnnxruntime() throws {
    let out = try temporaryDirectory()
    let data = fixtures.appendingPathComponent("models/tiny_fpn/test_data_set_0").path
    let result = try distill(["run", model("tiny_fpn"), "--data", data, "--output-dir", out, "--tap", "fpn/p4_out"])
    XCTAssertEqual(result.status, 0, result.stderr)
    for index in 0..<2 {
      let actual = try Tensor(ModelFile.readTensor("\(out)/output_\(index).pb"))
      let expected = try Tensor(ModelFile.readTensor("\(data)/output_\(index).pb"))
      XCTAssertEqual(actual.shape, expected.shape)
      for (a, e) in zip(actual.floats, expected.floats) { XCTAssertEqual(a, e, accuracy: 1e-4 + 1e-3 * abs(e)) }
    }
    let tap = try ModelFile.readTensor("\(out)/tap_0.pb")
    XCTAssertEqual(tap.name, "fpn/p4_out")
    XCTAssertEqual(tap.dims, [1, 16, 8, 8])
  }

  func testRunPrintsASummaryWithoutOutputDirectory() throws {
    let data = fixtures.appendingPathComponent("models/tiny_fpn/test_data_set_0").path
    let result = try distill(["run", model("tiny_fpn"), "--data", data])
    XCTAssertEqual(result.status, 0, result.stderr)
    XCTAssertTrue(result.stdout.contains("scores  float32 [1,336,3]  min "), result.stdout)
  }

  /// PNG and JPEG inputs are decoded, resized and normalised as PyTorch does (tools/make_image_fixtures.py).
  func testRunReadsImages() throws {
    let directory = try temporaryDirectory()
    var graph = Graph()
    graph.name = "identity"
    graph.nodes = [Node(name: "id", opType: "Identity", inputs: ["x"], outputs: ["y"])]
    graph.inputs = [ValueInfo(name: "x", type: .tensor(elementType: .float, shape: [1, 3, 32, 40].map { ShapeDimension(value: $0) }, denotation: nil))]
    graph.outputs = [ValueInfo(name: "y")]
    var identity = Model()
    identity.irVersion = 8
    identity.opsetImports = [OperatorSetID(domain: "", version: 17)]
    identity.graph = graph
    try ModelFile.write(identity, to: "\(directory)/identity.onnx")
    // One 8-bit level after normalising is 1/255/0.224 = 0.0176: resampling may round a pixel the
    // other way; JPEG decoders may differ by a few levels.
    for (file, tolerance) in [("pattern.png", Float(0.018)), ("pattern.jpg", Float(0.05))] {
      let image = fixtures.appendingPathComponent("images/\(file)").path
      let out = "\(directory)/\(file)"
      let result = try distill([
        "run", "\(directory)/identity.onnx", "--input", "x=\(image)", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225",
        "--output-dir", out,
      ])
      XCTAssertEqual(result.status, 0, result.stderr)
      let actual = try Tensor(ModelFile.readTensor("\(out)/output_0.pb"))
      let expected = try NumpyFile.read(fixtures.appendingPathComponent("images/\(file.replacingOccurrences(of: ".", with: "_"))_32x40.npy").path)
      XCTAssertEqual(actual.shape, expected.shape)
      let errors = zip(actual.floats, expected.floats).map { abs($0 - $1) }
      XCTAssertLessThanOrEqual(errors.max() ?? 0, tolerance, file)
      XCTAssertLessThan(errors.reduce(0, +) / Float(errors.count), 0.002, "\(file): mean error")
    }
    let corrupt = try distill(["run", "\(directory)/identity.onnx", "--input", "x=" + fixtures.appendingPathComponent("images/corrupt.png").path])
    XCTAssertEqual(corrupt.status, 1)
    XCTAssertTrue(corrupt.stderr.contains("corrupt.png"), corrupt.stderr)
  }

  func testRunNamesUnsupportedOperatorsAndBadInputs() throws {
    let unsupported = try distill(["run", model("attributes_custom_op"), "--input", "x=/nonexistent.npy"])
    XCTAssertEqual(unsupported.status, 1)
    XCTAssertTrue(unsupported.stderr.contains("com.example::MyOp (opset 1)"), unsupported.stderr)
    let missing = try distill(["run", model("tiny_fpn")])
    XCTAssertNotEqual(missing.status, 0)
    XCTAssertTrue(missing.stderr.contains("no value for input(s) images"), missing.stderr)
  }

  func testBenchEndsWithAJSONLine() throws {
    let result = try distill(["bench", model("tiny_fpn"), "--runs", "2", "--warmup", "1", "--threads", "1"])
    XCTAssertEqual(result.status, 0, result.stderr)
    let last = try XCTUnwrap(result.stdout.split(separator: "\n").last)
    let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])
    XCTAssertGreaterThan(object["forward_ms_median"] as? Double ?? 0, 0)
    XCTAssertGreaterThan(object["peak_rss_mb"] as? Double ?? 0, 0)
    XCTAssertEqual(object["runs"] as? Int, 2)
    XCTAssertTrue(result.stderr.contains("run 2/2"), result.stderr)
    let symbolic = try distill(["bench", model("symbolic_dims")])
    XCTAssertNotEqual(symbolic.status, 0)
    XCTAssertTrue(symbolic.stderr.contains("symbolic dims"), symbolic.stderr)
  }
}
