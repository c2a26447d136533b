import Foundation
import XCTest

/// `distill demo` end to end on the shipped models, shortened (a few pictures and steps): every
/// output the README promises is written and well formed.
final class DemoCLITests: XCTestCase {
  func testDemoWritesResultsStudentPicturesAndReport() throws {
    let root = fixtures.deletingLastPathComponent().deletingLastPathComponent()
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("demo-cli-\(getpid())")
    defer { try? FileManager.default.removeItem(at: out) }
    let models = root.appendingPathComponent("models").path
    let result = try distill([
      "demo", "--out", out.path, "--images", "30", "--steps", "3", "--batch", "2", "--eval-every", "2",
      "--teacher", models + "/demo_teacher.onnx", "--student", models + "/demo_student.onnx", "--head", models + "/demo.head.yaml",
    ])
    XCTAssertEqual(result.status, 0, result.stderr)
    let results = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("results.json"))) as? [String: Any])
    for key in ["teacher_map", "student_initial_map", "baseline_map", "distilled_map", "teacher_ap50", "baseline_ap50", "distilled_ap50"] {
      let value = try XCTUnwrap(results[key] as? Double, key)
      XCTAssertTrue((0...1).contains(value), "\(key) \(value)")
    }
    let perClass = try XCTUnwrap(results["per_class"] as? [String: [String: Double]])
    XCTAssertEqual(perClass["teacher"]?.count, 10)
    for name in ["student.onnx", "report.html", "baseline/metrics.jsonl", "distilled/metrics.jsonl", "pictures/val_1.png"] {
      XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent(name).path), name)
    }
    let events = try FileManager.default.contentsOfDirectory(atPath: out.appendingPathComponent("distilled").path).filter { $0.hasPrefix("events.out.tfevents") }
    XCTAssertEqual(events.count, 1)
    let report = try String(contentsOf: out.appendingPathComponent("report.html"), encoding: .utf8)
    XCTAssertTrue(report.contains("<svg"), "inline SVG curves")
    XCTAssertTrue(report.contains("data:image/png;base64,"), "pictures embedded")
    XCTAssertTrue(result.stdout.contains("student, distilled"), result.stdout)
    // A second demo into the same directory needs --overwrite.
    let again = try distill([
      "demo", "--out", out.path, "--images", "30", "--steps", "1", "--batch", "2",
      "--teacher", models + "/demo_teacher.onnx", "--student", models + "/demo_student.onnx", "--head", models + "/demo.head.yaml",
    ])
    XCTAssertEqual(again.status, 1)
    XCTAssertTrue(again.stderr.contains("--overwrite"), again.stderr)
  }
}
