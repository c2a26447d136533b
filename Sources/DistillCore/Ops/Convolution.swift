// Conv, ConvTranspose, Gemm and MatMul. Convolutions with one group and two spatial axes run on
// oneDNN (Kernels/DNNL.swift) when it is enabled; the rest on OpenBLAS sgemm: 1x1 convolutions are
// plain matrix products, k x k ones go through im2col, depthwise ones run a direct loop.
// Specs: https://onnx.ai/onnx/operators/onnx__Conv.html and the pages of the other ops.

let convolutionOperators: [(String, any Operator.Type)] = [
  ("Conv", Conv.self), ("ConvTranspose", ConvTranspose.self), ("Gemm", Gemm.self), ("MatMul", MatMul.self),
]

/// Kernel geometry shared by Conv and ConvTranspose, resolved for one input shape.
struct ConvGeometry {
  var kernel: [Int]
  var strides: [Int]
  var dilations: [Int]
  /// Begin pads then end pads, one per spatial axis each.
  var pads: [Int]
  var input: [Int]
  var output: [Int]

  var spatialRank: Int { kernel.count }
  var kernelSize: Int { kernel.reduce(1, *) }
  var inputSize: Int { input.reduce(1, *) }
  var outputSize: Int { output.reduce(1, *) }
  var isPointwise: Bool {
    kernel.allSatisfy { $0 == 1 } && strides.allSatisfy { $0 == 1 } && pads.allSatisfy { $0 == 0 }
  }

  /// The output columns q in first..<last whose input column q * stride + offset lies in 0..<input.
  @inline(__always)
  static func insideColumns(offset: Int, stride: Int, input: Int, output: Int) -> (first: Int, last: Int) {
    let first = offset >= 0 ? 0 : (-offset + stride - 1) / stride
    return (first, max(first, min(output, (input - offset + stride - 1) / stride)))
  }

  /// For row `row` of the unfolded (im2col) matrix, one (channel, kernel offset) pair, calls
  /// `body(column, offset)` for each output position whose tap falls inside the input, with the
  /// tap's element offset in the channel's input plane. Any spatial rank.
  func forEachTap(row: Int, _ body: (Int, Int) -> Void) {
    let rank = spatialRank
    let inputStrides = Tensor.strides(of: input), outputStrides = Tensor.strides(of: output)
    let kernelStrides = Tensor.strides(of: kernel)
    var tap = [Int](repeating: 0, count: rank)
    var rest = row % kernelSize
    for axis in 0..<rank {
      tap[axis] = rest / kernelStrides[axis]
      rest %= kernelStrides[axis]
    }
    columns: for column in 0..<outputSize {
      var rest = column
      var offset = 0
      for axis in 0..<rank {
        let o = rest / outputStrides[axis]
        rest %= outputStrides[axis]
        let position = o * strides[axis] - pads[axis] + tap[axis] * dilations[axis]
        if position < 0 || position >= input[axis] { continue columns }
        offset += position * inputStrides[axis]
      }
      body(column, offset)
    }
  }
}

/// Attributes common to Conv and ConvTranspose.
struct ConvAttributes {
  let autoPad: String
  let dilations: [Int]?
  let group: Int
  let kernelShape: [Int]?
  let pads: [Int]?
  let strides: [Int]?

  init(_ node: Node) {
    autoPad = node.stringAttribute("auto_pad") ?? "NOTSET"
    dilations = node.intsAttribute("dilations")
    group = node.intAttribute("group") ?? 1
    kernelShape = node.intsAttribute("kernel_shape")
    pads = node.intsAttribute("pads")
    strides = node.intsAttribute("strides")
  }

  /// Kernel shape (checked against W), strides, dilations and pads for `rank` spatial axes, with
  /// the spec's defaults.
  func kernel(_ w: Tensor, rank: Int, _ context: ExecutionContext) throws
    -> (kernel: [Int], strides: [Int], dilations: [Int], pads: [Int])
  {
    let kernel = try resolved("kernel_shape", kernelShape ?? Array(w.shape.dropFirst(2)), count: rank, default: 0, context)
    guard kernel == Array(w.shape.dropFirst(2)) else {
      throw context.error("kernel_shape \(kernel) does not match input W \(w.shapeDescription)")
    }
    return (
      kernel, try resolved("strides", strides, count: rank, default: 1, context),
      try resolved("dilations", dilations, count: rank, default: 1, context),
      try resolved("pads", pads, count: 2 * rank, default: 0, context)
    )
  }

  func resolved(_ name: String, _ value: [Int]?, count: Int, default fill: Int, _ context: ExecutionContext) throws -> [Int] {
    let result = value ?? Array(repeating: fill, count: count)
    guard result.count == count else { throw context.error("attribute \(name) has \(result.count) values, expected \(count)") }
    return result
  }
}

struct Conv: ChannelsLastOperator {
  let attributes: ConvAttributes
  /// Set by `Fusion`: the activation applied to the result, and whether input 3 is added to it.
  let activation: FusedActivation
  let residual: Bool

  init(_ node: Node, _ setup: OperatorSetup) throws {
    attributes = ConvAttributes(node)
    activation = FusedActivation(node)
    residual = node.attribute(Fusion.residualAttribute) != nil
    if attributes.group < 1 { throw setup.error("attribute group is \(attributes.group), expected at least 1") }
  }

  func geometry(_ x: Tensor, _ w: Tensor, _ context: ExecutionContext) throws -> ConvGeometry {
    let rank = x.rank - 2
    let (kernel, strides, dilations, declaredPads) = try attributes.kernel(w, rank: rank, context)
    var pads = declaredPads
    let input = Array(x.shape.dropFirst(2))
    var output = [Int](repeating: 0, count: rank)
    for axis in 0..<rank {
      let extent = (kernel[axis] - 1) * dilations[axis] + 1
      switch attributes.autoPad {
      case "SAME_UPPER", "SAME_LOWER":
        output[axis] = (input[axis] + strides[axis] - 1) / strides[axis]
        let total = max(0, (output[axis] - 1) * strides[axis] + extent - input[axis])
        let small = total / 2
        pads[axis] = attributes.autoPad == "SAME_UPPER" ? small : total - small
        pads[axis + rank] = total - pads[axis]
      case "VALID":
        pads[axis] = 0
        pads[axis + rank] = 0
        output[axis] = (input[axis] - extent) / strides[axis] + 1
      default:
        output[axis] = (input[axis] + pads[axis] + pads[axis + rank] - extent) / strides[axis] + 1
      }
      guard output[axis] > 0 else {
        throw context.error("input X \(x.shapeDescription) is smaller than the kernel \(kernel) along axis \(axis + 2)")
      }
    }
    return ConvGeometry(kernel: kernel, strides: strides, dilations: dilations, pads: pads, input: input, output: output)
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    var x = try context.input(inputs, 0, "X")
    let w = try context.input(inputs, 1, "W")
    let bias = inputs.count > 2 ? inputs[2] : nil
    guard x.isFloat, w.isFloat else { throw context.error("inputs X and W must be floating point, got \(x.dtype) and \(w.dtype)") }
    guard x.rank >= 3 else { throw context.error("input X has \(x.rank) dims, expected at least 3 (N, C, spatial...)") }
    guard w.rank == x.rank else { throw context.error("input W has \(w.rank) dims, expected \(x.rank) like X") }
    let group = attributes.group
    let (batch, channels, filters) = (x.shape[0], x.shape[1], w.shape[0])
    guard channels % group == 0, filters % group == 0, w.shape[1] * group == channels else {
      throw context.error("input W \(w.shapeDescription) does not fit X \(x.shapeDescription) with group \(group)")
    }
    if let bias, bias.shape != [filters] {
      throw context.error("input B has shape \(bias.shapeDescription), expected [\(filters)]")
    }
    let g = try geometry(x, w, context)
    let shape = [batch, filters] + g.output
    try context.checkAllocation(shape)
    let depthwise = group == channels && w.shape[1] == 1 && g.spatialRank == 2
    // A fused residual of the output's shape seeds the output (sgemm then accumulates into it);
    // one that only broadcasts (a bias written as Add) is added after the bias.
    var other = residual ? try context.input(inputs, 3, "residual") : nil
    if let residual = other {
      guard residual.isFloat, Broadcast.shape([shape, residual.shape]) == shape else {
        throw context.error("fused residual input \(residual.shapeDescription) does not broadcast to the output \(shape)")
      }
    }
    let accumulate = other?.shape == shape
    let epilogue: FusedActivation = other == nil || accumulate ? activation : .none
    // oneDNN reads and writes channels-last tensors too (passes chain convolutions that way).
    let dnnlShape = DNNL.Shape(batch: batch, channels: channels, filters: filters, g)
    let onDNNL =
      group == 1 && g.spatialRank == 2 && DNNL.canConvolve(dnnlShape, bias: bias != nil, accumulate: accumulate, activation: epilogue)
    if x.channelsLast && !onDNNL { x = x.planar() }
    let writeChannelsLast = context.mayWriteChannelsLast && onDNNL && (other == nil || accumulate)
    if let residual = other, residual.channelsLast != writeChannelsLast {
      other = writeChannelsLast ? residual.channelsLastCopy() : residual.planar()
    }
    var y: [Float]
    if accumulate {
      y = other!.floats
    } else if other != nil || depthwise {
      y = [Float](repeating: 0, count: shape.reduce(1, *))
    } else {
      // Both gemm paths write every element (sgemm with beta 0, or oneDNN).
      y = uninitializedFloats(shape.reduce(1, *))
    }
    x.floats.withUnsafeBufferPointer { px in
      w.floats.withUnsafeBufferPointer { pw in
        y.withUnsafeMutableBufferPointer { py in
          if depthwise {
            Conv.depthwise2D(px.baseAddress!, pw.baseAddress!, py.baseAddress!, batch: batch, channels: channels, filters: filters, g)
            Conv.finish(py.baseAddress!, bias: bias?.floats, filters: filters, planes: batch * filters, size: g.outputSize, epilogue)
          } else {
            (bias?.floats ?? []).withUnsafeBufferPointer { pb in
              if onDNNL
                && DNNL.convolution(
                  dnnlShape, px.baseAddress!, pw.baseAddress!, bias: bias == nil ? nil : pb.baseAddress!, py.baseAddress!,
                  accumulate: accumulate, activation: epilogue, constantWeights: context.training || context.recording ? nil : w.floats,
                  sourceChannelsLast: x.channelsLast, destinationChannelsLast: writeChannelsLast)
              {
                return
              }
              precondition(!x.channelsLast && !writeChannelsLast, "oneDNN refused a convolution it planned")
              Conv.gemmConvolution(
                px.baseAddress!, pw.baseAddress!, py.baseAddress!, batch: batch, channels: channels, filters: filters, group: group,
                accumulate: accumulate, bias: bias == nil ? nil : pb.baseAddress!, activation: epilogue, g)
            }
          }
        }
      }
    }
    if let other, !accumulate {
      y = Broadcast.apply(y, shape, other.floats, other.shape, +)!.0
      y.withUnsafeMutableBufferPointer { py in
        Conv.finish(py.baseAddress!, bias: nil, filters: filters, planes: batch * filters, size: g.outputSize, activation)
      }
    }
    var result = Tensor(shape: shape, floats: y, dtype: x.dtype).normalized()
    result.channelsLast = writeChannelsLast
    return [result]
  }

  /// Adds the bias of each output plane and applies the fused activation, in one pass.
  static func finish(
    _ y: UnsafeMutablePointer<Float>, bias: [Float]?, filters: Int, planes: Int, size: Int, _ activation: FusedActivation
  ) {
    if bias == nil && activation == .none { return }
    Parallel.forEach(planes, work: planes * size) { plane in
      finish(y + plane * size, count: size, bias: bias?[plane % filters] ?? 0, activation)
    }
  }

  /// `row[i] = activation(row[i] + bias)` for i in 0..<count.
  @inline(__always)
  static func finish(_ row: UnsafeMutablePointer<Float>, count: Int, bias b: Float, _ activation: FusedActivation) {
    switch activation {
    case .none: if b != 0 { for i in 0..<count { row[i] += b } }
    case .relu: for i in 0..<count { row[i] = max(row[i] + b, 0) }
    case .leakyRelu(let alpha):
      for i in 0..<count {
        let v = row[i] + b
        row[i] = v >= 0 ? v : alpha * v
      }
    case .clip(let low, let high): for i in 0..<count { row[i] = min(max(row[i] + b, low), high) }
    }
  }

  /// Per image and group: Y_g [M/g, out] = W_g [M/g, C/g*k] x col [C/g*k, out], then the bias and
  /// activation of each output row. With `accumulate` the product is added to Y's contents.
  ///
  /// The work is cut into tiles of one image's band of output rows, as many per image as it takes
  /// for every thread to get the same number of tiles: whole images when the batch divides among
  /// the threads, halves of one image at batch 1 on two cores. Each thread unfolds only its own
  /// tiles, multiplies them with a single-threaded sgemm (no hand-offs between OpenBLAS's threads
  /// and ours) and finishes them while they are still in cache.
  static func gemmConvolution(
    _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, channels: Int,
    filters: Int, group: Int, accumulate: Bool = false, bias: UnsafePointer<Float>? = nil, activation: FusedActivation = .none,
    _ g: ConvGeometry
  ) {
    let groupChannels = channels / group, groupFilters = filters / group
    let rows = groupChannels * g.kernelSize
    let columns = g.outputSize
    let pointwise = g.isPointwise
    let planar = g.spatialRank == 2
    let (height, width) = planar ? (g.output[0], g.output[1]) : (1, columns)
    /// Output rows `band` of image `n`, unfolded into `col` (rows x band's columns) unless pointwise.
    func convolve(image n: Int, band: Range<Int>, col: UnsafeMutablePointer<Float>?, parallelUnfold: Bool) {
      let first = band.lowerBound * width, count = band.count * width
      for k in 0..<group {
        let image = x + (n * channels + k * groupChannels) * g.inputSize
        if let col { im2col(image, col, channels: groupChannels, g, parallel: parallelUnfold, outputRows: planar ? band : nil) }
        BLAS.sgemm(
          m: groupFilters, n: count, k: rows, a: w + k * groupFilters * rows, lda: rows,
          b: col.map { UnsafePointer($0) } ?? image + first, ldb: col == nil ? columns : count, beta: accumulate ? 1 : 0,
          c: y + (n * filters + k * groupFilters) * columns + first, ldc: columns)
      }
      if bias == nil && activation == .none { return }
      for m in 0..<filters { finish(y + (n * filters + m) * columns + first, count: count, bias: bias?[m] ?? 0, activation) }
    }
    let threads = Parallel.threads
    var gcd = (batch, threads)
    while gcd.1 != 0 { gcd = (gcd.1, gcd.0 % gcd.1) }
    let bands = planar ? min(threads / gcd.0, height) : 1
    let tiles = batch * bands
    if threads > 1 && tiles >= threads && filters * rows * columns * batch > 1 << 20 {
      let blasThreads = BLAS.threads
      BLAS.threads = 1
      defer { BLAS.threads = blasThreads }
      let bandHeight = (height + bands - 1) / bands
      Parallel.forEach(threads, work: .max) { worker in
        let col = pointwise ? nil : UnsafeMutablePointer<Float>.allocate(capacity: rows * bandHeight * width)
        defer { col?.deallocate() }
        for tile in (tiles * worker / threads)..<(tiles * (worker + 1) / threads) {
          let band = tile % bands
          convolve(image: tile / bands, band: (height * band / bands)..<(height * (band + 1) / bands), col: col, parallelUnfold: false)
        }
      }
      return
    }
    let col = pointwise ? nil : UnsafeMutablePointer<Float>.allocate(capacity: rows * columns)
    defer { col?.deallocate() }
    for n in 0..<batch { convolve(image: n, band: 0..<height, col: col, parallelUnfold: true) }
  }

  /// Unfolds the receptive fields of `channels` planes into rows of `col` (zero outside the image).
  /// Row r of the result starts at `col + r * rowStride` (default: the columns unfolded). With
  /// `outputRows` (2-D only), only the output positions of those rows are unfolded.
  static func im2col(
    _ image: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>, channels: Int, _ g: ConvGeometry, parallel: Bool = true,
    rowStride: Int? = nil, outputRows: Range<Int>? = nil
  ) {
    let kernelSize = g.kernelSize
    let band = g.spatialRank == 2 ? outputRows ?? 0..<g.output[0] : 0..<1
    let columns = g.spatialRank == 2 ? band.count * g.output[1] : g.outputSize
    let lineStride = rowStride ?? columns
    let rows = channels * kernelSize
    if g.spatialRank == 2 {
      let (kh, kw) = (g.kernel[0], g.kernel[1])
      let (ih, iw) = (g.input[0], g.input[1])
      let (oh, ow) = (g.output[0], g.output[1])
      let (sh, sw) = (g.strides[0], g.strides[1])
      let (dh, dw) = (g.dilations[0], g.dilations[1])
      let (ph, pw) = (g.pads[0], g.pads[1])
      let work = { (row: Int) in
        let c = row / kernelSize, i = (row / kw) % kh, j = row % kw
        let plane = image + c * ih * iw
        let out = col + row * lineStride
        // Output columns whose input column stays inside the image: ow0 ..< ow1.
        let offset = j * dw - pw
        let (first, last) = ConvGeometry.insideColumns(offset: offset, stride: sw, input: iw, output: ow)
        for r in band {
          let y = r * sh - ph + i * dh
          let line = out + (r - band.lowerBound) * ow
          guard y >= 0 && y < ih else {
            line.update(repeating: 0, count: ow)
            continue
          }
          let source = plane + y * iw + offset
          if first > 0 { line.update(repeating: 0, count: first) }
          if sw == 1 {
            (line + first).update(from: source + first, count: last - first)
          } else {
            for q in first..<last { line[q] = source[q * sw] }
          }
          if last < ow { (line + last).update(repeating: 0, count: ow - last) }
        }
      }
      Parallel.forEach(rows, work: parallel ? rows * columns : 0, work)
      return
    }
    // Any spatial rank.
    let inputSize = g.inputSize
    for row in 0..<rows {
      let plane = image + (row / kernelSize) * inputSize
      let line = col + row * lineStride
      line.update(repeating: 0, count: columns)
      g.forEachTap(row: row) { column, offset in line[column] = plane[offset] }
    }
  }

  /// One filter per input channel (times a multiplier): a direct loop per output plane.
  static func depthwise2D(
    _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, channels: Int,
    filters: Int, _ g: ConvGeometry
  ) {
    let multiplier = filters / channels
    let (kh, kw) = (g.kernel[0], g.kernel[1])
    let (ih, iw) = (g.input[0], g.input[1])
    let (oh, ow) = (g.output[0], g.output[1])
    let (sh, sw) = (g.strides[0], g.strides[1])
    let (dh, dw) = (g.dilations[0], g.dilations[1])
    let (ph, pw) = (g.pads[0], g.pads[1])
    let work = { (plane: Int) in
      let n = plane / filters, m = plane % filters
      let source = x + (n * channels + m / multiplier) * ih * iw
      let weights = w + m * kh * kw
      let out = y + plane * oh * ow
      for i in 0..<kh {
        for j in 0..<kw {
          let weight = weights[i * kw + j]
          let offset = j * dw - pw
          let (first, last) = ConvGeometry.insideColumns(offset: offset, stride: sw, input: iw, output: ow)
          for r in 0..<oh {
            let row = r * sh - ph + i * dh
            guard row >= 0 && row < ih else { continue }
            let input = source + row * iw + offset
            let line = out + r * ow
            if sw == 1 {
              for q in first..<last { line[q] += weight * input[q] }
            } else {
              for q in first..<last { line[q] += weight * input[q * sw] }
            }
          }
        }
      }
    }
    let planes = batch * filters
    Parallel.forEach(planes, work: planes * oh * ow * kh * kw, work)
  }
}

struct ConvTranspose: Operator {
  let attributes: ConvAttributes
  let outputPadding: [Int]?
  let outputShape: [Int]?

  init(_ node: Node, _ setup: OperatorSetup) throws {
    attributes = ConvAttributes(node)
    outputPadding = node.intsAttribute("output_padding")
    outputShape = node.intsAttribute("output_shape")
  }

  /// Kernel geometry in forward terms: `input` is X's spatial size, `output` the result's.
  func geometry(_ x: Tensor, _ w: Tensor, _ context: ExecutionContext) throws -> ConvGeometry {
    let rank = x.rank - 2
    let (kernel, strides, dilations, declaredPads) = try attributes.kernel(w, rank: rank, context)
    var pads = declaredPads
    let extra = try attributes.resolved("output_padding", outputPadding, count: rank, default: 0, context)
    let input = Array(x.shape.dropFirst(2))
    var output = [Int](repeating: 0, count: rank)
    for axis in 0..<rank {
      let extent = (kernel[axis] - 1) * dilations[axis] + 1
      let full = strides[axis] * (input[axis] - 1) + extra[axis] + extent
      if let outputShape {
        let target = outputShape.count == rank ? outputShape[axis] : outputShape[outputShape.count - rank + axis]
        // A target beyond the full size acts as output_padding at the end.
        let total = full - target
        pads[axis] = total < 0 ? 0 : (attributes.autoPad == "SAME_UPPER" ? total / 2 : total - total / 2)
        pads[axis + rank] = total - pads[axis]
        output[axis] = target
      } else if attributes.autoPad == "SAME_UPPER" || attributes.autoPad == "SAME_LOWER" {
        output[axis] = input[axis] * strides[axis]
        let total = max(0, full - output[axis])
        let small = total / 2
        pads[axis] = attributes.autoPad == "SAME_UPPER" ? small : total - small
        pads[axis + rank] = total - pads[axis]
      } else {
        if attributes.autoPad == "VALID" { pads[axis] = 0; pads[axis + rank] = 0 }
        output[axis] = full - pads[axis] - pads[axis + rank]
      }
      guard output[axis] > 0 else { throw context.error("output size along axis \(axis + 2) is \(output[axis])") }
    }
    return ConvGeometry(kernel: kernel, strides: strides, dilations: dilations, pads: pads, input: input, output: output)
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "X"), w = try context.input(inputs, 1, "W")
    let bias = inputs.count > 2 ? inputs[2] : nil
    guard x.isFloat, w.isFloat else { throw context.error("inputs X and W must be floating point") }
    guard x.rank >= 3, w.rank == x.rank else {
      throw context.error("input X \(x.shapeDescription) and W \(w.shapeDescription) need the same rank, at least 3")
    }
    let group = attributes.group
    let (batch, channels) = (x.shape[0], x.shape[1])
    guard w.shape[0] == channels, channels % group == 0 else {
      throw context.error("input W \(w.shapeDescription) does not fit X \(x.shapeDescription) with group \(group)")
    }
    let filters = w.shape[1] * group
    let g = try geometry(x, w, context)
    let output = g.output
    let shape = [batch, filters] + output
    try context.checkAllocation(shape)
    var y = [Float](repeating: 0, count: shape.reduce(1, *))
    let groupChannels = channels / group, groupFilters = filters / group
    let rows = groupFilters * g.kernelSize, columns = g.inputSize
    var col = [Float](repeating: 0, count: rows * columns)
    x.floats.withUnsafeBufferPointer { px in
      w.floats.withUnsafeBufferPointer { pw in
        y.withUnsafeMutableBufferPointer { py in
          col.withUnsafeMutableBufferPointer { pc in
            for n in 0..<batch {
              for k in 0..<group {
                // col [M/g*k, in] = W_g^T [M/g*k, C/g] x X_g [C/g, in], then scatter-add into Y.
                BLAS.sgemm(
                  transposeA: true, m: rows, n: columns, k: groupChannels, a: pw.baseAddress! + k * groupChannels * rows,
                  lda: rows, b: px.baseAddress! + (n * channels + k * groupChannels) * columns, ldb: columns,
                  c: pc.baseAddress!, ldc: columns)
                ConvTranspose.col2im(pc.baseAddress!, py.baseAddress! + (n * filters + k * groupFilters) * g.outputSize, channels: groupFilters, g)
              }
            }
          }
        }
      }
    }
    if let bias {
      guard bias.shape == [filters] else { throw context.error("input B has shape \(bias.shapeDescription), expected [\(filters)]") }
      y.withUnsafeMutableBufferPointer { py in
        Conv.finish(py.baseAddress!, bias: bias.floats, filters: filters, planes: batch * filters, size: g.outputSize, .none)
      }
    }
    return [Tensor(shape: shape, floats: y, dtype: x.dtype).normalized()]
  }

  /// Adds each column of `col` (one per input position) into the output positions it covers:
  /// the adjoint of im2col.
  static func col2im(_ col: UnsafePointer<Float>, _ image: UnsafeMutablePointer<Float>, channels: Int, _ g: ConvGeometry) {
    let unfold = g.transposed
    for row in 0..<(channels * unfold.kernelSize) {
      let plane = image + (row / unfold.kernelSize) * unfold.inputSize
      let source = col + row * unfold.outputSize
      unfold.forEachTap(row: row) { column, offset in plane[offset] += source[column] }
    }
  }
}

/// `Y = alpha * op(A) * op(B) + beta * C`, C broadcast to [M, N].
struct Gemm: Operator {
  let alpha: Float
  let beta: Float
  let transposeA: Bool
  let transposeB: Bool

  init(_ node: Node, _ setup: OperatorSetup) throws {
    alpha = node.floatAttribute("alpha") ?? 1
    beta = node.floatAttribute("beta") ?? 1
    transposeA = (node.intAttribute("transA") ?? 0) != 0
    transposeB = (node.intAttribute("transB") ?? 0) != 0
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let a = try context.input(inputs, 0, "A"), b = try context.input(inputs, 1, "B")
    guard a.rank == 2, b.rank == 2 else { throw context.error("inputs A \(a.shapeDescription) and B \(b.shapeDescription) must be matrices") }
    guard a.isFloat, b.isFloat else { throw context.error("inputs A and B must be floating point") }
    let (m, k) = transposeA ? (a.shape[1], a.shape[0]) : (a.shape[0], a.shape[1])
    let (kb, n) = transposeB ? (b.shape[1], b.shape[0]) : (b.shape[0], b.shape[1])
    guard k == kb else { throw context.error("inputs A \(a.shapeDescription) and B \(b.shapeDescription) do not multiply (transA \(transposeA), transB \(transposeB))") }
    try context.checkAllocation([m, n])
    var y: [Float]
    var betaUsed: Float = 0
    if let c = inputs.count > 2 ? inputs[2] : nil, beta != 0 {
      guard Broadcast.shape([c.shape, [m, n]]) == [m, n] else { throw context.error("input C \(c.shapeDescription) does not broadcast to [\(m), \(n)]") }
      y = Broadcast.expand(c.asFloats, c.shape, to: [m, n])
      betaUsed = beta
    } else {
      y = [Float](repeating: 0, count: m * n)
    }
    a.floats.withUnsafeBufferPointer { pa in
      b.floats.withUnsafeBufferPointer { pb in
        y.withUnsafeMutableBufferPointer { py in
          BLAS.sgemm(
            transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, a: pa.baseAddress!,
            lda: a.shape[1], b: pb.baseAddress!, ldb: b.shape[1], beta: betaUsed, c: py.baseAddress!, ldc: n)
        }
      }
    }
    return [Tensor(shape: [m, n], floats: y, dtype: a.dtype).normalized()]
  }
}

/// Numpy matmul: batch dims broadcast, 1-D operands promoted and their axis removed again.
struct MatMul: Operator {
  init(_ node: Node, _ setup: OperatorSetup) throws {}

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let a = try context.input(inputs, 0, "A"), b = try context.input(inputs, 1, "B")
    guard a.rank >= 1, b.rank >= 1 else { throw context.error("inputs must have at least one dim") }
    let aShape = a.rank == 1 ? [1, a.shape[0]] : a.shape
    let bShape = b.rank == 1 ? [b.shape[0], 1] : b.shape
    let (m, k) = (aShape[aShape.count - 2], aShape[aShape.count - 1])
    let (kb, n) = (bShape[bShape.count - 2], bShape[bShape.count - 1])
    guard k == kb, let batchShape = Broadcast.shape([Array(aShape.dropLast(2)), Array(bShape.dropLast(2))]) else {
      throw context.error("inputs A \(a.shapeDescription) and B \(b.shapeDescription) do not multiply")
    }
    var shape = batchShape + [m, n]
    try context.checkAllocation(shape)
    let batches = batchShape.reduce(1, *)
    let aStrides = Broadcast.strides(of: Array(aShape.dropLast(2)), broadcastTo: batchShape)
    let bStrides = Broadcast.strides(of: Array(bShape.dropLast(2)), broadcastTo: batchShape)
    let batchIndexStrides = Tensor.strides(of: batchShape)
    func offsets(_ batch: Int) -> (Int, Int) {
      var rest = batch, ia = 0, ib = 0
      for axis in batchShape.indices {
        let index = rest / batchIndexStrides[axis]
        rest %= batchIndexStrides[axis]
        ia += index * aStrides[axis]
        ib += index * bStrides[axis]
      }
      return (ia * m * k, ib * k * n)
    }
    if !a.isFloat || !b.isFloat {
      guard !a.isFloat && !b.isFloat else { throw context.error("inputs A is \(a.dtype) and B is \(b.dtype); they must match") }
      var y = [Int64](repeating: 0, count: batches * m * n)
      for batch in 0..<batches {
        let (oa, ob) = offsets(batch)
        for i in 0..<m { for p in 0..<k { let v = a.ints[oa + i * k + p]; for j in 0..<n { y[batch * m * n + i * n + j] &+= v &* b.ints[ob + p * n + j] } } }
      }
      if a.rank == 1 { shape.remove(at: shape.count - 2) }
      if b.rank == 1 { shape.removeLast() }
      return [Tensor(shape: shape, ints: y, dtype: a.dtype).normalized()]
    }
    var y = [Float](repeating: 0, count: batches * m * n)
    a.floats.withUnsafeBufferPointer { pa in
      b.floats.withUnsafeBufferPointer { pb in
        y.withUnsafeMutableBufferPointer { py in
          for batch in 0..<batches {
            let (oa, ob) = offsets(batch)
            BLAS.sgemm(
              m: m, n: n, k: k, a: pa.baseAddress! + oa, lda: k, b: pb.baseAddress! + ob, ldb: n,
              c: py.baseAddress! + batch * m * n, ldc: n)
          }
        }
      }
    }
    if a.rank == 1 { shape.remove(at: shape.count - 2) }
    if b.rank == 1 { shape.removeLast() }
    return [Tensor(shape: shape, floats: y, dtype: a.dtype).normalized()]
  }
}

// MARK: - Gradients

extension ConvGeometry {
  /// The same kernel walked the other way: its output positions index `col` columns and its
  /// input positions are where col2im writes (the adjoint of im2col with `self`).
  var transposed: ConvGeometry {
    ConvGeometry(kernel: kernel, strides: strides, dilations: dilations, pads: pads, input: output, output: input)
  }
}

extension Conv: ChannelsLastDifferentiable {
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard var dy = outputGradients[0], var x = inputs[0], let w = inputs[1] else { return inputs.map { _ in nil } }
    // A fused activation passes the gradient where its output shows it was active; a fused
    // residual receives that gradient as it is (the tape sums it down if it broadcast).
    dy.floats = activation.backward(dy.floats, results: outputs[0].floats)
    let residualGradient: Tensor? = residual ? dy : nil
    let g = try geometry(x, w, context)
    let group = attributes.group
    let (batch, channels, filters) = (x.shape[0], x.shape[1], w.shape[0])
    // oneDNN reads dY and X and writes dX (in X's layout) channels last too, as a recorded pass
    // chains them; everything else computes planar.
    let dnnlShape = DNNL.Shape(batch: batch, channels: channels, filters: filters, g)
    let onDNNL = group == 1 && g.spatialRank == 2 && DNNL.canDifferentiate(dnnlShape)
    if !onDNNL { (x, dy) = (x.planar(), dy.planar()) }
    let dxChannelsLast = x.channelsLast
    // oneDNN writes every element of both; the other paths accumulate into zeros.
    let depthwise = group == channels && w.shape[1] == 1 && g.spatialRank == 2
    var dx = onDNNL && context.needsGradient(0) ? uninitializedFloats(x.count) : [Float](repeating: 0, count: x.count)
    var dw = onDNNL ? uninitializedFloats(w.count) : [Float](repeating: 0, count: w.count)
    x.floats.withUnsafeBufferPointer { px in
      w.floats.withUnsafeBufferPointer { pw in
        dy.floats.withUnsafeBufferPointer { pdy in
          dx.withUnsafeMutableBufferPointer { pdx in
            dw.withUnsafeMutableBufferPointer { pdw in
              if depthwise {
                Conv.depthwise2DBackward(
                  px.baseAddress!, pw.baseAddress!, pdy.baseAddress!, pdx.baseAddress!, pdw.baseAddress!, batch: batch,
                  channels: channels, filters: filters, g)
                return
              }
              if onDNNL {
                if DNNL.convolutionBackward(
                  dnnlShape, px.baseAddress!, pw.baseAddress!, pdy.baseAddress!, context.needsGradient(0) ? pdx.baseAddress! : nil,
                  pdw.baseAddress!, outputGradientChannelsLast: dy.channelsLast, sourceChannelsLast: x.channelsLast)
                {
                  return
                }
                preconditionFailure("oneDNN refused a convolution it planned")
              }
              Conv.gemmBackward(
                px.baseAddress!, pw.baseAddress!, pdy.baseAddress!, context.needsGradient(0) ? pdx.baseAddress! : nil,
                pdw.baseAddress!, batch: batch, channels: channels, filters: filters, group: group, g)
            }
          }
        }
      }
    }
    var dxTensor = Tensor(shape: x.shape, floats: dx, dtype: x.dtype)
    dxTensor.channelsLast = dxChannelsLast
    var gradients: [Tensor?] = [dxTensor, Tensor(shape: w.shape, floats: dw, dtype: w.dtype)]
    if inputs.count > 2, let bias = inputs[2] {
      let sums =
        dy.channelsLast
        ? Conv.sumChannels(dy.floats, rows: batch * g.outputSize, filters: filters)
        : Conv.sumPlanes(dy.floats, batch: batch, filters: filters, size: g.outputSize)
      gradients.append(Tensor(shape: bias.shape, floats: sums, dtype: bias.dtype))
    }
    gradients += Array(repeating: nil, count: max(0, inputs.count - gradients.count))
    if residual { gradients[3] = residualGradient }
    return gradients
  }

  /// dW and dX of a gemm convolution. dW_g = [dY_g of every image] x [col_g of every image]^T is
  /// one product over the whole batch, deep enough (images x positions) for sgemm to run well even
  /// on the small maps of deep layers; dX_g = col2im(W_g^T x dY_g) runs one image per thread.
  /// `dx` nil skips the input gradient (the first layer's input needs none).
  static func gemmBackward(
    _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>?,
    _ dw: UnsafeMutablePointer<Float>, batch: Int, channels: Int, filters: Int, group: Int, _ g: ConvGeometry
  ) {
    let groupChannels = channels / group, groupFilters = filters / group
    let rows = groupChannels * g.kernelSize, columns = g.outputSize
    let total = batch * columns
    let unfolded = UnsafeMutablePointer<Float>.allocate(capacity: rows * total)
    let gradients = UnsafeMutablePointer<Float>.allocate(capacity: groupFilters * total)
    defer {
      unfolded.deallocate()
      gradients.deallocate()
    }
    let threads = Parallel.threads
    let perImage = batch >= threads && threads > 1
    let blasThreads = BLAS.threads
    for k in 0..<group {
      Parallel.forEach(batch, work: rows * total) { n in
        for m in 0..<groupFilters {
          (gradients + m * total + n * columns).update(from: dy + (n * filters + k * groupFilters + m) * columns, count: columns)
        }
        let image = x + (n * channels + k * groupChannels) * g.inputSize
        if g.isPointwise {
          for c in 0..<groupChannels { (unfolded + c * total + n * columns).update(from: image + c * columns, count: columns) }
        } else {
          im2col(image, unfolded + n * columns, channels: groupChannels, g, parallel: false, rowStride: total)
        }
      }
      BLAS.sgemm(
        transposeB: true, m: groupFilters, n: rows, k: total, a: gradients, lda: total, b: unfolded, ldb: total, beta: 1,
        c: dw + k * groupFilters * rows, ldc: rows)
      guard let dx else { continue }
      let weights = w + k * groupFilters * rows
      if perImage { BLAS.threads = 1 }
      Parallel.forEach(perImage ? batch : 1, work: perImage ? .max : 0) { worker in
        let images = perImage ? worker..<(worker + 1) : 0..<batch
        let col = g.isPointwise ? nil : UnsafeMutablePointer<Float>.allocate(capacity: rows * columns)
        defer { col?.deallocate() }
        for n in images {
          let target = dx + (n * channels + k * groupChannels) * g.inputSize
          if let col {
            BLAS.sgemm(
              transposeA: true, m: rows, n: columns, k: groupFilters, a: weights, lda: rows, b: gradients + n * columns, ldb: total,
              c: col, ldc: columns)
            col2im(col, target, channels: groupChannels, g, parallel: !perImage)
          } else {
            BLAS.sgemm(
              transposeA: true, m: rows, n: columns, k: groupFilters, a: weights, lda: rows, b: gradients + n * columns, ldb: total,
              beta: 1, c: target, ldc: columns)
          }
        }
      }
      if perImage { BLAS.threads = blasThreads }
    }
  }

  /// Per channel, the sum of a channels-last [rows, filters] array (the bias gradient): rows split
  /// over the threads, each summing its part into a row of partial sums.
  static func sumChannels(_ values: [Float], rows: Int, filters: Int) -> [Float] {
    let chunks = max(1, min(rows, Parallel.threads * 2))
    var partials = [Float](repeating: 0, count: chunks * filters)
    values.withUnsafeBufferPointer { p in
      partials.withUnsafeMutableBufferPointer { partials in
        let (p, partials) = (p.baseAddress!, partials.baseAddress!)
        Parallel.forEach(chunks, work: values.count) { chunk in
          let sums = partials + chunk * filters
          for row in (rows * chunk / chunks)..<(rows * (chunk + 1) / chunks) {
            let values = p + row * filters
            for m in 0..<filters { sums[m] += values[m] }
          }
        }
      }
    }
    return (0..<filters).map { m in (0..<chunks).reduce(0) { $0 + partials[$1 * filters + m] } }
  }

  /// Per-filter sums of an [N, M, size] gradient (the bias gradient), filters in parallel, each
  /// plane over eight interleaved partial sums.
  static func sumPlanes(_ values: [Float], batch: Int, filters: Int, size: Int) -> [Float] {
    [Float](unsafeUninitializedCapacity: filters) { sums, initialized in
      values.withUnsafeBufferPointer { p in
        Parallel.forEachRange(filters, work: values.count) { range in
          for m in range {
            var total: Float = 0
            for n in 0..<batch {
              let row = p.baseAddress! + (n * filters + m) * size
              var partial = SIMD8<Float>()
              var i = 0
              while i + 8 <= size {
                partial += UnsafeRawPointer(row + i).loadUnaligned(as: SIMD8<Float>.self)
                i += 8
              }
              var rest: Float = 0
              while i < size {
                rest += row[i]
                i += 1
              }
              total += partial.sum() + rest
            }
            sums[m] = total
          }
        }
      }
      initialized = filters
    }
  }

  /// Adds each row of `col` back onto the image positions its im2col row read from.
  static func col2im(
    _ col: UnsafePointer<Float>, _ image: UnsafeMutablePointer<Float>, channels: Int, _ g: ConvGeometry, parallel: Bool = true
  ) {
    guard g.spatialRank == 2 else {
      ConvTranspose.col2im(col, image, channels: channels, g.transposed)
      return
    }
    let kernelSize = g.kernelSize, columns = g.outputSize
    let (kh, kw) = (g.kernel[0], g.kernel[1])
    let (ih, iw) = (g.input[0], g.input[1])
    let (oh, ow) = (g.output[0], g.output[1])
    let (sh, sw) = (g.strides[0], g.strides[1])
    let (dh, dw) = (g.dilations[0], g.dilations[1])
    let (ph, pw) = (g.pads[0], g.pads[1])
    // Each channel's rows write only into that channel's plane: channels run in parallel.
    Parallel.forEach(channels, work: parallel ? channels * kernelSize * columns : 0) { c in
      let plane = image + c * ih * iw
      for kernelIndex in 0..<kernelSize {
        let i = kernelIndex / kw, j = kernelIndex % kw
        let source = col + (c * kernelSize + kernelIndex) * columns
        let offset = j * dw - pw
        let (first, last) = ConvGeometry.insideColumns(offset: offset, stride: sw, input: iw, output: ow)
        for r in 0..<oh {
          let y = r * sh - ph + i * dh
          guard y >= 0 && y < ih else { continue }
          let target = plane + y * iw + offset
          let line = source + r * ow
          if sw == 1 {
            for q in first..<last { target[q] += line[q] }
          } else {
            for q in first..<last { target[q * sw] += line[q] }
          }
        }
      }
    }
  }

  static func depthwise2DBackward(
    _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
    _ dw: UnsafeMutablePointer<Float>, batch: Int, channels: Int, filters: Int, _ g: ConvGeometry
  ) {
    let multiplier = filters / channels
    let (kh, kw) = (g.kernel[0], g.kernel[1])
    let (ih, iw) = (g.input[0], g.input[1])
    let (oh, ow) = (g.output[0], g.output[1])
    let (sh, sw) = (g.strides[0], g.strides[1])
    let (dh, dwStep) = (g.dilations[0], g.dilations[1])
    let (ph, pw) = (g.pads[0], g.pads[1])
    // Parallel over input channels: channel c owns dx's plane c and the filters m with m / multiplier == c.
    Parallel.forEach(channels, work: batch * filters * oh * ow * kh * kw) { c in
      for n in 0..<batch {
        let source = x + (n * channels + c) * ih * iw
        let sourceGradient = dx + (n * channels + c) * ih * iw
        for m in (c * multiplier)..<((c + 1) * multiplier) {
          let weights = w + m * kh * kw
          let weightGradient = dw + m * kh * kw
          let gradient = dy + (n * filters + m) * oh * ow
          for i in 0..<kh {
            for j in 0..<kw {
              let weight = weights[i * kw + j]
              let offset = j * dwStep - pw
              let (first, last) = ConvGeometry.insideColumns(offset: offset, stride: sw, input: iw, output: ow)
              var total: Float = 0
              for r in 0..<oh {
                let row = r * sh - ph + i * dh
                guard row >= 0 && row < ih else { continue }
                let input = source + row * iw + offset
                let inputGradient = sourceGradient + row * iw + offset
                let line = gradient + r * ow
                for q in first..<last {
                  total += line[q] * input[q * sw]
                  inputGradient[q * sw] += weight * line[q]
                }
              }
              weightGradient[i * kw + j] += total
            }
          }
        }
      }
    }
  }
}

extension ConvTranspose: DifferentiableOperator {
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let x = inputs[0], let w = inputs[1] else { return inputs.map { _ in nil } }
    let group = attributes.group
    let (batch, channels) = (x.shape[0], x.shape[1])
    let filters = w.shape[1] * group
    let groupChannels = channels / group, groupFilters = filters / group
    // im2col over dY with the transposed geometry gives, per input position, the output taps it fed.
    let unfold = try geometry(x, w, context).transposed
    let rows = groupFilters * unfold.kernelSize, columns = unfold.outputSize
    var dx = [Float](repeating: 0, count: x.count)
    var dw = [Float](repeating: 0, count: w.count)
    var col = [Float](repeating: 0, count: rows * columns)
    x.floats.withUnsafeBufferPointer { px in
      w.floats.withUnsafeBufferPointer { pw in
        dy.floats.withUnsafeBufferPointer { pdy in
          dx.withUnsafeMutableBufferPointer { pdx in
            dw.withUnsafeMutableBufferPointer { pdw in
              col.withUnsafeMutableBufferPointer { pc in
                for n in 0..<batch {
                  for k in 0..<group {
                    Conv.im2col(pdy.baseAddress! + (n * filters + k * groupFilters) * unfold.inputSize, pc.baseAddress!, channels: groupFilters, unfold)
                    // dX_g [C/g, in] += W_g [C/g, M/g*k] x col [M/g*k, in]
                    BLAS.sgemm(
                      m: groupChannels, n: columns, k: rows, a: pw.baseAddress! + k * groupChannels * rows, lda: rows, b: pc.baseAddress!,
                      ldb: columns, beta: 1, c: pdx.baseAddress! + (n * channels + k * groupChannels) * columns, ldc: columns)
                    // dW_g [C/g, M/g*k] += X_g [C/g, in] x col^T
                    BLAS.sgemm(
                      transposeB: true, m: groupChannels, n: rows, k: columns,
                      a: px.baseAddress! + (n * channels + k * groupChannels) * columns, lda: columns, b: pc.baseAddress!, ldb: columns,
                      beta: 1, c: pdw.baseAddress! + k * groupChannels * rows, ldc: rows)
                  }
                }
              }
            }
          }
        }
      }
    }
    var gradients: [Tensor?] = [Tensor(shape: x.shape, floats: dx, dtype: x.dtype), Tensor(shape: w.shape, floats: dw, dtype: w.dtype)]
    if inputs.count > 2, let bias = inputs[2] {
      gradients.append(Tensor(shape: bias.shape, floats: Conv.sumPlanes(dy.floats, batch: batch, filters: filters, size: unfold.inputSize), dtype: bias.dtype))
    }
    return gradients + Array(repeating: nil, count: max(0, inputs.count - gradients.count))
  }
}

extension Gemm: DifferentiableOperator {
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let a = inputs[0], let b = inputs[1] else { return inputs.map { _ in nil } }
    let (m, n) = (dy.shape[0], dy.shape[1])
    let k = transposeA ? a.shape[0] : a.shape[1]
    var da = [Float](repeating: 0, count: a.count), db = [Float](repeating: 0, count: b.count)
    a.floats.withUnsafeBufferPointer { pa in
      b.floats.withUnsafeBufferPointer { pb in
        dy.floats.withUnsafeBufferPointer { pdy in
          da.withUnsafeMutableBufferPointer { pda in
            if transposeA {  // dA [K, M] = alpha op(B) dY^T
              BLAS.sgemm(
                transposeA: transposeB, transposeB: true, m: k, n: m, k: n, alpha: alpha, a: pb.baseAddress!, lda: b.shape[1],
                b: pdy.baseAddress!, ldb: n, c: pda.baseAddress!, ldc: m)
            } else {  // dA [M, K] = alpha dY op(B)^T
              BLAS.sgemm(
                transposeB: !transposeB, m: m, n: k, k: n, alpha: alpha, a: pdy.baseAddress!, lda: n, b: pb.baseAddress!,
                ldb: b.shape[1], c: pda.baseAddress!, ldc: k)
            }
          }
          db.withUnsafeMutableBufferPointer { pdb in
            if transposeB {  // dB [N, K] = alpha dY^T op(A)
              BLAS.sgemm(
                transposeA: true, transposeB: transposeA, m: n, n: k, k: m, alpha: alpha, a: pdy.baseAddress!, lda: n,
                b: pa.baseAddress!, ldb: a.shape[1], c: pdb.baseAddress!, ldc: k)
            } else {  // dB [K, N] = alpha op(A)^T dY
              BLAS.sgemm(
                transposeA: !transposeA, m: k, n: n, k: m, alpha: alpha, a: pa.baseAddress!, lda: a.shape[1], b: pdy.baseAddress!,
                ldb: n, c: pdb.baseAddress!, ldc: n)
            }
          }
        }
      }
    }
    var gradients: [Tensor?] = [Tensor(shape: a.shape, floats: da, dtype: a.dtype), Tensor(shape: b.shape, floats: db, dtype: b.dtype)]
    if inputs.count > 2, let c = inputs[2], beta != 0 {
      gradients.append(Tensor(shape: dy.shape, floats: dy.floats.map { $0 * beta }, dtype: c.dtype))
    } else if inputs.count > 2 {
      gradients.append(nil)
    }
    return gradients
  }
}

extension MatMul: DifferentiableOperator {
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let a = inputs[0], let b = inputs[1], a.isFloat else { return [nil, nil] }
    let aShape = a.rank == 1 ? [1, a.shape[0]] : a.shape
    let bShape = b.rank == 1 ? [b.shape[0], 1] : b.shape
    let (m, k) = (aShape[aShape.count - 2], aShape[aShape.count - 1])
    let n = bShape[bShape.count - 1]
    let batchShape = Broadcast.shape([Array(aShape.dropLast(2)), Array(bShape.dropLast(2))])!
    let batches = batchShape.reduce(1, *)
    // Expand both operands to the full batch, compute per batch, and let the tape sum back.
    let ax = Broadcast.expand(a.floats, aShape, to: batchShape + [m, k])
    let bx = Broadcast.expand(b.floats, bShape, to: batchShape + [k, n])
    var da = [Float](repeating: 0, count: batches * m * k), db = [Float](repeating: 0, count: batches * k * n)
    ax.withUnsafeBufferPointer { pa in
      bx.withUnsafeBufferPointer { pb in
        dy.floats.withUnsafeBufferPointer { pdy in
          da.withUnsafeMutableBufferPointer { pda in
            db.withUnsafeMutableBufferPointer { pdb in
              for batch in 0..<batches {
                let g = pdy.baseAddress! + batch * m * n
                BLAS.sgemm(
                  transposeB: true, m: m, n: k, k: n, a: g, lda: n, b: pb.baseAddress! + batch * k * n, ldb: n,
                  c: pda.baseAddress! + batch * m * k, ldc: k)
                BLAS.sgemm(
                  transposeA: true, m: k, n: n, k: m, a: pa.baseAddress! + batch * m * k, lda: k, b: g, ldb: n,
                  c: pdb.baseAddress! + batch * k * n, ldc: n)
              }
            }
          }
        }
      }
    }
    var gradA = Tensor(shape: batchShape + [m, k], floats: da, dtype: a.dtype).summed(to: aShape)
    var gradB = Tensor(shape: batchShape + [k, n], floats: db, dtype: b.dtype).summed(to: bShape)
    gradA.shape = a.shape
    gradB.shape = b.shape
    return [gradA, gradB]
  }
}
