import Foundation

// Detection post-processing operators.
// Spec: https://onnx.ai/onnx/operators/onnx__NonMaxSuppression.html

let detectionOperators: [(String, any Operator.Type)] = [
  ("NonMaxSuppression", NonMaxSuppression.self),
]

/// `NonMaxSuppression` (opsets 10, 11): per batch and class, greedily keeps the highest-scoring
/// boxes (ties: lower box index first) whose IoU with every box kept before is at most
/// iou_threshold, up to max_output_boxes_per_class (absent: 0, so nothing is kept). Boxes scoring
/// at or below score_threshold (when given) are dropped first. boxes [B, N, 4] are corners
/// [y1, x1, y2, x2] in either order (center_point_box 0) or [x_center, y_center, width, height]
/// (center_point_box 1); scores [B, C, N]. The output [num_selected, 3] int64 holds
/// (batch, class, box) rows ordered by batch, then class, then descending score.
struct NonMaxSuppression: Operator {
  let centerPointBox: Bool

  init(_ node: Node, _ setup: OperatorSetup) throws {
    let format = node.intAttribute("center_point_box") ?? 0
    guard format == 0 || format == 1 else { throw setup.error("attribute center_point_box is \(format), expected 0 or 1") }
    centerPointBox = format == 1
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let boxes = try context.input(inputs, 0, "boxes"), scores = try context.input(inputs, 1, "scores")
    guard boxes.rank == 3, boxes.shape[2] == 4 else {
      throw context.error("input boxes is \(boxes.shapeDescription), expected [num_batches, spatial_dimension, 4]")
    }
    let (batches, boxCount) = (boxes.shape[0], boxes.shape[1])
    guard scores.rank == 3, scores.shape[0] == batches, scores.shape[2] == boxCount else {
      throw context.error("input scores is \(scores.shapeDescription), expected [\(batches), num_classes, \(boxCount)]")
    }
    let classes = scores.shape[1]
    func scalar(_ index: Int) -> Tensor? {
      guard index < inputs.count, let tensor = inputs[index], tensor.count > 0 else { return nil }
      return tensor
    }
    let limit = Int(clamping: max(scalar(2)?.asInts[0] ?? 0, 0))
    let iouThreshold = scalar(3)?.asFloats[0] ?? 0
    let scoreThreshold = scalar(4)?.asFloats[0]
    if let iou = scalar(3)?.asFloats[0], !(iou >= 0 && iou <= 1) {
      throw context.error("input iou_threshold is \(iou), expected a value in [0, 1]")
    }
    let perClass = min(limit, boxCount)

    // Corners (min, max on each axis) and areas of every box.
    let values = boxes.asFloats
    var y1 = [Float](repeating: 0, count: batches * boxCount), x1 = y1, y2 = y1, x2 = y1, area = y1
    for box in 0..<batches * boxCount {
      let a = values[4 * box], b = values[4 * box + 1], c = values[4 * box + 2], d = values[4 * box + 3]
      if centerPointBox {
        (x1[box], x2[box]) = (a - c / 2, a + c / 2)
        (y1[box], y2[box]) = (b - d / 2, b + d / 2)
      } else {
        (y1[box], y2[box]) = (min(a, c), max(a, c))
        (x1[box], x2[box]) = (min(b, d), max(b, d))
      }
      area[box] = (x2[box] - x1[box]) * (y2[box] - y1[box])
    }

    let scoreValues = scores.asFloats
    var selected: [Int64] = []
    var candidates: [Int] = []
    var kept: [Int] = []
    candidates.reserveCapacity(boxCount)
    kept.reserveCapacity(perClass)
    for b in 0..<batches where perClass > 0 {
      for c in 0..<classes {
        let offset = (b * classes + c) * boxCount
        candidates.removeAll(keepingCapacity: true)
        for box in 0..<boxCount {
          let score = scoreValues[offset + box]
          if let scoreThreshold, !(score > scoreThreshold) { continue }
          candidates.append(box)
        }
        candidates.sort { i, j in
          let si = scoreValues[offset + i], sj = scoreValues[offset + j]
          return si > sj || (si == sj && i < j) || (!si.isNaN && sj.isNaN)
        }
        kept.removeAll(keepingCapacity: true)
        for box in candidates {
          if kept.count >= perClass { break }
          let i = b * boxCount + box
          var suppressed = false
          for other in kept {
            let j = b * boxCount + other
            let width = min(x2[i], x2[j]) - max(x1[i], x1[j])
            guard width > 0 else { continue }
            let height = min(y2[i], y2[j]) - max(y1[i], y1[j])
            guard height > 0 else { continue }
            let intersection = width * height
            let union = area[i] + area[j] - intersection
            guard area[i] > 0, area[j] > 0, union > 0 else { continue }
            if intersection / union > iouThreshold {
              suppressed = true
              break
            }
          }
          if !suppressed {
            kept.append(box)
            selected.append(contentsOf: [Int64(b), Int64(c), Int64(box)])
          }
        }
      }
    }
    let shape = [selected.count / 3, 3]
    try context.checkAllocation(shape, elementBytes: 8)
    return [Tensor(shape: shape, ints: selected, dtype: .int64)]
  }
}
