extension Tensor {
  /// The same values with `floats` in row-major N, C, H, W order: `self` when it already is, a
  /// transposed copy when it is `channelsLast`.
  public func planar() -> Tensor { channelsLast ? relaid(channelsLast: false) : self }

  /// The same values with `floats` in N, H, W, C order (a 4-D float tensor); `self` when it
  /// already is.
  func channelsLastCopy() -> Tensor { channelsLast ? self : relaid(channelsLast: true) }

  /// Each image's [C, H*W] matrix transposed to [H*W, C] (`last`) or back.
  private func relaid(channelsLast last: Bool) -> Tensor {
    precondition(rank == 4 && isFloat, "only 4-D float tensors have a channels-last layout")
    let (batch, channels, size) = (shape[0], shape[1], shape[2] * shape[3])
    let (rows, columns) = last ? (size, channels) : (channels, size)
    var result = self
    result.channelsLast = last
    guard count > 0 else { return result }
    result.floats = floats.withUnsafeBufferPointer {
      Layout.transposeTiles(
        $0.baseAddress!, offset: 0, batchDims: [batch], batchSteps: [size * channels], rows: rows, columns: columns, columnStep: rows)
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
