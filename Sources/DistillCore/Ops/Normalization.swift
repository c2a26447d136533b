import Foundation

// Normalizations: BatchNormalization (inference and training mode), InstanceNormalization,
// LayerNormalization, LpNormalization, MeanVarianceNormalization.
// Specs: https://onnx.ai/onnx/operators/ (one page per operator).

let normalizationOperators: [(String, any Operator.Type)] = [
  ("BatchNormalization", BatchNormalization.self), ("InstanceNormalization", InstanceNormalization.self),
  ("LayerNormalization", LayerNormalization.self), ("LpNormalization", LpNormalization.self),
  ("MeanVarianceNormalization", MeanVarianceNormalization.self),
]

/// Runs `body` over `0..<count` split into contiguous ranges, on every core (`Parallel`) when
/// `work` (elements touched) is large.
private func normalizationParallel(_ count: Int, work: Int, _ body: (Range<Int>) -> Void) {
  let chunks = min(count, max(1, Parallel.threads * 4))
  Parallel.forEach(chunks, work: work) { chunk in
    let range = (count * chunk / chunks)..<(count * (chunk + 1) / chunks)
    if !range.isEmpty { body(range) }
  }
}

/// An array of `count` floats left uninitialized, for outputs whose every element gets written
/// (skips a zeroing pass over memory the kernel overwrites anyway).
private func uninitializedFloats(_ count: Int) -> [Float] {
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
struct BatchNormalization: Operator {
  let epsilon: Float
  let momentum: Float
  let spatial: Bool
  let training: Bool
  let legacyOutputs: Bool

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
    var batchMean: [Float] = [], batchVariance: [Float] = []
    if training {
      (batchMean, batchVariance) = statistics(x, batch: batch, groups: groups, run: run)
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
            normalizationParallel(planes, work: x.count) { range in
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
    guard training else { return [output] }
    let keep = 1 - momentum
    let inputMean = mean.asFloats, inputVariance = variance.asFloats
    let runningMean = (0..<groups).map { inputMean[$0] * momentum + batchMean[$0] * keep }
    let runningVariance = (0..<groups).map { inputVariance[$0] * momentum + batchVariance[$0] * keep }
    func stat(_ values: [Float], like: Tensor) -> Tensor {
      Tensor(shape: like.shape, floats: values, dtype: like.dtype).normalized()
    }
    var outputs = [output, stat(runningMean, like: mean), stat(runningVariance, like: variance)]
    if legacyOutputs { outputs += [stat(batchMean, like: mean), stat(batchVariance, like: variance)] }
    return outputs
  }

  /// Mean and population variance of each parameter group over the batch.
  private func statistics(_ x: Tensor, batch: Int, groups: Int, run: Int) -> ([Float], [Float]) {
    var sums = [Double](repeating: 0, count: groups), squares = [Double](repeating: 0, count: groups)
    x.floats.withUnsafeBufferPointer { xs in
      for n in 0..<batch {
        for g in 0..<groups {
          let base = (n * groups + g) * run
          var sum: Double = 0
          for i in base..<(base + run) { sum += Double(xs[i]) }
          sums[g] += sum
        }
      }
      let count = Double(batch * run)
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
      for g in 0..<groups { squares[g] /= count }
    }
    return (sums.map { Float($0) }, squares.map { Float($0) })
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
        normalizationParallel(x.count / max(size, 1), work: x.count) { range in
          for plane in range {
            let base = plane * size, c = plane % channels
            var sum: Double = 0
            for i in base..<(base + size) { sum += Double(xs[i]) }
            let mean = sum / Double(size)
            var squares: Double = 0
            for i in base..<(base + size) {
              let d = Double(xs[i]) - mean
              squares += d * d
            }
            let a = Double(s[c]) / (squares / Double(size) + epsilon).squareRoot()
            let scale = Float(a), shift = Float(Double(b[c]) - mean * a)
            for i in base..<(base + size) { ys[i] = xs[i] * scale + shift }
          }
        }
      }
    }
    return [Tensor(shape: x.shape, floats: y, dtype: x.dtype).normalized()]
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
                normalizationParallel(rows, work: x.count) { range in
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
