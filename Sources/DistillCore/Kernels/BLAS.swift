import CBLAS
import Foundation

/// Single-precision matrix multiply through OpenBLAS (the only file that calls it):
/// C = alpha * op(A) * op(B) + beta * C, row-major, op(X) = X or X^T.
///
/// OpenBLAS is loaded on first use rather than linked, so that it picks its kernels for this CPU:
/// machines often export `OPENBLAS_CORETYPE` (this project's image sets `Haswell`) for other
/// programs' sake, which on an AVX-512 CPU makes sgemm 2-2.5x slower. The inherited value is
/// ignored while OpenBLAS loads; `DISTILL_OPENBLAS_CORETYPE` pins a kernel family instead.
public enum BLAS {
  private typealias Sgemm = @convention(c) (
    CBLAS_ORDER, CBLAS_TRANSPOSE, CBLAS_TRANSPOSE, Int32, Int32, Int32, Float, UnsafePointer<Float>?, Int32,
    UnsafePointer<Float>?, Int32, Float, UnsafeMutablePointer<Float>?, Int32
  ) -> Void
  private typealias SetThreads = @convention(c) (Int32) -> Void
  private typealias GetThreads = @convention(c) () -> Int32
  private typealias GetCore = @convention(c) () -> UnsafeMutablePointer<CChar>?

  private struct Library {
    let sgemm: Sgemm
    let setThreads: SetThreads
    let getThreads: GetThreads
    let core: String
  }

  nonisolated(unsafe) private static let library: Library = {
    let inherited = getenv("OPENBLAS_CORETYPE").map { String(cString: $0) }
    if let pinned = getenv("DISTILL_OPENBLAS_CORETYPE") { setenv("OPENBLAS_CORETYPE", pinned, 1) } else { unsetenv("OPENBLAS_CORETYPE") }
    defer {
      if let inherited { setenv("OPENBLAS_CORETYPE", inherited, 1) } else { unsetenv("OPENBLAS_CORETYPE") }
    }
    for name in ["libopenblas.so.0", "libopenblas.so", "libopenblas.dylib"] {
      guard let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL), let sgemm = dlsym(handle, "cblas_sgemm"),
        let set = dlsym(handle, "openblas_set_num_threads"), let get = dlsym(handle, "openblas_get_num_threads")
      else { continue }
      let core = dlsym(handle, "openblas_get_corename").map { unsafeBitCast($0, to: GetCore.self)() }
      return Library(
        sgemm: unsafeBitCast(sgemm, to: Sgemm.self), setThreads: unsafeBitCast(set, to: SetThreads.self),
        getThreads: unsafeBitCast(get, to: GetThreads.self), core: core?.map { String(cString: $0) } ?? "unknown")
    }
    fatalError("OpenBLAS is not installed (libopenblas.so.0 not found): apt-get install libopenblas-dev")
  }()

  @inline(__always)
  public static func sgemm(
    transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int
  ) {
    guard m > 0, n > 0 else { return }
    if k == 0 {
      for row in 0..<m { for column in 0..<n { c[row * ldc + column] = beta == 0 ? 0 : c[row * ldc + column] * beta } }
      return
    }
    library.sgemm(
      CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
      Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
  }

  /// Threads OpenBLAS uses for one multiply.
  public static var threads: Int {
    get { Int(library.getThreads()) }
    set { library.setThreads(Int32(newValue)) }
  }

  /// The kernel family OpenBLAS chose (`Haswell`, `SkylakeX`, `Cooperlake`...).
  public static var coreName: String { library.core }
}
