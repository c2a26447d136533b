import DistillCore
import Foundation

/// Writing a checkpoint's trained values back into the model they were trained from: into the
/// same initializers and Constant nodes, so the graph is unchanged except its weights and, where
/// the exporter had merged parameters by value, the copies training gave each layer
/// (`MergedParameters`), which become initializers of their own.
public enum TrainedWeights {
  /// A model's parameters as `Trainer` sees them (merged parameters untied, an interpreter with
  /// `promoteConstants`): the main graph's float initializers in order, then the float tensors of
  /// its Constant nodes, named by the node's output.
  public static func parameters(of model: Model) throws -> [(name: String, dtype: DataType, shape: [Int])] {
    guard let graph = MergedParameters.untie(model).model.graph else { throw TrainingError.mismatch("the model has no graph") }
    var result: [(name: String, dtype: DataType, shape: [Int])] = []
    for tensor in graph.initializers where tensor.dataType.isFloatingPoint {
      if let name = tensor.name { result.append((name, tensor.dataType, tensor.dims.map { Int($0) })) }
    }
    for node in graph.nodes {
      if let tensor = promotable(node) { result.append((node.outputs[0], tensor.dataType, tensor.dims.map { Int($0) })) }
    }
    return result
  }

  /// The float tensor of a Constant node that `Interpreter(promoteConstants: true)` makes a parameter.
  static func promotable(_ node: Node) -> TensorValue? {
    guard node.opType == "Constant", Graph.canonicalDomain(node.domain).isEmpty, node.outputs.count == 1,
      case .tensor(let tensor)? = node.attribute("value")?.value, tensor.dataType.isFloatingPoint
    else { return nil }
    return tensor
  }

  /// The first difference between the parameters a model has (`expected`, in its order) and the
  /// tensors of a checkpoint, described for an error message; nil when they match.
  public static func firstMismatch(expected: [(name: String, dtype: DataType, shape: [Int])], checkpoint: [NamedTensor]) -> String? {
    var stored: [String: Tensor] = [:]
    for named in checkpoint { stored[named.name] = named.tensor }
    func describe(_ dtype: DataType, _ shape: [Int]) -> String {
      "\(dtype) [" + shape.map(String.init).joined(separator: ",") + "]"
    }
    for parameter in expected {
      guard let tensor = stored[parameter.name] else {
        return "the model's parameter '\(parameter.name)' (\(describe(parameter.dtype, parameter.shape))) is not in the checkpoint"
      }
      if tensor.shape != parameter.shape || tensor.dtype != parameter.dtype {
        return "parameter '\(parameter.name)' is \(describe(parameter.dtype, parameter.shape)) in the model, "
          + "\(describe(tensor.dtype, tensor.shape)) in the checkpoint"
      }
    }
    let names = Set(expected.map(\.name))
    if let extra = checkpoint.first(where: { !names.contains($0.name) }) {
      return "the checkpoint's tensor '\(extra.name)' is not a parameter of the model"
    }
    return nil
  }

  /// `model` with the checkpoint's student values in its initializers and Constant nodes, and how
  /// many tensors changed. Tensors whose value did not change keep their bytes exactly; every
  /// other field of the model is kept. Refuses a checkpoint whose names, dtypes or shapes differ
  /// from the model's parameters, naming the first difference.
  public static func apply(_ checkpoint: Checkpoint, to model: Model, checkpointFile: String = "the checkpoint")
    throws -> (model: Model, changed: Int)
  {
    if let mismatch = firstMismatch(expected: try parameters(of: model), checkpoint: checkpoint.student) {
      throw TrainingError.mismatch("\(checkpointFile) does not match the model: \(mismatch)")
    }
    try checkpoint.checkFinite(file: checkpointFile)
    var values: [String: Tensor] = [:]
    for named in checkpoint.student { values[named.name] = named.tensor }
    var changed = 0
    func update(_ tensor: inout TensorValue, name: String) throws {
      guard let trained = values[name] else { return }
      let original = try Tensor(tensor)
      let same = original.floats.count == trained.floats.count
        && zip(original.floats, trained.floats).allSatisfy { $0.bitPattern == $1.bitPattern }
      if same { return }
      tensor.bytes = Tensor(shape: original.shape, floats: trained.floats, dtype: tensor.dataType).tensorValue().bytes
      changed += 1
    }
    var result = MergedParameters.untie(model).model
    guard var graph = result.graph else { throw TrainingError.mismatch("the model has no graph") }
    for index in graph.initializers.indices where graph.initializers[index].dataType.isFloatingPoint {
      if let name = graph.initializers[index].name { try update(&graph.initializers[index], name: name) }
    }
    for nodeIndex in graph.nodes.indices {
      guard promotable(graph.nodes[nodeIndex]) != nil else { continue }
      let output = graph.nodes[nodeIndex].outputs[0]
      for attributeIndex in graph.nodes[nodeIndex].attributes.indices
      where graph.nodes[nodeIndex].attributes[attributeIndex].name == "value" {
        guard case .tensor(var tensor) = graph.nodes[nodeIndex].attributes[attributeIndex].value else { continue }
        try update(&tensor, name: output)
        graph.nodes[nodeIndex].attributes[attributeIndex].value = .tensor(tensor)
      }
    }
    result.graph = graph
    return (result, changed)
  }
}
