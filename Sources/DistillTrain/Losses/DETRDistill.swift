import DistillCore
import DistillDetection
import Foundation

/// `detr` (DETRDistill, Chang et al. 2023) for query-based heads with sigmoid classification
/// (Deformable DETR style): up to three terms, each named `detr:TERM` in the metrics.
///
/// **Progressive instance distillation** (always; `detr:layerK`): for every decoder layer the two
/// heads share (the `detr` head configs' `aux` layers then the final one, aligned at the last
/// layer), the teacher's queries are matched one to one to the student's by the Hungarian method on
/// `cost = w_cls * mean_c BCE(z_S, sigmoid(z_T)) + w_l1 * |b_S - b_T|_1 - w_giou * GIoU(b_S, b_T)`
/// (boxes cxcywh, normalised), and each matched pair adds the same three terms:
/// `w_cls * mean BCE + w_l1 * sum|b_S - b_T| / pairs + w_giou * mean(1 - GIoU)`.
///
/// **Attention-agnostic feature distillation** (`detr:feature`, when the config pairs
/// `teacher`/`student` taps): the pairs are encoder features, each either a map [N, D, H, W] or a
/// token sequence [N, L, D] (a flattened multi-level encoder memory, as Deformable DETR exports
/// give it), the student's through the usual adapter. Per image, the teacher's top-`top_k` queries
/// by score `s_q = max_c sigmoid(z_T)` (final layer) get the quality `q = s_q * IoU(b_q, best
/// matching object)` (objects: annotations, or the teacher's pseudo-labels; 0 without objects), the
/// others 0; with `q̂` the L2-normalised rows of `query_features` ([N, Q, D], the teacher's last
/// decoder hidden state) and `f̂_p` the L2-normalised teacher feature at position p (eps 1e-12, as
/// `F.normalize`), `m_p = max(sum_q q * <q̂, f̂_p>, 0.01) / max_p(...)` per image and level (computed
/// in Swift: the teacher is constant). The term is `sum over levels of mean((m F_T - m F_S)^2)`
/// times `feature_weight`.
///
/// **Teacher-assisted assignment** (`detr:assisted`, when the config names `student_queries` and
/// `teacher_queries`): the student's recorded pass is replayed (`Tape.replay`: only the nodes
/// downstream run again, the decoder in practice) with its value `student_queries` (an
/// initializer or node output, such as a query embedding) replaced by the teacher's value
/// `teacher_queries` (same shape, else an error naming both). For every shared layer the teacher's predictions are matched to
/// the objects (normalised to cxcywh by the input size) by the Hungarian method on the same cost
/// (class target: one-hot of the object's class), and the student's second-pass outputs get, at the
/// same queries, `w_cls * mean BCE(z, y) + w_l1 * sum |b - g| / M + w_giou * sum (1 - GIoU(b, g)) / M`,
/// with `y` the one-hot class of the matched object (all zero on unmatched queries; the mean runs
/// over all N * Q * C) and M = max(1, matched queries in the batch); summed over layers, times
/// `assisted_weight`. Gradients of both passes add up in the student's parameters (the replay's
/// gradients at the values it shares with the main pass, the encoder's memory for example, seed
/// the main pass's backward); the replaced value gets none from the replay.
///
/// Config keys: `class_weight` 1, `l1_weight` 5, `giou_weight` 2 (the paper's), `top_k` 100,
/// `feature_weight` 1, `assisted_weight` 1; `teacher`/`student` (encoder feature pairs, optional)
/// with `query_features` (a teacher tap); `student_queries` (a student initializer or node output)
/// with `teacher_queries` (a teacher initializer or node output). Each of a pair without the other
/// is an error naming the missing key. Example:
/// `{type: detr, teacher: [enc_p3, memory], student: [enc_p3, memory], query_features: dec_hidden,
///   student_queries: query_embed.weight, teacher_queries: query_embed.weight}`.
final class DETRDistill: DistillationMethod {
  struct Layer {
    let logits: String
    let boxes: String
  }
  let teacherLayers: [Layer]
  let studentLayers: [Layer]
  let classWeight: Float
  let l1Weight: Float
  let giouWeight: Float
  /// The teacher's decoder query features [N, Q, D] for the feature term (nil: no feature term).
  let queryFeatures: String?
  let topK: Int
  let featureWeight: Float
  /// The student value replaced by the teacher's in the assisted pass (nil: no assisted term).
  let queries: (student: String, teacher: String)?
  let assistedWeight: Float
  /// The feature term's mask inputs declared by `build`: teacher tap, mask input, mask shape.
  private(set) var featureLevels: [(teacherTap: String, mask: String, shape: [Int])] = []
  /// The assisted term's inputs declared by `build`, per layer, and the scalar 1 / M.
  private(set) var assistedLayers: [(targets: String, boxes: String, weights: String, shape: [Int])] = []
  private(set) var assistedScale = ""

  convenience init(_ loss: DistillConfig.Loss, setup: MethodSetup) throws {
    try self.init(setup: setup, settings: loss.settings, flags: loss.flags, featurePairs: loss.teacher.count)
  }

  init(setup: MethodSetup, settings: [String: Double], flags: [String: String] = [:], featurePairs: Int = 0) throws {
    var problems: [String] = []
    func layers(_ head: HeadConfig?, _ role: String) -> [Layer] {
      guard let head, case .detr(let detr) = head.head else {
        problems.append("the \(role)'s head config must be of type detr (head, or \(role)_head)")
        return []
      }
      if detr.activation != .sigmoid {
        problems.append("the \(role)'s head uses softmax; this loss supports sigmoid (Deformable DETR style) heads")
      }
      return detr.aux.map { Layer(logits: $0.logits, boxes: $0.boxes) } + [Layer(logits: detr.logits, boxes: detr.boxes)]
    }
    let teacher = layers(setup.teacherHead, "teacher"), student = layers(setup.studentHead, "student")
    let shared = min(teacher.count, student.count)
    teacherLayers = Array(teacher.suffix(shared))
    studentLayers = Array(student.suffix(shared))
    classWeight = Float(settings["class_weight"] ?? 1)
    l1Weight = Float(settings["l1_weight"] ?? 5)
    giouWeight = Float(settings["giou_weight"] ?? 2)
    featureWeight = Float(settings["feature_weight"] ?? 1)
    assistedWeight = Float(settings["assisted_weight"] ?? 1)
    let topK = settings["top_k"] ?? 100
    if topK < 1 || topK != topK.rounded() { problems.append("top_k must be a whole number >= 1, got \(topK)") }
    self.topK = max(1, Int(topK))
    queryFeatures = flags["query_features"]
    if featurePairs > 0, queryFeatures == nil {
      problems.append("the teacher/student taps name encoder features for the feature term; give query_features: the teacher's decoder query features [N, Q, D] (its last decoder hidden state)")
    }
    if featurePairs == 0, let name = queryFeatures {
      problems.append("query_features '\(name)' is given but no encoder features: name them in teacher/student (for example teacher: [enc_p3], student: [enc_p3])")
    }
    switch (flags["student_queries"], flags["teacher_queries"]) {
    case (let student?, let teacher?): queries = (student, teacher)
    case (nil, nil): queries = nil
    case (let student?, nil):
      queries = nil
      problems.append("student_queries '\(student)' needs teacher_queries: the teacher value (same shape) that replaces it in the assisted pass")
    case (nil, let teacher?):
      queries = nil
      problems.append("teacher_queries '\(teacher)' needs student_queries: the student value (an initializer or node output) it replaces")
    }
    if !problems.isEmpty { throw TrainingError.invalidConfig(problems.map { "detr: " + $0 }.joined(separator: "; ")) }
  }

  var needsObjects: Bool { queryFeatures != nil || queries != nil }
  var extraTaps: (student: [String], teacher: [String]) {
    (studentLayers.flatMap { [$0.logits, $0.boxes] }, teacherLayers.flatMap { [$0.logits, $0.boxes] } + (queryFeatures.map { [$0] } ?? []))
  }
  var rerun: StudentRerun? {
    queries.map {
      StudentRerun(
        replacing: $0.student, teacherTap: $0.teacher, taps: studentLayers.flatMap { [$0.logits, $0.boxes] },
        source: "detr (student_queries, teacher_queries)")
    }
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
      let studentShape = try logitsShape(builder, DistillationLoss.studentValue(student.logits))
      let teacherShape = try logitsShape(builder, DistillationLoss.teacherValue(teacher.logits))
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
      terms.append(("layer\(index)", weightedSum(&builder, classification, l1, giou)))
    }
    if let feature = try buildFeatureTerm(&builder, pairs: pairs) { terms.append(("feature", feature)) }
    if let assisted = try buildAssistedTerm(&builder) { terms.append(("assisted", assisted)) }
    return terms
  }

  /// `w_cls * classification + w_l1 * l1 + w_giou * giou`.
  private func weightedSum(_ builder: inout GraphBuilder, _ classification: String, _ l1: String, _ giou: String) -> String {
    builder.add(
      "Sum", [builder.mul(classification, builder.scalar(classWeight)), builder.mul(l1, builder.scalar(l1Weight)), builder.mul(giou, builder.scalar(giouWeight))])
  }

  /// The feature term over `pairs` (nil without pairs): masks are inputs fed by `stepFeeds`.
  private func buildFeatureTerm(_ builder: inout GraphBuilder, pairs: [TapPair]) throws -> String? {
    guard let queryFeatures, !pairs.isEmpty else { return nil }
    let queryShape = try declaredShape(builder, DistillationLoss.teacherValue(queryFeatures))
    let finalLogits = try logitsShape(builder, DistillationLoss.teacherValue(teacherLayers.last!.logits))
    guard queryShape.count == 3, queryShape[0] == finalLogits[0], queryShape[1] == finalLogits[1] else {
      throw TrainingError.invalidConfig(
        "detr: query_features '\(queryFeatures)' is \(queryShape); it must be [N, Q, D] with the batch and queries of the teacher's logits '\(teacherLayers.last!.logits)' \(finalLogits)")
    }
    var levels: [String] = []
    for (index, pair) in pairs.enumerated() {
      let channels: Int
      let maskShape: [Int]
      switch pair.shape.count {
      case 4: (channels, maskShape) = (pair.shape[1], [pair.shape[0], 1, pair.shape[2], pair.shape[3]])
      case 3: (channels, maskShape) = (pair.shape[2], [pair.shape[0], pair.shape[1], 1])
      default:
        throw TrainingError.invalidConfig("detr: teacher tap '\(pair.teacherTap)' is \(pair.shape); encoder features must be maps [N, D, H, W] or sequences [N, L, D] (transpose a sequence-first [L, N, D] memory in the export)")
      }
      guard channels == queryShape[2], pair.shape[0] == queryShape[0] else {
        throw TrainingError.invalidConfig(
          "detr: teacher tap '\(pair.teacherTap)' \(pair.shape) and query_features '\(queryFeatures)' \(queryShape) must agree in batch and width D")
      }
      let mask = builder.input("\(builder.scope)/feature/\(index)/mask", shape: maskShape)
      featureLevels.append((pair.teacherTap, mask, maskShape))
      let difference = builder.sub(builder.mul(mask, pair.teacher), builder.mul(mask, pair.student))
      levels.append(builder.meanOfAll(builder.mul(difference, difference)))
    }
    let sum = levels.count == 1 ? levels[0] : builder.add("Sum", levels)
    return builder.mul(sum, builder.scalar(featureWeight))
  }

  /// The assisted term on the student's second-pass outputs (nil without `student_queries`).
  private func buildAssistedTerm(_ builder: inout GraphBuilder) throws -> String? {
    guard let rerun else { return nil }
    assistedScale = builder.input("\(builder.scope)/assisted/inverse_count", shape: [])
    var layers: [String] = []
    for (index, (student, teacher)) in zip(studentLayers, teacherLayers).enumerated() {
      let logits = DistillationLoss.rerunValue(rerun, student.logits), boxes = DistillationLoss.rerunValue(rerun, student.boxes)
      let shape = try logitsShape(builder, logits)
      let teacherShape = try logitsShape(builder, DistillationLoss.teacherValue(teacher.logits))
      guard shape == teacherShape else {
        throw TrainingError.invalidConfig(
          "detr: teacher-assisted assignment needs the student's logits '\(student.logits)' \(shape) and the teacher's '\(teacher.logits)' \(teacherShape) to agree (the same queries)")
      }
      let prefix = "\(builder.scope)/assisted/layer\(index)"
      let targets = builder.input(prefix + "/targets", shape: shape)
      let goal = builder.input(prefix + "/boxes", shape: [shape[0], shape[1], 4])
      let weights = builder.input(prefix + "/weights", shape: [shape[0], shape[1], 1])
      assistedLayers.append((targets, goal, weights, shape))
      let classification = builder.bceWithLogitsLoss(logits: logits, targets: targets, reduction: .mean)
      let l1 = builder.mul(builder.reduceSum(builder.mul(builder.unary("Abs", builder.sub(boxes, goal)), weights)), assistedScale)
      let giouSum = builder.giouLoss(
        predicted: builder.cornersFromCenters(builder.reshape(boxes, [-1, 4])), target: builder.cornersFromCenters(builder.reshape(goal, [-1, 4])),
        weight: builder.reshape(weights, [-1]), reduction: .sum)
      layers.append(weightedSum(&builder, classification, l1, builder.mul(giouSum, assistedScale)))
    }
    let sum = layers.count == 1 ? layers[0] : builder.add("Sum", layers)
    return builder.mul(sum, builder.scalar(assistedWeight))
  }

  /// The declared shape of a loss-graph input.
  private func declaredShape(_ builder: GraphBuilder, _ name: String) throws -> [Int] {
    guard let input = builder.graph.inputs.first(where: { $0.name == name }), let dims = input.type?.shape else {
      throw TrainingError.invalidConfig("detr: the loss graph has no input '\(name)'")
    }
    let sizes = dims.compactMap(\.size)
    guard sizes.count == dims.count else { throw TrainingError.invalidConfig("detr: '\(name)' has no fixed shape") }
    return sizes.map(Int.init)
  }

  /// The declared [N, Q, C] shape of a logits input.
  private func logitsShape(_ builder: GraphBuilder, _ name: String) throws -> [Int] {
    let shape = try declaredShape(builder, name)
    guard shape.count == 3 else { throw TrainingError.invalidConfig("detr: '\(name)' must be logits [N, Q, C], got \(shape)") }
    return shape
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
    try featureFeeds(context, into: &feeds)
    try assistedFeeds(context, into: &feeds)
    return feeds
  }

  private func teacherOutputs(_ context: StepContext, _ layer: Layer) throws -> (logits: Tensor, boxes: Tensor) {
    guard let logits = context.teacher[layer.logits], let boxes = context.teacher[layer.boxes] else {
      throw TrainingError.invalidConfig("detr: the teacher's outputs '\(layer.logits)', '\(layer.boxes)' were not computed")
    }
    return (logits, boxes)
  }

  private func featureFeeds(_ context: StepContext, into feeds: inout [String: Tensor]) throws {
    guard let queryFeatures, !featureLevels.isEmpty else { return }
    guard let hidden = context.teacher[queryFeatures] else { throw TrainingError.invalidConfig("detr: query_features '\(queryFeatures)' was not computed") }
    let final = try teacherOutputs(context, teacherLayers.last!)
    let quality = Self.quality(logits: final.logits, boxes: final.boxes, objects: context.objects, inputSize: context.inputSize, topK: topK)
    for level in featureLevels {
      guard let feature = context.teacher[level.teacherTap] else { throw TrainingError.invalidConfig("detr: teacher tap '\(level.teacherTap)' was not computed") }
      feeds[level.mask] = Tensor(shape: level.shape, floats: Self.featureMask(feature: feature, queries: hidden, quality: quality))
    }
  }

  private func assistedFeeds(_ context: StepContext, into feeds: inout [String: Tensor]) throws {
    guard !assistedLayers.isEmpty else { return }
    var matched = 0
    for (layer, inputs) in zip(teacherLayers, assistedLayers) {
      let teacher = try teacherOutputs(context, layer)
      let (batch, queries, classes) = (inputs.shape[0], inputs.shape[1], inputs.shape[2])
      guard context.objects.count == batch else {
        throw TrainingError.invalidConfig("detr: \(context.objects.count) images' objects for a batch of \(batch)")
      }
      var targets = [Float](repeating: 0, count: batch * queries * classes)
      var boxes = [Float](repeating: 0.5, count: batch * queries * 4)
      var weights = [Float](repeating: 0, count: batch * queries)
      for (image, assigned) in try Self.assign(logits: teacher.logits, boxes: teacher.boxes, objects: context.objects, inputSize: context.inputSize, weights: (classWeight, l1Weight, giouWeight)).enumerated() {
        for (query, object) in assigned {
          let row = image * queries + query
          targets[row * classes + object.label] = 1
          for (offset, value) in object.box.enumerated() { boxes[row * 4 + offset] = value }
          weights[row] = 1
        }
      }
      matched = max(matched, Int(weights.reduce(0, +)))
      feeds[inputs.targets] = Tensor(shape: inputs.shape, floats: targets)
      feeds[inputs.boxes] = Tensor(shape: [batch, queries, 4], floats: boxes)
      feeds[inputs.weights] = Tensor(shape: [batch, queries, 1], floats: weights)
    }
    feeds[assistedScale] = Tensor(shape: [], floats: [1 / Float(max(1, matched))])
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
