import Foundation
import XCTest

@testable import DistillCore

/// An identity whose backward pass calls `ObserveBackward.hook` first: lets a test look at a tape
/// in the middle of its reverse pass.
struct ObserveBackward: DifferentiableOperator {
  nonisolated(unsafe) static var hook: () -> Void = {}

  init(_ node: Node, _ setup: OperatorSetup) throws {}

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] { [inputs[0]!] }

  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    Self.hook()
    return [outputGradients[0]]
  }
}

/// `Tape.gradients` with `releasing`: the same gradients as without, the values dropped while
/// the reverse pass runs, and the tape unusable afterwards.
final class TapeReleaseTests: XCTestCase {
  /// observed = Observe(x); a = observed * w; b = Relu(a); c = b + a (a read twice); y = sum(Sigmoid(c));
  /// z = x * u, an output nothing seeds.
  func makeInterpreter() throws -> Interpreter {
    var builder = GraphBuilder(name: "release")
    let x = builder.input("x", shape: [2, 3])
    let w = builder.parameter(Tensor(shape: [3], floats: [0.5, -1.5, 2]), name: "w")
    let u = builder.parameter(Tensor(shape: [2, 3], floats: [1, 2, 3, 4, 5, 6]), name: "u")
    let observed = builder.add("Identity", [x], hint: "observed")
    let a = builder.add("Mul", [observed, w], hint: "a")
    let b = builder.add("Relu", [a], hint: "b")
    let c = builder.add("Add", [b, a], hint: "c")
    let y = builder.reduceSum(builder.add("Sigmoid", [c], hint: "s"))
    let z = builder.add("Mul", [x, u], hint: "z")
    builder.output(y, shape: [])
    builder.output(z, shape: [2, 3])
    var model = builder.model
    let index = model.graph!.nodes.firstIndex { $0.outputs == [observed] }!
    (model.graph!.nodes[index].opType, model.graph!.nodes[index].domain) = ("Observe", "test")
    let standard = OperatorRegistry.standard
    var entries: [(domain: String, op: String, type: any Operator.Type)] = standard.names.map { name in
      let parts = name.components(separatedBy: "::")
      return (parts[0], parts[1], standard.lookup(domain: parts[0], op: parts[1])!)
    }
    entries.append(("test", "Observe", ObserveBackward.self))
    return try Interpreter(model: model, registry: OperatorRegistry(entries), fuse: false)
  }

  func testReleasingGivesTheSameGradientsAndEmptiesTheTape() throws {
    let interpreter = try makeInterpreter()
    let graph = interpreter.graph
    let loss = graph.outputs[0].name
    let a = graph.nodes.first { $0.opType == "Mul" && $0.inputs[1] == "w" }!.outputs[0]
    let later = graph.nodes.filter { ["Relu", "Add", "Sigmoid", "ReduceSum"].contains($0.opType) }.flatMap(\.outputs)
    XCTAssertEqual(later.count, 4)
    let feeds = ["x": Tensor(shape: [2, 3], floats: [0.3, -0.7, 1.1, -0.2, 0.9, 0.4])]
    let seeds = [loss: Tensor(shape: [], floats: [1])]
    let targets: Set<String> = ["x", "w", "u", a]

    var seenDuringKeep: [String: Bool] = [:]
    let kept = try interpreter.record(feeds)
    ObserveBackward.hook = { for name in later + ["x"] { seenDuringKeep[name] = kept.value(name) != nil } }
    let expected = try kept.gradients(seeds: seeds, targets: targets)

    var seenDuringRelease: [String: Bool] = [:]
    let consumed = try interpreter.record(feeds)
    ObserveBackward.hook = { for name in later + ["x"] { seenDuringRelease[name] = consumed.value(name) != nil } }
    let released = try consumed.gradients(seeds: seeds, targets: targets, releasing: true)
    ObserveBackward.hook = {}

    XCTAssertEqual(Set(released.keys), targets)
    for name in targets {
      XCTAssertEqual(released[name]?.shape, expected[name]?.shape, name)
      XCTAssertEqual(released[name]?.floats.map(\.bitPattern), expected[name]?.floats.map(\.bitPattern), name)
    }
    XCTAssertEqual(released["u"]?.floats, [0, 0, 0, 0, 0, 0], "a target the seeds do not reach gets zeros")
    XCTAssertNotEqual(released["x"]?.floats, [0, 0, 0, 0, 0, 0])

    // At the first node's backward the values of every later node are gone; its own input is not.
    XCTAssertEqual(seenDuringKeep, Dictionary(uniqueKeysWithValues: (later + ["x"]).map { ($0, true) }))
    XCTAssertEqual(seenDuringRelease, Dictionary(uniqueKeysWithValues: later.map { ($0, false) } + [("x", true)]))

    XCTAssertNotNil(kept.value(a), "without releasing the tape keeps its values")
    XCTAssertEqual(try kept.gradients(seeds: seeds, targets: ["w"])["w"]?.floats, expected["w"]?.floats)
    for name in ["x", a] + later { XCTAssertNil(consumed.value(name), name) }
    XCTAssertEqual(consumed.outputs.map(\.shape), [[], [2, 3]], "the outputs stay")
    XCTAssertThrowsError(try consumed.gradients(seeds: seeds, targets: ["w"])) { error in
      XCTAssertTrue("\(error)".contains("released by an earlier reverse pass"), "\(error)")
    }
    XCTAssertThrowsError(try consumed.replay(overriding: ["w": Tensor(shape: [3], floats: [1, 1, 1])])) { error in
      XCTAssertTrue("\(error)".contains("released by an earlier reverse pass"), "\(error)")
    }
  }

  /// A releasing replay leaves its base pass whole: the base's own reverse pass still sees every value.
  func testReleasingAReplayKeepsTheBasePass() throws {
    let interpreter = try makeInterpreter()
    let loss = interpreter.graph.outputs[0].name
    let base = try interpreter.record(["x": Tensor(shape: [2, 3], floats: [0.3, -0.7, 1.1, -0.2, 0.9, 0.4])])
    let seeds = [loss: Tensor(shape: [], floats: [1])]
    let replacement = Tensor(shape: [3], floats: [1, 2, -1])
    let expected = try base.replay(overriding: ["w": replacement]).replayGradients(seeds: seeds, targets: ["x"])
    let released = try base.replay(overriding: ["w": replacement]).replayGradients(seeds: seeds, targets: ["x"], releasing: true)
    XCTAssertEqual(released.gradients["x"]?.floats, expected.gradients["x"]?.floats)
    XCTAssertEqual(Set(released.baseSeeds.keys), Set(expected.baseSeeds.keys))
    for (name, seed) in expected.baseSeeds { XCTAssertEqual(released.baseSeeds[name]?.floats, seed.floats, name) }
    let full = try base.gradients(seeds: released.baseSeeds, targets: ["x"], releasing: true)
    XCTAssertEqual(full["x"]?.shape, [2, 3])
  }
}

/// What a recorded pass keeps: each node's declared `savedForBackward` values (empty stand-ins for
/// the others), and with `keeping` only the named values besides the outputs and initializers.
final class TapeSavingTests: XCTestCase {
  /// a = x * w; c = a + b; r = Relu(c); y = sum(r * r).
  func testANodeKeepsOnlyWhatItsBackwardReadsAndKeepingDropsTheRest() throws {
    var builder = GraphBuilder(name: "saving")
    let x = builder.input("x", shape: [2, 3]), b = builder.input("b", shape: [3])
    let w = builder.parameter(Tensor(shape: [3], floats: [0.5, -1.5, 2]), name: "w")
    let a = builder.add("Mul", [x, w], hint: "a")
    let c = builder.add("Add", [a, b], hint: "c")
    let r = builder.add("Relu", [c], hint: "r")
    let y = builder.reduceSum(builder.add("Mul", [r, r], hint: "square"))
    builder.output(y, shape: [])
    let interpreter = try Interpreter(model: builder.model, fuse: false)
    let feeds = ["x": Tensor(shape: [2, 3], floats: [0.3, -0.7, 1.1, -0.2, 0.9, 0.4]), "b": Tensor(shape: [3], floats: [0.2, 0.2, -0.3])]
    let full = try interpreter.record(feeds), pruned = try interpreter.record(feeds, keeping: [r])

    func record(_ tape: Tape, producing value: String) -> Interpreter.Record {
      tape.records.first { interpreter.stepInfo($0.step).outputs.contains(interpreter.slot(named: value)) }!
    }
    for tape in [full, pruned] {
      let (mul, add, relu) = (record(tape, producing: a), record(tape, producing: c), record(tape, producing: r))
      XCTAssertEqual(mul.inputs.map { $0?.count }, [6, 3], "Mul keeps its inputs")
      XCTAssertEqual(mul.outputs.map(\.shape), [[0]], "and not its product")
      XCTAssertEqual(add.inputs.map { $0?.shape }, [[0], [0]], "Add keeps nothing")
      XCTAssertEqual(add.outputs.map(\.shape), [[0]])
      XCTAssertEqual(add.inputTypes.map { $0?.shape }, [[2, 3], [3]], "but knows the shapes its gradients are summed to")
      XCTAssertEqual(relu.inputs.map { $0?.shape }, [[0]], "Relu keeps its result only")
      XCTAssertEqual(relu.outputs.map(\.count), [6])
    }
    XCTAssertNotNil(full.value(a))
    XCTAssertNotNil(full.value(c))
    XCTAssertNil(pruned.value(a), "read by Add only, which does not keep it")
    XCTAssertNil(pruned.value(c))
    XCTAssertNil(pruned.value("x"))
    XCTAssertEqual(pruned.value(r)?.floats, full.value(r)?.floats, "kept as asked")
    XCTAssertEqual(pruned.value("w")?.floats, [0.5, -1.5, 2], "initializers stay")
    XCTAssertEqual(pruned.outputs[0].floats, full.outputs[0].floats)

    let seeds = [y: Tensor(shape: [], floats: [1])]
    let targets: Set<String> = ["x", "b", "w"]
    let expected = try full.gradients(seeds: seeds, targets: targets)
    let got = try pruned.gradients(seeds: seeds, targets: targets, releasing: true)
    for name in targets { XCTAssertEqual(got[name]?.floats, expected[name]?.floats, name) }
    XCTAssertEqual(got["b"]?.shape, [3])
    XCTAssertEqual(got["x"]!.floats.map { $0 == 0 }, [false, false, false, false, true, false], "Relu's mask, read from its result")

    XCTAssertThrowsError(try interpreter.record(feeds, keeping: [c]).gradients(seeds: [a: Tensor(shape: [2, 3], floats: [1, 1, 1, 1, 1, 1])], targets: ["x"])) {
      XCTAssertTrue("\($0)".contains("did not keep '\(a)' to seed"), "\($0)")
    }
    XCTAssertThrowsError(try interpreter.record(feeds, keeping: [r]).replay(overriding: ["w": Tensor(shape: [3], floats: [1, 1, 1])])) {
      XCTAssertTrue("\($0)".contains("replay needs every value"), "\($0)")
    }
    XCTAssertThrowsError(try interpreter.record(feeds, keeping: ["nothing"])) {
      XCTAssertTrue("\($0)".contains("no value named 'nothing'"), "\($0)")
    }
  }
}
