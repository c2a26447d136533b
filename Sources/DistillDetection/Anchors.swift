import Foundation

/// Anchor boxes of one feature level in the order detection heads lay their channels out:
/// location-major (row y, then column x), then anchor (aspect ratio, then size), as torchvision's
/// `AnchorGenerator.grid_anchors` and mmdet's `AnchorGenerator.grid_priors` both produce.
public struct AnchorGenerator: Equatable, Sendable {
  /// Which framework's arithmetic to reproduce.
  public enum Style: String, Sendable, CaseIterable {
    /// torchvision `AnchorGenerator`: base anchors `round([-w, -h, w, h] / 2)` centred on
    /// `(x * stride, y * stride)`; sizes are absolute pixels.
    case torchvision
    /// mmdet `AnchorGenerator`: base anchors of `base_size * scale` (unrounded) centred on
    /// `center_offset * base_size` plus `(x * stride, y * stride)`.
    case mmdet
  }

  public var style: Style
  /// Aspect ratios (height / width), the outer loop of the anchors at one location.
  public var aspectRatios: [Float]
  /// Anchor sizes in pixels (torchvision: `sizes`; mmdet: `base_size * scales`), the inner loop.
  public var sizes: [Float]
  /// Distance between neighbouring locations in input pixels.
  public var stride: Float
  /// mmdet only: the centre of the base anchor as a fraction of `baseSize` (default 0).
  public var centerOffset: Float
  /// mmdet only: the base size that `centerOffset` refers to (default the stride).
  public var baseSize: Float

  public init(
    style: Style, aspectRatios: [Float], sizes: [Float], stride: Float, centerOffset: Float = 0, baseSize: Float? = nil
  ) {
    self.style = style
    self.aspectRatios = aspectRatios
    self.sizes = sizes
    self.stride = stride
    self.centerOffset = centerOffset
    self.baseSize = baseSize ?? stride
  }

  public var anchorsPerLocation: Int { aspectRatios.count * sizes.count }

  /// The zero-centred anchors of one location (`cell_anchors` in torchvision, `base_anchors` in mmdet).
  public var cellAnchors: [Box] {
    var cells: [Box] = []
    for ratio in aspectRatios {
      let hRatio = ratio.squareRoot()
      let wRatio = 1 / hRatio
      for size in sizes {
        let w = wRatio * size
        let h = hRatio * size
        switch style {
        case .torchvision:
          cells.append(
            Box(
              x1: (-w / 2).rounded(.toNearestOrEven), y1: (-h / 2).rounded(.toNearestOrEven),
              x2: (w / 2).rounded(.toNearestOrEven), y2: (h / 2).rounded(.toNearestOrEven)))
        case .mmdet:
          let c = centerOffset * baseSize
          cells.append(Box(x1: c - 0.5 * w, y1: c - 0.5 * h, x2: c + 0.5 * w, y2: c + 0.5 * h))
        }
      }
    }
    return cells
  }

  /// All anchors of a `height` x `width` feature map, `height * width * anchorsPerLocation` boxes.
  public func anchors(height: Int, width: Int) -> [Box] {
    let cells = cellAnchors
    var result: [Box] = []
    result.reserveCapacity(height * width * cells.count)
    for y in 0..<height {
      let sy = Float(y) * stride
      for x in 0..<width {
        let sx = Float(x) * stride
        for cell in cells {
          result.append(Box(x1: cell.x1 + sx, y1: cell.y1 + sy, x2: cell.x2 + sx, y2: cell.y2 + sy))
        }
      }
    }
    return result
  }

  /// mmdet's octave scales: `octaveBaseScale * 2^(i / scalesPerOctave)` for i in 0..<scalesPerOctave.
  public static func octaveScales(octaveBaseScale: Float, scalesPerOctave: Int) -> [Float] {
    (0..<scalesPerOctave).map { octaveBaseScale * Float(pow(2.0, Double($0) / Double(scalesPerOctave))) }
  }
}

/// The centres of the locations of an anchor-free level: `((x + offset) * stride, (y + offset) * stride)`,
/// row-major. torchvision FCOS uses offset 0 (its unit anchors are centred on `x * stride`);
/// mmdet's `MlvlPointGenerator` defaults to 0.5 in most heads.
public func gridPoints(height: Int, width: Int, stride: Float, offset: Float) -> [(x: Float, y: Float)] {
  var points: [(x: Float, y: Float)] = []
  points.reserveCapacity(height * width)
  for y in 0..<height {
    for x in 0..<width { points.append(((Float(x) + offset) * stride, (Float(y) + offset) * stride)) }
  }
  return points
}
