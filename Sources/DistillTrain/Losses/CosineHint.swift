import DistillCore

/// `cosine`: `1 - cos(F_S, F_T)` along the channel axis (1), averaged over the other positions;
/// `cos = <s, t> / sqrt(max(|s|^2 |t|^2, 1e-16))` (PyTorch's `cosine_similarity`, eps 1e-8).
struct CosineHint: PairwiseMethod {
  func build(_ builder: inout GraphBuilder, student: String, teacher: String, shape: [Int]) throws -> String {
    guard shape.count >= 2 else { throw TrainingError.invalidConfig("cosine: the taps need a channel axis (rank >= 2), got rank \(shape.count)") }
    let dot = builder.reduceSum(builder.mul(student, teacher), axes: [1])
    let studentNorm = builder.reduceSum(builder.mul(student, student), axes: [1])
    let teacherNorm = builder.reduceSum(builder.mul(teacher, teacher), axes: [1])
    let denominator = builder.unary("Sqrt", builder.add("Max", [builder.mul(studentNorm, teacherNorm), builder.scalar(1e-16)]))
    let cosine = builder.div(dot, denominator)
    return builder.sub(builder.scalar(1), builder.meanOfAll(cosine))
  }
}
