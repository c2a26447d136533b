import DistillCore
import Foundation

/// `mimic` (MimicDet head mimicking): for every object box, the (adapted) student's and the
/// teacher's head features are pooled with RoiAlign (avg, `output_size` x `output_size` bins,
/// `sampling_ratio` samples per bin side, half-pixel "aligned" coordinates) and compared by
/// `1 - cos` of the flattened [C * size * size] vectors, `cos = <s, t> / sqrt(max(|s|^2 |t|^2, 1e-16))`.
///
/// Level assignment: the pairs are grouped by map size (one group per FPN level; several pairs of
/// one level, such as a classification and a regression branch, form one group). Each box goes to
/// one level, FPN's rule: the level of the largest stride (input width / map width) not above
/// `16 * sqrt(w h) / canonical_size` (a box of `canonical_size` pixels lands on stride 16), the
/// smallest stride when none is; it is pooled on every pair of that level. A pair's term is
/// `sum over its boxes (1 - cos) / K` with K the number of boxes in the batch, so one branch's
/// terms add up to the mean over boxes, and with two branches the total is the sum of both
/// branches' means (MimicDet applies the loss to each branch). No boxes: 0.
/// Boxes with no positive width or height are skipped. Defaults: output_size 7, sampling_ratio 2,
/// canonical_size 224.
final class MimicDistillation: DistillationMethod {
  var outputSize: Int
  var samplingRatio: Int
  var canonicalSize: Float
  /// Per pair: the inputs declared by `build` and the pair's map shape.
  private(set) var pairInputs: [(rois: String, images: String, weights: String, shape: [Int])] = []

  init(outputSize: Int = 7, samplingRatio: Int = 2, canonicalSize: Float = 224) {
    self.outputSize = outputSize
    self.samplingRatio = samplingRatio
    self.canonicalSize = canonicalSize
  }

  var needsObjects: Bool { true }

  func build(_ builder: inout GraphBuilder, pairs: [TapPair]) throws -> [(name: String, value: String)] {
    guard outputSize >= 1, samplingRatio >= 0, canonicalSize > 0 else {
      throw TrainingError.invalidConfig("mimic: output_size must be >= 1, sampling_ratio >= 0 and canonical_size > 0")
    }
    var terms: [(name: String, value: String)] = []
    for (index, pair) in pairs.enumerated() {
      guard pair.shape.count == 4 else {
        throw TrainingError.invalidConfig("mimic: '\(pair.teacherTap)' must be a feature map [N, C, H, W], got \(pair.shape)")
      }
      let prefix = "\(builder.scope)/\(index)"
      let rois = builder.input(prefix + "/rois", shape: [nil, 4])
      let images = builder.input(prefix + "/batch_indices", shape: [nil], dtype: .int64)
      let weights = builder.input(prefix + "/box_weights", shape: [nil])
      pairInputs.append((rois, images, weights, pair.shape))
      let attributes: [Attribute] = [
        .int("output_height", outputSize), .int("output_width", outputSize), .int("sampling_ratio", samplingRatio),
        .float("spatial_scale", 1), Attribute(name: "mode", value: .string(Array("avg".utf8))),
        Attribute(name: "coordinate_transformation_mode", value: .string(Array("half_pixel".utf8))),
      ]
      let student = builder.reshape(builder.add("RoiAlign", [pair.student, rois, images], attributes, hint: "roi_student"), [0, -1])
      let teacher = builder.reshape(builder.add("RoiAlign", [pair.teacher, rois, images], attributes, hint: "roi_teacher"), [0, -1])
      let dot = builder.reduceSum(builder.mul(student, teacher), axes: [1])
      let norms = builder.mul(builder.reduceSum(builder.mul(student, student), axes: [1]), builder.reduceSum(builder.mul(teacher, teacher), axes: [1]))
      let cosine = builder.div(dot, builder.unary("Sqrt", builder.add("Max", [norms, builder.scalar(1e-16)])))
      terms.append((pair.studentTap, builder.reduceSum(builder.mul(builder.sub(builder.scalar(1), cosine), weights))))
    }
    return terms
  }

  func stepFeeds(_ context: StepContext) throws -> [String: Tensor] {
    guard !pairInputs.isEmpty else { return [:] }
    let inputWidth = Float(context.inputSize.width)
    let strides = Set(pairInputs.map { inputWidth / Float($0.shape[3]) }).sorted()
    var assigned: [Float: [(image: Int, box: [Float])]] = [:]
    var count = 0
    for (image, objects) in context.objects.enumerated() {
      for box in objects.boxes where box.count == 4 && box.allSatisfy(\.isFinite) && box[2] > box[0] && box[3] > box[1] {
        assigned[Self.level(box: box, strides: strides, canonicalSize: canonicalSize), default: []].append((image, box))
        count += 1
      }
    }
    var feeds: [String: Tensor] = [:]
    for inputs in pairInputs {
      let (height, width) = (inputs.shape[2], inputs.shape[3])
      let scaleX = Float(width) / inputWidth, scaleY = Float(height) / Float(context.inputSize.height)
      let boxes = assigned[inputWidth / Float(width)] ?? []
      var rois: [Float] = [], images: [Int64] = [], weights: [Float] = []
      for (image, box) in boxes {
        rois += [box[0] * scaleX, box[1] * scaleY, box[2] * scaleX, box[3] * scaleY]
        images.append(Int64(image))
        weights.append(1 / Float(count))
      }
      if boxes.isEmpty {
        // One box of weight 0 keeps every shape non-empty.
        rois = [0, 0, 1, 1]
        images = [0]
        weights = [0]
      }
      feeds[inputs.rois] = Tensor(shape: [weights.count, 4], floats: rois)
      feeds[inputs.images] = Tensor(shape: [weights.count], ints: images)
      feeds[inputs.weights] = Tensor(shape: [weights.count], floats: weights)
    }
    return feeds
  }

  /// The stride (of `strides`, ascending) a box pools from: the largest not above
  /// `16 * sqrt(w h) / canonical_size`, else the smallest.
  static func level(box: [Float], strides: [Float], canonicalSize: Float) -> Float {
    let target = 16 * ((box[2] - box[0]) * (box[3] - box[1])).squareRoot() / canonicalSize
    return strides.last { $0 <= target * (1 + 1e-6) } ?? strides[0]
  }
}
