#!/usr/bin/env python3
"""Writes the detection-loss fixtures to Tests/Fixtures/losses (or OUT_DIR), PyTorch autograd as reference:

- blocks.json: each loss building block on small random inputs: inputs, the loss value and its
  gradients with respect to the predictions. References: torchvision.ops.sigmoid_focal_loss,
  generalized_box_iou_loss, F.binary_cross_entropy_with_logits, F.smooth_l1_loss, F.l1_loss; the
  IoU loss (1 - inter / (union + eps)), QFL and DFL written below after mmdet's GFL code
  (quality_focal_loss with its separate positive/negative terms, distribution_focal_loss).
- retinanet.json / fcos.json: a torchvision RetinaNet / FCOS (num_classes 5, three levels, strides
  8/16/32, a 64x64 input, two images) with random raw per-level head outputs as leaves, random
  ground truth; torchvision's own matching (Matcher 0.5/0.4 with low-quality matches; FCOS centre
  sampling), `compute_loss` values and gradients with respect to each raw output.
- gfl.json: a GFL head (DFL bins, reg_max 7) on the same levels: random raw outputs, the ATSS
  assignment below and mmdet GFLHead.loss's value and gradients, written below after mmdet.
- atss.json: anchors of three levels, ground truth, and the assignment of the ATSS assigner
  written below following mmdet's ATSSAssigner (top-9 by centre distance per level, IoU mean + std
  threshold, centre inside the box, highest IoU wins).

usage: make_loss_fixtures.py [OUT_DIR]   (run with /tmp/venv-torch/bin/python)
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou, generalized_box_iou_loss, sigmoid_focal_loss

SIZE = 64
NUM_CLASSES = 5
STRIDES = (8, 16, 32)


def t(x):
    return {"shape": list(x.shape), "data": [float(v) for v in x.detach().reshape(-1).tolist()]}


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, separators=(",", ":"))
        f.write("\n")


def random_boxes(n, lo=2.0, hi=60.0, min_size=3.0):
    xy = torch.rand(n, 2) * (hi - lo - 20) + lo
    wh = torch.rand(n, 2) * 30 + min_size
    return torch.cat([xy, xy + wh], dim=1)


def case(inputs, loss, wrt, **extra):
    loss.backward()
    return {"inputs": {k: t(v) for k, v in inputs.items()}, "loss": float(loss), "grads": {k: t(inputs[k].grad) for k in wrt}, **extra}


def iou_loss_reference(pred, target, eps=1e-7):
    x1, y1, x2, y2 = pred.unbind(-1)
    a1, b1, a2, b2 = target.unbind(-1)
    w = (torch.min(x2, a2) - torch.max(x1, a1)).clamp(min=0)
    h = (torch.min(y2, b2) - torch.max(y1, b1)).clamp(min=0)
    inter = w * h
    union = (x2 - x1) * (y2 - y1) + (a2 - a1) * (b2 - b1) - inter
    return 1 - inter / (union + eps)


def quality_focal_loss_reference(pred, label, score, beta=2.0):
    """mmdet's quality_focal_loss: negatives bce(x, 0) * sigmoid(x)^beta everywhere, then the
    positive entries (row, label) replaced by bce(x, score) * |score - sigmoid(x)|^beta; per row."""
    pred_sigmoid = pred.sigmoid()
    scale_factor = pred_sigmoid
    zerolabel = scale_factor.new_zeros(pred.shape)
    loss = F.binary_cross_entropy_with_logits(pred, zerolabel, reduction="none") * scale_factor.pow(beta)
    bg = pred.size(1)
    pos = ((label >= 0) & (label < bg)).nonzero().squeeze(1)
    pos_label = label[pos].long()
    scale_factor = score[pos] - pred_sigmoid[pos, pos_label]
    loss[pos, pos_label] = F.binary_cross_entropy_with_logits(
        pred[pos, pos_label], score[pos], reduction="none") * scale_factor.abs().pow(beta)
    return loss.sum(dim=1)


def distribution_focal_loss_reference(pred, label):
    """mmdet's distribution_focal_loss."""
    dis_left = label.long()
    dis_right = dis_left + 1
    weight_left = dis_right.float() - label
    weight_right = label - dis_left.float()
    return (F.cross_entropy(pred, dis_left, reduction="none") * weight_left
            + F.cross_entropy(pred, dis_right, reduction="none") * weight_right)


def leaf(x):
    return x.detach().clone().requires_grad_(True)


def make_blocks():
    torch.manual_seed(3)
    blocks = {}
    logits = leaf(torch.randn(6, 5) * 2)
    targets = (torch.rand(6, 5) < 0.3).float()
    for reduction in ("sum", "mean"):
        x = leaf(logits)
        blocks[f"focal_{reduction}"] = case(
            {"logits": x, "targets": targets}, sigmoid_focal_loss(x, targets, 0.25, 2, reduction), ["logits"])

    x = leaf(torch.randn(6, 5) * 2)
    label = torch.tensor([0, 3, 5, 1, 5, 4])
    score = torch.rand(6)
    scores = torch.zeros(6, 5)
    for i in range(6):
        if label[i] < 5:
            scores[i, label[i]] = score[i]
    weight = torch.rand(6)
    loss = (quality_focal_loss_reference(x, label, score) * weight).sum()
    blocks["qfl"] = case({"logits": x, "scores": scores, "weight": weight}, loss, ["logits"])

    pred = random_boxes(8)
    pred = leaf(pred + torch.randn(8, 4))
    target = random_boxes(8)
    target[0] = pred[0].detach() + torch.tensor([1.0, -2.0, 3.0, 1.5])
    target[1] = pred[1].detach() + torch.tensor([40.0, 40.0, 45.0, 48.0])
    weight = torch.rand(8)
    p = leaf(pred)
    blocks["giou"] = case({"predicted": p, "target": target, "weight": weight},
                          (generalized_box_iou_loss(p, target, reduction="none") * weight).sum(), ["predicted"])
    p = leaf(pred)
    blocks["giou_mean"] = case({"predicted": p, "target": target},
                               generalized_box_iou_loss(p, target, reduction="mean"), ["predicted"])
    p = leaf(pred)
    blocks["iou"] = case({"predicted": p, "target": target, "weight": weight},
                         (iou_loss_reference(p, target) * weight).sum(), ["predicted"])

    x = leaf(torch.randn(7) * 2)
    target = torch.rand(7)
    blocks["centerness_bce"] = case(
        {"logits": x, "targets": target}, F.binary_cross_entropy_with_logits(x, target, reduction="sum"), ["logits"])

    x = leaf(torch.randn(8, 17) * 2)
    target = torch.rand(8) * 15.99
    target[0] = 3.0
    weight = torch.rand(8)
    blocks["dfl"] = case({"logits": x, "targets": target, "weight": weight},
                         (distribution_focal_loss_reference(x, target) * weight).sum(), ["logits"])

    target = torch.randn(6, 4) * 0.3
    pred = target + torch.randn(6, 4) * 0.4
    for beta, name in ((1.0 / 9, "smooth_l1_beta_1_9"), (1.0, "smooth_l1_beta_1")):
        p = leaf(pred)
        blocks[name] = case({"predictions": p, "targets": target},
                            F.smooth_l1_loss(p, target, beta=beta, reduction="sum"), ["predictions"], beta=beta)
    p = leaf(pred)
    blocks["l1"] = case({"predictions": p, "targets": target}, F.l1_loss(p, target, reduction="sum"), ["predictions"])
    return blocks


def ground_truth():
    torch.manual_seed(5)
    return [
        {"boxes": torch.tensor([[4.0, 6.0, 30.5, 27.0], [20.0, 18.5, 60.0, 62.0], [40.0, 3.0, 52.0, 15.5]]),
         "labels": torch.tensor([1, 4, 0])},
        {"boxes": torch.tensor([[1.5, 2.0, 63.0, 61.0], [33.0, 36.0, 47.5, 51.0]]), "labels": torch.tensor([2, 2])},
    ]


def ground_truth_with_large_boxes():
    """Adds boxes larger than the 64x64 input (neither torchvision nor mmdet clip targets), which
    reach the stride-16 and stride-32 levels (FCOS size ranges from 64 and 128 pixels; ATSS
    anchors of 128 and 256 pixels)."""
    targets = ground_truth()
    large = [torch.tensor([[-40.0, -30.0, 90.0, 100.0], [-100.0, -95.0, 140.0, 150.0]]),
             torch.tensor([[-20.0, -50.0, 110.0, 80.0]])]
    for image, boxes in zip(targets, large):
        image["boxes"] = torch.cat([image["boxes"], boxes])
        image["labels"] = torch.cat([image["labels"], torch.tensor([3] * len(boxes))])
    return targets


def raw_outputs(channels, batch=2):
    """Per level [batch, channels, H, W] leaves for the 64x64 input."""
    return [leaf(torch.randn(batch, channels, SIZE // s, SIZE // s)) for s in STRIDES]


def flatten_levels(outputs, width):
    """[N, A*K, H, W] per level -> [N, sum(HWA), K], as the torchvision heads' forward."""
    flat = []
    for o in outputs:
        n, _, h, w = o.shape
        flat.append(o.view(n, -1, width, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, width))
    return torch.cat(flat, dim=1)


def task_case(model, cls, box, extra, targets):
    images = ImageList(torch.zeros(2, 3, SIZE, SIZE), [(SIZE, SIZE)] * 2)
    features = [torch.zeros(2, 1, SIZE // s, SIZE // s) for s in STRIDES]
    anchors = model.anchor_generator(images, features)
    head_outputs = {"cls_logits": flatten_levels(cls, NUM_CLASSES), "bbox_regression": flatten_levels(box, 4)}
    if extra is not None:
        head_outputs["bbox_ctrness"] = flatten_levels(extra, 1)
    captured = {}
    original = model.head.compute_loss

    def capture(targets, head_outputs, anchors, matched_idxs):
        captured["matched"] = [m.tolist() for m in matched_idxs]
        return original(targets, head_outputs, anchors, matched_idxs)

    model.head.compute_loss = capture
    num_anchors_per_level = [x.size(2) * x.size(3) for x in features]
    if isinstance(model, torchvision.models.detection.FCOS):
        losses = model.compute_loss(targets, head_outputs, anchors, num_anchors_per_level)
    else:
        losses = model.compute_loss(targets, head_outputs, anchors)
    total = sum(losses.values())
    total.backward()
    outputs = {f"cls_{i}": o for i, o in enumerate(cls)}
    outputs.update({f"box_{i}": o for i, o in enumerate(box)})
    if extra is not None:
        outputs.update({f"ctr_{i}": o for i, o in enumerate(extra)})
    fg = [sum(1 for m in ms if m >= 0) for ms in captured["matched"]]
    bounds = [0]
    for n in num_anchors_per_level:
        bounds.append(bounds[-1] + n)
    per_level = [[sum(1 for m in ms[a:b] if m >= 0) for a, b in zip(bounds, bounds[1:])] for ms in captured["matched"]]
    print(f"  foreground per image and level {per_level}")
    ignored = [sum(1 for m in ms if m == -2) for ms in captured["matched"]]
    print(f"  {type(model).__name__}: foreground per image {fg}, ignored {ignored}, losses "
          + ", ".join(f"{k} {float(v):.5f}" for k, v in losses.items()))
    return {
        "targets": [{"boxes": g["boxes"].tolist(), "labels": g["labels"].tolist()} for g in targets],
        "outputs": {k: t(v) for k, v in outputs.items()},
        "grads": {k: t(v.grad) for k, v in outputs.items()},
        "losses": {k: float(v) for k, v in losses.items()},
        "loss": float(total),
        "matched": captured["matched"],
    }


def make_retinanet():
    torch.manual_seed(7)
    sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in [16, 32, 64])
    ratios = ((0.5, 1.0, 2.0),) * 3
    backbone = torch.nn.Conv2d(3, 32, 1)
    backbone.out_channels = 32
    model = torchvision.models.detection.RetinaNet(
        backbone, num_classes=NUM_CLASSES, anchor_generator=AnchorGenerator(sizes, ratios))
    cls = [leaf(o * 2 - 2) for o in raw_outputs(9 * NUM_CLASSES)]
    box = [leaf(o * 0.5) for o in raw_outputs(9 * 4)]
    result = task_case(model, cls, box, None, ground_truth())
    result["sizes"] = [list(s) for s in sizes]
    # The same outputs with torchvision's smooth-L1 box loss (beta 1 when no cnf is given).
    model.head.regression_head._loss_type = "smooth_l1"
    box = [leaf(b) for b in box]
    smooth = task_case(model, [leaf(c) for c in cls], box, None, ground_truth())
    result["smooth_l1"] = {"losses": smooth["losses"], "grads": {k: v for k, v in smooth["grads"].items() if k.startswith("box")}}
    return result


def make_fcos():
    torch.manual_seed(8)
    backbone = torch.nn.Conv2d(3, 32, 1)
    backbone.out_channels = 32
    anchors = AnchorGenerator(tuple((s,) for s in STRIDES), ((1.0,),) * 3)
    model = torchvision.models.detection.FCOS(backbone, num_classes=NUM_CLASSES, anchor_generator=anchors)
    cls = [leaf(o * 2 - 2) for o in raw_outputs(NUM_CLASSES)]
    box = [leaf(o.abs() * 2 + 0.5) for o in raw_outputs(4)]
    ctr = raw_outputs(1)
    return task_case(model, cls, box, ctr, ground_truth_with_large_boxes())


def atss_reference(anchors, num_level, gt, topk=9):
    """mmdet ATSSAssigner.assign (no ignore boxes): 0-based gt index per anchor, -1 background."""
    inf = 100000000
    num_gt, num_bboxes = gt.size(0), anchors.size(0)
    lt = torch.max(anchors[:, None, :2], gt[None, :, :2])
    rb = torch.min(anchors[:, None, 2:], gt[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area1 = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    area2 = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    union = torch.clamp(area1[:, None] + area2[None, :] - inter, min=1e-6)
    overlaps = inter / union
    assigned = overlaps.new_full((num_bboxes,), 0, dtype=torch.long)
    gt_points = torch.stack(((gt[:, 0] + gt[:, 2]) / 2.0, (gt[:, 1] + gt[:, 3]) / 2.0), dim=1)
    bx = (anchors[:, 0] + anchors[:, 2]) / 2.0
    by = (anchors[:, 1] + anchors[:, 3]) / 2.0
    points = torch.stack((bx, by), dim=1)
    distances = (points[:, None, :] - gt_points[None, :, :]).pow(2).sum(-1).sqrt()
    candidate_idxs = []
    start = 0
    for n in num_level:
        end = start + n
        k = min(topk, n)
        _, idx = distances[start:end, :].topk(k, dim=0, largest=False)
        candidate_idxs.append(idx + start)
        start = end
    candidate_idxs = torch.cat(candidate_idxs, dim=0)
    candidate_overlaps = overlaps[candidate_idxs, torch.arange(num_gt)]
    thr = candidate_overlaps.mean(0) + candidate_overlaps.std(0)
    is_pos = candidate_overlaps >= thr[None, :]
    for g in range(num_gt):
        candidate_idxs[:, g] += g * num_bboxes
    ep_x = bx.view(1, -1).expand(num_gt, num_bboxes).contiguous().view(-1)
    ep_y = by.view(1, -1).expand(num_gt, num_bboxes).contiguous().view(-1)
    flat = candidate_idxs.view(-1)
    l_ = ep_x[flat].view(-1, num_gt) - gt[:, 0]
    t_ = ep_y[flat].view(-1, num_gt) - gt[:, 1]
    r_ = gt[:, 2] - ep_x[flat].view(-1, num_gt)
    b_ = gt[:, 3] - ep_y[flat].view(-1, num_gt)
    is_in = torch.stack([l_, t_, r_, b_], dim=1).min(dim=1)[0] > 0.01
    is_pos = is_pos & is_in
    overlaps_inf = torch.full_like(overlaps, -inf).t().contiguous().view(-1)
    index = flat[is_pos.view(-1)]
    overlaps_inf[index] = overlaps.t().contiguous().view(-1)[index]
    overlaps_inf = overlaps_inf.view(num_gt, -1).t()
    max_overlaps, argmax = overlaps_inf.max(dim=1)
    assigned[max_overlaps != -inf] = argmax[max_overlaps != -inf] + 1
    return (assigned - 1).tolist()


def make_atss():
    """mmdet ATSS anchors: one square anchor of octave_base_scale (8) x stride per location, centred
    on (x * stride, y * stride) (center_offset 0)."""
    levels = []
    for s in STRIDES:
        n = SIZE // s
        ys, xs = torch.meshgrid(torch.arange(n) * float(s), torch.arange(n) * float(s), indexing="ij")
        c = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
        half = 4.0 * s
        levels.append(torch.cat([c - half, c + half], dim=1))
    anchors = torch.cat(levels)
    cases = []
    for g in ground_truth():
        matched = atss_reference(anchors, [len(a) for a in levels], g["boxes"])
        print(f"  ATSS: foreground {sum(1 for m in matched if m >= 0)} of {len(matched)}")
        cases.append({"boxes": g["boxes"].tolist(), "matched": matched})
    return {"strides": list(STRIDES), "octave_base_scale": 8, "anchors": anchors.tolist(), "images": cases}


def mmdet_giou_loss(pred, target, eps=1e-6):
    """mmdet's GIoULoss (bbox_overlaps mode giou, is_aligned): union and hull clamped at eps."""
    lt = torch.max(pred[:, :2], target[:, :2])
    rb = torch.min(pred[:, 2:], target[:, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[:, 0] * wh[:, 1]
    area1 = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area2 = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    union = torch.clamp(area1 + area2 - overlap, min=eps)
    ious = overlap / union
    enclosed_lt = torch.min(pred[:, :2], target[:, :2])
    enclosed_rb = torch.max(pred[:, 2:], target[:, 2:])
    enclose_wh = (enclosed_rb - enclosed_lt).clamp(min=0)
    enclose_area = torch.clamp(enclose_wh[:, 0] * enclose_wh[:, 1], min=eps)
    return 1 - (ious - (enclose_area - union) / enclose_area), ious


def make_gfl(reg_max=7):
    """mmdet GFLHead.loss (single process) with its defaults: ATSS on anchors of 8 x stride, QFL
    (beta 2) over all locations / max(1, positives), GIoU (weight 2) and DFL (weight 0.25, averaged
    over the 4 sides) on positives weighted by the detached max class score, both divided by the
    sum of those weights (at least 1)."""
    torch.manual_seed(9)
    atss = make_atss()
    anchors = torch.tensor(atss["anchors"])
    num_level = [(SIZE // s) ** 2 for s in STRIDES]
    strides = torch.cat([torch.full((n,), float(s)) for n, s in zip(num_level, STRIDES)])
    cls = [leaf(o * 2 - 2) for o in raw_outputs(NUM_CLASSES)]
    box = [leaf(o * 1.5) for o in raw_outputs(4 * (reg_max + 1))]
    logits = flatten_levels(cls, NUM_CLASSES)
    bins = flatten_levels(box, 4 * (reg_max + 1))
    project = torch.linspace(0, reg_max, reg_max + 1)
    targets = ground_truth_with_large_boxes()
    matched = [atss_reference(anchors, num_level, g["boxes"]) for g in targets]
    num_pos = max(sum(1 for ms in matched for m in ms if m >= 0), 1)
    loss_cls = loss_bbox = loss_dfl = 0.0
    avg_factor = 0.0
    for image, (g, ms) in enumerate(zip(targets, matched)):
        ms = torch.tensor(ms)
        pos = (ms >= 0).nonzero().squeeze(1)
        labels = torch.full((len(ms),), NUM_CLASSES, dtype=torch.long)
        labels[pos] = g["labels"][ms[pos]]
        score = torch.zeros(len(ms))
        centers = ((anchors[:, :2] + anchors[:, 2:]) / 2)[pos] / strides[pos, None]
        weight_targets = logits[image].detach().sigmoid().max(dim=1)[0][pos]
        corners = F.softmax(bins[image][pos].reshape(-1, reg_max + 1), dim=1) @ project
        corners = corners.reshape(-1, 4)
        decoded = torch.cat([centers - corners[:, :2], centers + corners[:, 2:]], dim=1)
        target_boxes = g["boxes"][ms[pos]] / strides[pos, None]
        giou, ious = mmdet_giou_loss(decoded, target_boxes)
        _, score_pos = mmdet_giou_loss(decoded.detach(), target_boxes)
        score[pos] = score_pos
        target_corners = torch.cat([centers - target_boxes[:, :2], target_boxes[:, 2:] - centers], dim=1)
        target_corners = target_corners.clamp(min=0, max=reg_max - 0.1).reshape(-1)
        loss_bbox = loss_bbox + 2.0 * (giou * weight_targets).sum()
        dfl = distribution_focal_loss_reference(bins[image][pos].reshape(-1, reg_max + 1), target_corners)
        loss_dfl = loss_dfl + 0.25 * (dfl * weight_targets[:, None].expand(-1, 4).reshape(-1)).sum() / 4.0
        loss_cls = loss_cls + quality_focal_loss_reference(logits[image], labels, score).sum() / num_pos
        avg_factor = avg_factor + weight_targets.sum()
    avg_factor = max(float(avg_factor), 1.0)
    losses = {"loss_cls": loss_cls, "loss_bbox": loss_bbox / avg_factor, "loss_dfl": loss_dfl / avg_factor}
    total = sum(losses.values())
    total.backward()
    outputs = {f"cls_{i}": o for i, o in enumerate(cls)}
    outputs.update({f"box_{i}": o for i, o in enumerate(box)})
    bounds = [0, num_level[0], num_level[0] + num_level[1], sum(num_level)]
    print("  GFL: foreground per image and level",
          [[sum(1 for m in ms[a:b] if m >= 0) for a, b in zip(bounds, bounds[1:])] for ms in matched], "losses",
          {k: round(float(v), 5) for k, v in losses.items()})
    return {
        "targets": [{"boxes": g["boxes"].tolist(), "labels": g["labels"].tolist()} for g in targets],
        "outputs": {k: t(v) for k, v in outputs.items()},
        "grads": {k: t(v.grad) for k, v in outputs.items()},
        "losses": {k: float(v) for k, v in losses.items()},
        "loss": float(total),
        "matched": matched,
        "reg_max": reg_max,
    }


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "losses")
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "blocks.json"), make_blocks())
    write_json(os.path.join(out, "retinanet.json"), make_retinanet())
    write_json(os.path.join(out, "fcos.json"), make_fcos())
    write_json(os.path.join(out, "atss.json"), make_atss())
    write_json(os.path.join(out, "gfl.json"), make_gfl())
    for name in sorted(os.listdir(out)):
        print(f"{name}: {os.path.getsize(os.path.join(out, name))} bytes")


if __name__ == "__main__":
    main()
