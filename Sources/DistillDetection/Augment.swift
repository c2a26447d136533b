import DistillCore

/// How `Augmenter` turns a sample into a fixed-size network input. The defaults are evaluation's:
/// letterbox to the size, no randomness.
public struct AugmentOptions: Sendable, Equatable {
  /// How the image is fitted to `width` x `height` before scale jitter.
  public enum Fit: Sendable, Equatable {
    /// Scaled to exactly the size (aspect ratio not kept), as `distill run --size` does.
    case stretch
    /// Scaled by one factor to fit inside the size, keeping the aspect ratio; the rest is padding.
    case letterbox
  }

  public var width: Int
  public var height: Int
  public var fit: Fit
  /// The 0-255 value (all three channels) of the pixels no image pixel covers.
  public var padValue: UInt8
  /// Probability of mirroring the output left-right.
  public var flipProbability: Float
  /// The fitted image is scaled again by a factor drawn uniformly from this range and placed at a
  /// random position (cropped where it is larger than the output, padded where smaller). `1...1`
  /// (the default) scales nothing and centres the image.
  public var scaleJitter: ClosedRange<Float>
  /// Brightness, contrast and saturation factors are drawn uniformly from `1 - x ... 1 + x`
  /// (torchvision's `ColorJitter` definitions, applied in that order to the image pixels only).
  public var brightness: Float
  public var contrast: Float
  public var saturation: Float
  /// Per channel, pixels scaled to [0, 1] become `(x - mean) / std`.
  public var mean: [Float]
  public var std: [Float]

  public init(
    width: Int, height: Int, fit: Fit = .letterbox, padValue: UInt8 = 114, flipProbability: Float = 0,
    scaleJitter: ClosedRange<Float> = 1...1, brightness: Float = 0, contrast: Float = 0, saturation: Float = 0,
    mean: [Float] = [0, 0, 0], std: [Float] = [1, 1, 1]
  ) {
    precondition(width > 0 && height > 0 && scaleJitter.lowerBound > 0 && mean.count == 3 && std.count == 3)
    self.width = width
    self.height = height
    self.fit = fit
    self.padValue = padValue
    self.flipProbability = flipProbability
    self.scaleJitter = scaleJitter
    self.brightness = brightness
    self.contrast = contrast
    self.saturation = saturation
    self.mean = mean
    self.std = std
  }
}

/// The geometric map from an original image to the network input: `x' = x * scaleX + offsetX`
/// (then `x'' = width - x'` when `flipped`), `y' = y * scaleY + offsetY`, in continuous pixel
/// coordinates (pixel `i` spans `[i, i + 1)`). Boxes and pixels move by the same map.
public struct BoxTransform: Sendable, Equatable {
  public var scaleX: Float
  public var scaleY: Float
  /// Where the original's top-left corner lands (negative when cropped).
  public var offsetX: Float
  public var offsetY: Float
  public var flipped: Bool
  /// The network input's size.
  public var width: Int
  public var height: Int
  /// The original (upright) image's size.
  public var originalWidth: Int
  public var originalHeight: Int

  /// An original-image box `[x1, y1, x2, y2]` in network-input pixels (not clipped).
  public func apply(_ box: [Float]) -> [Float] {
    var x1 = box[0] * scaleX + offsetX, x2 = box[2] * scaleX + offsetX
    if flipped { (x1, x2) = (Float(width) - x2, Float(width) - x1) }
    return [x1, box[1] * scaleY + offsetY, x2, box[3] * scaleY + offsetY]
  }

  /// A network-input box (a prediction) in original-image pixels, clipped to the original image.
  public func toOriginal(_ box: [Float]) -> [Float] {
    var x1 = box[0], x2 = box[2]
    if flipped { (x1, x2) = (Float(width) - x2, Float(width) - x1) }
    let w = Float(originalWidth), h = Float(originalHeight)
    return [
      min(max((x1 - offsetX) / scaleX, 0), w), min(max((box[1] - offsetY) / scaleY, 0), h),
      min(max((x2 - offsetX) / scaleX, 0), w), min(max((box[3] - offsetY) / scaleY, 0), h),
    ]
  }
}

/// A network-ready sample.
public struct AugmentedSample: Sendable {
  /// `[3, height, width]`, normalised with the options' mean and std.
  public var image: Tensor
  /// `[x1, y1, x2, y2]` in network-input pixels, clipped to it; boxes left under 1 pixel wide or
  /// high (cropped away by scale jitter) are dropped with their labels.
  public var boxes: [[Float]]
  public var labels: [Int]
  public var crowd: [Bool]
  /// Maps predictions back to the original image (`toOriginal`).
  public var transform: BoxTransform
  public var source: String
}

/// Resizes or letterboxes, scale-jitters, flips and colour-jitters a sample, moving its boxes with
/// its pixels. Every random choice comes from the generator passed in, drawn in a fixed order and
/// number (scale, x and y position, flip, brightness, contrast, saturation: 7 draws) whether or not
/// an option is enabled, so one seed gives one result.
public struct Augmenter: Sendable {
  public var options: AugmentOptions

  public init(_ options: AugmentOptions) { self.options = options }

  public func callAsFunction(_ sample: DetectionSample, random: inout SplitMix64) -> AugmentedSample {
    let o = options
    let image = sample.image
    let jitter = random.nextUniform(in: o.scaleJitter)
    let placeX = random.nextUniform(), placeY = random.nextUniform()
    let flip = random.nextUniform() < o.flipProbability
    let brightness = random.nextUniform(in: (1 - o.brightness)...(1 + o.brightness))
    let contrast = random.nextUniform(in: (1 - o.contrast)...(1 + o.contrast))
    let saturation = random.nextUniform(in: (1 - o.saturation)...(1 + o.saturation))

    var fitX = Float(o.width) / Float(image.width), fitY = Float(o.height) / Float(image.height)
    if o.fit == .letterbox { (fitX, fitY) = (min(fitX, fitY), min(fitX, fitY)) }
    let contentWidth = max(1, Int((Float(image.width) * fitX * jitter).rounded()))
    let contentHeight = max(1, Int((Float(image.height) * fitY * jitter).rounded()))
    let jittered = o.scaleJitter != 1...1
    func place(_ content: Int, _ size: Int, _ draw: Float) -> Int {
      if !jittered { return (size - content) / 2 }
      let low = min(0, size - content), high = max(0, size - content)
      return min(high, low + Int(draw * Float(high - low + 1)))
    }
    let offsetX = place(contentWidth, o.width, placeX), offsetY = place(contentHeight, o.height, placeY)
    let transform = BoxTransform(
      scaleX: Float(contentWidth) / Float(image.width), scaleY: Float(contentHeight) / Float(image.height),
      offsetX: Float(offsetX), offsetY: Float(offsetY), flipped: flip, width: o.width, height: o.height,
      originalWidth: image.width, originalHeight: image.height)

    var planes = warp(image, content: (contentWidth, contentHeight), offset: (offsetX, offsetY), flip: flip)
    let content = (x: max(0, offsetX)..<min(o.width, offsetX + contentWidth), y: max(0, offsetY)..<min(o.height, offsetY + contentHeight))
    if o.brightness != 0 || o.contrast != 0 || o.saturation != 0 {
      jitterColour(&planes, content: content, flip: flip, brightness: brightness, contrast: contrast, saturation: saturation)
    }
    let plane = o.width * o.height
    for c in 0..<3 {
      let scale = 1 / (255 * o.std[c]), shift = o.mean[c] / o.std[c]
      for i in 0..<plane { planes[c * plane + i] = planes[c * plane + i] * scale - shift }
    }

    var boxes: [[Float]] = [], labels: [Int] = [], crowd: [Bool] = []
    for (index, box) in sample.boxes.enumerated() {
      guard let (clipped, _) = clipBox(transform.apply(box), width: o.width, height: o.height) else { continue }
      boxes.append(clipped)
      labels.append(sample.labels[index])
      crowd.append(sample.crowd[index])
    }
    return AugmentedSample(
      image: Tensor(shape: [3, o.height, o.width], floats: planes), boxes: boxes, labels: labels, crowd: crowd,
      transform: transform, source: sample.source)
  }

  /// Planar 0-255 values of the output: the image bilinearly resized to `content` (half-pixel
  /// centres, rounded to integers, as `Image.resized`) with its top-left at `offset`, `padValue`
  /// elsewhere, mirrored when `flip`.
  func warp(_ image: Image, content: (width: Int, height: Int), offset: (x: Int, y: Int), flip: Bool) -> [Float] {
    let w = options.width, h = options.height, plane = w * h
    var out = [Float](repeating: Float(options.padValue), count: 3 * plane)
    let inverseX = Float(image.width) / Float(content.width), inverseY = Float(image.height) / Float(content.height)
    let columns = max(0, offset.x)..<min(w, offset.x + content.width)
    let rows = max(0, offset.y)..<min(h, offset.y + content.height)
    guard !columns.isEmpty, !rows.isEmpty else { return out }
    let taps = columns.map { x -> (Int, Int, Float) in
      let source = max(0, (Float(x - offset.x) + 0.5) * inverseX - 0.5)
      let x0 = min(Int(source), image.width - 1)
      return (x0, min(x0 + 1, image.width - 1), source - Float(x0))
    }
    image.pixels.withUnsafeBufferPointer { pixels in
      for y in rows {
        let source = max(0, (Float(y - offset.y) + 0.5) * inverseY - 0.5)
        let y0 = min(Int(source), image.height - 1), y1 = min(y0 + 1, image.height - 1)
        let fy = source - Float(y0)
        for (column, (x0, x1, fx)) in zip(columns, taps) {
          let target = y * w + (flip ? w - 1 - column : column)
          for c in 0..<3 {
            let top = Float(pixels[(y0 * image.width + x0) * 3 + c]) * (1 - fx) + Float(pixels[(y0 * image.width + x1) * 3 + c]) * fx
            let bottom = Float(pixels[(y1 * image.width + x0) * 3 + c]) * (1 - fx) + Float(pixels[(y1 * image.width + x1) * 3 + c]) * fx
            out[c * plane + target] = max(0, min(255, (top * (1 - fy) + bottom * fy).rounded()))
          }
        }
      }
    }
    return out
  }

  /// torchvision's colour jitter on the image pixels (`content`, before any flip): brightness
  /// scales, contrast blends with the mean grey level, saturation with each pixel's grey level
  /// (0.299 R + 0.587 G + 0.114 B); values clamped to 0-255 after each step.
  func jitterColour(
    _ planes: inout [Float], content: (x: Range<Int>, y: Range<Int>), flip: Bool, brightness: Float, contrast: Float,
    saturation: Float
  ) {
    let w = options.width, plane = w * options.height
    let xs = flip ? (w - content.x.upperBound)..<(w - content.x.lowerBound) : content.x
    func clamp(_ v: Float) -> Float { max(0, min(255, v)) }
    func grey(_ i: Int) -> Float { 0.299 * planes[i] + 0.587 * planes[plane + i] + 0.114 * planes[2 * plane + i] }
    var sum: Double = 0
    for y in content.y {
      for x in xs {
        for c in 0..<3 { planes[c * plane + y * w + x] = clamp(planes[c * plane + y * w + x] * brightness) }
        sum += Double(grey(y * w + x))
      }
    }
    let meanGrey = Float(sum / Double(max(1, xs.count * content.y.count)))
    for y in content.y {
      for x in xs {
        let i = y * w + x
        for c in 0..<3 { planes[c * plane + i] = clamp(meanGrey + contrast * (planes[c * plane + i] - meanGrey)) }
        let g = grey(i)
        for c in 0..<3 { planes[c * plane + i] = clamp(g + saturation * (planes[c * plane + i] - g)) }
      }
    }
  }
}
