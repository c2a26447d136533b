import DistillCore

/// `mse`: Chen et al.'s hint, `mean((F_S - F_T)^2)` over all elements.
struct MeanSquaredHint: PairwiseMethod {
  func build(_ builder: inout GraphBuilder, student: String, teacher: String, shape: [Int]) throws -> String {
    let difference = builder.sub(student, teacher)
    return builder.meanOfAll(builder.mul(difference, difference))
  }
}
