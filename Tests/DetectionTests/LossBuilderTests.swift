import DistillCore
import DistillDetection
import DistillONNX
import Foundation
import XCTest

/// Fixtures written by tools/make_loss_fixtures.py (PyTorch 2.14 / torchvision 0.29 as reference).
let lossFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .appendingPathComponent("Fixtures/losses")

struct FixtureTensor: Decodable {
  let shape: [Int]
  let data: [Float]
  var tensor: Tensor { Tensor(shape: shape, floats: data) }
}

private struct BlockCase: Decodable {
  let inputs: [String: FixtureTensor]
  let loss: Float
  let grads: [String: FixtureTensor]
  let beta: Float?
}

func loadFixture<T: Decodable>(_ name: String, as type: T.Type) throws -> T {
  try JSONDecoder().decode(T.self, from: Data(contentsOf: lossFixtures.appendingPathComponent(name)))
}

/// The loss within 1e-4 of its magnitude; each gradient element within 1e-4 of the largest
/// reference element (the scale of the whole tensor, as float32 sums in another order differ by).
func assertClose(
  loss: Float, _ expected: Float, gradient: Tensor?, _ reference: FixtureTensor, _ label: String,
  file: StaticString = #filePath, line: UInt = #line
) {
  XCTAssertEqual(loss, expected, accuracy: 1e-4 * max(abs(expected), 1e-6), "\(label): loss", file: file, line: line)
  guard let gradient else { return XCTFail("\(label): no gradient", file: file, line: line) }
  XCTAssertEqual(gradient.shape, reference.shape, "\(label): gradient shape", file: file, line: line)
  let scale = reference.data.map(abs).max() ?? 0
  XCTAssertGreaterThan(scale, 0, "\(label): the reference gradient is all zeros", file: file, line: line)
  let worst = zip(gradient.floats, reference.data).map { abs($0 - $1) }.max() ?? .infinity
  XCTAssertLessThanOrEqual(
    worst, 1e-4 * scale, "\(label): gradient differs by \(worst) (scale \(scale))", file: file, line: line)
}

final class LossBuilderTests: XCTestCase {
  private func check(
    _ name: String, wrt: String, file: StaticString = #filePath, line: UInt = #line,
    build: (inout GraphBuilder, [String: String], BlockCase) -> String
  ) throws {
    let blocks = try loadFixture("blocks.json", as: [String: BlockCase].self)
    let block = try XCTUnwrap(blocks[name], "no block \(name)")
    var builder = GraphBuilder(name: name)
    var names: [String: String] = [:]
    for (key, value) in block.inputs { names[key] = builder.input(key, shape: value.shape) }
    let loss = build(&builder, names, block)
    let graph = try LossGraph(builder, loss: loss)
    let result = try graph.evaluate(block.inputs.mapValues(\.tensor), gradientsFor: [wrt])
    assertClose(
      loss: result.loss, block.loss, gradient: result.gradients[wrt], block.grads[wrt]!, name, file: file, line: line)
  }

  func testSigmoidFocalLossMatchesTorchvision() throws {
    for reduction in [LossReduction.sum, .mean] {
      try check("focal_\(reduction.rawValue)", wrt: "logits") { b, n, _ in
        b.sigmoidFocalLoss(logits: n["logits"]!, targets: n["targets"]!, reduction: reduction)
      }
    }
  }

  func testQualityFocalLossMatchesMMDetFormula() throws {
    try check("qfl", wrt: "logits") { b, n, _ in
      let perRow = b.reduceSum(
        b.qualityFocalLoss(logits: n["logits"]!, scores: n["scores"]!, reduction: .none), axes: [1])
      return b.reduced(perRow, weight: n["weight"]!, .sum)
    }
  }

  func testGIoULossMatchesTorchvision() throws {
    try check("giou", wrt: "predicted") { b, n, _ in
      b.giouLoss(predicted: n["predicted"]!, target: n["target"]!, weight: n["weight"]!)
    }
    try check("giou_mean", wrt: "predicted") { b, n, _ in
      b.giouLoss(predicted: n["predicted"]!, target: n["target"]!, reduction: .mean)
    }
  }

  func testIoULossMatchesReference() throws {
    try check("iou", wrt: "predicted") { b, n, _ in
      b.iouLoss(predicted: n["predicted"]!, target: n["target"]!, weight: n["weight"]!)
    }
  }

  func testCenternessBCEMatchesPyTorch() throws {
    try check("centerness_bce", wrt: "logits") { b, n, _ in
      b.bceWithLogitsLoss(logits: n["logits"]!, targets: n["targets"]!)
    }
  }

  func testDistributionFocalLossMatchesMMDetFormula() throws {
    try check("dfl", wrt: "logits") { b, n, _ in
      b.distributionFocalLoss(logits: n["logits"]!, targets: n["targets"]!, bins: 17, weight: n["weight"]!)
    }
  }

  func testSmoothL1AndL1MatchPyTorch() throws {
    for name in ["smooth_l1_beta_1_9", "smooth_l1_beta_1"] {
      try check(name, wrt: "predictions") { b, n, block in
        b.smoothL1Loss(predictions: n["predictions"]!, targets: n["targets"]!, beta: block.beta!)
      }
    }
    try check("l1", wrt: "predictions") { b, n, _ in b.l1Loss(predictions: n["predictions"]!, targets: n["targets"]!) }
  }

  /// The GIoU graph agrees with `Box.generalizedIoU` (the plain-Swift reference) box by box.
  func testGIoUGraphAgreesWithBoxType() throws {
    let blocks = try loadFixture("blocks.json", as: [String: BlockCase].self)
    let block = try XCTUnwrap(blocks["giou"])
    var builder = GraphBuilder(name: "giou")
    let p = builder.input("predicted", shape: [8, 4])
    let t = builder.input("target", shape: [8, 4])
    let perBox = builder.giouLoss(predicted: p, target: t, eps: 0, reduction: .none)
    let total = builder.reduceSum(perBox)
    let graph = try LossGraph(builder, loss: total, terms: [("per_box", perBox)])
    let tape = try graph.interpreter.record([
      "predicted": block.inputs["predicted"]!.tensor, "target": block.inputs["target"]!.tensor,
    ])
    let values = try XCTUnwrap(tape.value(perBox)).floats
    func boxes(_ t: FixtureTensor) -> [Box] {
      (0..<8).map { Box(x1: t.data[4 * $0], y1: t.data[4 * $0 + 1], x2: t.data[4 * $0 + 2], y2: t.data[4 * $0 + 3]) }
    }
    for (i, (a, b)) in zip(boxes(block.inputs["predicted"]!), boxes(block.inputs["target"]!)).enumerated() {
      XCTAssertEqual(values[i], 1 - a.generalizedIoU(b), accuracy: 1e-5, "box \(i)")
    }
  }

  /// A loss graph is plain ONNX: it writes, reads back, and the read copy computes the same loss.
  func testLossGraphWritesAsONNXAndReadsBack() throws {
    let blocks = try loadFixture("blocks.json", as: [String: BlockCase].self)
    let block = try XCTUnwrap(blocks["giou"])
    var builder = GraphBuilder(name: "giou")
    let p = builder.input("predicted", shape: [nil, 4])
    let t = builder.input("target", shape: [nil, 4])
    let w = builder.input("weight", shape: [nil])
    let loss = builder.giouLoss(predicted: p, target: t, weight: w)
    let graph = try LossGraph(builder, loss: loss)
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("giou-loss-\(getpid()).onnx").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    try ModelFile.write(graph.model, to: path)
    let read = try ModelFile.read(path)
    XCTAssertEqual(read.graph?.nodes.map(\.opType), graph.model.graph?.nodes.map(\.opType))
    XCTAssertEqual(read.graph?.inputs.map(\.name), ["predicted", "target", "weight"])
    let feeds = block.inputs.mapValues(\.tensor)
    let again = try Interpreter(model: read, fuse: false).run(feeds).outputs[0].floats[0]
    XCTAssertEqual(again, try graph.evaluate(feeds).loss)
    XCTAssertEqual(again, block.loss, accuracy: 1e-4 * block.loss)
  }

  /// Gradients reach trainable initializers (`parameter`), as adapters will need.
  func testGradientsReachParameters() throws {
    var builder = GraphBuilder(name: "scaled")
    let x = builder.input("x", shape: [3])
    let scale = builder.parameter(Tensor(shape: [3], floats: [1, 2, 3]), name: "scale")
    let loss = builder.l1Loss(predictions: builder.mul(x, scale), targets: builder.scalar(0))
    let graph = try LossGraph(builder, loss: loss, terms: [("l1", loss)])
    XCTAssertEqual(graph.parameters, ["scale"])
    let result = try graph.evaluate(["x": Tensor(shape: [3], floats: [1, -2, 0.5])], gradientsFor: ["scale", "x"])
    XCTAssertEqual(result.loss, 1 + 4 + 1.5)
    XCTAssertEqual(result.terms["l1"], result.loss)
    XCTAssertEqual(result.gradients["scale"]?.floats, [1, 2, 0.5])
    XCTAssertEqual(result.gradients["x"]?.floats, [1, -2, 3])
  }
}
