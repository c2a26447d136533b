import Foundation

/// [SplitMix64](https://prng.di.unimi.it/splitmix64.c): a small, fast generator whose whole state
/// is one `UInt64`, so a checkpoint can store it and a resumed run draws the same numbers.
/// `derived(_:)` splits off independent streams keyed by numbers (an epoch, a sample's position), so
/// work done in any order or on any thread draws the same values.
public struct SplitMix64: RandomNumberGenerator, Sendable, Equatable {
  public var state: UInt64

  public init(seed: UInt64) { state = seed }

  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// A new generator for the stream keyed by `keys`, computed from this one's state without advancing
  /// it: the same state and keys always give the same stream, and different keys unrelated ones.
  public func derived(_ keys: UInt64...) -> SplitMix64 {
    var seed = state
    for key in keys {
      var mixer = SplitMix64(seed: seed ^ (key &* 0xD6E8_FEB8_6659_FD93))
      seed = mixer.next()
    }
    return SplitMix64(seed: seed)
  }

  /// Uniform in [0, 1), from the top 24 bits (every value exactly representable).
  public mutating func nextUniform() -> Float { Float(next() >> 40) * 0x1p-24 }

  /// Standard normal (Box-Muller over two uniform draws; always consumes two draws).
  public mutating func nextNormal() -> Float {
    let u1 = Double(next() >> 11) * 0x1p-53, u2 = Double(next() >> 11) * 0x1p-53
    return Float((-2 * log(1 - u1)).squareRoot() * cos(2 * Double.pi * u2))
  }

  /// Uniform in [low, high].
  public mutating func nextUniform(in range: ClosedRange<Float>) -> Float {
    range.lowerBound + (range.upperBound - range.lowerBound) * nextUniform()
  }

  /// A tensor of `shape` with standard-normal entries scaled by `scale`.
  public mutating func normalTensor(_ shape: [Int], scale: Float = 1) -> Tensor {
    Tensor(shape: shape, floats: (0..<shape.reduce(1, *)).map { _ in nextNormal() * scale })
  }

  /// A tensor of `shape` uniform in [low, high).
  public mutating func uniformTensor(_ shape: [Int], low: Float = 0, high: Float = 1) -> Tensor {
    Tensor(shape: shape, floats: (0..<shape.reduce(1, *)).map { _ in low + (high - low) * nextUniform() })
  }
}
