/// An ONNX `GraphProto`: nodes in topological order plus the values they read and write.
public struct Graph: Sendable {
  public var name: String?
  public var docString: String?
  public var nodes: [Node] = []
  public var initializers: [TensorValue] = []
  public var sparseInitializers: [OpaqueMessage] = []
  public var inputs: [ValueInfo] = []
  public var outputs: [ValueInfo] = []
  public var valueInfo: [ValueInfo] = []
  public var quantizationAnnotations: [OpaqueMessage] = []
  public var unknownFields: [UnknownField] = []

  public init() {}

  /// "ai.onnx" and "" name the same (default) domain.
  public static func canonicalDomain(_ domain: String) -> String { domain == "ai.onnx" ? "" : domain }

  /// Names this graph reads but does not define: values it takes from enclosing graphs.
  public var outerReferences: Set<String> {
    var defined = Set(inputs.map(\.name))
    defined.formUnion(initializers.compactMap(\.name))
    for node in nodes { defined.formUnion(node.outputs) }
    var used = Set<String>()
    for node in nodes {
      used.formUnion(node.inputs.filter { !$0.isEmpty })
      for graph in node.subgraphs { used.formUnion(graph.outerReferences) }
    }
    used.formUnion(outputs.map(\.name))
    return used.subtracting(defined)
  }

  /// Every graph nested in this one's nodes, depth first, not including this graph.
  public var nestedGraphs: [Graph] {
    nodes.flatMap { $0.subgraphs.flatMap { [$0] + $0.nestedGraphs } }
  }
}

/// An ONNX `NodeProto`. Empty input or output names stand for omitted optional values.
public struct Node: Sendable {
  public var name: String
  public var opType: String
  public var domain: String
  public var inputs: [String]
  public var outputs: [String]
  public var attributes: [Attribute]
  public var docString: String?
  public var unknownFields: [UnknownField] = []

  public init(
    name: String = "", opType: String, domain: String = "", inputs: [String], outputs: [String],
    attributes: [Attribute] = [], docString: String? = nil
  ) {
    self.name = name
    self.opType = opType
    self.domain = domain
    self.inputs = inputs
    self.outputs = outputs
    self.attributes = attributes
    self.docString = docString
  }

  public func attribute(_ name: String) -> Attribute? { attributes.first { $0.name == name } }

  /// Graph-valued attributes (If branches, Loop and Scan bodies).
  public var subgraphs: [Graph] {
    attributes.flatMap { attribute -> [Graph] in
      switch attribute.value {
      case .graph(let graph): return [graph]
      case .graphs(let graphs): return graphs
      default: return []
      }
    }
  }

  /// How errors and tables name this node: `Conv 'backbone/conv1'`, or its first output if unnamed.
  public var label: String {
    let shown = name.isEmpty ? (outputs.first.map { "-> \($0)" } ?? "(unnamed)") : name
    return "\(opType) '\(shown)'"
  }
}
