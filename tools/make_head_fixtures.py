#!/usr/bin/env python3
"""Writes the detection-head fixtures to Tests/Fixtures/heads (or OUT_DIR):

- retinanet/, fcos/: a tiny random-weight torchvision RetinaNet / FCOS (three-level conv backbone,
  input 96x128), exported to ONNX as backbone + head with raw per-level outputs (no anchors, no
  post-processing); input.npy (two images); expected.json, torchvision's own
  `postprocess_detections` on the same raw outputs; head.yaml for distill's HeadDecoder.
- yolov8/, yolov5/, detr_softmax/, detr_sigmoid/, gfl_dfl/: raw outputs (.npy) generated here, the
  reference post-processing written below (ultralytics-style multi-label NMS with
  torchvision.ops.batched_nms; DETR's PostProcess; Deformable DETR's top-k over queries x classes;
  GFL's DFL integral with torchvision-style selection), head.yaml, expected.json.
- nms.json: random clustered boxes and torchvision.ops.batched_nms's kept indices.
- iou.json: random boxes and torchvision.ops box_iou / generalized_box_iou / distance_box_iou.

Classification biases are raised so that scores pass the thresholds and NMS suppresses boxes; the
script prints candidate and kept counts per image to show it.

usage: make_head_fixtures.py [OUT_DIR]   (run with /tmp/venv-torch/bin/python)
"""
import json
import math
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import batched_nms, box_iou, distance_box_iou, generalized_box_iou

HEIGHT, WIDTH = 96, 128
NUM_CLASSES = 5


class TinyBackbone(nn.Module):
    """Five stride-2 convolutions; returns the stride 8, 16 and 32 maps (`channels` each)."""

    def __init__(self, channels=16):
        super().__init__()
        c = self.out_channels = channels
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, c, 3, 2, 1), nn.ReLU())
        self.c3 = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1), nn.ReLU())
        self.c4 = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1), nn.ReLU())
        self.c5 = nn.Sequential(nn.Conv2d(c, c, 3, 2, 1), nn.ReLU())

    def forward(self, x):
        p3 = self.c3(self.stem(x))
        p4 = self.c4(p3)
        p5 = self.c5(p4)
        return OrderedDict([("0", p3), ("1", p4), ("2", p5)])


class RetinaNetRaw(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        features = list(self.model.backbone(images).values())
        cls_head, reg_head = self.model.head.classification_head, self.model.head.regression_head
        outputs = []
        for f in features:
            outputs.append(cls_head.cls_logits(cls_head.conv(f)))
        for f in features:
            outputs.append(reg_head.bbox_reg(reg_head.conv(f)))
        return tuple(outputs)


class FCOSRaw(nn.Module):
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


def reference_detections(model, images):
    """What RetinaNet.forward / FCOS.forward do in eval mode, minus the image transform."""
    with torch.no_grad():
        features = list(model.backbone(images).values())
        head_outputs = model.head(features)
        image_list = ImageList(images, [(HEIGHT, WIDTH)] * images.shape[0])
        anchors = model.anchor_generator(image_list, features)
        hw = [f.size(2) * f.size(3) for f in features]
        a = head_outputs["cls_logits"].size(1) // sum(hw)
        per_level = [n * a for n in hw]
        split = {k: list(v.split(per_level, dim=1)) for k, v in head_outputs.items()}
        split_anchors = [list(x.split(per_level)) for x in anchors]
        detections = model.postprocess_detections(split, split_anchors, image_list.image_sizes)
        nms, limit = model.nms_thresh, model.detections_per_img
        model.detections_per_img = 10**6
        unlimited = model.postprocess_detections(split, split_anchors, image_list.image_sizes)
        model.nms_thresh = 1.0
        unsuppressed = model.postprocess_detections(split, split_anchors, image_list.image_sizes)
        model.nms_thresh, model.detections_per_img = nms, limit
    print(f"  candidates before NMS {[len(d['scores']) for d in unsuppressed]}, "
          f"after NMS {[len(d['scores']) for d in unlimited]}")
    return [
        {"boxes": d["boxes"].tolist(), "scores": d["scores"].tolist(), "labels": d["labels"].tolist()}
        for d in detections
    ]


def export(module, images, path, names):
    torch.onnx.export(
        module.eval(), images, path, opset_version=17, dynamo=False, input_names=["images"], output_names=names,
        dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in names}})


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=None, separators=(",", ":"))
        f.write("\n")


def report(name, detections, candidates=None):
    counts = [len(d["scores"]) for d in detections]
    extra = f", candidates before NMS {candidates}" if candidates is not None else ""
    print(f"{name}: detections per image {counts}{extra}")


def spread_head(model, std):
    """torchvision initialises head convolutions with std 0.01, which makes every location score
    alike (near-ties everywhere); wider weights give scores that differ from location to location."""
    with torch.no_grad():
        for branch in (model.head.classification_head, model.head.regression_head):
            for m in branch.conv.modules():
                if isinstance(m, nn.Conv2d):
                    m.weight.normal_(0, std)


def print_spread(model, images):
    with torch.no_grad():
        logits = model.head(list(model.backbone(images).values()))["cls_logits"]
    print(f"  class logits: std {logits.std().item():.3f}, range {logits.min().item():.2f}..{logits.max().item():.2f}")


def make_retinanet(out):
    torch.manual_seed(1)
    sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in [16, 32, 64])
    ratios = ((0.5, 1.0, 2.0),) * 3
    model = torchvision.models.detection.RetinaNet(
        TinyBackbone(), num_classes=NUM_CLASSES, anchor_generator=AnchorGenerator(sizes, ratios),
        topk_candidates=60, detections_per_img=100).eval()
    with torch.no_grad():
        cls = model.head.classification_head.cls_logits
        cls.weight.normal_(0, 4.0)
        cls.bias.copy_(torch.tensor([-1.8, -1.6, -1.9, -2.0, -1.5] * 9))
        model.head.regression_head.bbox_reg.weight.normal_(0, 0.1)
    spread_head(model, 0.1)
    images = torch.rand(2, 3, HEIGHT, WIDTH)
    print_spread(model, images)
    names = [f"cls_{i}" for i in range(3)] + [f"box_{i}" for i in range(3)]
    d = os.path.join(out, "retinanet")
    os.makedirs(d, exist_ok=True)
    export(RetinaNetRaw(model), images, os.path.join(d, "model.onnx"), names)
    np.save(os.path.join(d, "input.npy"), images.numpy())
    detections = reference_detections(model, images)
    write_json(os.path.join(d, "expected.json"), detections)
    report("retinanet", detections)
    levels = "\n".join(
        f"  - {{cls: cls_{i}, box: box_{i}, stride: {8 << i}, sizes: [{', '.join(map(str, sizes[i]))}]}}"
        for i in range(3))
    with open(os.path.join(d, "head.yaml"), "w") as f:
        f.write(f"""# torchvision RetinaNet (tiny random-weight fixture), raw per-level outputs
type: anchors
num_classes: {NUM_CLASSES}
activation: sigmoid
score_threshold: {model.score_thresh}
pre_nms_top_k: {model.topk_candidates}
nms_iou: {model.nms_thresh}
max_detections: {model.detections_per_img}
input_size: {{width: {WIDTH}, height: {HEIGHT}}}
anchor_generator:
  style: torchvision
  aspect_ratios: [0.5, 1.0, 2.0]
box_coder:
  style: torchvision
  weights: [1.0, 1.0, 1.0, 1.0]
levels:
{levels}
""")


def make_fcos(out):
    torch.manual_seed(2)
    anchors = AnchorGenerator(((8,), (16,), (32,)), ((1.0,),) * 3)
    model = torchvision.models.detection.FCOS(
        TinyBackbone(32), num_classes=NUM_CLASSES, anchor_generator=anchors, score_thresh=0.2, nms_thresh=0.6,
        detections_per_img=200, topk_candidates=80).eval()
    with torch.no_grad():
        cls = model.head.classification_head.cls_logits
        cls.weight.normal_(0, 0.04)
        cls.bias.copy_(torch.tensor([-1.0, -0.5, -2.0, 0.0, -1.5]))
        model.head.regression_head.bbox_reg.weight.normal_(0, 0.03)
        model.head.regression_head.bbox_reg.bias.fill_(1.5)
        model.head.regression_head.bbox_ctrness.weight.normal_(0, 0.05)
    spread_head(model, 0.1)
    images = torch.rand(2, 3, HEIGHT, WIDTH)
    print_spread(model, images)
    names = [f"cls_{i}" for i in range(3)] + [f"box_{i}" for i in range(3)] + [f"ctr_{i}" for i in range(3)]
    d = os.path.join(out, "fcos")
    os.makedirs(d, exist_ok=True)
    export(FCOSRaw(model), images, os.path.join(d, "model.onnx"), names)
    np.save(os.path.join(d, "input.npy"), images.numpy())
    detections = reference_detections(model, images)
    write_json(os.path.join(d, "expected.json"), detections)
    report("fcos", detections)
    levels = "\n".join(f"  - {{cls: cls_{i}, box: box_{i}, quality: ctr_{i}, stride: {8 << i}}}" for i in range(3))
    with open(os.path.join(d, "head.yaml"), "w") as f:
        f.write(f"""# torchvision FCOS (tiny random-weight fixture), raw per-level outputs
type: dense
num_classes: {NUM_CLASSES}
activation: sigmoid
box_format: ltrb
quality_mode: sqrt
offset: 0.0
score_threshold: {model.score_thresh}
pre_nms_top_k: {model.topk_candidates}
nms_iou: {model.nms_thresh}
max_detections: {model.detections_per_img}
levels:
{levels}
""")


def yolo_raw(rng, batch, objectness):
    """Raw YOLO predictions [N, A, 4(+1)+C]: xywh centred near grid points, post-sigmoid scores."""
    rows = []
    for stride in (8, 16, 32):
        h, w = HEIGHT // stride, WIDTH // stride
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        rows.append(np.stack([(xs.ravel() + 0.5) * stride, (ys.ravel() + 0.5) * stride,
                              np.full(h * w, stride, dtype=np.float64)], axis=1))
    grid = np.concatenate(rows)
    a = grid.shape[0]
    out = []
    for _ in range(batch):
        cx = grid[:, 0] + rng.normal(0, 3, a)
        cy = grid[:, 1] + rng.normal(0, 3, a)
        bw = grid[:, 2] * rng.uniform(1.5, 5, a)
        bh = grid[:, 2] * rng.uniform(1.5, 5, a)
        logits = rng.normal(-3, 2, (a, NUM_CLASSES))
        cls = 1 / (1 + np.exp(-logits))
        parts = [cx[:, None], cy[:, None], bw[:, None], bh[:, None]]
        if objectness:
            parts.append(1 / (1 + np.exp(-rng.normal(0, 2, (a, 1)))))
        parts.append(cls)
        out.append(np.concatenate(parts, axis=1))
    return np.stack(out).astype(np.float32)


def yolo_reference(pred, objectness, conf, iou, max_det, max_nms):
    """Ultralytics-style multi-label NMS: candidates (anchor, class) with score > conf, the best
    max_nms of them, torchvision batched_nms, the first max_det kept, boxes clipped afterwards."""
    results = []
    candidates = []
    for p in torch.from_numpy(pred):
        xy, wh = p[:, :2], p[:, 2:4]
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)
        scores = p[:, 5:] * p[:, 4:5] if objectness else p[:, 4:]
        i, j = (scores > conf).nonzero(as_tuple=True)
        s = scores[i, j]
        order = s.argsort(descending=True)[:max_nms]
        i, j, s = i[order], j[order], s[order]
        b = boxes[i]
        keep = batched_nms(b, s, j, iou)[:max_det]
        b = b[keep]
        b[:, 0::2] = b[:, 0::2].clamp(0, WIDTH)
        b[:, 1::2] = b[:, 1::2].clamp(0, HEIGHT)
        candidates.append(len(s))
        results.append({"boxes": b.tolist(), "scores": s[keep].tolist(), "labels": j[keep].tolist()})
    return results, candidates


def make_yolo(out, name, objectness, transpose, seed):
    rng = np.random.default_rng(seed)
    pred = yolo_raw(rng, 2, objectness)
    conf, iou, max_det, max_nms = (0.25, 0.45, 100, 300) if objectness else (0.25, 0.7, 60, 300)
    detections, candidates = yolo_reference(pred, objectness, conf, iou, max_det, max_nms)
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "output0.npy"), np.ascontiguousarray(pred.transpose(0, 2, 1) if transpose else pred))
    write_json(os.path.join(d, "expected.json"), detections)
    report(name, detections, candidates)
    with open(os.path.join(d, "head.yaml"), "w") as f:
        f.write(f"""# {'YOLOv5 (objectness)' if objectness else 'YOLOv8 (no objectness)'}-style single output
type: yolo
output: output0
layout: {'anchors_last' if transpose else 'anchors_first'}
box_format: xywh
objectness: {'true' if objectness else 'false'}
activation: none
num_classes: {NUM_CLASSES}
score_threshold: {conf}
pre_nms_top_k: {max_nms}
nms_iou: {iou}
max_detections: {max_det}
""")


def make_detr(out, name, activation, seed):
    rng = np.random.default_rng(seed)
    n, q = 2, 30
    c = NUM_CLASSES + (1 if activation == "softmax" else 0)
    logits = rng.normal(0, 2, (n, q, c)).astype(np.float32)
    boxes = np.concatenate([rng.uniform(0.2, 0.8, (n, q, 2)), rng.uniform(0.05, 0.5, (n, q, 2))], axis=2)
    boxes = boxes.astype(np.float32)
    aux_logits = rng.normal(0, 2, (n, q, c)).astype(np.float32)
    aux_boxes = np.clip(boxes + rng.normal(0, 0.02, boxes.shape), 0.01, 0.99).astype(np.float32)
    threshold, max_det = 0.3, 40
    lt, bx = torch.from_numpy(logits), torch.from_numpy(boxes)
    scale = torch.tensor([WIDTH, HEIGHT, WIDTH, HEIGHT], dtype=torch.float32)
    xyxy = torchvision.ops.box_convert(bx, "cxcywh", "xyxy") * scale
    results = []
    for b in range(n):
        if activation == "softmax":
            # DETR's PostProcess: per query, the best class other than "no object".
            prob = lt[b].softmax(-1)
            scores, labels = prob[:, :-1].max(-1)
            order = scores.argsort(descending=True)[:max_det]
            scores, labels, kept_boxes = scores[order], labels[order], xyxy[b][order]
        else:
            # Deformable DETR's PostProcess: top-k over queries x classes of the sigmoid.
            prob = lt[b].sigmoid().flatten()
            scores, index = prob.topk(max_det)
            labels, kept_boxes = index % NUM_CLASSES, xyxy[b][index // NUM_CLASSES]
        keep = scores > threshold
        results.append({"boxes": kept_boxes[keep].tolist(), "scores": scores[keep].tolist(),
                        "labels": labels[keep].tolist()})
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "pred_logits.npy"), logits)
    np.save(os.path.join(d, "pred_boxes.npy"), boxes)
    np.save(os.path.join(d, "aux_logits_0.npy"), aux_logits)
    np.save(os.path.join(d, "aux_boxes_0.npy"), aux_boxes)
    write_json(os.path.join(d, "expected.json"), results)
    report(name, results)
    with open(os.path.join(d, "head.yaml"), "w") as f:
        f.write(f"""# {'DETR' if activation == 'softmax' else 'Deformable DETR'}-style set prediction
type: detr
logits: pred_logits
boxes: pred_boxes
activation: {activation}
num_classes: {NUM_CLASSES}
score_threshold: {threshold}
max_detections: {max_det}
aux:
  - {{logits: aux_logits_0, boxes: aux_boxes_0}}
""")


def make_gfl(out):
    """GFL/PicoDet-style dense head with DFL boxes (reg_max 7, points at (x + 0.5) * stride). The
    reference decodes with torch ops (softmax over bins, expectation as mmdet's Integral) and selects
    as torchvision does: per level score threshold and top-k, clip, batched_nms, max detections."""
    g = torch.Generator().manual_seed(9)
    reg_max, conf, top_k, iou, max_det = 7, 0.3, 50, 0.6, 100
    cls_maps, box_maps = [], []
    for stride in (8, 16, 32):
        h, w = HEIGHT // stride, WIDTH // stride
        cls_maps.append(torch.randn(2, NUM_CLASSES, h, w, generator=g) * 1.5 - 1.5)
        box_maps.append(torch.randn(2, 4 * (reg_max + 1), h, w, generator=g) * 2)
    results = []
    for n in range(2):
        boxes, scores, labels = [], [], []
        for level, stride in enumerate((8, 16, 32)):
            cls, box = cls_maps[level][n], box_maps[level][n]
            h, w = cls.shape[1:]
            prob = cls.sigmoid().permute(1, 2, 0).reshape(-1, NUM_CLASSES).flatten()
            keep = torch.where(prob > conf)[0]
            s, order = prob[keep].topk(min(top_k, len(keep)))
            index = keep[order]
            point_index, label = index // NUM_CLASSES, index % NUM_CLASSES
            bins = box.permute(1, 2, 0).reshape(-1, 4, reg_max + 1).softmax(-1)
            dist = (bins * torch.arange(reg_max + 1, dtype=torch.float32)).sum(-1) * stride
            ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            px = ((xs.reshape(-1) + 0.5) * stride).float()
            py = ((ys.reshape(-1) + 0.5) * stride).float()
            d = dist[point_index]
            b = torch.stack([px[point_index] - d[:, 0], py[point_index] - d[:, 1],
                             px[point_index] + d[:, 2], py[point_index] + d[:, 3]], dim=1)
            b[:, 0::2] = b[:, 0::2].clamp(0, WIDTH)
            b[:, 1::2] = b[:, 1::2].clamp(0, HEIGHT)
            boxes.append(b), scores.append(s), labels.append(label)
        b, s, l = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        keep = batched_nms(b, s, l, iou)
        print(f"  gfl image {n}: candidates {len(s)}, after NMS {len(keep)}")
        keep = keep[:max_det]
        results.append({"boxes": b[keep].tolist(), "scores": s[keep].tolist(), "labels": l[keep].tolist()})
    d = os.path.join(out, "gfl_dfl")
    os.makedirs(d, exist_ok=True)
    for level in range(3):
        np.save(os.path.join(d, f"cls_{level}.npy"), cls_maps[level].numpy())
        np.save(os.path.join(d, f"box_{level}.npy"), box_maps[level].numpy())
    write_json(os.path.join(d, "expected.json"), results)
    report("gfl_dfl", results)
    levels = "\n".join(f"  - {{cls: cls_{i}, box: box_{i}, stride: {8 << i}}}" for i in range(3))
    with open(os.path.join(d, "head.yaml"), "w") as f:
        f.write(f"""# GFL/PicoDet-style dense head with distribution (DFL) box bins
type: dense
num_classes: {NUM_CLASSES}
activation: sigmoid
box_format: dfl
reg_max: {reg_max}
offset: 0.5
score_threshold: {conf}
pre_nms_top_k: {top_k}
nms_iou: {iou}
max_detections: {max_det}
levels:
{levels}
""")


def make_nms(out):
    g = torch.Generator().manual_seed(3)
    centres = torch.rand(25, 2, generator=g) * 200
    pick = torch.randint(0, 25, (400,), generator=g)
    ctr = centres[pick] + torch.randn(400, 2, generator=g) * 6
    wh = 10 + torch.rand(400, 2, generator=g) * 40
    boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], dim=1)
    scores = torch.rand(400, generator=g)
    labels = torch.randint(0, 4, (400,), generator=g)
    cases = []
    for iou in (0.3, 0.5, 0.7):
        keep = batched_nms(boxes, scores, labels, iou)
        cases.append({"iou": iou, "keep": keep.tolist()})
        print(f"nms iou {iou}: kept {len(keep)} of 400")
    write_json(os.path.join(out, "nms.json"), {
        "boxes": boxes.tolist(), "scores": scores.tolist(), "labels": labels.tolist(), "cases": cases})


def make_iou(out):
    g = torch.Generator().manual_seed(4)

    def random_boxes(n):
        xy = torch.rand(n, 2, generator=g) * 50
        wh = 1 + torch.rand(n, 2, generator=g) * 30
        return torch.cat([xy, xy + wh], dim=1)

    a, b = random_boxes(20), random_boxes(15)
    write_json(os.path.join(out, "iou.json"), {
        "a": a.tolist(), "b": b.tolist(), "iou": box_iou(a, b).tolist(), "giou": generalized_box_iou(a, b).tolist(),
        "diou": distance_box_iou(a, b).tolist()})


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "Tests", "Fixtures", "heads")
    os.makedirs(out, exist_ok=True)
    make_retinanet(out)
    make_fcos(out)
    make_yolo(out, "yolov8", objectness=False, transpose=True, seed=5)
    make_yolo(out, "yolov5", objectness=True, transpose=False, seed=6)
    make_detr(out, "detr_softmax", "softmax", seed=7)
    make_detr(out, "detr_sigmoid", "sigmoid", seed=8)
    make_gfl(out)
    make_nms(out)
    make_iou(out)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs)
    print(f"wrote {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
