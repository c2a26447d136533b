import DistillDetection
import Foundation
import XCTest

/// Fixtures from tools/make_data_fixtures.py; references are Pillow's decodes.
let dataFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
  .appendingPathComponent("Fixtures/data")

final class ImageDecodeTests: XCTestCase {
  struct Case: Decodable {
    let file: String
    let width: Int
    let height: Int
    let tolerance: Int
  }

  func cases() throws -> [Case] {
    let data = try Data(contentsOf: dataFixtures.appendingPathComponent("manifest.json"))
    return try JSONDecoder().decode([Case].self, from: data)
  }

  func check(_ item: Case, file: StaticString = #filePath, line: UInt = #line) throws {
    let image = try Image.load(dataFixtures.appendingPathComponent(item.file).path)
    let reference = try [UInt8](Data(contentsOf: dataFixtures.appendingPathComponent(item.file + ".rgb")))
    XCTAssertEqual([image.width, image.height], [item.width, item.height], item.file, file: file, line: line)
    guard image.pixels.count == reference.count else { return XCTFail("\(item.file): size differs", file: file, line: line) }
    let worst = zip(image.pixels, reference).map { abs(Int($0) - Int($1)) }.max() ?? 0
    XCTAssertLessThanOrEqual(worst, item.tolerance, "\(item.file): largest difference from Pillow", file: file, line: line)
  }

  func testEveryPNGColourTypeDecodesToPillowsPixelsExactly() throws {
    let pngs = try cases().filter { $0.file.hasSuffix(".png") }
    XCTAssertEqual(
      Set(pngs.map(\.file)),
      ["grey1.png", "grey2.png", "grey8.png", "greyalpha8.png", "rgb8.png", "rgba8.png", "palette8.png", "palette4.png",
       "palette_trns.png", "grey16.png", "greyalpha16.png", "rgb16.png", "rgba16.png", "interlaced.png"])
    for item in pngs {
      XCTAssertEqual(item.tolerance, 0)
      try check(item)
    }
  }

  func testGreyRGBAndCMYKJPEGsDecodeCloseToPillow() throws {
    let jpegs = try cases().filter { ["grey.jpg", "rgb.jpg", "cmyk.jpg"].contains($0.file) }
    XCTAssertEqual(jpegs.count, 3)
    for item in jpegs { try check(item) }
  }

  func testEXIFOrientationsInBothByteOrdersComeOutUpright() throws {
    let exif = try cases().filter { $0.file.hasPrefix("exif") }
    XCTAssertEqual(exif.count, 16)
    for item in exif { try check(item) }
    let stored = try Image.load(dataFixtures.appendingPathComponent("exif6_mm.jpg").path, upright: false)
    XCTAssertEqual([stored.width, stored.height], [12, 20], "stored rotated; only `upright` turns it")
    let probe = try Image.probe(dataFixtures.appendingPathComponent("exif6_mm.jpg").path)
    XCTAssertEqual([probe.width, probe.height, probe.orientation], [20, 12, 6])
  }

  func testOrientationsComposeAsRotationsAndMirrors() {
    let image = Image(width: 3, height: 2, pixels: (0..<18).map { UInt8($0) })
    XCTAssertEqual(image.oriented(exif: 6).oriented(exif: 6).pixels, image.oriented(exif: 3).pixels)
    XCTAssertEqual(image.oriented(exif: 6).oriented(exif: 8).pixels, image.pixels)
    XCTAssertEqual(image.oriented(exif: 2).oriented(exif: 2).pixels, image.pixels)
    XCTAssertEqual(image.oriented(exif: 5).oriented(exif: 5).pixels, image.pixels)
    XCTAssertEqual(image.oriented(exif: 1).pixels, image.pixels)
  }

  func testHugeHeadersAreRefusedBeforeAllocatingWithTheirDimensions() {
    for name in ["huge.png", "huge.jpg"] {
      let start = Date()
      XCTAssertThrowsError(try Image.load(dataFixtures.appendingPathComponent(name).path)) { error in
        XCTAssertTrue("\(error)".contains(name), "\(error)")
        XCTAssertTrue("\(error)".contains("60000x60000"), "\(error)")
      }
      XCTAssertLessThan(Date().timeIntervalSince(start), 0.5, name)
    }
    XCTAssertEqual(try? Image.probe(dataFixtures.appendingPathComponent("huge.png").path).width, 60000)
  }

  func testTruncatedFilesAreRefusedNamingTheFile() {
    for name in ["truncated.png", "truncated.jpg"] {
      XCTAssertThrowsError(try Image.load(dataFixtures.appendingPathComponent(name).path)) { error in
        XCTAssertTrue("\(error)".contains(name), "\(error)")
        XCTAssertTrue("\(error)".contains("truncated"), "\(error)")
      }
    }
  }

  func testMissingAndForeignFilesAreRefusedNamingThem() {
    XCTAssertThrowsError(try Image.load(dataFixtures.appendingPathComponent("nowhere.png").path)) { error in
      XCTAssertTrue("\(error)".contains("nowhere.png"), "\(error)")
    }
    XCTAssertThrowsError(try Image.load(dataFixtures.appendingPathComponent("manifest.json").path)) { error in
      XCTAssertTrue("\(error)".contains("neither a PNG nor a JPEG"), "\(error)")
    }
  }
}
