import Foundation

/// A value worth distilling at: a feature map that feeds the detection head, or a head output.
public struct TapSuggestion: Sendable, Equatable {
  public enum Kind: String, Sendable { case feature, headOutput = "head_output" }
  public var kind: Kind
  public var name: String
  /// Input size divided by the value's spatial size, when both are known.
  public var stride: Int?
  public var shape: String
  /// The node producing the value.
  public var producer: String
}

/// Finds likely distillation taps from the graph's structure. Head outputs are the outputs of
/// the last convolutions before a graph output (only reshapes, activations, concatenations and
/// decoding arithmetic follow them), or of a Relu after one when that is the graph output.
/// Walking up each head branch through single-use values, the first value used by several
/// branches (the classification and box towers, or the head and a downsampling path) is the
/// feature level that branch reads: the FPN level.
public enum TapFinder {
  public static func suggest(_ graph: Graph, shapes: [String: StaticValue]) -> [TapSuggestion] {
    var producer: [String: Node] = [:]
    var consumers: [String: [Int]] = [:]
    for (index, node) in graph.nodes.enumerated() {
      for output in node.outputs where !output.isEmpty { producer[output] = node }
      for input in Set(node.inputs) where !input.isEmpty && !["Shape", "Size"].contains(node.opType) {
        consumers[input, default: []].append(index)
      }
    }
    let graphOutputs = Set(graph.outputs.map(\.name))
    let imageSize: (Int, Int)? = graph.inputs.lazy.compactMap { input -> (Int, Int)? in
      guard let dims = shapes[input.name]?.dims, dims.count == 4, let h = dims[2], let w = dims[3] else { return nil }
      return (h, w)
    }.first
    /// The power of two nearest to input size / feature size (padded or odd inputs round).
    func stride(of name: String) -> Int? {
      guard let (height, width) = imageSize, let dims = shapes[name]?.dims, dims.count == 4,
        let h = dims[2], let w = dims[3], h > 0, w > 0
      else { return nil }
      let ratio = (Double(height) / Double(h) + Double(width) / Double(w)) / 2
      guard ratio >= 1 else { return nil }
      return 1 << Int(log2(ratio).rounded())
    }
    func isFeatureMap(_ name: String) -> Bool { shapes[name]?.rank == 4 && shapes[name]?.type.isFloatingPoint != false }

    /// True when a graph output is reachable from `name` without passing another convolution.
    func reachesOutputWithoutConv(_ name: String) -> Bool {
      var stack = [name]
      var seen: Set<String> = [name]
      while let current = stack.popLast() {
        if graphOutputs.contains(current) { return true }
        for index in consumers[current] ?? [] {
          let node = graph.nodes[index]
          if ["Conv", "ConvTranspose", "Gemm", "MatMul"].contains(node.opType) { continue }
          for output in node.outputs where !output.isEmpty && seen.insert(output).inserted { stack.append(output) }
        }
      }
      return false
    }

    var headFinal = Set<String>()
    for node in graph.nodes where node.opType == "Conv" {
      if let output = node.outputs.first, isFeatureMap(output), reachesOutputWithoutConv(output) { headFinal.insert(output) }
    }
    /// True when everything downstream of node `index` is head: it reaches head-final convs and
    /// outputs without any op that changes the spatial size (strided conv, pool, resize).
    var pureCache: [Int: Bool] = [:]
    func isPureHead(_ start: Int) -> Bool {
      if let cached = pureCache[start] { return cached }
      var stack = [start]
      var seen: Set<Int> = [start]
      var pure = true
      while let index = stack.popLast() {
        let node = graph.nodes[index]
        if node.opType == "Conv", let output = node.outputs.first, headFinal.contains(output) { continue }
        let strided = (node.intsAttribute("strides") ?? []).contains { $0 > 1 }
        if strided || ["MaxPool", "AveragePool", "Resize", "Upsample", "ConvTranspose", "RoiAlign"].contains(node.opType) {
          pure = false
          break
        }
        for output in node.outputs where !output.isEmpty {
          for next in consumers[output] ?? [] where seen.insert(next).inserted { stack.append(next) }
        }
      }
      pureCache[start] = pure
      return pure
    }
    /// Consumers of `name`, not counting a gate (x * sigmoid(x) and the like) whose output goes
    /// only to other consumers of `name`.
    func branches(of name: String) -> [Int] {
      let direct = consumers[name] ?? []
      return direct.filter { index in
        let gateOutputs = graph.nodes[index].outputs.filter { !$0.isEmpty }
        let feedsSiblingsOnly = gateOutputs.allSatisfy { output in
          let users = consumers[output] ?? []
          return !users.isEmpty && users.allSatisfy { direct.contains($0) }
        }
        return !(graph.nodes[index].inputs.count == 1 && feedsSiblingsOnly)
      }
    }

    // Walk up from each head-final conv while everything below is head. The highest value seen
    // that feeds two or more head branches is the level the towers share (RetinaNet, FCOS, SSD);
    // without one, the conv reads its level directly (YOLO).
    var headConvs: [(node: Node, level: String)] = []
    for node in graph.nodes where node.opType == "Conv" {
      guard let output = node.outputs.first, headFinal.contains(output) else { continue }
      var current = node.inputs[0]
      var sharedLevel: String?
      for _ in 0..<512 {
        let uses = branches(of: current)
        let pure = uses.filter(isPureHead)
        if pure.count >= 2 { sharedLevel = current }
        guard pure.count == uses.count, let source = producer[current], let next = source.inputs.first, !next.isEmpty
        else { break }
        current = next
      }
      headConvs.append((node, sharedLevel ?? node.inputs[0]))
    }
    var suggestions: [TapSuggestion] = []
    var seenFeatures = Set<String>()
    /// The conv output as the model exposes it: through a Relu whose output is a graph output
    /// (torchvision FCOS's box distances), else the conv output itself.
    func exposed(_ conv: Node) -> (name: String, producer: Node) {
      let output = conv.outputs[0]
      if let uses = consumers[output], uses.count == 1, graph.nodes[uses[0]].opType == "Relu",
        let relu = graph.nodes[uses[0]].outputs.first, graphOutputs.contains(relu)
      {
        return (relu, graph.nodes[uses[0]])
      }
      return (output, conv)
    }
    for (node, level) in headConvs {
      let (output, outputProducer) = exposed(node)
      suggestions.append(
        TapSuggestion(
          kind: .headOutput, name: output, stride: stride(of: output), shape: shapes[output]?.shapeDescription ?? "?",
          producer: outputProducer.label))
      if isFeatureMap(level), seenFeatures.insert(level).inserted {
        suggestions.append(
          TapSuggestion(
            kind: .feature, name: level, stride: stride(of: level), shape: shapes[level]?.shapeDescription ?? "?",
            producer: producer[level]?.label ?? "graph input"))
      }
    }
    // A detection head reads two or more feature levels; a lone final conv (a classifier) is no head.
    guard seenFeatures.count >= 2 else { return [] }
    // By stride where known, else in graph order (levels usually run from fine to coarse).
    return suggestions.enumerated().sorted {
      ($0.element.kind.rawValue, $0.element.stride ?? 0, $0.offset) < ($1.element.kind.rawValue, $1.element.stride ?? 0, $1.offset)
    }.map(\.element)
  }
}
