import Foundation

/// The learning-rate factor at each step: an optional linear warm-up, then a decay. The factor
/// multiplies `OptimizerConfig.learningRate`.
///
/// Steps count from 0 (the first update). During warm-up (steps `0..<warmupSteps`) the factor
/// rises linearly from `warmupStartFactor` towards 1, as PyTorch's `LinearLR`; afterwards the
/// decay runs over the remaining steps with progress `p = (step - warmup) / (totalSteps - warmup)`,
/// clamped to [0, 1].
public struct LearningRateSchedule: Codable, Sendable, Equatable {
  public enum Decay: Codable, Sendable, Equatable {
    /// Factor 1 after warm-up.
    case constant
    /// `min + (1 - min) (1 + cos(pi p)) / 2`, as `CosineAnnealingLR` with `eta_min = min * lr`.
    case cosine(minimumFactor: Double)
    /// `gamma ^ floor((step - warmup) / every)`, as `StepLR`.
    case step(every: Int, gamma: Double)
    /// From 1 to `finalFactor` linearly, as `LinearLR` after warm-up.
    case linear(finalFactor: Double)
  }

  public var warmupSteps: Int
  public var warmupStartFactor: Double
  public var decay: Decay
  public var totalSteps: Int

  public init(totalSteps: Int, warmupSteps: Int = 0, warmupStartFactor: Double = 0, decay: Decay = .constant) {
    self.totalSteps = totalSteps
    self.warmupSteps = warmupSteps
    self.warmupStartFactor = warmupStartFactor
    self.decay = decay
  }

  /// The factor for update `step` (0-based).
  public func factor(at step: Int) -> Double {
    if step < warmupSteps {
      return warmupStartFactor + (1 - warmupStartFactor) * Double(step) / Double(warmupSteps)
    }
    let span = max(1, totalSteps - warmupSteps)
    let progress = min(1, max(0, Double(step - warmupSteps) / Double(span)))
    switch decay {
    case .constant:
      return 1
    case .cosine(let minimum):
      return minimum + (1 - minimum) * (1 + cos(Double.pi * progress)) / 2
    case .step(let every, let gamma):
      return pow(gamma, Double((step - warmupSteps) / max(1, every)))
    case .linear(let final):
      return 1 + (final - 1) * progress
    }
  }
}
