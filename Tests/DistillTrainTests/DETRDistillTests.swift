import DistillCore
import DistillDetection
import DistillONNX
import Foundation
import XCTest

@testable import DistillTrain

/// The `detr` loss (DETRDistill's progressive instance distillation) against PyTorch with scipy's
/// Hungarian matching (Tests/Fixtures/detr_distill, tools/make_detr_distill_fixture.py).
final class DETRDistillTests: XCTestCase {
  let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/detr_distill")

  func head(_ prefix: String) throws -> HeadConfig {
    try HeadConfig(yaml: """
      type: detr
      num_classes: 4
      activation: sigmoid
      logits: \(prefix)_logits_1
      boxes: \(prefix)_boxes_1
      aux:
        - {logits: \(prefix)_logits_0, boxes: \(prefix)_boxes_0}
      """)
  }

  func load(_ name: String) throws -> Tensor { try NumpyFile.read(directory.appendingPathComponent(name + ".npy").path) }

  func testMatchingValueAndGradientEqualPyTorch() throws {
    struct Expected: Decodable {
      struct Layer: Decodable {
        let loss: Double
        let student_rows: [Int]
        let teacher_rows: [Int]
      }
      let layers: [Layer]
    }
    let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: directory.appendingPathComponent("expected.json")))
    let method = try DETRDistill(setup: MethodSetup(teacherHead: try head("teacher"), studentHead: try head("student")), settings: [:])
    XCTAssertEqual(method.studentLayers.map(\.logits), ["student_logits_0", "student_logits_1"])
    var builder = GraphBuilder(name: "detr")
    var studentValues: [String: Tensor] = [:], teacherValues: [String: Tensor] = [:]
    for tap in method.extraTaps.student {
      let value = try load(tap)
      studentValues[DistillationLoss.studentValue(tap)] = value
      builder.input(DistillationLoss.studentValue(tap), shape: value.shape.map { $0 })
    }
    for tap in method.extraTaps.teacher {
      let value = try load(tap)
      teacherValues[tap] = value
      builder.input(DistillationLoss.teacherValue(tap), shape: value.shape.map { $0 })
    }
    let terms = try method.build(&builder, pairs: [])
    XCTAssertEqual(terms.map(\.name), ["layer0", "layer1"])
    let total = builder.add("Sum", terms.map(\.value))
    let graph = try LossGraph(builder, loss: total, terms: terms)
    let context = StepContext(batch: Batch(feeds: [:]), teacher: teacherValues, student: studentValues, inputSize: (64, 64), objects: [])
    let steps = try method.stepFeeds(context)
    for (layer, reference) in expected.layers.enumerated() {
      XCTAssertEqual(steps[DETRDistill.indexInput(layer, "student")]?.ints.map(Int.init), reference.student_rows, "layer \(layer)")
      XCTAssertEqual(steps[DETRDistill.indexInput(layer, "teacher")]?.ints.map(Int.init), reference.teacher_rows, "layer \(layer)")
    }
    var feeds = steps
    for (name, value) in studentValues { feeds[name] = value }
    for (name, value) in teacherValues { feeds[DistillationLoss.teacherValue(name)] = value }
    let result = try graph.evaluate(feeds, gradientsFor: Set(studentValues.keys))
    for (layer, reference) in expected.layers.enumerated() {
      XCTAssertEqual(Double(result.terms["layer\(layer)"]!), reference.loss, accuracy: 1e-4 * reference.loss)
      for kind in ["logits", "boxes"] {
        let gradient = try XCTUnwrap(result.gradients[DistillationLoss.studentValue("student_\(kind)_\(layer)")])
        let want = try load("gradient_\(kind)_\(layer)")
        let scale = want.floats.map { abs($0) }.max()!
        let worst = zip(gradient.floats, want.floats).map { abs($0 - $1) }.max()!
        XCTAssertLessThanOrEqual(worst, 1e-4 * scale, "layer \(layer) \(kind): gradient differs by \(worst) (largest \(scale))")
      }
    }
  }

  /// The attention-agnostic feature term (a map level and a sequence level) and teacher-assisted
  /// assignment (the student's second-pass outputs matched through the teacher's layers to the
  /// objects): masks, assigned queries, values and gradients against the PyTorch reference.
  func testFeatureAndAssistedTermsEqualPyTorch() throws {
    struct Expected: Decodable {
      struct Objects: Decodable {
        let boxes: [[Float]]
        let labels: [Int]
      }
      let objects: [Objects]
      let size: [Int]
      let top_k: Double
      let feature_weight: Double
      let assisted_weight: Double
      let feature: Double
      let assisted: Double
      let assigned_queries: [[[Int]]]
    }
    let expected = try JSONDecoder().decode(Expected.self, from: Data(contentsOf: directory.appendingPathComponent("expected.json")))
    let method = try DETRDistill(
      setup: MethodSetup(teacherHead: try head("teacher"), studentHead: try head("student")),
      settings: ["top_k": expected.top_k, "feature_weight": expected.feature_weight, "assisted_weight": expected.assisted_weight],
      flags: ["query_features": "query_features", "student_queries": "query_embed", "teacher_queries": "query_embed"], featurePairs: 2)
    var builder = GraphBuilder(name: "detr")
    var feeds: [String: Tensor] = [:], teacherValues: [String: Tensor] = [:]
    func declare(_ name: String, _ value: Tensor) {
      feeds[name] = value
      builder.input(name, shape: value.shape.map { $0 })
    }
    for tap in method.extraTaps.student { declare(DistillationLoss.studentValue(tap), try load(tap)) }
    for tap in method.extraTaps.teacher {
      teacherValues[tap] = try load(tap)
      declare(DistillationLoss.teacherValue(tap), teacherValues[tap]!)
    }
    var pairs: [TapPair] = []
    for level in ["enc_map", "enc_seq"] {
      teacherValues[level] = try load("teacher_" + level)
      declare(DistillationLoss.teacherValue(level), teacherValues[level]!)
      declare(DistillationLoss.studentValue(level), try load("student_" + level))
      pairs.append(
        TapPair(studentTap: level, teacherTap: level, student: DistillationLoss.studentValue(level), teacher: DistillationLoss.teacherValue(level), shape: teacherValues[level]!.shape))
    }
    let rerun = try XCTUnwrap(method.rerun)
    XCTAssertEqual(rerun.replacing, "query_embed")
    for layer in 0..<2 {
      declare(DistillationLoss.rerunValue(rerun, "student_logits_\(layer)"), try load("assisted_logits_\(layer)"))
      declare(DistillationLoss.rerunValue(rerun, "student_boxes_\(layer)"), try load("assisted_boxes_\(layer)"))
    }
    let terms = try method.build(&builder, pairs: pairs)
    XCTAssertEqual(terms.map(\.name), ["layer0", "layer1", "feature", "assisted"])
    let total = builder.add("Sum", terms.map(\.value))
    let graph = try LossGraph(builder, loss: total, terms: terms)
    let context = StepContext(
      batch: Batch(feeds: [:]), teacher: teacherValues, student: feeds.filter { $0.key.hasPrefix("student:") }, inputSize: (expected.size[0], expected.size[1]),
      objects: expected.objects.map { ($0.boxes, $0.labels) })
    let stepFeeds = try method.stepFeeds(context)
    for (level, input) in zip(["enc_map", "enc_seq"], method.featureLevels) {
      let mask = try XCTUnwrap(stepFeeds[input.mask]), want = try load("mask_" + level)
      XCTAssertEqual(mask.shape, want.shape)
      XCTAssertLessThanOrEqual(zip(mask.floats, want.floats).map { abs($0 - $1) }.max()!, 1e-5, "mask of \(level)")
    }
    for (layer, input) in method.assistedLayers.enumerated() {
      let weights = try XCTUnwrap(stepFeeds[input.weights]).floats
      let queries = input.shape[1]
      for image in 0..<2 {
        let assigned = (0..<queries).filter { weights[image * queries + $0] == 1 }
        XCTAssertEqual(assigned, expected.assigned_queries[layer][image], "layer \(layer) image \(image)")
      }
    }
    feeds.merge(stepFeeds) { _, new in new }
    let targets = ["student:enc_map", "student:enc_seq"] + (0..<2).flatMap { layer in
      ["student_logits_\(layer)", "student_boxes_\(layer)"].map { DistillationLoss.rerunValue(rerun, $0) }
    }
    let result = try graph.evaluate(feeds, gradientsFor: Set(targets))
    XCTAssertEqual(Double(result.terms["feature"]!), expected.feature, accuracy: 1e-4 * expected.feature)
    XCTAssertEqual(Double(result.terms["assisted"]!), expected.assisted, accuracy: 1e-4 * expected.assisted)
    let references = ["gradient_enc_map", "gradient_enc_seq"] + (0..<2).flatMap { ["gradient_assisted_logits_\($0)", "gradient_assisted_boxes_\($0)"] }
    for (target, reference) in zip(targets, references) {
      let gradient = try XCTUnwrap(result.gradients[target]), want = try load(reference)
      let scale = want.floats.map { abs($0) }.max()!
      let worst = zip(gradient.floats, want.floats).map { abs($0 - $1) }.max()!
      XCTAssertLessThanOrEqual(worst, 1e-4 * scale, "\(reference): differs by \(worst) (largest \(scale))")
    }
  }

  /// Every inconsistent key combination is reported at once, naming the missing partner.
  func testIncompleteConfigsNameWhatIsMissing() throws {
    let setup = MethodSetup(teacherHead: try head("teacher"), studentHead: try head("student"))
    XCTAssertThrowsError(try DETRDistill(setup: setup, settings: ["top_k": 0], flags: ["student_queries": "query_embed"], featurePairs: 2)) { error in
      let message = "\(error)"
      XCTAssertTrue(message.contains("top_k must be a whole number >= 1"), message)
      XCTAssertTrue(message.contains("give query_features"), message)
      XCTAssertTrue(message.contains("student_queries 'query_embed' needs teacher_queries"), message)
    }
    XCTAssertThrowsError(try DETRDistill(setup: setup, settings: [:], flags: ["query_features": "hidden", "teacher_queries": "q"])) { error in
      let message = "\(error)"
      XCTAssertTrue(message.contains("query_features 'hidden' is given but no encoder features"), message)
      XCTAssertTrue(message.contains("teacher_queries 'q' needs student_queries"), message)
    }
    let plain = try DETRDistill(setup: setup, settings: [:])
    XCTAssertFalse(plain.needsObjects)
    XCTAssertNil(plain.rerun)
  }

  /// On the tiny DETR-style pair (label-free), the trainer's gradient (the main pass plus the
  /// assisted pass on the teacher's queries) equals central differences of the whole loss; the
  /// assisted pass adds to the parameters both passes use and nothing to the replaced queries.
  func testBothPassesGradientsEqualFiniteDifferences() throws {
    let fixtures = directory.deletingLastPathComponent()
    let yaml = """
      teacher: \(directory.path)/tiny/teacher.onnx
      student: \(directory.path)/tiny/student.onnx
      data: {images: \(fixtures.path)/eval/fcos/images, size: [96, 128]}
      head: {type: detr, num_classes: 5, activation: sigmoid, logits: logits_1, boxes: boxes_1, aux: [{logits: logits_0, boxes: boxes_0}]}
      pseudo_label: {score: 0.3}
      losses:
        - {type: detr, teacher: [enc, memory], student: [feat, memory], query_features: hidden, student_queries: query_embed, teacher_queries: query_embed}
      train: {steps: 1, batch: 2, optimizer: {type: sgd, lr: 0.01}}
      """
    let distiller = try Distiller(config: try DistillConfig(yaml: yaml, file: "/tmp/detr-fd.yaml"), options: RunOptions())
    let trainer = distiller.trainer, interpreter = distiller.trainer.interpreter
    var random = SplitMix64(seed: 5)
    let images = Tensor(shape: [2, 3, 96, 128], floats: (0..<(2 * 3 * 96 * 128)).map { _ in random.nextUniform() })
    let batch = Batch(feeds: ["images": images])
    func loss() throws -> Double { Double(try distiller.loss.evaluate(try interpreter.record(batch.feeds), batch).loss) }
    let tape = try interpreter.record(batch.feeds)
    let evaluation = try distiller.loss.evaluate(tape, batch)
    XCTAssertEqual(evaluation.additionalPasses.count, 1)
    // The trainer consumes the tape; the main pass alone is differentiated on a second recording.
    let mainOnly = try interpreter.record(batch.feeds).gradients(seeds: evaluation.seeds, targets: ["cls.bias", "query_embed"])
    let gradients = try trainer.gradients(tape, evaluation)
    XCTAssertNotEqual(gradients["cls.bias"]!.floats, mainOnly["cls.bias"]!.floats, "the assisted pass adds to the shared head")
    XCTAssertEqual(gradients["query_embed"]!.floats, mainOnly["query_embed"]!.floats, "the replaced queries get nothing from the assisted pass")
    for (name, index) in [("cls.bias", 2), ("box.bias", 1), ("query_embed", 9), ("project.bias", 3), ("backbone.0.bias", 0)] {
      let original = try XCTUnwrap(interpreter.parameter(name))
      let step: Float = 5e-3
      var shifted = original
      shifted.floats[index] += step
      try interpreter.setParameter(name, shifted)
      let above = try loss()
      shifted.floats[index] -= 2 * step
      try interpreter.setParameter(name, shifted)
      let below = try loss()
      try interpreter.setParameter(name, original)
      let numeric = (above - below) / Double(2 * step), analytic = Double(gradients[name]!.floats[index])
      XCTAssertEqual(analytic, numeric, accuracy: 2e-2 * max(abs(numeric), 0.05), "\(name)[\(index)]")
    }
  }

  func testHungarianFindsTheMinimumOnAKnownMatrix() {
    // Rows 0..2 to columns 0..3; the optimum 1 + 2 + 1 = 4 takes columns 1, 3, 0.
    let cost: [Double] = [4, 1, 3, 9, 2, 8, 5, 2, 1, 6, 7, 4]
    XCTAssertEqual(Hungarian.assign(cost, rows: 3, columns: 4), [1, 3, 0])
  }
}
