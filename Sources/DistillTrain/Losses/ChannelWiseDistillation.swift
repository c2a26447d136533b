import DistillCore

/// `cwd` (channel-wise distillation): each channel's map becomes a distribution over positions,
/// `p = softmax_hw(F / tau)`; the loss is `tau^2 * sum_c KL(p_T || p_S) / (N * C)`.
struct ChannelWiseDistillation: PairwiseMethod {
  var temperature: Float

  func build(_ builder: inout GraphBuilder, student: String, teacher: String, shape: [Int]) throws -> String {
    guard shape.count == 4 else {
      throw TrainingError.invalidConfig("cwd: expected feature maps [N, C, H, W], got rank \(shape.count)")
    }
    let (channels, height, width) = (shape[1], shape[2], shape[3])
    let flatShape = [0, channels, height * width]
    let s = builder.reshape(builder.scaled(student, by: temperature), flatShape)
    let t = builder.reshape(builder.scaled(teacher, by: temperature), flatShape)
    let logStudent = builder.add("LogSoftmax", [s], [.int("axis", 2)])
    let logTeacher = builder.add("LogSoftmax", [t], [.int("axis", 2)])
    let kl = builder.reduceSum(builder.mul(builder.unary("Exp", logTeacher), builder.sub(logTeacher, logStudent)), axes: [2])
    return builder.mul(builder.meanOfAll(kl), builder.scalar(temperature * temperature))
  }
}
