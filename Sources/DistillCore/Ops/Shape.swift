import Foundation

// Shape and layout operators: constants, reshapes, transposes, concatenation and splitting,
// slicing, broadcasting copies, padding and block rearrangements. Most copies go through one
// strided-gather kernel (`Layout.gather`), which merges contiguous axes and splits big copies
// over the cores. Specs: https://onnx.ai/onnx/operators/ (one page per operator).

let shapeOperators: [(String, any Operator.Type)] = [
  ("Concat", Concat.self), ("Constant", Constant.self), ("ConstantOfShape", ConstantOfShape.self),
  ("DepthToSpace", DepthToSpace.self), ("Expand", Expand.self), ("Flatten", Flatten.self), ("Pad", Pad.self),
  ("Range", Arange.self), ("Reshape", Reshape.self), ("Shape", ShapeOf.self), ("Size", SizeOf.self),
  ("Slice", StridedSlice.self), ("SpaceToDepth", SpaceToDepth.self), ("Split", Split.self), ("Squeeze", Squeeze.self),
  ("Tile", Tile.self), ("Transpose", Transpose.self), ("Unsqueeze", Unsqueeze.self),
]

/// `Constant`: the tensor held by whichever `value*` attribute the node carries
/// (https://onnx.ai/onnx/operators/onnx__Constant.html).
struct Constant: Operator {
  let value: Tensor

  init(_ node: Node, _ setup: OperatorSetup) throws {
    let names = ["value", "value_float", "value_floats", "value_int", "value_ints", "value_string", "value_strings", "sparse_value"]
    guard let attribute = node.attributes.first(where: { names.contains($0.name) }) else {
      throw setup.error("has none of the attributes \(names.joined(separator: ", "))")
    }
    switch attribute.value {
    case .tensor(let tensor):
      do { value = try Tensor(tensor) } catch { throw setup.error("attribute value: \(error)") }
    case .float(let scalar): value = Tensor(scalar: scalar)
    case .floats(let values): value = Tensor(shape: [values.count], floats: values)
    case .int(let scalar): value = Tensor(shape: [], ints: [scalar])
    case .ints(let values): value = Tensor(shape: [values.count], ints: values)
    case .string, .strings: throw setup.error("attribute \(attribute.name): string tensors are not supported")
    case .sparseTensor: throw setup.error("attribute sparse_value: sparse tensors are not supported")
    default: throw setup.error("attribute \(attribute.name) is a \(attribute.value.kindName), expected a tensor or numbers")
    }
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] { [value] }
}

/// `ConstantOfShape`: a tensor of the shape given by the input, filled with the one-element
/// `value` attribute (float32 zero by default) (https://onnx.ai/onnx/operators/onnx__ConstantOfShape.html).
struct ConstantOfShape: Operator {
  let fill: Tensor

  init(_ node: Node, _ setup: OperatorSetup) throws {
    if case .tensor(let value)? = node.attribute("value")?.value {
      do { fill = try Tensor(value) } catch { throw setup.error("attribute value: \(error)") }
      guard fill.count == 1 else { throw setup.error("attribute value holds \(fill.count) elements, expected 1") }
    } else {
      fill = Tensor(shape: [1], floats: [0])
    }
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let shape = try Layout.integers(context.input(inputs, 0, "input"), "input", context)
    let count = try context.checkAllocation(shape, elementBytes: fill.isFloat ? 4 : 8)
    if fill.isFloat { return [Tensor(shape: shape, floats: [Float](repeating: fill.floats[0], count: count), dtype: fill.dtype)] }
    return [Tensor(shape: shape, ints: [Int64](repeating: fill.ints[0], count: count), dtype: fill.dtype)]
  }
}

/// `Shape`: the input's dims as int64, optionally the `start..<end` part of them (opset 15)
/// (https://onnx.ai/onnx/operators/onnx__Shape.html).
struct ShapeOf: ChannelsLastOperator {
  let start: Int
  let end: Int?

  init(_ node: Node, _ setup: OperatorSetup) throws {
    start = node.intAttribute("start") ?? 0
    end = node.intAttribute("end")
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "data")
    func clamp(_ value: Int) -> Int { min(max(value < 0 ? value + x.rank : value, 0), x.rank) }
    let from = clamp(start), to = clamp(end ?? x.rank)
    let dims = from < to ? x.shape[from..<to].map { Int64($0) } : []
    return [Tensor(shape: [dims.count], ints: dims)]
  }
}

/// `Size`: the input's element count as an int64 scalar (https://onnx.ai/onnx/operators/onnx__Size.html).
struct SizeOf: ChannelsLastOperator {
  init(_ node: Node, _ setup: OperatorSetup) throws {}

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "data")
    return [Tensor(shape: [], ints: [Int64(x.shape.reduce(1, *))])]
  }
}

/// `Reshape`: the same elements with the shape of input `shape` (the `shape` attribute before
/// opset 5), where 0 copies the input's dim (unless `allowzero`) and one -1 is inferred
/// (https://onnx.ai/onnx/operators/onnx__Reshape.html).
struct Reshape: Operator {
  let shapeAttribute: [Int]?
  let allowZero: Bool

  init(_ node: Node, _ setup: OperatorSetup) throws {
    shapeAttribute = setup.opset < 5 ? node.intsAttribute("shape") : nil
    allowZero = (node.intAttribute("allowzero") ?? 0) != 0
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let data = try context.input(inputs, 0, "data")
    let requested = try shapeAttribute ?? Layout.integers(context.input(inputs, 1, "shape"), "shape", context)
    var shape: [Int] = []
    var inferred: Int?
    for (axis, dim) in requested.enumerated() {
      if dim == 0 && !allowZero {
        guard axis < data.rank else {
          throw context.error("input shape \(requested) copies dim \(axis) (0), but data \(data.shapeDescription) has \(data.rank) dims")
        }
        shape.append(data.shape[axis])
      } else if dim == -1 {
        guard inferred == nil else { throw context.error("input shape \(requested) has more than one -1") }
        inferred = axis
        shape.append(1)
      } else if dim < 0 {
        throw context.error("input shape \(requested) has the negative dim \(dim)")
      } else {
        shape.append(dim)
      }
    }
    let count = data.count, known = shape.reduce(1, *)
    if let inferred {
      guard known > 0, count % known == 0 else {
        throw context.error("cannot reshape data \(data.shapeDescription) (\(count) elements) to \(requested)")
      }
      shape[inferred] = count / known
    } else if known != count {
      throw context.error("cannot reshape data \(data.shapeDescription) (\(count) elements) to \(requested) (\(known) elements)")
    }
    return [data.reshaped(shape)]
  }
}

/// `Flatten`: a 2-D view, dims before `axis` (default 1, negative counts from the end) times
/// the dims from it on (https://onnx.ai/onnx/operators/onnx__Flatten.html).
struct Flatten: Operator {
  let axis: Int

  init(_ node: Node, _ setup: OperatorSetup) throws { axis = node.intAttribute("axis") ?? 1 }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "input")
    let axis = self.axis < 0 ? self.axis + x.rank : self.axis
    guard axis >= 0 && axis <= x.rank else {
      throw context.error("axis \(self.axis) is out of range for input \(x.shapeDescription)")
    }
    return [x.reshaped([x.shape[..<axis].reduce(1, *), x.shape[axis...].reduce(1, *)])]
  }
}

/// `Squeeze`: drops the size-1 dims listed by `axes` (attribute before opset 13, input after),
/// or all of them (https://onnx.ai/onnx/operators/onnx__Squeeze.html).
struct Squeeze: Operator {
  let axesAttribute: [Int]?

  init(_ node: Node, _ setup: OperatorSetup) throws {
    axesAttribute = setup.opset < 13 ? node.intsAttribute("axes") : nil
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "data")
    let listed = try axesAttribute ?? Layout.optional(inputs, 1).map { try Layout.integers($0, "axes", context) }
    guard let listed else { return [x.reshaped(x.shape.filter { $0 != 1 })] }
    let axes = try Set(listed.map { try Layout.axis($0, rank: x.rank, "axes", context) })
    for axis in axes where x.shape[axis] != 1 {
      throw context.error("axes lists \(axis), but input data \(x.shapeDescription) has \(x.shape[axis]) there, not 1")
    }
    return [x.reshaped(x.shape.indices.filter { !axes.contains($0) }.map { x.shape[$0] })]
  }
}

/// `Unsqueeze`: inserts size-1 dims at `axes` of the output (attribute before opset 13, input
/// after) (https://onnx.ai/onnx/operators/onnx__Unsqueeze.html).
struct Unsqueeze: Operator {
  let axesAttribute: [Int]?

  init(_ node: Node, _ setup: OperatorSetup) throws {
    axesAttribute = setup.opset < 13 ? node.intsAttribute("axes") : nil
    if setup.opset < 13 && axesAttribute == nil { throw setup.error("attribute axes is missing") }
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "data")
    let listed = try axesAttribute ?? Layout.integers(context.input(inputs, 1, "axes"), "axes", context)
    let rank = x.rank + listed.count
    let axes = try listed.map { try Layout.axis($0, rank: rank, "axes", context) }
    guard Set(axes).count == axes.count else { throw context.error("input axes \(listed) repeats an axis") }
    var shape = [Int](repeating: 1, count: rank)
    var next = 0
    for axis in 0..<rank where !axes.contains(axis) {
      shape[axis] = x.shape[next]
      next += 1
    }
    return [x.reshaped(shape)]
  }
}

/// `Transpose`: permutes the axes by `perm` (default: reversed)
/// (https://onnx.ai/onnx/operators/onnx__Transpose.html).
struct Transpose: Operator {
  let perm: [Int]?

  init(_ node: Node, _ setup: OperatorSetup) throws { perm = node.intsAttribute("perm") }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "data")
    let perm = self.perm ?? Array((0..<x.rank).reversed())
    guard perm.sorted() == Array(0..<x.rank) else {
      throw context.error("attribute perm \(perm) is not a permutation of the \(x.rank) axes of input data \(x.shapeDescription)")
    }
    if perm == Array(0..<x.rank) { return [x] }
    let strides = x.strides
    return [x.strided(offset: 0, strides: perm.map { strides[$0] }, shape: perm.map { x.shape[$0] })]
  }
}

/// `Concat`: joins the inputs along `axis`; all other dims must agree
/// (https://onnx.ai/onnx/operators/onnx__Concat.html).
struct Concat: Operator {
  let axis: Int

  init(_ node: Node, _ setup: OperatorSetup) throws {
    guard let axis = node.intAttribute("axis") ?? (setup.opset < 4 ? 1 : nil) else { throw setup.error("attribute axis is missing") }
    self.axis = axis
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let parts = inputs.compactMap { $0 }
    guard let first = parts.first else { throw context.error("needs at least one input") }
    let axis = try Layout.axis(self.axis, rank: first.rank, "axis", context)
    var shape = first.shape
    shape[axis] = 0
    for (index, part) in parts.enumerated() {
      guard part.isFloat == first.isFloat else {
        throw context.error("input \(index) is \(part.dtype), input 0 is \(first.dtype)")
      }
      guard part.rank == first.rank, part.shape.indices.allSatisfy({ $0 == axis || part.shape[$0] == first.shape[$0] }) else {
        throw context.error("input \(index) \(part.shapeDescription) does not match input 0 \(first.shapeDescription) outside axis \(axis)")
      }
      shape[axis] += part.shape[axis]
    }
    if parts.count == 1 { return [first] }
    let outer = shape[..<axis].reduce(1, *), inner = shape[(axis + 1)...].reduce(1, *)
    let blocks = parts.map { $0.shape[axis] * inner }
    if first.isFloat {
      return [Tensor(shape: shape, floats: Concat.join(parts.map(\.floats), blocks: blocks, outer: outer), dtype: first.dtype)]
    }
    return [Tensor(shape: shape, ints: Concat.join(parts.map(\.ints), blocks: blocks, outer: outer), dtype: first.dtype)]
  }

  /// Row `o` of the result is block `o` of every part, in order.
  static func join<T>(_ parts: [[T]], blocks: [Int], outer: Int) -> [T] {
    let row = blocks.reduce(0, +), total = row * outer
    return [T](unsafeUninitializedCapacity: total) { out, initialized in
      var start = 0
      for (part, block) in zip(parts, blocks) {
        if block > 0 {
          part.withUnsafeBufferPointer { source in
            let src = source.baseAddress!, dst = out.baseAddress! + start
            Parallel.forEachRange(outer, work: block * outer) { range in
              for o in range { (dst + o * row).initialize(from: src + o * block, count: block) }
            }
          }
        }
        start += block
      }
      initialized = total
    }
  }
}

/// `Split`: cuts the input along `axis` into parts sized by `split` (attribute before opset 13,
/// input after), else into as many equal parts as there are outputs (or `num_outputs`, opset
/// 18), the last one smaller when the dim does not divide (https://onnx.ai/onnx/operators/onnx__Split.html).
struct Split: Operator {
  let axis: Int
  let splitAttribute: [Int]?
  let parts: Int

  init(_ node: Node, _ setup: OperatorSetup) throws {
    axis = node.intAttribute("axis") ?? 0
    splitAttribute = setup.opset < 13 ? node.intsAttribute("split") : nil
    parts = node.intAttribute("num_outputs") ?? node.outputs.count
    guard parts > 0 else { throw setup.error("needs at least one output") }
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "input")
    let axis = try Layout.axis(self.axis, rank: x.rank, "axis", context)
    let dim = x.shape[axis]
    var sizes = try splitAttribute ?? Layout.optional(inputs, 1).map { try Layout.integers($0, "split", context) }
    if sizes == nil {
      let chunk = (dim + parts - 1) / parts
      guard chunk * (parts - 1) <= dim else {
        throw context.error("cannot split axis \(axis) of input \(x.shapeDescription) into \(parts) parts")
      }
      sizes = [Int](repeating: chunk, count: parts - 1) + [dim - chunk * (parts - 1)]
    }
    let split = sizes!
    guard split.allSatisfy({ $0 >= 0 }), split.reduce(0, +) == dim else {
      throw context.error("split \(split) does not add up to \(dim), axis \(axis) of input \(x.shapeDescription)")
    }
    let strides = x.strides
    var start = 0
    return split.map { size in
      var shape = x.shape
      shape[axis] = size
      defer { start += size }
      return x.strided(offset: start * strides[axis], strides: strides, shape: shape)
    }
  }
}

/// `Slice`: `starts..<ends` by `steps` along `axes` (attributes before opset 10, inputs after),
/// with negative indices counted from the end and out-of-range bounds clamped
/// (https://onnx.ai/onnx/operators/onnx__Slice.html).
struct StridedSlice: Operator {
  let startsAttribute: [Int]?
  let endsAttribute: [Int]?
  let axesAttribute: [Int]?
  let opset: Int

  init(_ node: Node, _ setup: OperatorSetup) throws {
    opset = setup.opset
    startsAttribute = setup.opset < 10 ? node.intsAttribute("starts") : nil
    endsAttribute = setup.opset < 10 ? node.intsAttribute("ends") : nil
    axesAttribute = setup.opset < 10 ? node.intsAttribute("axes") : nil
    if setup.opset < 10 && (startsAttribute == nil || endsAttribute == nil) { throw setup.error("attributes starts and ends are required") }
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "data")
    let view = try self.view(of: x, inputs, context)
    if view.shape == x.shape && view.strides == x.strides { return [x] }
    return [x.strided(offset: view.offset, strides: view.strides, shape: view.shape)]
  }

  /// The result as a strided view of `x`: element i is `x[offset + Σ i[a] * strides[a]]`.
  func view(of x: Tensor, _ inputs: [Tensor?], _ context: ExecutionContext) throws -> (offset: Int, strides: [Int], shape: [Int]) {
    let starts: [Int], ends: [Int], listedAxes: [Int]?, steps: [Int]?
    if opset < 10 {
      starts = startsAttribute!
      ends = endsAttribute!
      listedAxes = axesAttribute
      steps = nil
    } else {
      starts = try Layout.integers(context.input(inputs, 1, "starts"), "starts", context)
      ends = try Layout.integers(context.input(inputs, 2, "ends"), "ends", context)
      listedAxes = try Layout.optional(inputs, 3).map { try Layout.integers($0, "axes", context) }
      steps = try Layout.optional(inputs, 4).map { try Layout.integers($0, "steps", context) }
    }
    let axes = try (listedAxes ?? Array(0..<starts.count)).map { try Layout.axis($0, rank: x.rank, "axes", context) }
    guard ends.count == starts.count, axes.count == starts.count, (steps?.count ?? starts.count) == starts.count else {
      throw context.error("starts, ends, axes and steps have different lengths (\(starts.count), \(ends.count), \(axes.count), \(steps?.count ?? starts.count))")
    }
    guard Set(axes).count == axes.count else { throw context.error("axes \(axes) repeats an axis") }
    let inputStrides = x.strides
    var shape = x.shape, strides = inputStrides, offset = 0
    for (index, axis) in axes.enumerated() {
      let dim = x.shape[axis], step = steps?[index] ?? 1
      guard step != 0 else { throw context.error("input steps holds 0 for axis \(axis)") }
      var start = starts[index], end = ends[index]
      if start < 0 { start += dim }
      if end < 0 { end += dim }
      let count: Int
      if step > 0 {
        start = min(max(start, 0), dim)
        end = min(max(end, 0), dim)
        count = end > start ? (end - start - 1) / step + 1 : 0
      } else {
        start = min(max(start, 0), dim - 1)
        end = min(max(end, -1), dim - 1)
        count = start > end ? (start - end - 1) / (-step) + 1 : 0
      }
      shape[axis] = count
      if count > 0 { offset += start * inputStrides[axis] }
      strides[axis] = count > 1 ? inputStrides[axis] * step : 0
    }
    return (offset, strides, shape)
  }
}

/// `Expand`: broadcasts the input against the shape input (numpy rules, both ways)
/// (https://onnx.ai/onnx/operators/onnx__Expand.html).
struct Expand: Operator {
  init(_ node: Node, _ setup: OperatorSetup) throws {}

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "input")
    let requested = try Layout.integers(context.input(inputs, 1, "shape"), "shape", context)
    guard let shape = Broadcast.shape([x.shape, requested]) else {
      throw context.error("input \(x.shapeDescription) does not broadcast to shape \(requested)")
    }
    if shape == x.shape { return [x] }
    try context.checkAllocation(shape, elementBytes: x.isFloat ? 4 : 8)
    return [x.strided(offset: 0, strides: Broadcast.strides(of: x.shape, broadcastTo: shape), shape: shape)]
  }
}

/// `Tile`: the input repeated `repeats[i]` times along each axis
/// (https://onnx.ai/onnx/operators/onnx__Tile.html).
struct Tile: Operator {
  init(_ node: Node, _ setup: OperatorSetup) throws {}

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "input")
    let repeats = try Layout.integers(context.input(inputs, 1, "repeats"), "repeats", context)
    guard repeats.count == x.rank, repeats.allSatisfy({ $0 >= 0 }) else {
      throw context.error("input repeats \(repeats) needs \(x.rank) non-negative counts for input \(x.shapeDescription)")
    }
    let shape = zip(x.shape, repeats).map { $0 * $1 }
    if shape == x.shape { return [x] }
    try context.checkAllocation(shape, elementBytes: x.isFloat ? 4 : 8)
    // Output index (copy k, position j) along an axis is k * dim + j: a row-major [repeat, dim] view.
    let strides = x.strides
    let virtualShape = x.shape.indices.flatMap { [repeats[$0], x.shape[$0]] }
    let virtualStrides = strides.flatMap { [0, $0] }
    return [x.strided(offset: 0, strides: virtualStrides, shape: virtualShape).reshaped(shape)]
  }
}

/// `Range`: `start, start + delta, ...` up to (not including) `limit`, in the inputs' type
/// (https://onnx.ai/onnx/operators/onnx__Range.html).
struct Arange: Operator {
  init(_ node: Node, _ setup: OperatorSetup) throws {}

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let start = try context.input(inputs, 0, "start"), limit = try context.input(inputs, 1, "limit")
    let delta = try context.input(inputs, 2, "delta")
    for (tensor, name) in [(start, "start"), (limit, "limit"), (delta, "delta")] where tensor.count != 1 {
      throw context.error("input \(name) \(tensor.shapeDescription) is not a scalar")
    }
    if start.isFloat {
      let first = Double(start.asFloats[0]), step = Double(delta.asFloats[0]), end = Double(limit.asFloats[0])
      guard step != 0 else { throw context.error("input delta is 0") }
      let span = ((end - first) / step).rounded(.up)
      guard span.isFinite || span < 0 else { throw context.error("range \(first)..<\(end) by \(step) is infinite") }
      let count = Int(max(span, 0))
      try context.checkAllocation([count])
      return [Tensor(shape: [count], floats: (0..<count).map { Float(first + Double($0) * step) }, dtype: start.dtype).normalized()]
    }
    let first = start.ints[0], step = delta.asInts[0], end = limit.asInts[0]
    guard step != 0 else { throw context.error("input delta is 0") }
    let span = end - first
    let count = step > 0 ? (span > 0 ? (span + step - 1) / step : 0) : (span < 0 ? (span + step + 1) / step : 0)
    try context.checkAllocation([Int(count)], elementBytes: 8)
    return [Tensor(shape: [Int(count)], ints: (0..<count).map { first + $0 * step }, dtype: start.dtype).normalized()]
  }
}

/// `Pad`: adds `pads` (begins then ends; negative crops) around the input in mode constant,
/// reflect, edge or wrap; pads from the attribute before opset 11, from inputs after, with
/// the optional `axes` input of opset 18 (https://onnx.ai/onnx/operators/onnx__Pad.html).
struct Pad: Operator {
  enum Mode: String { case constant, reflect, edge, wrap }
  let mode: Mode
  let padsAttribute: [Int]?
  let valueAttribute: Float
  let opset: Int

  init(_ node: Node, _ setup: OperatorSetup) throws {
    opset = setup.opset
    let name = node.stringAttribute("mode") ?? "constant"
    guard let mode = Mode(rawValue: name) else { throw setup.error("attribute mode '\(name)' is not constant, reflect, edge or wrap") }
    self.mode = mode
    padsAttribute = setup.opset < 11 ? (node.intsAttribute("pads") ?? node.intsAttribute("paddings")) : nil
    if setup.opset < 11 && padsAttribute == nil { throw setup.error("attribute pads is missing") }
    valueAttribute = node.floatAttribute("value") ?? 0
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "data")
    let fill = opset < 11 ? nil : Layout.optional(inputs, 2)
    if let fill, fill.count != 1 { throw context.error("input constant_value \(fill.shapeDescription) is not a scalar") }
    let (begins, shape) = try placement(of: x, inputs, context)
    try context.checkAllocation(shape, elementBytes: x.isFloat ? 4 : 8)
    if x.rank == 0 || shape == x.shape && begins.allSatisfy({ $0 == 0 }) { return [x] }
    if mode != .constant, let axis = x.shape.indices.first(where: { x.shape[$0] == 0 && shape[$0] > 0 }) {
      throw context.error("cannot \(mode.rawValue)-pad axis \(axis) of input data \(x.shapeDescription): it is empty")
    }
    let maps = x.shape.indices.map { axis in
      (0..<shape[axis]).map { Pad.source($0 - begins[axis], size: x.shape[axis], mode: mode) }
    }
    if x.isFloat {
      let value = fill?.asFloats[0] ?? valueAttribute
      return [Tensor(shape: shape, floats: Pad.copy(x.floats, x.shape, shape, maps, lastBegin: begins[x.rank - 1], fill: value), dtype: x.dtype).normalized()]
    }
    let value = fill?.ints.first ?? Int64(valueAttribute)
    return [Tensor(shape: shape, ints: Pad.copy(x.ints, x.shape, shape, maps, lastBegin: begins[x.rank - 1], fill: value), dtype: x.dtype).normalized()]
  }

  /// Where the input starts along each axis of the output (the begin pads), and the output's shape.
  func placement(of x: Tensor, _ inputs: [Tensor?], _ context: ExecutionContext) throws -> (begins: [Int], shape: [Int]) {
    let pads = try padsAttribute ?? Layout.integers(context.input(inputs, 1, "pads"), "pads", context)
    let axes = try (opset < 11 ? nil : Layout.optional(inputs, 3)).map { axes in
      try Layout.integers(axes, "axes", context).map { try Layout.axis($0, rank: x.rank, "axes", context) }
    } ?? Array(0..<x.rank)
    guard pads.count == 2 * axes.count else {
      throw context.error("input pads has \(pads.count) values, expected \(2 * axes.count) for input data \(x.shapeDescription)")
    }
    var begins = [Int](repeating: 0, count: x.rank), ends = begins
    for (index, axis) in axes.enumerated() {
      begins[axis] = pads[index]
      ends[axis] = pads[index + axes.count]
    }
    let shape = x.shape.indices.map { x.shape[$0] + begins[$0] + ends[$0] }
    guard shape.allSatisfy({ $0 >= 0 }) else { throw context.error("pads \(pads) crop input data \(x.shapeDescription) below zero") }
    return (begins, shape)
  }

  /// The input position that output position `index - begin` reads along an axis, or -1 for the fill value.
  static func source(_ index: Int, size: Int, mode: Mode) -> Int {
    if index >= 0 && index < size { return index }
    switch mode {
    case .constant: return -1
    case .edge: return index < 0 ? 0 : size - 1
    case .wrap: return ((index % size) + size) % size
    case .reflect:
      if size == 1 { return 0 }
      let period = 2 * (size - 1)
      let folded = ((index % period) + period) % period
      return folded < size ? folded : period - folded
    }
  }

  /// Output row by row; `maps[axis][j]` is the input position read at output position j (-1: fill).
  static func copy<T>(_ values: [T], _ inputShape: [Int], _ shape: [Int], _ maps: [[Int]], lastBegin: Int, fill: T) -> [T] {
    let total = shape.reduce(1, *)
    guard total > 0 else { return [] }
    let rank = shape.count, inner = shape[rank - 1], rows = total / inner
    let strides = Tensor.strides(of: inputShape)
    let last = maps[rank - 1]
    // The run of the last axis that reads the input unpadded: block-copied.
    let begin = lastBegin, runStart = min(max(begin, 0), inner)
    let runEnd = max(min(begin + inputShape[rank - 1], inner), runStart)
    return [T](unsafeUninitializedCapacity: total) { out, initialized in
      values.withUnsafeBufferPointer { source in
        let dst = out.baseAddress!
        Parallel.forEachRange(rows, work: total) { range in
          var counter = [Int](repeating: 0, count: rank - 1)
          var rest = range.lowerBound
          for axis in stride(from: rank - 2, through: 0, by: -1) {
            counter[axis] = rest % shape[axis]
            rest /= shape[axis]
          }
          for row in range {
            let line = dst + row * inner
            var base = 0, inside = true
            for axis in 0..<(rank - 1) {
              let position = maps[axis][counter[axis]]
              if position < 0 { inside = false; break }
              base += position * strides[axis]
            }
            if !inside {
              line.initialize(repeating: fill, count: inner)
            } else {
              for j in 0..<runStart { line[j] = last[j] < 0 ? fill : source[base + last[j]] }
              if runEnd > runStart { (line + runStart).initialize(from: source.baseAddress! + base + last[runStart], count: runEnd - runStart) }
              for j in runEnd..<inner { line[j] = last[j] < 0 ? fill : source[base + last[j]] }
            }
            var axis = rank - 2
            while axis >= 0 {
              counter[axis] += 1
              if counter[axis] < shape[axis] { break }
              counter[axis] = 0
              axis -= 1
            }
          }
        }
      }
      initialized = total
    }
  }
}

/// `DepthToSpace`: moves blocks of channels into `blocksize` x `blocksize` spatial tiles, in
/// DCR (default) or CRD order (https://onnx.ai/onnx/operators/onnx__DepthToSpace.html).
struct DepthToSpace: Operator {
  let blocksize: Int
  let columnRowDepth: Bool

  init(_ node: Node, _ setup: OperatorSetup) throws {
    guard let blocksize = node.intAttribute("blocksize"), blocksize > 0 else { throw setup.error("attribute blocksize is missing or not positive") }
    self.blocksize = blocksize
    let mode = node.stringAttribute("mode") ?? "DCR"
    guard mode == "DCR" || mode == "CRD" else { throw setup.error("attribute mode '\(mode)' is not DCR or CRD") }
    columnRowDepth = mode == "CRD"
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "input")
    guard x.rank == 4 else { throw context.error("input \(x.shapeDescription) has \(x.rank) dims, expected 4") }
    let (n, c, h, w, b) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3], blocksize)
    guard c % (b * b) == 0 else { throw context.error("input has \(c) channels, not a multiple of blocksize² = \(b * b)") }
    let depth = c / (b * b), plane = h * w
    // Output viewed as [N, depth, H, b, W, b]; strides into the input viewed per mode.
    let (depthStride, rowStride, columnStride) = columnRowDepth ? (b * b * plane, b * plane, plane) : (plane, b * depth * plane, depth * plane)
    let strides = [c * plane, depthStride, w, rowStride, 1, columnStride]
    return [x.strided(offset: 0, strides: strides, shape: [n, depth, h, b, w, b]).reshaped([n, depth, h * b, w * b])]
  }
}

/// `SpaceToDepth`: moves `blocksize` x `blocksize` spatial tiles into channels, the inverse of
/// DepthToSpace; channels ordered block-major (DCR, the default) or channel-major (CRD, a newer
/// `mode` attribute) (https://onnx.ai/onnx/operators/onnx__SpaceToDepth.html).
struct SpaceToDepth: Operator {
  let blocksize: Int
  let columnRowDepth: Bool

  init(_ node: Node, _ setup: OperatorSetup) throws {
    guard let blocksize = node.intAttribute("blocksize"), blocksize > 0 else { throw setup.error("attribute blocksize is missing or not positive") }
    self.blocksize = blocksize
    let mode = node.stringAttribute("mode") ?? "DCR"
    guard mode == "DCR" || mode == "CRD" else { throw setup.error("attribute mode '\(mode)' is not DCR or CRD") }
    columnRowDepth = mode == "CRD"
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "input")
    guard x.rank == 4 else { throw context.error("input \(x.shapeDescription) has \(x.rank) dims, expected 4") }
    let (n, c, h, w, b) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3], blocksize)
    guard h % b == 0, w % b == 0 else { throw context.error("input \(x.shapeDescription) has spatial dims not divisible by blocksize \(b)") }
    // Output viewed as [N, b (row), b (column), C, H/b, W/b] (DCR) or [N, C, b, b, H/b, W/b] (CRD).
    let (shape, strides) = columnRowDepth
      ? ([n, c, b, b, h / b, w / b], [c * h * w, h * w, w, 1, b * w, b])
      : ([n, b, b, c, h / b, w / b], [c * h * w, w, 1, h * w, b * w, b])
    return [x.strided(offset: 0, strides: strides, shape: shape).reshaped([n, c * b * b, h / b, w / b])]
  }
}

/// Layout helpers of the shape operators (also used for channels-last copies).
enum Layout {
  /// The input at `index` when the node gives it.
  static func optional(_ inputs: [Tensor?], _ index: Int) -> Tensor? { index < inputs.count ? inputs[index] : nil }

  /// An integer input (shape, axes, pads...) as Ints.
  static func integers(_ tensor: Tensor, _ name: String, _ context: ExecutionContext) throws -> [Int] {
    guard !tensor.isFloat else { throw context.error("input \(name) is \(tensor.dtype), expected an integer tensor") }
    return tensor.ints.map { Int($0) }
  }

  /// `axis` in `-rank..<rank`, made non-negative.
  static func axis(_ axis: Int, rank: Int, _ name: String, _ context: ExecutionContext) throws -> Int {
    guard axis >= -rank && axis < rank else { throw context.error("\(name) \(axis) is out of range for \(rank) dims") }
    return axis < 0 ? axis + rank : axis
  }

  /// A row-major array of `shape` whose element at index `i` is `source[offset + Σ i[a] * strides[a]]`
  /// (strides may be 0 or negative). Axes that are contiguous in the source are merged first, so
  /// the inner loop is a block copy whenever it can be.
  static func gather<T>(_ source: UnsafeBufferPointer<T>, offset: Int, strides: [Int], shape: [Int]) -> [T] {
    var dims: [Int] = [], steps: [Int] = []
    for (dim, step) in zip(shape, strides) {
      if dim == 0 { return [] }
      if dim == 1 { continue }
      if let outer = dims.last, steps[steps.count - 1] == step * dim {
        dims[dims.count - 1] = outer * dim
        steps[steps.count - 1] = step
      } else {
        dims.append(dim)
        steps.append(step)
      }
    }
    guard let inner = dims.popLast() else { return [source[offset]] }
    let innerStep = steps.removeLast()
    let total = inner * dims.reduce(1, *), rows = total / inner
    let src = source.baseAddress!
    if innerStep != 1 && innerStep != 0, steps.last == 1, dims.last! >= 8, inner >= 8 {
      // A (batched) 2-D transpose: reading rows of the source across the output's inner axis
      // would touch a new cache line per element, so copy in square tiles instead.
      let sourceRows = dims.removeLast()
      steps.removeLast()
      return transposeTiles(src, offset: offset, batchDims: dims, batchSteps: steps, rows: sourceRows, columns: inner, columnStep: innerStep)
    }
    let outerDims = dims, outerSteps = steps
    return [T](unsafeUninitializedCapacity: total) { out, initialized in
      let dst = out.baseAddress!
      Parallel.forEachRange(rows, work: total) { range in
        var counter = [Int](repeating: 0, count: outerDims.count)
        var base = offset, rest = range.lowerBound
        for axis in outerDims.indices.reversed() {
          counter[axis] = rest % outerDims[axis]
          rest /= outerDims[axis]
          base += counter[axis] * outerSteps[axis]
        }
        var next = dst + range.lowerBound * inner
        for _ in range {
          let from = src + base
          switch innerStep {
          case 1: next.initialize(from: from, count: inner)
          case 0: next.initialize(repeating: from.pointee, count: inner)
          default:
            var position = 0
            for k in 0..<inner {
              (next + k).initialize(to: from[position])
              position += innerStep
            }
          }
          next += inner
          var axis = outerDims.count - 1
          while axis >= 0 {
            counter[axis] += 1
            base += outerSteps[axis]
            if counter[axis] < outerDims[axis] { break }
            base -= outerSteps[axis] * outerDims[axis]
            counter[axis] = 0
            axis -= 1
          }
        }
      }
      initialized = total
    }
  }
}

extension Layout {
  /// `out[b, r, c] = source[offset + Σ b[a] * batchSteps[a] + r + c * columnStep]` for an output of
  /// `batchDims + [rows, columns]`, tile by tile.
  static func transposeTiles<T>(
    _ source: UnsafePointer<T>, offset: Int, batchDims: [Int], batchSteps: [Int], rows: Int, columns: Int, columnStep: Int
  ) -> [T] {
    let tile = 64
    let batches = batchDims.reduce(1, *), rowTiles = (rows + tile - 1) / tile
    let total = batches * rows * columns
    return [T](unsafeUninitializedCapacity: total) { out, initialized in
      let dst = out.baseAddress!
      Parallel.forEachRange(batches * rowTiles, work: total) { range in
        for task in range {
          let batch = task / rowTiles, r0 = task % rowTiles * tile, r1 = min(r0 + tile, rows)
          var base = offset, rest = batch
          for axis in batchDims.indices.reversed() {
            base += rest % batchDims[axis] * batchSteps[axis]
            rest /= batchDims[axis]
          }
          let target = dst + batch * rows * columns
          var c0 = 0
          while c0 < columns {
            let c1 = min(c0 + tile, columns)
            for r in r0..<r1 {
              let to = target + r * columns, from = source + base + r
              for c in c0..<c1 { (to + c).initialize(to: from[c * columnStep]) }
            }
            c0 = c1
          }
        }
      }
      initialized = total
    }
  }
}

extension Tensor {
  /// A strided view of this tensor copied out (see `Layout.gather`), with the same dtype.
  fileprivate func strided(offset: Int, strides: [Int], shape: [Int]) -> Tensor {
    if isFloat {
      return Tensor(shape: shape, floats: floats.withUnsafeBufferPointer { Layout.gather($0, offset: offset, strides: strides, shape: shape) }, dtype: dtype)
    }
    return Tensor(shape: shape, ints: ints.withUnsafeBufferPointer { Layout.gather($0, offset: offset, strides: strides, shape: shape) }, dtype: dtype)
  }
}

// MARK: - Gradients

extension Layout {
  /// The gradients of an op whose output holds the input's elements in the same order (Reshape,
  /// Flatten, Squeeze, Unsqueeze): `dy` with the input's shape; nil for the other inputs.
  static func sameElements(_ inputs: [Tensor?], _ outputGradients: [Tensor?]) -> [Tensor?] {
    var result = inputs.map { _ in nil as Tensor? }
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat else { return result }
    var dx = dy.reshaped(x.shape)
    dx.dtype = x.dtype
    result[0] = dx
    return result
  }

  /// The transpose of `gather`: `out[offset + Σ i[a] * strides[a]] += values[i]` for every index i
  /// of `shape` (`values` row-major). Rows run in parallel when `disjoint` (no two indices reach
  /// the same element), serially otherwise.
  static func scatterAdd(
    _ values: UnsafeBufferPointer<Float>, into out: UnsafeMutablePointer<Float>, offset: Int, strides: [Int], shape: [Int], disjoint: Bool
  ) {
    var dims: [Int] = [], steps: [Int] = []
    for (dim, step) in zip(shape, strides) {
      if dim == 0 { return }
      if dim == 1 { continue }
      if let outer = dims.last, steps[steps.count - 1] == step * dim {
        dims[dims.count - 1] = outer * dim
        steps[steps.count - 1] = step
      } else {
        dims.append(dim)
        steps.append(step)
      }
    }
    guard let inner = dims.popLast() else {
      out[offset] += values[0]
      return
    }
    let innerStep = steps.removeLast()
    let total = inner * dims.reduce(1, *), rows = total / inner
    let src = values.baseAddress!
    let outerDims = dims, outerSteps = steps
    let body = { (range: Range<Int>) in
      var counter = [Int](repeating: 0, count: outerDims.count)
      var base = offset, rest = range.lowerBound
      for axis in outerDims.indices.reversed() {
        counter[axis] = rest % outerDims[axis]
        rest /= outerDims[axis]
        base += counter[axis] * outerSteps[axis]
      }
      var next = src + range.lowerBound * inner
      for _ in range {
        let to = out + base
        switch innerStep {
        case 1: for k in 0..<inner { to[k] += next[k] }
        case 0:
          var sum: Float = 0
          for k in 0..<inner { sum += next[k] }
          to.pointee += sum
        default:
          var position = 0
          for k in 0..<inner {
            to[position] += next[k]
            position += innerStep
          }
        }
        next += inner
        var axis = outerDims.count - 1
        while axis >= 0 {
          counter[axis] += 1
          base += outerSteps[axis]
          if counter[axis] < outerDims[axis] { break }
          base -= outerSteps[axis] * outerDims[axis]
          counter[axis] = 0
          axis -= 1
        }
      }
    }
    if disjoint { Parallel.forEachRange(rows, work: total, body) } else { body(0..<rows) }
  }

  /// The gradient of a strided view `y[i] = x[offset + Σ i[a] * strides[a]]` (Slice, DepthToSpace,
  /// SpaceToDepth): zeros of `inputShape` with `dy` added at the positions the view read.
  static func viewGradient(_ dy: Tensor, inputShape: [Int], offset: Int, strides: [Int], shape: [Int], disjoint: Bool) -> [Float] {
    var dx = [Float](repeating: 0, count: inputShape.reduce(1, *))
    dy.floats.withUnsafeBufferPointer { source in
      dx.withUnsafeMutableBufferPointer { out in
        scatterAdd(source, into: out.baseAddress!, offset: offset, strides: strides, shape: shape, disjoint: disjoint)
      }
    }
    return dx
  }

  /// Sums blocks along one axis: `values` is `[outer, map.count, inner]`, the result
  /// `[outer, size, inner]`, and row j of each block is added into row `map[j]` (skipped when -1).
  static func fold(_ values: [Float], outer: Int, map: [Int], size: Int, inner: Int) -> [Float] {
    var result = [Float](repeating: 0, count: outer * size * inner)
    let rows = map.count
    guard !result.isEmpty, rows > 0 else { return result }
    // Each task owns one outer block and one range of columns, so no two tasks write one element.
    let columns = outer >= 4 * Parallel.threads ? 1 : max(1, min(inner / 4096, 4 * Parallel.threads))
    values.withUnsafeBufferPointer { source in
      result.withUnsafeMutableBufferPointer { target in
        let src = source.baseAddress!, dst = target.baseAddress!
        Parallel.forEachRange(outer * columns, work: values.count) { range in
          for task in range {
            let o = task / columns, part = task % columns
            let c0 = inner * part / columns, c1 = inner * (part + 1) / columns
            for j in 0..<rows where map[j] >= 0 {
              let from = src + (o * rows + j) * inner, to = dst + (o * size + map[j]) * inner
              for c in c0..<c1 { to[c] += from[c] }
            }
          }
        }
      }
    }
    return result
  }
}

/// Ops that only relabel the shape: the gradient is dY with the input's shape.
protocol ShapeRelabeling: DifferentiableOperator {}

extension ShapeRelabeling {
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    Layout.sameElements(inputs, outputGradients)
  }
}

extension Reshape: ShapeRelabeling {}
extension Flatten: ShapeRelabeling {}
extension Squeeze: ShapeRelabeling {}
extension Unsqueeze: ShapeRelabeling {}

extension Transpose: DifferentiableOperator {
  /// The inverse permutation of `dy`.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat else { return [nil] }
    let perm = self.perm ?? Array((0..<x.rank).reversed())
    if perm == Array(0..<x.rank) { return [dy] }
    var inverse = perm
    for (axis, source) in perm.enumerated() { inverse[source] = axis }
    let strides = dy.strides
    var dx = dy.strided(offset: 0, strides: inverse.map { strides[$0] }, shape: x.shape)
    dx.dtype = x.dtype
    return [dx]
  }
}

extension Concat: DifferentiableOperator {
  /// Each input gets its block of `dy` along the axis.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let first = inputs.compactMap({ $0 }).first, first.isFloat else { return inputs.map { _ in nil } }
    let axis = try Layout.axis(self.axis, rank: first.rank, "axis", context)
    let strides = dy.strides
    var start = 0
    return inputs.map { input -> Tensor? in
      guard let input else { return nil }
      defer { start += input.shape[axis] }
      var dx = input.shape == dy.shape ? dy : dy.strided(offset: start * strides[axis], strides: strides, shape: input.shape)
      dx.dtype = input.dtype
      return dx
    }
  }
}

extension Split: DifferentiableOperator {
  /// The output gradients joined along the axis (zeros for outputs without one).
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    var result = inputs.map { _ in nil as Tensor? }
    guard let x = inputs[0], x.isFloat, outputGradients.contains(where: { $0 != nil }) else { return result }
    let axis = try Layout.axis(self.axis, rank: x.rank, "axis", context)
    let outer = x.shape[..<axis].reduce(1, *), inner = x.shape[(axis + 1)...].reduce(1, *)
    let parts = outputs.indices.map { index in
      (index < outputGradients.count ? outputGradients[index]?.floats : nil) ?? [Float](repeating: 0, count: outputs[index].count)
    }
    let blocks = outputs.map { $0.shape[axis] * inner }
    result[0] = Tensor(shape: x.shape, floats: Concat.join(parts, blocks: blocks, outer: outer), dtype: x.dtype)
    return result
  }
}

extension StridedSlice: DifferentiableOperator {
  /// `dy` placed where the slice read, zeros elsewhere.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    var result = inputs.map { _ in nil as Tensor? }
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat else { return result }
    let view = try self.view(of: x, inputs, context)
    let dx = Layout.viewGradient(dy, inputShape: x.shape, offset: view.offset, strides: view.strides, shape: view.shape, disjoint: true)
    result[0] = Tensor(shape: x.shape, floats: dx, dtype: x.dtype)
    return result
  }
}

extension Expand: DifferentiableOperator {
  /// `dy` in the broadcast shape; the tape sums it down to the input's shape.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat else { return [nil, nil] }
    var dx = dy
    dx.dtype = x.dtype
    return [dx, nil]
  }
}

extension Tile: DifferentiableOperator {
  /// The sum of `dy` over the copies: `dy` viewed as `[r0, d0, r1, d1, ...]` is permuted to
  /// `[r0, r1, ..., d0, d1, ...]`, then its input-sized blocks are added up.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat else { return [nil, nil] }
    let repeats = zip(dy.shape, x.shape).map { $1 == 0 ? 0 : $0 / $1 }
    let copies = repeats.reduce(1, *), size = x.count
    if copies == 1 || size == 0 {
      var dx = dy.reshaped(x.shape)
      dx.dtype = x.dtype
      return [dx, nil]
    }
    // Strides of dy's [r0, d0, r1, d1, ...] view, taken in the order [r0, r1, ..., d0, d1, ...].
    let rank = x.rank
    let virtual = Tensor.strides(of: x.shape.indices.flatMap { [repeats[$0], x.shape[$0]] })
    let order = (0..<rank).map { 2 * $0 } + (0..<rank).map { 2 * $0 + 1 }
    let grouped = dy.strided(offset: 0, strides: order.map { virtual[$0] }, shape: repeats + x.shape).floats
    var dx = [Float](repeating: 0, count: size)
    let chunks = max(1, min(size / 4096, 4 * Parallel.threads))
    grouped.withUnsafeBufferPointer { source in
      dx.withUnsafeMutableBufferPointer { target in
        let src = source.baseAddress!, dst = target.baseAddress!
        Parallel.forEachRange(chunks, work: grouped.count) { range in
          for chunk in range {
            let c0 = size * chunk / chunks, c1 = size * (chunk + 1) / chunks
            for copy in 0..<copies {
              let from = src + copy * size
              for c in c0..<c1 { dst[c] += from[c] }
            }
          }
        }
      }
    }
    return [Tensor(shape: x.shape, floats: dx, dtype: x.dtype), nil]
  }
}

extension Pad: DifferentiableOperator {
  /// Each output element's gradient goes to the input element it copied (reflect, edge and wrap
  /// read some inputs several times: those add up), one axis at a time. In constant mode the
  /// constant_value input gets the sum over the filled positions.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    var result = inputs.map { _ in nil as Tensor? }
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat else { return result }
    let (begins, shape) = try placement(of: x, inputs, context)
    var gradient = dy.floats, current = dy.shape
    if x.rank > 0 && !(shape == x.shape && begins.allSatisfy({ $0 == 0 })) {
      for axis in 0..<x.rank where current[axis] != x.shape[axis] || begins[axis] != 0 {
        let size = x.shape[axis]
        let map = (0..<current[axis]).map { Pad.source($0 - begins[axis], size: size, mode: mode) }
        let outer = current[..<axis].reduce(1, *), inner = current[(axis + 1)...].reduce(1, *)
        gradient = Layout.fold(gradient, outer: outer, map: map, size: size, inner: inner)
        current[axis] = size
      }
    }
    if mode == .constant, opset >= 11, let fill = Layout.optional(inputs, 2), fill.isFloat {
      // Every output element not filled passes its gradient to exactly one input element.
      let passed = gradient.reduce(0.0) { $0 + Double($1) }, total = dy.floats.reduce(0.0) { $0 + Double($1) }
      result[2] = Tensor(shape: fill.shape, floats: [Float(total - passed)], dtype: fill.dtype)
    }
    result[0] = Tensor(shape: x.shape, floats: gradient, dtype: x.dtype)
    return result
  }
}

extension DepthToSpace: DifferentiableOperator {
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat, x.rank == 4 else { return [nil] }
    let (n, c, h, w, b) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3], blocksize)
    let depth = c / (b * b), plane = h * w
    let (depthStride, rowStride, columnStride) = columnRowDepth ? (b * b * plane, b * plane, plane) : (plane, b * depth * plane, depth * plane)
    let strides = [c * plane, depthStride, w, rowStride, 1, columnStride]
    let dx = Layout.viewGradient(dy, inputShape: x.shape, offset: 0, strides: strides, shape: [n, depth, h, b, w, b], disjoint: true)
    return [Tensor(shape: x.shape, floats: dx, dtype: x.dtype)]
  }
}

extension SpaceToDepth: DifferentiableOperator {
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat, x.rank == 4 else { return [nil] }
    let (n, c, h, w, b) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3], blocksize)
    let (shape, strides) = columnRowDepth
      ? ([n, c, b, b, h / b, w / b], [c * h * w, h * w, w, 1, b * w, b])
      : ([n, b, b, c, h / b, w / b], [c * h * w, w, 1, h * w, b * w, b])
    let dx = Layout.viewGradient(dy, inputShape: x.shape, offset: 0, strides: strides, shape: shape, disjoint: true)
    return [Tensor(shape: x.shape, floats: dx, dtype: x.dtype)]
  }
}
