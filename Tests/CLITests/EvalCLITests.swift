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
