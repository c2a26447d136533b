import DistillCore
import DistillDetection
import DistillONNX
import Foundation
import XCTest

/// Fixtures written by tools/make_head_fixtures.py (torchvision 0.29 post-processing as reference).
let headFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .appendingPathComponent("Fixtures/heads")

private struct Expected: Decodable {
  let boxes: [[Float]]
  let scores: [Float]
  let labels: [Int]
}

private let imageSize = (width: 128, height: 96)

/// Same count, and a one-to-one matching (order-insensitive, for near-ties in score) where labels
/// agree exactly, boxes within 1e-3 relative (of max(1, |coordinate|)) and scores within 1e-4.
private func assertMatches(
  _ actual: [Detection], _ expected: Expected, _ label: String, file: StaticString = #filePath, line: UInt = #line
) {
  XCTAssertEqual(actual.count, expected.scores.count, "\(label): detection count", file: file, line: line)
  var unused = Set(actual.indices)
  var failures = 0
  for e in expected.scores.indices {
    let box = expected.boxes[e]
    let match = unused.first { a in
      let d = actual[a]
      let close = zip(d.box.xyxy, box).allSatisfy { abs($0 - $1) <= 1e-3 * max(1, abs($1)) }
      return d.classIndex == expected.labels[e] && abs(d.score - expected.scores[e]) <= 1e-4 && close
    }
    if let match {
      unused.remove(match)
    } else {
      failures += 1
      if failures <= 3 {
        XCTFail(
          "\(label): no detection matches expected #\(e) label \(expected.labels[e]) score \(expected.scores[e]) box \(box)",
          file: file, line: line)
      }
    }
  }
  XCTAssertEqual(failures, 0, "\(label): \(failures) expected detections unmatched", file: file, line: line)
}

private func loadExpected(_ directory: String) throws -> [Expected] {
  let data = try Data(contentsOf: headFixtures.appendingPathComponent("\(directory)/expected.json"))
  return try JSONDecoder().decode([Expected].self, from: data)
}

private func decoder(_ directory: String) throws -> HeadDecoder {
  HeadDecoder(try HeadConfig.load(headFixtures.appendingPathComponent("\(directory)/head.yaml").path))
}

private func runModel(_ directory: String) throws -> [String: Tensor] {
  let dir = headFixtures.appendingPathComponent(directory)
  let model = try ModelFile.read(dir.appendingPathComponent("model.onnx").path)
  let interpreter = try Interpreter(model: model)
  let images = try NumpyFile.read(dir.appendingPathComponent("input.npy").path)
  let result = try interpreter.run(["images": images])
  var outputs: [String: Tensor] = [:]
  for (info, tensor) in zip(interpreter.graph.outputs, result.outputs) { outputs[info.name] = tensor }
  return outputs
}

private func readOutputs(_ directory: String, _ names: [String]) throws -> [String: Tensor] {
  var outputs: [String: Tensor] = [:]
  for name in names {
    outputs[name] = try NumpyFile.read(headFixtures.appendingPathComponent("\(directory)/\(name).npy").path)
  }
  return outputs
}

final class HeadDecoderTests: XCTestCase {
  private func checkAgainstFramework(_ directory: String, outputs: [String: Tensor]) throws {
    let decoder = try decoder(directory)
    try decoder.validate(outputShapes: outputs.mapValues(\.shape))
    let detections = try decoder.decode(outputs: outputs, imageSize: imageSize)
    let expected = try loadExpected(directory)
    XCTAssertEqual(detections.count, expected.count, "\(directory): images")
    for (index, (actual, reference)) in zip(detections, expected).enumerated() {
      XCTAssertGreaterThan(reference.scores.count, 5, "\(directory): the fixture should have detections")
      assertMatches(actual, reference, "\(directory) image \(index)")
      XCTAssertEqual(actual.map(\.score), actual.map(\.score).sorted(by: >), "\(directory): detections are best first")
    }
  }

  func testTorchvisionRetinaNetMatchesPostprocessDetections() throws {
    try checkAgainstFramework("retinanet", outputs: try runModel("retinanet"))
  }

  func testTorchvisionFCOSMatchesPostprocessDetections() throws {
    try checkAgainstFramework("fcos", outputs: try runModel("fcos"))
  }

  func testYOLOv8LayoutWithoutObjectnessMatchesReference() throws {
    try checkAgainstFramework("yolov8", outputs: try readOutputs("yolov8", ["output0"]))
  }

  func testYOLOv5LayoutWithObjectnessMatchesReference() throws {
    try checkAgainstFramework("yolov5", outputs: try readOutputs("yolov5", ["output0"]))
  }

  func testGFLDistributionBinsMatchReference() throws {
    let names = (0..<3).flatMap { ["cls_\($0)", "box_\($0)"] }
    try checkAgainstFramework("gfl_dfl", outputs: try readOutputs("gfl_dfl", names))
  }

  func testDETRSoftmaxMatchesPostProcess() throws {
    let names = ["pred_logits", "pred_boxes", "aux_logits_0", "aux_boxes_0"]
    try checkAgainstFramework("detr_softmax", outputs: try readOutputs("detr_softmax", names))
  }

  func testDeformableDETRSigmoidTopKMatchesPostProcess() throws {
    let names = ["pred_logits", "pred_boxes", "aux_logits_0", "aux_boxes_0"]
    try checkAgainstFramework("detr_sigmoid", outputs: try readOutputs("detr_sigmoid", names))
  }

  /// The dense form holds one row per anchor with torchvision's anchor order and decoded boxes:
  /// every final detection is one of its rows.
  func testDenseFormRowsContainTheDetections() throws {
    let outputs = try runModel("retinanet")
    let decoder = try decoder("retinanet")
    let form = try decoder.denseForm(outputs: outputs, imageSize: imageSize)
    XCTAssertEqual(form.count, (12 * 16 + 6 * 8 + 3 * 4) * 9)
    XCTAssertEqual(form.levels.map(\.count), [12 * 16 * 9, 6 * 8 * 9, 3 * 4 * 9])
    XCTAssertEqual(form.priors.count, form.count)
    XCTAssertEqual(
      form.priors[0], Box(x1: -11, y1: -6, x2: 11, y2: 6), "torchvision's rounded cell anchor (ratio 0.5, size 16)")
    let detections = try decoder.decode(outputs: outputs, imageSize: imageSize)[1]
    for detection in detections.prefix(10) {
      let found = (0..<form.count).contains { row in
        abs(form.score(image: 1, row: row, classIndex: detection.classIndex) - detection.score) < 1e-7
          && form.box(image: 1, row: row).clipped(width: 128, height: 96) == detection.box
      }
      XCTAssertTrue(found, "detection \(detection) is not a row of the dense form")
    }
    let detr = try HeadDecoder(HeadConfig.load(headFixtures.appendingPathComponent("detr_softmax/head.yaml").path))
    let detrOutputs = try readOutputs("detr_softmax", ["pred_logits", "pred_boxes", "aux_logits_0", "aux_boxes_0"])
    let final = try detr.denseForm(outputs: detrOutputs, imageSize: imageSize)
    let aux = try detr.denseForm(outputs: detrOutputs, imageSize: imageSize, auxLayer: 0)
    XCTAssertEqual(final.numClasses, 6, "5 classes + no-object")
    XCTAssertNotEqual(final.scores, aux.scores, "the aux layer reads its own outputs")
  }
}

final class BoxOpsTests: XCTestCase {
  private struct IoUFixture: Decodable {
    let a: [[Float]], b: [[Float]], iou: [[Float]], giou: [[Float]], diou: [[Float]]
  }

  private struct NMSFixture: Decodable {
    struct Case: Decodable {
      let iou: Float
      let keep: [Int]
    }
    let boxes: [[Float]], scores: [Float], labels: [Int], cases: [Case]
  }

  private func boxes(_ rows: [[Float]]) -> [Box] { rows.map { Box(x1: $0[0], y1: $0[1], x2: $0[2], y2: $0[3]) } }

  func testIoUGIoUDIoUMatchTorchvisionOps() throws {
    let data = try Data(contentsOf: headFixtures.appendingPathComponent("iou.json"))
    let f = try JSONDecoder().decode(IoUFixture.self, from: data)
    let a = boxes(f.a)
    let b = boxes(f.b)
    for (name, actual, expected) in [
      ("iou", BoxMatrix.iou(a, b), f.iou), ("giou", BoxMatrix.generalizedIoU(a, b), f.giou),
      ("diou", BoxMatrix.distanceIoU(a, b), f.diou),
    ] {
      var worst: Float = 0
      for (x, y) in zip(actual.joined(), expected.joined()) { worst = max(worst, abs(x - y)) }
      XCTAssertLessThan(worst, 1e-5, "\(name) differs from torchvision.ops by \(worst)")
    }
    XCTAssertTrue(f.iou.joined().contains { $0 > 0.1 }, "the fixture should have overlapping boxes")
    XCTAssertTrue(f.giou.joined().contains { $0 < -0.1 }, "and disjoint ones")
  }

  func testBatchedNMSMatchesTorchvision() throws {
    let data = try Data(contentsOf: headFixtures.appendingPathComponent("nms.json"))
    let f = try JSONDecoder().decode(NMSFixture.self, from: data)
    for test in f.cases {
      let keep = NMS.batched(boxes: boxes(f.boxes), scores: f.scores, classes: f.labels, iouThreshold: test.iou)
      XCTAssertEqual(keep, test.keep, "batched_nms at IoU \(test.iou)")
      XCTAssertLessThan(keep.count, f.scores.count, "NMS at \(test.iou) should suppress something")
    }
  }

  func testConversions() {
    let box = Box(cxcywh: 10, 20, 4, 6)
    XCTAssertEqual(box, Box(x1: 8, y1: 17, x2: 12, y2: 23))
    XCTAssertEqual(box.xywh, [8, 17, 4, 6])
    XCTAssertEqual(box.cxcywh, [10, 20, 4, 6])
    XCTAssertEqual(Box(xywh: 8, 17, 4, 6), box)
  }

  func testBoxCoderRoundTripsAndClampsLikeEachFramework() {
    let anchor = Box(x1: 10, y1: 20, x2: 50, y2: 40)
    let target = Box(x1: 12, y1: 18, x2: 60, y2: 44)
    for coder in [
      BoxCoder(style: .torchvision, weights: [10, 10, 5, 5]),
      BoxCoder(style: .mmdet, means: [0, 0, 0, 0], stds: [0.1, 0.1, 0.2, 0.2], clip: abs(log(16 / 1000))),
    ] {
      let deltas = coder.encode(target, anchor: anchor)
      let decoded = coder.decode(deltas[0], deltas[1], deltas[2], deltas[3], anchor: anchor)
      for (x, y) in zip(decoded.xyxy, target.xyxy) { XCTAssertEqual(x, y, accuracy: 1e-4, "\(coder.style)") }
    }
    let torchvision = BoxCoder(style: .torchvision)
    XCTAssertEqual(torchvision.decode(0, 0, 100, -100, anchor: anchor).width, 40 * 1000 / 16, accuracy: 0.1)
    XCTAssertEqual(
      torchvision.decode(0, 0, 100, -100, anchor: anchor).height, 20 * exp(-100), accuracy: 1e-6, "no lower clamp")
    let mmdet = BoxCoder(style: .mmdet, clip: abs(log(16 / 1000)))
    XCTAssertEqual(
      mmdet.decode(0, 0, 0, -100, anchor: anchor).height, 20 * 16 / 1000, accuracy: 1e-4, "clamped both ways")
  }

  func testMMDetAnchorsAreUnroundedAndOffset() {
    let scales = AnchorGenerator.octaveScales(octaveBaseScale: 4, scalesPerOctave: 3)
    XCTAssertEqual(scales[1], 4 * pow(2, 1.0 / 3), accuracy: 1e-5)
    let mmdet = AnchorGenerator(style: .mmdet, aspectRatios: [1], sizes: [33], stride: 8, centerOffset: 0.5)
    XCTAssertEqual(
      mmdet.anchors(height: 2, width: 2)[3], Box(x1: 8 + 4 - 16.5, y1: 8 + 4 - 16.5, x2: 8 + 4 + 16.5, y2: 8 + 4 + 16.5)
    )
    let torchvision = AnchorGenerator(style: .torchvision, aspectRatios: [1], sizes: [33], stride: 8)
    XCTAssertEqual(torchvision.cellAnchors, [Box(x1: -16, y1: -16, x2: 16, y2: 16)], "round half to even")
  }
}
