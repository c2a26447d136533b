import DistillCore
import DistillDetection
import Foundation

/// `detr` (DETRDistill's progressive instance distillation) for query-based heads with sigmoid
/// classification (Deformable DETR style): for every decoder layer the two heads share (the
/// `detr` head configs' `aux` layers then the final one, aligned at the last layer), the teacher's
/// queries are matched one to one to the student's by the Hungarian method on
/// `cost = w_cls * mean_c BCE(z_S, sigmoid(z_T)) + w_l1 * |b_S - b_T|_1 - w_giou * GIoU(b_S, b_T)`
/// (boxes cxcywh, normalised), and each matched pair adds the same three terms:
/// `w_cls * mean BCE + w_l1 * sum|b_S - b_T| / pairs + w_giou * mean(1 - GIoU)`.
/// Defaults (the paper's): `class_weight` 1, `l1_weight` 5, `giou_weight` 2. One term per layer,
/// `detr:layerK`. The config's `teacher`/`student` taps are not used (the heads name the outputs).
struct DETRDistill: DistillationMethod {
  struct Layer {
    let logits: String
    let boxes: String
  }
  let teacherLayers: [Layer]
  let studentLayers: [Layer]
  let classWeight: Float
  let l1Weight: Float
  let giouWeight: Float

  init(setup: MethodSetup, settings: [String: Double]) throws {
    func layers(_ head: HeadConfig?, _ role: String) throws -> [Layer] {
      guard let head, case .detr(let detr) = head.head else {
        throw TrainingError.invalidConfig("detr: the \(role)'s head config must be of type detr (head, or \(role)_head)")
      }
      guard detr.activation == .sigmoid else {
        throw TrainingError.invalidConfig("detr: the \(role)'s head uses softmax; this loss supports sigmoid (Deformable DETR style) heads")
      }
      return detr.aux.map { Layer(logits: $0.logits, boxes: $0.boxes) } + [Layer(logits: detr.logits, boxes: detr.boxes)]
    }
    let teacher = try layers(setup.teacherHead, "teacher"), student = try layers(setup.studentHead, "student")
    let shared = min(teacher.count, student.count)
    teacherLayers = Array(teacher.suffix(shared))
    studentLayers = Array(student.suffix(shared))
    classWeight = Float(settings["class_weight"] ?? 1)
    l1Weight = Float(settings["l1_weight"] ?? 5)
    giouWeight = Float(settings["giou_weight"] ?? 2)
  }

  var needsObjects: Bool { false }
  var extraTaps: (student: [String], teacher: [String]) {
    (studentLayers.flatMap { [$0.logits, $0.boxes] }, teacherLayers.flatMap { [$0.logits, $0.boxes] })
  }

  static func indexInput(_ layer: Int, _ role: String) -> String { "detr/layer\(layer)/\(role)_rows" }

  func build(_ builder: inout GraphBuilder, pairs: [TapPair]) throws -> [(name: String, value: String)] {
    var terms: [(name: String, value: String)] = []
    for (index, (student, teacher)) in zip(studentLayers, teacherLayers).enumerated() {
      let studentRows = builder.input(Self.indexInput(index, "student"), shape: [nil], dtype: .int64)
      let teacherRows = builder.input(Self.indexInput(index, "teacher"), shape: [nil], dtype: .int64)
      func rows(_ value: String, _ indices: String, width: Int) -> String {
        builder.add("Gather", [builder.reshape(value, [-1, width]), indices], [.int("axis", 0)])
      }
      let studentShape = try shape(builder, DistillationLoss.studentValue(student.logits))
      let teacherShape = try shape(builder, DistillationLoss.teacherValue(teacher.logits))
      let classes = studentShape[2]
      guard teacherShape[2] == classes, teacherShape[0] == studentShape[0] else {
        throw TrainingError.invalidConfig("detr: layer \(index)'s logits are \(studentShape) (student) and \(teacherShape) (teacher); they must agree in batch and classes")
      }
      let pairCount = studentShape[0] * min(studentShape[1], teacherShape[1])
      let zs = rows(DistillationLoss.studentValue(student.logits), studentRows, width: classes)
      let zt = rows(DistillationLoss.teacherValue(teacher.logits), teacherRows, width: classes)
      let bs = rows(DistillationLoss.studentValue(student.boxes), studentRows, width: 4)
      let bt = rows(DistillationLoss.teacherValue(teacher.boxes), teacherRows, width: 4)
      let classification = builder.bceWithLogitsLoss(logits: zs, targets: builder.unary("Sigmoid", zt), reduction: .mean)
      let l1 = builder.div(builder.reduceSum(builder.unary("Abs", builder.sub(bs, bt))), builder.scalar(Float(pairCount)))
      let giou = builder.giouLoss(predicted: builder.cornersFromCenters(bs), target: builder.cornersFromCenters(bt), reduction: .mean)
      let total = builder.add(
        "Sum", [builder.mul(classification, builder.scalar(classWeight)), builder.mul(l1, builder.scalar(l1Weight)), builder.mul(giou, builder.scalar(giouWeight))])
      terms.append(("layer\(index)", total))
    }
    return terms
  }

  /// The declared [N, Q, C] shape of a logits input.
  private func shape(_ builder: GraphBuilder, _ name: String) throws -> [Int] {
    guard let input = builder.graph.inputs.first(where: { $0.name == name }), let dims = input.type?.shape, dims.count == 3,
      let sizes = Optional(dims.compactMap(\.size)), sizes.count == 3
    else { throw TrainingError.invalidConfig("detr: '\(name)' must be logits [N, Q, C]") }
    return sizes.map(Int.init)
  }

  func stepFeeds(_ context: StepContext) throws -> [String: Tensor] {
    var feeds: [String: Tensor] = [:]
    for (index, (student, teacher)) in zip(studentLayers, teacherLayers).enumerated() {
      guard let zs = context.student[DistillationLoss.studentValue(student.logits)], let bs = context.student[DistillationLoss.studentValue(student.boxes)],
        let zt = context.teacher[teacher.logits], let bt = context.teacher[teacher.boxes]
      else { throw TrainingError.invalidConfig("detr: layer \(index)'s outputs were not computed") }
      guard zs.rank == 3, zt.rank == 3, zs.shape[0] == zt.shape[0], zs.shape[2] == zt.shape[2] else {
        throw TrainingError.invalidConfig("detr: layer \(index)'s logits are \(zs.shapeDescription) (student) and \(zt.shapeDescription) (teacher); they must agree in batch and classes")
      }
      let matches = Self.match(studentLogits: zs, studentBoxes: bs, teacherLogits: zt, teacherBoxes: bt, weights: (classWeight, l1Weight, giouWeight))
      feeds[Self.indexInput(index, "student")] = Tensor(shape: [matches.student.count], ints: matches.student.map(Int64.init))
      feeds[Self.indexInput(index, "teacher")] = Tensor(shape: [matches.teacher.count], ints: matches.teacher.map(Int64.init))
    }
    return feeds
  }

  /// Per image, the Hungarian matching of the smaller query set to the larger on the cost above;
  /// returned as flat row indices (`image * Q + query`) into each model's [N * Q] rows.
  static func match(
    studentLogits: Tensor, studentBoxes: Tensor, teacherLogits: Tensor, teacherBoxes: Tensor, weights: (Float, Float, Float)
  ) -> (student: [Int], teacher: [Int]) {
    let batch = studentLogits.shape[0], qs = studentLogits.shape[1], qt = teacherLogits.shape[1], classes = studentLogits.shape[2]
    let zs = studentLogits.floats, zt = teacherLogits.floats, bs = studentBoxes.floats, bt = teacherBoxes.floats
    var studentRows: [Int] = [], teacherRows: [Int] = []
    for image in 0..<batch {
      var cost = [Double](repeating: 0, count: qs * qt)
      for i in 0..<qs {
        let sBase = (image * qs + i) * classes
        let sBox = Array(bs[((image * qs + i) * 4)..<((image * qs + i) * 4 + 4)])
        let studentCorners = Box(cxcywh: sBox[0], sBox[1], sBox[2], sBox[3])
        for j in 0..<qt {
          let tBase = (image * qt + j) * classes
          var bce = 0.0
          for c in 0..<classes {
            let x = Double(zs[sBase + c]), p = 1 / (1 + exp(-Double(zt[tBase + c])))
            bce += max(x, 0) - x * p + log1p(exp(-abs(x)))
          }
          bce /= Double(classes)
          let tBox = Array(bt[((image * qt + j) * 4)..<((image * qt + j) * 4 + 4)])
          let l1 = zip(sBox, tBox).reduce(0.0) { $0 + Double(abs($1.0 - $1.1)) }
          let giou = Double(studentCorners.generalizedIoU(Box(cxcywh: tBox[0], tBox[1], tBox[2], tBox[3])))
          cost[i * qt + j] = Double(weights.0) * bce + Double(weights.1) * l1 - Double(weights.2) * giou
        }
      }
      if qs <= qt {
        let assignment = Hungarian.assign(cost, rows: qs, columns: qt)
        for (i, j) in assignment.enumerated() {
          studentRows.append(image * qs + i)
          teacherRows.append(image * qt + j)
        }
      } else {
        var transposed = [Double](repeating: 0, count: qs * qt)
        for i in 0..<qs { for j in 0..<qt { transposed[j * qs + i] = cost[i * qt + j] } }
        let assignment = Hungarian.assign(transposed, rows: qt, columns: qs)
        for (j, i) in assignment.enumerated() {
          studentRows.append(image * qs + i)
          teacherRows.append(image * qt + j)
        }
      }
    }
    return (studentRows, teacherRows)
  }
}

extension GraphBuilder {
  /// [K, 4] (cx, cy, w, h) to (x1, y1, x2, y2).
  mutating func cornersFromCenters(_ boxes: String) -> String {
    let columns = columns(boxes, count: 4)
    let halfWidth = mul(columns[2], scalar(0.5)), halfHeight = mul(columns[3], scalar(0.5))
    return add(
      "Concat", [sub(columns[0], halfWidth), sub(columns[1], halfHeight), plus(columns[0], halfWidth), plus(columns[1], halfHeight)],
      [.int("axis", 1)])
  }
}
