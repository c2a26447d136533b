import DistillCore
import DistillDetection

/// One configured tap pair as a loss sees it: the tap names, the loss-graph values holding them
/// (the student's already mapped to the teacher's width, and size with `resize`, by an adapter)
/// and the teacher's shape (batches have a fixed size: the last partial batch of an epoch is dropped).
struct TapPair {
  let studentTap: String
  let teacherTap: String
  let student: String
  let teacher: String
  let shape: [Int]
}

/// What a loss may read each step to compute its per-step inputs (no tape): the batch (images,
/// and boxes in network-input pixels when the data has annotations), the taps' values, and the
/// boxes to use as objects (ground truth, or the teacher's detections in label-free mode).
struct StepContext {
  let batch: Batch
  let teacher: [String: Tensor]
  let student: [String: Tensor]
  let inputSize: (height: Int, width: Int)
  /// Per image: object boxes and class indices.
  let objects: [(boxes: [[Float]], labels: [Int])]
}

/// A distillation loss written as ONNX nodes, with any per-step selection (masks from boxes,
/// instance selection, matching) done in Swift. `build` emits the nodes for all of a loss's tap
/// pairs and returns its terms (unweighted scalar values, named; the engine prefixes the type).
/// Values a method declares as graph inputs of its own are fed each step from `stepFeeds`.
/// Methods are looked up by their config `type` in `DistillationMethods.make`.
protocol DistillationMethod {
  func build(_ builder: inout GraphBuilder, pairs: [TapPair]) throws -> [(name: String, value: String)]
  func stepFeeds(_ context: StepContext) throws -> [String: Tensor]
  /// Whether `StepContext.objects` must be filled (from annotations or pseudo-labels).
  var needsObjects: Bool { get }
  /// Taps read besides the configured pairs (head outputs, for example), never adapted: the
  /// engine declares them as loss-graph inputs `student:TAP` / `teacher:TAP` (the student's with
  /// gradients) and puts their values in `StepContext`.
  var extraTaps: (student: [String], teacher: [String]) { get }
  /// A second recorded student pass the loss reads (nil: none).
  var rerun: StudentRerun? { get }
}

extension DistillationMethod {
  var extraTaps: (student: [String], teacher: [String]) { ([], []) }
  var rerun: StudentRerun? { nil }
}

/// A second recorded pass of the student on the same batch with one of its values (an
/// initializer, an input or a node output, `replacing`) replaced by the teacher's value
/// `teacherTap` of the same shape (`Tape.replay`). The loss reads the student values `taps` of
/// that pass as loss-graph inputs named `DistillationLoss.rerunValue(self, tap)`; their gradients
/// seed the second pass (a replay of the main one: only the nodes downstream of the replaced value
/// run again), whose gradients at the values it shares with the main pass join the main pass's
/// seeds. `source` names the config keys, for errors.
struct StudentRerun: Hashable {
  let replacing: String
  let teacherTap: String
  let taps: [String]
  let source: String
}

/// The head configs of both models, for methods that decode or read head outputs.
public struct MethodSetup: Sendable {
  public var teacherHead: HeadConfig?
  public var studentHead: HeadConfig?
  public init(teacherHead: HeadConfig? = nil, studentHead: HeadConfig? = nil) {
    self.teacherHead = teacherHead
    self.studentHead = studentHead
  }
}

/// A loss of one student tap and one teacher tap, one term per pair named after the student
/// tap, nothing computed per step.
protocol PairwiseMethod: DistillationMethod {
  func build(_ builder: inout GraphBuilder, student: String, teacher: String, shape: [Int]) throws -> String
}

extension PairwiseMethod {
  func build(_ builder: inout GraphBuilder, pairs: [TapPair]) throws -> [(name: String, value: String)] {
    try pairs.map { pair in (pair.studentTap, try build(&builder, student: pair.student, teacher: pair.teacher, shape: pair.shape)) }
  }
  func stepFeeds(_ context: StepContext) throws -> [String: Tensor] { [:] }
  var needsObjects: Bool { false }
}

enum DistillationMethods {
  /// The method of `loss.type` with its settings (defaults from METHODS.md).
  static func make(_ loss: DistillConfig.Loss, setup: MethodSetup = MethodSetup()) throws -> any DistillationMethod {
    switch loss.type {
    case "mse": return MeanSquaredHint()
    case "l1": return L1Hint()
    case "cosine": return CosineHint()
    case "kd":
      let activation = loss.flags["activation"] ?? "sigmoid"
      guard let kind = KnowledgeDistillation.Activation(rawValue: activation) else {
        throw TrainingError.invalidConfig("kd: activation '\(activation)' is not one of sigmoid, softmax")
      }
      return KnowledgeDistillation(
        activation: kind, temperature: Float(loss.settings["temperature"] ?? 1), axis: Int(loss.settings["axis"] ?? 1),
        backgroundWeight: Float(loss.settings["background_weight"] ?? 1))
    case "cwd": return ChannelWiseDistillation(temperature: Float(loss.settings["temperature"] ?? 1))
    case "pkd": return PearsonDistillation()
    case "ld":
      return LocalizationDistillation(temperature: Float(loss.settings["temperature"] ?? 10), regMax: loss.settings["reg_max"].map(Int.init))
    case "detr": return try DETRDistill(loss, setup: setup)
    case "gid": return try GeneralInstanceDistillation(settings: .init(loss.settings), setup: setup)
    case "fgd":
      return FocalGlobalDistillation(
        temperature: Float(loss.settings["temperature"] ?? 0.5), alpha: Float(loss.settings["alpha"] ?? 1e-3),
        beta: Float(loss.settings["beta"] ?? 5e-4), gamma: Float(loss.settings["gamma"] ?? 1e-3), lambda: Float(loss.settings["lambda"] ?? 5e-6))
    case "mimic":
      return MimicDistillation(
        outputSize: Int(loss.settings["output_size"] ?? 7), samplingRatio: Int(loss.settings["sampling_ratio"] ?? 2),
        canonicalSize: Float(loss.settings["canonical_size"] ?? 224))
    case "bounded_regression":
      return try BoundedRegression(
        head: setup.studentHead, margin: Float(loss.settings["margin"] ?? 0), nu: Float(loss.settings["nu"] ?? 0.5),
        taskWeight: Float(loss.settings["task_weight"] ?? 1), beta: Float(loss.settings["beta"] ?? 1))
    default: throw TrainingError.invalidConfig("unknown loss '\(loss.type)'")
    }
  }
}

extension GraphBuilder {
  /// `ReduceMean` over every axis (opset 17: axes as an attribute), to a scalar.
  mutating func meanOfAll(_ x: String) -> String { add("ReduceMean", [x], [.int("keepdims", 0)]) }

  /// `ReduceMean` over `axes`.
  mutating func mean(_ x: String, axes: [Int], keepDims: Bool) -> String {
    add("ReduceMean", [x], [.ints("axes", axes), .int("keepdims", keepDims ? 1 : 0)])
  }

  /// `x / temperature` (no node when the temperature is 1).
  mutating func scaled(_ x: String, by temperature: Float) -> String { temperature == 1 ? x : div(x, scalar(temperature)) }
}
