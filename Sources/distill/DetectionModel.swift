import ArgumentParser
import DistillCore
import DistillDetection
import DistillONNX
import Foundation

/// How `eval` and `predict` run a detection model: its head config and how images become its input.
struct DetectionModelOptions: ParsableArguments {
  @Option(name: .long, help: "The head config (YAML or JSON) that says how to decode the model's outputs.") var head: String?
  @Option(name: .long, help: "Fit images to HEIGHTxWIDTH (default: the head config's input_size, else the input's declared size).")
  var size: String?
  @Option(name: .long, help: "Per-channel mean subtracted after scaling pixels to [0, 1].") var mean: String = "0,0,0"
  @Option(name: .long, help: "Per-channel standard deviation divided by after subtracting the mean.") var std: String = "1,1,1"
  @Flag(name: .long, help: "Keep each image's aspect ratio and pad (letterbox) instead of stretching it to the input size.")
  var letterbox = false
  @Option(name: .long, help: "The graph input that takes the images (default: the model's only input).") var input: String?

  /// A detector for `modelPath`; `scoreThreshold` overrides the head config's.
  func detector(modelPath: String, scoreThreshold: Float? = nil) throws -> Detector {
    guard let head else { throw RuntimeError("give the head config with --head HEAD.yaml (how to decode the model's outputs)") }
    var config = try HeadConfig.load(head)
    if let scoreThreshold { config.scoreThreshold = scoreThreshold }
    let model = try ModelFile.read(modelPath)
    guard let graph = model.graph else { throw RuntimeError("\(modelPath) has no graph") }
    let inputs = graph.inputs.filter { input in !graph.initializers.contains { $0.name == input.name } }
    let info: ValueInfo
    if let input {
      guard let found = inputs.first(where: { $0.name == input }) else {
        throw RuntimeError("--input \(input): the model has no such input; inputs: \(inputs.map(\.name).joined(separator: ", "))")
      }
      info = found
    } else {
      guard inputs.count == 1 else {
        throw RuntimeError("the model has \(inputs.count) inputs (\(inputs.map(\.name).joined(separator: ", "))); name the image input with --input")
      }
      info = inputs[0]
    }
    var height: Int?, width: Int?
    if let size {
      let parts = size.split(separator: "x").compactMap { Int($0) }
      guard parts.count == 2, parts.allSatisfy({ $0 > 0 }) else { throw RuntimeError("--size \(size): expected HEIGHTxWIDTH") }
      (height, width) = (parts[0], parts[1])
    } else if let inputSize = config.inputSize {
      (height, width) = (inputSize.height, inputSize.width)
    } else if let declared = info.type?.shape?.map({ $0.size.map(Int.init) }), declared.count == 4, let h = declared[2], let w = declared[3] {
      (height, width) = (h, w)
    }
    guard let height, let width else {
      throw RuntimeError("input '\(info.name)' has no fixed height and width; give them with --size HEIGHTxWIDTH")
    }
    let decoder = HeadDecoder(config)
    let produced = Set(graph.nodes.flatMap(\.outputs)).union(graph.inputs.map(\.name))
    for name in decoder.outputNames where !produced.contains(name) {
      throw RuntimeError("\(head) names the output '\(name)', which \(modelPath) does not compute")
    }
    let interpreter = try Interpreter(model: model, keep: Set(decoder.outputNames))
    let options = AugmentOptions(
      width: width, height: height, fit: letterbox ? .letterbox : .stretch, mean: try channelTriple(mean, "--mean"), std: try channelTriple(std, "--std"))
    return Detector(interpreter: interpreter, head: config, inputName: info.name, options: options)
  }
}

/// A progress line on standard error that rewrites itself on a terminal and prints every
/// `every`-th update plus the last otherwise.
struct Progress {
  let label: String
  let total: Int
  let start = ContinuousClock.now
  let terminal = isatty(2) != 0

  func update(_ done: Int) {
    let seconds = max(1e-9, (ContinuousClock.now - start) / .seconds(1))
    let rate = Double(done) / seconds
    let remaining = rate > 0 ? Double(total - done) / rate : 0
    let line = String(format: "%@ %d/%d  %.1f/s  ETA %.0f s", label, done, total, rate, remaining)
    if terminal {
      FileHandle.standardError.write(Data(("\r" + line + (done == total ? "\n" : "")).utf8))
    } else if done == total || done % max(1, total / 10) == 0 {
      FileHandle.standardError.write(Data((line + "\n").utf8))
    }
  }
}

/// `detector`'s detections of every image of `annotations` (found under `images`) as COCO results,
/// `batch` images per forward pass, with a progress line labelled `label` (nil: silent).
func cocoDetections(_ detector: Detector, annotations: COCOAnnotations, images: String, batch: Int, label: String?) throws -> [COCODetection] {
  let source = try annotations.source(imageDirectory: images)
  let progress = label.map { Progress(label: $0, total: source.count) }
  var results: [COCODetection] = []
  for start in stride(from: 0, to: source.count, by: batch) {
    let indices = Array(start..<min(start + batch, source.count))
    let pictures = try indices.map { try source.sample(at: $0).image }
    for (index, found) in zip(indices, try detector.detect(pictures)) {
      let imageId = annotations.images[index].id
      for item in found {
        guard item.classIndex < annotations.categories.count else {
          throw RuntimeError(
            "the model predicts class \(item.classIndex), but the annotations have \(annotations.categories.count) categories; "
              + "the head config's num_classes must match the annotation's categories (sorted by id)")
        }
        let box = item.box
        results.append(
          COCODetection(
            imageId: imageId, categoryId: annotations.categoryId(ofClass: item.classIndex),
            box: [Double(box.x1), Double(box.y1), Double(box.x2 - box.x1), Double(box.y2 - box.y1)], score: Double(item.score)))
      }
    }
    progress?.update(indices.last! + 1)
  }
  return results
}
