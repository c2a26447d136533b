import Foundation

// The ONNX training operators (domain ai.onnx.preview.training): Gradient, which differentiates
// part of its own graph with the Tape, and the optimizer steps Adagrad, Adam and Momentum.
// Specs: https://onnx.ai/onnx/operators/ (the ai.onnx.preview.training pages).

let trainingOperators: [(String, any Operator.Type)] = [
  ("Adagrad", Adagrad.self), ("Adam", Adam.self), ("Gradient", GradientOperator.self), ("Momentum", Momentum.self),
]

/// [Gradient](https://onnx.ai/onnx/operators/onnx_aionnxpreviewtraining_Gradient.html): the
/// gradient of the value named by `y` with respect to each value named in `xs`, at the values given
/// as the node's inputs (those of `xs`, then those of `zs`, the non-differentiated independent
/// variables). Output i is dy/d xs[i]; y's gradient is seeded with ones, so for a non-scalar y it is
/// the gradient of sum(y).
///
/// When prepared, the nodes of the enclosing graph that compute `y` from `xs` and `zs` are cut out
/// into a graph of their own (inputs: `xs` then `zs`; output: `y`) and prepared unfused. Each run
/// records that graph at the node's inputs and runs the Tape back from `y`. Other values the cut-out
/// nodes read (initializers, values of enclosing graphs) are read from the running graph, so
/// updated parameters are seen.
struct GradientOperator: Operator {
  let xs: [String]
  let zs: [String]
  let y: String
  let interpreter: Interpreter
  /// Values the cut-out nodes read that are neither inputs (`xs`, `zs`) nor computed by them.
  let outerReads: [String]

  init(_ node: Node, _ setup: OperatorSetup) throws {
    func strings(_ name: String) -> [String]? {
      guard case .strings(let values)? = node.attribute(name)?.value else { return nil }
      return values.map { String(decoding: $0, as: UTF8.self) }
    }
    guard let xs = strings("xs"), !xs.isEmpty else { throw setup.error("attribute xs (the names to differentiate by) is missing") }
    guard let y = node.stringAttribute("y"), !y.isEmpty else { throw setup.error("attribute y (the value to differentiate) is missing") }
    self.xs = xs
    zs = strings("zs") ?? []
    self.y = y
    guard node.inputs.count == xs.count + zs.count else {
      throw setup.error("has \(node.inputs.count) inputs; xs and zs name \(xs.count + zs.count) values, one input each")
    }
    guard node.outputs.count <= xs.count else {
      throw setup.error("has \(node.outputs.count) outputs; xs names \(xs.count) values, one gradient each")
    }

    // Walk back from y to the independent variables, collecting the nodes on the way.
    let graph = setup.graph
    var producer: [String: Int] = [:]
    for (index, candidate) in graph.nodes.enumerated() {
      for output in candidate.outputs where !output.isEmpty { producer[output] = index }
    }
    let independent = Set(xs + zs)
    var picked = Set<Int>()
    var visited = Set<String>()
    var pending = [y]
    while let name = pending.popLast() {
      guard visited.insert(name).inserted, !independent.contains(name), let index = producer[name] else { continue }
      picked.insert(index)
      let step = graph.nodes[index]
      pending += step.inputs.filter { !$0.isEmpty }
      for subgraph in step.subgraphs { pending += subgraph.outerReferences }
    }
    guard independent.contains(y) || producer[y] != nil else {
      throw setup.error("y '\(y)' is not computed by a node of this graph")
    }
    var slice = Graph()
    slice.name = "gradient of \(y)"
    slice.nodes = picked.sorted().map { graph.nodes[$0] }
    if let fused = slice.nodes.first(where: { step in
      step.attributes.contains { $0.name.hasPrefix("distill.") } || step.inputs.contains { $0.contains("/distill.folded_") }
    }) {
      throw setup.error(
        "the path from xs to y '\(y)' goes through \(fused.label), which the interpreter fused with the ops after it "
          + "(\(fused.docString ?? "fused")); fused convolutions have no gradient: prepare the interpreter with fuse: false")
    }
    slice.inputs = (xs + zs).map { ValueInfo(name: $0) }
    slice.outputs = [ValueInfo(name: y)]
    outerReads = slice.outerReferences.sorted()
    interpreter = try Interpreter(graph: slice, opsets: setup.opsets, registry: .standard, fuse: false)
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    var feeds: [String: Tensor] = [:]
    for (index, name) in (xs + zs).enumerated() {
      feeds[name] = try context.input(inputs, index, index < xs.count ? "xs[\(index)] '\(name)'" : "zs[\(index - xs.count)] '\(name)'")
    }
    for name in outerReads where context.scope(name) == nil {
      throw context.error("y '\(y)' depends on '\(name)', which is neither in xs or zs nor a value available to this node")
    }
    if interpreter.memoryBudget != context.memoryBudget { interpreter.memoryBudget = context.memoryBudget }
    let tape: Tape
    do {
      tape = try interpreter.record(feeds, training: context.training, scope: context.scope)
    } catch {
      throw context.error("computing y '\(y)': \(error)")
    }
    guard let value = tape.value(y), value.isFloat else { throw context.error("y '\(y)' is not a floating-point tensor") }
    let seed = Tensor(shape: value.shape, floats: [Float](repeating: 1, count: value.count), dtype: value.dtype)
    let gradients: [String: Tensor]
    do {
      gradients = try tape.gradients(seeds: [y: seed], targets: Set(xs))
    } catch {
      throw context.error("differentiating y '\(y)': \(error)")
    }
    return try xs.map { name in
      guard let gradient = gradients[name] else { throw context.error("no gradient for '\(name)'") }
      return gradient
    }
  }
}

/// The inputs common to the optimizer steps: a scalar learning rate R, a scalar int64 update count
/// T, then `groups` lists of `count` tensors each (X_1..X_n, G_1..G_n, ...), all of X_i's shape.
struct OptimizerInputs {
  let rate: Double
  let step: Int64
  let count: Int
  let groups: [[Tensor]]

  init(_ inputs: [Tensor?], groups: Int, names: [String], _ context: ExecutionContext) throws {
    let r = try context.input(inputs, 0, "R"), t = try context.input(inputs, 1, "T")
    guard r.count == 1, r.isFloat else { throw context.error("input R must be a floating-point scalar, got \(r.dtype) \(r.shapeDescription)") }
    guard t.count == 1, !t.isFloat else { throw context.error("input T must be an integer scalar, got \(t.dtype) \(t.shapeDescription)") }
    rate = Double(r.floats[0])
    step = t.ints[0]
    let variadic = inputs.count - 2
    guard variadic > 0, variadic % groups == 0 else {
      throw context.error("has \(variadic) inputs after R and T; expected \(names.joined(separator: ", ")) for each optimized tensor (a multiple of \(groups))")
    }
    count = variadic / groups
    var lists: [[Tensor]] = []
    for group in 0..<groups {
      var list: [Tensor] = []
      for index in 0..<count {
        let tensor = try context.input(inputs, 2 + group * count + index, "\(names[group])_\(index + 1)")
        guard tensor.isFloat else { throw context.error("input \(names[group])_\(index + 1) is \(tensor.dtype); expected a floating-point tensor") }
        if group > 0 && tensor.shape != lists[0][index].shape {
          throw context.error(
            "input \(names[group])_\(index + 1) has shape \(tensor.shapeDescription), \(names[0])_\(index + 1) has \(lists[0][index].shapeDescription)")
        }
        list.append(tensor)
      }
      lists.append(list)
    }
    self.groups = lists
  }

  /// A tensor like `like` holding `values`, rounded to its dtype.
  static func result(_ values: [Float], like: Tensor) -> Tensor {
    Tensor(shape: like.shape, floats: values, dtype: like.dtype).normalized()
  }
}

/// [Adagrad](https://onnx.ai/onnx/operators/onnx_aionnxpreviewtraining_Adagrad.html): inputs R, T,
/// X_1..X_n, G_1..G_n, H_1..H_n; outputs X_new_1..n, H_new_1..n, with
/// r = R / (1 + T * decay_factor), g = norm_coefficient * X + G, H_new = H + g * g,
/// X_new = X - r * g / (sqrt(H_new) + epsilon).
struct Adagrad: Operator {
  let decayFactor: Float
  let epsilon: Float
  let normCoefficient: Float

  init(_ node: Node, _ setup: OperatorSetup) throws {
    decayFactor = node.floatAttribute("decay_factor") ?? 0
    epsilon = node.floatAttribute("epsilon") ?? 1e-6
    normCoefficient = node.floatAttribute("norm_coefficient") ?? 0
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let given = try OptimizerInputs(inputs, groups: 3, names: ["X", "G", "H"], context)
    let r = Float(given.rate / (1 + Double(given.step) * Double(decayFactor)))
    var xs: [Tensor] = [], hs: [Tensor] = []
    for index in 0..<given.count {
      let x = given.groups[0][index].floats, g = given.groups[1][index].floats, h = given.groups[2][index].floats
      var newX = [Float](repeating: 0, count: x.count), newH = newX
      for i in x.indices {
        let regularized = normCoefficient * x[i] + g[i]
        newH[i] = h[i] + regularized * regularized
        newX[i] = x[i] - r * regularized / (newH[i].squareRoot() + epsilon)
      }
      xs.append(OptimizerInputs.result(newX, like: given.groups[0][index]))
      hs.append(OptimizerInputs.result(newH, like: given.groups[2][index]))
    }
    return xs + hs
  }
}

/// [Adam](https://onnx.ai/onnx/operators/onnx_aionnxpreviewtraining_Adam.html): inputs R, T,
/// X_1..X_n, G_1..G_n, V_1..V_n, H_1..H_n; outputs X_new, V_new, H_new for each, with
/// g = norm_coefficient * X + G, V_new = alpha * V + (1 - alpha) * g,
/// H_new = beta * H + (1 - beta) * g * g, R' = T > 0 ? R * sqrt(1 - beta^T) / (1 - alpha^T) : R,
/// X_new = (1 - norm_coefficient_post) * (X - R' * V_new / (sqrt(H_new) + epsilon)).
struct Adam: Operator {
  let alpha: Float
  let beta: Float
  let epsilon: Float
  let normCoefficient: Float
  let normCoefficientPost: Float

  init(_ node: Node, _ setup: OperatorSetup) throws {
    alpha = node.floatAttribute("alpha") ?? 0.9
    beta = node.floatAttribute("beta") ?? 0.999
    epsilon = node.floatAttribute("epsilon") ?? 1e-6
    normCoefficient = node.floatAttribute("norm_coefficient") ?? 0
    normCoefficientPost = node.floatAttribute("norm_coefficient_post") ?? 0
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let given = try OptimizerInputs(inputs, groups: 4, names: ["X", "G", "V", "H"], context)
    var rate = given.rate
    if given.step > 0 {
      let t = Double(given.step)
      rate *= (1 - pow(Double(beta), t)).squareRoot() / (1 - pow(Double(alpha), t))
    }
    let r = Float(rate), keep = 1 - normCoefficientPost
    var xs: [Tensor] = [], vs: [Tensor] = [], hs: [Tensor] = []
    for index in 0..<given.count {
      let x = given.groups[0][index].floats, g = given.groups[1][index].floats
      let v = given.groups[2][index].floats, h = given.groups[3][index].floats
      var newX = [Float](repeating: 0, count: x.count), newV = newX, newH = newX
      for i in x.indices {
        let regularized = normCoefficient * x[i] + g[i]
        newV[i] = alpha * v[i] + (1 - alpha) * regularized
        newH[i] = beta * h[i] + (1 - beta) * regularized * regularized
        newX[i] = keep * (x[i] - r * newV[i] / (newH[i].squareRoot() + epsilon))
      }
      xs.append(OptimizerInputs.result(newX, like: given.groups[0][index]))
      vs.append(OptimizerInputs.result(newV, like: given.groups[2][index]))
      hs.append(OptimizerInputs.result(newH, like: given.groups[3][index]))
    }
    return xs + vs + hs
  }
}

/// [Momentum](https://onnx.ai/onnx/operators/onnx_aionnxpreviewtraining_Momentum.html): inputs R, T,
/// X_1..X_n, G_1..G_n, V_1..V_n; outputs X_new_1..n, V_new_1..n, with g = norm_coefficient * X + G,
/// V_new = alpha * V + (T > 0 ? beta : 1) * g, and X_new = X - R * V_new (mode "standard") or
/// X_new = X - R * (g + alpha * V_new) (mode "nesterov"). Every attribute is required.
struct Momentum: Operator {
  let alpha: Float
  let beta: Float
  let normCoefficient: Float
  let nesterov: Bool

  init(_ node: Node, _ setup: OperatorSetup) throws {
    func required(_ name: String) throws -> Float {
      guard let value = node.floatAttribute(name) else { throw setup.error("attribute \(name) is missing (it has no default)") }
      return value
    }
    alpha = try required("alpha")
    beta = try required("beta")
    normCoefficient = try required("norm_coefficient")
    switch node.stringAttribute("mode") {
    case "standard": nesterov = false
    case "nesterov": nesterov = true
    case let mode?: throw setup.error("attribute mode is '\(mode)'; expected 'standard' or 'nesterov'")
    case nil: throw setup.error("attribute mode ('standard' or 'nesterov') is missing")
    }
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let given = try OptimizerInputs(inputs, groups: 3, names: ["X", "G", "V"], context)
    let r = Float(given.rate), betaAdjusted = given.step > 0 ? beta : 1
    var xs: [Tensor] = [], vs: [Tensor] = []
    for index in 0..<given.count {
      let x = given.groups[0][index].floats, g = given.groups[1][index].floats, v = given.groups[2][index].floats
      var newX = [Float](repeating: 0, count: x.count), newV = newX
      for i in x.indices {
        let regularized = normCoefficient * x[i] + g[i]
        newV[i] = alpha * v[i] + betaAdjusted * regularized
        newX[i] = x[i] - r * (nesterov ? regularized + alpha * newV[i] : newV[i])
      }
      xs.append(OptimizerInputs.result(newX, like: given.groups[0][index]))
      vs.append(OptimizerInputs.result(newV, like: given.groups[2][index]))
    }
    return xs + vs
  }
}
