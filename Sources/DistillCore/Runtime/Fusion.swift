/// Inference-time graph rewrites that save passes over memory: a Conv whose output is used only by
/// an inference BatchNormalization with constant statistics (folded into its weights), an Add (a
/// residual connection) and/or an activation (Relu, LeakyRelu, Clip with constant bounds) absorbs
/// them. The fused Conv carries `distill.residual` (its extra 4th input is added to the
/// result) and `distill.activation` attributes. Values named in `keep` (taps, graph outputs) are never
/// fused away.
enum Fusion {
  static let activationAttribute = "distill.activation"
  static let residualAttribute = "distill.residual"

  /// Without `foldBatchNorm` (training, where BatchNormalization uses batch statistics) only
  /// residual Adds and activations are fused; fused convolutions differentiate through both.
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
    for node in nodes where node.opType == "Constant" && node.outputs.count == 1 {
      if case .tensor(let tensor)? = node.attribute("value")?.value { constants[node.outputs[0]] = tensor }
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

/// What a fused Conv applies to its result, elementwise.
enum FusedActivation: Sendable, Equatable {
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
}
