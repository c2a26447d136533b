import Foundation
import XCTest

/// `detr` (DETRDistill) with all three terms on the tiny DETR-style pair of
/// Tests/Fixtures/detr_distill/tiny (tools/make_detr_distill_fixture.py), on the images of
/// Tests/Fixtures/eval: with annotations and label-free.
final class TrainDETRCLITests: XCTestCase {
  /// A config in a fresh directory; `annotated` adds the COCO annotations, else the teacher's
  /// detections above 0.3 are the objects; `loss` is the `detr` entry.
  func config(_ name: String, annotated: Bool, loss: String = TrainDETRCLITests.loss) throws -> (config: String, output: String) {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("train-detr-\(getpid())-\(name)")
    try? FileManager.default.removeItem(at: directory)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let models = fixtures.appendingPathComponent("detr_distill/tiny").path, eval = fixtures.appendingPathComponent("eval/fcos").path
    let text = """
      teacher: \(models)/teacher.onnx
      student: \(models)/student.onnx
      data: {images: \(eval)/images, \(annotated ? "annotations: \(eval)/annotations.json, " : "")size: [96, 128]}
      head: {type: detr, num_classes: 5, activation: sigmoid, logits: logits_1, boxes: boxes_1, aux: [{logits: logits_0, boxes: boxes_0}]}
      pseudo_label: {score: 0.3}
      losses:
        - \(loss)
      train: {steps: 6, batch: 2, seed: 0, optimizer: {type: sgd, lr: 0.01, momentum: 0.9}}
      output: \(directory.appendingPathComponent("run").path)
      """
    let path = directory.appendingPathComponent("distill.yaml").path
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return (path, directory.appendingPathComponent("run").path)
  }

  static let loss = """
    {type: detr, teacher: [enc, memory], student: [feat, memory], query_features: hidden,
           student_queries: query_embed, teacher_queries: query_embed}
    """

  func testAllThreeTermsTrainWithAndWithoutAnnotations() throws {
    for annotated in [true, false] {
      let (path, output) = try config(annotated ? "annotated" : "label-free", annotated: annotated)
      let result = try distill(["train", path])
      XCTAssertEqual(result.status, 0, result.stderr)
      let text = try String(contentsOfFile: output + "/metrics.jsonl", encoding: .utf8)
      let lines = try text.split(separator: "\n").map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
      XCTAssertEqual(lines.count, 7)
      for line in lines {
        for key in ["loss", "detr:layer0", "detr:layer1", "detr:feature", "detr:assisted"] {
          let value = try XCTUnwrap(line[key] as? Double, "\(key) in \(line)")
          XCTAssertTrue(value.isFinite && value > 0, "\(key) = \(value) (annotated: \(annotated))")
        }
      }
      let losses = try lines.map { try XCTUnwrap($0["loss"] as? Double) }
      XCTAssertLessThan(losses[6], losses[0], "the loss falls (annotated: \(annotated)): \(losses)")
      XCTAssertTrue(FileManager.default.fileExists(atPath: output + "/student.onnx"))
    }
  }

  func testQueriesOfAnotherShapeAreRefusedNamingBoth() throws {
    let loss = Self.loss.replacingOccurrences(of: "teacher_queries: query_embed", with: "teacher_queries: cls.weight")
    let (path, output) = try config("shapes", annotated: false, loss: loss)
    let result = try distill(["train", path])
    XCTAssertEqual(result.status, 1)
    XCTAssertTrue(
      result.stderr.contains("the student's 'query_embed' is [6, 8] and the teacher's 'cls.weight' is [5, 8]"), result.stderr)
    XCTAssertFalse(FileManager.default.fileExists(atPath: output + "/metrics.jsonl"))
  }

  func testUnknownQueryValuesNameTheClosest() throws {
    let loss = Self.loss.replacingOccurrences(of: "student_queries: query_embed", with: "student_queries: query_embd")
      .replacingOccurrences(of: "query_features: hidden", with: "query_features: hiden")
    let (path, _) = try config("names", annotated: false, loss: loss)
    let result = try distill(["train", path])
    XCTAssertEqual(result.status, 1)
    XCTAssertTrue(result.stderr.contains("the student computes no value 'query_embd'; closest: 'query_embed'"), result.stderr)
    XCTAssertTrue(result.stderr.contains("the teacher computes no value 'hiden'; closest: 'hidden'"), result.stderr)
  }
}
