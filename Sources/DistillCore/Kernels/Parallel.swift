import Dispatch
import Foundation

/// Splits loops across the cores.
public enum Parallel {
  /// Upper bound on the threads `forEach` uses; 1 runs everything serially.
  nonisolated(unsafe) public static var threads = ProcessInfo.processInfo.activeProcessorCount

  /// Runs `body(0..<count)` on all cores when `work` (elements touched) is large enough to pay for
  /// the threads, else serially. `body` must only write to disjoint memory per index.
  public static func forEach(_ count: Int, work: Int = .max, _ body: (Int) -> Void) {
    guard count > 1, work > 1 << 15, threads > 1 else {
      for index in 0..<count { body(index) }
      return
    }
    withoutActuallyEscaping(body) { body in
      nonisolated(unsafe) let shared = body
      DispatchQueue.concurrentPerform(iterations: count) { shared($0) }
    }
  }

  /// Runs `body` over `0..<count` split into a few contiguous ranges per thread, in parallel when
  /// `work` (elements touched) is large enough, else as one range.
  public static func forEachRange(_ count: Int, work: Int, _ body: (Range<Int>) -> Void) {
    guard count > 1, work > 1 << 15, threads > 1 else {
      if count > 0 { body(0..<count) }
      return
    }
    let chunks = min(count, threads * 4)
    forEach(chunks, work: work) { chunk in
      let range = (count * chunk / chunks)..<(count * (chunk + 1) / chunks)
      if !range.isEmpty { body(range) }
    }
  }
}
