import DistillCore
import DistillONNX
import Foundation
import XCTest

@testable import DistillTrain

/// One `distill train` step reproduces PyTorch's: a ResNet-18-FPN-layout teacher and student,
/// `mse` on three FPN levels and sigmoid `kd` on three class maps, frozen BatchNormalization, SGD
/// with momentum and weight decay (Tests/Fixtures/distill_step, tools/make_distill_step_fixture.py).
final class DistillStepTests: XCTestCase {
  func testOneStepMatchesPyTorchsLossTermsAndWeightUpdates() throws {
    let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .appendingPathComponent("Fixtures/distill_step")
    let output = FileManager.default.temporaryDirectory.appendingPathComponent("distill-step-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: output) }
    let yaml = """
      teacher: teacher.onnx
      student: student.onnx
      data: {tensors: data, shuffle: false}
      bn: frozen
      losses:
        - {type: mse, teacher: [p3, p4, p5], student: [p3, p4, p5]}
        - {type: kd, teacher: [cls_p3, cls_p4, cls_p5], student: [cls_p3, cls_p4, cls_p5], activation: sigmoid, temperature: 2.0, weight: 0.5}
      train: {steps: 1, batch: 2, optimizer: {type: sgd, lr: 0.05, momentum: 0.9, weight_decay: 1.0e-4}, schedule: {type: constant}}
      output: \(output.path)
      """
    let config = try DistillConfig(yaml: yaml, file: directory.appendingPathComponent("step.yaml").path)
    let distiller = try Distiller(config: config, options: RunOptions())
    struct Expected: Decodable {
      let loss: Double
      let terms: [String: Double]
      let updated: [String: String]
    }
    let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: directory.appendingPathComponent("expected.json")))
    let report = try distiller.trainer.trainStep()
    XCTAssertEqual(Double(report.loss), expected.loss, accuracy: 1e-4 * expected.loss)
    XCTAssertEqual(Set(report.terms.keys), Set(expected.terms.keys))
    for (name, value) in expected.terms {
      XCTAssertEqual(Double(report.terms[name] ?? .nan), value, accuracy: 1e-4 * abs(value), name)
    }
    XCTAssertEqual(expected.updated.count, 74)
    for (name, file) in expected.updated.sorted(by: { $0.key < $1.key }) {
      let want = try NumpyFile.read(directory.appendingPathComponent("updated/\(file)").path)
      let before = try XCTUnwrap(distiller.studentModel.graph?.initializers.first { $0.name == name }, name)
      let got = try XCTUnwrap(distiller.trainer.interpreter.parameter(name), name)
      XCTAssertEqual(got.shape, want.shape, name)
      // The update itself (new - old) within 1e-3 of its size, and the new values within 1e-5.
      let old = try Tensor(before).floats
      var error = 0.0, size = 0.0
      for ((g, w), o) in zip(zip(got.floats, want.floats), old) {
        error = max(error, Double(abs(g - w)))
        size = max(size, Double(abs(w - o)))
      }
      XCTAssertGreaterThan(size, 0, "\(name) did not move in PyTorch")
      XCTAssertLessThanOrEqual(error, 1e-3 * size + 1e-7, "\(name): update differs by \(error) (update size \(size))")
    }
  }

  /// `DistillationLoss.prepare` runs the teacher ahead of the student's pass (the trainer calls it
  /// before recording): `evaluate` then reads the prepared values instead of running the teacher
  /// again, with the same result as on an unprepared batch.
  func testPreparedTeacherValuesAreTheOnesEvaluateReads() throws {
    let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .appendingPathComponent("Fixtures/distill_step")
    let yaml = """
      teacher: teacher.onnx
      student: student.onnx
      data: {tensors: data, shuffle: false}
      bn: frozen
      losses:
        - {type: mse, teacher: [p3, p4, p5], student: [p3, p4, p5]}
        - {type: kd, teacher: [cls_p3], student: [cls_p3], activation: sigmoid}
      train: {steps: 1, batch: 2, optimizer: {type: sgd, lr: 0.05}}
      """
    let distiller = try Distiller(config: try DistillConfig(yaml: yaml, file: directory.appendingPathComponent("prepare.yaml").path), options: RunOptions())
    let loss = distiller.loss
    var random = SplitMix64(seed: 3)
    let (height, width) = distiller.inputSize
    let batch = Batch(feeds: [loss.studentInput: random.normalTensor([2, 3, height, width])])
    let prepared = try loss.prepare(batch)
    XCTAssertEqual(Set(prepared.targets.keys), ["teacher:p3", "teacher:p4", "teacher:p5", "teacher:cls_p3"])
    let direct = try loss.teacherTapValues(batch.feeds[loss.studentInput]!)
    for (tap, value) in direct { XCTAssertEqual(prepared.targets["teacher:" + tap]?.floats, value.floats, tap) }

    let tape = try distiller.trainer.interpreter.record(batch.feeds, training: false)
    let unprepared = try loss.evaluate(tape, batch), fromPrepared = try loss.evaluate(tape, prepared)
    XCTAssertEqual(fromPrepared.loss.bitPattern, unprepared.loss.bitPattern)
    XCTAssertEqual(fromPrepared.terms, unprepared.terms)
    XCTAssertEqual(Set(fromPrepared.seeds.keys), Set(unprepared.seeds.keys))
    for (name, seed) in unprepared.seeds { XCTAssertEqual(fromPrepared.seeds[name]?.floats, seed.floats, name) }

    // The prepared values are what evaluate reads: the student's own P3 there zeroes that term.
    var altered = prepared
    altered.targets["teacher:p3"] = tape.value("p3")
    let fromAltered = try loss.evaluate(tape, altered)
    XCTAssertEqual(fromAltered.terms["mse:p3"], 0)
    XCTAssertEqual(fromAltered.terms["mse:p4"], unprepared.terms["mse:p4"])
    XCTAssertGreaterThan(unprepared.terms["mse:p3"]!, 0)
  }
}
