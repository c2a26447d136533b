/// glibc's `mallopt` (declared in malloc.h, which the Glibc module does not export).
@_silgen_name("mallopt") private func mallopt(_ parameter: Int32, _ value: Int32) -> Int32

public enum Memory {
  /// Makes glibc keep freed memory for reuse instead of returning it to the kernel: every forward
  /// pass allocates the same large activations again, and fresh pages from the kernel cost more
  /// page faults than most kernels take to run (onnxruntime keeps an arena for the same reason).
  public static func keepFreedMemory() {
    #if os(Linux)
      let trimThreshold: Int32 = -1, mmapMax: Int32 = -4  // M_TRIM_THRESHOLD, M_MMAP_MAX
      _ = mallopt(mmapMax, 0)
      // The threshold is a size_t inside glibc: -1 becomes SIZE_MAX, so the heap is never trimmed
      // (Int32.max would still trim after a training step frees more than 2 GiB).
      _ = mallopt(trimThreshold, -1)
    #endif
  }
}
