import Foundation

/// The numbers of a COCO bbox evaluation, as fractions; -1 where pycocotools gives -1 (no
/// ground truth in the setting).
public struct COCOEvaluation: Sendable {
  public struct ClassResult: Sendable {
    public var categoryId: Int
    public var name: String
    /// AP@[.5:.95], area all, 100 detections per image.
    public var ap: Double
    /// AP at IoU 0.5, area all, 100 detections per image.
    public var ap50: Double
  }

  /// pycocotools' `COCOeval.stats`: AP@[.5:.95], AP50, AP75, AP small, medium, large (100 detections),
  /// AR@1, AR@10, AR@100, AR small, medium, large (100 detections).
  public var stats: [Double]
  /// In ascending category id order (class index order).
  public var perClass: [ClassResult]

  public var map: Double { stats[0] }
  public var ap50: Double { stats[1] }
  public var ap75: Double { stats[2] }
  public var apSmall: Double { stats[3] }
  public var apMedium: Double { stats[4] }
  public var apLarge: Double { stats[5] }
  public var ar1: Double { stats[6] }
  public var ar10: Double { stats[7] }
  public var ar100: Double { stats[8] }
  public var arSmall: Double { stats[9] }
  public var arMedium: Double { stats[10] }
  public var arLarge: Double { stats[11] }
}

/// COCO bbox evaluation computing what pycocotools' `COCOeval(gt, dt, "bbox")` with default
/// parameters computes (`evaluate`, `accumulate`, `summarize`):
/// - IoU of xywh boxes without +1; for a crowd ground truth the union is the detection's area;
/// - per image and category, detections sorted by score (stable), the best 100 kept; ground truths
///   that are crowd or outside the area range are ignored and sorted last; greedy matching per IoU
///   threshold (a later ground truth with equal IoU wins, crowds can match many detections); a
///   detection matched to an ignored ground truth, or unmatched and outside the area range, is ignored;
/// - per category, area range and detection limit, the images' detections (in image id order, at most
///   the limit each) merged by a stable sort on score, then 101-point interpolated precision;
/// - area ranges by the ground truth's `area` field and the detection's w * h, bounds inclusive.
///
/// One difference, deliberate: pycocotools records a match by the ground truth's id and tests it for
/// non-zero, so a ground truth with id 0 never counts as found; here it does.
public struct COCOEvaluator: Sendable {
  /// np.linspace(.5, .95, 10), as pycocotools builds it.
  public static let iouThresholds = linspace(0.5, 0.95, count: 10)
  /// np.linspace(0, 1, 101).
  public static let recallThresholds = linspace(0, 1, count: 101)
  public static let maxDetections = [1, 10, 100]
  /// all, small, medium, large.
  public static let areaRanges: [ClosedRange<Double>] = [0...1e10, 0...1024, 1024...9216, 9216...1e10]

  public let annotations: COCOAnnotations

  private let sortedImageIds: [Int]
  private let imageIndexById: [Int: Int]
  /// Ground-truth indices per class then image: key class * imageCount + image.
  private let groundTruthByCell: [Int: [Int]]

  public init(annotations: COCOAnnotations) {
    self.annotations = annotations
    sortedImageIds = Array(Set(annotations.images.map(\.id))).sorted()
    imageIndexById = Dictionary(uniqueKeysWithValues: sortedImageIds.enumerated().map { ($1, $0) })
    var cells: [Int: [Int]] = [:]
    for (index, object) in annotations.annotations.enumerated() {
      guard let image = imageIndexById[object.imageId], let cls = annotations.classIndex(ofCategory: object.categoryId) else {
        continue
      }
      cells[cls * sortedImageIds.count + image, default: []].append(index)
    }
    groundTruthByCell = cells
  }

  /// numpy's linspace: start + i * ((stop - start) / (count - 1)), the last value exactly stop.
  static func linspace(_ start: Double, _ stop: Double, count: Int) -> [Double] {
    let step = (stop - start) / Double(count - 1)
    return (0..<count).map { $0 == count - 1 ? stop : Double($0) * step + start }
  }

  /// pycocotools' bbox IoU (maskApi.c `bbIou`) of two xywh boxes.
  @inline(__always)
  static func iou(detection d: [Double], groundTruth g: [Double], crowd: Bool) -> Double {
    let width = min(d[2] + d[0], g[2] + g[0]) - max(d[0], g[0])
    if width <= 0 { return 0 }
    let height = min(d[3] + d[1], g[3] + g[1]) - max(d[1], g[1])
    if height <= 0 { return 0 }
    let intersection = width * height
    let detectionArea = d[2] * d[3]
    return intersection / (crowd ? detectionArea : detectionArea + g[2] * g[3] - intersection)
  }

  /// Scores `detections` against the annotations. Throws `COCOError` for a detection whose image or
  /// category is not in the annotations, or whose box or score is not finite.
  public func evaluate(_ detections: [COCODetection]) throws -> COCOEvaluation {
    let imageCount = sortedImageIds.count
    let classCount = annotations.categories.count
    var detectionsByCell: [Int: [Int]] = [:]
    for (index, detection) in detections.enumerated() {
      guard let image = imageIndexById[detection.imageId] else {
        throw COCOError("detection \(index): image_id \(detection.imageId) is not an image of the annotations")
      }
      guard let cls = annotations.classIndex(ofCategory: detection.categoryId) else {
        throw COCOError("detection \(index): category_id \(detection.categoryId) is not a category of the annotations")
      }
      guard detection.box.count == 4, detection.box.allSatisfy(\.isFinite), detection.score.isFinite else {
        throw COCOError("detection \(index): box must be four finite numbers and the score finite")
      }
      detectionsByCell[cls * imageCount + image, default: []].append(index)
    }

    let thresholdCount = Self.iouThresholds.count, recallCount = Self.recallThresholds.count
    let areaCount = Self.areaRanges.count, limitCount = Self.maxDetections.count
    // precision[class][area][limit] is T x R (t-major) or nil where pycocotools leaves -1; likewise recall (T).
    var precision = [[[[Double]?]]](repeating: .init(repeating: .init(repeating: nil, count: limitCount), count: areaCount), count: classCount)
    var recall = precision

    var imagesByClass = [Set<Int>](repeating: [], count: classCount)
    for key in groundTruthByCell.keys { imagesByClass[key / imageCount].insert(key % imageCount) }
    for key in detectionsByCell.keys { imagesByClass[key / imageCount].insert(key % imageCount) }
    for cls in 0..<classCount {
      let images = imagesByClass[cls].sorted()
      var perArea = [ImageMatches](repeating: ImageMatches(), count: areaCount)
      for image in images {
        let key = cls * imageCount + image
        let truths = groundTruthByCell[key] ?? []
        let ranked = Self.rankedByScore(detectionsByCell[key] ?? [], in: detections).prefix(Self.maxDetections.last!)
        let truthCrowd = truths.map { annotations.annotations[$0].isCrowd }
        var ious = [Double](repeating: 0, count: ranked.count * truths.count)
        for (d, detection) in ranked.enumerated() {
          let box = detections[detection].box
          for (g, truth) in truths.enumerated() {
            ious[d * truths.count + g] = Self.iou(detection: box, groundTruth: annotations.annotations[truth].box, crowd: truthCrowd[g])
          }
        }
        let cell = ImageMatches.Cell(
          scores: ranked.map { detections[$0].score }, detectionAreas: ranked.map { detections[$0].box[2] * detections[$0].box[3] },
          truthCrowd: truthCrowd, truthAreas: truths.map { annotations.annotations[$0].area }, ious: ious)
        for area in 0..<areaCount {
          perArea[area].append(cell, range: Self.areaRanges[area])
        }
      }
      // Every area range holds the same detections; rank them once (stable: score, then image order).
      let scores = perArea[0].scores
      let ranked = (0..<scores.count).sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
      for area in 0..<areaCount where perArea[area].relevantTruthCount > 0 && !images.isEmpty {
        for (limitIndex, limit) in Self.maxDetections.enumerated() {
          let curve = perArea[area].precisionRecall(
            ranked: ranked, limit: limit, thresholdCount: thresholdCount, recallCount: recallCount)
          precision[cls][area][limitIndex] = curve.precision
          recall[cls][area][limitIndex] = curve.recall
        }
      }
    }

    func meanOfDefined(_ values: [Double]) -> Double {
      let defined = values.filter { $0 > -1 }
      return defined.isEmpty ? -1 : defined.reduce(0, +) / Double(defined.count)
    }
    /// Averages precision over thresholds (`threshold` nil: all), recall points and classes.
    func averagePrecision(threshold: Int?, area: Int, limit: Int, classes: Range<Int>? = nil) -> Double {
      var values: [Double] = []
      for cls in classes ?? 0..<classCount {
        guard let curve = precision[cls][area][limit] else { continue }
        if let threshold { values += curve[(threshold * recallCount)..<((threshold + 1) * recallCount)] } else { values += curve }
      }
      return meanOfDefined(values)
    }
    func averageRecall(area: Int, limit: Int) -> Double {
      meanOfDefined((0..<classCount).flatMap { recall[$0][area][limit] ?? [] })
    }
    let last = limitCount - 1
    let at75 = Self.iouThresholds.firstIndex(of: 0.75)
    let stats = [
      averagePrecision(threshold: nil, area: 0, limit: last),
      averagePrecision(threshold: Self.iouThresholds.firstIndex(of: 0.5), area: 0, limit: last),
      at75.map { averagePrecision(threshold: $0, area: 0, limit: last) } ?? -1,
      averagePrecision(threshold: nil, area: 1, limit: last),
      averagePrecision(threshold: nil, area: 2, limit: last),
      averagePrecision(threshold: nil, area: 3, limit: last),
      averageRecall(area: 0, limit: 0),
      averageRecall(area: 0, limit: 1),
      averageRecall(area: 0, limit: last),
      averageRecall(area: 1, limit: last),
      averageRecall(area: 2, limit: last),
      averageRecall(area: 3, limit: last),
    ]
    let perClass = (0..<classCount).map { cls in
      let id = annotations.categoryId(ofClass: cls)
      return COCOEvaluation.ClassResult(
        categoryId: id, name: annotations.categories.first { $0.id == id }!.name,
        ap: averagePrecision(threshold: nil, area: 0, limit: last, classes: cls..<(cls + 1)),
        ap50: averagePrecision(threshold: 0, area: 0, limit: last, classes: cls..<(cls + 1)))
    }
    return COCOEvaluation(stats: stats, perClass: perClass)
  }

  /// Indices of `detections` highest score first; equal scores keep their order (numpy's mergesort on -score).
  static func rankedByScore(_ indices: [Int], in detections: [COCODetection]) -> [Int] {
    indices.sorted { detections[$0].score > detections[$1].score || (detections[$0].score == detections[$1].score && $0 < $1) }
  }
}

/// The matched detections of one class and area range, image after image (pycocotools' `evalImgs`
/// entries of one category and area range, in image id order).
private struct ImageMatches {
  var scores: [Double] = []
  /// Per detection, T flags (threshold-major within the detection).
  var matched: [Bool] = []
  var ignored: [Bool] = []
  /// Each detection's rank among its image's detections (0 = highest score).
  var rankInImage: [Int] = []
  /// Ground truths neither crowd nor outside the area range.
  var relevantTruthCount = 0

  /// One image's ranked detections (at most 100) and ground truths of one class.
  struct Cell {
    var scores: [Double]
    /// w * h of each detection.
    var detectionAreas: [Double]
    var truthCrowd: [Bool]
    /// The ground truths' `area` fields.
    var truthAreas: [Double]
    /// detections x ground truths, row-major.
    var ious: [Double]
  }

  /// Greedy matching of one image's ranked detections (pycocotools' `evaluateImg`).
  mutating func append(_ cell: Cell, range: ClosedRange<Double>) {
    let thresholds = COCOEvaluator.iouThresholds, thresholdCount = thresholds.count
    let detectionCount = cell.scores.count, truthCount = cell.truthCrowd.count
    let truthIgnored = (0..<truthCount).map { cell.truthCrowd[$0] || !range.contains(cell.truthAreas[$0]) }
    let order = truthIgnored.indices.filter { !truthIgnored[$0] } + truthIgnored.indices.filter { truthIgnored[$0] }
    relevantTruthCount += truthIgnored.lazy.filter { !$0 }.count
    let base = scores.count
    scores.append(contentsOf: cell.scores)
    rankInImage.append(contentsOf: Array(0..<detectionCount))
    let unset = [Bool](repeating: false, count: detectionCount * thresholdCount)
    matched.append(contentsOf: unset)
    ignored.append(contentsOf: unset)
    var truthTaken = [Bool](repeating: false, count: truthCount)
    for (t, threshold) in thresholds.enumerated() {
      if t > 0 { for g in 0..<truthCount { truthTaken[g] = false } }
      for d in 0..<detectionCount {
        var best = min(threshold, 1 - 1e-10)
        var match = -1
        for g in order {
          if truthTaken[g] && !cell.truthCrowd[g] { continue }
          if match > -1 && !truthIgnored[match] && truthIgnored[g] { break }
          let overlap = cell.ious[d * truthCount + g]
          if overlap < best { continue }
          best = overlap
          match = g
        }
        guard match > -1 else { continue }
        let flag = (base + d) * thresholdCount + t
        matched[flag] = true
        ignored[flag] = truthIgnored[match]
        truthTaken[match] = true
      }
    }
    for d in 0..<detectionCount where !range.contains(cell.detectionAreas[d]) {
      for t in 0..<thresholdCount where !matched[(base + d) * thresholdCount + t] {
        ignored[(base + d) * thresholdCount + t] = true
      }
    }
  }

  /// pycocotools' `accumulate` for one detection limit: T x R interpolated precision and T recalls.
  /// `ranked` orders all detections by score, ties in image order then rank in the image (the order
  /// of pycocotools' stable sort, restricted to any subset).
  func precisionRecall(ranked: [Int], limit: Int, thresholdCount: Int, recallCount: Int) -> (precision: [Double], recall: [Double]) {
    let rankInImage = self.rankInImage
    let picked = limit >= COCOEvaluator.maxDetections.last! ? ranked : ranked.filter { rankInImage[$0] < limit }
    let relevant = Double(relevantTruthCount)
    let epsilon = Double.ulpOfOne  // np.spacing(1)
    var precision = [Double](repeating: 0, count: thresholdCount * recallCount)
    var recall = [Double](repeating: 0, count: thresholdCount)
    var recallAt = [Double](repeating: 0, count: picked.count), precisionAt = recallAt
    for t in 0..<thresholdCount {
      var truePositives = 0.0, falsePositives = 0.0
      for position in 0..<picked.count {
        let flag = picked[position] * thresholdCount + t
        if !ignored[flag] {
          if matched[flag] { truePositives += 1 } else { falsePositives += 1 }
        }
        recallAt[position] = truePositives / relevant
        precisionAt[position] = truePositives / (falsePositives + truePositives + epsilon)
      }
      recall[t] = picked.isEmpty ? 0 : recallAt[picked.count - 1]
      if picked.count > 1 {
        for position in stride(from: picked.count - 1, to: 0, by: -1) where precisionAt[position] > precisionAt[position - 1] {
          precisionAt[position - 1] = precisionAt[position]
        }
      }
      var position = 0
      for (r, recallThreshold) in COCOEvaluator.recallThresholds.enumerated() {
        while position < picked.count && recallAt[position] < recallThreshold { position += 1 }
        if position == picked.count { break }
        precision[t * recallCount + r] = precisionAt[position]
      }
    }
    return (precision, recall)
  }
}
