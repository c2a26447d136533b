#!/usr/bin/env python3
"""PyTorch reference for the `detr` distillation loss (DETRDistill's progressive instance
distillation, shared/METHODS.md §4): two decoder layers of a sigmoid query head, a student with 6
queries and a teacher with 8, 4 classes, batch 2. Per layer and image, the student's queries are
matched to the teacher's with scipy's linear_sum_assignment on
cost = 1 * mean_c BCE(z_S, sigmoid(z_T)) + 5 * L1(b_S, b_T) - 2 * GIoU(b_S, b_T), and the matched
pairs give 1 * mean BCE + 5 * sum L1 / pairs + 2 * mean(1 - GIoU). Writes
Tests/Fixtures/detr_distill/: {student,teacher}_{logits,boxes}_{0,1}.npy, gradient_{logits,boxes}_{0,1}.npy
(of the sum of both layers' losses with respect to the student's tensors) and expected.json (each
layer's loss and matched rows).

Also the two other DETRDistill terms, with the same teacher: the attention-agnostic feature term
(query_features, {teacher,student}_enc_{map,seq}, mask_enc_{map,seq} and gradient_enc_{map,seq}.npy;
objects and settings in expected.json) and teacher-assisted assignment (assisted_{logits,boxes}_{0,1}
as the student's second-pass outputs, gradient_assisted_*); and tiny/{teacher,student}.onnx, a
DETR-style pair for a `distill train` run.

usage: make_detr_distill_fixture.py   (needs torch, torchvision, scipy, numpy)
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, box_iou, generalized_box_iou

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "detr_distill")
N, QS, QT, C = 2, 6, 8, 4


def boxes(rng, q):
    centre = rng.uniform(0.2, 0.8, (N, q, 2))
    size = rng.uniform(0.05, 0.4, (N, q, 2))
    return np.concatenate([centre, size], -1).astype(np.float32)


# --- attention-agnostic feature term and teacher-assisted assignment (METHODS.md §4) ---
SIZE = (64, 64)  # network input (height, width) in pixels
TOP_K, FEATURE_WEIGHT, ASSISTED_WEIGHT = 5, 2.0, 0.5
OBJECTS = [  # per image: boxes xyxy in input pixels, class indices
    {"boxes": [[10, 12, 30, 40], [30, 20, 56, 44], [5, 40, 25, 60]], "labels": [0, 2, 3]},
    {"boxes": [[20, 10, 44, 30], [14, 30, 50, 58]], "labels": [1, 1]},
]


def quality(logits, boxes, objects, top_k):
    """q = max_c sigmoid(z) * IoU(box, best object) for each image's top-k queries by score, else 0."""
    height, width = SIZE
    scores = torch.sigmoid(logits).max(-1).values
    result = torch.zeros_like(scores)
    scale = torch.tensor([width, height, width, height], dtype=boxes.dtype)
    for image, found in enumerate(objects):
        kept = torch.topk(scores[image], min(top_k, scores.shape[1])).indices
        pixels = box_convert(boxes[image][kept] * scale, "cxcywh", "xyxy")
        truth = torch.tensor(found["boxes"], dtype=boxes.dtype)
        iou = box_iou(pixels, truth).max(1).values if len(truth) else torch.zeros(len(kept), dtype=boxes.dtype)
        result[image, kept] = scores[image, kept] * iou
    return result


def feature_mask(feature, hidden, q):
    """clamp(sum_q q * <q_hat, f_hat_p>, 0.01) / max_p, for a map [N, D, H, W] or a sequence [N, L, D]."""
    positions = feature.flatten(2).transpose(1, 2) if feature.dim() == 4 else feature
    s = torch.einsum("nq,nqd,npd->np", q, F.normalize(hidden, dim=-1), F.normalize(positions, dim=-1)).clamp(min=0.01)
    m = s / s.max(1, keepdim=True).values
    return m.reshape(feature.shape[0], 1, *feature.shape[2:]) if feature.dim() == 4 else m[..., None]


def match_objects(logits, boxes, objects):
    """Per image, Hungarian (query, object) pairs on 1 * mean_c BCE(z, onehot) + 5 * L1 - 2 * GIoU."""
    height, width = SIZE
    scale = torch.tensor([width, height, width, height], dtype=boxes.dtype)
    result = []
    for image, found in enumerate(objects):
        truth = box_convert(torch.tensor(found["boxes"], dtype=boxes.dtype) / scale, "xyxy", "cxcywh")
        onehot = F.one_hot(torch.tensor(found["labels"]), logits.shape[-1]).to(logits.dtype)
        x = logits[image][:, None, :]
        bce = (x.clamp_min(0) - x * onehot[None] + torch.log1p(torch.exp(-x.abs()))).mean(-1)
        l1 = torch.cdist(boxes[image], truth, p=1)
        giou = generalized_box_iou(box_convert(boxes[image], "cxcywh", "xyxy"), box_convert(truth, "cxcywh", "xyxy"))
        rows, columns = linear_sum_assignment((1 * bce + 5 * l1 - 2 * giou).numpy())
        result.append([(int(r), truth[c], found["labels"][c]) for r, c in zip(rows, columns)])
    return result


def assisted_loss(logits, boxes, assignment):
    """1 * mean BCE over all queries (one-hot on matched, 0 elsewhere) + 5 * sum L1 / M + 2 * sum (1 - GIoU) / M."""
    targets = torch.zeros_like(logits)
    predicted, truth = [], []
    for image, pairs in enumerate(assignment):
        for query, box, label in pairs:
            targets[image, query, label] = 1
            predicted.append(boxes[image, query])
            truth.append(box)
    predicted, truth = torch.stack(predicted), torch.stack(truth)
    matched = max(1, len(predicted))
    classification = F.binary_cross_entropy_with_logits(logits, targets)
    l1 = (predicted - truth).abs().sum() / matched
    giou = (1 - torch.diag(generalized_box_iou(box_convert(predicted, "cxcywh", "xyxy"), box_convert(truth, "cxcywh", "xyxy")))).sum() / matched
    return 1 * classification + 5 * l1 + 2 * giou


def feature_and_assisted(rng_seed):
    """The feature term on a map [2, 6, 4, 5] and a sequence [2, 7, 6] level (query features [2, 8, 6],
    the teacher's final layer of the instance fixture for scores and boxes), and the assisted term on
    second-pass student outputs [2, 8, 4] for both layers, matched through the teacher's layers."""
    rng = np.random.default_rng(rng_seed)
    load = lambda name: torch.tensor(np.load(os.path.join(OUT, name + ".npy")), dtype=torch.float64)
    result = {"objects": OBJECTS, "size": list(SIZE), "top_k": TOP_K, "feature_weight": FEATURE_WEIGHT, "assisted_weight": ASSISTED_WEIGHT}
    # Feature term.
    hidden_np = rng.normal(0, 1, (N, QT, 6)).astype(np.float32)
    np.save(os.path.join(OUT, "query_features.npy"), hidden_np)
    q = quality(load("teacher_logits_1"), load("teacher_boxes_1"), OBJECTS, TOP_K)
    feature = 0
    students = {}
    for name, shape in [("enc_map", (N, 6, 4, 5)), ("enc_seq", (N, 7, 6))]:
        teacher_np = rng.normal(0, 1, shape).astype(np.float32)
        student_np = rng.normal(0, 1, shape).astype(np.float32)
        np.save(os.path.join(OUT, f"teacher_{name}.npy"), teacher_np)
        np.save(os.path.join(OUT, f"student_{name}.npy"), student_np)
        teacher = torch.tensor(teacher_np, dtype=torch.float64)
        students[name] = torch.tensor(student_np, dtype=torch.float64, requires_grad=True)
        m = feature_mask(teacher, torch.tensor(hidden_np, dtype=torch.float64), q)
        np.save(os.path.join(OUT, f"mask_{name}.npy"), m.numpy().astype(np.float32))
        feature = feature + F.mse_loss(m * teacher, m * students[name])
    feature = FEATURE_WEIGHT * feature
    feature.backward()
    for name, value in students.items():
        np.save(os.path.join(OUT, f"gradient_{name}.npy"), value.grad.numpy().astype(np.float32))
    result["feature"] = float(feature)
    # Teacher-assisted assignment.
    assisted = 0
    second = {}
    result["assigned_queries"] = []
    for layer in range(2):
        logits_np = rng.normal(0, 2, (N, QT, C)).astype(np.float32)
        boxes_np = boxes(rng, QT)
        np.save(os.path.join(OUT, f"assisted_logits_{layer}.npy"), logits_np)
        np.save(os.path.join(OUT, f"assisted_boxes_{layer}.npy"), boxes_np)
        second[layer] = (torch.tensor(logits_np, dtype=torch.float64, requires_grad=True), torch.tensor(boxes_np, dtype=torch.float64, requires_grad=True))
        assignment = match_objects(load(f"teacher_logits_{layer}"), load(f"teacher_boxes_{layer}"), OBJECTS)
        result["assigned_queries"].append([sorted(query for query, _, _ in pairs) for pairs in assignment])
        assisted = assisted + assisted_loss(*second[layer], assignment)
    assisted = ASSISTED_WEIGHT * assisted
    assisted.backward()
    for layer, (logits, boxes_) in second.items():
        np.save(os.path.join(OUT, f"gradient_assisted_logits_{layer}.npy"), logits.grad.numpy().astype(np.float32))
        np.save(os.path.join(OUT, f"gradient_assisted_boxes_{layer}.npy"), boxes_.grad.numpy().astype(np.float32))
    result["assisted"] = float(assisted)
    print(f"feature {float(feature):.6f}, assisted {float(assisted):.6f}")
    return result


class TinyDETR(torch.nn.Module):
    """A DETR-style detector small enough for a fixture: a strided conv backbone (`feat`), a 1x1
    projection to width D (`enc`, [N, D, H, W]), its flattened memory (`memory`, [N, H*W, D]), learned
    queries (`query_embed`, [Q, D]) and decoder layers of single-head cross-attention plus an MLP, each
    with shared class and box heads (`logits_K` [N, Q, 5], `boxes_K` [N, Q, 4] sigmoid cxcywh);
    `hidden` is the last layer's query state [N, Q, D]."""

    def __init__(self, backbone, hidden, layers, queries=6, width=8, classes=5):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, backbone, 3, stride=4, padding=1), torch.nn.ReLU(),
                                            torch.nn.Conv2d(backbone, backbone, 3, stride=2, padding=1), torch.nn.ReLU())
        self.project = torch.nn.Conv2d(backbone, width, 1)
        self.query_embed = torch.nn.Parameter(torch.randn(queries, width))
        self.key = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(layers))
        self.mlp = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, width))
                                       for _ in range(layers))
        self.cls = torch.nn.Linear(width, classes)
        self.box = torch.nn.Linear(width, 4)
        self.width = width

    def forward(self, images):
        feat = self.backbone(images)
        enc = self.project(feat)
        memory = enc.flatten(2).transpose(1, 2)
        h = self.query_embed.unsqueeze(0).expand(images.shape[0], -1, -1)
        outputs = []
        for key, mlp in zip(self.key, self.mlp):
            attention = torch.softmax(h @ key(memory).transpose(1, 2) / self.width ** 0.5, -1)
            h = h + attention @ memory
            h = h + mlp(h)
            outputs += [self.cls(h), torch.sigmoid(self.box(h))]
        return (*outputs, feat, enc, memory, h)


def tiny_models():
    """Tests/Fixtures/detr_distill/tiny/{teacher,student}.onnx for 96 x 128 images (Tests/Fixtures/eval
    images): the teacher with a 16-channel backbone and MLP 32, the student 4 and 16, both two decoder
    layers, six queries of width 8 (so the teacher's queries can replace the student's)."""
    directory = os.path.join(OUT, "tiny")
    os.makedirs(directory, exist_ok=True)
    torch.manual_seed(0)
    names = ["logits_0", "boxes_0", "logits_1", "boxes_1", "feat", "enc", "memory", "hidden"]
    for name, model in [("teacher", TinyDETR(16, 32, 2)), ("student", TinyDETR(4, 16, 2))]:
        model.eval()
        torch.onnx.export(model, torch.rand(2, 3, 96, 128), os.path.join(directory, name + ".onnx"), input_names=["images"],
                          output_names=names, opset_version=17, dynamo=False, do_constant_folding=False,
                          dynamic_axes={n: {0: "batch"} for n in ["images"] + names})


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(3)
    expected = {"layers": []}
    for layer in range(2):
        zs_np, zt_np = rng.normal(0, 2, (N, QS, C)).astype(np.float32), rng.normal(0, 2, (N, QT, C)).astype(np.float32)
        bs_np, bt_np = boxes(rng, QS), boxes(rng, QT)
        for name, array in [("student_logits", zs_np), ("teacher_logits", zt_np), ("student_boxes", bs_np), ("teacher_boxes", bt_np)]:
            np.save(os.path.join(OUT, f"{name}_{layer}.npy"), array)
        zs = torch.tensor(zs_np, dtype=torch.float64, requires_grad=True)
        bs = torch.tensor(bs_np, dtype=torch.float64, requires_grad=True)
        zt, bt = torch.tensor(zt_np, dtype=torch.float64), torch.tensor(bt_np, dtype=torch.float64)
        student_rows, teacher_rows = [], []
        with torch.no_grad():
            for image in range(N):
                p = torch.sigmoid(zt[image])
                x = zs[image][:, None, :]
                bce = (x.clamp_min(0) - x * p[None] + torch.log1p(torch.exp(-x.abs()))).mean(-1)
                l1 = torch.cdist(bs[image], bt[image], p=1)
                giou = generalized_box_iou(box_convert(bs[image], "cxcywh", "xyxy"), box_convert(bt[image], "cxcywh", "xyxy"))
                cost = 1 * bce + 5 * l1 - 2 * giou
                rows, columns = linear_sum_assignment(cost.numpy())
                student_rows += [image * QS + int(r) for r in rows]
                teacher_rows += [image * QT + int(c) for c in columns]
        s_rows, t_rows = torch.tensor(student_rows), torch.tensor(teacher_rows)
        zs_m, zt_m = zs.reshape(-1, C)[s_rows], zt.reshape(-1, C)[t_rows]
        bs_m, bt_m = bs.reshape(-1, 4)[s_rows], bt.reshape(-1, 4)[t_rows]
        classification = F.binary_cross_entropy_with_logits(zs_m, torch.sigmoid(zt_m))
        l1 = (bs_m - bt_m).abs().sum() / len(student_rows)
        giou = (1 - torch.diag(generalized_box_iou(box_convert(bs_m, "cxcywh", "xyxy"), box_convert(bt_m, "cxcywh", "xyxy")))).mean()
        loss = 1 * classification + 5 * l1 + 2 * giou
        loss.backward()
        np.save(os.path.join(OUT, f"gradient_logits_{layer}.npy"), zs.grad.numpy().astype(np.float32))
        np.save(os.path.join(OUT, f"gradient_boxes_{layer}.npy"), bs.grad.numpy().astype(np.float32))
        expected["layers"].append({"loss": float(loss), "student_rows": student_rows, "teacher_rows": teacher_rows})
        print(f"layer {layer}: loss {float(loss):.6f}, pairs {len(student_rows)}")
    expected.update(feature_and_assisted(rng_seed=4))
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    tiny_models()


if __name__ == "__main__":
    main()
