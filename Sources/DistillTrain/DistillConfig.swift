import DistillCore
import DistillDetection
import Foundation
import Yams

/// Everything wrong with a configuration, found in one pass and reported together.
public struct ConfigProblems: Error, CustomStringConvertible {
  public let file: String
  public let problems: [String]
  public var description: String {
    "\(file): \(problems.count) problem\(problems.count == 1 ? "" : "s"):\n" + problems.map { "  - " + $0 }.joined(separator: "\n")
  }
}

/// The `distill train` configuration (YAML; JSON is valid YAML). Paths are relative to the
/// configuration file. `DistillConfig.load` checks every key (unknown ones get the closest valid
/// key), type and range, and reports all problems at once; files and taps are checked later,
/// against the models, by `Distiller`, still before any data is loaded.
public struct DistillConfig: Sendable {
  public struct Data: Sendable {
    /// A directory of images (PNG/JPEG), with `annotations` (COCO JSON) or without (label-free).
    public var images: String?
    public var annotations: String?
    /// A directory of preprocessed samples instead of images (.pb TensorProto or .npy, [C,H,W] or
    /// [1,C,H,W], read in name order).
    public var tensors: String?
    /// The graph input that takes the images (default: the student's only input).
    public var input: String?
    /// Network input height and width (default: the student input's declared size).
    public var size: (height: Int, width: Int)?
    public var mean: [Float] = [0, 0, 0]
    public var std: [Float] = [1, 1, 1]
    public var letterbox = false
    public var hflip: Float = 0
    public var scale: ClosedRange<Float> = 1...1
    public var shuffle = true
  }

  /// One loss: its method, the taps it reads in each graph, its weight and its own settings.
  public struct Loss: Sendable {
    public var type: String
    public var teacher: [String]
    public var student: [String]
    public var weight: Float
    /// The method's other keys, checked by the method.
    public var settings: [String: Double]
    public var flags: [String: String]
    /// Resize the student's maps to the teacher's spatial size when they differ.
    public var resize: Bool
  }

  public var file: String
  public var teacher: String
  public var student: String
  public var data: Data
  public var batchNormalization: BatchNormalizationMode
  /// `sync_bn`: data-parallel with `bn: train`, BatchNormalization takes its batch statistics over
  /// every process's slice (the whole global batch) instead of each process's own.
  public var syncBatchNormalization: Bool
  /// The head config as YAML text, for both models unless `studentHead`/`teacherHead` differ.
  public var teacherHead: String?
  public var studentHead: String?
  public var losses: [Loss]
  public var steps: Int
  public var batch: Int
  public var seed: UInt64
  public var optimizer: OptimizerConfig
  public var schedule: LearningRateSchedule
  public var clipGradientNorm: Float?
  public var checkpointEvery: Int
  public var freeze: String?
  public var output: String
  public var pseudoLabelScore: Float
  /// The detection loss on the student's head outputs against the annotations (or the teacher's
  /// pseudo-labels), its weight; nil without a `task` key.
  public var taskWeight: Float?

  /// The training configuration the `Trainer` hashes into checkpoints.
  public var training: TrainingConfig {
    var config = TrainingConfig(optimizer: optimizer, schedule: schedule, clipGradientNorm: clipGradientNorm, frozen: freeze, seed: seed)
    config.batchNormalization = batchNormalization
    config.syncBatchNormalization = syncBatchNormalization ? true : nil
    return config
  }

  static let lossTypes: [String: (settings: [String], flags: [String])] = [
    "mse": ([], []), "l1": ([], []), "cosine": ([], []),
    "kd": (["temperature", "background_weight", "axis"], ["activation"]),
    "cwd": (["temperature"], []), "pkd": ([], []), "ld": (["temperature", "reg_max"], []),
    "detr": (
      ["class_weight", "l1_weight", "giou_weight", "top_k", "feature_weight", "assisted_weight"],
      ["query_features", "student_queries", "teacher_queries"]
    ),
    "gid": (GeneralInstanceDistillation.Settings.keys, []),
    "fgd": (["temperature", "alpha", "beta", "gamma", "lambda"], []),
    "mimic": (["output_size", "sampling_ratio", "canonical_size"], []),
    "bounded_regression": (["margin", "nu", "task_weight", "beta"], []),
  ]
  /// Losses whose taps come from the head configs: `teacher`/`student` may be left out.
  static let headDrivenLosses: Set<String> = ["detr"]

  public static func load(_ path: String) throws -> DistillConfig {
    let text: String
    do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
      throw ConfigProblems(file: path, problems: ["cannot read the file: \(error.localizedDescription)"])
    }
    return try DistillConfig(yaml: text, file: path)
  }

  public init(yaml: String, file: String) throws {
    let root: Any?
    do { root = try Yams.load(yaml: yaml) } catch {
      throw ConfigProblems(file: file, problems: ["not valid YAML: \(error)"])
    }
    let base = URL(fileURLWithPath: file).deletingLastPathComponent()
    func resolve(_ path: String) -> String {
      path.hasPrefix("/") ? path : base.appendingPathComponent(path).standardizedFileURL.path
    }
    var reader = ConfigReader()
    let top = reader.mapping(root, at: "", keys: [
      "teacher", "student", "data", "bn", "sync_bn", "head", "teacher_head", "student_head", "task", "losses", "train", "output", "pseudo_label",
    ])
    self.file = file
    teacher = resolve(reader.string(top["teacher"], at: "teacher", required: true) ?? "")
    student = resolve(reader.string(top["student"], at: "student", required: true) ?? "")
    output = resolve(reader.string(top["output"], at: "output") ?? "runs/distill")

    let dataNode = reader.mapping(top["data"], at: "data", keys: [
      "images", "annotations", "tensors", "input", "size", "mean", "std", "letterbox", "augment", "shuffle",
    ], required: true)
    var data = Data()
    data.images = reader.string(dataNode["images"], at: "data.images").map(resolve)
    data.annotations = reader.string(dataNode["annotations"], at: "data.annotations").map(resolve)
    data.tensors = reader.string(dataNode["tensors"], at: "data.tensors").map(resolve)
    data.input = reader.string(dataNode["input"], at: "data.input")
    if let size = reader.numbers(dataNode["size"], at: "data.size", count: 2) {
      if size.allSatisfy({ $0 >= 1 && $0 == $0.rounded() }) { data.size = (Int(size[0]), Int(size[1])) } else {
        reader.problem("data.size: expected [height, width] in whole pixels, got \(size)")
      }
    }
    if let mean = reader.numbers(dataNode["mean"], at: "data.mean", count: 3) { data.mean = mean.map(Float.init) }
    if let std = reader.numbers(dataNode["std"], at: "data.std", count: 3) {
      if std.contains(where: { $0 <= 0 }) { reader.problem("data.std: every value must be positive, got \(std)") }
      data.std = std.map(Float.init)
    }
    data.letterbox = reader.bool(dataNode["letterbox"], at: "data.letterbox") ?? false
    data.shuffle = reader.bool(dataNode["shuffle"], at: "data.shuffle") ?? true
    let augment = reader.mapping(dataNode["augment"], at: "data.augment", keys: ["hflip", "scale"])
    if let flip = reader.number(augment["hflip"], at: "data.augment.hflip", range: 0...1) { data.hflip = Float(flip) }
    if let scale = reader.numbers(augment["scale"], at: "data.augment.scale", count: 2) {
      if scale[0] > 0, scale[0] <= scale[1] { data.scale = Float(scale[0])...Float(scale[1]) } else {
        reader.problem("data.augment.scale: expected [low, high] with 0 < low <= high, got \(scale)")
      }
    }
    let sources = [data.images, data.tensors].compactMap { $0 }.count
    if dataNode.isEmpty == false, sources != 1 {
      reader.problem("data: give exactly one of images (a directory of PNG/JPEG, with annotations or label-free) or tensors (preprocessed samples)")
    }
    if data.annotations != nil, data.images == nil { reader.problem("data.annotations: goes with data.images") }
    self.data = data

    batchNormalization = .train
    if let mode = reader.string(top["bn"], at: "bn") {
      if let parsed = BatchNormalizationMode(rawValue: mode) { batchNormalization = parsed } else {
        reader.problem("bn: '\(mode)' is not one of \(BatchNormalizationMode.allCases.map(\.rawValue).joined(separator: ", "))")
      }
    }
    syncBatchNormalization = reader.bool(top["sync_bn"], at: "sync_bn") ?? false
    if syncBatchNormalization, batchNormalization == .frozen {
      reader.problem("sync_bn: true synchronizes batch statistics, which bn: frozen does not use; give bn: train or drop sync_bn")
    }
    func yamlText(_ node: Any?, at path: String) -> String? {
      guard let node else { return nil }
      guard node is [String: Any] else {
        reader.problem("\(path): expected a head config mapping")
        return nil
      }
      return try? Yams.dump(object: node)
    }
    let shared = yamlText(top["head"], at: "head")
    teacherHead = yamlText(top["teacher_head"], at: "teacher_head") ?? shared
    studentHead = yamlText(top["student_head"], at: "student_head") ?? shared
    for (name, text) in [("teacher_head", teacherHead), ("student_head", studentHead)] {
      guard let text else { continue }
      do { _ = try HeadConfig(yaml: text) } catch { reader.problem("\(top["head"] != nil ? "head" : name): \(error)") }
    }
    let task = reader.mapping(top["task"], at: "task", keys: ["weight"])
    taskWeight = top["task"] == nil ? nil : Float(reader.number(task["weight"], at: "task.weight", range: 0...1e9) ?? 1)
    if taskWeight != nil, studentHead == nil { reader.problem("task: the task loss needs the student's head config (head or student_head)") }

    var losses: [Loss] = []
    let lossNodes = reader.sequence(top["losses"], at: "losses", required: top["task"] == nil)
    for (index, node) in lossNodes.enumerated() {
      let path = "losses[\(index)]"
      let type = reader.string((node as? [String: Any])?["type"], at: "\(path).type", required: true) ?? ""
      guard let known = Self.lossTypes[type] else {
        if !type.isEmpty {
          reader.problem("\(path).type: unknown loss '\(type)'\(ConfigReader.suggestion(type, Array(Self.lossTypes.keys))); known: \(Self.lossTypes.keys.sorted().joined(separator: ", "))")
        }
        continue
      }
      let keys = ["type", "teacher", "student", "weight", "resize"] + known.settings + known.flags
      let mapping = reader.mapping(node, at: path, keys: keys)
      let optionalTaps = Self.headDrivenLosses.contains(type)
      let teacherTaps = optionalTaps && mapping["teacher"] == nil ? [] : reader.names(mapping["teacher"], at: "\(path).teacher")
      let studentTaps = optionalTaps && mapping["student"] == nil ? [] : reader.names(mapping["student"], at: "\(path).student")
      if teacherTaps.count != studentTaps.count {
        reader.problem("\(path): teacher names \(teacherTaps.count) taps and student \(studentTaps.count); pair them one to one")
      }
      let weight = reader.number(mapping["weight"], at: "\(path).weight", range: 0...1e9) ?? 1
      var settings: [String: Double] = [:]
      for key in known.settings {
        if let value = reader.number(mapping[key], at: "\(path).\(key)", range: -1e9...1e9) { settings[key] = value }
      }
      var flags: [String: String] = [:]
      for key in known.flags { if let value = reader.string(mapping[key], at: "\(path).\(key)") { flags[key] = value } }
      let resize = reader.bool(mapping["resize"], at: "\(path).resize") ?? false
      losses.append(Loss(type: type, teacher: teacherTaps, student: studentTaps, weight: Float(weight), settings: settings, flags: flags, resize: resize))
    }
    if lossNodes.isEmpty, top["task"] == nil { reader.problem("losses: give at least one loss (or a task loss alone, for a baseline)") }
    self.losses = losses

    let train = reader.mapping(top["train"], at: "train", keys: [
      "steps", "batch", "seed", "optimizer", "schedule", "clip_grad_norm", "checkpoint_every", "freeze",
    ], required: true)
    let givenSteps = reader.number(train["steps"], at: "train.steps", range: 1...1e9, integer: true, required: true)
    steps = Int(givenSteps ?? 1)
    batch = Int(reader.number(train["batch"], at: "train.batch", range: 1...65536, integer: true) ?? 8)
    seed = UInt64(reader.number(train["seed"], at: "train.seed", range: 0...9.007e15, integer: true) ?? 0)
    clipGradientNorm = reader.number(train["clip_grad_norm"], at: "train.clip_grad_norm", range: 1e-12...1e12).map(Float.init)
    checkpointEvery = Int(reader.number(train["checkpoint_every"], at: "train.checkpoint_every", range: 0...1e9, integer: true) ?? 0)
    freeze = reader.string(train["freeze"], at: "train.freeze")
    if let freeze, (try? Regex(freeze)) == nil { reader.problem("train.freeze: '\(freeze)' is not a valid regular expression") }
    let optimizerNode = reader.mapping(train["optimizer"], at: "train.optimizer", keys: [
      "type", "lr", "momentum", "nesterov", "weight_decay", "betas", "eps",
    ])
    let kind = reader.string(optimizerNode["type"], at: "train.optimizer.type") ?? "sgd"
    let rate = Float(reader.number(optimizerNode["lr"], at: "train.optimizer.lr", range: 0...100) ?? 0.01)
    let decay = Float(reader.number(optimizerNode["weight_decay"], at: "train.optimizer.weight_decay", range: 0...10) ?? 0)
    switch kind {
    case "sgd":
      optimizer = .sgd(
        learningRate: rate, momentum: Float(reader.number(optimizerNode["momentum"], at: "train.optimizer.momentum", range: 0...1) ?? 0.9),
        nesterov: reader.bool(optimizerNode["nesterov"], at: "train.optimizer.nesterov") ?? false, weightDecay: decay)
    case "adamw":
      optimizer = .adamw(learningRate: rate, weightDecay: decay)
      if let betas = reader.numbers(optimizerNode["betas"], at: "train.optimizer.betas", count: 2) {
        optimizer.beta1 = Float(betas[0])
        optimizer.beta2 = Float(betas[1])
      }
      if let eps = reader.number(optimizerNode["eps"], at: "train.optimizer.eps", range: 0...1) { optimizer.epsilon = Float(eps) }
    default:
      reader.problem("train.optimizer.type: '\(kind)' is not one of sgd, adamw")
      optimizer = .sgd(learningRate: rate)
    }
    let scheduleNode = reader.mapping(train["schedule"], at: "train.schedule", keys: ["type", "warmup", "warmup_factor", "min_factor", "every", "gamma"])
    let warmup = Int(reader.number(scheduleNode["warmup"], at: "train.schedule.warmup", range: 0...1e9, integer: true) ?? 0)
    let warmupFactor = reader.number(scheduleNode["warmup_factor"], at: "train.schedule.warmup_factor", range: 0...1) ?? 0.001
    let decayKind = reader.string(scheduleNode["type"], at: "train.schedule.type") ?? "cosine"
    let scheduleDecay: LearningRateSchedule.Decay
    switch decayKind {
    case "cosine": scheduleDecay = .cosine(minimumFactor: reader.number(scheduleNode["min_factor"], at: "train.schedule.min_factor", range: 0...1) ?? 0)
    case "constant": scheduleDecay = .constant
    case "linear": scheduleDecay = .linear(finalFactor: reader.number(scheduleNode["min_factor"], at: "train.schedule.min_factor", range: 0...1) ?? 0)
    case "step":
      scheduleDecay = .step(
        every: Int(reader.number(scheduleNode["every"], at: "train.schedule.every", range: 1...1e9, integer: true) ?? Double(max(1, steps / 3))),
        gamma: reader.number(scheduleNode["gamma"], at: "train.schedule.gamma", range: 0...1) ?? 0.1)
    default:
      reader.problem("train.schedule.type: '\(decayKind)' is not one of cosine, step, linear, constant")
      scheduleDecay = .constant
    }
    if givenSteps != nil, warmup >= steps, scheduleNode["warmup"] != nil { reader.problem("train.schedule.warmup: \(warmup) is not below train.steps \(steps)") }
    schedule = LearningRateSchedule(totalSteps: steps, warmupSteps: warmup, warmupStartFactor: warmupFactor, decay: scheduleDecay)
    let pseudo = reader.mapping(top["pseudo_label"], at: "pseudo_label", keys: ["score"])
    pseudoLabelScore = Float(reader.number(pseudo["score"], at: "pseudo_label.score", range: 0...1) ?? 0.5)
    if !reader.problems.isEmpty { throw ConfigProblems(file: file, problems: reader.problems) }
  }
}

/// Reads an untyped YAML tree, collecting a problem (with the key's path) for everything that does
/// not fit instead of stopping at the first.
struct ConfigReader {
  var problems: [String] = []

  mutating func problem(_ text: String) { problems.append(text) }

  mutating func mapping(_ node: Any?, at path: String, keys: [String], required: Bool = false) -> [String: Any] {
    guard let node else {
      if required { problem("\(path.isEmpty ? "the file" : path): missing") }
      return [:]
    }
    guard let mapping = node as? [String: Any] else {
      problem("\(path.isEmpty ? "the file" : path): expected a mapping of keys to values")
      return [:]
    }
    for key in mapping.keys.sorted() where !keys.contains(key) {
      problem("\(path.isEmpty ? "" : path + ".")\(key): unknown key\(Self.suggestion(key, keys))")
    }
    return mapping
  }

  mutating func sequence(_ node: Any?, at path: String, required: Bool = false) -> [Any] {
    guard let node else {
      if required { problem("\(path): missing") }
      return []
    }
    guard let list = node as? [Any] else {
      problem("\(path): expected a list")
      return []
    }
    return list
  }

  mutating func string(_ node: Any?, at path: String, required: Bool = false) -> String? {
    guard let node else {
      if required { problem("\(path): missing") }
      return nil
    }
    if let text = node as? String { return text }
    problem("\(path): expected text, got \(node)")
    return nil
  }

  /// One name or a list of names.
  mutating func names(_ node: Any?, at path: String) -> [String] {
    if let single = node as? String { return [single] }
    if let list = node as? [Any], !list.isEmpty, list.allSatisfy({ $0 is String }) { return list.map { $0 as! String } }
    problem("\(path): \(node == nil ? "missing" : "expected a tap name or a list of tap names")")
    return []
  }

  mutating func bool(_ node: Any?, at path: String) -> Bool? {
    guard let node else { return nil }
    if let value = node as? Bool { return value }
    problem("\(path): expected true or false, got \(node)")
    return nil
  }

  mutating func number(_ node: Any?, at path: String, range: ClosedRange<Double>, integer: Bool = false, required: Bool = false) -> Double? {
    guard let node else {
      if required { problem("\(path): missing") }
      return nil
    }
    let value: Double
    if let int = node as? Int { value = Double(int) } else if let double = node as? Double { value = double } else {
      problem("\(path): expected a number, got \(node)")
      return nil
    }
    if integer, value != value.rounded() {
      problem("\(path): expected a whole number, got \(value)")
      return nil
    }
    guard range.contains(value) else {
      problem("\(path): \(Self.format(value)) is outside \(Self.format(range.lowerBound))...\(Self.format(range.upperBound))")
      return nil
    }
    return value
  }

  mutating func numbers(_ node: Any?, at path: String, count: Int) -> [Double]? {
    guard let node else { return nil }
    guard let list = node as? [Any], list.count == count else {
      problem("\(path): expected a list of \(count) numbers")
      return nil
    }
    var values: [Double] = []
    for item in list {
      if let int = item as? Int { values.append(Double(int)) } else if let double = item as? Double { values.append(double) } else {
        problem("\(path): expected a list of \(count) numbers, got \(item)")
        return nil
      }
    }
    return values
  }

  static func format(_ value: Double) -> String { String(format: "%g", value) }

  /// " (did you mean 'x'?)" for the closest of `candidates` within a few edits, else "".
  static func suggestion(_ word: String, _ candidates: [String]) -> String {
    let scored = candidates.map { ($0, editDistance(word.lowercased(), $0.lowercased())) }.min { $0.1 < $1.1 }
    guard let (best, distance) = scored, distance <= max(2, word.count / 3) else { return "" }
    return " (did you mean '\(best)'?)"
  }

  static func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var previous = Array(0...b.count)
    for i in 1...max(1, a.count) where !a.isEmpty {
      var current = [i] + [Int](repeating: 0, count: b.count)
      for j in 1...max(1, b.count) where !b.isEmpty {
        current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
      }
      previous = current
    }
    return a.isEmpty ? b.count : previous[b.count]
  }
}
