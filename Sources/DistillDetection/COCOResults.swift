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
  /// missing or mistyped fields (with their path, `[17].score`), negative box sizes, and image or category ids
  /// that `annotations` does not have. (pycocotools refuses unknown images too, but silently drops
  /// detections of unknown categories; here they are an error.)
  public static func load(_ path: String, against annotations: COCOAnnotations) throws -> [COCODetection] {
    let entries = try COCOJSON.decode([ResultEntry].self, from: path)
    let imageIds = Set(annotations.images.map(\.id))
    return try entries.enumerated().map { index, entry in
      let name = "\(path): result \(index)"
      guard imageIds.contains(entry.imageId) else { throw COCOError("\(name): image_id \(entry.imageId) is not an image of the annotations") }
      guard annotations.classIndex(ofCategory: entry.categoryId) != nil else {
        throw COCOError("\(name): category_id \(entry.categoryId) is not a category of the annotations")
      }
      guard COCOJSON.isValidBox(entry.bbox) else {
        throw COCOError("\(name): bbox \(entry.bbox) is not [x, y, width, height] with width and height >= 0")
      }
      guard entry.score.isFinite else { throw COCOError("\(name): score is not finite") }
      return COCODetection(imageId: entry.imageId, categoryId: entry.categoryId, box: entry.bbox, score: entry.score)
    }
  }

  /// The JSON text of a results file for `detections` (the form `load` reads and pycocotools' `loadRes` takes).
  public static func json(_ detections: [COCODetection]) throws -> Data {
    let entries: [[String: Any]] = detections.map {
      ["image_id": $0.imageId, "category_id": $0.categoryId, "bbox": $0.box, "score": $0.score]
    }
    return try JSONSerialization.data(withJSONObject: entries, options: [.sortedKeys])
  }
}

private struct ResultEntry: Decodable {
  let imageId: Int
  let categoryId: Int
  let bbox: [Double]
  let score: Double

  enum CodingKeys: String, CodingKey { case imageId = "image_id", categoryId = "category_id", bbox, score }
}
