import DistillCore
import DistillDetection
import DistillONNX
import Foundation
import XCTest

@testable import DistillTrain

/// `gid` (General Instance Distillation): the selection and each term's value and gradient against
/// the PyTorch reference of tools/make_gid_fixtures.py (Tests/Fixtures/gid), and a few steps of
/// the real engine on the tiny FCOS -> RetinaNet pair.
final class GIDTests: XCTestCase {
  let directory = fixtures.appendingPathComponent("gid")

  /// tiny.yaml with absolute paths, the heads inline and `losses` replaced by `loss`.
  func tinyConfig(loss: String, steps: Int) throws -> DistillConfig {
    let base = fixtures.appendingPathComponent("distill")
    var text = try String(contentsOf: base.appendingPathComponent("tiny.yaml"), encoding: .utf8)
    for folder in ["heads", "eval"] { text = text.replacingOccurrences(of: "../\(folder)/", with: "\(base.path)/../\(folder)/") }
    let lossStart = try XCTUnwrap(text.range(of: "losses:")), trainStart = try XCTUnwrap(text.range(of: "train:"))
    text.replaceSubrange(lossStart.lowerBound..<trainStart.lowerBound, with: "losses:\n  - \(loss)\n")
    text = text.replacingOccurrences(of: "steps: 30", with: "steps: \(steps)").replacingOccurrences(of: "hflip: 0.5", with: "hflip: 0.0")
      .replacingOccurrences(of: "batch: 2", with: "batch: 6").replacingOccurrences(of: "lr: 0.05", with: "lr: 0.01")
    func head(_ name: String) throws -> String {
      try String(contentsOf: fixtures.appendingPathComponent("heads/\(name)/head.yaml"), encoding: .utf8)
        .split(separator: "\n").filter { !$0.hasPrefix("#") }.map { "  " + $0 }.joined(separator: "\n")
    }
    text += "teacher_head:\n\(try head("fcos"))\nstudent_head:\n\(try head("retinanet"))\n"
    return try DistillConfig(yaml: text, file: base.appendingPathComponent("gid.yaml").path)
  }

  static let levels = "[/backbone/c3/c3.1/Relu_output_0, /backbone/c4/c4.1/Relu_output_0, /backbone/c5/c5.1/Relu_output_0]"

  /// The tiny FCOS teaches the tiny RetinaNet through the engine: finite terms, some instances
  /// selected, a loss that goes down. The heads encode boxes differently, so response_reg is off.
  func testTinyPairTrainsThroughTheEngine() throws {
    let loss = "{type: gid, teacher: \(Self.levels), student: \(Self.levels), response_reg_weight: 0}"
    let config = try tinyConfig(loss: loss, steps: 8)
    let distiller = try Distiller(config: config, options: RunOptions())
    let reports = try distiller.trainer.run()
    XCTAssertEqual(reports.count, 8)
    for report in reports {
      XCTAssertTrue(report.loss.isFinite, "step \(report.step): \(report.loss)")
      XCTAssertNil(report.skipped)
      for name in ["gid:feature", "gid:relation", "gid:response"] {
        let value = try XCTUnwrap(report.terms[name], name)
        XCTAssertTrue(value.isFinite && value > 0, "step \(report.step) \(name) = \(value)")
      }
    }
    print("gid tiny losses:", reports.map(\.loss), reports.map(\.terms))
    XCTAssertLessThan(reports.last!.loss, reports.first!.loss, "distillation lowers the loss")
  }

  /// Missing heads and incomparable box encodings are refused with the fix named.
  func testConfigProblemsAreNamed() throws {
    let loss = DistillConfig.Loss(type: "gid", teacher: ["t"], student: ["s"], weight: 1, settings: [:], flags: [:], resize: false)
    XCTAssertThrowsError(try DistillationMethods.make(loss)) { XCTAssertTrue("\($0)".contains("needs the teacher's head config"), "\($0)") }
    let fcos = try HeadConfig.load(fixtures.appendingPathComponent("heads/fcos/head.yaml").path)
    let retinanet = try HeadConfig.load(fixtures.appendingPathComponent("heads/retinanet/head.yaml").path)
    XCTAssertThrowsError(try DistillationMethods.make(loss, setup: MethodSetup(teacherHead: fcos, studentHead: retinanet))) {
      XCTAssertTrue("\($0)".contains("set response_reg_weight: 0"), "\($0)")
    }
  }
}
