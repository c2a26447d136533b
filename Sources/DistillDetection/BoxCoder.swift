import Foundation

/// Decodes (and encodes) anchor-relative box deltas (dx, dy, dw, dh).
public struct BoxCoder: Equatable, Sendable {
  public enum Style: String, Sendable, CaseIterable {
    /// torchvision `det_utils.BoxCoder(weights, bbox_xform_clip)`: deltas are divided by `weights`,
    /// dw and dh clamped from above at `clip` (default log(1000 / 16)).
    case torchvision
    /// mmdet `DeltaXYWHBBoxCoder(target_means, target_stds)`: deltas are `delta * std + mean`, dw and
    /// dh clamped to [-clip, clip] with clip = |log(wh_ratio_clip)| (default wh_ratio_clip 16 / 1000).
    case mmdet
  }

  public var style: Style
  /// torchvision: (wx, wy, ww, wh), default (1, 1, 1, 1) (RetinaNet; Faster R-CNN's ROI heads use
  /// (10, 10, 5, 5), SSD (10, 10, 5, 5)).
  public var weights: [Float]
  /// mmdet: target means, default (0, 0, 0, 0).
  public var means: [Float]
  /// mmdet: target stds, default (1, 1, 1, 1) (RetinaNet) or (0.1, 0.1, 0.2, 0.2) (Faster R-CNN).
  public var stds: [Float]
  /// The bound on dw and dh before exp.
  public var clip: Float

  public static let torchvisionDefaultClip = Float(log(1000.0 / 16.0))

  public init(
    style: Style = .torchvision, weights: [Float] = [1, 1, 1, 1], means: [Float] = [0, 0, 0, 0],
    stds: [Float] = [1, 1, 1, 1], clip: Float? = nil
  ) {
    self.style = style
    self.weights = weights
    self.means = means
    self.stds = stds
    self.clip = clip ?? BoxCoder.torchvisionDefaultClip
  }

  /// The box that `deltas` (dx, dy, dw, dh) encode relative to `anchor`.
  @inlinable
  public func decode(_ d0: Float, _ d1: Float, _ d2: Float, _ d3: Float, anchor: Box) -> Box {
    let width = anchor.x2 - anchor.x1
    let height = anchor.y2 - anchor.y1
    var dx: Float
    var dy: Float
    var dw: Float
    var dh: Float
    switch style {
    case .torchvision:
      dx = d0 / weights[0]
      dy = d1 / weights[1]
      dw = min(d2 / weights[2], clip)
      dh = min(d3 / weights[3], clip)
      let cx = anchor.x1 + 0.5 * width
      let cy = anchor.y1 + 0.5 * height
      let pcx = dx * width + cx
      let pcy = dy * height + cy
      let halfW = 0.5 * (exp(dw) * width)
      let halfH = 0.5 * (exp(dh) * height)
      return Box(x1: pcx - halfW, y1: pcy - halfH, x2: pcx + halfW, y2: pcy + halfH)
    case .mmdet:
      dx = d0 * stds[0] + means[0]
      dy = d1 * stds[1] + means[1]
      dw = min(max(d2 * stds[2] + means[2], -clip), clip)
      dh = min(max(d3 * stds[3] + means[3], -clip), clip)
      let cx = (anchor.x1 + anchor.x2) * 0.5
      let cy = (anchor.y1 + anchor.y2) * 0.5
      let gw = width * exp(dw)
      let gh = height * exp(dh)
      let gx = cx + width * dx
      let gy = cy + height * dy
      return Box(x1: gx - gw * 0.5, y1: gy - gh * 0.5, x2: gx + gw * 0.5, y2: gy + gh * 0.5)
    }
  }

  /// The deltas that decode to `box` relative to `anchor` (the regression target).
  public func encode(_ box: Box, anchor: Box) -> [Float] {
    let aw = anchor.width
    let ah = anchor.height
    let gw = box.width
    let gh = box.height
    let dx = (box.centerX - anchor.centerX) / aw
    let dy = (box.centerY - anchor.centerY) / ah
    let dw = log(gw / aw)
    let dh = log(gh / ah)
    switch style {
    case .torchvision: return [dx * weights[0], dy * weights[1], dw * weights[2], dh * weights[3]]
    case .mmdet:
      return [
        (dx - means[0]) / stds[0], (dy - means[1]) / stds[1], (dw - means[2]) / stds[2], (dh - means[3]) / stds[3],
      ]
    }
  }
}
