import DistillCore

/// Finite-difference cases for Sources/DistillCore/Ops/Elementwise.swift.
let elementwiseCases: [GradientCase] = {
  var values = Values(seed: 1)
  var cases: [GradientCase] = []
  func attribute(_ name: String, _ value: Float) -> Attribute { Attribute(name: name, value: .float(value)) }
  let shape = [2, 3, 4]
  // Smooth everywhere (or away from the sampled kinks).
  for op in ["Atan", "Asinh", "Cos", "Cosh", "Elu", "Erf", "Exp", "HardSigmoid", "HardSwish", "Mish", "Neg",
             "Sigmoid", "Sin", "Sinh", "Softplus", "Softsign", "Tan", "Tanh", "Celu", "Identity", "Dropout"] {
    cases.append(GradientCase(op: op, inputs: [values.tensor(shape)]))
  }
  for op in ["Abs", "Relu", "LeakyRelu", "ThresholdedRelu", "Shrink", "Sign", "Selu"] {
    var attributes: [Attribute] = []
    if op == "ThresholdedRelu" { attributes = [attribute("alpha", 0.3)] }
    if op == "Shrink" { attributes = [attribute("lambd", 0.3), attribute("bias", 0.2)] }
    cases.append(GradientCase(op: op, attributes: attributes, inputs: [values.awayFromZero(shape, margin: 0.4)], step: 1e-3))
  }
  cases.append(GradientCase(op: "LeakyRelu", attributes: [attribute("alpha", 0.2)], inputs: [values.awayFromZero(shape)], step: 1e-3, note: "alpha 0.2"))
  for op in ["Log", "Sqrt", "Reciprocal"] { cases.append(GradientCase(op: op, inputs: [values.tensor(shape, 0.5, 2)])) }
  for op in ["Acos", "Asin", "Atanh"] { cases.append(GradientCase(op: op, inputs: [values.tensor(shape, -0.8, 0.8)])) }
  cases.append(GradientCase(op: "Acosh", inputs: [values.tensor(shape, 1.5, 3)]))
  // Piecewise constant: zero gradient away from the steps.
  for op in ["Ceil", "Floor"] { cases.append(GradientCase(op: op, inputs: [values.tensor(shape, 0.2, 0.8)], step: 1e-3)) }
  cases.append(GradientCase(op: "Round", inputs: [values.tensor(shape, 0.1, 0.4)], step: 1e-3))
  for op in ["IsNaN", "IsInf", "Not"] {
    let input = op == "Not" ? Tensor(shape: [4], ints: [0, 1, 1, 0], dtype: .bool) : values.tensor(shape)
    cases.append(GradientCase(op: op, inputs: [input]))
  }

  // Broadcasting binary ops: gradients are summed back to each input's shape by the tape.
  for op in ["Add", "Sub", "Mul"] {
    cases.append(GradientCase(op: op, inputs: [values.tensor(shape), values.tensor([3, 1])]))
    cases.append(GradientCase(op: op, inputs: [values.tensor([4]), values.tensor(shape)], note: "broadcast A"))
  }
  cases.append(GradientCase(op: "Div", inputs: [values.tensor(shape), values.tensor([3, 1], 0.5, 2)]))
  cases.append(GradientCase(op: "Pow", inputs: [values.tensor(shape, 0.5, 2), values.tensor([4], -1.5, 1.5)]))
  cases.append(GradientCase(op: "PRelu", inputs: [values.awayFromZero(shape), values.tensor([3, 1], 0.1, 0.5)], step: 1e-3))
  cases.append(
    GradientCase(
      op: "Mod", attributes: [Attribute(name: "fmod", value: .int(1))], inputs: [values.tensor(shape, 0.1, 0.9), values.tensor([4], 1.5, 2)],
      step: 1e-3))
  for op in ["Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual"] {
    cases.append(GradientCase(op: op, inputs: [values.tensor(shape), values.tensor(shape)]))
  }
  for op in ["And", "Or", "Xor"] {
    cases.append(GradientCase(op: op, inputs: [Tensor(shape: [2], ints: [0, 1], dtype: .bool), Tensor(shape: [2], ints: [1, 1], dtype: .bool)]))
  }
  for op in ["Max", "Min", "Sum", "Mean"] {
    cases.append(GradientCase(op: op, inputs: [values.tensor(shape), values.tensor([3, 1]), values.tensor([4])], step: 1e-3))
  }
  let condition = Tensor(shape: [3, 1], ints: [1, 0, 1], dtype: .bool)
  cases.append(GradientCase(op: "Where", inputs: [condition, values.tensor(shape), values.tensor([4])]))
  cases.append(
    GradientCase(
      op: "Clip", inputs: [values.awayFromZero(shape, margin: 0.6), Tensor(scalar: -0.5), Tensor(scalar: 0.5)], checked: [0], step: 1e-3))
  cases.append(
    GradientCase(
      op: "Clip", attributes: [attribute("min", -0.5), attribute("max", 0.5)], inputs: [values.awayFromZero(shape, margin: 0.6)], opset: 6,
      step: 1e-3, note: "opset 6 attributes"))
  cases.append(GradientCase(op: "Cast", attributes: [Attribute(name: "to", value: .int(11))], inputs: [values.tensor(shape)]))
  cases.append(GradientCase(op: "CastLike", inputs: [values.tensor(shape), Tensor(shape: [1], floats: [0], dtype: .double)], checked: [0]))
  return cases
}()
