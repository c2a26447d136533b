import DistillCore

/// `pkd`: each channel of both maps normalised over N, H, W to zero mean and unit standard
/// deviation (unbiased, `+ 1e-6` in the denominator, as MMRazor's PKD), then `mean((S - T)^2) / 2`.
struct PearsonDistillation: PairwiseMethod {
  func build(_ builder: inout GraphBuilder, student: String, teacher: String, shape: [Int]) throws -> String {
    guard shape.count == 4 else { throw TrainingError.invalidConfig("pkd: expected feature maps [N, C, H, W], got rank \(shape.count)") }
    let count = shape[0] * shape[2] * shape[3]
    guard count > 1 else { throw TrainingError.invalidConfig("pkd: a channel needs more than one value over N, H, W") }
    func normalised(_ x: String) -> String {
      let mean = builder.mean(x, axes: [0, 2, 3], keepDims: true)
      let centred = builder.sub(x, mean)
      let squares = builder.reduceSum(builder.mul(centred, centred), axes: [0, 2, 3], keepDims: true)
      let variance = builder.div(squares, builder.scalar(Float(count - 1)))
      let deviation = builder.plus(builder.unary("Sqrt", variance), builder.scalar(1e-6))
      return builder.div(centred, deviation)
    }
    let difference = builder.sub(normalised(student), normalised(teacher))
    return builder.div(builder.meanOfAll(builder.mul(difference, difference)), builder.scalar(2))
  }
}
