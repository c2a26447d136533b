import CCairo
import Foundation

/// A box to draw: corners in image pixels, the caption shown above it, and its class (which
/// picks the colour).
public struct DrawnBox: Sendable {
  public var x1: Double, y1: Double, x2: Double, y2: Double
  public var caption: String
  public var classIndex: Int

  public init(x1: Double, y1: Double, x2: Double, y2: Double, caption: String, classIndex: Int) {
    (self.x1, self.y1, self.x2, self.y2) = (x1, y1, x2, y2)
    self.caption = caption
    self.classIndex = classIndex
  }
}

/// Pictures of detections, drawn with cairo (boxes, captions in DejaVu Sans on a filled tab) and
/// written as PNG. The only file that touches cairo.
public enum Drawing {
  /// Well-separated colours (Tableau 10), one per class, cycling.
  static let palette: [(Double, Double, Double)] = [
    (0.12, 0.47, 0.71), (1.0, 0.50, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.40, 0.74),
    (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.50, 0.50, 0.50), (0.74, 0.74, 0.13), (0.09, 0.75, 0.81),
  ]

  /// `image` with `boxes` drawn on it, scaled up by `scale` (small inputs become readable), as
  /// PNG bytes. Line width and caption size follow the picture's size; captions stay inside it.
  public static func png(_ image: Image, boxes: [DrawnBox], scale: Double = 1) throws -> [UInt8] {
    let width = Int((Double(image.width) * scale).rounded()), height = Int((Double(image.height) * scale).rounded())
    guard width > 0, height > 0, width <= 16384, height <= 16384 else {
      throw DrawingError("cannot draw a \(width)x\(height) picture (at most 16384 pixels a side)")
    }
    let source = image.width == width && image.height == height ? image : image.resized(width: width, height: height)
    let stride = Int(cairo_format_stride_for_width(CAIRO_FORMAT_RGB24, Int32(width)))
    var pixels = [UInt8](repeating: 255, count: stride * height)
    for y in 0..<height {
      for x in 0..<width {
        let from = (y * width + x) * 3, to = y * stride + x * 4
        // CAIRO_FORMAT_RGB24 is a native-endian 32-bit xRGB word: B, G, R, x in memory here.
        pixels[to] = source.pixels[from + 2]
        pixels[to + 1] = source.pixels[from + 1]
        pixels[to + 2] = source.pixels[from]
      }
    }
    return try pixels.withUnsafeMutableBufferPointer { buffer -> [UInt8] in
      guard let surface = cairo_image_surface_create_for_data(buffer.baseAddress, CAIRO_FORMAT_RGB24, Int32(width), Int32(height), Int32(stride))
      else { throw DrawingError("cairo could not create a surface") }
      defer { cairo_surface_destroy(surface) }
      guard let context = cairo_create(surface) else { throw DrawingError("cairo could not create a context") }
      defer { cairo_destroy(context) }
      let side = Double(min(width, height))
      let lineWidth = max(2, (side / 250).rounded())
      let fontSize = max(11, side / 40)
      cairo_select_font_face(context, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD)
      cairo_set_font_size(context, fontSize)
      for box in boxes {
        let (r, g, b) = palette[((box.classIndex % palette.count) + palette.count) % palette.count]
        // Edges on whole pixels (half pixels for odd widths) stay crisp instead of blending.
        let snap = lineWidth.truncatingRemainder(dividingBy: 2) == 0 ? 0.0 : 0.5
        func crisp(_ value: Double) -> Double { (value * scale).rounded() + snap }
        let x1 = crisp(box.x1), y1 = crisp(box.y1), x2 = crisp(box.x2), y2 = crisp(box.y2)
        cairo_set_source_rgb(context, r, g, b)
        cairo_set_line_width(context, lineWidth)
        cairo_rectangle(context, x1, y1, max(0, x2 - x1), max(0, y2 - y1))
        cairo_stroke(context)
        guard !box.caption.isEmpty else { continue }
        var extents = cairo_text_extents_t()
        cairo_text_extents(context, box.caption, &extents)
        let padding = fontSize * 0.25
        let tabWidth = extents.x_advance + 2 * padding, tabHeight = fontSize + 2 * padding
        // Above the box when there is room, else inside its top edge; never past the picture.
        var tabX = x1 - lineWidth / 2
        var tabY = y1 - tabHeight
        if tabY < 0 { tabY = y1 }
        tabX = min(max(0, tabX), max(0, Double(width) - tabWidth))
        tabY = min(max(0, tabY), max(0, Double(height) - tabHeight))
        cairo_rectangle(context, tabX, tabY, tabWidth, tabHeight)
        cairo_fill(context)
        let luminance = 0.299 * r + 0.587 * g + 0.114 * b
        cairo_set_source_rgb(context, luminance > 0.6 ? 0 : 1, luminance > 0.6 ? 0 : 1, luminance > 0.6 ? 0 : 1)
        cairo_move_to(context, tabX + padding - extents.x_bearing, tabY + padding + fontSize * 0.8)
        cairo_show_text(context, box.caption)
      }
      cairo_surface_flush(surface)
      guard cairo_status(context) == CAIRO_STATUS_SUCCESS else {
        throw DrawingError("cairo failed: \(String(cString: cairo_status_to_string(cairo_status(context))))")
      }
      var bytes: [UInt8] = []
      let status = withUnsafeMutablePointer(to: &bytes) { target in
        cairo_surface_write_to_png_stream(
          surface,
          { closure, data, length in
            guard let closure, let data else { return CAIRO_STATUS_WRITE_ERROR }
            closure.assumingMemoryBound(to: [UInt8].self).pointee.append(contentsOf: UnsafeBufferPointer(start: data, count: Int(length)))
            return CAIRO_STATUS_SUCCESS
          }, target)
      }
      guard status == CAIRO_STATUS_SUCCESS else {
        throw DrawingError("cairo could not encode PNG: \(String(cString: cairo_status_to_string(status)))")
      }
      return bytes
    }
  }

  /// Writes `png(image, boxes:scale:)` to `path` atomically (a failed write leaves nothing).
  public static func write(_ image: Image, boxes: [DrawnBox], to path: String, scale: Double = 1) throws {
    let bytes = try png(image, boxes: boxes, scale: scale)
    do {
      try Data(bytes).write(to: URL(fileURLWithPath: path), options: .atomic)
    } catch {
      throw DrawingError("\(path): cannot write: \(error.localizedDescription)")
    }
  }
}

public struct DrawingError: Error, CustomStringConvertible {
  public let description: String
  init(_ description: String) { self.description = description }
}

/// A shape for `Canvas`: polygons in pixel coordinates (y down), filled with the non-zero or the
/// even-odd rule (a ring is two circles filled even-odd), or, with `strokeWidth`, open polylines
/// stroked with round caps and joins.
public struct CanvasPath: Sendable {
  public var polygons: [[SIMD2<Double>]]
  public var evenOdd: Bool
  public var strokeWidth: Double?

  public init(polygons: [[SIMD2<Double>]], evenOdd: Bool = false, strokeWidth: Double? = nil) {
    self.polygons = polygons
    self.evenOdd = evenOdd
    self.strokeWidth = strokeWidth
  }

  /// The smallest axis-aligned rectangle holding every vertex, widened by half the stroke width.
  public var bounds: (x1: Double, y1: Double, x2: Double, y2: Double) {
    let points = polygons.joined()
    let pad = (strokeWidth ?? 0) / 2
    guard let first = points.first else { return (0, 0, 0, 0) }
    var low = first, high = first
    for point in points {
      low = pointwiseMin(low, point)
      high = pointwiseMax(high, point)
    }
    return (low.x - pad, low.y - pad, high.x + pad, high.y + pad)
  }
}

/// An RGB raster that anti-aliased shapes are painted on with cairo. Not thread-safe; separate
/// canvases may be used on separate threads.
public final class Canvas {
  public let width: Int
  public let height: Int
  private let surface: OpaquePointer
  private let context: OpaquePointer
  private let stride: Int

  /// A canvas holding `image`'s pixels.
  public init(_ image: Image) throws {
    guard image.width > 0, image.height > 0, image.width <= 16384, image.height <= 16384 else {
      throw DrawingError("cannot make a \(image.width)x\(image.height) canvas (1 to 16384 pixels a side)")
    }
    width = image.width
    height = image.height
    guard let surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, Int32(width), Int32(height)),
      cairo_surface_status(surface) == CAIRO_STATUS_SUCCESS
    else { throw DrawingError("cairo could not create a \(width)x\(height) surface") }
    guard let context = cairo_create(surface) else {
      cairo_surface_destroy(surface)
      throw DrawingError("cairo could not create a context")
    }
    self.surface = surface
    self.context = context
    stride = Int(cairo_image_surface_get_stride(surface))
    let data = cairo_image_surface_get_data(surface)!
    for y in 0..<height {
      for x in 0..<width {
        let from = (y * width + x) * 3, to = y * stride + x * 4
        // CAIRO_FORMAT_RGB24: a native-endian xRGB word, B, G, R, x in memory on little-endian hosts.
        data[to] = image.pixels[from + 2]
        data[to + 1] = image.pixels[from + 1]
        data[to + 2] = image.pixels[from]
        data[to + 3] = 255
      }
    }
    cairo_surface_mark_dirty(surface)
  }

  deinit {
    cairo_destroy(context)
    cairo_surface_destroy(surface)
  }

  /// Paints `path` in the colour (components in 0...1) with `alpha` over what is there.
  public func draw(_ path: CanvasPath, red: Double, green: Double, blue: Double, alpha: Double = 1) {
    cairo_set_source_rgba(context, red, green, blue, alpha)
    Canvas.paint(path, on: context)
  }

  /// How much of each pixel of the rectangle (`x`, `y`, `width`, `height`; clipped to nothing outside
  /// it) `path` covers, 0...255, row-major `width * height` bytes; what is drawn is not changed.
  public func coverage(of path: CanvasPath, x: Int, y: Int, width: Int, height: Int) -> [UInt8] {
    guard width > 0, height > 0,
      let mask = cairo_image_surface_create(CAIRO_FORMAT_A8, Int32(width), Int32(height))
    else { return [] }
    defer { cairo_surface_destroy(mask) }
    guard let maskContext = cairo_create(mask) else { return [UInt8](repeating: 0, count: width * height) }
    defer { cairo_destroy(maskContext) }
    cairo_translate(maskContext, Double(-x), Double(-y))
    cairo_set_source_rgba(maskContext, 0, 0, 0, 1)
    Canvas.paint(path, on: maskContext)
    cairo_surface_flush(mask)
    let maskStride = Int(cairo_image_surface_get_stride(mask))
    guard let data = cairo_image_surface_get_data(mask) else { return [UInt8](repeating: 0, count: width * height) }
    var out = [UInt8](repeating: 0, count: width * height)
    for row in 0..<height {
      for column in 0..<width { out[row * width + column] = data[row * maskStride + column] }
    }
    return out
  }

  /// The mean colour (0...255 per channel) of the rectangle's pixels that lie on the canvas.
  public func meanColor(x: Int, y: Int, width: Int, height: Int) -> SIMD3<Double> {
    cairo_surface_flush(surface)
    let data = cairo_image_surface_get_data(surface)!
    var sum = SIMD3<Double>(0, 0, 0), count = 0
    for row in max(0, y)..<min(self.height, y + height) {
      for column in max(0, x)..<min(self.width, x + width) {
        let at = row * stride + column * 4
        sum += SIMD3(Double(data[at + 2]), Double(data[at + 1]), Double(data[at]))
        count += 1
      }
    }
    return count == 0 ? sum : sum / Double(count)
  }

  /// The canvas as an RGB image.
  public var image: Image {
    cairo_surface_flush(surface)
    let data = cairo_image_surface_get_data(surface)!
    var pixels = [UInt8](repeating: 0, count: width * height * 3)
    for y in 0..<height {
      for x in 0..<width {
        let from = y * stride + x * 4, to = (y * width + x) * 3
        pixels[to] = data[from + 2]
        pixels[to + 1] = data[from + 1]
        pixels[to + 2] = data[from]
      }
    }
    return Image(width: width, height: height, pixels: pixels)
  }

  private static func paint(_ path: CanvasPath, on context: OpaquePointer) {
    cairo_new_path(context)
    for polygon in path.polygons {
      guard let first = polygon.first else { continue }
      cairo_move_to(context, first.x, first.y)
      for point in polygon.dropFirst() { cairo_line_to(context, point.x, point.y) }
      if path.strokeWidth == nil { cairo_close_path(context) }
    }
    if let width = path.strokeWidth {
      cairo_set_line_width(context, width)
      cairo_set_line_cap(context, CAIRO_LINE_CAP_ROUND)
      cairo_set_line_join(context, CAIRO_LINE_JOIN_ROUND)
      cairo_stroke(context)
    } else {
      cairo_set_fill_rule(context, path.evenOdd ? CAIRO_FILL_RULE_EVEN_ODD : CAIRO_FILL_RULE_WINDING)
      cairo_fill(context)
    }
  }
}
