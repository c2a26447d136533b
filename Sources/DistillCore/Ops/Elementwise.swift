import Foundation

// Elementwise operators: unary maps, broadcasting binary arithmetic and comparisons, variadic
// Max/Min/Sum/Mean, Where, Clip, Cast and the identity-like ops.
// Specs: https://onnx.ai/onnx/operators/ (one page per operator).

let elementwiseOperators: [(String, any Operator.Type)] = [
  ("Abs", Unary.self), ("Acos", Unary.self), ("Acosh", Unary.self), ("Add", Binary.self), ("And", Binary.self),
  ("Asin", Unary.self), ("Asinh", Unary.self), ("Atan", Unary.self), ("Atanh", Unary.self), ("Cast", Cast.self),
  ("CastLike", Cast.self), ("Ceil", Unary.self), ("Celu", Unary.self), ("Clip", Clip.self), ("Cos", Unary.self),
  ("Cosh", Unary.self), ("Div", Binary.self), ("Dropout", Dropout.self), ("Elu", Unary.self), ("Equal", Binary.self),
  ("Erf", Unary.self), ("Exp", Unary.self), ("Floor", Unary.self), ("Greater", Binary.self),
  ("GreaterOrEqual", Binary.self), ("HardSigmoid", Unary.self), ("HardSwish", Unary.self),
  ("Identity", Identity.self), ("IsInf", Unary.self), ("IsNaN", Unary.self), ("LeakyRelu", Unary.self),
  ("Less", Binary.self), ("LessOrEqual", Binary.self), ("Log", Unary.self), ("Max", Variadic.self),
  ("Mean", Variadic.self), ("Min", Variadic.self), ("Mish", Unary.self), ("Mod", Binary.self), ("Mul", Binary.self),
  ("Neg", Unary.self), ("Not", Unary.self), ("Or", Binary.self), ("PRelu", Binary.self), ("Pow", Binary.self),
  ("Reciprocal", Unary.self), ("Relu", Unary.self), ("Round", Unary.self), ("Selu", Unary.self),
  ("Shrink", Unary.self), ("Sigmoid", Unary.self), ("Sign", Unary.self), ("Sin", Unary.self), ("Sinh", Unary.self),
  ("Softplus", Unary.self), ("Softsign", Unary.self), ("Sqrt", Unary.self), ("Sub", Binary.self), ("Sum", Variadic.self),
  ("Tan", Unary.self), ("Tanh", Unary.self), ("ThresholdedRelu", Unary.self), ("Where", Where.self), ("Xor", Binary.self),
]

extension Tensor {
  /// Rounds floats to the precision of a float16/bfloat16 dtype and wraps integers to the range
  /// of a narrow integer dtype, so results match a runtime computing in that type.
  public func normalized() -> Tensor {
    var result = self
    switch dtype {
    case .float16: result.floats = floats.map { Float(Float16($0)) }
    case .bfloat16: result.floats = floats.map { Float(bitPattern: UInt32(Tensor.bfloat16Bits($0)) << 16) }
    case .int32: result.ints = ints.map { Int64(Int32(truncatingIfNeeded: $0)) }
    case .int16: result.ints = ints.map { Int64(Int16(truncatingIfNeeded: $0)) }
    case .int8: result.ints = ints.map { Int64(Int8(truncatingIfNeeded: $0)) }
    case .uint32: result.ints = ints.map { Int64(UInt32(truncatingIfNeeded: $0)) }
    case .uint16: result.ints = ints.map { Int64(UInt16(truncatingIfNeeded: $0)) }
    case .uint8: result.ints = ints.map { Int64(UInt8(truncatingIfNeeded: $0)) }
    default: break
    }
    return result
  }
}

/// A float function of one value (with its attributes), or an integer one where the spec allows.
struct Unary: ChannelsLastOperator {
  let op: String
  let alpha: Float
  let beta: Float
  let gamma: Float
  let detectNegative: Bool
  let detectPositive: Bool

  init(_ node: Node, _ setup: OperatorSetup) throws {
    op = node.opType
    let defaultAlpha: Float
    switch op {
    case "LeakyRelu": defaultAlpha = 0.01
    case "HardSigmoid": defaultAlpha = 0.2
    case "Selu": defaultAlpha = 1.67326319217681884765625
    default: defaultAlpha = 1
    }
    alpha = node.floatAttribute("alpha") ?? defaultAlpha
    switch op {
    case "HardSigmoid": beta = node.floatAttribute("beta") ?? 0.5
    case "Softplus", "Softsign": beta = 1
    case "Shrink": beta = node.floatAttribute("bias") ?? 0
    default: beta = node.floatAttribute("beta") ?? 0
    }
    gamma = op == "Shrink" ? (node.floatAttribute("lambd") ?? 0.5) : (node.floatAttribute("gamma") ?? 1.05070102214813232421875)
    detectNegative = (node.intAttribute("detect_negative") ?? 1) != 0
    detectPositive = (node.intAttribute("detect_positive") ?? 1) != 0
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    var x = try context.input(inputs, 0, "X")
    // Float results keep a channels-last input's order; boolean ones are planar.
    if x.channelsLast && (op == "IsNaN" || op == "IsInf" || !context.mayWriteChannelsLast) { x = x.planar() }
    if op == "IsNaN" || op == "IsInf" {
      let flags = x.asFloats.map { value -> Int64 in
        if op == "IsNaN" { return value.isNaN ? 1 : 0 }
        guard value.isInfinite else { return 0 }
        return (value > 0 && detectPositive) || (value < 0 && detectNegative) ? 1 : 0
      }
      return [Tensor(shape: x.shape, ints: flags, dtype: .bool)]
    }
    if !x.isFloat {
      let ints: [Int64]
      switch op {
      case "Abs": ints = x.ints.map { $0 == .min ? $0 : abs($0) }
      case "Neg": ints = x.ints.map { 0 &- $0 }
      case "Sign": ints = x.ints.map { $0.signum() }
      case "Relu": ints = x.ints.map { max($0, 0) }
      case "Not": ints = x.ints.map { $0 == 0 ? 1 : 0 }
      default: throw context.error("input X is \(x.dtype); \(op) needs a floating-point tensor")
      }
      return [Tensor(shape: x.shape, ints: ints, dtype: x.dtype).normalized()]
    }
    let f = function(), relu = op == "Relu"
    let count = x.count
    let values = [Float](unsafeUninitializedCapacity: count) { out, initialized in
      x.floats.withUnsafeBufferPointer { source in
        let (s, d) = (source.baseAddress!, out.baseAddress!)
        Parallel.forEachRange(count, work: count) { range in
          if relu {
            for i in range { d[i] = max(s[i], 0) }
          } else {
            for i in range { d[i] = f(s[i]) }
          }
        }
      }
      initialized = count
    }
    var y = Tensor(shape: x.shape, floats: values, dtype: x.dtype).normalized()
    y.channelsLast = x.channelsLast
    return [y]
  }

  /// The scalar function this op applies.
  func function() -> (Float) -> Float {
    let alpha = alpha, beta = beta, gamma = gamma
    switch op {
    case "Abs": return { abs($0) }
    case "Acos": return { acos($0) }
    case "Acosh": return { acosh($0) }
    case "Asin": return { asin($0) }
    case "Asinh": return { asinh($0) }
    case "Atan": return { atan($0) }
    case "Atanh": return { atanh($0) }
    case "Ceil": return { $0.rounded(.up) }
    case "Celu": return { max(0, $0) + min(0, alpha * (exp($0 / alpha) - 1)) }
    case "Cos": return { cos($0) }
    case "Cosh": return { cosh($0) }
    case "Elu": return { $0 >= 0 ? $0 : alpha * (exp($0) - 1) }
    case "Erf": return { erf($0) }
    case "Exp": return { exp($0) }
    case "Floor": return { $0.rounded(.down) }
    case "HardSigmoid": return { max(0, min(1, alpha * $0 + beta)) }
    case "HardSwish": return { $0 * max(0, min(1, $0 / 6 + 0.5)) }
    case "LeakyRelu": return { $0 >= 0 ? $0 : alpha * $0 }
    case "Log": return { log($0) }
    case "Mish": return { $0 * tanh(Unary.softplus($0)) }
    case "Neg": return { -$0 }
    case "Reciprocal": return { 1 / $0 }
    case "Relu": return { max($0, 0) }
    case "Round": return { $0.rounded(.toNearestOrEven) }
    case "Selu": return { $0 > 0 ? gamma * $0 : gamma * alpha * (exp($0) - 1) }
    case "Shrink": return { $0 < -gamma ? $0 + beta : ($0 > gamma ? $0 - beta : 0) }
    case "Sigmoid": return { Unary.sigmoid($0) }
    case "Sign": return { $0 > 0 ? 1 : ($0 < 0 ? -1 : 0) }
    case "Sin": return { sin($0) }
    case "Sinh": return { sinh($0) }
    case "Softplus": return { Unary.softplus($0) }
    case "Softsign": return { $0 / (1 + abs($0)) }
    case "Sqrt": return { sqrt($0) }
    case "Tan": return { tan($0) }
    case "Tanh": return { tanh($0) }
    case "ThresholdedRelu": return { $0 > alpha ? $0 : 0 }
    case "Not": return { $0 == 0 ? 1 : 0 }
    default: return { $0 }
    }
  }

  @inline(__always) static func sigmoid(_ x: Float) -> Float {
    x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x))
  }

  @inline(__always) static func softplus(_ x: Float) -> Float {
    x > 20 ? x : log1p(exp(x))
  }
}

/// Broadcasting arithmetic, comparison and logic of two tensors.
struct Binary: ChannelsLastOperator {
  let op: String
  let fmod: Bool

  init(_ node: Node, _ setup: OperatorSetup) throws {
    op = node.opType
    fmod = (node.intAttribute("fmod") ?? 0) != 0
  }

  private static let comparisons: Set<String> = ["Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual"]
  private static let logic: Set<String> = ["And", "Or", "Xor"]

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    var a = try context.input(inputs, 0, "A"), b = try context.input(inputs, 1, "B")
    // Same-shape float arithmetic on two channels-last tensors keeps their order; the rest is planar.
    let channelsLast = a.channelsLast && b.channelsLast && a.shape == b.shape && context.mayWriteChannelsLast && !Binary.comparisons.contains(op)
    if !channelsLast { (a, b) = (a.planar(), b.planar()) }
    guard Broadcast.shape([a.shape, b.shape]) != nil else {
      throw context.error("inputs A \(a.shapeDescription) and B \(b.shapeDescription) do not broadcast")
    }
    if op == "Pow" && a.isFloat != b.isFloat {
      // Base and exponent may have different types; the result has the base's.
      let (values, shape) = Broadcast.apply(a.asFloats, a.shape, b.asFloats, b.shape) { Binary.power($0, $1) }!
      if a.isFloat { return [Tensor(shape: shape, floats: values, dtype: a.dtype).normalized()] }
      return [Tensor(shape: shape, ints: values.map { Int64($0) }, dtype: a.dtype).normalized()]
    }
    guard a.isFloat == b.isFloat else {
      throw context.error("input A is \(a.dtype) and input B is \(b.dtype); \(op) needs one type")
    }
    if Binary.comparisons.contains(op) {
      let result: ([Int64], [Int])
      if a.isFloat {
        let compare = Binary.floatComparison(op)
        result = Broadcast.apply(a.floats, a.shape, b.floats, b.shape) { compare($0, $1) ? Int64(1) : 0 }!
      } else {
        let compare = Binary.intComparison(op, unsigned: a.dtype == .uint64)
        result = Broadcast.apply(a.ints, a.shape, b.ints, b.shape) { compare($0, $1) ? Int64(1) : 0 }!
      }
      return [Tensor(shape: result.1, ints: result.0, dtype: .bool)]
    }
    if Binary.logic.contains(op) {
      let result: ([Int64], [Int])
      switch op {
      case "And": result = Broadcast.apply(a.ints, a.shape, b.ints, b.shape) { $0 != 0 && $1 != 0 ? 1 : 0 }!
      case "Or": result = Broadcast.apply(a.ints, a.shape, b.ints, b.shape) { $0 != 0 || $1 != 0 ? 1 : 0 }!
      default: result = Broadcast.apply(a.ints, a.shape, b.ints, b.shape) { ($0 != 0) != ($1 != 0) ? 1 : 0 }!
      }
      return [Tensor(shape: result.1, ints: result.0, dtype: .bool)]
    }
    if a.isFloat {
      let (values, shape) = try floatArithmetic(a, b, context)
      var y = Tensor(shape: shape, floats: values, dtype: a.dtype).normalized()
      y.channelsLast = channelsLast
      return [y]
    }
    let (values, shape) = try intArithmetic(a, b, context)
    return [Tensor(shape: shape, ints: values, dtype: a.dtype).normalized()]
  }

  private func floatArithmetic(_ a: Tensor, _ b: Tensor, _ context: ExecutionContext) throws -> ([Float], [Int]) {
    if let fast = Binary.planewise(op, a, b) { return fast }
    switch op {
    case "Add": return Broadcast.apply(a.floats, a.shape, b.floats, b.shape, +)!
    case "Sub": return Broadcast.apply(a.floats, a.shape, b.floats, b.shape, -)!
    case "Mul": return Broadcast.apply(a.floats, a.shape, b.floats, b.shape, *)!
    case "Div": return Broadcast.apply(a.floats, a.shape, b.floats, b.shape, /)!
    case "Pow": return Broadcast.apply(a.floats, a.shape, b.floats, b.shape) { Binary.power($0, $1) }!
    case "PRelu": return Broadcast.apply(a.floats, a.shape, b.floats, b.shape) { $0 < 0 ? $0 * $1 : $0 }!
    case "Mod":
      if fmod { return Broadcast.apply(a.floats, a.shape, b.floats, b.shape) { Foundation.fmod($0, $1) }! }
      return Broadcast.apply(a.floats, a.shape, b.floats, b.shape) { x, y in
        let r = Foundation.fmod(x, y)
        return r != 0 && (r < 0) != (y < 0) ? r + y : r
      }!
    default: throw context.error("\(op) is not defined for \(a.dtype)")
    }
  }

  /// Add, Sub, Mul or Div where one operand is full-sized and the other either the same shape or
  /// one value per plane (a per-channel scale or shift: [C, 1, 1] against [N, C, H, W]), as
  /// tight loops in parallel; nil for anything else.
  static func planewise(_ op: String, _ a: Tensor, _ b: Tensor) -> ([Float], [Int])? {
    let kinds = ["Add": 0, "Sub": 1, "Mul": 2, "Div": 3]
    guard let kind = kinds[op], let target = Broadcast.shape([a.shape, b.shape]) else { return nil }
    let total = target.reduce(1, *)
    guard total > 1 << 14 else { return nil }
    /// Elements per plane, when `small` holds one value per plane of `target`, repeating over leading axes.
    func plane(_ small: [Int]) -> Int? {
      guard small.count <= target.count else { return nil }
      let padded = [Int](repeating: 1, count: target.count - small.count) + small
      var end = padded.count
      while end > 0 && padded[end - 1] == 1 { end -= 1 }
      var start = 0
      while start < end && padded[start] == 1 { start += 1 }
      guard padded[start..<end].elementsEqual(target[start..<end]) else { return nil }
      return target[end...].reduce(1, *)
    }
    let (full, small, smallFirst): (Tensor, Tensor, Bool)
    let size: Int
    if a.shape == target, b.shape == target {
      (full, small, smallFirst, size) = (a, b, false, 1)
    } else if a.shape == target, let p = plane(b.shape) {
      (full, small, smallFirst, size) = (a, b, false, p)
    } else if b.shape == target, let p = plane(a.shape) {
      (full, small, smallFirst, size) = (b, a, true, p)
    } else {
      return nil
    }
    let same = a.shape == b.shape
    let values = [Float](unsafeUninitializedCapacity: total) { out, initialized in
      full.floats.withUnsafeBufferPointer { pf in
        small.floats.withUnsafeBufferPointer { ps in
          let (f, s, o) = (pf.baseAddress!, ps.baseAddress!, out.baseAddress!)
          let (planes, count) = (total / size, small.count)
          Parallel.forEachRange(same ? total / 4096 + 1 : planes, work: total) { range in
            for p in range {
              let slice = same ? (p * 4096)..<min(total, (p + 1) * 4096) : (p * size)..<((p + 1) * size)
              if same {
                switch (kind, smallFirst) {
                case (0, _): for i in slice { o[i] = f[i] + s[i] }
                case (1, _): for i in slice { o[i] = f[i] - s[i] }
                case (2, _): for i in slice { o[i] = f[i] * s[i] }
                default: for i in slice { o[i] = f[i] / s[i] }
                }
                continue
              }
              let v = s[p % count]
              switch (kind, smallFirst) {
              case (0, _): for i in slice { o[i] = f[i] + v }
              case (1, false): for i in slice { o[i] = f[i] - v }
              case (1, true): for i in slice { o[i] = v - f[i] }
              case (2, _): for i in slice { o[i] = f[i] * v }
              case (3, false): for i in slice { o[i] = f[i] / v }
              default: for i in slice { o[i] = v / f[i] }
              }
            }
          }
        }
      }
      initialized = total
    }
    return (values, target)
  }

  private func intArithmetic(_ a: Tensor, _ b: Tensor, _ context: ExecutionContext) throws -> ([Int64], [Int]) {
    switch op {
    case "Add": return Broadcast.apply(a.ints, a.shape, b.ints, b.shape, &+)!
    case "Sub": return Broadcast.apply(a.ints, a.shape, b.ints, b.shape, &-)!
    case "Mul": return Broadcast.apply(a.ints, a.shape, b.ints, b.shape, &*)!
    case "Div":
      if b.ints.contains(0) { throw context.error("integer division by zero (input B holds 0)") }
      if a.dtype == .uint64 {
        return Broadcast.apply(a.ints, a.shape, b.ints, b.shape) {
          Int64(bitPattern: UInt64(bitPattern: $0) / UInt64(bitPattern: $1))
        }!
      }
      return Broadcast.apply(a.ints, a.shape, b.ints, b.shape) { $0.dividedReportingOverflow(by: $1).partialValue }!
    case "Mod":
      if b.ints.contains(0) { throw context.error("integer modulo by zero (input B holds 0)") }
      if fmod { return Broadcast.apply(a.ints, a.shape, b.ints, b.shape) { $0.remainderReportingOverflow(dividingBy: $1).partialValue }! }
      return Broadcast.apply(a.ints, a.shape, b.ints, b.shape) { x, y in
        let r = x.remainderReportingOverflow(dividingBy: y).partialValue
        return r != 0 && (r < 0) != (y < 0) ? r + y : r
      }!
    case "Pow":
      return Broadcast.apply(a.ints, a.shape, b.ints, b.shape) { Int64(Foundation.pow(Double($0), Double($1))) }!
    case "PRelu": return Broadcast.apply(a.ints, a.shape, b.ints, b.shape) { $0 < 0 ? $0 &* $1 : $0 }!
    default: throw context.error("\(op) is not defined for \(a.dtype)")
    }
  }

  static func power(_ x: Float, _ y: Float) -> Float {
    if y == 2 { return x * x }
    if y == 0.5 { return x.squareRoot() }
    return Float(Foundation.pow(Double(x), Double(y)))
  }

  static func floatComparison(_ op: String) -> (Float, Float) -> Bool {
    switch op {
    case "Equal": return (==)
    case "Greater": return (>)
    case "GreaterOrEqual": return (>=)
    case "Less": return (<)
    default: return (<=)
    }
  }

  static func intComparison(_ op: String, unsigned: Bool) -> (Int64, Int64) -> Bool {
    if unsigned {
      let compare = floatComparison(op)
      return { compare(Float(UInt64(bitPattern: $0)), Float(UInt64(bitPattern: $1))) && Binary.exactUnsigned(op, $0, $1) }
    }
    switch op {
    case "Equal": return (==)
    case "Greater": return (>)
    case "GreaterOrEqual": return (>=)
    case "Less": return (<)
    default: return (<=)
    }
  }

  private static func exactUnsigned(_ op: String, _ x: Int64, _ y: Int64) -> Bool {
    let a = UInt64(bitPattern: x), b = UInt64(bitPattern: y)
    switch op {
    case "Equal": return a == b
    case "Greater": return a > b
    case "GreaterOrEqual": return a >= b
    case "Less": return a < b
    default: return a <= b
    }
  }
}

/// Max, Min, Sum and Mean over any number of broadcasting inputs.
struct Variadic: Operator {
  let op: String
  init(_ node: Node, _ setup: OperatorSetup) throws { op = node.opType }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let present = inputs.compactMap { $0 }
    guard var result = present.first else { throw context.error("needs at least one input") }
    guard present.allSatisfy({ $0.isFloat == result.isFloat }) else { throw context.error("inputs mix float and integer types") }
    for next in present.dropFirst() {
      guard Broadcast.shape([result.shape, next.shape]) != nil else {
        throw context.error("inputs \(result.shapeDescription) and \(next.shapeDescription) do not broadcast")
      }
      if result.isFloat {
        let combine: (Float, Float) -> Float
        switch op {
        case "Max": combine = { $0.isNaN || $1.isNaN ? .nan : max($0, $1) }
        case "Min": combine = { $0.isNaN || $1.isNaN ? .nan : min($0, $1) }
        default: combine = (+)
        }
        let (values, shape) = Broadcast.apply(result.floats, result.shape, next.floats, next.shape, combine)!
        result = Tensor(shape: shape, floats: values, dtype: result.dtype)
      } else {
        let unsigned = result.dtype == .uint64
        let combine: (Int64, Int64) -> Int64
        switch op {
        case "Max": combine = unsigned ? { UInt64(bitPattern: $0) >= UInt64(bitPattern: $1) ? $0 : $1 } : { max($0, $1) }
        case "Min": combine = unsigned ? { UInt64(bitPattern: $0) <= UInt64(bitPattern: $1) ? $0 : $1 } : { min($0, $1) }
        default: combine = (&+)
        }
        let (values, shape) = Broadcast.apply(result.ints, result.shape, next.ints, next.shape, combine)!
        result = Tensor(shape: shape, ints: values, dtype: result.dtype)
      }
    }
    if op == "Mean" {
      let count = Float(present.count)
      if result.isFloat { result.floats = result.floats.map { $0 / count } } else { result.ints = result.ints.map { $0 / Int64(present.count) } }
    }
    return [result.normalized()]
  }
}

/// `Where(condition, X, Y)`: X where the condition holds, else Y, all broadcast together.
struct Where: Operator {
  init(_ node: Node, _ setup: OperatorSetup) throws {}

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let condition = try context.input(inputs, 0, "condition")
    let x = try context.input(inputs, 1, "X"), y = try context.input(inputs, 2, "Y")
    guard let shape = Broadcast.shape([condition.shape, x.shape, y.shape]) else {
      throw context.error("condition \(condition.shapeDescription), X \(x.shapeDescription) and Y \(y.shapeDescription) do not broadcast")
    }
    guard x.isFloat == y.isFloat else { throw context.error("X is \(x.dtype) and Y is \(y.dtype); they must match") }
    try context.checkAllocation(shape)
    let mask = Broadcast.expand(condition.ints, condition.shape, to: shape)
    if x.isFloat {
      let a = Broadcast.expand(x.floats, x.shape, to: shape), b = Broadcast.expand(y.floats, y.shape, to: shape)
      return [Tensor(shape: shape, floats: mask.indices.map { mask[$0] != 0 ? a[$0] : b[$0] }, dtype: x.dtype)]
    }
    let a = Broadcast.expand(x.ints, x.shape, to: shape), b = Broadcast.expand(y.ints, y.shape, to: shape)
    return [Tensor(shape: shape, ints: mask.indices.map { mask[$0] != 0 ? a[$0] : b[$0] }, dtype: x.dtype)]
  }
}

/// `Clip`: bounds from attributes before opset 11, from optional inputs after.
struct Clip: Operator {
  let minimum: Float?
  let maximum: Float?

  init(_ node: Node, _ setup: OperatorSetup) throws {
    minimum = setup.opset < 11 ? (node.floatAttribute("min") ?? -.greatestFiniteMagnitude) : nil
    maximum = setup.opset < 11 ? (node.floatAttribute("max") ?? .greatestFiniteMagnitude) : nil
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    var x = try context.input(inputs, 0, "input")
    if x.isFloat {
      let low = minimum ?? (inputs.count > 1 ? inputs[1]?.asFloats.first : nil) ?? -.infinity
      let high = maximum ?? (inputs.count > 2 ? inputs[2]?.asFloats.first : nil) ?? .infinity
      x.floats.withUnsafeMutableBufferPointer { buffer in
        for index in buffer.indices { buffer[index] = buffer[index].isNaN ? .nan : min(max(buffer[index], low), high) }
      }
      return [x]
    }
    let low = (inputs.count > 1 ? inputs[1]?.ints.first : nil) ?? .min
    let high = (inputs.count > 2 ? inputs[2]?.ints.first : nil) ?? .max
    x.ints = x.ints.map { min(max($0, low), high) }
    return [x]
  }
}

/// `Cast` (to the `to` attribute) and `CastLike` (to the second input's type).
struct Cast: Operator {
  let target: DataType?

  init(_ node: Node, _ setup: OperatorSetup) throws {
    target = node.opType == "Cast" ? DataType(rawValue: Int32(node.intAttribute("to") ?? 1)) : nil
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "input")
    let to = try target ?? context.input(inputs, 1, "target_type").dtype
    return [try Cast.convert(x, to: to, context)]
  }

  static func convert(_ x: Tensor, to: DataType, _ context: ExecutionContext) throws -> Tensor {
    guard to.byteSize != nil, to.rawValue <= 16, to != .complex64, to != .complex128 else {
      throw context.error("cannot cast to \(to)")
    }
    if to.isFloatingPoint {
      return Tensor(shape: x.shape, floats: x.isFloat ? x.floats : x.ints.map { Cast.float(from: $0, x.dtype) }, dtype: to)
        .normalized()
    }
    if to == .bool {
      return Tensor(shape: x.shape, ints: x.isFloat ? x.floats.map { $0 != 0 ? 1 : 0 } : x.ints.map { $0 != 0 ? 1 : 0 }, dtype: .bool)
    }
    if x.isFloat {
      let ints = x.floats.map { value -> Int64 in
        guard value.isFinite else { return value.isNaN ? 0 : (value > 0 ? .max : .min) }
        if to == .uint64, value >= 9.223372e18 { return Int64(bitPattern: UInt64(value)) }
        return Int64(max(min(value, 9.223372e18), -9.223372e18))
      }
      return Tensor(shape: x.shape, ints: ints, dtype: to).normalized()
    }
    return Tensor(shape: x.shape, ints: x.ints, dtype: to).normalized()
  }

  static func float(from value: Int64, _ type: DataType) -> Float {
    type == .uint64 ? Float(UInt64(bitPattern: value)) : Float(value)
  }
}

/// `Identity`: the input unchanged (no copy: tensors are copy-on-write).
struct Identity: Operator {
  init(_ node: Node, _ setup: OperatorSetup) throws {}
  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    [try context.input(inputs, 0, "input")]
  }
}

/// `Dropout` at inference (no training_mode, or training_mode false, or ratio 0): the identity,
/// with an all-true mask when the node asks for it.
struct Dropout: Operator {
  let ratio: Float
  init(_ node: Node, _ setup: OperatorSetup) throws { ratio = node.floatAttribute("ratio") ?? 0.5 }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "data")
    let training = (inputs.count > 2 ? inputs[2]?.ints.first : nil) ?? 0
    let ratio = (inputs.count > 1 ? inputs[1]?.asFloats.first : nil) ?? self.ratio
    if training != 0 && ratio > 0 {
      throw context.error("training-mode dropout with ratio \(ratio) is random; run the graph in inference mode")
    }
    return [x, Tensor(shape: x.shape, ints: [Int64](repeating: 1, count: x.count), dtype: .bool)]
  }
}

// MARK: - Gradients

extension Unary: DifferentiableOperator {
  /// Ops whose derivative reads only the result y (`derivative` ignores x); Elu reads both; the others only x.
  private static let derivativeOfResult: Set<String> = ["Exp", "Reciprocal", "Relu", "Sigmoid", "Sqrt", "Tan", "Tanh"]

  var savedForBackward: SavedValues {
    op == "Elu" ? .all : Unary.derivativeOfResult.contains(op) ? .outputsOnly : .inputsOnly
  }

  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat, !["IsNaN", "IsInf", "Not"].contains(op) else { return [nil] }
    let y = outputs[0]
    let derivative = self.derivative()
    let saved = savedForBackward
    var dx = dy
    dx.dtype = x.dtype
    x.floats.withUnsafeBufferPointer { px in
      y.floats.withUnsafeBufferPointer { py in
        dx.floats.withUnsafeMutableBufferPointer { pd in
          // Only the saved values are read (the others are empty stand-ins).
          if op == "Relu" {
            for index in pd.indices { pd[index] *= py[index] > 0 ? 1 : 0 }
          } else if !saved.outputs {
            for index in pd.indices { pd[index] *= derivative(px[index], 0) }
          } else if !saved.inputs {
            for index in pd.indices { pd[index] *= derivative(0, py[index]) }
          } else {
            for index in pd.indices { pd[index] *= derivative(px[index], py[index]) }
          }
        }
      }
    }
    return [dx]
  }

  /// d f(x) / dx from x and y = f(x) (only y for `derivativeOfResult`, where x is not saved).
  func derivative() -> (Float, Float) -> Float {
    let alpha = alpha, beta = beta, gamma = gamma
    switch op {
    case "Abs": return { x, _ in x > 0 ? 1 : (x < 0 ? -1 : 0) }
    case "Acos": return { x, _ in -1 / (1 - x * x).squareRoot() }
    case "Acosh": return { x, _ in 1 / (x * x - 1).squareRoot() }
    case "Asin": return { x, _ in 1 / (1 - x * x).squareRoot() }
    case "Asinh": return { x, _ in 1 / (x * x + 1).squareRoot() }
    case "Atan": return { x, _ in 1 / (1 + x * x) }
    case "Atanh": return { x, _ in 1 / (1 - x * x) }
    case "Ceil", "Floor", "Round", "Sign": return { _, _ in 0 }
    case "Celu": return { x, _ in x > 0 ? 1 : exp(x / alpha) }
    case "Cos": return { x, _ in -sin(x) }
    case "Cosh": return { x, _ in sinh(x) }
    case "Elu": return { x, y in x >= 0 ? 1 : y + alpha }
    case "Erf": return { x, _ in 2 / Float.pi.squareRoot() * exp(-x * x) }
    case "Exp": return { _, y in y }
    case "HardSigmoid": return { x, _ in
        let z = alpha * x + beta
        return z > 0 && z < 1 ? alpha : 0
      }
    case "HardSwish": return { x, _ in x < -3 ? 0 : (x > 3 ? 1 : (2 * x + 3) / 6) }
    case "LeakyRelu": return { x, _ in x >= 0 ? 1 : alpha }
    case "Log": return { x, _ in 1 / x }
    case "Mish": return { x, _ in
        let t = tanh(Unary.softplus(x))
        return t + x * (1 - t * t) * Unary.sigmoid(x)
      }
    case "Neg": return { _, _ in -1 }
    case "Reciprocal": return { _, y in -y * y }
    case "Relu": return { _, y in y > 0 ? 1 : 0 }
    case "Selu": return { x, _ in x > 0 ? gamma : gamma * alpha * exp(x) }
    case "Shrink": return { x, _ in x < -gamma || x > gamma ? 1 : 0 }
    case "Sigmoid": return { _, y in y * (1 - y) }
    case "Sin": return { x, _ in cos(x) }
    case "Sinh": return { x, _ in cosh(x) }
    case "Softplus": return { x, _ in Unary.sigmoid(x) }
    case "Softsign": return { x, _ in 1 / ((1 + abs(x)) * (1 + abs(x))) }
    case "Sqrt": return { _, y in 0.5 / y }
    case "Tan": return { _, y in 1 + y * y }
    case "Tanh": return { _, y in 1 - y * y }
    case "ThresholdedRelu": return { x, _ in x > alpha ? 1 : 0 }
    default: return { _, _ in 1 }
    }
  }
}

extension Binary: DifferentiableOperator {
  /// Add and Sub read no values (the tape sums their gradients down to the inputs' shapes); Pow
  /// reads its result too.
  var savedForBackward: SavedValues { op == "Add" || op == "Sub" ? .none : op == "Pow" ? .all : .inputsOnly }

  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let a = inputs[0], let b = inputs[1], outputs[0].isFloat else { return [nil, nil] }
    let shape = dy.shape
    let g = dy.floats
    func tensor(_ values: [Float], like input: Tensor) -> Tensor? {
      input.isFloat ? Tensor(shape: shape, floats: values, dtype: input.dtype) : nil
    }
    switch op {
    case "Add": return [tensor(g, like: a), tensor(g, like: b)]
    case "Sub": return [tensor(g, like: a), tensor(g.map { -$0 }, like: b)]
    default: break
    }
    let x = Broadcast.expand(a.asFloats, a.shape, to: shape), y = Broadcast.expand(b.asFloats, b.shape, to: shape)
    let count = g.count
    switch op {
    case "Mul": return [tensor((0..<count).map { g[$0] * y[$0] }, like: a), tensor((0..<count).map { g[$0] * x[$0] }, like: b)]
    case "Div":
      return [
        tensor((0..<count).map { g[$0] / y[$0] }, like: a), tensor((0..<count).map { -g[$0] * x[$0] / (y[$0] * y[$0]) }, like: b),
      ]
    case "Pow":
      let out = outputs[0].floats
      return [
        tensor((0..<count).map { g[$0] * y[$0] * Binary.power(x[$0], y[$0] - 1) }, like: a),
        tensor((0..<count).map { x[$0] > 0 ? g[$0] * log(x[$0]) * out[$0] : 0 }, like: b),
      ]
    case "PRelu":
      return [
        tensor((0..<count).map { x[$0] < 0 ? g[$0] * y[$0] : g[$0] }, like: a),
        tensor((0..<count).map { x[$0] < 0 ? g[$0] * x[$0] : 0 }, like: b),
      ]
    case "Mod":
      let quotient: (Float) -> Float = fmod ? { $0.rounded(.towardZero) } : { $0.rounded(.down) }
      return [tensor(g, like: a), tensor((0..<count).map { -g[$0] * quotient(x[$0] / y[$0]) }, like: b)]
    default:
      return [nil, nil]
    }
  }
}

extension Variadic: DifferentiableOperator {
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], outputs[0].isFloat else { return inputs.map { _ in nil } }
    let present = Float(inputs.compactMap { $0 }.count)
    var claimed = [Bool](repeating: false, count: dy.count)
    return inputs.map { input -> Tensor? in
      guard let input else { return nil }
      switch op {
      case "Sum": return dy
      case "Mean": return Tensor(shape: dy.shape, floats: dy.floats.map { $0 / present }, dtype: dy.dtype)
      default:
        // Max/Min: the first input that attains the result takes the gradient.
        let values = Broadcast.expand(input.floats, input.shape, to: dy.shape)
        let result = outputs[0].floats
        var gradient = [Float](repeating: 0, count: dy.count)
        for index in gradient.indices where !claimed[index] && values[index] == result[index] {
          gradient[index] = dy.floats[index]
          claimed[index] = true
        }
        return Tensor(shape: dy.shape, floats: gradient, dtype: dy.dtype)
      }
    }
  }
}

extension Where: DifferentiableOperator {
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let condition = inputs[0], outputs[0].isFloat else { return [nil, nil, nil] }
    let mask = Broadcast.expand(condition.ints, condition.shape, to: dy.shape)
    let toX = zip(dy.floats, mask).map { $1 != 0 ? $0 : 0 }
    let toY = zip(dy.floats, mask).map { $1 != 0 ? 0 : $0 }
    return [nil, Tensor(shape: dy.shape, floats: toX, dtype: dy.dtype), Tensor(shape: dy.shape, floats: toY, dtype: dy.dtype)]
  }
}

extension Clip: DifferentiableOperator {
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat else { return inputs.map { _ in nil } }
    let low = minimum ?? (inputs.count > 1 ? inputs[1]?.asFloats.first : nil) ?? -.infinity
    let high = maximum ?? (inputs.count > 2 ? inputs[2]?.asFloats.first : nil) ?? .infinity
    let dx = zip(dy.floats, x.floats).map { g, v in v >= low && v <= high ? g : 0 }
    return [Tensor(shape: x.shape, floats: dx, dtype: x.dtype)] + inputs.dropFirst().map { _ in nil }
  }
}

extension Cast: DifferentiableOperator {
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat, dy.isFloat else { return inputs.map { _ in nil } }
    var dx = dy
    dx.dtype = x.dtype
    return [dx.normalized()] + inputs.dropFirst().map { _ in nil }
  }
}

extension Identity: DifferentiableOperator {
  var savedForBackward: SavedValues { .none }

  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    [inputs[0]?.isFloat == true ? outputGradients[0] : nil]
  }
}

extension Dropout: DifferentiableOperator {
  /// Inference-mode dropout (the only mode `forward` runs) passes gradients through unchanged.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    [outputGradients[0]] + inputs.dropFirst().map { _ in nil }
  }
}
