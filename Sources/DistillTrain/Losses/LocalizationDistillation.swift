import DistillCore

/// `ld` (localization distillation) on distribution box heads (GFL/DFL, [N, 4 (R+1), H, W] with
/// `R = reg_max`): per box side, `KL(softmax(l_T / T) || softmax(l_S / T))` over the R+1 bins, times
/// `T^2`, averaged over sides and positions. T = 10 by default.
struct LocalizationDistillation: PairwiseMethod {
  var temperature: Float
  var regMax: Int?

  func build(_ builder: inout GraphBuilder, student: String, teacher: String, shape: [Int]) throws -> String {
    guard shape.count == 4, shape[1] % 4 == 0 else {
      throw TrainingError.invalidConfig("ld: expected box distributions [N, 4 (reg_max+1), H, W], got \(shape)")
    }
    let (channels, height, width) = (shape[1], shape[2], shape[3])
    let bins = channels / 4
    if let regMax, regMax + 1 != bins {
      throw TrainingError.invalidConfig("ld: reg_max \(regMax) means \(4 * (regMax + 1)) channels, the tap has \(channels)")
    }
    let split = [0, 4, bins, height, width]
    let s = builder.reshape(builder.scaled(student, by: temperature), split)
    let t = builder.reshape(builder.scaled(teacher, by: temperature), split)
    let logStudent = builder.add("LogSoftmax", [s], [.int("axis", 2)])
    let logTeacher = builder.add("LogSoftmax", [t], [.int("axis", 2)])
    let kl = builder.reduceSum(builder.mul(builder.unary("Exp", logTeacher), builder.sub(logTeacher, logStudent)), axes: [2])
    return builder.mul(builder.meanOfAll(kl), builder.scalar(temperature * temperature))
  }
}
