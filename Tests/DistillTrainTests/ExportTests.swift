import DistillCore
import DistillONNX
import Foundation
import XCTest

@testable import DistillTrain

final class ExportTests: XCTestCase {
  func trained(frozen: String? = nil) throws -> Trainer {
    var config = toyConfig()
    config.frozen = frozen
    let trainer = try Trainer(model: toyModel(), config: config, loss: MeanSquaredError(output: "y"), batches: toyBatches())
    try trainer.run(until: 3)
    return trainer
  }

  func testTrainedValuesGoBackIntoInitializersAndConstantNodes() throws {
    let trainer = try trained()
    let checkpoint = trainer.checkpoint()
    let source = toyModel()
    let (model, changed) = try TrainedWeights.apply(checkpoint, to: source)
    XCTAssertEqual(changed, 3)
    let graph = model.graph!
    XCTAssertEqual(graph.nodes.map(\.opType), source.graph!.nodes.map(\.opType), "the graph keeps its nodes")
    XCTAssertEqual(graph.initializers.compactMap(\.name), ["w", "b"], "no initializer added or removed")
    for name in ["w", "b"] {
      let value = try Tensor(graph.initializers.first { $0.name == name }!)
      XCTAssertEqual(bits(value.floats), bits(trainer.interpreter.parameter(name)!.floats), name)
    }
    guard case .tensor(let s)? = graph.nodes[0].attribute("value")?.value else { return XCTFail("Constant lost its value") }
    XCTAssertEqual(bits(try Tensor(s).floats), bits(trainer.interpreter.parameter("s")!.floats))

    // Through the file format and back, the exported model computes what the trainer's does.
    let reread = try ModelFile.decode(ModelFile.encode(model))
    var random = SplitMix64(seed: 99)
    let x = random.normalTensor([4, 3])
    let exported = try Interpreter(model: reread).run(["x": x]).outputs[0]
    let live = try trainer.interpreter.run(["x": x]).outputs[0]
    XCTAssertEqual(bits(exported.floats), bits(live.floats))
  }

  func testUnchangedTensorsKeepTheirBytes() throws {
    let (model, changed) = try TrainedWeights.apply(try trained(frozen: "^w$").checkpoint(), to: toyModel())
    XCTAssertEqual(changed, 2)
    XCTAssertEqual(model.graph!.initializers[0].bytes, toyModel().graph!.initializers[0].bytes)
  }

  func testMismatchedCheckpointsAreRefusedNamingTheFirstDifference() throws {
    let good = try trained().checkpoint()
    func message(_ edit: (inout Checkpoint) -> Void) -> String {
      var checkpoint = good
      edit(&checkpoint)
      do {
        _ = try TrainedWeights.apply(checkpoint, to: toyModel(), checkpointFile: "ckpt")
        return "no error"
      } catch { return "\(error)" }
    }
    XCTAssertEqual(message { $0.student.remove(at: 1) }, "ckpt does not match the model: the model's parameter 'b' (float32 [3]) is not in the checkpoint")
    XCTAssertEqual(
      message { $0.student[0].tensor = Tensor(shape: [3], floats: [1, 2, 3]) },
      "ckpt does not match the model: parameter 'w' is float32 [1,3] in the model, float32 [3] in the checkpoint")
    XCTAssertEqual(
      message { $0.student.append(NamedTensor("extra", Tensor(scalar: 1))) },
      "ckpt does not match the model: the checkpoint's tensor 'extra' is not a parameter of the model")
    XCTAssertTrue(message { $0.student[0].tensor.floats[0] = .infinity }.contains("holds inf"))
  }

  /// A tiny_fpn checkpoint with every parameter perturbed (BatchNormalization statistics included),
  /// exported by the CLI: the output's initializers equal the checkpoint, and it computes what an
  /// interpreter holding the checkpoint's values computes. (tools/check_export.py compares
  /// onnxruntime on the exported model with `distill run`.)
  func testExportCommandWritesCheckpointValues() throws {
    let binary = Bundle.main.bundleURL.appendingPathComponent("distill")
    guard FileManager.default.isExecutableFile(atPath: binary.path) else {
      throw XCTSkip("distill binary not built at \(binary.path); run swift build --build-tests first")
    }
    let directory = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    let source = try ModelFile.read(fixtureModel("tiny_fpn"))
    let reference = try Interpreter(model: source, fuse: false, promoteConstants: true)
    var random = SplitMix64(seed: 5)
    var student: [NamedTensor] = []
    for name in reference.parameterNames {
      var value = reference.parameter(name)!
      if name.hasSuffix("upsample_scales") { student.append(NamedTensor(name, value)); continue }
      value.floats = value.floats.map { $0 * (1 + 0.1 * random.nextUniform()) + (name.hasSuffix("/var") ? 0 : 0.01 * random.nextNormal()) }
      try reference.setParameter(name, value)
      student.append(NamedTensor(name, value))
    }
    let checkpoint = Checkpoint(
      step: 10, configHash: "test", rngState: [1], student: student, optimizer: OptimizerState(kind: "sgd", step: 10, tensors: []))
    let path = directory.appendingPathComponent("ckpt").path, out = directory.appendingPathComponent("out.onnx").path
    try checkpoint.write(to: path)

    let result = try run(binary, ["export", fixtureModel("tiny_fpn"), "--checkpoint", path, "--out", out])
    XCTAssertEqual(result.status, 0, result.stderr)
    XCTAssertTrue(result.stdout.contains("\(student.count - 1) of \(student.count) parameters changed"), result.stdout)
    let exported = try ModelFile.read(out)
    XCTAssertEqual(exported.graph!.nodes.count, source.graph!.nodes.count)
    XCTAssertEqual(exported.graph!.initializers.count, source.graph!.initializers.count)
    let values = Dictionary(uniqueKeysWithValues: student.map { ($0.name, $0.tensor) })
    for (tensor, original) in zip(exported.graph!.initializers, source.graph!.initializers) {
      XCTAssertEqual(tensor.name, original.name)
      if let trained = values[tensor.name!] {
        XCTAssertEqual(bits(try Tensor(tensor).floats), bits(trained.floats), tensor.name!)
      } else {
        XCTAssertEqual(tensor.bytes, original.bytes, "\(tensor.name!) is not a parameter and stays as it was")
      }
    }
    let images = random.uniformTensor([1, 3, 64, 64])
    let expected = try reference.run(["images": images]).outputs
    let actual = try Interpreter(model: exported, fuse: false).run(["images": images]).outputs
    for (a, e) in zip(actual, expected) { XCTAssertEqual(bits(a.floats), bits(e.floats)) }

    var wrong = checkpoint
    wrong.student[5].tensor = wrong.student[5].tensor.reshaped([16, 8, 9])
    try wrong.write(to: path)
    let refused = try run(binary, ["export", fixtureModel("tiny_fpn"), "--checkpoint", path, "--out", out + ".2"])
    XCTAssertNotEqual(refused.status, 0)
    XCTAssertTrue(
      refused.stderr.contains(
        "does not match the model: parameter 'backbone/conv1/conv/weight' is float32 [16,8,3,3] in the model, float32 [16,8,9] in the checkpoint"),
      refused.stderr)
    XCTAssertFalse(FileManager.default.fileExists(atPath: out + ".2"))

    let corrupt = try run(binary, ["export", fixtureModel("tiny_fpn"), "--checkpoint", fixtureModel("tiny_fpn"), "--out", out + ".3"])
    XCTAssertNotEqual(corrupt.status, 0)
    XCTAssertTrue(corrupt.stderr.contains("not a distill checkpoint"), corrupt.stderr)
  }

  func run(_ binary: URL, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = binary
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile(), stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
  }
}
