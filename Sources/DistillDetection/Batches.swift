import DistillCore
import Foundation

/// The ground truth of one image of a batch, in network-input pixels.
public struct DetectionTarget: Sendable {
  public var boxes: [[Float]]
  public var labels: [Int]
  public var crowd: [Bool]
  /// Maps this image's predictions back to its original pixels.
  public var transform: BoxTransform
  public var source: String
  /// The sample's index in the source.
  public var index: Int
}

/// `images` is `[N, 3, H, W]`; `targets[n]` belongs to image `n`.
public struct DetectionBatch: Sendable {
  public var images: Tensor
  public var targets: [DetectionTarget]
  public var epoch: Int
  /// The batch's position in its epoch.
  public var index: Int
}

/// Cuts a source into augmented batches, shuffled per epoch.
///
/// Everything random is a function of `seed`: an epoch's order comes from the stream keyed by the
/// epoch, and the augmentation of the sample at position `p` of epoch `e` from the stream keyed by
/// `(e, p)`. So a batch is the same whichever thread makes it and whether or not batches are
/// prefetched, and `batch(_:epoch:)` can recompute any one (to resume a run mid-epoch).
public final class BatchLoader: Sendable {
  public let source: any DetectionSource
  public let augmenter: Augmenter
  public let batchSize: Int
  public let seed: UInt64
  public let shuffle: Bool
  /// Leave out the last, smaller batch of an epoch.
  public let dropLast: Bool
  /// Batches made ahead on a background thread while the caller works on the current one (0: made
  /// on the caller's thread when asked for).
  public let prefetch: Int
  /// With `skipUnreadable`, a sample that cannot be read (a corrupt image) is replaced by the next
  /// readable one in the epoch's order and reported here, naming the file; without it, it fails its
  /// batch. Called from the loading thread.
  public let skipUnreadable: (@Sendable (String) -> Void)?
  /// The positions within each batch this loader makes (`0..<batchSize`: whole batches). A
  /// data-parallel process makes its slice of every global batch: the same samples, augmented
  /// the same way, as the whole batch holds at those positions.
  public let slice: Range<Int>
  private let skippedCount = SkipCounter()

  /// Samples skipped as unreadable so far (each time one is met).
  public var skipped: Int { skippedCount.value }

  public init(
    source: any DetectionSource, augmenter: Augmenter, batchSize: Int, seed: UInt64, shuffle: Bool = true,
    dropLast: Bool = false, prefetch: Int = 1, skipUnreadable: (@Sendable (String) -> Void)? = nil, slice: Range<Int>? = nil
  ) {
    self.skipUnreadable = skipUnreadable
    self.slice = slice ?? 0..<batchSize
    precondition(batchSize > 0 && prefetch >= 0 && self.slice.lowerBound >= 0 && self.slice.upperBound <= batchSize)
    self.source = source
    self.augmenter = augmenter
    self.batchSize = batchSize
    self.seed = seed
    self.shuffle = shuffle
    self.dropLast = dropLast
    self.prefetch = prefetch
  }

  public var batchesPerEpoch: Int {
    dropLast ? source.count / batchSize : (source.count + batchSize - 1) / batchSize
  }

  /// The source indices in epoch `epoch`'s order (a Fisher-Yates shuffle when `shuffle`).
  public func order(epoch: Int) -> [Int] {
    var order = Array(0..<source.count)
    guard shuffle else { return order }
    var random = SplitMix64(seed: seed).derived(1, UInt64(epoch))
    for i in stride(from: order.count - 1, to: 0, by: -1) {
      order.swapAt(i, Int(random.next() % UInt64(i + 1)))
    }
    return order
  }

  /// Makes batch `index` of epoch `epoch` (its `slice`) on the calling thread. Throws what decoding a sample
  /// throws (naming its file).
  public func batch(_ index: Int, epoch: Int) throws -> DetectionBatch {
    try batch(index, epoch: epoch, order: order(epoch: epoch))
  }

  func batch(_ index: Int, epoch: Int, order: [Int]) throws -> DetectionBatch {
    let first = index * batchSize
    let positions = min(order.count, first + slice.lowerBound)..<min(order.count, first + slice.upperBound)
    let options = augmenter.options
    var floats: [Float] = []
    floats.reserveCapacity(positions.count * 3 * options.height * options.width)
    var targets: [DetectionTarget] = []
    let base = SplitMix64(seed: seed)
    for position in positions {
      var random = base.derived(2, UInt64(epoch), UInt64(position))
      let (sample, sourceIndex) = try readableSample(at: position, order: order)
      let augmented = augmenter(sample, random: &random)
      floats += augmented.image.floats
      targets.append(
        DetectionTarget(
          boxes: augmented.boxes, labels: augmented.labels, crowd: augmented.crowd, transform: augmented.transform,
          source: augmented.source, index: sourceIndex))
    }
    return DetectionBatch(
      images: Tensor(shape: [positions.count, 3, options.height, options.width], floats: floats), targets: targets,
      epoch: epoch, index: index)
  }

  /// The sample at `position` of `order`, or with `skipUnreadable` the next readable one after it.
  private func readableSample(at position: Int, order: [Int]) throws -> (DetectionSample, Int) {
    guard let report = skipUnreadable else { return (try source.sample(at: order[position]), order[position]) }
    var lastError: Error?
    for step in 0..<order.count {
      let index = order[(position + step) % order.count]
      do {
        return (try source.sample(at: index), index)
      } catch {
        skippedCount.increment()
        report("skipped an unreadable sample: \(error)")
        lastError = error
      }
    }
    throw lastError ?? RuntimeError("no readable sample")
  }

  /// The batches of epoch `epoch`, in order. With `prefetch > 0` a background thread starts making
  /// them at once, at most `prefetch` ahead of the caller; it stops at the first failure, which the
  /// caller receives from `next()` at that batch.
  public func epoch(_ epoch: Int) -> EpochBatches { EpochBatches(loader: self, epoch: epoch) }
}

/// One epoch's batches. Call `next()` until it returns nil; `close()` (or dropping the object)
/// stops the background thread and waits for it, so nothing runs after it returns.
public final class EpochBatches {
  private let loader: BatchLoader
  private let epoch: Int
  private let order: [Int]
  private var position = 0
  private var failed = false
  private let prefetcher: Prefetcher?

  init(loader: BatchLoader, epoch: Int) {
    self.loader = loader
    self.epoch = epoch
    let order = loader.order(epoch: epoch)
    self.order = order
    let count = loader.batchesPerEpoch
    prefetcher = loader.prefetch > 0 && count > 0
      ? Prefetcher(count: count, capacity: loader.prefetch) { try loader.batch($0, epoch: epoch, order: order) } : nil
  }

  deinit { close() }

  /// The next batch, nil after the last. Throws the error that making this batch threw; after an
  /// error the epoch is over (nil from then on).
  public func next() throws -> DetectionBatch? {
    guard !failed, position < loader.batchesPerEpoch else { return nil }
    defer { position += 1 }
    do {
      if let prefetcher { return try prefetcher.take(position).get() }
      return try loader.batch(position, epoch: epoch, order: order)
    } catch {
      failed = true
      prefetcher?.close()
      throw error
    }
  }

  /// Stops making batches ahead and waits for the background thread to finish. Idempotent.
  public func close() { prefetcher?.close() }
}

/// A bounded producer on one background thread. All mutable state is guarded by `condition`, so
/// the class is Sendable by that discipline.
final class Prefetcher: @unchecked Sendable {
  private let condition = NSCondition()
  private var ready: [Int: Result<DetectionBatch, Error>] = [:]
  private var taken = 0
  private var cancelled = false
  private var finished = false
  private let count: Int
  private let capacity: Int

  init(count: Int, capacity: Int, make: @escaping @Sendable (Int) throws -> DetectionBatch) {
    self.count = count
    self.capacity = capacity
    let thread = Thread { [self] in run(make) }
    thread.name = "distill.batches"
    thread.start()
  }

  private func run(_ make: (Int) throws -> DetectionBatch) {
    for index in 0..<count {
      condition.lock()
      while index - taken >= capacity && !cancelled { condition.wait() }
      let stop = cancelled
      condition.unlock()
      if stop { break }
      let result = Result { try make(index) }
      condition.lock()
      ready[index] = result
      condition.broadcast()
      condition.unlock()
      if case .failure = result { break }
    }
    condition.lock()
    finished = true
    condition.broadcast()
    condition.unlock()
  }

  /// Waits for batch `index` (taken in order) and hands it over.
  func take(_ index: Int) -> Result<DetectionBatch, Error> {
    condition.lock()
    defer { condition.unlock() }
    while ready[index] == nil && !finished { condition.wait() }
    taken = index + 1
    condition.broadcast()
    guard let result = ready.removeValue(forKey: index) else {
      return .failure(RuntimeError("batch \(index) was not made: the loader was closed"))
    }
    return result
  }

  func close() {
    condition.lock()
    cancelled = true
    condition.broadcast()
    while !finished { condition.wait() }
    ready.removeAll()
    condition.unlock()
  }
}

/// A thread-safe count.
final class SkipCounter: @unchecked Sendable {
  private let lock = NSLock()
  private var count = 0
  func increment() { lock.lock(); count += 1; lock.unlock() }
  var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
