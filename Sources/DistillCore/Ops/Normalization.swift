import Foundation

// Normalizations: BatchNormalization (inference and training mode), InstanceNormalization,
// LayerNormalization, LpNormalization, MeanVarianceNormalization.
// Specs: https://onnx.ai/onnx/operators/ (one page per operator).

let normalizationOperators: [(String, any Operator.Type)] = [
  ("BatchNormalization", BatchNormalization.self), ("InstanceNormalization", InstanceNormalization.self),
  ("LayerNormalization", LayerNormalization.self), ("LpNormalization", LpNormalization.self),
  ("MeanVarianceNormalization", MeanVarianceNormalization.self),
]

/// Operators that only `Fusion` creates (domain `Fusion.domain`).
let fusedOperators: [(String, any Operator.Type)] = [("GroupNormalization", FusedGroupNormalization.self)]

/// An array of `count` floats left uninitialized, for outputs whose every element gets written
/// (skips a zeroing pass over memory the kernel overwrites anyway).
func uninitializedFloats(_ count: Int) -> [Float] {
  [Float](unsafeUninitializedCapacity: count) { $1 = count }
}

/// `BatchNormalization(X, scale, B, input_mean, input_var)`:
/// `Y = (X - mean) / sqrt(var + epsilon) * scale + B` per channel (axis 1). At opset 7-8 with
/// `spatial` = 0 the parameters hold one value per element of a sample (`[C, D1, ...]`).
///
/// In training mode (`training_mode` = 1 from opset 14; before, when the node asks for more than Y)
/// the batch's own mean and population variance normalize X, and the running statistics come out
/// updated: `running = input * momentum + batch * (1 - momentum)`. Opset 14+ returns
/// `Y, running_mean, running_var`; earlier opsets `Y, mean, var, saved_mean, saved_var`.
///
/// When the interpreter runs in training (`ExecutionContext.training`, as PyTorch's `train()`),
/// any BatchNormalization normalizes with batch statistics and reports the new running statistics
/// for its `input_mean` and `input_var` values through `updateState`, updating the variance with
/// the unbiased batch variance as PyTorch does. With `ExecutionContext.syncBatchStatistics` the
/// batch is the union of every process's (PyTorch's `SyncBatchNorm`): means and variances are
/// taken over all processes' samples, in two passes as on one process.
struct BatchNormalization: Operator {
  let epsilon: Float
  let momentum: Float
  let spatial: Bool
  let training: Bool
  let legacyOutputs: Bool
  /// The values holding the running statistics (`input_mean`, `input_var`).
  let meanName: String
  let varianceName: String

  init(_ node: Node, _ setup: OperatorSetup) throws {
    epsilon = node.floatAttribute("epsilon") ?? 1e-5
    momentum = node.floatAttribute("momentum") ?? 0.9
    spatial = setup.opset >= 9 || (node.intAttribute("spatial") ?? 1) != 0
    legacyOutputs = setup.opset < 14
    if setup.opset >= 14 {
      training = (node.intAttribute("training_mode") ?? 0) != 0
    } else {
      training = node.outputs.dropFirst().contains { !$0.isEmpty }
    }
    meanName = node.inputs.count > 3 ? node.inputs[3] : ""
    varianceName = node.inputs.count > 4 ? node.inputs[4] : ""
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "X")
    let scale = try context.input(inputs, 1, "scale"), bias = try context.input(inputs, 2, "B")
    let mean = try context.input(inputs, 3, "input_mean"), variance = try context.input(inputs, 4, "input_var")
    guard x.isFloat else { throw context.error("input X is \(x.dtype), expected a floating-point tensor") }
    guard x.rank >= 2 else { throw context.error("input X has \(x.rank) dims, expected at least 2 (N, C, ...)") }
    let batch = x.shape[0], channels = x.shape[1]
    let spatialSize = x.shape.dropFirst(2).reduce(1, *)
    // `groups` parameters, each applying to runs of `run` consecutive elements of a sample.
    let groups = spatial ? channels : channels * spatialSize
    let run = spatial ? spatialSize : 1
    for (name, tensor) in [("scale", scale), ("B", bias), ("input_mean", mean), ("input_var", variance)] {
      guard tensor.count == groups else {
        throw context.error("input \(name) has shape \(tensor.shapeDescription), expected \(groups) values for X \(x.shapeDescription)")
      }
    }
    let s = scale.asFloats, b = bias.asFloats
    var m = mean.asFloats, v = variance.asFloats
    var batchMean: [Float] = [], batchVariance: [Float] = [], count = Float(batch * run)
    if training || context.training {
      (batchMean, batchVariance, count) = try statistics(x, batch: batch, groups: groups, run: run, across: context.syncBatchStatistics)
      m = batchMean
      v = batchVariance
    }
    var a = [Float](repeating: 0, count: groups), c = [Float](repeating: 0, count: groups)
    for g in 0..<groups {
      a[g] = s[g] / (v[g] + epsilon).squareRoot()
      c[g] = b[g] - m[g] * a[g]
    }
    var y = uninitializedFloats(x.count)
    x.floats.withUnsafeBufferPointer { xs in
      y.withUnsafeMutableBufferPointer { ys in
        a.withUnsafeBufferPointer { a in
          c.withUnsafeBufferPointer { c in
            let planes = batch * groups
            Parallel.forEachRange(planes, work: x.count) { range in
              for plane in range {
                let g = plane % groups, base = plane * run
                let scale = a[g], shift = c[g]
                for i in base..<(base + run) { ys[i] = xs[i] * scale + shift }
              }
            }
          }
        }
      }
    }
    let output = Tensor(shape: x.shape, floats: y, dtype: x.dtype).normalized()
    let keep = 1 - momentum
    let inputMean = mean.asFloats, inputVariance = variance.asFloats
    if context.training {
      let correction = count > 1 ? count / (count - 1) : 1
      let runningMean = (0..<groups).map { inputMean[$0] * momentum + batchMean[$0] * keep }
      let runningVariance = (0..<groups).map { inputVariance[$0] * momentum + batchVariance[$0] * correction * keep }
      if !meanName.isEmpty { context.updateState(meanName, Tensor(shape: mean.shape, floats: runningMean, dtype: mean.dtype).normalized()) }
      if !varianceName.isEmpty {
        context.updateState(varianceName, Tensor(shape: variance.shape, floats: runningVariance, dtype: variance.dtype).normalized())
      }
    }
    guard training else { return [output] }
    let runningMean = (0..<groups).map { inputMean[$0] * momentum + batchMean[$0] * keep }
    let runningVariance = (0..<groups).map { inputVariance[$0] * momentum + batchVariance[$0] * keep }
    func stat(_ values: [Float], like: Tensor) -> Tensor {
      Tensor(shape: like.shape, floats: values, dtype: like.dtype).normalized()
    }
    var outputs = [output, stat(runningMean, like: mean), stat(runningVariance, like: variance)]
    if legacyOutputs { outputs += [stat(batchMean, like: mean), stat(batchVariance, like: variance)] }
    return outputs
  }

  /// Mean and population variance of each parameter group over the batch, and the number of
  /// values each was taken over; with `replicas`, over the batches of all processes.
  private func statistics(_ x: Tensor, batch: Int, groups: Int, run: Int, across replicas: (any Collective)?) throws
    -> (mean: [Float], variance: [Float], count: Float)
  {
    var sums = [Double](repeating: 0, count: groups), squares = [Double](repeating: 0, count: groups)
    var count = Double(batch * run)
    try x.floats.withUnsafeBufferPointer { xs in
      for n in 0..<batch {
        for g in 0..<groups {
          let base = (n * groups + g) * run
          var sum: Double = 0
          for i in base..<(base + run) { sum += Double(xs[i]) }
          sums[g] += sum
        }
      }
      if let replicas {
        var shared = sums + [count]
        try replicas.sum(&shared)
        sums = Array(shared[0..<groups])
        count = shared[groups]
      }
      for g in 0..<groups { sums[g] /= count }
      for n in 0..<batch {
        for g in 0..<groups {
          let base = (n * groups + g) * run, m = sums[g]
          var sum: Double = 0
          for i in base..<(base + run) {
            let d = Double(xs[i]) - m
            sum += d * d
          }
          squares[g] += sum
        }
      }
      try replicas?.sum(&squares)
      for g in 0..<groups { squares[g] /= count }
    }
    return (sums.map { Float($0) }, squares.map { Float($0) }, Float(count))
  }
}

/// `InstanceNormalization(input, scale, B)`: each (sample, channel) plane normalized by its own
/// mean and population variance, then scaled and shifted per channel.
struct InstanceNormalization: Operator {
  let epsilon: Float

  init(_ node: Node, _ setup: OperatorSetup) throws {
    epsilon = node.floatAttribute("epsilon") ?? 1e-5
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "input")
    let scale = try context.input(inputs, 1, "scale"), bias = try context.input(inputs, 2, "B")
    guard x.isFloat else { throw context.error("input is \(x.dtype), expected a floating-point tensor") }
    guard x.rank >= 3 else { throw context.error("input has \(x.rank) dims, expected at least 3 (N, C, D1, ...)") }
    let channels = x.shape[1], size = x.shape.dropFirst(2).reduce(1, *)
    guard scale.count == channels else { throw context.error("input scale has \(scale.count) values, expected \(channels)") }
    guard bias.count == channels else { throw context.error("input B has \(bias.count) values, expected \(channels)") }
    let s = scale.asFloats, b = bias.asFloats, epsilon = Double(self.epsilon)
    var y = uninitializedFloats(x.count)
    x.floats.withUnsafeBufferPointer { xs in
      y.withUnsafeMutableBufferPointer { ys in
        Parallel.forEachRange(x.count / max(size, 1), work: x.count) { range in
          for plane in range {
            let base = plane * size, c = plane % channels
            let (mean, variance) = InstanceNormalization.moments(xs.baseAddress! + base, count: size)
            let a = Double(s[c]) / (variance + epsilon).squareRoot()
            let scale = Float(a), shift = Float(Double(b[c]) - mean * a)
            for i in base..<(base + size) { ys[i] = xs[i] * scale + shift }
          }
        }
      }
    }
    return [Tensor(shape: x.shape, floats: y, dtype: x.dtype).normalized()]
  }
}

/// Group normalization as PyTorch exports it, fused by `Fusion`: `X` [N, C, ...]
/// reshaped to [N, G, C/G * ...], InstanceNormalization with `group_scale`/`group_bias` [G], reshaped
/// back, times `scale` and plus `bias` (C values, broadcast per channel), then the fused activation:
/// `Y = act(((X - mean_g) / sqrt(var_g + epsilon) * group_scale_g + group_bias_g) * scale_c + bias_c)`.
/// Reads and writes 4-D tensors channels last as well.
struct FusedGroupNormalization: ChannelsLastDifferentiable {
  let epsilon: Float
  let activation: FusedActivation

  init(_ node: Node, _ setup: OperatorSetup) throws {
    epsilon = node.floatAttribute("epsilon") ?? 1e-5
    activation = FusedActivation(node)
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "X")
    let groupScale = try context.input(inputs, 1, "group_scale").asFloats, groupBias = try context.input(inputs, 2, "group_bias").asFloats
    let scale = try context.input(inputs, 3, "scale").asFloats, bias = try context.input(inputs, 4, "bias").asFloats
    guard x.isFloat, x.rank >= 3 else { throw context.error("input X is \(x.dtype) \(x.shapeDescription), expected a float tensor of at least 3 dims") }
    let (batch, channels, groups) = (x.shape[0], x.shape[1], groupScale.count)
    guard groups > 0, channels % groups == 0, groupBias.count == groups, scale.count == channels, bias.count == channels else {
      throw context.error(
        "X \(x.shapeDescription) with \(groupScale.count)/\(groupBias.count) group scales/biases and \(scale.count)/\(bias.count) channel scales/biases do not fit")
    }
    let size = x.count / max(1, batch * channels), perGroup = channels / groups
    let epsilon = Double(self.epsilon), activation = self.activation
    var y = uninitializedFloats(x.count)
    // Per (image, group): the affine map of each of its channels, y = x * a + b.
    var a = [Float](repeating: 0, count: batch * channels), b = a
    func affine(_ n: Int, _ g: Int, mean: Double, variance: Double) {
      let normalizer = Double(groupScale[g]) / (variance + epsilon).squareRoot()
      for c in (g * perGroup)..<((g + 1) * perGroup) {
        a[n * channels + c] = Float(normalizer * Double(scale[c]))
        b[n * channels + c] = Float((Double(groupBias[g]) - mean * normalizer) * Double(scale[c]) + Double(bias[c]))
      }
    }
    for (i, m) in FusedGroupNormalization.moments(x, groups: groups).enumerated() {
      affine(i / groups, i % groups, mean: m.mean, variance: m.variance)
    }
    x.floats.withUnsafeBufferPointer { xs in
      let xs = xs.baseAddress!
      let (scales, shifts) = (a, b)
      y.withUnsafeMutableBufferPointer { ys in
        scales.withUnsafeBufferPointer { scales in
          shifts.withUnsafeBufferPointer { shifts in
            let (ys, scales, shifts) = (ys.baseAddress!, scales.baseAddress!, shifts.baseAddress!)
            let rows = x.channelsLast ? batch * size : batch * channels
            Parallel.forEachRange(rows, work: x.count) { range in
              for row in range {
                if x.channelsLast {
                  let (xr, yr) = (xs + row * channels, ys + row * channels)
                  let (m, s) = (scales + row / size * channels, shifts + row / size * channels)
                  for c in 0..<channels { yr[c] = activation.apply(xr[c] * m[c] + s[c]) }
                } else {
                  let (xr, yr, m, s) = (xs + row * size, ys + row * size, scales[row], shifts[row])
                  for i in 0..<size { yr[i] = activation.apply(xr[i] * m + s) }
                }
              }
            }
          }
        }
      }
    }
    var result = Tensor(shape: x.shape, floats: y, dtype: x.dtype).normalized()
    result.channelsLast = x.channelsLast
    return [context.mayWriteChannelsLast || !x.channelsLast ? result : result.planar()]
  }

  /// Mean and population variance of each (image, group) of `x` (planar or channels last), in
  /// image-major order.
  static func moments(_ x: Tensor, groups: Int) -> [(mean: Double, variance: Double)] {
    let (batch, channels) = (x.shape[0], x.shape[1])
    let size = x.count / max(1, batch * channels), perGroup = channels / groups, count = Double(perGroup * size)
    var moments = [(mean: Double, variance: Double)](repeating: (0, 0), count: batch * groups)
    x.floats.withUnsafeBufferPointer { xs in
      let xs = xs.baseAddress!
      if !x.channelsLast {
        moments.withUnsafeMutableBufferPointer { moments in
          let moments = moments.baseAddress!
          Parallel.forEach(batch * groups, work: x.count) { i in
            moments[i] = InstanceNormalization.moments(xs + i * perGroup * size, count: perGroup * size)
          }
        }
        return
      }
      // Channels last: per-channel sums over the positions, then each group's moments.
      for n in 0..<batch {
        let (shift, sums, squares) = channelMoments(xs + n * size * channels, positions: size, channels: channels)
        for g in 0..<groups {
          let range = (g * perGroup)..<((g + 1) * perGroup)
          let mean = range.reduce(0) { $0 + sums[$1] + Double(size) * Double(shift[$1]) } / count
          // Sum over the group of (x - mean)^2 from each channel's sums around its shift K:
          // S2 + 2 (K - mean) S1 + positions (K - mean)^2.
          let spread = range.reduce(0.0) { total, c in
            let d = Double(shift[c]) - mean
            return total + squares[c] + 2 * d * sums[c] + Double(size) * d * d
          }
          moments[n * groups + g] = (mean, max(0, spread / count))
        }
      }
    }
    return moments
  }

  /// Per channel c of a channels-last image [positions, channels]: a shift K_c (its first value),
  /// and the sums of x - K_c and of (x - K_c)^2 over the positions (shifting keeps the squares'
  /// sum exact enough when the mean is large against the spread). Blocks of positions sum in Float,
  /// blocks add up in Double; positions split over the threads.
  static func channelMoments(_ image: UnsafePointer<Float>, positions: Int, channels: Int)
    -> (shift: [Float], sums: [Double], squares: [Double])
  {
    let shift = Array(UnsafeBufferPointer(start: image, count: channels))
    let chunks = min(positions, Parallel.threads * 2), block = 32
    var partials = [Double](repeating: 0, count: 2 * chunks * channels)
    partials.withUnsafeMutableBufferPointer { partials in
      shift.withUnsafeBufferPointer { shift in
        let (partials, k) = (partials.baseAddress!, shift.baseAddress!)
        Parallel.forEach(chunks, work: positions * channels) { chunk in
          let (sums, squares) = (partials + 2 * chunk * channels, partials + (2 * chunk + 1) * channels)
          let blockSums = UnsafeMutablePointer<Float>.allocate(capacity: 2 * channels)
          defer { blockSums.deallocate() }
          let blockSquares = blockSums + channels
          var p = positions * chunk / chunks
          let end = positions * (chunk + 1) / chunks
          while p < end {
            blockSums.initialize(repeating: 0, count: 2 * channels)
            for q in p..<min(p + block, end) {
              let row = image + q * channels
              for c in 0..<channels {
                let d = row[c] - k[c]
                blockSums[c] += d
                blockSquares[c] += d * d
              }
            }
            for c in 0..<channels {
              sums[c] += Double(blockSums[c])
              squares[c] += Double(blockSquares[c])
            }
            p += block
          }
        }
      }
    }
    let sums = (0..<channels).map { c in (0..<chunks).reduce(0) { $0 + partials[2 * $1 * channels + c] } }
    let squares = (0..<channels).map { c in (0..<chunks).reduce(0) { $0 + partials[(2 * $1 + 1) * channels + c] } }
    return (shift, sums, squares)
  }
}

extension FusedGroupNormalization {
  /// With xhat = (x - mean_g) * rstd_g, t = xhat * group_scale_g + group_bias_g and dz = dy times
  /// the activation's slope: d bias_c = sum dz, d scale_c = sum dz t, and with u = dz * scale_c,
  /// d group_bias_g = sum u, d group_scale_g = sum u xhat, dX = rstd (u s - mean(u s) - xhat
  /// mean(u s xhat)) over each group. dX comes in X's layout.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard var dy = outputGradients[0], let x = inputs[0], inputs.count == 5, inputs.allSatisfy({ $0 != nil }) else {
      return inputs.map { _ in nil }
    }
    var y = outputs[0]
    if y.channelsLast != x.channelsLast { y = x.channelsLast ? y.channelsLastCopy() : y.planar() }
    if dy.channelsLast != x.channelsLast { dy = x.channelsLast ? dy.channelsLastCopy() : dy.planar() }
    let groupScale = inputs[1]!.asFloats, groupBias = inputs[2]!.asFloats, scale = inputs[3]!.asFloats
    let (batch, channels, groups) = (x.shape[0], x.shape[1], groupScale.count)
    let size = x.count / max(1, batch * channels), perGroup = channels / groups, count = Double(perGroup * size)
    let channelsLast = x.channelsLast, activation = self.activation
    // dz, and per (image, channel) the mean and 1/sigma of its group.
    let dz = activation.backward(dy.floats, results: y.floats)
    let moments = FusedGroupNormalization.moments(x, groups: groups)
    var mean = [Double](repeating: 0, count: batch * channels), rstd = mean
    for n in 0..<batch {
      for c in 0..<channels {
        let m = moments[n * groups + c / perGroup]
        (mean[n * channels + c], rstd[n * channels + c]) = (m.mean, 1 / (m.variance + Double(epsilon)).squareRoot())
      }
    }
    // Per (image, channel): sum dz and sum dz * xhat.
    var sums = [Double](repeating: 0, count: 2 * batch * channels)
    x.floats.withUnsafeBufferPointer { xs in
      dz.withUnsafeBufferPointer { dz in
        sums.withUnsafeMutableBufferPointer { sums in
          mean.withUnsafeBufferPointer { mean in
            rstd.withUnsafeBufferPointer { rstd in
              let (xs, dz, sums, mean, rstd) = (xs.baseAddress!, dz.baseAddress!, sums.baseAddress!, mean.baseAddress!, rstd.baseAddress!)
              if !channelsLast {
                Parallel.forEach(batch * channels, work: x.count) { plane in
                  var (s1, s2) = (0.0, 0.0)
                  let (m, r) = (mean[plane], rstd[plane])
                  for i in (plane * size)..<((plane + 1) * size) {
                    s1 += Double(dz[i])
                    s2 += Double(dz[i]) * (Double(xs[i]) - m) * r
                  }
                  (sums[2 * plane], sums[2 * plane + 1]) = (s1, s2)
                }
                return
              }
              let chunks = min(size, Parallel.threads * 2)
              for n in 0..<batch {
                var partials = [Double](repeating: 0, count: 2 * chunks * channels)
                partials.withUnsafeMutableBufferPointer { partials in
                  let partials = partials.baseAddress!
                  let (m, r) = (mean + n * channels, rstd + n * channels)
                  Parallel.forEach(chunks, work: size * channels) { chunk in
                    let part = partials + 2 * chunk * channels
                    for p in (size * chunk / chunks)..<(size * (chunk + 1) / chunks) {
                      let (xr, gr) = (xs + (n * size + p) * channels, dz + (n * size + p) * channels)
                      for c in 0..<channels {
                        part[2 * c] += Double(gr[c])
                        part[2 * c + 1] += Double(gr[c]) * (Double(xr[c]) - m[c]) * r[c]
                      }
                    }
                  }
                  for chunk in 0..<chunks {
                    for k in 0..<(2 * channels) { sums[2 * n * channels + k] += partials[2 * chunk * channels + k] }
                  }
                }
              }
            }
          }
        }
      }
    }
    var dGroupScale = [Float](repeating: 0, count: groups), dGroupBias = dGroupScale
    var dScale = [Float](repeating: 0, count: channels), dBias = dScale
    // dX = a dz + b x + c per (image, channel).
    var a = [Float](repeating: 0, count: batch * channels), b = a, shift = a
    for n in 0..<batch {
      for g in 0..<groups {
        var (u1, u2) = (0.0, 0.0)
        for c in (g * perGroup)..<((g + 1) * perGroup) {
          let (s1, s2) = (sums[2 * (n * channels + c)], sums[2 * (n * channels + c) + 1])
          dBias[c] += Float(s1)
          dScale[c] += Float(Double(groupScale[g]) * s2 + Double(groupBias[g]) * s1)
          (u1, u2) = (u1 + Double(scale[c]) * s1, u2 + Double(scale[c]) * s2)
        }
        dGroupBias[g] += Float(u1)
        dGroupScale[g] += Float(u2)
        let (m1, m2) = (Double(groupScale[g]) * u1 / count, Double(groupScale[g]) * u2 / count)
        for c in (g * perGroup)..<((g + 1) * perGroup) {
          let i = n * channels + c, r = rstd[i]
          a[i] = Float(r * Double(scale[c]) * Double(groupScale[g]))
          b[i] = Float(-r * r * m2)
          shift[i] = Float(-r * m1 + r * r * m2 * mean[i])
        }
      }
    }
    let (slopes, weights, offsets) = (a, b, shift)
    var dx = Tensor(shape: x.shape, floats: uninitializedFloats(x.count), dtype: x.dtype)
    dx.channelsLast = channelsLast
    x.floats.withUnsafeBufferPointer { xs in
      dz.withUnsafeBufferPointer { dz in
        dx.floats.withUnsafeMutableBufferPointer { out in
          let (xs, dz, out) = (xs.baseAddress!, dz.baseAddress!, out.baseAddress!)
          let rows = channelsLast ? batch * size : batch * channels
          Parallel.forEachRange(rows, work: x.count) { range in
            for row in range {
              if channelsLast {
                let base = row * channels, image = row / size * channels
                for c in 0..<channels {
                  out[base + c] = slopes[image + c] * dz[base + c] + weights[image + c] * xs[base + c] + offsets[image + c]
                }
              } else {
                let (p, q, t) = (slopes[row], weights[row], offsets[row])
                for i in (row * size)..<((row + 1) * size) { out[i] = p * dz[i] + q * xs[i] + t }
              }
            }
          }
        }
      }
    }
    func like(_ index: Int, _ values: [Float]) -> Tensor { Tensor(shape: inputs[index]!.shape, floats: values, dtype: inputs[index]!.dtype) }
    return [dx, like(1, dGroupScale), like(2, dGroupBias), like(3, dScale), like(4, dBias)]
  }
}

extension InstanceNormalization {
  /// Mean and population variance of `count` values, accumulated in Double over eight interleaved
  /// partial sums (independent chains the CPU overlaps).
  static func moments(_ x: UnsafePointer<Float>, count: Int) -> (mean: Double, variance: Double) {
    func sum(_ term: (Double) -> Double) -> Double {
      var low = SIMD4<Double>(), high = SIMD4<Double>()
      var i = 0
      while i + 8 <= count {
        low += SIMD4(term(Double(x[i])), term(Double(x[i + 1])), term(Double(x[i + 2])), term(Double(x[i + 3])))
        high += SIMD4(term(Double(x[i + 4])), term(Double(x[i + 5])), term(Double(x[i + 6])), term(Double(x[i + 7])))
        i += 8
      }
      var total = (low + high).sum()
      while i < count {
        total += term(Double(x[i]))
        i += 1
      }
      return total
    }
    let mean = sum { $0 } / Double(max(count, 1))
    return (mean, sum { ($0 - mean) * ($0 - mean) } / Double(max(count, 1)))
  }
}

/// `LayerNormalization(X, Scale, B?)`: normalizes over the dims from `axis` (default -1) on,
/// `Y = (X - mean) * InvStdDev * Scale + B` with Scale and B broadcast to those dims. Also returns
/// `Mean` and `InvStdDev = 1 / sqrt(var + epsilon)` shaped like X with the normalized dims set to 1.
struct LayerNormalization: Operator {
  let axis: Int
  let epsilon: Float
  let stashType: DataType

  init(_ node: Node, _ setup: OperatorSetup) throws {
    axis = node.intAttribute("axis") ?? -1
    epsilon = node.floatAttribute("epsilon") ?? 1e-5
    stashType = DataType(rawValue: Int32(node.intAttribute("stash_type") ?? 1))
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "X")
    let scale = try context.input(inputs, 1, "Scale")
    let bias = inputs.count > 2 ? inputs[2] : nil
    guard x.isFloat else { throw context.error("input X is \(x.dtype), expected a floating-point tensor") }
    let rank = x.rank
    guard axis >= -rank && axis < rank else { throw context.error("axis \(axis) is out of range for input X of rank \(rank)") }
    let axis = self.axis < 0 ? self.axis + rank : self.axis
    let normalizedShape = Array(x.shape[axis...])
    let rows = x.shape[..<axis].reduce(1, *), n = normalizedShape.reduce(1, *)
    func expand(_ tensor: Tensor, _ name: String) throws -> [Float] {
      guard Broadcast.shape([normalizedShape, tensor.shape]) == normalizedShape else {
        throw context.error("input \(name) \(tensor.shapeDescription) does not broadcast to the normalized dims \(normalizedShape)")
      }
      return Broadcast.expand(tensor.asFloats, tensor.shape, to: normalizedShape)
    }
    let s = try expand(scale, "Scale")
    let b = try bias.map { try expand($0, "B") } ?? [Float](repeating: 0, count: n)
    var y = uninitializedFloats(x.count)
    var means = [Float](repeating: 0, count: rows), inverses = [Float](repeating: 0, count: rows)
    let epsilon = Double(self.epsilon)
    x.floats.withUnsafeBufferPointer { xs in
      y.withUnsafeMutableBufferPointer { ys in
        means.withUnsafeMutableBufferPointer { means in
          inverses.withUnsafeMutableBufferPointer { inverses in
            s.withUnsafeBufferPointer { s in
              b.withUnsafeBufferPointer { b in
                Parallel.forEachRange(rows, work: x.count) { range in
                  for row in range {
                    let base = row * n
                    var sum: Double = 0
                    for i in 0..<n { sum += Double(xs[base + i]) }
                    let mean = n > 0 ? sum / Double(n) : 0
                    var squares: Double = 0
                    for i in 0..<n {
                      let d = Double(xs[base + i]) - mean
                      squares += d * d
                    }
                    let inverse = 1 / ((n > 0 ? squares / Double(n) : 0) + epsilon).squareRoot()
                    means[row] = Float(mean)
                    inverses[row] = Float(inverse)
                    let m = Float(mean), r = Float(inverse)
                    for i in 0..<n { ys[base + i] = (xs[base + i] - m) * r * s[i] + b[i] }
                  }
                }
              }
            }
          }
        }
      }
    }
    let statShape = Array(x.shape[..<axis]) + [Int](repeating: 1, count: rank - axis)
    let statType = stashType.isFloatingPoint ? stashType : .float
    return [
      Tensor(shape: x.shape, floats: y, dtype: x.dtype).normalized(),
      Tensor(shape: statShape, floats: means, dtype: statType).normalized(),
      Tensor(shape: statShape, floats: inverses, dtype: statType).normalized(),
    ]
  }
}

/// `LpNormalization`: divides by the L1 (`p` = 1) or L2 (`p` = 2, default) norm along `axis`
/// (default -1). Slices whose norm is 0 come out as 0.
struct LpNormalization: Operator {
  let axis: Int
  let p: Int

  init(_ node: Node, _ setup: OperatorSetup) throws {
    axis = node.intAttribute("axis") ?? -1
    p = node.intAttribute("p") ?? 2
    guard p == 1 || p == 2 else { throw setup.error("attribute p is \(p), expected 1 or 2") }
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "input")
    guard x.isFloat else { throw context.error("input is \(x.dtype), expected a floating-point tensor") }
    let rank = x.rank
    guard axis >= -rank && axis < rank else { throw context.error("axis \(axis) is out of range for input of rank \(rank)") }
    let axis = self.axis < 0 ? self.axis + rank : self.axis
    let outer = x.shape[..<axis].reduce(1, *), n = x.shape[axis], inner = x.shape[(axis + 1)...].reduce(1, *)
    var y = x.floats
    let p = self.p
    y.withUnsafeMutableBufferPointer { ys in
      var norms = [Float](repeating: 0, count: inner)
      for o in 0..<outer {
        let base = o * n * inner
        for i in 0..<inner { norms[i] = 0 }
        for j in 0..<n {
          let row = base + j * inner
          for i in 0..<inner { norms[i] += p == 1 ? abs(ys[row + i]) : ys[row + i] * ys[row + i] }
        }
        for i in 0..<inner {
          let norm = p == 1 ? norms[i] : norms[i].squareRoot()
          norms[i] = norm == 0 ? 0 : 1 / norm
        }
        for j in 0..<n {
          let row = base + j * inner
          for i in 0..<inner { ys[row + i] *= norms[i] }
        }
      }
    }
    return [Tensor(shape: x.shape, floats: y, dtype: x.dtype).normalized()]
  }
}

/// `MeanVarianceNormalization`: `(X - mean) / (sqrt(variance) + 1e-9)` with mean and population
/// variance taken over `axes` (default [0, 2, 3]), as the spec's function body computes it.
struct MeanVarianceNormalization: Operator {
  let axes: [Int]

  init(_ node: Node, _ setup: OperatorSetup) throws {
    axes = node.intsAttribute("axes") ?? [0, 2, 3]
  }

  func forward(_ inputs: [Tensor?], _ context: ExecutionContext) throws -> [Tensor] {
    let x = try context.input(inputs, 0, "X")
    guard x.isFloat else { throw context.error("input X is \(x.dtype), expected a floating-point tensor") }
    let rank = x.rank
    var reduced = [Bool](repeating: false, count: rank)
    for axis in axes {
      guard axis >= -rank && axis < rank else { throw context.error("axis \(axis) is out of range for input X of rank \(rank)") }
      reduced[axis < 0 ? axis + rank : axis] = true
    }
    guard x.count > 0 else { return [x] }
    // Statistics are indexed by the kept dims (stride 0 along reduced ones).
    let statShape = (0..<rank).map { reduced[$0] ? 1 : x.shape[$0] }
    let statStrides = Broadcast.strides(of: statShape, broadcastTo: x.shape)
    let statCount = statShape.reduce(1, *)
    let perStat = Double(x.count / statCount)
    let inputStrides = x.strides
    var means = [Double](repeating: 0, count: statCount), deviations = [Double](repeating: 0, count: statCount)
    var y = uninitializedFloats(x.count)
    x.floats.withUnsafeBufferPointer { xs in
      Broadcast.forEachRow(x.shape, inputStrides, statStrides) { _, i, s, count, _, step in
        for k in 0..<count { means[s + k * step] += Double(xs[i + k]) }
      }
      for index in means.indices { means[index] /= perStat }
      Broadcast.forEachRow(x.shape, inputStrides, statStrides) { _, i, s, count, _, step in
        for k in 0..<count {
          let d = Double(xs[i + k]) - means[s + k * step]
          deviations[s + k * step] += d * d
        }
      }
      let scales = deviations.map { 1 / (($0 / perStat).squareRoot() + 1e-9) }
      Broadcast.forEachRow(x.shape, inputStrides, statStrides) { _, i, s, count, _, step in
        for k in 0..<count {
          let stat = s + k * step
          y[i + k] = Float((Double(xs[i + k]) - means[stat]) * scales[stat])
        }
      }
    }
    return [Tensor(shape: x.shape, floats: y, dtype: x.dtype).normalized()]
  }
}

// MARK: - Gradients

extension BatchNormalization: DifferentiableOperator {
  /// With running statistics (inference), the op is a per-channel affine map:
  /// `dX = dY * scale / sqrt(var + epsilon)`, `dscale = sum(dY * xhat)`, `dB = sum(dY)`. With batch
  /// statistics (`training_mode`, or `context.training`: the tape passes on the recorded pass's
  /// flag) the gradient also flows through the batch mean and variance, recomputed here from X:
  /// `dX = scale / sqrt(var + epsilon) * (dY - mean(dY) - xhat * mean(dY * xhat))`, plus what the
  /// running (and, before opset 14, saved) statistics outputs pass back. `input_mean` and
  /// `input_var` are state, not parameters: they get no gradient. Synchronized
  /// (`syncBatchStatistics`), the statistics and the sums `sum(dY)`, `sum(dY * xhat)` in dX are
  /// those over all processes (as PyTorch's `SyncBatchNorm`); dscale and dB stay this process's
  /// share, for the trainer to sum with the other gradients.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    let none = inputs.map { _ -> Tensor? in nil }
    guard inputs.count >= 5, let x = inputs[0], x.isFloat, x.rank >= 2, let scale = inputs[1], let bias = inputs[2],
      let mean = inputs[3], let variance = inputs[4]
    else { return none }
    let batchStatistics = training || context.training
    func outputGradient(_ index: Int) -> [Float]? {
      guard batchStatistics || index == 0, index < outputGradients.count, let gradient = outputGradients[index] else { return nil }
      return gradient.floats
    }
    let dy = outputGradient(0)
    // The statistics outputs: running mean and variance, then (before opset 14) the batch's.
    let statistics = (1...4).map(outputGradient)
    guard dy != nil || statistics.contains(where: { $0 != nil }) else { return none }
    let batch = x.shape[0], channels = x.shape[1]
    let spatialSize = x.shape.dropFirst(2).reduce(1, *)
    let groups = spatial ? channels : channels * spatialSize
    let run = spatial ? spatialSize : 1
    guard scale.count == groups, mean.count == groups, variance.count == groups else { return none }
    var m = mean.asFloats, v = variance.asFloats, count = Float(batch * run)
    let replicas = batchStatistics ? context.syncBatchStatistics : nil
    if batchStatistics { (m, v, count) = try self.statistics(x, batch: batch, groups: groups, run: run, across: replicas) }
    let inverse = (0..<groups).map { 1 / (v[$0] + epsilon).squareRoot() }
    let s = scale.asFloats
    let planes = batch * groups
    // Per plane: sum(dY) and sum(dY * xhat).
    var planeSums = [Double](repeating: 0, count: 2 * planes)
    if let dy {
      x.floats.withUnsafeBufferPointer { xs in
        dy.withUnsafeBufferPointer { gs in
          planeSums.withUnsafeMutableBufferPointer { sums in
            Parallel.forEachRange(planes, work: x.count) { range in
              for plane in range {
                let g = plane % groups, base = plane * run, mu = m[g]
                var sum: Float = 0, dot: Float = 0
                for i in base..<(base + run) {
                  sum += gs[i]
                  dot += gs[i] * (xs[i] - mu)
                }
                sums[2 * plane] = Double(sum)
                sums[2 * plane + 1] = Double(dot) * Double(inverse[g])
              }
            }
          }
        }
      }
    }
    var sumDy = [Double](repeating: 0, count: groups), sumDyXhat = [Double](repeating: 0, count: groups)
    for plane in 0..<planes {
      sumDy[plane % groups] += planeSums[2 * plane]
      sumDyXhat[plane % groups] += planeSums[2 * plane + 1]
    }
    // The batch's sums, and the gradients reaching the statistics outputs: every process's.
    var batchSums = sumDy + sumDyXhat + (0..<4).flatMap { k in (0..<groups).map { Double(statistics[k]?[$0] ?? 0) } }
    if let replicas { try replicas.sum(&batchSums) }
    func batchSum(_ part: Int, _ g: Int) -> Float { Float(batchSums[part * groups + g]) }
    // dX = p * dY + q * (X - mean) + r per group.
    let keep = 1 - momentum
    var p = [Float](repeating: 0, count: groups), q = p, r = p
    for g in 0..<groups {
      let a = s[g] * inverse[g]
      p[g] = a
      if batchStatistics {
        let meanGradient = (keep * batchSum(2, g) + batchSum(4, g)) / count
        let varianceGradient = 2 * (keep * batchSum(3, g) + batchSum(5, g)) / count
        q[g] = varianceGradient - a * inverse[g] * batchSum(1, g) / count
        r[g] = meanGradient - a * batchSum(0, g) / count
      }
    }
    var dx = uninitializedFloats(x.count)
    x.floats.withUnsafeBufferPointer { xs in
      dx.withUnsafeMutableBufferPointer { dxs in
        let zeros = [Float](repeating: 0, count: dy == nil ? run : 0)
        (dy ?? zeros).withUnsafeBufferPointer { gs in
          let step = dy == nil ? 0 : 1
          Parallel.forEachRange(planes, work: x.count) { range in
            for plane in range {
              let g = plane % groups, base = plane * run
              let p = p[g], q = q[g], r = r[g], mu = m[g]
              for i in base..<(base + run) { dxs[i] = p * gs[i * step] + q * (xs[i] - mu) + r }
            }
          }
        }
      }
    }
    let dScale = Tensor(shape: scale.shape, floats: sumDyXhat.map { Float($0) }, dtype: scale.dtype)
    let dBias = Tensor(shape: bias.shape, floats: sumDy.map { Float($0) }, dtype: bias.dtype)
    return [Tensor(shape: x.shape, floats: dx, dtype: x.dtype), scale.isFloat ? dScale : nil, bias.isFloat ? dBias : nil]
      + inputs.dropFirst(3).map { _ in nil }
  }
}

extension InstanceNormalization: DifferentiableOperator {
  /// Per (sample, channel) plane with xhat = (x - mean) / sqrt(var + epsilon):
  /// `dX = scale / sqrt(var + epsilon) * (dY - mean(dY) - xhat * mean(dY * xhat))`,
  /// `dscale = sum(dY * xhat)`, `dB = sum(dY)` over the batch and the plane.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat, x.rank >= 3, let scale = inputs[1], let bias = inputs[2] else {
      return inputs.map { _ in nil }
    }
    let channels = x.shape[1], size = x.shape.dropFirst(2).reduce(1, *)
    let planes = size > 0 ? x.count / size : 0
    let s = scale.asFloats, epsilon = Double(self.epsilon)
    var dx = [Float](repeating: 0, count: x.count)
    // Per plane: sum(dY) and sum(dY * xhat).
    var sums = [Double](repeating: 0, count: 2 * planes)
    x.floats.withUnsafeBufferPointer { xs in
      dy.floats.withUnsafeBufferPointer { gs in
        dx.withUnsafeMutableBufferPointer { dxs in
          sums.withUnsafeMutableBufferPointer { sums in
            Parallel.forEachRange(planes, work: 2 * x.count) { range in
              for plane in range {
                let base = plane * size, c = plane % channels
                var sum: Double = 0
                for i in base..<(base + size) { sum += Double(xs[i]) }
                let mean = sum / Double(size)
                var squares: Double = 0, dySum: Double = 0, dot: Double = 0
                for i in base..<(base + size) {
                  let d = Double(xs[i]) - mean
                  squares += d * d
                  dySum += Double(gs[i])
                  dot += Double(gs[i]) * d
                }
                let inverse = 1 / (squares / Double(size) + epsilon).squareRoot()
                dot *= inverse
                sums[2 * plane] = dySum
                sums[2 * plane + 1] = dot
                let a = Float(Double(s[c]) * inverse), mu = Float(mean), iv = Float(inverse)
                let meanDy = Float(dySum / Double(size)), meanDot = Float(dot / Double(size))
                for i in base..<(base + size) { dxs[i] = a * (gs[i] - meanDy - (xs[i] - mu) * iv * meanDot) }
              }
            }
          }
        }
      }
    }
    var dScale = [Float](repeating: 0, count: channels), dBias = dScale
    for plane in 0..<planes {
      dBias[plane % channels] += Float(sums[2 * plane])
      dScale[plane % channels] += Float(sums[2 * plane + 1])
    }
    return [
      Tensor(shape: x.shape, floats: dx, dtype: x.dtype),
      scale.isFloat ? Tensor(shape: scale.shape, floats: dScale, dtype: scale.dtype) : nil,
      bias.isFloat ? Tensor(shape: bias.shape, floats: dBias, dtype: bias.dtype) : nil,
    ]
  }
}

extension LayerNormalization: DifferentiableOperator {
  /// Per row of the normalized dims, with the recorded Mean and InvStdDev r:
  /// `dX = r * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))` where `dxhat = dY * Scale`;
  /// `dScale = sum(dY * xhat)` and `dB = sum(dY)` over the rows, in the normalized dims' shape
  /// (the tape sums them down to a broadcast Scale or B). Gradients into the Mean and InvStdDev
  /// outputs are not propagated.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    let none = inputs.map { _ -> Tensor? in nil }
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat, let scale = inputs[1], outputs.count >= 3 else { return none }
    let bias = inputs.count > 2 ? inputs[2] : nil
    let rank = x.rank
    let axis = self.axis < 0 ? self.axis + rank : self.axis
    guard axis >= 0 && axis < rank else { return none }
    let normalizedShape = Array(x.shape[axis...])
    let rows = x.shape[..<axis].reduce(1, *), n = normalizedShape.reduce(1, *)
    let s = Broadcast.expand(scale.asFloats, scale.shape, to: normalizedShape)
    let means = outputs[1].floats, inverses = outputs[2].floats
    var dx = [Float](repeating: 0, count: x.count)
    // Each chunk of rows sums its own dScale and dB (rows of `n`), added up after.
    let chunks = max(1, min(rows, Parallel.threads * 4))
    var partial = [Float](repeating: 0, count: 2 * chunks * n)
    x.floats.withUnsafeBufferPointer { xs in
      dy.floats.withUnsafeBufferPointer { gs in
        dx.withUnsafeMutableBufferPointer { dxs in
          partial.withUnsafeMutableBufferPointer { partial in
            s.withUnsafeBufferPointer { s in
              Parallel.forEach(chunks, work: 2 * x.count) { chunk in
                let dScale = partial.baseAddress! + 2 * chunk * n, dBias = dScale + n
                for row in (rows * chunk / chunks)..<(rows * (chunk + 1) / chunks) {
                  let base = row * n, mu = means[row], r = inverses[row]
                  var sum: Float = 0, dot: Float = 0
                  for i in 0..<n {
                    let g = gs[base + i], xhat = (xs[base + i] - mu) * r, dxhat = g * s[i]
                    dScale[i] += g * xhat
                    dBias[i] += g
                    sum += dxhat
                    dot += dxhat * xhat
                  }
                  let meanSum = sum / Float(n), meanDot = dot / Float(n)
                  for i in 0..<n {
                    let xhat = (xs[base + i] - mu) * r
                    dxs[base + i] = r * (gs[base + i] * s[i] - meanSum - xhat * meanDot)
                  }
                }
              }
            }
          }
        }
      }
    }
    var dScale = [Float](repeating: 0, count: n), dBias = dScale
    for chunk in 0..<chunks {
      for i in 0..<n {
        dScale[i] += partial[2 * chunk * n + i]
        dBias[i] += partial[(2 * chunk + 1) * n + i]
      }
    }
    var result: [Tensor?] = [
      Tensor(shape: x.shape, floats: dx, dtype: x.dtype),
      scale.isFloat ? Tensor(shape: normalizedShape, floats: dScale, dtype: scale.dtype) : nil,
    ]
    if inputs.count > 2 { result.append(bias?.isFloat == true ? Tensor(shape: normalizedShape, floats: dBias, dtype: bias!.dtype) : nil) }
    return result
  }
}

extension LpNormalization: DifferentiableOperator {
  /// y = x / |x|_p along the axis: `dx = (dy - d|x|_p/dx * sum(dy * y)) / |x|_p`, where
  /// d|x|_p/dx is y for p = 2 and sign(x) for p = 1. Slices whose norm is 0 get no gradient.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat else { return [nil] }
    let rank = x.rank
    let axis = self.axis < 0 ? self.axis + rank : self.axis
    guard axis >= 0 && axis < rank else { return [nil] }
    let outer = x.shape[..<axis].reduce(1, *), n = x.shape[axis], inner = x.shape[(axis + 1)...].reduce(1, *)
    let p = self.p
    var dx = [Float](repeating: 0, count: x.count)
    x.floats.withUnsafeBufferPointer { xs in
      outputs[0].floats.withUnsafeBufferPointer { ys in
        dy.floats.withUnsafeBufferPointer { gs in
          dx.withUnsafeMutableBufferPointer { dxs in
            Parallel.forEachRange(outer, work: 3 * x.count) { range in
              var norms = [Float](repeating: 0, count: inner), dots = norms
              for o in range {
                let base = o * n * inner
                for i in 0..<inner { (norms[i], dots[i]) = (0, 0) }
                for j in 0..<n {
                  let row = base + j * inner
                  for i in 0..<inner {
                    let v = xs[row + i]
                    norms[i] += p == 1 ? abs(v) : v * v
                    dots[i] += gs[row + i] * ys[row + i]
                  }
                }
                for i in 0..<inner {
                  let norm = p == 1 ? norms[i] : norms[i].squareRoot()
                  norms[i] = norm == 0 ? 0 : 1 / norm
                }
                for j in 0..<n {
                  let row = base + j * inner
                  for i in 0..<inner {
                    let v = xs[row + i]
                    let direction = p == 1 ? (v > 0 ? 1 : (v < 0 ? -1 : 0)) : ys[row + i]
                    dxs[row + i] = (gs[row + i] - direction * dots[i]) * norms[i]
                  }
                }
              }
            }
          }
        }
      }
    }
    return [Tensor(shape: x.shape, floats: dx, dtype: x.dtype)]
  }
}

extension MeanVarianceNormalization: DifferentiableOperator {
  /// y = (x - mean) / D with D = sigma + 1e-9 over the reduced axes (M elements each):
  /// `dx = (dy - mean(dy)) / D - (x - mean) * sum(dy * (x - mean)) / (M * sigma * D^2)`.
  func backward(_ inputs: [Tensor?], _ outputs: [Tensor], _ outputGradients: [Tensor?], _ context: ExecutionContext) throws
    -> [Tensor?]
  {
    guard let dy = outputGradients[0], let x = inputs[0], x.isFloat, x.count > 0 else { return [nil] }
    let rank = x.rank
    var reduced = [Bool](repeating: false, count: rank)
    for axis in axes where axis >= -rank && axis < rank { reduced[axis < 0 ? axis + rank : axis] = true }
    let statShape = (0..<rank).map { reduced[$0] ? 1 : x.shape[$0] }
    let statStrides = Broadcast.strides(of: statShape, broadcastTo: x.shape)
    let statCount = statShape.reduce(1, *)
    let perStat = Double(x.count / statCount)
    let inputStrides = x.strides
    var means = [Double](repeating: 0, count: statCount), deviations = means, dyMeans = means, dots = means
    var dx = [Float](repeating: 0, count: x.count)
    x.floats.withUnsafeBufferPointer { xs in
      dy.floats.withUnsafeBufferPointer { gs in
        Broadcast.forEachRow(x.shape, inputStrides, statStrides) { _, i, s, count, _, step in
          for k in 0..<count {
            means[s + k * step] += Double(xs[i + k])
            dyMeans[s + k * step] += Double(gs[i + k])
          }
        }
        for index in means.indices {
          means[index] /= perStat
          dyMeans[index] /= perStat
        }
        Broadcast.forEachRow(x.shape, inputStrides, statStrides) { _, i, s, count, _, step in
          for k in 0..<count {
            let d = Double(xs[i + k]) - means[s + k * step]
            deviations[s + k * step] += d * d
            dots[s + k * step] += Double(gs[i + k]) * d
          }
        }
        // Per statistic: 1 / D and the factor of (x - mean) in the second term.
        var inverses = deviations, factors = deviations
        for index in deviations.indices {
          let sigma = (deviations[index] / perStat).squareRoot(), d = sigma + 1e-9
          inverses[index] = 1 / d
          factors[index] = sigma > 0 ? dots[index] / (perStat * sigma * d * d) : 0
        }
        Broadcast.forEachRow(x.shape, inputStrides, statStrides) { _, i, s, count, _, step in
          for k in 0..<count {
            let stat = s + k * step
            let centered = Double(xs[i + k]) - means[stat]
            dx[i + k] = Float((Double(gs[i + k]) - dyMeans[stat]) * inverses[stat] - centered * factors[stat])
          }
        }
      }
    }
    return [Tensor(shape: x.shape, floats: dx, dtype: x.dtype)]
  }
}
