import Foundation

// Resampling operators: Resize (and its predecessor Upsample), GridSample and RoiAlign.
// Specs: https://onnx.ai/onnx/operators/onnx__Resize.html, onnx__Upsample.html,
// onnx__GridSample.html, onnx__RoiAlign.html.

let resizeOperators: [(String, any Operator.Type)] = [
  ("GridSample", GridSample.self), ("Resize", Resize.self), ("RoiAlign", RoiAlign.self), ("Upsample", Resize.self),
]

/// The input at `index` when it is present and not empty (ONNX marks an unused optional input
/// either by an empty name or by an empty tensor).
private func presentInput(_ inputs: [Tensor?], _ index: Int?) -> Tensor? {
  guard let index, index < inputs.count, let tensor = inputs[index], tensor.count > 0 else { return nil }
  return tensor
}

/// `Parallel.forEachRange` with the range as (start, end).
private func forEachRange(_ total: Int, work: Int, _ body: (Int, Int) -> Void) {
  Parallel.forEachRange(total, work: work) { body($0.lowerBound, $0.upperBound) }
}

/// Keys' cubic convolution kernel with coefficient `a` (https://ieeexplore.ieee.org/document/1163711).
@inline(__always)
private func cubicKernel(_ t: Double, _ a: Double) -> Double {
  let x = abs(t)
  if x <= 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
  if x < 2 { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }
  return 0
}

/// The sampling plan of one resized axis: for each output position `taps` source indices (already
/// clamped into the input, which is the spec's edge padding) and their weights. `outside` (only
/// for tf_crop_and_resize) flags the positions that take the extrapolation value.
private struct ResizeAxisPlan {
  let taps: Int
  let outputLength: Int
  var index: [Int]
  var weight: [Float]
  var outside: [Bool]
}

/// The transpose of a `ResizeAxisPlan`: for each input position, the output positions that read it
/// and their summed weights, `width` slots per input position (the most any has), nonzero entries
/// first, unused slots (0, 0).
private struct ResizeAxisReaders {
  let width: Int
  var source: [Int]
  var weight: [Float]

  init(_ plan: ResizeAxisPlan, inputLength: Int) {
    var readers = [[(Int, Float)]](repeating: [], count: inputLength)
    for position in 0..<plan.outputLength {
      for t in position * plan.taps..<(position + 1) * plan.taps where plan.weight[t] != 0 {
        let i = plan.index[t]
        if let last = readers[i].last, last.0 == position {
          readers[i][readers[i].count - 1].1 += plan.weight[t]
        } else {
          readers[i].append((position, plan.weight[t]))
        }
      }
    }
    // Taps whose weights cancel (exclude_outside edges) leave zeros, which would end a row's list.
    for i in readers.indices { readers[i].removeAll { $0.1 == 0 } }
    width = max(readers.map(\.count).max() ?? 1, 1)
    source = [Int](repeating: 0, count: inputLength * width)
    weight = [Float](repeating: 0, count: inputLength * width)
    for (i, list) in readers.enumerated() {
      for (e, (position, w)) in list.enumerated() {
        source[i * width + e] = position
        weight[i * width + e] = w
      }
    }
  }
}

/// `Resize` (opset 10: `scales` only; 11+: `roi`, `scales`, `sizes`; 18+: `antialias`, `axes`,
/// `keep_aspect_ratio_policy`) and `Upsample` (opset 7: `scales` attribute; 9: `scales` input).
/// Modes nearest, linear (N-linear over every resized axis) and cubic, with every
/// coordinate_transformation_mode of the spec. Resize-10 and Upsample use the asymmetric transform
/// and, for nearest, onnxruntime's legacy rounding (ceil when downsampling, floor otherwise).
/// Scales are used as given for the coordinate transform (`x / scale`), as the reference does;
/// with `sizes` the scale is `output / input`. The output length is `floor(input * scale)` in float (roi does
/// not shrink it, as in onnxruntime and ONNX shape inference). align_corners and tf_crop_and_resize
/// divide by the unrounded output length `input * scale - 1`, as the spec's tests expect
/// (onnxruntime uses the integer length; the two differ only when `input * scale` is fractional).
/// Integer tensors are interpolated in Double and truncated toward zero, as onnxruntime does.
struct Resize: Operator {
  enum Mode { case nearest, linear, cubic }
  enum Transform { case halfPixel, halfPixelSymmetric, pytorchHalfPixel, alignCorners, asymmetric, tfHalfPixelForNN, tfCropAndResize }
  enum Rounding { case roundPreferFloor, roundPreferCeil, floor, ceil, legacy }
  enum AspectPolicy { case stretch, notLarger, notSmaller }

  let mode: Mode
  let transform: Transform
  let rounding: Rounding
  let cubicA: Double
  let excludeOutside: Bool
  let extrapolationValue: Float
  let antialias: Bool
  let axes: [Int]?
  let aspectPolicy: AspectPolicy
  /// Upsample-7 takes its scales as an attribute.
  let attributeScales: [Float]?
  let roiIndex: Int?
  let scalesIndex: Int?
  let sizesIndex: Int?

  init(_ node: Node, _ setup: OperatorSetup) throws {
    let upsample = node.opType == "Upsample"
    let legacy = upsample || setup.opset < 11
    let modeName = (node.stringAttribute("mode") ?? "nearest").lowercased()
    switch modeName {
    case "nearest": mode = .nearest
    case "linear", "bilinear": mode = .linear
    case "cubic" where !legacy: mode = .cubic
    default:
      throw setup.error("attribute mode is '\(modeName)', expected nearest, linear\(legacy ? "" : " or cubic")")
    }
    if legacy {
      transform = .asymmetric
      rounding = .legacy
      cubicA = -0.75
      excludeOutside = false
      extrapolationValue = 0
      antialias = false
      axes = nil
      aspectPolicy = .stretch
      roiIndex = nil
      sizesIndex = nil
      if upsample && setup.opset < 9 {
        guard let scales = node.floatsAttribute("scales") else { throw setup.error("attribute scales is missing") }
        attributeScales = scales
        scalesIndex = nil
      } else {
        attributeScales = nil
        scalesIndex = 1
      }
      return
    }
    let transformName = node.stringAttribute("coordinate_transformation_mode") ?? "half_pixel"
    switch transformName {
    case "half_pixel": transform = .halfPixel
    case "half_pixel_symmetric": transform = .halfPixelSymmetric
    case "pytorch_half_pixel": transform = .pytorchHalfPixel
    case "align_corners": transform = .alignCorners
    case "asymmetric": transform = .asymmetric
    case "tf_half_pixel_for_nn": transform = .tfHalfPixelForNN
    case "tf_crop_and_resize": transform = .tfCropAndResize
    default: throw setup.error("attribute coordinate_transformation_mode is '\(transformName)', which the spec does not define")
    }
    let roundingName = node.stringAttribute("nearest_mode") ?? "round_prefer_floor"
    switch roundingName {
    case "round_prefer_floor": rounding = .roundPreferFloor
    case "round_prefer_ceil": rounding = .roundPreferCeil
    case "floor": rounding = .floor
    case "ceil": rounding = .ceil
    default: throw setup.error("attribute nearest_mode is '\(roundingName)', which the spec does not define")
    }
    let policyName = node.stringAttribute("keep_aspect_ratio_policy") ?? "stretch"
    switch policyName {
    case "stretch": aspectPolicy = .stretch
    case "not_larger": aspectPolicy = .notLarger
    case "not_smaller": aspectPolicy = .notSmaller
    default: throw setup.error("attribute keep_aspect_ratio_policy is '\(policyName)', which the spec does not define")
    }
    cubicA = Double(node.floatAttribute("cubic_coeff_a") ?? -0.75)
    excludeOutside = (node.intAttribute("exclude_outside") ?? 0) != 0
    extrapolationValue = node.floatAttribute("extrapolation_value") ?? 0
    antialias = (node.intAttribute("antialias") ?? 0) != 0 && mode != .nearest
    axes = node.intsAttribute("axes")
    attributeScales = nil
    roiIndex = 1
    scalesIndex = 2
    sizesIndex = 3
  }

  /// The output shape and element count and the sampling plan of every axis that changes (nil for
  /// axes copied unchanged), shared by `forward` and `backward`.
  private func layout(_ x: Tensor, _ inputs: [Tensor?], _ context: ExecutionContext) throws
    -> (outputShape: [Int], count: Int, plans: [ResizeAxisPlan?])
  {
    let rank = x.rank
    let resized = try resizedAxes(rank, context)

    // Output shape and per-axis scale.
    var scales = [Double](repeating: 1, count: rank)
    var outputShape = x.shape
    let sizes = presentInput(inputs, sizesIndex)?.asInts
    let scaleValues = attributeScales ?? presentInput(inputs, scalesIndex)?.asFloats
    if let sizes {
      if scaleValues != nil { throw context.error("inputs scales and sizes are both given; the spec allows only one") }
      guard sizes.count == resized.count else {
        throw context.error("input sizes has \(sizes.count) values, expected \(resized.count) (one per resized axis of X \(x.shapeDescription))")
      }
      if let negative = sizes.first(where: { $0 < 0 }) { throw context.error("input sizes holds \(negative), a negative size") }
      if aspectPolicy == .stretch {
        for (i, axis) in resized.enumerated() {
          outputShape[axis] = Int(sizes[i])
          scales[axis] = x.shape[axis] == 0 ? 1 : Double(Float(sizes[i]) / Float(x.shape[axis]))
        }
      } else {
        var ratio = aspectPolicy == .notLarger ? Float.infinity : 0
        for (i, axis) in resized.enumerated() where x.shape[axis] > 0 {
          let r = Float(sizes[i]) / Float(x.shape[axis])
          ratio = aspectPolicy == .notLarger ? min(ratio, r) : max(ratio, r)
        }
        if !ratio.isFinite || ratio <= 0 { ratio = 1 }
        for axis in resized {
          scales[axis] = Double(ratio)
          let length = (ratio * Float(x.shape[axis]) + 0.5).rounded(.down)
          guard length < Float(Int32.max) else { throw context.error("input sizes makes axis \(axis) of length \(x.shape[axis]) too long") }
          outputShape[axis] = Int(length)
        }
      }
    } else if let scaleValues {
      guard scaleValues.count == resized.count else {
        throw context.error("input scales has \(scaleValues.count) values, expected \(resized.count) (one per resized axis of X \(x.shapeDescription))")
      }
      for (i, axis) in resized.enumerated() {
        let scale = Double(scaleValues[i])
        guard scale > 0, scale.isFinite else { throw context.error("input scales holds \(scaleValues[i]); scales must be positive") }
        scales[axis] = scale
        // In float, as onnxruntime and ONNX shape inference compute it (0.7 * 10 is 7, not 6).
        let length = Double((scaleValues[i] * Float(x.shape[axis])).rounded(.down))
        guard length < Double(Int32.max) else { throw context.error("scale \(scaleValues[i]) makes axis \(axis) of length \(x.shape[axis]) too long") }
        outputShape[axis] = Int(length)
      }
    } else {
      throw context.error("needs input scales or input sizes")
    }

    var roiStart = [Double](repeating: 0, count: rank), roiEnd = [Double](repeating: 1, count: rank)
    if transform == .tfCropAndResize {
      guard let roi = presentInput(inputs, roiIndex)?.asFloats else {
        throw context.error("input roi is missing; coordinate_transformation_mode tf_crop_and_resize needs it")
      }
      guard roi.count == 2 * resized.count else {
        throw context.error("input roi has \(roi.count) values, expected \(2 * resized.count) (starts then ends of the resized axes)")
      }
      for (i, axis) in resized.enumerated() {
        roiStart[axis] = Double(roi[i])
        roiEnd[axis] = Double(roi[resized.count + i])
      }
    }
    let count = try context.checkAllocation(outputShape)

    // Sampling plans for the axes that change.
    var plans = [ResizeAxisPlan?](repeating: nil, count: rank)
    for axis in 0..<rank where x.shape[axis] > 0 && count > 0 {
      let identity = outputShape[axis] == x.shape[axis] && abs(scales[axis] - 1) < 1e-9
        && (transform != .tfCropAndResize || (roiStart[axis] == 0 && roiEnd[axis] == 1))
      if !identity {
        plans[axis] = plan(inputLength: x.shape[axis], outputLength: outputShape[axis], scale: scales[axis],
                           roiStart: roiStart[axis], roiEnd: roiEnd[axis])
      }
    }
    return (outputShape, count, plans)
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "X")
    let rank = x.rank
    let (outputShape, count, plans) = try layout(x, inputs, context)
    if plans.allSatisfy({ $0 == nil }) {
      if count == x.count { return [x] }
      return [Tensor(zeros: outputShape, dtype: x.dtype)]
    }

    if x.isFloat {
      let values: [Float]
      let changed = plans.indices.filter { plans[$0] != nil }
      if rank >= 2, changed.allSatisfy({ $0 >= rank - 2 }), mode != .cubic, transform != .tfCropAndResize,
        plans.compactMap({ $0 }).allSatisfy({ $0.taps <= 2 })
      {
        values = resizePlanes(x, rows: plans[rank - 2] ?? identityPlan(x.shape[rank - 2]),
                              columns: plans[rank - 1] ?? identityPlan(x.shape[rank - 1]), count: count)
      } else {
        values = separable(x.floats, x.shape, plans, fill: extrapolationValue)
      }
      return [Tensor(shape: outputShape, floats: values, dtype: x.dtype).normalized()]
    }
    let values = separable(x.ints.map { Double($0) }, x.shape, plans, fill: Double(extrapolationValue))
    let (low, high) = integerRange(x.dtype)
    let ints = values.map { value -> Int64 in
      // Truncated toward zero and saturated, as onnxruntime converts back; values within float
      // weight rounding of an integer snap to it first.
      let nearest = value.rounded()
      let truncated = abs(value - nearest) <= 1e-6 * max(1, abs(value)) ? nearest : value.rounded(.towardZero)
      return truncated.isNaN ? 0 : Int64(min(max(truncated, low), high))
    }
    return [Tensor(shape: outputShape, ints: ints, dtype: x.dtype)]
  }

  /// The axes that scales, sizes and roi refer to, from the `axes` attribute (all axes by default).
  private func resizedAxes(_ rank: Int, _ context: ExecutionContext) throws -> [Int] {
    guard let axes else { return Array(0..<rank) }
    var seen = Set<Int>()
    return try axes.map { axis in
      let normalized = axis < 0 ? axis + rank : axis
      guard normalized >= 0, normalized < rank else { throw context.error("attribute axes holds \(axis), outside [-\(rank), \(rank - 1)] for X of rank \(rank)") }
      guard seen.insert(normalized).inserted else { throw context.error("attribute axes repeats axis \(axis)") }
      return normalized
    }
  }

  /// Where output position `position` of an axis reads from, in input coordinates. Computed in
  /// float like onnxruntime, so that ties of nearest rounding fall the same way (with scale 0.7,
  /// (3 + 0.5) / 0.7 - 0.5 is exactly 4.5 in float but not in double).
  @inline(__always)
  private func sourceCoordinate(_ position: Int, inputLength: Int, outputLength: Int, scale: Double, roiStart: Double, roiEnd: Double) -> Double {
    let x = Float(position), length = Float(inputLength), scale = Float(scale)
    let roiStart = Float(roiStart), roiEnd = Float(roiEnd)
    // The output length before truncation to an integer, as the spec's formulas use it.
    let outputWidth = scale * length
    let result: Float
    switch transform {
    case .halfPixel: result = (x + 0.5) / scale - 0.5
    case .halfPixelSymmetric:
      let adjustment = Float(outputLength) / outputWidth
      result = length / 2 * (1 - adjustment) + (x + 0.5) / scale - 0.5
    case .pytorchHalfPixel: result = outputLength > 1 ? (x + 0.5) / scale - 0.5 : 0
    case .alignCorners: result = outputWidth == 1 ? 0 : x * (length - 1) / (outputWidth - 1)
    case .asymmetric: result = x / scale
    case .tfHalfPixelForNN: result = (x + 0.5) / scale
    case .tfCropAndResize:
      if outputWidth == 1 {
        result = (roiEnd - roiStart) * (length - 1) / 2 + roiStart * (length - 1)
      } else {
        result = x * (roiEnd - roiStart) * (length - 1) / (outputWidth - 1) + roiStart * (length - 1)
      }
    }
    return Double(result)
  }

  private func plan(inputLength: Int, outputLength: Int, scale: Double, roiStart: Double, roiEnd: Double) -> ResizeAxisPlan {
    let taps: Int, start: Int, stretch: Double
    switch mode {
    case .nearest:
      (taps, start, stretch) = (1, 0, 1)
    case .linear, .cubic:
      // The filter covers |t| < support; antialiasing widens it by 1/scale when downsampling.
      let support: Double = mode == .linear ? 1 : 2
      stretch = antialias ? min(scale, 1) : 1
      start = Int((-support / stretch).rounded(.down)) + 1
      taps = 2 - 2 * start
    }
    var index = [Int](repeating: 0, count: outputLength * taps)
    var weight = [Float](repeating: 0, count: outputLength * taps)
    var outside = transform == .tfCropAndResize ? [Bool](repeating: false, count: outputLength) : []
    var weights = [Double](repeating: 0, count: taps)
    let last = inputLength - 1
    // Beyond this margin every tap falls on the same edge, so clamping changes nothing.
    let margin = Double(taps + 2)
    for position in 0..<outputLength {
      var x = sourceCoordinate(position, inputLength: inputLength, outputLength: outputLength, scale: scale,
                               roiStart: roiStart, roiEnd: roiEnd)
      if transform == .tfCropAndResize && !(x >= 0 && x <= Double(last)) {
        outside[position] = true
        continue
      }
      x = x.isNaN ? 0 : min(max(x, -margin), Double(last) + margin)
      let floor = x.rounded(.down)
      if mode == .nearest {
        var source: Int
        if rounding == .legacy {
          source = Int(scale < 1 ? x.rounded(.up) : x.rounded(.towardZero))
        } else {
          source = Int(floor)
          let fraction = x - floor
          if fraction > 0 {
            switch rounding {
            case .roundPreferFloor: if fraction > 0.5 { source += 1 }
            case .roundPreferCeil: if fraction >= 0.5 { source += 1 }
            case .floor: break
            case .ceil, .legacy: source += 1
            }
          }
        }
        index[position] = min(max(source, 0), last)
        weight[position] = 1
        continue
      }
      // The window prefers the pixel left of x: at an integer x it starts one further left.
      let base = (x == floor ? Int(floor) - 1 : Int(floor)) + start
      var sum = 0.0
      for k in 0..<taps {
        let t = (Double(base + k) - x) * stretch
        weights[k] = mode == .linear ? max(0, 1 - abs(t)) : cubicKernel(t, cubicA)
        sum += weights[k]
      }
      if antialias && sum != 0 {
        for k in 0..<taps { weights[k] /= sum }
      }
      if excludeOutside {
        sum = 0
        for k in 0..<taps {
          if base + k < 0 || base + k > last { weights[k] = 0 }
          sum += weights[k]
        }
        if sum != 0 {
          for k in 0..<taps { weights[k] /= sum }
        }
      }
      for k in 0..<taps {
        index[position * taps + k] = min(max(base + k, 0), last)
        weight[position * taps + k] = Float(weights[k])
      }
    }
    return ResizeAxisPlan(taps: taps, outputLength: outputLength, index: index, weight: weight, outside: outside)
  }

  private func identityPlan(_ length: Int) -> ResizeAxisPlan {
    ResizeAxisPlan(taps: 1, outputLength: length, index: Array(0..<length), weight: [Float](repeating: 1, count: length), outside: [])
  }

  /// Resizes the last two axes of a float tensor (nearest or linear, one or two taps per axis) plane
  /// by plane. Linear rows are interpolated horizontally once per source row and kept in two row
  /// buffers, so each output row is one vertical blend; nearest rows that read the same source row
  /// as the row before are copied.
  private func resizePlanes(_ x: Tensor, rows: ResizeAxisPlan, columns: ResizeAxisPlan, count: Int) -> [Float] {
    let rank = x.rank
    let inputHeight = x.shape[rank - 2], inputWidth = x.shape[rank - 1]
    let outputHeight = rows.outputLength, outputWidth = columns.outputLength
    let planes = x.shape.dropLast(2).reduce(1, *)
    // Rows as (first source row, second source row, weights); one-tap rows read their row twice with weight 0.
    var row0 = [Int](repeating: 0, count: outputHeight), row1 = row0
    var rowWeight0 = [Float](repeating: 1, count: outputHeight), rowWeight1 = [Float](repeating: 0, count: outputHeight)
    for y in 0..<outputHeight {
      row0[y] = rows.index[y * rows.taps]
      row1[y] = row0[y]
      guard rows.taps == 2 else { continue }
      // Two-tap weights sum to 1, so a row whose other tap has weight 0 or reads the same source
      // row is a plain copy of one horizontally interpolated row.
      let (i0, i1, w0, w1) = (rows.index[2 * y], rows.index[2 * y + 1], rows.weight[2 * y], rows.weight[2 * y + 1])
      if w0 == 0 {
        row0[y] = i1
        row1[y] = i1
      } else if w1 != 0 && i1 != i0 {
        row1[y] = i1
        rowWeight0[y] = w0
        rowWeight1[y] = w1
      }
    }
    let columnTaps = columns.taps
    let nearest = rows.taps == 1 && columnTaps == 1
    // Nearest upsampling by a whole factor (each source column repeated `repeats` times, as FPN's
    // 2x upsampling does) copies each value to a run of outputs instead of gathering.
    var repeats = 0
    if nearest && inputWidth > 0 && outputWidth % inputWidth == 0 && outputWidth > inputWidth {
      let factor = outputWidth / inputWidth
      if (0..<outputWidth).allSatisfy({ columns.index[$0] == $0 / factor }) { repeats = factor }
    }
    return [Float](unsafeUninitializedCapacity: count) { output, initialized in
      x.floats.withUnsafeBufferPointer { sourceBuffer in
        columns.index.withUnsafeBufferPointer { columnIndex in
          columns.weight.withUnsafeBufferPointer { columnWeight in
            let source = sourceBuffer.baseAddress!, destination = output.baseAddress!
            forEachRange(planes * outputHeight, work: count * (nearest ? 1 : 3)) { start, end in
              if nearest {
                var previous = -1
                for row in start..<end {
                  let plane = row / outputHeight, y = row - plane * outputHeight
                  let key = plane * inputHeight + row0[y]
                  let out = destination + row * outputWidth
                  if key == previous {
                    out.update(from: out - outputWidth, count: outputWidth)
                  } else {
                    let input = source + key * inputWidth
                    if repeats == 2 {
                      for column in 0..<inputWidth {
                        let value = input[column]
                        out[2 * column] = value
                        out[2 * column + 1] = value
                      }
                    } else if repeats > 2 {
                      for column in 0..<inputWidth { (out + column * repeats).update(repeating: input[column], count: repeats) }
                    } else {
                      for column in 0..<outputWidth { out[column] = input[columnIndex[column]] }
                    }
                  }
                  previous = key
                }
                return
              }
              var buffer0 = UnsafeMutablePointer<Float>.allocate(capacity: outputWidth)
              var buffer1 = UnsafeMutablePointer<Float>.allocate(capacity: outputWidth)
              defer {
                buffer0.deallocate()
                buffer1.deallocate()
              }
              var key0 = -1, key1 = -1
              func horizontal(_ key: Int, _ into: UnsafeMutablePointer<Float>) {
                let input = source + key * inputWidth
                if columnTaps == 1 {
                  for column in 0..<outputWidth { into[column] = input[columnIndex[column]] }
                } else {
                  for column in 0..<outputWidth {
                    into[column] = input[columnIndex[2 * column]] * columnWeight[2 * column]
                      + input[columnIndex[2 * column + 1]] * columnWeight[2 * column + 1]
                  }
                }
              }
              for row in start..<end {
                let plane = row / outputHeight, y = row - plane * outputHeight
                let first = plane * inputHeight + row0[y], second = plane * inputHeight + row1[y]
                if key0 != first {
                  if key1 == first {
                    swap(&buffer0, &buffer1)
                    swap(&key0, &key1)
                  } else {
                    horizontal(first, buffer0)
                    key0 = first
                  }
                }
                let out = destination + row * outputWidth
                if second == first {
                  out.update(from: buffer0, count: outputWidth)
                  continue
                }
                if key1 != second {
                  horizontal(second, buffer1)
                  key1 = second
                }
                let w0 = rowWeight0[y], w1 = rowWeight1[y]
                for column in 0..<outputWidth { out[column] = buffer0[column] * w0 + buffer1[column] * w1 }
              }
            }
          }
        }
      }
      initialized = count
    }
  }

  /// Resizes one axis at a time (interpolation is separable), for any rank, mode and dtype.
  private func separable<T: BinaryFloatingPoint>(_ values: [T], _ shape: [Int], _ plans: [ResizeAxisPlan?], fill: T) -> [T] {
    var values = values, shape = shape
    for axis in shape.indices {
      guard let plan = plans[axis] else { continue }
      let outer = shape[..<axis].reduce(1, *), inner = shape[(axis + 1)...].reduce(1, *)
      let inputLength = shape[axis], outputLength = plan.outputLength
      let total = outer * outputLength * inner
      values = [T](unsafeUninitializedCapacity: total) { output, initialized in
        values.withUnsafeBufferPointer { sourceBuffer in
          plan.index.withUnsafeBufferPointer { index in
            plan.weight.withUnsafeBufferPointer { weight in
              plan.outside.withUnsafeBufferPointer { outside in
                let source = sourceBuffer.baseAddress!, destination = output.baseAddress!
                let taps = plan.taps
                forEachRange(outer * outputLength, work: total * taps) { start, end in
                  for row in start..<end {
                    let block = row / outputLength, position = row - block * outputLength
                    let out = destination + row * inner
                    if !outside.isEmpty && outside[position] {
                      out.update(repeating: fill, count: inner)
                      continue
                    }
                    let input = source + block * inputLength * inner
                    let tap = position * taps
                    let first = input + index[tap] * inner, w0 = T(weight[tap])
                    for k in 0..<inner { out[k] = first[k] * w0 }
                    for t in 1..<taps {
                      let w = T(weight[tap + t])
                      if w == 0 { continue }
                      let next = input + index[tap + t] * inner
                      for k in 0..<inner { out[k] += next[k] * w }
                    }
                  }
                }
              }
            }
          }
        }
        initialized = total
      }
      shape[axis] = outputLength
    }
    return values
  }
}

/// The representable range of an integer dtype, for saturating interpolated values.
private func integerRange(_ dtype: DataType) -> (Double, Double) {
  switch dtype {
  case .bool: return (0, 1)
  case .uint8: return (0, 255)
  case .int8: return (-128, 127)
  case .uint16: return (0, 65535)
  case .int16: return (-32768, 32767)
  case .uint32: return (0, 4_294_967_295)
  case .int32: return (-2_147_483_648, 2_147_483_647)
  default: return (-9.2e18, 9.2e18)
  }
}

/// `GridSample` (opset 16; 4-D): samples X [N, C, H, W] at the normalized (x, y) locations of
/// grid [N, H_out, W_out, 2] with bilinear, nearest (round half to even) or bicubic (a = -0.75)
/// interpolation; padding_mode zeros, border or reflection for locations outside the image.
/// Opset 20's names linear and cubic are accepted too.
struct GridSample: Operator {
  enum Mode { case nearest, linear, cubic }
  enum Padding { case zeros, border, reflection }

  let mode: Mode
  let padding: Padding
  let alignCorners: Bool

  init(_ node: Node, _ setup: OperatorSetup) throws {
    let modeName = node.stringAttribute("mode") ?? (setup.opset >= 20 ? "linear" : "bilinear")
    switch modeName {
    case "bilinear", "linear": mode = .linear
    case "nearest": mode = .nearest
    case "bicubic", "cubic": mode = .cubic
    default: throw setup.error("attribute mode is '\(modeName)', expected bilinear, nearest or bicubic")
    }
    let paddingName = node.stringAttribute("padding_mode") ?? "zeros"
    switch paddingName {
    case "zeros": padding = .zeros
    case "border": padding = .border
    case "reflection": padding = .reflection
    default: throw setup.error("attribute padding_mode is '\(paddingName)', expected zeros, border or reflection")
    }
    alignCorners = (node.intAttribute("align_corners") ?? 0) != 0
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "X"), grid = try context.input(inputs, 1, "grid")
    guard x.rank == 4 else { throw context.error("input X has \(x.rank) dims, expected 4 (N, C, H, W)") }
    guard x.isFloat, grid.isFloat else { throw context.error("inputs X and grid must be floating point (X is \(x.dtype), grid is \(grid.dtype))") }
    guard grid.rank == 4, grid.shape[0] == x.shape[0], grid.shape[3] == 2 else {
      throw context.error("input grid is \(grid.shapeDescription), expected [\(x.shape[0]), H_out, W_out, 2]")
    }
    let (batch, channels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (outputHeight, outputWidth) = (grid.shape[1], grid.shape[2])
    let outputShape = [batch, channels, outputHeight, outputWidth]
    let count = try context.checkAllocation(outputShape)
    let points = outputHeight * outputWidth
    let taps = mode == .nearest ? 1 : (mode == .linear ? 4 : 16)
    let plane = height * width
    var output = [Float](repeating: 0, count: count)
    guard count > 0 else { return [Tensor(shape: outputShape, floats: output, dtype: x.dtype)] }
    var index = [Int](repeating: 0, count: points * taps)
    var weight = [Float](repeating: 0, count: points * taps)
    for n in 0..<batch {
      // Taps of every output location, shared by all channels.
      grid.floats.withUnsafeBufferPointer { g in
        for point in 0..<points {
          let gx = g[(n * points + point) * 2], gy = g[(n * points + point) * 2 + 1]
          sampleTaps(gx, gy, width: width, height: height, index: &index, weight: &weight, at: point * taps)
        }
      }
      x.floats.withUnsafeBufferPointer { source in
        index.withUnsafeBufferPointer { index in
          weight.withUnsafeBufferPointer { weight in
            output.withUnsafeMutableBufferPointer { out in
              let source = source.baseAddress!, destination = out.baseAddress!
              forEachRange(channels, work: channels * points * taps) { start, end in
                for c in start..<end {
                  let input = source + (n * channels + c) * plane
                  let result = destination + (n * channels + c) * points
                  for point in 0..<points {
                    var sum: Float = 0
                    for t in point * taps..<(point + 1) * taps { sum += input[index[t]] * weight[t] }
                    result[point] = sum
                  }
                }
              }
            }
          }
        }
      }
    }
    return [Tensor(shape: outputShape, floats: output, dtype: x.dtype).normalized()]
  }

  /// Fills the `taps` (index into the H*W plane, weight) of one grid location; taps that fall in
  /// the zero padding get weight 0.
  private func sampleTaps(_ gx: Float, _ gy: Float, width: Int, height: Int, index: inout [Int], weight: inout [Float], at offset: Int) {
    var x = unnormalize(gx, width), y = unnormalize(gy, height)
    if mode == .nearest {
      x = x.rounded(.toNearestOrEven)
      y = y.rounded(.toNearestOrEven)
    }
    // Bicubic border padding clamps each tap, not the coordinate (as onnxruntime and PyTorch do).
    if !(mode == .cubic && padding == .border) {
      x = adjust(x, width)
      y = adjust(y, height)
    }
    switch mode {
    case .nearest:
      let (column, columnValid) = pixel(Int(x), width), (row, rowValid) = pixel(Int(y), height)
      index[offset] = row * width + column
      weight[offset] = columnValid && rowValid ? 1 : 0
    case .linear, .cubic:
      let n = mode == .linear ? 2 : 4
      let x0 = x.rounded(.down), y0 = y.rounded(.down)
      let fx = x - x0, fy = y - y0
      let firstColumn = Int(x0) - (n == 4 ? 1 : 0), firstRow = Int(y0) - (n == 4 ? 1 : 0)
      for i in 0..<n {
        let (row, rowValid) = pixel(firstRow + i, height)
        let wy = n == 2 ? (i == 0 ? 1 - fy : fy) : Float(cubicKernel(Double(fy) - Double(i - 1), -0.75))
        for j in 0..<n {
          let (column, columnValid) = pixel(firstColumn + j, width)
          let wx = n == 2 ? (j == 0 ? 1 - fx : fx) : Float(cubicKernel(Double(fx) - Double(j - 1), -0.75))
          index[offset + i * n + j] = row * width + column
          weight[offset + i * n + j] = rowValid && columnValid ? wy * wx : 0
        }
      }
    }
  }

  /// Normalized [-1, 1] to pixel coordinates.
  @inline(__always) private func unnormalize(_ g: Float, _ length: Int) -> Float {
    let l = Float(length)
    let value = alignCorners ? (g + 1) / 2 * (l - 1) : ((g + 1) * l - 1) / 2
    return value.isNaN ? -1e9 : min(max(value, -1e9), 1e9)
  }

  /// The pixel range coordinates may span: centers with align_corners, edges without.
  @inline(__always) private func bounds(_ length: Int) -> (Float, Float) {
    alignCorners ? (0, Float(length - 1)) : (-0.5, Float(length) - 0.5)
  }

  /// Applies border or reflection padding to a coordinate outside the image.
  @inline(__always) private func adjust(_ value: Float, _ length: Int) -> Float {
    let (low, high) = bounds(length)
    guard value < low || value > high else { return value }
    switch padding {
    case .zeros: return value
    case .border: return min(max(value, 0), Float(length - 1))
    case .reflection: return reflect(value, low, high)
    }
  }

  /// Reflects `value` by the near border until it lies within [low, high].
  @inline(__always) private func reflect(_ value: Float, _ low: Float, _ high: Float) -> Float {
    let range = high - low
    guard range > 0 else { return low }
    if value < low {
      let distance = low - value
      let flips = (distance / range).rounded(.down)
      let rest = distance - flips * range
      return flips.truncatingRemainder(dividingBy: 2) == 0 ? low + rest : high - rest
    }
    if value > high {
      let distance = value - high
      let flips = (distance / range).rounded(.down)
      let rest = distance - flips * range
      return flips.truncatingRemainder(dividingBy: 2) == 0 ? high - rest : low + rest
    }
    return value
  }

  /// The in-image index a tap at integer position `i` reads under the padding mode, and whether it
  /// reads the image at all (false in zero padding).
  @inline(__always) private func pixel(_ i: Int, _ length: Int) -> (Int, Bool) {
    if i >= 0 && i < length { return (i, true) }
    switch padding {
    case .zeros: return (0, false)
    case .border: return (min(max(i, 0), length - 1), true)
    case .reflection:
      let (low, high) = bounds(length)
      let reflected = Int(reflect(Float(i), low, high))
      return (min(max(reflected, 0), length - 1), true)
    }
  }
}

/// `RoiAlign` (opsets 10 and 16): average or max of bilinear samples over each bin of each region
/// of interest (rois [num_rois, 4] as x1, y1, x2, y2, scaled by spatial_scale, read from the image
/// batch_indices names). coordinate_transformation_mode half_pixel (opset 16's default) shifts by
/// -0.5 pixel; output_half_pixel (opset 10's behaviour) does not and enlarges regions under 1 pixel.
/// sampling_ratio 0 takes ceil(region size / output size) samples per bin. Max mode takes the
/// largest weighted corner value of each sample, as onnxruntime and the reference do.
struct RoiAlign: Operator {
  let average: Bool
  let outputHeight: Int
  let outputWidth: Int
  let samplingRatio: Int
  let spatialScale: Double
  let halfPixel: Bool

  init(_ node: Node, _ setup: OperatorSetup) throws {
    let modeName = node.stringAttribute("mode") ?? "avg"
    switch modeName {
    case "avg": average = true
    case "max": average = false
    default: throw setup.error("attribute mode is '\(modeName)', expected avg or max")
    }
    outputHeight = node.intAttribute("output_height") ?? 1
    outputWidth = node.intAttribute("output_width") ?? 1
    samplingRatio = node.intAttribute("sampling_ratio") ?? 0
    spatialScale = Double(node.floatAttribute("spatial_scale") ?? 1)
    guard outputHeight > 0, outputWidth > 0 else {
      throw setup.error("attributes output_height \(outputHeight) and output_width \(outputWidth) must be positive")
    }
    guard samplingRatio >= 0 else { throw setup.error("attribute sampling_ratio is \(samplingRatio), expected >= 0") }
    let transformName = node.stringAttribute("coordinate_transformation_mode") ?? (setup.opset >= 16 ? "half_pixel" : "output_half_pixel")
    switch transformName {
    case "half_pixel": halfPixel = true
    case "output_half_pixel": halfPixel = false
    default: throw setup.error("attribute coordinate_transformation_mode is '\(transformName)', expected half_pixel or output_half_pixel")
    }
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "X"), rois = try context.input(inputs, 1, "rois")
    let batchIndices = try context.input(inputs, 2, "batch_indices")
    guard x.rank == 4 else { throw context.error("input X has \(x.rank) dims, expected 4 (N, C, H, W)") }
    guard x.isFloat else { throw context.error("input X is \(x.dtype), expected a floating-point type") }
    guard rois.rank == 2, rois.shape[1] == 4 else { throw context.error("input rois is \(rois.shapeDescription), expected [num_rois, 4]") }
    let roiCount = rois.shape[0]
    guard batchIndices.rank == 1, batchIndices.shape[0] == roiCount else {
      throw context.error("input batch_indices is \(batchIndices.shapeDescription), expected [\(roiCount)]")
    }
    let (batch, channels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let batchOf = batchIndices.asInts
    if let bad = batchOf.first(where: { $0 < 0 || $0 >= Int64(batch) }) {
      throw context.error("input batch_indices holds \(bad), outside [0, \(batch - 1)]")
    }
    let outputShape = [roiCount, channels, outputHeight, outputWidth]
    let count = try context.checkAllocation(outputShape)
    var output = [Float](repeating: 0, count: count)
    guard count > 0, height > 0, width > 0 else { return [Tensor(shape: outputShape, floats: output, dtype: x.dtype)] }
    let boxes = rois.asFloats
    let bins = outputHeight * outputWidth
    x.floats.withUnsafeBufferPointer { source in
      output.withUnsafeMutableBufferPointer { out in
        let source = source.baseAddress!, destination = out.baseAddress!
        forEachRange(roiCount, work: count * 16) { start, end in
          var index: [Int] = [], weight: [Float] = []
          for roi in start..<end {
            let (gridCount, perBin) = precompute(boxes, roi, height: height, width: width, index: &index, weight: &weight)
            let scale = 1 / Float(gridCount)
            index.withUnsafeBufferPointer { index in
              weight.withUnsafeBufferPointer { weight in
                for c in 0..<channels {
                  let input = source + (Int(batchOf[roi]) * channels + c) * height * width
                  let result = destination + (roi * channels + c) * bins
                  var t = 0
                  for bin in 0..<bins {
                    if average {
                      var sum: Float = 0
                      for _ in 0..<perBin {
                        sum += weight[t] * input[index[t]] + weight[t + 1] * input[index[t + 1]]
                          + weight[t + 2] * input[index[t + 2]] + weight[t + 3] * input[index[t + 3]]
                        t += 4
                      }
                      result[bin] = sum * scale
                    } else {
                      var best = -Float.infinity
                      for _ in 0..<perBin {
                        let value = max(max(weight[t] * input[index[t]], weight[t + 1] * input[index[t + 1]]),
                                        max(weight[t + 2] * input[index[t + 2]], weight[t + 3] * input[index[t + 3]]))
                        best = max(best, value)
                        t += 4
                      }
                      result[bin] = perBin == 0 ? 0 : best
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
    return [Tensor(shape: outputShape, floats: output, dtype: x.dtype).normalized()]
  }

  /// The bilinear corners (4 indices and weights per sample) of every sample of every bin of one
  /// region. Returns the averaging count and the number of samples per bin.
  private func precompute(_ boxes: [Float], _ roi: Int, height: Int, width: Int, index: inout [Int], weight: inout [Float]) -> (Int, Int) {
    let offset = halfPixel ? 0.5 : 0
    let startX = Double(boxes[4 * roi]) * spatialScale - offset, startY = Double(boxes[4 * roi + 1]) * spatialScale - offset
    let endX = Double(boxes[4 * roi + 2]) * spatialScale - offset, endY = Double(boxes[4 * roi + 3]) * spatialScale - offset
    var roiWidth = endX - startX, roiHeight = endY - startY
    if !halfPixel {
      roiWidth = max(roiWidth, 1)
      roiHeight = max(roiHeight, 1)
    }
    let binHeight = roiHeight / Double(outputHeight), binWidth = roiWidth / Double(outputWidth)
    func gridSize(_ extent: Double, _ bins: Int) -> Int {
      if samplingRatio > 0 { return samplingRatio }
      let size = (extent / Double(bins)).rounded(.up)
      return size.isNaN ? 0 : Int(min(max(size, 0), 1_048_576))
    }
    let gridHeight = gridSize(roiHeight, outputHeight), gridWidth = gridSize(roiWidth, outputWidth)
    let perBin = gridHeight * gridWidth
    let total = outputHeight * outputWidth * perBin * 4
    if index.count < total {
      index = [Int](repeating: 0, count: total)
      weight = [Float](repeating: 0, count: total)
    }
    var t = 0
    for ph in 0..<outputHeight {
      for pw in 0..<outputWidth {
        for iy in 0..<gridHeight {
          let y = startY + Double(ph) * binHeight + (Double(iy) + 0.5) * binHeight / Double(gridHeight)
          for ix in 0..<gridWidth {
            var x = startX + Double(pw) * binWidth + (Double(ix) + 0.5) * binWidth / Double(gridWidth)
            defer { t += 4 }
            if !(y >= -1 && y <= Double(height) && x >= -1 && x <= Double(width)) {
              for k in 0..<4 {
                index[t + k] = 0
                weight[t + k] = 0
              }
              continue
            }
            var yy = max(y, 0)
            x = max(x, 0)
            var yLow = Int(yy), xLow = Int(x), yHigh: Int, xHigh: Int
            if yLow >= height - 1 {
              yLow = height - 1
              yHigh = yLow
              yy = Double(yLow)
            } else {
              yHigh = yLow + 1
            }
            if xLow >= width - 1 {
              xLow = width - 1
              xHigh = xLow
              x = Double(xLow)
            } else {
              xHigh = xLow + 1
            }
            let ly = yy - Double(yLow), lx = x - Double(xLow), hy = 1 - ly, hx = 1 - lx
            index[t] = yLow * width + xLow
            index[t + 1] = yLow * width + xHigh
            index[t + 2] = yHigh * width + xLow
            index[t + 3] = yHigh * width + xHigh
            weight[t] = Float(hy * hx)
            weight[t + 1] = Float(hy * lx)
            weight[t + 2] = Float(ly * hx)
            weight[t + 3] = Float(ly * lx)
          }
        }
      }
    }
    return (max(perBin, 1), perBin)
  }
}

// MARK: - Gradients

extension Resize: DifferentiableOperator {
  /// The transpose of the forward's sampling: every output gradient goes back to the source elements
  /// it was read from, times the same interpolation weights (1 for nearest), from the same per-axis
  /// plans (so every coordinate_transformation_mode, nearest_mode, cubic_coeff_a, exclude_outside and
  /// antialias is covered). Extrapolated positions (tf_crop_and_resize) pass nothing back. Gradient
  /// to X only; roi, scales and sizes get nil.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    let rest = inputs.dropFirst().map { _ -> Tensor? in nil }
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat, dy.isFloat else { return [nil] + rest }
    let (outputShape, _, plans) = try layout(x, inputs, context)
    guard dy.shape == outputShape else {
      throw context.error("output gradient is \(dy.shapeDescription), expected the output's shape \(Tensor(zeros: outputShape).shapeDescription)")
    }
    if plans.allSatisfy({ $0 == nil }) || x.count == 0 {
      return [dy.shape == x.shape ? dy : Tensor(zeros: x.shape, dtype: x.dtype)] + rest
    }
    let rank = x.rank
    let values: [Float]
    if rank >= 2, plans.indices.allSatisfy({ plans[$0] == nil || $0 >= rank - 2 }) {
      values = resizePlanesBackward(dy.floats, x.shape, rows: plans[rank - 2], columns: plans[rank - 1])
    } else {
      values = separableBackward(dy.floats, outputShape, x.shape, plans)
    }
    return [Tensor(shape: x.shape, floats: values, dtype: x.dtype)] + rest
  }

  /// The transpose of a resize of the last two axes, plane by plane in parallel, as gathers: each
  /// input row first sums the output rows that read it (with their weights; a lone weight-1 row is
  /// used in place), then each of its elements sums the columns that read it. Every input row is
  /// written once, with no scattered read-modify-writes.
  private func resizePlanesBackward(_ dy: [Float], _ inputShape: [Int], rows: ResizeAxisPlan?, columns: ResizeAxisPlan?) -> [Float] {
    let rank = inputShape.count
    let inputHeight = inputShape[rank - 2], inputWidth = inputShape[rank - 1]
    let outputHeight = rows?.outputLength ?? inputHeight, outputWidth = columns?.outputLength ?? inputWidth
    let planes = inputShape.dropLast(2).reduce(1, *)
    let inputPlane = inputHeight * inputWidth, outputPlane = outputHeight * outputWidth
    let rowReaders = ResizeAxisReaders(rows ?? identityPlan(inputHeight), inputLength: inputHeight)
    let columnReaders = columns.map { ResizeAxisReaders($0, inputLength: inputWidth) }
    let rowWidth = rowReaders.width, columnWidth = columnReaders?.width ?? 1
    let columnSource = columnReaders?.source ?? [], columnWeight = columnReaders?.weight ?? []
    // Every input row is written once: from its readers, or with zeros when it has none.
    return [Float](unsafeUninitializedCapacity: planes * inputPlane) { resultBuffer, initialized in
      dy.withUnsafeBufferPointer { gradientBuffer in
        rowReaders.source.withUnsafeBufferPointer { rowSource in
          rowReaders.weight.withUnsafeBufferPointer { rowWeight in
            columnSource.withUnsafeBufferPointer { columnSource in
              columnWeight.withUnsafeBufferPointer { columnWeight in
                let gradient = gradientBuffer.baseAddress!, result = resultBuffer.baseAddress!
                let work = planes * (inputHeight * rowWidth * outputWidth + inputPlane * columnWidth)
                Parallel.forEach(planes, work: work) { plane in
                  let source = gradient + plane * outputPlane, target = result + plane * inputPlane
                  let buffer = UnsafeMutablePointer<Float>.allocate(capacity: max(outputWidth, 1))
                  defer { buffer.deallocate() }
                  for r in 0..<inputHeight {
                    // Vertical: the weighted sum of the output rows that read input row r.
                    let readers = r * rowWidth
                    var count = 0
                    while count < rowWidth && rowWeight[readers + count] != 0 { count += 1 }
                    if count == 0 {
                      (target + r * inputWidth).update(repeating: 0, count: inputWidth)
                      continue
                    }
                    var row = UnsafePointer(source + rowSource[readers] * outputWidth)
                    if count > 1 || rowWeight[readers] != 1 {
                      // Two rows per pass over the buffer.
                      var e = readers
                      if count % 2 == 1 {
                        let w0 = rowWeight[e]
                        for k in 0..<outputWidth { buffer[k] = row[k] * w0 }
                        e += 1
                      } else {
                        let next = source + rowSource[e + 1] * outputWidth, w0 = rowWeight[e], w1 = rowWeight[e + 1]
                        for k in 0..<outputWidth { buffer[k] = row[k] * w0 + next[k] * w1 }
                        e += 2
                      }
                      while e < readers + count {
                        let a = source + rowSource[e] * outputWidth, b = source + rowSource[e + 1] * outputWidth
                        let wa = rowWeight[e], wb = rowWeight[e + 1]
                        for k in 0..<outputWidth { buffer[k] += a[k] * wa + b[k] * wb }
                        e += 2
                      }
                      row = UnsafePointer(buffer)
                    }
                    // Horizontal: each input element sums the output columns that read it.
                    let out = target + r * inputWidth
                    if columnReaders == nil {
                      out.update(from: row, count: inputWidth)
                      continue
                    }
                    switch columnWidth {
                    case 1:
                      for j in 0..<inputWidth { out[j] = row[columnSource[j]] * columnWeight[j] }
                    case 2:
                      for j in 0..<inputWidth {
                        out[j] = row[columnSource[2 * j]] * columnWeight[2 * j] + row[columnSource[2 * j + 1]] * columnWeight[2 * j + 1]
                      }
                    case 3:
                      for j in 0..<inputWidth {
                        let e = 3 * j
                        out[j] = row[columnSource[e]] * columnWeight[e] + row[columnSource[e + 1]] * columnWeight[e + 1]
                          + row[columnSource[e + 2]] * columnWeight[e + 2]
                      }
                    case 4:
                      for j in 0..<inputWidth {
                        let e = 4 * j
                        out[j] = row[columnSource[e]] * columnWeight[e] + row[columnSource[e + 1]] * columnWeight[e + 1]
                          + row[columnSource[e + 2]] * columnWeight[e + 2] + row[columnSource[e + 3]] * columnWeight[e + 3]
                      }
                    default:
                      for j in 0..<inputWidth {
                        var sum: Float = 0
                        for e in j * columnWidth..<(j + 1) * columnWidth { sum += row[columnSource[e]] * columnWeight[e] }
                        out[j] = sum
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
      initialized = planes * inputPlane
    }
  }

  /// The transpose of `separable`: the axes in reverse order, each scattering its output positions
  /// back to their taps. Parallel over the blocks before the axis (and slices of the ones after it
  /// when there are few blocks); each job writes its own part of the result.
  private func separableBackward(_ dy: [Float], _ outputShape: [Int], _ inputShape: [Int], _ plans: [ResizeAxisPlan?]) -> [Float] {
    var values = dy, shape = outputShape
    for axis in shape.indices.reversed() {
      guard let plan = plans[axis] else { continue }
      let outer = shape[..<axis].reduce(1, *), inner = shape[(axis + 1)...].reduce(1, *)
      let inputLength = inputShape[axis], outputLength = plan.outputLength, taps = plan.taps
      let slices = outer >= 2 * Parallel.threads || inner < 256 ? 1 : min(inner / 128, 4 * Parallel.threads)
      var result = [Float](repeating: 0, count: outer * inputLength * inner)
      values.withUnsafeBufferPointer { sourceBuffer in
        result.withUnsafeMutableBufferPointer { resultBuffer in
          plan.index.withUnsafeBufferPointer { index in
            plan.weight.withUnsafeBufferPointer { weight in
              let source = sourceBuffer.baseAddress!, target = resultBuffer.baseAddress!
              Parallel.forEach(outer * slices, work: outer * outputLength * inner * taps) { job in
                let block = job / slices, slice = job - block * slices
                let low = slice * inner / slices, high = (slice + 1) * inner / slices
                let input = source + block * outputLength * inner, output = target + block * inputLength * inner
                for position in 0..<outputLength {
                  let g = input + position * inner
                  for t in position * taps..<(position + 1) * taps {
                    let w = weight[t]
                    if w == 0 { continue }
                    let out = output + index[t] * inner
                    for k in low..<high { out[k] += g[k] * w }
                  }
                }
              }
            }
          }
        }
      }
      values = result
      shape[axis] = inputLength
    }
    return values
  }
}

extension GridSample: DifferentiableOperator {
  /// Gradient to X: each output gradient scattered to the taps it read with their bilinear, nearest
  /// or bicubic weights (nothing to taps in the zero padding). Gradient to grid: the derivative of
  /// the sample with respect to its position, through the interpolation weights, the unnormalization
  /// (W/2 or (W-1)/2 with align_corners) and the padding (border clamping has slope 0, each
  /// reflection flips the sign). Nearest sampling is piecewise constant in the grid: zero gradient.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let x = inputs[0], let grid = inputs[1], x.isFloat, grid.isFloat, x.rank == 4, grid.rank == 4
    else { return [nil, nil] }
    let (batch, channels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let points = grid.shape[1] * grid.shape[2]
    guard dy.shape == [batch, channels, grid.shape[1], grid.shape[2]] else {
      throw context.error("output gradient is \(dy.shapeDescription), expected [\(batch), \(channels), \(grid.shape[1]), \(grid.shape[2])]")
    }
    var inputGradient = [Float](repeating: 0, count: x.count), gridGradient = [Float](repeating: 0, count: grid.count)
    let taps = mode == .nearest ? 1 : (mode == .linear ? 4 : 16)
    let plane = height * width
    guard dy.count > 0, plane > 0 else {
      return [Tensor(shape: x.shape, floats: inputGradient, dtype: x.dtype), Tensor(shape: grid.shape, floats: gridGradient, dtype: grid.dtype)]
    }
    var index = [Int](repeating: 0, count: points * taps), weight = [Float](repeating: 0, count: points * taps)
    var slopeX = weight, slopeY = weight
    let chunks = max(min(channels, Parallel.threads), 1)
    let partials = UnsafeMutablePointer<Float>.allocate(capacity: chunks * points * 2)
    defer { partials.deallocate() }
    for n in 0..<batch {
      partials.update(repeating: 0, count: chunks * points * 2)
      grid.floats.withUnsafeBufferPointer { g in
        for point in 0..<points {
          let gx = g[(n * points + point) * 2], gy = g[(n * points + point) * 2 + 1]
          sampleTapsWithSlopes(gx, gy, width: width, height: height, index: &index, weight: &weight, slopeX: &slopeX, slopeY: &slopeY,
                               at: point * taps)
        }
      }
      dy.floats.withUnsafeBufferPointer { gradientBuffer in
        x.floats.withUnsafeBufferPointer { sourceBuffer in
          index.withUnsafeBufferPointer { index in
            weight.withUnsafeBufferPointer { weight in
              slopeX.withUnsafeBufferPointer { slopeX in
                slopeY.withUnsafeBufferPointer { slopeY in
                  inputGradient.withUnsafeMutableBufferPointer { inputBuffer in
                    gridGradient.withUnsafeMutableBufferPointer { gridBuffer in
                      let gradient = gradientBuffer.baseAddress! + n * channels * points
                      let source = sourceBuffer.baseAddress! + n * channels * plane
                      let inputTarget = inputBuffer.baseAddress! + n * channels * plane
                      let gridTarget = gridBuffer.baseAddress! + n * points * 2
                      // One pass per channel range: scatter into X's gradient, and sum the grid's
                      // gradient into the range's own partial buffer (added up below).
                      let nearest = mode == .nearest
                      Parallel.forEach(chunks, work: channels * points * taps) { chunk in
                        let partial = partials + chunk * points * 2
                        for c in chunk * channels / chunks..<(chunk + 1) * channels / chunks {
                          let g = gradient + c * points, input = source + c * plane, out = inputTarget + c * plane
                          for point in 0..<points {
                            let value = g[point]
                            if value == 0 { continue }
                            let range = point * taps..<(point + 1) * taps
                            if nearest {
                              for t in range { out[index[t]] += value * weight[t] }
                              continue
                            }
                            var alongX: Float = 0, alongY: Float = 0
                            for t in range {
                              let i = index[t]
                              out[i] += value * weight[t]
                              let v = input[i]
                              alongX += v * slopeX[t]
                              alongY += v * slopeY[t]
                            }
                            partial[2 * point] += value * alongX
                            partial[2 * point + 1] += value * alongY
                          }
                        }
                      }
                      if nearest { return }
                      for chunk in 0..<chunks {
                        let partial = partials + chunk * points * 2
                        for k in 0..<points * 2 { gridTarget[k] += partial[k] }
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
    return [Tensor(shape: x.shape, floats: inputGradient, dtype: x.dtype), Tensor(shape: grid.shape, floats: gridGradient, dtype: grid.dtype)]
  }

  /// `sampleTaps` with, for every tap, the derivatives of its weight with respect to the grid's
  /// normalized x (`slopeX`) and y (`slopeY`).
  private func sampleTapsWithSlopes(_ gx: Float, _ gy: Float, width: Int, height: Int, index: inout [Int], weight: inout [Float],
                                    slopeX: inout [Float], slopeY: inout [Float], at offset: Int)
  {
    var x = unnormalize(gx, width), y = unnormalize(gy, height)
    // d pixel / d normalized coordinate.
    var scaleX = alignCorners ? Float(width - 1) / 2 : Float(width) / 2
    var scaleY = alignCorners ? Float(height - 1) / 2 : Float(height) / 2
    if mode == .nearest {
      x = x.rounded(.toNearestOrEven)
      y = y.rounded(.toNearestOrEven)
    }
    if !(mode == .cubic && padding == .border) {
      scaleX *= adjustSlope(x, width)
      scaleY *= adjustSlope(y, height)
      x = adjust(x, width)
      y = adjust(y, height)
    }
    switch mode {
    case .nearest:
      let (column, columnValid) = pixel(Int(x), width), (row, rowValid) = pixel(Int(y), height)
      index[offset] = row * width + column
      weight[offset] = columnValid && rowValid ? 1 : 0
      slopeX[offset] = 0
      slopeY[offset] = 0
    case .linear, .cubic:
      let n = mode == .linear ? 2 : 4
      let x0 = x.rounded(.down), y0 = y.rounded(.down)
      let fx = x - x0, fy = y - y0
      let firstColumn = Int(x0) - (n == 4 ? 1 : 0), firstRow = Int(y0) - (n == 4 ? 1 : 0)
      for i in 0..<n {
        let (row, rowValid) = pixel(firstRow + i, height)
        let wy = n == 2 ? (i == 0 ? 1 - fy : fy) : Float(cubicKernel(Double(fy) - Double(i - 1), -0.75))
        let dwy = n == 2 ? (i == 0 ? -1 : 1) : Float(cubicKernelSlope(Double(fy) - Double(i - 1), -0.75))
        for j in 0..<n {
          let (column, columnValid) = pixel(firstColumn + j, width)
          let wx = n == 2 ? (j == 0 ? 1 - fx : fx) : Float(cubicKernel(Double(fx) - Double(j - 1), -0.75))
          let dwx = n == 2 ? (j == 0 ? -1 : 1) : Float(cubicKernelSlope(Double(fx) - Double(j - 1), -0.75))
          let valid = rowValid && columnValid
          index[offset + i * n + j] = row * width + column
          weight[offset + i * n + j] = valid ? wy * wx : 0
          slopeX[offset + i * n + j] = valid ? wy * dwx * scaleX : 0
          slopeY[offset + i * n + j] = valid ? dwy * wx * scaleY : 0
        }
      }
    }
  }

  /// The derivative of `adjust(value, length)` with respect to `value`: 1 inside the image (and
  /// with zero padding), 0 where border padding clamps, ±1 for reflection (each flip negates).
  @inline(__always) private func adjustSlope(_ value: Float, _ length: Int) -> Float {
    let (low, high) = bounds(length)
    guard value < low || value > high else { return 1 }
    switch padding {
    case .zeros: return 1
    case .border: return 0
    case .reflection:
      let range = high - low
      guard range > 0 else { return 0 }
      let distance = value < low ? low - value : value - high
      let flips = (distance / range).rounded(.down)
      return flips.truncatingRemainder(dividingBy: 2) == 0 ? -1 : 1
    }
  }
}

/// The derivative of `cubicKernel(t, a)` with respect to t.
@inline(__always)
private func cubicKernelSlope(_ t: Double, _ a: Double) -> Double {
  let x = abs(t), sign: Double = t < 0 ? -1 : 1
  if x <= 1 { return sign * (3 * (a + 2) * x - 2 * (a + 3)) * x }
  if x < 2 { return sign * ((3 * a * x - 10 * a) * x + 8 * a) }
  return 0
}

extension RoiAlign: DifferentiableOperator {
  /// Gradient to X: avg mode scatters each bin's gradient over the bilinear corners of its samples
  /// (weights over the sample count); max mode sends it to the one weighted corner the forward took
  /// (the first largest). Parallel over channel ranges, each recomputing the regions' sampling
  /// tables, since regions of one image overlap. rois and batch_indices get nil.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat, x.rank == 4, let rois = inputs[1], let batchIndices = inputs[2]
    else { return [nil, nil, nil] }
    let (channels, height, width) = (x.shape[1], x.shape[2], x.shape[3])
    let roiCount = rois.shape[0], bins = outputHeight * outputWidth
    guard dy.shape == [roiCount, channels, outputHeight, outputWidth] else {
      throw context.error("output gradient is \(dy.shapeDescription), expected [\(roiCount), \(channels), \(outputHeight), \(outputWidth)]")
    }
    var result = [Float](repeating: 0, count: x.count)
    let plane = height * width
    guard dy.count > 0, plane > 0 else { return [Tensor(shape: x.shape, floats: result, dtype: x.dtype), nil, nil] }
    let boxes = rois.asFloats, batchOf = batchIndices.asInts
    let chunks = min(channels, Parallel.threads)
    let average = average
    dy.floats.withUnsafeBufferPointer { gradientBuffer in
      x.floats.withUnsafeBufferPointer { sourceBuffer in
        result.withUnsafeMutableBufferPointer { resultBuffer in
          let gradient = gradientBuffer.baseAddress!, source = sourceBuffer.baseAddress!, target = resultBuffer.baseAddress!
          Parallel.forEach(chunks, work: dy.count * 16) { chunk in
            let first = chunk * channels / chunks, end = (chunk + 1) * channels / chunks
            var index: [Int] = [], weight: [Float] = []
            for roi in 0..<roiCount {
              let (sampleCount, perBin) = precompute(boxes, roi, height: height, width: width, index: &index, weight: &weight)
              guard perBin > 0 else { continue }
              let scale = 1 / Float(sampleCount), tapsPerBin = 4 * perBin
              let image = Int(batchOf[roi]) * channels
              index.withUnsafeBufferPointer { index in
                weight.withUnsafeBufferPointer { weight in
                  for c in first..<end {
                    let input = source + (image + c) * plane, out = target + (image + c) * plane
                    let g = gradient + (roi * channels + c) * bins
                    for bin in 0..<bins {
                      let value = g[bin]
                      if value == 0 { continue }
                      let taps = bin * tapsPerBin..<(bin + 1) * tapsPerBin
                      if average {
                        let scaled = value * scale
                        for t in taps { out[index[t]] += weight[t] * scaled }
                      } else {
                        // The best sample without branches (a data-dependent branch per sample
                        // would mispredict half the time), then its best corner: the first largest.
                        var bestValue = -Float.infinity, bestSample = taps.lowerBound, t = taps.lowerBound
                        while t < taps.upperBound {
                          let v0 = weight[t] * input[index[t]], v1 = weight[t + 1] * input[index[t + 1]]
                          let v2 = weight[t + 2] * input[index[t + 2]], v3 = weight[t + 3] * input[index[t + 3]]
                          let m = max(max(v0, v1), max(v2, v3))
                          bestSample = m > bestValue ? t : bestSample
                          bestValue = max(bestValue, m)
                          t += 4
                        }
                        // The first of its corners that attains it, counted without branches.
                        @inline(__always) func misses(_ k: Int) -> Int {
                          Int(unsafeBitCast(weight[k] * input[index[k]] != bestValue, to: UInt8.self))
                        }
                        let miss0 = misses(bestSample), miss1 = miss0 & misses(bestSample + 1)
                        let best = bestSample + miss0 + miss1 + (miss1 & misses(bestSample + 2))
                        out[index[best]] += weight[best] * value
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
    return [Tensor(shape: x.shape, floats: result, dtype: x.dtype), nil, nil]
  }
}
