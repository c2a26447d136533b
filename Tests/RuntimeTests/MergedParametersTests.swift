import DistillCore
import XCTest

/// `MergedParameters.untie` on graphs whose layers read one tensor directly.
final class MergedParametersTests: XCTestCase {
  private func tensor(_ name: String, _ dims: [Int], _ values: [Float]) -> TensorValue {
    Tensor(shape: dims, floats: values).tensorValue(name: name)
  }
  private func random(_ count: Int, seed: Int) -> [Float] { (0..<count).map { Float(sin(Double($0 * 7 + seed * 13))) } }

  /// x -> Conv(W1, zeros) -> BN(ones, zeros, zeros, ones) -> Conv(W2, zeros) -> BN(same) -> y
  private func chain(secondWeight: String) -> Graph {
    var graph = Graph()
    graph.inputs = [ValueInfo(name: "x")]
    graph.outputs = [ValueInfo(name: "y")]
    graph.initializers = [
      tensor("W1", [2, 2, 1, 1], random(4, seed: 1)), tensor("W2", [2, 2, 1, 1], random(4, seed: 2)),
      tensor("zeros", [2], [0, 0]), tensor("ones", [2], [1, 1]),
    ]
    graph.nodes = [
      Node(name: "conv1", opType: "Conv", inputs: ["x", "W1", "zeros"], outputs: ["c1"]),
      Node(name: "bn1", opType: "BatchNormalization", inputs: ["c1", "ones", "zeros", "zeros", "ones"], outputs: ["b1"]),
      Node(name: "conv2", opType: "Conv", inputs: ["b1", secondWeight, "zeros"], outputs: ["c2"]),
      Node(name: "bn2", opType: "BatchNormalization", inputs: ["c2", "ones", "zeros", "zeros", "ones"], outputs: ["y"]),
    ]
    return graph
  }

  func testUniformTensorsOfDistinctLayersAreUntied() throws {
    let (graph, untied) = MergedParameters.untie(chain(secondWeight: "W2"))
    XCTAssertEqual(Set(untied.map(\.original)), ["zeros", "ones"])
    // Each layer reads tensors of its own; the first reader keeps the original.
    XCTAssertEqual(graph.nodes[0].inputs[2], "zeros")
    XCTAssertEqual(graph.nodes[1].inputs, ["c1", "ones", "zeros@bn1", "zeros@bn1#2", "ones@bn1"])
    XCTAssertEqual(graph.nodes[2].inputs[2], "zeros@conv2")
    XCTAssertEqual(graph.nodes[3].inputs, ["c2", "ones@bn2", "zeros@bn2", "zeros@bn2#2", "ones@bn2#2"])
    let values = Dictionary(uniqueKeysWithValues: graph.initializers.map { ($0.name!, try! Tensor($0).floats) })
    XCTAssertEqual(values["ones@bn2"], [1, 1])
    XCTAssertEqual(values["zeros@conv2"], [0, 0])
    // Same result either way.
    let input = Tensor(shape: [1, 2, 2, 2], floats: random(8, seed: 3))
    let before = try Interpreter(graph: chain(secondWeight: "W2"), opsets: ["": 17], fuse: false).run(["x": input]).outputs[0]
    let after = try Interpreter(graph: graph, opsets: ["": 17], fuse: false).run(["x": input]).outputs[0]
    XCTAssertEqual(before.floats, after.floats)
  }

  /// Layers that share a non-uniform weight apply one module (a head run on every level): what
  /// they read stays shared.
  func testSharedModulesStayShared() {
    let (graph, untied) = MergedParameters.untie(chain(secondWeight: "W1"))
    XCTAssertEqual(untied, [])
    XCTAssertEqual(graph.initializers.count, 4)
  }

  /// Non-uniform tensors read by several layers are real sharing.
  func testNonUniformTensorsAreNeverUntied() {
    var graph = chain(secondWeight: "W2")
    graph.initializers[2] = tensor("zeros", [2], [0, 0.5])
    let (_, untied) = MergedParameters.untie(graph)
    XCTAssertFalse(untied.contains { $0.original == "zeros" })
  }

  func testIdentitiesOfInitializersBecomeInitializers() throws {
    var graph = chain(secondWeight: "W2")
    graph.nodes.insert(Node(name: "alias", opType: "Identity", inputs: ["ones"], outputs: ["bn2.weight"]), at: 0)
    graph.nodes[4].inputs[1] = "bn2.weight"
    let (result, untied) = MergedParameters.untie(graph)
    XCTAssertFalse(result.nodes.contains { $0.opType == "Identity" })
    XCTAssertTrue(result.initializers.contains { $0.name == "bn2.weight" })
    XCTAssertEqual(untied.first, MergedParameters.Untied(original: "ones", copies: ["bn2.weight"], readers: ["Identity 'alias'"]))
  }
}
