import DistillCore
import Foundation

/// A tensor with its name: parameters, gradients and optimizer state, in a fixed order.
public struct NamedTensor: Sendable {
  public var name: String
  public var tensor: Tensor
  public init(_ name: String, _ tensor: Tensor) {
    self.name = name
    self.tensor = tensor
  }
}

/// Overrides the optimizer settings of the parameters whose name matches `pattern` (a regular
/// expression searched anywhere in the name, as Python's `re.search`). The first matching rule wins.
public struct ParameterGroupRule: Codable, Sendable, Equatable {
  public var pattern: String
  /// Weight decay for the group; nil keeps the default (decay by rank).
  public var weightDecay: Float?
  /// Multiplies the scheduled learning rate for the group.
  public var learningRateScale: Float

  public init(pattern: String, weightDecay: Float? = nil, learningRateScale: Float = 1) {
    self.pattern = pattern
    self.weightDecay = weightDecay
    self.learningRateScale = learningRateScale
  }
}

/// The update rule and its hyper-parameters, with PyTorch's meaning and defaults
/// ([SGD](https://pytorch.org/docs/stable/generated/torch.optim.SGD.html),
/// [AdamW](https://pytorch.org/docs/stable/generated/torch.optim.AdamW.html)).
public struct OptimizerConfig: Codable, Sendable, Equatable {
  public enum Kind: String, Codable, Sendable { case sgd, adamw }
  public var kind: Kind
  /// The peak learning rate; the schedule multiplies it by its factor at each step.
  public var learningRate: Float
  /// SGD: momentum, dampening and Nesterov momentum.
  public var momentum: Float = 0
  public var dampening: Float = 0
  public var nesterov: Bool = false
  /// AdamW: moment decay rates and the denominator's epsilon.
  public var beta1: Float = 0.9
  public var beta2: Float = 0.999
  public var epsilon: Float = 1e-8
  /// L2 penalty added to the gradient (SGD) or decoupled decay `p *= 1 - lr * wd` (AdamW).
  public var weightDecay: Float = 0
  /// Parameters of rank up to this (biases, normalization scales and shifts) get no weight decay,
  /// as PyTorch training recipes set up their parameter groups; -1 decays every parameter.
  public var noDecayMaxRank: Int = 1
  /// Per-group overrides, first match wins.
  public var groups: [ParameterGroupRule] = []

  public init(kind: Kind, learningRate: Float) {
    self.kind = kind
    self.learningRate = learningRate
  }

  public static func sgd(
    learningRate: Float, momentum: Float = 0, dampening: Float = 0, nesterov: Bool = false, weightDecay: Float = 0
  ) -> OptimizerConfig {
    var config = OptimizerConfig(kind: .sgd, learningRate: learningRate)
    config.momentum = momentum
    config.dampening = dampening
    config.nesterov = nesterov
    config.weightDecay = weightDecay
    return config
  }

  public static func adamw(
    learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 1e-2
  ) -> OptimizerConfig {
    var config = OptimizerConfig(kind: .adamw, learningRate: learningRate)
    config.beta1 = beta1
    config.beta2 = beta2
    config.epsilon = epsilon
    config.weightDecay = weightDecay
    return config
  }
}

/// The optimizer's state as a checkpoint stores it: the number of updates applied and the
/// per-parameter buffers (`momentum_buffer/NAME` for SGD, `exp_avg/NAME` and `exp_avg_sq/NAME` for AdamW).
public struct OptimizerState: Sendable {
  public var kind: String
  public var step: Int
  public var tensors: [NamedTensor]
  public init(kind: String, step: Int, tensors: [NamedTensor]) {
    self.kind = kind
    self.step = step
    self.tensors = tensors
  }
}

/// SGD (momentum, Nesterov, weight decay) and AdamW over named parameters, computing in Float32 in
/// the order of operations of PyTorch's single-tensor implementations, so that a few steps can be
/// checked against values worked out from PyTorch's formulas.
public final class Optimizer {
  public let config: OptimizerConfig
  /// Updates applied so far (AdamW's bias corrections use it).
  public private(set) var step: Int = 0
  private var buffers: [String: Tensor] = [:]
  private let rules: [(Regex<AnyRegexOutput>, ParameterGroupRule)]

  public init(_ config: OptimizerConfig) throws {
    self.config = config
    rules = try config.groups.map { rule in
      do { return (try Regex(rule.pattern), rule) } catch {
        throw TrainingError.invalidConfig("parameter group pattern '\(rule.pattern)' is not a valid regular expression: \(error)")
      }
    }
  }

  /// The weight decay and learning-rate scale of parameter `name` of rank `rank`.
  public func settings(for name: String, rank: Int) -> (weightDecay: Float, learningRateScale: Float) {
    let byRank = rank <= config.noDecayMaxRank ? 0 : config.weightDecay
    for (regex, rule) in rules where name.contains(regex) {
      return (rule.weightDecay ?? byRank, rule.learningRateScale)
    }
    return (byRank, 1)
  }

  /// Applies one update to each parameter (in the given order) at learning rate `learningRate`
  /// (already scheduled; group scales are applied here). Returns the new values.
  public func update(_ parameters: [NamedTensor], gradients: [NamedTensor], learningRate: Float) throws -> [NamedTensor] {
    guard parameters.count == gradients.count else {
      throw TrainingError.invalidConfig("\(parameters.count) parameters but \(gradients.count) gradients")
    }
    step += 1
    var result: [NamedTensor] = []
    result.reserveCapacity(parameters.count)
    for (parameter, gradient) in zip(parameters, gradients) {
      guard parameter.name == gradient.name, parameter.tensor.shape == gradient.tensor.shape else {
        throw TrainingError.invalidConfig(
          "gradient '\(gradient.name)' \(gradient.tensor.shapeDescription) does not match parameter '\(parameter.name)' \(parameter.tensor.shapeDescription)")
      }
      let (decay, scale) = settings(for: parameter.name, rank: parameter.tensor.rank)
      let rate = learningRate * scale
      var value = parameter.tensor
      switch config.kind {
      case .sgd: sgd(parameter.name, value.shape, &value.floats, gradient.tensor.floats, rate: rate, decay: decay)
      case .adamw: adamw(parameter.name, value.shape, &value.floats, gradient.tensor.floats, rate: rate, decay: decay)
      }
      result.append(NamedTensor(parameter.name, value))
    }
    return result
  }

  /// torch.optim.SGD, one tensor: g += wd p; b = g (first step) or mu b + (1 - dampening) g;
  /// g = g + mu b (Nesterov) or b; p -= lr g.
  private func sgd(_ name: String, _ shape: [Int], _ p: inout [Float], _ gradient: [Float], rate: Float, decay: Float) {
    var g = gradient
    if decay != 0 { for i in g.indices { g[i] += decay * p[i] } }
    let mu = config.momentum
    if mu != 0 {
      let key = "momentum_buffer/" + name
      var buffer: [Float]
      if let existing = buffers.removeValue(forKey: key)?.floats {
        buffer = existing
        let keep = 1 - config.dampening
        for i in buffer.indices { buffer[i] = buffer[i] * mu + keep * g[i] }
      } else {
        buffer = g
      }
      if config.nesterov {
        for i in g.indices { g[i] += mu * buffer[i] }
      } else {
        g = buffer
      }
      buffers[key] = Tensor(shape: shape, floats: buffer)
    }
    for i in p.indices { p[i] += -rate * g[i] }
  }

  /// torch.optim.AdamW, one tensor: p *= 1 - lr wd; m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2;
  /// p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps).
  private func adamw(_ name: String, _ shape: [Int], _ p: inout [Float], _ g: [Float], rate: Float, decay: Float) {
    let count = p.count
    var m = buffers.removeValue(forKey: "exp_avg/" + name)?.floats ?? [Float](repeating: 0, count: count)
    var v = buffers.removeValue(forKey: "exp_avg_sq/" + name)?.floats ?? [Float](repeating: 0, count: count)
    if decay != 0 {
      let factor = Float(1 - Double(rate) * Double(decay))
      for i in p.indices { p[i] *= factor }
    }
    let b1 = config.beta1, b2 = config.beta2, eps = config.epsilon
    let weight = 1 - b1, keep2 = 1 - b2
    let t = Double(step)
    let correction1 = 1 - pow(Double(b1), t), correction2 = 1 - pow(Double(b2), t)
    let stepSize = Float(Double(rate) / correction1)
    let correction2Root = Float(correction2.squareRoot())
    m.withUnsafeMutableBufferPointer { m in
      v.withUnsafeMutableBufferPointer { v in
        p.withUnsafeMutableBufferPointer { p in
          g.withUnsafeBufferPointer { g in
            for i in 0..<count {
              m[i] += weight * (g[i] - m[i])
              v[i] = v[i] * b2 + keep2 * (g[i] * g[i])
              let denominator = v[i].squareRoot() / correction2Root + eps
              p[i] += -stepSize * (m[i] / denominator)
            }
          }
        }
      }
    }
    buffers["exp_avg/" + name] = Tensor(shape: shape, floats: m)
    buffers["exp_avg_sq/" + name] = Tensor(shape: shape, floats: v)
  }

  /// The state to checkpoint, buffers sorted by name.
  public var state: OptimizerState {
    OptimizerState(
      kind: config.kind.rawValue, step: step,
      tensors: buffers.keys.sorted().map { NamedTensor($0, buffers[$0]!) })
  }

  /// Restores a state written by `state` (same kind of optimizer).
  public func load(_ state: OptimizerState) throws {
    guard state.kind == config.kind.rawValue else {
      throw TrainingError.invalidConfig("the checkpoint holds \(state.kind) state; this run uses \(config.kind.rawValue)")
    }
    step = state.step
    buffers = Dictionary(uniqueKeysWithValues: state.tensors.map { ($0.name, $0.tensor) })
  }
}

/// Gradient clipping by global norm, as `torch.nn.utils.clip_grad_norm_`.
public enum GradientClipping {
  /// The L2 norm of all gradients together, accumulated in Double in the given order.
  public static func globalNorm(_ gradients: [NamedTensor]) -> Double {
    var sum = 0.0
    for gradient in gradients {
      gradient.tensor.floats.withUnsafeBufferPointer { values in
        for value in values { sum += Double(value) * Double(value) }
      }
    }
    return sum.squareRoot()
  }

  /// Scales the gradients by `maxNorm / (norm + 1e-6)` when that is below 1 and returns the norm
  /// before clipping.
  @discardableResult
  public static func clip(_ gradients: inout [NamedTensor], maxNorm: Float) -> Double {
    let norm = globalNorm(gradients)
    let coefficient = Double(maxNorm) / (norm + 1e-6)
    guard norm.isFinite, coefficient < 1 else { return norm }
    let scale = Float(coefficient)
    for index in gradients.indices {
      gradients[index].tensor.floats.withUnsafeMutableBufferPointer { values in
        for i in values.indices { values[i] *= scale }
      }
    }
    return norm
  }
}
