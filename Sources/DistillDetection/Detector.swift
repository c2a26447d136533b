import DistillCore
import Foundation

/// Runs a detection model on images: each image is fitted to the network input (stretched or
/// letterboxed, normalised with mean and std, as `Augmenter` does without randomness), the batch
/// runs through the interpreter, the head outputs are decoded by the head config, and the boxes are
/// mapped back to each image's own pixels (clipped to it).
public final class Detector {
  public let interpreter: Interpreter
  public let decoder: HeadDecoder
  public let inputName: String
  public let options: AugmentOptions
  private let augmenter: Augmenter
  private var validated = false

  /// `interpreter` must have been prepared with the head's output names in `keep` when they are
  /// not graph outputs (see `HeadDecoder.outputNames`).
  public init(interpreter: Interpreter, head: HeadConfig, inputName: String, options: AugmentOptions) {
    self.interpreter = interpreter
    decoder = HeadDecoder(head)
    self.inputName = inputName
    var fixed = options
    fixed.flipProbability = 0
    fixed.scaleJitter = 1...1
    fixed.brightness = 0
    fixed.contrast = 0
    fixed.saturation = 0
    self.options = fixed
    augmenter = Augmenter(fixed)
  }

  /// Detections of each image, best first, in that image's pixels.
  public func detect(_ images: [Image]) throws -> [[Detection]] {
    guard !images.isEmpty else { return [] }
    var random = SplitMix64(seed: 0)
    let prepared = images.map { image in
      augmenter(DetectionSample(image: image, boxes: [], labels: [], crowd: [], source: ""), random: &random)
    }
    var batch: [Float] = []
    batch.reserveCapacity(prepared.count * 3 * options.width * options.height)
    for sample in prepared { batch += sample.image.floats }
    let input = Tensor(shape: [prepared.count, 3, options.height, options.width], floats: batch)
    let names = decoder.outputNames
    let graphOutputs = interpreter.graph.outputs.map(\.name)
    let run = try interpreter.run([inputName: input], taps: Set(names.filter { !graphOutputs.contains($0) }))
    var outputs: [String: Tensor] = run.taps
    for (name, tensor) in zip(graphOutputs, run.outputs) where names.contains(name) { outputs[name] = tensor }
    if !validated {
      try decoder.validate(outputShapes: outputs.mapValues(\.shape))
      validated = true
    }
    let decoded = try decoder.decode(outputs: outputs, imageSize: (options.width, options.height))
    return zip(decoded, prepared).map { detections, sample in
      detections.compactMap { detection in
        let box = sample.transform.toOriginal(detection.box.xyxy)
        guard box[2] > box[0], box[3] > box[1] else { return nil }
        var mapped = detection
        mapped.box = Box(x1: box[0], y1: box[1], x2: box[2], y2: box[3])
        return mapped
      }
    }
  }
}

extension COCOAnnotations {
  /// The annotated images under `imageDirectory` as a detection source: boxes in pixels (xyxy),
  /// labels as contiguous class indices, crowd flags kept. Fails, naming them, when listed images
  /// are missing on disk.
  public func source(imageDirectory: String) throws -> ListedImageSource {
    var objectsByImage: [Int: [Object]] = [:]
    for object in annotations { objectsByImage[object.imageId, default: []].append(object) }
    let entries = images.map { entry -> ListedImageSource.Entry in
      let objects = objectsByImage[entry.id] ?? []
      var boxes: [[Float]] = [], labels: [Int] = [], crowd: [Bool] = []
      for object in objects {
        let b = object.box.map(Float.init)
        guard let (box, _) = clipBox([b[0], b[1], b[0] + b[2], b[1] + b[3]], width: entry.width, height: entry.height),
          let label = classIndex(ofCategory: object.categoryId)
        else { continue }
        boxes.append(box)
        labels.append(label)
        crowd.append(object.isCrowd)
      }
      let path = URL(fileURLWithPath: imageDirectory).appendingPathComponent(entry.fileName).path
      return ListedImageSource.Entry(path: path, boxes: boxes, labels: labels, crowd: crowd, size: (entry.width, entry.height))
    }
    let names = categories.sorted { $0.id < $1.id }.map(\.name)
    return try ListedImageSource(entries: entries, classNames: names)
  }
}
