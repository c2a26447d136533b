extension Graph {
  /// Visits every constant tensor of this graph and its subgraphs: initializers and tensor-valued
  /// attributes (Constant nodes' `value` among them), allowing them to be changed in place.
  public mutating func updateTensors(_ body: (inout TensorValue) throws -> Void) rethrows {
    for index in initializers.indices { try body(&initializers[index]) }
    for nodeIndex in nodes.indices {
      for attributeIndex in nodes[nodeIndex].attributes.indices {
        switch nodes[nodeIndex].attributes[attributeIndex].value {
        case .tensor(var tensor):
          try body(&tensor)
          nodes[nodeIndex].attributes[attributeIndex].value = .tensor(tensor)
        case .tensors(var tensors):
          for index in tensors.indices { try body(&tensors[index]) }
          nodes[nodeIndex].attributes[attributeIndex].value = .tensors(tensors)
        case .graph(var graph):
          try graph.updateTensors(body)
          nodes[nodeIndex].attributes[attributeIndex].value = .graph(graph)
        case .graphs(var graphs):
          for index in graphs.indices { try graphs[index].updateTensors(body) }
          nodes[nodeIndex].attributes[attributeIndex].value = .graphs(graphs)
        default:
          break
        }
      }
    }
  }

  /// Every constant tensor of this graph and its subgraphs, in `updateTensors` order.
  public var allTensors: [TensorValue] {
    var copy = self
    var tensors: [TensorValue] = []
    copy.updateTensors { tensors.append($0) }
    return tensors
  }
}
