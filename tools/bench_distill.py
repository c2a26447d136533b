#!/usr/bin/env python3
"""A distillation step of distill side by side with PyTorch doing the same work on the same CPU:
torchvision FCOS-style detectors (random weights), a ResNet-50-FPN teacher (256-channel levels)
and a ResNet-18-FPN student (128-channel levels), batch 8 at 320x320; `mse` on the P3-P5 levels
through 1x1 adapters (128 -> 256) plus sigmoid `kd` on the P3-P5 class maps; SGD with momentum;
BatchNormalization frozen. PyTorch runs the teacher under no_grad, the student and adapters with
autograd, then `optimizer.step()`; distill runs `distill train` on the same ONNX exports and data.

Prints both median step times, their ratio, and each side's peak resident memory; the last line
is JSON. Needs a release build of distill and the PyTorch environment (`make torch-deps`).

usage: bench_distill.py [--distill .build/release/distill] [--steps 6] [--threads 2] [--work DIR]
(distill uses every core; run it on a machine with --threads cores, as this project's 2-core one.)
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

LEVELS = ["p3", "p4", "p5"]


class RawFCOS(torch.nn.Module):
    """Backbone + FCOS head without post-processing: P3-P5 features and class maps as outputs."""

    def __init__(self, backbone_name, channels, classes=20):
        super().__init__()
        self.backbone = resnet_fpn_backbone(backbone_name=backbone_name, weights=None, trainable_layers=5, returned_layers=[2, 3, 4],
                                            norm_layer=torch.nn.BatchNorm2d,
                                            extra_blocks=LastLevelP6P7(channels, channels))
        self.head = torchvision.models.detection.fcos.FCOSHead(channels, 1, classes)

    def forward(self, images):
        features = list(self.backbone(images).values())
        cls = [self.head.classification_head.cls_logits(self.head.classification_head.conv(f)) for f in features]
        box = []
        for f in features:
            r = self.head.regression_head.conv(f)
            box.append(self.head.regression_head.bbox_reg(r))
        return tuple(features[:3]) + tuple(cls[:3]) + tuple(box)


def narrow_fpn(model, channels):
    """resnet_fpn_backbone always builds 256-channel levels; rebuild the FPN at `channels`."""
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork
    body_channels = [128, 256, 512] if channels < 256 else [512, 1024, 2048]
    model.backbone.fpn = FeaturePyramidNetwork(body_channels, channels, extra_blocks=LastLevelP6P7(channels, channels))
    model.backbone.out_channels = channels
    return model


def calibrate(model, images):
    """Running BatchNormalization statistics from a few random batches, as a trained network would
    have them (random weights with the initial statistics make activations grow layer by layer)."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        for batch in images.split(4):
            model(batch)
    return model.eval()


def build(images=None, box_bins=None):
    """The teacher and student, BatchNormalization statistics and output scales calibrated on
    `images` ([N, 3, 320, 320], 0-1; default 16 uniform-noise pictures). With `box_bins`, the box
    outputs are GFL-style distributions: 4 x box_bins channels per level."""
    torch.manual_seed(0)
    teacher = RawFCOS("resnet50", 256)
    student = narrow_fpn(RawFCOS("resnet18", 128), 128)
    student.head = torchvision.models.detection.fcos.FCOSHead(128, 1, 20)
    if box_bins:
        for model, channels in [(teacher, 256), (student, 128)]:
            model.head.regression_head.bbox_reg = torch.nn.Conv2d(channels, 4 * box_bins, 3, padding=1)
            torch.nn.init.normal_(model.head.regression_head.bbox_reg.weight, std=0.01)
    images = torch.rand(16, 3, 320, 320) if images is None else images
    return scale_outputs(calibrate(teacher, images), images), scale_outputs(calibrate(student, images), images)


def scale_outputs(model, images):
    """Output scales a trained FCOS has (random weights give FPN levels with a standard deviation
    in the hundreds): each FPN output conv rescaled to unit standard deviation, class logits to
    standard deviation 1.5 around -2.5 (a few percent of locations score above 0.5, so a teacher's
    detections can serve as pseudo-labels), box distances to 3 +- 0.5 strides."""
    images = images[:8]
    with torch.no_grad():
        for conv in model.backbone.fpn.layer_blocks:
            captured = {}
            handle = conv.register_forward_hook(lambda m, i, o: captured.setdefault("y", o))
            model(images)
            handle.remove()
            scale = 1 / captured["y"].std().item()
            inner = conv[0] if isinstance(conv, torch.nn.Sequential) else conv
            inner.weight.mul_(scale)
            inner.bias.mul_(scale)
        for conv, std, mean in [(model.head.classification_head.cls_logits, 1.5, -2.5), (model.head.regression_head.bbox_reg, 0.5, 3.0)]:
            captured = {}
            handle = conv.register_forward_hook(lambda m, i, o: captured.setdefault("y", o))
            model(images)
            handle.remove()
            conv.weight.mul_(std / (captured["y"] - conv.bias.view(1, -1, 1, 1)).std().item())
            conv.bias.fill_(mean)
    return model


OUTPUT_NAMES = LEVELS + [f"cls_{l}" for l in LEVELS] + [f"box_{i}" for i in range(5)]


def export(model, path):
    torch.onnx.export(model, torch.rand(1, 3, 320, 320), path, opset_version=17, dynamo=False, input_names=["images"],
                      output_names=OUTPUT_NAMES, dynamic_axes={"images": {0: "batch"}})


def pytorch_steps(teacher, student, images, steps, threads):
    torch.set_num_threads(threads)
    adapters = torch.nn.ModuleList([torch.nn.Conv2d(128, 256, 1) for _ in LEVELS])
    for m in student.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    optimizer = torch.optim.SGD(list(student.parameters()) + list(adapters.parameters()), lr=0.01, momentum=0.9, weight_decay=1e-4)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        with torch.no_grad():
            t = teacher(images)
        s = student(images)
        loss = sum(((adapters[i](s[i]) - t[i]) ** 2).mean() for i in range(3))
        loss = loss + sum(F.binary_cross_entropy_with_logits(s[3 + i], torch.sigmoid(t[3 + i])) for i in range(3))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distill", default=".build/release/distill")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=".build-fixtures/bench-distill")
    args = parser.parse_args()
    os.makedirs(os.path.join(args.work, "data"), exist_ok=True)
    teacher, student = build()
    export(teacher, os.path.join(args.work, "teacher.onnx"))
    export(student, os.path.join(args.work, "student.onnx"))
    rng = np.random.default_rng(0)
    images = rng.random((8, 3, 320, 320), dtype=np.float32)
    for index in range(8):
        np.save(os.path.join(args.work, "data", f"sample_{index}.npy"), images[index])
    config = os.path.join(args.work, "distill.yaml")
    with open(config, "w") as f:
        f.write(f"""teacher: teacher.onnx
student: student.onnx
data: {{tensors: data, shuffle: false}}
bn: frozen
losses:
  - {{type: mse, teacher: [p3, p4, p5], student: [p3, p4, p5]}}
  - {{type: kd, teacher: [cls_p3, cls_p4, cls_p5], student: [cls_p3, cls_p4, cls_p5], activation: sigmoid}}
train: {{steps: {args.steps}, batch: 8, optimizer: {{type: sgd, lr: 0.01, momentum: 0.9, weight_decay: 1.0e-4}}, schedule: {{type: constant}}}}
output: run
""")
    env = dict(os.environ)
    start = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "%M", args.distill, "train", config, "--overwrite"], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        sys.exit(1)
    distill_rss_mb = int(result.stderr.strip().splitlines()[-1]) / 1024
    lines = [json.loads(l) for l in open(os.path.join(args.work, "run", "metrics.jsonl"))]
    distill_times = [l["step_ms"] for l in lines if l.get("step", 0) > 1 and "step_ms" in l]
    print(f"distill: steps (after the first) {[round(t) for t in distill_times]} ms, peak RSS {distill_rss_mb:.0f} MB, "
          f"wall {time.perf_counter() - start:.1f} s", file=sys.stderr)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch_times = pytorch_steps(teacher, student, torch.from_numpy(images), args.steps, args.threads)[1:]
    torch_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"PyTorch {torch.__version__}: steps (after the first) {[round(t) for t in torch_times]} ms, peak RSS {torch_rss_mb:.0f} MB "
          f"(before the steps {before / 1024:.0f} MB)", file=sys.stderr)
    d, t = statistics.median(distill_times), statistics.median(torch_times)
    print(json.dumps({"distill_step_ms_median": round(d, 1), "pytorch_step_ms_median": round(t, 1), "ratio": round(d / t, 3),
                      "distill_peak_rss_mb": round(distill_rss_mb), "pytorch_peak_rss_mb": round(torch_rss_mb),
                      "threads": args.threads, "batch": 8, "size": 320}))


if __name__ == "__main__":
    main()
