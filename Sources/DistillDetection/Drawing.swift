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
