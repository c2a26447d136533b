import DistillCore
import Foundation

/// A synthetic detection task that is small enough to generate in seconds and hard enough that a
/// small student trails a big teacher: ten classes of anti-aliased shapes in any of twelve colours
/// (colour says nothing about the class), 8-80 px at 320x320 (log-uniform, so most objects are
/// COCO-small), on cluttered backgrounds (gradients, value noise, stripes, checkers, translucent
/// blobs and lines, pixel noise), overlapping one another, among unannotated look-alikes (pentagons,
/// open arcs, four-pointed sparkles, thin X marks, bars, half discs and irregular blobs).
///
/// Boxes are the **visible** extent: the tight box of the pixels where the object is at least half
/// covering and nothing painted later (another object or a distractor) is at least half covering.
/// An object less than 30% visible (occluded more than 70%) stays in the picture but is not
/// annotated. Everything is a function of the seed and the image's position: the same arguments give
/// byte-identical files, on any number of threads.
public enum SyntheticDataset {
  /// Class names; category id = position + 1.
  public static let classNames = ["circle", "square", "triangle", "star", "cross", "ring", "ellipse", "diamond", "hexagon", "crescent"]

  /// Unannotated shapes painted among the objects, each resembling a class.
  public enum DistractorKind: String, CaseIterable, Sendable {
    /// Looks like a hexagon.
    case pentagon
    /// An open stroked arc of 200-300 degrees; looks like a ring.
    case arc
    /// A four-pointed star; looks like a star or a cross.
    case sparkle
    /// Two thin crossing strokes; looks like a cross.
    case thinX = "thin_x"
    /// A rectangle 2-5 times longer than wide; looks like a square.
    case bar
    /// A half disc; looks like a circle or a crescent.
    case halfDisc = "half_disc"
    /// An irregular polygon: colour without a class shape.
    case blob
  }

  /// A box in whole pixels: columns `x..<x+width`, rows `y..<y+height`.
  public struct PixelBox: Sendable, Equatable {
    public var x: Int, y: Int, width: Int, height: Int
  }

  /// An object of a class, as painted.
  public struct Object: Sendable {
    public var classIndex: Int
    /// The fill colour before pixel noise.
    public var color: SIMD3<UInt8>
    /// The visible box (see the type's documentation); nil when no pixel is visible.
    public var box: PixelBox?
    /// Pixels at least half covered by the shape.
    public var pixels: Int
    /// The share of `pixels` that nothing painted later covers.
    public var visibleFraction: Double
    /// Whether the object is in the annotation file (at least 30% visible, box at least 2x2).
    public var annotated: Bool
  }

  /// An unannotated look-alike, as painted.
  public struct Distractor: Sendable {
    public var kind: DistractorKind
    public var color: SIMD3<UInt8>
    /// The shape's full box (occlusion not considered).
    public var box: PixelBox
  }

  /// One generated picture with everything painted on it.
  public struct Scene: Sendable {
    public var image: Image
    /// In painting order.
    public var objects: [Object]
    public var distractors: [Distractor]
  }

  /// What `generate` wrote.
  public struct Summary: Sendable {
    public var trainImages: Int
    public var valImages: Int
    /// Annotated objects per class.
    public var perClass: [Int]
    /// Annotated objects whose box area is below 32 * 32 (COCO's "small").
    public var small: Int
    /// Objects painted but not annotated because they are occluded more than 70%.
    public var occluded: Int
    public var distractors: Int
    public var annotations: Int { perClass.reduce(0, +) }
  }

  /// The least share of an object's pixels that must stay visible for it to be annotated.
  public static let minimumVisibleFraction = 0.3

  /// The scene of image `index` (0-based, over both splits) of the dataset with `seed`, `size` x `size` pixels.
  public static func scene(seed: UInt64, index: Int, size: Int = 320) throws -> Scene {
    var random = SplitMix64(seed: seed).derived(UInt64(index))
    let scale = Double(size) / 320
    let canvas = try Canvas(background(size: size, random: &random))
    clutter(canvas, size: size, scale: scale, random: &random)

    let objectCount = random.int(4...18), distractorCount = random.int(2...8)
    var painters: [(isObject: Bool, kind: Int)] = (0..<objectCount).map { _ in (true, random.int(0...(classNames.count - 1))) }
    painters += (0..<distractorCount).map { _ in (false, random.int(0...(DistractorKind.allCases.count - 1))) }
    random.shuffle(&painters)

    var owner = [Int32](repeating: -1, count: size * size)
    var objects: [(painter: Int, object: Object)] = [], distractors: [Distractor] = []
    var painted: [(box: PixelBox, color: SIMD3<UInt8>)] = []
    for (number, painter) in painters.enumerated() {
      let side = random.logUniform(painter.isObject ? 8 : 12, 80) * scale
      let shape = painter.isObject
        ? objectShape(painter.kind, side: side, random: &random)
        : distractorShape(DistractorKind.allCases[painter.kind], side: side, random: &random)
      let path = place(shape, size: size, random: &random)
      let bounds = path.bounds
      let x1 = max(0, Int(bounds.x1.rounded(.down)) - 1), y1 = max(0, Int(bounds.y1.rounded(.down)) - 1)
      let x2 = min(size, Int(bounds.x2.rounded(.up)) + 1), y2 = min(size, Int(bounds.y2.rounded(.up)) + 1)
      let area = PixelBox(x: x1, y: y1, width: x2 - x1, height: y2 - y1)
      let overlapped = painted.filter { $0.box.x < area.x + area.width && area.x < $0.box.x + $0.box.width && $0.box.y < area.y + area.height && area.y < $0.box.y + $0.box.height }
      let color = contrastingColor(
        against: canvas.meanColor(x: area.x, y: area.y, width: area.width, height: area.height), and: overlapped.map(\.color), random: &random)
      painted.append((area, color))
      canvas.draw(path, red: Double(color.x) / 255, green: Double(color.y) / 255, blue: Double(color.z) / 255)
      if path.strokeWidth == nil, side >= 20 * scale, random.chance(0.3) {
        let outline = CanvasPath(polygons: path.polygons.map { $0 + [$0[0]] }, strokeWidth: max(1, side / 30))
        let dark = random.chance(0.5) ? 0.45 : 1.6
        canvas.draw(
          outline, red: min(1, Double(color.x) / 255 * dark), green: min(1, Double(color.y) / 255 * dark), blue: min(1, Double(color.z) / 255 * dark))
      }
      let coverage = canvas.coverage(of: path, x: area.x, y: area.y, width: area.width, height: area.height)
      var pixels = 0
      for row in 0..<area.height {
        for column in 0..<area.width where coverage[row * area.width + column] >= 128 {
          owner[(area.y + row) * size + area.x + column] = Int32(number)
          pixels += 1
        }
      }
      if painter.isObject {
        objects.append(
          (number, Object(classIndex: painter.kind, color: color, box: area, pixels: pixels, visibleFraction: 0, annotated: false)))
      } else {
        distractors.append(Distractor(kind: DistractorKind.allCases[painter.kind], color: color, box: area))
      }
    }

    for index in objects.indices {
      let number = Int32(objects[index].painter), area = objects[index].object.box!
      var visible = 0, low = SIMD2(Int.max, Int.max), high = SIMD2(-1, -1)
      for row in area.y..<(area.y + area.height) {
        for column in area.x..<(area.x + area.width) where owner[row * size + column] == number {
          visible += 1
          low = pointwiseMin(low, SIMD2(column, row))
          high = pointwiseMax(high, SIMD2(column, row))
        }
      }
      var object = objects[index].object
      object.visibleFraction = object.pixels == 0 ? 0 : Double(visible) / Double(object.pixels)
      object.box = visible == 0 ? nil : PixelBox(x: low.x, y: low.y, width: high.x - low.x + 1, height: high.y - low.y + 1)
      object.annotated = object.visibleFraction >= minimumVisibleFraction && (object.box.map { $0.width >= 2 && $0.height >= 2 } ?? false)
      objects[index].object = object
    }

    var image = canvas.image
    let amplitude = random.int(0...10)
    if amplitude > 0 {
      let span = UInt64(2 * amplitude + 1)
      for pixel in 0..<(size * size) {
        var word = random.next()
        for channel in 0..<3 {
          let at = pixel * 3 + channel
          image.pixels[at] = UInt8(clamping: Int(image.pixels[at]) + Int((word & 0xFFFF) % span) - amplitude)
          word >>= 16
        }
      }
    }
    return Scene(image: image, objects: objects.map(\.object), distractors: distractors)
  }

  /// Writes `images` pictures and their COCO annotations under `out`: `train/NNNNNN.png`,
  /// `val/NNNNNN.png`, `train.json` and `val.json` (image ids 1...`images` over both splits, the last
  /// `round(images * valFraction)` in val; categories 1...10 named by `classNames`; `bbox` the visible
  /// box in whole pixels, `area` its width * height, `iscrowd` 0). The JSON files are written last and
  /// atomically, so a failed run leaves no annotation file naming a missing picture.
  ///
  /// Throws without writing when `out` exists and is not empty, unless `overwrite` is true: then its
  /// `train/`, `val/`, `train.json` and `val.json` are removed first and nothing else in it is touched.
  /// `progress` is called on the calling thread with (images done, images).
  public static func generate(
    out: String, images: Int, seed: UInt64, size: Int = 320, valFraction: Double = 0.2, overwrite: Bool = false,
    progress: ((Int, Int) -> Void)? = nil
  ) throws -> Summary {
    guard images >= 1 else { throw SyntheticDatasetError("the number of images must be at least 1 (got \(images))") }
    guard (64...4096).contains(size) else { throw SyntheticDatasetError("the image size must be 64 to 4096 pixels (got \(size))") }
    guard valFraction >= 0, valFraction < 1 else { throw SyntheticDatasetError("the validation fraction must be in [0, 1) (got \(valFraction))") }
    try prepare(directory: out, overwrite: overwrite)
    let root = URL(fileURLWithPath: out)
    let valCount = Int((Double(images) * valFraction).rounded()), trainCount = images - valCount
    func split(_ index: Int) -> String { index < trainCount ? "train" : "val" }
    func fileName(_ index: Int) -> String { String(format: "%06d.png", index + 1) }

    var scenes = [(objects: [Object], distractors: Int)?](repeating: nil, count: images)
    let lock = NSLock()
    var failure: Error?
    let chunk = 4 * max(1, ProcessInfo.processInfo.activeProcessorCount)
    for start in stride(from: 0, to: images, by: chunk) {
      let end = min(images, start + chunk)
      scenes.withUnsafeMutableBufferPointer { results in
        DispatchQueue.concurrentPerform(iterations: end - start) { offset in
          let index = start + offset
          do {
            let scene = try scene(seed: seed, index: index, size: size)
            let path = root.appendingPathComponent(split(index)).appendingPathComponent(fileName(index)).path
            try Data(Drawing.png(scene.image, boxes: [])).write(to: URL(fileURLWithPath: path), options: .atomic)
            results[index] = (scene.objects, scene.distractors.count)
          } catch {
            lock.lock()
            if failure == nil { failure = error }
            lock.unlock()
          }
        }
      }
      if let failure { throw SyntheticDatasetError("\(out): cannot write the pictures: \(failure)") }
      progress?(end, images)
    }

    var summary = Summary(trainImages: trainCount, valImages: valCount, perClass: Array(repeating: 0, count: classNames.count), small: 0, occluded: 0, distractors: 0)
    var annotationId = 0
    for (name, range) in [("train", 0..<trainCount), ("val", trainCount..<images)] {
      var file = COCOFile(
        info: .init(description: "distill data synth: seed \(seed), \(images) images of \(size)x\(size), visible boxes", version: "1"),
        images: [], annotations: [],
        categories: classNames.enumerated().map { .init(id: $0.offset + 1, name: $0.element, supercategory: "shape") })
      for index in range {
        let scene = scenes[index]!
        file.images.append(.init(id: index + 1, file_name: fileName(index), width: size, height: size))
        summary.distractors += scene.distractors
        for object in scene.objects {
          guard object.annotated, let box = object.box else {
            summary.occluded += 1
            continue
          }
          annotationId += 1
          file.annotations.append(
            .init(
              id: annotationId, image_id: index + 1, category_id: object.classIndex + 1, bbox: [box.x, box.y, box.width, box.height],
              area: box.width * box.height, iscrowd: 0))
          summary.perClass[object.classIndex] += 1
          if box.width * box.height < 32 * 32 { summary.small += 1 }
        }
      }
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.sortedKeys]
      let path = root.appendingPathComponent("\(name).json")
      do {
        try encoder.encode(file).write(to: path, options: .atomic)
      } catch {
        throw SyntheticDatasetError("\(path.path): cannot write: \(error.localizedDescription)")
      }
    }
    return summary
  }

  /// Checks that `directory` may be written and creates it with `train/` and `val/`.
  private static func prepare(directory: String, overwrite: Bool) throws {
    let manager = FileManager.default
    var isDirectory: ObjCBool = false
    if manager.fileExists(atPath: directory, isDirectory: &isDirectory) {
      guard isDirectory.boolValue else { throw SyntheticDatasetError("\(directory): exists and is not a directory") }
      let contents = (try? manager.contentsOfDirectory(atPath: directory)) ?? []
      if !contents.isEmpty {
        guard overwrite else {
          throw SyntheticDatasetError("\(directory): is not empty (\(contents.count) entries); pass --overwrite to replace its train/, val/, train.json and val.json")
        }
        for name in ["train", "val", "train.json", "val.json"] {
          let path = URL(fileURLWithPath: directory).appendingPathComponent(name).path
          guard manager.fileExists(atPath: path) else { continue }
          do { try manager.removeItem(atPath: path) } catch {
            throw SyntheticDatasetError("\(path): cannot remove: \(error.localizedDescription)")
          }
        }
      }
    }
    for name in ["train", "val"] {
      let path = URL(fileURLWithPath: directory).appendingPathComponent(name).path
      do { try manager.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
        throw SyntheticDatasetError("\(path): cannot create: \(error.localizedDescription)")
      }
    }
  }

  private struct COCOFile: Encodable {
    struct Info: Encodable { var description: String; var version: String }
    struct ImageEntry: Encodable { var id: Int; var file_name: String; var width: Int; var height: Int }
    struct Annotation: Encodable {
      var id: Int, image_id: Int, category_id: Int, bbox: [Int], area: Int, iscrowd: Int
    }
    struct Category: Encodable { var id: Int; var name: String; var supercategory: String }
    var info: Info
    var images: [ImageEntry]
    var annotations: [Annotation]
    var categories: [Category]
    let licenses: [Int] = []
  }

  /// Twelve base colours; each use is jittered by up to 25 per channel.
  static let colors: [SIMD3<Double>] = [
    [220, 40, 40], [245, 140, 30], [240, 220, 40], [50, 170, 60], [30, 160, 160], [40, 80, 210],
    [140, 60, 190], [240, 120, 180], [245, 245, 245], [20, 20, 20], [130, 80, 40], [128, 128, 128],
  ]

  /// A jittered palette colour at least 90 (RGB distance) from `background` and 70 from each of
  /// `neighbours` (the shapes it may overlap), or else black or white, whichever is farther from
  /// `background`, after twenty tries.
  static func contrastingColor(against background: SIMD3<Double>, and neighbours: [SIMD3<UInt8>], random: inout SplitMix64) -> SIMD3<UInt8> {
    func distance(_ a: SIMD3<Double>, _ b: SIMD3<Double>) -> Double { ((a - b) * (a - b)).sum().squareRoot() }
    for _ in 0..<20 {
      let base = colors[random.int(0...(colors.count - 1))]
      let color = base + SIMD3(random.uniform(-25, 25), random.uniform(-25, 25), random.uniform(-25, 25))
      let clamped = pointwiseMax(SIMD3(repeating: 0), pointwiseMin(SIMD3(repeating: 255), color))
      if distance(clamped, background) >= 90, neighbours.allSatisfy({ distance(clamped, SIMD3<Double>($0)) >= 70 }) {
        return SIMD3<UInt8>(clamped, rounding: .toNearestOrAwayFromZero)
      }
    }
    return (background * background).sum() > (SIMD3(repeating: 255) - background).squared.sum() ? [15, 15, 15] : [240, 240, 240]
  }

  /// A gradient between two colours with value noise, and often stripes or a checkerboard, and pixel noise.
  static func background(size: Int, random: inout SplitMix64) -> Image {
    func randomColor() -> SIMD3<Double> { SIMD3(random.uniform(0, 255), random.uniform(0, 255), random.uniform(0, 255)) }
    let from = randomColor(), to = randomColor()
    let angle = random.uniform(0, 2 * .pi), direction = SIMD2(cos(angle), sin(angle))
    let cells = random.int(3...10), noiseAmplitude = random.uniform(10, 60)
    let grid = (0..<((cells + 1) * (cells + 1))).map { _ in SIMD3(random.uniform(-1, 1), random.uniform(-1, 1), random.uniform(-1, 1)) * noiseAmplitude }
    let stripes = random.chance(0.5)
    let stripeAngle = random.uniform(0, .pi), period = random.uniform(5, 40), stripeAmplitude = random.uniform(15, 45)
    let stripeColor = SIMD3(random.uniform(0.3, 1), random.uniform(0.3, 1), random.uniform(0.3, 1)) * stripeAmplitude
    let checker = !stripes && random.chance(0.3)
    let checkerCell = random.uniform(8, 40), checkerAmplitude = random.uniform(15, 40)
    let pixelNoise = random.int(0...18)
    let stripeDirection = SIMD2(cos(stripeAngle), sin(stripeAngle))
    var pixels = [UInt8](repeating: 0, count: size * size * 3)
    let side = Double(size)
    for y in 0..<size {
      for x in 0..<size {
        let point = SIMD2(Double(x), Double(y))
        let t = min(1, max(0, ((point - side / 2) * direction).sum() / side + 0.5))
        var color = from + (to - from) * t
        let gx = Double(x) / side * Double(cells), gy = Double(y) / side * Double(cells)
        let cx = min(cells - 1, Int(gx)), cy = min(cells - 1, Int(gy))
        let fx = gx - Double(cx), fy = gy - Double(cy)
        let top = grid[cy * (cells + 1) + cx] * (1 - fx) + grid[cy * (cells + 1) + cx + 1] * fx
        let bottom = grid[(cy + 1) * (cells + 1) + cx] * (1 - fx) + grid[(cy + 1) * (cells + 1) + cx + 1] * fx
        color += top * (1 - fy) + bottom * fy
        if stripes { color += stripeColor * sin(2 * .pi * (point * stripeDirection).sum() / period) }
        if checker { color += (Int(Double(x) / checkerCell) + Int(Double(y) / checkerCell)) % 2 == 0 ? checkerAmplitude : -checkerAmplitude }
        if pixelNoise > 0 {
          let word = random.next(), span = UInt64(2 * pixelNoise + 1)
          color += SIMD3(Double(word % span), Double((word >> 16) % span), Double((word >> 32) % span)) - Double(pixelNoise)
        }
        let at = (y * size + x) * 3
        pixels[at] = UInt8(min(255, max(0, color.x)).rounded())
        pixels[at + 1] = UInt8(min(255, max(0, color.y)).rounded())
        pixels[at + 2] = UInt8(min(255, max(0, color.z)).rounded())
      }
    }
    return Image(width: size, height: size, pixels: pixels)
  }

  /// Translucent blobs and ellipses of any size and a few lines, painted under the objects.
  static func clutter(_ canvas: Canvas, size: Int, scale: Double, random: inout SplitMix64) {
    for _ in 0..<random.int(6...22) {
      // Ellipses are wider than any object and faint, so none passes for one of the class.
      let smooth = random.chance(0.3)
      let radius = (smooth ? random.uniform(50, 120) : random.logUniform(5, 70)) * scale
      let center = SIMD2(random.uniform(-radius / 2, Double(size) + radius / 2), random.uniform(-radius / 2, Double(size) + radius / 2))
      let shape = smooth ? ellipse(points: 64) : blob(random: &random)
      let aspect = random.uniform(smooth ? 0.7 : 0.4, 1), turn = random.uniform(0, 2 * .pi)
      let path = CanvasPath(polygons: [transform(shape, center: center, half: SIMD2(radius * aspect, radius), angle: turn)])
      canvas.draw(
        path, red: random.uniform(0, 1), green: random.uniform(0, 1), blue: random.uniform(0, 1),
        alpha: smooth ? random.uniform(0.15, 0.35) : random.uniform(0.25, 0.75))
    }
    for _ in 0..<random.int(0...5) {
      let points = (0..<random.int(2...5)).map { _ in SIMD2(random.uniform(0, Double(size)), random.uniform(0, Double(size))) }
      canvas.draw(
        CanvasPath(polygons: [points], strokeWidth: random.uniform(1, 3) * scale), red: random.uniform(0, 1), green: random.uniform(0, 1),
        blue: random.uniform(0, 1), alpha: random.uniform(0.3, 0.7))
    }
  }

  /// The shape of class `classIndex` about `side` pixels across, centred on the origin.
  static func objectShape(_ classIndex: Int, side: Double, random: inout SplitMix64) -> CanvasPath {
    let half = side / 2
    let any = random.uniform(0, 2 * .pi), upright = random.chance(0.5) ? 0 : Double.pi / 2
    let points = max(24, min(96, Int(side * 1.2)))
    func make(_ polygons: [[SIMD2<Double>]], aspect: ClosedRange<Double>, angle: Double, evenOdd: Bool = false) -> CanvasPath {
      let squeeze = random.uniform(aspect.lowerBound, aspect.upperBound)
      return CanvasPath(polygons: polygons.map { transform($0, center: .zero, half: SIMD2(half * squeeze, half), angle: angle) }, evenOdd: evenOdd)
    }
    switch classNames[classIndex] {
    case "circle": return make([ellipse(points: points)], aspect: 0.92...1, angle: any)
    case "square": return make([[SIMD2(-1, -1), SIMD2(1, -1), SIMD2(1, 1), SIMD2(-1, 1)]], aspect: 0.9...1, angle: random.uniform(-0.35, 0.35))
    case "triangle": return make([[SIMD2(0, -1), SIMD2(1, 1), SIMD2(-1, 1)]], aspect: 0.6...1.3, angle: any)
    case "star": return make([star(5, inner: random.uniform(0.38, 0.5))], aspect: 0.9...1, angle: any)
    case "cross":
      let t = random.uniform(0.28, 0.42)
      let arm: [SIMD2<Double>] = [
        [-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t], [t, 1], [-t, 1], [-t, t], [-1, t], [-1, -t], [-t, -t],
      ]
      return make([arm], aspect: 0.85...1, angle: random.uniform(-0.4, 0.4))
    case "ring":
      let inner = random.uniform(0.5, 0.7)
      return make([ellipse(points: points), ellipse(points: points).map { $0 * inner }], aspect: 0.85...1, angle: any, evenOdd: true)
    case "ellipse": return make([ellipse(points: points)], aspect: 0.35...0.65, angle: upright + random.uniform(-0.5, 0.5))
    case "diamond": return make([regular(4, phase: -.pi / 2)], aspect: 0.5...0.72, angle: upright + random.uniform(-0.3, 0.3))
    case "hexagon": return make([regular(6, phase: random.uniform(0, .pi / 3))], aspect: 0.9...1, angle: 0)
    default: return make([crescent(offset: random.uniform(0.35, 0.55), inner: random.uniform(0.85, 0.95), points: points)], aspect: 0.95...1, angle: any)
    }
  }

  /// A look-alike of `kind` about `side` pixels across, centred on the origin.
  static func distractorShape(_ kind: DistractorKind, side: Double, random: inout SplitMix64) -> CanvasPath {
    let half = side / 2, angle = random.uniform(0, 2 * .pi)
    let points = max(24, min(96, Int(side * 1.2)))
    func placed(_ polygon: [SIMD2<Double>], squeeze: Double = 1) -> [SIMD2<Double>] {
      transform(polygon, center: .zero, half: SIMD2(half * squeeze, half), angle: angle)
    }
    switch kind {
    case .pentagon: return CanvasPath(polygons: [placed(regular(5, phase: -.pi / 2), squeeze: random.uniform(0.9, 1))])
    case .arc:
      let start = random.uniform(0, 2 * .pi), sweep = random.uniform(200, 300) * .pi / 180, width = random.uniform(0.3, 0.5)
      let arc = (0...points).map { step -> SIMD2<Double> in
        let a = start + sweep * Double(step) / Double(points)
        return SIMD2(cos(a), sin(a)) * (1 - width / 2)
      }
      return CanvasPath(polygons: [placed(arc)], strokeWidth: max(1.5, half * width))
    case .sparkle: return CanvasPath(polygons: [placed(star(4, inner: random.uniform(0.22, 0.35)))])
    case .thinX:
      let width = max(1, side * random.uniform(0.05, 0.09))
      return CanvasPath(polygons: [placed([SIMD2(-1, -1), SIMD2(1, 1)]), placed([SIMD2(-1, 1), SIMD2(1, -1)])], strokeWidth: width)
    case .bar: return CanvasPath(polygons: [placed([SIMD2(-1, -1), SIMD2(1, -1), SIMD2(1, 1), SIMD2(-1, 1)], squeeze: random.uniform(0.2, 0.45))])
    case .halfDisc:
      let half = (0...points / 2).map { step -> SIMD2<Double> in
        let a = Double.pi * Double(step) / Double(points / 2)
        return SIMD2(cos(a), sin(a) - 0.5)
      }
      return CanvasPath(polygons: [placed(half)])
    case .blob: return CanvasPath(polygons: [placed(blob(random: &random), squeeze: random.uniform(0.5, 1))])
    }
  }

  /// `shape` moved so that it lies wholly inside the picture, at a random place.
  static func place(_ shape: CanvasPath, size: Int, random: inout SplitMix64) -> CanvasPath {
    let bounds = shape.bounds, side = Double(size)
    let lowX = 1 - bounds.x1, highX = side - 1 - bounds.x2, lowY = 1 - bounds.y1, highY = side - 1 - bounds.y2
    let shift = SIMD2(highX > lowX ? random.uniform(lowX, highX) : side / 2, highY > lowY ? random.uniform(lowY, highY) : side / 2)
    var moved = shape
    moved.polygons = shape.polygons.map { $0.map { $0 + shift } }
    return moved
  }

  static func transform(_ polygon: [SIMD2<Double>], center: SIMD2<Double>, half: SIMD2<Double>, angle: Double) -> [SIMD2<Double>] {
    let c = cos(angle), s = sin(angle)
    return polygon.map { point in
      let scaled = point * half
      return center + SIMD2(c * scaled.x - s * scaled.y, s * scaled.x + c * scaled.y)
    }
  }

  static func ellipse(points: Int) -> [SIMD2<Double>] {
    (0..<points).map { step in
      let a = 2 * Double.pi * Double(step) / Double(points)
      return SIMD2(cos(a), sin(a))
    }
  }

  static func regular(_ corners: Int, phase: Double) -> [SIMD2<Double>] {
    (0..<corners).map { step in
      let a = phase + 2 * Double.pi * Double(step) / Double(corners)
      return SIMD2(cos(a), sin(a))
    }
  }

  static func star(_ corners: Int, inner: Double) -> [SIMD2<Double>] {
    (0..<(2 * corners)).map { step in
      let a = -Double.pi / 2 + Double.pi * Double(step) / Double(corners)
      return SIMD2(cos(a), sin(a)) * (step % 2 == 0 ? 1 : inner)
    }
  }

  /// The unit disc less a disc of radius `inner` centred `offset` to the right.
  static func crescent(offset: Double, inner: Double, points: Int) -> [SIMD2<Double>] {
    let meet = (1 + offset * offset - inner * inner) / (2 * offset), height = (1 - meet * meet).squareRoot()
    let outerStart = atan2(height, meet), innerStart = atan2(height, meet - offset)
    let outer = (0...points).map { step -> SIMD2<Double> in
      let a = outerStart + (2 * .pi - 2 * outerStart) * Double(step) / Double(points)
      return SIMD2(cos(a), sin(a))
    }
    let hollow = (1..<points).map { step -> SIMD2<Double> in
      let a = (2 * .pi - innerStart) - (2 * .pi - 2 * innerStart) * Double(step) / Double(points)
      return SIMD2(offset + inner * cos(a), inner * sin(a))
    }
    return outer + hollow
  }

  /// Nine to fourteen corners at random radii 0.55-1 around the origin.
  static func blob(random: inout SplitMix64) -> [SIMD2<Double>] {
    let corners = random.int(9...14)
    return (0..<corners).map { step in
      let a = 2 * Double.pi * (Double(step) + random.uniform(-0.3, 0.3)) / Double(corners)
      return SIMD2(cos(a), sin(a)) * random.uniform(0.55, 1)
    }
  }
}

public struct SyntheticDatasetError: Error, CustomStringConvertible {
  public let description: String
  init(_ description: String) { self.description = description }
}

extension SplitMix64 {
  /// Uniform in [low, high).
  fileprivate mutating func uniform(_ low: Double, _ high: Double) -> Double { low + (high - low) * Double(next() >> 11) * 0x1p-53 }

  /// Uniform over the integers of `range` (modulo bias below 2^-50 for small ranges).
  fileprivate mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }

  fileprivate mutating func chance(_ probability: Double) -> Bool { uniform(0, 1) < probability }

  /// exp of a uniform draw between log(low) and log(high).
  fileprivate mutating func logUniform(_ low: Double, _ high: Double) -> Double { exp(uniform(log(low), log(high))) }

  /// Fisher-Yates, drawing from this generator only.
  fileprivate mutating func shuffle<T>(_ items: inout [T]) {
    guard items.count > 1 else { return }
    for index in stride(from: items.count - 1, to: 0, by: -1) { items.swapAt(index, int(0...index)) }
  }
}

extension SIMD3 where Scalar == Double {
  fileprivate var squared: SIMD3<Double> { self * self }
}
