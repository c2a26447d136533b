import DistillCore
import Foundation
import Yams

/// A dataset in the [Ultralytics YOLO layout](https://docs.ultralytics.com/datasets/detect/):
/// `.../images/.../x.jpg` has its labels in `.../labels/.../x.txt` (the last `/images/` of the path
/// replaced by `/labels/`, the extension by `.txt`), one object per line as `class cx cy w h`, the
/// centre and size normalised to the upright image's width and height. A line of a class and 3 or
/// more points (`class x1 y1 x2 y2 x3 y3 ...`, a segment) stands for the box around its points.
///
/// Opening reads every label file and every image header (not the pixels): missing images are an
/// error; a malformed line (wrong field count, non-numeric or non-finite field, class outside the
/// names) is skipped with a warning naming the file and line; boxes are clipped to the image and
/// those under 1 pixel wide or high dropped; all counted in `summary`. An image without a label file
/// has no objects.
public struct YOLODataset: DetectionSource {
  public let classNames: [String]
  /// What opening dropped, clipped or skipped, with one warning per problem.
  public let summary: DatasetSummary
  /// The images with their sanitised boxes.
  public let listed: ListedImageSource

  /// Opens the images under `images`, a directory (searched recursively for .jpg, .jpeg and .png,
  /// in sorted order) or a text file listing one image path per line (relative paths are relative
  /// to the text file's directory), with class names from `names` (see `YOLODataset.readNames`).
  public init(images: String, names: String, maxPixels: Int = 1 << 28) throws {
    try self.init(images: images, classNames: YOLODataset.readNames(names), maxPixels: maxPixels)
  }

  public init(images: String, classNames: [String], maxPixels: Int = 1 << 28) throws {
    let paths = try YOLODataset.imagePaths(images)
    let missing = paths.filter { !FileManager.default.fileExists(atPath: $0) }
    if !missing.isEmpty {
      let shown = missing.prefix(10).joined(separator: ", ")
      throw RuntimeError("\(images): \(missing.count) listed image(s) missing on disk: \(shown)\(missing.count > 10 ? ", ..." : "")")
    }
    var summary = DatasetSummary()
    var entries: [ListedImageSource.Entry] = []
    for path in paths {
      let size = try Image.probe(path)
      let labelPath = YOLODataset.labelPath(forImage: path)
      var boxes: [[Float]] = [], labels: [Int] = []
      if let data = FileManager.default.contents(atPath: labelPath) {
        guard let text = String(data: data, encoding: .utf8) else { throw RuntimeError("\(labelPath): not UTF-8 text") }
        (boxes, labels) = YOLODataset.parseLabels(
          text, file: labelPath, classCount: classNames.count, width: size.width, height: size.height, summary: &summary)
      } else {
        summary.unlabelledImages += 1
      }
      summary.boxes += boxes.count
      entries.append(.init(path: path, boxes: boxes, labels: labels, size: (size.width, size.height)))
    }
    summary.images = entries.count
    self.classNames = classNames
    self.summary = summary
    self.listed = try ListedImageSource(entries: entries, classNames: classNames, maxPixels: maxPixels)
  }

  public var count: Int { listed.count }

  public func sample(at index: Int) throws -> DetectionSample { try listed.sample(at: index) }

  /// The label file Ultralytics pairs with an image: the last `/images/` component replaced by
  /// `/labels/` and the extension by `.txt` (beside the image when the path has no `/images/`).
  public static func labelPath(forImage path: String) -> String {
    var directory = (path as NSString).deletingLastPathComponent
    let stem = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
    let wrapped = "/" + directory + "/"
    if let range = wrapped.range(of: "/images/", options: .backwards) {
      directory = String(wrapped.replacingCharacters(in: range, with: "/labels/").dropFirst().dropLast())
    }
    return (directory as NSString).appendingPathComponent(stem + ".txt")
  }

  /// Class names from a text file (one name per line, blank lines ignored) or a YAML file (`.yaml`,
  /// `.yml`) with `names:` as a list or as a map from 0, 1, ... to names, as Ultralytics' data files.
  public static func readNames(_ path: String) throws -> [String] {
    guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
      throw RuntimeError("\(path): cannot read the class names")
    }
    let lower = path.lowercased()
    guard lower.hasSuffix(".yaml") || lower.hasSuffix(".yml") else {
      let names = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
      if names.isEmpty { throw RuntimeError("\(path): no class names") }
      return names
    }
    let document: Any?
    do { document = try Yams.load(yaml: text) } catch { throw RuntimeError("\(path): not valid YAML: \(error)") }
    guard let root = document as? [String: Any], let names = root["names"] else {
      throw RuntimeError("\(path): no `names:` key")
    }
    if let list = names as? [Any] {
      if list.isEmpty { throw RuntimeError("\(path): `names:` is empty") }
      return list.map { "\($0)" }
    }
    if let map = names as? [AnyHashable: Any] {
      var byIndex: [Int: String] = [:]
      for (key, value) in map {
        guard let index = (key.base as? Int) ?? Int("\(key.base)") else { throw RuntimeError("\(path): `names:` key \(key.base) is not a class index") }
        byIndex[index] = "\(value)"
      }
      guard !byIndex.isEmpty, byIndex.keys.sorted() == Array(0..<byIndex.count) else {
        throw RuntimeError("\(path): `names:` indices must be 0, 1, ... \(byIndex.count - 1) without gaps")
      }
      return (0..<byIndex.count).map { byIndex[$0]! }
    }
    throw RuntimeError("\(path): `names:` must be a list or a map of index to name")
  }

  /// Parses one label file's `text` for a `width` x `height` image: boxes in pixels (clipped,
  /// degenerate ones dropped) and their classes. Problems go to `summary` with `file:line`.
  public static func parseLabels(
    _ text: String, file: String, classCount: Int, width: Int, height: Int, summary: inout DatasetSummary
  ) -> (boxes: [[Float]], labels: [Int]) {
    var boxes: [[Float]] = [], labels: [Int] = []
    for (offset, line) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
      let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
      if fields.isEmpty { continue }
      let place = "\(file):\(offset + 1)"
      func skip(_ problem: String) {
        summary.malformedLines += 1
        summary.warnings.append("\(place): \(problem); line skipped")
      }
      guard fields.count == 5 || (fields.count >= 7 && fields.count % 2 == 1) else {
        skip("expected 5 fields (class cx cy w h) or a class and 3 or more points, found \(fields.count)")
        continue
      }
      let numbers = fields.map { Double($0) }
      if let bad = numbers.firstIndex(where: { $0 == nil || !$0!.isFinite }) {
        skip("field \(bad + 1) '\(fields[bad])' is not a finite number")
        continue
      }
      let values = numbers.map { $0! }
      guard values[0] == values[0].rounded(), values[0] >= 0, values[0] < Double(classCount) else {
        skip("class \(fields[0]) is not an index in 0..<\(classCount)")
        continue
      }
      let w = Double(width), h = Double(height)
      var box: [Float]
      if fields.count == 5 {
        let (cx, cy, bw, bh) = (values[1], values[2], values[3], values[4])
        box = [Float((cx - bw / 2) * w), Float((cy - bh / 2) * h), Float((cx + bw / 2) * w), Float((cy + bh / 2) * h)]
      } else {
        let xs = stride(from: 1, to: values.count, by: 2).map { values[$0] * w }
        let ys = stride(from: 2, to: values.count, by: 2).map { values[$0] * h }
        box = [Float(xs.min()!), Float(ys.min()!), Float(xs.max()!), Float(ys.max()!)]
      }
      guard let (clipped, moved) = clipBox(box, width: width, height: height) else {
        summary.degenerateBoxes += 1
        summary.warnings.append("\(place): box \(box.map { "\($0)" }.joined(separator: ",")) is under 1 pixel wide or high inside the \(width)x\(height) image; dropped")
        continue
      }
      if moved { summary.clippedBoxes += 1 }
      boxes.append(clipped)
      labels.append(Int(values[0]))
    }
    return (boxes, labels)
  }

  static func imagePaths(_ images: String) throws -> [String] {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: images, isDirectory: &isDirectory) else {
      throw RuntimeError("\(images): no such directory or image list")
    }
    if isDirectory.boolValue {
      guard let walker = FileManager.default.enumerator(atPath: images) else { throw RuntimeError("\(images): cannot list the directory") }
      var found: [String] = []
      while let relative = walker.nextObject() as? String {
        let lower = relative.lowercased()
        if lower.hasSuffix(".jpg") || lower.hasSuffix(".jpeg") || lower.hasSuffix(".png") {
          found.append((images as NSString).appendingPathComponent(relative))
        }
      }
      if found.isEmpty { throw RuntimeError("\(images): no .jpg, .jpeg or .png images") }
      return found.sorted()
    }
    guard let data = FileManager.default.contents(atPath: images), let text = String(data: data, encoding: .utf8) else {
      throw RuntimeError("\(images): cannot read the image list")
    }
    let base = (images as NSString).deletingLastPathComponent
    return text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.map {
      $0.hasPrefix("/") ? $0 : (base as NSString).appendingPathComponent($0)
    }
  }
}
