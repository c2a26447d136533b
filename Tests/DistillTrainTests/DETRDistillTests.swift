import DistillCore
import DistillDetection
import DistillONNX
import Foundation
import XCTest

@testable import DistillTrain

/// The `detr` loss (DETRDistill's progressive instance distillation) against PyTorch with scipy's
/// Hungarian matching (Tests/Fixtures/detr_distill, tools/make_detr_distill_fixture.py).
final class DETRDistillTests: XCTestCase {
  let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/detr_distill")

  func head(_ prefix: String) throws -> HeadConfig {
    try HeadConfig(yaml: """
      type: detr
      num_classes: 4
      activation: sigmoid
      logits: \(prefix)_logits_1
      boxes: \(prefix)_boxes_1
      aux:
        - {logits: \(prefix)_logits_0, boxes: \(prefix)_boxes_0}
      """)
  }

  func load(_ name: String) throws -> Tensor { try NumpyFile.read(directory.appendingPathComponent(name + ".npy").path) }

  func testMatchingValueAndGradientEqualPyTorch() throws {
    struct Expected: Decodable {
      struct Layer: Decodable {
        let loss: Double
        let student_rows: [Int]
        let teacher_rows: [Int]
      }
      let layers: [Layer]
    }
    let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: directory.appendingPathComponent("expected.json")))
    let method = try DETRDistill(setup: MethodSetup(teacherHead: try head("teacher"), studentHead: try head("student")), settings: [:])
    XCTAssertEqual(method.studentLayers.map(\.logits), ["student_logits_0", "student_logits_1"])
    var builder = GraphBuilder(name: "detr")
    var studentValues: [String: Tensor] = [:], teacherValues: [String: Tensor] = [:]
    for tap in method.extraTaps.student {
      let value = try load(tap)
      studentValues[DistillationLoss.studentValue(tap)] = value
      builder.input(DistillationLoss.studentValue(tap), shape: value.shape.map { $0 })
    }
    for tap in method.extraTaps.teacher {
      let value = try load(tap)
      teacherValues[tap] = value
      builder.input(DistillationLoss.teacherValue(tap), shape: value.shape.map { $0 })
    }
    let terms = try method.build(&builder, pairs: [])
    XCTAssertEqual(terms.map(\.name), ["layer0", "layer1"])
    let total = builder.add("Sum", terms.map(\.value))
    let graph = try LossGraph(builder, loss: total, terms: terms)
    let context = StepContext(batch: Batch(feeds: [:]), teacher: teacherValues, student: studentValues, inputSize: (64, 64), objects: [])
    let steps = try method.stepFeeds(context)
    for (layer, reference) in expected.layers.enumerated() {
      XCTAssertEqual(steps[DETRDistill.indexInput(layer, "student")]?.ints.map(Int.init), reference.student_rows, "layer \(layer)")
      XCTAssertEqual(steps[DETRDistill.indexInput(layer, "teacher")]?.ints.map(Int.init), reference.teacher_rows, "layer \(layer)")
    }
    var feeds = steps
    for (name, value) in studentValues { feeds[name] = value }
    for (name, value) in teacherValues { feeds[DistillationLoss.teacherValue(name)] = value }
    let result = try graph.evaluate(feeds, gradientsFor: Set(studentValues.keys))
    for (layer, reference) in expected.layers.enumerated() {
      XCTAssertEqual(Double(result.terms["layer\(layer)"]!), reference.loss, accuracy: 1e-4 * reference.loss)
      for kind in ["logits", "boxes"] {
        let gradient = try XCTUnwrap(result.gradients[DistillationLoss.studentValue("student_\(kind)_\(layer)")])
        let want = try load("gradient_\(kind)_\(layer)")
        let scale = want.floats.map { abs($0) }.max()!
        let worst = zip(gradient.floats, want.floats).map { abs($0 - $1) }.max()!
        XCTAssertLessThanOrEqual(worst, 1e-4 * scale, "layer \(layer) \(kind): gradient differs by \(worst) (largest \(scale))")
      }
    }
  }

  func testHungarianFindsTheMinimumOnAKnownMatrix() {
    // Rows 0..2 to columns 0..3; the optimum 1 + 2 + 1 = 4 takes columns 1, 3, 0.
    let cost: [Double] = [4, 1, 3, 9, 2, 8, 5, 2, 1, 6, 7, 4]
    XCTAssertEqual(Hungarian.assign(cost, rows: 3, columns: 4), [1, 3, 0])
  }
}
