import DistillCore
import Foundation

/// One process's share of a data-parallel run (`mpirun -np N distill train`): every global batch of
/// `batch` samples is cut into `size` contiguous slices, sizes differing by at most one, and this
/// process trains on slice `rank`.
///
/// A loss that is a mean over samples is, over the global batch, the slices' means weighted by
/// their share of the batch (`weight`), whatever the slice sizes. So each process seeds its backward
/// pass with `weight` times its loss's gradient and the gradients are summed over the processes:
/// the update is the one a single process would make on the whole batch, and logged values are
/// the same weighted sums.
public struct DataParallel {
  public let communicator: any Communicator
  /// The global batch (`train.batch`).
  public let batch: Int
  /// This process's positions within every global batch.
  public let slice: Range<Int>
  /// Synchronize BatchNormalization's batch statistics across the processes (`sync_bn`).
  public let syncBatchNormalization: Bool
  /// Gradients are summed in buckets of at most this many floats (one `MPI_Allreduce` each).
  public static let bucketFloats = 1 << 22

  public var rank: Int { communicator.rank }
  public var size: Int { communicator.size }
  /// This slice's share of the global batch.
  public var weight: Float { Float(slice.count) / Float(batch) }

  /// Throws when the batch has fewer samples than there are processes.
  public init(communicator: any Communicator, batch: Int, syncBatchNormalization: Bool) throws {
    guard batch >= communicator.size else {
      throw TrainingError.invalidConfig("train.batch \(batch) is smaller than the \(communicator.size) processes: each needs at least one sample of every batch")
    }
    self.communicator = communicator
    self.batch = batch
    self.syncBatchNormalization = syncBatchNormalization
    slice = Self.slice(rank: communicator.rank, of: communicator.size, batch: batch)
  }

  /// Slice `rank` of `size` of `0..<batch`: the first `batch % size` slices hold one sample more.
  public static func slice(rank: Int, of size: Int, batch: Int) -> Range<Int> {
    let base = batch / size, extra = batch % size
    let start = rank * base + min(rank, extra)
    return start..<(start + base + (rank < extra ? 1 : 0))
  }

  /// The global loss and terms from this process's: `weight`-weighted sums over the processes.
  /// Terms must have the same names on every process.
  func globalValues(loss: Float, terms: [String: Float]) throws -> (loss: Float, terms: [String: Float]) {
    let names = terms.keys.sorted()
    var values = ([loss] + names.map { terms[$0]! }).map { Double($0) * Double(weight) }
    try communicator.sum(&values)
    return (Float(values[0]), Dictionary(uniqueKeysWithValues: zip(names, values.dropFirst().map { Float($0) })))
  }

  /// Scales each tensor by `weight` (the seeds of this slice's share of the global loss).
  func weighted(_ tensors: [String: Tensor]) -> [String: Tensor] {
    let factor = weight
    guard factor != 1 else { return tensors }
    return tensors.mapValues { tensor in
      var scaled = tensor
      scaled.floats = tensor.floats.map { $0 * factor }
      return scaled
    }
  }

  /// Replaces every gradient with its sum over the processes, reducing them in buckets of
  /// `bucketFloats` (a tensor larger than a bucket gets one of its own).
  func sum(_ gradients: inout [NamedTensor]) throws {
    var start = 0
    while start < gradients.count {
      var end = start, count = 0
      while end < gradients.count, end == start || count + gradients[end].tensor.count <= Self.bucketFloats {
        count += gradients[end].tensor.count
        end += 1
      }
      var bucket: [Float] = []
      bucket.reserveCapacity(count)
      for index in start..<end { bucket += gradients[index].tensor.floats }
      try communicator.sum(&bucket)
      var offset = 0
      for index in start..<end {
        let n = gradients[index].tensor.count
        gradients[index].tensor.floats = Array(bucket[offset..<(offset + n)])
        offset += n
      }
      start = end
    }
  }

  /// BatchNormalization running statistics averaged over the processes (each process's come from
  /// its own slice unless they are synchronized), so that every process keeps the same.
  func averaged(_ statistics: [String: Tensor]) throws -> [String: Tensor] {
    let names = statistics.keys.sorted()
    var values = names.flatMap { statistics[$0]!.floats.map(Double.init) }
    try communicator.sum(&values)
    var result: [String: Tensor] = [:], offset = 0
    for name in names {
      var tensor = statistics[name]!
      let n = tensor.count
      tensor.floats = values[offset..<(offset + n)].map { Float($0 / Double(size)) }
      result[name] = tensor
      offset += n
    }
    return result
  }

  /// Whether any process asks for `flag` (a stop request, say): the same answer on every process.
  public func any(_ flag: Bool) throws -> Bool {
    var value = [flag ? 1.0 : 0.0]
    try communicator.sum(&value)
    return value[0] > 0
  }
}
