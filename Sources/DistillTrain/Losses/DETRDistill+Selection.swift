import DistillCore
import DistillDetection
import Foundation

/// The per-step selections of `DETRDistill`, in Swift without a tape (the teacher is constant):
/// the query matchings and the feature term's quality masks.
extension DETRDistill {
  typealias CostWeights = (classification: Float, l1: Float, giou: Float)

  /// The matching cost of a prediction (logits `z`, box `b` cxcywh) against a target (class
  /// probabilities `p`, box `g` cxcywh): `w_cls * mean_c BCE(z, p) + w_l1 * |b - g|_1 - w_giou * GIoU(b, g)`.
  static func cost(logits z: ArraySlice<Float>, box b: ArraySlice<Float>, probabilities p: [Double], box g: [Float], weights: CostWeights) -> Double {
    var bce = 0.0
    for (x, t) in zip(z, p) {
      let x = Double(x)
      bce += max(x, 0) - x * t + log1p(exp(-abs(x)))
    }
    bce /= Double(p.count)
    let l1 = zip(b, g).reduce(0.0) { $0 + Double(abs($1.0 - $1.1)) }
    let b = Array(b)
    let giou = Double(Box(cxcywh: b[0], b[1], b[2], b[3]).generalizedIoU(Box(cxcywh: g[0], g[1], g[2], g[3])))
    return Double(weights.classification) * bce + Double(weights.l1) * l1 - Double(weights.giou) * giou
  }

  /// The Hungarian matching of a `rows` x `columns` cost matrix (row-major) in either orientation:
  /// every row matched when `rows <= columns`, else every column; pairs in the order of the
  /// smaller side.
  static func pairs(_ cost: [Double], rows: Int, columns: Int) -> [(row: Int, column: Int)] {
    if rows <= columns { return Hungarian.assign(cost, rows: rows, columns: columns).enumerated().map { ($0.offset, $0.element) } }
    var transposed = [Double](repeating: 0, count: rows * columns)
    for i in 0..<rows { for j in 0..<columns { transposed[j * rows + i] = cost[i * columns + j] } }
    return Hungarian.assign(transposed, rows: columns, columns: rows).enumerated().map { ($0.element, $0.offset) }
  }

  /// Per image, the Hungarian matching of the student's queries to the teacher's on `cost` (the
  /// teacher's sigmoid scores as class targets); returned as flat row indices (`image * Q + query`)
  /// into each model's [N * Q] rows.
  static func match(
    studentLogits: Tensor, studentBoxes: Tensor, teacherLogits: Tensor, teacherBoxes: Tensor, weights: CostWeights
  ) -> (student: [Int], teacher: [Int]) {
    let batch = studentLogits.shape[0], qs = studentLogits.shape[1], qt = teacherLogits.shape[1], classes = studentLogits.shape[2]
    let zs = studentLogits.floats, zt = teacherLogits.floats, bs = studentBoxes.floats, bt = teacherBoxes.floats
    var studentRows: [Int] = [], teacherRows: [Int] = []
    for image in 0..<batch {
      let probabilities = (0..<qt).map { j in zt[((image * qt + j) * classes)..<((image * qt + j + 1) * classes)].map { 1 / (1 + exp(-Double($0))) } }
      var cost = [Double](repeating: 0, count: qs * qt)
      for i in 0..<qs {
        let row = image * qs + i
        for j in 0..<qt {
          cost[i * qt + j] = Self.cost(
            logits: zs[(row * classes)..<((row + 1) * classes)], box: bs[(row * 4)..<(row * 4 + 4)], probabilities: probabilities[j],
            box: Array(bt[((image * qt + j) * 4)..<((image * qt + j) * 4 + 4)]), weights: weights)
        }
      }
      for (i, j) in pairs(cost, rows: qs, columns: qt) {
        studentRows.append(image * qs + i)
        teacherRows.append(image * qt + j)
      }
    }
    return (studentRows, teacherRows)
  }

  /// Per image, the teacher's queries matched to the objects (boxes xyxy in input pixels, class
  /// indices) by the Hungarian method on `cost` with one-hot class targets and the objects' boxes
  /// normalised to cxcywh by the input size: (query, object's normalised box and class) pairs,
  /// sorted by query.
  static func assign(
    logits: Tensor, boxes: Tensor, objects: [(boxes: [[Float]], labels: [Int])], inputSize: (height: Int, width: Int), weights: CostWeights
  ) throws -> [[(query: Int, object: (box: [Float], label: Int))]] {
    let queries = logits.shape[1], classes = logits.shape[2]
    let z = logits.floats, b = boxes.floats
    let width = Float(inputSize.width), height = Float(inputSize.height)
    return try objects.enumerated().map { image, objects in
      let targets = zip(objects.boxes, objects.labels).map { box, label in
        (box: Box(x1: box[0] / width, y1: box[1] / height, x2: box[2] / width, y2: box[3] / height).cxcywh, label: label)
      }
      for target in targets where !(0..<classes).contains(target.label) {
        throw TrainingError.invalidConfig("detr: an object has class \(target.label), but the teacher's head has \(classes) classes")
      }
      var cost = [Double](repeating: 0, count: queries * targets.count)
      for q in 0..<queries {
        let row = image * queries + q
        for (g, target) in targets.enumerated() {
          var oneHot = [Double](repeating: 0, count: classes)
          oneHot[target.label] = 1
          cost[q * targets.count + g] = Self.cost(
            logits: z[(row * classes)..<((row + 1) * classes)], box: b[(row * 4)..<(row * 4 + 4)], probabilities: oneHot, box: target.box,
            weights: weights)
        }
      }
      return pairs(cost, rows: queries, columns: targets.count).map { ($0.row, targets[$0.column]) }.sorted { $0.query < $1.query }
    }
  }

  /// Per image and query, the teacher's quality for the feature term: for the `topK` queries of
  /// highest score `max_c sigmoid(z)` (ties: lower index first), `score * IoU` of the query's box
  /// (cxcywh, normalised) with the object box (xyxy, input pixels) it overlaps most; 0 elsewhere.
  static func quality(
    logits: Tensor, boxes: Tensor, objects: [(boxes: [[Float]], labels: [Int])], inputSize: (height: Int, width: Int), topK: Int
  ) -> [[Double]] {
    let batch = logits.shape[0], queries = logits.shape[1], classes = logits.shape[2]
    let z = logits.floats, b = boxes.floats
    let width = Float(inputSize.width), height = Float(inputSize.height)
    return (0..<batch).map { image in
      let scores = (0..<queries).map { q in
        1 / (1 + exp(-Double(z[((image * queries + q) * classes)..<((image * queries + q + 1) * classes)].max()!)))
      }
      let kept = scores.indices.sorted { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : $0 < $1 }.prefix(topK)
      var quality = [Double](repeating: 0, count: queries)
      let truth = image < objects.count ? objects[image].boxes.map { Box(x1: $0[0], y1: $0[1], x2: $0[2], y2: $0[3]) } : []
      for q in kept {
        let row = (image * queries + q) * 4
        let box = Box(cxcywh: b[row] * width, b[row + 1] * height, b[row + 2] * width, b[row + 3] * height)
        let iou = truth.map { Double(box.iou($0)) }.max() ?? 0
        quality[q] = scores[q] * iou
      }
      return quality
    }
  }

  /// The feature term's mask for one teacher feature (a map [N, D, H, W] or a sequence [N, L, D])
  /// given the query features [N, Q, D] and each query's quality: at each position p,
  /// `max(sum_q quality_q * <q̂, f̂_p>, 0.01)`, divided by its maximum over the image's positions;
  /// shaped [N, 1, H, W] or [N, L, 1], flat.
  static func featureMask(feature: Tensor, queries: Tensor, quality: [[Double]]) -> [Float] {
    let batch = feature.shape[0], count = queries.shape[1], width = queries.shape[2]
    let isMap = feature.rank == 4
    let positions = isMap ? feature.shape[2] * feature.shape[3] : feature.shape[1]
    let f = feature.floats, h = queries.floats
    func normalised(_ values: [Double]) -> [Double] {
      let norm = max(values.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
      return values.map { $0 / norm }
    }
    var mask: [Float] = []
    mask.reserveCapacity(batch * positions)
    for image in 0..<batch {
      // sum_q quality_q * q̂_q: one vector, so the mask is its product with each f̂_p.
      var weighted = [Double](repeating: 0, count: width)
      for q in 0..<count where quality[image][q] != 0 {
        let row = normalised((0..<width).map { Double(h[(image * count + q) * width + $0]) })
        for d in 0..<width { weighted[d] += quality[image][q] * row[d] }
      }
      let values = (0..<positions).map { p -> Double in
        let column = normalised((0..<width).map { d in Double(isMap ? f[(image * width + d) * positions + p] : f[(image * positions + p) * width + d]) })
        return max(zip(weighted, column).reduce(0) { $0 + $1.0 * $1.1 }, 0.01)
      }
      let largest = values.max()!
      mask += values.map { Float($0 / largest) }
    }
    return mask
  }
}
