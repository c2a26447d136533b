import DistillCore

/// Finite-difference cases for Sources/DistillCore/Ops/Reduction.swift.
let reductionCases: [GradientCase] = {
  var values = Values(seed: 3)
  var cases: [GradientCase] = []
  func ints(_ name: String, _ list: [Int]) -> Attribute { Attribute(name: name, value: .ints(list.map(Int64.init))) }
  func int(_ name: String, _ value: Int) -> Attribute { Attribute(name: name, value: .int(Int64(value))) }
  func axesInput(_ axes: [Int]) -> Tensor { Tensor(shape: [axes.count], ints: axes.map(Int64.init)) }
  let ops = [
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceSumSquare",
  ]
  /// Inputs where each op is smooth: positive for the log-sums, away from 0 for L1 and L2.
  func input(_ op: String, _ shape: [Int]) -> Tensor {
    switch op {
    case "ReduceLogSum", "ReduceProd": return values.tensor(shape, 0.5, 1.5)
    case "ReduceL1", "ReduceL2": return values.awayFromZero(shape, margin: 0.2)
    default: return values.tensor(shape)
    }
  }
  // (shape, axes, keepdims): negative axes, several axes, every axis.
  let layouts: [([Int], [Int]?, Int)] = [([2, 3, 4], [1], 1), ([3, 2, 4], [-1, 0], 0), ([2, 3, 2, 2], nil, 1), ([4, 5], [0], 0)]
  for op in ops {
    let step = ["ReduceMax", "ReduceMin", "ReduceL1"].contains(op) ? 1e-3 : 1e-2
    for (shape, axes, keepDims) in layouts {
      var attributes = [int("keepdims", keepDims)]
      if let axes { attributes.append(ints("axes", axes)) }
      // Axes as an attribute (ReduceSum until opset 13, the others until 18).
      cases.append(
        GradientCase(
          op: op, attributes: attributes, inputs: [input(op, shape)], opset: op == "ReduceSum" ? 11 : 13, step: step,
          note: "shape \(shape) axes \(axes.map { "\($0)" } ?? "all") keepdims \(keepDims)"))
    }
    // Axes as an input (ReduceSum from opset 13, the others from 18), and noop_with_empty_axes.
    let opset = op == "ReduceSum" ? 13 : 18
    cases.append(
      GradientCase(
        op: op, attributes: [int("keepdims", 0)], inputs: [input(op, [3, 4, 2]), axesInput([-2])], checked: [0], opset: opset,
        step: step, note: "axes input"))
    cases.append(
      GradientCase(
        op: op, attributes: [int("noop_with_empty_axes", 1)], inputs: [input(op, [3, 4]), axesInput([])], checked: [0],
        opset: opset, step: step, note: "noop_with_empty_axes"))
    cases.append(
      GradientCase(op: op, inputs: [input(op, [3, 4]), axesInput([])], checked: [0], opset: opset, step: step, note: "empty axes input: all"))
  }
  // Ties share the gradient evenly, which is what central differences see at a tie of two.
  let tied = Tensor(shape: [2, 4], floats: [0.5, 0.9, 0.9, -0.3, -0.7, 0.2, -0.7, 0.1])
  cases.append(GradientCase(op: "ReduceMax", attributes: [ints("axes", [1])], inputs: [tied], step: 1e-3, note: "ties"))
  cases.append(GradientCase(op: "ReduceMin", attributes: [ints("axes", [1])], inputs: [tied], step: 1e-3, note: "ties"))
  // Zeros in ReduceProd: one zero in a slice (only it gets a gradient), two zeros (none does).
  let zeros = Tensor(shape: [3, 3], floats: [0.7, 0, 1.3, 0, -0.8, 0, 1.1, 0.9, -1.2])
  cases.append(GradientCase(op: "ReduceProd", attributes: [ints("axes", [1])], inputs: [zeros], note: "zeros in rows"))
  cases.append(GradientCase(op: "ReduceProd", attributes: [ints("axes", [0]), int("keepdims", 0)], inputs: [zeros], note: "zeros in columns"))

  // Softmax family: the 2D coercion before opset 13 (slices from axis to the end), then one axis.
  for op in ["Softmax", "LogSoftmax"] {
    cases.append(GradientCase(op: op, inputs: [values.tensor([3, 4, 5], -2, 2)], opset: 11, note: "opset 11 default axis 1"))
    cases.append(GradientCase(op: op, attributes: [int("axis", 2)], inputs: [values.tensor([2, 3, 5], -2, 2)], opset: 11, note: "opset 11 axis 2"))
    cases.append(GradientCase(op: op, attributes: [int("axis", -2)], inputs: [values.tensor([2, 3, 4], -2, 2)], opset: 11, note: "opset 11 axis -2"))
    cases.append(GradientCase(op: op, inputs: [values.tensor([2, 3, 6], -2, 2)], note: "last axis"))
    cases.append(GradientCase(op: op, attributes: [int("axis", 1)], inputs: [values.tensor([2, 4, 3, 2], -2, 2)], note: "axis 1 strided"))
    cases.append(
      GradientCase(op: op, attributes: [int("axis", -2)], inputs: [values.tensor([2, 5, 130], -2, 2)], note: "axis -2, wide columns"))
    cases.append(GradientCase(op: op, attributes: [int("axis", 0)], inputs: [values.tensor([7], -2, 2)], note: "1D"))
  }
  // Hardmax is piecewise constant: no gradient flows (zeros away from ties).
  cases.append(GradientCase(op: "Hardmax", inputs: [values.tensor([3, 5])], step: 1e-3))
  return cases
}()
