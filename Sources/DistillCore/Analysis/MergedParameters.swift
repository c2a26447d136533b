/// Parameters that an exporter merged because their values happened to be equal, and the rewrite
/// that gives each layer its own copy again for training.
///
/// PyTorch's TorchScript exporter, in eval mode, deduplicates initializers *by value*: in a freshly
/// initialised (or partly trained) network every BatchNormalization scale of ones, bias of zeros,
/// running mean of zeros and running variance of ones of the same width becomes one initializer,
/// and so do convolution biases of zeros. Recent versions keep each merged parameter's name as an
/// `Identity` of the surviving initializer; older ones (and other tools) let all layers read the
/// surviving initializer directly. Either way the ONNX graph says these layers share one
/// parameter: its gradient is the sum over all of them (as ONNX's `Gradient` computes), and
/// training would keep them equal forever, which the network never asked for.
///
/// An `Identity` of a float initializer whose output is read as a parameter becomes an
/// initializer of its own under the Identity's output name (the PyTorch parameter's name), holding
/// the same values; the Identity node goes. A tensor read directly by several layers is untied
/// when all of these hold:
/// - it is a float initializer read at a parameter slot (Conv/ConvTranspose W and B,
///   BatchNormalization scale, B, mean and var, Instance/Layer/GroupNormalization scale and B, Gemm B
///   and C, PRelu slope) by more than one node;
/// - all its elements are equal (what value deduplication of fresh parameters produces; weights
///   that were ever trained or randomly initialised are not);
/// - its readers are not copies of one shared module. A reader's *anchor* is the set of its
///   non-uniform float parameters (a Conv's random weight), or, when it has none (a
///   BatchNormalization, a GroupNormalization), the anchor of the node producing its data input.
///   Readers with one common anchor apply one shared module (a RetinaNet head run on every FPN level
///   shares its convolution weights, and with them its zero biases and its normalization); there
///   the tensor stays shared.
public enum MergedParameters {
  /// One merged tensor and the copies made of it: `copies[i]` is read by node `readers[i]`.
  public struct Untied: Sendable, Equatable {
    public var original: String
    public var copies: [String]
    public var readers: [String]
    public init(original: String, copies: [String], readers: [String]) {
      self.original = original
      self.copies = copies
      self.readers = readers
    }
  }

  /// Input slots holding parameters, by op type (default domain).
  static let parameterSlots: [String: Set<Int>] = [
    "BatchNormalization": [1, 2, 3, 4], "Conv": [1, 2], "ConvTranspose": [1, 2], "Gemm": [1, 2],
    "GroupNormalization": [1, 2], "InstanceNormalization": [1, 2], "LayerNormalization": [1, 2], "PRelu": [1],
  ]

  /// `graph` with every merged tensor untied: an Identity's output becomes a copy; of a tensor read
  /// directly, its first use keeps it and each other use (a node's input slot) gets a copy named
  /// `ORIGINAL@READER` (the reader's node name, or its first output; `#2`, `#3` when one node reads
  /// it at several slots). Unchanged (and `untied` empty) when nothing
  /// was merged.
  public static func untie(_ graph: Graph) -> (graph: Graph, untied: [Untied]) {
    let (withoutIdentities, fromIdentities) = untieIdentities(graph)
    let (result, direct) = untieSharedReads(withoutIdentities)
    return (result, fromIdentities + direct)
  }

  /// Identity nodes copying a float initializer that is read as a parameter become initializers.
  private static func untieIdentities(_ graph: Graph) -> (graph: Graph, untied: [Untied]) {
    var initializerIndex: [String: Int] = [:]
    for (index, tensor) in graph.initializers.enumerated() where tensor.dataType.isFloatingPoint {
      if let name = tensor.name { initializerIndex[name] = index }
    }
    var readAsParameter = Set<String>()
    for node in graph.nodes where Graph.canonicalDomain(node.domain).isEmpty {
      guard let slots = parameterSlots[node.opType] else { continue }
      for (slot, input) in node.inputs.enumerated() where slots.contains(slot) { readAsParameter.insert(input) }
    }
    let keep = Set(graph.outputs.map(\.name))
    var result = graph
    var removed = Set<Int>()
    var byOriginal: [String: Untied] = [:]
    var order: [String] = []
    for (index, node) in graph.nodes.enumerated() {
      guard node.opType == "Identity", Graph.canonicalDomain(node.domain).isEmpty, node.inputs.count == 1,
        node.outputs.count == 1, let source = initializerIndex[node.inputs[0]],
        readAsParameter.contains(node.outputs[0]), !keep.contains(node.outputs[0])
      else { continue }
      var copy = graph.initializers[source]
      copy.name = node.outputs[0]
      result.initializers.append(copy)
      removed.insert(index)
      if byOriginal[node.inputs[0]] == nil {
        order.append(node.inputs[0])
        byOriginal[node.inputs[0]] = Untied(original: node.inputs[0], copies: [], readers: [])
      }
      byOriginal[node.inputs[0]]!.copies.append(node.outputs[0])
      byOriginal[node.inputs[0]]!.readers.append(node.label)
    }
    result.nodes = graph.nodes.enumerated().filter { !removed.contains($0.offset) }.map(\.element)
    return (result, order.map { byOriginal[$0]! })
  }

  /// Tensors read directly by layers that are not copies of one module, holding one repeated value.
  private static func untieSharedReads(_ graph: Graph) -> (graph: Graph, untied: [Untied]) {
    var initializerIndex: [String: Int] = [:]
    for (index, tensor) in graph.initializers.enumerated() where tensor.dataType.isFloatingPoint {
      if let name = tensor.name { initializerIndex[name] = index }
    }
    var producer: [String: Int] = [:]
    for (index, node) in graph.nodes.enumerated() { for output in node.outputs where !output.isEmpty { producer[output] = index } }
    var uniform: [String: Bool] = [:]
    func isUniform(_ name: String) -> Bool {
      if let known = uniform[name] { return known }
      let result = initializerIndex[name].map { allElementsEqual(graph.initializers[$0]) } ?? false
      uniform[name] = result
      return result
    }
    func anchor(_ nodeIndex: Int, depth: Int = 0) -> Set<String>? {
      let node = graph.nodes[nodeIndex]
      let own = Set(node.inputs.filter { initializerIndex[$0] != nil && !isUniform($0) })
      if !own.isEmpty { return own }
      guard depth < 16, let data = node.inputs.first(where: { !$0.isEmpty && initializerIndex[$0] == nil }),
        let source = producer[data]
      else { return nil }
      return anchor(source, depth: depth + 1)
    }

    // (node, slot) pairs reading each candidate tensor at a parameter slot, in graph order.
    var readers: [String: [(node: Int, slot: Int)]] = [:]
    var order: [String] = []
    for (nodeIndex, node) in graph.nodes.enumerated() where Graph.canonicalDomain(node.domain).isEmpty {
      guard let slots = parameterSlots[node.opType] else { continue }
      for (slot, input) in node.inputs.enumerated() where slots.contains(slot) && initializerIndex[input] != nil {
        if readers[input] == nil { order.append(input) }
        readers[input, default: []].append((nodeIndex, slot))
      }
    }
    var result = graph
    var untied: [Untied] = []
    var taken = Set(graph.initializers.compactMap(\.name)).union(graph.nodes.flatMap(\.outputs)).union(graph.inputs.map(\.name))
    for name in order {
      guard let uses = readers[name], uses.count > 1, isUniform(name) else { continue }
      let anchors = uses.map { anchor($0.node) }
      if let first = anchors[0], anchors.allSatisfy({ $0 == first }) { continue }
      var entry = Untied(original: name, copies: [], readers: [])
      for use in uses.dropFirst() {
        let reader = graph.nodes[use.node]
        let label = reader.name.isEmpty ? (reader.outputs.first ?? "node\(use.node)") : reader.name
        var copyName = "\(name)@\(label)"
        var suffix = 2
        while taken.contains(copyName) {
          copyName = "\(name)@\(label)#\(suffix)"
          suffix += 1
        }
        taken.insert(copyName)
        var copy = graph.initializers[initializerIndex[name]!]
        copy.name = copyName
        result.initializers.append(copy)
        result.nodes[use.node].inputs[use.slot] = copyName
        entry.copies.append(copyName)
        entry.readers.append(reader.label)
      }
      if !entry.copies.isEmpty { untied.append(entry) }
    }
    return (result, untied)
  }

  /// `model` with its main graph untied (see `untie(_:)`).
  public static func untie(_ model: Model) -> (model: Model, untied: [Untied]) {
    guard let graph = model.graph else { return (model, []) }
    var result = model
    let (rewritten, untied) = untie(graph)
    result.graph = rewritten
    return (result, untied)
  }

  private static func allElementsEqual(_ tensor: TensorValue) -> Bool {
    guard let values = try? Tensor(tensor).floats, let first = values.first, values.count > 1 else { return false }
    return values.allSatisfy { $0 == first }
  }
}
