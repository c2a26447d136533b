#!/usr/bin/env python3
"""Trains a real-size student with every distillation loss, label-free, for a few steps each, and
checks that the loss stays finite and goes down: the mean loss of the last epoch (4 steps over the
same images) below that of the first.

Models: the FCOS-style ResNet-50-FPN teacher and ResNet-18-FPN student of tools/bench_distill.py
(random weights; BatchNormalization statistics and output scales calibrated on the pictures, so
that features and scores have a trained network's ranges and the teacher's detections can serve as
pseudo-labels); for `ld` the same pair with GFL-style distribution boxes; for `detr` a DETR of real
size (ResNet-50, 6 encoder and 6 decoder layers, teaching ResNet-18, 3 and 3; 100 queries of 256).
Data: synthetic pictures (`distill data synth`) without annotations.

usage: check_losses_real_size.py [--distill .build/release/distill] [--steps 12] [--batch 4] [--lr 0.01]
                                 [--only mse,fgd,...] [--work DIR]
Prints one line per method (epoch means, every term at the first and last step) and 'N passed,
N failed'; exits 1 on any failure. About 1.5 minutes per method on 2 cores.
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
import torchvision
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_distill import build, calibrate, export  # noqa: E402

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
    "ld": "{type: ld, teacher: [box_0, box_1, box_2], student: [box_0, box_1, box_2], temperature: 10.0}",
    "detr": "{type: detr, teacher: [enc], student: [enc], query_features: hidden, teacher_queries: query_embed, student_queries: query_embed}",
}


class Attention(torch.nn.Module):
    """Multi-head scaled dot-product attention (queries [N, Q, D], keys and values [N, K, D])."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.out = (torch.nn.Linear(width, width) for _ in range(4))

    def forward(self, query, memory):
        n, q, d = query.shape
        split = lambda x: x.reshape(n, x.shape[1], self.heads, d // self.heads).transpose(1, 2)
        weights = torch.softmax(split(self.q(query)) @ split(self.k(memory)).transpose(2, 3) / (d // self.heads) ** 0.5, -1)
        return self.out((weights @ split(self.v(memory))).transpose(1, 2).reshape(n, q, d))


class Block(torch.nn.Module):
    """A post-norm transformer layer: self-attention, cross-attention to `memory` (decoder only), MLP."""

    def __init__(self, width, heads, cross):
        super().__init__()
        self.attention, self.norm1 = Attention(width, heads), torch.nn.LayerNorm(width)
        self.cross = Attention(width, heads) if cross else None
        self.norm2 = torch.nn.LayerNorm(width)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.ReLU(), torch.nn.Linear(4 * width, width))
        self.norm3 = torch.nn.LayerNorm(width)

    def forward(self, x, memory=None):
        x = self.norm1(x + self.attention(x, x))
        if self.cross is not None:
            x = self.norm2(x + self.cross(x, memory))
        return self.norm3(x + self.mlp(x))


class RealDETR(torch.nn.Module):
    """A DETR of real size: a torchvision ResNet's C5 (stride 32) projected to 256 channels (`enc`,
    [N, 256, 10, 10] at 320x320), a transformer encoder (`memory`, [N, 100, 256]), 100 learned
    queries (`query_embed`) through decoder layers, each with the shared class (20, sigmoid) and box
    (sigmoid cxcywh) heads (`logits_K`, `boxes_K`); `hidden` is the last decoder state."""

    def __init__(self, backbone, channels, encoder_layers, decoder_layers, width=256, queries=100, classes=20):
        super().__init__()
        resnet = getattr(torchvision.models, backbone)(weights=None)
        self.body = torch.nn.Sequential(*list(resnet.children())[:-2])
        self.project = torch.nn.Conv2d(channels, width, 1)
        self.position = torch.nn.Parameter(torch.randn(1, 100, width) * 0.02)
        self.encoder = torch.nn.ModuleList(Block(width, 8, False) for _ in range(encoder_layers))
        self.decoder = torch.nn.ModuleList(Block(width, 8, True) for _ in range(decoder_layers))
        self.query_embed = torch.nn.Parameter(torch.randn(queries, width))
        self.cls = torch.nn.Linear(width, classes)
        self.box = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 4))
        self.decoder_layers = decoder_layers

    def forward(self, images):
        enc = self.project(self.body(images))
        memory = enc.flatten(2).transpose(1, 2) + self.position
        for block in self.encoder:
            memory = block(memory)
        h = self.query_embed.unsqueeze(0).expand(images.shape[0], -1, -1)
        outputs = []
        for block in self.decoder:
            h = block(h, memory)
            outputs += [self.cls(h), torch.sigmoid(self.box(h))]
        return (*outputs, enc, memory, h)


def export_detr(pictures, directory):
    """teacher_detr.onnx (ResNet-50, 6 + 6 layers) and student_detr.onnx (ResNet-18, 3 + 3), BN
    calibrated on `pictures`, class logits scaled so that a few queries score above 0.5."""
    torch.manual_seed(0)
    for name, model in [("teacher", RealDETR("resnet50", 2048, 6, 6)), ("student", RealDETR("resnet18", 512, 3, 3))]:
        calibrate(model, pictures)
        with torch.no_grad():
            logits = model(pictures[:8])[-5]
            model.cls.weight.mul_(1.5 / (logits - model.cls.bias).std().item())
            model.cls.bias.fill_(-3.0)
        layers = model.decoder_layers
        names = [f"{kind}_{k}" for k in range(layers) for kind in ("logits", "boxes")] + ["enc", "memory", "hidden"]
        torch.onnx.export(model, pictures[:1], os.path.join(directory, f"{name}_detr.onnx"), input_names=["images"], output_names=names,
                          opset_version=17, dynamo=False, do_constant_folding=False,  # keeps `query_embed` by its name
                          dynamic_axes={n: {0: "batch"} for n in ["images"] + names})


def detr_head(layers):
    aux = ", ".join(f"{{logits: logits_{k}, boxes: boxes_{k}}}" for k in range(layers - 1))
    return (f"{{type: detr, num_classes: 20, activation: sigmoid, logits: logits_{layers - 1}, boxes: boxes_{layers - 1}, "
            f"aux: [{aux}], score_threshold: 0.3, max_detections: 50}}")


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
    files = sorted(glob.glob(os.path.join(images, "train", "*.png")) + glob.glob(os.path.join(images, "train", "*.jpg")))
    pictures = [np.asarray(Image.open(f).convert("RGB").resize((320, 320), Image.BILINEAR), dtype=np.float32) / 255 for f in files]
    calibration = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous()
    if (not args.only or "detr" in args.only.split(",")) and not os.path.exists(os.path.join(work, "student_detr.onnx")):
        export_detr(calibration, work)
    # `ld` needs distribution box outputs: a second pair with GFL-style boxes (17 bins per side).
    for suffix, bins in [("", None), ("_dfl", 17)]:
        if suffix and args.only and "ld" not in args.only.split(","):
            continue
        if not os.path.exists(os.path.join(work, f"student{suffix}.onnx")):
            teacher, student = build(calibration, box_bins=bins)
            export(teacher, os.path.join(work, f"teacher{suffix}.onnx"))
            export(student, os.path.join(work, f"student{suffix}.onnx"))
    passed = failed = 0
    rows = []
    for name, loss in LOSSES.items():
        if args.only and name not in args.only.split(","):
            continue
        config = os.path.join(work, f"{name}.yaml")
        pair = {"ld": "_dfl", "detr": "_detr"}.get(name, "")
        head = {"_dfl": "head:\n" + HEAD.replace("box_format: ltrb", "box_format: dfl\n  reg_max: 16"),
                "_detr": f"teacher_head: {detr_head(6)}\nstudent_head: {detr_head(3)}\n"}.get(pair, "head:\n" + HEAD)
        with open(config, "w") as f:
            f.write(f"""teacher: teacher{pair}.onnx
student: student{pair}.onnx
data: {{images: data/train, size: [320, 320]}}
bn: train
{head}losses:
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
