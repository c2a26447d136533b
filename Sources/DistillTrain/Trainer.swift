import DistillCore
import DistillDetection
import DistillONNX
import Foundation

/// What determines a run's trajectory. Its `hash` goes into every checkpoint, and resuming under
/// another configuration is refused.
public struct TrainingConfig: Codable, Sendable, Equatable {
  public var optimizer: OptimizerConfig
  public var schedule: LearningRateSchedule
  /// Clip the gradients to this global L2 norm (nil: no clipping).
  public var clipGradientNorm: Float?
  /// Parameters whose name matches this regular expression (searched anywhere in the name) are
  /// not trained.
  public var frozen: String?
  /// Seeds the run's random generator (batches, augmentation).
  public var seed: UInt64
  /// Stop after this many steps in a row with a non-finite loss or gradient.
  public var maxConsecutiveNonFinite: Int
  /// How the model's BatchNormalization layers run while training.
  public var batchNormalization: BatchNormalizationMode = .train
  /// Data-parallel, BatchNormalization's batch statistics are those of the global batch (`sync_bn`);
  /// nil when not (so that configurations without it keep their hash).
  public var syncBatchNormalization: Bool?

  public init(
    optimizer: OptimizerConfig, schedule: LearningRateSchedule, clipGradientNorm: Float? = nil, frozen: String? = nil,
    seed: UInt64 = 0, maxConsecutiveNonFinite: Int = 5
  ) {
    self.optimizer = optimizer
    self.schedule = schedule
    self.clipGradientNorm = clipGradientNorm
    self.frozen = frozen
    self.seed = seed
    self.maxConsecutiveNonFinite = maxConsecutiveNonFinite
  }

  /// FNV-1a 64 of the configuration as JSON with sorted keys, in hex.
  public var hash: String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    var hasher = FNV1a64()
    hasher.add([UInt8](try! encoder.encode(self)))
    return String(format: "%016llx", hasher.value)
  }
}

/// `train`: batch statistics, running statistics updated (PyTorch's `train()`). `frozen`: running
/// statistics as in inference and never updated; scale and bias still train (the usual setting
/// for fine-tuning detectors with small batches).
public enum BatchNormalizationMode: String, Codable, Sendable, CaseIterable {
  case train, frozen
}

/// Where a run writes its checkpoints and log; none of it changes the trajectory.
public struct RunOptions {
  /// The checkpoint file (written atomically; see `Checkpoint.write`).
  public var checkpointPath: String?
  /// Write a checkpoint every this many steps (0: only at the end of `run`).
  public var checkpointEvery: Int = 0
  /// Keep the checkpoint before the last as `CHECKPOINT.prev`.
  public var keepPreviousCheckpoint = false
  /// Append one JSON object per step to this file.
  public var logPath: String?
  /// Receives warnings (skipped steps); prints to standard error by default.
  public var warn: (String) -> Void = { message in
    FileHandle.standardError.write(Data(("warning: " + message + "\n").utf8))
  }

  public init(checkpointPath: String? = nil, checkpointEvery: Int = 0, logPath: String? = nil) {
    self.checkpointPath = checkpointPath
    self.checkpointEvery = checkpointEvery
    self.logPath = logPath
  }
}

/// One batch: the graph inputs to feed and the targets the loss compares with.
public struct Batch: Sendable {
  public var feeds: [String: Tensor]
  public var targets: [String: Tensor]
  /// Per image: boxes and labels in network-input pixels (detection data), for losses that use them.
  public var annotations: [DetectionTarget] = []
  public init(feeds: [String: Tensor], targets: [String: Tensor] = [:]) {
    self.feeds = feeds
    self.targets = targets
  }
}

/// What a loss computed from a recorded pass: its value, the gradient with respect to the values it
/// read (the seeds of the backward pass), named terms to log, the gradients of the trainable
/// tensors the loss owns (distillation adapters), and any replays of the recorded pass the loss
/// ran itself (`Tape.replay`) with their own seeds: the trainer differentiates them with
/// `Tape.replayGradients`, adds their seeds for the recorded pass to its own, and sums the
/// parameter gradients.
public struct LossEvaluation: @unchecked Sendable {
  public var loss: Float
  public var seeds: [String: Tensor]
  public var terms: [String: Float]
  public var parameterGradients: [String: Tensor]
  public var additionalPasses: [(tape: Tape, seeds: [String: Tensor])]

  public init(
    loss: Float, seeds: [String: Tensor], terms: [String: Float] = [:], parameterGradients: [String: Tensor] = [:],
    additionalPasses: [(tape: Tape, seeds: [String: Tensor])] = []
  ) {
    self.loss = loss
    self.seeds = seeds
    self.terms = terms
    self.parameterGradients = parameterGradients
    self.additionalPasses = additionalPasses
  }
}

/// A scalar loss computed from a recorded pass. A loss may own trainable tensors (adapters): the
/// trainer updates them with the student's parameters, from `parameterGradients`, and checkpoints them.
public protocol TrainingLoss {
  /// Work on `batch` that needs no recorded pass (distillation runs its teacher here), done by
  /// the trainer before it records the pass, so that its temporary memory never adds to the
  /// tape's; returns the batch `evaluate` then receives. By default the batch as it is.
  func prepare(_ batch: Batch) throws -> Batch
  func evaluate(_ tape: Tape, _ batch: Batch) throws -> LossEvaluation
  /// The values of the recorded pass `evaluate` reads (`Tape.value`), or nil when that may be any
  /// of them (the default) or the loss replays the pass (`Tape.replay`). With a set, the trainer
  /// records a pass that keeps only those values and what the reverse pass needs.
  var recordedValues: Set<String>? { get }
  /// The trainable tensors the loss owns, in a fixed order (names distinct from the model's).
  var parameters: [NamedTensor] { get }
  func setParameter(_ name: String, _ tensor: Tensor) throws
}

extension TrainingLoss {
  public func prepare(_ batch: Batch) throws -> Batch { batch }
  public var recordedValues: Set<String>? { nil }
  public var parameters: [NamedTensor] { [] }
  public func setParameter(_ name: String, _ tensor: Tensor) throws {
    throw TrainingError.mismatch("the loss has no parameter '\(name)'")
  }
}

/// `mean((y - t)^2)` between the value `output` (a graph output or any node output) and the batch
/// target `target`; dL/dy = 2 (y - t) / N.
public struct MeanSquaredError: TrainingLoss {
  public var output: String
  public var target: String

  public init(output: String, target: String? = nil) {
    self.output = output
    self.target = target ?? output
  }

  public var recordedValues: Set<String>? { [output] }

  public func evaluate(_ tape: Tape, _ batch: Batch) throws -> LossEvaluation {
    guard let y = tape.value(output) else { throw TrainingError.invalidConfig("the loss reads '\(output)', which the pass did not compute") }
    guard let t = batch.targets[target] else { throw TrainingError.invalidConfig("the batch has no target '\(target)'") }
    guard y.shape == t.shape else {
      throw TrainingError.invalidConfig("'\(output)' is \(y.shapeDescription), its target is \(t.shapeDescription)")
    }
    let count = y.floats.count
    var sum = 0.0
    var gradient = [Float](repeating: 0, count: count)
    let scale = Float(2) / Float(count)
    for index in 0..<count {
      let difference = y.floats[index] - t.floats[index]
      sum += Double(difference) * Double(difference)
      gradient[index] = scale * difference
    }
    return LossEvaluation(loss: Float(sum / Double(count)), seeds: [output: Tensor(shape: y.shape, floats: gradient, dtype: y.dtype)])
  }
}

/// What one step did.
public struct StepReport: Sendable, Equatable {
  /// Steps taken after this one (1 for the first step).
  public var step: Int
  public var loss: Float
  public var learningRate: Float
  /// The global gradient norm before clipping (nil when the loss was not finite).
  public var gradientNorm: Double?
  /// Why the update was skipped, or nil.
  public var skipped: String?
  /// The loss's named terms (unweighted parts, as the loss reports them).
  public var terms: [String: Float] = [:]
  /// Wall time of the step, in milliseconds (not part of equality: it differs from run to run).
  public var milliseconds: Double = 0

  public static func == (a: StepReport, b: StepReport) -> Bool {
    a.step == b.step && a.loss.bitPattern == b.loss.bitPattern && a.learningRate == b.learningRate
      && a.gradientNorm == b.gradientNorm && a.skipped == b.skipped && a.terms == b.terms
  }
}

/// The training loop over one ONNX graph: record the forward pass, compute the loss in Swift,
/// differentiate, clip, update the trainable parameters, apply BatchNormalization's running
/// statistics, log, and checkpoint; or resume from a checkpoint and continue bit for bit.
public final class Trainer {
  public let interpreter: Interpreter
  public let config: TrainingConfig
  public var options: RunOptions
  /// Every float initializer (promoted Constant tensors included): what checkpoints store.
  public let parameters: [String]
  /// The parameters the optimizer updates, in graph order.
  public let trainable: [String]
  /// BatchNormalization running means and variances: updated from `Tape.stateUpdates`, not by the optimizer.
  public let runningStatistics: [String]
  /// Adapter parameters stored with the student's in checkpoints (trained by distillation, later).
  public var adapters: [NamedTensor] = []
  public private(set) var step = 0
  public private(set) var consecutiveNonFinite = 0
  public var random: SplitMix64
  /// The last checkpoint written or resumed from.
  public private(set) var lastCheckpoint: String?
  public let optimizer: Optimizer
  /// This process's share of a data-parallel run, or nil (one process). Set before the first
  /// step; every process of the run must take the same steps.
  public var parallel: DataParallel? {
    didSet { interpreter.syncBatchStatistics = parallel?.syncBatchNormalization == true ? parallel?.communicator : nil }
  }

  private var loss: any TrainingLoss
  private var batches: (Int, inout SplitMix64) throws -> Batch
  private var log: FileHandle?

  /// Parameters the exporter had merged by value, each layer now training its own copy
  /// (`MergedParameters`); export writes the copies as initializers of their own.
  public let untiedParameters: [MergedParameters.Untied]

  /// Prepares `model` for training (unfused, Constant tensors promoted to parameters, merged
  /// parameters untied).
  /// `batches(step, &random)` returns the batch of 0-based step `step`, drawing any randomness from
  /// `random` (whose state checkpoints keep).
  /// Values named in `keep` (taps a loss reads) are never fused away.
  public init(
    model: Model, config: TrainingConfig, keep: Set<String> = [], loss: any TrainingLoss, options: RunOptions = RunOptions(),
    batches: @escaping (Int, inout SplitMix64) throws -> Batch
  ) throws {
    let (untiedModel, untied) = MergedParameters.untie(model)
    untiedParameters = untied
    interpreter = try Interpreter(model: untiedModel, foldBatchNorm: false, keep: keep, promoteConstants: true)
    self.config = config
    self.options = options
    self.loss = loss
    self.batches = batches
    random = SplitMix64(seed: config.seed)
    optimizer = try Optimizer(config.optimizer)
    parameters = interpreter.parameterNames
    let roles = Trainer.roles(in: interpreter.graph)
    runningStatistics = parameters.filter { roles.statistics.contains($0) }
    var frozen: Regex<AnyRegexOutput>?
    if let pattern = config.frozen {
      do { frozen = try Regex(pattern) } catch {
        throw TrainingError.invalidConfig("frozen pattern '\(pattern)' is not a valid regular expression: \(error)")
      }
    }
    trainable = parameters.filter { name in
      roles.differentiable.contains(name) && !roles.statistics.contains(name) && !(frozen.map { name.contains($0) } ?? false)
    }
    guard !trainable.isEmpty else {
      throw TrainingError.invalidConfig(
        "nothing to train: of the \(parameters.count) parameters, none is read where a gradient flows"
          + (config.frozen.map { " and escapes the frozen pattern '\($0)'" } ?? ""))
    }
  }

  /// Swaps in the loss and the batches (for losses that need the prepared student to be built).
  public func replace(loss: any TrainingLoss, batches: @escaping (Int, inout SplitMix64) throws -> Batch) {
    self.loss = loss
    self.batches = batches
  }

  /// The loss on the first step's batch before any update (step 0 of a log), without advancing
  /// the run's random state.
  public func initialReport() throws -> StepReport {
    var random = self.random
    let (_, evaluation) = try recordAndEvaluate(step, &random)
    let (value, terms) = try parallel?.globalValues(loss: evaluation.loss, terms: evaluation.terms) ?? (evaluation.loss, evaluation.terms)
    return StepReport(step: step, loss: value, learningRate: learningRate(at: step), gradientNorm: nil, skipped: nil, terms: terms)
  }

  /// The batch of 0-based step `index`, prepared by the loss, then the recorded pass on it and the
  /// loss's evaluation of that pass. The batch itself is not kept beyond the evaluation.
  private func recordAndEvaluate(_ index: Int, _ random: inout SplitMix64) throws -> (tape: Tape, evaluation: LossEvaluation) {
    let batch = try loss.prepare(batches(index, &random))
    let tape = try interpreter.record(batch.feeds, training: config.batchNormalization == .train, keeping: loss.recordedValues)
    return (tape, try loss.evaluate(tape, batch))
  }

  /// Appends `report` to the log (`options.logPath`).
  public func log(_ report: StepReport) throws { try writeLog(report) }

  /// Inputs that carry no gradient (shapes, indices, scales, bounds), by op type and input index.
  static let nonDifferentiableInputs: [String: Set<Int>] = [
    "BatchNormalization": [3, 4], "Clip": [1, 2], "ConstantOfShape": [0], "Expand": [1], "Pad": [1, 3],
    "Range": [0, 1, 2], "Reshape": [1], "Resize": [1, 2, 3], "Slice": [1, 2, 3, 4], "Split": [1], "Squeeze": [1],
    "Tile": [1], "TopK": [1], "Unsqueeze": [1], "Upsample": [1], "ReduceMean": [1], "ReduceSum": [1],
    "ReduceMax": [1], "ReduceMin": [1], "Gather": [1], "GatherElements": [1], "GatherND": [1], "ScatterND": [1],
    "ScatterElements": [1], "OneHot": [0, 1], "NonMaxSuppression": [0, 1, 2, 3, 4], "RoiAlign": [1, 2],
  ]

  /// Which values some node reads where a gradient can flow, and which are BatchNormalization statistics.
  static func roles(in graph: Graph) -> (differentiable: Set<String>, statistics: Set<String>) {
    var differentiable = Set<String>(), statistics = Set<String>()
    for node in graph.nodes {
      let skipped = Graph.canonicalDomain(node.domain).isEmpty ? nonDifferentiableInputs[node.opType] ?? [] : []
      for (index, input) in node.inputs.enumerated() where !input.isEmpty && !skipped.contains(index) {
        differentiable.insert(input)
      }
      if node.opType == "BatchNormalization" {
        for index in [3, 4] where index < node.inputs.count { statistics.insert(node.inputs[index]) }
      }
    }
    return (differentiable, statistics)
  }

  /// The learning rate of 0-based step `index`.
  public func learningRate(at index: Int) -> Float {
    Float(Double(config.optimizer.learningRate) * config.schedule.factor(at: index))
  }

  /// The trainable parameters' gradients of `evaluation`: each replay of the recorded pass `tape`
  /// differentiated over the nodes it recomputed, the recorded pass seeded with its seeds plus
  /// those the replays hand back, and the sum. Consumes the passes (`Tape.gradients` with
  /// `releasing`): each recorded value is freed as soon as the reverse pass is done with it, so
  /// the step's memory does not grow past the recorded pass.
  func gradients(_ tape: Tape, _ evaluation: LossEvaluation) throws -> [String: Tensor] {
    // On a data-parallel run, each process's share of the global batch scales its seeds.
    func weighted(_ seeds: [String: Tensor]) -> [String: Tensor] { parallel?.weighted(seeds) ?? seeds }
    var seeds = weighted(evaluation.seeds)
    var replayed: [[String: Tensor]] = []
    for pass in evaluation.additionalPasses {
      let (gradients, baseSeeds) = try pass.tape.replayGradients(seeds: weighted(pass.seeds), targets: Set(trainable), releasing: true)
      for (name, seed) in baseSeeds { if seeds[name] == nil { seeds[name] = seed } else { seeds[name]!.accumulate(seed) } }
      replayed.append(gradients)
    }
    var computed = try tape.gradients(seeds: seeds, targets: Set(trainable), releasing: true)
    for gradients in replayed { for (name, gradient) in gradients { computed[name]!.accumulate(gradient) } }
    return computed
  }

  /// Takes one step: draws a batch, records, differentiates, clips, updates, applies running
  /// statistics; skips the update (with a warning) when the loss or a gradient is not finite, and
  /// throws `TrainingError.diverged` after `maxConsecutiveNonFinite` such steps in a row.
  /// Data-parallel (`parallel`), the batch is this process's slice, the gradients are summed over
  /// the processes before clipping, and the report holds the global loss and terms.
  @discardableResult
  public func trainStep() throws -> StepReport {
    let started = ContinuousClock.now
    let index = step
    let rate = learningRate(at: index)
    let (tape, evaluation) = try recordAndEvaluate(index, &random)
    let (value, terms) = try parallel?.globalValues(loss: evaluation.loss, terms: evaluation.terms) ?? (evaluation.loss, evaluation.terms)
    var report = StepReport(step: index + 1, loss: value, learningRate: rate, gradientNorm: nil, skipped: nil, terms: terms)
    if !value.isFinite {
      report.skipped = "non-finite loss \(value)"
    } else {
      let computed = try gradients(tape, evaluation)
      let owned = loss.parameters
      var gradients = trainable.map { NamedTensor($0, computed[$0]!) }
      for parameter in owned {
        guard let gradient = evaluation.parameterGradients[parameter.name] else {
          throw TrainingError.invalidConfig("the loss gave no gradient for its parameter '\(parameter.name)'")
        }
        gradients.append(NamedTensor(parameter.name, parallel?.weighted([parameter.name: gradient])[parameter.name] ?? gradient))
      }
      try parallel?.sum(&gradients)
      let norm =
        config.clipGradientNorm.map { GradientClipping.clip(&gradients, maxNorm: $0) }
        ?? GradientClipping.globalNorm(gradients)
      report.gradientNorm = norm
      if !norm.isFinite {
        let culprit = gradients.first { $0.tensor.floats.contains { !$0.isFinite } }?.name ?? "?"
        report.skipped = "non-finite gradient (first in '\(culprit)')"
      } else {
        let ownedNames = Set(owned.map(\.name))
        let current = trainable.map { NamedTensor($0, interpreter.parameter($0)!) } + owned
        for updated in try optimizer.update(current, gradients: gradients, learningRate: rate) {
          if ownedNames.contains(updated.name) {
            try loss.setParameter(updated.name, updated.tensor)
          } else {
            try interpreter.setParameter(updated.name, updated.tensor)
          }
        }
        var statistics = tape.stateUpdates.filter { interpreter.parameter($0.key) != nil }
        if let parallel, !parallel.syncBatchNormalization, !statistics.isEmpty { statistics = try parallel.averaged(statistics) }
        for name in statistics.keys.sorted() { try interpreter.setParameter(name, statistics[name]!) }
      }
    }
    step += 1
    report.milliseconds = (ContinuousClock.now - started) / .milliseconds(1)
    try writeLog(report)
    if let reason = report.skipped {
      consecutiveNonFinite += 1
      options.warn("step \(report.step): \(reason); update skipped (\(consecutiveNonFinite) in a row)")
      if consecutiveNonFinite >= config.maxConsecutiveNonFinite {
        throw TrainingError.diverged(step: report.step, inARow: consecutiveNonFinite, lastCheckpoint: lastCheckpoint)
      }
    } else {
      consecutiveNonFinite = 0
    }
    return report
  }

  /// Trains until `steps` steps have been taken (default: the schedule's total), writing
  /// checkpoints every `options.checkpointEvery` steps and at the end. Returns this call's reports.
  @discardableResult
  public func run(until steps: Int? = nil, onStep: (StepReport) -> Void = { _ in }) throws -> [StepReport] {
    let end = steps ?? config.schedule.totalSteps
    var reports: [StepReport] = []
    while step < end {
      let report = try trainStep()
      reports.append(report)
      onStep(report)
      let periodic = options.checkpointEvery > 0 && step % options.checkpointEvery == 0
      if options.checkpointPath != nil, periodic || step == end, consecutiveNonFinite == 0 {
        try saveCheckpoint()
      }
    }
    return reports
  }

  /// The run's state as a checkpoint.
  public func checkpoint() -> Checkpoint {
    Checkpoint(
      step: step, configHash: config.hash, rngState: [random.state], consecutiveNonFinite: consecutiveNonFinite,
      student: parameters.map { NamedTensor($0, interpreter.parameter($0)!) }, adapters: loss.parameters.isEmpty ? adapters : loss.parameters,
      optimizer: optimizer.state)
  }

  /// Writes `checkpoint()` to `path` (default: `options.checkpointPath`).
  public func saveCheckpoint(to path: String? = nil) throws {
    guard let path = path ?? options.checkpointPath else { throw TrainingError.invalidConfig("no checkpoint path") }
    try checkpoint().write(to: path, keepPrevious: options.keepPreviousCheckpoint)
    lastCheckpoint = path
  }

  /// Continues from the checkpoint at `path` (or `path.prev` if that is missing or damaged):
  /// restores parameters, adapters, optimizer state, step and random state, and drops log lines of
  /// steps after the checkpoint. Refuses a checkpoint of another configuration or model.
  /// Data-parallel, process 0 reads the file and sends it to the others (which need no copy), so
  /// a run resumes with any number of processes.
  public func resume(from path: String) throws {
    var (checkpoint, file): (Checkpoint, String)
    if let parallel, parallel.size > 1 {
      var bytes: [UInt8] = []
      file = path
      if parallel.rank == 0 {
        let (read, found, warning) = try Checkpoint.readLatest(path)
        if let warning { options.warn(warning) }
        bytes = read.encoded() + Array(found.utf8)
        bytes += withUnsafeBytes(of: UInt64(found.utf8.count).littleEndian, Array.init)
      }
      try parallel.communicator.broadcast(&bytes, root: 0)
      let nameCount = Int(bytes.suffix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
      file = String(decoding: bytes.dropLast(8).suffix(nameCount), as: UTF8.self)
      checkpoint = try Checkpoint.decode(Array(bytes.dropLast(8 + nameCount)), file: file)
    } else {
      let (read, found, warning) = try Checkpoint.readLatest(path)
      if let warning { options.warn(warning) }
      (checkpoint, file) = (read, found)
    }
    guard checkpoint.configHash == config.hash else {
      throw TrainingError.configMismatch(file: file, checkpoint: checkpoint.configHash, current: config.hash)
    }
    let expected = parameters.map { (name: $0, tensor: interpreter.parameter($0)!) }
    if let mismatch = TrainedWeights.firstMismatch(
      expected: expected.map { ($0.name, $0.tensor.dtype, $0.tensor.shape) }, checkpoint: checkpoint.student)
    {
      throw TrainingError.mismatch("\(file) does not match the model: \(mismatch)")
    }
    guard checkpoint.rngState.count == 1 else {
      throw TrainingError.checkpoint(file: file, problem: "holds \(checkpoint.rngState.count) random states, expected 1")
    }
    try optimizer.load(checkpoint.optimizer)
    for named in checkpoint.student { try interpreter.setParameter(named.name, named.tensor) }
    let owned = loss.parameters
    if owned.isEmpty {
      adapters = checkpoint.adapters
    } else {
      let stored = Dictionary(checkpoint.adapters.map { ($0.name, $0.tensor) }, uniquingKeysWith: { first, _ in first })
      for parameter in owned {
        guard let tensor = stored[parameter.name], tensor.shape == parameter.tensor.shape else {
          throw TrainingError.mismatch("\(file) does not match the loss: adapter '\(parameter.name)' \(parameter.tensor.shapeDescription) is missing or shaped otherwise")
        }
        try loss.setParameter(parameter.name, tensor)
      }
    }
    step = checkpoint.step
    consecutiveNonFinite = checkpoint.consecutiveNonFinite
    random = SplitMix64(seed: checkpoint.rngState[0])
    lastCheckpoint = file
    if let logPath = options.logPath { try Trainer.truncateLog(logPath, after: step) }
  }

  private func writeLog(_ report: StepReport) throws {
    guard let path = options.logPath else { return }
    if log == nil {
      if !FileManager.default.fileExists(atPath: path) {
        guard FileManager.default.createFile(atPath: path, contents: nil) else {
          throw TrainingError.invalidConfig("cannot create the log file \(path)")
        }
      }
      guard let handle = FileHandle(forWritingAtPath: path) else { throw TrainingError.invalidConfig("cannot open the log file \(path)") }
      handle.seekToEndOfFile()
      log = handle
    }
    log!.write(Data((Trainer.jsonLine(report) + "\n").utf8))
  }

  /// `{"step":1,"loss":0.25,"lr":0.01,"mse:p3":0.2,...,"grad_norm":1.5,"step_ms":812.4}` (terms by
  /// name, sorted; `"skipped":REASON` on skipped steps; non-finite numbers as strings). Floats print in their shortest round-tripping form.
  static func jsonLine(_ report: StepReport) -> String {
    func number(_ value: Double) -> String { value.isFinite ? "\(value)" : "\"\(value)\"" }
    func number(_ value: Float) -> String { value.isFinite ? "\(value)" : "\"\(value)\"" }
    var fields = ["\"step\":\(report.step)", "\"loss\":\(number(report.loss))", "\"lr\":\(number(report.learningRate))"]
    for (name, value) in report.terms.sorted(by: { $0.key < $1.key }) {
      let escaped = name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
      fields.append("\"\(escaped)\":\(number(value))")
    }
    if let norm = report.gradientNorm { fields.append("\"grad_norm\":\(number(norm))") }
    if report.milliseconds > 0 { fields.append("\"step_ms\":\((report.milliseconds * 10).rounded() / 10)") }
    if let reason = report.skipped {
      let escaped = reason.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
      fields.append("\"skipped\":\"\(escaped)\"")
    }
    return "{" + fields.joined(separator: ",") + "}"
  }

  /// Drops the lines of steps after `step` (written after the checkpoint a run resumes from).
  static func truncateLog(_ path: String, after step: Int) throws {
    guard let data = FileManager.default.contents(atPath: path) else { return }
    let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: true)
    let kept = lines.filter { line in
      guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
        let logged = object["step"] as? Int
      else { return false }
      return logged <= step
    }
    let text = kept.map { $0 + "\n" }.joined()
    let temporary = path + ".tmp"
    func fail(_ what: String) -> TrainingError {
      .checkpoint(file: path, problem: "cannot rewrite the log: \(what): \(String(cString: strerror(errno)))")
    }
    do {
      try ModelFile.writeSynced(Array(text.utf8), to: temporary)
    } catch {
      unlink(temporary)
      throw TrainingError.checkpoint(file: path, problem: "cannot rewrite the log: \(error)")
    }
    guard rename(temporary, path) == 0 else {
      let error = fail("renaming \(temporary)")
      unlink(temporary)
      throw error
    }
  }
}
