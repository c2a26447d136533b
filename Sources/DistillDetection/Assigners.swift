import Foundation

/// The ground truth of one image: xyxy boxes in input pixels and their class indices.
public struct GroundTruth: Equatable, Sendable {
  public var boxes: [Box]
  public var labels: [Int]

  public init(boxes: [Box], labels: [Int]) {
    precondition(boxes.count == labels.count, "\(boxes.count) boxes but \(labels.count) labels")
    self.boxes = boxes
    self.labels = labels
  }
}

/// Label assignment: for each prior (anchor or point) of an image, the index of the ground-truth
/// box it learns from, or `background` / `ignored`. Plain Swift, outside the tape: assignment is
/// not differentiated. The codes are torchvision's `Matcher` values.
public enum Assigner {
  /// The prior is a negative (learns "no object").
  public static let background = -1
  /// The prior takes no classification loss (between the IoU thresholds of a max-IoU matcher).
  public static let ignored = -2

  /// torchvision's `Matcher` (RetinaNet: `high` 0.5, `low` 0.4, `allowLowQualityMatches`) on the
  /// IoU of every ground-truth box with every anchor: each anchor takes its best box (the first on
  /// ties) when that IoU is >= `high`, is `ignored` in [`low`, `high`) and `background` below
  /// `low`. With low-quality matches, every anchor that attains some box's highest IoU (ties
  /// included, even an IoU of 0) gets back its best box, exactly as torchvision does.
  /// Without ground truth every anchor is background.
  public static func maxIoU(
    anchors: [Box], truth: [Box], high: Float = 0.5, low: Float = 0.4, allowLowQualityMatches: Bool = true
  ) -> [Int] {
    guard !truth.isEmpty else { return [Int](repeating: background, count: anchors.count) }
    var best = [Int](repeating: 0, count: anchors.count)
    var bestIoU = [Float](repeating: -.infinity, count: anchors.count)
    var highestForTruth = [Float](repeating: -.infinity, count: truth.count)
    var quality = [Float](repeating: 0, count: anchors.count * truth.count)
    for (a, anchor) in anchors.enumerated() {
      for (g, box) in truth.enumerated() {
        let iou = box.iou(anchor)
        quality[a * truth.count + g] = iou
        if iou > bestIoU[a] || bestIoU[a] == -.infinity {
          bestIoU[a] = iou
          best[a] = g
        }
        if iou > highestForTruth[g] { highestForTruth[g] = iou }
      }
    }
    var matches = best
    for a in anchors.indices {
      if bestIoU[a] < low {
        matches[a] = background
      } else if bestIoU[a] < high {
        matches[a] = ignored
      }
    }
    if allowLowQualityMatches {
      for a in anchors.indices {
        for g in truth.indices where quality[a * truth.count + g] == highestForTruth[g] {
          matches[a] = best[a]
          break
        }
      }
    }
    return matches
  }

  /// One feature level of an anchor-free head: its points (location centres) and the anchor
  /// size torchvision's FCOS gives them (the stride, for its default generator).
  public struct PointLevel: Sendable {
    public var points: [(x: Float, y: Float)]
    public var size: Float
    public init(points: [(x: Float, y: Float)], size: Float) {
      self.points = points
      self.size = size
    }
  }

  /// torchvision FCOS's assignment (`FCOS.compute_loss`) over the points of all levels in order: a
  /// point may take a box when it lies within `radius * size` of the box centre (Chebyshev
  /// distance, strictly), strictly inside the box, and its largest distance to the box's sides is
  /// strictly inside the level's range `(4 size, 8 size)` (no lower bound on the first level, no
  /// upper bound on the last). Among several boxes the smallest wins, compared as torchvision
  /// does in float32 (`1e8 - area`, first index on ties).
  public static func fcos(levels: [PointLevel], truth: [Box], radius: Float = 1.5) -> [Int] {
    let total = levels.reduce(0) { $0 + $1.points.count }
    guard !truth.isEmpty else { return [Int](repeating: background, count: total) }
    let rank = truth.map { Float(1e8) - $0.area }
    var matches: [Int] = []
    matches.reserveCapacity(total)
    for (index, level) in levels.enumerated() {
      let lower: Float = index == 0 ? 0 : level.size * 4
      let upper: Float = index == levels.count - 1 ? .infinity : level.size * 8
      for point in level.points {
        var bestValue: Float = 0
        var bestIndex = 0
        for (g, box) in truth.enumerated() {
          let near = max(abs(point.x - box.centerX), abs(point.y - box.centerY)) < radius * level.size
          let sides = [point.x - box.x1, point.y - box.y1, box.x2 - point.x, box.y2 - point.y]
          let reach = sides.max()!
          let matched = near && sides.min()! > 0 && reach > lower && reach < upper
          let value = matched ? rank[g] : 0
          if value > bestValue {
            bestValue = value
            bestIndex = g
          }
        }
        matches.append(bestValue < 1e-5 ? background : bestIndex)
      }
    }
    return matches
  }

  /// mmdet's `ATSSAssigner` (Zhang et al. 2020) over the anchors of all levels (`levels` gives each
  /// level's anchor count, in order): per box, the `topK` anchors of each level closest to its
  /// centre (Euclidean distance of centres) are candidates; those whose IoU (union clamped at
  /// 1e-6) is at least the candidates' mean plus standard deviation (unbiased) and whose centre
  /// lies inside the box (every side distance > 0.01) are positive; an anchor positive for several
  /// boxes takes the one of highest IoU (the first on ties).
  public static func atss(anchors: [Box], levels: [Int], truth: [Box], topK: Int = 9) -> [Int] {
    precondition(
      levels.reduce(0, +) == anchors.count, "level sizes \(levels) do not add up to \(anchors.count) anchors")
    var matches = [Int](repeating: background, count: anchors.count)
    guard !truth.isEmpty else { return matches }
    func iou(_ a: Box, _ b: Box) -> Float {
      let inter = a.intersection(b)
      return inter / max(a.area + b.area - inter, 1e-6)
    }
    var bestIoU = [Float](repeating: -.infinity, count: anchors.count)
    for (g, box) in truth.enumerated() {
      var candidates: [Int] = []
      var start = 0
      for count in levels {
        let distance = (start..<start + count).map { a -> (Float, Int) in
          let dx = anchors[a].centerX - box.centerX
          let dy = anchors[a].centerY - box.centerY
          return ((dx * dx + dy * dy).squareRoot(), a)
        }
        candidates += distance.sorted { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }.prefix(topK).map(\.1)
        start += count
      }
      let overlaps = candidates.map { iou(anchors[$0], box) }
      let mean = overlaps.reduce(0, +) / Float(overlaps.count)
      let variance = overlaps.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(max(overlaps.count - 1, 1))
      let threshold = mean + variance.squareRoot()
      for (a, overlap) in zip(candidates, overlaps) where overlap >= threshold {
        let cx = anchors[a].centerX
        let cy = anchors[a].centerY
        guard min(cx - box.x1, cy - box.y1, box.x2 - cx, box.y2 - cy) > 0.01 else { continue }
        if overlap > bestIoU[a] {
          bestIoU[a] = overlap
          matches[a] = g
        }
      }
    }
    return matches
  }
}
