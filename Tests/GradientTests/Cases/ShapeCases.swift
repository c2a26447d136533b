import DistillCore

/// Finite-difference cases for Sources/DistillCore/Ops/Shape.swift.
let shapeCases: [GradientCase] = {
  var values = Values(seed: 2)
  var cases: [GradientCase] = []
  func ints(_ values: [Int64]) -> Tensor { Tensor(shape: [values.count], ints: values) }
  func attribute(_ name: String, _ value: Int64) -> Attribute { Attribute(name: name, value: .int(value)) }
  func attribute(_ name: String, _ values: [Int64]) -> Attribute { Attribute(name: name, value: .ints(values)) }
  func attribute(_ name: String, _ value: String) -> Attribute { Attribute(name: name, value: .string(Array(value.utf8))) }

  // Same elements, another shape.
  cases.append(GradientCase(op: "Reshape", inputs: [values.tensor([2, 3, 4]), ints([4, -1])]))
  cases.append(GradientCase(op: "Reshape", inputs: [values.tensor([2, 3, 4]), ints([0, 12, 1])], note: "0 copies a dim"))
  cases.append(GradientCase(op: "Reshape", attributes: [attribute("shape", [6, 4])], inputs: [values.tensor([2, 3, 4])], opset: 1, note: "opset 1 attribute"))
  for axis: Int64 in [0, 2, -1] {
    cases.append(GradientCase(op: "Flatten", attributes: [attribute("axis", axis)], inputs: [values.tensor([2, 3, 2, 2])], note: "axis \(axis)"))
  }
  cases.append(GradientCase(op: "Squeeze", inputs: [values.tensor([2, 1, 3, 1]), ints([-1])]))
  cases.append(GradientCase(op: "Squeeze", inputs: [values.tensor([2, 1, 3, 1])], note: "all size-1 dims"))
  cases.append(GradientCase(op: "Squeeze", attributes: [attribute("axes", [1])], inputs: [values.tensor([2, 1, 3, 1])], opset: 11, note: "opset 11 attribute"))
  cases.append(GradientCase(op: "Unsqueeze", inputs: [values.tensor([2, 3]), ints([0, -1])]))
  cases.append(GradientCase(op: "Unsqueeze", attributes: [attribute("axes", [1])], inputs: [values.tensor([2, 3])], opset: 11, note: "opset 11 attribute"))

  // Permutations and rearrangements.
  cases.append(GradientCase(op: "Transpose", attributes: [attribute("perm", [2, 0, 1])], inputs: [values.tensor([2, 3, 4])]))
  cases.append(GradientCase(op: "Transpose", inputs: [values.tensor([2, 3, 4])], note: "default reversed"))
  cases.append(GradientCase(op: "Transpose", attributes: [attribute("perm", [0, 2, 1])], inputs: [values.tensor([2, 9, 10])], note: "tiled copy"))
  for mode in ["DCR", "CRD"] {
    cases.append(
      GradientCase(
        op: "DepthToSpace", attributes: [attribute("blocksize", 2), attribute("mode", mode)], inputs: [values.tensor([1, 8, 2, 3])], note: mode))
    cases.append(
      GradientCase(
        op: "SpaceToDepth", attributes: [attribute("blocksize", 2), attribute("mode", mode)], inputs: [values.tensor([1, 2, 4, 6])], note: mode))
  }

  // Joining and cutting.
  cases.append(GradientCase(op: "Concat", attributes: [attribute("axis", 1)], inputs: [values.tensor([2, 1, 4]), values.tensor([2, 3, 4]), values.tensor([2, 2, 4])]))
  cases.append(GradientCase(op: "Concat", attributes: [attribute("axis", -1)], inputs: [values.tensor([2, 3]), values.tensor([2, 2])], note: "axis -1"))
  cases.append(GradientCase(op: "Split", attributes: [attribute("axis", 1)], inputs: [values.tensor([2, 3, 4]), ints([1, 2])], outputCount: 2))
  cases.append(
    GradientCase(
      op: "Split", attributes: [attribute("axis", -1), attribute("num_outputs", 3)], inputs: [values.tensor([2, 7])], opset: 18, outputCount: 3,
      note: "num_outputs, uneven"))
  cases.append(
    GradientCase(
      op: "Split", attributes: [attribute("axis", 0), attribute("split", [3, 1])], inputs: [values.tensor([4, 3])], opset: 11, outputCount: 2,
      note: "opset 11 attribute"))
  cases.append(
    GradientCase(
      op: "Slice", inputs: [values.tensor([5, 4, 6]), ints([-1, 5, 1]), ints([-100, 0, 100]), ints([0, 2, 1]), ints([-2, -2, 1])],
      note: "negative steps, clamped bounds"))
  cases.append(GradientCase(op: "Slice", inputs: [values.tensor([6, 5]), ints([1, 0]), ints([6, 4]), ints([0, 1]), ints([2, 3])], note: "steps 2, 3"))
  cases.append(GradientCase(op: "Slice", inputs: [values.tensor([4, 5]), ints([1]), ints([-1])], note: "no axes"))
  cases.append(
    GradientCase(
      op: "Slice", attributes: [attribute("starts", [0, 1]), attribute("ends", [2, 1000]), attribute("axes", [0, -1])],
      inputs: [values.tensor([3, 4])], opset: 9, note: "opset 9 attributes"))

  // Copies that repeat elements: gradients add up.
  cases.append(GradientCase(op: "Expand", inputs: [values.tensor([3, 1]), ints([2, 3, 4])]))
  cases.append(GradientCase(op: "Expand", inputs: [values.tensor([1, 4]), ints([3, 1])], note: "both ways"))
  cases.append(GradientCase(op: "Tile", inputs: [values.tensor([2, 3, 2]), ints([2, 1, 3])]))
  cases.append(GradientCase(op: "Tile", inputs: [values.tensor([3]), ints([4])], note: "1-D"))

  // Pad in every mode.
  let x = values.tensor([2, 3, 4])
  cases.append(GradientCase(op: "Pad", inputs: [x, ints([0, 1, 2, 1, 0, 3]), Tensor(scalar: 0.5)], note: "constant with value"))
  cases.append(GradientCase(op: "Pad", inputs: [x, ints([0, -1, 2, 1, 1, -2])], note: "constant, negative pads crop"))
  for mode in ["reflect", "edge"] {
    cases.append(GradientCase(op: "Pad", attributes: [attribute("mode", mode)], inputs: [x, ints([1, 2, 3, 0, 1, 2])], note: mode))
  }
  cases.append(
    GradientCase(op: "Pad", attributes: [attribute("mode", "wrap")], inputs: [x, ints([0, 2, 5, 1, 1, 3])], opset: 19, note: "wrap, pad beyond size"))
  cases.append(
    GradientCase(
      op: "Pad", attributes: [attribute("mode", "reflect")], inputs: [x, ints([2, 5]), nil, ints([-1])], opset: 18, note: "reflect, axes, pad beyond size"))
  cases.append(
    GradientCase(
      op: "Pad", attributes: [attribute("pads", [0, 1, 1, 0, 2, 0]), Attribute(name: "value", value: .float(1.5))], inputs: [x], opset: 2,
      note: "opset 2 attributes"))

  // Big enough (over 2^16 elements) for the parallel paths of the backward kernels (slow in debug builds: two only).
  cases.append(
    GradientCase(
      op: "Slice", inputs: [values.tensor([2, 130, 260]), ints([1, -1]), ints([129, -1000]), ints([1, 2]), ints([1, -1])], note: "large, parallel"))
  cases.append(
    GradientCase(op: "Pad", attributes: [attribute("mode", "reflect")], inputs: [values.tensor([1, 16, 64, 64]), ints([0, 0, 2, 3, 0, 0, 1, 2])],
      note: "large, parallel"))
  return cases
}()
