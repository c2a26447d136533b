import ArgumentParser
import DistillCore
import DistillDetection
import Foundation

struct Eval: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Score detections with COCO mAP (the numbers pycocotools' COCOeval computes for bbox).",
    discussion: """
      --detections takes a COCO results file: a JSON list of {"image_id", "category_id", \
      "bbox": [x, y, width, height], "score"}. Every image and category id must be in --data, a COCO \
      annotation file. Prints the twelve COCO numbers and AP@[.5:.95] and AP50 per category; --json \
      writes them as one object (fractions; -1 where a number is undefined because there is no ground truth).
      """)

  @Option(name: .long, help: "A COCO results file (JSON list of detections) to score.") var detections: String?
  @Option(name: .long, help: "The COCO annotation file (ground truth).") var data: String
  @Option(name: .long, help: "Also write the numbers to this JSON file (written atomically).") var json: String?

  func validate() throws {
    guard detections != nil else { throw ValidationError("give the detections to score with --detections RESULTS.json") }
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
    printError("read \(results.count) detections from \(detections ?? "") (\(elapsed()))")
    let evaluation = try COCOEvaluator(annotations: annotations).evaluate(results)
    printError("evaluated (\(elapsed()))")
    if let json {
      try write(Self.jsonObject(evaluation), to: json)
    }
    print(Self.table(evaluation), terminator: "")
  }

  /// The detections of --detections (the place where running a model on the images will come in).
  private func detectionsToScore(_ annotations: COCOAnnotations) throws -> [COCODetection] {
    guard let detections else { throw ValidationError("no detections to score") }
    return try COCOResults.load(detections, against: annotations)
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
