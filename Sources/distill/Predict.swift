import ArgumentParser
import DistillCore
import DistillDetection
import Foundation

struct Predict: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run a detection model on images; print the detections and draw them.",
    discussion: """
      Each image is fitted to the model's input (stretched, or letterboxed with --letterbox), the outputs \
      are decoded with the --head config, and boxes come back in the image's own pixels. --draw DIR \
      writes DIR/NAME.png for each image with boxes, class names and scores (small images are scaled \
      up so captions stay readable).
      """)

  @Argument(help: "The ONNX detection model.") var model: String
  @Argument(help: "PNG or JPEG images.") var images: [String]
  @OptionGroup var detection: DetectionModelOptions
  @Option(name: .long, help: "Keep detections scoring at least this (default: the head config's score_threshold).") var score: Float?
  @Option(name: .long, help: "Write a picture of each image's detections into this directory.") var draw: String?
  @Flag(name: .long, help: "Print one JSON object instead of text.") var json = false

  func validate() throws {
    guard !images.isEmpty else { throw ValidationError("give at least one image") }
    if detection.head == nil { throw ValidationError("give the head config with --head HEAD.yaml") }
    if let score, !(0...1).contains(score) { throw ValidationError("--score \(score): expected a value in [0, 1]") }
  }

  func run() throws {
    let detector = try detection.detector(modelPath: model, scoreThreshold: score)
    let names = detector.decoder.config.classNames
    func label(_ index: Int) -> String { names.flatMap { index < $0.count ? $0[index] : nil } ?? "class \(index)" }
    if let draw {
      try FileManager.default.createDirectory(atPath: draw, withIntermediateDirectories: true)
      let inputs = Set(images.map { URL(fileURLWithPath: $0).standardizedFileURL.path })
      for path in pictures(in: draw) where inputs.contains(path) {
        throw RuntimeError("--draw \(draw) would overwrite the input image \(path); choose another directory")
      }
    }
    var report: [[String: Any]] = []
    let progress = Progress(label: "predict: images", total: images.count)
    for (index, path) in images.enumerated() {
      let image = try Image.load(path)
      let found = try detector.detect([image])[0]
      let rows: [[String: Any]] = found.map { item in
        ["box": item.box.xyxy.map { Double(($0 * 100).rounded() / 100) }, "score": Double(item.score), "class": item.classIndex, "label": label(item.classIndex)]
      }
      report.append(["file": path, "width": image.width, "height": image.height, "detections": rows])
      if !json {
        print("\(path): \(found.count) detection\(found.count == 1 ? "" : "s")")
        for item in found {
          let b = item.box
          print(String(format: "  %@  %.3f  [%.1f, %.1f, %.1f, %.1f]", label(item.classIndex), item.score, b.x1, b.y1, b.x2, b.y2))
        }
      }
      if let draw {
        let boxes = found.map { item in
          DrawnBox(
            x1: Double(item.box.x1), y1: Double(item.box.y1), x2: Double(item.box.x2), y2: Double(item.box.y2),
            caption: String(format: "%@ %.2f", label(item.classIndex), item.score), classIndex: item.classIndex)
        }
        let scale = max(1, 480 / Double(max(1, min(image.width, image.height))))
        let out = pictures(in: draw)[index]
        try Drawing.write(image, boxes: boxes, to: out, scale: scale.rounded(.up))
        if !json { print("  drew \(out)") }
      }
      if images.count > 1 { progress.update(index + 1) }
    }
    if json {
      let data = try JSONSerialization.data(withJSONObject: ["images": report], options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
      print(String(decoding: data, as: UTF8.self))
    }
  }

  /// The picture written for each image: DIR/NAME.png, with a numeric suffix where two images share a name.
  private func pictures(in directory: String) -> [String] {
    var used: [String: Int] = [:]
    return images.map { path in
      let base = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
      used[base, default: 0] += 1
      let name = used[base]! == 1 ? base : "\(base)-\(used[base]!)"
      return URL(fileURLWithPath: directory).appendingPathComponent(name + ".png").standardizedFileURL.path
    }
  }
}
