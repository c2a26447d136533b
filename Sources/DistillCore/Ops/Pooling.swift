import Foundation

// Pooling over the spatial dims of N x C x D1 x ... tensors: MaxPool, AveragePool, LpPool and
// their global forms.
// Specs: https://onnx.ai/onnx/operators/ (one page per operator).

let poolingOperators: [(String, any Operator.Type)] = [
  ("AveragePool", Pool.self), ("GlobalAveragePool", GlobalPool.self), ("GlobalLpPool", GlobalPool.self),
  ("GlobalMaxPool", GlobalPool.self), ("LpPool", Pool.self), ("MaxPool", Pool.self),
]

/// `MaxPool`, `AveragePool` and `LpPool` over 1 to 3 spatial dims with `kernel_shape`, `strides`,
/// `pads`, `auto_pad` (NOTSET, SAME_UPPER, SAME_LOWER, VALID), `ceil_mode` and `dilations`.
/// With `ceil_mode` the output rounds up, but windows that would start in the right padding are
/// dropped. Padding never wins a max and adds 0 to Lp sums; AveragePool divides by the in-bounds
/// count unless `count_include_pad`, which counts the padding (not the ceil_mode overhang).
/// MaxPool's optional `Indices` output holds flat indices into X, row-major over the spatial dims
/// (`storage_order` 0) or column-major (1), plus the offset of the (N, C) plane.
struct Pool: ChannelsLastOperator {
  enum Kind { case max, average, lp }

  let kind: Kind
  let kernel: [Int]
  let strides: [Int]
  let pads: [Int]
  let dilations: [Int]
  let autoPad: String
  let ceilMode: Bool
  let countIncludePad: Bool
  let columnMajorIndices: Bool
  let wantsIndices: Bool
  let p: Float

  init(_ node: Node, _ setup: OperatorSetup) throws {
    switch node.opType {
    case "MaxPool": kind = .max
    case "AveragePool": kind = .average
    default: kind = .lp
    }
    guard let kernel = node.intsAttribute("kernel_shape"), !kernel.isEmpty else {
      throw setup.error("attribute kernel_shape is missing")
    }
    guard kernel.count <= 3 else { throw setup.error("kernel_shape \(kernel) has \(kernel.count) dims; 1 to 3 spatial dims are supported") }
    guard kernel.allSatisfy({ $0 >= 1 }) else { throw setup.error("kernel_shape \(kernel) has a dim below 1") }
    self.kernel = kernel
    let rank = kernel.count
    strides = node.intsAttribute("strides") ?? [Int](repeating: 1, count: rank)
    pads = node.intsAttribute("pads") ?? [Int](repeating: 0, count: 2 * rank)
    dilations = node.intsAttribute("dilations") ?? [Int](repeating: 1, count: rank)
    guard strides.count == rank, strides.allSatisfy({ $0 >= 1 }) else {
      throw setup.error("attribute strides \(strides) does not hold \(rank) positive values")
    }
    guard dilations.count == rank, dilations.allSatisfy({ $0 >= 1 }) else {
      throw setup.error("attribute dilations \(dilations) does not hold \(rank) positive values")
    }
    guard pads.count == 2 * rank, pads.allSatisfy({ $0 >= 0 }) else {
      throw setup.error("attribute pads \(pads) does not hold \(2 * rank) non-negative values")
    }
    autoPad = node.stringAttribute("auto_pad") ?? "NOTSET"
    guard ["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"].contains(autoPad) else {
      throw setup.error("attribute auto_pad is '\(autoPad)', expected NOTSET, SAME_UPPER, SAME_LOWER or VALID")
    }
    ceilMode = (node.intAttribute("ceil_mode") ?? 0) != 0
    countIncludePad = (node.intAttribute("count_include_pad") ?? 0) != 0
    columnMajorIndices = (node.intAttribute("storage_order") ?? 0) != 0
    wantsIndices = node.outputs.count > 1 && !node.outputs[1].isEmpty
    // LpPool-1 has a float `p`, later versions an int.
    p = node.intAttribute("p").map { Float($0) } ?? node.floatAttribute("p") ?? 2
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    var x = try context.input(inputs, 0, "X")
    let spatialRank = kernel.count
    // Only 2-D MaxPool without indices pools channels last; the rest converts.
    let poolsChannelsLast = x.channelsLast && kind == .max && !wantsIndices && spatialRank == 2
    if x.channelsLast && !poolsChannelsLast { x = x.planar() }
    guard x.rank == spatialRank + 2 else {
      throw context.error("input X has \(x.rank) dims, expected \(spatialRank + 2) (N, C and \(spatialRank) spatial dims of kernel_shape)")
    }
    var windows: [PoolWindow] = []
    for axis in 0..<spatialRank {
      windows.append(try window(axis, size: x.shape[axis + 2], context))
    }
    while windows.count < 3 { windows.insert(.unit, at: 0) }
    let geometry = PoolGeometry(windows)
    let planes = x.shape[0] * x.shape[1]
    let outShape = Array(x.shape[..<2]) + windows.suffix(spatialRank).map(\.outSize)
    let outCount = try context.checkAllocation(outShape)
    let work = x.count + outCount * kernel.reduce(1, *)
    if outCount == 0 {
      let y = Tensor(zeros: outShape, dtype: x.dtype)
      return kind == .max ? [y, Tensor(zeros: outShape, dtype: .int64)] : [y]
    }

    if !x.isFloat {
      guard kind == .max else { throw context.error("input X is \(x.dtype); \(kind == .average ? "AveragePool" : "LpPool") needs a floating-point tensor") }
      var y = [Int64](repeating: 0, count: outCount)
      let indices = maxWithIndices(x.ints, &y, geometry, planes: planes, lowest: Int64.min, work: work)
      return [Tensor(shape: outShape, ints: y, dtype: x.dtype), Tensor(shape: outShape, ints: indices, dtype: .int64)]
    }
    if kind == .max && wantsIndices {
      var y = [Float](repeating: 0, count: outCount)
      let indices = maxWithIndices(x.floats, &y, geometry, planes: planes, lowest: -Float.infinity, work: work)
      return [Tensor(shape: outShape, floats: y, dtype: x.dtype).normalized(), Tensor(shape: outShape, ints: indices, dtype: .int64)]
    }
    if poolsChannelsLast {
      var y = Tensor(shape: outShape, floats: geometry.maxChannelsLast(x.floats, batch: x.shape[0], channels: x.shape[1], work: work), dtype: x.dtype)
      y.channelsLast = true
      return [context.mayWriteChannelsLast ? y : y.planar()]
    }
    let y: [Float]
    switch kind {
    case .max: y = geometry.pool(MaximumPooling(), x.floats, planes: planes, work: work)
    case .average where countIncludePad: y = geometry.pool(AveragePoolingWithPadding(), x.floats, planes: planes, work: work)
    case .average: y = geometry.pool(AveragePooling(), x.floats, planes: planes, work: work)
    case .lp where p == 1: y = geometry.pool(L1Pooling(), x.floats, planes: planes, work: work)
    case .lp where p == 2: y = geometry.pool(L2Pooling(), x.floats, planes: planes, work: work)
    case .lp: y = geometry.pool(LpPooling(p: p), x.floats, planes: planes, work: work)
    }
    return [Tensor(shape: outShape, floats: y, dtype: x.dtype).normalized()]
  }

  private func maxWithIndices<T: Comparable>(
    _ x: [T], _ y: inout [T], _ geometry: PoolGeometry, planes: Int, lowest: T, work: Int
  ) -> [Int64] {
    var indices = [Int64](repeating: 0, count: y.count)
    let columnMajor = columnMajorIndices
    x.withUnsafeBufferPointer { xs in
      y.withUnsafeMutableBufferPointer { ys in
        indices.withUnsafeMutableBufferPointer { ids in
          Parallel.forEachRange(planes, work: work) { range in
            geometry.maxWithIndices(xs.baseAddress!, ys.baseAddress!, ids.baseAddress!, range, lowest: lowest, columnMajor: columnMajor)
          }
        }
      }
    }
    return indices
  }

  /// The windows along spatial axis `axis` of an input dim of `size`.
  private func window(_ axis: Int, size: Int, _ context: ExecutionContext) throws -> PoolWindow {
    let k = kernel[axis], s = strides[axis], d = dilations[axis]
    let span = (k - 1) * d + 1
    let rank = kernel.count
    var begin = 0, end = 0, out: Int
    switch autoPad {
    case "SAME_UPPER", "SAME_LOWER":
      out = (size + s - 1) / s
      let total = max(0, (out - 1) * s + span - size)
      begin = autoPad == "SAME_UPPER" ? total / 2 : total - total / 2
      end = total - begin
    case "VALID":
      out = size >= span ? (size - span) / s + 1 : 0
    default:
      begin = pads[axis]
      end = pads[axis + rank]
      let room = size + begin + end - span
      out = room < 0 ? 0 : (ceilMode ? (room + s - 1) / s : room / s) + 1
      if ceilMode && out > 0 && (out - 1) * s >= size + begin { out -= 1 }
    }
    guard out >= 1 else {
      throw context.error("input X spatial dim \(axis) of size \(size) is smaller than the kernel extent \(span) (pads \(begin)+\(end))")
    }
    return PoolWindow(outSize: out, size: size, kernel: k, stride: s, dilation: d, padBegin: begin, padEnd: end)
  }
}

/// How a pool folds a window: `merge` from `initial` over `map` of the in-bounds values, then
/// `finish` with the counts of in-bounds taps and of taps inside input plus padding.
private protocol PoolReduction {
  var initial: Float { get }
  func map(_ x: Float) -> Float
  func merge(_ acc: Float, _ x: Float) -> Float
  func finish(_ acc: Float, valid: Int, padded: Int) -> Float
}

private struct MaximumPooling: PoolReduction {
  var initial: Float { -.infinity }
  @inline(__always) func map(_ x: Float) -> Float { x }
  @inline(__always) func merge(_ acc: Float, _ x: Float) -> Float { x > acc ? x : acc }
  @inline(__always) func finish(_ acc: Float, valid: Int, padded: Int) -> Float { acc }
}

private struct AveragePooling: PoolReduction {
  var initial: Float { 0 }
  @inline(__always) func map(_ x: Float) -> Float { x }
  @inline(__always) func merge(_ acc: Float, _ x: Float) -> Float { acc + x }
  @inline(__always) func finish(_ acc: Float, valid: Int, padded: Int) -> Float { valid > 0 ? acc / Float(valid) : 0 }
}

private struct AveragePoolingWithPadding: PoolReduction {
  var initial: Float { 0 }
  @inline(__always) func map(_ x: Float) -> Float { x }
  @inline(__always) func merge(_ acc: Float, _ x: Float) -> Float { acc + x }
  @inline(__always) func finish(_ acc: Float, valid: Int, padded: Int) -> Float { padded > 0 ? acc / Float(padded) : 0 }
}

private struct L1Pooling: PoolReduction {
  var initial: Float { 0 }
  @inline(__always) func map(_ x: Float) -> Float { abs(x) }
  @inline(__always) func merge(_ acc: Float, _ x: Float) -> Float { acc + x }
  @inline(__always) func finish(_ acc: Float, valid: Int, padded: Int) -> Float { acc }
}

private struct L2Pooling: PoolReduction {
  var initial: Float { 0 }
  @inline(__always) func map(_ x: Float) -> Float { x * x }
  @inline(__always) func merge(_ acc: Float, _ x: Float) -> Float { acc + x }
  @inline(__always) func finish(_ acc: Float, valid: Int, padded: Int) -> Float { acc.squareRoot() }
}

private struct LpPooling: PoolReduction {
  let p: Float
  var initial: Float { 0 }
  @inline(__always) func map(_ x: Float) -> Float { pow(abs(x), p) }
  @inline(__always) func merge(_ acc: Float, _ x: Float) -> Float { acc + x }
  @inline(__always) func finish(_ acc: Float, valid: Int, padded: Int) -> Float { pow(acc, 1 / p) }
}

/// Where the windows along one spatial axis read. `table` holds, for each output position, the
/// first in-bounds input coordinate, then (after `outSize` entries) how many taps fall in bounds,
/// then how many fall inside the input plus its padding.
private struct PoolWindow {
  let outSize: Int
  let size: Int
  let kernel: Int
  let stride: Int
  let dilation: Int
  let table: [Int]

  init(outSize: Int, size: Int, kernel: Int, stride: Int, dilation: Int, padBegin: Int, padEnd: Int) {
    (self.outSize, self.size, self.kernel, self.stride, self.dilation) = (outSize, size, kernel, stride, dilation)
    var first: [Int] = [], valid: [Int] = [], padded: [Int] = []
    for o in 0..<outSize {
      let start = o * stride - padBegin
      let low = start < 0 ? (-start + dilation - 1) / dilation : 0
      let high = min(kernel, (size - start + dilation - 1) / dilation)
      let paddedHigh = min(kernel, (size + padEnd - start + dilation - 1) / dilation)
      first.append(start + low * dilation)
      valid.append(max(0, high - low))
      padded.append(max(0, paddedHigh))
    }
    table = first + valid + padded
  }

  /// A unit axis, to run 1D and 2D pools as 3D.
  static let unit = PoolWindow(outSize: 1, size: 1, kernel: 1, stride: 1, dilation: 1, padBegin: 0, padEnd: 0)

  /// The output positions whose window lies entirely inside the input: one contiguous run, where
  /// the first tap advances by `stride`.
  var interior: Range<Int> {
    let valid = table[outSize..<(2 * outSize)]
    guard let start = valid.firstIndex(of: kernel) else { return outSize..<outSize }
    let end = valid.lastIndex(of: kernel)! + 1
    return (start - outSize)..<(end - outSize)
  }
}

/// Three spatial axes (depth, height, width) of a pool with their window tables.
private struct PoolGeometry {
  let depth: PoolWindow, height: PoolWindow, width: PoolWindow
  let inPlane: Int, outPlane: Int
  /// The three axes' tables, one after the other.
  let tables: [Int]

  init(_ windows: [PoolWindow]) {
    (depth, height, width) = (windows[0], windows[1], windows[2])
    inPlane = depth.size * height.size * width.size
    outPlane = depth.outSize * height.outSize * width.outSize
    tables = depth.table + height.table + width.table
  }

  /// 2-D max pooling of a channels-last `x` (N, H, W, C in memory) into a channels-last result:
  /// each output position folds the C-long rows of its window's in-bounds taps.
  func maxChannelsLast(_ x: [Float], batch: Int, channels: Int, work: Int) -> [Float] {
    let (outHeight, outWidth, inWidth) = (height.outSize, width.outSize, width.size)
    let (inImage, outCount) = (height.size * inWidth * channels, batch * outHeight * outWidth * channels)
    let (dh, dw) = (height.dilation, width.dilation)
    let table = (height.table, width.table)
    return [Float](unsafeUninitializedCapacity: outCount) { y, initialized in
      x.withUnsafeBufferPointer { x in
        let x = x.baseAddress!, y = y.baseAddress!
        Parallel.forEachRange(batch * outHeight, work: work) { range in
          for row in range {
            let (n, oh) = (row / outHeight, row % outHeight)
            let (hFirst, hCount) = (table.0[oh], table.0[outHeight + oh])
            for ow in 0..<outWidth {
              let out = y + (row * outWidth + ow) * channels
              let (wFirst, wCount) = (table.1[ow], table.1[outWidth + ow])
              if hCount == 0 || wCount == 0 {
                out.initialize(repeating: -.infinity, count: channels)
                continue
              }
              var first = true
              for th in 0..<hCount {
                for tw in 0..<wCount {
                  let tap = x + n * inImage + ((hFirst + th * dh) * inWidth + wFirst + tw * dw) * channels
                  if first {
                    out.initialize(from: tap, count: channels)
                    first = false
                  } else {
                    for c in 0..<channels { out[c] = tap[c] > out[c] ? tap[c] : out[c] }
                  }
                }
              }
            }
          }
        }
      }
      initialized = outCount
    }
  }

  /// Pools every (N, C) plane of `x` with `reduction` over the in-bounds values of each window.
  func pool<Reduction: PoolReduction>(_ reduction: Reduction, _ x: [Float], planes: Int, work: Int) -> [Float] {
    let outCount = planes * outPlane
    return [Float](unsafeUninitializedCapacity: outCount) { y, initialized in
      x.withUnsafeBufferPointer { x in
        let x = x.baseAddress!, y = y.baseAddress!
        Parallel.forEachRange(planes, work: work) { range in
          var columns = [Float](repeating: 0, count: width.size)
          columns.withUnsafeMutableBufferPointer { columns in
            for plane in range { poolPlane(reduction, x + plane * inPlane, y + plane * outPlane, columns.baseAddress!) }
          }
        }
      }
      initialized = outCount
    }
  }

  /// One plane, one output row at a time: first the window's input rows fold into `columns` (one
  /// value per input column, a vectorizable pass), then each output folds its columns.
  @inline(__always)
  private func poolPlane<Reduction: PoolReduction>(
    _ reduction: Reduction, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ columns: UnsafeMutablePointer<Float>
  ) {
    let rowLength = width.size, sliceLength = height.size * width.size
    let dd = depth.dilation * sliceLength, dh = height.dilation * rowLength, dw = width.dilation
    let outDepth = depth.outSize, outHeight = height.outSize, outWidth = width.outSize
    let interior = width.interior, kernelWidth = width.kernel, widthStride = width.stride
    tables.withUnsafeBufferPointer { tables in
      let dFirst = tables.baseAddress!, dValid = dFirst + outDepth, dPadded = dValid + outDepth
      let hFirst = dPadded + outDepth, hValid = hFirst + outHeight, hPadded = hValid + outHeight
      let wFirst = hPadded + outHeight, wValid = wFirst + outWidth, wPadded = wValid + outWidth
      var out = y
      for od in 0..<outDepth {
        let dCount = dValid[od], dBase = x + dFirst[od] * sliceLength
        for oh in 0..<outHeight {
          let hCount = hValid[oh], hBase = dBase + hFirst[oh] * rowLength
          let validRows = dCount * hCount, paddedRows = dPadded[od] * hPadded[oh]
          if validRows == 0 {
            for j in 0..<rowLength { columns[j] = reduction.initial }
          } else {
            for j in 0..<rowLength { columns[j] = reduction.map(hBase[j]) }
            for td in 0..<dCount {
              for th in 0..<hCount where td > 0 || th > 0 {
                let row = hBase + td * dd + th * dh
                for j in 0..<rowLength { columns[j] = reduction.merge(columns[j], reduction.map(row[j])) }
              }
            }
          }
          @inline(__always) func window(_ start: Int, _ count: Int) -> Float {
            let taps = columns + start
            if dw == 1 && count == 3 { return reduction.merge(reduction.merge(taps[0], taps[1]), taps[2]) }
            if dw == 1 && count == 2 { return reduction.merge(taps[0], taps[1]) }
            var acc = reduction.initial
            for tw in 0..<count { acc = reduction.merge(acc, taps[tw * dw]) }
            return acc
          }
          for ow in 0..<interior.lowerBound {
            out[ow] = reduction.finish(window(wFirst[ow], wValid[ow]), valid: validRows * wValid[ow], padded: paddedRows * wPadded[ow])
          }
          let valid = validRows * kernelWidth, padded = paddedRows * kernelWidth
          var start = interior.isEmpty ? 0 : wFirst[interior.lowerBound]
          for ow in interior {
            out[ow] = reduction.finish(window(start, kernelWidth), valid: valid, padded: padded)
            start += widthStride
          }
          for ow in interior.upperBound..<outWidth {
            out[ow] = reduction.finish(window(wFirst[ow], wValid[ow]), valid: validRows * wValid[ow], padded: paddedRows * wPadded[ow])
          }
          out += outWidth
        }
      }
    }
  }

  /// Max pooling that also records where each maximum came from: the flat index into X, with the
  /// spatial part row-major or (`columnMajor`) column-major.
  func maxWithIndices<T: Comparable>(
    _ x: UnsafePointer<T>, _ y: UnsafeMutablePointer<T>, _ indices: UnsafeMutablePointer<Int64>, _ range: Range<Int>,
    lowest: T, columnMajor: Bool
  ) {
    let d = depth, h = height, w = width
    func first(_ window: PoolWindow, _ o: Int) -> Int { window.table[o] }
    func valid(_ window: PoolWindow, _ o: Int) -> Int { window.table[window.outSize + o] }
    for plane in range {
      var out = plane * outPlane
      for od in 0..<d.outSize {
        for oh in 0..<h.outSize {
          for ow in 0..<w.outSize {
            var best = lowest, bestIndex = -1
            for td in 0..<valid(d, od) {
              let z = first(d, od) + td * d.dilation
              for th in 0..<valid(h, oh) {
                let r = first(h, oh) + th * h.dilation
                for tw in 0..<valid(w, ow) {
                  let c = first(w, ow) + tw * w.dilation
                  let value = x[plane * inPlane + (z * h.size + r) * w.size + c]
                  if bestIndex < 0 || value > best {
                    best = value
                    bestIndex = columnMajor ? (c * h.size + r) * d.size + z : (z * h.size + r) * w.size + c
                  }
                }
              }
            }
            y[out] = best
            indices[out] = Int64(plane * inPlane + max(bestIndex, 0))
            out += 1
          }
        }
      }
    }
  }
}

/// `GlobalMaxPool`, `GlobalAveragePool` and `GlobalLpPool` (`p`, default 2): one value per
/// (N, C) plane, with the spatial dims kept as 1.
struct GlobalPool: Operator {
  enum Kind { case max, average, lp }

  let kind: Kind
  let p: Float

  init(_ node: Node, _ setup: OperatorSetup) throws {
    switch node.opType {
    case "GlobalMaxPool": kind = .max
    case "GlobalAveragePool": kind = .average
    default: kind = .lp
    }
    p = node.intAttribute("p").map { Float($0) } ?? node.floatAttribute("p") ?? 2
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "X")
    guard x.isFloat else { throw context.error("input X is \(x.dtype), expected a floating-point tensor") }
    guard x.rank >= 2 else { throw context.error("input X has \(x.rank) dims, expected at least 2 (N, C, ...)") }
    let planes = x.shape[0] * x.shape[1], size = x.shape.dropFirst(2).reduce(1, *)
    let outShape = Array(x.shape[..<2]) + [Int](repeating: 1, count: x.rank - 2)
    var y = [Float](repeating: 0, count: planes)
    let kind = self.kind, p = self.p
    x.floats.withUnsafeBufferPointer { xs in
      y.withUnsafeMutableBufferPointer { ys in
        Parallel.forEachRange(planes, work: x.count) { range in
          for plane in range {
            let values = UnsafeBufferPointer(rebasing: xs[(plane * size)..<((plane + 1) * size)])
            switch kind {
            case .max:
              var best = -Float.infinity
              for value in values where value > best { best = value }
              ys[plane] = best
            case .average:
              // Four partial sums let the loop vectorize.
              var s0: Float = 0, s1: Float = 0, s2: Float = 0, s3: Float = 0
              var i = 0
              while i + 4 <= size {
                s0 += values[i]; s1 += values[i + 1]; s2 += values[i + 2]; s3 += values[i + 3]
                i += 4
              }
              while i < size { s0 += values[i]; i += 1 }
              ys[plane] = size > 0 ? ((s0 + s1) + (s2 + s3)) / Float(size) : .nan
            case .lp:
              var sum: Float = 0
              if p == 2 {
                for value in values { sum += value * value }
                ys[plane] = sum.squareRoot()
              } else {
                for value in values { sum += pow(abs(value), p) }
                ys[plane] = pow(sum, 1 / p)
              }
            }
          }
        }
      }
    }
    return [Tensor(shape: outShape, floats: y, dtype: x.dtype).normalized()]
  }
}

// MARK: - Gradients

extension Pool: DifferentiableOperator {
  /// MaxPool routes each output's gradient to the first maximum of its window (row-major, as the
  /// `Indices` output reports it); AveragePool spreads it evenly over the window's in-bounds taps,
  /// divided by the same count as the forward (with or without the padding); LpPool gives each tap
  /// `|x|^(p-1) sign(x) / y^(p-1)`. Taps shared by overlapping windows accumulate.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat, dy.isFloat else { return inputs.map { _ in nil } }
    let spatialRank = kernel.count
    guard x.rank == spatialRank + 2 else { return [nil] }
    var windows = try (0..<spatialRank).map { try window($0, size: x.shape[$0 + 2], context) }
    while windows.count < 3 { windows.insert(.unit, at: 0) }
    let geometry = PoolGeometry(windows)
    let planes = x.shape[0] * x.shape[1]
    var dx = [Float](repeating: 0, count: x.count)
    guard dy.count == planes * geometry.outPlane, dy.count > 0 else { return [Tensor(shape: x.shape, floats: dx, dtype: x.dtype)] }
    let kind = self.kind, countIncludePad = self.countIncludePad, p = self.p
    let taps = kernel.reduce(1, *)
    x.floats.withUnsafeBufferPointer { xs in
      outputs[0].floats.withUnsafeBufferPointer { ys in
        dy.floats.withUnsafeBufferPointer { gs in
          dx.withUnsafeMutableBufferPointer { dxs in
            Parallel.forEachRange(planes, work: x.count + dy.count * taps) { range in
              geometry.backward(
                kind, countIncludePad: countIncludePad, p: p, xs.baseAddress!, ys.baseAddress!, gs.baseAddress!, dxs.baseAddress!, range,
                taps: taps)
            }
          }
        }
      }
    }
    return [Tensor(shape: x.shape, floats: dx, dtype: x.dtype)]
  }
}

extension PoolGeometry {
  /// Adds the gradient of the planes in `range` of the pooled output `y` (gradient `g`) to `dx`.
  func backward(
    _ kind: Pool.Kind, countIncludePad: Bool, p: Float, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ g: UnsafePointer<Float>,
    _ dx: UnsafeMutablePointer<Float>, _ range: Range<Int>, taps: Int
  ) {
    let d = depth, h = height, w = width
    // Flat offsets (in the plane) of the current window's in-bounds taps.
    var offsets = [Int](repeating: 0, count: taps)
    offsets.withUnsafeMutableBufferPointer { offsets in
      let offsets = offsets.baseAddress!
      for plane in range {
        let xp = x + plane * inPlane, dxp = dx + plane * inPlane
        var out = plane * outPlane
        for od in 0..<d.outSize {
          let dFirst = d.table[od], dValid = d.table[d.outSize + od], dPadded = d.table[2 * d.outSize + od]
          for oh in 0..<h.outSize {
            let hFirst = h.table[oh], hValid = h.table[h.outSize + oh], hPadded = h.table[2 * h.outSize + oh]
            for ow in 0..<w.outSize {
              let wFirst = w.table[ow], wValid = w.table[w.outSize + ow], wPadded = w.table[2 * w.outSize + ow]
              var n = 0
              for td in 0..<dValid {
                let z = dFirst + td * d.dilation
                for th in 0..<hValid {
                  let rowBase = (z * h.size + hFirst + th * h.dilation) * w.size + wFirst
                  for tw in 0..<wValid {
                    offsets[n] = rowBase + tw * w.dilation
                    n += 1
                  }
                }
              }
              let gradient = g[out]
              switch kind {
              case .max:
                if n > 0 {
                  var best = xp[offsets[0]], bestOffset = offsets[0]
                  for t in 1..<n where xp[offsets[t]] > best {
                    best = xp[offsets[t]]
                    bestOffset = offsets[t]
                  }
                  dxp[bestOffset] += gradient
                }
              case .average:
                let divisor = countIncludePad ? dPadded * hPadded * wPadded : n
                if divisor > 0 {
                  let share = gradient / Float(divisor)
                  for t in 0..<n { dxp[offsets[t]] += share }
                }
              case .lp:
                let norm = y[out]
                if norm > 0 {
                  for t in 0..<n {
                    let v = xp[offsets[t]]
                    let sign: Float = v > 0 ? 1 : (v < 0 ? -1 : 0)
                    let derivative: Float
                    if p == 1 {
                      derivative = sign
                    } else if p == 2 {
                      derivative = v / norm
                    } else {
                      derivative = sign * pow(abs(v) / norm, p - 1)
                    }
                    dxp[offsets[t]] += gradient * derivative
                  }
                }
              }
              out += 1
            }
          }
        }
      }
    }
  }
}

extension GlobalPool: DifferentiableOperator {
  /// GlobalMaxPool routes each plane's gradient to its first maximum, GlobalAveragePool spreads it
  /// evenly, GlobalLpPool gives each element `|x|^(p-1) sign(x) / y^(p-1)`.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat, x.rank >= 2 else { return [nil] }
    let planes = x.shape[0] * x.shape[1], size = x.shape.dropFirst(2).reduce(1, *)
    var dx = [Float](repeating: 0, count: x.count)
    guard size > 0 else { return [Tensor(shape: x.shape, floats: dx, dtype: x.dtype)] }
    let kind = self.kind, p = self.p
    x.floats.withUnsafeBufferPointer { xs in
      outputs[0].floats.withUnsafeBufferPointer { ys in
        dy.floats.withUnsafeBufferPointer { gs in
          dx.withUnsafeMutableBufferPointer { dxs in
            Parallel.forEachRange(planes, work: 2 * x.count) { range in
              for plane in range {
                let base = plane * size, gradient = gs[plane]
                switch kind {
                case .max:
                  var best = xs[base], bestIndex = base
                  for i in base..<(base + size) where xs[i] > best {
                    best = xs[i]
                    bestIndex = i
                  }
                  dxs[bestIndex] = gradient
                case .average:
                  let share = gradient / Float(size)
                  for i in base..<(base + size) { dxs[i] = share }
                case .lp:
                  let norm = ys[plane]
                  guard norm > 0 else { continue }
                  for i in base..<(base + size) {
                    let v = xs[i]
                    let sign: Float = v > 0 ? 1 : (v < 0 ? -1 : 0)
                    dxs[i] = gradient * (p == 2 ? v / norm : sign * pow(abs(v) / norm, p - 1))
                  }
                }
              }
            }
          }
        }
      }
    }
    return [Tensor(shape: x.shape, floats: dx, dtype: x.dtype)]
  }
}
