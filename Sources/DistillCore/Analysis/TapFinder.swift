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
/// decoding arithmetic follow them). Walking up each head branch through single-use values, the
/// first value used by several branches (the classification and box towers, or the head and a
/// downsampling path) is the feature level that branch reads: the FPN level.
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
    func stride(of name: String) -> Int? {
      guard let (height, width) = imageSize, let dims = shapes[name]?.dims, dims.count == 4,
        let h = dims[2], let w = dims[3], h > 0, w > 0, height % h == 0, height / h == width / w
      else { return nil }
      return height / h
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

    var suggestions: [TapSuggestion] = []
    var seenFeatures = Set<String>()
    for node in graph.nodes where node.opType == "Conv" {
      guard let output = node.outputs.first, isFeatureMap(output), reachesOutputWithoutConv(output) else { continue }
      suggestions.append(
        TapSuggestion(
          kind: .headOutput, name: output, stride: stride(of: output), shape: shapes[output]?.shapeDescription ?? "?",
          producer: node.label))
      var current = node.inputs[0]
      for _ in 0..<256 {
        guard let source = producer[current], (consumers[current]?.count ?? 0) < 2,
          let next = source.inputs.first, !next.isEmpty
        else { break }
        current = next
      }
      if isFeatureMap(current), seenFeatures.insert(current).inserted {
        suggestions.append(
          TapSuggestion(
            kind: .feature, name: current, stride: stride(of: current), shape: shapes[current]?.shapeDescription ?? "?",
            producer: producer[current]?.label ?? "graph input"))
      }
    }
    // A head has branches at two or more strides; a lone final conv (a classifier) is no detection head.
    let strides = Set(suggestions.compactMap(\.stride))
    guard strides.count >= 2 else { return [] }
    return suggestions.sorted { ($0.kind.rawValue, $0.stride ?? 0, $0.name) < ($1.kind.rawValue, $1.stride ?? 0, $1.name) }
  }
}
