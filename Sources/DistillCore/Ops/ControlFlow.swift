// If and Loop: subgraphs run by their own interpreters, reading enclosing values by name.
// Specs: https://onnx.ai/onnx/operators/onnx__If.html, https://onnx.ai/onnx/operators/onnx__Loop.html

let controlFlowOperators: [(String, any Operator.Type)] = [("If", If.self), ("Loop", Loop.self)]

struct If: Operator {
  let thenBranch: Interpreter
  let elseBranch: Interpreter

  init(_ node: Node, _ setup: OperatorSetup) throws {
    guard case .graph(let thenGraph)? = node.attribute("then_branch")?.value,
      case .graph(let elseGraph)? = node.attribute("else_branch")?.value
    else { throw setup.error("needs graph attributes then_branch and else_branch") }
    thenBranch = try setup.compile(thenGraph)
    elseBranch = try setup.compile(elseGraph)
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let condition = try context.input(inputs, 0, "cond")
    guard condition.count == 1 else { throw context.error("input cond has \(condition.count) elements, expected 1") }
    let branch = (condition.isFloat ? condition.floats[0] != 0 : condition.ints[0] != 0) ? thenBranch : elseBranch
    return try branch.run([:], scope: context.scope).outputs
  }
}

struct Loop: Operator {
  let body: Interpreter

  init(_ node: Node, _ setup: OperatorSetup) throws {
    guard case .graph(let graph)? = node.attribute("body")?.value else { throw setup.error("needs a graph attribute body") }
    body = try setup.compile(graph)
    guard graph.inputs.count >= 2, graph.outputs.count >= 1 else {
      throw setup.error("body must take (iteration_num, cond, carried...) and return (cond, carried..., scans...)")
    }
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let maxTrips = inputs.first.flatMap { $0?.asInts.first }
    var condition = true
    if inputs.count > 1, let given = inputs[1] {
      condition = given.isFloat ? given.floats.first != 0 : given.ints.first != 0
    }
    var carried = try inputs.dropFirst(2).enumerated().map { index, value in
      guard let value else { throw context.error("loop-carried input \(index) is missing") }
      return value
    }
    let bodyInputs = body.graph.inputs
    guard bodyInputs.count == carried.count + 2 else {
      throw context.error("body takes \(bodyInputs.count) inputs, expected \(carried.count + 2) (iteration, cond and \(carried.count) carried)")
    }
    var scans: [[Tensor]] = []
    var trip: Int64 = 0
    while condition && (maxTrips.map { trip < $0 } ?? true) {
      var feeds: [String: Tensor] = [
        bodyInputs[0].name: Tensor(shape: [], ints: [trip], dtype: .int64),
        bodyInputs[1].name: Tensor(shape: [], ints: [condition ? 1 : 0], dtype: .bool),
      ]
      for (index, value) in carried.enumerated() { feeds[bodyInputs[index + 2].name] = value }
      let outputs = try body.run(feeds, scope: context.scope).outputs
      condition = outputs[0].isFloat ? outputs[0].floats[0] != 0 : outputs[0].ints[0] != 0
      carried = Array(outputs[1...carried.count])
      let scanned = Array(outputs[(carried.count + 1)...])
      if scans.isEmpty { scans = scanned.map { [$0] } } else { for (index, value) in scanned.enumerated() { scans[index].append(value) } }
      trip += 1
      if trip > 1 << 31 { throw context.error("more than 2^31 iterations; is the loop condition ever false?") }
    }
    let scanCount = body.graph.outputs.count - 1 - carried.count
    let stacked = try (0..<scanCount).map { index -> Tensor in
      guard index < scans.count, let first = scans[index].first else {
        return Tensor(zeros: [0], dtype: body.graph.outputs[1 + carried.count + index].type?.elementType ?? .float)
      }
      guard scans[index].allSatisfy({ $0.shape == first.shape }) else { throw context.error("scan output \(index) changes shape between iterations") }
      var result = first
      result.shape = [scans[index].count] + first.shape
      if first.isFloat { result.floats = scans[index].flatMap(\.floats) } else { result.ints = scans[index].flatMap(\.ints) }
      return result
    }
    return carried + stacked
  }
}
