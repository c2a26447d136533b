import Foundation
import XCTest

extension TrainCLITests {
  /// `fgd` on the tiny pair, label-free: the teacher's detections (its FCOS head config under
  /// `teacher_head`, pseudo-label score 0.6) give the masks; every part of both levels is logged,
  /// finite, foreground and background are both non-zero, and the loss falls over 8 steps.
  func testFGDTrainsLabelFreeOnTheTeachersDetections() throws {
    let head = try String(contentsOf: fixtures.appendingPathComponent("heads/fcos/head.yaml"), encoding: .utf8)
    let levels = ["/backbone/c3/c3.1/Relu_output_0", "/backbone/c4/c4.1/Relu_output_0"]
    let (path, output) = try config("fgd") { text in
      guard let start = text.range(of: "losses:")?.lowerBound, let end = text.range(of: "train:")?.lowerBound else { return text }
      var edited = text
      edited.replaceSubrange(start..<end, with: """
        teacher_head:
        \(head.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        pseudo_label: {score: 0.6}
        losses:
          - {type: fgd, teacher: [\(levels.joined(separator: ", "))], student: [\(levels.joined(separator: ", "))],
             temperature: 0.8, alpha: 1.6e-3, beta: 8e-4, gamma: 8e-4, lambda: 8e-6, weight: 100}

        """)
      return edited.replacingOccurrences(of: "steps: 30", with: "steps: 8").replacingOccurrences(of: "checkpoint_every: 5", with: "checkpoint_every: 0")
    }
    let result = try distill(["train", path])
    XCTAssertEqual(result.status, 0, result.stderr)
    let lines = try metrics(output).map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
    XCTAssertEqual(lines.count, 9)
    for line in lines {
      for level in levels {
        for part in ["fg", "bg", "attention", "global"] {
          let value = try XCTUnwrap(line["fgd:\(level)/\(part)"] as? Double, "fgd:\(level)/\(part) in \(line)")
          XCTAssertTrue(value.isFinite, "\(part) of \(level)")
        }
      }
    }
    for level in levels {
      XCTAssertGreaterThan(lines[0]["fgd:\(level)/fg"] as? Double ?? 0, 0, "the pseudo-labels give foreground")
      XCTAssertGreaterThan(lines[0]["fgd:\(level)/bg"] as? Double ?? 0, 0, "and leave background")
    }
    let losses = try lines.map { try XCTUnwrap($0["loss"] as? Double) }
    XCTAssertTrue(losses.allSatisfy(\.isFinite), "\(losses)")
    XCTAssertLessThan(losses[8], 0.5 * losses[0], "distillation lowers the FGD loss: \(losses)")
  }
}
