import Foundation

/// One scored detection in COCO results form.
public struct COCODetection: Sendable, Equatable {
  public var imageId: Int
  public var categoryId: Int
  /// COCO [x, y, width, height] in pixels.
  public var box: [Double]
  public var score: Double

  public init(imageId: Int, categoryId: Int, box: [Double], score: Double) {
    self.imageId = imageId
    self.categoryId = categoryId
    self.box = box
    self.score = score
  }
}

/// COCO results files: a JSON list of `{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`.
public enum COCOResults {
  /// Reads a results file, checking every entry against `annotations`. Throws `COCOError` naming the
  /// file and the entry (its 0-based index in the list) for malformed JSON (with line and column),
  /// missing or mistyped fields, non-finite numbers, negative box sizes, and image or category ids
  /// that `annotations` does not have. (pycocotools refuses unknown images too, but silently drops
  /// detections of unknown categories; here they are an error.)
  public static func load(_ path: String, against annotations: COCOAnnotations) throws -> [COCODetection] {
    guard let entries = try COCOJSON.parse(path) as? [Any] else {
      throw COCOError("\(path): expected a JSON list of {\"image_id\", \"category_id\", \"bbox\", \"score\"} objects")
    }
    let imageIds = Set(annotations.images.map(\.id))
    var detections: [COCODetection] = []
    detections.reserveCapacity(entries.count)
    for (index, value) in entries.enumerated() {
      let name = "\(path): result \(index)"
      guard let entry = value as? [String: Any] else { throw COCOError("\(name): not an object") }
      guard let imageId = COCOJSON.integer(entry["image_id"]) else { throw COCOError("\(name): \"image_id\" is missing or not an integer") }
      guard let categoryId = COCOJSON.integer(entry["category_id"]) else { throw COCOError("\(name): \"category_id\" is missing or not an integer") }
      guard imageIds.contains(imageId) else { throw COCOError("\(name): image_id \(imageId) is not an image of the annotations") }
      guard annotations.classIndex(ofCategory: categoryId) != nil else {
        throw COCOError("\(name): category_id \(categoryId) is not a category of the annotations")
      }
      guard let box = COCOJSON.box(entry["bbox"]) else {
        throw COCOError("\(name): \"bbox\" must be [x, y, width, height], four finite numbers with width and height >= 0")
      }
      guard let score = COCOJSON.finiteNumber(entry["score"]) else { throw COCOError("\(name): \"score\" is missing or not a finite number") }
      detections.append(COCODetection(imageId: imageId, categoryId: categoryId, box: box, score: score))
    }
    return detections
  }

  /// The JSON text of a results file for `detections` (the form `load` reads and pycocotools' `loadRes` takes).
  public static func json(_ detections: [COCODetection]) throws -> Data {
    let entries: [[String: Any]] = detections.map {
      ["image_id": $0.imageId, "category_id": $0.categoryId, "bbox": $0.box, "score": $0.score]
    }
    return try JSONSerialization.data(withJSONObject: entries, options: [.sortedKeys])
  }
}
