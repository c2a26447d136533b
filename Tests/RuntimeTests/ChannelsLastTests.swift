@testable import DistillCore
import Foundation
import XCTest

/// The channels-last layout of inference passes: conversions, the operators that compute in it
/// (against their planar selves, which the ONNX conformance data checks), the fused GroupNorm
/// (against the exported ops it replaces) and whole passes (against a recorded pass, which never
/// uses the layout).
final class ChannelsLastTests: XCTestCase {
  private var state: UInt32 = 12_345
  private func random(_ count: Int, offset: Float = 0) -> [Float] {
    (0..<count).map { _ in
      state = state &* 1_664_525 &+ 1_013_904_223
      return Float(state >> 8) / Float(1 << 24) - 0.5 + offset
    }
  }

  private func context(mayWriteChannelsLast: Bool) -> ExecutionContext {
    var context = ExecutionContext(label: "test", memoryBudget: 1 << 30) { _ in nil }
    context.mayWriteChannelsLast = mayWriteChannelsLast
    return context
  }

  private func assertClose(_ a: Tensor, _ b: Tensor, tolerance: Float = 1e-5, _ what: String, line: UInt = #line) {
    XCTAssertEqual(a.shape, b.shape, what, line: line)
    XCTAssertFalse(a.channelsLast || b.channelsLast, "\(what): compare planar tensors", line: line)
    let scale = b.floats.map(abs).max() ?? 0
    let worst = zip(a.floats, b.floats).map { abs($0 - $1) }.max() ?? 0
    XCTAssertLessThanOrEqual(worst, tolerance * max(scale, 1), "\(what): largest difference \(worst)", line: line)
  }

  func testCopiesPutChannelsInnermostAndBack() {
    let (n, c, h, w) = (2, 5, 3, 4)
    let x = Tensor(shape: [n, c, h, w], floats: random(n * c * h * w))
    let last = x.channelsLastCopy()
    XCTAssertTrue(last.channelsLast)
    XCTAssertEqual(last.shape, x.shape, "the shape stays N, C, H, W")
    for i in 0..<n {
      for j in 0..<c {
        for y in 0..<h {
          for z in 0..<w { XCTAssertEqual(last.floats[((i * h + y) * w + z) * c + j], x.floats[((i * c + j) * h + y) * w + z]) }
        }
      }
    }
    let back = last.planar()
    XCTAssertFalse(back.channelsLast)
    XCTAssertEqual(back.floats, x.floats)
  }

  func testMaxPoolChannelsLastEqualsPlanar() throws {
    let cases: [[Attribute]] = [
      [.ints("kernel_shape", [3, 3]), .ints("strides", [2, 2]), .ints("pads", [1, 1, 1, 1])],
      [.ints("kernel_shape", [2, 3]), .ints("strides", [1, 2]), .ints("pads", [0, 1, 1, 0]), .int("ceil_mode", 1)],
      [.ints("kernel_shape", [2, 2]), .ints("dilations", [2, 1]), .ints("strides", [1, 1])],
    ]
    let x = Tensor(shape: [2, 7, 9, 11], floats: random(2 * 7 * 9 * 11))
    for attributes in cases {
      let pool = try Pool(
        Node(opType: "MaxPool", inputs: ["x"], outputs: ["y"], attributes: attributes), OperatorSetup(opset: 17, label: "pool") { _ in
          fatalError("no subgraphs")
        })
      let planar = try pool.forward([x], context(mayWriteChannelsLast: false))[0]
      let last = try pool.forward([x.channelsLastCopy()], context(mayWriteChannelsLast: true))[0]
      XCTAssertTrue(last.channelsLast, "\(attributes)")
      XCTAssertEqual(last.planar().floats, planar.floats, "\(attributes)")
      let converted = try pool.forward([x.channelsLastCopy()], context(mayWriteChannelsLast: false))[0]
      XCTAssertFalse(converted.channelsLast, "a reader that wants planar values gets them")
      XCTAssertEqual(converted.floats, planar.floats)
    }
  }

  /// PyTorch's GroupNorm export (32 groups on 64 channels here), fused and not.
  private func groupNormModel(relu: Bool) -> (model: Model, output: String) {
    var builder = GraphBuilder(name: "groupnorm")
    let x = builder.input("x", shape: [2, 64, 5, 7])
    let grouped = builder.add("Reshape", [x, builder.ints([0, 16, -1])])
    let ones = builder.constant(Tensor(shape: [16], floats: random(16, offset: 1)), hint: "group_scale")
    let zeros = builder.constant(Tensor(shape: [16], floats: random(16)), hint: "group_bias")
    let normalized = builder.add("InstanceNormalization", [grouped, ones, zeros], [.float("epsilon", 1e-5)])
    let back = builder.add("Reshape", [normalized, builder.add("Shape", [x])])
    let gamma = builder.constant(Tensor(shape: [64, 1, 1], floats: random(64, offset: 1)), hint: "gamma")
    let beta = builder.constant(Tensor(shape: [64, 1, 1], floats: random(64)), hint: "beta")
    var y = builder.plus(builder.mul(back, gamma), beta)
    if relu { y = builder.unary("Relu", y) }
    builder.output(y)
    return (builder.model, y)
  }

  func testGroupNormalizationFusesAndMatchesTheExportedOps() throws {
    for relu in [false, true] {
      let (model, _) = groupNormModel(relu: relu)
      let fused = try Interpreter(model: model)
      let fusedNodes = fused.graph.nodes.filter { $0.opType != "Shape" }
      XCTAssertEqual(fusedNodes.map(\.opType), ["GroupNormalization"], "relu \(relu): \(fused.graph.nodes.map(\.opType))")
      let reference = try Interpreter(model: model, fuse: false)
      // A large mean against the spread: the channels-last moments must not lose the variance
      // (the affine y = x * a + b itself then cancels ~1e-5 of the output's scale in float32).
      let x = Tensor(shape: [2, 64, 5, 7], floats: random(2 * 64 * 35, offset: 30))
      let expected = try reference.run(["x": x]).outputs[0]
      assertClose(try fused.run(["x": x]).outputs[0], expected, tolerance: 1e-4, "fused, relu \(relu)")

      let op = try FusedGroupNormalization(fusedNodes[0], OperatorSetup(opset: 17, label: "gn") { _ in fatalError("no subgraphs") })
      let constants = fusedNodes[0].inputs.dropFirst().map { name in try! Tensor(model.graph!.initializers.first { $0.name == name }!) }
      let last = try op.forward([x.channelsLastCopy()] + constants, context(mayWriteChannelsLast: true))[0]
      XCTAssertTrue(last.channelsLast)
      assertClose(last.planar(), expected, tolerance: 1e-4, "channels last, relu \(relu)")

      // Backward channels last equals backward planar (which the finite-difference cases check).
      let planar = try op.forward([x] + constants, context(mayWriteChannelsLast: false))[0]
      let dy = Tensor(shape: x.shape, floats: random(x.count))
      let planarGradients = try op.backward([x] + constants, [planar], [dy], context(mayWriteChannelsLast: false))
      let gradients = try op.backward([x.channelsLastCopy()] + constants, [last], [dy.channelsLastCopy()], context(mayWriteChannelsLast: true))
      XCTAssertTrue(gradients[0]!.channelsLast, "dX comes in X's layout")
      assertClose(gradients[0]!.planar(), planarGradients[0]!, tolerance: 1e-4, "dX, relu \(relu)")
      for index in 1..<5 { assertClose(gradients[index]!, planarGradients[index]!, tolerance: 1e-4, "d input \(index), relu \(relu)") }
    }
  }

  func testElementwiseOpsKeepTheLayoutOnlyWhenAllowed() throws {
    let setup = OperatorSetup(opset: 17, label: "op") { _ in fatalError("no subgraphs") }
    let a = Tensor(shape: [1, 3, 2, 4], floats: random(24)), b = Tensor(shape: [1, 3, 2, 4], floats: random(24))
    let add = try Binary(Node(opType: "Add", inputs: ["a", "b"], outputs: ["y"]), setup)
    let expected = try add.forward([a, b], context(mayWriteChannelsLast: false))[0]
    let both = try add.forward([a.channelsLastCopy(), b.channelsLastCopy()], context(mayWriteChannelsLast: true))[0]
    XCTAssertTrue(both.channelsLast)
    XCTAssertEqual(both.planar().floats, expected.floats)
    let mixed = try add.forward([a.channelsLastCopy(), b], context(mayWriteChannelsLast: true))[0]
    XCTAssertFalse(mixed.channelsLast, "one planar operand: the result is planar")
    XCTAssertEqual(mixed.floats, expected.floats)
    let bias = Tensor(shape: [3, 1, 1], floats: [1, 2, 3])
    let broadcast = try add.forward([a.channelsLastCopy(), bias], context(mayWriteChannelsLast: true))[0]
    XCTAssertFalse(broadcast.channelsLast)
    XCTAssertEqual(broadcast.floats, try add.forward([a, bias], context(mayWriteChannelsLast: false))[0].floats)
    let less = try Binary(Node(opType: "Less", inputs: ["a", "b"], outputs: ["y"]), setup)
    XCTAssertEqual(
      try less.forward([a.channelsLastCopy(), b.channelsLastCopy()], context(mayWriteChannelsLast: true))[0].ints,
      try less.forward([a, b], context(mayWriteChannelsLast: false))[0].ints, "comparisons answer in planar order")

    let relu = try Unary(Node(opType: "Relu", inputs: ["x"], outputs: ["y"]), setup)
    let kept = try relu.forward([a.channelsLastCopy()], context(mayWriteChannelsLast: true))[0]
    XCTAssertTrue(kept.channelsLast)
    XCTAssertEqual(kept.planar().floats, a.floats.map { max($0, 0) })
    let planar = try relu.forward([a.channelsLastCopy()], context(mayWriteChannelsLast: false))[0]
    XCTAssertFalse(planar.channelsLast)
    XCTAssertEqual(planar.floats, a.floats.map { max($0, 0) })
    let isNaN = try Unary(Node(opType: "IsNaN", inputs: ["x"], outputs: ["y"]), setup)
    var withNaN = a
    withNaN.floats[1] = .nan
    XCTAssertEqual(try isNaN.forward([withNaN.channelsLastCopy()], context(mayWriteChannelsLast: true))[0].ints.firstIndex(of: 1), 1)
  }

  /// Conv, MaxPool, a residual block, an unfused Add and Relu, GroupNorm and a head.
  private func chainModel() -> (model: Model, block: String, weights: [String]) {
    var builder = GraphBuilder(name: "chain")
    let x = builder.input("x", shape: [2, 3, 24, 24])
    func conv(_ input: String, _ from: Int, _ to: Int, kernel: Int = 3, stride: Int = 1) -> String {
      let w = builder.constant(Tensor(shape: [to, from, kernel, kernel], floats: random(to * from * kernel * kernel).map { $0 * 0.5 }))
      let b = builder.constant(Tensor(shape: [to], floats: random(to)))
      let pad = kernel / 2
      return builder.add(
        "Conv", [input, w, b], [.ints("kernel_shape", [kernel, kernel]), .ints("strides", [stride, stride]), .ints("pads", [pad, pad, pad, pad])])
    }
    let stem = builder.unary("Relu", conv(x, 3, 32, stride: 2))
    let pooled = builder.add("MaxPool", [stem], [.ints("kernel_shape", [3, 3]), .ints("strides", [2, 2]), .ints("pads", [1, 1, 1, 1])])
    let block = builder.unary("Relu", builder.plus(conv(builder.unary("Relu", conv(pooled, 32, 32)), 32, 32), pooled))
    let lateral = conv(block, 32, 32, kernel: 1)
    let deeper = conv(lateral, 32, 32)
    let merged = builder.unary("Relu", builder.plus(lateral, deeper))
    let side = conv(deeper, 32, 8, kernel: 1)
    var head = conv(merged, 32, 32)
    let grouped = builder.add("Reshape", [head, builder.ints([0, 8, -1])])
    let normalized = builder.add(
      "InstanceNormalization",
      [grouped, builder.constant(Tensor(shape: [8], floats: [Float](repeating: 1, count: 8))), builder.constant(Tensor(zeros: [8]))])
    let back = builder.add("Reshape", [normalized, builder.add("Shape", [head])])
    head = builder.unary("Relu", builder.plus(builder.mul(back, builder.constant(Tensor(shape: [32, 1, 1], floats: random(32, offset: 1)))), builder.constant(Tensor(shape: [32, 1, 1], floats: random(32)))))
    let logits = conv(head, 32, 5)
    builder.output(logits)
    builder.output(side)
    let weights = builder.graph.nodes.filter { $0.opType == "Conv" }.flatMap { $0.inputs.dropFirst() }
    return (builder.model, block, weights)
  }

  /// `run` (which chains the convolutions channels last where oneDNN computes so) equals the
  /// recorded pass, outputs and a tapped value in the middle alike.
  func testInferencePassEqualsTheRecordedPass() throws {
    let (model, block, _) = chainModel()
    let interpreter = try Interpreter(model: model, keep: [block])
    let feeds = ["x": Tensor(shape: [2, 3, 24, 24], floats: random(2 * 3 * 576))]
    let pass = try interpreter.run(feeds, taps: [block])
    let recorded = try interpreter.record(feeds, training: false)
    for (index, output) in pass.outputs.enumerated() {
      XCTAssertFalse(output.channelsLast)
      assertClose(output, recorded.outputs[index], "output \(index)")
    }
    let tapped = try XCTUnwrap(pass.taps[block])
    XCTAssertFalse(tapped.channelsLast, "taps are planar")
    assertClose(tapped, try XCTUnwrap(recorded.value(block)), "tapped block output")
  }

  /// A recorded training pass chains convolutions channels last too: its gradients (seeded at the
  /// outputs and at a value in the middle) equal those of the planar OpenBLAS path.
  func testRecordedPassGradientsEqualThePlanarPath() throws {
    let (model, block, weights) = chainModel()
    let interpreter = try Interpreter(model: model, foldBatchNorm: false)
    let feeds = ["x": Tensor(shape: [2, 3, 24, 24], floats: random(2 * 3 * 576))]
    func gradients() throws -> [String: Tensor] {
      let tape = try interpreter.record(feeds)
      var seeds: [String: Tensor] = [:]
      for (index, output) in tape.outputs.enumerated() { seeds[model.graph!.outputs[index].name] = Tensor(shape: output.shape, floats: random(output.count)) }
      let middle = try XCTUnwrap(tape.value(block))
      XCTAssertFalse(middle.channelsLast, "values read from a tape are planar")
      seeds[block] = Tensor(shape: middle.shape, floats: random(middle.count))
      return try tape.gradients(seeds: seeds, targets: Set(weights + ["x"]))
    }
    defer { DNNL.enabled = true }
    DNNL.enabled = true
    let saved = state
    let fast = try gradients()
    state = saved
    DNNL.enabled = false
    let reference = try gradients()
    for name in weights + ["x"] {
      XCTAssertFalse(fast[name]!.channelsLast)
      assertClose(fast[name]!, reference[name]!, tolerance: 1e-4, "d\(name)")
    }
  }
}
