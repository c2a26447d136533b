#!/usr/bin/env python3
"""Trains the demo's teacher and the starting point of its student on the synthetic shapes task
(`distill data synth`), with PyTorch and torchvision's FCOS, and exports both as ONNX with raw
per-level outputs (class logits, ltrb boxes, centerness: a `dense` head) plus their head configs.

- teacher: a ResNet-like backbone at widths 32-256, a 96-channel FPN (P3-P5) and torchvision's
  FCOS head with 4-conv towers, trained with FCOS's own loss for --teacher-epochs epochs;
- student: widths 16-96, a 32-channel FPN and 2-conv towers (at least 4x fewer FLOPs), trained for
  --student-epochs epochs (0: left as initialised): the starting point `distill demo` trains from.

Writes models/demo_teacher.onnx, models/demo_student.onnx and models/demo.head.yaml (the same
head layout for both). The models take [N, 3, SIZE, SIZE] images scaled to [0, 1].

usage: train_demo_models.py --data DIR [--size 256] [--teacher-epochs 12] [--student-epochs 0]
       [--threads 2] [--out models]      (DIR as written by `distill data synth`; needs torch, torchvision)
"""
import argparse
import json
import math
import os
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torchvision
from PIL import Image
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork


class Backbone(nn.Module):
    """Stem (stride 4) and three stages of two residual blocks at strides 8, 16, 32, then an FPN."""

    def __init__(self, widths, fpn_channels):
        super().__init__()
        from torchvision.models.resnet import BasicBlock
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True),
                                  nn.Conv2d(widths[0], widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages, inplanes = [], widths[0]
        for width in widths[1:]:
            down = nn.Sequential(nn.Conv2d(inplanes, width, 1, 2, bias=False), nn.BatchNorm2d(width))
            stages.append(nn.Sequential(BasicBlock(inplanes, width, 2, down), BasicBlock(width, width)))
            inplanes = width
        self.stages = nn.ModuleList(stages)
        self.fpn = FeaturePyramidNetwork(widths[1:], fpn_channels)
        self.out_channels = fpn_channels

    def forward(self, x):
        x = self.stem(x)
        features = OrderedDict()
        for index, stage in enumerate(self.stages):
            x = stage(x)
            features[f"p{index + 3}"] = x
        return self.fpn(features)


def detector(widths, fpn_channels, head_convs, classes, size):
    backbone = Backbone(widths, fpn_channels)
    anchors = AnchorGenerator(((8,), (16,), (32,)), ((1.0,),) * 3)
    model = torchvision.models.detection.FCOS(
        backbone, num_classes=classes, min_size=size, max_size=size, image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
        anchor_generator=anchors, score_thresh=0.05, nms_thresh=0.6, detections_per_img=100, topk_candidates=1000)
    if head_convs != 4:
        model.head = torchvision.models.detection.fcos.FCOSHead(fpn_channels, 1, classes, num_convs=head_convs)
    return model


class RawOutputs(nn.Module):
    """The detector without its transform and post-processing: per level class logits, ltrb box
    distances (after FCOS's ReLU) and centerness logits, with names the head config uses."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        features = list(self.model.backbone(images).values())
        cls_head, reg_head = self.model.head.classification_head, self.model.head.regression_head
        cls, box, ctr = [], [], []
        for f in features:
            cls.append(cls_head.cls_logits(cls_head.conv(f)))
            r = reg_head.conv(f)
            box.append(nn.functional.relu(reg_head.bbox_reg(r)))
            ctr.append(reg_head.bbox_ctrness(r))
        return tuple(cls + box + ctr)


OUTPUT_NAMES = [f"cls_p{l}" for l in (3, 4, 5)] + [f"box_p{l}" for l in (3, 4, 5)] + [f"ctr_p{l}" for l in (3, 4, 5)]


class CocoShapes(torch.utils.data.Dataset):
    def __init__(self, directory, split):
        with open(os.path.join(directory, f"{split}.json")) as f:
            coco = json.load(f)
        self.directory = os.path.join(directory, split)
        self.categories = sorted(c["id"] for c in coco["categories"])
        self.names = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
        by_image = {}
        for a in coco["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        self.images = [(i["file_name"], by_image.get(i["id"], [])) for i in coco["images"]]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        file, annotations = self.images[index]
        image = torch.from_numpy(np.asarray(Image.open(os.path.join(self.directory, file)).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in annotations],
                             dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([self.categories.index(a["category_id"]) for a in annotations], dtype=torch.int64)
        return image, {"boxes": boxes, "labels": labels}


def flops(model, size):
    """Multiply-adds of the convolutions for one image (a FLOP count for comparing the two)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        total += output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        RawOutputs(model).eval()(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total


def train(model, dataset, epochs, batch, rate, label):
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, collate_fn=lambda b: tuple(zip(*b)), drop_last=True)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=rate, momentum=0.9, weight_decay=1e-4)
    steps = max(1, epochs * len(loader))
    warmup = min(200, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup))))
    model.train()
    step, start = 0, time.time()
    for epoch in range(epochs):
        for images, targets in loader:
            losses = model(list(images), list(targets))
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 35)
            optimizer.step()
            schedule.step()
            step += 1
            if step % 50 == 0 or step == steps:
                print(f"{label}: epoch {epoch + 1}/{epochs} step {step}/{steps} loss {loss.item():.3f} "
                      f"({', '.join(f'{k} {v.item():.3f}' for k, v in losses.items())}) {time.time() - start:.0f} s", flush=True)
    model.eval()


def export(model, path, size):
    torch.onnx.export(RawOutputs(model).eval(), torch.rand(1, 3, size, size), path, opset_version=17, dynamo=False,
                      input_names=["images"], output_names=OUTPUT_NAMES,
                      dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in OUTPUT_NAMES}})


def head_yaml(classes, names):
    levels = "\n".join(f"  - {{cls: cls_p{l}, box: box_p{l}, quality: ctr_p{l}, stride: {1 << l}}}" for l in (3, 4, 5))
    return f"""# The demo models' head: torchvision FCOS raw outputs (tools/train_demo_models.py)
type: dense
num_classes: {classes}
class_names: [{', '.join(names)}]
activation: sigmoid
box_format: ltrb
quality_mode: sqrt
offset: 0.0
score_threshold: 0.05
pre_nms_top_k: 1000
nms_iou: 0.6
max_detections: 100
levels:
{levels}
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--teacher-epochs", type=int, default=12)
    parser.add_argument("--student-epochs", type=int, default=0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="models")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dataset = CocoShapes(args.data, "train")
    classes = len(dataset.categories)
    teacher = detector([32, 64, 128, 256], 96, 4, classes, args.size)
    student = detector([16, 24, 48, 96], 32, 2, classes, args.size)
    teacher_flops, student_flops = flops(teacher, args.size), flops(student, args.size)
    print(f"teacher {teacher_flops / 1e9:.2f} GMAC, student {student_flops / 1e9:.2f} GMAC per {args.size}x{args.size} image "
          f"(ratio {teacher_flops / student_flops:.1f}); {len(dataset)} training images, {classes} classes", flush=True)
    train(teacher, dataset, args.teacher_epochs, args.batch, 0.01, "teacher")
    if args.student_epochs:
        train(student, dataset, args.student_epochs, args.batch, 0.01, "student")
    os.makedirs(args.out, exist_ok=True)
    export(teacher, os.path.join(args.out, "demo_teacher.onnx"), args.size)
    export(student.eval(), os.path.join(args.out, "demo_student.onnx"), args.size)
    with open(os.path.join(args.out, "demo.head.yaml"), "w") as f:
        f.write(head_yaml(classes, dataset.names))
    for name in ("demo_teacher.onnx", "demo_student.onnx"):
        print(f"wrote {os.path.join(args.out, name)} ({os.path.getsize(os.path.join(args.out, name)) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
