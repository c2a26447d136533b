import ArgumentParser
import DistillCore
import DistillDetection
import Foundation

struct Eval: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Score a detection model, or a file of detections, with COCO mAP (the numbers pycocotools' COCOeval computes for bbox).",
    discussion: """
      With MODEL, runs the model on every image of --data (found under --images), decodes its outputs \
      with the --head config, maps the boxes back to each image and scores them; --save-detections \
      writes them as a COCO results file. Without MODEL, --detections takes a COCO results file: a JSON list of {"image_id", "category_id", \
      "bbox": [x, y, width, height], "score"}. Every image and category id must be in --data, a COCO \
      annotation file. Prints the twelve COCO numbers and AP@[.5:.95] and AP50 per category; --json \
      writes them as one object (fractions; -1 where a number is undefined because there is no ground truth).
      """)

  @Argument(help: "The ONNX detection model to run and score (or give --detections instead).") var model: String?
  @Option(name: .long, help: "A COCO results file (JSON list of detections) to score.") var detections: String?
  @Option(name: .long, help: "The directory holding the images of --data (with MODEL).") var images: String?
  @Option(name: .long, help: "Images per forward pass (with MODEL).") var batch: Int = 1
  @Option(name: .customLong("save-detections"), help: "Write the model's detections as a COCO results file (with MODEL).")
  var saveDetections: String?
  @OptionGroup var detection: DetectionModelOptions
  @Option(name: .long, help: "The COCO annotation file (ground truth).") var data: String
  @Option(name: .long, help: "Also write the numbers to this JSON file (written atomically).") var json: String?

  func validate() throws {
    switch (model, detections) {
    case (nil, nil): throw ValidationError("give a MODEL to run (with --head and --images) or the detections to score with --detections RESULTS.json")
    case (.some, .some): throw ValidationError("give either a MODEL or --detections, not both")
    case (.some, nil):
      if detection.head == nil { throw ValidationError("with a MODEL, give its head config with --head HEAD.yaml") }
      if images == nil { throw ValidationError("with a MODEL, give the image directory with --images DIR") }
      if batch < 1 { throw ValidationError("--batch \(batch): must be at least 1") }
    case (nil, .some):
      if images != nil || saveDetections != nil || detection.head != nil {
        throw ValidationError("--images, --head and --save-detections go with a MODEL, not with --detections")
      }
    }
  }

  func run() throws {
    var phaseStart = ContinuousClock.now
    func elapsed() -> String {
      let duration = ContinuousClock.now - phaseStart
      phaseStart = .now
      return String(format: "%.2f s", Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18)
    }
    let annotations = try COCOAnnotations.load(data)
    printError("read \(annotations.images.count) images, \(annotations.categories.count) categories and \(annotations.annotations.count) annotations from \(data) (\(elapsed()))")
    let results = try detectionsToScore(annotations)
    printError("\(detections.map { "read \(results.count) detections from \($0)" } ?? "\(model ?? ""): \(results.count) detections") (\(elapsed()))")
    let evaluation = try COCOEvaluator(annotations: annotations).evaluate(results)
    printError("evaluated (\(elapsed()))")
    if let json {
      try write(Self.jsonObject(evaluation), to: json)
    }
    print(Self.table(evaluation), terminator: "")
  }

  /// The detections of --detections, or those of MODEL on the images of --data.
  private func detectionsToScore(_ annotations: COCOAnnotations) throws -> [COCODetection] {
    if let detections { return try COCOResults.load(detections, against: annotations) }
    guard let model, let images else { throw RuntimeError("no detections to score") }
    let detector = try detection.detector(modelPath: model)
    let results = try cocoDetections(detector, annotations: annotations, images: images, batch: batch, label: "eval: images")
    if let saveDetections {
      do {
        try COCOResults.json(results).write(to: URL(fileURLWithPath: saveDetections), options: .atomic)
      } catch {
        throw RuntimeError("\(saveDetections): cannot write: \(error.localizedDescription)")
      }
    }
    return results
  }

  /// The twelve numbers in pycocotools' summary layout, then AP per category.
  static func table(_ evaluation: COCOEvaluation) -> String {
    let rows: [(String, String, String, Int)] = [
      ("Average Precision  (AP)", "0.50:0.95", "all", 100), ("Average Precision  (AP)", "0.50", "all", 100),
      ("Average Precision  (AP)", "0.75", "all", 100), ("Average Precision  (AP)", "0.50:0.95", "small", 100),
      ("Average Precision  (AP)", "0.50:0.95", "medium", 100), ("Average Precision  (AP)", "0.50:0.95", "large", 100),
      ("Average Recall     (AR)", "0.50:0.95", "all", 1), ("Average Recall     (AR)", "0.50:0.95", "all", 10),
      ("Average Recall     (AR)", "0.50:0.95", "all", 100), ("Average Recall     (AR)", "0.50:0.95", "small", 100),
      ("Average Recall     (AR)", "0.50:0.95", "medium", 100), ("Average Recall     (AR)", "0.50:0.95", "large", 100),
    ]
    var text = ""
    for ((title, iou, area, limit), value) in zip(rows, evaluation.stats) {
      text += " \(title) @[ IoU=\(iou.padding(toLength: 9, withPad: " ", startingAt: 0)) | area=\(String(repeating: " ", count: max(0, 6 - area.count)))\(area) | maxDets=\(String(format: "%3d", limit)) ] = \(String(format: "%.3f", value))\n"
    }
    let nameWidth = max(8, evaluation.perClass.map(\.name.count).max() ?? 0)
    text += "\n" + "category".padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "      id  AP@[.5:.95]    AP50\n"
    for entry in evaluation.perClass {
      text += entry.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0)
        + String(format: "  %6d  %11.3f  %6.3f\n", entry.categoryId, entry.ap, entry.ap50)
    }
    return text
  }

  /// `map`, `ap50`, ... `ar_large` and `per_class` (category name -> {ap, ap50}; a name that two
  /// categories share gets its id appended).
  static func jsonObject(_ evaluation: COCOEvaluation) -> [String: Any] {
    let keys = ["map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large"]
    var object: [String: Any] = Dictionary(uniqueKeysWithValues: zip(keys, evaluation.stats))
    let nameCounts = Dictionary(evaluation.perClass.map { ($0.name, 1) }, uniquingKeysWith: +)
    object["per_class"] = Dictionary(uniqueKeysWithValues: evaluation.perClass.map { entry in
      (nameCounts[entry.name]! > 1 ? "\(entry.name) (id \(entry.categoryId))" : entry.name, ["ap": entry.ap, "ap50": entry.ap50])
    })
    return object
  }

  private func write(_ object: [String: Any], to path: String) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    do {
      try data.write(to: URL(fileURLWithPath: path), options: .atomic)
    } catch {
      throw RuntimeError("cannot write \(path): \(error.localizedDescription)")
    }
  }
}

private func printError(_ message: String) {
  FileHandle.standardError.write(Data((message + "\n").utf8))
}
