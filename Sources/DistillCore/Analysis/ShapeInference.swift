/// What static analysis knows of a value: its element type, its shape (nil when the rank is
/// unknown; unknown dims are `nil` entries) and, for small integer tensors, their values.
public struct StaticValue: Sendable {
  public var type: DataType
  public var dims: [Int?]?
  public var values: [Int64]?
  /// Values of small float constants (Resize scales).
  public var floats: [Float]?

  public init(type: DataType, dims: [Int?]?, values: [Int64]? = nil) {
    self.type = type
    self.dims = dims
    self.values = values
  }

  public var rank: Int? { dims?.count }
  public var shapeDescription: String {
    guard let dims else { return "?" }
    return "[" + dims.map { $0.map(String.init) ?? "?" }.joined(separator: ",") + "]"
  }
}

/// Static shape inference for the operators detectors use, with constant folding of small
/// integer shape arithmetic (Shape -> Gather -> Concat -> Reshape/Resize chains). Values it
/// cannot work out stay unknown; declared `value_info` fills gaps.
public enum ShapeInference {
  /// Shapes of every value of `graph`. `inputShapes` fixes graph input dims (for symbolic ones).
  ///
  /// Nodes whose inputs are all small constants (Shape of a known shape, Gather, Cast, Div, Floor,
  /// Concat...) are evaluated with the interpreter's own operators for the model's `opsets`, so
  /// sizes computed at run time from the input shape (image transforms, FPN upsampling) are known.
  public static func infer(_ graph: Graph, inputShapes: [String: [Int]] = [:], opsets: [String: Int] = [:]) -> [String: StaticValue] {
    var known: [String: StaticValue] = [:]
    let declared = graph.inputs + graph.valueInfo + graph.outputs
    for info in declared {
      guard let type = info.type?.elementType else { continue }
      known[info.name] = StaticValue(
        type: type, dims: info.type?.shape.map { $0.map { $0.size.map(Int.init) } })
    }
    for (name, dims) in inputShapes { known[name] = StaticValue(type: known[name]?.type ?? .float, dims: dims) }
    for tensor in graph.initializers {
      guard let name = tensor.name else { continue }
      known[name] = StaticValue(tensor)
    }
    for node in graph.nodes {
      let inputs = node.inputs.map { $0.isEmpty ? nil : known[$0] }
      if let folded = fold(node, inputs, opsets: opsets) {
        for (output, value) in zip(node.outputs, folded) where !output.isEmpty { known[output] = value }
        continue
      }
      let results = infer(node, inputs)
      for (index, output) in node.outputs.enumerated() where !output.isEmpty && index < results.count {
        guard let result = results[index] else { continue }
        // Prefer inferred facts, keep declared dims where inference has none.
        if let declaredValue = known[output], let declaredDims = declaredValue.dims, result.dims == nil {
          known[output] = StaticValue(type: result.type, dims: declaredDims, values: result.values)
        } else {
          known[output] = result
        }
      }
    }
    return known
  }

  /// Largest tensor (elements) evaluated during inference.
  static let foldLimit = 64

  /// Runs `node` on its inputs when all are known small constants; nil when it cannot.
  static func fold(_ node: Node, _ inputs: [StaticValue?], opsets: [String: Int]) -> [StaticValue]? {
    guard !["If", "Loop", "Scan", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"]
      .contains(node.opType),
      let type = OperatorRegistry.standard.lookup(domain: node.domain, op: node.opType)
    else { return nil }
    var tensors: [Tensor?] = []
    for (index, input) in inputs.enumerated() {
      if node.inputs[index].isEmpty {
        tensors.append(nil)
        continue
      }
      guard let input, let tensor = input.constantTensor else { return nil }
      tensors.append(tensor)
    }
    let opset = opsets[Graph.canonicalDomain(node.domain)] ?? 17
    let setup = OperatorSetup(opset: opset, label: node.label) { _ in throw RuntimeError("no subgraphs while folding") }
    let context = ExecutionContext(label: node.label, memoryBudget: foldLimit * 8) { _ in nil }
    guard let op = try? type.init(node, setup), let outputs = try? op.forward(tensors, context),
      outputs.allSatisfy({ $0.count <= foldLimit })
    else { return nil }
    return outputs.map { StaticValue(constant: $0) }
  }

  private static let sameShape: Set<String> = [
    "Abs", "Acos", "Asin", "Atan", "Ceil", "Celu", "Clip", "Cos", "Cosh", "Elu", "Erf", "Exp", "Floor", "Gelu",
    "HardSigmoid", "HardSwish", "Hardmax", "Identity", "InstanceNormalization", "IsInf", "IsNaN", "LRN", "LeakyRelu",
    "Log", "LogSoftmax", "LpNormalization", "MeanVarianceNormalization", "Mish", "Neg", "Not", "Reciprocal", "Relu",
    "Round", "Selu", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Softmax", "Softplus", "Softsign", "Sqrt", "Tan",
    "Tanh", "ThresholdedRelu", "Dropout", "BatchNormalization", "LayerNormalization", "CumSum", "PRelu",
    "GroupNormalization", "Trilu",
  ]
  private static let broadcasting: Set<String> = [
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "And", "Or", "Xor", "Equal", "Greater", "GreaterOrEqual", "Less",
    "LessOrEqual", "Max", "Min", "Sum", "Mean", "Where", "BitShift",
  ]
  private static let comparisons: Set<String> = [
    "And", "Or", "Xor", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "IsInf", "IsNaN",
  ]

  // swiftlint:disable:next cyclomatic_complexity function_body_length
  static func infer(_ node: Node, _ inputs: [StaticValue?]) -> [StaticValue?] {
    guard Graph.canonicalDomain(node.domain) == "" else { return [] }
    let first = inputs.first ?? nil
    func ints(_ name: String) -> [Int]? { node.intsAttribute(name) }
    func int(_ name: String) -> Int? { node.intAttribute(name) }
    func input(_ index: Int) -> StaticValue? { index < inputs.count ? inputs[index] : nil }

    if sameShape.contains(node.opType) {
      guard let first else { return [] }
      var result = StaticValue(type: first.type, dims: first.dims)
      if node.opType == "Identity" { result.values = first.values }
      if node.opType == "Neg", let values = first.values { result.values = values.map { -$0 } }
      return [result]
    }
    if broadcasting.contains(node.opType) {
      let present = inputs.compactMap { $0 }
      guard present.count == inputs.count, !present.isEmpty else { return [] }
      let dataInputs = node.opType == "Where" ? Array(present.dropFirst()) : present
      let type = comparisons.contains(node.opType) ? DataType.bool : dataInputs[0].type
      let dims = broadcast(present.map(\.dims))
      var result = StaticValue(type: type, dims: dims)
      if present.count == 2, let a = present[0].values, let b = present[1].values, let dims,
        dims.count <= 1, let count = dims.isEmpty ? 1 : dims[0]
      {
        result.values = foldBinary(node.opType, a, b, count: count)
      }
      return [result]
    }

    switch node.opType {
    case "Constant":
      guard let attribute = node.attributes.first else { return [] }
      switch attribute.value {
      case .tensor(let tensor): return [StaticValue(tensor)]
      case .float: return [StaticValue(type: .float, dims: [])]
      case .floats(let values): return [StaticValue(type: .float, dims: [values.count])]
      case .int(let value): return [StaticValue(type: .int64, dims: [], values: [value])]
      case .ints(let values): return [StaticValue(type: .int64, dims: [values.count], values: values)]
      default: return []
      }
    case "Cast":
      guard let first else { return [] }
      let to = DataType(rawValue: Int32(int("to") ?? 1))
      return [StaticValue(type: to, dims: first.dims, values: to.isFloatingPoint ? nil : first.values)]
    case "Shape":
      guard let dims = first?.dims else { return [] }
      let rank = dims.count
      func clamp(_ value: Int) -> Int { max(0, min(rank, value < 0 ? value + rank : value)) }
      let start = clamp(int("start") ?? 0), end = clamp(int("end") ?? rank)
      let slice = start < end ? Array(dims[start..<end]) : []
      let values = slice.allSatisfy { $0 != nil } ? slice.map { Int64($0!) } : nil
      return [StaticValue(type: .int64, dims: [slice.count], values: values)]
    case "Size":
      let count = first?.dims.flatMap { dims in dims.reduce(Optional(1)) { product, dim in dim.flatMap { d in product.map { $0 * d } } } }
      return [StaticValue(type: .int64, dims: [], values: count.map { [Int64($0)] })]
    case "ConstantOfShape":
      guard let shape = first?.values else { return [StaticValue(type: .float, dims: nil)] }
      var type = DataType.float
      var values: [Int64]?
      if case .tensor(let tensor)? = node.attribute("value")?.value {
        type = tensor.dataType
        if let fill = StaticValue(tensor).values?.first, shape.count <= 1, (shape.first ?? 1) <= 64 {
          values = Array(repeating: fill, count: Int(shape.first ?? 1))
        }
      }
      return [StaticValue(type: type, dims: shape.map { Int($0) }, values: values)]
    case "Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool":
      return [convolutionShape(node, inputs)] + (node.opType == "MaxPool" ? [convolutionShape(node, inputs).map { StaticValue(type: .int64, dims: $0.dims) }] : [])
    case "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool":
      guard let first, let dims = first.dims, dims.count >= 2 else { return [] }
      return [StaticValue(type: first.type, dims: Array(dims[0..<2]) + Array(repeating: 1, count: dims.count - 2))]
    case "Gemm":
      guard let a = first?.dims, let b = input(1)?.dims, a.count == 2, b.count == 2 else { return [] }
      let m = (int("transA") ?? 0) != 0 ? a[1] : a[0]
      let n = (int("transB") ?? 0) != 0 ? b[0] : b[1]
      return [StaticValue(type: first!.type, dims: [m, n])]
    case "MatMul":
      guard let first, let a = first.dims, let b = input(1)?.dims, !a.isEmpty, !b.isEmpty else { return [] }
      let aMatrix = a.count == 1 ? [1, a[0]] : a
      let bMatrix = b.count == 1 ? [b[0], 1] : b
      guard let batch = broadcast([Array(aMatrix.dropLast(2)), Array(bMatrix.dropLast(2))]) else { return [] }
      var dims = batch
      if a.count > 1 { dims.append(aMatrix[aMatrix.count - 2]) }
      if b.count > 1 { dims.append(bMatrix[bMatrix.count - 1]) }
      return [StaticValue(type: first.type, dims: dims)]
    case "Concat":
      let present = inputs.compactMap { $0 }
      guard present.count == inputs.count, let rank = present.first?.rank, present.allSatisfy({ $0.rank == rank }),
        let axisValue = int("axis")
      else { return [] }
      let axis = axisValue < 0 ? axisValue + rank : axisValue
      var dims = present[0].dims!
      dims[axis] = present.reduce(Optional(0)) { total, value in total.flatMap { t in value.dims![axis].map { t + $0 } } }
      for position in 0..<rank where position != axis {
        dims[position] = present.compactMap { $0.dims![position] }.first
      }
      let values = present.allSatisfy { $0.values != nil } && rank == 1 ? present.flatMap { $0.values! } : nil
      return [StaticValue(type: present[0].type, dims: dims, values: values)]
    case "Flatten":
      guard let first, let dims = first.dims else { return [] }
      let axisValue = int("axis") ?? 1
      let axis = axisValue < 0 ? axisValue + dims.count : axisValue
      return [StaticValue(type: first.type, dims: [product(dims[..<axis]), product(dims[axis...])])]
    case "Reshape":
      guard let first else { return [] }
      guard let target = input(1)?.values else {
        let rank = input(1)?.dims?.first ?? nil
        return [StaticValue(type: first.type, dims: rank.map { Array(repeating: nil, count: $0) })]
      }
      let allowZero = (int("allowzero") ?? 0) != 0
      var dims: [Int?] = target.enumerated().map { index, value in
        if value == 0 && !allowZero { return first.dims.flatMap { index < $0.count ? $0[index] : nil } }
        return value < 0 ? nil : Int(value)
      }
      if let inferred = target.firstIndex(of: -1), let total = first.dims.flatMap({ product($0[...]) }) {
        let rest = dims.enumerated().filter { $0.offset != inferred }.map(\.element)
        if let restProduct = product(rest[...]), restProduct > 0 { dims[inferred] = total / restProduct }
      }
      return [StaticValue(type: first.type, dims: dims, values: first.values)]
    case "Transpose":
      guard let first, let dims = first.dims else { return [] }
      let perm = ints("perm") ?? Array((0..<dims.count).reversed())
      guard perm.count == dims.count, perm.allSatisfy({ $0 >= 0 && $0 < dims.count }) else { return [] }
      return [StaticValue(type: first.type, dims: perm.map { dims[$0] })]
    case "Squeeze", "Unsqueeze":
      guard let first, let dims = first.dims else { return [] }
      let axes = ints("axes") ?? input(1)?.values?.map { Int($0) }
      if node.opType == "Squeeze" {
        let rank = dims.count
        let squeezed = Set((axes ?? dims.indices.filter { dims[$0] == 1 }).map { $0 < 0 ? $0 + rank : $0 })
        let result = dims.enumerated().filter { !squeezed.contains($0.offset) }.map(\.element)
        return [StaticValue(type: first.type, dims: result, values: first.values)]
      }
      guard let axes else { return [] }
      let rank = dims.count + axes.count
      let inserted = Set(axes.map { $0 < 0 ? $0 + rank : $0 })
      var remaining = dims.makeIterator()
      let result: [Int?] = (0..<rank).map { inserted.contains($0) ? 1 : (remaining.next() ?? nil) }
      return [StaticValue(type: first.type, dims: result, values: first.values)]
    case "Gather":
      guard let first, let data = first.dims, let indices = input(1) else { return [] }
      let axisValue = int("axis") ?? 0
      let axis = axisValue < 0 ? axisValue + data.count : axisValue
      guard axis >= 0, axis < data.count, let indexDims = indices.dims else { return [] }
      let dims = Array(data[..<axis]) + indexDims + Array(data[(axis + 1)...])
      var values: [Int64]?
      if data.count == 1, let source = first.values, let picks = indices.values {
        values = picks.compactMap { pick in
          let index = Int(pick < 0 ? pick + Int64(source.count) : pick)
          return source.indices.contains(index) ? source[index] : nil
        }
        if values?.count != picks.count { values = nil }
      }
      return [StaticValue(type: first.type, dims: dims, values: values)]
    case "Slice":
      guard let first, let dims = first.dims else { return [] }
      let starts = ints("starts") ?? input(1)?.values?.map { Int(clamping: $0) }
      let ends = ints("ends") ?? input(2)?.values?.map { Int(clamping: $0) }
      guard let starts, let ends, starts.count == ends.count else { return [StaticValue(type: first.type, dims: dims.map { _ in nil })] }
      let axes = ints("axes") ?? input(3)?.values?.map { Int($0) } ?? Array(0..<starts.count)
      let steps = input(4)?.values?.map { Int($0) } ?? Array(repeating: 1, count: starts.count)
      var result = dims
      var values = first.values
      for (index, axisValue) in axes.enumerated() {
        let axis = axisValue < 0 ? axisValue + dims.count : axisValue
        guard axis >= 0, axis < dims.count, index < steps.count else { return [] }
        guard let size = dims[axis] else { result[axis] = nil; values = nil; continue }
        let range = sliceRange(start: starts[index], end: ends[index], step: steps[index], size: size)
        result[axis] = range.count
        if dims.count == 1, let current = values { values = range.map { current[$0] } }
      }
      return [StaticValue(type: first.type, dims: result, values: values)]
    case "Resize", "Upsample":
      guard let first, let dims = first.dims else { return [] }
      let sizes = node.opType == "Resize" ? input(3)?.values : nil
      if let sizes, sizes.count == dims.count { return [StaticValue(type: first.type, dims: sizes.map { Int($0) })] }
      let scaleInput = node.opType == "Upsample" ? input(1) : (inputs.count == 2 ? input(1) : input(2))
      guard let scales = scaleInput?.floats ?? node.floatsAttribute("scales"), scales.count == dims.count else {
        return [StaticValue(type: first.type, dims: dims.map { _ in nil })]
      }
      return [StaticValue(type: first.type, dims: zip(dims, scales).map { dim, scale in dim.map { Int((Float($0) * scale).rounded(.down)) } })]
    case "Split":
      guard let first, let dims = first.dims else { return [] }
      let axisValue = int("axis") ?? 0
      let axis = axisValue < 0 ? axisValue + dims.count : axisValue
      guard axis >= 0, axis < dims.count else { return [] }
      let count = node.outputs.count
      var parts = ints("split") ?? input(1)?.values?.map { Int($0) }
      if parts == nil, let size = dims[axis] {
        let chunk = (size + count - 1) / count
        parts = (0..<count).map { min(chunk, max(0, size - $0 * chunk)) }
      }
      return (0..<count).map { index in
        var result = dims
        result[axis] = parts.flatMap { index < $0.count ? $0[index] : nil }
        return StaticValue(type: first.type, dims: result)
      }
    case "Expand":
      guard let first, let shape = input(1)?.values else { return [] }
      return [StaticValue(type: first.type, dims: broadcast([first.dims, shape.map { Int($0) }]))]
    case "Tile":
      guard let first, let dims = first.dims, let repeats = input(1)?.values, repeats.count == dims.count else { return [] }
      return [StaticValue(type: first.type, dims: zip(dims, repeats).map { dim, times in dim.map { $0 * Int(times) } })]
    case "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
      "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin":
      guard let first, let dims = first.dims else { return [] }
      let keep = (int("keepdims") ?? 1) != 0
      let isArg = node.opType.hasPrefix("Arg")
      var axes = isArg ? [int("axis") ?? 0] : (ints("axes") ?? input(1)?.values?.map { Int($0) })
      if axes == nil || axes!.isEmpty {
        if (int("noop_with_empty_axes") ?? 0) != 0 { return [StaticValue(type: first.type, dims: dims)] }
        axes = Array(dims.indices)
      }
      let reduced = Set(axes!.map { $0 < 0 ? $0 + dims.count : $0 })
      let result: [Int?] = dims.enumerated().compactMap { index, dim in
        reduced.contains(index) ? (keep ? 1 : nil) : dim
      }
      let kept = keep ? result : dims.enumerated().filter { !reduced.contains($0.offset) }.map(\.element)
      return [StaticValue(type: isArg ? .int64 : first.type, dims: kept)]
    case "TopK":
      guard let first, let dims = first.dims else { return [] }
      let axisValue = int("axis") ?? -1
      let axis = axisValue < 0 ? axisValue + dims.count : axisValue
      guard axis >= 0, axis < dims.count else { return [] }
      var result = dims
      result[axis] = (input(1)?.values?.first).map { Int($0) } ?? int("k")
      return [StaticValue(type: first.type, dims: result), StaticValue(type: .int64, dims: result)]
    case "Pad":
      guard let first, let dims = first.dims else { return [] }
      guard let pads = ints("pads") ?? input(1)?.values?.map({ Int($0) }), pads.count == 2 * dims.count else {
        return [StaticValue(type: first.type, dims: dims.map { _ in nil })]
      }
      return [StaticValue(type: first.type, dims: dims.enumerated().map { index, dim in dim.map { $0 + pads[index] + pads[index + dims.count] } })]
    case "Range":
      guard let start = first?.values?.first, let limit = input(1)?.values?.first, let delta = input(2)?.values?.first,
        delta != 0
      else { return [StaticValue(type: first?.type ?? .int64, dims: [nil])] }
      let count = max(0, Int((Double(limit - start) / Double(delta)).rounded(.up)))
      let values = count <= 64 ? (0..<count).map { start + Int64($0) * delta } : nil
      return [StaticValue(type: first!.type, dims: [count], values: values)]
    case "DepthToSpace", "SpaceToDepth":
      guard let first, let dims = first.dims, dims.count == 4, let block = int("blocksize") else { return [] }
      if node.opType == "DepthToSpace" {
        return [StaticValue(type: first.type, dims: [dims[0], dims[1].map { $0 / (block * block) }, dims[2].map { $0 * block }, dims[3].map { $0 * block }])]
      }
      return [StaticValue(type: first.type, dims: [dims[0], dims[1].map { $0 * block * block }, dims[2].map { $0 / block }, dims[3].map { $0 / block }])]
    case "NonZero":
      return [StaticValue(type: .int64, dims: [first?.rank, nil])]
    case "NonMaxSuppression":
      return [StaticValue(type: .int64, dims: [nil, 3])]
    case "RoiAlign":
      guard let first, let dims = first.dims, dims.count == 4 else { return [] }
      return [StaticValue(type: first.type, dims: [input(1)?.dims?.first ?? nil, dims[1], int("output_height") ?? 1, int("output_width") ?? 1])]
    case "GatherElements":
      guard let first, let indices = input(1) else { return [] }
      return [StaticValue(type: first.type, dims: indices.dims)]
    case "ScatterND", "ScatterElements":
      guard let first else { return [] }
      return [StaticValue(type: first.type, dims: first.dims)]
    default:
      return []
    }
  }

  /// Output shape of Conv, ConvTranspose and the pools from kernel, strides, pads, dilations and auto_pad.
  private static func convolutionShape(_ node: Node, _ inputs: [StaticValue?]) -> StaticValue? {
    guard let first = inputs.first ?? nil, let dims = first.dims, dims.count >= 3 else { return nil }
    let spatialRank = dims.count - 2
    let weights = inputs.count > 1 ? inputs[1]?.dims : nil
    let kernel: [Int?] = node.intsAttribute("kernel_shape").map { $0.map(Optional.some) }
      ?? weights.map { Array($0.dropFirst(2)) } ?? Array(repeating: nil, count: spatialRank)
    guard kernel.count == spatialRank else { return nil }
    let strides = node.intsAttribute("strides") ?? Array(repeating: 1, count: spatialRank)
    let dilations = node.intsAttribute("dilations") ?? Array(repeating: 1, count: spatialRank)
    let pads = node.intsAttribute("pads") ?? Array(repeating: 0, count: 2 * spatialRank)
    let autoPad = node.stringAttribute("auto_pad") ?? "NOTSET"
    let ceilMode = (node.intAttribute("ceil_mode") ?? 0) != 0
    guard strides.count == spatialRank, dilations.count == spatialRank, pads.count == 2 * spatialRank else { return nil }

    var channels: Int? = dims[1]
    switch node.opType {
    case "Conv": channels = weights?[0]
    case "ConvTranspose": channels = weights.flatMap { w in w[1].map { $0 * (node.intAttribute("group") ?? 1) } }
    default: break
    }
    var out: [Int?] = [dims[0], channels]
    for axis in 0..<spatialRank {
      guard let size = dims[axis + 2], let k = kernel[axis] else { out.append(nil); continue }
      let effective = (k - 1) * dilations[axis] + 1
      let stride = strides[axis]
      if node.opType == "ConvTranspose" {
        if let shape = node.intsAttribute("output_shape"), shape.count == spatialRank { out.append(shape[axis]); continue }
        let extra = node.intsAttribute("output_padding")?[axis] ?? 0
        let total = stride * (size - 1) + extra + effective
        out.append(autoPad.hasPrefix("SAME") ? size * stride : total - pads[axis] - pads[axis + spatialRank])
        continue
      }
      switch autoPad {
      case "SAME_UPPER", "SAME_LOWER": out.append((size + stride - 1) / stride)
      case "VALID": out.append((size - effective) / stride + 1)
      default:
        let span = size + pads[axis] + pads[axis + spatialRank] - effective
        out.append((ceilMode ? (span + stride - 1) / stride : span / stride) + 1)
      }
    }
    return StaticValue(type: first.type, dims: out)
  }

  /// Numpy broadcasting of shapes; nil if any rank is unknown.
  static func broadcast(_ shapes: [[Int?]?]) -> [Int?]? {
    var result: [Int?] = []
    for shape in shapes {
      guard let shape else { return nil }
      let rank = max(result.count, shape.count)
      let a = Array(repeating: 1, count: rank - result.count) + result
      let b = Array(repeating: 1, count: rank - shape.count) + shape
      result = zip(a, b).map { x, y in
        switch (x, y) {
        case (1?, _): return y
        case (_, 1?): return x
        case (let x?, _): return x
        default: return y
        }
      }
    }
    return result
  }

  private static func product(_ dims: ArraySlice<Int?>) -> Int? {
    dims.reduce(Optional(1)) { total, dim in total.flatMap { t in dim.map { t * $0 } } }
  }

  private static func foldBinary(_ op: String, _ a: [Int64], _ b: [Int64], count: Int) -> [Int64]? {
    guard count <= 64, a.count == 1 || a.count == count, b.count == 1 || b.count == count else { return nil }
    return (0..<count).map { index -> Int64? in
      let x = a[a.count == 1 ? 0 : index], y = b[b.count == 1 ? 0 : index]
      switch op {
      case "Add": return x &+ y
      case "Sub": return x &- y
      case "Mul": return x &* y
      case "Div": return y == 0 ? nil : x / y
      case "Max": return max(x, y)
      case "Min": return min(x, y)
      default: return nil
      }
    }.reduce(Optional([Int64]())) { list, value in list.flatMap { l in value.map { l + [$0] } } }
  }

  /// Indices selected by ONNX Slice semantics (clamped start/end, any non-zero step).
  static func sliceRange(start: Int, end: Int, step: Int, size: Int) -> [Int] {
    guard step != 0 else { return [] }
    func resolve(_ value: Int) -> Int { value < 0 ? value + size : value }
    if step > 0 {
      let from = min(max(resolve(start), 0), size), to = min(max(resolve(end), 0), size)
      return from < to ? Array(stride(from: from, to: to, by: step)) : []
    }
    let from = min(max(resolve(start), -1), size - 1), to = min(max(resolve(end), -1), size - 1)
    return from > to ? Array(stride(from: from, to: to, by: step)) : []
  }
}

extension StaticValue {
  /// A fully known small tensor.
  init(constant tensor: Tensor) {
    self.init(type: tensor.dtype, dims: tensor.shape, values: tensor.isFloat ? nil : tensor.ints)
    if tensor.isFloat { floats = tensor.floats }
  }

  /// The tensor this value is, when its dims and every element are known.
  var constantTensor: Tensor? {
    guard let dims, dims.allSatisfy({ $0 != nil }) else { return nil }
    let shape = dims.map { $0! }
    let count = shape.reduce(1, *)
    if type.isFloatingPoint, let floats, floats.count == count { return Tensor(shape: shape, floats: floats, dtype: type) }
    if !type.isFloatingPoint, let values, values.count == count { return Tensor(shape: shape, ints: values, dtype: type) }
    return nil
  }

  /// Shape and, for small integer tensors, values of a constant tensor.
  public init(_ tensor: TensorValue) {
    let dims = tensor.dims.map { Int($0) as Int? }
    var values: [Int64]?
    if tensor.elementCount <= 64 {
      switch tensor.dataType {
      case .int64: values = tensor.bytes.withUnsafeBytes { Array($0.bindMemory(to: Int64.self)) }
      case .int32: values = tensor.bytes.withUnsafeBytes { $0.bindMemory(to: Int32.self).map { Int64($0) } }
      default: break
      }
    }
    self.init(type: tensor.dataType, dims: dims, values: values)
    if tensor.dataType == .float && tensor.elementCount <= 64 {
      floats = tensor.bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }
  }
}
