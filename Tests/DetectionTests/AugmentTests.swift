import DistillCore
import DistillDetection
import XCTest

/// A black image with a white filled rectangle covering pixels `[x1, x2) x [y1, y2)`.
func rectangleSample(width: Int, height: Int, box: [Int]) -> DetectionSample {
  var pixels = [UInt8](repeating: 0, count: width * height * 3)
  for y in box[1]..<box[3] {
    for x in box[0]..<box[2] { for c in 0..<3 { pixels[(y * width + x) * 3 + c] = 255 } }
  }
  return DetectionSample(
    image: Image(width: width, height: height, pixels: pixels), boxes: [box.map(Float.init)], labels: [1], crowd: [false],
    source: "rectangle")
}

final class AugmentTests: XCTestCase {
  func testStretchWithoutRandomnessIsWhatDistillRunFeeds() {
    let sample = rectangleSample(width: 37, height: 23, box: [5, 4, 20, 17])
    var pixels = sample.image.pixels
    for i in pixels.indices { pixels[i] = UInt8((i * 37 + i / 3) % 256) }
    let image = Image(width: 37, height: 23, pixels: pixels)
    let mean: [Float] = [0.485, 0.456, 0.406], std: [Float] = [0.229, 0.224, 0.225]
    let augmenter = Augmenter(AugmentOptions(width: 16, height: 12, fit: .stretch, mean: mean, std: std))
    var random = SplitMix64(seed: 1)
    let out = augmenter(DetectionSample(image: image, boxes: [], labels: [], crowd: [], source: "x"), random: &random)
    let expected = image.resized(width: 16, height: 12).tensor(mean: mean, std: std)
    XCTAssertEqual(out.image.shape, [3, 12, 16])
    let worst = zip(out.image.floats, expected.floats).map { abs($0 - $1) }.max()!
    XCTAssertLessThan(worst, 1e-5)
  }

  /// The bounds of the pixels brighter than half the brightest, as a continuous box.
  func brightBounds(_ tensor: Tensor, mean: Float, std: Float) -> [Float]? {
    let h = tensor.shape[1], w = tensor.shape[2]
    let values = tensor.floats[0..<(h * w)].map { $0 * std + mean }
    guard let peak = values.max(), peak > 0.2 else { return nil }
    var box: [Int]? = nil
    for y in 0..<h {
      for x in 0..<w where values[y * w + x] > peak / 2 {
        box = box.map { [min($0[0], x), min($0[1], y), max($0[2], x + 1), max($0[3], y + 1)] } ?? [x, y, x + 1, y + 1]
      }
    }
    return box?.map(Float.init)
  }

  func testBoxesMoveWithThePixelsUnderEveryRandomTransform() {
    let sample = rectangleSample(width: 53, height: 37, box: [9, 6, 31, 22])
    let options = AugmentOptions(
      width: 48, height: 40, fit: .letterbox, padValue: 0, flipProbability: 0.5, scaleJitter: 0.5...1.6,
      brightness: 0.3, saturation: 0.5, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25])
    let augmenter = Augmenter(options)
    var flips = 0, cropped = 0
    for seed in 0..<60 {
      var random = SplitMix64(seed: UInt64(seed))
      let out = augmenter(sample, random: &random)
      if out.transform.flipped { flips += 1 }
      let seen = brightBounds(out.image, mean: 0.5, std: 0.25)
      guard let box = out.boxes.first else {
        XCTAssertNil(seen, "seed \(seed): the box was dropped but the rectangle is visible")
        cropped += 1
        continue
      }
      guard let seen else { return XCTFail("seed \(seed): box \(box) but no rectangle visible") }
      for k in 0..<4 { XCTAssertEqual(box[k], seen[k], accuracy: 1, "seed \(seed): box \(box), pixels \(seen)") }
      XCTAssertEqual(out.labels, [1])
    }
    XCTAssertGreaterThan(flips, 10)
    XCTAssertLessThan(flips, 50)
    _ = cropped
  }

  func testFlippingTwiceIsTheIdentity() {
    let sample = rectangleSample(width: 20, height: 10, box: [2, 3, 7, 9])
    var random = SplitMix64(seed: 3)
    let plain = Augmenter(AugmentOptions(width: 20, height: 10, fit: .stretch))(sample, random: &random)
    random = SplitMix64(seed: 3)
    let flipped = Augmenter(AugmentOptions(width: 20, height: 10, fit: .stretch, flipProbability: 1))(sample, random: &random)
    XCTAssertTrue(flipped.transform.flipped)
    XCTAssertEqual(flipped.boxes, [[13, 3, 18, 9]])
    var mirrored = flipped.image.floats
    for c in 0..<3 {
      for y in 0..<10 { for x in 0..<20 { mirrored[(c * 10 + y) * 20 + x] = flipped.image.floats[(c * 10 + y) * 20 + 19 - x] } }
    }
    XCTAssertEqual(mirrored, plain.image.floats)
    XCTAssertEqual(flipped.transform.apply(flipped.transform.apply([2, 3, 7, 9])), [2, 3, 7, 9])
    XCTAssertEqual(flipped.transform.toOriginal(flipped.boxes[0]), [2, 3, 7, 9])
  }

  func testLetterboxPadsKeepsAspectAndMapsBack() {
    let sample = rectangleSample(width: 100, height: 40, box: [10, 5, 60, 30])
    var random = SplitMix64(seed: 0)
    let out = Augmenter(AugmentOptions(width: 50, height: 50, padValue: 114))(sample, random: &random)
    let t = out.transform
    XCTAssertEqual([t.scaleX, t.scaleY], [0.5, 0.5])
    XCTAssertEqual([t.offsetX, t.offsetY], [0, 15], "20 rows of content centred in 50")
    XCTAssertEqual(out.boxes, [[5, 17.5, 30, 30]])
    XCTAssertEqual(out.image.floats[0], 114 / 255, accuracy: 1e-6, "top rows are padding")
    XCTAssertEqual(out.image.floats[49 * 50], 114 / 255, accuracy: 1e-6, "bottom rows are padding")
    XCTAssertEqual(out.image.floats[15 * 50], 0, "first content row is the black image")
    for box: [Float] in [[10, 5, 60, 30], [0, 0, 100, 40], [33.3, 1.7, 34.9, 38.2]] {
      let back = t.toOriginal(t.apply(box))
      for k in 0..<4 { XCTAssertEqual(back[k], box[k], accuracy: 1e-4) }
    }
    var jitterRandom = SplitMix64(seed: 11)
    let jittered = Augmenter(AugmentOptions(width: 50, height: 50, flipProbability: 0.5, scaleJitter: 0.7...1.3))(sample, random: &jitterRandom)
    let back = jittered.transform.toOriginal(jittered.transform.apply([10, 5, 60, 30]))
    for (k, v) in [Float(10), 5, 60, 30].enumerated() { XCTAssertEqual(back[k], v, accuracy: 1e-4) }
  }

  func testOneSeedOneResult() {
    let sample = rectangleSample(width: 30, height: 20, box: [3, 3, 12, 15])
    let augmenter = Augmenter(AugmentOptions(width: 24, height: 24, flipProbability: 0.5, scaleJitter: 0.5...1.5, brightness: 0.4, contrast: 0.4, saturation: 0.4))
    var a = SplitMix64(seed: 5), b = SplitMix64(seed: 5), c = SplitMix64(seed: 6)
    let first = augmenter(sample, random: &a), second = augmenter(sample, random: &b), other = augmenter(sample, random: &c)
    XCTAssertEqual(first.image.floats, second.image.floats)
    XCTAssertEqual(first.boxes, second.boxes)
    XCTAssertEqual(a, b)
    XCTAssertNotEqual(first.image.floats, other.image.floats)
  }
}
