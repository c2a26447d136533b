import DistillCore
import DistillDetection
import Foundation

/// `gid`: General Instance Distillation (Dai et al. 2021), label-free. Config pairs are FPN levels
/// (teacher and adapted student maps of one size per level); the head outputs of both models come
/// from their head configs (`teacher_head`/`student_head` or `head`, type `dense` or `anchors`).
///
/// Selection, each step in Swift (no tape), per image: for every prediction row (anchor or
/// location; when the two heads differ in anchors per location, every location, taking per model
/// the best anchor's score and box) the GI score is `|s_T - s_S|` with `s = max_c` of the head's
/// score (`HeadDecoder.denseForm`: the activation, times the quality branch when the head has one;
/// background channels excluded), and the box is the teacher's decoded box when `s_T > s_S`, else
/// the student's. The `pre_nms_top_k` (3000) best rows by GI score are clipped to the image, boxes
/// with a side under `min_side` (10 px) dropped, NMS at `nms_iou` (0.3) applied and the `top_k`
/// (10) best kept (the order of detectron2's `find_top_rpn_proposals`, which the GID reference
/// implementation uses).
///
/// Each kept box is pooled from one level, FPN's rule as detectron2's `ROIPooler` applies it:
/// `k = floor(4 + log2(sqrt(w h) / 224 + 1e-8))` clamped to the configured levels, where a level's
/// index is `log2(stride)` and `stride = input height / map height`. Pooling is `RoiAlign` (avg,
/// `roi_size` 10 x 10 bins, `sampling_ratio` 2, half-pixel / aligned), the same boxes on teacher
/// and adapted student maps. With `K` the boxes kept over the whole batch, `R` the pooled features
/// and `e_i` their flattened rows:
/// - `feature = sum (R_T - R_S)^2 / (K * roi_size^2)`, weight `feature_weight` 5e-3;
/// - `relation`: per model `D_ij = sqrt(max(|e_i|^2 + |e_j|^2 - 2 e_i.e_j, 1e-12))` over the
///   `K^2 - K` ordered pairs i != j of the batch's instances, divided by
///   `max(mean_{i != j} D_ij, 1e-12)`; `sum_{i != j} smoothL1_beta1(D_S - D_T) / (K^2 - K)`,
///   0 when `K < 3`; weight `relation_weight` 40;
/// - `response`: over the student's rows assigned to an instance (anchor heads: largest IoU of the
///   anchor with the image's instances `>= response_iou` 0.5; dense heads: the point strictly inside
///   an instance), `cls = sum BCE(z_S, sigmoid(z_T)) / M` (classes summed, `M` assigned rows; the
///   teacher's logits at the same row, or at the same location when the teacher has one row per
///   location) and `reg = sum |b_S - b_T| / M` on the raw regression outputs (only when both heads
///   encode boxes the same way: same type, box output shapes, box format or box coder);
///   `response = response_cls_weight (0.1) * cls + response_reg_weight (1.0) * reg`.
/// Terms `gid:feature`, `gid:relation`, `gid:response` (each with its own weight; the loss `weight`
/// multiplies all three).
///
/// The number of instances changes every step; the graph keeps fixed shapes: `top_k` slots per
/// image, each slot's ROI fed for every level with a [slots] mask choosing its level (empty slots
/// are masked on every level), a [slots, slots] pair mask for the relation, and scales (1/K...)
/// fed as scalars.
final class GeneralInstanceDistillation: DistillationMethod {
  struct Settings: Equatable {
    var preNMSTopK = 3000
    var nmsIoU: Float = 0.3
    var topK = 10
    var minSide: Float = 10
    var featureWeight: Float = 5e-3
    var relationWeight: Float = 40
    var responseClsWeight: Float = 0.1
    var responseRegWeight: Float = 1
    var responseIoU: Float = 0.5
    var roiSize = 10
    var samplingRatio = 2

    static let keys = [
      "pre_nms_top_k", "nms_iou", "top_k", "min_side", "feature_weight", "relation_weight", "response_cls_weight",
      "response_reg_weight", "response_iou", "roi_size", "sampling_ratio",
    ]

    init() {}

    init(_ values: [String: Double]) throws {
      func integer(_ key: String, _ value: inout Int, minimum: Int) throws {
        guard let given = values[key] else { return }
        guard given == given.rounded(), given >= Double(minimum) else {
          throw TrainingError.invalidConfig("gid: \(key) must be a whole number >= \(minimum), got \(given)")
        }
        value = Int(given)
      }
      func real(_ key: String, _ value: inout Float, _ range: ClosedRange<Double>) throws {
        guard let given = values[key] else { return }
        guard range.contains(given) else { throw TrainingError.invalidConfig("gid: \(key) must be in \(range), got \(given)") }
        value = Float(given)
      }
      try integer("pre_nms_top_k", &preNMSTopK, minimum: 1)
      try integer("top_k", &topK, minimum: 1)
      try integer("roi_size", &roiSize, minimum: 1)
      try integer("sampling_ratio", &samplingRatio, minimum: 0)
      try real("nms_iou", &nmsIoU, 0...1)
      try real("min_side", &minSide, 0...1e6)
      try real("feature_weight", &featureWeight, 0...1e9)
      try real("relation_weight", &relationWeight, 0...1e9)
      try real("response_cls_weight", &responseClsWeight, 0...1e9)
      try real("response_reg_weight", &responseRegWeight, 0...1e9)
      try real("response_iou", &responseIoU, 0...1)
    }
  }

  /// One head level as the selection sees it: its map size and rows per location.
  struct LevelGeometry: Equatable {
    var height: Int
    var width: Int
    var anchors: Int
  }

  /// Per image and per prediction row (or location): the best score over the classes and its box.
  struct Predictions {
    var scores: [[Float]]
    var boxes: [[Box]]
  }

  let settings: Settings
  let teacherDecoder: HeadDecoder
  let studentDecoder: HeadDecoder
  /// Whether the raw regression outputs of the two heads can be compared.
  let sameBoxEncoding: Bool
  /// Filled by `build`: the graph inputs fed each step and the levels' map sizes.
  private var names: InputNames?
  private var levelShapes: [[Int]] = []
  private var batch = 0

  private struct InputNames {
    var rois: [String], batchIndices: [String], levelMasks: [String]
    var featureScale: String, pairMask: String, pairMean: String, relationScale: String
    var responseMasks: [String], responseScale: String
  }

  init(settings: Settings, setup: MethodSetup) throws {
    self.settings = settings
    func decoder(_ head: HeadConfig?, _ role: String) throws -> HeadDecoder {
      guard let head else {
        throw TrainingError.invalidConfig("gid: needs the \(role)'s head config (give `head:` or `\(role)_head:` with type dense or anchors)")
      }
      switch head.head {
      case .dense, .anchors: return HeadDecoder(head)
      default: throw TrainingError.invalidConfig("gid: the \(role)'s head is '\(head.head.typeName)'; gid reads dense or anchors heads")
      }
    }
    teacherDecoder = try decoder(setup.teacherHead, "teacher")
    studentDecoder = try decoder(setup.studentHead, "student")
    let (teacher, student) = (teacherDecoder.config, studentDecoder.config)
    guard Self.levels(teacher).count == Self.levels(student).count else {
      throw TrainingError.invalidConfig(
        "gid: the teacher's head has \(Self.levels(teacher).count) levels and the student's \(Self.levels(student).count); GI selection compares them level by level")
    }
    switch (teacher.head, student.head) {
    case (.dense(let t), .dense(let s)): sameBoxEncoding = t.boxFormat == s.boxFormat && t.regMax == s.regMax
    case (.anchors(let t), .anchors(let s)): sameBoxEncoding = t.coder == s.coder && t.generatorStyle == s.generatorStyle
    default: sameBoxEncoding = false
    }
    if settings.responseClsWeight > 0 {
      guard teacher.numClasses == student.numClasses else {
        throw TrainingError.invalidConfig(
          "gid: response_cls compares class logits, but the teacher has \(teacher.numClasses) classes and the student \(student.numClasses); set response_cls_weight: 0")
      }
      guard Self.activation(teacher) == .sigmoid, Self.activation(student) == .sigmoid else {
        throw TrainingError.invalidConfig("gid: response_cls is a sigmoid BCE and needs sigmoid heads; set response_cls_weight: 0")
      }
    }
    if settings.responseRegWeight > 0, !sameBoxEncoding {
      throw TrainingError.invalidConfig(
        "gid: response_reg compares raw box outputs, but the teacher's \(teacher.head.typeName) head and the student's \(student.head.typeName) head encode boxes differently; set response_reg_weight: 0")
    }
  }

  static func levels(_ config: HeadConfig) -> [HeadConfig.Level] {
    switch config.head {
    case .dense(let d): return d.levels
    case .anchors(let a): return a.levels
    default: return []
    }
  }

  static func activation(_ config: HeadConfig) -> HeadConfig.Activation? {
    switch config.head {
    case .dense(let d): return d.activation
    case .anchors(let a): return a.activation
    default: return nil
    }
  }

  static func background(_ config: HeadConfig) -> Int? {
    switch config.head {
    case .dense(let d): return d.background
    case .anchors(let a): return a.background
    default: return nil
    }
  }

  var needsObjects: Bool { false }

  var extraTaps: (student: [String], teacher: [String]) { (studentDecoder.outputNames, teacherDecoder.outputNames) }

  func build(_ builder: inout GraphBuilder, pairs: [TapPair]) throws -> [(name: String, value: String)] {
    guard let first = pairs.first else { throw TrainingError.invalidConfig("gid: give the FPN levels as teacher and student taps") }
    for pair in pairs where pair.shape.count != 4 || pair.shape[1] != first.shape[1] || pair.shape[0] != first.shape[0] {
      throw TrainingError.invalidConfig(
        "gid: every level must be an [N, C, H, W] map of one width C (pooled features of all levels are compared together); '\(pair.teacherTap)' is \(pair.shape), '\(first.teacherTap)' \(first.shape)")
    }
    let n = first.shape[0], slots = n * settings.topK, size = settings.roiSize
    let prefix = builder.scope.isEmpty ? "gid" : builder.scope
    func input(_ name: String, _ shape: [Int], _ dtype: DataType = .float) -> String {
      builder.input("\(prefix):\(name)", shape: shape, dtype: dtype)
    }
    var names = InputNames(
      rois: [], batchIndices: [], levelMasks: [], featureScale: input("feature_scale", []), pairMask: input("pair_mask", [slots, slots]),
      pairMean: input("pair_mean", []), relationScale: input("relation_scale", []), responseMasks: [], responseScale: input("response_scale", []))
    var pooledTeacher: [String] = [], pooledStudent: [String] = []
    for (index, pair) in pairs.enumerated() {
      names.rois.append(input("rois/\(index)", [slots, 4]))
      names.batchIndices.append(input("batch_indices/\(index)", [slots], .int64))
      names.levelMasks.append(input("level_mask/\(index)", [slots, 1, 1, 1]))
      let attributes: [Attribute] = [
        .int("output_height", size), .int("output_width", size), .int("sampling_ratio", settings.samplingRatio),
        .float("spatial_scale", 1), Attribute(name: "mode", value: .string(Array("avg".utf8))),
        Attribute(name: "coordinate_transformation_mode", value: .string(Array("half_pixel".utf8))),
      ]
      func pooled(_ map: String) -> String {
        builder.mul(builder.add("RoiAlign", [map, names.rois[index], names.batchIndices[index]], attributes, hint: "roi"), names.levelMasks[index])
      }
      pooledTeacher.append(pooled(pair.teacher))
      pooledStudent.append(pooled(pair.student))
    }
    func total(_ values: [String]) -> String { values.count == 1 ? values[0] : builder.add("Sum", values) }
    let teacherROIs = total(pooledTeacher), studentROIs = total(pooledStudent)

    let difference = builder.sub(studentROIs, teacherROIs)
    let feature = builder.mul(builder.reduceSum(builder.mul(difference, difference)), names.featureScale)

    func normalizedDistances(_ rois: String) -> String {
      let rows = builder.reshape(rois, [slots, -1])
      let gram = builder.add("MatMul", [rows, builder.add("Transpose", [rows], [.ints("perm", [1, 0])])])
      let norms = builder.reduceSum(builder.mul(rows, rows), axes: [1], keepDims: true)
      let squared = builder.sub(
        builder.plus(norms, builder.add("Transpose", [norms], [.ints("perm", [1, 0])])), builder.mul(gram, builder.scalar(2)))
      let distances = builder.mul(builder.unary("Sqrt", builder.add("Max", [squared, builder.scalar(1e-12)])), names.pairMask)
      let mean = builder.mul(builder.reduceSum(distances), names.pairMean)
      return builder.div(distances, builder.add("Max", [mean, builder.scalar(1e-12)]))
    }
    let gap = builder.sub(normalizedDistances(studentROIs), normalizedDistances(teacherROIs))
    let absolute = builder.unary("Abs", gap)
    let smooth = builder.add(
      "Where",
      [
        builder.add("Less", [absolute, builder.scalar(1)]), builder.mul(builder.mul(gap, gap), builder.scalar(0.5)),
        builder.sub(absolute, builder.scalar(0.5)),
      ])
    let relation = builder.mul(builder.reduceSum(builder.mul(smooth, names.pairMask)), names.relationScale)

    var responseParts: [String] = []
    let (teacherLevels, studentLevels) = (Self.levels(teacherDecoder.config), Self.levels(studentDecoder.config))
    let classes = studentDecoder.config.numClasses
    func shape(_ value: String) throws -> [Int] {
      guard let info = builder.graph.inputs.first(where: { $0.name == value }), case .tensor(_, let dims?, _)? = info.type,
        case let sizes = dims.compactMap({ $0.size.map(Int.init) }), sizes.count == dims.count
      else { throw TrainingError.invalidConfig("gid: the loss graph has no input '\(value)' of known shape") }
      return sizes
    }
    if settings.responseClsWeight > 0 || settings.responseRegWeight > 0 {
      var cls: [String] = [], reg: [String] = []
      for (index, (t, s)) in zip(teacherLevels, studentLevels).enumerated() {
        let studentCls = DistillationLoss.studentValue(s.cls), teacherCls = DistillationLoss.teacherValue(t.cls)
        let (sShape, tShape) = (try shape(studentCls), try shape(teacherCls))
        let studentAnchors = sShape[1] / classes, teacherAnchors = tShape[1] / classes
        guard sShape[2...] == tShape[2...], teacherAnchors == studentAnchors || teacherAnchors == 1 else {
          throw TrainingError.invalidConfig(
            "gid: response compares head outputs location by location; the teacher's '\(t.cls)' is \(tShape) and the student's '\(s.cls)' \(sShape) (set response_cls_weight and response_reg_weight to 0)")
        }
        let (h, w) = (sShape[2], sShape[3])
        let mask = input("response_mask/\(index)", [n, studentAnchors, 1, h, w])
        names.responseMasks.append(mask)
        if settings.responseClsWeight > 0 {
          let zs = builder.reshape(studentCls, [n, studentAnchors, classes, h, w])
          let target = builder.unary("Sigmoid", builder.reshape(teacherCls, [n, teacherAnchors, classes, h, w]))
          let softplusOfMinusAbs = builder.unary(
            "Log", builder.plus(builder.scalar(1), builder.unary("Exp", builder.unary("Neg", builder.unary("Abs", zs)))))
          let bce = builder.plus(builder.sub(builder.unary("Relu", zs), builder.mul(zs, target)), softplusOfMinusAbs)
          cls.append(builder.reduceSum(builder.mul(bce, mask)))
        }
        if settings.responseRegWeight > 0 {
          let studentBox = DistillationLoss.studentValue(s.box), teacherBox = DistillationLoss.teacherValue(t.box)
          guard try shape(studentBox) == shape(teacherBox) else {
            throw TrainingError.invalidConfig(
              "gid: response_reg compares '\(s.box)' \(try shape(studentBox)) with '\(t.box)' \(try shape(teacherBox)); set response_reg_weight: 0")
          }
          let gap = builder.sub(builder.reshape(studentBox, [n, studentAnchors, -1, h, w]), builder.reshape(teacherBox, [n, studentAnchors, -1, h, w]))
          reg.append(builder.reduceSum(builder.mul(builder.unary("Abs", gap), mask)))
        }
      }
      if !cls.isEmpty { responseParts.append(builder.mul(total(cls), builder.scalar(settings.responseClsWeight))) }
      if !reg.isEmpty { responseParts.append(builder.mul(total(reg), builder.scalar(settings.responseRegWeight))) }
    }
    let response = responseParts.isEmpty ? builder.mul(feature, builder.scalar(0)) : builder.mul(total(responseParts), names.responseScale)
    self.names = names
    levelShapes = pairs.map(\.shape)
    batch = n
    return [
      ("feature", builder.mul(feature, builder.scalar(settings.featureWeight))),
      ("relation", builder.mul(relation, builder.scalar(settings.relationWeight))),
      ("response", response),
    ]
  }

  /// Per image and per row of the shared layout: the score (best non-background class) and box.
  /// The layout is the heads' rows when both have the same levels and anchors; otherwise their
  /// locations, with the best row of each location.
  static func predictions(
    _ form: DenseForm, geometry: [LevelGeometry], background: Int?, perLocation: Bool
  ) -> Predictions {
    var result = Predictions(scores: [], boxes: [])
    for image in 0..<form.batch {
      var scores: [Float] = [], boxes: [Box] = []
      var start = 0
      for level in geometry {
        for location in 0..<(level.height * level.width) {
          var best: (score: Float, box: Box)?
          for anchor in 0..<level.anchors {
            let row = start + location * level.anchors + anchor
            var score = -Float.infinity
            for c in 0..<form.numClasses where c != background { score = max(score, form.score(image: image, row: row, classIndex: c)) }
            let box = form.box(image: image, row: row)
            if perLocation {
              if best == nil || score > best!.score { best = (score, box) }
            } else {
              scores.append(score)
              boxes.append(box)
            }
          }
          if perLocation, let best {
            scores.append(best.score)
            boxes.append(best.box)
          }
        }
        start += level.height * level.width * level.anchors
      }
      result.scores.append(scores)
      result.boxes.append(boxes)
    }
    return result
  }

  /// The general instances of each image (see the type's contract), best GI score first, with
  /// their GI scores.
  static func select(
    teacher: Predictions, student: Predictions, imageSize: (width: Int, height: Int), settings: Settings
  ) -> [[(box: Box, score: Float)]] {
    zip(teacher.scores.indices, teacher.scores).map { image, teacherScores in
      let studentScores = student.scores[image]
      var gi: [Float] = [], boxes: [Box] = []
      for row in teacherScores.indices {
        let difference = teacherScores[row] - studentScores[row]
        gi.append(abs(difference))
        boxes.append(difference > 0 ? teacher.boxes[image][row] : student.boxes[image][row])
      }
      let order = gi.indices.sorted { gi[$0] != gi[$1] ? gi[$0] > gi[$1] : $0 < $1 }.prefix(settings.preNMSTopK)
      var candidates: [Box] = [], scores: [Float] = []
      for row in order {
        let box = boxes[row].clipped(width: Float(imageSize.width), height: Float(imageSize.height))
        guard box.width >= settings.minSide, box.height >= settings.minSide else { continue }
        candidates.append(box)
        scores.append(gi[row])
      }
      let kept = NMS.nms(boxes: candidates, scores: scores, iouThreshold: settings.nmsIoU).prefix(settings.topK)
      return kept.map { (candidates[$0], scores[$0]) }
    }
  }

  /// The level geometry of a head from its outputs' shapes.
  static func geometry(_ config: HeadConfig, shapes: (String) -> [Int]?) throws -> [LevelGeometry] {
    try levels(config).map { level in
      guard let shape = shapes(level.cls), shape.count == 4, shape[1] % config.numClasses == 0 else {
        throw TrainingError.invalidConfig("gid: the head output '\(level.cls)' is missing or not [N, A*\(config.numClasses), H, W]")
      }
      return LevelGeometry(height: shape[2], width: shape[3], anchors: shape[1] / config.numClasses)
    }
  }

  /// The instances of every image of a step from both heads' raw outputs.
  func instances(teacherOutputs: [String: Tensor], studentOutputs: [String: Tensor], imageSize: (width: Int, height: Int)) throws
    -> (boxes: [[(box: Box, score: Float)]], studentGeometry: [LevelGeometry], studentPriors: [Box])
  {
    let (teacher, student) = (teacherDecoder.config, studentDecoder.config)
    let teacherGeometry = try Self.geometry(teacher) { teacherOutputs[$0]?.shape }
    let studentGeometry = try Self.geometry(student) { studentOutputs[$0]?.shape }
    let sameRows = teacherGeometry == studentGeometry
    guard sameRows || zip(teacherGeometry, studentGeometry).allSatisfy({ $0.height == $1.height && $0.width == $1.width }) else {
      throw TrainingError.invalidConfig(
        "gid: the heads' levels differ in size (teacher \(teacherGeometry.map { "\($0.height)x\($0.width)" }), student \(studentGeometry.map { "\($0.height)x\($0.width)" })); GI selection compares them location by location")
    }
    let teacherForm = try teacherDecoder.denseForm(outputs: teacherOutputs, imageSize: imageSize)
    let studentForm = try studentDecoder.denseForm(outputs: studentOutputs, imageSize: imageSize)
    let selected = Self.select(
      teacher: Self.predictions(teacherForm, geometry: teacherGeometry, background: Self.background(teacher), perLocation: !sameRows),
      student: Self.predictions(studentForm, geometry: studentGeometry, background: Self.background(student), perLocation: !sameRows),
      imageSize: imageSize, settings: settings)
    return (selected, studentGeometry, studentForm.priors)
  }

  func stepFeeds(_ context: StepContext) throws -> [String: Tensor] {
    let imageSize = (width: context.inputSize.width, height: context.inputSize.height)
    var teacherOutputs: [String: Tensor] = [:], studentOutputs: [String: Tensor] = [:]
    for name in teacherDecoder.outputNames { teacherOutputs[name] = context.teacher[name] }
    for name in studentDecoder.outputNames { studentOutputs[name] = context.student[DistillationLoss.studentValue(name)] }
    let found = try instances(teacherOutputs: teacherOutputs, studentOutputs: studentOutputs, imageSize: imageSize)
    return try feeds(boxes: found.boxes.map { $0.map(\.box) }, inputHeight: context.inputSize.height, studentGeometry: found.studentGeometry, studentPriors: found.studentPriors)
  }

  /// The level (index into the configured pairs) a box is pooled from.
  static func level(of box: Box, levelIndices: [Int]) -> Int {
    let scale = (max(box.width, 0) * max(box.height, 0)).squareRoot()
    let target = Int((4 + log2(Double(scale) / 224 + 1e-8)).rounded(.down))
    let clamped = min(max(target, levelIndices.min()!), levelIndices.max()!)
    return levelIndices.indices.min { abs(levelIndices[$0] - clamped) < abs(levelIndices[$1] - clamped) }!
  }

  /// The graph inputs for the given instances (per image, at most `top_k`).
  func feeds(boxes: [[Box]], inputHeight: Int, studentGeometry: [LevelGeometry], studentPriors: [Box]) throws -> [String: Tensor] {
    guard let names else { throw TrainingError.invalidConfig("gid: the loss graph was not built") }
    let k = settings.topK, slots = batch * k
    guard boxes.count == batch else { throw TrainingError.invalidConfig("gid: \(boxes.count) images of instances for a batch of \(batch)") }
    let strides = levelShapes.map { Float(inputHeight) / Float($0[2]) }
    let levelIndices = strides.map { Int(log2(Double($0)).rounded()) }
    var rois = levelShapes.map { _ in [Float](repeating: 0, count: slots * 4) }
    var batchIndices = levelShapes.map { _ in [Int64](repeating: 0, count: slots) }
    var levelMasks = levelShapes.map { _ in [Float](repeating: 0, count: slots) }
    var valid = [Bool](repeating: false, count: slots)
    for (image, list) in boxes.enumerated() {
      for (index, box) in list.prefix(k).enumerated() {
        let slot = image * k + index
        valid[slot] = true
        for level in strides.indices {
          let s = strides[level]
          rois[level].replaceSubrange(slot * 4..<slot * 4 + 4, with: [box.x1 / s, box.y1 / s, box.x2 / s, box.y2 / s])
          batchIndices[level][slot] = Int64(image)
        }
        levelMasks[Self.level(of: box, levelIndices: levelIndices)][slot] = 1
      }
    }
    let count = valid.filter { $0 }.count
    let pairs = count * count - count
    var pairMask = [Float](repeating: 0, count: slots * slots)
    for i in 0..<slots where valid[i] { for j in 0..<slots where valid[j] && i != j { pairMask[i * slots + j] = 1 } }
    var result: [String: Tensor] = [
      names.featureScale: Tensor(scalar: 1 / Float(max(count, 1) * settings.roiSize * settings.roiSize)),
      names.pairMask: Tensor(shape: [slots, slots], floats: pairMask),
      names.pairMean: Tensor(scalar: 1 / Float(max(pairs, 1))),
      names.relationScale: Tensor(scalar: count >= 3 ? 1 / Float(pairs) : 0),
    ]
    for level in strides.indices {
      result[names.rois[level]] = Tensor(shape: [slots, 4], floats: rois[level])
      result[names.batchIndices[level]] = Tensor(shape: [slots], ints: batchIndices[level])
      result[names.levelMasks[level]] = Tensor(shape: [slots, 1, 1, 1], floats: levelMasks[level])
    }
    var assigned = 0
    if !names.responseMasks.isEmpty {
      let anchorHead: Bool
      if case .anchors = studentDecoder.config.head { anchorHead = true } else { anchorHead = false }
      var start = 0
      for (index, level) in studentGeometry.enumerated() {
        let locations = level.height * level.width
        var mask = [Float](repeating: 0, count: batch * level.anchors * locations)
        for image in 0..<batch {
          for location in 0..<locations {
            for anchor in 0..<level.anchors {
              let prior = studentPriors[start + location * level.anchors + anchor]
              let hit = boxes[image].contains { box in
                anchorHead
                  ? prior.iou(box) >= settings.responseIoU
                  : prior.x1 > box.x1 && prior.x1 < box.x2 && prior.y1 > box.y1 && prior.y1 < box.y2
              }
              if hit {
                mask[(image * level.anchors + anchor) * locations + location] = 1
                assigned += 1
              }
            }
          }
        }
        result[names.responseMasks[index]] = Tensor(shape: [batch, level.anchors, 1, level.height, level.width], floats: mask)
        start += locations * level.anchors
      }
    }
    result[names.responseScale] = Tensor(scalar: 1 / Float(max(assigned, 1)))
    return result
  }
}
