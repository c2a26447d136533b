import DistillCore
import DistillONNX
import Foundation
import XCTest

@testable import DistillTrain

final class TrainerTests: XCTestCase {
  func testParametersTrainableAndLossDecreases() throws {
    let trainer = try Trainer(model: toyModel(), config: toyConfig(steps: 60), loss: MeanSquaredError(output: "y"), batches: toyBatches())
    XCTAssertEqual(trainer.parameters, ["w", "b", "s"], "the Constant node's tensor is a parameter")
    XCTAssertEqual(trainer.trainable, ["w", "b", "s"])
    let reports = try trainer.run()
    XCTAssertEqual(reports.count, 60)
    XCTAssertEqual(reports.map(\.step), Array(1...60))
    XCTAssertTrue(reports.allSatisfy { $0.skipped == nil })
    let first = reports.prefix(5).map(\.loss).reduce(0, +), last = reports.suffix(5).map(\.loss).reduce(0, +)
    XCTAssertLessThan(last, first / 2, "\(reports.map(\.loss))")
    XCTAssertEqual(reports[0].learningRate, 0.05 * 0.2, accuracy: 1e-9, "warm-up starts at 0.2 of the rate")
    XCTAssertEqual(reports[3].learningRate, 0.05, accuracy: 1e-9, "the peak follows the warm-up")
  }

  func testFrozenRegex() throws {
    var config = toyConfig()
    config.frozen = "^(w|s)$"
    let trainer = try Trainer(model: toyModel(), config: config, loss: MeanSquaredError(output: "y"), batches: toyBatches())
    XCTAssertEqual(trainer.trainable, ["b"])
    let w = trainer.interpreter.parameter("w")!, s = trainer.interpreter.parameter("s")!, b = trainer.interpreter.parameter("b")!
    try trainer.run(until: 4)
    XCTAssertEqual(bits(trainer.interpreter.parameter("w")!.floats), bits(w.floats))
    XCTAssertEqual(bits(trainer.interpreter.parameter("s")!.floats), bits(s.floats))
    XCTAssertNotEqual(trainer.interpreter.parameter("b")!.floats, b.floats)
    XCTAssertEqual(trainer.optimizer.state.tensors.map(\.name), ["exp_avg/b", "exp_avg_sq/b"], "frozen parameters have no state")

    config.frozen = "."
    XCTAssertThrowsError(try Trainer(model: toyModel(), config: config, loss: MeanSquaredError(output: "y"), batches: toyBatches())) {
      XCTAssertTrue("\($0)".contains("nothing to train"), "\($0)")
    }
    config.frozen = "(["
    XCTAssertThrowsError(try Trainer(model: toyModel(), config: config, loss: MeanSquaredError(output: "y"), batches: toyBatches()))
  }

  func testNonFiniteLossSkipsTheStepAndTooManyInARowStopTheRun() throws {
    let directory = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("ckpt").path
    var config = toyConfig(steps: 20)
    config.maxConsecutiveNonFinite = 3
    var options = RunOptions(checkpointPath: path, checkpointEvery: 1, logPath: directory.appendingPathComponent("log.jsonl").path)
    let warnings = Warnings()
    options.warn = { warnings.messages.append($0) }
    let trainer = try Trainer(
      model: toyModel(), config: config, loss: MeanSquaredError(output: "y"), options: options,
      batches: toyBatches(poisoned: [2, 6, 7, 8]))
    var before: [Float] = []
    var reports: [StepReport] = []
    XCTAssertThrowsError(
      try trainer.run { report in
        reports.append(report)
        if report.step == 2 { before = trainer.interpreter.parameter("w")!.floats }
        if report.step == 3 { XCTAssertEqual(bits(trainer.interpreter.parameter("w")!.floats), bits(before), "skipped step changed w") }
      }
    ) { error in
      XCTAssertEqual(error as? TrainingError, .diverged(step: 9, inARow: 3, lastCheckpoint: path))
    }
    XCTAssertEqual(reports.compactMap { $0.skipped == nil ? nil : $0.step }, [3, 7, 8])
    XCTAssertEqual(warnings.messages.count, 4)
    XCTAssertTrue(warnings.messages[0].contains("step 3: non-finite loss nan; update skipped (1 in a row)"), warnings.messages[0])
    // The last good checkpoint is the one before the streak, with finite weights.
    let checkpoint = try Checkpoint.read(path)
    XCTAssertEqual(checkpoint.step, 6)
    XCTAssertEqual(checkpoint.consecutiveNonFinite, 0)
    let log = try String(contentsOfFile: directory.appendingPathComponent("log.jsonl").path, encoding: .utf8)
    let lines = log.split(separator: "\n")
    XCTAssertEqual(lines.count, 9)
    XCTAssertTrue(lines[2].hasPrefix("{\"step\":3,\"loss\":\"nan\","), String(lines[2]))
    XCTAssertTrue(lines[2].contains("\"skipped\":\"non-finite loss nan\""), String(lines[2]))
  }

  /// A loss whose gradient is infinite at the steps in `poisoned` while the loss itself is finite.
  struct PoisonedGradientLoss: TrainingLoss {
    let poisoned: Set<Int>
    let counter = Counter()
    final class Counter: @unchecked Sendable { var step = 0 }
    func evaluate(_ tape: Tape, _ batch: Batch) throws -> LossEvaluation {
      var evaluation = try MeanSquaredError(output: "y").evaluate(tape, batch)
      defer { counter.step += 1 }
      if poisoned.contains(counter.step) { evaluation.seeds["y"]!.floats[0] = .infinity }
      return evaluation
    }
  }

  func testNonFiniteGradientSkipsTheStep() throws {
    var options = RunOptions()
    let warnings = Warnings()
    options.warn = { warnings.messages.append($0) }
    let trainer = try Trainer(
      model: toyModel(), config: toyConfig(), loss: PoisonedGradientLoss(poisoned: [1]), options: options, batches: toyBatches())
    let reports = try trainer.run(until: 3)
    XCTAssertEqual(reports.map { $0.skipped != nil }, [false, true, false])
    XCTAssertTrue(reports[1].skipped!.contains("non-finite gradient"), reports[1].skipped!)
    XCTAssertTrue(reports[1].loss.isFinite)
    XCTAssertEqual(trainer.consecutiveNonFinite, 0)
    XCTAssertEqual(trainer.optimizer.step, 2, "the skipped step did not advance the optimizer")
  }

  /// Runs N steps uninterrupted; then runs again, abandons the trainer 2 steps after its checkpoint
  /// at step k (as if killed), resumes a fresh trainer from the checkpoint and finishes: the loss
  /// trace, the log and the final weights equal the uninterrupted run's bit for bit.
  func testResumeIsBitExact() throws {
    let directory = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    let steps = 16, k = 5
    let fullLog = directory.appendingPathComponent("full.jsonl").path
    let full = try Trainer(
      model: toyModel(), config: toyConfig(steps: steps), loss: MeanSquaredError(output: "y"),
      options: RunOptions(logPath: fullLog), batches: toyBatches(poisoned: [9]))
    full.options.warn = { _ in }
    let expected = try full.run().map(\.loss)

    let path = directory.appendingPathComponent("run.ckpt").path
    let log = directory.appendingPathComponent("run.jsonl").path
    var killed: Trainer? = try Trainer(
      model: toyModel(), config: toyConfig(steps: steps), loss: MeanSquaredError(output: "y"),
      options: RunOptions(checkpointPath: path, checkpointEvery: k, logPath: log), batches: toyBatches(poisoned: [9]))
    var before = try killed!.run(until: k).map(\.loss)
    XCTAssertEqual(killed!.lastCheckpoint, path)
    // Two more steps, logged but not checkpointed, then the process "dies".
    before += [try killed!.trainStep().loss, try killed!.trainStep().loss]
    killed = nil

    let resumed = try Trainer(
      model: toyModel(), config: toyConfig(steps: steps), loss: MeanSquaredError(output: "y"),
      options: RunOptions(checkpointPath: path, checkpointEvery: k, logPath: log), batches: toyBatches(poisoned: [9]))
    resumed.options.warn = { _ in }
    try resumed.resume(from: path)
    XCTAssertEqual(resumed.step, k)
    let after = try resumed.run().map(\.loss)
    XCTAssertEqual(bits(Array(before.prefix(k)) + after), bits(expected))
    XCTAssertEqual(Array(before.suffix(2)).map(\.bitPattern), Array(expected[k..<(k + 2)]).map(\.bitPattern))
    for name in full.parameters {
      XCTAssertEqual(bits(resumed.interpreter.parameter(name)!.floats), bits(full.interpreter.parameter(name)!.floats), name)
    }
    // Everything but the step times.
    func values(_ path: String) throws -> String {
      try String(contentsOfFile: path, encoding: .utf8).replacing(try Regex(#","step_ms":[0-9.e+-]+"#), with: "")
    }
    XCTAssertEqual(try values(log), try values(fullLog), "the log lines written after the checkpoint were dropped on resume")
    XCTAssertEqual(try Checkpoint.read(path).step, steps)
  }

  func testResumeRefusesAnotherConfigurationOrModel() throws {
    let directory = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("ckpt").path
    let trainer = try Trainer(model: toyModel(), config: toyConfig(), loss: MeanSquaredError(output: "y"), batches: toyBatches())
    try trainer.run(until: 2)
    try trainer.saveCheckpoint(to: path)

    var other = toyConfig()
    other.optimizer.learningRate = 0.1
    let changed = try Trainer(model: toyModel(), config: other, loss: MeanSquaredError(output: "y"), batches: toyBatches())
    XCTAssertThrowsError(try changed.resume(from: path)) { error in
      XCTAssertEqual(error as? TrainingError, .configMismatch(file: path, checkpoint: toyConfig().hash, current: other.hash))
      XCTAssertTrue("\(error)".contains("configuration hash"))
    }

    var model = toyModel()
    model.graph!.initializers[1] = Tensor(shape: [1, 3], floats: [0, 0, 0]).tensorValue(name: "b")
    let reshaped = try Trainer(model: model, config: toyConfig(), loss: MeanSquaredError(output: "y"), batches: toyBatches())
    XCTAssertThrowsError(try reshaped.resume(from: path)) { error in
      XCTAssertEqual("\(error)", "\(path) does not match the model: parameter 'b' is float32 [1,3] in the model, float32 [3] in the checkpoint")
    }
  }

  /// The same loop on the tiny FPN detector, BatchNormalization running statistics included; runs
  /// once Conv and BatchNormalization have gradients.
  func testTinyFPNTrainsAndResumesBitExactly() throws {
    for op in ["Conv", "BatchNormalization", "Resize", "Transpose", "Reshape", "Concat"] {
      guard OperatorRegistry.standard.lookup(domain: "", op: op) is any DifferentiableOperator.Type else {
        throw XCTSkip("\(op) has no gradient in this build yet; the tiny_fpn training test needs it")
      }
    }
    let model = try ModelFile.read(fixtureModel("tiny_fpn"))
    let batches: (Int, inout SplitMix64) throws -> Batch = { _, random in
      let images = random.uniformTensor([1, 3, 64, 64])
      return Batch(feeds: ["images": images], targets: ["scores": random.uniformTensor([1, 336, 3], low: 0, high: 0.2)])
    }
    let config = TrainingConfig(
      optimizer: .sgd(learningRate: 0.01, momentum: 0.9, weightDecay: 1e-4),
      schedule: LearningRateSchedule(totalSteps: 6, warmupSteps: 2, decay: .cosine(minimumFactor: 0)), clipGradientNorm: 10, seed: 3)
    let full = try Trainer(model: model, config: config, loss: MeanSquaredError(output: "scores"), batches: batches)
    XCTAssertTrue(full.runningStatistics.contains("backbone/stem/bn/mean"))
    XCTAssertFalse(full.trainable.contains("fpn/upsample_scales"))
    let mean = full.interpreter.parameter("backbone/stem/bn/mean")!
    let expected = try full.run().map(\.loss)
    XCTAssertNotEqual(full.interpreter.parameter("backbone/stem/bn/mean")!.floats, mean.floats, "running statistics were updated")

    let directory = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: directory) }
    let path = directory.appendingPathComponent("ckpt").path
    let first = try Trainer(model: model, config: config, loss: MeanSquaredError(output: "scores"),
                            options: RunOptions(checkpointPath: path, checkpointEvery: 3), batches: batches)
    let head = try first.run(until: 3).map(\.loss)
    let second = try Trainer(model: model, config: config, loss: MeanSquaredError(output: "scores"), batches: batches)
    try second.resume(from: path)
    XCTAssertEqual(bits(head + (try second.run().map(\.loss))), bits(expected))
  }

  func testJSONLine() {
    XCTAssertEqual(
      Trainer.jsonLine(StepReport(step: 3, loss: 0.25, learningRate: 0.01, gradientNorm: 1.5, skipped: nil)),
      "{\"step\":3,\"loss\":0.25,\"lr\":0.01,\"grad_norm\":1.5}")
    XCTAssertEqual(
      Trainer.jsonLine(StepReport(step: 4, loss: .infinity, learningRate: 0.01, gradientNorm: nil, skipped: "non-finite loss inf")),
      "{\"step\":4,\"loss\":\"inf\",\"lr\":0.01,\"skipped\":\"non-finite loss inf\"}")
  }
}

/// A PyTorch eval-mode export whose exporter merged equal-valued parameters
/// (Tests/Fixtures/gradients/resnet18_fpn): each layer trains its own copy.
final class MergedParameterTrainingTests: XCTestCase {
  func testMergedParametersTrainApartAndExportAsTheirOwnInitializers() throws {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .appendingPathComponent("Fixtures/gradients/resnet18_fpn/model.onnx").path
    let model = try ModelFile.read(path)
    let output = try XCTUnwrap(model.graph?.outputs.first?.name)
    let batches: (Int, inout SplitMix64) throws -> Batch = { _, random in
      let x = random.normalTensor([2, 3, 64, 64])
      return Batch(feeds: ["images": x], targets: [output: Tensor(shape: [2, 16, 16, 16], floats: [Float](repeating: 0.1, count: 8192))])
    }
    var config = toyConfig(steps: 2)
    config.optimizer = .sgd(learningRate: 0.1)
    let trainer = try Trainer(model: model, config: config, loss: MeanSquaredError(output: output), batches: batches)
    XCTAssertFalse(trainer.untiedParameters.isEmpty)
    // The exporter kept 'body.layer1.0.bn1.weight' only as an Identity of 'body.bn1.weight'.
    XCTAssertTrue(trainer.trainable.contains("body.bn1.weight"))
    XCTAssertTrue(trainer.trainable.contains("body.layer1.0.bn1.weight"))
    try trainer.run(until: 2)
    let stem = try XCTUnwrap(trainer.interpreter.parameter("body.bn1.weight")).floats
    let block = try XCTUnwrap(trainer.interpreter.parameter("body.layer1.0.bn1.weight")).floats
    XCTAssertNotEqual(stem, block, "merged scales train apart")

    let (exported, changed) = try TrainedWeights.apply(trainer.checkpoint(), to: model)
    XCTAssertGreaterThan(changed, 0)
    let graph = try XCTUnwrap(exported.graph)
    let initializer = try XCTUnwrap(graph.initializers.first { $0.name == "body.layer1.0.bn1.weight" })
    XCTAssertEqual(try Tensor(initializer).floats, block)
    XCTAssertFalse(graph.nodes.contains { $0.opType == "Identity" && $0.outputs == ["body.layer1.0.bn1.weight"] })
  }
}
