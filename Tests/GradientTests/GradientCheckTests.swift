import DistillCore
import XCTest

/// Every differentiable operator, checked against central finite differences. The registry is the
/// source of truth: an op that conforms to `DifferentiableOperator` without a case here fails.
final class GradientCheckTests: XCTestCase {
  static let cases = elementwiseCases + shapeCases + indexingCases + reductionCases + normalizationCases + poolingCases
    + resizeCases + convolutionCases

  /// The ops issue #4 requires gradients for (every activation and elementwise op included).
  static let required: [String] = [
    "Einsum", "BatchNormalization", "InstanceNormalization",
    "LayerNormalization", "Resize", "Upsample", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Softmax",
    "LogSoftmax", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "Concat", "Split",
    "Slice", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Expand", "Tile", "Pad", "Gather",
    "GatherElements", "GatherND", "Where", "Clip", "RoiAlign", "GridSample", "Add", "Sub", "Mul", "Div", "Pow", "Max",
    "Min", "Sum", "Mean", "PRelu", "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Relu", "LeakyRelu", "Elu",
    "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Softplus", "Mish", "Erf", "Sin", "Cos", "Identity", "Dropout",
    "Cast",
  ]

  /// Required ops whose backward is not written yet; the list may only shrink (an op listed here
  /// that has a backward fails the test, so finished ops are removed).
  static let pending: Set<String> = []

  func differentiable(_ op: String) -> Bool {
    OperatorRegistry.standard.lookup(domain: "", op: op) is any DifferentiableOperator.Type
  }

  func testEveryRequiredOpIsDifferentiable() {
    let missing = Self.required.filter { !differentiable($0) && !Self.pending.contains($0) }
    XCTAssert(missing.isEmpty, "no backward for: \(missing.joined(separator: ", "))")
    let done = Self.pending.filter(differentiable)
    XCTAssert(done.isEmpty, "remove from `pending`, they have a backward now: \(done.sorted().joined(separator: ", "))")
  }

  func testEveryDifferentiableOpHasAFiniteDifferenceCase() {
    let covered = Set(Self.cases.map(\.op))
    let ops = OperatorRegistry.standard.names.map { String($0.dropFirst(2)) }.filter(differentiable)
    let missing = ops.filter { !covered.contains($0) }
    XCTAssert(missing.isEmpty, "differentiable ops without a gradient case: \(missing.joined(separator: ", "))")
  }

  func testFiniteDifferences() throws {
    var failures: [String] = []
    for gradientCase in Self.cases {
      let label = "\(gradientCase.op)\(gradientCase.note.isEmpty ? "" : " (\(gradientCase.note))")"
      do {
        let problems = try GradientCheck.run(gradientCase)
        failures += problems.map { "\(label): \($0)" }
      } catch {
        failures.append("\(label): \(error)")
      }
    }
    print("gradient checks: \(Self.cases.count) cases, \(failures.count) problems")
    XCTAssert(failures.isEmpty, failures.joined(separator: "\n"))
  }
}
