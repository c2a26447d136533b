import Foundation
import XCTest

/// `distill eval --detections` against the pycocotools numbers of Tests/Fixtures/coco (tools/make_coco_fixture.py).
final class EvalCLITests: XCTestCase {
  let coco = fixtures.appendingPathComponent("coco/seed1")

  struct Expected: Decodable {
    struct ClassAP: Decodable { let ap: Double; let ap50: Double }
    let stats: [Double]
    let perClass: [String: ClassAP]
    enum CodingKeys: String, CodingKey { case stats, perClass = "per_class" }
  }

  func scratch(_ name: String) throws -> URL {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("eval-cli-\(getpid())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let url = directory.appendingPathComponent(name)
    try? FileManager.default.removeItem(at: url)
    return url
  }

  func testEvalPrintsAndWritesThePycocotoolsNumbers() throws {
    let out = try scratch("eval.json")
    let result = try distill([
      "eval", "--detections", coco.appendingPathComponent("results.json").path,
      "--data", coco.appendingPathComponent("annotations.json").path, "--json", out.path,
    ])
    XCTAssertEqual(result.status, 0, result.stderr)
    let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: coco.appendingPathComponent("expected.json")))
    XCTAssertTrue(
      result.stdout.contains("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = \(String(format: "%.3f", expected.stats[0]))"),
      result.stdout)
    XCTAssertTrue(result.stdout.contains("never_annotated"), result.stdout)
    XCTAssertTrue(result.stderr.contains("254 detections"), result.stderr)

    let written = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: out)) as? [String: Any])
    let keys = ["map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large"]
    for (key, value) in zip(keys, expected.stats) {
      XCTAssertEqual(try XCTUnwrap(written[key] as? Double, key), value, accuracy: 1e-9, key)
    }
    let perClass = try XCTUnwrap(written["per_class"] as? [String: [String: Double]])
    let names = ["1": "person", "3": "car", "7": "dog", "12": "kite", "20": "never_annotated"]
    XCTAssertEqual(Set(perClass.keys), Set(names.values))
    for (id, reference) in expected.perClass {
      let entry = try XCTUnwrap(perClass[names[id]!])
      XCTAssertEqual(entry["ap"] ?? .nan, reference.ap, accuracy: 1e-9, id)
      XCTAssertEqual(entry["ap50"] ?? .nan, reference.ap50, accuracy: 1e-9, id)
    }
  }

  func testBadResultsFailWithoutWritingOutput() throws {
    let out = try scratch("never.json")
    let results = try scratch("unknown_category.json")
    try #"[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]"#.write(to: results, atomically: true, encoding: .utf8)
    let annotations = coco.appendingPathComponent("annotations.json").path
    let unknownImage = try distill(["eval", "--detections", results.path, "--data", annotations, "--json", out.path])
    XCTAssertEqual(unknownImage.status, 1)
    XCTAssertTrue(unknownImage.stderr.contains("unknown_category.json: result 0: image_id 1"), unknownImage.stderr)
    XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))

    let malformed = try scratch("malformed.json")
    try "[\n  {\"image_id\": 1,,}\n]".write(to: malformed, atomically: true, encoding: .utf8)
    let broken = try distill(["eval", "--detections", malformed.path, "--data", annotations, "--json", out.path])
    XCTAssertEqual(broken.status, 1)
    XCTAssertTrue(broken.stderr.contains("malformed.json:2:18: malformed JSON"), broken.stderr)
    XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
    XCTAssertEqual(broken.stdout, "")
  }
}

/// `distill eval MODEL` and `distill predict` on the tiny torchvision RetinaNet and FCOS of
/// Tests/Fixtures/heads: the numbers equal pycocotools applied to onnxruntime's raw outputs decoded by
/// torchvision's own post-processing (Tests/Fixtures/eval, tools/make_eval_fixture.py).
final class ModelEvalCLITests: XCTestCase {
  let keys = ["map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large"]

  func testEvalOfTorchvisionModelsEqualsPycocotoolsOnOnnxruntimeDetections() throws {
    for name in ["retinanet", "fcos"] {
      let heads = fixtures.appendingPathComponent("heads/\(name)"), eval = fixtures.appendingPathComponent("eval/\(name)")
      let out = FileManager.default.temporaryDirectory.appendingPathComponent("model-eval-\(getpid())-\(name).json")
      let saved = FileManager.default.temporaryDirectory.appendingPathComponent("model-eval-\(getpid())-\(name)-detections.json")
      defer {
        try? FileManager.default.removeItem(at: out)
        try? FileManager.default.removeItem(at: saved)
      }
      let result = try distill([
        "eval", heads.appendingPathComponent("model.onnx").path, "--head", heads.appendingPathComponent("head.yaml").path,
        "--data", eval.appendingPathComponent("annotations.json").path, "--images", eval.appendingPathComponent("images").path,
        "--batch", "4", "--json", out.path, "--save-detections", saved.path,
      ])
      XCTAssertEqual(result.status, 0, result.stderr)
      struct Expected: Decodable {
        let stats: [Double]
        let detections: Int
      }
      let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: eval.appendingPathComponent("expected.json")))
      let written = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: out)) as? [String: Any])
      for (key, value) in zip(keys, expected.stats) {
        XCTAssertEqual(try XCTUnwrap(written[key] as? Double, key), value, accuracy: 1e-4, "\(name) \(key)")
      }
      let detections = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: saved)) as? [[String: Any]])
      XCTAssertEqual(detections.count, expected.detections, name)
      // The saved results file scores the same through --detections.
      let again = try distill(["eval", "--detections", saved.path, "--data", eval.appendingPathComponent("annotations.json").path])
      XCTAssertEqual(again.status, 0, again.stderr)
      XCTAssertEqual(again.stdout, result.stdout)
    }
  }

  func testEvalRefusesAHeadThatDoesNotFitTheModel() throws {
    let heads = fixtures.appendingPathComponent("heads"), eval = fixtures.appendingPathComponent("eval/fcos")
    let result = try distill([
      "eval", heads.appendingPathComponent("fcos/model.onnx").path, "--head", heads.appendingPathComponent("retinanet/head.yaml").path,
      "--data", eval.appendingPathComponent("annotations.json").path, "--images", eval.appendingPathComponent("images").path,
    ])
    XCTAssertEqual(result.status, 1)
    XCTAssertTrue(result.stderr.contains("cls_0") || result.stderr.contains("box_0"), result.stderr)
    let missingImages = try distill([
      "eval", heads.appendingPathComponent("fcos/model.onnx").path, "--head", heads.appendingPathComponent("fcos/head.yaml").path,
      "--data", eval.appendingPathComponent("annotations.json").path, "--images", "/nonexistent",
    ])
    XCTAssertEqual(missingImages.status, 1)
    XCTAssertTrue(missingImages.stderr.contains("missing on disk"), missingImages.stderr)
  }

  func testPredictPrintsDrawsAndWritesJSON() throws {
    let heads = fixtures.appendingPathComponent("heads/fcos")
    let image = fixtures.appendingPathComponent("eval/fcos/images/image_01.png").path
    let draw = FileManager.default.temporaryDirectory.appendingPathComponent("predict-\(getpid())")
    defer { try? FileManager.default.removeItem(at: draw) }
    let result = try distill([
      "predict", heads.appendingPathComponent("model.onnx").path, image, "--head", heads.appendingPathComponent("head.yaml").path,
      "--score", "0.6", "--draw", draw.path, "--json",
    ])
    XCTAssertEqual(result.status, 0, result.stderr)
    let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
    let first = try XCTUnwrap((object["images"] as? [[String: Any]])?.first)
    let detections = try XCTUnwrap(first["detections"] as? [[String: Any]])
    XCTAssertFalse(detections.isEmpty)
    XCTAssertTrue(detections.allSatisfy { ($0["score"] as? Double ?? 0) >= 0.6 })
    // The same detections as eval's (a score threshold only drops some).
    let picture = draw.appendingPathComponent("image_01.png").path
    XCTAssertTrue(FileManager.default.fileExists(atPath: picture))
    let refused = try distill([
      "predict", heads.appendingPathComponent("model.onnx").path, image, "--head", heads.appendingPathComponent("head.yaml").path,
      "--draw", fixtures.appendingPathComponent("eval/fcos/images").path,
    ])
    XCTAssertEqual(refused.status, 1)
    XCTAssertTrue(refused.stderr.contains("would overwrite the input image"), refused.stderr)
  }
}
