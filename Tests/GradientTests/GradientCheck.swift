import DistillCore
import XCTest

/// One finite-difference check of one operator: a single-node graph with these inputs.
struct GradientCase {
  let op: String
  /// The op's domain: "" (ONNX) or `distill` for the operators only fusion creates.
  var domain = ""
  var attributes: [Attribute] = []
  var inputs: [Tensor?]
  /// Indices of the inputs whose gradients are checked (float inputs by default).
  var checked: [Int]? = nil
  var opset: Int = 17
  var outputCount: Int = 1
  /// Finite-difference step; smaller for ops with kinks close to the sampled values.
  var step: Double = 1e-2
  /// Runs the node in training behaviour (BatchNormalization with batch statistics) for both the
  /// analytic and the finite-difference passes; otherwise the differences use inference.
  var training = false
  var note: String = ""
}

/// Deterministic pseudo-random values for test inputs.
struct Values {
  private var state: UInt64

  init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }

  mutating func next() -> Double {
    state ^= state << 13
    state ^= state >> 7
    state ^= state << 17
    return Double(state >> 11) / Double(1 << 53)
  }

  /// Uniform in [low, high).
  mutating func tensor(_ shape: [Int], _ low: Float = -1, _ high: Float = 1) -> Tensor {
    Tensor(shape: shape, floats: (0..<shape.reduce(1, *)).map { _ in low + Float(next()) * (high - low) })
  }

  /// Uniform in ±[margin, 1): away from the kink at 0 of Relu, Abs, LeakyRelu, ...
  mutating func awayFromZero(_ shape: [Int], margin: Float = 0.1) -> Tensor {
    Tensor(
      shape: shape,
      floats: (0..<shape.reduce(1, *)).map { _ in
        let magnitude = margin + Float(next()) * (1 - margin)
        return next() < 0.5 ? -magnitude : magnitude
      })
  }
}

enum GradientCheck {
  /// Runs `gradientCase` forward and backward and compares every checked input's gradient with
  /// central differences of L = sum(r * y) (r random, accumulated in Double). Returns the problems.
  static func run(_ gradientCase: GradientCase, maxElements: Int = 48) throws -> [String] {
    let inputNames = gradientCase.inputs.indices.map { "in\($0)" }
    let outputNames = (0..<gradientCase.outputCount).map { "out\($0)" }
    var graph = Graph()
    graph.name = gradientCase.op
    graph.nodes = [
      Node(
        name: gradientCase.op, opType: gradientCase.op, domain: gradientCase.domain,
        inputs: gradientCase.inputs.enumerated().map { $0.element == nil ? "" : inputNames[$0.offset] }, outputs: outputNames,
        attributes: gradientCase.attributes)
    ]
    graph.inputs = gradientCase.inputs.enumerated().compactMap { index, tensor in
      tensor.map { ValueInfo(name: inputNames[index], type: .tensor(elementType: $0.dtype, shape: nil, denotation: nil)) }
    }
    graph.outputs = outputNames.map { ValueInfo(name: $0) }
    let interpreter = try Interpreter(graph: graph, opsets: ["": gradientCase.opset], fuse: false)
    var feeds: [String: Tensor] = [:]
    for (index, tensor) in gradientCase.inputs.enumerated() { if let tensor { feeds[inputNames[index]] = tensor } }

    let tape = try interpreter.record(feeds, training: gradientCase.training)
    var random = Values(seed: 7)
    let weights = tape.outputs.map { output in output.isFloat ? random.tensor(output.shape) : nil }
    var seeds: [String: Tensor] = [:]
    for (index, weight) in weights.enumerated() { if let weight { seeds[outputNames[index]] = weight } }
    let checked = gradientCase.checked ?? gradientCase.inputs.indices.filter { gradientCase.inputs[$0]?.isFloat == true }
    let analytic = try tape.gradients(seeds: seeds, targets: Set(checked.map { inputNames[$0] }))

    func loss(_ feeds: [String: Tensor]) throws -> Double {
      let outputs = try gradientCase.training ? interpreter.record(feeds, training: true).outputs : interpreter.run(feeds).outputs
      var total = 0.0
      for (output, weight) in zip(outputs, weights) {
        guard let weight else { continue }
        for (y, r) in zip(output.floats, weight.floats) { total += Double(y) * Double(r) }
      }
      return total
    }

    var problems: [String] = []
    for index in checked {
      let name = inputNames[index]
      guard let input = gradientCase.inputs[index], let gradient = analytic[name] else {
        problems.append("input \(index): no gradient returned")
        continue
      }
      if gradient.shape != input.shape {
        problems.append("input \(index): gradient shape \(gradient.shapeDescription), input \(input.shapeDescription)")
        continue
      }
      var picker = Values(seed: UInt64(index + 11))
      let elements = input.count <= maxElements ? Array(0..<input.count) : (0..<maxElements).map { _ in Int(picker.next() * Double(input.count)) }
      for element in elements {
        var plus = feeds, minus = feeds
        let h = gradientCase.step
        plus[name]!.floats[element] = Float(Double(input.floats[element]) + h)
        minus[name]!.floats[element] = Float(Double(input.floats[element]) - h)
        let actualStep = Double(plus[name]!.floats[element]) - Double(minus[name]!.floats[element])
        let numeric = (try loss(plus) - loss(minus)) / actualStep
        let value = Double(gradient.floats[element])
        if abs(value - numeric) > 2e-2 * max(1, abs(numeric)) {
          problems.append("input \(index) element \(element): analytic \(value), numeric \(numeric)")
          if problems.count > 5 { return problems }
        }
      }
    }
    return problems
  }
}
