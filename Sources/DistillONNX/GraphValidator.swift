import DistillCore

/// Structural checks of an imported graph and its subgraphs: SSA names, defined inputs, produced
/// outputs, operator arity, and a topological node order.
struct GraphValidator {
  let file: String

  /// Returns `graph` with its nodes in topological order (sorted if the file had them out of order).
  /// `outer` holds the names visible from enclosing graphs.
  func validated(_ graph: Graph, outer: Set<String> = []) throws -> Graph {
    let graphName = graph.name ?? "(unnamed)"
    func fail(_ problem: String) -> ONNXError { .invalidGraph(file: file, graph: graphName, problem: problem) }

    if graph.outputs.isEmpty { throw fail("declares no outputs; a graph must have at least one output") }

    var producer: [String: String] = [:]
    for input in graph.inputs {
      if producer[input.name] != nil { throw fail("graph input '\(input.name)' is declared twice") }
      producer[input.name] = "graph input"
    }
    var initializerNames = Set<String>()
    for tensor in graph.initializers {
      let name = tensor.name ?? ""
      if name.isEmpty { throw fail("an initializer has no name") }
      if !initializerNames.insert(name).inserted { throw fail("initializer '\(name)' is defined twice") }
      producer[name] = producer[name] ?? "initializer"
    }
    // A negative dim_value in a declared type (graph inputs, outputs, value_info) is how older
    // paddle2onnx and tf2onnx exports write a dynamic dimension: kept, and read as unknown
    // (`ShapeDimension.size`). Negative dims of data (tensors, run-time shapes) are refused where read.

    for node in graph.nodes {
      let label = node.label
      func nodeError(_ problem: String) -> ONNXError { .invalidNode(file: file, node: label, problem: problem) }
      if node.opType.isEmpty { throw nodeError("has no op_type") }
      if let arity = OpSchema.arity(of: node.opType, domain: node.domain) {
        if !arity.inputs.contains(node.inputs.count) {
          throw nodeError("has \(node.inputs.count) inputs; the schema allows \(OpArity.describe(arity.inputs))")
        }
        if !arity.outputs.contains(node.outputs.count) {
          throw nodeError("has \(node.outputs.count) outputs; the schema allows \(OpArity.describe(arity.outputs))")
        }
      }
      for output in node.outputs where !output.isEmpty {
        if let earlier = producer[output] {
          throw nodeError("output '\(output)' is defined twice: also by \(earlier); names must be assigned once (SSA)")
        }
        producer[output] = "node \(label)"
      }
    }

    let visible = outer.union(producer.keys)
    for node in graph.nodes {
      for input in node.inputs where !input.isEmpty && !visible.contains(input) {
        throw ONNXError.invalidNode(
          file: file, node: node.label,
          problem: "input '\(input)' is undefined: no graph input, initializer or node output has that name")
      }
    }
    for output in graph.outputs where !visible.contains(output.name) {
      throw fail("output '\(output.name)' is not produced by any node, graph input or initializer")
    }

    var result = graph
    result.nodes = try topologicallySorted(graph.nodes, fail)
    for index in result.nodes.indices {
      for attributeIndex in result.nodes[index].attributes.indices {
        switch result.nodes[index].attributes[attributeIndex].value {
        case .graph(let subgraph):
          result.nodes[index].attributes[attributeIndex].value = .graph(try validated(subgraph, outer: visible))
        case .graphs(let subgraphs):
          result.nodes[index].attributes[attributeIndex].value = .graphs(
            try subgraphs.map { try validated($0, outer: visible) })
        default:
          break
        }
      }
    }
    return result
  }

  /// Kahn's algorithm, keeping the file's order among nodes that are ready together. A node
  /// depends on the producers of its inputs and of the outer values its subgraphs read.
  private func topologicallySorted(_ nodes: [Node], _ fail: (String) -> ONNXError) throws -> [Node] {
    var producerIndex: [String: Int] = [:]
    for (index, node) in nodes.enumerated() {
      for output in node.outputs where !output.isEmpty { producerIndex[output] = index }
    }
    let dependencies: [[Int]] = nodes.map { node in
      var names = Set(node.inputs.filter { !$0.isEmpty })
      for subgraph in node.subgraphs { names.formUnion(subgraph.outerReferences) }
      return Array(Set(names.compactMap { producerIndex[$0] })).sorted()
    }
    let alreadySorted = dependencies.enumerated().allSatisfy { index, deps in deps.allSatisfy { $0 < index } }
    if alreadySorted { return nodes }

    var dependents = [[Int]](repeating: [], count: nodes.count)
    var pending = dependencies.map(\.count)
    for (index, deps) in dependencies.enumerated() { for dep in deps { dependents[dep].append(index) } }
    var ready = MinHeap(pending.indices.filter { pending[$0] == 0 })
    var order: [Int] = []
    order.reserveCapacity(nodes.count)
    while let next = ready.pop() {
      order.append(next)
      for dependent in dependents[next] {
        pending[dependent] -= 1
        if pending[dependent] == 0 { ready.push(dependent) }
      }
    }
    if order.count < nodes.count {
      throw fail(
        "nodes form a cycle: "
          + cycle(in: dependencies, pending: pending).map { nodes[$0].label }.joined(separator: " -> "))
    }
    return order.map { nodes[$0] }
  }

  /// Follows unresolved dependencies from an unsorted node until one repeats: that loop is a cycle.
  private func cycle(in dependencies: [[Int]], pending: [Int]) -> [Int] {
    var current = pending.firstIndex { $0 > 0 }!
    var seenAt: [Int: Int] = [:]
    var path: [Int] = []
    while seenAt[current] == nil {
      seenAt[current] = path.count
      path.append(current)
      current = dependencies[current].first { pending[$0] > 0 }!
    }
    return Array(path[seenAt[current]!...]) + [current]
  }
}

/// A binary min-heap of node indices.
private struct MinHeap {
  private var items: [Int] = []
  init(_ values: [Int]) { values.forEach { push($0) } }

  mutating func push(_ value: Int) {
    items.append(value)
    var child = items.count - 1
    while child > 0 {
      let parent = (child - 1) / 2
      if items[parent] <= items[child] { break }
      items.swapAt(parent, child)
      child = parent
    }
  }

  mutating func pop() -> Int? {
    guard let first = items.first else { return nil }
    let last = items.removeLast()
    if !items.isEmpty {
      items[0] = last
      var parent = 0
      while true {
        let left = 2 * parent + 1
        let right = left + 1
        var smallest = parent
        if left < items.count && items[left] < items[smallest] { smallest = left }
        if right < items.count && items[right] < items[smallest] { smallest = right }
        if smallest == parent { break }
        items.swapAt(parent, smallest)
        parent = smallest
      }
    }
    return first
  }
}
