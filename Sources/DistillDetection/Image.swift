import CImage
import DistillCore

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
public struct Image: Sendable {
  public var width: Int
  public var height: Int
  public var pixels: [UInt8]

  public init(width: Int, height: Int, pixels: [UInt8]) {
    precondition(pixels.count == width * height * 3)
    self.width = width
    self.height = height
    self.pixels = pixels
  }

  /// Decodes a PNG or JPEG file to upright RGB8.
  ///
  /// Grey, grey+alpha, RGB, RGBA, palette and 16-bit PNGs and grey, RGB and CMYK JPEGs all decode
  /// to RGB: alpha (and tRNS transparency) is discarded, keeping the colour stored under each pixel
  /// (no compositing onto a background, as Pillow's `convert("RGB")`), and 16-bit samples keep their
  /// high byte. A JPEG's EXIF orientation (tags 1-8) is applied when `upright` is true, so the image
  /// is the way up a viewer shows it.
  ///
  /// Throws, naming the file, when it cannot be read, is not a PNG or JPEG, is truncated or corrupt,
  /// or when its header announces more than `maxPixels` pixels (checked before any pixel memory is
  /// allocated, so a 60000x60000 header fails at once with its dimensions in the message).
  public static func load(_ path: String, maxPixels: Int = 1 << 28, upright: Bool = true) throws -> Image {
    var width: Int32 = 0, height: Int32 = 0, orientation: Int32 = 1
    var message = [CChar](repeating: 0, count: 512)
    guard let data = distill_decode_image(path, maxPixels, &width, &height, &orientation, &message, message.count) else {
      throw RuntimeError("\(path): \(String(cString: message))")
    }
    defer { distill_free_image(data) }
    let count = Int(width) * Int(height) * 3
    let image = Image(width: Int(width), height: Int(height), pixels: Array(UnsafeBufferPointer(start: data, count: count)))
    return upright ? image.oriented(exif: Int(orientation)) : image
  }

  /// Reads only a PNG's or JPEG's header: its size as `load` would return it (width and height
  /// swapped when `upright` and the EXIF orientation is 5-8) and the EXIF orientation (1 if none).
  public static func probe(_ path: String, upright: Bool = true) throws -> (width: Int, height: Int, orientation: Int) {
    var width: Int32 = 0, height: Int32 = 0, orientation: Int32 = 1
    var message = [CChar](repeating: 0, count: 512)
    guard distill_probe_image(path, &width, &height, &orientation, &message, message.count) == 0 else {
      throw RuntimeError("\(path): \(String(cString: message))")
    }
    let swapped = upright && orientation >= 5
    return (Int(swapped ? height : width), Int(swapped ? width : height), Int(orientation))
  }

  /// The image turned upright for an [EXIF orientation](https://www.exif.org/Exif2-2.PDF) tag
  /// (1: as stored, 2: mirrored, 3: rotated 180, 4: flipped vertically, 5: transposed, 6: stored
  /// rotated 90 counter-clockwise, so turned 90 clockwise, 7: transversed, 8: turned 90
  /// counter-clockwise), matching Pillow's `ImageOps.exif_transpose`. Other values return `self`.
  public func oriented(exif orientation: Int) -> Image {
    guard (2...8).contains(orientation) else { return self }
    let swapped = orientation >= 5
    let outWidth = swapped ? height : width, outHeight = swapped ? width : height
    var out = [UInt8](repeating: 0, count: pixels.count)
    let w = width, h = height
    for y in 0..<outHeight {
      for x in 0..<outWidth {
        let (sx, sy): (Int, Int)
        switch orientation {
        case 2: (sx, sy) = (w - 1 - x, y)
        case 3: (sx, sy) = (w - 1 - x, h - 1 - y)
        case 4: (sx, sy) = (x, h - 1 - y)
        case 5: (sx, sy) = (y, x)
        case 6: (sx, sy) = (y, h - 1 - x)
        case 7: (sx, sy) = (w - 1 - y, h - 1 - x)
        default: (sx, sy) = (w - 1 - y, x)
        }
        let from = (sy * w + sx) * 3, to = (y * outWidth + x) * 3
        out[to] = pixels[from]
        out[to + 1] = pixels[from + 1]
        out[to + 2] = pixels[from + 2]
      }
    }
    return Image(width: outWidth, height: outHeight, pixels: out)
  }

  /// Bilinear resize (half-pixel centres, as PyTorch's interpolate with align_corners=False).
  public func resized(width newWidth: Int, height newHeight: Int) -> Image {
    if newWidth == width && newHeight == height { return self }
    var out = [UInt8](repeating: 0, count: newWidth * newHeight * 3)
    let scaleX = Float(width) / Float(newWidth), scaleY = Float(height) / Float(newHeight)
    for y in 0..<newHeight {
      let sy = max(0, (Float(y) + 0.5) * scaleY - 0.5)
      let y0 = min(Int(sy), height - 1), y1 = min(y0 + 1, height - 1)
      let fy = sy - Float(y0)
      for x in 0..<newWidth {
        let sx = max(0, (Float(x) + 0.5) * scaleX - 0.5)
        let x0 = min(Int(sx), width - 1), x1 = min(x0 + 1, width - 1)
        let fx = sx - Float(x0)
        for c in 0..<3 {
          let top = Float(pixels[(y0 * width + x0) * 3 + c]) * (1 - fx) + Float(pixels[(y0 * width + x1) * 3 + c]) * fx
          let bottom = Float(pixels[(y1 * width + x0) * 3 + c]) * (1 - fx) + Float(pixels[(y1 * width + x1) * 3 + c]) * fx
          out[(y * newWidth + x) * 3 + c] = UInt8(max(0, min(255, (top * (1 - fy) + bottom * fy).rounded())))
        }
      }
    }
    return Image(width: newWidth, height: newHeight, pixels: out)
  }

  /// A [1, 3, height, width] float tensor: pixels scaled to [0, 1], then (x - mean) / std per channel.
  public func tensor(mean: [Float] = [0, 0, 0], std: [Float] = [1, 1, 1]) -> Tensor {
    let plane = width * height
    var values = [Float](repeating: 0, count: 3 * plane)
    for index in 0..<plane {
      for c in 0..<3 { values[c * plane + index] = (Float(pixels[index * 3 + c]) / 255 - mean[c]) / std[c] }
    }
    return Tensor(shape: [1, 3, height, width], floats: values)
  }
}
