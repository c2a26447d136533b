import Foundation

// Reductions over axes (ReduceSum, ReduceMean, ReduceMax...) and the normalized exponentials
// along one axis (Softmax, LogSoftmax, Hardmax).
// Specs: https://onnx.ai/onnx/operators/ (one page per operator).

let reductionOperators: [(String, any Operator.Type)] = [
  ("Hardmax", Softmax.self), ("LogSoftmax", Softmax.self), ("ReduceL1", Reduce.self), ("ReduceL2", Reduce.self),
  ("ReduceLogSum", Reduce.self), ("ReduceLogSumExp", Reduce.self), ("ReduceMax", Reduce.self),
  ("ReduceMean", Reduce.self), ("ReduceMin", Reduce.self), ("ReduceProd", Reduce.self), ("ReduceSum", Reduce.self),
  ("ReduceSumSquare", Reduce.self), ("Softmax", Softmax.self),
]

/// `ReduceL1`, `ReduceL2`, `ReduceLogSum`, `ReduceLogSumExp`, `ReduceMax`, `ReduceMean`, `ReduceMin`,
/// `ReduceProd`, `ReduceSum`, `ReduceSumSquare`: reduce `data` over `axes` (an attribute, or from
/// ReduceSum-13 and the others at opset 18 the optional second input). No axes reduces every axis,
/// or with `noop_with_empty_axes` reduces none (each element still mapped: ReduceL1 gives |x|).
/// Reducing an empty set gives the operation's identity: 0 for sums and ReduceMean (as
/// onnxruntime), 1 for ReduceProd, -inf for ReduceMax and the log-sums, +inf for ReduceMin.
struct Reduce: Operator {
  enum Kind { case l1, l2, logSum, logSumExp, max, mean, min, prod, sum, sumSquare }

  let kind: Kind
  let axes: [Int]?
  let keepDims: Bool
  let noopWithEmptyAxes: Bool

  init(_ node: Node, _ setup: OperatorSetup) throws {
    switch node.opType {
    case "ReduceL1": kind = .l1
    case "ReduceL2": kind = .l2
    case "ReduceLogSum": kind = .logSum
    case "ReduceLogSumExp": kind = .logSumExp
    case "ReduceMax": kind = .max
    case "ReduceMean": kind = .mean
    case "ReduceMin": kind = .min
    case "ReduceProd": kind = .prod
    case "ReduceSum": kind = .sum
    case "ReduceSumSquare": kind = .sumSquare
    default: throw setup.error("is not a reduction")
    }
    axes = node.intsAttribute("axes")
    keepDims = (node.intAttribute("keepdims") ?? 1) != 0
    noopWithEmptyAxes = (node.intAttribute("noop_with_empty_axes") ?? 0) != 0
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "data")
    let rank = x.rank
    let reduced = try reducedAxes(rank, inputs, context)
    var outShape: [Int] = []
    for axis in 0..<rank where !reduced[axis] || keepDims { outShape.append(reduced[axis] ? 1 : x.shape[axis]) }
    let outCount = try context.checkAllocation(outShape)
    let plan = ReductionPlan(x.shape, reduced)

    if x.isFloat {
      var out = [Float](repeating: identity(), count: outCount)
      x.floats.withUnsafeBufferPointer { source in
        out.withUnsafeMutableBufferPointer { target in reduceFloats(source, target, plan) }
      }
      return [Tensor(shape: outShape, floats: out, dtype: x.dtype).normalized()]
    }
    switch kind {
    case .l2, .logSum, .logSumExp:
      // Computed in floating point, then truncated back to the integer type.
      var out = [Float](repeating: identity(), count: outCount)
      x.asFloats.withUnsafeBufferPointer { source in
        out.withUnsafeMutableBufferPointer { target in reduceFloats(source, target, plan) }
      }
      let ints = out.map { $0.isFinite ? Int64(max(min($0, 9.2e18), -9.2e18)) : ($0.isNaN ? 0 : ($0 > 0 ? .max : .min)) }
      return [Tensor(shape: outShape, ints: ints, dtype: x.dtype).normalized()]
    default:
      var out = [Int64](repeating: integerIdentity(x.dtype), count: outCount)
      // uint64 orders as signed once its sign bit is flipped.
      let flip = x.dtype == .uint64 && (kind == .max || kind == .min)
      let source = flip ? x.ints.map { $0 ^ Int64.min } : x.ints
      source.withUnsafeBufferPointer { source in
        out.withUnsafeMutableBufferPointer { target in reduceInts(source, target, plan) }
      }
      if flip { out = out.map { $0 ^ Int64.min } }
      return [Tensor(shape: outShape, ints: out, dtype: x.dtype).normalized()]
    }
  }

  /// Which axes of a `rank`-dim input the node reduces. With noop_with_empty_axes and no axes
  /// nothing is reduced, but each element still goes through the operation (ReduceL1 gives |x|,
  /// ReduceSumSquare x^2), as onnxruntime computes it.
  private func reducedAxes(_ rank: Int, _ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Bool] {
    var requested = axes ?? []
    if inputs.count > 1, let axesInput = inputs[1] {
      guard !axesInput.isFloat else { throw context.error("input axes is \(axesInput.dtype), expected int64") }
      requested = axesInput.ints.map { Int(clamping: $0) }
    }
    var reduced = [Bool](repeating: requested.isEmpty && !noopWithEmptyAxes, count: rank)
    for axis in requested {
      guard axis >= -rank && axis < rank else {
        throw context.error("axis \(axis) is out of range for input data of rank \(rank)")
      }
      reduced[axis < 0 ? axis + rank : axis] = true
    }
    return reduced
  }

  private func identity() -> Float {
    switch kind {
    case .prod: return 1
    case .max, .logSumExp: return -.infinity
    case .min: return .infinity
    default: return 0
    }
  }

  private func integerIdentity(_ dtype: DataType) -> Int64 {
    switch kind {
    case .prod: return 1
    case .max:
      switch dtype {
      case .int8: return Int64(Int8.min)
      case .int16: return Int64(Int16.min)
      case .int32: return Int64(Int32.min)
      case .uint8, .uint16, .uint32, .bool: return 0
      default: return Int64.min  // int64, and uint64 whose sign bit is flipped
      }
    case .min:
      switch dtype {
      case .int8: return Int64(Int8.max)
      case .int16: return Int64(Int16.max)
      case .int32: return Int64(Int32.max)
      case .uint8: return Int64(UInt8.max)
      case .uint16: return Int64(UInt16.max)
      case .uint32: return Int64(UInt32.max)
      case .bool: return 1
      default: return Int64.max
      }
    default: return 0
    }
  }

  private func reduceFloats(_ x: UnsafeBufferPointer<Float>, _ out: UnsafeMutableBufferPointer<Float>, _ plan: ReductionPlan) {
    let count = Float(plan.reducedCount)
    switch kind {
    case .sum, .mean:
      plan.accumulate(FloatSum.self, x, out)
      if kind == .mean && count > 0 { for i in out.indices { out[i] /= count } }
    case .l1: plan.accumulate(FloatAbsoluteSum.self, x, out)
    case .l2:
      plan.accumulate(FloatSquareSum.self, x, out)
      for i in out.indices { out[i] = out[i].squareRoot() }
    case .sumSquare: plan.accumulate(FloatSquareSum.self, x, out)
    case .logSum:
      plan.accumulate(FloatSum.self, x, out)
      for i in out.indices { out[i] = log(out[i]) }
    case .prod: plan.accumulate(FloatProduct.self, x, out)
    case .max: plan.accumulate(FloatMaximum.self, x, out)
    case .min: plan.accumulate(FloatMinimum.self, x, out)
    case .logSumExp:
      plan.accumulate(FloatMaximum.self, x, out)
      // Shift by the maximum for stability (by 0 where the maximum is infinite).
      let shifts = out.map { $0.isFinite ? $0 : 0 }
      for i in out.indices { out[i] = 0 }
      shifts.withUnsafeBufferPointer { shift in
        plan.forEachSlab { dims, inputBase, outputBase in
          Broadcast.forEachRow(dims, plan.inputStrides, plan.outputStrides) { _, input, output, count, _, step in
            let input = inputBase + input, output = outputBase + output
            if step == 0 {
              let m = shift[output]
              var sum = out[output]
              for k in 0..<count { sum += exp(x[input + k] - m) }
              out[output] = sum
            } else {
              for k in 0..<count { out[output + k] += exp(x[input + k] - shift[output + k]) }
            }
          }
        }
        for i in out.indices { out[i] = log(out[i]) + shift[i] }
      }
    }
  }

  private func reduceInts(_ x: UnsafeBufferPointer<Int64>, _ out: UnsafeMutableBufferPointer<Int64>, _ plan: ReductionPlan) {
    switch kind {
    case .sum, .mean:
      plan.accumulate(IntegerSum.self, x, out)
      if kind == .mean {
        let count = Int64(plan.reducedCount)
        for i in out.indices { out[i] = count == 0 ? 0 : out[i] / count }
      }
    case .l1: plan.accumulate(IntegerAbsoluteSum.self, x, out)
    case .sumSquare: plan.accumulate(IntegerSquareSum.self, x, out)
    case .prod: plan.accumulate(IntegerProduct.self, x, out)
    case .max: plan.accumulate(IntegerMaximum.self, x, out)
    case .min: plan.accumulate(IntegerMinimum.self, x, out)
    default: break
    }
  }
}

/// One reduction as static functions, so that the kernels specialize per operation:
/// `acc = combine(acc, map(x))` over the reduced elements.
private protocol ReductionOperation {
  associatedtype Value
  static func map(_ x: Value) -> Value
  static func combine(_ a: Value, _ b: Value) -> Value
  /// Folds `count` contiguous values into `acc`.
  static func fold(_ x: UnsafePointer<Value>, _ count: Int, _ acc: Value) -> Value
}

extension ReductionOperation {
  @inline(__always)
  static func fold(_ x: UnsafePointer<Value>, _ count: Int, _ acc: Value) -> Value {
    var acc = acc
    for k in 0..<count { acc = combine(acc, map(x[k])) }
    return acc
  }
}

/// Sums `map(x)` over a contiguous run eight lanes at a time.
@inline(__always)
private func simdSum(
  _ x: UnsafePointer<Float>, _ count: Int, _ acc: Float, _ map: (SIMD8<Float>) -> SIMD8<Float>, _ scalar: (Float) -> Float
) -> Float {
  var lanes = SIMD8<Float>(repeating: 0)
  var k = 0
  while k + 8 <= count {
    lanes += map(UnsafeRawPointer(x + k).loadUnaligned(as: SIMD8<Float>.self))
    k += 8
  }
  var sum = acc + lanes.sum()
  while k < count {
    sum += scalar(x[k])
    k += 1
  }
  return sum
}

private enum FloatSum: ReductionOperation {
  static func map(_ x: Float) -> Float { x }
  static func combine(_ a: Float, _ b: Float) -> Float { a + b }
  static func fold(_ x: UnsafePointer<Float>, _ count: Int, _ acc: Float) -> Float { simdSum(x, count, acc, { $0 }, { $0 }) }
}

private enum FloatAbsoluteSum: ReductionOperation {
  static func map(_ x: Float) -> Float { abs(x) }
  static func combine(_ a: Float, _ b: Float) -> Float { a + b }
  static func fold(_ x: UnsafePointer<Float>, _ count: Int, _ acc: Float) -> Float {
    simdSum(x, count, acc, { $0.replacing(with: -$0, where: $0 .< 0) }, { abs($0) })
  }
}

private enum FloatSquareSum: ReductionOperation {
  static func map(_ x: Float) -> Float { x * x }
  static func combine(_ a: Float, _ b: Float) -> Float { a + b }
  static func fold(_ x: UnsafePointer<Float>, _ count: Int, _ acc: Float) -> Float { simdSum(x, count, acc, { $0 * $0 }, { $0 * $0 }) }
}

private enum FloatProduct: ReductionOperation {
  static func map(_ x: Float) -> Float { x }
  static func combine(_ a: Float, _ b: Float) -> Float { a * b }
}

/// Maximum that propagates NaN.
private enum FloatMaximum: ReductionOperation {
  static func map(_ x: Float) -> Float { x }
  static func combine(_ a: Float, _ b: Float) -> Float { b > a || b.isNaN ? b : a }
}

/// Minimum that propagates NaN.
private enum FloatMinimum: ReductionOperation {
  static func map(_ x: Float) -> Float { x }
  static func combine(_ a: Float, _ b: Float) -> Float { b < a || b.isNaN ? b : a }
}

private enum IntegerSum: ReductionOperation {
  static func map(_ x: Int64) -> Int64 { x }
  static func combine(_ a: Int64, _ b: Int64) -> Int64 { a &+ b }
}

private enum IntegerAbsoluteSum: ReductionOperation {
  static func map(_ x: Int64) -> Int64 { x < 0 ? 0 &- x : x }
  static func combine(_ a: Int64, _ b: Int64) -> Int64 { a &+ b }
}

private enum IntegerSquareSum: ReductionOperation {
  static func map(_ x: Int64) -> Int64 { x &* x }
  static func combine(_ a: Int64, _ b: Int64) -> Int64 { a &+ b }
}

private enum IntegerProduct: ReductionOperation {
  static func map(_ x: Int64) -> Int64 { x }
  static func combine(_ a: Int64, _ b: Int64) -> Int64 { a &* b }
}

private enum IntegerMaximum: ReductionOperation {
  static func map(_ x: Int64) -> Int64 { x }
  static func combine(_ a: Int64, _ b: Int64) -> Int64 { max(a, b) }
}

private enum IntegerMinimum: ReductionOperation {
  static func map(_ x: Int64) -> Int64 { x }
  static func combine(_ a: Int64, _ b: Int64) -> Int64 { min(a, b) }
}

/// How a row-major tensor walks onto its reduction: the input's dims with unit dims dropped and
/// neighbouring dims of the same kind (reduced or kept) merged, and output strides that are 0
/// along the reduced dims.
private struct ReductionPlan {
  let dims: [Int]
  let inputStrides: [Int]
  let outputStrides: [Int]
  let total: Int
  /// Input elements per output element.
  let reducedCount: Int

  init(_ shape: [Int], _ reduced: [Bool]) {
    var dims: [Int] = [], flags: [Bool] = []
    var reducedCount = 1
    for (axis, dim) in shape.enumerated() {
      if reduced[axis] { reducedCount *= dim }
      if dim == 1 { continue }
      if let last = flags.last, last == reduced[axis] {
        dims[dims.count - 1] *= dim
      } else {
        dims.append(dim)
        flags.append(reduced[axis])
      }
    }
    if dims.isEmpty { (dims, flags) = ([1], [false]) }
    self.dims = dims
    self.reducedCount = reducedCount
    total = dims.reduce(1, *)
    inputStrides = Tensor.strides(of: dims)
    var outputStrides = [Int](repeating: 0, count: dims.count)
    var running = 1
    for axis in stride(from: dims.count - 1, through: 0, by: -1) where !flags[axis] {
      outputStrides[axis] = running
      running *= dims[axis]
    }
    self.outputStrides = outputStrides
  }

  /// Splits the walk into slabs along the first dim when it is kept (so slabs write disjoint
  /// outputs) and runs them on every core: `body(dims, inputBase, outputBase)` walks one slab.
  func forEachSlab(_ body: (_ dims: [Int], _ inputBase: Int, _ outputBase: Int) -> Void) {
    guard total > 0 else { return }
    let rows = dims[0]
    guard outputStrides[0] != 0 && rows > 1 else { return body(dims, 0, 0) }
    let inputStride = inputStrides[0], outputStride = outputStrides[0]
    Parallel.forEachRange(rows, work: total) { range in
      var slab = dims
      slab[0] = range.count
      body(slab, range.lowerBound * inputStride, range.lowerBound * outputStride)
    }
  }

  /// `out[o] = combine(out[o], map(x[i]))` over every input element `i` reducing into `o`.
  func accumulate<Operation: ReductionOperation>(
    _: Operation.Type, _ x: UnsafeBufferPointer<Operation.Value>, _ out: UnsafeMutableBufferPointer<Operation.Value>
  ) {
    guard let source = x.baseAddress, let target = out.baseAddress else { return }
    forEachSlab { dims, inputBase, outputBase in
      Broadcast.forEachRow(dims, inputStrides, outputStrides) { _, input, output, count, _, step in
        let x = source + inputBase + input, out = target + outputBase + output
        if step == 0 {
          out[0] = Operation.fold(x, count, out[0])
        } else {
          for k in 0..<count { out[k] = Operation.combine(out[k], Operation.map(x[k])) }
        }
      }
    }
  }
}

/// `Softmax`, `LogSoftmax` and `Hardmax`. Before opset 13 the input is read as a 2D matrix split
/// at `axis` (default 1) and each row is normalized; from opset 13 the op runs along `axis`
/// (default -1). Hardmax sets the first maximum of each slice to 1 and the rest to 0.
struct Softmax: Operator {
  enum Kind { case softmax, logSoftmax, hardmax }

  let kind: Kind
  let axis: Int
  let flattens: Bool

  init(_ node: Node, _ setup: OperatorSetup) throws {
    switch node.opType {
    case "Softmax": kind = .softmax
    case "LogSoftmax": kind = .logSoftmax
    default: kind = .hardmax
    }
    flattens = setup.opset < 13
    axis = node.intAttribute("axis") ?? (flattens ? 1 : -1)
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "input")
    guard x.isFloat else { throw context.error("input is \(x.dtype); \(kind) needs a floating-point tensor") }
    let (outer, n, inner) = try slices(x.shape, context)
    guard x.count > 0 else { return [x] }
    let kind = self.kind
    // Softmax and LogSoftmax write every element; Hardmax only its ones.
    var y = kind == .hardmax ? [Float](repeating: 0, count: x.count) : [Float](unsafeUninitializedCapacity: x.count) { $1 = x.count }
    x.floats.withUnsafeBufferPointer { xs in
      y.withUnsafeMutableBufferPointer { ys in
        let source = xs.baseAddress!, target = ys.baseAddress!
        let block = n * inner
        if inner == 1 {
          Parallel.forEachRange(outer, work: x.count) { range in
            for row in range { Softmax.row(kind, source + row * n, target + row * n, n) }
          }
          return
        }
        // Strided slices: tasks are (block, column range) pairs, so few large blocks still split.
        let columnChunks = Swift.max(1, Swift.min(inner / 64, (Parallel.threads * 4 + outer - 1) / outer))
        Parallel.forEachRange(outer * columnChunks, work: x.count) { range in
          var scratch = [Float](repeating: 0, count: 2 * (inner / columnChunks + 1))
          scratch.withUnsafeMutableBufferPointer { scratch in
            for task in range {
              let b = task / columnChunks, chunk = task % columnChunks
              let first = inner * chunk / columnChunks, end = inner * (chunk + 1) / columnChunks
              let offset = b * block + first
              Softmax.strided(kind, source + offset, target + offset, n, end - first, inner, scratch.baseAddress!)
            }
          }
        }
      }
    }
    return [Tensor(shape: x.shape, floats: y, dtype: x.dtype).normalized()]
  }

  /// How `shape` splits into slices: `outer` blocks of `n` values `inner` apart (the 2D coercion
  /// before opset 13 makes every slice contiguous).
  private func slices(_ shape: [Int], _ context: ExecutionContext) throws -> (outer: Int, n: Int, inner: Int) {
    let rank = shape.count
    var axis = self.axis
    if flattens {
      guard axis >= -rank && axis <= rank else { throw context.error("axis \(axis) is out of range for input of rank \(rank)") }
    } else {
      guard (axis >= -rank && axis < rank) || (rank == 0 && (axis == 0 || axis == -1)) else {
        throw context.error("axis \(axis) is out of range for input of rank \(rank)")
      }
    }
    if axis < 0 { axis += rank }
    axis = Swift.min(axis, rank)
    let outer = shape[..<axis].reduce(1, *)
    if flattens || rank == 0 { return (outer, shape[axis...].reduce(1, *), 1) }
    return (outer, shape[axis], shape[(axis + 1)...].reduce(1, *))
  }

  /// One contiguous slice of `n` values.
  @inline(__always)
  private static func row(_ kind: Kind, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    if kind == .hardmax {
      var maximum = x[0], argmax = 0
      for j in 1..<Swift.max(n, 1) where x[j] > maximum {
        maximum = x[j]
        argmax = j
      }
      y[argmax] = 1
      return
    }
    var lanes = SIMD8<Float>(repeating: -.infinity)
    var j = 0
    while j + 8 <= n {
      let v = UnsafeRawPointer(x + j).loadUnaligned(as: SIMD8<Float>.self)
      lanes.replace(with: v, where: v .> lanes)
      j += 8
    }
    var maximum = lanes.max()
    while j < n {
      if x[j] > maximum { maximum = x[j] }
      j += 1
    }
    switch kind {
    case .softmax:
      let scale = 1 / exponentials(x, maximum, y, n)
      for j in 0..<n { y[j] *= scale }
    case .logSoftmax:
      let shift = maximum + log(exponentials(x, maximum, nil, n))
      for j in 0..<n { y[j] = x[j] - shift }
    case .hardmax: break
    }
  }

  /// `width` columns of `n` rows `stride` apart, each column normalized, using `2 * width` floats
  /// of scratch.
  @inline(__always)
  private static func strided(
    _ kind: Kind, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int, _ width: Int, _ stride: Int,
    _ scratch: UnsafeMutablePointer<Float>
  ) {
    let maximum = scratch, sum = scratch + width
    for i in 0..<width { maximum[i] = x[i] }
    if kind == .hardmax {
      // `sum` holds the index of the first maximum.
      for i in 0..<width { sum[i] = 0 }
      for j in 1..<Swift.max(n, 1) {
        let row = x + j * stride
        for i in 0..<width where row[i] > maximum[i] {
          maximum[i] = row[i]
          sum[i] = Float(j)
        }
      }
      for i in 0..<width { y[Int(sum[i]) * stride + i] = 1 }
      return
    }
    for j in 1..<Swift.max(n, 1) {
      let row = x + j * stride
      for i in 0..<width where row[i] > maximum[i] { maximum[i] = row[i] }
    }
    for i in 0..<width { sum[i] = 0 }
    if kind == .softmax {
      for j in 0..<n { columnExponentials(x + j * stride, maximum, y + j * stride, sum, width) }
      for i in 0..<width { sum[i] = 1 / sum[i] }
      for j in 0..<n {
        let out = y + j * stride
        for i in 0..<width { out[i] *= sum[i] }
      }
    } else {
      for j in 0..<n { columnExponentials(x + j * stride, maximum, nil, sum, width) }
      for i in 0..<width { sum[i] = maximum[i] + log(sum[i]) }
      for j in 0..<n {
        let row = x + j * stride, out = y + j * stride
        for i in 0..<width { out[i] = row[i] - sum[i] }
      }
    }
  }

  /// Stores `exp(x[k] - shift)` into `y` (when given) and returns their sum.
  @inline(__always)
  private static func exponentials(_ x: UnsafePointer<Float>, _ shift: Float, _ y: UnsafeMutablePointer<Float>?, _ count: Int) -> Float {
    var lanes = SIMD8<Float>(repeating: 0)
    var k = 0
    while k + 8 <= count {
      let e = exp8(UnsafeRawPointer(x + k).loadUnaligned(as: SIMD8<Float>.self) - shift)
      if let y { UnsafeMutableRawPointer(y + k).storeBytes(of: e, as: SIMD8<Float>.self) }
      lanes += e
      k += 8
    }
    if k < count {
      // The tail runs as one padded vector: -inf lanes contribute exp(-inf) = 0.
      var v = SIMD8<Float>(repeating: -.infinity)
      for l in 0..<(count - k) { v[l] = x[k + l] }
      let e = exp8(v - shift)
      if let y { for l in 0..<(count - k) { y[k + l] = e[l] } }
      lanes += e
    }
    return lanes.sum()
  }

  /// Stores `exp(x[k] - shift[k])` into `y` (when given) and adds it to `sum[k]`.
  @inline(__always)
  private static func columnExponentials(
    _ x: UnsafePointer<Float>, _ shift: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>?,
    _ sum: UnsafeMutablePointer<Float>, _ count: Int
  ) {
    var k = 0
    while k + 8 <= count {
      let v = UnsafeRawPointer(x + k).loadUnaligned(as: SIMD8<Float>.self)
      let e = exp8(v - UnsafeRawPointer(shift + k).loadUnaligned(as: SIMD8<Float>.self))
      if let y { UnsafeMutableRawPointer(y + k).storeBytes(of: e, as: SIMD8<Float>.self) }
      let s = UnsafeRawPointer(sum + k).loadUnaligned(as: SIMD8<Float>.self)
      UnsafeMutableRawPointer(sum + k).storeBytes(of: s + e, as: SIMD8<Float>.self)
      k += 8
    }
    if k < count {
      var v = SIMD8<Float>(repeating: 0)
      for l in 0..<(count - k) { v[l] = x[k + l] - shift[k + l] }
      let e = exp8(v)
      for l in 0..<(count - k) {
        y?[k + l] = e[l]
        sum[k + l] += e[l]
      }
    }
  }
}

/// e^x in eight lanes: Cephes' expf polynomial after reducing by multiples of ln 2 (relative
/// error about 1e-7). Inputs below -87.3 give 0, above 88.4 give e^88.4.
@inline(__always)
private func exp8(_ v: SIMD8<Float>) -> SIMD8<Float> {
  var x = v
  x.replace(with: -87.33654, where: x .< -87.33654)
  x.replace(with: 88.37626, where: x .> 88.37626)
  // t holds round(x / ln 2) in its low mantissa bits.
  let shifter = SIMD8<Float>(repeating: 12582912)
  let t = x * 1.44269504088896341 + shifter
  let n = t - shifter
  let r = x - n * 0.693359375 + n * 2.12194440e-4
  var p = 1.9875691500e-4 * r + 1.3981999507e-3
  p = p * r + 8.3334519073e-3
  p = p * r + 4.1665795894e-2
  p = p * r + 1.6666665459e-1
  p = p * r + 5.0000001201e-1
  p = p * (r * r) + r + 1
  let exponent = (unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
  var result = p * unsafeBitCast(exponent, to: SIMD8<Float>.self)
  result.replace(with: 0, where: v .< -87.33654)
  return result
}

// MARK: - Gradients

extension Reduce: DifferentiableOperator {
  /// Each input element gets its output's gradient times d output / d element. ReduceMax and
  /// ReduceMin split the gradient evenly among the elements equal to the result (as PyTorch's
  /// amax/amin). ReduceProd is exact with zeros: with one zero in a slice only that element gets
  /// a gradient (the product of the others), with two or more none does.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    let rest = inputs.dropFirst().map { _ -> Tensor? in nil }
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat, dy.isFloat, outputs[0].isFloat else { return [nil] + rest }
    let plan = ReductionPlan(x.shape, try reducedAxes(x.rank, inputs, context))
    var dx = [Float](repeating: 0, count: x.count)
    x.floats.withUnsafeBufferPointer { xs in
      outputs[0].floats.withUnsafeBufferPointer { ys in
        dy.floats.withUnsafeBufferPointer { gs in
          dx.withUnsafeMutableBufferPointer { dxs in
            gradient(xs.baseAddress!, ys.baseAddress!, gs.baseAddress!, dxs.baseAddress!, outputCount: dy.count, plan)
          }
        }
      }
    }
    return [Tensor(shape: x.shape, floats: dx, dtype: x.dtype)] + rest
  }

  /// Writes `dx` for input `x`, output `y` and its gradient `g` (`outputCount` values each).
  private func gradient(
    _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ g: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
    outputCount: Int, _ plan: ReductionPlan
  ) {
    /// Runs of `count` input elements from `i` whose outputs are `o + k * step`, slabs on every core.
    @inline(__always) func rows(_ body: (_ i: Int, _ o: Int, _ count: Int, _ step: Int) -> Void) {
      plan.forEachSlab { dims, inputBase, outputBase in
        Broadcast.forEachRow(dims, plan.inputStrides, plan.outputStrides) { _, input, output, count, _, step in
          body(inputBase + input, outputBase + output, count, step)
        }
      }
    }
    switch kind {
    case .sum, .mean:
      let scale: Float = kind == .mean ? 1 / Float(Swift.max(plan.reducedCount, 1)) : 1
      rows { i, o, count, step in for k in 0..<count { dx[i + k] = g[o + k * step] * scale } }
    case .sumSquare:
      rows { i, o, count, step in for k in 0..<count { dx[i + k] = 2 * x[i + k] * g[o + k * step] } }
    case .l1:
      rows { i, o, count, step in
        for k in 0..<count {
          let v = x[i + k]
          dx[i + k] = v > 0 ? g[o + k * step] : (v < 0 ? -g[o + k * step] : 0)
        }
      }
    case .l2:
      rows { i, o, count, step in
        for k in 0..<count {
          let norm = y[o + k * step]
          dx[i + k] = norm > 0 ? g[o + k * step] * x[i + k] / norm : 0
        }
      }
    case .logSum:
      rows { i, o, count, step in for k in 0..<count { dx[i + k] = g[o + k * step] / exp(y[o + k * step]) } }
    case .logSumExp:
      rows { i, o, count, step in for k in 0..<count { dx[i + k] = g[o + k * step] * exp(x[i + k] - y[o + k * step]) } }
    case .max, .min:
      var ties = [Float](repeating: 0, count: outputCount)
      ties.withUnsafeMutableBufferPointer { ties in
        let ties = ties.baseAddress!
        rows { i, o, count, step in
          for k in 0..<count where x[i + k] == y[o + k * step] { ties[o + k * step] += 1 }
        }
        rows { i, o, count, step in
          for k in 0..<count where x[i + k] == y[o + k * step] { dx[i + k] = g[o + k * step] / ties[o + k * step] }
        }
      }
    case .prod:
      // Per output: how many zeros its slice holds and the product of the other elements.
      var zeros = [Int32](repeating: 0, count: outputCount), products = [Float](repeating: 1, count: outputCount)
      zeros.withUnsafeMutableBufferPointer { zeros in
        products.withUnsafeMutableBufferPointer { products in
          let zeros = zeros.baseAddress!, products = products.baseAddress!
          rows { i, o, count, step in
            for k in 0..<count {
              let v = x[i + k]
              if v == 0 { zeros[o + k * step] += 1 } else { products[o + k * step] *= v }
            }
          }
          rows { i, o, count, step in
            for k in 0..<count {
              let out = o + k * step, v = x[i + k]
              switch zeros[out] {
              case 0: dx[i + k] = g[out] * products[out] / v
              case 1: dx[i + k] = v == 0 ? g[out] * products[out] : 0
              default: dx[i + k] = 0
              }
            }
          }
        }
      }
    }
  }
}

extension Softmax: DifferentiableOperator {
  /// Softmax: `dx = y * (dy - sum(dy * y))`; LogSoftmax: `dx = dy - exp(y) * sum(dy)`, sums over
  /// each slice. Hardmax is piecewise constant: no gradient flows through it.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard kind != .hardmax, let dy = outputGradients[0], let x = inputs[0], x.isFloat, x.count > 0 else { return [nil] }
    let (outer, n, inner) = try slices(x.shape, context)
    let kind = self.kind
    var dx = [Float](unsafeUninitializedCapacity: x.count) { $1 = x.count }
    outputs[0].floats.withUnsafeBufferPointer { ys in
      dy.floats.withUnsafeBufferPointer { gs in
        dx.withUnsafeMutableBufferPointer { dxs in
          let y = ys.baseAddress!, g = gs.baseAddress!, d = dxs.baseAddress!
          if inner == 1 {
            Parallel.forEachRange(outer, work: x.count) { range in
              for row in range { Softmax.rowGradient(kind, y + row * n, g + row * n, d + row * n, n) }
            }
            return
          }
          let columnChunks = Swift.max(1, Swift.min(inner / 64, (Parallel.threads * 4 + outer - 1) / outer))
          Parallel.forEachRange(outer * columnChunks, work: x.count) { range in
            var sums = [Float](repeating: 0, count: inner / columnChunks + 1)
            sums.withUnsafeMutableBufferPointer { sums in
              for task in range {
                let b = task / columnChunks, chunk = task % columnChunks
                let first = inner * chunk / columnChunks, end = inner * (chunk + 1) / columnChunks
                let offset = b * n * inner + first
                Softmax.stridedGradient(kind, y + offset, g + offset, d + offset, n, end - first, inner, sums.baseAddress!)
              }
            }
          }
        }
      }
    }
    return [Tensor(shape: x.shape, floats: dx, dtype: x.dtype)]
  }

  @inline(__always)
  private static func rowGradient(
    _ kind: Kind, _ y: UnsafePointer<Float>, _ g: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ n: Int
  ) {
    var sum: Float = 0
    if kind == .softmax {
      for j in 0..<n { sum += g[j] * y[j] }
      for j in 0..<n { dx[j] = y[j] * (g[j] - sum) }
    } else {
      for j in 0..<n { sum += g[j] }
      for j in 0..<n { dx[j] = g[j] - exp(y[j]) * sum }
    }
  }

  /// `width` columns of `n` rows `stride` apart, with `width` floats of scratch.
  @inline(__always)
  private static func stridedGradient(
    _ kind: Kind, _ y: UnsafePointer<Float>, _ g: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, _ n: Int,
    _ width: Int, _ stride: Int, _ sum: UnsafeMutablePointer<Float>
  ) {
    for i in 0..<width { sum[i] = 0 }
    if kind == .softmax {
      for j in 0..<n {
        let yr = y + j * stride, gr = g + j * stride
        for i in 0..<width { sum[i] += gr[i] * yr[i] }
      }
      for j in 0..<n {
        let yr = y + j * stride, gr = g + j * stride, dr = dx + j * stride
        for i in 0..<width { dr[i] = yr[i] * (gr[i] - sum[i]) }
      }
    } else {
      for j in 0..<n {
        let gr = g + j * stride
        for i in 0..<width { sum[i] += gr[i] }
      }
      for j in 0..<n {
        let yr = y + j * stride, gr = g + j * stride, dr = dx + j * stride
        for i in 0..<width { dr[i] = gr[i] - exp(yr[i]) * sum[i] }
      }
    }
  }
}
