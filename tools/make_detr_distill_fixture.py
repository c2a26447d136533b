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

usage: make_detr_distill_fixture.py   (needs torch, torchvision, scipy, numpy)
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "detr_distill")
N, QS, QT, C = 2, 6, 8, 4


def boxes(rng, q):
    centre = rng.uniform(0.2, 0.8, (N, q, 2))
    size = rng.uniform(0.05, 0.4, (N, q, 2))
    return np.concatenate([centre, size], -1).astype(np.float32)


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
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main()
