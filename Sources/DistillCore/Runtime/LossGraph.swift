/// A loss written as ONNX nodes (see `GraphBuilder`): built once, then evaluated every step on
/// fed tensors with a recorded pass, so its gradients come from the tape's per-op backward passes.
///
/// The graph's outputs are the scalar `loss` followed by the named `terms` (any tensors worth
/// logging, scalars in practice). Gradients can be taken with respect to graph inputs (the student
/// tensors a loss reads) and to the builder's `parameters` (adapter weights).
public final class LossGraph: @unchecked Sendable {
  /// What one evaluation returns.
  public struct Evaluation: Sendable {
    public var loss: Float
    /// Each named term's value (its first element; terms are scalars in practice).
    public var terms: [String: Float]
    /// d loss / d value for each requested input or parameter, shaped like it.
    public var gradients: [String: Tensor]
  }

  public let model: Model
  public let lossName: String
  /// Term names, in output order, mapped to their graph values.
  public let terms: [(name: String, value: String)]
  /// Trainable initializers (the builder's `parameters`).
  public let parameters: [String]
  public let interpreter: Interpreter

  /// Finishes `builder`'s graph with `loss` (a scalar value) and `terms` as outputs and prepares
  /// it to run (without fusion, so every node stays as written).
  public init(_ builder: GraphBuilder, loss: String, terms: [(name: String, value: String)] = []) throws {
    var builder = builder
    let defined = Set(builder.graph.nodes.flatMap(\.outputs) + builder.graph.inputs.map(\.name))
    for value in [loss] + terms.map(\.value) where !defined.contains(value) {
      throw RuntimeError(
        "loss graph '\(builder.graph.name ?? "")' has no value '\(value)' (was it added after the builder was passed in?)"
      )
    }
    builder.output(loss, shape: [])
    for term in terms where term.value != loss { builder.output(term.value) }
    model = builder.model
    lossName = loss
    self.terms = terms
    parameters = builder.parameters
    interpreter = try Interpreter(model: model, fuse: false)
  }

  /// The graph inputs a caller feeds each step, with their declared shapes.
  public var inputs: [ValueInfo] { interpreter.requiredInputs }

  /// Runs the loss on `feeds` and returns it, its terms and d loss / d each of `gradientsFor`
  /// (input or parameter names). Without gradients requested, the pass is not recorded.
  public func evaluate(_ feeds: [String: Tensor], gradientsFor targets: Set<String> = []) throws -> Evaluation {
    let outputs: [Tensor]
    var gradients: [String: Tensor] = [:]
    if targets.isEmpty {
      outputs = try interpreter.run(feeds).outputs
    } else {
      let tape = try interpreter.record(feeds, training: true, keeping: [])
      outputs = tape.outputs
      let seed = Tensor(shape: outputs[0].shape, floats: [Float](repeating: 1, count: outputs[0].count))
      gradients = try tape.gradients(seeds: [lossName: seed], targets: targets, releasing: true)
    }
    guard outputs[0].count == 1 else {
      throw RuntimeError("loss '\(lossName)' has shape \(outputs[0].shapeDescription), expected a scalar")
    }
    var values: [String: Float] = [:]
    var index = 1
    for term in terms {
      if term.value == lossName {
        values[term.name] = outputs[0].floats[0]
      } else {
        values[term.name] = outputs[index].asFloats.first ?? 0
        index += 1
      }
    }
    return Evaluation(loss: outputs[0].floats[0], terms: values, gradients: gradients)
  }
}
