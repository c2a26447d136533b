import DistillCore

/// Finite-difference cases for Sources/DistillCore/Ops/Indexing.swift.
let indexingCases: [GradientCase] = {
  var values = Values(seed: 3)
  var cases: [GradientCase] = []
  func ints(_ shape: [Int], _ values: [Int64]) -> Tensor { Tensor(shape: shape, ints: values) }
  func attribute(_ name: String, _ value: Int64) -> Attribute { Attribute(name: name, value: .int(value)) }
  func attribute(_ name: String, _ value: String) -> Attribute { Attribute(name: name, value: .string(Array(value.utf8))) }

  // Gathers: repeated indices add up, negative ones count from the end.
  cases.append(GradientCase(op: "Gather", inputs: [values.tensor([5, 3]), ints([2, 2], [0, 2, -1, 0])], note: "repeated, negative"))
  cases.append(GradientCase(op: "Gather", attributes: [attribute("axis", 1)], inputs: [values.tensor([2, 4, 3]), ints([3], [3, -4, 0])], note: "axis 1"))
  cases.append(GradientCase(op: "Gather", attributes: [attribute("axis", -1)], inputs: [values.tensor([2, 3]), ints([], [1])], note: "scalar index"))
  cases.append(
    GradientCase(
      op: "GatherElements", attributes: [attribute("axis", 1)],
      inputs: [values.tensor([3, 4]), ints([3, 4], [0, 0, 3, -1, 1, 2, 2, 2, -4, 3, 1, 0])], note: "repeated, negative"))
  cases.append(
    GradientCase(op: "GatherElements", inputs: [values.tensor([3, 4]), ints([2, 4], [2, 0, 1, 2, 0, 0, -1, 1])], note: "axis 0, smaller indices"))
  cases.append(GradientCase(op: "GatherND", inputs: [values.tensor([3, 4, 2]), ints([3, 2], [0, 1, 2, -1, 0, 1])], note: "repeated slices"))
  cases.append(
    GradientCase(
      op: "GatherND", attributes: [attribute("batch_dims", 1)], inputs: [values.tensor([2, 3, 4]), ints([2, 2, 1], [2, 2, 0, 1])],
      note: "batch_dims 1"))
  cases.append(GradientCase(op: "GatherND", inputs: [values.tensor([3, 4]), ints([2, 2], [0, 1, 2, 3])], note: "elements"))

  // Scatters: the data gets dy where nothing was written, the updates what they wrote.
  cases.append(GradientCase(op: "ScatterND", inputs: [values.tensor([4, 3]), ints([2, 1], [1, -1]), values.tensor([2, 3])], opset: 16))
  cases.append(
    GradientCase(
      op: "ScatterND", attributes: [attribute("reduction", "add")], inputs: [values.tensor([4, 3]), ints([3, 1], [1, 3, 1]), values.tensor([3, 3])],
      opset: 16, note: "add, repeated"))
  cases.append(
    GradientCase(
      op: "ScatterND", attributes: [attribute("reduction", "mul")], inputs: [values.tensor([4, 3]), ints([3, 1], [1, 3, 1]), values.tensor([3, 3])],
      opset: 16, note: "mul, repeated"))
  cases.append(
    GradientCase(
      op: "ScatterND", attributes: [attribute("reduction", "max")], inputs: [values.tensor([3, 4]), ints([3, 2], [0, 1, 2, 3, 0, 1]), values.tensor([3])],
      opset: 18, step: 1e-3, note: "max, repeated"))
  let rows = ints([2, 3], [1, 3, 0, 2, -1, 0])
  cases.append(GradientCase(op: "ScatterElements", attributes: [attribute("axis", 1)], inputs: [values.tensor([3, 4]), rows, values.tensor([2, 3])]))
  let repeated = ints([2, 3], [1, 1, 0, 2, -1, 2])
  for reduction in ["add", "mul"] {
    cases.append(
      GradientCase(
        op: "ScatterElements", attributes: [attribute("axis", 1), attribute("reduction", reduction)],
        inputs: [values.tensor([3, 4]), repeated, values.tensor([2, 3])], opset: 16, note: "\(reduction), repeated"))
  }
  cases.append(
    GradientCase(
      op: "ScatterElements", attributes: [attribute("axis", 1), attribute("reduction", "min")], inputs: [values.tensor([3, 4]), repeated, values.tensor([2, 3])],
      opset: 18, step: 1e-3, note: "min, repeated"))
  cases.append(GradientCase(op: "Scatter", inputs: [values.tensor([3, 3]), ints([2, 3], [1, 0, 2, 0, 2, 1]), values.tensor([2, 3])], opset: 10))

  // Running sums in every mode.
  for (exclusive, reverse): (Int64, Int64) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
    cases.append(
      GradientCase(
        op: "CumSum", attributes: [attribute("exclusive", exclusive), attribute("reverse", reverse)],
        inputs: [values.tensor([3, 4, 2]), ints([], [exclusive == reverse ? 1 : -1])], note: "exclusive \(exclusive), reverse \(reverse)"))
  }

  // TopK: the values' gradient goes to the picked elements; distinct values at least 2/count apart, no near ties.
  func distinct(_ shape: [Int]) -> Tensor {
    let count = shape.reduce(1, *)
    var order = Array(0..<count)
    for i in stride(from: count - 1, to: 0, by: -1) { order.swapAt(i, Int(values.next() * Double(i + 1))) }
    return Tensor(shape: shape, floats: order.map { -1 + 2 * (Float($0) + 0.5) / Float(count) })
  }
  cases.append(GradientCase(op: "TopK", inputs: [distinct([3, 5]), ints([1], [2])], outputCount: 2, step: 1e-3))
  cases.append(
    GradientCase(
      op: "TopK", attributes: [attribute("axis", 0), attribute("largest", 0)], inputs: [distinct([4, 2, 3]), ints([1], [3])], outputCount: 2,
      step: 1e-3, note: "smallest, axis 0"))
  cases.append(GradientCase(op: "TopK", attributes: [attribute("k", 2)], inputs: [distinct([2, 4])], opset: 1, outputCount: 2, step: 1e-3, note: "opset 1"))

  // Einsum: products, contractions, diagonals, broadcasting and implicit outputs.
  let equations: [(String, [[Int]])] = [
    ("ij,jk->ik", [[3, 4], [4, 2]]), ("bij,bjk->bik", [[2, 3, 4], [2, 4, 2]]), ("ii->i", [[4, 4]]), ("ij->", [[3, 4]]),
    ("...ij,...jk", [[2, 3, 4], [1, 4, 2]]), ("i,i", [[5], [5]]), ("ij,ij->ij", [[3, 4], [3, 4]]), ("ij,jk,kl->il", [[2, 3], [3, 4], [4, 2]]),
    ("iij->j", [[3, 3, 2]]), ("ij,kj->ikj", [[2, 1], [3, 4]]),
  ]
  for (equation, shapes) in equations {
    cases.append(
      GradientCase(
        op: "Einsum", attributes: [attribute("equation", equation)], inputs: shapes.map { values.tensor($0) }, opset: 12, note: equation))
  }

  // Big enough (over 2^16 elements) for the parallel path of Gather's backward (columns split).
  cases.append(GradientCase(op: "Gather", inputs: [values.tensor([40, 8192]), ints([9], [5, -1, 5, 0, 2, -40, 7, 39, 3])], note: "large rows, parallel columns"))
  return cases
}()
