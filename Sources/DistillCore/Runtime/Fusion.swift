/// Inference-time graph rewrites that save passes over memory: a Conv whose output is used only by
/// an Add (a residual connection) and/or an activation (Relu, LeakyRelu, Clip with constant bounds)
/// absorbs them. The fused Conv carries `distill.residual` (its extra 4th input is added to the
/// result) and `distill.activation` attributes. Values named in `keep` (taps, graph outputs) are never
/// fused away.
enum Fusion {
  static let activationAttribute = "distill.activation"
  static let residualAttribute = "distill.residual"

  static func fuse(_ graph: Graph, keep: Set<String>) -> Graph {
    var nodes = graph.nodes
    var kept = keep.union(graph.outputs.map(\.name))
    for subgraph in graph.nestedGraphs { kept.formUnion(subgraph.outerReferences) }
    var consumers: [String: Int] = [:]
    for node in nodes { for input in node.inputs where !input.isEmpty { consumers[input, default: 0] += 1 } }
    var producer: [String: Int] = [:]
    for (index, node) in nodes.enumerated() { for output in node.outputs { producer[output] = index } }
    let constants = Dictionary(
      graph.initializers.compactMap { tensor in tensor.name.map { ($0, tensor) } }, uniquingKeysWith: { first, _ in first })
    var removed = Set<Int>()

    func soleConsumer(of value: String) -> Int? {
      guard consumers[value] == 1, !kept.contains(value) else { return nil }
      return nodes.indices.first { !removed.contains($0) && nodes[$0].inputs.contains(value) }
    }
    func scalar(_ name: String?) -> Float? {
      guard let name, !name.isEmpty else { return nil }
      if let tensor = constants[name], tensor.dataType == .float, tensor.elementCount == 1 {
        return tensor.bytes.withUnsafeBytes { $0.load(as: Float.self) }
      }
      if let index = producer[name], nodes[index].opType == "Constant", case .tensor(let tensor)? = nodes[index].attributes.first?.value,
        tensor.dataType == .float, tensor.elementCount == 1
      {
        return tensor.bytes.withUnsafeBytes { $0.load(as: Float.self) }
      }
      return nil
    }

    for index in nodes.indices where nodes[index].opType == "Conv" && Graph.canonicalDomain(nodes[index].domain).isEmpty {
      guard nodes[index].outputs.count == 1 else { continue }
      var output = nodes[index].outputs[0]
      var fusedNames: [String] = []
      // Residual: Conv -> Add(conv, other), with `other` computed before this Conv runs.
      if let addIndex = soleConsumer(of: output), nodes[addIndex].opType == "Add", nodes[addIndex].inputs.count == 2,
        nodes[addIndex].inputs[0] != nodes[addIndex].inputs[1]
      {
        let other = nodes[addIndex].inputs[0] == output ? nodes[addIndex].inputs[1] : nodes[addIndex].inputs[0]
        if (producer[other].map { $0 < index } ?? true) && !removed.contains(addIndex) {
          var conv = nodes[index]
          while conv.inputs.count < 3 { conv.inputs.append("") }
          conv.inputs.append(other)
          conv.attributes.append(Attribute(name: residualAttribute, value: .int(1)))
          output = nodes[addIndex].outputs[0]
          conv.outputs = [output]
          nodes[index] = conv
          removed.insert(addIndex)
          fusedNames.append("Add")
          consumers[other, default: 0] += 0
        }
      }
      if let actIndex = soleConsumer(of: output) {
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
          nodes[index].attributes.append(Attribute(name: activationAttribute, value: .floats(spec)))
          nodes[index].outputs = [activation.outputs[0]]
          removed.insert(actIndex)
          fusedNames.append(activation.opType)
        }
      }
      if !fusedNames.isEmpty {
        nodes[index].docString = "fused with " + fusedNames.joined(separator: ", ")
      }
    }
    var result = graph
    result.nodes = nodes.enumerated().filter { !removed.contains($0.offset) }.map(\.element)
    return result
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
