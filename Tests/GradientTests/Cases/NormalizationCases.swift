import DistillCore

/// Finite-difference cases for Sources/DistillCore/Ops/Normalization.swift.
let normalizationCases: [GradientCase] = {
  var values = Values(seed: 5)
  var cases: [GradientCase] = []
  func int(_ name: String, _ value: Int) -> Attribute { Attribute(name: name, value: .int(Int64(value))) }
  func float(_ name: String, _ value: Float) -> Attribute { Attribute(name: name, value: .float(value)) }
  func ints(_ name: String, _ list: [Int]) -> Attribute { Attribute(name: name, value: .ints(list.map(Int64.init))) }
  /// X, scale, B, running mean, running variance for `groups` parameters.
  func batchNorm(_ shape: [Int], groups: [Int]) -> [Tensor?] {
    [
      values.tensor(shape, -2, 2), values.tensor(groups, 0.5, 1.5), values.tensor(groups), values.tensor(groups, -0.5, 0.5),
      values.tensor(groups, 0.5, 1.5),
    ]
  }

  // BatchNormalization in inference: a per-channel affine map (input_mean and input_var are state,
  // they get no gradient).
  cases.append(GradientCase(op: "BatchNormalization", inputs: batchNorm([3, 4, 5], groups: [4]), checked: [0, 1, 2], note: "inference: running statistics"))
  // BatchNormalization with batch statistics, as the interpreter runs it in training (like
  // PyTorch's train()): the gradient flows through the batch mean and variance.
  cases.append(GradientCase(op: "BatchNormalization", inputs: batchNorm([3, 4, 5], groups: [4]), checked: [0, 1, 2], training: true, note: "training"))
  cases.append(
    GradientCase(
      op: "BatchNormalization", attributes: [float("epsilon", 1e-3), float("momentum", 0.8)], inputs: batchNorm([2, 3, 3, 2], groups: [3]),
      checked: [0, 1, 2], training: true, note: "training 2D, epsilon, momentum"))
  cases.append(
    GradientCase(op: "BatchNormalization", inputs: batchNorm([6, 3], groups: [3]), checked: [0, 1, 2], training: true, note: "training N x C"))
  // training_mode = 1: also the running statistics outputs, which depend on X.
  cases.append(
    GradientCase(
      op: "BatchNormalization", attributes: [int("training_mode", 1), float("momentum", 0.7)], inputs: batchNorm([2, 3, 4], groups: [3]),
      checked: [0, 1, 2], opset: 15, outputCount: 3, note: "training_mode outputs"))
  // Before opset 14 training is asked for by naming more outputs (running and saved statistics).
  cases.append(
    GradientCase(
      op: "BatchNormalization", inputs: batchNorm([4, 2, 3], groups: [2]), checked: [0, 1, 2], opset: 9, outputCount: 5,
      note: "opset 9 five outputs"))
  // Opset 7 with spatial = 0: one parameter per element of a sample.
  cases.append(
    GradientCase(
      op: "BatchNormalization", attributes: [int("spatial", 0)], inputs: batchNorm([4, 2, 3], groups: [2, 3]), checked: [0, 1, 2],
      opset: 7, training: true, note: "opset 7 spatial 0, training"))

  cases.append(GradientCase(op: "InstanceNormalization", inputs: [values.tensor([2, 3, 5], -2, 2), values.tensor([3], 0.5, 1.5), values.tensor([3])]))
  cases.append(
    GradientCase(
      op: "InstanceNormalization", attributes: [float("epsilon", 1e-2)], inputs: [values.tensor([2, 2, 3, 4], -2, 2), values.tensor([2]), values.tensor([2])],
      note: "2D, epsilon"))

  // The GroupNorm fusion makes of PyTorch's export: X, group scale and bias [G], channel scale
  // and bias ([C, 1, 1] as exported).
  for relu in [false, true] {
    cases.append(
      GradientCase(
        op: "GroupNormalization", domain: "distill",
        attributes: [float("epsilon", 1e-3)] + (relu ? [Attribute(name: "distill.activation", value: .floats([0]))] : []),
        inputs: [
          values.tensor([2, 6, 3, 2], -2, 2), values.tensor([3], 0.5, 1.5), values.tensor([3]), values.tensor([6, 1, 1], 0.5, 1.5),
          values.tensor([6, 1, 1]),
        ], note: relu ? "fused GroupNorm with Relu" : "fused GroupNorm"))
  }

  cases.append(GradientCase(op: "LayerNormalization", inputs: [values.tensor([3, 6], -2, 2), values.tensor([6], 0.5, 1.5), values.tensor([6])]))
  cases.append(
    GradientCase(
      op: "LayerNormalization", attributes: [int("axis", 1), float("epsilon", 1e-3)],
      inputs: [values.tensor([2, 3, 4], -2, 2), values.tensor([4], 0.5, 1.5), values.tensor([3, 4])], note: "axis 1, broadcast Scale"))
  cases.append(
    GradientCase(
      op: "LayerNormalization", attributes: [int("axis", -2)], inputs: [values.tensor([2, 3, 5], -2, 2), values.tensor([3, 5], 0.5, 1.5)],
      note: "axis -2, no B"))

  cases.append(GradientCase(op: "LpNormalization", inputs: [values.tensor([3, 5])], note: "p 2"))
  cases.append(GradientCase(op: "LpNormalization", attributes: [int("axis", 1)], inputs: [values.tensor([2, 4, 3])], note: "p 2 axis 1"))
  cases.append(
    GradientCase(
      op: "LpNormalization", attributes: [int("p", 1), int("axis", 0)], inputs: [values.awayFromZero([4, 3], margin: 0.2)], step: 1e-3,
      note: "p 1 axis 0"))

  cases.append(GradientCase(op: "MeanVarianceNormalization", inputs: [values.tensor([2, 3, 3, 2], -2, 2)], step: 1e-3))
  cases.append(
    GradientCase(op: "MeanVarianceNormalization", attributes: [ints("axes", [1, -1])], inputs: [values.tensor([2, 4, 3], -2, 2)], step: 1e-3, note: "axes 1, -1"))
  return cases
}()
