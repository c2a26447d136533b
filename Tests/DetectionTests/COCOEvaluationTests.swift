import DistillDetection
import Foundation
import XCTest

/// COCOEvaluator against pycocotools' COCOeval on fixtures written by tools/make_coco_fixture.py.
final class COCOEvaluationTests: XCTestCase {
  let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/coco")

  /// expected.json, read with JSONDecoder (JSONSerialization on Linux misreads 17-digit decimals by ulps).
  struct Expected: Decodable {
    struct ClassAP: Decodable { let ap: Double; let ap50: Double }
    let stats: [Double]
    let perClass: [String: ClassAP]
    let iouThresholds: [Double]
    let recallThresholds: [Double]

    enum CodingKeys: String, CodingKey {
      case stats, perClass = "per_class", iouThresholds = "iou_thresholds", recallThresholds = "recall_thresholds"
    }
  }

  func expected(_ seed: String) throws -> Expected {
    try JSONDecoder().decode(Expected.self, from: Data(contentsOf: fixtures.appendingPathComponent("\(seed)/expected.json")))
  }

  func path(_ seed: String, _ file: String) -> String { fixtures.appendingPathComponent("\(seed)/\(file)").path }

  func testThresholdsAreNumpysLinspaceBitForBit() throws {
    let reference = try expected("seed1")
    XCTAssertEqual(COCOEvaluator.iouThresholds, reference.iouThresholds)
    XCTAssertEqual(COCOEvaluator.recallThresholds, reference.recallThresholds)
  }

  func testMatchesPycocotoolsOnEveryFixture() throws {
    let seeds = try FileManager.default.contentsOfDirectory(atPath: fixtures.path).filter { $0.hasPrefix("seed") }.sorted()
    XCTAssertGreaterThanOrEqual(seeds.count, 3)
    var largestDifference = 0.0
    for seed in seeds {
      let reference = try expected(seed)
      let annotations = try COCOAnnotations.load(path(seed, "annotations.json"))
      let detections = try COCOResults.load(path(seed, "results.json"), against: annotations)
      let result = try COCOEvaluator(annotations: annotations).evaluate(detections)
      XCTAssertEqual(result.stats.count, 12)
      for (index, (mine, theirs)) in zip(result.stats, reference.stats).enumerated() {
        XCTAssertEqual(mine, theirs, accuracy: 1e-9, "\(seed) stats[\(index)]")
        largestDifference = max(largestDifference, abs(mine - theirs))
      }
      XCTAssertEqual(result.perClass.map(\.categoryId), reference.perClass.keys.compactMap { Int($0) }.sorted(), seed)
      for entry in result.perClass {
        let theirs = try XCTUnwrap(reference.perClass[String(entry.categoryId)])
        XCTAssertEqual(entry.ap, theirs.ap, accuracy: 1e-9, "\(seed) category \(entry.categoryId) AP")
        XCTAssertEqual(entry.ap50, theirs.ap50, accuracy: 1e-9, "\(seed) category \(entry.categoryId) AP50")
        largestDifference = max(largestDifference, abs(entry.ap - theirs.ap), abs(entry.ap50 - theirs.ap50))
      }
      XCTAssertTrue(result.perClass.contains { $0.ap == -1 }, "\(seed): the never-annotated category should be -1")
    }
    print("largest |difference| from pycocotools: \(largestDifference)")
  }

  func testDetectionOrderWithinTheFileOnlyMattersForTies() throws {
    let annotations = try COCOAnnotations.load(path("seed2", "annotations.json"))
    let detections = try COCOResults.load(path("seed2", "results.json"), against: annotations)
    let evaluator = COCOEvaluator(annotations: annotations)
    let reference = try evaluator.evaluate(detections)
    // Reordering detections of distinct scores changes nothing; the result must still equal pycocotools'.
    let reordered = detections.enumerated().sorted { ($0.element.score, $0.offset) < ($1.element.score, $1.offset) }.map(\.element)
    XCTAssertEqual(try evaluator.evaluate(reordered).stats, reference.stats)
  }

  func testPerfectDetectionsScoreOneAndNoDetectionsZero() throws {
    let annotations = try COCOAnnotations.load(path("seed3", "annotations.json"))
    let perfect = annotations.annotations.filter { !$0.isCrowd }.map {
      COCODetection(imageId: $0.imageId, categoryId: $0.categoryId, box: $0.box, score: 1)
    }
    let evaluator = COCOEvaluator(annotations: annotations)
    let best = try evaluator.evaluate(perfect)
    XCTAssertEqual(best.map, 1, accuracy: 1e-12)
    XCTAssertEqual(best.ar100, 1, accuracy: 1e-12)
    XCTAssertEqual(try evaluator.evaluate([]).map, 0)
  }

  func testClassIndicesAreSortedCategoryIds() throws {
    let annotations = try COCOAnnotations.load(path("seed1", "annotations.json"))
    XCTAssertEqual((0..<annotations.categories.count).map(annotations.categoryId(ofClass:)), [1, 3, 7, 12, 20])
    XCTAssertEqual(annotations.classIndex(ofCategory: 7), 2)
    XCTAssertNil(annotations.classIndex(ofCategory: 2))
    XCTAssertNil(annotations.classIndex(ofCategory: 99))
  }

  func write(_ text: String, name: String) throws -> String {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("coco-tests-\(getpid())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let url = directory.appendingPathComponent(name)
    try text.write(to: url, atomically: true, encoding: .utf8)
    return url.path
  }

  func assertError(_ body: @autoclosure () throws -> Any, contains fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try body(), file: file, line: line) { error in
      XCTAssertTrue(error is COCOError, "\(type(of: error))", file: file, line: line)
      for fragment in fragments {
        XCTAssertTrue("\(error)".contains(fragment), "'\(error)' should contain '\(fragment)'", file: file, line: line)
      }
    }
  }

  let smallFile = """
    {"images": [{"id": 5, "file_name": "a.jpg", "width": 64, "height": 48}],
     "categories": [{"id": 2, "name": "cat"}, {"id": 9, "name": "dog"}],
     "annotations": [{"id": 11, "image_id": 5, "category_id": 9, "bbox": [1, 2, 10, 20], "iscrowd": 0}]}
    """

  func testMissingAreaIsTheBoxArea() throws {
    let annotations = try COCOAnnotations.load(try write(smallFile, name: "small.json"))
    XCTAssertEqual(annotations.annotations.first?.area, 200)
    XCTAssertEqual(annotations.annotations.first?.isCrowd, false)
    XCTAssertEqual(annotations.images.first?.fileName, "a.jpg")
  }

  func testMalformedJSONNamesFileLineAndColumn() throws {
    let broken = try write("{\"images\": [\n  {\"id\": 1, \"file_name\": \"a.jpg\"}\n  {\"id\": 2}\n]}", name: "broken.json")
    assertError(try COCOAnnotations.load(broken), contains: ["broken.json:3:3", "expected ',' or ']'"])
    let truncated = try write("{\"images\": [{\"id\": 1,", name: "truncated.json")
    assertError(try COCOAnnotations.load(truncated), contains: ["truncated.json:1:22", "end of file"])
    let unterminated = try write("[\n{\"image_id\": 1, \"category_id\": \"x", name: "unterminated.json")
    assertError(try COCOAnnotations.load(unterminated), contains: ["unterminated.json:2:32", "unterminated string"])
    let badNumber = try write("[{\"score\": 0.}]", name: "number.json")
    assertError(try COCOAnnotations.load(badNumber), contains: ["number.json:1:12", "invalid number"])
    let deep = try write(String(repeating: "[", count: 100_000), name: "deep.json")
    assertError(try COCOAnnotations.load(deep), contains: ["deep.json:1:"])
  }

  func testUnknownCategoryOrImageOfAnAnnotationNamesIt() throws {
    let badCategory = smallFile.replacingOccurrences(of: "\"category_id\": 9", with: "\"category_id\": 4")
    assertError(try COCOAnnotations.load(try write(badCategory, name: "category.json")), contains: ["category.json", "annotation 11", "category_id 4"])
    let badImage = smallFile.replacingOccurrences(of: "\"image_id\": 5", with: "\"image_id\": 6")
    assertError(try COCOAnnotations.load(try write(badImage, name: "image.json")), contains: ["annotation 11", "image_id 6"])
    let badBox = smallFile.replacingOccurrences(of: "[1, 2, 10, 20]", with: "[1, 2, -10, 20]")
    assertError(try COCOAnnotations.load(try write(badBox, name: "box.json")), contains: ["annotation 11", "bbox"])
  }

  func testResultsWithUnknownIdsOrBadFieldsAreRefused() throws {
    let annotations = try COCOAnnotations.load(try write(smallFile, name: "small.json"))
    func results(_ entry: String) throws -> String { try write("[\(entry)]", name: "results.json") }
    assertError(
      try COCOResults.load(try results(#"{"image_id": 7, "category_id": 2, "bbox": [0, 0, 1, 1], "score": 0.5}"#), against: annotations),
      contains: ["results.json", "result 0", "image_id 7"])
    assertError(
      try COCOResults.load(try results(#"{"image_id": 5, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5}"#), against: annotations),
      contains: ["result 0", "category_id 3"])
    assertError(
      try COCOResults.load(try results(#"{"image_id": 5, "category_id": 2, "bbox": [0, 0, 1], "score": 0.5}"#), against: annotations),
      contains: ["result 0", "bbox"])
    assertError(
      try COCOResults.load(try results(#"{"image_id": 5, "category_id": 2, "bbox": [0, 0, 1, 1]}"#), against: annotations),
      contains: ["results.json: [0]: missing \"score\""])
    let good = try COCOResults.load(try results(#"{"image_id": 5, "category_id": 2, "bbox": [0, 0.5, 1, 1], "score": 0.25}"#), against: annotations)
    XCTAssertEqual(good, [COCODetection(imageId: 5, categoryId: 2, box: [0, 0.5, 1, 1], score: 0.25)])
  }

  func testEvaluatorRefusesDetectionsOfUnknownIds() throws {
    let annotations = try COCOAnnotations.load(try write(smallFile, name: "small.json"))
    let evaluator = COCOEvaluator(annotations: annotations)
    assertError(try evaluator.evaluate([COCODetection(imageId: 5, categoryId: 4, box: [0, 0, 1, 1], score: 1)]), contains: ["category_id 4"])
    assertError(try evaluator.evaluate([COCODetection(imageId: 1, categoryId: 2, box: [0, 0, 1, 1], score: 1)]), contains: ["image_id 1"])
  }
}
