/// One ONNX operator: attributes are parsed (with the spec's defaults) once when the graph is
/// prepared, then `forward` runs it. Implementations live one family per file in `Ops/`.
public protocol Operator: Sendable {
  init(_ node: Node, _ setup: OperatorSetup) throws
  /// `inputs` holds one entry per node input; omitted optional inputs are nil.
  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor]
}

/// What an operator may consult while it is prepared.
public struct OperatorSetup {
  /// The opset version of the node's domain.
  public let opset: Int
  /// The graph the node belongs to and the opset version of each domain (for ops that build
  /// interpreters over parts of their graph, like `Gradient`).
  public var graph = Graph()
  public var opsets: [String: Int] = [:]
  public let label: String
  /// Prepares a subgraph (If branches, Loop bodies) for running inside this graph.
  public let compile: (Graph) throws -> Interpreter

  /// An error that names the node.
  public func error(_ message: String) -> RuntimeError { RuntimeError("\(label): \(message)") }
}

/// What an operator may use while it runs.
public struct ExecutionContext {
  /// The node, as errors name it: `Conv 'backbone/conv1'`.
  public let label: String
  /// Largest tensor, in bytes, an operator may allocate.
  public let memoryBudget: Int
  /// Values of enclosing graphs, for subgraphs that read them.
  public let scope: (String) -> Tensor?
  /// Training behaviour (batch statistics in BatchNormalization) instead of inference.
  public var training: Bool = false
  /// In a backward pass: which inputs need a gradient (an op may skip the others' work).
  public var neededGradients: [Bool] = []
  /// Receives new values of state the graph keeps in initializers (BatchNormalization running
  /// statistics in training), by value name.
  public var updateState: (String, Tensor) -> Void = { _, _ in }
  /// In training, when set: BatchNormalization sums its batch statistics (and, backward, its
  /// gradient sums) over all processes of a data-parallel run (synchronized BatchNormalization).
  public var syncBatchStatistics: (any Collective)?
  /// Whether a `ChannelsLastOperator` may write its first output channels last: every reader of
  /// that value accepts the layout (set by the interpreter in inference passes only).
  public var mayWriteChannelsLast = false
  /// The pass is recorded for a backward pass: its parameters may change before the next one
  /// (so nothing may cache data derived from them by address).
  public var recording = false

  public func error(_ message: String) -> RuntimeError { RuntimeError("\(label): \(message)") }

  /// Whether input `index` needs a gradient in this backward pass (true when unknown).
  public func needsGradient(_ index: Int) -> Bool { index < neededGradients.count ? neededGradients[index] : true }

  /// Throws unless a tensor of `shape` fits the memory budget; call before allocating an output
  /// whose size comes from data (ConstantOfShape, Expand, Tile, Range...).
  @discardableResult
  public func checkAllocation(_ shape: [Int], elementBytes: Int = 4) throws -> Int {
    var count = 1
    for dim in shape {
      guard dim >= 0 else { throw error("output dimension \(dim) is negative (shape \(shape))") }
      let (product, overflow) = count.multipliedReportingOverflow(by: dim)
      guard !overflow else { throw error("output shape \(shape) overflows") }
      count = product
    }
    let (bytes, overflow) = count.multipliedReportingOverflow(by: elementBytes)
    if overflow || bytes > memoryBudget {
      throw error("output shape \(shape) needs \(overflow ? "more than 2^63" : String(bytes)) bytes, over the memory budget of \(memoryBudget) bytes")
    }
    return count
  }

  /// The input at `index`, or an error naming it when it is missing.
  public func input(_ inputs: [Tensor?], _ index: Int, _ name: String) throws -> Tensor {
    guard index < inputs.count, let tensor = inputs[index] else { throw error("input \(name) is missing") }
    return tensor
  }
}
