import DistillCore
import DistillONNX
import Foundation
import XCTest

@testable import DistillTrain

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .appendingPathComponent("Fixtures")

func fixtureModel(_ name: String) -> String { fixtures.appendingPathComponent("models/\(name)/model.onnx").path }

func floatInfo(_ name: String, _ shape: [Int]) -> ValueInfo {
  ValueInfo(name: name, type: .tensor(elementType: .float, shape: shape.map { ShapeDimension(value: Int64($0)) }, denotation: nil))
}

/// y = Sigmoid(x * w + b) * s with initializers w [1,3] (decayed), b [3] and a Constant node s [1]
/// (promoted to a parameter). Built from ops whose gradients exist today (Mul, Add, Sigmoid); the
/// trainer tests move to tiny_fpn once Conv and BatchNormalization differentiate (see TrainerTests).
func toyModel() -> Model {
  var graph = Graph()
  graph.name = "toy"
  graph.inputs = [floatInfo("x", [4, 3])]
  graph.outputs = [floatInfo("y", [4, 3])]
  graph.initializers = [
    Tensor(shape: [1, 3], floats: [0.5, -0.3, 0.8]).tensorValue(name: "w"),
    Tensor(shape: [3], floats: [0.1, 0, -0.2]).tensorValue(name: "b"),
  ]
  graph.nodes = [
    Node(name: "scale", opType: "Constant", inputs: [], outputs: ["s"],
         attributes: [Attribute(name: "value", value: .tensor(Tensor(shape: [1], floats: [1.5]).tensorValue()))]),
    Node(name: "mul", opType: "Mul", inputs: ["x", "w"], outputs: ["xw"]),
    Node(name: "add", opType: "Add", inputs: ["xw", "b"], outputs: ["z"]),
    Node(name: "sigmoid", opType: "Sigmoid", inputs: ["z"], outputs: ["h"]),
    Node(name: "out", opType: "Mul", inputs: ["h", "s"], outputs: ["y"]),
  ]
  var model = Model()
  model.irVersion = 8
  model.opsetImports = [OperatorSetID(domain: "", version: 17)]
  model.graph = graph
  return model
}

/// Batches of x ~ N(0, 1) with the targets of a "teacher" y = Sigmoid(x * [1, -1, 0.5] + 0.2) * 1.2;
/// x is all NaN at the steps in `poisoned`.
func toyBatches(poisoned: Set<Int> = []) -> (Int, inout SplitMix64) throws -> Batch {
  return { step, random in
    var x = random.normalTensor([4, 3])
    let weights: [Float] = [1, -1, 0.5]
    let target = x.floats.enumerated().map { index, value in 1.2 / (1 + exp(-(value * weights[index % 3] + 0.2))) }
    if poisoned.contains(step) { x.floats = x.floats.map { _ in .nan } }
    return Batch(feeds: ["x": x], targets: ["y": Tensor(shape: [4, 3], floats: target)])
  }
}

func toyConfig(steps: Int = 12) -> TrainingConfig {
  TrainingConfig(
    optimizer: .adamw(learningRate: 0.05, weightDecay: 0.01),
    schedule: LearningRateSchedule(totalSteps: steps, warmupSteps: 3, warmupStartFactor: 0.2, decay: .cosine(minimumFactor: 0.1)),
    clipGradientNorm: 0.5, seed: 7)
}

func temporaryDirectory() throws -> URL {
  let url = FileManager.default.temporaryDirectory.appendingPathComponent("distill-train-\(UUID().uuidString)")
  try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
  return url
}

func bits(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }

/// Collects warnings instead of printing them.
final class Warnings: @unchecked Sendable {
  var messages: [String] = []
}
