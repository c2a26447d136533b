import CBLAS

/// Single-precision matrix multiply through OpenBLAS (the only file that calls it):
/// C = alpha * op(A) * op(B) + beta * C, row-major, op(X) = X or X^T.
public enum BLAS {
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
    cblas_sgemm(
      CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
      Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
  }

  /// Threads OpenBLAS uses for one multiply.
  public static var threads: Int {
    get { Int(openblas_get_num_threads()) }
    set { openblas_set_num_threads(Int32(newValue)) }
  }
}
