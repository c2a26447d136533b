/// Graph rewrites that save passes over memory: a Conv whose output is used only by an inference
/// BatchNormalization with constant statistics (folded into its weights), an Add (a residual
/// connection) and/or an activation (Relu, LeakyRelu, Clip with constant bounds) absorbs them;
/// PyTorch's exported GroupNorm becomes one node (`FusedGroupNormalization`). The fused Conv
/// carries `distill.residual` (its extra 4th input is added to the
/// result) and `distill.activation` attributes. Values named in `keep` (taps, graph outputs) are never
/// fused away.
enum Fusion {
  static let activationAttribute = "distill.activation"
  static let residualAttribute = "distill.residual"
  /// The domain of operators only fusion creates (`fusedOperators`).
  static let domain = "distill"

  /// Without `foldBatchNorm` (training, where BatchNormalization uses batch statistics) no
  /// BatchNormalization is folded; the fused nodes differentiate through what they absorbed.
  static func fuse(_ graph: Graph, keep: Set<String>, foldBatchNorm: Bool = true) -> Graph {
    var nodes = graph.nodes
    var kept = keep.union(graph.outputs.map(\.name))
    for subgraph in graph.nestedGraphs { kept.formUnion(subgraph.outerReferences) }
    var consumers: [String: Int] = [:]
    for node in nodes { for input in node.inputs where !input.isEmpty { consumers[input, default: 0] += 1 } }
    var producer: [String: Int] = [:]
    for (index, node) in nodes.enumerated() { for output in node.outputs { producer[output] = index } }
    // Constant values: initializers and Constant nodes' tensors (Paddle exports keep weights there).
    var constants = Dictionary(
      graph.initializers.compactMap { tensor in tensor.name.map { ($0, tensor) } }, uniquingKeysWith: { first, _ in first })
    for node in nodes where node.outputs.count == 1 && Graph.canonicalDomain(node.domain).isEmpty {
      if node.opType == "Constant", case .tensor(let tensor)? = node.attribute("value")?.value { constants[node.outputs[0]] = tensor }
      // PyTorch's exporter reads parameters it merged through Identity copies.
      if node.opType == "Identity", let source = node.inputs.first.flatMap({ constants[$0] }) { constants[node.outputs[0]] = source }
    }
    var removed = Set<Int>()

    func soleConsumer(of value: String) -> Int? {
      guard consumers[value] == 1, !kept.contains(value) else { return nil }
      return nodes.indices.first { !removed.contains($0) && nodes[$0].inputs.contains(value) }
    }
    func scalar(_ name: String?) -> Float? {
      guard let name, let tensor = constants[name], tensor.dataType == .float, tensor.elementCount == 1 else { return nil }
      return tensor.bytes.withUnsafeBytes { $0.load(as: Float.self) }
    }

    for index in nodes.indices where !removed.contains(index) {
      guard let fused = groupNormalization(at: index, nodes, constants, producer, soleConsumer) else { continue }
      removed.formUnion(fused.absorbed)
      removed.remove(fused.position)
      nodes[fused.position] = fused.node
    }

    var folded: [TensorValue] = []
    for index in nodes.indices where nodes[index].opType == "Conv" && Graph.canonicalDomain(nodes[index].domain).isEmpty {
      guard nodes[index].outputs.count == 1 else { continue }
      // The fused node takes the place of the last node it absorbs: its inputs are all ready by then.
      var conv = nodes[index]
      var position = index
      var fusedNames: [String] = []
      func absorb(_ next: Int) {
        removed.insert(position)
        position = next
      }
      // Inference BatchNormalization with constant statistics folds into new weights and bias.
      if foldBatchNorm, let bnIndex = soleConsumer(of: conv.outputs[0]), nodes[bnIndex].opType == "BatchNormalization",
        nodes[bnIndex].outputs.filter({ !$0.isEmpty }).count == 1,
        let (weights, bias) = foldedBatchNorm(conv, nodes[bnIndex], constants)
      {
        conv.inputs = [conv.inputs[0], weights.name!, bias.name!]
        folded += [weights, bias]
        conv.outputs = [nodes[bnIndex].outputs[0]]
        absorb(bnIndex)
        fusedNames.append("BatchNormalization")
      }
      // Residual: Add(conv, other).
      if let addIndex = soleConsumer(of: conv.outputs[0]), nodes[addIndex].opType == "Add", nodes[addIndex].inputs.count == 2,
        nodes[addIndex].inputs[0] != nodes[addIndex].inputs[1]
      {
        let other = nodes[addIndex].inputs[0] == conv.outputs[0] ? nodes[addIndex].inputs[1] : nodes[addIndex].inputs[0]
        while conv.inputs.count < 3 { conv.inputs.append("") }
        conv.inputs.append(other)
        conv.attributes.append(Attribute(name: residualAttribute, value: .int(1)))
        conv.outputs = [nodes[addIndex].outputs[0]]
        absorb(addIndex)
        fusedNames.append("Add")
      }
      if let actIndex = soleConsumer(of: conv.outputs[0]) {
        let activation = nodes[actIndex]
        var spec: [Float]?
        switch activation.opType {
        case "Relu": spec = [0]
        case "LeakyRelu": spec = [1, activation.floatAttribute("alpha") ?? 0.01]
        case "Clip":
          let low = activation.inputs.count > 1 ? scalar(activation.inputs[1]) : activation.floatAttribute("min")
          let high = activation.inputs.count > 2 ? scalar(activation.inputs[2]) : activation.floatAttribute("max")
          let hasMin = activation.inputs.count > 1 && !activation.inputs[1].isEmpty
          let hasMax = activation.inputs.count > 2 && !activation.inputs[2].isEmpty
          if (hasMin && low == nil) || (hasMax && high == nil) { break }
          spec = [2, low ?? -.greatestFiniteMagnitude, high ?? .greatestFiniteMagnitude]
        default: break
        }
        if let spec, Graph.canonicalDomain(activation.domain).isEmpty {
          conv.attributes.append(Attribute(name: activationAttribute, value: .floats(spec)))
          conv.outputs = [activation.outputs[0]]
          absorb(actIndex)
          fusedNames.append(activation.opType)
        }
      }
      if !fusedNames.isEmpty {
        conv.docString = "fused with " + fusedNames.joined(separator: ", ")
        nodes[position] = conv
      }
    }
    var result = graph
    result.nodes = nodes.enumerated().filter { !removed.contains($0.offset) }.map(\.element)
    result.initializers += folded
    return result
  }

  /// PyTorch's export of GroupNorm starting at the Reshape `nodes[start]`: Reshape(X, [0, G, -1]),
  /// InstanceNormalization with constant scale and bias, Reshape to Shape(X), Mul and Add by
  /// constants of one value per channel ([C, 1, 1] or [1, C, 1, 1]), and optionally Relu, each the
  /// sole reader of the one before. The fused node (`FusedGroupNormalization`) goes where the last
  /// absorbed node was; `absorbed` lists every node it replaces.
  private static func groupNormalization(
    at start: Int, _ nodes: [Node], _ constants: [String: TensorValue], _ producer: [String: Int], _ soleConsumer: (String) -> Int?
  ) -> (node: Node, position: Int, absorbed: [Int])? {
    func isDefault(_ node: Node, _ type: String) -> Bool { node.opType == type && Graph.canonicalDomain(node.domain).isEmpty }
    func ints(_ name: String) -> [Int64]? {
      guard let tensor = constants[name], tensor.dataType == .int64 else { return nil }
      return tensor.bytes.withUnsafeBytes { Array($0.bindMemory(to: Int64.self)) }
    }
    /// The other input of a binary `node` reading `value`, when it is a per-channel constant.
    func perChannel(_ node: Node, reading value: String) -> String? {
      guard node.inputs.count == 2, node.inputs.contains(value), node.inputs[0] != node.inputs[1] else { return nil }
      let other = node.inputs[0] == value ? node.inputs[1] : node.inputs[0]
      guard let tensor = constants[other], tensor.dataType == .float, tensor.elementCount > 1 else { return nil }
      let dims = tensor.dims.map { Int($0) }
      return dims == [dims[0], 1, 1] || (dims.count == 4 && dims == [1, dims[1], 1, 1]) ? other : nil
    }
    let reshape = nodes[start]
    guard isDefault(reshape, "Reshape"), reshape.inputs.count == 2, (reshape.intAttribute("allowzero") ?? 0) == 0,
      let target = ints(reshape.inputs[1]), target.count == 3, target[0] == 0, target[1] > 0, target[2] == -1,
      let normIndex = soleConsumer(reshape.outputs[0]), isDefault(nodes[normIndex], "InstanceNormalization"),
      nodes[normIndex].inputs.count == 3, nodes[normIndex].inputs[0] == reshape.outputs[0],
      nodes[normIndex].inputs[1...].allSatisfy({ constants[$0]?.dataType == .float && constants[$0]?.elementCount == Int(target[1]) }),
      let backIndex = soleConsumer(nodes[normIndex].outputs[0]), isDefault(nodes[backIndex], "Reshape"),
      nodes[backIndex].inputs.count == 2, nodes[backIndex].inputs[0] == nodes[normIndex].outputs[0],
      let shapeIndex = producer[nodes[backIndex].inputs[1]], isDefault(nodes[shapeIndex], "Shape"),
      nodes[shapeIndex].inputs == [reshape.inputs[0]], nodes[shapeIndex].attributes.isEmpty,
      let mulIndex = soleConsumer(nodes[backIndex].outputs[0]), isDefault(nodes[mulIndex], "Mul"),
      let scale = perChannel(nodes[mulIndex], reading: nodes[backIndex].outputs[0]),
      let addIndex = soleConsumer(nodes[mulIndex].outputs[0]), isDefault(nodes[addIndex], "Add"),
      let bias = perChannel(nodes[addIndex], reading: nodes[mulIndex].outputs[0])
    else { return nil }
    var absorbed = [start, normIndex, backIndex, mulIndex, addIndex]
    if soleConsumer(nodes[shapeIndex].outputs[0]) == backIndex { absorbed.append(shapeIndex) }
    var fused = Node(
      name: nodes[normIndex].name, opType: "GroupNormalization", domain: domain,
      inputs: [reshape.inputs[0], nodes[normIndex].inputs[1], nodes[normIndex].inputs[2], scale, bias], outputs: nodes[addIndex].outputs,
      attributes: [Attribute(name: "epsilon", value: .float(nodes[normIndex].floatAttribute("epsilon") ?? 1e-5))],
      docString: "fused GroupNorm: Reshape, InstanceNormalization, Reshape, Mul, Add")
    if let reluIndex = soleConsumer(nodes[addIndex].outputs[0]), isDefault(nodes[reluIndex], "Relu") {
      absorbed.append(reluIndex)
      fused.attributes.append(Attribute(name: activationAttribute, value: .floats([0])))
      fused.outputs = nodes[reluIndex].outputs
      fused.docString! += ", Relu"
    }
    return (fused, absorbed.max()!, absorbed)
  }

  /// New weights and bias for `conv` followed by inference-mode `batchNorm`:
  /// W' = W * s, b' = (b - mean) * s + beta with s = gamma / sqrt(var + epsilon), per output channel.
  private static func foldedBatchNorm(_ conv: Node, _ batchNorm: Node, _ constants: [String: TensorValue])
    -> (TensorValue, TensorValue)?
  {
    guard (batchNorm.intAttribute("training_mode") ?? 0) == 0, batchNorm.inputs.count == 5,
      let weights = constants[conv.inputs[1]], weights.dataType == .float, weights.dims.count >= 3
    else { return nil }
    let parameters = batchNorm.inputs[1...4].map { constants[$0] }
    guard parameters.allSatisfy({ $0?.dataType == .float }) else { return nil }
    let filters = Int(weights.dims[0])
    let values = parameters.map { $0!.bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) } }
    guard values.allSatisfy({ $0.count == filters }) else { return nil }
    let (gamma, beta, mean, variance) = (values[0], values[1], values[2], values[3])
    let epsilon = batchNorm.floatAttribute("epsilon") ?? 1e-5
    var bias = [Float](repeating: 0, count: filters)
    if conv.inputs.count > 2, !conv.inputs[2].isEmpty {
      guard let given = constants[conv.inputs[2]], given.dataType == .float, given.elementCount == filters else { return nil }
      bias = given.bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }
    var w = weights.bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    let perFilter = w.count / filters
    for m in 0..<filters {
      let scale = gamma[m] / (variance[m] + epsilon).squareRoot()
      for i in 0..<perFilter { w[m * perFilter + i] *= scale }
      bias[m] = (bias[m] - mean[m]) * scale + beta[m]
    }
    let base = batchNorm.outputs[0]
    func tensor(_ suffix: String, _ dims: [Int64], _ data: [Float]) -> TensorValue {
      TensorValue(name: "\(base)/distill.folded_\(suffix)", dataType: .float, dims: dims, bytes: data.withUnsafeBytes { Array($0) })
    }
    return (tensor("W", weights.dims, w), tensor("B", [Int64(filters)], bias))
  }
}

/// What a fused Conv or GroupNorm applies to its result, elementwise.
enum FusedActivation: Sendable, Hashable {
  case none
  case relu
  case leakyRelu(Float)
  case clip(Float, Float)

  init(_ node: Node) {
    guard case .floats(let spec)? = node.attribute(Fusion.activationAttribute)?.value, let kind = spec.first else {
      self = .none
      return
    }
    switch kind {
    case 0: self = .relu
    case 1: self = .leakyRelu(spec[1])
    default: self = .clip(spec[1], spec[2])
    }
  }

  /// The activation of `v`.
  @inline(__always)
  func apply(_ v: Float) -> Float {
    switch self {
    case .none: return v
    case .relu: return max(v, 0)
    case .leakyRelu(let alpha): return v >= 0 ? v : alpha * v
    case .clip(let low, let high): return min(max(v, low), high)
    }
  }

  /// The gradient `dy` of the activation's results `y` carried back through it: dy times the
  /// activation's slope, read off its result.
  func backward(_ dy: [Float], results y: [Float]) -> [Float] {
    if self == .none { return dy }
    let count = dy.count
    return [Float](unsafeUninitializedCapacity: count) { out, initialized in
      dy.withUnsafeBufferPointer { source in
        y.withUnsafeBufferPointer { result in
          let (g, y, o) = (source.baseAddress!, result.baseAddress!, out.baseAddress!)
          Parallel.forEachRange(count, work: count) { range in
            switch self {
            case .none: for i in range { o[i] = g[i] }
            case .relu: for i in range { o[i] = y[i] > 0 ? g[i] : 0 }
            case .leakyRelu(let alpha): for i in range { o[i] = y[i] < 0 ? g[i] * alpha : g[i] }
            case .clip(let low, let high): for i in range { o[i] = y[i] <= low || y[i] >= high ? 0 : g[i] }
            }
          }
        }
      }
      initialized = count
    }
  }
}
