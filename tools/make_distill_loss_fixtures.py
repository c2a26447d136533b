#!/usr/bin/env python3
"""PyTorch references for the distillation losses of `distill train` (Sources/DistillTrain/Losses),
written from the formulas of shared/METHODS.md: for each case, a seeded student and teacher tensor,
the loss (computed in float64) and its gradient with respect to the student. Writes
Tests/Fixtures/distill_losses/CASE/{student,teacher,gradient}.npy and cases.json (each case's
loss config and value).

usage: make_distill_loss_fixtures.py   (needs torch, numpy)
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "distill_losses")


def mse(s, t, _):
    return ((s - t) ** 2).mean()


def l1(s, t, _):
    return (s - t).abs().mean()


def cosine(s, t, _):
    dot = (s * t).sum(1)
    norms = ((s * s).sum(1) * (t * t).sum(1)).clamp_min(1e-16).sqrt()
    return 1 - (dot / norms).mean()


def kd(s, t, settings):
    temperature = settings.get("temperature", 1.0)
    zs, zt = s / temperature, t / temperature
    if settings.get("activation", "sigmoid") == "sigmoid":
        loss = F.binary_cross_entropy_with_logits(zs, torch.sigmoid(zt))
    else:
        axis = settings.get("axis", 1)
        log_s, log_t = F.log_softmax(zs, axis), F.log_softmax(zt, axis)
        per_class = log_t.exp() * (log_t - log_s)
        weight = settings.get("background_weight", 1.0)
        if weight != 1.0:
            weights = torch.ones(s.shape[axis], dtype=s.dtype)
            weights[0] = weight
            shape = [1] * s.dim()
            shape[axis] = -1
            per_class = per_class * weights.view(shape)
        loss = per_class.sum(axis).mean()
    return loss * temperature ** 2


def cwd(s, t, settings):
    tau = settings.get("temperature", 1.0)
    n, c, h, w = s.shape
    log_s = F.log_softmax(s.reshape(n, c, h * w) / tau, 2)
    log_t = F.log_softmax(t.reshape(n, c, h * w) / tau, 2)
    return tau ** 2 * (log_t.exp() * (log_t - log_s)).sum(2).sum() / (n * c)


def pkd(s, t, _):
    def norm(x):
        c = x.shape[1]
        flat = x.permute(1, 0, 2, 3).reshape(c, -1)
        mean, std = flat.mean(-1, keepdim=True), flat.std(-1, keepdim=True)
        return ((flat - mean) / (std + 1e-6))
    return F.mse_loss(norm(s), norm(t)) / 2


def ld(s, t, settings):
    temperature = settings.get("temperature", 10.0)
    n, c, h, w = s.shape
    bins = c // 4
    log_s = F.log_softmax(s.reshape(n, 4, bins, h, w) / temperature, 2)
    log_t = F.log_softmax(t.reshape(n, 4, bins, h, w) / temperature, 2)
    return (log_t.exp() * (log_t - log_s)).sum(2).mean() * temperature ** 2


CASES = [
    ("mse", mse, {"type": "mse"}, (2, 6, 5, 7)),
    ("l1", l1, {"type": "l1"}, (2, 6, 5, 7)),
    ("cosine", cosine, {"type": "cosine"}, (2, 6, 5, 7)),
    ("kd_sigmoid", kd, {"type": "kd", "activation": "sigmoid", "temperature": 2.0}, (2, 5, 4, 6)),
    ("kd_softmax", kd, {"type": "kd", "activation": "softmax", "temperature": 3.0, "background_weight": 1.5}, (2, 4, 3, 5)),
    ("kd_softmax_last_axis", kd, {"type": "kd", "activation": "softmax", "axis": -1}, (2, 7, 6)),
    ("cwd", cwd, {"type": "cwd", "temperature": 4.0}, (2, 6, 5, 7)),
    ("pkd", pkd, {"type": "pkd"}, (2, 6, 5, 7)),
    ("ld", ld, {"type": "ld", "temperature": 10.0, "reg_max": 7}, (2, 32, 3, 4)),
]


def main():
    rng = np.random.default_rng(0)
    cases = {}
    for name, function, config, shape in CASES:
        student = rng.normal(0, 1.5, shape).astype(np.float32)
        teacher = (0.6 * student + rng.normal(0.3, 1.2, shape)).astype(np.float32)
        s = torch.tensor(student, dtype=torch.float64, requires_grad=True)
        loss = function(s, torch.tensor(teacher, dtype=torch.float64), config)
        loss.backward()
        directory = os.path.join(OUT, name)
        os.makedirs(directory, exist_ok=True)
        np.save(os.path.join(directory, "student.npy"), student)
        np.save(os.path.join(directory, "teacher.npy"), teacher)
        np.save(os.path.join(directory, "gradient.npy"), s.grad.numpy().astype(np.float32))
        cases[name] = {"config": config, "loss": float(loss)}
        print(f"{name}: loss {float(loss):.6f}")
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
