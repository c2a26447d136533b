import DistillCore
import DistillDetection
import DistillONNX
import Foundation
import XCTest

@testable import DistillTrain

/// The losses that read object boxes (`fgd`, `mimic`, `bounded_regression`): values, terms, masks
/// and gradients (student maps, FGD's GcBlock parameters) against the PyTorch reference of
/// tools/make_fgd_fixtures.py (Tests/Fixtures/fgd_losses), with fixed boxes.
final class ObjectDistillationTests: XCTestCase {
  let directory = fixtures.appendingPathComponent("fgd_losses")

  struct Case: Decodable {
    let config: [String: DistillationLossTests.Value]
    let input_size: [Int]
    let objects: [[[Double]]]
    let pairs: Int
    let loss: Double
    let terms: [String: Double]
    let files: [String: String]
  }

  /// The dense head the `bounded_regression` cases use: box maps `s0` (stride 8) and `s1` (16).
  static let regressionHead = """
    type: dense
    num_classes: 1
    offset: 0.5
    levels:
      - {cls: c0, box: s0, stride: 8}
      - {cls: c1, box: s1, stride: 16}
    """

  /// One case's loss graph, built as the engine builds it (scope `TYPE0`), with its method.
  func build(_ type: String, settings: [String: Double], shapes: [[Int]]) throws -> (method: any DistillationMethod, builder: GraphBuilder, terms: [(name: String, value: String)]) {
    let loss = DistillConfig.Loss(
      type: type, teacher: shapes.indices.map { "t\($0)" }, student: shapes.indices.map { "s\($0)" }, weight: 1, settings: settings, flags: [:],
      resize: false)
    let method = try DistillationMethods.make(loss, setup: MethodSetup(studentHead: try HeadConfig(yaml: Self.regressionHead)))
    var builder = GraphBuilder(name: type)
    for (index, shape) in shapes.enumerated() {
      builder.input("s\(index)", shape: shape)
      builder.input("t\(index)", shape: shape)
    }
    builder.scope = "\(type)0"
    let pairs = shapes.enumerated().map { index, shape in
      TapPair(studentTap: "s\(index)", teacherTap: "t\(index)", student: "s\(index)", teacher: "t\(index)", shape: shape)
    }
    let terms = try method.build(&builder, pairs: pairs)
    return (method, builder, terms)
  }

  func context(objects: [[[Float]]], inputSize: (height: Int, width: Int)) -> StepContext {
    StepContext(batch: Batch(feeds: [:]), teacher: [:], student: [:], inputSize: inputSize, objects: objects.map { ($0, $0.map { _ in 0 }) })
  }

  func testEveryObjectLossMatchesPyTorch() throws {
    let cases = try JSONDecoder().decode([String: Case].self, from: Data(contentsOf: directory.appendingPathComponent("cases.json")))
    XCTAssertEqual(cases.count, 6)
    for (name, reference) in cases.sorted(by: { $0.key < $1.key }) {
      func array(_ key: String) throws -> Tensor {
        try NumpyFile.read(directory.appendingPathComponent("\(name)/\(try XCTUnwrap(reference.files[key], "\(name): \(key)"))").path)
      }
      var settings: [String: Double] = [:], type = ""
      for (key, value) in reference.config {
        switch value {
        case .number(let number): settings[key] = number
        case .text(let text): type = text
        }
      }
      var feeds: [String: Tensor] = [:]
      for index in 0..<reference.pairs {
        feeds["s\(index)"] = try array("student_\(index)")
        feeds["t\(index)"] = try array("teacher_\(index)")
      }
      let shapes = (0..<reference.pairs).map { feeds["s\($0)"]!.shape }
      let (method, built, terms) = try build(type, settings: settings, shapes: shapes)
      var builder = built
      XCTAssertEqual(Set(terms.map(\.name)), Set(reference.terms.keys), name)
      let total = builder.add("Sum", terms.map(\.value), hint: "loss")
      let parameters = builder.parameters
      let graph = try LossGraph(builder, loss: total, terms: terms)
      let referenceParameters = reference.files.keys.filter { $0.hasPrefix("param:") }.map { String($0.dropFirst(6)) }
      XCTAssertEqual(Set(parameters), Set(referenceParameters), "\(name): the GcBlock parameters")
      for parameter in parameters { try graph.interpreter.setParameter(parameter, try array("param:" + parameter)) }
      let objects = reference.objects.map { $0.map { $0.map(Float.init) } }
      feeds.merge(try method.stepFeeds(context(objects: objects, inputSize: (reference.input_size[0], reference.input_size[1])))) { $1 }
      if type == "fgd" {
        for index in 0..<reference.pairs {
          for kind in ["fg", "bg"] {
            let expected = try array("mask_\(kind)_\(index)"), mask = try XCTUnwrap(feeds["fgd0/\(index)/mask_\(kind)"])
            XCTAssertEqual(mask.shape, expected.shape, name)
            let worst = zip(mask.floats, expected.floats).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst, 1e-7, "\(name): \(kind) mask of level \(index)")
          }
        }
      }
      let targets = Set((0..<reference.pairs).map { "s\($0)" } + parameters)
      let result = try graph.evaluate(feeds, gradientsFor: targets)
      XCTAssertEqual(Double(result.loss), reference.loss, accuracy: 1e-4 * abs(reference.loss), name)
      for (term, value) in reference.terms {
        XCTAssertEqual(Double(result.terms[term] ?? .nan), value, accuracy: 1e-4 * abs(reference.loss), "\(name): \(term)")
      }
      var expectedGradients: [String: Tensor] = [:]
      for index in 0..<reference.pairs { expectedGradients["s\(index)"] = try array("gradient_\(index)") }
      for parameter in parameters { expectedGradients[parameter] = try array("gradient:" + parameter) }
      let caseScale = expectedGradients.values.flatMap { $0.floats.map { abs($0) } }.max() ?? 0
      XCTAssertGreaterThan(caseScale, 0, "\(name): the reference gradients are zero")
      for (target, expected) in expectedGradients.sorted(by: { $0.key < $1.key }) {
        let gradient = try XCTUnwrap(result.gradients[target], "\(name): \(target)")
        XCTAssertEqual(gradient.shape, expected.shape, "\(name): \(target)")
        // A GcBlock's gradients are compared at the scale of the whole block: the context bias's
        // is zero up to rounding (softmax ignores a shift) and the context weight's a difference
        // of near-equal sums, so their own scale is float32 noise.
        let block = target.split(separator: "/").dropLast(2).joined(separator: "/")
        let group = target.hasPrefix("fgd0/") ? expectedGradients.filter { $0.key.hasPrefix(block + "/") }.map(\.value) : [expected]
        let scale = group.flatMap { $0.floats.map { abs($0) } }.max() ?? 0
        let worst = zip(gradient.floats, expected.floats).map { abs($0 - $1) }.max() ?? 0
        let bound = scale > 0 ? 1e-4 * scale : 1e-6 * caseScale
        XCTAssertLessThanOrEqual(worst, bound, "\(name): gradient of \(target) differs by \(worst) (largest element \(scale))")
      }
    }
  }

  /// Masks on a wide map (rows are y), with boxes partly outside, overlapping, degenerate or not
  /// finite, none, and covering the whole map.
  func testFGDMasks() {
    let input = (height: 32, width: 64)  // stride 8 on a 4 x 8 map
    let masks = { (boxes: [[Float]]) in FocalGlobalDistillation.masks(boxes: boxes, height: 4, width: 8, inputSize: input) }
    // A tall box: x 8...15 -> columns 1...2 (ceil 1.875), y 0...31 -> rows 0...4 (ceil 3.875, the
    // end included): 5 x 2 cells counted, rows 0...3 on the map.
    let tall = masks([[8, 0, 15, 31]])
    for row in 0..<4 {
      for column in 0..<8 { XCTAssertEqual(tall.foreground[row * 8 + column], (1...2).contains(column) ? 1 / Float(10) : 0, "(\(row), \(column))") }
    }
    XCTAssertEqual(tall.background.reduce(0, +), 1, accuracy: 1e-6)
    XCTAssertEqual(tall.background[0], 1 / Float(24))
    // Partly outside: x -20...4 -> columns -3...1 (5 counted, 2 on the map), y 20...50 -> rows 2...7 (6, 2 on the map).
    let outside = masks([[-20, 20, 4, 50]])
    XCTAssertEqual(outside.foreground[2 * 8 + 0], 1 / Float(30))
    XCTAssertEqual(outside.foreground[3 * 8 + 1], 1 / Float(30))
    XCTAssertEqual(outside.foreground.filter { $0 > 0 }.count, 4)
    // Overlapping: the smaller box's value wins where both cover a cell.
    let overlapping = masks([[0, 0, 63, 31], [16, 8, 23, 15]])
    XCTAssertEqual(overlapping.foreground[1 * 8 + 2], 1 / Float(4))
    XCTAssertEqual(overlapping.foreground[0], 1 / Float(5 * 9))
    XCTAssertEqual(overlapping.background, [Float](repeating: 0, count: 32), "no background when boxes cover the map")
    // No boxes, or only boxes that are empty, not finite or off the map: all background.
    for boxes: [[Float]] in [[], [[10, 10, 10, 20]], [[.nan, 0, 5, 5]], [[100, 100, 120, 130]]] {
      let result = masks(boxes)
      XCTAssertEqual(result.foreground, [Float](repeating: 0, count: 32), "\(boxes)")
      XCTAssertEqual(result.background, [Float](repeating: 1 / Float(32), count: 32), "\(boxes)")
    }
    // A huge box does not overflow the cell arithmetic: it covers rows 0...1 of every column.
    XCTAssertEqual(masks([[-1e30, 0, 1e30, 5]]).foreground.filter { $0 > 0 }.count, 16)
  }

  /// The GcBlocks start as the reference initialises them: with the last convolution zero the
  /// global loss is `lambda * sum (F_S - F_T)^2 / N`, and its gradient still reaches the last
  /// convolution (so it starts to learn).
  func testGcBlocksStartAsTheIdentity() throws {
    let (method, built, terms) = try build("fgd", settings: ["lambda": 1], shapes: [[2, 4, 3, 5]])
    var builder = built
    XCTAssertEqual(terms.map(\.name), ["s0/fg", "s0/bg", "s0/attention", "s0/global"])
    let initial = Dictionary(uniqueKeysWithValues: try builder.graph.initializers.map { ($0.name, try Tensor($0)) })
    XCTAssertEqual(initial["fgd0/0/gc_student/expand/weight"]?.floats, [Float](repeating: 0, count: 8))
    XCTAssertEqual(initial["fgd0/0/gc_teacher/norm/scale"]?.floats, [1, 1])
    XCTAssertEqual(initial["fgd0/0/gc_student/context/weight"]?.shape, [1, 4, 1, 1])
    XCTAssertNotEqual(initial["fgd0/0/gc_student/squeeze/weight"]?.floats, initial["fgd0/0/gc_teacher/squeeze/weight"]?.floats)
    let total = builder.add("Sum", terms.map(\.value))
    let parameters = builder.parameters
    let graph = try LossGraph(builder, loss: total, terms: terms)
    var random = SplitMix64(seed: 3)
    let student = random.normalTensor([2, 4, 3, 5]), teacher = random.normalTensor([2, 4, 3, 5])
    var feeds = ["s0": student, "t0": teacher]
    feeds.merge(try method.stepFeeds(context(objects: [[[8, 8, 30, 20]], []], inputSize: (24, 40)))) { $1 }
    let result = try graph.evaluate(feeds, gradientsFor: Set(parameters))
    let squares = zip(student.floats, teacher.floats).map { Double(($0 - $1) * ($0 - $1)) }.reduce(0, +) / 2
    XCTAssertEqual(Double(try XCTUnwrap(result.terms["s0/global"])), squares, accuracy: 1e-4 * squares)
    let expand = try XCTUnwrap(result.gradients["fgd0/0/gc_student/expand/weight"])
    XCTAssertGreaterThan(expand.floats.map { abs($0) }.max() ?? 0, 0)
  }

  /// Without boxes `mimic` is 0 with zero gradients, and `bounded_regression` is 0 too.
  func testNoObjectsGiveZero() throws {
    for type in ["mimic", "bounded_regression"] {
      let (method, built, terms) = try build(type, settings: [:], shapes: [[2, 4, 6, 8], [2, 4, 3, 4]])
      var builder = built
      let total = builder.add("Sum", terms.map(\.value))
      let graph = try LossGraph(builder, loss: total, terms: terms)
      var random = SplitMix64(seed: 5)
      var feeds: [String: Tensor] = [:]
      for (name, shape) in [("s0", [2, 4, 6, 8]), ("t0", [2, 4, 6, 8]), ("s1", [2, 4, 3, 4]), ("t1", [2, 4, 3, 4])] { feeds[name] = random.normalTensor(shape) }
      feeds.merge(try method.stepFeeds(context(objects: [[], [[5, 5, 5, 9]]], inputSize: (48, 64)))) { $1 }
      let result = try graph.evaluate(feeds, gradientsFor: ["s0", "s1"])
      XCTAssertEqual(result.loss, 0, type)
      XCTAssertEqual(result.gradients["s0"]?.floats.allSatisfy { $0 == 0 }, true, type)
    }
  }

  /// Assignment of boxes to levels (mimic) and the points inside boxes (bounded regression).
  func testMimicLevelsAndRegressionTargets() throws {
    XCTAssertEqual(MimicDistillation.level(box: [0, 0, 224, 224], strides: [8, 16, 32], canonicalSize: 224), 16)
    XCTAssertEqual(MimicDistillation.level(box: [0, 0, 200, 200], strides: [8, 16, 32], canonicalSize: 224), 8, "FPN's floor")
    XCTAssertEqual(MimicDistillation.level(box: [0, 0, 900, 900], strides: [8, 16, 32], canonicalSize: 224), 32)
    XCTAssertEqual(MimicDistillation.level(box: [0, 0, 10, 10], strides: [8, 16, 32], canonicalSize: 224), 8)
    // Points at ((x + 0.5) 8, (y + 0.5) 8): the box 0...20 x 0...12 holds (4, 4) and (12, 4);
    // the box 2...25 x 2...30 columns 0...2 of every row.
    let level = BoundedRegression.targets(boxes: [[0, 0, 20, 12], [2, 2, 25, 30]], height: 3, width: 4, stride: 8, offset: 0.5, pixels: false)
    XCTAssertEqual(level.positive, [true, true, true, false, true, true, true, false, true, true, true, false])
    // (12, 4) is in both boxes; the smaller (240 px^2) wins: l t r b = 12 4 8 8 px, in strides.
    XCTAssertEqual([0, 1, 2, 3].map { level.targets[$0 * 12 + 1] }, [1.5, 0.5, 1, 1])
    XCTAssertThrowsError(try DistillationMethods.make(DistillConfig.Loss(type: "bounded_regression", teacher: ["t"], student: ["s"], weight: 1, settings: [:], flags: [:], resize: false))) {
      XCTAssertTrue("\($0)".contains("head"), "\($0)")
    }
  }
}
