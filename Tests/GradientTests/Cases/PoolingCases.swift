import DistillCore

/// Finite-difference cases for Sources/DistillCore/Ops/Pooling.swift.
let poolingCases: [GradientCase] = {
  var values = Values(seed: 9)
  var cases: [GradientCase] = []
  func ints(_ name: String, _ list: [Int]) -> Attribute { Attribute(name: name, value: .ints(list.map(Int64.init))) }
  func int(_ name: String, _ value: Int) -> Attribute { Attribute(name: name, value: .int(Int64(value))) }
  func string(_ name: String, _ value: String) -> Attribute { Attribute(name: name, value: .string(Array(value.utf8))) }
  /// Values 0.02 apart in random order: no two taps of a max window within the step of each other.
  func distinct(_ shape: [Int]) -> Tensor {
    let count = shape.reduce(1, *)
    var order = Array(0..<count)
    for i in stride(from: count - 1, to: 0, by: -1) { order.swapAt(i, Int(values.next() * Double(i + 1))) }
    return Tensor(shape: shape, floats: order.map { Float($0) * 0.02 - Float(count) * 0.01 })
  }

  // (shape, attributes, note): 1 to 3 spatial dims, pads, strides, dilations, ceil_mode, auto_pad.
  let layouts: [([Int], [Attribute], String)] = [
    ([2, 2, 7], [ints("kernel_shape", [3]), ints("strides", [2]), ints("pads", [1, 1])], "1D pads strides"),
    ([1, 2, 5, 6], [ints("kernel_shape", [2, 2])], "2D overlapping"),
    ([1, 2, 6, 5], [ints("kernel_shape", [3, 2]), ints("strides", [2, 1]), ints("pads", [1, 0, 1, 1])], "2D pads strides"),
    ([1, 1, 7, 7], [ints("kernel_shape", [3, 3]), ints("strides", [2, 2]), ints("pads", [1, 1, 1, 1]), int("ceil_mode", 1)], "2D ceil_mode"),
    ([1, 2, 7, 6], [ints("kernel_shape", [2, 3]), ints("dilations", [2, 2]), ints("pads", [0, 1, 1, 0])], "2D dilations"),
    ([1, 2, 5, 5], [ints("kernel_shape", [3, 3]), ints("strides", [2, 2]), string("auto_pad", "SAME_UPPER")], "2D SAME_UPPER"),
    ([1, 1, 4, 5, 4], [ints("kernel_shape", [2, 3, 2]), ints("strides", [2, 1, 2]), ints("pads", [0, 1, 1, 1, 0, 0]), int("ceil_mode", 1)], "3D"),
  ]
  for (shape, attributes, note) in layouts {
    cases.append(GradientCase(op: "MaxPool", attributes: attributes, inputs: [distinct(shape)], opset: 12, step: 1e-3, note: note))
    cases.append(GradientCase(op: "AveragePool", attributes: attributes, inputs: [values.tensor(shape)], opset: 19, note: note))
    cases.append(
      GradientCase(
        op: "AveragePool", attributes: attributes + [int("count_include_pad", 1)], inputs: [values.tensor(shape)], opset: 19,
        note: note + ", count_include_pad"))
    if !attributes.contains(where: { $0.name == "dilations" || $0.name == "ceil_mode" }) {
      cases.append(GradientCase(op: "LpPool", attributes: attributes, inputs: [values.awayFromZero(shape, margin: 0.2)], step: 1e-3, note: note))
    }
  }
  cases.append(
    GradientCase(
      op: "MaxPool", attributes: [ints("kernel_shape", [2, 2]), ints("strides", [2, 2])], inputs: [distinct([2, 3, 4, 4])], opset: 12,
      outputCount: 2, step: 1e-3, note: "with Indices"))
  cases.append(
    GradientCase(
      op: "LpPool", attributes: [ints("kernel_shape", [2, 2]), int("p", 1)], inputs: [values.awayFromZero([1, 2, 4, 3], margin: 0.2)],
      step: 1e-3, note: "p 1"))
  cases.append(
    GradientCase(
      op: "LpPool", attributes: [ints("kernel_shape", [3]), ints("pads", [1, 1]), int("p", 3)],
      inputs: [values.awayFromZero([2, 2, 5], margin: 0.2)], opset: 18, step: 1e-3, note: "p 3"))

  cases.append(GradientCase(op: "GlobalAveragePool", inputs: [values.tensor([2, 3, 4, 3])]))
  cases.append(GradientCase(op: "GlobalAveragePool", inputs: [values.tensor([2, 3, 5])], note: "1D"))
  cases.append(GradientCase(op: "GlobalMaxPool", inputs: [distinct([2, 3, 3, 4])], step: 1e-3))
  cases.append(GradientCase(op: "GlobalLpPool", inputs: [values.awayFromZero([2, 3, 3, 2], margin: 0.2)], step: 1e-3))
  cases.append(
    GradientCase(op: "GlobalLpPool", attributes: [int("p", 3)], inputs: [values.awayFromZero([2, 2, 5], margin: 0.2)], step: 1e-3, note: "p 3"))
  return cases
}()
