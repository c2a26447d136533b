import DistillCore

/// Finite-difference cases for Sources/DistillCore/Ops/Resize.swift.
///
/// Resize and Upsample are linear in X, so central differences are exact for every mode (nearest
/// included: it is piecewise linear in X with the pieces fixed by the shape, not by X). The nearest
/// cases still use scales and sizes whose source coordinates stay clear of the rounding ties
/// (x.5 for the round modes), so float and double coordinate arithmetic agree on every tap.
/// X is [1, 2, 4, 5]: for H = 4 and W = 5 the scales 1.55 and 0.7 avoid ties under every
/// coordinate_transformation_mode; sizes are picked per mode (`tieFreeSizes`).
let resizeCases: [GradientCase] = {
  var values = Values(seed: 23)
  var cases: [GradientCase] = []
  func string(_ name: String, _ value: String) -> Attribute { Attribute(name: name, value: .string(Array(value.utf8))) }
  func int(_ name: String, _ value: Int) -> Attribute { Attribute(name: name, value: .int(Int64(value))) }
  func float(_ name: String, _ value: Float) -> Attribute { Attribute(name: name, value: .float(value)) }
  func floats(_ values: [Float]) -> Tensor { Tensor(shape: [values.count], floats: values) }
  func ints(_ values: [Int64]) -> Tensor { Tensor(shape: [values.count], ints: values) }

  let transforms = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn"]
  // Output sizes [H, W] for X's H = 4, W = 5 whose nearest coordinates avoid x.5 under each mode.
  let tieFreeSizes: [String: [Int64]] = [
    "half_pixel": [8, 3], "half_pixel_symmetric": [8, 3], "pytorch_half_pixel": [8, 3], "align_corners": [6, 3],
    "asymmetric": [3, 7], "tf_half_pixel_for_nn": [7, 2],
  ]
  let up = floats([1, 1, 1.55, 1.3]), down = floats([1, 1, 0.7, 0.7]), mixed = floats([1, 1, 1.55, 0.7])

  // Nearest: every nearest_mode under every coordinate transform, with scales (up, down) and sizes.
  let roundings = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
  for (i, transform) in transforms.enumerated() {
    for (j, rounding) in roundings.enumerated() {
      let attributes = [string("mode", "nearest"), string("coordinate_transformation_mode", transform), string("nearest_mode", rounding)]
      let scales = [up, down, mixed][(i + j) % 3]
      cases.append(
        GradientCase(op: "Resize", attributes: attributes, inputs: [values.tensor([1, 2, 4, 5]), nil, scales], checked: [0], opset: 19,
                     note: "nearest \(transform) \(rounding) scales \(scales.floats)"))
    }
    let rounding = roundings[i % 4]
    cases.append(
      GradientCase(
        op: "Resize",
        attributes: [string("mode", "nearest"), string("coordinate_transformation_mode", transform), string("nearest_mode", rounding)],
        inputs: [values.tensor([1, 2, 4, 5]), nil, nil, ints([1, 2] + tieFreeSizes[transform]!)], checked: [0], opset: 19,
        note: "nearest \(transform) \(rounding) sizes"))
  }
  // Whole-factor nearest upsampling (the FPN 2x; exact coordinates, floor rounding).
  cases.append(
    GradientCase(
      op: "Resize", attributes: [string("mode", "nearest"), string("coordinate_transformation_mode", "asymmetric"), string("nearest_mode", "floor")],
      inputs: [values.tensor([2, 2, 3, 4]), nil, floats([1, 1, 2, 2])], checked: [0], opset: 13, note: "nearest 2x asymmetric floor"))
  cases.append(
    GradientCase(
      op: "Resize", attributes: [string("mode", "nearest"), string("coordinate_transformation_mode", "asymmetric"), string("nearest_mode", "floor")],
      inputs: [values.tensor([1, 2, 3, 4]), nil, floats([1, 1, 3, 3])], checked: [0], opset: 13, note: "nearest 3x"))

  // Linear and cubic: every coordinate transform, scales up, down and mixed, and sizes.
  for mode in ["linear", "cubic"] {
    for (i, transform) in transforms.enumerated() {
      let attributes = [string("mode", mode), string("coordinate_transformation_mode", transform)]
      for (k, scales) in [up, down, mixed].enumerated() where (i + k) % 3 != 2 {
        cases.append(
          GradientCase(op: "Resize", attributes: attributes, inputs: [values.tensor([1, 2, 4, 5]), nil, scales], checked: [0], opset: 19,
                       note: "\(mode) \(transform) scales \(scales.floats)"))
      }
      let sizes: [Int64] = [[7, 3], [3, 8], [2, 2], [6, 9]][i % 4]
      cases.append(
        GradientCase(op: "Resize", attributes: attributes, inputs: [values.tensor([1, 2, 4, 5]), nil, nil, ints([1, 2] + sizes)],
                     checked: [0], opset: 19, note: "\(mode) \(transform) sizes \(sizes)"))
    }
    // Antialiased downsampling (wider filters), up and down on different axes.
    cases.append(
      GradientCase(
        op: "Resize", attributes: [string("mode", mode), int("antialias", 1)],
        inputs: [values.tensor([1, 2, 7, 9]), nil, floats([1, 1, 0.45, 0.6])], checked: [0], opset: 18, note: "\(mode) antialias down"))
    cases.append(
      GradientCase(
        op: "Resize", attributes: [string("mode", mode), int("antialias", 1), string("coordinate_transformation_mode", "align_corners")],
        inputs: [values.tensor([1, 1, 6, 4]), nil, floats([1, 1, 0.5, 1.75])], checked: [0], opset: 18,
        note: "\(mode) antialias mixed align_corners"))
    // tf_crop_and_resize: roi crops, positions outside the image take extrapolation_value.
    cases.append(
      GradientCase(
        op: "Resize",
        attributes: [string("mode", mode), string("coordinate_transformation_mode", "tf_crop_and_resize"), float("extrapolation_value", 0.5)],
        inputs: [values.tensor([1, 2, 4, 5]), floats([0, 0, -0.2, 0.1, 1, 1, 0.9, 1.3]), nil, ints([1, 2, 5, 6])], checked: [0],
        opset: 13, note: "\(mode) tf_crop_and_resize"))
    // The separable path: a resized axis before the last two, rank 3 and rank 1.
    cases.append(
      GradientCase(
        op: "Resize", attributes: [string("mode", mode)], inputs: [values.tensor([2, 3, 4, 2]), nil, floats([1, 1.5, 0.7, 1])], checked: [0],
        opset: 13, note: "\(mode) axis 1 and 2 (separable)"))
    cases.append(
      GradientCase(
        op: "Resize", attributes: [string("mode", mode), string("coordinate_transformation_mode", "align_corners")],
        inputs: [values.tensor([2, 3, 5]), nil, floats([1.5, 1, 1.3])], checked: [0], opset: 13, note: "\(mode) rank 3, axis 0"))
    cases.append(
      GradientCase(
        op: "Resize", attributes: [string("mode", mode), string("coordinate_transformation_mode", "asymmetric")],
        inputs: [values.tensor([7]), nil, floats([1.6])], checked: [0], opset: 13, note: "\(mode) rank 1"))
    cases.append(
      GradientCase(
        op: "Resize", attributes: [string("mode", mode), string("coordinate_transformation_mode", "tf_crop_and_resize")],
        inputs: [values.tensor([3, 2, 4]), floats([0.1, 0, 0.2, 1.2, 1, 0.7]), nil, ints([4, 2, 5])], checked: [0], opset: 13,
        note: "\(mode) tf_crop_and_resize separable"))
  }
  // Cubic coefficient and exclude_outside.
  cases.append(
    GradientCase(
      op: "Resize", attributes: [string("mode", "cubic"), float("cubic_coeff_a", -0.5), int("exclude_outside", 1)],
      inputs: [values.tensor([1, 2, 4, 5]), nil, floats([1, 1, 1.55, 0.7])], checked: [0], opset: 13, note: "cubic A -0.5 exclude_outside"))
  cases.append(
    GradientCase(
      op: "Resize", attributes: [string("mode", "cubic"), int("exclude_outside", 1), string("coordinate_transformation_mode", "asymmetric")],
      inputs: [values.tensor([2, 3, 4, 2]), nil, floats([1, 0.7, 1.3, 1])], checked: [0], opset: 13, note: "cubic exclude_outside separable"))
  // Opset 18: axes and keep_aspect_ratio_policy.
  cases.append(
    GradientCase(
      op: "Resize", attributes: [string("mode", "linear"), Attribute(name: "axes", value: .ints([-1, 2]))],
      inputs: [values.tensor([1, 2, 4, 5]), nil, floats([0.7, 1.55])], checked: [0], opset: 18, note: "linear axes [-1, 2]"))
  cases.append(
    GradientCase(
      op: "Resize", attributes: [string("mode", "cubic"), Attribute(name: "axes", value: .ints([1, 3]))],
      inputs: [values.tensor([1, 2, 4, 5]), nil, floats([1.5, 0.7])], checked: [0], opset: 18, note: "cubic axes [1, 3]"))
  for policy in ["not_larger", "not_smaller"] {
    cases.append(
      GradientCase(
        op: "Resize", attributes: [string("mode", "linear"), string("keep_aspect_ratio_policy", policy), Attribute(name: "axes", value: .ints([2, 3]))],
        inputs: [values.tensor([1, 2, 4, 5]), nil, nil, ints([7, 6])], checked: [0], opset: 18, note: "linear \(policy)"))
  }
  cases.append(
    GradientCase(
      op: "Resize", attributes: [string("mode", "nearest"), string("keep_aspect_ratio_policy", "not_larger"), string("nearest_mode", "floor")],
      inputs: [values.tensor([1, 2, 4, 5]), nil, nil, ints([1, 2, 9, 7])], checked: [0], opset: 18, note: "nearest not_larger"))
  // Older opsets: Resize-10 (X, scales; asymmetric, legacy rounding), Resize-11.
  for mode in ["nearest", "linear"] {
    cases.append(
      GradientCase(op: "Resize", attributes: [string("mode", mode)], inputs: [values.tensor([1, 2, 4, 5]), floats([1, 1, 1.55, 0.7])],
                   checked: [0], opset: 10, note: "opset 10 \(mode)"))
  }
  cases.append(
    GradientCase(
      op: "Resize", attributes: [string("mode", "cubic"), string("coordinate_transformation_mode", "align_corners")],
      inputs: [values.tensor([1, 2, 4, 5]), floats([]), floats([1, 1, 1.55, 1.3])], checked: [0], opset: 11, note: "opset 11 cubic"))

  // Upsample: opset 7 takes scales as an attribute, opset 9 as an input.
  for mode in ["nearest", "linear"] {
    cases.append(
      GradientCase(op: "Upsample", attributes: [string("mode", mode), Attribute(name: "scales", value: .floats([1, 1, 2, 1.5]))],
                   inputs: [values.tensor([1, 2, 3, 4])], opset: 7, note: "opset 7 \(mode)"))
    cases.append(
      GradientCase(op: "Upsample", attributes: [string("mode", mode)], inputs: [values.tensor([2, 2, 3, 4]), floats([1, 1, 2, 2])],
                   checked: [0], opset: 9, note: "opset 9 \(mode) 2x"))
    cases.append(
      GradientCase(op: "Upsample", attributes: [string("mode", mode)], inputs: [values.tensor([2, 3, 4]), floats([1.5, 1, 1.75])],
                   checked: [0], opset: 9, note: "opset 9 \(mode) rank 3"))
  }

  // GridSample: pixel coordinates at k + f with f in [0.15, 0.35] or [0.65, 0.85], so no sample
  // sits on a cell edge (kink of bilinear), a rounding tie of nearest or a padding bound (edges
  // and centers), some of them outside the image.
  func grid(_ batch: Int, _ height: Int, _ width: Int, inputHeight: Int, inputWidth: Int, alignCorners: Bool) -> Tensor {
    var result: [Float] = []
    for _ in 0..<batch * height * width {
      for length in [inputWidth, inputHeight] {
        let cell = Int(values.next() * Double(length + 4)) - 2
        let fraction = 0.15 + values.next() * 0.2 + (values.next() < 0.5 ? 0 : 0.5)
        let pixel = Double(cell) + fraction
        let l = Double(length)
        result.append(Float(alignCorners ? 2 * pixel / (l - 1) - 1 : (2 * pixel + 1) / l - 1))
      }
    }
    return Tensor(shape: [batch, height, width, 2], floats: result)
  }
  for mode in ["bilinear", "nearest", "bicubic"] {
    for padding in ["zeros", "border", "reflection"] {
      for align in [0, 1] {
        cases.append(
          GradientCase(
            op: "GridSample", attributes: [string("mode", mode), string("padding_mode", padding), int("align_corners", align)],
            inputs: [values.tensor([2, 2, 3, 4]), grid(2, 3, 2, inputHeight: 3, inputWidth: 4, alignCorners: align == 1)], opset: 16,
            step: 1e-3, note: "\(mode) \(padding) align_corners \(align)"))
      }
    }
  }
  cases.append(
    GradientCase(
      op: "GridSample", attributes: [string("mode", "linear"), string("padding_mode", "reflection")],
      inputs: [values.tensor([1, 3, 5, 4]), grid(1, 4, 3, inputHeight: 5, inputWidth: 4, alignCorners: false)], opset: 20, step: 1e-3,
      note: "opset 20 linear"))
  cases.append(
    GradientCase(
      op: "GridSample", attributes: [string("mode", "cubic"), string("padding_mode", "border"), int("align_corners", 1)],
      inputs: [values.tensor([1, 3, 5, 4]), grid(1, 4, 3, inputHeight: 5, inputWidth: 4, alignCorners: true)], opset: 20, step: 1e-3,
      note: "opset 20 cubic"))

  // RoiAlign: avg is linear in X; max takes one weighted corner per bin, so X is positive (the
  // largest candidates are not the near-zero ones of small weights) and the step small.
  let rois = Tensor(shape: [3, 4], floats: [0.3, 0.6, 4.2, 3.9, 1.1, 0.4, 5.7, 4.6, 2.2, 1.3, 2.6, 1.5])
  let doubled = Tensor(shape: [3, 4], floats: rois.floats.map { $0 * 2 })
  let batchIndices = ints([0, 1, 0])
  for mode in ["avg", "max"] {
    for opset in [10, 16] {
      for (ratio, scale) in [(2, Float(1)), (0, Float(0.5))] {
        let x = mode == "avg" ? values.tensor([2, 2, 5, 6]) : values.tensor([2, 2, 5, 6], 0.5, 1.5)
        cases.append(
          GradientCase(
            op: "RoiAlign",
            attributes: [string("mode", mode), int("output_height", 2), int("output_width", 3), int("sampling_ratio", ratio),
                         float("spatial_scale", scale)],
            inputs: [x, scale == 1 ? rois : doubled, batchIndices], checked: [0], opset: opset, step: mode == "max" ? 1e-4 : 1e-2,
            note: "\(mode) opset \(opset) sampling_ratio \(ratio) spatial_scale \(scale)"))
      }
    }
    cases.append(
      GradientCase(
        op: "RoiAlign",
        attributes: [string("mode", mode), string("coordinate_transformation_mode", "output_half_pixel"), int("output_height", 3),
                     int("output_width", 2)],
        inputs: [mode == "avg" ? values.tensor([2, 1, 6, 5]) : values.tensor([2, 1, 6, 5], 0.5, 1.5), rois, batchIndices], checked: [0],
        opset: 16, step: mode == "max" ? 1e-4 : 1e-2, note: "\(mode) opset 16 output_half_pixel"))
  }
  return cases
}()
