import DistillDetection
import Foundation
import XCTest

final class ImageTests: XCTestCase {
  let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/images")

  func testCorruptPNGIsRefusedNamingTheFile() {
    let path = fixtures.appendingPathComponent("corrupt.png").path
    XCTAssertThrowsError(try Image.load(path)) { error in
      XCTAssertTrue("\(error)".contains("corrupt.png"), "\(error)")
    }
  }

  func testPNGAndJPEGOfOnePatternDecodeAlike() throws {
    let png = try Image.load(fixtures.appendingPathComponent("pattern.png").path)
    let jpeg = try Image.load(fixtures.appendingPathComponent("pattern.jpg").path)
    XCTAssertEqual([png.width, png.height], [jpeg.width, jpeg.height])
    let meanDifference = zip(png.pixels, jpeg.pixels).reduce(0.0) { $0 + abs(Double($1.0) - Double($1.1)) } / Double(png.pixels.count)
    XCTAssertLessThan(meanDifference, 12, "JPEG compression should change pixels only slightly")
  }
}
