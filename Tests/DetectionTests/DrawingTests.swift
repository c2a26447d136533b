import DistillDetection
import Foundation
import XCTest

final class DrawingTests: XCTestCase {
  func testBoxesAndCaptionsAreDrawnWhereTheyBelong() throws {
    let width = 160, height = 120
    let grey = Image(width: width, height: height, pixels: [UInt8](repeating: 128, count: width * height * 3))
    let boxes = [
      DrawnBox(x1: 20, y1: 40, x2: 80, y2: 100, caption: "circle 0.91", classIndex: 0),
      DrawnBox(x1: 100, y1: 2, x2: 150, y2: 60, caption: "square 0.40", classIndex: 3),
    ]
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("drawing-\(UUID().uuidString).png").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    try Drawing.write(grey, boxes: boxes, to: path, scale: 2)
    let drawn = try Image.load(path)
    XCTAssertEqual([drawn.width, drawn.height], [2 * width, 2 * height])
    func pixel(_ x: Int, _ y: Int) -> [UInt8] { Array(drawn.pixels[(y * drawn.width + x) * 3..<(y * drawn.width + x) * 3 + 3]) }
    // The left edge of the first box (x = 40 after scaling) is in the first palette colour.
    XCTAssertEqual(pixel(40, 140).map(Int.init), [31, 120, 181], accuracy: 2)
    // The second box's right edge, in the fourth colour.
    XCTAssertEqual(pixel(300, 60).map(Int.init), [214, 38, 41], accuracy: 2)
    // Inside the boxes and far from them, the picture is untouched.
    XCTAssertEqual(pixel(100, 160), [128, 128, 128])
    XCTAssertEqual(pixel(10, 230), [128, 128, 128])
    // The first caption sits on a filled tab just above the first box.
    let tab = (42..<120).map { pixel($0, 70) }
    XCTAssertGreaterThan(tab.filter { zip($0.map(Int.init), [31, 120, 181]).allSatisfy { abs($0 - $1) <= 2 } }.count, 20)
    XCTAssertTrue(tab.contains { $0 == [255, 255, 255] }, "white caption text on the tab")
    // The second box touches the top: its caption goes inside, still within the picture.
    XCTAssertTrue((202..<298).map { pixel($0, 10) }.contains { zip($0.map(Int.init), [214, 38, 41]).allSatisfy { abs($0 - $1) <= 2 } })
  }

  func testUnwritablePathIsAnErrorAndLeavesNothing() {
    let image = Image(width: 4, height: 4, pixels: [UInt8](repeating: 0, count: 48))
    XCTAssertThrowsError(try Drawing.write(image, boxes: [], to: "/nonexistent-dir/x.png")) { error in
      XCTAssertTrue("\(error)".contains("/nonexistent-dir/x.png"), "\(error)")
    }
  }
}

private func XCTAssertEqual(_ actual: [Int], _ expected: [Int], accuracy: Int, file: StaticString = #filePath, line: UInt = #line) {
  XCTAssertTrue(
    actual.count == expected.count && zip(actual, expected).allSatisfy { abs($0 - $1) <= accuracy }, "\(actual) vs \(expected)", file: file,
    line: line)
}
