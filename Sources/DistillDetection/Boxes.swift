import Foundation

/// An axis-aligned box in corner form (x1, y1, x2, y2), in pixels unless stated otherwise.
/// A box with x2 <= x1 or y2 <= y1 is empty (area 0).
public struct Box: Equatable, Hashable, Sendable, CustomStringConvertible {
  public var x1: Float
  public var y1: Float
  public var x2: Float
  public var y2: Float

  public init(x1: Float, y1: Float, x2: Float, y2: Float) {
    self.x1 = x1
    self.y1 = y1
    self.x2 = x2
    self.y2 = y2
  }

  /// From (x, y, width, height) with (x, y) the top-left corner (COCO's `bbox`).
  public init(xywh x: Float, _ y: Float, _ width: Float, _ height: Float) {
    self.init(x1: x, y1: y, x2: x + width, y2: y + height)
  }

  /// From (centre x, centre y, width, height) (YOLO's and DETR's form).
  public init(cxcywh cx: Float, _ cy: Float, _ width: Float, _ height: Float) {
    self.init(x1: cx - 0.5 * width, y1: cy - 0.5 * height, x2: cx + 0.5 * width, y2: cy + 0.5 * height)
  }

  public var width: Float { x2 - x1 }
  public var height: Float { y2 - y1 }
  public var centerX: Float { (x1 + x2) / 2 }
  public var centerY: Float { (y1 + y2) / 2 }
  /// width * height, as torchvision's `box_area` computes it (negative for inverted boxes).
  public var area: Float { (x2 - x1) * (y2 - y1) }

  /// (x, y, width, height) with (x, y) the top-left corner.
  public var xywh: [Float] { [x1, y1, x2 - x1, y2 - y1] }
  /// (centre x, centre y, width, height).
  public var cxcywh: [Float] { [centerX, centerY, x2 - x1, y2 - y1] }
  public var xyxy: [Float] { [x1, y1, x2, y2] }

  /// The box with its corners clamped to [0, width] x [0, height] (torchvision's `clip_boxes_to_image`).
  public func clipped(width: Float, height: Float) -> Box {
    Box(
      x1: min(max(x1, 0), width), y1: min(max(y1, 0), height), x2: min(max(x2, 0), width),
      y2: min(max(y2, 0), height))
  }

  public var description: String { "(\(x1), \(y1), \(x2), \(y2))" }
}

extension Box {
  /// Intersection area with `other` (0 when disjoint).
  @inlinable
  public func intersection(_ other: Box) -> Float {
    let w = max(min(x2, other.x2) - max(x1, other.x1), 0)
    let h = max(min(y2, other.y2) - max(y1, other.y1), 0)
    return w * h
  }

  /// Intersection over union, computed as torchvision's `box_iou` does (inter / (area1 + area2 - inter));
  /// NaN for two empty boxes, as there.
  @inlinable
  public func iou(_ other: Box) -> Float {
    let inter = intersection(other)
    return inter / (area + other.area - inter)
  }

  /// Generalized IoU (Rezatofighi et al. 2019): IoU - (hull - union) / hull, with hull the area of the
  /// smallest enclosing box; in [-1, 1]. Matches torchvision's `generalized_box_iou`.
  public func generalizedIoU(_ other: Box) -> Float {
    let inter = intersection(other)
    let union = area + other.area - inter
    let hullW = max(max(x2, other.x2) - min(x1, other.x1), 0)
    let hullH = max(max(y2, other.y2) - min(y1, other.y1), 0)
    let hull = hullW * hullH
    return inter / union - (hull - union) / hull
  }

  /// Distance IoU (Zheng et al. 2020): IoU - (squared centre distance) / (squared diagonal of the
  /// enclosing box + eps). Matches torchvision's `distance_box_iou` (eps 1e-7).
  public func distanceIoU(_ other: Box, eps: Float = 1e-7) -> Float {
    let hullW = max(max(x2, other.x2) - min(x1, other.x1), 0)
    let hullH = max(max(y2, other.y2) - min(y1, other.y1), 0)
    let diagonal = hullW * hullW + hullH * hullH + eps
    let dx = centerX - other.centerX
    let dy = centerY - other.centerY
    return iou(other) - (dx * dx + dy * dy) / diagonal
  }
}

/// Pairwise box measures between two lists, as [a.count][b.count] matrices (torchvision's
/// `box_iou`, `generalized_box_iou`, `distance_box_iou`).
public enum BoxMatrix {
  public static func iou(_ a: [Box], _ b: [Box]) -> [[Float]] { a.map { x in b.map { x.iou($0) } } }
  public static func generalizedIoU(_ a: [Box], _ b: [Box]) -> [[Float]] {
    a.map { x in b.map { x.generalizedIoU($0) } }
  }
  public static func distanceIoU(_ a: [Box], _ b: [Box]) -> [[Float]] { a.map { x in b.map { x.distanceIoU($0) } } }
}

/// One detected object: a box in input pixels (xyxy), its score and its class index (in the index
/// space of the model's classification output; see `HeadConfig` for background handling).
public struct Detection: Equatable, Sendable {
  public var box: Box
  public var score: Float
  public var classIndex: Int

  public init(box: Box, score: Float, classIndex: Int) {
    self.box = box
    self.score = score
    self.classIndex = classIndex
  }
}
