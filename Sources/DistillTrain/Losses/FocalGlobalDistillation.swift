import DistillCore
import Foundation

/// `fgd` (Focal and Global Distillation, Yang et al. 2022) on each FPN level pair, teacher maps F_T
/// and (adapted) student maps F_S of shape [N, C, H, W], temperature T:
/// - attention: `A_S(F) = H W softmax_hw(mean_c |F| / T)`, `A_C(F) = C softmax_c(mean_hw |F| / T)`;
/// - masks from the objects' boxes (see `masks`): `M_fg` (1 / box area on the level's grid, the
///   smallest box winning), `M_bg = 1[M_fg = 0] / sum 1[M_fg = 0]` per image;
/// - `L_fg = sum M_fg A_S(F_T) A_C(F_T) (F_S - F_T)^2 / N`, `L_bg` the same with `M_bg`;
/// - `L_at = (sum |A_C(F_S) - A_C(F_T)| + sum |A_S(F_S) - A_S(F_T)|) / N`;
/// - `L_global = sum (Gc_S(F_S) - Gc_T(F_T))^2 / N` with two trainable GcBlocks (one per model),
///   `Gc(F) = F + Conv1x1(ReLU(LayerNorm(Conv1x1(sum_hw softmax_hw(W_k F) F))))`, hidden width
///   C / 2, LayerNorm over the C / 2 channels (epsilon 1e-5); initialised as the reference:
///   `W_k` Kaiming normal (fan in, gain sqrt 2) with a zero bias, the first Conv1x1 PyTorch's
///   default, LayerNorm scale 1 and bias 0, the last Conv1x1 zero. Their weights are loss-graph
///   parameters named `<loss scope>/<pair>/gc_student/...` and `.../gc_teacher/...`, trained with
///   the student like adapters; their initial values are drawn from a generator seeded by the name.
///
/// N is the batch size, as in the reference implementation (yzd-v/FGD). Terms per level:
/// `TAP/fg` (alpha L_fg), `TAP/bg` (beta L_bg), `TAP/attention` (gamma L_at) and `TAP/global`
/// (lambda L_global), so a user tuning alpha, beta, gamma, lambda sees each part's size (the four
/// differ by orders of magnitude); they add up to the level's loss. Defaults (METHODS.md):
/// T = 0.5, alpha = 1e-3, beta = 5e-4, gamma = 1e-3, lambda = 5e-6.
final class FocalGlobalDistillation: DistillationMethod {
  var temperature: Float
  var alpha: Float
  var beta: Float
  var gamma: Float
  var lambda: Float
  /// The mask inputs declared by `build`, one entry per pair: names and the level's [N, 1, H, W].
  private(set) var levels: [(foreground: String, background: String, shape: [Int])] = []

  init(temperature: Float = 0.5, alpha: Float = 1e-3, beta: Float = 5e-4, gamma: Float = 1e-3, lambda: Float = 5e-6) {
    self.temperature = temperature
    self.alpha = alpha
    self.beta = beta
    self.gamma = gamma
    self.lambda = lambda
  }

  var needsObjects: Bool { true }

  func build(_ builder: inout GraphBuilder, pairs: [TapPair]) throws -> [(name: String, value: String)] {
    var terms: [(name: String, value: String)] = []
    for (index, pair) in pairs.enumerated() {
      guard pair.shape.count == 4, pair.shape[1] >= 2 else {
        throw TrainingError.invalidConfig("fgd: '\(pair.teacherTap)' must be a feature map [N, C, H, W] with C >= 2, got \(pair.shape)")
      }
      let (batch, channels, height, width) = (pair.shape[0], pair.shape[1], pair.shape[2], pair.shape[3])
      let prefix = "\(builder.scope)/\(index)"
      let maskShape = [batch, 1, height, width]
      let foreground = builder.input(prefix + "/mask_fg", shape: maskShape)
      let background = builder.input(prefix + "/mask_bg", shape: maskShape)
      levels.append((foreground, background, maskShape))

      let teacher = attention(&builder, pair.teacher, shape: pair.shape)
      let student = attention(&builder, pair.student, shape: pair.shape)
      let difference = builder.sub(pair.student, pair.teacher)
      let weighted = builder.mul(builder.mul(builder.mul(difference, difference), teacher.spatial), teacher.channel)
      let perImage = 1 / Float(batch)
      let fg = builder.mul(builder.reduceSum(builder.mul(weighted, foreground)), builder.scalar(alpha * perImage))
      let bg = builder.mul(builder.reduceSum(builder.mul(weighted, background)), builder.scalar(beta * perImage))
      let channelGap = builder.reduceSum(builder.unary("Abs", builder.sub(student.channel, teacher.channel)))
      let spatialGap = builder.reduceSum(builder.unary("Abs", builder.sub(student.spatial, teacher.spatial)))
      let at = builder.mul(builder.plus(channelGap, spatialGap), builder.scalar(gamma * perImage))
      let globalStudent = gcBlock(&builder, pair.student, channels: channels, positions: height * width, name: prefix + "/gc_student")
      let globalTeacher = gcBlock(&builder, pair.teacher, channels: channels, positions: height * width, name: prefix + "/gc_teacher")
      let globalDifference = builder.sub(globalStudent, globalTeacher)
      let global = builder.mul(builder.reduceSum(builder.mul(globalDifference, globalDifference)), builder.scalar(lambda * perImage))
      terms += [(pair.studentTap + "/fg", fg), (pair.studentTap + "/bg", bg), (pair.studentTap + "/attention", at), (pair.studentTap + "/global", global)]
    }
    return terms
  }

  func stepFeeds(_ context: StepContext) throws -> [String: Tensor] {
    var feeds: [String: Tensor] = [:]
    for level in levels {
      let (batch, height, width) = (level.shape[0], level.shape[2], level.shape[3])
      guard context.objects.count == batch else {
        throw TrainingError.invalidConfig("fgd: \(context.objects.count) images' objects for a batch of \(batch)")
      }
      var foreground: [Float] = [], background: [Float] = []
      for image in context.objects {
        let masks = Self.masks(boxes: image.boxes, height: height, width: width, inputSize: context.inputSize)
        foreground += masks.foreground
        background += masks.background
      }
      feeds[level.foreground] = Tensor(shape: level.shape, floats: foreground)
      feeds[level.background] = Tensor(shape: level.shape, floats: background)
    }
    return feeds
  }

  /// One image's masks on a `height` x `width` level of a network input of `inputSize` pixels, row
  /// major. A box (x1, y1, x2, y2 in input pixels) maps to the grid by `x * width / input width`,
  /// `y * height / input height` and covers rows `floor(y1') ... ceil(y2')` and columns
  /// `floor(x1') ... ceil(x2')`, both ends included (the reference's cells), clipped to the map;
  /// its value is `1 / (rows * columns)` counted before clipping, and a cell keeps the largest value
  /// of the boxes covering it. Boxes with no positive width or height, or not finite, are skipped.
  /// The background is `1` where no box covers a cell, divided by the number of such cells (all
  /// zero when boxes cover the whole map). Unlike the reference code, whose mask indexes rows with
  /// x and columns with y (the same only for square maps and boxes), rows here are y.
  static func masks(boxes: [[Float]], height: Int, width: Int, inputSize: (height: Int, width: Int)) -> (foreground: [Float], background: [Float]) {
    var foreground = [Float](repeating: 0, count: height * width)
    let scaleX = Double(width) / Double(inputSize.width), scaleY = Double(height) / Double(inputSize.height)
    for box in boxes where box.count == 4 && box.allSatisfy(\.isFinite) && box[2] > box[0] && box[3] > box[1] {
      func cell(_ value: Float, _ scale: Double, _ rule: FloatingPointRoundingRule) -> Int { Int(min(max(Double(value) * scale, -1e9), 1e9).rounded(rule)) }
      let left = cell(box[0], scaleX, .down), right = cell(box[2], scaleX, .up)
      let top = cell(box[1], scaleY, .down), bottom = cell(box[3], scaleY, .up)
      let value = Float(1 / (Double(bottom + 1 - top) * Double(right + 1 - left)))
      let (firstRow, lastRow) = (max(top, 0), min(bottom, height - 1))
      let (firstColumn, lastColumn) = (max(left, 0), min(right, width - 1))
      guard firstRow <= lastRow, firstColumn <= lastColumn else { continue }
      for row in firstRow...lastRow {
        for column in firstColumn...lastColumn { foreground[row * width + column] = max(foreground[row * width + column], value) }
      }
    }
    let free = foreground.filter { $0 == 0 }.count
    let background = foreground.map { $0 == 0 ? 1 / Float(free) : 0 }
    return (foreground, background)
  }

  /// Spatial [N, 1, H, W] and channel [N, C, 1, 1] attention of a map.
  private func attention(_ builder: inout GraphBuilder, _ x: String, shape: [Int]) -> (spatial: String, channel: String) {
    let (channels, height, width) = (shape[1], shape[2], shape[3])
    let magnitude = builder.unary("Abs", x)
    let spatialMean = builder.scaled(builder.mean(magnitude, axes: [1], keepDims: true), by: temperature)
    let spatialSoftmax = builder.add("Softmax", [builder.reshape(spatialMean, [0, 1, height * width])], [.int("axis", 2)])
    let spatial = builder.reshape(builder.mul(spatialSoftmax, builder.scalar(Float(height * width))), [0, 1, height, width])
    let channelMean = builder.scaled(builder.mean(magnitude, axes: [2, 3], keepDims: true), by: temperature)
    let channel = builder.mul(builder.add("Softmax", [channelMean], [.int("axis", 1)]), builder.scalar(Float(channels)))
    return (spatial, channel)
  }

  /// A GcBlock on `x` [N, C, H, W] with its own parameters named under `name`.
  private func gcBlock(_ builder: inout GraphBuilder, _ x: String, channels: Int, positions: Int, name: String) -> String {
    var random = SplitMix64(seed: Self.seed(name))
    let hidden = channels / 2
    func tensor(_ shape: [Int], _ value: () -> Float) -> Tensor { Tensor(shape: shape, floats: (0..<shape.reduce(1, *)).map { _ in value() }) }
    let contextStd = (2 / Float(channels)).squareRoot(), bound = 1 / Float(channels).squareRoot()
    let contextWeight = builder.parameter(tensor([1, channels, 1, 1]) { random.nextNormal() * contextStd }, name: name + "/context/weight")
    let contextBias = builder.parameter(tensor([1]) { 0 }, name: name + "/context/bias")
    let squeezeWeight = builder.parameter(tensor([hidden, channels, 1, 1]) { (random.nextUniform() * 2 - 1) * bound }, name: name + "/squeeze/weight")
    let squeezeBias = builder.parameter(tensor([hidden]) { (random.nextUniform() * 2 - 1) * bound }, name: name + "/squeeze/bias")
    let normScale = builder.parameter(tensor([hidden, 1, 1]) { 1 }, name: name + "/norm/scale")
    let normBias = builder.parameter(tensor([hidden, 1, 1]) { 0 }, name: name + "/norm/bias")
    let expandWeight = builder.parameter(tensor([channels, hidden, 1, 1]) { 0 }, name: name + "/expand/weight")
    let expandBias = builder.parameter(tensor([channels]) { 0 }, name: name + "/expand/bias")

    let pointwise = [Attribute.ints("kernel_shape", [1, 1])]
    let logits = builder.add("Conv", [x, contextWeight, contextBias], pointwise, hint: "gc_context")
    let weights = builder.add("Softmax", [builder.reshape(logits, [0, 1, positions])], [.int("axis", 2)])
    let pooled = builder.reduceSum(builder.mul(builder.reshape(x, [0, channels, positions]), weights), axes: [2], keepDims: true)
    let context = builder.reshape(pooled, [0, channels, 1, 1])
    let squeezed = builder.add("Conv", [context, squeezeWeight, squeezeBias], pointwise, hint: "gc_squeeze")
    let normalised = builder.add(
      "LayerNormalization", [squeezed, normScale, normBias], [.int("axis", 1), .float("epsilon", 1e-5)], outputs: 3, hint: "gc_norm")[0]
    let expanded = builder.add("Conv", [builder.unary("Relu", normalised), expandWeight, expandBias], pointwise, hint: "gc_expand")
    return builder.plus(x, expanded)
  }

  /// FNV-1a of `text`: a fixed seed per parameter name.
  static func seed(_ text: String) -> UInt64 {
    text.utf8.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
  }
}
