import Foundation
import Yams

/// A problem in a head config or in the outputs it is checked against; the message names the key
/// or output and what was expected.
public struct HeadConfigError: Error, CustomStringConvertible, Equatable {
  public let message: String
  public init(_ message: String) { self.message = message }
  public var description: String { message }
}

/// How to turn a detector's raw outputs into per-image detections (xyxy boxes in input pixels,
/// scores, class indices). One schema, read from YAML (JSON is valid YAML) by `eval`, `predict` and
/// `train`. Unknown keys are errors, so typos do not pass silently.
///
/// Common keys (defaults depend on `type`, following the framework each type comes from):
/// - `type`: `dense` | `anchors` | `yolo` | `detr` | `postprocessed` (required).
/// - `num_classes`: classification channels per location/anchor (required except for
///   `postprocessed`). For softmax heads with a background channel (torchvision SSD) it includes
///   that channel; for `detr` it excludes DETR's trailing "no object" logit.
/// - `class_names`: optional, `num_classes` names.
/// - `score_threshold`: candidates must score strictly above it. Defaults: dense 0.2 (torchvision
///   FCOS), anchors 0.05 (torchvision RetinaNet), yolo 0.25 (ultralytics predict), detr and
///   postprocessed 0.
/// - `pre_nms_top_k`: best candidates kept before NMS, per level for dense/anchors (torchvision's
///   `topk_candidates`, default 1000), over the whole image for yolo (ultralytics `max_nms`, 30000).
/// - `nms_iou`: class-aware NMS drops boxes with IoU strictly above it. Defaults: dense 0.6,
///   anchors 0.5, yolo 0.7; not used by detr and postprocessed.
/// - `max_detections`: detections kept per image. Defaults: dense 100, anchors 300, yolo 300, detr 100,
///   postprocessed unlimited.
/// - `input_size`: optional `{width: W, height: H}`, the size the model expects.
public struct HeadConfig: Equatable, Sendable {
  public enum Activation: String, Equatable, Sendable, CaseIterable {
    case sigmoid, softmax, none
  }

  /// One feature level of a `dense` or `anchors` head.
  public struct Level: Equatable, Sendable {
    /// Output with the classification logits, [N, C, H, W] (dense) or [N, A*C, H, W] (anchors).
    public var cls: String
    /// Output with the box regression: [N, 4, H, W] (ltrb, ltrb_px), [N, 4*(reg_max+1), H, W] (dfl),
    /// or [N, A*4, H, W] deltas (anchors).
    public var box: String
    /// Dense only: optional centerness/IoU logit [N, 1, H, W] whose sigmoid rescales the scores.
    public var quality: String?
    /// Distance between neighbouring locations, in input pixels (required).
    public var stride: Float
    /// Anchors: anchor sizes in pixels (torchvision style; required there).
    public var sizes: [Float]?
    /// Anchors: aspect ratios (height / width) overriding `anchor_generator.aspect_ratios`.
    public var aspectRatios: [Float]?
    /// Anchors, mmdet style: the base size (default the stride).
    public var baseSize: Float?
  }

  /// Anchor-free per-level maps (FCOS, ATSS, GFL, YOLOX, PP-PicoDet).
  public struct Dense: Equatable, Sendable {
    public enum BoxFormat: String, Equatable, Sendable, CaseIterable {
      /// Distances (left, top, right, bottom) from the point in units of the stride (torchvision FCOS).
      case ltrb
      /// Distances in pixels.
      case ltrbPixels = "ltrb_px"
      /// Distribution focal loss bins (GFL, YOLOv8, PicoDet): per side a softmax over reg_max+1 bins whose
      /// expectation, times the stride, is the distance.
      case dfl
    }

    public enum QualityMode: String, Equatable, Sendable, CaseIterable {
      /// sqrt(sigmoid(cls) * sigmoid(quality)), as torchvision FCOS scores.
      case sqrt
      /// sigmoid(cls) * sigmoid(quality), as mmdet's FCOS/ATSS multiply centerness into NMS scores.
      case multiply
    }

    public var levels: [Level]
    /// Default `sigmoid`.
    public var activation: Activation
    /// Default `ltrb`.
    public var boxFormat: BoxFormat
    /// DFL bins per side minus one (default 16, as GFL; YOLOv8's 16 bins are reg_max 15 here).
    public var regMax: Int
    /// Default `sqrt`.
    public var qualityMode: QualityMode
    /// Point centres at `(x + offset) * stride`; default 0 (torchvision FCOS).
    public var offset: Float
    /// Class index of a background channel to ignore (softmax heads), default none.
    public var background: Int?
  }

  /// RetinaNet/SSD-style anchor heads.
  public struct Anchors: Equatable, Sendable {
    public var levels: [Level]
    /// Default `sigmoid`; `softmax` heads name their `background` channel.
    public var activation: Activation
    /// Class index of the background channel (softmax heads such as SSD use 0), default none.
    public var background: Int?
    /// `anchor_generator`: `style` (torchvision | mmdet, default torchvision), `aspect_ratios`
    /// (default [0.5, 1.0, 2.0]), and for mmdet `octave_base_scale` + `scales_per_octave` or
    /// `scales` (sizes are base_size * scale), `center_offset` (default 0).
    public var generatorStyle: AnchorGenerator.Style
    public var aspectRatios: [Float]
    public var scales: [Float]?
    public var centerOffset: Float
    /// `box_coder`: `style` (torchvision | mmdet, default the generator's), `weights`, `clip`
    /// (torchvision), `means`, `stds`, `wh_ratio_clip` (mmdet).
    public var coder: BoxCoder

    /// The generator of one level.
    public func generator(level: Level) -> AnchorGenerator {
      let ratios = level.aspectRatios ?? aspectRatios
      let base = level.baseSize ?? level.stride
      let sizes = level.sizes ?? (scales ?? [1]).map { $0 * base }
      return AnchorGenerator(
        style: generatorStyle, aspectRatios: ratios, sizes: sizes, stride: level.stride, centerOffset: centerOffset,
        baseSize: base)
    }
  }

  /// One-output YOLO heads (YOLOv5/v8/v11 exports).
  public struct YOLO: Equatable, Sendable {
    public enum Layout: String, Equatable, Sendable, CaseIterable {
      /// [N, A, 4(+1)+C] (YOLOv5 exports).
      case anchorsFirst = "anchors_first"
      /// [N, 4(+1)+C, A] (YOLOv8/11 exports).
      case anchorsLast = "anchors_last"
    }
    public enum BoxFormat: String, Equatable, Sendable, CaseIterable {
      /// Centre x, centre y, width, height in pixels.
      case xywh
      case xyxy
    }
    public var output: String
    /// Default `anchors_first`.
    public var layout: Layout
    /// Default `xywh`.
    public var boxFormat: BoxFormat
    /// Whether an objectness column follows the box (YOLOv5: score = obj * cls). Default false.
    public var objectness: Bool
    /// Applied to objectness and class columns; default `none` (exports already apply sigmoid).
    public var activation: Activation
  }

  /// DETR-family set prediction (no NMS).
  public struct DETR: Equatable, Sendable {
    public struct Layer: Equatable, Sendable {
      public var logits: String
      public var boxes: String
    }
    /// Logits [N, Q, C] (sigmoid) or [N, Q, C+1] (softmax, last = no object).
    public var logits: String
    /// Boxes [N, Q, 4], (cx, cy, w, h) normalised to the input size.
    public var boxes: String
    /// `softmax` (DETR: per query, the best class other than no-object) or `sigmoid` (Deformable
    /// DETR: top-k over queries x classes). Default softmax.
    public var activation: Activation
    /// Auxiliary decoder-layer outputs, in layer order.
    public var aux: [Layer]
  }

  /// A graph that already ends in NMS (torchvision exports): boxes [K, 4] or [N, K, 4] xyxy in
  /// pixels, scores [K] or [N, K], labels [K] or [N, K].
  public struct Postprocessed: Equatable, Sendable {
    public var boxes: String
    public var scores: String
    public var labels: String
  }

  public enum Head: Equatable, Sendable {
    case dense(Dense)
    case anchors(Anchors)
    case yolo(YOLO)
    case detr(DETR)
    case postprocessed(Postprocessed)

    public var typeName: String {
      switch self {
      case .dense: return "dense"
      case .anchors: return "anchors"
      case .yolo: return "yolo"
      case .detr: return "detr"
      case .postprocessed: return "postprocessed"
      }
    }
  }

  public var head: Head
  public var numClasses: Int
  public var classNames: [String]?
  public var scoreThreshold: Float
  public var preNMSTopK: Int
  public var nmsIoU: Float
  public var maxDetections: Int
  public var inputSize: (width: Int, height: Int)? {
    get { inputWidth.flatMap { w in inputHeight.map { (w, $0) } } }
    set {
      inputWidth = newValue?.width
      inputHeight = newValue?.height
    }
  }
  private var inputWidth: Int?
  private var inputHeight: Int?

  public init(
    head: Head, numClasses: Int, classNames: [String]? = nil, scoreThreshold: Float? = nil, preNMSTopK: Int? = nil,
    nmsIoU: Float? = nil, maxDetections: Int? = nil, inputSize: (width: Int, height: Int)? = nil
  ) {
    self.head = head
    self.numClasses = numClasses
    self.classNames = classNames
    let defaults = HeadConfig.defaults(head)
    self.scoreThreshold = scoreThreshold ?? defaults.score
    self.preNMSTopK = preNMSTopK ?? defaults.topK
    self.nmsIoU = nmsIoU ?? defaults.iou
    self.maxDetections = maxDetections ?? defaults.maxDetections
    self.inputSize = inputSize
  }

  static func defaults(_ head: Head) -> (score: Float, topK: Int, iou: Float, maxDetections: Int) {
    switch head {
    case .dense: return (0.2, 1000, 0.6, 100)
    case .anchors: return (0.05, 1000, 0.5, 300)
    case .yolo: return (0.25, 30000, 0.7, 300)
    case .detr: return (0, Int.max, 1, 100)
    case .postprocessed: return (0, Int.max, 1, Int.max)
    }
  }

  /// Reads a config file (YAML or JSON); errors name the file.
  public static func load(_ path: String) throws -> HeadConfig {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw HeadConfigError("\(path): cannot read the head config (no such file or permission denied)")
    }
    do {
      return try HeadConfig(yaml: String(decoding: data, as: UTF8.self))
    } catch let error as HeadConfigError {
      throw HeadConfigError("\(path): \(error.message)")
    }
  }

  /// Parses and checks a config (YAML or JSON text).
  public init(yaml: String) throws {
    let root: Node?
    do {
      root = try Yams.compose(yaml: yaml)
    } catch {
      throw HeadConfigError("not valid YAML: \(error)")
    }
    guard let root else { throw HeadConfigError("the head config is empty") }
    self = try ConfigReader.parse(root)
  }
}

/// Walks the YAML tree with strict keys; every error names the key path.
private struct Table {
  let path: String
  var entries: [String: Node] = [:]
  var used: Set<String> = []

  init(_ node: Node, path: String) throws {
    self.path = path
    guard let mapping = node.mapping else {
      throw HeadConfigError("\(path.isEmpty ? "the head config" : "'\(path)'") must be a mapping of keys to values")
    }
    for (key, value) in mapping {
      guard let name = key.string else { throw HeadConfigError("\(where_) has a key that is not a string") }
      entries[name] = value
    }
  }

  var where_: String { path.isEmpty ? "the head config" : "'\(path)'" }
  func key(_ name: String) -> String { path.isEmpty ? name : "\(path).\(name)" }

  mutating func node(_ name: String) -> Node? {
    used.insert(name)
    guard let node = entries[name], node.null == nil else { return nil }
    return node
  }

  mutating func string(_ name: String) throws -> String? {
    guard let node = node(name) else { return nil }
    guard node.scalar != nil, let value = node.string else { throw HeadConfigError("'\(key(name))' must be a string") }
    return value
  }

  mutating func requiredString(_ name: String, _ meaning: String) throws -> String {
    guard let value = try string(name) else { throw HeadConfigError("\(where_) is missing '\(name)' (\(meaning))") }
    return value
  }

  mutating func float(_ name: String) throws -> Float? {
    guard let node = node(name) else { return nil }
    guard let value = node.float, value.isFinite else { throw HeadConfigError("'\(key(name))' must be a number") }
    return Float(value)
  }

  mutating func int(_ name: String) throws -> Int? {
    guard let node = node(name) else { return nil }
    guard let value = node.int else { throw HeadConfigError("'\(key(name))' must be an integer") }
    return value
  }

  mutating func bool(_ name: String) throws -> Bool? {
    guard let node = node(name) else { return nil }
    guard let value = node.bool else { throw HeadConfigError("'\(key(name))' must be true or false") }
    return value
  }

  mutating func floats(_ name: String) throws -> [Float]? {
    guard let node = node(name) else { return nil }
    guard let sequence = node.sequence else { throw HeadConfigError("'\(key(name))' must be a list of numbers") }
    return try sequence.map { item in
      guard let value = item.float, value.isFinite else {
        throw HeadConfigError("'\(key(name))' must be a list of numbers")
      }
      return Float(value)
    }
  }

  mutating func strings(_ name: String) throws -> [String]? {
    guard let node = node(name) else { return nil }
    guard let sequence = node.sequence else { throw HeadConfigError("'\(key(name))' must be a list of strings") }
    return try sequence.map { item in
      guard item.scalar != nil, let value = item.string else {
        throw HeadConfigError("'\(key(name))' must be a list of strings")
      }
      return value
    }
  }

  mutating func choice<T: RawRepresentable & CaseIterable>(_ name: String, _: T.Type) throws -> T?
  where T.RawValue == String {
    guard let text = try string(name) else { return nil }
    guard let value = T(rawValue: text) else {
      let allowed = T.allCases.map(\.rawValue).joined(separator: ", ")
      throw HeadConfigError("'\(key(name))' is '\(text)'; expected one of: \(allowed)")
    }
    return value
  }

  mutating func table(_ name: String) throws -> Table? {
    guard let node = node(name) else { return nil }
    return try Table(node, path: key(name))
  }

  mutating func tables(_ name: String) throws -> [Table]? {
    guard let node = node(name) else { return nil }
    guard let sequence = node.sequence else { throw HeadConfigError("'\(key(name))' must be a list of mappings") }
    return try sequence.enumerated().map { try Table($1, path: "\(key(name))[\($0)]") }
  }

  /// Fails on keys nobody asked for, suggesting the allowed ones.
  func finish() throws {
    let unknown = entries.keys.filter { !used.contains($0) }.sorted()
    guard let first = unknown.first else { return }
    let allowed = used.sorted().joined(separator: ", ")
    throw HeadConfigError("unknown key '\(key(first))' in \(where_); allowed keys here: \(allowed)")
  }
}

private enum ConfigReader {
  static func parse(_ root: Node) throws -> HeadConfig {
    var top = try Table(root, path: "")
    guard let typeName = try top.string("type") else {
      throw HeadConfigError("the head config is missing 'type' (one of: dense, anchors, yolo, detr, postprocessed)")
    }
    let head: HeadConfig.Head
    switch typeName {
    case "dense": head = .dense(try dense(&top))
    case "anchors": head = .anchors(try anchors(&top))
    case "yolo": head = .yolo(try yolo(&top))
    case "detr": head = .detr(try detr(&top))
    case "postprocessed": head = .postprocessed(try postprocessed(&top))
    default:
      throw HeadConfigError("'type' is '\(typeName)'; expected one of: dense, anchors, yolo, detr, postprocessed")
    }
    let numClasses = try top.int("num_classes")
    let classNames = try top.strings("class_names")
    let score = try top.float("score_threshold")
    let topK = try top.int("pre_nms_top_k")
    let iou = try top.float("nms_iou")
    let maxDetections = try top.int("max_detections")
    var inputSize: (width: Int, height: Int)?
    if var size = try top.table("input_size") {
      guard let width = try size.int("width"), let height = try size.int("height"), width > 0, height > 0 else {
        throw HeadConfigError("'input_size' must be {width: W, height: H} with positive integers")
      }
      try size.finish()
      inputSize = (width, height)
    }
    try top.finish()

    let classes: Int
    if let numClasses {
      guard numClasses > 0 else { throw HeadConfigError("'num_classes' must be positive, not \(numClasses)") }
      classes = numClasses
    } else if case .postprocessed = head {
      classes = classNames?.count ?? 0
    } else {
      throw HeadConfigError("the head config is missing 'num_classes' (classification channels per location)")
    }
    if let classNames, classNames.count != classes {
      throw HeadConfigError("'class_names' has \(classNames.count) names but 'num_classes' is \(classes)")
    }
    if let topK, topK <= 0 { throw HeadConfigError("'pre_nms_top_k' must be positive, not \(topK)") }
    if let maxDetections, maxDetections <= 0 {
      throw HeadConfigError("'max_detections' must be positive, not \(maxDetections)")
    }
    if let iou, !(0...1).contains(iou) { throw HeadConfigError("'nms_iou' must be in [0, 1], not \(iou)") }
    switch head {
    case .dense(let d):
      if let b = d.background, !(0..<classes).contains(b) {
        throw HeadConfigError("'background' is \(b), outside the \(classes) classes")
      }
    case .anchors(let a):
      if let b = a.background, !(0..<classes).contains(b) {
        throw HeadConfigError("'background' is \(b), outside the \(classes) classes")
      }
    default: break
    }
    return HeadConfig(
      head: head, numClasses: classes, classNames: classNames, scoreThreshold: score, preNMSTopK: topK, nmsIoU: iou,
      maxDetections: maxDetections, inputSize: inputSize)
  }

  static func levels(_ top: inout Table, anchors: Bool) throws -> [HeadConfig.Level] {
    guard let tables = try top.tables("levels"), !tables.isEmpty else {
      throw HeadConfigError("the head config is missing 'levels' (a list with cls, box and stride per feature level)")
    }
    return try tables.map { table in
      var t = table
      let cls = try t.requiredString("cls", "the output name of the classification logits")
      let box = try t.requiredString("box", "the output name of the box regression")
      guard let stride = try t.float("stride") else {
        throw HeadConfigError("\(t.where_) has no 'stride' (the level's stride in input pixels, e.g. 8)")
      }
      guard stride > 0 else { throw HeadConfigError("'\(t.key("stride"))' must be positive, not \(stride)") }
      var level = HeadConfig.Level(cls: cls, box: box, quality: nil, stride: stride)
      if anchors {
        level.sizes = try t.floats("sizes")
        level.aspectRatios = try t.floats("aspect_ratios")
        level.baseSize = try t.float("base_size")
        if let sizes = level.sizes, sizes.isEmpty || sizes.contains(where: { $0 <= 0 }) {
          throw HeadConfigError("'\(t.key("sizes"))' must be a non-empty list of positive sizes")
        }
        if let ratios = level.aspectRatios, ratios.isEmpty || ratios.contains(where: { $0 <= 0 }) {
          throw HeadConfigError("'\(t.key("aspect_ratios"))' must be a non-empty list of positive ratios")
        }
      } else {
        level.quality = try t.string("quality")
      }
      try t.finish()
      return level
    }
  }

  static func dense(_ top: inout Table) throws -> HeadConfig.Dense {
    let levels = try levels(&top, anchors: false)
    let dense = HeadConfig.Dense(
      levels: levels, activation: try top.choice("activation", HeadConfig.Activation.self) ?? .sigmoid,
      boxFormat: try top.choice("box_format", HeadConfig.Dense.BoxFormat.self) ?? .ltrb,
      regMax: try top.int("reg_max") ?? 16,
      qualityMode: try top.choice("quality_mode", HeadConfig.Dense.QualityMode.self) ?? .sqrt,
      offset: try top.float("offset") ?? 0, background: try top.int("background"))
    guard dense.regMax >= 1 else { throw HeadConfigError("'reg_max' must be at least 1, not \(dense.regMax)") }
    if dense.activation == .none { throw HeadConfigError("'activation' of a dense head must be sigmoid or softmax") }
    return dense
  }

  static func anchors(_ top: inout Table) throws -> HeadConfig.Anchors {
    let levels = try levels(&top, anchors: true)
    let activation = try top.choice("activation", HeadConfig.Activation.self) ?? .sigmoid
    if activation == .none { throw HeadConfigError("'activation' of an anchors head must be sigmoid or softmax") }
    let background = try top.int("background")
    guard var generator = try top.table("anchor_generator") else {
      throw HeadConfigError("the head config is missing 'anchor_generator' (style, aspect_ratios, ...)")
    }
    let style = try generator.choice("style", AnchorGenerator.Style.self) ?? .torchvision
    let ratios = try generator.floats("aspect_ratios") ?? [0.5, 1.0, 2.0]
    var scales = try generator.floats("scales")
    let octaveBase = try generator.float("octave_base_scale")
    let perOctave = try generator.int("scales_per_octave")
    let centerOffset = try generator.float("center_offset") ?? 0
    try generator.finish()
    if let octaveBase {
      guard scales == nil else {
        throw HeadConfigError("'anchor_generator' has both 'scales' and 'octave_base_scale'; give one")
      }
      scales = AnchorGenerator.octaveScales(octaveBaseScale: octaveBase, scalesPerOctave: perOctave ?? 1)
    }
    for (index, level) in levels.enumerated() where level.sizes == nil && scales == nil {
      throw HeadConfigError(
        "levels[\(index)] has no 'sizes' and 'anchor_generator' has no 'scales' or 'octave_base_scale': the anchor sizes are unknown"
      )
    }
    var coder = BoxCoder(style: style == .mmdet ? .mmdet : .torchvision)
    if var table = try top.table("box_coder") {
      coder.style = try table.choice("style", BoxCoder.Style.self) ?? coder.style
      func four(_ name: String) throws -> [Float]? {
        guard let values = try table.floats(name) else { return nil }
        guard values.count == 4 else {
          throw HeadConfigError("'box_coder.\(name)' must have 4 numbers, not \(values.count)")
        }
        return values
      }
      coder.weights = try four("weights") ?? coder.weights
      coder.means = try four("means") ?? coder.means
      coder.stds = try four("stds") ?? coder.stds
      let clip = try table.float("clip")
      let ratioClip = try table.float("wh_ratio_clip")
      try table.finish()
      if coder.style == .mmdet {
        coder.clip = clip ?? abs(log(ratioClip ?? 16.0 / 1000.0))
      } else {
        coder.clip = clip ?? BoxCoder.torchvisionDefaultClip
      }
      if coder.weights.contains(0) { throw HeadConfigError("'box_coder.weights' must not contain 0") }
    } else if style == .mmdet {
      coder.clip = abs(log(16.0 / 1000.0))
    }
    return HeadConfig.Anchors(
      levels: levels, activation: activation, background: background, generatorStyle: style, aspectRatios: ratios,
      scales: scales, centerOffset: centerOffset, coder: coder)
  }

  static func yolo(_ top: inout Table) throws -> HeadConfig.YOLO {
    HeadConfig.YOLO(
      output: try top.requiredString("output", "the name of the single prediction output"),
      layout: try top.choice("layout", HeadConfig.YOLO.Layout.self) ?? .anchorsFirst,
      boxFormat: try top.choice("box_format", HeadConfig.YOLO.BoxFormat.self) ?? .xywh,
      objectness: try top.bool("objectness") ?? false,
      activation: try top.choice("activation", HeadConfig.Activation.self) ?? HeadConfig.Activation.none)
  }

  static func detr(_ top: inout Table) throws -> HeadConfig.DETR {
    let logits = try top.requiredString("logits", "the output name of the class logits [N, Q, C(+1)]")
    let boxes = try top.requiredString("boxes", "the output name of the boxes [N, Q, 4]")
    let activation = try top.choice("activation", HeadConfig.Activation.self) ?? .softmax
    if activation == .none { throw HeadConfigError("'activation' of a detr head must be sigmoid or softmax") }
    let aux = try (top.tables("aux") ?? []).map { table -> HeadConfig.DETR.Layer in
      var t = table
      let layer = HeadConfig.DETR.Layer(
        logits: try t.requiredString("logits", "the layer's class logits"),
        boxes: try t.requiredString("boxes", "the layer's boxes"))
      try t.finish()
      return layer
    }
    return HeadConfig.DETR(logits: logits, boxes: boxes, activation: activation, aux: aux)
  }

  static func postprocessed(_ top: inout Table) throws -> HeadConfig.Postprocessed {
    HeadConfig.Postprocessed(
      boxes: try top.requiredString("boxes", "the output name of the xyxy boxes"),
      scores: try top.requiredString("scores", "the output name of the scores"),
      labels: try top.requiredString("labels", "the output name of the class labels"))
  }
}

extension HeadConfig {
  public static func == (a: HeadConfig, b: HeadConfig) -> Bool {
    a.head == b.head && a.numClasses == b.numClasses && a.classNames == b.classNames
      && a.scoreThreshold == b.scoreThreshold
      && a.preNMSTopK == b.preNMSTopK && a.nmsIoU == b.nmsIoU && a.maxDetections == b.maxDetections
      && a.inputWidth == b.inputWidth && a.inputHeight == b.inputHeight
  }
}
