import DistillCore
import Foundation

/// One image with its ground truth, as a dataset hands it to augmentation.
public struct DetectionSample: Sendable {
  /// The upright RGB8 image.
  public var image: Image
  /// One `[x1, y1, x2, y2]` per object, in pixels of `image` (continuous coordinates: pixel `i`
  /// spans `[i, i + 1)`), clipped to the image, each at least 1 pixel wide and high.
  public var boxes: [[Float]]
  /// One contiguous class index (`0..<classNames.count` of the source) per box.
  public var labels: [Int]
  /// One flag per box: a crowd region (COCO `iscrowd`) that evaluation ignores rather than counts.
  public var crowd: [Bool]
  /// Where the sample came from (the image's path), for messages.
  public var source: String

  public init(image: Image, boxes: [[Float]], labels: [Int], crowd: [Bool], source: String) {
    precondition(boxes.count == labels.count && boxes.count == crowd.count, "\(source): boxes, labels and crowd differ in count")
    self.image = image
    self.boxes = boxes
    self.labels = labels
    self.crowd = crowd
    self.source = source
  }
}

/// A finite, indexable collection of detection samples (YOLO labels, COCO annotations, ...).
///
/// Opening a source checks what can be checked without decoding every image (files present,
/// labels parseable); `sample(at:)` decodes one image and may throw for it, naming the file.
/// Sources are read from a background thread by `BatchLoader`, hence `Sendable`.
public protocol DetectionSource: Sendable {
  /// The number of samples; `sample(at:)` accepts `0..<count`.
  var count: Int { get }
  /// The class names, indexed by the labels the samples carry.
  var classNames: [String] { get }
  /// Decodes sample `index` (upright image, boxes in its pixels).
  func sample(at index: Int) throws -> DetectionSample
}

/// What opening a dataset dropped or found suspect, with one message per problem.
public struct DatasetSummary: Sendable, Equatable {
  /// Samples (images) in the dataset.
  public var images = 0
  /// Boxes kept.
  public var boxes = 0
  /// Label lines that could not be used and were skipped (see `warnings`).
  public var malformedLines = 0
  /// Boxes reaching outside the image, clipped to it.
  public var clippedBoxes = 0
  /// Boxes less than 1 pixel wide or high after clipping, dropped.
  public var degenerateBoxes = 0
  /// Images without a label file (kept as images with no objects).
  public var unlabelledImages = 0
  /// One message per skipped line or dropped box, naming the file and line (`labels/x.txt:3: ...`).
  public var warnings: [String] = []

  public init() {}
}

/// Clips `[x1, y1, x2, y2]` to a `width` x `height` image. Returns nil when the clipped box is less
/// than 1 pixel wide or high; `clipped` tells whether clipping moved any side.
public func clipBox(_ box: [Float], width: Int, height: Int) -> (box: [Float], clipped: Bool)? {
  let w = Float(width), h = Float(height)
  let clippedBox = [min(max(box[0], 0), w), min(max(box[1], 0), h), min(max(box[2], 0), w), min(max(box[3], 0), h)]
  guard clippedBox[2] - clippedBox[0] >= 1, clippedBox[3] - clippedBox[1] >= 1 else { return nil }
  return (clippedBox, clippedBox != box)
}

/// A source from a list of image files with their boxes already in pixels of the upright image:
/// the common ground of YOLO and COCO datasets (a COCO adaptor maps each `ImageEntry` and its
/// objects to one `Entry`).
public struct ListedImageSource: DetectionSource {
  /// One image and its objects.
  public struct Entry: Sendable {
    public var path: String
    public var boxes: [[Float]]
    public var labels: [Int]
    public var crowd: [Bool]
    /// The size the annotations assume (upright), checked against the decoded image; nil to skip.
    public var size: (width: Int, height: Int)?

    public init(path: String, boxes: [[Float]], labels: [Int], crowd: [Bool]? = nil, size: (width: Int, height: Int)? = nil) {
      self.path = path
      self.boxes = boxes
      self.labels = labels
      self.crowd = crowd ?? [Bool](repeating: false, count: boxes.count)
      self.size = size
    }
  }

  public let entries: [Entry]
  public let classNames: [String]
  public let maxPixels: Int

  /// Fails, naming them, when any listed image is missing on disk (the first 10 and a count), or a
  /// label is outside `0..<classNames.count`.
  public init(entries: [Entry], classNames: [String], maxPixels: Int = 1 << 28) throws {
    let missing = entries.map(\.path).filter { !FileManager.default.fileExists(atPath: $0) }
    if !missing.isEmpty {
      let shown = missing.prefix(10).joined(separator: ", ")
      throw RuntimeError("\(missing.count) listed image(s) missing on disk: \(shown)\(missing.count > 10 ? ", ..." : "")")
    }
    for entry in entries {
      precondition(entry.boxes.count == entry.labels.count && entry.boxes.count == entry.crowd.count, "\(entry.path): boxes, labels and crowd differ in count")
      if let bad = entry.labels.first(where: { !(0..<classNames.count).contains($0) }) {
        throw RuntimeError("\(entry.path): class index \(bad) outside 0..<\(classNames.count)")
      }
    }
    self.entries = entries
    self.classNames = classNames
    self.maxPixels = maxPixels
  }

  public var count: Int { entries.count }

  public func sample(at index: Int) throws -> DetectionSample {
    let entry = entries[index]
    let image = try Image.load(entry.path, maxPixels: maxPixels)
    if let size = entry.size, size.width != image.width || size.height != image.height {
      throw RuntimeError("\(entry.path): annotations assume \(size.width)x\(size.height) but the image is \(image.width)x\(image.height)")
    }
    return DetectionSample(image: image, boxes: entry.boxes, labels: entry.labels, crowd: entry.crowd, source: entry.path)
  }
}
