import DistillCore
import DistillONNX
import Foundation
import XCTest

/// Whole-model gradients against PyTorch autograd. Each directory under Tests/Fixtures/gradients
/// (dumped by tools/make_gradient_fixture.py) holds an eval-mode export, an input, one random weight
/// tensor per output and PyTorch's gradients of `sum_k sum(output_k * weight_k)`.
final class ModelGradientTests: XCTestCase {
  struct Manifest: Decodable {
    let loss: Double
    let gradients: [String: String]
    /// For fixtures whose export merged parameters: PyTorch name -> [ONNX node name, input slot].
    let readers: [String: [Reader]]?
  }

  enum Reader: Decodable {
    case node(String)
    case slot(Int)
    init(from decoder: Decoder) throws {
      let container = try decoder.singleValueContainer()
      if let slot = try? container.decode(Int.self) { self = .slot(slot) } else { self = .node(try container.decode(String.self)) }
    }
  }

  struct Fixture {
    let directory: URL
    let manifest: Manifest
    let model: Model
    let graph: Graph
    let input: Tensor
    let weights: [Tensor]

    init(_ name: String) throws {
      directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/gradients/\(name)")
      manifest = try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: directory.appendingPathComponent("manifest.json")))
      model = try ModelFile.read(directory.appendingPathComponent("model.onnx").path)
      graph = try XCTUnwrap(model.graph)
      input = try Self.load(directory, "input_0.pb")
      let outputs = graph.outputs.count
      let directory = directory
      weights = try (0..<outputs).map { try Self.load(directory, "weight_\($0).pb") }
    }

    static func load(_ directory: URL, _ file: String) throws -> Tensor {
      try Tensor(ModelFile.readTensor(directory.appendingPathComponent(file).path))
    }

    func expected(_ name: String) throws -> Tensor { try Self.load(directory, manifest.gradients[name]!) }

    /// The tensor of `graph` that PyTorch's parameter `name` became: the one its reader node reads.
    func onnxName(of name: String, in graph: Graph) -> String {
      guard let reader = manifest.readers?[name], case .node(let node)? = reader.first, case .slot(let slot)? = reader.last,
        let step = graph.nodes.first(where: { $0.name == node })
      else { return name }
      return step.inputs[slot]
    }

    /// Checks `gradients` (by parameter name) against PyTorch's (or `expected`): relative L2 error
    /// at most 1e-3.
    func check(
      _ gradients: [String: Tensor], names: [String], expected given: [String: Tensor] = [:], file: StaticString = #filePath,
      line: UInt = #line
    ) throws {
      for name in names {
        let expected = try given[name] ?? expected(name)
        guard let actual = gradients[name] else {
          XCTFail("\(directory.lastPathComponent): no gradient for \(name)", file: file, line: line)
          continue
        }
        XCTAssertEqual(actual.shape, expected.shape, name, file: file, line: line)
        var difference = 0.0, norm = 0.0
        for (a, e) in zip(actual.floats, expected.floats) {
          difference += (Double(a) - Double(e)) * (Double(a) - Double(e))
          norm += Double(e) * Double(e)
        }
        let relative = difference.squareRoot() / max(norm.squareRoot(), 1e-12)
        XCTAssertLessThanOrEqual(
          relative, 1e-3, "\(directory.lastPathComponent) \(name): relative error \(relative), PyTorch's norm \(norm.squareRoot())",
          file: file, line: line)
      }
    }
  }

  /// PyTorch ran the models in eval mode: BatchNormalization with its running statistics. The
  /// graph is untied first (`MergedParameters`), as training does.
  private func checkTape(_ name: String) throws {
    let fixture = try Fixture(name)
    let (model, _) = MergedParameters.untie(fixture.model)
    let graph = try XCTUnwrap(model.graph)
    let interpreter = try Interpreter(model: model, fuse: false, promoteConstants: true)
    let tape = try interpreter.record(["images": fixture.input], training: false)
    var loss = 0.0
    for (output, weight) in zip(tape.outputs, fixture.weights) {
      for (y, w) in zip(output.floats, weight.floats) { loss += Double(y) * Double(w) }
    }
    XCTAssertEqual(loss, fixture.manifest.loss, accuracy: 1e-4 * abs(fixture.manifest.loss))
    let seeds = Dictionary(uniqueKeysWithValues: zip(graph.outputs.map { $0.name }, fixture.weights))
    let names = fixture.manifest.gradients.keys.sorted()
    let onnxNames = Dictionary(uniqueKeysWithValues: names.map { ($0, fixture.onnxName(of: $0, in: graph)) })
    let gradients = try tape.gradients(seeds: seeds, targets: Set(onnxNames.values))
    try fixture.check(onnxNames.compactMapValues { gradients[$0] }, names: names)
  }

  /// The model with `sum_k sum(output_k * weight_k)` and a `Gradient` node (ai.onnx.preview.training)
  /// differentiating it by `xs`; its outputs are the gradients, in the order of `xs`.
  private func gradientModel(_ fixture: Fixture, _ model: Model, xs: [String]) throws -> Model {
    var result = model
    var graph = try XCTUnwrap(model.graph)
    var sums: [String] = []
    for (index, output) in graph.outputs.enumerated() {
      graph.initializers.append(fixture.weights[index].tensorValue(name: "loss_weight_\(index)"))
      graph.nodes.append(Node(opType: "Mul", inputs: [output.name, "loss_weight_\(index)"], outputs: ["loss_product_\(index)"]))
      graph.nodes.append(
        Node(opType: "ReduceSum", inputs: ["loss_product_\(index)"], outputs: ["loss_sum_\(index)"], attributes: [Attribute(name: "keepdims", value: .int(0))]))
      sums.append("loss_sum_\(index)")
    }
    graph.nodes.append(Node(opType: "Sum", inputs: sums, outputs: ["loss"]))
    graph.nodes.append(
      Node(
        name: "gradient", opType: "Gradient", domain: "ai.onnx.preview.training", inputs: xs + ["images"],
        outputs: xs.indices.map { "d_\($0)" },
        attributes: [
          Attribute(name: "xs", value: .strings(xs.map { Array($0.utf8) })), Attribute(name: "zs", value: .strings([Array("images".utf8)])),
          Attribute(name: "y", value: .string(Array("loss".utf8))),
        ]))
    graph.outputs = xs.indices.map { ValueInfo(name: "d_\($0)") }
    result.graph = graph
    result.opsetImports.append(OperatorSetID(domain: "ai.onnx.preview.training", version: 1))
    return result
  }

  func testSmallFPNGradientsMatchPyTorch() throws { try checkTape("fpn_small") }

  /// torchvision's ResNet-18-FPN layout exported in eval mode with BatchNormalization as
  /// initialised: the exporter merged 40 equal-valued parameters (every BatchNormalization scale,
  /// bias and statistic of one width, the FPN's zero biases). Untied, every parameter's gradient is
  /// PyTorch's, through the tape and through `Gradient`.
  func testResNetFPNGradientsMatchPyTorch() throws { try checkTape("resnet18_fpn") }

  func testResNetFPNBatchNormalizationGradientsThroughGradientNode() throws {
    let fixture = try Fixture("resnet18_fpn")
    let (model, untied) = MergedParameters.untie(fixture.model)
    XCTAssertFalse(untied.isEmpty, "the fixture's exporter merged parameters; untie should find them")
    let graph = try XCTUnwrap(model.graph)
    let batchNormalization = fixture.manifest.gradients.keys.filter { $0.contains("bn") || $0.contains("downsample.1") }.sorted()
    XCTAssertEqual(batchNormalization.count, 40)
    let xs = batchNormalization.map { fixture.onnxName(of: $0, in: graph) }
    XCTAssertEqual(Set(xs).count, xs.count, "each BatchNormalization parameter has a tensor of its own after untying")
    let outputs = try Interpreter(model: try gradientModel(fixture, model, xs: xs)).run(["images": fixture.input]).outputs
    try fixture.check(Dictionary(uniqueKeysWithValues: zip(batchNormalization, outputs)), names: batchNormalization)
  }

  /// Without untying, the merged tensor is one parameter of the ONNX graph: `Gradient` gives the sum
  /// of the gradients of every layer reading it, as the ONNX spec defines.
  func testMergedParameterGradientIsTheSumOverItsReaders() throws {
    let fixture = try Fixture("resnet18_fpn")
    let merged = "body.bn1.weight"
    // The exporter names each merged parameter as an Identity of the tensor that survived.
    func source(_ name: String) -> String {
      fixture.graph.nodes.first { $0.opType == "Identity" && $0.outputs == [name] }.map { source($0.inputs[0]) } ?? name
    }
    let readers = fixture.manifest.gradients.keys.filter { source(fixture.onnxName(of: $0, in: fixture.graph)) == merged }.sorted()
    XCTAssertGreaterThan(readers.count, 1, "the fixture should merge \(merged) with other scales of its width")
    let output = try Interpreter(model: try gradientModel(fixture, fixture.model, xs: [merged])).run(["images": fixture.input]).outputs[0]
    var sum = [Float](repeating: 0, count: output.count)
    for reader in readers {
      for (index, value) in try fixture.expected(reader).floats.enumerated() { sum[index] += value }
    }
    try fixture.check([merged: output], names: [merged], expected: [merged: Tensor(shape: output.shape, floats: sum)])
  }
}
