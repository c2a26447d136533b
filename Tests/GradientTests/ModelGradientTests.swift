import DistillCore
import DistillONNX
import Foundation
import XCTest

/// Whole-model gradients of a small FPN detector against PyTorch autograd
/// (Tests/Fixtures/gradients/fpn_small, dumped by tools/make_gradient_fixture.py).
final class ModelGradientTests: XCTestCase {
  func testSmallFPNGradientsMatchPyTorch() throws {
    let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .appendingPathComponent("Fixtures/gradients/fpn_small")
    struct Manifest: Decodable {
      let loss: Double
      let gradients: [String: String]
    }
    let manifest = try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: directory.appendingPathComponent("manifest.json")))
    func load(_ file: String) throws -> Tensor { try Tensor(ModelFile.readTensor(directory.appendingPathComponent(file).path)) }
    let model = try ModelFile.read(directory.appendingPathComponent("model.onnx").path)
    let interpreter = try Interpreter(model: model, fuse: false, promoteConstants: true)
    // PyTorch ran the model in eval mode: BatchNormalization with its running statistics.
    let tape = try interpreter.record(["images": try load("input_0.pb")], training: false)
    let weights = [try load("weight_0.pb"), try load("weight_1.pb")]
    let loss = zip(tape.outputs, weights).reduce(0.0) { total, pair in
      total + zip(pair.0.floats, pair.1.floats).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }
    XCTAssertEqual(loss, manifest.loss, accuracy: 1e-4 * abs(manifest.loss))
    let gradients = try tape.gradients(seeds: ["scores": weights[0], "boxes": weights[1]], targets: Set(manifest.gradients.keys))
    for (name, file) in manifest.gradients.sorted(by: { $0.key < $1.key }) {
      let expected = try load(file)
      let actual = try XCTUnwrap(gradients[name], name)
      XCTAssertEqual(actual.shape, expected.shape, name)
      let difference = zip(actual.floats, expected.floats).reduce(0.0) { $0 + pow(Double($1.0) - Double($1.1), 2) }.squareRoot()
      let norm = expected.floats.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
      XCTAssertLessThanOrEqual(difference / max(norm, 1e-12), 1e-3, "\(name): relative error \(difference / max(norm, 1e-12))")
    }
  }
}
