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
    XCTAssertLessThan(reports.last!.loss, reports.first!.loss, "distillation lowers the loss")
  }

  func load(_ folder: String, _ role: String, _ names: [String]) throws -> [String: Tensor] {
    var outputs: [String: Tensor] = [:]
    for name in names { outputs[name] = try NumpyFile.read(directory.appendingPathComponent("\(folder)/\(role)_\(name).npy").path) }
    return outputs
  }

  func method(_ folder: String, settings: [String: Double]) throws -> GeneralInstanceDistillation {
    let setup = MethodSetup(
      teacherHead: try HeadConfig.load(directory.appendingPathComponent("\(folder)/teacher.yaml").path),
      studentHead: try HeadConfig.load(directory.appendingPathComponent("\(folder)/student.yaml").path))
    let loss = DistillConfig.Loss(type: "gid", teacher: [], student: [], weight: 1, settings: settings, flags: [:], resize: false)
    return try XCTUnwrap(try DistillationMethods.make(loss, setup: setup) as? GeneralInstanceDistillation)
  }

  /// GI scores of every row and the kept boxes (top pre_nms_top_k, clip, min side, NMS, top_k) on
  /// fixed outputs of two dense heads equal the reference's.
  func testSelectionMatchesTheReference() throws {
    struct Expected: Decodable {
      struct Image: Decodable { let gi_scores: [Float], boxes: [[Float]], scores: [Float] }
      let settings: [String: Double], size: [Int], images: [Image]
    }
    let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: directory.appendingPathComponent("selection/expected.json")))
    let gid = try method("selection", settings: expected.settings)
    let names = ["cls_0", "box_0", "cls_1", "box_1"]
    let teacher = try load("selection", "teacher", names), student = try load("selection", "student", names)
    let size = (width: expected.size[1], height: expected.size[0])
    let teacherForm = try gid.teacherDecoder.denseForm(outputs: teacher, imageSize: size)
    let studentForm = try gid.studentDecoder.denseForm(outputs: student, imageSize: size)
    let geometry = try GeneralInstanceDistillation.geometry(gid.teacherDecoder.config) { teacher[$0]?.shape }
    let t = GeneralInstanceDistillation.predictions(teacherForm, geometry: geometry, background: nil, perLocation: false)
    let s = GeneralInstanceDistillation.predictions(studentForm, geometry: geometry, background: nil, perLocation: false)
    let found = try gid.instances(teacherOutputs: teacher, studentOutputs: student, imageSize: size).boxes
    XCTAssertEqual(found.count, expected.images.count)
    for (image, reference) in expected.images.enumerated() {
      let gi = zip(t.scores[image], s.scores[image]).map { abs($0 - $1) }
      XCTAssertEqual(gi.count, reference.gi_scores.count)
      XCTAssertLessThanOrEqual(zip(gi, reference.gi_scores).map { abs($0 - $1) }.max() ?? 0, 1e-5, "image \(image) GI scores")
      XCTAssertEqual(found[image].count, reference.boxes.count, "image \(image)")
      for (kept, (box, score)) in zip(found[image], zip(reference.boxes, reference.scores)) {
        XCTAssertEqual(kept.score, score, accuracy: 1e-5, "image \(image)")
        for (a, b) in zip(kept.box.xyxy, box) { XCTAssertEqual(a, b, accuracy: 1e-3, "image \(image): \(kept.box) vs \(box)") }
      }
    }
  }

  /// Each term's value and gradients (student maps and head outputs) equal the reference's, boxes
  /// on all three levels; with K = 2 instances the relation term and its gradient are zero.
  func testTermsMatchPyTorch() throws {
    struct Expected: Decodable { let settings: [String: Double], size: Int, boxes: [[[Float]]], terms: [String: Double] }
    for folder in ["terms", "terms_two"] {
      let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: directory.appendingPathComponent("\(folder)/expected.json")))
      let gid = try method(folder, settings: expected.settings)
      let headNames = ["cls_0", "box_0", "cls_1", "box_1"], levels = ["p0", "p1", "p2"]
      let teacherHead = try load(folder, "teacher", headNames), studentHead = try load(folder, "student", headNames)
      let teacherMaps = try load(folder, "teacher", levels), studentMaps = try load(folder, "student", levels)
      var builder = GraphBuilder(name: folder)
      var feeds: [String: Tensor] = [:]
      for (name, value) in studentHead.merging(studentMaps, uniquingKeysWith: { a, _ in a }) {
        feeds[builder.input("student:" + name, shape: value.shape)] = value
      }
      for (name, value) in teacherHead.merging(teacherMaps, uniquingKeysWith: { a, _ in a }) {
        feeds[builder.input("teacher:" + name, shape: value.shape)] = value
      }
      let pairs = levels.map { TapPair(studentTap: $0, teacherTap: $0, student: "student:" + $0, teacher: "teacher:" + $0, shape: teacherMaps[$0]!.shape) }
      builder.scope = "gid0"
      let terms = try gid.build(&builder, pairs: pairs)
      XCTAssertEqual(terms.map(\.name), ["feature", "relation", "response"])
      let size = (width: expected.size, height: expected.size)
      let geometry = try GeneralInstanceDistillation.geometry(gid.studentDecoder.config) { studentHead[$0]?.shape }
      let priors = try gid.studentDecoder.denseForm(outputs: studentHead, imageSize: size).priors
      let boxes = expected.boxes.map { $0.map { Box(x1: $0[0], y1: $0[1], x2: $0[2], y2: $0[3]) } }
      feeds.merge(try gid.feeds(boxes: boxes, inputHeight: expected.size, studentGeometry: geometry, studentPriors: priors)) { _, new in new }
      let targets = Set((headNames + levels).map { "student:" + $0 })
      for (name, value) in terms {
        let graph = try LossGraph(builder, loss: value)
        let result = try graph.evaluate(feeds, gradientsFor: targets)
        let reference = try XCTUnwrap(expected.terms[name])
        XCTAssertEqual(Double(result.loss), reference, accuracy: 1e-4 * abs(reference) + 1e-12, "\(folder) \(name)")
        for target in targets.sorted() {
          let gradient = try XCTUnwrap(result.gradients[target])
          let file = directory.appendingPathComponent("\(folder)/gradient_\(name)_student_\(target.dropFirst("student:".count)).npy")
          guard FileManager.default.fileExists(atPath: file.path) else {
            XCTAssertEqual(gradient.floats.map { abs($0) }.max() ?? 0, 0, "\(folder) \(name) d/d\(target): the reference is zero")
            continue
          }
          let expectedGradient = try NumpyFile.read(file.path)
          XCTAssertEqual(gradient.shape, expectedGradient.shape)
          let scale = expectedGradient.floats.map { abs($0) }.max() ?? 0
          let worst = zip(gradient.floats, expectedGradient.floats).map { abs($0 - $1) }.max() ?? 0
          XCTAssertLessThanOrEqual(worst, 1e-4 * scale, "\(folder) \(name) d/d\(target): differs by \(worst) (largest \(scale))")
        }
      }
      if folder == "terms_two" { XCTAssertEqual(expected.terms["relation"], 0) }
    }
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
