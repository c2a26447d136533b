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

  /// Decodes a PNG or JPEG file. Images over `maxPixels` are refused before decoding.
  public static func load(_ path: String, maxPixels: Int = 1 << 28) throws -> Image {
    var width: Int32 = 0, height: Int32 = 0
    var message = [CChar](repeating: 0, count: 512)
    guard let data = distill_decode_image(path, maxPixels, &width, &height, &message, message.count) else {
      throw RuntimeError("\(path): \(String(cString: message))")
    }
    defer { distill_free_image(data) }
    let count = Int(width) * Int(height) * 3
    return Image(width: Int(width), height: Int(height), pixels: Array(UnsafeBufferPointer(start: data, count: count)))
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
