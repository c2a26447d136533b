import Foundation

/// A COCO object-detection annotation file (`images`, `categories`, `annotations`), as
/// https://cocodataset.org/#format-data describes it. Segmentations and other fields are not kept.
public struct COCOAnnotations: Sendable {
  public struct ImageEntry: Sendable {
    public var id: Int
    public var fileName: String
    /// 0 when the file does not give it.
    public var width: Int
    /// 0 when the file does not give it.
    public var height: Int

    public init(id: Int, fileName: String, width: Int, height: Int) {
      self.id = id
      self.fileName = fileName
      self.width = width
      self.height = height
    }
  }

  public struct Category: Sendable {
    public var id: Int
    public var name: String

    public init(id: Int, name: String) {
      self.id = id
      self.name = name
    }
  }

  /// One ground-truth object.
  public struct Object: Sendable {
    public var id: Int
    public var imageId: Int
    public var categoryId: Int
    /// box is COCO [x, y, width, height] in pixels.
    public var box: [Double]
    /// The `area` of the file (COCO computes it from the segmentation; it decides the small/medium/large
    /// range in evaluation). When the file has none it is the box's width * height.
    public var area: Double
    /// `iscrowd`; false when the file does not give it.
    public var isCrowd: Bool

    public init(id: Int, imageId: Int, categoryId: Int, box: [Double], area: Double, isCrowd: Bool) {
      self.id = id
      self.imageId = imageId
      self.categoryId = categoryId
      self.box = box
      self.area = area
      self.isCrowd = isCrowd
    }
  }

  public var images: [ImageEntry]
  public var categories: [Category] {
    didSet { sortedCategoryIds = Self.sortedIds(of: categories) }
  }
  public var annotations: [Object]

  /// Category ids ascending; position = class index.
  private var sortedCategoryIds: [Int]

  public init(images: [ImageEntry], categories: [Category], annotations: [Object]) {
    self.images = images
    self.categories = categories
    self.annotations = annotations
    self.sortedCategoryIds = Self.sortedIds(of: categories)
  }

  /// Category ids sorted ascending map to contiguous indices 0..<C and back.
  public func classIndex(ofCategory id: Int) -> Int? {
    var low = 0, high = sortedCategoryIds.count
    while low < high {
      let middle = (low + high) / 2
      if sortedCategoryIds[middle] < id { low = middle + 1 } else { high = middle }
    }
    return low < sortedCategoryIds.count && sortedCategoryIds[low] == id ? low : nil
  }

  /// The category id of class `index` (0..<categories.count; the inverse of `classIndex(ofCategory:)`).
  public func categoryId(ofClass index: Int) -> Int {
    precondition(sortedCategoryIds.indices.contains(index), "class index \(index) out of 0..<\(sortedCategoryIds.count)")
    return sortedCategoryIds[index]
  }

  private static func sortedIds(of categories: [Category]) -> [Int] { categories.map(\.id).sorted() }

  /// Reads a COCO annotation file. Throws `COCOError` naming the file and the entry for malformed
  /// JSON (with line and column), missing or mistyped fields (with their path, `annotations[3].bbox`),
  /// boxes that are not four finite numbers with non-negative width and height, duplicate image or
  /// category ids, and annotations whose image or category is not in the file (naming the annotation id).
  public static func load(_ path: String) throws -> COCOAnnotations {
    let file = try COCOJSON.decode(AnnotationFile.self, from: path)
    var imageIds = Set<Int>()
    for image in file.images {
      guard imageIds.insert(image.id).inserted else { throw COCOError("\(path): image id \(image.id) appears twice") }
      guard (image.width ?? 0) >= 0, (image.height ?? 0) >= 0 else { throw COCOError("\(path): image \(image.id): negative width or height") }
    }
    var categoryIds = Set<Int>()
    for category in file.categories where !categoryIds.insert(category.id).inserted {
      throw COCOError("\(path): category id \(category.id) appears twice")
    }
    let objects = try file.annotations.map { entry in
      let name = "\(path): annotation \(entry.id)"
      guard imageIds.contains(entry.imageId) else { throw COCOError("\(name): image_id \(entry.imageId) is not an image of the file") }
      guard categoryIds.contains(entry.categoryId) else {
        throw COCOError("\(name): category_id \(entry.categoryId) is not a category of the file")
      }
      guard COCOJSON.isValidBox(entry.bbox) else {
        throw COCOError("\(name): bbox \(entry.bbox) is not [x, y, width, height] with width and height >= 0")
      }
      if let area = entry.area, !(area.isFinite && area >= 0) { throw COCOError("\(name): area \(area) is not a finite number >= 0") }
      return Object(
        id: entry.id, imageId: entry.imageId, categoryId: entry.categoryId, box: entry.bbox,
        area: entry.area ?? entry.bbox[2] * entry.bbox[3], isCrowd: entry.iscrowd?.value ?? false)
    }
    return COCOAnnotations(
      images: file.images.map { ImageEntry(id: $0.id, fileName: $0.fileName, width: $0.width ?? 0, height: $0.height ?? 0) },
      categories: file.categories.map { Category(id: $0.id, name: $0.name) }, annotations: objects)
  }
}

/// The fields of an annotation file that are read.
private struct AnnotationFile: Decodable {
  struct Image: Decodable {
    let id: Int
    let fileName: String
    let width: Int?
    let height: Int?

    enum CodingKeys: String, CodingKey { case id, fileName = "file_name", width, height }
  }

  struct Category: Decodable {
    let id: Int
    let name: String
  }

  struct Annotation: Decodable {
    let id: Int
    let imageId: Int
    let categoryId: Int
    let bbox: [Double]
    let area: Double?
    let iscrowd: COCOJSON.Flag?

    enum CodingKeys: String, CodingKey { case id, imageId = "image_id", categoryId = "category_id", bbox, area, iscrowd }
  }

  let images: [Image]
  let categories: [Category]
  let annotations: [Annotation]
}
