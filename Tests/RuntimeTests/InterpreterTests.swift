import DistillCore
import DistillONNX
import Foundation
import XCTest

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .appendingPathComponent("Fixtures")

func fixtureModel(_ name: String) throws -> Model {
  try ModelFile.read(fixtures.appendingPathComponent("models/\(name)/model.onnx").path)
}

func tensorInput(_ name: String, _ type: DataType, _ dims: [Int64?]) -> ValueInfo {
  ValueInfo(name: name, type: .tensor(elementType: type, shape: dims.map { ShapeDimension(value: $0) }, denotation: nil))
}

/// A one-node model built in the IR (not as protobuf bytes).
func singleNodeModel(_ node: Node, inputs: [ValueInfo], initializers: [TensorValue] = []) -> Model {
  var graph = Graph()
  graph.name = "test"
  graph.nodes = [node]
  graph.inputs = inputs
  graph.initializers = initializers
  graph.outputs = node.outputs.map { ValueInfo(name: $0) }
  var model = Model()
  model.irVersion = 8
  model.opsetImports = [OperatorSetID(domain: "", version: 17)]
  model.graph = graph
  return model
}

final class InterpreterTests: XCTestCase {
  func testMemoryBudgetStopsHugeAllocationsWithTheNodeNamed() throws {
    let constant = singleNodeModel(
      Node(name: "huge", opType: "ConstantOfShape", inputs: ["shape"], outputs: ["y"]), inputs: [tensorInput("shape", .int64, [3])])
    let interpreter = try Interpreter(model: constant)
    let shape = Tensor(shape: [3], ints: [100_000, 100_000, 100_000])
    XCTAssertThrowsError(try interpreter.run(["shape": shape])) { error in
      let message = "\(error)"
      XCTAssertTrue(message.contains("ConstantOfShape 'huge'"), message)
      XCTAssertTrue(message.contains("memory budget"), message)
    }
    let expand = singleNodeModel(
      Node(name: "wide", opType: "Expand", inputs: ["x", "shape"], outputs: ["y"]),
      inputs: [tensorInput("x", .float, [1]), tensorInput("shape", .int64, [2])])
    XCTAssertThrowsError(
      try Interpreter(model: expand).run(["x": Tensor(shape: [1], floats: [1]), "shape": Tensor(shape: [2], ints: [1 << 31, 1 << 31])])
    ) { error in XCTAssertTrue("\(error)".contains("Expand 'wide'"), "\(error)") }
  }

  func testShapeMismatchNamesTheNodeTheOpAndTheInputs() throws {
    let model = singleNodeModel(
      Node(name: "sum", opType: "Add", inputs: ["a", "b"], outputs: ["c"]),
      inputs: [tensorInput("a", .float, [2, 3]), tensorInput("b", .float, [4])])
    XCTAssertThrowsError(
      try Interpreter(model: model).run(["a": Tensor(zeros: [2, 3]), "b": Tensor(zeros: [4])])
    ) { error in
      XCTAssertEqual("\(error)", "Add 'sum': inputs A [2,3] and B [4] do not broadcast")
    }
  }

  func testInputsAreCheckedAgainstTheirDeclaredTypes() throws {
    let model = singleNodeModel(
      Node(name: "r", opType: "Relu", inputs: ["x"], outputs: ["y"]), inputs: [tensorInput("x", .float, [1, 3])])
    let interpreter = try Interpreter(model: model)
    XCTAssertThrowsError(try interpreter.run(["x": Tensor(zeros: [1, 4])])) { error in
      XCTAssertTrue("\(error)".contains("input 'x' has shape [1,4], the model declares [1,3]"), "\(error)")
    }
    XCTAssertThrowsError(try interpreter.run([:])) { error in XCTAssertTrue("\(error)".contains("missing input 'x'")) }
  }

  func testUnsupportedOperatorsAreNamedWithDomainAndOpset() throws {
    XCTAssertThrowsError(try Interpreter(model: try fixtureModel("attributes_custom_op"))) { error in
      XCTAssertTrue("\(error)".contains("com.example::MyOp (opset 1)"), "\(error)")
    }
  }

  /// Fusing Conv with its residual Add and Relu changes no result, and tapped values survive it.
  func testFusionMatchesUnfusedRunAndKeepsTaps() throws {
    let model = try fixtureModel("tiny_fpn")
    let input = try Tensor(ModelFile.readTensor(fixtures.appendingPathComponent("models/tiny_fpn/test_data_set_0/input_0.pb").path))
    let plain = try Interpreter(model: model, fuse: false).run(["images": input], taps: ["backbone/conv2/conv_out"])
    let fused = try Interpreter(model: model, keep: ["backbone/conv2/conv_out"]).run(["images": input], taps: ["backbone/conv2/conv_out"])
    // Folding BatchNormalization into weights rounds differently, so compare with a tolerance.
    func assertClose(_ a: Tensor?, _ b: Tensor?, _ what: String) {
      guard let a, let b else { return XCTFail("\(what) missing") }
      XCTAssertEqual(a.shape, b.shape, what)
      // The parity tolerance against onnxruntime: |a - b| <= 1e-4 + 1e-3 |b|.
      let worst = zip(a.floats, b.floats).map { abs($0 - $1) / (1e-4 + 1e-3 * abs($1)) }.max() ?? 0
      XCTAssertLessThanOrEqual(worst, 1, "\(what): error \(worst) times the tolerance")
    }
    assertClose(plain.taps["backbone/conv2/conv_out"], fused.taps["backbone/conv2/conv_out"], "tap")
    for (index, (a, b)) in zip(plain.outputs, fused.outputs).enumerated() { assertClose(a, b, "output \(index)") }
    XCTAssertThrowsError(try Interpreter(model: model).run(["images": input], taps: ["backbone/conv1/bn_out"])) { error in
      XCTAssertTrue("\(error)".contains("fused"), "\(error)")
    }
  }

  /// The interpreter computes with its decoded weights: emptying its graph's initializer data
  /// (as the distiller does for a teacher) leaves every output bit for bit as it was.
  func testReleasingInitializerDataKeepsTheResults() throws {
    let model = try fixtureModel("tiny_fpn")
    let input = try Tensor(ModelFile.readTensor(fixtures.appendingPathComponent("models/tiny_fpn/test_data_set_0/input_0.pb").path))
    let interpreter = try Interpreter(model: model)
    let before = try interpreter.run(["images": input]).outputs
    let weights = interpreter.graph.initializers.filter { !$0.bytes.isEmpty }.count
    XCTAssertGreaterThan(weights, 10)
    interpreter.releaseInitializerData()
    XCTAssertEqual(interpreter.graph.initializers.filter { !$0.bytes.isEmpty }.count, 0)
    XCTAssertEqual(interpreter.graph.initializers.map(\.dims), try Interpreter(model: model).graph.initializers.map(\.dims))
    let after = try interpreter.run(["images": input]).outputs
    XCTAssertEqual(after.map { $0.floats.map(\.bitPattern) }, before.map { $0.floats.map(\.bitPattern) })
  }

  /// Paddle writes a conv bias as Add(conv, [1,C,1,1]): fused as a residual it must broadcast.
  func testFusedAddThatOnlyBroadcastsMatchesUnfused() throws {
    var graph = Graph()
    graph.name = "bias_as_add"
    graph.nodes = [
      Node(name: "conv", opType: "Conv", inputs: ["x", "w"], outputs: ["c"], attributes: [Attribute(name: "pads", value: .ints([1, 1, 1, 1]))]),
      Node(name: "bias", opType: "Add", inputs: ["c", "b"], outputs: ["s"]),
      Node(name: "act", opType: "Relu", inputs: ["s"], outputs: ["y"]),
    ]
    graph.inputs = [tensorInput("x", .float, [1, 2, 5, 5]), tensorInput("w", .float, [3, 2, 3, 3]), tensorInput("b", .float, [1, 3, 1, 1])]
    graph.outputs = [ValueInfo(name: "y")]
    var model = Model()
    model.irVersion = 8
    model.opsetImports = [OperatorSetID(domain: "", version: 17)]
    model.graph = graph
    let feeds = [
      "x": Tensor(shape: [1, 2, 5, 5], floats: (0..<50).map { Float($0 % 7) - 3 }),
      "w": Tensor(shape: [3, 2, 3, 3], floats: (0..<54).map { Float($0 % 5) / 4 - 0.5 }),
      "b": Tensor(shape: [1, 3, 1, 1], floats: [-1, 0.5, 2]),
    ]
    let plain = try Interpreter(model: model, fuse: false).run(feeds).outputs[0]
    let fused = try Interpreter(model: model).run(feeds).outputs[0]
    XCTAssertEqual(plain.shape, [1, 3, 5, 5])
    XCTAssertEqual(plain.floats, fused.floats)
  }

  /// A batch large enough to convolve one image per thread gives what each image alone gives.
  func testBatchedConvolutionMatchesSingleImages() throws {
    let model = singleNodeModel(
      Node(name: "conv", opType: "Conv", inputs: ["x", "w", "b"], outputs: ["y"], attributes: [Attribute(name: "pads", value: .ints([1, 1, 1, 1]))]),
      inputs: [tensorInput("x", .float, [nil, 16, 32, 32]), tensorInput("w", .float, [32, 16, 3, 3]), tensorInput("b", .float, [32])])
    let interpreter = try Interpreter(model: model)
    var state: UInt32 = 1
    func random(_ count: Int) -> [Float] {
      (0..<count).map { _ in
        state = state &* 1_664_525 &+ 1_013_904_223
        return Float(state >> 8) / Float(1 << 24) - 0.5
      }
    }
    let w = Tensor(shape: [32, 16, 3, 3], floats: random(32 * 16 * 9)), b = Tensor(shape: [32], floats: random(32))
    let image = 16 * 32 * 32
    let x = Tensor(shape: [4, 16, 32, 32], floats: random(4 * image))
    let batched = try interpreter.run(["x": x, "w": w, "b": b]).outputs[0]
    XCTAssertEqual(batched.shape, [4, 32, 32, 32])
    // Backward too: the batch's dW is the sum of the images' dW, its dX theirs side by side.
    let training = try Interpreter(model: model, fuse: false)
    let seed = Tensor(shape: [4, 32, 32, 32], floats: random(4 * 32 * 32 * 32))
    let batchGradients = try training.record(["x": x, "w": w, "b": b]).gradients(seeds: ["y": seed], targets: ["x", "w"])
    var summed = [Float](repeating: 0, count: w.count)
    for n in 0..<4 {
      let single = Tensor(shape: [1, 16, 32, 32], floats: Array(x.floats[(n * image)..<((n + 1) * image)]))
      let alone = try interpreter.run(["x": single, "w": w, "b": b]).outputs[0]
      let slice = Array(batched.floats[(n * alone.count)..<((n + 1) * alone.count)])
      let worst = zip(slice, alone.floats).map { abs($0 - $1) }.max() ?? 0
      XCTAssertLessThan(worst, 1e-4, "image \(n)")
      let output = 32 * 32 * 32
      let imageSeed = Tensor(shape: [1, 32, 32, 32], floats: Array(seed.floats[(n * output)..<((n + 1) * output)]))
      let imageGradients = try training.record(["x": single, "w": w, "b": b]).gradients(seeds: ["y": imageSeed], targets: ["x", "w"])
      let dx = Array(batchGradients["x"]!.floats[(n * image)..<((n + 1) * image)])
      XCTAssertLessThan(zip(dx, imageGradients["x"]!.floats).map { abs($0 - $1) }.max() ?? 0, 1e-4, "dX of image \(n)")
      for index in summed.indices { summed[index] += imageGradients["w"]!.floats[index] }
    }
    let worstWeight = zip(summed, batchGradients["w"]!.floats).map { abs($0 - $1) / (1 + abs($1)) }.max() ?? 0
    XCTAssertLessThan(worstWeight, 1e-4, "dW")
  }
}

extension InterpreterTests {
  /// oneDNN's convolutions (forward with fused residual and activation, backward) agree with the
  /// im2col + OpenBLAS path, and weights it keeps packed between runs follow `setParameter`.
  func testOneDNNConvolutionMatchesOpenBLASAndFollowsNewWeights() throws {
    var graph = Graph()
    graph.name = "conv_residual_relu"
    graph.nodes = [
      Node(name: "conv", opType: "Conv", inputs: ["x", "w", "b"], outputs: ["c"], attributes: [Attribute(name: "pads", value: .ints([1, 1, 1, 1]))]),
      Node(name: "add", opType: "Add", inputs: ["c", "r"], outputs: ["s"]),
      Node(name: "relu", opType: "Relu", inputs: ["s"], outputs: ["y"]),
    ]
    var state: UInt32 = 7
    func random(_ count: Int) -> [Float] {
      (0..<count).map { _ in
        state = state &* 1_664_525 &+ 1_013_904_223
        return Float(state >> 8) / Float(1 << 24) - 0.5
      }
    }
    func initializer(_ name: String, _ dims: [Int64], _ values: [Float]) -> TensorValue {
      TensorValue(name: name, dataType: .float, dims: dims, bytes: values.withUnsafeBytes { Array($0) })
    }
    graph.inputs = [tensorInput("x", .float, [2, 16, 12, 12]), tensorInput("r", .float, [2, 32, 12, 12])]
    graph.initializers = [initializer("w", [32, 16, 3, 3], random(32 * 16 * 9)), initializer("b", [32], random(32))]
    graph.outputs = [ValueInfo(name: "y")]
    var model = Model()
    model.irVersion = 8
    model.opsetImports = [OperatorSetID(domain: "", version: 17)]
    model.graph = graph
    let feeds = ["x": Tensor(shape: [2, 16, 12, 12], floats: random(2 * 16 * 144)), "r": Tensor(shape: [2, 32, 12, 12], floats: random(2 * 32 * 144))]
    let seed = Tensor(shape: [2, 32, 12, 12], floats: random(2 * 32 * 144))
    let interpreter = try Interpreter(model: model)
    let training = try Interpreter(model: model, fuse: true)
    func close(_ a: Tensor, _ b: Tensor, _ what: String) {
      XCTAssertEqual(a.shape, b.shape, what)
      let worst = zip(a.floats, b.floats).map { abs($0 - $1) / (1e-4 + 1e-3 * abs($1)) }.max() ?? 0
      XCTAssertLessThanOrEqual(worst, 1, "\(what): error \(worst) times the tolerance")
    }
    func pass() throws -> (y: Tensor, gradients: [String: Tensor]) {
      let y = try interpreter.run(feeds).outputs[0]
      let gradients = try training.record(feeds).gradients(seeds: ["y": seed], targets: ["x", "w", "b", "r"])
      return (y, gradients)
    }
    defer { DNNL.enabled = true }
    for round in 0..<2 {
      if round == 1 {
        let w = Tensor(shape: [32, 16, 3, 3], floats: random(32 * 16 * 9))
        try interpreter.setParameter("w", w)
        try training.setParameter("w", w)
      }
      DNNL.enabled = true
      let fast = try pass()
      DNNL.enabled = false
      let reference = try pass()
      close(fast.y, reference.y, "y, round \(round)")
      for name in ["x", "w", "b", "r"] { close(fast.gradients[name]!, reference.gradients[name]!, "d\(name), round \(round)") }
    }
  }
}

/// `Tape.replay` and `Tape.replayGradients`: a replaced value is a constant of the replay, and
/// gradients reach the nodes the replay skipped through the base pass's seeds.
final class ReplayTests: XCTestCase {
  /// y = sum((x * 2) * w): replacing the parameter `w`, or the node output `x * 2`.
  func testReplacedValuesChangeThePassAndStopTheGradient() throws {
    var builder = GraphBuilder(name: "replace")
    let x = builder.input("x", shape: [3])
    let w = builder.parameter(Tensor(shape: [3], floats: [1, 2, 3]), name: "w")
    let doubled = builder.add("Mul", [x, builder.scalar(2)], hint: "doubled")
    let y = builder.reduceSum(builder.mul(doubled, w))
    builder.output(y, shape: [])
    let interpreter = try Interpreter(model: builder.model, fuse: false)
    let tape = try interpreter.record(["x": Tensor(shape: [3], floats: [1, 1, 1])])
    let seed = [y: Tensor(shape: [], floats: [1])]
    XCTAssertEqual(tape.outputs[0].floats, [12])

    // w replaced: x * 2 is not recomputed; the gradient reaches x through the base pass.
    let replacedWeight = try tape.replay(overriding: ["w": Tensor(shape: [3], floats: [10, 20, 30])])
    XCTAssertEqual(replacedWeight.outputs[0].floats, [120])
    let weight = try replacedWeight.replayGradients(seeds: seed, targets: ["w"])
    XCTAssertEqual(weight.gradients["w"]?.floats, [0, 0, 0], "a replaced value gets no gradient")
    XCTAssertEqual(weight.baseSeeds[doubled]?.floats, [10, 20, 30], "the replay hands back the gradient at the value it shares")
    XCTAssertEqual(try tape.gradients(seeds: weight.baseSeeds, targets: ["x"])["x"]?.floats, [20, 40, 60])

    // x * 2 replaced: nothing flows to x.
    let replacedNode = try tape.replay(overriding: [doubled: Tensor(shape: [3], floats: [1, 0, 0])])
    XCTAssertEqual(replacedNode.outputs[0].floats, [1])
    let node = try replacedNode.replayGradients(seeds: seed, targets: ["w"])
    XCTAssertEqual(node.gradients["w"]?.floats, [1, 0, 0])
    XCTAssertTrue(node.baseSeeds.isEmpty, "nothing flows through a replaced node output: \(node.baseSeeds.keys)")

    XCTAssertThrowsError(try tape.replay(overriding: ["w": Tensor(shape: [2], floats: [1, 2])])) { error in
      XCTAssertTrue("\(error)".contains("value 'w' is float32 [3]; its replacement is float32 [2]"), "\(error)")
    }
    XCTAssertThrowsError(try tape.replay(overriding: ["v": Tensor(shape: [3], floats: [1, 2, 3])])) { error in
      XCTAssertTrue("\(error)".contains("no value named 'v' to replace"), "\(error)")
    }
  }
}
