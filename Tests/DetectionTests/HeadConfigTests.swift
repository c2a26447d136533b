import DistillDetection
import XCTest

final class HeadConfigTests: XCTestCase {
  let fcos = """
    type: dense
    num_classes: 5
    levels:
      - {cls: cls_0, box: box_0, quality: ctr_0, stride: 8}
      - {cls: cls_1, box: box_1, stride: 16}
    """
  let fcosShapes: [String: [Int]] = [
    "cls_0": [2, 5, 12, 16], "box_0": [2, 4, 12, 16], "ctr_0": [2, 1, 12, 16], "cls_1": [2, 5, 6, 8],
    "box_1": [2, 4, 6, 8],
  ]

  private func assertError(_ body: () throws -> Void, mentions parts: [String], line: UInt = #line) {
    XCTAssertThrowsError(try body(), line: line) { error in
      XCTAssertTrue(error is HeadConfigError, "\(type(of: error))", line: line)
      for part in parts { XCTAssertTrue("\(error)".contains(part), "'\(error)' should mention \(part)", line: line) }
    }
  }

  func testDefaultsFollowTheFrameworks() throws {
    let dense = try HeadConfig(yaml: fcos)
    XCTAssertEqual([dense.scoreThreshold, dense.nmsIoU], [0.2, 0.6])
    XCTAssertEqual([dense.preNMSTopK, dense.maxDetections], [1000, 100])
    guard case .dense(let head) = dense.head else { return XCTFail("dense head expected") }
    XCTAssertEqual(head.boxFormat, .ltrb)
    XCTAssertEqual(head.offset, 0)
    XCTAssertEqual(head.qualityMode, .sqrt)
    XCTAssertEqual(head.levels[0].quality, "ctr_0")
    XCTAssertNil(head.levels[1].quality)
    try HeadDecoder(dense).validate(outputShapes: fcosShapes)

    let json = try HeadConfig(
      yaml:
        #"{"type": "yolo", "output": "output0", "num_classes": 80, "layout": "anchors_last", "input_size": {"width": 640, "height": 480}}"#
    )
    XCTAssertEqual([json.scoreThreshold, json.nmsIoU], [0.25, 0.7])
    XCTAssertEqual(json.maxDetections, 300)
    XCTAssertEqual(json.inputSize?.width, 640)
    XCTAssertEqual(json.inputSize?.height, 480)
    try HeadDecoder(json).validate(outputShapes: ["output0": [1, 84, 8400]])
    assertError(
      { try HeadDecoder(json).validate(outputShapes: ["output0": [1, 8400, 84]]) }, mentions: ["output0", "[N,84,A]"])
  }

  func testWrongOutputNameIsNamed() throws {
    var shapes = fcosShapes
    shapes["box_1"] = nil
    shapes["bbox_1"] = [2, 4, 6, 8]
    assertError(
      { try HeadDecoder(HeadConfig(yaml: self.fcos)).validate(outputShapes: shapes) },
      mentions: ["levels[1].box", "'box_1'", "no such output", "bbox_1"])
  }

  func testThreeChannelBoxMapIsRefusedWithTheExpectedShape() throws {
    var shapes = fcosShapes
    shapes["box_0"] = [2, 3, 12, 16]
    assertError(
      { try HeadDecoder(HeadConfig(yaml: self.fcos)).validate(outputShapes: shapes) },
      mentions: ["'box_0'", "[2,3,12,16]", "[2,4,12,16]"])
    shapes = fcosShapes
    shapes["cls_1"] = [2, 7, 6, 8]
    assertError(
      { try HeadDecoder(HeadConfig(yaml: self.fcos)).validate(outputShapes: shapes) },
      mentions: ["'cls_1'", "[N,5,H,W]"])
  }

  func testClassChannelsMustBeAnchorsTimesClasses() throws {
    let config = try HeadConfig(
      yaml: """
        type: anchors
        num_classes: 5
        anchor_generator: {aspect_ratios: [0.5, 1.0, 2.0]}
        levels:
          - {cls: c, box: b, stride: 8, sizes: [32, 40, 50]}
        """)
    assertError(
      { try HeadDecoder(config).validate(outputShapes: ["c": [1, 40, 4, 4], "b": [1, 36, 4, 4]]) },
      mentions: ["'c'", "[N,45,H,W]", "9 anchors x 5 classes"])
    assertError(
      { try HeadDecoder(config).validate(outputShapes: ["c": [1, 45, 4, 4], "b": [1, 4, 4, 4]]) },
      mentions: ["'b'", "[1,36,4,4]"])
  }

  func testLevelWithoutStrideIsNamed() {
    assertError(
      {
        _ = try HeadConfig(
          yaml: """
            type: dense
            num_classes: 5
            levels:
              - {cls: cls_0, box: box_0, stride: 8}
              - {cls: cls_1, box: box_1}
            """)
      }, mentions: ["'levels[1]'", "stride"])
  }

  func testUnknownKeysAreErrors() {
    assertError(
      { _ = try HeadConfig(yaml: self.fcos + "\nscore_treshold: 0.3\n") },
      mentions: ["'score_treshold'", "score_threshold"])
    assertError(
      { _ = try HeadConfig(yaml: self.fcos.replacingOccurrences(of: "stride: 16", with: "stride: 16, qualty: q")) },
      mentions: ["'levels[1].qualty'"])
    assertError(
      { _ = try HeadConfig(yaml: "type: postprocessed\nboxes: b\nscores: s\nlabels: l\nnms_iou: 0.5\nreg_max: 7\n") },
      mentions: ["'reg_max'"])
  }

  func testOtherMistakesAreNamed() {
    assertError({ _ = try HeadConfig(yaml: "type: ssd\nnum_classes: 3") }, mentions: ["'type'", "ssd", "anchors"])
    assertError(
      { _ = try HeadConfig(yaml: self.fcos.replacingOccurrences(of: "stride: 8", with: "stride: eight")) },
      mentions: ["levels[0].stride", "number"])
    assertError(
      { _ = try HeadConfig(yaml: self.fcos + "\nbox_format: xyxy\n") }, mentions: ["'box_format'", "ltrb_px", "dfl"])
    assertError(
      { _ = try HeadConfig(yaml: self.fcos.replacingOccurrences(of: "num_classes: 5", with: "")) },
      mentions: ["num_classes"])
    assertError({ _ = try HeadConfig(yaml: "type: dense\nnum_classes: [1") }, mentions: ["YAML"])
    assertError({ _ = try HeadConfig.load("/nonexistent/head.yaml") }, mentions: ["/nonexistent/head.yaml"])
  }
}
