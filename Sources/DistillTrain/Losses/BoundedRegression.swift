import DistillCore
import DistillDetection
import Foundation

/// `bounded_regression` (Chen et al. 2017, teacher-bounded regression) on the box outputs of a
/// `dense` head with `ltrb` or `ltrb_px` boxes: each pair is the student's and the teacher's
/// [N, 4, H, W] box map of one level, found by name among the student head config's levels (its
/// `box`), which gives the stride s and the point offset o.
///
/// Targets from the objects: the location (x, y) has its point at `((x + o) s, (y + o) s)`; it is
/// positive when the point lies strictly inside a box (the box of smallest area when several do),
/// and its target y is the distances (left, top, right, bottom) from the point to that box's sides,
/// divided by s for `ltrb` (pixels for `ltrb_px`). Over the P positive locations of all pairs of
/// the batch, per location with `e_S = |R_S - y|^2` and `e_T = |R_T - y|^2` (sums over the 4 sides):
/// `L_b = e_S if e_S + margin > e_T else 0`, and the loss is
/// `sum (task_weight * smoothL1_beta(R_S - y) + nu * L_b) / max(P, 1)`, smooth L1 summed over the
/// 4 sides (`0.5 d^2 / beta` when |d| < beta, else `|d| - 0.5 beta`). With `task_weight: 0` only
/// the bounded term remains (for when a task loss already supervises the boxes). Terms: one per
/// pair, `TAP`, together the loss. Defaults: margin 0, nu 0.5, task_weight 1, beta 1.
final class BoundedRegression: DistillationMethod {
  var margin: Float
  var nu: Float
  var taskWeight: Float
  var beta: Float
  let head: HeadConfig.Dense
  /// Per pair: the target and weight inputs declared by `build`, the level and the map shape.
  private(set) var pairInputs: [(targets: String, weights: String, level: HeadConfig.Level, shape: [Int])] = []

  init(head: HeadConfig?, margin: Float = 0, nu: Float = 0.5, taskWeight: Float = 1, beta: Float = 1) throws {
    guard case .dense(let dense)? = head?.head else {
      throw TrainingError.invalidConfig("bounded_regression: needs the student's head config (head or student_head) of type dense")
    }
    guard dense.boxFormat == .ltrb || dense.boxFormat == .ltrbPixels else {
      throw TrainingError.invalidConfig("bounded_regression: the student's head has box_format \(dense.boxFormat.rawValue); ltrb and ltrb_px are supported")
    }
    guard beta > 0 else { throw TrainingError.invalidConfig("bounded_regression: beta must be positive") }
    self.head = dense
    self.margin = margin
    self.nu = nu
    self.taskWeight = taskWeight
    self.beta = beta
  }

  var needsObjects: Bool { true }

  func build(_ builder: inout GraphBuilder, pairs: [TapPair]) throws -> [(name: String, value: String)] {
    var terms: [(name: String, value: String)] = []
    for (index, pair) in pairs.enumerated() {
      guard let level = head.levels.first(where: { $0.box == pair.studentTap }) else {
        throw TrainingError.invalidConfig(
          "bounded_regression: student tap '\(pair.studentTap)' is not the box output of a level of the student's head (\(head.levels.map(\.box).joined(separator: ", ")))")
      }
      guard pair.shape.count == 4, pair.shape[1] == 4 else {
        throw TrainingError.invalidConfig("bounded_regression: '\(pair.teacherTap)' must be a box map [N, 4, H, W], got \(pair.shape)")
      }
      let prefix = "\(builder.scope)/\(index)"
      let (batch, height, width) = (pair.shape[0], pair.shape[2], pair.shape[3])
      let targets = builder.input(prefix + "/targets", shape: [batch, 4, height, width])
      let weights = builder.input(prefix + "/weights", shape: [batch, 1, height, width])
      pairInputs.append((targets, weights, level, pair.shape))
      let studentError = builder.sub(pair.student, targets)
      let teacherError = builder.sub(pair.teacher, targets)
      let studentSquares = builder.reduceSum(builder.mul(studentError, studentError), axes: [1], keepDims: true)
      let teacherSquares = builder.reduceSum(builder.mul(teacherError, teacherError), axes: [1], keepDims: true)
      let worse = builder.add("Greater", [margin == 0 ? studentSquares : builder.plus(studentSquares, builder.scalar(margin)), teacherSquares])
      var perLocation = builder.mul(builder.add("Where", [worse, studentSquares, builder.scalar(0)]), builder.scalar(nu))
      if taskWeight != 0 {
        let magnitude = builder.unary("Abs", studentError)
        let clipped = builder.add("Min", [magnitude, builder.scalar(beta)])
        // min(|d|, beta) (|d| - min(|d|, beta) / 2) / beta is smooth L1 on both sides of beta.
        let smooth = builder.div(builder.mul(clipped, builder.sub(magnitude, builder.mul(clipped, builder.scalar(0.5)))), builder.scalar(beta))
        perLocation = builder.plus(perLocation, builder.mul(builder.reduceSum(smooth, axes: [1], keepDims: true), builder.scalar(taskWeight)))
      }
      terms.append((pair.studentTap, builder.reduceSum(builder.mul(perLocation, weights))))
    }
    return terms
  }

  func stepFeeds(_ context: StepContext) throws -> [String: Tensor] {
    var levels: [(targets: [Float], positive: [Bool])] = []
    var positives = 0
    for inputs in pairInputs {
      let (batch, height, width) = (inputs.shape[0], inputs.shape[2], inputs.shape[3])
      guard context.objects.count == batch else {
        throw TrainingError.invalidConfig("bounded_regression: \(context.objects.count) images' objects for a batch of \(batch)")
      }
      var targets: [Float] = [], positive: [Bool] = []
      for image in context.objects {
        let level = Self.targets(
          boxes: image.boxes, height: height, width: width, stride: inputs.level.stride, offset: head.offset, pixels: head.boxFormat == .ltrbPixels)
        targets += level.targets
        positive += level.positive
      }
      positives += positive.filter { $0 }.count
      levels.append((targets, positive))
    }
    var feeds: [String: Tensor] = [:]
    let share = 1 / Float(max(positives, 1))
    for (inputs, level) in zip(pairInputs, levels) {
      let (batch, height, width) = (inputs.shape[0], inputs.shape[2], inputs.shape[3])
      feeds[inputs.targets] = Tensor(shape: [batch, 4, height, width], floats: level.targets)
      feeds[inputs.weights] = Tensor(shape: [batch, 1, height, width], floats: level.positive.map { $0 ? share : 0 })
    }
    return feeds
  }

  /// One image's regression targets [4, H, W] (zero where negative) and positive locations [H, W]
  /// on a level of `stride` (see the type's contract).
  static func targets(boxes: [[Float]], height: Int, width: Int, stride: Float, offset: Float, pixels: Bool)
    -> (targets: [Float], positive: [Bool])
  {
    let plane = height * width
    var targets = [Float](repeating: 0, count: 4 * plane), positive = [Bool](repeating: false, count: plane)
    var areas = [Float](repeating: .infinity, count: plane)
    let unit = pixels ? 1 : stride
    for box in boxes where box.count == 4 && box.allSatisfy(\.isFinite) && box[2] > box[0] && box[3] > box[1] {
      let area = (box[2] - box[0]) * (box[3] - box[1])
      for row in 0..<height {
        let y = (Float(row) + offset) * stride
        guard y > box[1], y < box[3] else { continue }
        for column in 0..<width {
          let x = (Float(column) + offset) * stride
          let p = row * width + column
          guard x > box[0], x < box[2], area < areas[p] else { continue }
          areas[p] = area
          positive[p] = true
          let distances = [x - box[0], y - box[1], box[2] - x, box[3] - y]
          for side in 0..<4 { targets[side * plane + p] = distances[side] / unit }
        }
      }
    }
    return (targets, positive)
  }
}
