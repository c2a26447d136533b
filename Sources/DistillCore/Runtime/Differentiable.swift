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
}

extension Tensor {
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
