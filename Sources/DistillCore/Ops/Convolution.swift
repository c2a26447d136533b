// Conv, ConvTranspose, Gemm and MatMul, all on OpenBLAS sgemm: 1x1 convolutions are plain
// matrix products, k x k ones go through im2col, depthwise ones run a direct loop.
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

  func resolved(_ name: String, _ value: [Int]?, count: Int, default fill: Int, _ context: ExecutionContext) throws -> [Int] {
    let result = value ?? Array(repeating: fill, count: count)
    guard result.count == count else { throw context.error("attribute \(name) has \(result.count) values, expected \(count)") }
    return result
  }
}

struct Conv: Operator {
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
    let kernel = try attributes.resolved("kernel_shape", attributes.kernelShape ?? Array(w.shape.dropFirst(2)), count: rank, default: 0, context)
    guard kernel == Array(w.shape.dropFirst(2)) else {
      throw context.error("kernel_shape \(kernel) does not match input W \(w.shapeDescription)")
    }
    let strides = try attributes.resolved("strides", attributes.strides, count: rank, default: 1, context)
    let dilations = try attributes.resolved("dilations", attributes.dilations, count: rank, default: 1, context)
    var pads = try attributes.resolved("pads", attributes.pads, count: 2 * rank, default: 0, context)
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
    let x = try context.input(inputs, 0, "X"), w = try context.input(inputs, 1, "W")
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
    // A fused residual of the output's shape seeds the output (sgemm then accumulates into it);
    // one that only broadcasts (a bias written as Add) is added after the bias.
    var y: [Float]
    var broadcastResidual: Tensor?
    if residual {
      let other = try context.input(inputs, 3, "residual")
      guard other.isFloat, Broadcast.shape([shape, other.shape]) == shape else {
        throw context.error("fused residual input \(other.shapeDescription) does not broadcast to the output \(shape)")
      }
      if other.shape == shape {
        y = other.floats
      } else {
        y = [Float](repeating: 0, count: shape.reduce(1, *))
        broadcastResidual = other
      }
    } else {
      y = [Float](repeating: 0, count: shape.reduce(1, *))
    }
    let accumulate = residual && broadcastResidual == nil
    x.floats.withUnsafeBufferPointer { px in
      w.floats.withUnsafeBufferPointer { pw in
        y.withUnsafeMutableBufferPointer { py in
          if group == channels && w.shape[1] == 1 && g.spatialRank == 2 {
            Conv.depthwise2D(px.baseAddress!, pw.baseAddress!, py.baseAddress!, batch: batch, channels: channels, filters: filters, g)
          } else {
            Conv.gemmConvolution(
              px.baseAddress!, pw.baseAddress!, py.baseAddress!, batch: batch, channels: channels, filters: filters, group: group,
              accumulate: accumulate, g)
          }
        }
      }
    }
    if let other = broadcastResidual {
      Conv.finish(&y, bias: bias?.floats, filters: filters, planes: batch * filters, size: g.outputSize, .none)
      y = Broadcast.apply(y, shape, other.floats, other.shape, +)!.0
      Conv.finish(&y, bias: nil, filters: filters, planes: batch * filters, size: g.outputSize, activation)
    } else {
      Conv.finish(&y, bias: bias?.floats, filters: filters, planes: batch * filters, size: g.outputSize, activation)
    }
    return [Tensor(shape: shape, floats: y, dtype: x.dtype).normalized()]
  }

  /// Adds the bias of each output plane and applies the fused activation, in one pass.
  static func finish(
    _ y: inout [Float], bias: [Float]?, filters: Int, planes: Int, size: Int, _ activation: FusedActivation
  ) {
    if bias == nil && activation == .none { return }
    y.withUnsafeMutableBufferPointer { py in
      let base = py.baseAddress!
      Parallel.forEach(planes, work: planes * size) { plane in
        let b = bias?[plane % filters] ?? 0
        let row = base + plane * size
        switch activation {
        case .none: for i in 0..<size { row[i] += b }
        case .relu: for i in 0..<size { row[i] = max(row[i] + b, 0) }
        case .leakyRelu(let alpha):
          for i in 0..<size {
            let v = row[i] + b
            row[i] = v >= 0 ? v : alpha * v
          }
        case .clip(let low, let high): for i in 0..<size { row[i] = min(max(row[i] + b, low), high) }
        }
      }
    }
  }

  /// Per image and group: Y_g [M/g, out] = W_g [M/g, C/g*k] x col [C/g*k, out].
  static func gemmConvolution(
    _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, channels: Int,
    filters: Int, group: Int, accumulate: Bool = false, _ g: ConvGeometry
  ) {
    let groupChannels = channels / group, groupFilters = filters / group
    let rows = groupChannels * g.kernelSize
    let columns = g.outputSize
    let pointwise = g.isPointwise
    let col = pointwise ? nil : UnsafeMutablePointer<Float>.allocate(capacity: rows * columns)
    defer { col?.deallocate() }
    for n in 0..<batch {
      for k in 0..<group {
        let image = x + (n * channels + k * groupChannels) * g.inputSize
        if let col { im2col(image, col, channels: groupChannels, g) }
        BLAS.sgemm(
          m: groupFilters, n: columns, k: rows, a: w + k * groupFilters * rows, lda: rows, b: col.map { UnsafePointer($0) } ?? image,
          ldb: columns, beta: accumulate ? 1 : 0, c: y + (n * filters + k * groupFilters) * columns, ldc: columns)
      }
    }
  }

  /// Unfolds the receptive fields of `channels` planes into rows of `col` (zero outside the image).
  static func im2col(_ image: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>, channels: Int, _ g: ConvGeometry) {
    let kernelSize = g.kernelSize
    let columns = g.outputSize
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
        let out = col + row * columns
        // Output columns whose input column stays inside the image: ow0 ..< ow1.
        let offset = j * dw - pw
        let first = offset >= 0 ? 0 : (-offset + sw - 1) / sw
        let last = max(first, min(ow, (iw - offset + sw - 1) / sw))
        for r in 0..<oh {
          let y = r * sh - ph + i * dh
          let line = out + r * ow
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
      Parallel.forEach(rows, work: rows * columns, work)
      return
    }
    // Any spatial rank: walk every (channel, kernel offset) row and every output position.
    let rank = g.spatialRank
    let inputStrides = Tensor.strides(of: g.input)
    let kernelStrides = Tensor.strides(of: g.kernel)
    let outputStrides = Tensor.strides(of: g.output)
    for row in 0..<rows {
      let c = row / kernelSize
      var kernelIndex = [Int](repeating: 0, count: rank)
      var rest = row % kernelSize
      for axis in 0..<rank {
        kernelIndex[axis] = rest / kernelStrides[axis]
        rest %= kernelStrides[axis]
      }
      let plane = image + c * g.inputSize
      for column in 0..<columns {
        var rest = column
        var offset = 0
        var inside = true
        for axis in 0..<rank {
          let o = rest / outputStrides[axis]
          rest %= outputStrides[axis]
          let position = o * g.strides[axis] - g.pads[axis] + kernelIndex[axis] * g.dilations[axis]
          if position < 0 || position >= g.input[axis] { inside = false; break }
          offset += position * inputStrides[axis]
        }
        col[row * columns + column] = inside ? plane[offset] : 0
      }
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
          let first = offset >= 0 ? 0 : (-offset + sw - 1) / sw
          let last = max(first, min(ow, (iw - offset + sw - 1) / sw))
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

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "X"), w = try context.input(inputs, 1, "W")
    let bias = inputs.count > 2 ? inputs[2] : nil
    guard x.isFloat, w.isFloat else { throw context.error("inputs X and W must be floating point") }
    guard x.rank >= 3, w.rank == x.rank else {
      throw context.error("input X \(x.shapeDescription) and W \(w.shapeDescription) need the same rank, at least 3")
    }
    let rank = x.rank - 2
    let group = attributes.group
    let (batch, channels) = (x.shape[0], x.shape[1])
    guard w.shape[0] == channels, channels % group == 0 else {
      throw context.error("input W \(w.shapeDescription) does not fit X \(x.shapeDescription) with group \(group)")
    }
    let filters = w.shape[1] * group
    let kernel = try attributes.resolved("kernel_shape", attributes.kernelShape ?? Array(w.shape.dropFirst(2)), count: rank, default: 0, context)
    guard kernel == Array(w.shape.dropFirst(2)) else {
      throw context.error("kernel_shape \(kernel) does not match input W \(w.shapeDescription)")
    }
    let strides = try attributes.resolved("strides", attributes.strides, count: rank, default: 1, context)
    let dilations = try attributes.resolved("dilations", attributes.dilations, count: rank, default: 1, context)
    var pads = try attributes.resolved("pads", attributes.pads, count: 2 * rank, default: 0, context)
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
    let shape = [batch, filters] + output
    try context.checkAllocation(shape)
    let g = ConvGeometry(kernel: kernel, strides: strides, dilations: dilations, pads: pads, input: input, output: output)
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
      Conv.finish(&y, bias: bias.floats, filters: filters, planes: batch * filters, size: g.outputSize, .none)
    }
    return [Tensor(shape: shape, floats: y, dtype: x.dtype).normalized()]
  }

  /// Adds each column of `col` (one per input position) into the output positions it covers:
  /// the adjoint of im2col.
  static func col2im(_ col: UnsafePointer<Float>, _ image: UnsafeMutablePointer<Float>, channels: Int, _ g: ConvGeometry) {
    let rank = g.spatialRank
    let kernelStrides = Tensor.strides(of: g.kernel)
    let inputStrides = Tensor.strides(of: g.input)
    let outputStrides = Tensor.strides(of: g.output)
    let columns = g.inputSize
    for row in 0..<(channels * g.kernelSize) {
      let c = row / g.kernelSize
      var kernelIndex = [Int](repeating: 0, count: rank)
      var rest = row % g.kernelSize
      for axis in 0..<rank {
        kernelIndex[axis] = rest / kernelStrides[axis]
        rest %= kernelStrides[axis]
      }
      let plane = image + c * g.outputSize
      let source = col + row * columns
      for column in 0..<columns {
        var rest = column
        var offset = 0
        var inside = true
        for axis in 0..<rank {
          let i = rest / inputStrides[axis]
          rest %= inputStrides[axis]
          let position = i * g.strides[axis] - g.pads[axis] + kernelIndex[axis] * g.dilations[axis]
          if position < 0 || position >= g.output[axis] { inside = false; break }
          offset += position * outputStrides[axis]
        }
        if inside { plane[offset] += source[column] }
      }
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
