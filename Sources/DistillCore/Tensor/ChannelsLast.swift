extension Tensor {
  /// The same values with `floats` in row-major N, C, H, W order: `self` when it already is, a
  /// transposed copy when it is `channelsLast`.
  public func planar() -> Tensor {
    guard channelsLast else { return self }
    let (batch, channels) = (shape[0], shape[1])
    let size = count / max(1, batch * channels)
    var result = self
    result.channelsLast = false
    result.floats = floats.withUnsafeBufferPointer {
      Layout.transposeTiles(
        $0.baseAddress!, offset: 0, batchDims: [batch], batchSteps: [size * channels], rows: channels, columns: size, columnStep: channels)
    }
    return result
  }

  /// The same values with `floats` in N, H, W, C order (a 4-D float tensor); `self` when it
  /// already is.
  func channelsLastCopy() -> Tensor {
    guard !channelsLast else { return self }
    precondition(rank == 4 && isFloat, "only 4-D float tensors have a channels-last layout")
    let (batch, channels) = (shape[0], shape[1])
    let size = shape[2] * shape[3]
    var result = self
    result.channelsLast = true
    result.floats = floats.withUnsafeBufferPointer {
      Layout.transposeTiles(
        $0.baseAddress!, offset: 0, batchDims: [batch], batchSteps: [size * channels], rows: size, columns: channels, columnStep: size)
    }
    return result
  }
}

/// An operator that accepts `channelsLast` inputs (converting them itself where it must) and may
/// write its first output channels last when `ExecutionContext.mayWriteChannelsLast` allows it.
/// The interpreter converts channels-last inputs with `planar()` for every other operator.
protocol ChannelsLastOperator: Operator {}

/// A `ChannelsLastOperator` whose backward pass also takes channels-last inputs, outputs and
/// output gradients (each output's gradient in that output's layout) and flags the layout of the
/// input gradients it returns. Recorded passes keep a value channels last only when every reader is
/// one of these; the tape converts gradients to their value's layout.
protocol ChannelsLastDifferentiable: ChannelsLastOperator, DifferentiableOperator {}
