import Dispatch

/// A recorded forward pass (`Interpreter.record`) and the reverse pass over it.
public final class Tape {
  let interpreter: Interpreter
  private(set) var values: [Tensor?]
  private(set) var records: [Interpreter.Record]
  /// Whether a reverse pass with `releasing` consumed the values.
  private(set) var released = false
  /// The graph outputs of the recorded pass.
  public let outputs: [Tensor]
  /// New values for state initializers (BatchNormalization running statistics in training).
  public let stateUpdates: [String: Tensor]
  /// Whether the pass ran with training behaviour; backward passes see the same flag.
  public let training: Bool
  /// Whether the tape holds every value of the pass (recorded without `keeping`).
  let complete: Bool

  /// What a pass made by `replay` did: the slots it `replaced` (constants to the reverse pass),
  /// the slots it `recomputed` (replaced ones included), and the `boundary`: values of its base
  /// pass that recomputed nodes read.
  struct Replay {
    let replaced: Set<Int>
    let recomputed: Set<Int>
    let boundary: Set<Int>
  }
  let replay: Replay?

  init(
    interpreter: Interpreter, values: [Tensor?], records: [Interpreter.Record], outputs: [Tensor], stateUpdates: [String: Tensor],
    training: Bool, complete: Bool = true, replay: Replay? = nil
  ) {
    self.training = training
    self.complete = complete
    self.replay = replay
    self.interpreter = interpreter
    self.values = values
    self.records = records
    self.outputs = outputs
    self.stateUpdates = stateUpdates
  }

  /// The value `name` took in the recorded pass (planar); nil for a value the pass did not keep
  /// (`Interpreter.record` with `keeping`) or a reverse pass released.
  public func value(_ name: String) -> Tensor? { interpreter.slot(named: name).flatMap { values[$0]?.planar() } }

  /// This pass again, recorded, with the values in `overriding` (initializers, inputs or node
  /// outputs, each keeping its shape and dtype) replaced: only the nodes downstream of a replaced
  /// value run again; every other value is this pass's. A replaced value is a constant of the new
  /// pass: its own gradient is zero and none flows through it. Differentiate the new pass with
  /// `replayGradients`, whose `baseSeeds` join this pass's seeds. Needs a pass that kept every
  /// value (recorded without `keeping`).
  public func replay(overriding: [String: Tensor]) throws -> Tape {
    guard !released else { throw RuntimeError("this tape's values were released by an earlier reverse pass (gradients with releasing)") }
    guard complete else { throw RuntimeError("replay needs every value of the recorded pass; record it without `keeping`") }
    return try interpreter.replay(self, overriding: overriding)
  }

  /// For a pass made by `replay`: d(sum seed * value)/d target over the recomputed nodes
  /// (`gradients`), and the seeds to add to the base pass's (`baseSeeds`): the gradients with
  /// respect to the base values the recomputed nodes read, and any seed of a value the replay did
  /// not recompute. The targets' full gradient is `gradients` plus the base pass's with those seeds.
  /// `releasing` consumes this pass as in `gradients` (the base pass keeps its values).
  public func replayGradients(seeds: [String: Tensor], targets: Set<String>, releasing: Bool = false) throws -> (
    gradients: [String: Tensor], baseSeeds: [String: Tensor]
  ) {
    guard let replay else { throw RuntimeError("replayGradients needs a pass made by Tape.replay") }
    var own: [String: Tensor] = [:], baseSeeds: [String: Tensor] = [:]
    for (name, seed) in seeds {
      if let slot = interpreter.slot(named: name), replay.recomputed.contains(slot) { own[name] = seed } else { baseSeeds[name] = seed }
    }
    let boundary = Set(replay.boundary.map(interpreter.name(ofSlot:))).subtracting(targets)
    var gradients = try self.gradients(seeds: own, targets: targets.union(boundary), releasing: releasing)
    for name in boundary {
      guard let gradient = gradients.removeValue(forKey: name) else { continue }
      if baseSeeds[name] == nil { baseSeeds[name] = gradient } else { baseSeeds[name]!.accumulate(gradient) }
    }
    return (gradients, baseSeeds)
  }

  /// Gradients with respect to the values in `targets` (parameters, inputs or intermediate values)
  /// of `sum(seed_v * v)` over the seeded values v: seeding a scalar loss with 1 gives d loss / d target.
  /// A target the seeds do not depend on gets zeros.
  ///
  /// With `releasing`, the pass consumes the tape to keep memory low: each recorded value is
  /// dropped once the reverse pass has gone past every node that reads or produces it, and each
  /// gradient once the node that produced its value has used it (except the targets'). The
  /// gradients are the same; afterwards `value` returns nil for every value and another
  /// `gradients` or `replay` throws (`outputs` and `stateUpdates` stay).
  public func gradients(seeds: [String: Tensor], targets: Set<String>, releasing: Bool = false) throws -> [String: Tensor] {
    guard !released else { throw RuntimeError("this tape's values were released by an earlier reverse pass (gradients with releasing)") }
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
      guard let slot = interpreter.slot(named: name) else { throw RuntimeError("no value named '\(name)' to seed") }
      guard let value = values[slot] else { throw RuntimeError("the recorded pass did not keep '\(name)' to seed (record it with '\(name)' in `keeping`)") }
      guard seed.shape == value.shape, seed.isFloat else {
        throw RuntimeError("seed for '\(name)' is \(seed.shapeDescription), the value is \(value.shapeDescription)")
      }
      gradients[slot] = value.channelsLast ? seed.channelsLastCopy() : seed
    }
    // Targets the seeds do not reach get zeros of their value's shape, known before it is released.
    var unreached: [Int: Interpreter.ValueType] = [:]
    for slot in targetSlots { if let value = values[slot] { unreached[slot] = Interpreter.ValueType(shape: value.shape, dtype: value.dtype) } }
    for record in records where unreached.count < targetSlots.count {
      let step = interpreter.stepInfo(record.step)
      let types = zip(step.inputs, record.inputTypes).map { ($0, $1) } + zip(step.outputs, record.outputTypes).map { ($0, Optional($1)) }
      for case let (slot?, type?) in types where targetSlots.contains(slot) && unreached[slot] == nil { unreached[slot] = type }
    }
    // Releasing: the slots whose earliest recorded use is each record, dropped once it is done.
    var releasedAfter: [Int: [Int]] = [:]
    if releasing {
      var seen = Set<Int>()
      for (index, record) in records.enumerated() {
        let step = interpreter.stepInfo(record.step)
        for case let slot? in step.inputs + step.outputs where seen.insert(slot).inserted { releasedAfter[index, default: []].append(slot) }
      }
      released = true
    }
    defer {
      if releasing {
        values = [Tensor?](repeating: nil, count: values.count)
        records = []
      }
    }
    for index in records.indices.reversed() {
      let record = records[index]
      if releasing { records[index] = record.emptied() }
      defer {
        if releasing {
          for slot in releasedAfter[index] ?? [] { values[slot] = nil }
        }
      }
      let step = interpreter.stepInfo(record.step)
      let outputGradients = step.outputs.map { $0.flatMap { replay?.replaced.contains($0) == true ? nil : gradients[$0] } }
      guard outputGradients.contains(where: { $0 != nil }) else { continue }
      if releasing {
        // Only this node reads its outputs' gradients: it produced those values.
        for case let slot? in step.outputs where !targetSlots.contains(slot) { gradients[slot] = nil }
      }
      let wanted = step.inputs.enumerated().filter { index, slot in
        guard let slot, needed.contains(slot), let type = record.inputTypes[index] else { return false }
        return type.dtype.isFloatingPoint
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
      // The recorded pass writes a value channels last only when all its readers differentiate in
      // that layout (`Interpreter`), so every other op sees planar values and gradients.
      assert(
        op is any ChannelsLastDifferentiable
          || !(record.inputs.contains { $0?.channelsLast == true } || outputGradients.contains { $0?.channelsLast == true }),
        "\(step.node.label) differentiates planar values only")
      let inputGradients = try op.backward(record.inputs, record.outputs, outputGradients, context)
      if interpreter.profile != nil {
        interpreter.profile!["backward " + step.node.opType, default: 0] += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
      }
      for (index, slot) in wanted {
        guard index < inputGradients.count, let gradient = inputGradients[index], let slot, let input = record.inputTypes[index] else { continue }
        // Each value's gradient is kept in the value's own layout.
        var reduced = gradient.shape == input.shape ? gradient : gradient.planar().summed(to: input.shape)
        if reduced.channelsLast != input.channelsLast { reduced = input.channelsLast ? reduced.channelsLastCopy() : reduced.planar() }
        if gradients[slot] == nil { gradients[slot] = reduced } else { gradients[slot]!.accumulate(reduced) }
      }
    }
    var result: [String: Tensor] = [:]
    for name in targets {
      let slot = interpreter.slot(named: name)!
      if let gradient = gradients[slot], replay?.replaced.contains(slot) != true {
        result[name] = gradient.planar()
      } else if let type = unreached[slot] {
        result[name] = Tensor(zeros: type.shape, dtype: type.dtype)
      }
    }
    return result
  }
}
