import Foundation

/// Runs a graph: operators are prepared once, then `run` evaluates the nodes in order, keeping
/// each value only until its last use unless it is an output or a requested tap.
public final class Interpreter: @unchecked Sendable {
  private struct Step {
    let node: Node
    let op: any Operator
    let inputs: [Int?]
    let outputs: [Int?]
    /// Slots whose last use is this step.
    var releases: [Int] = []
    /// The op is a `ChannelsLastOperator`.
    var acceptsChannelsLast = false
    /// In inference passes the op may write its first output channels last: every reader accepts it.
    var writesChannelsLast = false
    /// The same in recorded passes: every reader also differentiates in the layout.
    var writesChannelsLastRecorded = false
  }

  /// The prepared graph (fused, Constant tensors promoted); `releaseInitializerData` empties its
  /// initializers' data.
  public private(set) var graph: Graph
  private var steps: [Step] = []
  private var slotOf: [String: Int] = [:]
  private var names: [String] = []
  private var constants: [Int: Tensor] = [:]
  private var inputSlots: [(info: ValueInfo, slot: Int, hasDefault: Bool)] = []
  private var outerSlots: [(name: String, slot: Int)] = []
  private var outputSlots: [Int] = []
  /// When set, `run` adds each node's wall time (ms) to its op type's entry.
  public var profile: [String: Double]?
  /// Largest tensor, in bytes, one operator may allocate (default: 80% of physical memory).
  public var memoryBudget: Int = Int(Double(ProcessInfo.processInfo.physicalMemory) * 0.8)
  /// Passes run with `training` (and their backward passes) synchronize BatchNormalization's batch
  /// statistics through this (`ExecutionContext.syncBatchStatistics`); nil: each process its own.
  public var syncBatchStatistics: (any Collective)?

  /// Values fused away (see `Fusion`), which `run` cannot tap.
  private var fusedAway: Set<String> = []
  /// Constant-node outputs turned into initializers by `promoteConstants`.
  public private(set) var promotedConstants: Set<String> = []

  /// Prepares `graph`; `opsets` maps each domain to the model's opset version for it. With
  /// `fuse`, convolutions absorb following residual Adds and activations (and, with
  /// `foldBatchNorm`, inference BatchNormalization) and exported GroupNorms become one node
  /// (`Fusion`), except where that would hide a value named in `keep` (the taps a caller will ask
  /// for). Training wants `foldBatchNorm: false`.
  ///
  /// With `promoteConstants`, float tensors of Constant nodes become initializers (so they are
  /// parameters that training can update; `promotedConstants` names them).
  public init(
    graph original: Graph, opsets: [String: Int], registry: OperatorRegistry = .standard, fuse: Bool = true,
    foldBatchNorm: Bool = true, keep: Set<String> = [], promoteConstants: Bool = false
  ) throws {
    // A Gradient node differentiates parts of this graph: they must stay unfused.
    let differentiatesItself = original.nodes.contains { $0.opType == "Gradient" && $0.domain == "ai.onnx.preview.training" }
    var graph = fuse && !differentiatesItself ? Fusion.fuse(original, keep: keep, foldBatchNorm: foldBatchNorm) : original
    if promoteConstants {
      var promoted: [TensorValue] = []
      graph.nodes.removeAll { node in
        guard node.opType == "Constant", Graph.canonicalDomain(node.domain).isEmpty, node.outputs.count == 1,
          case .tensor(var tensor)? = node.attribute("value")?.value, tensor.dataType.isFloatingPoint
        else { return false }
        tensor.name = node.outputs[0]
        promoted.append(tensor)
        return true
      }
      graph.initializers += promoted
      promotedConstants = Set(promoted.compactMap(\.name))
    }
    self.graph = graph
    if fuse {
      let before = Set(original.nodes.flatMap(\.outputs)), after = Set(graph.nodes.flatMap(\.outputs))
      fusedAway = before.subtracting(after)
    }
    func slot(_ name: String) -> Int {
      if let existing = slotOf[name] { return existing }
      slotOf[name] = names.count
      names.append(name)
      return names.count - 1
    }
    for tensor in graph.initializers {
      guard let name = tensor.name else { continue }
      constants[slot(name)] = try Tensor(tensor)
    }
    for input in graph.inputs {
      inputSlots.append((input, slot(input.name), constants[slot(input.name)] != nil))
    }
    var locallyDefined = Set(names)
    for node in graph.nodes { locallyDefined.formUnion(node.outputs) }

    var unsupported: [String] = []
    for node in graph.nodes {
      let domain = Graph.canonicalDomain(node.domain)
      let opset = opsets[domain] ?? opsets[node.domain] ?? 0
      guard let type = registry.lookup(domain: domain, op: node.opType) else {
        unsupported.append("\(domain.isEmpty ? "ai.onnx" : domain)::\(node.opType) (opset \(opset)) at \(node.label)")
        continue
      }
      var setup = OperatorSetup(opset: opset, label: node.label) { subgraph in
        try Interpreter(graph: subgraph, opsets: opsets, registry: registry, fuse: fuse, foldBatchNorm: foldBatchNorm)
      }
      setup.graph = graph
      setup.opsets = opsets
      let op = try type.init(node, setup)
      var reads = node.inputs.filter { !$0.isEmpty }
      for subgraph in node.subgraphs { reads.append(contentsOf: subgraph.outerReferences.sorted()) }
      for name in reads where !locallyDefined.contains(name) && slotOf[name] == nil {
        outerSlots.append((name, slot(name)))
      }
      steps.append(
        Step(
          node: node, op: op, inputs: node.inputs.map { $0.isEmpty ? nil : slot($0) },
          outputs: node.outputs.map { $0.isEmpty ? nil : slot($0) }))
    }
    if !unsupported.isEmpty {
      throw RuntimeError("the graph uses operators this build cannot run: " + unsupported.joined(separator: "; "))
    }
    outputSlots = graph.outputs.map { slot($0.name) }

    var lastUse: [Int: Int] = [:]
    for (index, step) in steps.enumerated() {
      for case let input? in step.inputs { lastUse[input] = index }
      for subgraph in step.node.subgraphs {
        for name in subgraph.outerReferences { if let s = slotOf[name] { lastUse[s] = index } }
      }
    }
    let kept = Set(outputSlots).union(constants.keys)
    for (slot, index) in lastUse where !kept.contains(slot) { steps[index].releases.append(slot) }

    // Which values only channels-last readers read (in inference passes; in recorded ones).
    var readByOthers = Set(outputSlots), readByOthersRecorded = Set(outputSlots)
    var read = Set<Int>()
    for index in steps.indices {
      steps[index].acceptsChannelsLast = steps[index].op is any ChannelsLastOperator
      let differentiates = steps[index].op is any ChannelsLastDifferentiable
      for case let input? in steps[index].inputs {
        read.insert(input)
        if !steps[index].acceptsChannelsLast { readByOthers.insert(input) }
        if !differentiates { readByOthersRecorded.insert(input) }
      }
      for subgraph in steps[index].node.subgraphs {
        let outer = subgraph.outerReferences.compactMap { slotOf[$0] }
        readByOthers.formUnion(outer)
        readByOthersRecorded.formUnion(outer)
      }
    }
    for index in steps.indices where steps[index].acceptsChannelsLast {
      guard let first = steps[index].outputs.first, let slot = first, read.contains(slot) else { continue }
      steps[index].writesChannelsLast = !readByOthers.contains(slot)
      steps[index].writesChannelsLastRecorded = steps[index].op is any ChannelsLastDifferentiable && !readByOthersRecorded.contains(slot)
    }
  }

  /// Prepares the main graph of `model`.
  public convenience init(
    model: Model, registry: OperatorRegistry = .standard, fuse: Bool = true, foldBatchNorm: Bool = true,
    keep: Set<String> = [], promoteConstants: Bool = false
  ) throws {
    guard let graph = model.graph else { throw RuntimeError("the model has no graph") }
    var opsets: [String: Int] = [:]
    for opset in model.opsetImports { opsets[Graph.canonicalDomain(opset.domain ?? "")] = Int(opset.version) }
    try self.init(
      graph: graph, opsets: opsets, registry: registry, fuse: fuse, foldBatchNorm: foldBatchNorm, keep: keep,
      promoteConstants: promoteConstants)
  }

  /// The graph inputs a caller must feed (those without an initializer as default).
  public var requiredInputs: [ValueInfo] { inputSlots.filter { !$0.hasDefault }.map(\.info) }

  /// Runs the graph. Returns the graph outputs in order and the values of the `taps` asked for.
  /// `scope` supplies values of enclosing graphs to a subgraph.
  public func run(
    _ feeds: [String: Tensor], taps: Set<String> = [], scope: @escaping (String) -> Tensor? = { _ in nil }
  ) throws -> (outputs: [Tensor], taps: [String: Tensor]) {
    let pass = try forward(feeds, taps: taps, scope: scope, recording: false, training: false)
    return (pass.outputs, pass.taps)
  }

  /// Runs the graph and keeps what the backward pass needs: of each differentiable node, the
  /// inputs and outputs its backward reads (`DifferentiableOperator.savedForBackward`).
  /// With `training`, operators behave as in training (BatchNormalization uses batch statistics and
  /// reports new running statistics in `Tape.stateUpdates`).
  ///
  /// `keeping` nil: the tape also keeps every value of the pass (`Tape.value`, `Tape.replay`).
  /// With a set, it keeps only those values, the graph's outputs and its initializers: every
  /// other value is freed once the forward pass is done with it, unless a node saved it.
  public func record(
    _ feeds: [String: Tensor], training: Bool = true, keeping: Set<String>? = nil, scope: @escaping (String) -> Tensor? = { _ in nil }
  ) throws -> Tape {
    let pass = try forward(feeds, taps: keeping ?? [], scope: scope, recording: true, training: training, pruning: keeping != nil)
    return Tape(
      interpreter: self, values: pass.values, records: pass.records, outputs: pass.outputs, stateUpdates: pass.state, training: training,
      complete: keeping == nil)
  }

  /// The recorded pass `base` again with the values in `overriding` replaced (see `Tape.replay`):
  /// only the nodes downstream of a replaced value run and are recorded.
  func replay(_ base: Tape, overriding: [String: Tensor]) throws -> Tape {
    let pass = try forward(
      [:], taps: [], scope: { _ in nil }, recording: true, training: base.training, replay: (base.values, overriding))
    return Tape(
      interpreter: self, values: pass.values, records: pass.records, outputs: pass.outputs, stateUpdates: pass.state, training: base.training,
      complete: true, replay: Tape.Replay(replaced: Set(overriding.keys.compactMap { slotOf[$0] }), recomputed: pass.recomputed, boundary: pass.boundary))
  }

  /// A value's shape and dtype.
  struct ValueType {
    let shape: [Int]
    let dtype: DataType
    /// The value's elements are in N, H, W, C order (`Tensor.channelsLast`).
    var channelsLast = false
  }

  /// One node of a recorded pass.
  struct Record {
    let step: Int
    /// What the node's `backward` receives: the values it saves, and in place of every other an
    /// empty tensor (shape [0]) of the value's dtype.
    let inputs: [Tensor?]
    let outputs: [Tensor]
    /// The shape and dtype of each input (nil where omitted) and output.
    let inputTypes: [ValueType?]
    let outputTypes: [ValueType]

    init(step: Int, inputs: [Tensor?], outputs: [Tensor], saving saved: SavedValues) {
      self.step = step
      func type(_ value: Tensor) -> ValueType { ValueType(shape: value.shape, dtype: value.dtype, channelsLast: value.channelsLast) }
      (inputTypes, outputTypes) = (inputs.map { $0.map(type) }, outputs.map(type))
      self.inputs = saved.inputs ? inputs : inputs.map { $0.map { Tensor.unsaved(like: $0) } }
      self.outputs = saved.outputs ? outputs : outputs.map { Tensor.unsaved(like: $0) }
    }

    /// The same node with nothing saved (after the reverse pass used it).
    func emptied() -> Record { Record(step: step, inputs: [], outputs: [], saving: .all) }
  }

  /// One pass. Recording, it keeps every value unless `pruning` (then, as an unrecorded pass, only
  /// the taps, outputs and initializers, besides what the records save). With `replay`, the pass
  /// starts from the values of a recorded pass (`base`) with those in `overriding` replaced (same
  /// shapes and dtypes), and runs only the nodes that read a replaced value or one such a node
  /// computed (`recomputed`: those values and the replaced ones); `boundary` lists the float
  /// values computed by skipped nodes that the run nodes read.
  private func forward(
    _ feeds: [String: Tensor], taps: Set<String>, scope: @escaping (String) -> Tensor?, recording: Bool, training: Bool,
    pruning: Bool = false, replay: (base: [Tensor?], overriding: [String: Tensor])? = nil
  ) throws -> (
    outputs: [Tensor], taps: [String: Tensor], values: [Tensor?], records: [Record], state: [String: Tensor], recomputed: Set<Int>,
    boundary: Set<Int>
  ) {
    var values = replay?.base ?? [Tensor?](repeating: nil, count: names.count)
    var recomputed = Set<Int>(), skippedOutputs = Set<Int>(), boundary = Set<Int>()
    if let replay {
      for (name, tensor) in replay.overriding {
        guard let slot = slotOf[name], let current = values[slot] else {
          throw RuntimeError(fusedAway.contains(name) ? "value '\(name)' was fused into a convolution; prepare the interpreter with it in `keep`" : "no value named '\(name)' to replace")
        }
        guard current.shape == tensor.shape, current.dtype == tensor.dtype else {
          throw RuntimeError("value '\(name)' is \(current.dtype) \(current.shapeDescription); its replacement is \(tensor.dtype) \(tensor.shapeDescription)")
        }
        values[slot] = tensor
        recomputed.insert(slot)
      }
    }
    let replaced = recomputed
    for (slot, tensor) in constants where replay == nil { values[slot] = tensor }
    for (info, slot, hasDefault) in inputSlots where replay == nil {
      if let fed = feeds[info.name] {
        try check(fed, against: info)
        values[slot] = fed
      } else if !hasDefault {
        let required = requiredInputs.map(\.name).joined(separator: ", ")
        throw RuntimeError("missing input '\(info.name)'; the model's inputs are: \(required)")
      }
    }
    for name in feeds.keys where !inputSlots.contains(where: { $0.info.name == name }) {
      throw RuntimeError("the model has no input '\(name)'; its inputs are: " + requiredInputs.map(\.name).joined(separator: ", "))
    }
    for (name, slot) in outerSlots where replay == nil {
      guard let value = scope(name) else { throw RuntimeError("value '\(name)' is not defined in this graph or an enclosing one") }
      values[slot] = value
    }
    let tapSlots = Set(taps.compactMap { slotOf[$0] })
    for name in taps where slotOf[name] == nil {
      if fusedAway.contains(name) {
        throw RuntimeError("value '\(name)' was fused into a convolution; prepare the interpreter with it in `keep`")
      }
      throw RuntimeError("no value named '\(name)' to tap; `distill inspect` lists the node outputs")
    }
    var tapped: [String: Tensor] = [:]
    var records: [Record] = []
    var state: [String: Tensor] = [:]
    let budget = memoryBudget
    for (index, step) in steps.enumerated() {
      if replay != nil {
        let reads = step.inputs.compactMap { $0 } + step.node.subgraphs.flatMap { $0.outerReferences.compactMap { slotOf[$0] } }
        guard reads.contains(where: recomputed.contains) else {
          skippedOutputs.formUnion(step.outputs.compactMap { $0 })
          continue
        }
        boundary.formUnion(reads.filter { skippedOutputs.contains($0) && !recomputed.contains($0) && values[$0]?.isFloat == true })
        recomputed.formUnion(step.outputs.compactMap { $0 })
      }
      var context = ExecutionContext(label: step.node.label, memoryBudget: budget) { name in
        if let slot = self.slotOf[name], let value = values[slot] { return value.planar() }
        return scope(name)
      }
      context.training = training
      if training { context.syncBatchStatistics = syncBatchStatistics }
      context.updateState = { name, value in state[name] = value }
      context.mayWriteChannelsLast = recording ? step.writesChannelsLastRecorded : step.writesChannelsLast
      context.recording = recording
      var inputs = step.inputs.map { $0.flatMap { values[$0] } }
      if !step.acceptsChannelsLast {
        for index in inputs.indices where inputs[index]?.channelsLast == true { inputs[index] = inputs[index]!.planar() }
      }
      let start = profile == nil ? 0 : DispatchTime.now().uptimeNanoseconds
      let results = try step.op.forward(inputs, context)
      if profile != nil {
        profile![step.node.opType, default: 0] += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
      }
      for (index, slot) in step.outputs.enumerated() {
        guard let slot else { continue }
        guard index < results.count else {
          throw RuntimeError("\(step.node.label): produced \(results.count) outputs, the node names \(step.outputs.count)")
        }
        if !replaced.contains(slot) { values[slot] = results[index] }
        if tapSlots.contains(slot) { tapped[names[slot]] = results[index].planar() }
      }
      if recording {
        let saved = (step.op as? any DifferentiableOperator)?.savedForBackward ?? .none
        records.append(Record(step: index, inputs: inputs, outputs: results, saving: saved))
      }
      if !recording || pruning {
        for slot in step.releases where !tapSlots.contains(slot) { values[slot] = nil }
      }
    }
    for name in taps { if let slot = slotOf[name], let value = values[slot] { tapped[name] = value.planar() } }
    let outputs = try outputSlots.enumerated().map { index, slot -> Tensor in
      guard let value = values[slot] else { throw RuntimeError("graph output '\(graph.outputs[index].name)' was not computed") }
      return value.planar()
    }
    return (outputs, tapped, values, records, state, recomputed, boundary)
  }

  /// The float initializers: the values training can update.
  public var parameterNames: [String] {
    graph.initializers.filter { $0.dataType.isFloatingPoint }.compactMap(\.name)
  }

  /// Empties the data of `graph`'s initializers (names, dtypes and dims stay). The interpreter
  /// computes with its own decoded copies (`parameter`), so a caller that keeps no other use for
  /// the model's tensor bytes (a distillation teacher) frees them.
  public func releaseInitializerData() {
    for index in graph.initializers.indices {
      graph.initializers[index].bytes = []
      graph.initializers[index].strings = []
    }
  }

  /// The current value of an initializer.
  public func parameter(_ name: String) -> Tensor? { slotOf[name].flatMap { constants[$0] } }

  /// Replaces the value of an initializer (same shape and dtype).
  public func setParameter(_ name: String, _ value: Tensor) throws {
    guard let slot = slotOf[name], let current = constants[slot] else {
      throw RuntimeError("no initializer named '\(name)'")
    }
    guard current.shape == value.shape, current.dtype == value.dtype else {
      throw RuntimeError("parameter '\(name)' is \(current.dtype) \(current.shapeDescription); got \(value.dtype) \(value.shapeDescription)")
    }
    constants[slot] = value
  }

  func slot(named name: String) -> Int? { slotOf[name] }
  func name(ofSlot slot: Int) -> String { names[slot] }
  func stepInfo(_ index: Int) -> (node: Node, op: any Operator, inputs: [Int?], outputs: [Int?]) {
    (steps[index].node, steps[index].op, steps[index].inputs, steps[index].outputs)
  }

  private func check(_ tensor: Tensor, against info: ValueInfo) throws {
    guard case .tensor(let type, let shape, _)? = info.type else { return }
    if type != .undefined && type != tensor.dtype {
      throw RuntimeError("input '\(info.name)' is \(tensor.dtype), the model declares \(type)")
    }
    guard let shape else { return }
    let declared = "[" + shape.map(\.description).joined(separator: ",") + "]"
    guard shape.count == tensor.rank else {
      throw RuntimeError("input '\(info.name)' has shape \(tensor.shapeDescription), the model declares \(declared)")
    }
    for (dim, actual) in zip(shape, tensor.shape) {
      if let value = dim.size, value != Int64(actual) {
        throw RuntimeError("input '\(info.name)' has shape \(tensor.shapeDescription), the model declares \(declared)")
      }
    }
  }
}
