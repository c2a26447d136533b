import DistillCore

/// How a loss builder reduces its per-element loss (after multiplying by the weights, if any).
public enum LossReduction: String, Sendable, CaseIterable {
  /// The weighted per-element loss, shaped like the broadcast of the inputs.
  case none
  /// The sum of the weighted per-element loss, a scalar.
  case sum
  /// The mean of the weighted per-element loss over its elements, a scalar (PyTorch's `mean`).
  case mean
}

/// Detection losses emitted as standard ONNX nodes (see `GraphBuilder`), one builder per loss.
/// Each takes value names in the builder's graph and returns the name of the loss value; the tape
/// differentiates the nodes, so each loss's gradient is that of the ops it is made of.
extension GraphBuilder {
  /// Multiplies `loss` by `weight` (broadcasting) when given, then reduces as asked.
  public mutating func reduced(_ loss: String, weight: String? = nil, _ reduction: LossReduction) -> String {
    let weighted = weight.map { mul(loss, $0) } ?? loss
    switch reduction {
    case .none: return weighted
    case .sum: return reduceSum(weighted)
    case .mean: return add("ReduceMean", [weighted], [.int("keepdims", 0)])
    }
  }

  /// `1 - x`.
  mutating func oneMinus(_ x: String) -> String { sub(scalar(1), x) }

  /// Binary cross-entropy of `logits` against probabilities `targets` (same shape), computed
  /// stably as `softplus(x) - x * t`; PyTorch's `binary_cross_entropy_with_logits`. Used for
  /// FCOS's centerness and as the base of the focal losses.
  public mutating func bceWithLogitsLoss(
    logits: String, targets: String, weight: String? = nil, reduction: LossReduction = .sum
  ) -> String {
    let loss = sub(unary("Softplus", logits), mul(logits, targets))
    return reduced(loss, weight: weight, reduction)
  }

  /// Sigmoid focal loss (Lin et al. 2017) of `logits` against 0/1 `targets` (same shape), as
  /// `torchvision.ops.sigmoid_focal_loss`: `alpha_t * bce * (1 - p_t)^gamma` with
  /// `p_t = p t + (1 - p)(1 - t)`, `alpha_t = alpha t + (1 - alpha)(1 - t)`; a negative `alpha`
  /// leaves the alpha weighting out, as there.
  public mutating func sigmoidFocalLoss(
    logits: String, targets: String, alpha: Float = 0.25, gamma: Float = 2, weight: String? = nil,
    reduction: LossReduction = .sum
  ) -> String {
    let p = unary("Sigmoid", logits)
    let ce = bceWithLogitsLoss(logits: logits, targets: targets, reduction: .none)
    let notP = oneMinus(p)
    let notT = oneMinus(targets)
    let pT = plus(mul(p, targets), mul(notP, notT))
    var loss = mul(ce, add("Pow", [oneMinus(pT), scalar(gamma)]))
    if alpha >= 0 {
      let alphaT = plus(mul(scalar(alpha), targets), mul(scalar(1 - alpha), notT))
      loss = mul(alphaT, loss)
    }
    return reduced(loss, weight: weight, reduction)
  }

  /// Quality focal loss (GFL, Li et al. 2020) of `logits` against soft `scores` (same shape, the
  /// IoU of the matched box at the positive class of positive locations, 0 elsewhere):
  /// `bce(x, s) * |s - sigmoid(x)|^beta`. For a zero target this is mmdet's negative term
  /// `bce(x, 0) * sigmoid(x)^beta`, so one formula covers positives and negatives.
  public mutating func qualityFocalLoss(
    logits: String, scores: String, beta: Float = 2, weight: String? = nil, reduction: LossReduction = .sum
  ) -> String {
    let ce = bceWithLogitsLoss(logits: logits, targets: scores, reduction: .none)
    let gap = unary("Abs", sub(scores, unary("Sigmoid", logits)))
    let loss = mul(ce, add("Pow", [gap, scalar(beta)]))
    return reduced(loss, weight: weight, reduction)
  }

  /// Distribution focal loss (GFL) of per-row bin logits `logits` [M, bins] against continuous
  /// distances `targets` [M] in bin units (in [0, bins - 1]): cross-entropy with the two bins
  /// around the target, weighted by closeness, `-(w_l log p_l + w_r log p_r)`. The weights are the
  /// triangle `max(0, 1 - |bin - target|)`, which is mmdet's `(r - t, t - l)` for `l = floor(t)`.
  /// Returns one loss per row ([M] before reduction).
  public mutating func distributionFocalLoss(
    logits: String, targets: String, bins: Int, weight: String? = nil, reduction: LossReduction = .sum
  ) -> String {
    let centres = constant(Tensor(shape: [bins], floats: (0..<bins).map(Float.init)), hint: "dfl_bins")
    let column = reshape(targets, [-1, 1])
    let closeness = unary("Relu", oneMinus(unary("Abs", sub(centres, column))))
    let logP = add("LogSoftmax", [logits], [.int("axis", 1)])
    let loss = unary("Neg", reduceSum(mul(closeness, logP), axes: [1]))
    return reduced(loss, weight: weight, reduction)
  }

  /// Smooth L1 (Huber divided by `beta`) of `predictions - targets`, elementwise, as PyTorch's
  /// `smooth_l1_loss`: `0.5 d^2 / beta` where `|d| < beta`, `|d| - 0.5 beta` elsewhere (plain L1
  /// for beta 0).
  public mutating func smoothL1Loss(
    predictions: String, targets: String, beta: Float = 1, weight: String? = nil, reduction: LossReduction = .sum
  ) -> String {
    guard beta > 0 else {
      return l1Loss(predictions: predictions, targets: targets, weight: weight, reduction: reduction)
    }
    let distance = unary("Abs", sub(predictions, targets))
    let quadratic = mul(mul(distance, distance), scalar(0.5 / beta))
    let linear = sub(distance, scalar(0.5 * beta))
    let loss = add("Where", [add("Less", [distance, scalar(beta)]), quadratic, linear])
    return reduced(loss, weight: weight, reduction)
  }

  /// L1 of `predictions - targets`, elementwise (PyTorch's `l1_loss`).
  public mutating func l1Loss(
    predictions: String, targets: String, weight: String? = nil, reduction: LossReduction = .sum
  ) -> String {
    reduced(unary("Abs", sub(predictions, targets)), weight: weight, reduction)
  }

  /// Intersection, union and the four columns of each of `predicted` and `target` ([N, 4] xyxy),
  /// each [N, 1], as torchvision's `_loss_inter_union` (no intersection unless both sides overlap).
  private mutating func interUnion(_ predicted: String, _ target: String)
    -> (inter: String, union: String, p: [String], t: [String])
  {
    let p = columns(predicted, count: 4)
    let t = columns(target, count: 4)
    let width = unary("Relu", sub(add("Min", [p[2], t[2]]), add("Max", [p[0], t[0]])))
    let height = unary("Relu", sub(add("Min", [p[3], t[3]]), add("Max", [p[1], t[1]])))
    let inter = mul(width, height)
    let areaP = mul(sub(p[2], p[0]), sub(p[3], p[1]))
    let areaT = mul(sub(t[2], t[0]), sub(t[3], t[1]))
    return (inter, sub(plus(areaP, areaT), inter), p, t)
  }

  /// IoU loss `1 - inter / (union + eps)` of predicted boxes against target boxes, both [N, 4]
  /// xyxy, one loss per box ([N] before reduction; `weight` [N]). The eps is torchvision's.
  public mutating func iouLoss(
    predicted: String, target: String, eps: Float = 1e-7, weight: String? = nil, reduction: LossReduction = .sum
  ) -> String {
    let parts = interUnion(predicted, target)
    let iou = div(parts.inter, plus(parts.union, scalar(eps)))
    return reduced(reshape(oneMinus(iou), [-1]), weight: weight, reduction)
  }

  /// Generalized IoU loss (Rezatofighi et al. 2019) `1 - giou` of predicted boxes against target
  /// boxes, both [N, 4] xyxy, as `torchvision.ops.generalized_box_iou_loss` (eps 1e-7): one loss
  /// per box ([N] before reduction; `weight` [N]). `Box.generalizedIoU` is the plain reference.
  public mutating func giouLoss(
    predicted: String, target: String, eps: Float = 1e-7, weight: String? = nil, reduction: LossReduction = .sum
  ) -> String {
    let (inter, union, p, t) = interUnion(predicted, target)
    let epsilon = scalar(eps)
    let iou = div(inter, plus(union, epsilon))
    let hullW = sub(add("Max", [p[2], t[2]]), add("Min", [p[0], t[0]]))
    let hullH = sub(add("Max", [p[3], t[3]]), add("Min", [p[1], t[1]]))
    let hull = mul(hullW, hullH)
    let giou = sub(iou, div(sub(hull, union), plus(hull, epsilon)))
    return reduced(reshape(oneMinus(giou), [-1]), weight: weight, reduction)
  }
}
