/// An operator that propagates gradients (reverse mode). Its `backward` sits next to its
/// `forward` in the same family file.
public protocol DifferentiableOperator: Operator {
  /// Gradients of the loss with respect to each input, given the forward pass's inputs and outputs
  /// and the gradients flowing into each output (nil where nothing flows). Returns one entry per
  /// input: nil for inputs that carry no gradient (integer, shape and index inputs). A gradient may
  /// have the broadcast shape instead of its input's shape; the tape sums it down (only the tape
  /// undoes broadcasting).
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  /// Which of the forward pass's values `backward` reads. A recorded pass saves only those for the
  /// reverse pass (the others can be freed as soon as the forward pass is done with them); in
  /// place of each other one, `backward` receives an empty tensor (shape [0]) of the value's dtype,
  /// so it must read neither its elements nor its shape. By default every input and output.
  var savedForBackward: SavedValues { get }
}

extension DifferentiableOperator {
  public var savedForBackward: SavedValues { .all }
}

/// The forward-pass values a backward pass reads: all inputs (omitted ones stay nil), all
/// outputs, both or neither.
public struct SavedValues: Sendable, Equatable {
  public var inputs: Bool
  public var outputs: Bool

  public init(inputs: Bool, outputs: Bool) {
    self.inputs = inputs
    self.outputs = outputs
  }

  public static let all = SavedValues(inputs: true, outputs: true)
  public static let none = SavedValues(inputs: false, outputs: false)
  public static let inputsOnly = SavedValues(inputs: true, outputs: false)
  public static let outputsOnly = SavedValues(inputs: false, outputs: true)
}

extension Tensor {
  /// The stand-in a recorded pass keeps for a value a backward pass does not read: no elements
  /// (shape [0]), the value's dtype.
  static func unsaved(like value: Tensor) -> Tensor {
    value.isFloat ? Tensor(shape: [0], floats: [], dtype: value.dtype) : Tensor(shape: [0], ints: [], dtype: value.dtype)
  }

  /// Sums a broadcast gradient back to `shape` (the input's shape before broadcasting).
  public func summed(to target: [Int]) -> Tensor {
    if shape == target { return self }
    precondition(isFloat, "gradients are floating point")
    // Output element i maps to the input element whose index drops the broadcast axes.
    let targetStrides = Broadcast.strides(of: target, broadcastTo: shape)
    var result = [Float](repeating: 0, count: target.reduce(1, *))
    let zero = [Int](repeating: 0, count: shape.count)
    floats.withUnsafeBufferPointer { source in
      result.withUnsafeMutableBufferPointer { out in
        Broadcast.forEachRow(shape, targetStrides, zero) { o, t, _, count, step, _ in
          var t = t
          for k in 0..<count {
            out[t] += source[o + k]
            t += step
          }
        }
      }
    }
    return Tensor(shape: target, floats: result, dtype: dtype)
  }

  /// Elementwise `self += other` for gradient accumulation (same shape).
  public mutating func accumulate(_ other: Tensor) {
    precondition(shape == other.shape, "accumulating \(other.shapeDescription) into \(shapeDescription)")
    precondition(channelsLast == other.channelsLast, "accumulating tensors of different layouts")
    floats.withUnsafeMutableBufferPointer { out in
      other.floats.withUnsafeBufferPointer { source in
        for index in out.indices { out[index] += source[index] }
      }
    }
  }
}
