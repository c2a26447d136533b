import Dispatch

/// A recorded forward pass (`Interpreter.record`) and the reverse pass over it.
public final class Tape {
  let interpreter: Interpreter
  let values: [Tensor?]
  let records: [Interpreter.Record]
  /// The graph outputs of the recorded pass.
  public let outputs: [Tensor]
  /// New values for state initializers (BatchNormalization running statistics in training).
  public let stateUpdates: [String: Tensor]
  /// Whether the pass ran with training behaviour; backward passes see the same flag.
  public let training: Bool

  init(
    interpreter: Interpreter, values: [Tensor?], records: [Interpreter.Record], outputs: [Tensor], stateUpdates: [String: Tensor],
    training: Bool
  ) {
    self.training = training
    self.interpreter = interpreter
    self.values = values
    self.records = records
    self.outputs = outputs
    self.stateUpdates = stateUpdates
  }

  /// The value `name` took in the recorded pass.
  public func value(_ name: String) -> Tensor? { interpreter.slot(named: name).flatMap { values[$0] } }

  /// Gradients with respect to the values in `targets` (parameters, inputs or intermediate values)
  /// of `sum(seed_v * v)` over the seeded values v: seeding a scalar loss with 1 gives d loss / d target.
  /// A target the seeds do not depend on gets zeros.
  public func gradients(seeds: [String: Tensor], targets: Set<String>) throws -> [String: Tensor] {
    var targetSlots = Set<Int>()
    for name in targets {
      guard let slot = interpreter.slot(named: name) else { throw RuntimeError("no value named '\(name)' to differentiate") }
      targetSlots.insert(slot)
    }
    // Values on a path from a target: only those need gradients.
    var needed = targetSlots
    for record in records {
      let step = interpreter.stepInfo(record.step)
      if step.inputs.contains(where: { $0.map(needed.contains) ?? false }) {
        for case let slot? in step.outputs { needed.insert(slot) }
      }
    }
    var gradients: [Int: Tensor] = [:]
    for (name, seed) in seeds {
      guard let slot = interpreter.slot(named: name), let value = values[slot] else {
        throw RuntimeError("no value named '\(name)' to seed")
      }
      guard seed.shape == value.shape, seed.isFloat else {
        throw RuntimeError("seed for '\(name)' is \(seed.shapeDescription), the value is \(value.shapeDescription)")
      }
      gradients[slot] = seed
    }
    for record in records.reversed() {
      let step = interpreter.stepInfo(record.step)
      let outputGradients = step.outputs.map { $0.flatMap { gradients[$0] } }
      guard outputGradients.contains(where: { $0 != nil }) else { continue }
      let wanted = step.inputs.enumerated().filter { _, slot in
        guard let slot, needed.contains(slot), let value = values[slot] else { return false }
        return value.isFloat
      }
      guard !wanted.isEmpty else { continue }
      guard let op = step.op as? any DifferentiableOperator else {
        throw RuntimeError("\(step.node.label) has no gradient, but a gradient must flow through it to input '\(step.node.inputs[wanted[0].offset])'")
      }
      var context = ExecutionContext(label: step.node.label, memoryBudget: interpreter.memoryBudget) { _ in nil }
      context.training = training
      if training { context.syncBatchStatistics = interpreter.syncBatchStatistics }
      let wantedIndices = Set(wanted.map(\.offset))
      context.neededGradients = step.inputs.indices.map(wantedIndices.contains)
      let start = interpreter.profile == nil ? 0 : DispatchTime.now().uptimeNanoseconds
      let inputGradients = try op.backward(record.inputs, record.outputs, outputGradients, context)
      if interpreter.profile != nil {
        interpreter.profile!["backward " + step.node.opType, default: 0] += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
      }
      for (index, slot) in wanted {
        guard index < inputGradients.count, let gradient = inputGradients[index], let slot, let input = record.inputs[index] else { continue }
        let reduced = gradient.summed(to: input.shape)
        if gradients[slot] == nil { gradients[slot] = reduced } else { gradients[slot]!.accumulate(reduced) }
      }
    }
    var result: [String: Tensor] = [:]
    for name in targets {
      let slot = interpreter.slot(named: name)!
      if let gradient = gradients[slot] {
        result[name] = gradient
      } else if let value = values[slot] {
        result[name] = Tensor(zeros: value.shape, dtype: value.dtype)
      }
    }
    return result
  }
}
