import DistillCore
import Foundation

/// A detector's supervised (task) loss for a `dense` or `anchors` head: a loss graph built once
/// from the head config and the raw output shapes, whose inputs are the raw head outputs (under
/// their model names) and per-step target tensors (`target/...`) that plain-Swift label
/// assignment fills each step. Gradients with respect to the raw outputs seed the detector's tape.
///
/// Recipes follow the framework each comes from, normalisation included:
/// - `fcos`: torchvision `FCOSHead.compute_loss`: sigmoid focal loss over all locations, GIoU of
///   the decoded foreground boxes and centerness BCE on the foreground, each divided by the
///   batch's foreground count (at least 1); assignment by `Assigner.fcos` with anchor size = stride.
/// - `retinanet`: torchvision `RetinaNetHead.compute_loss`: per image, focal loss over the
///   anchors that are not ignored and L1 (or smooth L1) between the foreground's deltas and the
///   encoded targets (the head's `BoxCoder`), each divided by that image's foreground count (at
///   least 1), then averaged over the images; assignment by `Assigner.maxIoU` (0.5 / 0.4 with
///   low-quality matches).
/// - `gfl`: mmdet `GFLHead.loss` for `box_format: dfl` heads: quality focal loss (beta 2) over all
///   locations against the IoU of each foreground's detached decoded box with its target, divided
///   by the batch's foreground count (at least 1); GIoU (weight 2) and DFL (weight 0.25, averaged
///   over the four sides) on the foreground in stride units, each weighted by the detached
///   highest class score and divided by the sum of those weights (at least 1); assignment by
///   `Assigner.atss` on square anchors of `anchorScale` x stride centred on the points.
public final class TaskLoss: @unchecked Sendable {
  public enum Recipe: Equatable, Sendable {
    case fcos(centerSamplingRadius: Float)
    case retinanet(boxLoss: BoxRegressionLoss)
    case gfl(anchorScale: Float)

    /// The defaults for the head type: `fcos` (radius 1.5) for dense heads with a quality output
    /// and `ltrb` boxes, `gfl` (anchor scale 8) for `dfl` boxes, `retinanet` with L1 for anchor heads.
    public static func standard(for config: HeadConfig) throws -> Recipe {
      switch config.head {
      case .dense(let head) where head.boxFormat == .dfl:
        return .gfl(anchorScale: 8)
      case .dense(let head):
        guard head.boxFormat == .ltrb, head.levels.allSatisfy({ $0.quality != nil }) else {
          throw HeadConfigError(
            "the fcos task loss needs box_format ltrb and a quality (centerness) output on every level")
        }
        return .fcos(centerSamplingRadius: 1.5)
      case .anchors:
        return .retinanet(boxLoss: .l1)
      default:
        throw HeadConfigError("no task loss for '\(config.head.typeName)' heads yet (dense and anchors only)")
      }
    }
  }

  /// The box term of anchor heads, on encoded deltas (torchvision `_box_loss`).
  public enum BoxRegressionLoss: Equatable, Sendable {
    case l1
    case smoothL1(beta: Float)
  }

  public let config: HeadConfig
  public let recipe: Recipe
  public let graph: LossGraph
  /// Images per batch (the raw outputs' first dim).
  public let batch: Int
  /// Prediction rows per image, level after level, in the head's row order.
  public let rowCount: Int
  /// Rows per level.
  public let levelRows: [Int]
  /// Per row: the anchor (anchors heads) or the torchvision FCOS anchor of the point (a square of
  /// side `stride` centred on it).
  public let priors: [Box]
  /// The raw outputs the loss reads (graph inputs under the same names).
  public let outputNames: [String]
  private let pointLevels: [Assigner.PointLevel]
  /// Per row: the stride of its level.
  private let rowStrides: [Float]

  /// Names of the per-step target inputs.
  public enum Target {
    /// [N, R, C] 0/1 classification targets (GFL: soft IoU scores).
    public static let classes = "target/classes"
    /// Anchors: [N, R, 1] weight of each row's classification loss (0 for ignored rows).
    public static let classWeight = "target/class_weight"
    /// FCOS, GFL: [] the batch normaliser 1 / max(1, foreground).
    public static let normalizer = "target/normalizer"
    /// [K] int64 foreground rows as `image * R + row` (padded to at least one row of weight 0).
    public static let foreground = "target/foreground"
    /// [K] weight of each foreground row's box terms (0 for padding).
    public static let foregroundWeight = "target/foreground_weight"
    /// FCOS: [K, 4] matched boxes (xyxy); GFL: the same in stride units; anchors: [K, 4] encoded deltas.
    public static let boxes = "target/boxes"
    /// FCOS: [K] centerness targets.
    public static let centerness = "target/centerness"
    /// GFL: [4K] distances of each foreground's sides in stride units (clamped to [0, reg_max - 0.1]).
    public static let distances = "target/distances"
    /// GFL: [4K] weight of each side's DFL term.
    public static let distanceWeight = "target/distance_weight"
  }

  /// Builds the loss for `config` given each raw output's shape (as the model produces them).
  public init(config: HeadConfig, outputShapes: [String: [Int]], recipe: Recipe? = nil) throws {
    self.config = config
    let recipe = try recipe ?? Recipe.standard(for: config)
    self.recipe = recipe
    switch config.head {
    case .dense(let head) where head.activation != .sigmoid || head.background != nil:
      throw HeadConfigError("the task losses need sigmoid class logits without a background channel")
    case .anchors(let head) where head.activation != .sigmoid || head.background != nil:
      throw HeadConfigError("the task losses need sigmoid class logits without a background channel")
    default: break
    }
    let decoder = HeadDecoder(config)
    try decoder.validate(outputShapes: outputShapes)
    outputNames = decoder.outputNames
    let classes = config.numClasses
    var builder = GraphBuilder(name: "task_loss")
    var levelRows: [Int] = []
    var priors: [Box] = []
    var pointLevels: [Assigner.PointLevel] = []
    var rowStrides: [Float] = []
    var regMax = 0
    var batch = 0
    /// [N, A*K, H, W] -> [N, H*W*A, K] (location-major, then anchor), as torchvision's heads permute.
    func rows(_ name: String, anchors: Int, width k: Int) -> String {
      let shape = outputShapes[name]!
      let input = builder.input(name, shape: shape)
      let split = builder.reshape(input, [shape[0], anchors, k, shape[2] * shape[3]])
      let moved = builder.add("Transpose", [split], [.ints("perm", [0, 3, 1, 2])])
      return builder.reshape(moved, [shape[0], shape[2] * shape[3] * anchors, k])
    }
    var cls: [String] = []
    var box: [String] = []
    var quality: [String] = []
    switch (config.head, recipe) {
    case (.dense(let head), .fcos):
      for level in head.levels {
        let shape = outputShapes[level.cls]!
        batch = shape[0]
        let points = gridPoints(height: shape[2], width: shape[3], stride: level.stride, offset: head.offset)
        pointLevels.append(Assigner.PointLevel(points: points, size: level.stride))
        let half = level.stride / 2
        priors += points.map { Box(x1: $0.x - half, y1: $0.y - half, x2: $0.x + half, y2: $0.y + half) }
        levelRows.append(points.count)
        cls.append(rows(level.cls, anchors: 1, width: classes))
        box.append(rows(level.box, anchors: 1, width: 4))
        quality.append(rows(level.quality!, anchors: 1, width: 1))
      }
    case (.anchors(let head), .retinanet):
      for level in head.levels {
        let shape = outputShapes[level.cls]!
        batch = shape[0]
        let generator = head.generator(level: level)
        let anchors = generator.anchors(height: shape[2], width: shape[3])
        priors += anchors
        levelRows.append(anchors.count)
        cls.append(rows(level.cls, anchors: generator.anchorsPerLocation, width: classes))
        box.append(rows(level.box, anchors: generator.anchorsPerLocation, width: 4))
      }
    case (.dense(let head), .gfl(let scale)):
      regMax = head.regMax
      for level in head.levels {
        let shape = outputShapes[level.cls]!
        batch = shape[0]
        let points = gridPoints(height: shape[2], width: shape[3], stride: level.stride, offset: head.offset)
        let half = scale * level.stride / 2
        priors += points.map { Box(x1: $0.x - half, y1: $0.y - half, x2: $0.x + half, y2: $0.y + half) }
        rowStrides += [Float](repeating: level.stride, count: points.count)
        levelRows.append(points.count)
        cls.append(rows(level.cls, anchors: 1, width: classes))
        box.append(rows(level.box, anchors: 1, width: 4 * (head.regMax + 1)))
      }
    default:
      throw HeadConfigError("recipe \(recipe) does not fit a '\(config.head.typeName)' head")
    }
    self.batch = batch
    self.levelRows = levelRows
    self.priors = priors
    self.pointLevels = pointLevels
    self.rowStrides = rowStrides
    let rowCount = priors.count
    self.rowCount = rowCount

    func joined(_ values: [String]) -> String {
      values.count == 1 ? values[0] : builder.add("Concat", values, [.int("axis", 1)])
    }
    let logits = joined(cls)
    let regression = joined(box)
    let targetClasses = builder.input(Target.classes, shape: [batch, rowCount, classes])
    let foreground = builder.input(Target.foreground, shape: [nil], dtype: .int64)
    let foregroundWeight = builder.input(Target.foregroundWeight, shape: [nil])
    let targetBoxes = builder.input(Target.boxes, shape: [nil, 4])
    let boxWidth: Int
    if case .gfl = recipe { boxWidth = 4 * (regMax + 1) } else { boxWidth = 4 }
    let flatRegression = builder.reshape(regression, [batch * rowCount, boxWidth])
    var terms: [(name: String, value: String)] = []
    switch recipe {
    case .fcos:
      let normalizer = builder.input(Target.normalizer, shape: [])
      let centerness = builder.input(Target.centerness, shape: [nil])
      builder.scope = "classification"
      let focal = builder.sigmoidFocalLoss(logits: logits, targets: targetClasses)
      terms.append(("classification", builder.mul(focal, normalizer)))
      builder.scope = "bbox_regression"
      // torchvision's BoxLinearCoder: (cx - l s, cy - t s, cx + r s, cy + b s).
      let centres = builder.constant(
        Tensor(shape: [rowCount, 4], floats: priors.flatMap { [$0.centerX, $0.centerY, $0.centerX, $0.centerY] }),
        hint: "prior_centres")
      let scales = builder.constant(
        Tensor(shape: [rowCount, 4], floats: priors.flatMap { [-$0.width, -$0.width, $0.width, $0.width] }),
        hint: "prior_scales")
      let decoded = builder.plus(centres, builder.mul(builder.reshape(flatRegression, [batch, rowCount, 4]), scales))
      let picked = builder.add(
        "Gather", [builder.reshape(decoded, [batch * rowCount, 4]), foreground], [.int("axis", 0)])
      terms.append(
        ("bbox_regression", builder.giouLoss(predicted: picked, target: targetBoxes, weight: foregroundWeight)))
      builder.scope = "bbox_ctrness"
      let ctr = builder.add(
        "Gather", [builder.reshape(joined(quality), [batch * rowCount]), foreground], [.int("axis", 0)])
      terms.append(
        ("bbox_ctrness", builder.bceWithLogitsLoss(logits: ctr, targets: centerness, weight: foregroundWeight)))
    case .retinanet(let boxLoss):
      let classWeight = builder.input(Target.classWeight, shape: [batch, rowCount, 1])
      builder.scope = "classification"
      terms.append(
        ("classification", builder.sigmoidFocalLoss(logits: logits, targets: targetClasses, weight: classWeight)))
      builder.scope = "bbox_regression"
      let picked = builder.add("Gather", [flatRegression, foreground], [.int("axis", 0)])
      let weight = builder.reshape(foregroundWeight, [-1, 1])
      switch boxLoss {
      case .l1:
        terms.append(("bbox_regression", builder.l1Loss(predictions: picked, targets: targetBoxes, weight: weight)))
      case .smoothL1(let beta):
        terms.append(
          (
            "bbox_regression",
            builder.smoothL1Loss(predictions: picked, targets: targetBoxes, beta: beta, weight: weight)
          ))
      }
    case .gfl:
      let bins = regMax + 1
      let normalizer = builder.input(Target.normalizer, shape: [])
      let distances = builder.input(Target.distances, shape: [nil])
      let distanceWeight = builder.input(Target.distanceWeight, shape: [nil])
      builder.scope = "loss_cls"
      let qfl = builder.qualityFocalLoss(logits: logits, scores: targetClasses)
      terms.append(("loss_cls", builder.mul(qfl, normalizer)))
      builder.scope = "loss_bbox"
      let picked = builder.add("Gather", [flatRegression, foreground], [.int("axis", 0)])
      let sides = builder.reshape(picked, [-1, bins])
      // The DFL integral: the expectation of each side's softmax over bins 0...reg_max.
      let project = builder.constant(Tensor(shape: [bins], floats: (0..<bins).map(Float.init)), hint: "project")
      let expectation = builder.reduceSum(
        builder.mul(builder.add("Softmax", [sides], [.int("axis", 1)]), project), axes: [1])
      let centres = builder.constant(
        Tensor(
          shape: [batch * rowCount, 4],
          floats: (0..<batch).flatMap { _ in
            zip(priors, rowStrides).flatMap { prior, stride in
              [prior.centerX / stride, prior.centerY / stride, prior.centerX / stride, prior.centerY / stride]
            }
          }), hint: "prior_centres")
      let signs = builder.constant(Tensor(shape: [4], floats: [-1, -1, 1, 1]), hint: "side_signs")
      let decoded = builder.plus(
        builder.add("Gather", [centres, foreground], [.int("axis", 0)]),
        builder.mul(builder.reshape(expectation, [-1, 4]), signs))
      terms.append(("loss_bbox", builder.giouLoss(predicted: decoded, target: targetBoxes, weight: foregroundWeight)))
      builder.scope = "loss_dfl"
      terms.append(
        (
          "loss_dfl",
          builder.distributionFocalLoss(logits: sides, targets: distances, bins: bins, weight: distanceWeight)
        ))
    }
    builder.scope = ""
    let total = builder.add("Sum", terms.map(\.value), hint: "loss")
    graph = try LossGraph(builder, loss: total, terms: terms)
  }

  /// The assignment of one image's rows (see `Assigner`): FCOS centre sampling for `fcos`, the
  /// max-IoU matcher for `retinanet`, ATSS for `gfl`.
  public func assign(_ truth: GroundTruth) -> [Int] {
    switch recipe {
    case .fcos(let radius): return Assigner.fcos(levels: pointLevels, truth: truth.boxes, radius: radius)
    case .retinanet: return Assigner.maxIoU(anchors: priors, truth: truth.boxes)
    case .gfl: return Assigner.atss(anchors: priors, levels: levelRows, truth: truth.boxes)
    }
  }

  /// The target tensors for one batch, from each image's ground truth and row assignment
  /// (`assign` unless given). GFL's targets also read the raw `outputs` (detached): the IoU of each
  /// foreground's decoded box and the highest class score.
  public func targets(_ truth: [GroundTruth], outputs: [String: Tensor] = [:], assignments: [[Int]]? = nil) throws
    -> [String: Tensor]
  {
    guard truth.count == batch else {
      throw HeadConfigError("\(truth.count) images of ground truth for a batch of \(batch)")
    }
    let assignments = assignments ?? truth.map(assign)
    let classes = config.numClasses
    var targetClasses = [Float](repeating: 0, count: batch * rowCount * classes)
    var classWeight = [Float](repeating: 0, count: batch * rowCount)
    var foreground: [Int64] = []
    var weights: [Float] = []
    var boxes: [Float] = []
    var centerness: [Float] = []
    var distances: [Float] = []
    var distanceWeights: [Float] = []
    var form: DenseForm?
    if case .gfl = recipe {
      form = try HeadDecoder(config).denseForm(outputs: outputs, imageSize: config.inputSize ?? (0, 0))
    }
    let total = assignments.reduce(0) { $0 + $1.filter { $0 >= 0 }.count }
    for (image, matches) in assignments.enumerated() {
      guard matches.count == rowCount else {
        throw HeadConfigError("image \(image): \(matches.count) assignments for \(rowCount) rows")
      }
      let count = matches.filter { $0 >= 0 }.count
      let perImage = 1 / (Float(max(1, count)) * Float(batch))
      for (row, match) in matches.enumerated() {
        classWeight[image * rowCount + row] = match == Assigner.ignored ? 0 : perImage
        guard match >= 0 else { continue }
        let label = truth[image].labels[match]
        guard label >= 0 && label < classes else {
          throw HeadConfigError("image \(image): label \(label) is outside num_classes \(classes)")
        }
        foreground.append(Int64(image * rowCount + row))
        let box = truth[image].boxes[match]
        let prior = priors[row]
        let cell = (image * rowCount + row) * classes + label
        switch recipe {
        case .fcos:
          targetClasses[cell] = 1
          weights.append(1 / Float(max(1, total)))
          boxes += box.xyxy
          let size = prior.width
          let l = (prior.centerX - box.x1) / size
          let t = (prior.centerY - box.y1) / size
          let r = (box.x2 - prior.centerX) / size
          let b = (box.y2 - prior.centerY) / size
          centerness.append((min(l, r) / max(l, r) * (min(t, b) / max(t, b))).squareRoot())
        case .retinanet:
          targetClasses[cell] = 1
          weights.append(perImage)
          boxes += anchorCoder.encode(box, anchor: prior)
        case .gfl:
          // In stride units: the IoU of the detached prediction is the class target, the highest
          // class score weighs the box terms (normalised below).
          guard let form else { break }
          let stride = rowStrides[row]
          let scaled = Box(x1: box.x1 / stride, y1: box.y1 / stride, x2: box.x2 / stride, y2: box.y2 / stride)
          let p = form.box(image: image, row: row)
          let predicted = Box(x1: p.x1 / stride, y1: p.y1 / stride, x2: p.x2 / stride, y2: p.y2 / stride)
          let inter = predicted.intersection(scaled)
          targetClasses[cell] = inter / max(predicted.area + scaled.area - inter, 1e-6)
          weights.append((0..<classes).map { form.score(image: image, row: row, classIndex: $0) }.max() ?? 0)
          boxes += scaled.xyxy
          let cx = prior.centerX / stride
          let cy = prior.centerY / stride
          let limit = Float(regMaxOfHead) - 0.1
          distances += [cx - scaled.x1, cy - scaled.y1, scaled.x2 - cx, scaled.y2 - cy].map { min(max($0, 0), limit) }
        }
      }
    }
    if case .gfl = recipe {
      let average = max(weights.reduce(0, +), 1)
      distanceWeights = weights.flatMap { [Float](repeating: 0.25 * $0 / (4 * average), count: 4) }
      weights = weights.map { 2 * $0 / average }
    }
    if foreground.isEmpty {
      foreground = [0]
      weights = [0]
      boxes = [0, 0, 1, 1]
      centerness = [0]
      distances = [0, 0, 0, 0]
      distanceWeights = [0, 0, 0, 0]
    }
    let k = foreground.count
    var feeds: [String: Tensor] = [
      Target.classes: Tensor(shape: [batch, rowCount, classes], floats: targetClasses),
      Target.foreground: Tensor(shape: [k], ints: foreground),
      Target.foregroundWeight: Tensor(shape: [k], floats: weights),
      Target.boxes: Tensor(shape: [k, 4], floats: boxes),
    ]
    switch recipe {
    case .fcos:
      feeds[Target.normalizer] = Tensor(scalar: 1 / Float(max(1, total)))
      feeds[Target.centerness] = Tensor(shape: [k], floats: centerness)
    case .retinanet:
      feeds[Target.classWeight] = Tensor(shape: [batch, rowCount, 1], floats: classWeight)
    case .gfl:
      feeds[Target.normalizer] = Tensor(scalar: 1 / Float(max(1, total)))
      feeds[Target.distances] = Tensor(shape: [4 * k], floats: distances)
      feeds[Target.distanceWeight] = Tensor(shape: [4 * k], floats: distanceWeights)
    }
    return feeds
  }

  private var regMaxOfHead: Int {
    if case .dense(let head) = config.head { return head.regMax }
    return 0
  }

  private var anchorCoder: BoxCoder {
    if case .anchors(let head) = config.head { return head.coder }
    return BoxCoder()
  }

  /// The loss, its terms and (with `gradients`) d loss / d each raw output, for one batch of raw
  /// outputs and ground truth.
  public func evaluate(
    outputs: [String: Tensor], truth: [GroundTruth], assignments: [[Int]]? = nil, gradients: Bool = true
  ) throws -> LossGraph.Evaluation {
    var feeds = try targets(truth, outputs: outputs, assignments: assignments)
    for name in outputNames {
      guard let tensor = outputs[name] else { throw HeadConfigError("the raw outputs lack '\(name)'") }
      feeds[name] = tensor
    }
    return try graph.evaluate(feeds, gradientsFor: gradients ? Set(outputNames) : [])
  }
}
