import DistillCore
import DistillONNX
import Foundation
import XCTest

@testable import DistillTrain

/// Each distillation loss's value and gradient against the PyTorch reference written from
/// METHODS.md (Tests/Fixtures/distill_losses, tools/make_distill_loss_fixtures.py).
final class DistillationLossTests: XCTestCase {
  let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/distill_losses")

  struct Case: Decodable {
    let config: [String: Value]
    let loss: Double
  }
  enum Value: Decodable {
    case number(Double), text(String)
    init(from decoder: Decoder) throws {
      let container = try decoder.singleValueContainer()
      if let number = try? container.decode(Double.self) { self = .number(number) } else { self = .text(try container.decode(String.self)) }
    }
  }

  func testEveryLossMatchesPyTorch() throws {
    let cases = try JSONDecoder().decode([String: Case].self, from: Data(contentsOf: directory.appendingPathComponent("cases.json")))
    XCTAssertEqual(cases.count, 9)
    for (name, reference) in cases.sorted(by: { $0.key < $1.key }) {
      let student = try NumpyFile.read(directory.appendingPathComponent("\(name)/student.npy").path)
      let teacher = try NumpyFile.read(directory.appendingPathComponent("\(name)/teacher.npy").path)
      let expected = try NumpyFile.read(directory.appendingPathComponent("\(name)/gradient.npy").path)
      var settings: [String: Double] = [:], flags: [String: String] = [:]
      var type = ""
      for (key, value) in reference.config {
        switch value {
        case .number(let number): settings[key] = number
        case .text(let text): if key == "type" { type = text } else { flags[key] = text }
        }
      }
      let loss = DistillConfig.Loss(type: type, teacher: ["t"], student: ["s"], weight: 1, settings: settings, flags: flags, resize: false)
      var builder = GraphBuilder(name: name)
      builder.input("s", shape: student.shape.map { $0 })
      builder.input("t", shape: teacher.shape.map { $0 })
      let pair = TapPair(studentTap: "s", teacherTap: "t", student: "s", teacher: "t", shape: teacher.shape)
      let terms = try DistillationMethods.make(loss).build(&builder, pairs: [pair])
      XCTAssertEqual(terms.map(\.name), ["s"])
      let value = terms[0].value
      let graph = try LossGraph(builder, loss: value)
      let result = try graph.evaluate(["s": student, "t": teacher], gradientsFor: ["s"])
      XCTAssertEqual(Double(result.loss), reference.loss, accuracy: 1e-4 * abs(reference.loss), name)
      let gradient = try XCTUnwrap(result.gradients["s"], name)
      XCTAssertEqual(gradient.shape, expected.shape, name)
      let scale = expected.floats.map { abs($0) }.max() ?? 0
      XCTAssertGreaterThan(scale, 0, "\(name): the reference gradient is zero")
      let worst = zip(gradient.floats, expected.floats).map { abs($0 - $1) }.max() ?? 0
      XCTAssertLessThanOrEqual(worst, 1e-4 * scale, "\(name): gradient differs by \(worst) (largest element \(scale))")
    }
  }

  /// A student narrower than the teacher goes through a 1x1 adapter whose weights get gradients;
  /// maps of another size need `resize: true`.
  func testAdaptersMatchWidthsAndRefuseSizeMismatches() throws {
    var builder = GraphBuilder(name: "adapt")
    builder.input("s", shape: [2, 3, 4, 4])
    var random = SplitMix64(seed: 1)
    let adapted = try DistillationLoss.adapt(
      &builder, "s", from: [2, 3, 4, 4], to: [2, 5, 4, 4], resize: false, describe: "x", adapterName: "adapter/0/s", random: &random)
    XCTAssertEqual(builder.parameters, ["adapter/0/s/weight", "adapter/0/s/bias"])
    let weight = try XCTUnwrap(builder.graph.initializers.first { $0.name == "adapter/0/s/weight" })
    let values = try Tensor(weight).floats
    XCTAssertEqual(weight.dims, [5, 3, 1, 1])
    XCTAssertTrue(values.allSatisfy { abs($0) <= 1 / Float(3).squareRoot() }, "PyTorch's default bound 1/sqrt(fan_in)")
    let value = try MeanSquaredHint().build(&builder, student: adapted, teacher: builder.constant(Tensor(shape: [2, 5, 4, 4], floats: [Float](repeating: 0.5, count: 160))), shape: [2, 5, 4, 4])
    let graph = try LossGraph(builder, loss: value)
    let result = try graph.evaluate(["s": random.normalTensor([2, 3, 4, 4])], gradientsFor: ["s", "adapter/0/s/weight"])
    XCTAssertEqual(result.gradients["adapter/0/s/weight"]?.shape, [5, 3, 1, 1])
    XCTAssertThrowsError(
      try DistillationLoss.adapt(&builder, "s", from: [2, 3, 4, 4], to: [2, 3, 8, 8], resize: false, describe: "mse: 's' and 't'", adapterName: "a", random: &random)
    ) { XCTAssertTrue("\($0)".contains("resize: true"), "\($0)") }
    let resized = try DistillationLoss.adapt(&builder, "s", from: [2, 3, 4, 4], to: [2, 3, 8, 8], resize: true, describe: "", adapterName: "b", random: &random)
    XCTAssertEqual(builder.graph.nodes.last?.opType, "Resize")
    XCTAssertEqual(builder.graph.nodes.last?.outputs, [resized])
  }
}
