import DistillCore
import DistillTrain
import Foundation
import XCTest

/// The pieces of data-parallel training that need no MPI: slicing, the `sync_bn` setting, and
/// synchronized BatchNormalization on two threads standing in for two processes.
final class DataParallelTests: XCTestCase {
  func testSlicesCoverTheBatchOnceInOrderWithSizesWithinOne() {
    for batch in 1...17 {
      for size in 1...batch {
        let slices = (0..<size).map { DataParallel.slice(rank: $0, of: size, batch: batch) }
        XCTAssertEqual(slices.first?.lowerBound, 0)
        XCTAssertEqual(slices.last?.upperBound, batch)
        for (a, b) in zip(slices, slices.dropFirst()) { XCTAssertEqual(a.upperBound, b.lowerBound) }
        let counts = slices.map(\.count)
        XCTAssertLessThanOrEqual(counts.max()! - counts.min()!, 1, "batch \(batch) on \(size)")
      }
    }
  }

  func testSyncBatchNormalizationIsCheckedWithTheConfigAndKeepsOldHashes() throws {
    let base = """
      teacher: t.onnx
      student: s.onnx
      data: {images: images}
      losses: [{type: mse, teacher: a, student: a}]
      train: {steps: 10, batch: 4, optimizer: {type: sgd, lr: 0.1}}
      """
    func problems(_ extra: String) -> String {
      do {
        _ = try DistillConfig(yaml: base + "\n" + extra, file: "x.yaml")
        return ""
      } catch { return "\(error)" }
    }
    XCTAssertTrue(problems("bn: frozen\nsync_bn: true").contains("sync_bn: true synchronizes batch statistics, which bn: frozen does not use"))
    XCTAssertTrue(problems("sync_bm: true").contains("sync_bm: unknown key (did you mean 'sync_bn'?)"), problems("sync_bm: true"))
    XCTAssertTrue(problems("sync_bn: 3").contains("sync_bn: expected true or false"))
    let plain = try DistillConfig(yaml: base, file: "x.yaml"), off = try DistillConfig(yaml: base + "\nsync_bn: false", file: "x.yaml")
    let on = try DistillConfig(yaml: base + "\nsync_bn: true", file: "x.yaml")
    XCTAssertEqual(plain.training.hash, off.training.hash, "configs without sync_bn keep the hash their checkpoints hold")
    XCTAssertNotEqual(plain.training.hash, on.training.hash)
  }

  /// A batch of 5 normalized on one "process" and, cut 3 + 2, on two threads synchronizing through
  /// `Collective`: the same outputs, running statistics, input gradients and (summed) scale and
  /// bias gradients. Without synchronization the outputs differ.
  func testSynchronizedBatchNormalizationEqualsTheWholeBatch() throws {
    var random = SplitMix64(seed: 7)
    func values(_ count: Int, _ scale: Float = 1, _ offset: Float = 0) -> [Float] {
      (0..<count).map { _ in (random.nextUniform() * 2 - 1) * scale + offset }
    }
    let channels = 3, plane = 16, shape = [5, channels, 4, 4]
    var builder = GraphBuilder(name: "bn")
    let x = builder.input("x", shape: [nil, channels, 4, 4])
    let scale = builder.parameter(Tensor(shape: [channels], floats: values(channels, 0.5, 1)), name: "scale")
    let bias = builder.parameter(Tensor(shape: [channels], floats: values(channels)), name: "bias")
    let mean = builder.parameter(Tensor(shape: [channels], floats: values(channels)), name: "mean")
    let variance = builder.parameter(Tensor(shape: [channels], floats: values(channels, 0.1, 1)), name: "var")
    let y = builder.add("BatchNormalization", [x, scale, bias, mean, variance], hint: "y")
    builder.output(y)
    let model = builder.model
    let input = values(5 * channels * plane, 2, 0.5), seed = values(5 * channels * plane)
    let targets: Set<String> = [x, scale, bias]

    func pass(_ rows: Range<Int>, _ collective: (any Collective)?) throws -> (y: [Float], state: [String: Tensor], gradients: [String: Tensor]) {
      let interpreter = try Interpreter(model: model, foldBatchNorm: false)
      interpreter.syncBatchStatistics = collective
      let part = (rows.lowerBound * channels * plane)..<(rows.upperBound * channels * plane)
      let rowShape = [rows.count] + shape.dropFirst()
      let tape = try interpreter.record([x: Tensor(shape: rowShape, floats: Array(input[part]))], training: true)
      let gradients = try tape.gradients(seeds: [y: Tensor(shape: rowShape, floats: Array(seed[part]))], targets: targets)
      return (tape.value(y)!.floats, tape.stateUpdates, gradients)
    }
    let whole = try pass(0..<5, nil)
    let rendezvous = Rendezvous(size: 2)
    var parts: [(y: [Float], state: [String: Tensor], gradients: [String: Tensor])?] = [nil, nil]
    var failures: [Error] = []
    let lock = NSLock()
    DispatchQueue.concurrentPerform(iterations: 2) { rank in
      do {
        let result = try pass(rank == 0 ? 0..<3 : 3..<5, ThreadCollective(rendezvous, rank: rank))
        lock.withLock { parts[rank] = result }
      } catch {
        lock.withLock { failures.append(error) }
      }
    }
    XCTAssertTrue(failures.isEmpty, "\(failures)")
    let first = try XCTUnwrap(parts[0]), second = try XCTUnwrap(parts[1])
    func assertClose(_ a: [Float], _ b: [Float], _ what: String) {
      XCTAssertEqual(a.count, b.count, what)
      let scale = a.map(abs).max() ?? 1
      for (u, v) in zip(a, b) where abs(u - v) > 1e-5 * scale {
        XCTFail("\(what): \(u) vs \(v)")
        return
      }
    }
    assertClose(whole.y, first.y + second.y, "Y")
    assertClose(whole.gradients[x]!.floats, first.gradients[x]!.floats + second.gradients[x]!.floats, "dX")
    for name in [scale, bias] {
      assertClose(whole.gradients[name]!.floats, zip(first.gradients[name]!.floats, second.gradients[name]!.floats).map(+), "d\(name)")
    }
    for name in [mean, variance] {
      assertClose(whole.state[name]!.floats, first.state[name]!.floats, "running \(name) (process 0)")
      assertClose(whole.state[name]!.floats, second.state[name]!.floats, "running \(name) (process 1)")
    }
    let alone = try pass(0..<3, nil)
    XCTAssertGreaterThan(zip(alone.y, whole.y).map { abs($0 - $1) }.max()!, 1e-3, "a slice's own statistics differ from the batch's")
  }
}

/// Element-wise sums among `size` threads: each call waits for all, then every thread gets the
/// sum in thread order.
final class Rendezvous: @unchecked Sendable {
  private let size: Int
  private let condition = NSCondition()
  private var pending: [[Double]?]
  private var result: [Double] = []
  private var arrived = 0
  private var generation = 0

  init(size: Int) {
    self.size = size
    pending = Array(repeating: nil, count: size)
  }

  func sum(_ values: [Double], rank: Int) -> [Double] {
    condition.lock()
    defer { condition.unlock() }
    let mine = generation
    pending[rank] = values
    arrived += 1
    if arrived == size {
      result = (0..<values.count).map { i in pending.reduce(0) { $0 + $1![i] } }
      pending = Array(repeating: nil, count: size)
      arrived = 0
      generation += 1
      condition.broadcast()
    } else {
      while generation == mine { condition.wait() }
    }
    return result
  }
}

/// One thread's side of a `Rendezvous`, as a `Collective`.
final class ThreadCollective: Collective, @unchecked Sendable {
  private let rendezvous: Rendezvous
  private let rank: Int
  init(_ rendezvous: Rendezvous, rank: Int) {
    self.rendezvous = rendezvous
    self.rank = rank
  }
  func sum(_ values: inout [Double]) throws { values = rendezvous.sum(values, rank: rank) }
}
