import DistillCore
import DistillDetection
import Foundation
import XCTest

/// Counts calls under a lock: the loader reads the source from its background thread.
final class CallCounter: @unchecked Sendable {
  private let lock = NSLock()
  private var value = 0
  func increment() { lock.lock(); value += 1; lock.unlock() }
  var count: Int { lock.lock(); defer { lock.unlock() }; return value }
}

/// Synthetic images whose pixels and box depend on the index; `failing` throws.
struct SyntheticSource: DetectionSource {
  let count: Int
  var failing: Set<Int> = []
  let calls = CallCounter()
  let delay: TimeInterval
  var classNames: [String] { ["a", "b", "c"] }

  init(count: Int, failing: Set<Int> = [], delay: TimeInterval = 0) {
    self.count = count
    self.failing = failing
    self.delay = delay
  }

  func sample(at index: Int) throws -> DetectionSample {
    calls.increment()
    if delay > 0 { Thread.sleep(forTimeInterval: delay) }
    if failing.contains(index) { throw RuntimeError("sample\(index).png: corrupt") }
    let width = 20 + index % 7, height = 15 + index % 5
    let pixels = (0..<(width * height * 3)).map { UInt8(($0 * 31 + index * 17) % 256) }
    let box: [Float] = [Float(index % 5), 1, Float(index % 5 + 8), 12]
    return DetectionSample(
      image: Image(width: width, height: height, pixels: pixels), boxes: [box], labels: [index % 3], crowd: [false],
      source: "sample\(index).png")
  }
}

final class WarningLog: @unchecked Sendable {
  private let lock = NSLock()
  private var lines: [String] = []
  func append(_ line: String) { lock.lock(); lines.append(line); lock.unlock() }
  var messages: [String] { lock.lock(); defer { lock.unlock() }; return lines }
}

final class BatchTests: XCTestCase {
  let augmenter = Augmenter(AugmentOptions(width: 16, height: 16, flipProbability: 0.5, scaleJitter: 0.6...1.4, brightness: 0.2))

  func collect(_ loader: BatchLoader, epoch: Int) throws -> [DetectionBatch] {
    let batches = loader.epoch(epoch)
    var out: [DetectionBatch] = []
    while let batch = try batches.next() { out.append(batch) }
    return out
  }

  func testSameSeedSameBatchesWithAndWithoutPrefetch() throws {
    let source = SyntheticSource(count: 11)
    var runs: [[DetectionBatch]] = []
    for prefetch in [0, 1, 2] {
      let loader = BatchLoader(source: source, augmenter: augmenter, batchSize: 4, seed: 42, prefetch: prefetch)
      runs.append(try collect(loader, epoch: 0) + collect(loader, epoch: 1))
    }
    for run in runs {
      XCTAssertEqual(run.map { $0.images.shape }, [[4, 3, 16, 16], [4, 3, 16, 16], [3, 3, 16, 16], [4, 3, 16, 16], [4, 3, 16, 16], [3, 3, 16, 16]])
      XCTAssertEqual(run.map { $0.images.floats }, runs[0].map { $0.images.floats })
      XCTAssertEqual(run.map { $0.targets.map(\.boxes) }, runs[0].map { $0.targets.map(\.boxes) })
      XCTAssertEqual(run.map { $0.targets.map(\.index) }, runs[0].map { $0.targets.map(\.index) })
      XCTAssertEqual(run.map { $0.targets.map(\.transform) }, runs[0].map { $0.targets.map(\.transform) })
    }
    let epoch0 = runs[0][0..<3].flatMap { $0.targets.map(\.index) }, epoch1 = runs[0][3..<6].flatMap { $0.targets.map(\.index) }
    XCTAssertEqual(epoch0.sorted(), Array(0..<11), "an epoch visits every sample once")
    XCTAssertEqual(epoch1.sorted(), Array(0..<11))
    XCTAssertNotEqual(epoch0, epoch1, "each epoch is shuffled anew")
    XCTAssertNotEqual(epoch0, Array(0..<11))

    let other = try collect(BatchLoader(source: source, augmenter: augmenter, batchSize: 4, seed: 43), epoch: 0)
    XCTAssertNotEqual(other.flatMap { $0.targets.map(\.index) }, epoch0, "another seed, another order")
    let loader = BatchLoader(source: source, augmenter: augmenter, batchSize: 4, seed: 42)
    XCTAssertEqual(try loader.batch(1, epoch: 1).images.floats, runs[0][4].images.floats, "any batch can be recomputed alone")
  }

  func testDropLastAndUnshuffledOrder() throws {
    let loader = BatchLoader(source: SyntheticSource(count: 10), augmenter: augmenter, batchSize: 4, seed: 1, shuffle: false, dropLast: true)
    let batches = try collect(loader, epoch: 3)
    XCTAssertEqual(batches.map { $0.targets.map(\.index) }, [[0, 1, 2, 3], [4, 5, 6, 7]])
  }

  func testAFailingSampleFailsItsBatchAndEndsTheEpoch() throws {
    for prefetch in [0, 2] {
      let loader = BatchLoader(
        source: SyntheticSource(count: 12, failing: [7]), augmenter: augmenter, batchSize: 3, seed: 9, shuffle: false, prefetch: prefetch)
      let batches = loader.epoch(0)
      XCTAssertEqual(try batches.next()?.index, 0)
      XCTAssertEqual(try batches.next()?.index, 1)
      XCTAssertThrowsError(try batches.next()) { error in
        XCTAssertTrue("\(error)".contains("sample7.png"), "\(error)")
      }
      XCTAssertNil(try batches.next())
    }
  }

  /// Training skips a corrupt image with a warning naming it; the batch takes the next sample.
  func testUnreadableSamplesAreSkippedWithAWarning() throws {
    let warnings = WarningLog()
    let loader = BatchLoader(
      source: SyntheticSource(count: 12, failing: [7]), augmenter: augmenter, batchSize: 3, seed: 9, shuffle: false, prefetch: 1,
      skipUnreadable: { warnings.append($0) })
    let batches = try collect(loader, epoch: 0)
    XCTAssertEqual(batches.count, 4)
    XCTAssertEqual(batches[2].targets.map(\.index), [6, 8, 8], "position 7 takes the next readable sample")
    XCTAssertEqual(loader.skipped, 1)
    XCTAssertEqual(warnings.messages.count, 1)
    XCTAssertTrue(warnings.messages[0].contains("sample7.png"), warnings.messages[0])
  }

  func testPrefetchIsBoundedAndStopsOnClose() throws {
    let source = SyntheticSource(count: 40, delay: 0.002)
    let loader = BatchLoader(source: source, augmenter: augmenter, batchSize: 2, seed: 5, prefetch: 2)
    let batches = loader.epoch(0)
    _ = try batches.next()
    Thread.sleep(forTimeInterval: 0.3)
    XCTAssertLessThanOrEqual(source.calls.count, (1 + 2) * 2, "at most 2 batches ahead of the caller")
    XCTAssertGreaterThanOrEqual(source.calls.count, (1 + 2) * 2, "the next batches were prepared in the background")
    batches.close()
    let after = source.calls.count
    Thread.sleep(forTimeInterval: 0.1)
    XCTAssertEqual(source.calls.count, after, "nothing runs after close")

    var dropped: EpochBatches? = loader.epoch(1)
    _ = try dropped?.next()
    dropped = nil
    let afterDrop = source.calls.count
    Thread.sleep(forTimeInterval: 0.1)
    XCTAssertEqual(source.calls.count, afterDrop, "dropping the epoch stops its thread")
  }

  func testYOLODatasetThroughTheLoader() throws {
    let yolo = dataFixtures.appendingPathComponent("yolo")
    let dataset = try YOLODataset(images: yolo.appendingPathComponent("images").path, names: yolo.appendingPathComponent("data.yaml").path)
    let loader = BatchLoader(source: dataset, augmenter: Augmenter(AugmentOptions(width: 32, height: 32)), batchSize: 2, seed: 0, shuffle: false)
    let batches = try collect(loader, epoch: 0)
    XCTAssertEqual(batches.map { $0.images.shape }, [[2, 3, 32, 32], [1, 3, 32, 32]])
    let a = batches[0].targets[0]
    XCTAssertEqual(a.labels, [0, 2, 2])
    XCTAssertEqual(a.transform.toOriginal(a.boxes[0]), [15, 7.5, 25, 22.5])
  }
}
