import DistillCore

/// One distillation loss between a student tap and a teacher tap, written as ONNX nodes.
///
/// `build` emits nodes reading `student` (the student's tap, already mapped to the teacher's
/// width by an adapter when they differ) and `teacher` (the teacher's tap, a constant for the
/// backward pass) and returns the name of a scalar value: the loss, unweighted. `shape` is the
/// teacher tap's shape (batches have a fixed size: the last partial batch of an epoch is dropped). Methods are looked up by their
/// config `type` in `DistillationMethods.make`.
protocol DistillationMethod {
  func build(_ builder: inout GraphBuilder, student: String, teacher: String, shape: [Int]) throws -> String
}

enum DistillationMethods {
  /// The method of `loss.type` with its settings (defaults from METHODS.md).
  static func make(_ loss: DistillConfig.Loss) throws -> any DistillationMethod {
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
