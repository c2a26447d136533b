/// How many inputs and outputs a default-domain (`ai.onnx`) operator may have, taken over every
/// opset version from 1 to 17; trailing optional values count even when their names are empty.
public struct OpArity: Sendable {
  public let inputs: ClosedRange<Int>
  public let outputs: ClosedRange<Int>

  public static let variadic = Int.max

  public static func describe(_ range: ClosedRange<Int>) -> String {
    if range.upperBound == variadic { return "at least \(range.lowerBound)" }
    return range.lowerBound == range.upperBound ? "\(range.lowerBound)" : "\(range.lowerBound) to \(range.upperBound)"
  }
}

public enum OpSchema {
  private static let many = OpArity.variadic

  private static func arity(_ inputs: ClosedRange<Int>, _ outputs: ClosedRange<Int> = 1...1) -> OpArity {
    OpArity(inputs: inputs, outputs: outputs)
  }

  /// Arity of the default-domain operator `opType`, or nil if this build does not know it.
  public static func arity(of opType: String, domain: String) -> OpArity? {
    guard Graph.canonicalDomain(domain) == "" else { return nil }
    return arities[opType]
  }

  private static let unary = [
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Ceil", "Cos", "Cosh", "Elu", "Erf", "Exp", "Floor",
    "HardSigmoid", "HardSwish", "Identity", "IsInf", "IsNaN", "LeakyRelu", "Log", "Mish", "Neg", "NonZero", "Not",
    "Reciprocal", "Relu", "Round", "Selu", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Softplus", "Softsign", "Sqrt",
    "Tan", "Tanh", "ThresholdedRelu", "Celu", "Gelu", "Cast", "Flatten", "Transpose", "Shape", "Size", "Softmax",
    "LogSoftmax", "Hardmax", "ArgMax", "ArgMin", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "LpPool",
    "AveragePool", "DepthToSpace", "SpaceToDepth", "LRN", "LpNormalization", "ConstantOfShape", "EyeLike",
    "MeanVarianceNormalization", "RandomNormalLike", "RandomUniformLike", "Det", "BitwiseNot", "CastLike",
  ]
  private static let binary = [
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "And", "Or", "Xor", "Equal", "Greater", "GreaterOrEqual", "Less",
    "LessOrEqual", "PRelu", "MatMul", "Expand", "Gather", "GatherElements", "GatherND", "Reshape", "Tile", "CumSum",
    "GridSample", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "MaxRoiPool", "Compress",
  ]
  private static let variadicInputs = ["Concat", "Max", "Min", "Mean", "Sum", "Einsum"]
  private static let reductions = [
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd",
    "ReduceSum", "ReduceSumSquare", "Squeeze", "Unsqueeze", "Upsample",
  ]

  private static let arities: [String: OpArity] = {
    var table: [String: OpArity] = [:]
    for op in unary { table[op] = arity(1...1) }
    for op in binary { table[op] = arity(2...2) }
    for op in variadicInputs { table[op] = arity(1...many) }
    for op in reductions { table[op] = arity(1...2) }
    table["Constant"] = arity(0...0)
    table["CastLike"] = arity(2...2)
    table["BatchNormalization"] = arity(5...5, 1...5)
    table["InstanceNormalization"] = arity(3...3)
    table["LayerNormalization"] = arity(2...3, 1...3)
    table["GroupNormalization"] = arity(3...3)
    table["Clip"] = arity(1...3)
    table["Conv"] = arity(2...3)
    table["ConvTranspose"] = arity(2...3)
    table["ConvInteger"] = arity(2...4)
    table["Gemm"] = arity(2...3)
    table["Dropout"] = arity(1...3, 1...2)
    table["MaxPool"] = arity(1...1, 1...2)
    table["If"] = arity(1...1, 1...many)
    table["Loop"] = arity(2...many, 1...many)
    table["Scan"] = arity(1...many, 1...many)
    table["NonMaxSuppression"] = arity(2...5)
    table["Pad"] = arity(1...4)
    table["Range"] = arity(3...3)
    table["Resize"] = arity(1...4)
    table["RoiAlign"] = arity(3...3)
    table["ScatterND"] = arity(3...3)
    table["ScatterElements"] = arity(3...3)
    table["Scatter"] = arity(3...3)
    table["Where"] = arity(3...3)
    table["Slice"] = arity(1...5)
    table["Split"] = arity(1...2, 1...many)
    table["TopK"] = arity(1...2, 2...2)
    table["OneHot"] = arity(3...3)
    table["Trilu"] = arity(1...2)
    table["Unique"] = arity(1...1, 1...4)
    table["QuantizeLinear"] = arity(2...3)
    table["DequantizeLinear"] = arity(2...3)
    table["RandomNormal"] = arity(0...0)
    table["RandomUniform"] = arity(0...0)
    return table
  }()
}
