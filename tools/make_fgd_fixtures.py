#!/usr/bin/env python3
"""PyTorch references for the object-based distillation losses of `distill train`: `fgd`
(FocalGlobalDistillation.swift), `mimic` (MimicDistillation.swift) and `bounded_regression`
(BoundedRegression.swift), written from shared/METHODS.md and the contracts in those files' doc
comments. For each case: seeded student and teacher maps per pair, per-image object boxes (in
network-input pixels), for fgd the GcBlock parameters (random, so every one gets a gradient); the
loss and its terms (computed in float64), the gradients with respect to the student maps and the
parameters, and for fgd the foreground/background masks. Writes Tests/Fixtures/fgd_losses/CASE/*.npy
and cases.json.

usage: make_fgd_fixtures.py   (needs torch, torchvision, numpy)
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "fgd_losses")


def valid(box):
    return all(math.isfinite(v) for v in box) and box[2] > box[0] and box[3] > box[1]


def fgd_masks(boxes, height, width, input_size):
    """Foreground: 1 / (rows * cols) of the box's cells floor(y1')..ceil(y2') x floor(x1')..ceil(x2')
    (ends included, counted before clipping), the largest value where boxes overlap; background:
    the uncovered cells, normalised to sum 1."""
    fg = np.zeros((height, width))
    for box in boxes:
        if not valid(box):
            continue
        x1, y1, x2, y2 = (float(v) for v in box)
        left, right = math.floor(x1 * width / input_size[1]), math.ceil(x2 * width / input_size[1])
        top, bottom = math.floor(y1 * height / input_size[0]), math.ceil(y2 * height / input_size[0])
        value = 1.0 / ((bottom + 1 - top) * (right + 1 - left))
        for row in range(max(top, 0), min(bottom, height - 1) + 1):
            for col in range(max(left, 0), min(right, width - 1) + 1):
                fg[row, col] = max(fg[row, col], value)
    free = (fg == 0).astype(np.float64)
    bg = free / free.sum() if free.sum() > 0 else free
    return fg, bg


def attention(x, temperature):
    n, c, h, w = x.shape
    magnitude = x.abs()
    spatial = h * w * F.softmax((magnitude.mean(1) / temperature).reshape(n, -1), 1).reshape(n, 1, h, w)
    channel = c * F.softmax(magnitude.mean((2, 3)) / temperature, 1).reshape(n, c, 1, 1)
    return spatial, channel


def gc_block(x, p):
    n, c, h, w = x.shape
    weights = F.softmax(F.conv2d(x, p["context/weight"], p["context/bias"]).reshape(n, 1, h * w), 2)
    context = (x.reshape(n, c, h * w) * weights).sum(2).reshape(n, c, 1, 1)
    hidden = F.conv2d(context, p["squeeze/weight"], p["squeeze/bias"])
    hidden = F.layer_norm(hidden, [c // 2, 1, 1], p["norm/scale"], p["norm/bias"], 1e-5)
    return x + F.conv2d(F.relu(hidden), p["expand/weight"], p["expand/bias"])


def gc_shapes(c):
    h = c // 2
    return {"context/weight": (1, c, 1, 1), "context/bias": (1,), "squeeze/weight": (h, c, 1, 1), "squeeze/bias": (h,),
            "norm/scale": (h, 1, 1), "norm/bias": (h, 1, 1), "expand/weight": (c, h, 1, 1), "expand/bias": (c,)}


def fgd(students, teachers, objects, input_size, settings, params, extras):
    t_ = settings.get("temperature", 0.5)
    alpha, beta = settings.get("alpha", 1e-3), settings.get("beta", 5e-4)
    gamma, lam = settings.get("gamma", 1e-3), settings.get("lambda", 5e-6)
    terms = {}
    for index, (s, t) in enumerate(zip(students, teachers)):
        n, c, h, w = t.shape
        masks = [fgd_masks(boxes, h, w, input_size) for boxes in objects]
        fg = torch.tensor(np.stack([m[0] for m in masks]))[:, None]
        bg = torch.tensor(np.stack([m[1] for m in masks]))[:, None]
        extras[f"mask_fg_{index}"], extras[f"mask_bg_{index}"] = fg.numpy(), bg.numpy()
        spatial_t, channel_t = attention(t, t_)
        spatial_s, channel_s = attention(s, t_)
        weighted = (s - t) ** 2 * spatial_t * channel_t
        tap = f"s{index}"
        terms[tap + "/fg"] = alpha * (weighted * fg).sum() / n
        terms[tap + "/bg"] = beta * (weighted * bg).sum() / n
        terms[tap + "/attention"] = gamma * ((channel_s - channel_t).abs().sum() + (spatial_s - spatial_t).abs().sum()) / n
        prefix = f"fgd0/{index}/"
        ps = {k[len(prefix + "gc_student/"):]: v for k, v in params.items() if k.startswith(prefix + "gc_student/")}
        pt = {k[len(prefix + "gc_teacher/"):]: v for k, v in params.items() if k.startswith(prefix + "gc_teacher/")}
        terms[tap + "/global"] = lam * ((gc_block(s, ps) - gc_block(t, pt)) ** 2).sum() / n
    return terms


def mimic(students, teachers, objects, input_size, settings, params, extras):
    size, ratio = int(settings.get("output_size", 7)), int(settings.get("sampling_ratio", 2))
    canonical = settings.get("canonical_size", 224.0)
    strides = sorted({input_size[1] / t.shape[3] for t in teachers})
    count = sum(1 for boxes in objects for box in boxes if valid(box))
    assigned = {}
    for image, boxes in enumerate(objects):
        for box in boxes:
            if not valid(box):
                continue
            target = 16 * math.sqrt((box[2] - box[0]) * (box[3] - box[1])) / canonical
            fitting = [s for s in strides if s <= target * (1 + 1e-6)]
            assigned.setdefault(fitting[-1] if fitting else strides[0], []).append([image] + list(box))
    terms = {}
    for index, (s, t) in enumerate(zip(students, teachers)):
        rois = assigned.get(input_size[1] / t.shape[3], [])
        if not rois:
            terms[f"s{index}"] = (s * 0).sum()
            continue
        scale = t.shape[3] / input_size[1]
        assert abs(scale - t.shape[2] / input_size[0]) < 1e-12
        boxes = torch.tensor(rois, dtype=torch.float64)
        rs = roi_align(s, boxes, size, spatial_scale=scale, sampling_ratio=ratio, aligned=True).flatten(1)
        rt = roi_align(t, boxes, size, spatial_scale=scale, sampling_ratio=ratio, aligned=True).flatten(1)
        cosine = (rs * rt).sum(1) / ((rs * rs).sum(1) * (rt * rt).sum(1)).clamp_min(1e-16).sqrt()
        terms[f"s{index}"] = (1 - cosine).sum() / count
    return terms


def regression_targets(boxes, height, width, stride, offset, pixels):
    targets, positive, areas = np.zeros((4, height, width)), np.zeros((height, width), bool), np.full((height, width), np.inf)
    for box in boxes:
        if not valid(box):
            continue
        x1, y1, x2, y2 = box
        area = (x2 - x1) * (y2 - y1)
        for row in range(height):
            for col in range(width):
                x, y = (col + offset) * stride, (row + offset) * stride
                if x1 < x < x2 and y1 < y < y2 and area < areas[row, col]:
                    areas[row, col] = area
                    positive[row, col] = True
                    targets[:, row, col] = np.array([x - x1, y - y1, x2 - x, y2 - y]) / (1 if pixels else stride)
    return targets, positive


def bounded_regression(students, teachers, objects, input_size, settings, params, extras):
    margin, nu = settings.get("margin", 0.0), settings.get("nu", 0.5)
    task, beta = settings.get("task_weight", 1.0), settings.get("beta", 1.0)
    levels = []
    for index, t in enumerate(teachers):
        stride = settings["strides"][index]
        per_image = [regression_targets(boxes, t.shape[2], t.shape[3], stride, settings["offset"], False) for boxes in objects]
        levels.append((torch.tensor(np.stack([p[0] for p in per_image])), torch.tensor(np.stack([p[1] for p in per_image]))))
    positives = max(1, sum(int(p.sum()) for _, p in levels))
    terms = {}
    for index, (s, t) in enumerate(zip(students, teachers)):
        y, positive = levels[index]
        e_s, e_t = ((s - y) ** 2).sum(1), ((t - y) ** 2).sum(1)
        bounded = torch.where(e_s + margin > e_t, e_s, torch.zeros_like(e_s))
        smooth = F.smooth_l1_loss(s, y, reduction="none", beta=beta).sum(1)
        terms[f"s{index}"] = ((task * smooth + nu * bounded) * positive).sum() / positives
    return terms


BOXES_FGD = [
    [[4.0, 6.0, 30.0, 22.0], [10.0, 8.5, 18.0, 16.0], [-12.0, -4.0, 9.5, 14.0]],  # overlapping, partly outside
    [],  # no boxes
    [[40.0, 30.0, 70.0, 52.0], [20.0, 20.0, 20.0, 30.0], [0.0, 0.0, 56.0, 40.0]],  # outside right/bottom, empty, whole map
]
BOXES_MIMIC = [
    [[4.0, 6.0, 44.0, 46.0], [10.0, 8.5, 18.0, 16.0], [2.0, 3.0, 78.0, 60.0]],
    [[30.5, 12.0, 70.0, 62.0], [50.0, 40.0, 50.0, 50.0]],
]
BOXES_REGRESSION = [
    [[4.0, 6.0, 44.0, 40.0], [10.0, 8.5, 30.0, 26.0]],
    [[30.5, 12.0, 60.0, 46.0]],
]

CASES = [
    # name, function, config, input size, student/teacher shapes per pair, objects
    ("fgd", fgd, {"type": "fgd", "temperature": 0.8, "alpha": 2e-3, "beta": 1e-3, "gamma": 3e-3, "lambda": 4e-4},
     (40, 56), [(3, 6, 5, 7), (3, 6, 3, 4)], BOXES_FGD),
    ("fgd_defaults", fgd, {"type": "fgd"}, (40, 56), [(3, 4, 5, 7)], BOXES_FGD),
    ("mimic", mimic, {"type": "mimic", "output_size": 3, "sampling_ratio": 2, "canonical_size": 64.0},
     (64, 80), [(2, 5, 8, 10), (2, 5, 4, 5)], BOXES_MIMIC),
    ("mimic_all_on_one_level", mimic, {"type": "mimic"}, (64, 80), [(2, 5, 8, 10), (2, 5, 4, 5)], BOXES_MIMIC),
    ("bounded_regression", bounded_regression,
     {"type": "bounded_regression", "margin": 0.3, "nu": 0.5, "task_weight": 1.0, "beta": 0.5},
     (48, 64), [(2, 4, 6, 8), (2, 4, 3, 4)], BOXES_REGRESSION),
    ("bounded_regression_only", bounded_regression, {"type": "bounded_regression", "task_weight": 0.0},
     (48, 64), [(2, 4, 6, 8), (2, 4, 3, 4)], BOXES_REGRESSION),
]
HEAD = {"strides": [8.0, 16.0], "offset": 0.5}


def main():
    rng = np.random.default_rng(0)
    cases = {}
    for name, function, config, input_size, shapes, objects in CASES:
        directory = os.path.join(OUT, name)
        os.makedirs(directory, exist_ok=True)
        students, teachers, arrays = [], [], {}
        for index, shape in enumerate(shapes):
            student = rng.normal(0, 1.5, shape).astype(np.float32)
            if function is bounded_regression:
                student = np.abs(rng.normal(1.5, 1.0, shape)).astype(np.float32)
                teacher = np.abs(student + rng.normal(0, 0.8, shape)).astype(np.float32)
            else:
                teacher = (0.6 * student + rng.normal(0.3, 1.2, shape)).astype(np.float32)
            arrays[f"student_{index}"], arrays[f"teacher_{index}"] = student, teacher
            students.append(torch.tensor(student, dtype=torch.float64, requires_grad=True))
            teachers.append(torch.tensor(teacher, dtype=torch.float64))
        params = {}
        if function is fgd:
            for index, shape in enumerate(shapes):
                for side in ("gc_student", "gc_teacher"):
                    for key, pshape in gc_shapes(shape[1]).items():
                        value = rng.normal(0, 0.4, pshape).astype(np.float32)
                        if key == "norm/scale":
                            value += 1
                        pname = f"fgd0/{index}/{side}/{key}"
                        arrays["param:" + pname] = value
                        params[pname] = torch.tensor(value, dtype=torch.float64, requires_grad=True)
        settings = dict(config, **HEAD) if function is bounded_regression else config
        extras = {}
        terms = function(students, teachers, objects, input_size, settings, params, extras)
        loss = sum(terms.values())
        loss.backward()
        for index, s in enumerate(students):
            arrays[f"gradient_{index}"] = s.grad.numpy().astype(np.float32)
        for pname, p in params.items():
            arrays["gradient:" + pname] = p.grad.numpy().astype(np.float32)
        arrays.update({k: v.astype(np.float32) for k, v in extras.items()})
        files = {}
        for key, value in arrays.items():
            file = key.replace("/", "_").replace(":", "__") + ".npy"
            np.save(os.path.join(directory, file), value)
            files[key] = file
        cases[name] = {"config": config, "input_size": list(input_size), "objects": objects, "pairs": len(shapes),
                       "loss": float(loss), "terms": {k: float(v) for k, v in terms.items()}, "files": files}
        print(f"{name}: loss {float(loss):.6g} " + " ".join(f"{k}={float(v):.4g}" for k, v in terms.items()))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
