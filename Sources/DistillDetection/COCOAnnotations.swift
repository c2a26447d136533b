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
  /// JSON (with line and column), missing or mistyped fields, boxes that are not four finite numbers
  /// with non-negative width and height, duplicate image or category ids, and annotations whose
  /// image or category is not in the file (naming the annotation id).
  public static func load(_ path: String) throws -> COCOAnnotations {
    guard let root = try COCOJSON.parse(path) as? [String: Any] else {
      throw COCOError("\(path): expected a JSON object with \"images\", \"categories\" and \"annotations\"")
    }
    func list(_ key: String) throws -> [[String: Any]] {
      guard let value = root[key] else { throw COCOError("\(path): no \"\(key)\" list") }
      guard let entries = value as? [Any] else { throw COCOError("\(path): \"\(key)\" is not a list") }
      return try entries.enumerated().map { index, entry in
        guard let object = entry as? [String: Any] else { throw COCOError("\(path): \(key)[\(index)] is not an object") }
        return object
      }
    }

    var images: [ImageEntry] = []
    var imageIds = Set<Int>()
    for (index, entry) in try list("images").enumerated() {
      guard let id = COCOJSON.integer(entry["id"]) else { throw COCOError("\(path): images[\(index)]: \"id\" is missing or not an integer") }
      guard let fileName = entry["file_name"] as? String else { throw COCOError("\(path): image \(id): \"file_name\" is missing or not a string") }
      let width = entry["width"].map(COCOJSON.integer) ?? 0, height = entry["height"].map(COCOJSON.integer) ?? 0
      guard let width, let height, width >= 0, height >= 0 else {
        throw COCOError("\(path): image \(id): \"width\" and \"height\" must be non-negative integers")
      }
      guard imageIds.insert(id).inserted else { throw COCOError("\(path): image id \(id) appears twice") }
      images.append(ImageEntry(id: id, fileName: fileName, width: width, height: height))
    }

    var categories: [Category] = []
    var categoryIds = Set<Int>()
    for (index, entry) in try list("categories").enumerated() {
      guard let id = COCOJSON.integer(entry["id"]) else { throw COCOError("\(path): categories[\(index)]: \"id\" is missing or not an integer") }
      guard let name = entry["name"] as? String else { throw COCOError("\(path): category \(id): \"name\" is missing or not a string") }
      guard categoryIds.insert(id).inserted else { throw COCOError("\(path): category id \(id) appears twice") }
      categories.append(Category(id: id, name: name))
    }

    var objects: [Object] = []
    for (index, entry) in try list("annotations").enumerated() {
      guard let id = COCOJSON.integer(entry["id"]) else { throw COCOError("\(path): annotations[\(index)]: \"id\" is missing or not an integer") }
      let name = "\(path): annotation \(id)"
      guard let imageId = COCOJSON.integer(entry["image_id"]) else { throw COCOError("\(name): \"image_id\" is missing or not an integer") }
      guard let categoryId = COCOJSON.integer(entry["category_id"]) else { throw COCOError("\(name): \"category_id\" is missing or not an integer") }
      guard imageIds.contains(imageId) else { throw COCOError("\(name): image_id \(imageId) is not an image of the file") }
      guard categoryIds.contains(categoryId) else { throw COCOError("\(name): category_id \(categoryId) is not a category of the file") }
      guard let box = COCOJSON.box(entry["bbox"]) else {
        throw COCOError("\(name): \"bbox\" must be [x, y, width, height], four finite numbers with width and height >= 0")
      }
      var area = box[2] * box[3]
      if let given = entry["area"] {
        guard let number = COCOJSON.finiteNumber(given), number >= 0 else { throw COCOError("\(name): \"area\" is not a finite number >= 0") }
        area = number
      }
      var isCrowd = false
      if let given = entry["iscrowd"] {
        guard let flag = COCOJSON.flag(given) else { throw COCOError("\(name): \"iscrowd\" must be 0 or 1") }
        isCrowd = flag
      }
      objects.append(Object(id: id, imageId: imageId, categoryId: categoryId, box: box, area: area, isCrowd: isCrowd))
    }
    return COCOAnnotations(images: images, categories: categories, annotations: objects)
  }
}
