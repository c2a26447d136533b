import Foundation
import XCTest

/// `distill data synth`: files written, the same bytes again, refusal of a non-empty --out.
final class DataCLITests: XCTestCase {
  var scratch: URL!

  override func setUpWithError() throws {
    scratch = FileManager.default.temporaryDirectory.appendingPathComponent("data-cli-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

  func testSynthWritesTheSplitsAndRefusesANonEmptyDirectoryWithoutOverwrite() throws {
    let out = scratch.appendingPathComponent("shapes")
    let first = try distill(["data", "synth", "--out", out.path, "--images", "5", "--seed", "7", "--size", "128", "--val-fraction", "0.4"])
    XCTAssertEqual(first.status, 0, first.stderr)
    XCTAssertTrue(first.stdout.contains("wrote 3 train and 2 val pictures to \(out.path)"), first.stdout)
    XCTAssertTrue(first.stderr.contains("synth: images 5/5"), first.stderr)
    XCTAssertTrue(first.stderr.contains("objects annotated"), first.stderr)
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.appendingPathComponent("train").path).sorted(), ["000001.png", "000002.png", "000003.png"])
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.appendingPathComponent("val").path).sorted(), ["000004.png", "000005.png"])
    let train = try Data(contentsOf: out.appendingPathComponent("train.json"))
    let object = try XCTUnwrap(JSONSerialization.jsonObject(with: train) as? [String: Any])
    let categories = try XCTUnwrap(object["categories"] as? [[String: Any]])
    XCTAssertEqual(categories.compactMap { $0["id"] as? Int }, Array(1...10))
    XCTAssertEqual((object["images"] as? [Any])?.count, 3)
    XCTAssertFalse((object["annotations"] as? [Any] ?? []).isEmpty)

    let refused = try distill(["data", "synth", "--out", out.path, "--images", "5", "--seed", "8", "--size", "128"])
    XCTAssertNotEqual(refused.status, 0)
    XCTAssertTrue(refused.stderr.contains("\(out.path): is not empty"), refused.stderr)
    XCTAssertTrue(refused.stderr.contains("--overwrite"), refused.stderr)
    XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("train.json")), train, "nothing was written")

    let again = try distill(["data", "synth", "--out", out.path, "--images", "5", "--seed", "7", "--size", "128", "--val-fraction", "0.4", "--overwrite"])
    XCTAssertEqual(again.status, 0, again.stderr)
    XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent("train.json")), train, "the same seed writes the same bytes")
  }

  func testBadArgumentsAreRefusedBeforeWriting() throws {
    let out = scratch.appendingPathComponent("never")
    for (arguments, message) in [
      (["--images", "0"], "--images 0: must be at least 1"), (["--images", "2", "--val-fraction", "1"], "--val-fraction 1.0: must be at least 0 and below 1"),
      (["--images", "2", "--size", "16"], "--size 16: must be 64 to 4096"),
    ] {
      let result = try distill(["data", "synth", "--out", out.path, "--seed", "1"] + arguments)
      XCTAssertNotEqual(result.status, 0)
      XCTAssertTrue(result.stderr.contains(message), result.stderr)
    }
    XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
    XCTAssertTrue(try distill(["--help"]).stdout.contains("data"))
    let help = try distill(["data", "synth", "--help"])
    XCTAssertTrue(help.stdout.contains("--val-fraction"), help.stdout)
    XCTAssertTrue(help.stdout.contains("--overwrite"), help.stdout)
  }
}
