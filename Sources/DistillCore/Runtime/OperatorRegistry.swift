/// Maps `(domain, op type)` to the operator that runs it.
public struct OperatorRegistry: Sendable {
  private var table: [String: any Operator.Type]

  public init(_ entries: [(domain: String, op: String, type: any Operator.Type)]) {
    table = [:]
    for entry in entries { table[Self.key(entry.domain, entry.op)] = entry.type }
  }

  private static func key(_ domain: String, _ op: String) -> String { "\(Graph.canonicalDomain(domain))::\(op)" }

  public func lookup(domain: String, op: String) -> (any Operator.Type)? { table[Self.key(domain, op)] }

  /// Every registered op as `domain::Op` (`::Op` for the default domain), sorted.
  public var names: [String] { table.keys.sorted() }

  /// The operators this build runs, one sorted list per family file.
  public static let standard = OperatorRegistry(
    (elementwiseOperators + shapeOperators + reductionOperators + convolutionOperators + poolingOperators
      + normalizationOperators + indexingOperators + resizeOperators + detectionOperators + controlFlowOperators)
      .map { (domain: "", op: $0.0, type: $0.1) }
      + trainingOperators.map { (domain: "ai.onnx.preview.training", op: $0.0, type: $0.1) }
      + fusedOperators.map { (domain: Fusion.domain, op: $0.0, type: $0.1) })
}
