import Foundation

// Indexing operators: gathers and scatters by index tensors, NonZero, TopK, ArgMax/ArgMin,
// CumSum and Einsum. Index inputs may be negative (counted from the end of their axis); an index
// out of range is an error naming the input. Specs: https://onnx.ai/onnx/operators/.

let indexingOperators: [(String, any Operator.Type)] = [
  ("ArgMax", ArgExtreme.self), ("ArgMin", ArgExtreme.self), ("CumSum", CumSum.self), ("Einsum", Einsum.self),
  ("Gather", Gather.self), ("GatherElements", GatherElements.self), ("GatherND", GatherND.self),
  ("NonZero", NonZero.self), ("Scatter", ScatterElements.self), ("ScatterElements", ScatterElements.self),
  ("ScatterND", ScatterND.self), ("TopK", TopK.self),
]

/// `Gather`: slices of `data` along `axis` picked by `indices`; the output shape is
/// `data.shape[..<axis] + indices.shape + data.shape[(axis+1)...]`
/// (https://onnx.ai/onnx/operators/onnx__Gather.html).
struct Gather: Operator {
  let axis: Int

  init(_ node: Node, _ setup: OperatorSetup) throws { axis = node.intAttribute("axis") ?? 0 }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let data = try context.input(inputs, 0, "data"), indices = try context.input(inputs, 1, "indices")
    let axis = try Indexing.axis(self.axis, rank: data.rank, "axis", context)
    let dim = data.shape[axis]
    let picks = try Indexing.positions(indices, size: dim, "indices", context)
    let shape = Array(data.shape[..<axis]) + indices.shape + Array(data.shape[(axis + 1)...])
    try context.checkAllocation(shape, elementBytes: data.isFloat ? 4 : 8)
    let outer = data.shape[..<axis].reduce(1, *), inner = data.shape[(axis + 1)...].reduce(1, *)
    if data.isFloat { return [Tensor(shape: shape, floats: Gather.blocks(data.floats, outer, dim, inner, picks), dtype: data.dtype)] }
    return [Tensor(shape: shape, ints: Gather.blocks(data.ints, outer, dim, inner, picks), dtype: data.dtype)]
  }

  /// For each outer block, the `inner`-long rows `picks` of its `dim` rows.
  static func blocks<T>(_ values: [T], _ outer: Int, _ dim: Int, _ inner: Int, _ picks: [Int]) -> [T] {
    let total = outer * picks.count * inner
    guard total > 0 else { return [] }
    return [T](unsafeUninitializedCapacity: total) { out, initialized in
      values.withUnsafeBufferPointer { source in
        let src = source.baseAddress!, dst = out.baseAddress!
        Parallel.forEachRange(outer * picks.count, work: total) { range in
          for row in range {
            let o = row / picks.count, pick = picks[row % picks.count]
            (dst + row * inner).initialize(from: src + (o * dim + pick) * inner, count: inner)
          }
        }
      }
      initialized = total
    }
  }
}

/// `GatherElements`: `out[i] = data[i with i[axis] replaced by indices[i]]`, shaped like `indices`
/// (https://onnx.ai/onnx/operators/onnx__GatherElements.html).
struct GatherElements: Operator {
  let axis: Int

  init(_ node: Node, _ setup: OperatorSetup) throws { axis = node.intAttribute("axis") ?? 0 }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let data = try context.input(inputs, 0, "data"), indices = try context.input(inputs, 1, "indices")
    let axis = try Indexing.axis(self.axis, rank: data.rank, "axis", context)
    try Indexing.checkElementwise(indices, "indices", against: data, axis: axis, context)
    let picks = try Indexing.positions(indices, size: data.shape[axis], "indices", context)
    let offsets = Indexing.elementOffsets(indices.shape, data.strides, axis: axis, picks)
    if data.isFloat {
      return [Tensor(shape: indices.shape, floats: data.floats.withUnsafeBufferPointer { s in offsets.map { s[$0] } }, dtype: data.dtype)]
    }
    return [Tensor(shape: indices.shape, ints: data.ints.withUnsafeBufferPointer { s in offsets.map { s[$0] } }, dtype: data.dtype)]
  }
}

/// `GatherND`: slices of `data` addressed by the last dim of `indices`, the first `batch_dims`
/// dims shared by both (https://onnx.ai/onnx/operators/onnx__GatherND.html).
struct GatherND: Operator {
  let batchDims: Int

  init(_ node: Node, _ setup: OperatorSetup) throws { batchDims = node.intAttribute("batch_dims") ?? 0 }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let data = try context.input(inputs, 0, "data"), indices = try context.input(inputs, 1, "indices")
    let plan = try Indexing.NDPlan(data: data, indices: indices, batchDims: batchDims, context)
    let shape = Array(indices.shape.dropLast()) + Array(data.shape[(batchDims + plan.depth)...])
    try context.checkAllocation(shape, elementBytes: data.isFloat ? 4 : 8)
    if data.isFloat { return [Tensor(shape: shape, floats: GatherND.copy(data.floats, plan), dtype: data.dtype)] }
    return [Tensor(shape: shape, ints: GatherND.copy(data.ints, plan), dtype: data.dtype)]
  }

  fileprivate static func copy<T>(_ values: [T], _ plan: Indexing.NDPlan) -> [T] {
    let total = plan.offsets.count * plan.slice
    guard total > 0 else { return [] }
    return [T](unsafeUninitializedCapacity: total) { out, initialized in
      values.withUnsafeBufferPointer { source in
        for (index, offset) in plan.offsets.enumerated() {
          (out.baseAddress! + index * plan.slice).initialize(from: source.baseAddress! + offset, count: plan.slice)
        }
      }
      initialized = total
    }
  }
}

/// How ScatterND and ScatterElements combine an update with the value already there.
private enum ScatterReduction: String {
  case none, add, mul, max, min

  init(_ node: Node, _ setup: OperatorSetup) throws {
    let name = node.stringAttribute("reduction") ?? "none"
    guard let reduction = ScatterReduction(rawValue: name) else {
      throw setup.error("attribute reduction '\(name)' is not none, add, mul, max or min")
    }
    self = reduction
  }

  /// Applies `updates[k]` at `values[offsets[k] + j]` for every j below `slice`.
  func apply<T: Numeric & Comparable>(_ values: inout [T], _ updates: [T], _ offsets: [Int], slice: Int) {
    values.withUnsafeMutableBufferPointer { target in
      updates.withUnsafeBufferPointer { source in
        for (k, offset) in offsets.enumerated() {
          let from = k * slice
          switch self {
          case .none: for j in 0..<slice { target[offset + j] = source[from + j] }
          case .add: for j in 0..<slice { target[offset + j] += source[from + j] }
          case .mul: for j in 0..<slice { target[offset + j] *= source[from + j] }
          case .max: for j in 0..<slice { target[offset + j] = Swift.max(target[offset + j], source[from + j]) }
          case .min: for j in 0..<slice { target[offset + j] = Swift.min(target[offset + j], source[from + j]) }
          }
        }
      }
    }
  }
}

/// `ScatterND`: a copy of `data` with the slices addressed by `indices` set (or combined by
/// `reduction`) from `updates` (https://onnx.ai/onnx/operators/onnx__ScatterND.html).
struct ScatterND: Operator {
  private let reduction: ScatterReduction

  init(_ node: Node, _ setup: OperatorSetup) throws { reduction = try ScatterReduction(node, setup) }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    var data = try context.input(inputs, 0, "data")
    let indices = try context.input(inputs, 1, "indices"), updates = try context.input(inputs, 2, "updates")
    let plan = try Indexing.NDPlan(data: data, indices: indices, batchDims: 0, context)
    let expected = Array(indices.shape.dropLast()) + Array(data.shape[plan.depth...])
    guard updates.shape == expected else {
      throw context.error("input updates \(updates.shapeDescription) should be \(expected) for data \(data.shapeDescription) and indices \(indices.shapeDescription)")
    }
    guard updates.isFloat == data.isFloat else { throw context.error("input updates is \(updates.dtype), data is \(data.dtype)") }
    if data.isFloat {
      reduction.apply(&data.floats, updates.floats, plan.offsets, slice: plan.slice)
    } else {
      reduction.apply(&data.ints, updates.ints, plan.offsets, slice: plan.slice)
    }
    return [data.normalized()]
  }
}

/// `ScatterElements` (and the deprecated `Scatter`): a copy of `data` with
/// `out[i with i[axis] = indices[i]] = updates[i]`, or combined by `reduction`
/// (https://onnx.ai/onnx/operators/onnx__ScatterElements.html).
struct ScatterElements: Operator {
  let axis: Int
  private let reduction: ScatterReduction

  init(_ node: Node, _ setup: OperatorSetup) throws {
    axis = node.intAttribute("axis") ?? 0
    reduction = try ScatterReduction(node, setup)
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    var data = try context.input(inputs, 0, "data")
    let indices = try context.input(inputs, 1, "indices"), updates = try context.input(inputs, 2, "updates")
    let axis = try Indexing.axis(self.axis, rank: data.rank, "axis", context)
    guard updates.shape == indices.shape else {
      throw context.error("input updates \(updates.shapeDescription) and indices \(indices.shapeDescription) differ in shape")
    }
    guard updates.isFloat == data.isFloat else { throw context.error("input updates is \(updates.dtype), data is \(data.dtype)") }
    try Indexing.checkElementwise(indices, "indices", against: data, axis: axis, context)
    let picks = try Indexing.positions(indices, size: data.shape[axis], "indices", context)
    let offsets = Indexing.elementOffsets(indices.shape, data.strides, axis: axis, picks)
    if data.isFloat {
      reduction.apply(&data.floats, updates.floats, offsets, slice: 1)
    } else {
      reduction.apply(&data.ints, updates.ints, offsets, slice: 1)
    }
    return [data.normalized()]
  }
}

/// `NonZero`: the coordinates of the non-zero elements, one column each, as int64 `[rank, count]`
/// (https://onnx.ai/onnx/operators/onnx__NonZero.html).
struct NonZero: Operator {
  init(_ node: Node, _ setup: OperatorSetup) throws {}

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "X")
    let flat: [Int] = x.isFloat ? x.floats.indices.filter { x.floats[$0] != 0 } : x.ints.indices.filter { x.ints[$0] != 0 }
    let count = flat.count, strides = x.strides
    var coordinates = [Int64](repeating: 0, count: x.rank * count)
    for (column, index) in flat.enumerated() {
      for axis in 0..<x.rank { coordinates[axis * count + column] = Int64(index / strides[axis] % x.shape[axis]) }
    }
    return [Tensor(shape: [x.rank, count], ints: coordinates)]
  }
}

/// `TopK`: the `K` largest (or smallest) values along `axis` and their int64 indices, best first,
/// ties broken by the lower index; K from the attribute before opset 10, from the input after
/// (https://onnx.ai/onnx/operators/onnx__TopK.html).
struct TopK: Operator {
  let axis: Int
  let largest: Bool
  let kAttribute: Int?

  init(_ node: Node, _ setup: OperatorSetup) throws {
    axis = node.intAttribute("axis") ?? -1
    largest = (node.intAttribute("largest") ?? 1) != 0
    kAttribute = setup.opset < 10 ? node.intAttribute("k") : nil
    if setup.opset < 10 && kAttribute == nil { throw setup.error("attribute k is missing") }
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "X")
    let axis = try Indexing.axis(self.axis, rank: x.rank, "axis", context)
    let k: Int
    if let kAttribute {
      k = kAttribute
    } else {
      let input = try context.input(inputs, 1, "K")
      guard !input.isFloat, input.count == 1 else { throw context.error("input K \(input.shapeDescription) \(input.dtype) is not one integer") }
      k = Int(input.ints[0])
    }
    let n = x.shape[axis]
    guard k >= 0 && k <= n else { throw context.error("K = \(k) is out of range for axis \(axis) of input X \(x.shapeDescription)") }
    var shape = x.shape
    shape[axis] = k
    let outer = x.shape[..<axis].reduce(1, *), inner = x.shape[(axis + 1)...].reduce(1, *)
    let geometry = (outer: outer, n: n, inner: inner, k: k)
    if x.isFloat {
      let better: (Float, Float) -> Bool = largest ? { $0 > $1 || ($0.isNaN && !$1.isNaN) } : { $0 < $1 || ($1.isNaN && !$0.isNaN) }
      let picks = TopK.select(x.floats, geometry, better)
      let values = x.floats.withUnsafeBufferPointer { s in picks.map { s[$0] } }
      return [Tensor(shape: shape, floats: values, dtype: x.dtype), TopK.indices(picks, geometry, shape)]
    }
    // uint64 sorts as signed after flipping the sign bit.
    let flip: Int64 = x.dtype == .uint64 ? .min : 0
    let keys = flip == 0 ? x.ints : x.ints.map { $0 ^ flip }
    let picks = largest ? TopK.select(keys, geometry, >) : TopK.select(keys, geometry, <)
    let values = x.ints.withUnsafeBufferPointer { s in picks.map { s[$0] } }
    return [Tensor(shape: shape, ints: values, dtype: x.dtype), TopK.indices(picks, geometry, shape)]
  }

  /// Flat input positions of the output elements, in output order.
  static func select<T>(_ values: [T], _ g: (outer: Int, n: Int, inner: Int, k: Int), _ better: (T, T) -> Bool) -> [Int] {
    var picks = [Int](repeating: 0, count: g.outer * g.k * g.inner)
    guard g.k > 0 else { return picks }
    var order = [Int](repeating: 0, count: g.n)
    var slice = [T]()
    slice.reserveCapacity(g.n)
    values.withUnsafeBufferPointer { source in
      for o in 0..<g.outer {
        for i in 0..<g.inner {
          let base = o * g.n * g.inner + i
          func rank(_ v: UnsafeBufferPointer<T>) {
            // a before b when a's value is better, or equal (neither better) with a lower index.
            func precedes(_ a: Int, _ b: Int) -> Bool { better(v[a], v[b]) || (!better(v[b], v[a]) && a < b) }
            order.withUnsafeMutableBufferPointer { order in
              if g.k * 4 >= g.n {
                for j in 0..<g.n { order[j] = j }
                order.sort(by: precedes)
              } else {
                TopK.heapSelect(v, g.k, order, better, precedes)
              }
            }
          }
          if g.inner == 1 {
            rank(UnsafeBufferPointer(rebasing: source[base..<(base + g.n)]))
          } else {
            slice.removeAll(keepingCapacity: true)
            for j in 0..<g.n { slice.append(source[base + j * g.inner]) }
            slice.withUnsafeBufferPointer(rank)
          }
          for j in 0..<g.k { picks[(o * g.k + j) * g.inner + i] = base + order[j] * g.inner }
        }
      }
    }
    return picks
  }

  /// The best `k` of `0..<n` sorted into `order[0..<k]`, through a heap of the k best so far whose
  /// root is the worst of them.
  static func heapSelect<T>(
    _ values: UnsafeBufferPointer<T>, _ k: Int, _ order: UnsafeMutableBufferPointer<Int>, _ better: (T, T) -> Bool,
    _ precedes: (Int, Int) -> Bool
  ) {
    func siftDown(_ start: Int) {
      var parent = start
      while true {
        let left = 2 * parent + 1
        if left >= k { return }
        var worst = left
        if left + 1 < k && precedes(order[worst], order[left + 1]) { worst = left + 1 }
        if !precedes(order[parent], order[worst]) { return }
        order.swapAt(parent, worst)
        parent = worst
      }
    }
    for j in 0..<k { order[j] = j }
    for start in stride(from: k / 2 - 1, through: 0, by: -1) { siftDown(start) }
    // Later indices lose ties, so a newcomer enters only when strictly better than the root.
    var threshold = values[order[0]]
    for j in k..<values.count where better(values[j], threshold) {
      order[0] = j
      siftDown(0)
      threshold = values[order[0]]
    }
    var best = UnsafeMutableBufferPointer(rebasing: order[0..<k])
    best.sort(by: precedes)
  }

  /// The positions along the axis of `picks`, as the int64 Indices output.
  static func indices(_ picks: [Int], _ g: (outer: Int, n: Int, inner: Int, k: Int), _ shape: [Int]) -> Tensor {
    Tensor(shape: shape, ints: picks.map { Int64($0 / g.inner % g.n) })
  }
}

/// `ArgMax` and `ArgMin`: the int64 index of the largest (smallest) element along `axis`, the
/// first one unless `select_last_index`, keeping the axis as size 1 unless `keepdims` is 0
/// (https://onnx.ai/onnx/operators/onnx__ArgMax.html).
struct ArgExtreme: Operator {
  let axis: Int
  let keepDims: Bool
  let selectLast: Bool
  let maximum: Bool

  init(_ node: Node, _ setup: OperatorSetup) throws {
    axis = node.intAttribute("axis") ?? 0
    keepDims = (node.intAttribute("keepdims") ?? 1) != 0
    selectLast = (node.intAttribute("select_last_index") ?? 0) != 0
    maximum = node.opType == "ArgMax"
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "data")
    let axis = try Indexing.axis(self.axis, rank: x.rank, "axis", context)
    let n = x.shape[axis]
    guard n > 0 else { throw context.error("input data \(x.shapeDescription) is empty along axis \(axis)") }
    let outer = x.shape[..<axis].reduce(1, *), inner = x.shape[(axis + 1)...].reduce(1, *)
    var shape = x.shape
    if keepDims { shape[axis] = 1 } else { shape.remove(at: axis) }
    let result: [Int64]
    if x.isFloat {
      result = ArgExtreme.search(x.floats, outer, n, inner, maximum, selectLast)
    } else if x.dtype == .uint64 {
      result = ArgExtreme.search(x.ints.map { $0 ^ .min }, outer, n, inner, maximum, selectLast)
    } else {
      result = ArgExtreme.search(x.ints, outer, n, inner, maximum, selectLast)
    }
    return [Tensor(shape: shape, ints: result)]
  }

  static func search<T: Comparable>(_ values: [T], _ outer: Int, _ n: Int, _ inner: Int, _ maximum: Bool, _ last: Bool) -> [Int64] {
    switch (maximum, last) {
    case (true, false): return scan(values, outer, n, inner, >)
    case (true, true): return scan(values, outer, n, inner, >=)
    case (false, false): return scan(values, outer, n, inner, <)
    case (false, true): return scan(values, outer, n, inner, <=)
    }
  }

  /// Row by row along the axis, keeping the best value and index of each inner position.
  @inline(__always)
  static func scan<T: Comparable>(_ values: [T], _ outer: Int, _ n: Int, _ inner: Int, _ replaces: (T, T) -> Bool) -> [Int64] {
    var result = [Int64](repeating: 0, count: outer * inner)
    guard outer * inner > 0 else { return result }
    values.withUnsafeBufferPointer { source in
      result.withUnsafeMutableBufferPointer { indices in
        var best = [T](source[0..<inner])
        for o in 0..<outer {
          let base = o * n * inner
          for i in 0..<inner { best[i] = source[base + i] }
          for j in 1..<max(n, 1) {
            let row = base + j * inner
            for i in 0..<inner where replaces(source[row + i], best[i]) {
              best[i] = source[row + i]
              indices[o * inner + i] = Int64(j)
            }
          }
        }
      }
    }
    return result
  }
}

/// `CumSum`: running sums along the `axis` input, `exclusive` (each sum leaves out its own
/// element) and/or `reverse` (https://onnx.ai/onnx/operators/onnx__CumSum.html).
struct CumSum: Operator {
  let exclusive: Bool
  let reverse: Bool

  init(_ node: Node, _ setup: OperatorSetup) throws {
    exclusive = (node.intAttribute("exclusive") ?? 0) != 0
    reverse = (node.intAttribute("reverse") ?? 0) != 0
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    var x = try context.input(inputs, 0, "x")
    let axisInput = try context.input(inputs, 1, "axis")
    guard !axisInput.isFloat, axisInput.count == 1 else { throw context.error("input axis \(axisInput.shapeDescription) is not one integer") }
    let axis = try Indexing.axis(Int(axisInput.ints[0]), rank: x.rank, "axis", context)
    let outer = x.shape[..<axis].reduce(1, *), n = x.shape[axis], inner = x.shape[(axis + 1)...].reduce(1, *)
    if x.isFloat {
      CumSum.accumulate(&x.floats, outer, n, inner, exclusive, reverse)
    } else {
      CumSum.accumulate(&x.ints, outer, n, inner, exclusive, reverse)
    }
    return [x.normalized()]
  }

  static func accumulate<T: Numeric>(_ values: inout [T], _ outer: Int, _ n: Int, _ inner: Int, _ exclusive: Bool, _ reverse: Bool) {
    guard n > 0, inner > 0 else { return }
    values.withUnsafeMutableBufferPointer { buffer in
      let data = buffer.baseAddress!
      Parallel.forEachRange(outer, work: outer * n * inner) { range in
        var running = [T](repeating: 0, count: inner)
        for o in range {
          let start = data + o * n * inner
          let (first, step) = reverse ? (start + (n - 1) * inner, -inner) : (start, inner)
          if inner == 1 {
            var sum: T = 0
            var element = first
            for _ in 0..<n {
              let value = element.pointee
              element.pointee = exclusive ? sum : sum + value
              sum += value
              element += step
            }
            continue
          }
          for i in 0..<inner { running[i] = 0 }
          var row = first
          for _ in 0..<n {
            for i in 0..<inner {
              let value = row[i]
              row[i] = exclusive ? running[i] : running[i] + value
              running[i] += value
            }
            row += step
          }
        }
      }
    }
  }
}

/// `Einsum`: sums of products over the subscripts of `equation` (numpy's rules: repeated letters in
/// one operand take its diagonal, `...` stands for broadcast dims, and without `->` the output
/// holds the ellipsis dims then the letters used once, in alphabetical order)
/// (https://onnx.ai/onnx/operators/onnx__Einsum.html).
struct Einsum: Operator {
  /// One label per operand axis: a letter's ASCII code, or `ellipsis` where `...` stands.
  let terms: [[Int]]
  let output: [Int]?
  static let ellipsis = -1

  init(_ node: Node, _ setup: OperatorSetup) throws {
    guard let equation = node.stringAttribute("equation") else { throw setup.error("attribute equation is missing") }
    let compact = equation.filter { !$0.isWhitespace }
    let sides = compact.components(separatedBy: "->")
    guard sides.count <= 2 else { throw setup.error("equation '\(equation)' has more than one ->") }
    func parse(_ term: String) throws -> [Int] {
      var labels: [Int] = []
      var rest = Substring(term)
      while let first = rest.first {
        if rest.hasPrefix("...") {
          guard !labels.contains(Einsum.ellipsis) else { throw setup.error("equation '\(equation)': term '\(term)' has two ellipses") }
          labels.append(Einsum.ellipsis)
          rest = rest.dropFirst(3)
        } else if let ascii = first.asciiValue, first.isLetter {
          labels.append(Int(ascii))
          rest = rest.dropFirst()
        } else {
          throw setup.error("equation '\(equation)': '\(first)' is not a letter or ...")
        }
      }
      return labels
    }
    terms = try sides[0].components(separatedBy: ",").map(parse)
    output = try sides.count == 2 ? parse(sides[1]) : nil
    if let output, Set(output).count != output.count { throw setup.error("equation '\(equation)' repeats an output subscript") }
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let operands = inputs.compactMap { $0 }
    let plan = try analyze(operands, context).plan
    let shape = Array(plan.sizes[..<plan.outputRank])
    try context.checkAllocation(shape, elementBytes: operands[0].isFloat ? 4 : 8)
    if operands[0].isFloat {
      return [Tensor(shape: shape, floats: plan.contract(operands.map(\.floats)), dtype: operands[0].dtype).normalized()]
    }
    return [Tensor(shape: shape, ints: plan.contract(operands.map(\.ints)), dtype: operands[0].dtype).normalized()]
  }

  /// The loop nest of the contraction, and per operand its axes' positions in the nest's labels
  /// (output labels first, then summed ones).
  func analyze(_ operands: [Tensor], _ context: ExecutionContext) throws -> (axes: [[Int]], plan: Plan) {
    guard operands.count == terms.count else {
      throw context.error("equation has \(terms.count) operands, the node gives \(operands.count) inputs")
    }
    guard operands.allSatisfy({ $0.isFloat == operands[0].isFloat }) else { throw context.error("inputs mix float and integer types") }
    // Expand each `...` into labels 1000, 1001, ... aligned to the right across operands.
    var ellipsisRank = 0
    var expanded: [[Int]] = []
    for (index, (term, operand)) in zip(terms, operands).enumerated() {
      let letters = term.filter { $0 != Einsum.ellipsis }.count
      let extra = operand.rank - letters
      guard extra == 0 || (extra > 0 && term.contains(Einsum.ellipsis)) else {
        throw context.error("input \(index) \(operand.shapeDescription) has \(operand.rank) dims, its subscripts name \(letters)")
      }
      ellipsisRank = max(ellipsisRank, extra)
      expanded.append(term.flatMap { $0 == Einsum.ellipsis ? Array(0..<extra).map { -extra + $0 } : [$0] })
    }
    let ellipsisLabels = (0..<ellipsisRank).map { 1000 + $0 }
    expanded = expanded.map { labels in labels.map { $0 < 0 ? 1000 + ellipsisRank + $0 : $0 } }
    var sizes: [Int: Int] = [:]
    for (index, (labels, operand)) in zip(expanded, operands).enumerated() {
      for (axis, label) in labels.enumerated() {
        let dim = operand.shape[axis]
        if let known = sizes[label], known != dim {
          guard known == 1 || dim == 1 else {
            throw context.error("input \(index) \(operand.shapeDescription): subscript sizes \(known) and \(dim) disagree")
          }
          if known == 1 { sizes[label] = dim }
        } else if sizes[label] == nil {
          sizes[label] = dim
        }
      }
    }
    let outputLabels: [Int]
    if let output {
      outputLabels = output.flatMap { $0 == Einsum.ellipsis ? ellipsisLabels : [$0] }
      for label in outputLabels where sizes[label] == nil {
        throw context.error("output subscript '\(Character(UnicodeScalar(UInt8(label))))' appears in no input")
      }
    } else {
      let letters = expanded.flatMap { $0 }.filter { $0 < 1000 }
      let once = Set(letters).filter { label in letters.filter { $0 == label }.count == 1 }
      outputLabels = ellipsisLabels + once.sorted()
    }
    var summed: [Int] = []
    for label in expanded.flatMap({ $0 }) where !outputLabels.contains(label) && !summed.contains(label) { summed.append(label) }
    let labels = outputLabels + summed
    // Per operand, the element stride of each label (axes sharing a label add up: a diagonal).
    let strides: [[Int]] = zip(expanded, operands).map { operandLabels, operand in
      let own = operand.strides
      return labels.map { label in
        operandLabels.indices.reduce(0) { sum, axis in
          operandLabels[axis] == label && operand.shape[axis] != 1 ? sum + own[axis] : sum
        }
      }
    }
    let plan = Plan(sizes: labels.map { sizes[$0]! }, outputRank: outputLabels.count, strides: strides)
    return (expanded.map { $0.map { labels.firstIndex(of: $0)! } }, plan)
  }

  /// The loop nest: output labels first, then summed labels; `strides[operand][label]`.
  struct Plan {
    let sizes: [Int]
    let outputRank: Int
    let strides: [[Int]]

    func contract<T: Numeric>(_ operands: [[T]]) -> [T] {
      let total = sizes[..<outputRank].reduce(1, *), terms = sizes[outputRank...].reduce(1, *)
      guard total > 0 else { return [] }
      guard terms > 0 else { return [T](repeating: 0, count: total) }
      let count = operands.count, rank = sizes.count
      // Contiguous copies, so one pointer per operand stays valid for the whole loop.
      let storage = UnsafeMutableBufferPointer<UnsafeMutableBufferPointer<T>>.allocate(capacity: count)
      for (index, values) in operands.enumerated() {
        let copy = UnsafeMutableBufferPointer<T>.allocate(capacity: max(values.count, 1))
        _ = copy.initialize(from: values)
        storage[index] = copy
      }
      defer {
        for index in 0..<count { storage[index].deallocate() }
        storage.deallocate()
      }
      var result = [T](repeating: 0, count: total)
      var counter = [Int](repeating: 0, count: rank)
      var offsets = [Int](repeating: 0, count: count)
      // The flattened stride table: strides[operand * rank + label].
      let table = strides.flatMap { $0 }
      // The last summed label runs in the innermost loop; the others step through `counter`.
      let innerSize = rank > outputRank ? sizes[rank - 1] : 1
      let innerStrides = (0..<count).map { rank > outputRank ? table[$0 * rank + rank - 1] : 0 }
      let stepLabels = rank > outputRank ? rank - 1 : rank
      let outerTerms = terms / innerSize
      func advance(_ label: Int) {
        for index in 0..<count { offsets[index] += table[index * rank + label] }
      }
      func rewind(_ label: Int) {
        for index in 0..<count { offsets[index] -= table[index * rank + label] * sizes[label] }
      }
      for position in 0..<total {
        var sum: T = 0
        for _ in 0..<outerTerms {
          switch count {
          case 1:
            var a = offsets[0]
            let p = storage[0], sa = innerStrides[0]
            for _ in 0..<innerSize {
              sum += p[a]
              a += sa
            }
          case 2:
            var a = offsets[0], b = offsets[1]
            let p = storage[0], q = storage[1], sa = innerStrides[0], sb = innerStrides[1]
            for _ in 0..<innerSize {
              sum += p[a] * q[b]
              a += sa
              b += sb
            }
          default:
            for k in 0..<innerSize {
              var product: T = 1
              for index in 0..<count { product *= storage[index][offsets[index] + k * innerStrides[index]] }
              sum += product
            }
          }
          // Step the other summed labels; on wrap they return to their start.
          var label = stepLabels - 1
          while label >= outputRank {
            counter[label] += 1
            advance(label)
            if counter[label] < sizes[label] { break }
            rewind(label)
            counter[label] = 0
            label -= 1
          }
        }
        result[position] = sum
        var label = outputRank - 1
        while label >= 0 {
          counter[label] += 1
          advance(label)
          if counter[label] < sizes[label] { break }
          rewind(label)
          counter[label] = 0
          label -= 1
        }
      }
      return result
    }
  }
}

/// Helpers shared by the operators in this file.
private enum Indexing {
  static func axis(_ axis: Int, rank: Int, _ name: String, _ context: ExecutionContext) throws -> Int {
    guard axis >= -rank && axis < rank else { throw context.error("\(name) \(axis) is out of range for \(rank) dims") }
    return axis < 0 ? axis + rank : axis
  }

  /// The index tensor's values made non-negative, each checked against `size`.
  static func positions(_ indices: Tensor, size: Int, _ name: String, _ context: ExecutionContext) throws -> [Int] {
    guard !indices.isFloat else { throw context.error("input \(name) is \(indices.dtype), expected int32 or int64") }
    var result = [Int](repeating: 0, count: indices.ints.count)
    for (position, value) in indices.ints.enumerated() {
      let index = value < 0 ? Int(value) + size : Int(value)
      guard index >= 0 && index < size else {
        throw context.error("input \(name) holds \(value), out of range for an axis of size \(size)")
      }
      result[position] = index
    }
    return result
  }

  /// GatherElements/ScatterElements: indices of data's rank, no larger than data off the axis.
  static func checkElementwise(_ indices: Tensor, _ name: String, against data: Tensor, axis: Int, _ context: ExecutionContext) throws {
    guard indices.rank == data.rank, indices.shape.indices.allSatisfy({ $0 == axis || indices.shape[$0] <= data.shape[$0] }) else {
      throw context.error("input \(name) \(indices.shapeDescription) does not fit data \(data.shapeDescription) off axis \(axis)")
    }
  }

  /// For each position `i` of `shape` (row-major), the flat data offset of `i` with `i[axis]`
  /// replaced by `picks[i]`.
  static func elementOffsets(_ shape: [Int], _ dataStrides: [Int], axis: Int, _ picks: [Int]) -> [Int] {
    let total = shape.reduce(1, *), rank = shape.count
    var offsets = [Int](repeating: 0, count: total)
    guard total > 0 else { return offsets }
    var counter = [Int](repeating: 0, count: rank)
    var base = 0
    for position in 0..<total {
      offsets[position] = base + picks[position] * dataStrides[axis]
      var a = rank - 1
      while a >= 0 {
        counter[a] += 1
        if a != axis { base += dataStrides[a] }
        if counter[a] < shape[a] { break }
        if a != axis { base -= dataStrides[a] * shape[a] }
        counter[a] = 0
        a -= 1
      }
    }
    return offsets
  }

  /// GatherND/ScatterND addressing: the flat data offset of each slice the indices name.
  struct NDPlan {
    /// How many leading data dims an index tuple addresses (after the batch dims).
    let depth: Int
    /// Elements per addressed slice.
    let slice: Int
    let offsets: [Int]

    init(data: Tensor, indices: Tensor, batchDims: Int, _ context: ExecutionContext) throws {
      guard !indices.isFloat else { throw context.error("input indices is \(indices.dtype), expected int64") }
      guard indices.rank >= 1, batchDims >= 0, batchDims < indices.rank, batchDims < data.rank else {
        throw context.error("input indices \(indices.shapeDescription) and batch_dims \(batchDims) do not fit data \(data.shapeDescription)")
      }
      guard data.shape[..<batchDims] == indices.shape[..<batchDims] else {
        throw context.error("the first \(batchDims) dims of data \(data.shapeDescription) and indices \(indices.shapeDescription) differ")
      }
      let depth = indices.shape[indices.rank - 1]
      guard depth <= data.rank - batchDims else {
        throw context.error("input indices \(indices.shapeDescription) addresses \(depth) dims, data \(data.shapeDescription) has \(data.rank - batchDims) after the batch dims")
      }
      self.depth = depth
      slice = data.shape[(batchDims + depth)...].reduce(1, *)
      let strides = data.strides
      let batchBlock = data.shape[batchDims...].reduce(1, *)
      let tuples = indices.shape.dropLast().reduce(1, *)
      let perBatch = indices.shape[batchDims..<(indices.rank - 1)].reduce(1, *)
      var offsets = [Int](repeating: 0, count: tuples)
      for tuple in 0..<tuples {
        var offset = perBatch == 0 ? 0 : tuple / perBatch * batchBlock
        for j in 0..<depth {
          let size = data.shape[batchDims + j], value = indices.ints[tuple * depth + j]
          let index = value < 0 ? Int(value) + size : Int(value)
          guard index >= 0 && index < size else {
            throw context.error("input indices holds \(value), out of range for data axis \(batchDims + j) of size \(size)")
          }
          offset += index * strides[batchDims + j]
        }
        offsets[tuple] = offset
      }
      self.offsets = offsets
    }
  }

}

// MARK: - Gradients

extension Indexing {
  /// Zeros of `count` with `values[t * slice + j]` added at `offsets[t] + j` (serial: offsets may repeat).
  static func scatterAdd(_ values: [Float], offsets: [Int], slice: Int, count: Int) -> [Float] {
    var result = [Float](repeating: 0, count: count)
    guard slice > 0 else { return result }
    values.withUnsafeBufferPointer { source in
      result.withUnsafeMutableBufferPointer { target in
        for (t, offset) in offsets.enumerated() {
          let from = source.baseAddress! + t * slice, to = target.baseAddress! + offset
          for j in 0..<slice { to[j] += from[j] }
        }
      }
    }
    return result
  }

  /// `values[offsets[t] + j]` for every t and j below `slice`, in that order.
  static func gatherSlices(_ values: [Float], offsets: [Int], slice: Int) -> [Float] {
    var result = [Float](repeating: 0, count: offsets.count * slice)
    guard slice > 0 else { return result }
    values.withUnsafeBufferPointer { source in
      result.withUnsafeMutableBufferPointer { target in
        for (t, offset) in offsets.enumerated() {
          let from = source.baseAddress! + offset, to = target.baseAddress! + t * slice
          for j in 0..<slice { to[j] = from[j] }
        }
      }
    }
    return result
  }
}

extension ScatterReduction {
  /// Gradients of `apply` with respect to the data and the updates, from the forward's data,
  /// updates and result and the result's gradient `dy`. Entries that share an offset start the
  /// same slice (ScatterND slices are aligned, ScatterElements' have one element).
  func gradients(_ dy: [Float], data: [Float], updates: [Float], result: [Float], offsets: [Int], slice: Int)
    -> (data: [Float], updates: [Float])
  {
    var toData = dy
    var toUpdates = [Float](repeating: 0, count: updates.count)
    guard slice > 0, !offsets.isEmpty else { return (toData, toUpdates) }
    switch self {
    case .none:
      // The last write to an element is the one the result holds; the data there gets nothing.
      var written = [Bool](repeating: false, count: dy.count)
      for t in offsets.indices.reversed() {
        for j in 0..<slice where !written[offsets[t] + j] {
          written[offsets[t] + j] = true
          toUpdates[t * slice + j] = dy[offsets[t] + j]
          toData[offsets[t] + j] = 0
        }
      }
    case .add:
      toUpdates = Indexing.gatherSlices(dy, offsets: offsets, slice: slice)
    case .mul:
      // result = data * Π updates at each element: every factor gets dy times the product of the others.
      var groups: [Int: [Int]] = [:]
      for (t, offset) in offsets.enumerated() { groups[offset, default: []].append(t) }
      for (offset, members) in groups {
        for j in 0..<slice {
          let position = offset + j
          var product: Float = 1
          for t in members { product *= updates[t * slice + j] }
          toData[position] = dy[position] * product
          for t in members {
            var others = data[position]
            for u in members where u != t { others *= updates[u * slice + j] }
            toUpdates[t * slice + j] = dy[position] * others
          }
        }
      }
    case .max, .min:
      // The data, else the first update, that attains the result takes the gradient.
      var taken = [Bool](repeating: false, count: dy.count)
      for offset in offsets {
        for position in offset..<(offset + slice) {
          if data[position] == result[position] { taken[position] = true } else { toData[position] = 0 }
        }
      }
      for (t, offset) in offsets.enumerated() {
        for j in 0..<slice where !taken[offset + j] && updates[t * slice + j] == result[offset + j] {
          toUpdates[t * slice + j] = dy[offset + j]
          taken[offset + j] = true
        }
      }
    }
    return (toData, toUpdates)
  }
}

extension Gather: DifferentiableOperator {
  /// Rows of `dy` added back into the data rows they came from (repeated indices add up).
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let data = inputs[0], data.isFloat, let indices = inputs[1] else { return [nil, nil] }
    let axis = try Indexing.axis(self.axis, rank: data.rank, "axis", context)
    let dim = data.shape[axis]
    let picks = try Indexing.positions(indices, size: dim, "indices", context)
    let outer = data.shape[..<axis].reduce(1, *), inner = data.shape[(axis + 1)...].reduce(1, *)
    var dx = [Float](repeating: 0, count: data.count)
    let count = picks.count
    if dy.count > 0 {
      // Tasks own an outer block and a range of columns: no two write one element.
      let columns = outer >= 4 * Parallel.threads ? 1 : max(1, min(inner / 4096, 4 * Parallel.threads))
      dy.floats.withUnsafeBufferPointer { source in
        dx.withUnsafeMutableBufferPointer { target in
          let src = source.baseAddress!, dst = target.baseAddress!
          Parallel.forEachRange(outer * columns, work: dy.count) { range in
            for task in range {
              let o = task / columns, part = task % columns
              let c0 = inner * part / columns, c1 = inner * (part + 1) / columns
              for r in 0..<count {
                let from = src + (o * count + r) * inner, to = dst + (o * dim + picks[r]) * inner
                for c in c0..<c1 { to[c] += from[c] }
              }
            }
          }
        }
      }
    }
    return [Tensor(shape: data.shape, floats: dx, dtype: data.dtype), nil]
  }
}

extension GatherElements: DifferentiableOperator {
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let data = inputs[0], data.isFloat, let indices = inputs[1] else { return [nil, nil] }
    let axis = try Indexing.axis(self.axis, rank: data.rank, "axis", context)
    let picks = try Indexing.positions(indices, size: data.shape[axis], "indices", context)
    let offsets = Indexing.elementOffsets(indices.shape, data.strides, axis: axis, picks)
    let dx = Indexing.scatterAdd(dy.floats, offsets: offsets, slice: 1, count: data.count)
    return [Tensor(shape: data.shape, floats: dx, dtype: data.dtype), nil]
  }
}

extension GatherND: DifferentiableOperator {
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let data = inputs[0], data.isFloat, let indices = inputs[1] else { return [nil, nil] }
    let plan = try Indexing.NDPlan(data: data, indices: indices, batchDims: batchDims, context)
    let dx = Indexing.scatterAdd(dy.floats, offsets: plan.offsets, slice: plan.slice, count: data.count)
    return [Tensor(shape: data.shape, floats: dx, dtype: data.dtype), nil]
  }
}

extension ScatterND: DifferentiableOperator {
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let data = inputs[0], data.isFloat, let indices = inputs[1], let updates = inputs[2] else {
      return [nil, nil, nil]
    }
    let plan = try Indexing.NDPlan(data: data, indices: indices, batchDims: 0, context)
    let (toData, toUpdates) = reduction.gradients(
      dy.floats, data: data.floats, updates: updates.floats, result: outputs[0].floats, offsets: plan.offsets, slice: plan.slice)
    return [
      Tensor(shape: data.shape, floats: toData, dtype: data.dtype), nil, Tensor(shape: updates.shape, floats: toUpdates, dtype: updates.dtype),
    ]
  }
}

extension ScatterElements: DifferentiableOperator {
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let data = inputs[0], data.isFloat, let indices = inputs[1], let updates = inputs[2] else {
      return [nil, nil, nil]
    }
    let axis = try Indexing.axis(self.axis, rank: data.rank, "axis", context)
    let picks = try Indexing.positions(indices, size: data.shape[axis], "indices", context)
    let offsets = Indexing.elementOffsets(indices.shape, data.strides, axis: axis, picks)
    let (toData, toUpdates) = reduction.gradients(
      dy.floats, data: data.floats, updates: updates.floats, result: outputs[0].floats, offsets: offsets, slice: 1)
    return [
      Tensor(shape: data.shape, floats: toData, dtype: data.dtype), nil, Tensor(shape: updates.shape, floats: toUpdates, dtype: updates.dtype),
    ]
  }
}

extension CumSum: DifferentiableOperator {
  /// The running sum of `dy` in the opposite direction, with the same exclusiveness.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat, let axisInput = inputs[1] else { return [nil, nil] }
    guard !axisInput.isFloat, axisInput.count == 1 else { throw context.error("input axis \(axisInput.shapeDescription) is not one integer") }
    let axis = try Indexing.axis(Int(axisInput.ints[0]), rank: x.rank, "axis", context)
    let outer = x.shape[..<axis].reduce(1, *), n = x.shape[axis], inner = x.shape[(axis + 1)...].reduce(1, *)
    var dx = dy.floats
    CumSum.accumulate(&dx, outer, n, inner, exclusive, !reverse)
    return [Tensor(shape: x.shape, floats: dx, dtype: x.dtype), nil]
  }
}

extension TopK: DifferentiableOperator {
  /// The Values gradient goes back to the elements picked (the Indices output has none).
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    var result = inputs.map { _ in nil as Tensor? }
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat, outputs.count > 1 else { return result }
    let axis = try Indexing.axis(self.axis, rank: x.rank, "axis", context)
    let n = x.shape[axis], inner = x.shape[(axis + 1)...].reduce(1, *), k = outputs[1].shape[axis]
    let picked = outputs[1].ints
    var offsets = [Int](repeating: 0, count: picked.count)
    for position in offsets.indices {
      let o = position / max(k * inner, 1), i = position % inner
      offsets[position] = (o * n + Int(picked[position])) * inner + i
    }
    let dx = Indexing.scatterAdd(dy.floats, offsets: offsets, slice: 1, count: x.count)
    result[0] = Tensor(shape: x.shape, floats: dx, dtype: x.dtype)
    return result
  }
}

extension Einsum: DifferentiableOperator {
  /// Operand k's gradient is the contraction of `dy` with the other operands over operand k's
  /// labels, added back into operand k's layout (repeated labels write its diagonal, size-1 dims
  /// that broadcast sum up).
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], outputs[0].isFloat else { return inputs.map { _ in nil } }
    let operands = inputs.compactMap { $0 }
    let (axes, plan) = try analyze(operands, context)
    let labelCount = plan.sizes.count
    let outputStrides = Tensor.strides(of: Array(plan.sizes[..<plan.outputRank]))
    let dyStrides = (0..<labelCount).map { $0 < plan.outputRank ? outputStrides[$0] : 0 }
    var operandIndex = 0
    return inputs.map { input -> Tensor? in
      guard let input else { return nil }
      let k = operandIndex
      operandIndex += 1
      guard input.isFloat else { return nil }
      // Loop over operand k's distinct labels (the result), then every other label (summed).
      var own: [Int] = []
      for label in axes[k] where !own.contains(label) { own.append(label) }
      let order = own + (0..<labelCount).filter { !own.contains($0) }
      var strides = operands.indices.filter { $0 != k }.map { other in order.map { plan.strides[other][$0] } }
      strides.append(order.map { dyStrides[$0] })
      let gradientPlan = Plan(sizes: order.map { plan.sizes[$0] }, outputRank: own.count, strides: strides)
      let values = gradientPlan.contract(operands.indices.filter { $0 != k }.map { operands[$0].floats } + [dy.floats])
      // Scatter the result into operand k through its strides per label.
      let sizes = own.map { plan.sizes[$0] }, steps = own.map { plan.strides[k][$0] }
      var dx = [Float](repeating: 0, count: input.count)
      var counter = [Int](repeating: 0, count: own.count)
      var offset = 0
      for value in values {
        dx[offset] += value
        var axis = own.count - 1
        while axis >= 0 {
          counter[axis] += 1
          offset += steps[axis]
          if counter[axis] < sizes[axis] { break }
          offset -= steps[axis] * sizes[axis]
          counter[axis] = 0
          axis -= 1
        }
      }
      return Tensor(shape: input.shape, floats: dx, dtype: input.dtype)
    }
  }
}
