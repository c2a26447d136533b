#!/usr/bin/env python3
"""Trains a real-size student with every distillation loss, label-free, for a few steps each, and
checks the loss stays finite and goes down (the mean loss of the last epoch below the first's): torchvision FCOS-style detectors with random weights
(the ResNet-50-FPN teacher and ResNet-18-FPN student of tools/bench_distill.py), on synthetic
pictures without annotations (the teacher's detections serve as boxes where a loss needs them).

usage: check_losses_real_size.py [--distill .build/release/distill] [--steps 12] [--batch 4] [--work DIR]
Prints a table (first and last loss per method) and 'N passed, N failed'; exits 1 on any failure.
"""
import argparse
import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_distill import build, export  # noqa: E402

LEVELS = ["p3", "p4", "p5"]
HEAD = """  type: dense
  num_classes: 20
  activation: sigmoid
  box_format: ltrb
  score_threshold: 0.3
  pre_nms_top_k: 300
  max_detections: 50
  levels:
    - {cls: cls_p3, box: box_0, stride: 8}
    - {cls: cls_p4, box: box_1, stride: 16}
    - {cls: cls_p5, box: box_2, stride: 32}
"""
FEATURES = "teacher: [p3, p4, p5], student: [p3, p4, p5]"
CLASSES = "teacher: [cls_p3, cls_p4, cls_p5], student: [cls_p3, cls_p4, cls_p5]"
LOSSES = {
    "mse": f"{{type: mse, {FEATURES}}}",
    "l1": f"{{type: l1, {FEATURES}}}",
    "cosine": f"{{type: cosine, {FEATURES}}}",
    "kd": f"{{type: kd, {CLASSES}, activation: sigmoid, temperature: 2.0}}",
    "cwd": f"{{type: cwd, {FEATURES}, temperature: 4.0}}",
    "pkd": f"{{type: pkd, {FEATURES}}}",
    "fgd": f"{{type: fgd, {FEATURES}, temperature: 0.8, alpha: 1.6e-3, beta: 8.0e-4, gamma: 8.0e-4, lambda: 8.0e-6}}",
    "gid": f"{{type: gid, {FEATURES}, response_reg_weight: 1.0}}",
    "mimic": f"{{type: mimic, {CLASSES}}}",
    "bounded_regression": "{type: bounded_regression, teacher: [box_0, box_1, box_2], student: [box_0, box_1, box_2]}",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distill", default=".build/release/distill")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--work", default=".build-fixtures/real-size")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    images = os.path.join(work, "data")
    if not os.path.exists(os.path.join(images, "train.json")):
        subprocess.run([args.distill, "data", "synth", "--out", images, "--images", str(4 * args.batch), "--seed", "3", "--size", "320",
                        "--overwrite"], check=True, capture_output=True)
    if not os.path.exists(os.path.join(work, "student.onnx")):
        files = sorted(glob.glob(os.path.join(images, "train", "*.png")) + glob.glob(os.path.join(images, "train", "*.jpg")))
        pictures = [np.asarray(Image.open(f).convert("RGB").resize((320, 320), Image.BILINEAR), dtype=np.float32) / 255 for f in files]
        teacher, student = build(torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous())
        export(teacher, os.path.join(work, "teacher.onnx"))
        export(student, os.path.join(work, "student.onnx"))
    passed = failed = 0
    rows = []
    for name, loss in LOSSES.items():
        if args.only and name not in args.only.split(","):
            continue
        config = os.path.join(work, f"{name}.yaml")
        with open(config, "w") as f:
            f.write(f"""teacher: teacher.onnx
student: student.onnx
data: {{images: data/train, size: [320, 320]}}
bn: train
head:
{HEAD}losses:
  - {loss}
train: {{steps: {args.steps}, batch: {args.batch}, optimizer: {{type: sgd, lr: {args.lr}, momentum: 0.9}}, schedule: {{type: constant}}, clip_grad_norm: 35}}
output: runs/{name}
""")
        result = subprocess.run([args.distill, "train", config, "--overwrite"], capture_output=True, text=True)
        if result.returncode != 0:
            failed += 1
            rows.append((name, "FAIL", result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "?"))
            continue
        records = [json.loads(l) for l in open(os.path.join(work, "runs", name, "metrics.jsonl"))][1:]
        losses = [r["loss"] for r in records]
        finite = all(isinstance(v, float) and math.isfinite(v) for v in losses)
        # The data is 4 batches, so the mean over 4 steps is over the same images each epoch.
        epoch = 4
        first, last = sum(losses[:epoch]) / epoch, sum(losses[-epoch:]) / epoch
        terms = {k: (records[0][k], records[-1][k]) for k in records[0] if ":" in k}
        ok = finite and last < first
        passed += ok
        failed += not ok
        rows.append((name, "PASS" if ok else "FAIL", f"mean loss of the first epoch {first:.5g} -> last epoch {last:.5g} ("
                     f"{(1 - last / first) * 100:+.1f}% lower); terms first -> last step: "
                     + ", ".join(f"{k} {a:.4g} -> {b:.4g}" for k, (a, b) in terms.items())))
        print(f"{'PASS' if ok else 'FAIL'} {name}: {rows[-1][2]}", flush=True)
    for row in rows:
        if row[1] == "FAIL" and not row[2].startswith("loss"):
            print(f"FAIL {row[0]}: {row[2]}")
    print(f"real-size losses: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
