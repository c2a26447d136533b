import DistillCore

/// `kd` on dense class maps (logits), temperature T:
/// - sigmoid heads: `mean(BCE_with_logits(z_S / T, sigmoid(z_T / T))) * T^2` over all elements;
/// - softmax heads: `sum_c w_c p_T(c) (log p_T(c) - log p_S(c)) * T^2` over the class `axis`, with
///   `p = softmax(z / T)`, averaged over the other positions; `w_0 = background_weight` (Chen et
///   al.'s 1.5 for the background class 0; default 1, plain KL) and `w_c = 1` otherwise.
struct KnowledgeDistillation: PairwiseMethod {
  enum Activation: String { case sigmoid, softmax }
  var activation: Activation
  var temperature: Float
  var axis: Int
  var backgroundWeight: Float

  func build(_ builder: inout GraphBuilder, student: String, teacher: String, shape: [Int]) throws -> String {
    let zs = builder.scaled(student, by: temperature), zt = builder.scaled(teacher, by: temperature)
    let loss: String
    switch activation {
    case .sigmoid:
      // BCE(x, y) = relu(x) - x y + log(1 + exp(-|x|)), stable for any x.
      let target = builder.unary("Sigmoid", zt)
      let softplusOfMinusAbs = builder.unary("Log", builder.plus(builder.scalar(1), builder.unary("Exp", builder.unary("Neg", builder.unary("Abs", zs)))))
      let elementwise = builder.plus(builder.sub(builder.unary("Relu", zs), builder.mul(zs, target)), softplusOfMinusAbs)
      loss = builder.meanOfAll(elementwise)
    case .softmax:
      let rank = shape.count
      let classAxis = axis < 0 ? axis + rank : axis
      guard (0..<rank).contains(classAxis) else {
        throw TrainingError.invalidConfig("kd: axis \(axis) is not a known axis of a rank-\(rank) tap")
      }
      let classes = shape[classAxis]
      let logStudent = builder.add("LogSoftmax", [zs], [.int("axis", classAxis)])
      let logTeacher = builder.add("LogSoftmax", [zt], [.int("axis", classAxis)])
      var perClass = builder.mul(builder.unary("Exp", logTeacher), builder.sub(logTeacher, logStudent))
      if backgroundWeight != 1 {
        var weights = [Float](repeating: 1, count: classes)
        weights[0] = backgroundWeight
        let weightShape = (0..<rank).map { $0 == classAxis ? classes : 1 }
        perClass = builder.mul(perClass, builder.constant(Tensor(shape: weightShape, floats: weights), hint: "class_weights"))
      }
      loss = builder.meanOfAll(builder.reduceSum(perClass, axes: [classAxis]))
    }
    return temperature == 1 ? loss : builder.mul(loss, builder.scalar(temperature * temperature))
  }
}
