#!/usr/bin/env python3
"""PyTorch references for the `gid` loss (Sources/DistillTrain/Losses/GeneralInstanceDistillation.swift),
written from shared/METHODS.md section 2 and the rules stated in the Swift doc comment. Writes
Tests/Fixtures/gid/:

- selection/: raw outputs of two small dense heads (teacher_*.npy, student_*.npy), teacher.yaml and
  student.yaml for distill's HeadDecoder, and expected.json: per image the GI scores of every row
  and the kept boxes with their GI scores (top pre_nms_top_k by GI score, clip, min side, NMS with
  torchvision.ops.nms, top_k).
- terms/: FPN maps (teacher_pN.npy, student_pN.npy), dense head outputs, the instance boxes per image
  (boxes.json), each term's value and its gradients with respect to the student's maps and head
  outputs (float64; torchvision.ops.roi_align with aligned=True; gradients that are zero are not
  written), for K = 6 instances and for K = 2 (relation zero).

usage: make_gid_fixtures.py   (run with /tmp/venv-torch/bin/python)
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import nms, roi_align

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "gid")
CLASSES = 3


def head_yaml(strides, offset):
    levels = "\n".join(f"  - {{cls: cls_{i}, box: box_{i}, stride: {s}}}" for i, s in enumerate(strides))
    return (f"type: dense\nnum_classes: {CLASSES}\nactivation: sigmoid\nbox_format: ltrb_px\noffset: {offset}\n"
            f"levels:\n{levels}\n")


def random_head(rng, n, sizes, bias):
    outputs = {}
    for i, (h, w) in enumerate(sizes):
        outputs[f"cls_{i}"] = (rng.standard_normal((n, CLASSES, h, w)) * 2 + bias).astype(np.float32)
        outputs[f"box_{i}"] = (np.abs(rng.standard_normal((n, 4, h, w))) * 12 + 2).astype(np.float32)
    return outputs


def points(h, w, stride, offset):
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return ((xs.reshape(-1) + offset) * stride, (ys.reshape(-1) + offset) * stride)


def decode(outputs, sizes, strides, offset):
    """Per image: [rows] best class score (sigmoid) and [rows, 4] xyxy boxes, levels in order."""
    scores, boxes = [], []
    for i, ((h, w), s) in enumerate(zip(sizes, strides)):
        cls = torch.from_numpy(outputs[f"cls_{i}"]).double()
        box = torch.from_numpy(outputs[f"box_{i}"]).double()
        n = cls.shape[0]
        scores.append(cls.sigmoid().reshape(n, CLASSES, -1).max(1).values)
        px, py = points(h, w, s, offset)
        d = box.reshape(n, 4, -1)
        boxes.append(torch.stack([px - d[:, 0], py - d[:, 1], px + d[:, 2], py + d[:, 3]], -1))
    return torch.cat(scores, 1), torch.cat(boxes, 1)


def selection(rng):
    out = os.path.join(OUT, "selection")
    os.makedirs(out, exist_ok=True)
    n, width, height, strides, offset = 2, 64, 64, [8, 16], 0.5
    sizes = [(height // s, width // s) for s in strides]
    settings = {"pre_nms_top_k": 60, "nms_iou": 0.3, "top_k": 5, "min_side": 10}
    teacher, student = random_head(rng, n, sizes, -1.0), random_head(rng, n, sizes, -1.5)
    for role, outputs in (("teacher", teacher), ("student", student)):
        for name, value in outputs.items():
            np.save(os.path.join(out, f"{role}_{name}.npy"), value)
        with open(os.path.join(out, f"{role}.yaml"), "w") as f:
            f.write(head_yaml(strides, offset))
    st, bt = decode(teacher, sizes, strides, offset)
    ss, bs = decode(student, sizes, strides, offset)
    images = []
    for i in range(n):
        difference = st[i] - ss[i]
        gi = difference.abs()
        boxes = torch.where((difference > 0)[:, None], bt[i], bs[i])
        order = torch.sort(gi, descending=True, stable=True).indices[: settings["pre_nms_top_k"]]
        candidates, scores = boxes[order].clone(), gi[order]
        candidates[:, 0::2] = candidates[:, 0::2].clamp(0, width)
        candidates[:, 1::2] = candidates[:, 1::2].clamp(0, height)
        sides = torch.minimum(candidates[:, 2] - candidates[:, 0], candidates[:, 3] - candidates[:, 1])
        keep = sides >= settings["min_side"]
        candidates, scores = candidates[keep], scores[keep]
        kept = nms(candidates, scores, settings["nms_iou"])[: settings["top_k"]]
        images.append({"gi_scores": gi.tolist(), "boxes": candidates[kept].tolist(), "scores": scores[kept].tolist(),
                       "candidates_after_min_side": int(keep.sum())})
        print(f"selection image {i}: {int(keep.sum())} candidates after min side, kept {len(kept)}")
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"settings": settings, "size": [height, width], "images": images}, f)


def smooth_l1(x):
    a = x.abs()
    return torch.where(a < 1, 0.5 * x * x, a - 0.5)


def normalized_distances(e):
    k = e.shape[0]
    norms = (e * e).sum(1, keepdim=True)
    d = (norms + norms.T - 2 * e @ e.T).clamp_min(1e-12).sqrt() * (1 - torch.eye(k, dtype=e.dtype))
    mean = d.sum() / max(k * k - k, 1)
    return d / mean.clamp_min(1e-12)


def terms_case(rng, name, boxes_per_image):
    out = os.path.join(OUT, name)
    os.makedirs(out, exist_ok=True)
    n, size, strides, offset, channels, roi = 2, 512, [8, 16, 32], 0.5, 2, 10
    head_strides = [32, 64]
    weights = {"feature_weight": 5e-3, "relation_weight": 40.0, "response_cls_weight": 0.1, "response_reg_weight": 1.0}
    sizes = [(size // s, size // s) for s in strides]
    head_sizes = [(size // s, size // s) for s in head_strides]
    maps = {}
    for role in ("teacher", "student"):
        for level, (h, w) in enumerate(sizes):
            maps[f"{role}_p{level}"] = rng.standard_normal((n, channels, h, w)).astype(np.float32)
    heads = {"teacher": random_head(rng, n, head_sizes, 0.0), "student": random_head(rng, n, head_sizes, 0.0)}
    for key, value in maps.items():
        np.save(os.path.join(out, f"{key}.npy"), value)
    for role, outputs in heads.items():
        for key, value in outputs.items():
            np.save(os.path.join(out, f"{role}_{key}.npy"), value)
        with open(os.path.join(out, f"{role}.yaml"), "w") as f:
            f.write(head_yaml(head_strides, offset))

    student_maps = [torch.from_numpy(maps[f"student_p{l}"]).double().requires_grad_() for l in range(3)]
    teacher_maps = [torch.from_numpy(maps[f"teacher_p{l}"]).double() for l in range(3)]
    student_head = {k: torch.from_numpy(v).double().requires_grad_() for k, v in heads["student"].items()}
    teacher_head = {k: torch.from_numpy(v).double() for k, v in heads["teacher"].items()}

    def pooled(level_maps):
        rows = []
        for image, boxes in enumerate(boxes_per_image):
            for box in boxes:
                side = math.sqrt((box[2] - box[0]) * (box[3] - box[1]))
                level = min(max(math.floor(4 + math.log2(side / 224 + 1e-8)), 3), 5) - 3
                rois = torch.tensor([[image] + box], dtype=torch.float64)
                rows.append(roi_align(level_maps[level], rois, roi, spatial_scale=1 / strides[level], sampling_ratio=2, aligned=True))
        return torch.cat(rows)

    rs, rt = pooled(student_maps), pooled(teacher_maps)
    k = rs.shape[0]
    feature = ((rs - rt) ** 2).sum() / (k * roi * roi) * weights["feature_weight"]
    if k < 3:
        relation = (rs * 0).sum()
    else:
        gap = normalized_distances(rs.reshape(k, -1)) - normalized_distances(rt.reshape(k, -1))
        relation = (smooth_l1(gap) * (1 - torch.eye(k, dtype=gap.dtype))).sum() / (k * k - k) * weights["relation_weight"]
    cls, reg, assigned = 0, 0, 0
    for level, ((h, w), s) in enumerate(zip(head_sizes, head_strides)):
        px, py = points(h, w, s, offset)
        mask = torch.zeros(n, 1, h * w, dtype=torch.float64)
        for image, boxes in enumerate(boxes_per_image):
            for b in boxes:
                mask[image, 0] = torch.maximum(mask[image, 0], ((px > b[0]) & (px < b[2]) & (py > b[1]) & (py < b[3])).double())
        mask = mask.reshape(n, 1, h, w)
        assigned += int(mask.sum())
        zs, zt = student_head[f"cls_{level}"], teacher_head[f"cls_{level}"]
        cls = cls + (F.binary_cross_entropy_with_logits(zs, zt.sigmoid(), reduction="none") * mask).sum()
        reg = reg + ((student_head[f"box_{level}"] - teacher_head[f"box_{level}"]).abs() * mask).sum()
    response = (cls * weights["response_cls_weight"] + reg * weights["response_reg_weight"]) / max(assigned, 1)
    print(f"{name}: K {k}, assigned locations {assigned}")

    values = {}
    sources = student_maps + [student_head[key] for key in sorted(student_head)]
    source_names = [f"student_p{l}" for l in range(3)] + [f"student_{key}" for key in sorted(student_head)]
    for term, value in (("feature", feature), ("relation", relation), ("response", response)):
        gradients = torch.autograd.grad(value, sources, allow_unused=True, retain_graph=True)
        for source, gradient in zip(source_names, gradients):
            if gradient is not None and bool(gradient.abs().max() > 0):
                np.save(os.path.join(out, f"gradient_{term}_{source}.npy"), gradient.numpy().astype(np.float32))
        values[term] = float(value.detach())
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"settings": dict(weights, top_k=4), "size": size, "boxes": boxes_per_image, "terms": values}, f, indent=1)


def main():
    rng = np.random.default_rng(9)
    selection(rng)
    boxes = [[[10.5, 20.0, 110.0, 130.5], [200.0, 40.0, 480.0, 400.0], [30.0, 300.0, 500.0, 510.0], [300.0, 300.0, 340.0, 330.0]],
             [[5.0, 5.0, 300.0, 260.0], [100.0, 120.0, 160.0, 200.0], [2.0, 6.0, 510.0, 500.0]]]
    terms_case(rng, "terms", boxes)
    terms_case(rng, "terms_two", [[[10.5, 20.0, 110.0, 130.5]], [[100.0, 120.0, 400.0, 420.0]]])


if __name__ == "__main__":
    main()
