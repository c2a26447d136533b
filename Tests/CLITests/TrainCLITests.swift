import DistillCore
import DistillONNX
import Foundation
import XCTest

/// `distill train` as a user runs it, on Tests/Fixtures/distill/tiny.yaml (a tiny FCOS teaching a
/// tiny RetinaNet, label-free).
final class TrainCLITests: XCTestCase {
  let tiny = fixtures.appendingPathComponent("distill/tiny.yaml")

  /// A copy of tiny.yaml with absolute paths, writing into a fresh directory; `edit` changes its text.
  func config(_ name: String, edit: (String) -> String = { $0 }) throws -> (config: String, output: String) {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("train-cli-\(getpid())-\(name)")
    try? FileManager.default.removeItem(at: directory)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let base = fixtures.appendingPathComponent("distill").path
    var text = try String(contentsOf: tiny, encoding: .utf8)
    for folder in ["heads", "eval"] { text = text.replacingOccurrences(of: "../\(folder)/", with: "\(base)/../\(folder)/") }
    text = text.replacing(try Regex("output: .*"), with: "output: " + directory.appendingPathComponent("run").path)
    let path = directory.appendingPathComponent("distill.yaml").path
    try edit(text).write(toFile: path, atomically: true, encoding: .utf8)
    return (path, directory.appendingPathComponent("run").path)
  }

  /// The metrics without step times (which differ from run to run).
  func metrics(_ output: String) throws -> [String] {
    let text = try String(contentsOfFile: output + "/metrics.jsonl", encoding: .utf8)
    return text.split(separator: "\n").map { String($0).replacing(try! Regex(#","step_ms":[0-9.e+-]+"#), with: "") }
  }

  func testEveryConfigProblemIsReportedAtOnce() throws {
    let (path, _) = try config("problems") { text in
      text.replacingOccurrences(of: "bn: train", with: "bn: train\nbatchsize: 4")
        .replacingOccurrences(of: "type: cwd", with: "type: cwdd")
        .replacingOccurrences(of: "steps: 30", with: "steps: -3")
    }
    let result = try distill(["train", path])
    XCTAssertEqual(result.status, 1)
    XCTAssertTrue(result.stderr.contains("3 problems"), result.stderr)
    XCTAssertTrue(result.stderr.contains("batchsize: unknown key"), result.stderr)
    XCTAssertTrue(result.stderr.contains("unknown loss 'cwdd' (did you mean 'cwd'?)"), result.stderr)
    XCTAssertTrue(result.stderr.contains("train.steps: -3 is outside 1...1e+09"), result.stderr)
  }

  func testUnknownTapsNameTheClosestValues() throws {
    let (path, output) = try config("taps") { $0.replacingOccurrences(of: "student: /backbone/c4/c4.1/Relu_output_0", with: "student: /backbone/c4/c4.1/Relu_outpt_0") }
    let result = try distill(["train", path])
    XCTAssertEqual(result.status, 1)
    XCTAssertTrue(result.stderr.contains("the student computes no value '/backbone/c4/c4.1/Relu_outpt_0'; closest: '/backbone/c4/c4.1/Relu_output_0'"), result.stderr)
    XCTAssertFalse(FileManager.default.fileExists(atPath: output), "nothing is written before the config is valid")
  }

  func testTrainWritesMetricsCheckpointAndAStudentThatRuns() throws {
    let (path, output) = try config("run")
    let result = try distill(["train", path])
    XCTAssertEqual(result.status, 0, result.stderr)
    let lines = try metrics(output)
    XCTAssertEqual(lines.count, 31, "step 0 (before any update) and 30 steps")
    XCTAssertTrue(lines[0].hasPrefix("{\"step\":0,"), lines[0])
    for key in ["mse:/backbone/c3/c3.1/Relu_output_0", "cwd:/backbone/c4/c4.1/Relu_output_0", "pkd:/backbone/c5/c5.1/Relu_output_0", "grad_norm"] {
      XCTAssertTrue(lines[1].contains("\"\(key)\":"), "\(key) in \(lines[1])")
    }
    func loss(_ line: String) throws -> Double {
      try XCTUnwrap((JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["loss"] as? Double)
    }
    XCTAssertLessThan(try loss(lines[30]), try loss(lines[0]), "distillation lowers the loss")
    let events = try FileManager.default.contentsOfDirectory(atPath: output).filter { $0.hasPrefix("events.out.tfevents.") }
    XCTAssertEqual(events.count, 1)
    // The student runs, with other weights than the one it started from.
    let student = output + "/student.onnx"
    let data = fixtures.appendingPathComponent("heads/retinanet/model.onnx").path
    let trained = try ModelFile.read(student), original = try ModelFile.read(data)
    XCTAssertEqual(trained.graph!.nodes.map(\.opType), original.graph!.nodes.map(\.opType).filter { $0 != "Identity" } )
    let run = try distill(["run", student, "--input", "images=" + fixtures.appendingPathComponent("eval/fcos/images/image_01.png").path])
    XCTAssertEqual(run.status, 0, run.stderr)
    // Never over an earlier run without --resume or --overwrite.
    let again = try distill(["train", path])
    XCTAssertEqual(again.status, 1)
    XCTAssertTrue(again.stderr.contains("--resume") && again.stderr.contains("--overwrite"), again.stderr)
    // The loss graph as ONNX.
    let graphPath = output + "/../loss.onnx"
    let dumped = try distill(["train", path, "--dump-loss-graph", graphPath])
    XCTAssertEqual(dumped.status, 0, dumped.stderr)
    let lossGraph = try ModelFile.read(graphPath)
    XCTAssertTrue(lossGraph.graph!.nodes.contains { $0.opType == "Conv" }, "the 16 -> 32 channel adapters are 1x1 convolutions")
    XCTAssertTrue(lossGraph.graph!.inputs.contains { $0.name == "student:/backbone/c3/c3.1/Relu_output_0" })
  }

  /// A real process killed with SIGKILL mid-run, then --resume: the metrics from the checkpoint on
  /// equal those of a run that was never stopped; SIGTERM writes a checkpoint and stops cleanly.
  func testKillAndResumeGiveTheUninterruptedTrace() throws {
    let (path, output) = try config("uninterrupted")
    XCTAssertEqual(try distill(["train", path]).status, 0)
    let reference = try metrics(output)

    for signal in [SIGKILL, SIGTERM] {
      let (killedPath, killedOutput) = try config("killed-\(signal)")
      let process = Process()
      process.executableURL = Bundle.main.bundleURL.appendingPathComponent("distill")
      process.arguments = ["train", killedPath]
      process.standardError = FileHandle.nullDevice
      process.standardOutput = FileHandle.nullDevice
      try process.run()
      // Wait until a checkpoint exists and a few steps more have been logged.
      let deadline = Date().addingTimeInterval(120)
      while Date() < deadline, process.isRunning {
        let lines = (try? metrics(killedOutput).count) ?? 0
        if lines >= 14 { break }
        usleep(20_000)
      }
      XCTAssertTrue(process.isRunning, "the run ended before it could be stopped")
      kill(process.processIdentifier, signal)
      process.waitUntilExit()
      if signal == SIGTERM {
        XCTAssertEqual(process.terminationStatus, 128 + SIGTERM, "SIGTERM stops with status 143 after writing a checkpoint")
      }
      XCTAssertLessThan(try metrics(killedOutput).count, 31)
      let resumed = try distill(["train", killedPath, "--resume"])
      XCTAssertEqual(resumed.status, 0, resumed.stderr)
      XCTAssertTrue(resumed.stderr.contains("resumed at step"), resumed.stderr)
      XCTAssertEqual(try metrics(killedOutput), reference, "signal \(signal)")
      XCTAssertEqual(
        try Data(contentsOf: URL(fileURLWithPath: killedOutput + "/student.onnx")), try Data(contentsOf: URL(fileURLWithPath: output + "/student.onnx")),
        "the same student, bit for bit")
    }
  }

  /// `distill init` drafts a config that `distill train` accepts as it is (here on the tiny pair,
  /// with the steps shortened for the test).
  /// Trains the config `draft` (from `distill init`) in `directory`, changed only to 2 steps of
  /// batch 2 with 1 warm-up step, and expects success.
  func trainShortened(_ draft: String, in directory: URL) throws {
    let shortened = draft.replacingOccurrences(of: "steps: 2000", with: "steps: 2").replacingOccurrences(of: "batch: 8", with: "batch: 2")
      .replacingOccurrences(of: "warmup: 100", with: "warmup: 1")
    let path = directory.appendingPathComponent("distill.yaml").path
    try shortened.write(toFile: path, atomically: true, encoding: .utf8)
    let trained = try distill(["train", path])
    XCTAssertEqual(trained.status, 0, trained.stderr)
  }

  /// The issue's promise on the shipped models: `distill init` drafts a config that `distill
  /// train` accepts as it is (only shortened here), with the box outputs the models expose (after
  /// torchvision FCOS's Relu), not the convolutions before them.
  func testInitOnTheShippedModelsTrainsWithoutEdits() throws {
    let models = fixtures.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("models").path
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("init-shipped-\(getpid())")
    try? FileManager.default.removeItem(at: directory)
    defer { try? FileManager.default.removeItem(at: directory) }
    let data = directory.appendingPathComponent("data").path
    let synth = try distill(["data", "synth", "--out", data, "--images", "6", "--size", "256", "--seed", "2"])
    XCTAssertEqual(synth.status, 0, synth.stderr)
    let draft = try distill(["init", models + "/demo_teacher.onnx", models + "/demo_student.onnx", "--images", data + "/train"])
    XCTAssertEqual(draft.status, 0, draft.stderr)
    XCTAssertTrue(draft.stdout.contains("{cls: cls_p3, box: box_p3, quality: ctr_p3, stride: 8}"), draft.stdout)
    XCTAssertFalse(draft.stdout.contains("bbox_reg"), draft.stdout)
    XCTAssertTrue(draft.stdout.contains("\nhead:   # both models"), draft.stdout)
    try trainShortened(draft.stdout, in: directory)
    let metrics = try String(contentsOfFile: directory.appendingPathComponent("runs/distill/metrics.jsonl").path, encoding: .utf8)
    XCTAssertEqual(metrics.split(separator: "\n").count, 3, metrics)
    XCTAssertTrue(FileManager.default.fileExists(atPath: directory.appendingPathComponent("runs/distill/student.onnx").path))
  }

  func testInitDraftsAConfigThatTrains() throws {
    let heads = fixtures.appendingPathComponent("heads").path
    let images = fixtures.appendingPathComponent("eval/fcos/images").path
    let result = try distill(["init", heads + "/fcos/model.onnx", heads + "/retinanet/model.onnx", "--images", images])
    XCTAssertEqual(result.status, 0, result.stderr)
    XCTAssertTrue(result.stdout.contains("type: dense"), result.stdout)
    XCTAssertTrue(result.stdout.contains("type: anchors"), result.stdout)
    XCTAssertTrue(result.stdout.contains("teacher: [/backbone/c3/c3.1/Relu_output_0, /backbone/c4/c4.1/Relu_output_0]"), result.stdout)
    XCTAssertTrue(result.stdout.contains("# guessed:"), result.stdout)
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("init-cli-\(getpid())")
    try? FileManager.default.removeItem(at: directory)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    try trainShortened(result.stdout, in: directory)
    XCTAssertTrue(FileManager.default.fileExists(atPath: directory.appendingPathComponent("runs/distill/student.onnx").path))
    let missing = try distill(["init", heads + "/fcos/model.onnx", heads + "/nope.onnx"])
    XCTAssertEqual(missing.status, 1)
  }
}
