import DistillDetection
import Foundation
import XCTest

final class YOLOLabelTests: XCTestCase {
  let yolo = dataFixtures.appendingPathComponent("yolo")

  func testNamesFromTextAndYAML() throws {
    XCTAssertEqual(try YOLODataset.readNames(yolo.appendingPathComponent("names.txt").path), ["person", "car", "dog"])
    XCTAssertEqual(try YOLODataset.readNames(yolo.appendingPathComponent("data.yaml").path), ["person", "car", "dog"])
  }

  func testLabelPathFollowsTheUltralyticsLayout() {
    XCTAssertEqual(YOLODataset.labelPath(forImage: "/d/images/train/x.jpg"), "/d/labels/train/x.txt")
    XCTAssertEqual(YOLODataset.labelPath(forImage: "/images/d/images/x.y.png"), "/images/d/labels/x.y.txt")
    XCTAssertEqual(YOLODataset.labelPath(forImage: "d/images/x.jpg"), "d/labels/x.txt")
    XCTAssertEqual(YOLODataset.labelPath(forImage: "/d/pics/x.jpg"), "/d/pics/x.txt")
  }

  func testMalformedLinesAreSkippedAndBadBoxesClippedOrDroppedWithCounts() throws {
    let dataset = try YOLODataset(
      images: yolo.appendingPathComponent("images").path, names: yolo.appendingPathComponent("names.txt").path)
    let summary = dataset.summary
    XCTAssertEqual(dataset.count, 3)
    XCTAssertEqual(summary.images, 3)
    XCTAssertEqual(summary.malformedLines, 5, summary.warnings.joined(separator: "\n"))
    XCTAssertEqual(summary.degenerateBoxes, 2, summary.warnings.joined(separator: "\n"))
    XCTAssertEqual(summary.clippedBoxes, 1)
    XCTAssertEqual(summary.unlabelledImages, 1)
    XCTAssertEqual(summary.boxes, 5)
    XCTAssertEqual(summary.warnings.count, 7)
    for (line, words) in [(2, "found 4"), (3, "class 3"), (4, "'x'"), (9, "'nan'"), (11, "class 1.5"), (7, "dropped"), (8, "dropped")] {
      XCTAssertTrue(
        summary.warnings.contains { $0.contains("labels/train/a.txt:\(line):") && $0.contains(words) },
        "line \(line): \(summary.warnings.joined(separator: "\n"))")
    }

    // a.jpg is stored 30x40 with EXIF orientation 6: labels are relative to the upright 40x30.
    let a = try dataset.sample(at: 0)
    XCTAssertTrue(a.source.hasSuffix("a.jpg"))
    XCTAssertEqual([a.image.width, a.image.height], [40, 30])
    XCTAssertEqual(a.boxes, [[15, 7.5, 25, 22.5], [28, 21, 40, 30], [4, 3, 12, 12]])
    XCTAssertEqual(a.labels, [0, 2, 2])
    XCTAssertEqual(a.crowd, [false, false, false])

    let b = try dataset.sample(at: 1)
    XCTAssertEqual(b.boxes, [[0, 0, 16, 16], [20, 20, 28, 28]], "CRLF line ends")
    XCTAssertEqual(b.labels, [0, 1])
    let c = try dataset.sample(at: 2)
    XCTAssertEqual(c.boxes.count, 0)
  }

  func testListedImagesMissingOnDiskAreAnErrorAtOpening() {
    XCTAssertThrowsError(
      try YOLODataset(images: yolo.appendingPathComponent("list.txt").path, names: yolo.appendingPathComponent("data.yaml").path)
    ) { error in
      XCTAssertTrue("\(error)".contains("images/train/missing.jpg"), "\(error)")
      XCTAssertFalse("\(error)".contains("a.jpg"), "\(error)")
    }
    XCTAssertThrowsError(
      try ListedImageSource(entries: [.init(path: "/no/such.png", boxes: [], labels: [])], classNames: ["a"])
    ) { error in
      XCTAssertTrue("\(error)".contains("/no/such.png"), "\(error)")
    }
  }

  func testClassIndicesMustFitTheNames() {
    var summary = DatasetSummary()
    let parsed = YOLODataset.parseLabels("0 0.5 0.5 0.5 0.5\n2 0.5 0.5 0.5 0.5\n-1 0.5 0.5 0.5 0.5", file: "l.txt", classCount: 2, width: 10, height: 10, summary: &summary)
    XCTAssertEqual(parsed.labels, [0])
    XCTAssertEqual(summary.malformedLines, 2)
    XCTAssertTrue(summary.warnings[0].hasPrefix("l.txt:2:"), summary.warnings[0])
    XCTAssertTrue(summary.warnings[1].hasPrefix("l.txt:3:"), summary.warnings[1])
  }
}
