import DistillCore

/// Finite-difference cases for Sources/DistillCore/Ops/Convolution.swift.
let convolutionCases: [GradientCase] = {
  var values = Values(seed: 3)
  func ints(_ name: String, _ list: [Int]) -> Attribute { Attribute(name: name, value: .ints(list.map(Int64.init))) }
  func int(_ name: String, _ value: Int) -> Attribute { Attribute(name: name, value: .int(Int64(value))) }
  var cases: [GradientCase] = []
  cases.append(GradientCase(op: "Conv", attributes: [ints("pads", [1, 1, 1, 1])], inputs: [values.tensor([2, 3, 5, 6]), values.tensor([4, 3, 3, 3]), values.tensor([4])], note: "3x3 pad 1"))
  cases.append(GradientCase(op: "Conv", attributes: [ints("strides", [2, 2]), ints("pads", [1, 0, 0, 1])], inputs: [values.tensor([1, 2, 7, 6]), values.tensor([3, 2, 3, 2])], note: "stride 2, asymmetric pads"))
  cases.append(GradientCase(op: "Conv", attributes: [ints("dilations", [2, 1]), Attribute(name: "auto_pad", value: .string(Array("SAME_UPPER".utf8)))], inputs: [values.tensor([1, 2, 6, 5]), values.tensor([2, 2, 3, 3]), values.tensor([2])], note: "dilation, SAME_UPPER"))
  cases.append(GradientCase(op: "Conv", attributes: [int("group", 2)], inputs: [values.tensor([2, 4, 4, 4]), values.tensor([6, 2, 1, 1]), values.tensor([6])], note: "1x1 grouped"))
  cases.append(GradientCase(op: "Conv", attributes: [int("group", 3), ints("pads", [1, 1, 1, 1]), ints("strides", [2, 1])], inputs: [values.tensor([2, 3, 6, 5]), values.tensor([6, 1, 3, 3]), values.tensor([6])], note: "depthwise x2, stride (2,1)"))
  cases.append(GradientCase(op: "Conv", attributes: [ints("pads", [1, 2])], inputs: [values.tensor([2, 2, 7]), values.tensor([3, 2, 3])], note: "1-D"))
  cases.append(GradientCase(op: "Conv", attributes: [ints("strides", [1, 2, 1])], inputs: [values.tensor([1, 2, 3, 4, 3]), values.tensor([2, 2, 2, 2, 2])], note: "3-D"))
  cases.append(GradientCase(op: "ConvTranspose", attributes: [ints("strides", [2, 2]), ints("pads", [1, 0, 0, 1])], inputs: [values.tensor([2, 3, 3, 4]), values.tensor([3, 2, 3, 3]), values.tensor([2])], note: "stride 2"))
  cases.append(GradientCase(op: "ConvTranspose", attributes: [int("group", 2), ints("output_padding", [1, 0]), ints("strides", [2, 1])], inputs: [values.tensor([1, 4, 3, 3]), values.tensor([4, 1, 2, 2])], note: "grouped, output_padding"))
  cases.append(GradientCase(op: "ConvTranspose", attributes: [ints("dilations", [2])], inputs: [values.tensor([1, 2, 5]), values.tensor([2, 3, 3])], note: "1-D dilated"))
  // Convolutions fused with a residual Add and an activation (what `Fusion` builds) differentiate too.
  let residual = Attribute(name: "distill.residual", value: .int(1))
  func activation(_ spec: [Float]) -> Attribute { Attribute(name: "distill.activation", value: .floats(spec)) }
  cases.append(
    GradientCase(
      op: "Conv", attributes: [ints("pads", [1, 1, 1, 1]), residual, activation([0])],
      inputs: [values.tensor([2, 2, 4, 4]), values.tensor([3, 2, 3, 3]), values.tensor([3]), values.tensor([2, 3, 4, 4])], step: 1e-3,
      note: "fused residual + Relu"))
  cases.append(
    GradientCase(
      op: "Conv", attributes: [residual, activation([1, 0.2])],
      inputs: [values.tensor([1, 3, 3, 3]), values.tensor([2, 3, 1, 1]), nil, values.tensor([1, 2, 1, 1])], step: 1e-3,
      note: "fused broadcast residual + LeakyRelu"))
  cases.append(
    GradientCase(
      op: "Conv", attributes: [activation([2, -0.3, 0.4])], inputs: [values.tensor([1, 2, 4, 4]), values.tensor([2, 2, 2, 2])], step: 1e-3,
      note: "fused Clip"))
  cases.append(GradientCase(op: "Gemm", inputs: [values.tensor([3, 4]), values.tensor([4, 5]), values.tensor([5])]))
  cases.append(
    GradientCase(
      op: "Gemm", attributes: [int("transA", 1), int("transB", 1), Attribute(name: "alpha", value: .float(0.7)), Attribute(name: "beta", value: .float(1.3))],
      inputs: [values.tensor([4, 3]), values.tensor([5, 4]), values.tensor([3, 5])], note: "transposed, alpha, beta"))
  cases.append(GradientCase(op: "Gemm", attributes: [int("transB", 1)], inputs: [values.tensor([2, 3]), values.tensor([4, 3])], note: "no C"))
  cases.append(GradientCase(op: "MatMul", inputs: [values.tensor([2, 3, 4]), values.tensor([4, 5])]))
  cases.append(GradientCase(op: "MatMul", inputs: [values.tensor([4]), values.tensor([2, 4, 3])], note: "1-D A, batched B"))
  cases.append(GradientCase(op: "MatMul", inputs: [values.tensor([2, 1, 3, 4]), values.tensor([3, 4, 2])], note: "broadcast batches"))
  cases.append(GradientCase(op: "MatMul", inputs: [values.tensor([3, 4]), values.tensor([4])], note: "1-D B"))
  return cases
}()
