import Foundation

/// Non-maximum suppression as torchvision's `nms` and `batched_nms` compute it.
public enum NMS {
  /// Indices of the boxes kept by greedy NMS, in decreasing score order (ties keep input order, as
  /// torchvision's stable sort does): a box is dropped when its IoU with a kept, higher-scoring box
  /// is strictly greater than `iouThreshold`.
  public static func nms(boxes: [Box], scores: [Float], iouThreshold: Float) -> [Int] {
    precondition(boxes.count == scores.count, "nms: \(boxes.count) boxes but \(scores.count) scores")
    let order = sortedByScore(Array(boxes.indices), scores)
    return suppress(order, boxes: boxes, iouThreshold: iouThreshold)
  }

  /// Class-aware NMS (torchvision's `batched_nms`): boxes of different `classes` never suppress each
  /// other. Returns the kept indices in decreasing score order.
  public static func batched(boxes: [Box], scores: [Float], classes: [Int], iouThreshold: Float) -> [Int] {
    precondition(boxes.count == scores.count && boxes.count == classes.count, "batched NMS: counts differ")
    var byClass: [Int: [Int]] = [:]
    for index in boxes.indices { byClass[classes[index], default: []].append(index) }
    var kept: [Int] = []
    for (_, members) in byClass {
      kept += suppress(sortedByScore(members, scores), boxes: boxes, iouThreshold: iouThreshold)
    }
    return sortedByScore(kept.sorted(), scores)
  }

  /// The full post-processing step of torchvision-style detectors on one image's candidates:
  /// batched NMS, then the best `maxDetections`.
  public static func select(
    _ candidates: [Detection], iouThreshold: Float, maxDetections: Int
  ) -> [Detection] {
    let keep = batched(
      boxes: candidates.map(\.box), scores: candidates.map(\.score), classes: candidates.map(\.classIndex),
      iouThreshold: iouThreshold)
    return keep.prefix(max(maxDetections, 0)).map { candidates[$0] }
  }

  static func sortedByScore(_ indices: [Int], _ scores: [Float]) -> [Int] {
    indices.enumerated().sorted { a, b in
      let sa = scores[a.element]
      let sb = scores[b.element]
      return sa != sb ? sa > sb : a.offset < b.offset
    }.map(\.element)
  }

  static func suppress(_ order: [Int], boxes: [Box], iouThreshold: Float) -> [Int] {
    var suppressed = [Bool](repeating: false, count: order.count)
    var kept: [Int] = []
    for i in order.indices where !suppressed[i] {
      let box = boxes[order[i]]
      kept.append(order[i])
      for j in (i + 1)..<order.count where !suppressed[j] {
        if box.iou(boxes[order[j]]) > iouThreshold { suppressed[j] = true }
      }
    }
    return kept
  }
}
