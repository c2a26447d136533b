import DistillCore
import DistillDetection
import DistillONNX
import Foundation
import XCTest

private struct TaskFixture: Decodable {
  struct Truth: Decodable {
    let boxes: [[Float]]
    let labels: [Int]
  }
  let targets: [Truth]
  let outputs: [String: FixtureTensor]
  let grads: [String: FixtureTensor]
  let losses: [String: Float]
  let loss: Float
  let matched: [[Int]]
  let sizes: [[Float]]?
  let smoothL1: SmoothL1?

  struct SmoothL1: Decodable {
    let losses: [String: Float]
    let grads: [String: FixtureTensor]
  }

  enum CodingKeys: String, CodingKey {
    case targets, outputs, grads, losses, loss, matched, sizes
    case smoothL1 = "smooth_l1"
  }

  var truth: [GroundTruth] {
    targets.map { t in
      GroundTruth(boxes: t.boxes.map { Box(x1: $0[0], y1: $0[1], x2: $0[2], y2: $0[3]) }, labels: t.labels)
    }
  }
}

private struct ATSSFixture: Decodable {
  struct Image: Decodable {
    let boxes: [[Float]]
    let matched: [Int]
  }
  let strides: [Int]
  let anchors: [[Float]]
  let images: [Image]
}

private let retinanetConfig = """
  type: anchors
  num_classes: 5
  anchor_generator: {style: torchvision, aspect_ratios: [0.5, 1.0, 2.0]}
  box_coder: {style: torchvision, weights: [1.0, 1.0, 1.0, 1.0]}
  levels:
    - {cls: cls_0, box: box_0, stride: 8, sizes: [16, 20, 25]}
    - {cls: cls_1, box: box_1, stride: 16, sizes: [32, 40, 50]}
    - {cls: cls_2, box: box_2, stride: 32, sizes: [64, 80, 101]}
  """

private let fcosConfig = """
  type: dense
  num_classes: 5
  box_format: ltrb
  levels:
    - {cls: cls_0, box: box_0, quality: ctr_0, stride: 8}
    - {cls: cls_1, box: box_1, quality: ctr_1, stride: 16}
    - {cls: cls_2, box: box_2, quality: ctr_2, stride: 32}
  """

private let gflConfig = """
  type: dense
  num_classes: 5
  box_format: dfl
  reg_max: 7
  levels:
    - {cls: cls_0, box: box_0, stride: 8}
    - {cls: cls_1, box: box_1, stride: 16}
    - {cls: cls_2, box: box_2, stride: 32}
  """

final class TaskLossTests: XCTestCase {
  private func check(_ fixture: TaskFixture, _ loss: TaskLoss, file: StaticString = #filePath, line: UInt = #line)
    throws
  {
    let truth = fixture.truth
    let assignments = truth.map(loss.assign)
    for (image, matched) in fixture.matched.enumerated() {
      XCTAssertEqual(
        assignments[image], matched, "image \(image): assignment differs from torchvision's", file: file, line: line)
      XCTAssertGreaterThan(
        matched.filter { $0 >= 0 }.count, 3, "image \(image): too little foreground to test", file: file, line: line)
    }
    let result = try loss.evaluate(outputs: fixture.outputs.mapValues(\.tensor), truth: truth)
    for (name, value) in fixture.losses {
      XCTAssertEqual(
        result.terms[name] ?? .nan, value, accuracy: 1e-4 * abs(value), "term \(name)", file: file, line: line)
    }
    for (name, grad) in fixture.grads.sorted(by: { $0.key < $1.key }) {
      assertClose(loss: result.loss, fixture.loss, gradient: result.gradients[name], grad, name, file: file, line: line)
    }
  }

  func testRetinaNetLossMatchesTorchvisionComputeLoss() throws {
    let fixture = try loadFixture("retinanet.json", as: TaskFixture.self)
    XCTAssertEqual(fixture.sizes, [[16, 20, 25], [32, 40, 50], [64, 80, 101]])
    XCTAssertTrue(fixture.matched.joined().contains(Assigner.ignored), "the fixture should exercise ignored anchors")
    let shapes = fixture.outputs.mapValues(\.shape)
    try check(fixture, try TaskLoss(config: try HeadConfig(yaml: retinanetConfig), outputShapes: shapes))
  }

  /// torchvision's `smooth_l1` box loss (beta 1) on the same outputs.
  func testRetinaNetSmoothL1MatchesTorchvision() throws {
    let fixture = try loadFixture("retinanet.json", as: TaskFixture.self)
    let expected = try XCTUnwrap(fixture.smoothL1)
    let loss = try TaskLoss(
      config: try HeadConfig(yaml: retinanetConfig), outputShapes: fixture.outputs.mapValues(\.shape),
      recipe: .retinanet(boxLoss: .smoothL1(beta: 1)))
    let result = try loss.evaluate(outputs: fixture.outputs.mapValues(\.tensor), truth: fixture.truth)
    for (name, value) in expected.losses {
      XCTAssertEqual(result.terms[name] ?? .nan, value, accuracy: 1e-4 * abs(value), "term \(name)")
    }
    let total = expected.losses.values.reduce(0, +)
    for (name, grad) in expected.grads.sorted(by: { $0.key < $1.key }) {
      assertClose(loss: result.loss, total, gradient: result.gradients[name], grad, name)
    }
  }

  func testFCOSLossMatchesTorchvisionComputeLoss() throws {
    let fixture = try loadFixture("fcos.json", as: TaskFixture.self)
    let shapes = fixture.outputs.mapValues(\.shape)
    try check(fixture, try TaskLoss(config: try HeadConfig(yaml: fcosConfig), outputShapes: shapes))
  }

  func testGFLLossMatchesMMDetFormula() throws {
    let fixture = try loadFixture("gfl.json", as: TaskFixture.self)
    let config = try HeadConfig(yaml: gflConfig)
    guard case .dense(let head) = config.head else { return XCTFail("not a dense head") }
    XCTAssertEqual(head.regMax, 7)
    let loss = try TaskLoss(config: config, outputShapes: fixture.outputs.mapValues(\.shape))
    XCTAssertEqual(loss.recipe, .gfl(anchorScale: 8))
    try check(fixture, loss)
  }

  /// The assembled GFL loss graph (int64 and symbolic-size inputs) writes as ONNX, reads back and
  /// computes the same loss.
  func testTaskLossGraphWritesAsONNX() throws {
    let fixture = try loadFixture("gfl.json", as: TaskFixture.self)
    let loss = try TaskLoss(config: try HeadConfig(yaml: gflConfig), outputShapes: fixture.outputs.mapValues(\.shape))
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("gfl-loss-\(getpid()).onnx").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    try ModelFile.write(loss.graph.model, to: path)
    let read = try ModelFile.read(path)
    var feeds = try loss.targets(fixture.truth, outputs: fixture.outputs.mapValues(\.tensor))
    for (name, tensor) in fixture.outputs { feeds[name] = tensor.tensor }
    let again = try Interpreter(model: read, fuse: false).run(feeds).outputs[0].floats[0]
    XCTAssertEqual(again, fixture.loss, accuracy: 1e-4 * fixture.loss)
  }

  /// Without ground truth every row is background: only the classification term remains, and the
  /// padded foreground row contributes nothing.
  func testEmptyGroundTruthGivesClassificationOnly() throws {
    let fixture = try loadFixture("fcos.json", as: TaskFixture.self)
    let loss = try TaskLoss(config: try HeadConfig(yaml: fcosConfig), outputShapes: fixture.outputs.mapValues(\.shape))
    let empty = [GroundTruth(boxes: [], labels: []), GroundTruth(boxes: [], labels: [])]
    let result = try loss.evaluate(outputs: fixture.outputs.mapValues(\.tensor), truth: empty)
    XCTAssertEqual(result.terms["bbox_regression"], 0)
    XCTAssertEqual(result.terms["bbox_ctrness"], 0)
    XCTAssertGreaterThan(result.terms["classification"] ?? 0, 0)
    XCTAssertEqual(result.gradients["box_0"]?.floats.allSatisfy { $0 == 0 }, true)
  }
}

final class AssignerTests: XCTestCase {
  func testATSSMatchesMMDetReference() throws {
    let fixture = try loadFixture("atss.json", as: ATSSFixture.self)
    let anchors = fixture.anchors.map { Box(x1: $0[0], y1: $0[1], x2: $0[2], y2: $0[3]) }
    // mmdet ATSS anchors: octave_base_scale 8 x stride, centred on the locations.
    var generated: [Box] = []
    var levels: [Int] = []
    for stride in fixture.strides {
      let generator = AnchorGenerator(
        style: .mmdet, aspectRatios: [1], sizes: [8 * Float(stride)], stride: Float(stride))
      let level = generator.anchors(height: 64 / stride, width: 64 / stride)
      generated += level
      levels.append(level.count)
    }
    XCTAssertEqual(generated, anchors)
    for (index, image) in fixture.images.enumerated() {
      let truth = image.boxes.map { Box(x1: $0[0], y1: $0[1], x2: $0[2], y2: $0[3]) }
      let matched = Assigner.atss(anchors: anchors, levels: levels, truth: truth)
      XCTAssertEqual(matched, image.matched, "image \(index)")
      XCTAssertGreaterThan(matched.filter { $0 >= 0 }.count, 3)
    }
  }

  func testMaxIoUMatcherThresholdsAndLowQualityMatches() {
    let truth = [Box(x1: 0, y1: 0, x2: 10, y2: 10)]
    let anchors = [
      Box(x1: 0, y1: 0, x2: 10, y2: 10),  // IoU 1
      Box(x1: 0, y1: 0, x2: 10, y2: 22),  // IoU 10/22: ignored
      Box(x1: 50, y1: 50, x2: 60, y2: 60),  // IoU 0: background
    ]
    XCTAssertEqual(Assigner.maxIoU(anchors: anchors, truth: truth), [0, Assigner.ignored, Assigner.background])
    // The best anchor of a box is kept even below the low threshold.
    let far = [Box(x1: 0, y1: 0, x2: 10, y2: 40), Box(x1: 30, y1: 30, x2: 40, y2: 40)]
    XCTAssertEqual(Assigner.maxIoU(anchors: far, truth: truth), [0, Assigner.background])
    XCTAssertEqual(
      Assigner.maxIoU(anchors: far, truth: truth, allowLowQualityMatches: false),
      [Assigner.background, Assigner.background])
    XCTAssertEqual(Assigner.maxIoU(anchors: far, truth: []), [Assigner.background, Assigner.background])
  }
}
