import DistillCore
import Foundation

/// Per-location (or per-anchor, per-query) predictions of a head before any selection: for every
/// image and every prediction row, the decoded box (xyxy, input pixels) and the per-class scores
/// after the activation (and, for dense heads with a quality branch, after combining it).
/// Distillation losses compare teacher and student rows one to one.
public struct DenseForm: Sendable {
  public var batch: Int
  /// Prediction rows per image.
  public var count: Int
  /// Score columns per row (including a background or no-object column when the head has one).
  public var numClasses: Int
  /// [batch, count, 4] xyxy boxes in input pixels (not clipped).
  public var boxes: [Float]
  /// [batch, count, numClasses] scores.
  public var scores: [Float]
  /// The rows of each feature level (one range for yolo and detr).
  public var levels: [Range<Int>]
  /// Per row: the anchor box (anchors heads), the point as an empty box (dense heads); empty otherwise.
  public var priors: [Box]

  public func box(image: Int, row: Int) -> Box {
    let i = (image * count + row) * 4
    return Box(x1: boxes[i], y1: boxes[i + 1], x2: boxes[i + 2], y2: boxes[i + 3])
  }

  public func score(image: Int, row: Int, classIndex: Int) -> Float {
    scores[(image * count + row) * numClasses + classIndex]
  }
}

/// Turns a model's raw outputs into detections as described by a `HeadConfig`, reproducing the
/// post-processing of the framework each head type comes from (torchvision RetinaNet/FCOS
/// `postprocess_detections`, ultralytics NMS, DETR and Deformable DETR `PostProcess`).
public struct HeadDecoder: Sendable {
  public let config: HeadConfig

  public init(_ config: HeadConfig) { self.config = config }

  /// The model outputs the config reads.
  public var outputNames: [String] {
    switch config.head {
    case .dense(let d): return d.levels.flatMap { [$0.cls, $0.box] + ($0.quality.map { [$0] } ?? []) }
    case .anchors(let a): return a.levels.flatMap { [$0.cls, $0.box] }
    case .yolo(let y): return [y.output]
    case .detr(let d): return [d.logits, d.boxes] + d.aux.flatMap { [$0.logits, $0.boxes] }
    case .postprocessed(let p): return [p.boxes, p.scores, p.labels]
    }
  }

  /// Checks that every output the config names exists with a shape that fits the head type.
  /// Errors name the output, the config key and the expected shape.
  public func validate(outputShapes: [String: [Int]]) throws {
    _ = try geometry(outputShapes)
  }

  /// The per-row form of the predictions (see `DenseForm`). For detr heads, `auxLayer` selects an
  /// auxiliary decoder layer instead of the final one.
  public func denseForm(
    outputs: [String: Tensor], imageSize: (width: Int, height: Int), auxLayer: Int? = nil
  ) throws -> DenseForm {
    let shapes = outputs.mapValues(\.shape)
    let geometry = try geometry(shapes)
    func floats(_ name: String) throws -> [Float] {
      guard let tensor = outputs[name] else { throw HeadConfigError("no output '\(name)'") }
      guard tensor.isFloat else {
        throw HeadConfigError("output '\(name)' has dtype \(tensor.dtype), expected a float type")
      }
      return tensor.floats
    }
    switch config.head {
    case .dense(let head): return try denseForm(head, geometry, floats)
    case .anchors(let head): return try denseForm(head, geometry, floats)
    case .yolo(let head): return try denseForm(head, geometry, floats)
    case .detr(let head):
      var names = (head.logits, head.boxes)
      if let auxLayer {
        guard head.aux.indices.contains(auxLayer) else {
          throw HeadConfigError("aux layer \(auxLayer) requested, the config lists \(head.aux.count)")
        }
        names = (head.aux[auxLayer].logits, head.aux[auxLayer].boxes)
      }
      return try denseForm(head, names, geometry, imageSize, floats)
    case .postprocessed:
      throw HeadConfigError("a postprocessed head has no dense form (its graph already ends in NMS)")
    }
  }

  /// Detections per image of the batch, best first.
  public func decode(outputs: [String: Tensor], imageSize: (width: Int, height: Int)) throws -> [[Detection]] {
    let width = Float(imageSize.width)
    let height = Float(imageSize.height)
    switch config.head {
    case .dense(let head):
      let form = try denseForm(outputs: outputs, imageSize: imageSize)
      return select(form, background: head.background, perLevel: true, clipFirst: true, width: width, height: height)
    case .anchors(let head):
      let form = try denseForm(outputs: outputs, imageSize: imageSize)
      return select(form, background: head.background, perLevel: true, clipFirst: true, width: width, height: height)
    case .yolo:
      let form = try denseForm(outputs: outputs, imageSize: imageSize)
      return select(form, background: nil, perLevel: false, clipFirst: false, width: width, height: height)
    case .detr(let head):
      let form = try denseForm(outputs: outputs, imageSize: imageSize)
      return (0..<form.batch).map { setPrediction(form, image: $0, softmax: head.activation == .softmax) }
    case .postprocessed(let head):
      _ = try geometry(outputs.mapValues(\.shape))
      return try postprocessed(head, outputs)
    }
  }

  struct Geometry {
    var batch: Int
    /// (height, width, anchors per location) per level; (1, rows, 1) for yolo and detr.
    var levels: [(height: Int, width: Int, anchors: Int)] = []
    var generators: [AnchorGenerator] = []
  }

  func geometry(_ shapes: [String: [Int]]) throws -> Geometry {
    var batch: Int?
    func shape(_ name: String, _ key: String) throws -> [Int] {
      guard let shape = shapes[name] else {
        let known = shapes.keys.sorted().joined(separator: ", ")
        throw HeadConfigError("\(key) names output '\(name)', but the model has no such output (it has: \(known))")
      }
      if let first = shape.first, shape.count >= 2 {
        if let batch, batch != first {
          throw HeadConfigError("output '\(name)' (\(key)) has batch \(first), other outputs have \(batch)")
        }
        batch = first
      }
      return shape
    }
    func text(_ shape: [Int]) -> String { "[" + shape.map(String.init).joined(separator: ",") + "]" }
    func fail(_ name: String, _ key: String, _ shape: [Int], _ expected: String) -> HeadConfigError {
      HeadConfigError("output '\(name)' (\(key)) has shape \(text(shape)); expected \(expected)")
    }
    let classes = config.numClasses
    var geometry = Geometry(batch: 0)
    switch config.head {
    case .dense(let head):
      let boxChannels = head.boxFormat == .dfl ? 4 * (head.regMax + 1) : 4
      for (index, level) in head.levels.enumerated() {
        let key = "levels[\(index)]"
        let cls = try shape(level.cls, "\(key).cls")
        guard cls.count == 4, cls[1] == classes else {
          throw fail(
            level.cls, "\(key).cls", cls, "[N,\(classes),H,W] (num_classes = \(classes) class logits per location)")
        }
        let (h, w) = (cls[2], cls[3])
        let box = try shape(level.box, "\(key).box")
        guard box.count == 4, box[1] == boxChannels, box[0] == cls[0], box[2] == h, box[3] == w else {
          let what = head.boxFormat == .dfl ? "4*(reg_max+1) = \(boxChannels) DFL bins" : "4 box distances"
          throw fail(
            level.box, "\(key).box", box, "[\(cls[0]),\(boxChannels),\(h),\(w)] (\(what) per location of \(level.cls))")
        }
        if let quality = level.quality {
          let q = try shape(quality, "\(key).quality")
          guard q.count == 4, q[1] == 1, q[0] == cls[0], q[2] == h, q[3] == w else {
            throw fail(
              quality, "\(key).quality", q, "[\(cls[0]),1,\(h),\(w)] (one quality logit per location of \(level.cls))")
          }
        }
        geometry.levels.append((h, w, 1))
      }
    case .anchors(let head):
      for (index, level) in head.levels.enumerated() {
        let key = "levels[\(index)]"
        let generator = head.generator(level: level)
        let anchors = generator.anchorsPerLocation
        let cls = try shape(level.cls, "\(key).cls")
        guard cls.count == 4, cls[1] == anchors * classes else {
          throw fail(
            level.cls, "\(key).cls", cls,
            "[N,\(anchors * classes),H,W] (\(anchors) anchors x \(classes) classes per location)")
        }
        let (h, w) = (cls[2], cls[3])
        let box = try shape(level.box, "\(key).box")
        guard box.count == 4, box[1] == anchors * 4, box[0] == cls[0], box[2] == h, box[3] == w else {
          throw fail(
            level.box, "\(key).box", box,
            "[\(cls[0]),\(anchors * 4),\(h),\(w)] (\(anchors) anchors x 4 deltas per location)")
        }
        geometry.levels.append((h, w, anchors))
        geometry.generators.append(generator)
      }
    case .yolo(let head):
      let columns = 4 + (head.objectness ? 1 : 0) + classes
      let output = try shape(head.output, "output")
      let layout = head.layout == .anchorsFirst ? "[N,A,\(columns)]" : "[N,\(columns),A]"
      let columnAxis = head.layout == .anchorsFirst ? 2 : 1
      guard output.count == 3, output[columnAxis] == columns else {
        throw fail(
          head.output, "output", output,
          "\(layout) (layout \(head.layout.rawValue): 4 box\(head.objectness ? " + 1 objectness" : "") + \(classes) class columns)"
        )
      }
      geometry.levels.append((1, output[3 - columnAxis], 1))
    case .detr(let head):
      let logitColumns = classes + (head.activation == .softmax ? 1 : 0)
      for (index, layer) in ([DETRNames(head.logits, head.boxes)] + head.aux.map { DETRNames($0.logits, $0.boxes) })
        .enumerated()
      {
        let prefix = index == 0 ? "" : "aux[\(index - 1)]."
        let logits = try shape(layer.logits, "\(prefix)logits")
        guard logits.count == 3, logits[2] == logitColumns else {
          let why = head.activation == .softmax ? "\(classes) classes + 1 no-object" : "\(classes) classes"
          throw fail(layer.logits, "\(prefix)logits", logits, "[N,Q,\(logitColumns)] (\(why))")
        }
        let boxes = try shape(layer.boxes, "\(prefix)boxes")
        guard boxes.count == 3, boxes[0] == logits[0], boxes[1] == logits[1], boxes[2] == 4 else {
          throw fail(
            layer.boxes, "\(prefix)boxes", boxes,
            "[\(logits[0]),\(logits[1]),4] (cx, cy, w, h per query of \(layer.logits))")
        }
        if index == 0 { geometry.levels.append((1, logits[1], 1)) }
      }
    case .postprocessed(let head):
      let boxes = try shape(head.boxes, "boxes")
      guard boxes.count == 2 || boxes.count == 3, boxes.last == 4 else {
        throw fail(head.boxes, "boxes", boxes, "[K,4] or [N,K,4] xyxy boxes")
      }
      let prefix = Array(boxes.dropLast())
      for (name, key) in [(head.scores, "scores"), (head.labels, "labels")] {
        let s = try shape(name, key)
        guard s == prefix else { throw fail(name, key, s, "\(text(prefix)) (one per box of \(head.boxes))") }
      }
      batch = boxes.count == 3 ? boxes[0] : 1
    }
    geometry.batch = batch ?? 1
    return geometry
  }

  private struct DETRNames {
    let logits: String, boxes: String
    init(_ logits: String, _ boxes: String) {
      self.logits = logits
      self.boxes = boxes
    }
  }

  @inline(__always) static func sigmoid(_ x: Float) -> Float { 1 / (1 + exp(-x)) }

  /// Softmax of `values` in place.
  static func softmax(_ values: inout [Float]) {
    guard let top = values.max() else { return }
    var sum: Float = 0
    for i in values.indices {
      values[i] = exp(values[i] - top)
      sum += values[i]
    }
    for i in values.indices { values[i] /= sum }
  }

  private func denseForm(_ head: HeadConfig.Dense, _ g: Geometry, _ floats: (String) throws -> [Float]) throws
    -> DenseForm
  {
    let classes = config.numClasses
    let rows = g.levels.reduce(0) { $0 + $1.height * $1.width }
    var form = DenseForm(
      batch: g.batch, count: rows, numClasses: classes, boxes: [Float](repeating: 0, count: g.batch * rows * 4),
      scores: [Float](repeating: 0, count: g.batch * rows * classes), levels: [], priors: [])
    let bins = head.regMax + 1
    var start = 0
    for (index, level) in head.levels.enumerated() {
      let (h, w) = (g.levels[index].height, g.levels[index].width)
      let hw = h * w
      let cls = try floats(level.cls)
      let box = try floats(level.box)
      let quality = try level.quality.map { try floats($0) }
      let points = gridPoints(height: h, width: w, stride: level.stride, offset: head.offset)
      form.levels.append(start..<(start + hw))
      form.priors += points.map { Box(x1: $0.x, y1: $0.y, x2: $0.x, y2: $0.y) }
      var logits = [Float](repeating: 0, count: classes)
      var distribution = [Float](repeating: 0, count: bins)
      for n in 0..<g.batch {
        for p in 0..<hw {
          let row = n * rows + start + p
          for c in 0..<classes { logits[c] = cls[(n * classes + c) * hw + p] }
          if head.activation == .softmax {
            HeadDecoder.softmax(&logits)
          } else {
            for c in 0..<classes { logits[c] = HeadDecoder.sigmoid(logits[c]) }
          }
          if let quality {
            let q = HeadDecoder.sigmoid(quality[n * hw + p])
            for c in 0..<classes {
              logits[c] = head.qualityMode == .sqrt ? (logits[c] * q).squareRoot() : logits[c] * q
            }
          }
          for c in 0..<classes { form.scores[row * classes + c] = logits[c] }
          var d: (Float, Float, Float, Float)
          switch head.boxFormat {
          case .ltrb, .ltrbPixels:
            let scale = head.boxFormat == .ltrb ? level.stride : 1
            d = (
              box[(n * 4) * hw + p] * scale, box[(n * 4 + 1) * hw + p] * scale, box[(n * 4 + 2) * hw + p] * scale,
              box[(n * 4 + 3) * hw + p] * scale
            )
          case .dfl:
            var sides: [Float] = []
            for k in 0..<4 {
              for j in 0..<bins { distribution[j] = box[(n * 4 * bins + k * bins + j) * hw + p] }
              HeadDecoder.softmax(&distribution)
              var expectation: Float = 0
              for j in 0..<bins { expectation += distribution[j] * Float(j) }
              sides.append(expectation * level.stride)
            }
            d = (sides[0], sides[1], sides[2], sides[3])
          }
          let point = points[p]
          form.boxes.replaceSubrange(
            row * 4..<row * 4 + 4, with: [point.x - d.0, point.y - d.1, point.x + d.2, point.y + d.3])
        }
      }
      start += hw
    }
    return form
  }

  private func denseForm(_ head: HeadConfig.Anchors, _ g: Geometry, _ floats: (String) throws -> [Float]) throws
    -> DenseForm
  {
    let classes = config.numClasses
    let rows = g.levels.reduce(0) { $0 + $1.height * $1.width * $1.anchors }
    var form = DenseForm(
      batch: g.batch, count: rows, numClasses: classes, boxes: [Float](repeating: 0, count: g.batch * rows * 4),
      scores: [Float](repeating: 0, count: g.batch * rows * classes), levels: [], priors: [])
    var start = 0
    for (index, level) in head.levels.enumerated() {
      let (h, w, a) = g.levels[index]
      let hw = h * w
      let cls = try floats(level.cls)
      let box = try floats(level.box)
      let anchors = g.generators[index].anchors(height: h, width: w)
      form.levels.append(start..<(start + hw * a))
      form.priors += anchors
      var logits = [Float](repeating: 0, count: classes)
      for n in 0..<g.batch {
        for p in 0..<hw {
          for k in 0..<a {
            let local = p * a + k
            let row = n * rows + start + local
            for c in 0..<classes { logits[c] = cls[(n * a * classes + k * classes + c) * hw + p] }
            if head.activation == .softmax {
              HeadDecoder.softmax(&logits)
            } else {
              for c in 0..<classes { logits[c] = HeadDecoder.sigmoid(logits[c]) }
            }
            for c in 0..<classes { form.scores[row * classes + c] = logits[c] }
            let base = n * a * 4 + k * 4
            let decoded = head.coder.decode(
              box[base * hw + p], box[(base + 1) * hw + p], box[(base + 2) * hw + p], box[(base + 3) * hw + p],
              anchor: anchors[local])
            form.boxes.replaceSubrange(row * 4..<row * 4 + 4, with: decoded.xyxy)
          }
        }
      }
      start += hw * a
    }
    return form
  }

  private func denseForm(_ head: HeadConfig.YOLO, _ g: Geometry, _ floats: (String) throws -> [Float]) throws
    -> DenseForm
  {
    let classes = config.numClasses
    let rows = g.levels[0].width
    let columns = 4 + (head.objectness ? 1 : 0) + classes
    let values = try floats(head.output)
    var form = DenseForm(
      batch: g.batch, count: rows, numClasses: classes, boxes: [Float](repeating: 0, count: g.batch * rows * 4),
      scores: [Float](repeating: 0, count: g.batch * rows * classes), levels: [0..<rows], priors: [])
    let first = head.layout == .anchorsFirst
    var probabilities = [Float](repeating: 0, count: classes)
    for n in 0..<g.batch {
      for r in 0..<rows {
        @inline(__always) func value(_ k: Int) -> Float {
          first ? values[(n * rows + r) * columns + k] : values[(n * columns + k) * rows + r]
        }
        let box =
          head.boxFormat == .xywh
          ? Box(cxcywh: value(0), value(1), value(2), value(3))
          : Box(x1: value(0), y1: value(1), x2: value(2), y2: value(3))
        let row = n * rows + r
        form.boxes.replaceSubrange(row * 4..<row * 4 + 4, with: box.xyxy)
        let offset = head.objectness ? 5 : 4
        for c in 0..<classes { probabilities[c] = value(offset + c) }
        var objectness: Float = 1
        switch head.activation {
        case .sigmoid:
          for c in 0..<classes { probabilities[c] = HeadDecoder.sigmoid(probabilities[c]) }
          if head.objectness { objectness = HeadDecoder.sigmoid(value(4)) }
        case .softmax:
          HeadDecoder.softmax(&probabilities)
          if head.objectness { objectness = HeadDecoder.sigmoid(value(4)) }
        case .none:
          if head.objectness { objectness = value(4) }
        }
        for c in 0..<classes {
          form.scores[row * classes + c] = head.objectness ? probabilities[c] * objectness : probabilities[c]
        }
      }
    }
    return form
  }

  private func denseForm(
    _ head: HeadConfig.DETR, _ names: (logits: String, boxes: String), _ g: Geometry,
    _ imageSize: (width: Int, height: Int),
    _ floats: (String) throws -> [Float]
  ) throws -> DenseForm {
    let columns = config.numClasses + (head.activation == .softmax ? 1 : 0)
    let queries = g.levels[0].width
    let logits = try floats(names.logits)
    let boxes = try floats(names.boxes)
    var form = DenseForm(
      batch: g.batch, count: queries, numClasses: columns, boxes: [Float](repeating: 0, count: g.batch * queries * 4),
      scores: [Float](repeating: 0, count: g.batch * queries * columns), levels: [0..<queries], priors: [])
    let width = Float(imageSize.width)
    let height = Float(imageSize.height)
    var row = [Float](repeating: 0, count: columns)
    for i in 0..<(g.batch * queries) {
      for c in 0..<columns { row[c] = logits[i * columns + c] }
      if head.activation == .softmax {
        HeadDecoder.softmax(&row)
      } else {
        for c in 0..<columns { row[c] = HeadDecoder.sigmoid(row[c]) }
      }
      form.scores.replaceSubrange(i * columns..<(i + 1) * columns, with: row)
      let b = Box(cxcywh: boxes[i * 4], boxes[i * 4 + 1], boxes[i * 4 + 2], boxes[i * 4 + 3])
      form.boxes.replaceSubrange(i * 4..<i * 4 + 4, with: [b.x1 * width, b.y1 * height, b.x2 * width, b.y2 * height])
    }
    return form
  }

  /// Threshold, top-k (per level or over the image), class-aware NMS, `max_detections`. torchvision
  /// clips boxes to the image before NMS; ultralytics after.
  private func select(
    _ form: DenseForm, background: Int?, perLevel: Bool, clipFirst: Bool, width: Float, height: Float
  ) -> [[Detection]] {
    let classes = form.numClasses
    let threshold = config.scoreThreshold
    let groups = perLevel ? form.levels : [0..<form.count]
    return (0..<form.batch).map { n in
      var candidates: [Detection] = []
      for group in groups {
        var found: [(index: Int, score: Float)] = []
        let base = n * form.count
        for row in group {
          let offset = (base + row) * classes
          for c in 0..<classes where c != background {
            let score = form.scores[offset + c]
            if score > threshold { found.append((row * classes + c, score)) }
          }
        }
        if found.count > config.preNMSTopK {
          found.sort { $0.score != $1.score ? $0.score > $1.score : $0.index < $1.index }
          found.removeLast(found.count - config.preNMSTopK)
        }
        for (index, score) in found {
          var box = form.box(image: n, row: index / classes)
          if clipFirst { box = box.clipped(width: width, height: height) }
          candidates.append(Detection(box: box, score: score, classIndex: index % classes))
        }
      }
      var kept = NMS.select(candidates, iouThreshold: config.nmsIoU, maxDetections: config.maxDetections)
      if !clipFirst {
        for i in kept.indices { kept[i].box = kept[i].box.clipped(width: width, height: height) }
      }
      return kept
    }
  }

  /// DETR (softmax: per query the best real class) or Deformable DETR (sigmoid: top-k over
  /// queries x classes), then `score_threshold`.
  private func setPrediction(_ form: DenseForm, image n: Int, softmax: Bool) -> [Detection] {
    let classes = config.numClasses
    var found: [Detection] = []
    for q in 0..<form.count {
      let box = form.box(image: n, row: q)
      if softmax {
        var best = 0
        for c in 1..<classes
        where form.score(image: n, row: q, classIndex: c) > form.score(image: n, row: q, classIndex: best) { best = c }
        found.append(Detection(box: box, score: form.score(image: n, row: q, classIndex: best), classIndex: best))
      } else {
        for c in 0..<classes {
          found.append(Detection(box: box, score: form.score(image: n, row: q, classIndex: c), classIndex: c))
        }
      }
    }
    let order = NMS.sortedByScore(Array(found.indices), found.map(\.score))
    return order.prefix(config.maxDetections).map { found[$0] }.filter { $0.score > config.scoreThreshold }
  }

  private func postprocessed(_ head: HeadConfig.Postprocessed, _ outputs: [String: Tensor]) throws -> [[Detection]] {
    let boxes = outputs[head.boxes]!
    let scores = outputs[head.scores]!
    let labels = outputs[head.labels]!
    let batch = boxes.rank == 3 ? boxes.shape[0] : 1
    let count = boxes.shape[boxes.rank - 2]
    let b = boxes.asFloats
    let s = scores.asFloats
    let l = labels.asInts
    return (0..<batch).map { n in
      var detections: [Detection] = []
      for k in 0..<count {
        let i = n * count + k
        if config.scoreThreshold > 0 && !(s[i] > config.scoreThreshold) { continue }
        detections.append(
          Detection(
            box: Box(x1: b[i * 4], y1: b[i * 4 + 1], x2: b[i * 4 + 2], y2: b[i * 4 + 3]), score: s[i],
            classIndex: Int(l[i])))
      }
      return Array(detections.prefix(config.maxDetections))
    }
  }
}
