/// Numpy-style broadcasting (https://github.com/onnx/onnx/blob/main/docs/Broadcasting.md).
public enum Broadcast {
  /// The broadcast shape of `shapes`, or nil when two dims differ and neither is 1.
  public static func shape(_ shapes: [[Int]]) -> [Int]? {
    let rank = shapes.map(\.count).max() ?? 0
    var result = [Int](repeating: 1, count: rank)
    for shape in shapes {
      let offset = rank - shape.count
      for (axis, dim) in shape.enumerated() {
        let current = result[offset + axis]
        if current == 1 {
          result[offset + axis] = dim
        } else if dim != 1 && dim != current {
          return nil
        }
      }
    }
    return result
  }

  /// Element strides of `shape` read as `target` (0 along broadcast axes).
  public static func strides(of shape: [Int], broadcastTo target: [Int]) -> [Int] {
    let own = Tensor.strides(of: shape)
    let offset = target.count - shape.count
    return target.indices.map { axis in
      axis < offset || shape[axis - offset] == 1 ? 0 : own[axis - offset]
    }
  }

  /// Calls `body(outputIndex, aIndex, bIndex, count, aStep, bStep)` for runs along the last axis
  /// of `target`, where a and b are read with the given broadcast strides.
  @inline(__always)
  public static func forEachRow(
    _ target: [Int], _ aStrides: [Int], _ bStrides: [Int], _ body: (Int, Int, Int, Int, Int, Int) -> Void
  ) {
    let rank = target.count
    let total = target.reduce(1, *)
    guard total > 0 else { return }
    guard rank > 0 else {
      body(0, 0, 0, 1, 0, 0)
      return
    }
    let inner = target[rank - 1]
    let aStep = aStrides[rank - 1], bStep = bStrides[rank - 1]
    var counter = [Int](repeating: 0, count: rank)
    var aBase = 0, bBase = 0, out = 0
    while out < total {
      body(out, aBase, bBase, inner, aStep, bStep)
      out += inner
      var axis = rank - 2
      while axis >= 0 {
        counter[axis] += 1
        aBase += aStrides[axis]
        bBase += bStrides[axis]
        if counter[axis] < target[axis] { break }
        aBase -= aStrides[axis] * target[axis]
        bBase -= bStrides[axis] * target[axis]
        counter[axis] = 0
        axis -= 1
      }
    }
  }

  /// `a op b` elementwise with broadcasting.
  @inlinable
  public static func apply<T, U>(_ a: [T], _ aShape: [Int], _ b: [T], _ bShape: [Int], _ op: (T, T) -> U) -> ([U], [Int])? {
    guard let target = shape([aShape, bShape]) else { return nil }
    let total = target.reduce(1, *)
    if aShape == bShape {
      return (a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in (0..<total).map { op(pa[$0], pb[$0]) } } }, target)
    }
    let aStrides = strides(of: aShape, broadcastTo: target), bStrides = strides(of: bShape, broadcastTo: target)
    let result = [U](unsafeUninitializedCapacity: total) { out, initialized in
      a.withUnsafeBufferPointer { pa in
        b.withUnsafeBufferPointer { pb in
          forEachRow(target, aStrides, bStrides) { o, ia, ib, count, sa, sb in
            var ia = ia, ib = ib
            for k in 0..<count {
              (out.baseAddress! + o + k).initialize(to: op(pa[ia], pb[ib]))
              ia += sa
              ib += sb
            }
          }
        }
      }
      initialized = total
    }
    return (result, target)
  }

  /// Reads `values` of `shape` broadcast to `target` (for Expand and ternary ops).
  public static func expand<T>(_ values: [T], _ shape: [Int], to target: [Int]) -> [T] {
    if shape == target { return values }
    let total = target.reduce(1, *)
    let sourceStrides = strides(of: shape, broadcastTo: target)
    let zero = [Int](repeating: 0, count: target.count)
    return [T](unsafeUninitializedCapacity: total) { out, initialized in
      values.withUnsafeBufferPointer { source in
        forEachRow(target, sourceStrides, zero) { o, index, _, count, step, _ in
          var index = index
          for k in 0..<count {
            (out.baseAddress! + o + k).initialize(to: source[index])
            index += step
          }
        }
      }
      initialized = total
    }
  }
}
