import DistillCore

/// `l1`: `mean(|F_S - F_T|)` over all elements.
struct L1Hint: PairwiseMethod {
  func build(_ builder: inout GraphBuilder, student: String, teacher: String, shape: [Int]) throws -> String {
    builder.meanOfAll(builder.unary("Abs", builder.sub(student, teacher)))
  }
}
