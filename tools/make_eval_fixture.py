#!/usr/bin/env python3
"""End-to-end reference for `distill eval MODEL`: onnxruntime runs the tiny torchvision RetinaNet and
FCOS of Tests/Fixtures/heads/ on generated images, torchvision's own post-processing turns the raw
outputs into detections, and pycocotools scores them against ground truth derived from those
detections (jittered, relabelled, dropped, with extra and crowd boxes, non-contiguous category ids).
Writes Tests/Fixtures/eval/NAME/: images/*.png (at the models' input size, 128x96), annotations.json,
detections.json (what onnxruntime + torchvision found, as a COCO results file) and expected.json (the
twelve pycocotools numbers). The test runs `distill eval` on the same model, images and annotations
and requires the same numbers.

usage: make_eval_fixture.py   (needs torch, torchvision, onnxruntime, pycocotools, pillow)
"""
import contextlib
import io
import json
import os

import numpy as np
import onnxruntime as ort
import torch
import torchvision
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")
HEIGHT, WIDTH, NUM_CLASSES, IMAGES = 96, 128, 5, 6
CATEGORY_IDS = [3, 7, 11, 20, 42]


def images(rng):
    """Smooth colour fields with a few bright rectangles: outputs that vary across images."""
    result = []
    for _ in range(IMAGES):
        y, x = np.mgrid[0:HEIGHT, 0:WIDTH] / 40.0
        base = np.stack([np.sin(x * rng.uniform(1, 3) + rng.uniform(0, 6)) * np.cos(y * rng.uniform(1, 3))
                         for _ in range(3)], -1)
        picture = ((base * 0.5 + 0.5) * 200).astype(np.uint8)
        for _ in range(rng.integers(2, 5)):
            x0, y0 = rng.integers(0, WIDTH - 20), rng.integers(0, HEIGHT - 20)
            picture[y0:y0 + rng.integers(10, 40), x0:x0 + rng.integers(10, 50)] = rng.integers(150, 256, 3)
        result.append(picture)
    return result


def torchvision_model(name):
    """Post-processing settings of the fixture models (weights play no part in post-processing)."""
    backbone = torch.nn.Module()
    backbone.out_channels = 16
    if name == "retinanet":
        sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in [16, 32, 64])
        return torchvision.models.detection.RetinaNet(
            backbone, num_classes=NUM_CLASSES, anchor_generator=AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 3),
            topk_candidates=60, detections_per_img=100).eval()
    backbone.out_channels = 32
    return torchvision.models.detection.FCOS(
        backbone, num_classes=NUM_CLASSES, anchor_generator=AnchorGenerator(((8,), (16,), (32,)), ((1.0,),) * 3),
        score_thresh=0.2, nms_thresh=0.6, detections_per_img=200, topk_candidates=80).eval()


def flatten(maps, per_location):
    """[N, A*K, H, W] maps -> [N, H*W*A, K] as torchvision's heads lay them out."""
    n, channels, h, w = maps.shape
    anchors = channels // per_location
    return maps.reshape(n, anchors, per_location, h, w).transpose(0, 3, 4, 1, 2).reshape(n, -1, per_location)


def detect(name, pictures):
    directory = os.path.join(ROOT, "heads", name)
    session = ort.InferenceSession(os.path.join(directory, "model.onnx"), providers=["CPUExecutionProvider"])
    batch = np.stack([p.astype(np.float32) / 255 for p in pictures]).transpose(0, 3, 1, 2).copy()
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": batch})))
    model = torchvision_model(name)
    levels = range(3)
    head = {"cls_logits": np.concatenate([flatten(outputs[f"cls_{i}"], NUM_CLASSES) for i in levels], 1),
            "bbox_regression": np.concatenate([flatten(outputs[f"box_{i}"], 4) for i in levels], 1)}
    if name == "fcos":
        head["bbox_ctrness"] = np.concatenate([flatten(outputs[f"ctr_{i}"], 1) for i in levels], 1)
    head = {k: torch.from_numpy(v) for k, v in head.items()}
    features = [torch.zeros(len(pictures), 1, *outputs[f"cls_{i}"].shape[2:]) for i in levels]
    image_list = ImageList(torch.from_numpy(batch), [(HEIGHT, WIDTH)] * len(pictures))
    anchors = model.anchor_generator(image_list, features)
    hw = [f.size(2) * f.size(3) for f in features]
    a = head["cls_logits"].size(1) // sum(hw)
    per_level = [n * a for n in hw]
    split = {k: list(v.split(per_level, dim=1)) for k, v in head.items()}
    split_anchors = [list(x.split(per_level)) for x in anchors]
    with torch.no_grad():
        return model.postprocess_detections(split, split_anchors, image_list.image_sizes)


def ground_truth(rng, detections):
    annotations, next_id = [], 1
    for image_id, found in enumerate(detections, start=1):
        for box, label in zip(found["boxes"].tolist(), found["labels"].tolist()):
            if rng.random() < 0.3:
                continue
            jitter = rng.normal(0, 2.5, 4)
            x1, y1, x2, y2 = np.clip(np.array(box) + jitter, 0, [WIDTH, HEIGHT, WIDTH, HEIGHT])
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            if rng.random() < 0.1:
                label = int(rng.integers(0, NUM_CLASSES))
            annotations.append({"id": next_id, "image_id": image_id, "category_id": CATEGORY_IDS[label],
                                "bbox": [round(float(x1), 2), round(float(y1), 2), round(float(x2 - x1), 2), round(float(y2 - y1), 2)],
                                "area": round(float((x2 - x1) * (y2 - y1)), 2), "iscrowd": 0})
            next_id += 1
        for _ in range(rng.integers(0, 3)):  # objects the model missed; sometimes a crowd region
            w, h = rng.uniform(8, 60), rng.uniform(8, 50)
            x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
            annotations.append({"id": next_id, "image_id": image_id, "category_id": CATEGORY_IDS[int(rng.integers(0, NUM_CLASSES))],
                                "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)], "area": round(w * h, 2),
                                "iscrowd": int(rng.random() < 0.25)})
            next_id += 1
    return annotations


def main():
    for seed, name in enumerate(["retinanet", "fcos"]):
        rng = np.random.default_rng(100 + seed)
        out = os.path.join(ROOT, "eval", name)
        os.makedirs(os.path.join(out, "images"), exist_ok=True)
        pictures = images(rng)
        entries = []
        for index, picture in enumerate(pictures, start=1):
            file = f"image_{index:02d}.png"
            Image.fromarray(picture).save(os.path.join(out, "images", file))
            entries.append({"id": index, "file_name": file, "width": WIDTH, "height": HEIGHT})
        detections = detect(name, pictures)
        annotations = {"images": entries, "annotations": ground_truth(rng, detections),
                       "categories": [{"id": c, "name": f"shape{c}"} for c in CATEGORY_IDS]}
        with open(os.path.join(out, "annotations.json"), "w") as f:
            json.dump(annotations, f)
        results = [{"image_id": image_id, "category_id": CATEGORY_IDS[label], "score": score,
                    "bbox": [x1, y1, x2 - x1, y2 - y1]}
                   for image_id, found in enumerate(detections, start=1)
                   for (x1, y1, x2, y2), score, label in zip(found["boxes"].tolist(), found["scores"].tolist(), found["labels"].tolist())]
        with open(os.path.join(out, "detections.json"), "w") as f:
            json.dump(results, f)
        with contextlib.redirect_stdout(io.StringIO()):
            truth = COCO(os.path.join(out, "annotations.json"))
            evaluation = COCOeval(truth, truth.loadRes(os.path.join(out, "detections.json")), "bbox")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        with open(os.path.join(out, "expected.json"), "w") as f:
            json.dump({"stats": [float(v) for v in evaluation.stats], "detections": len(results)}, f, indent=1)
        print(f"{name}: {len(results)} detections, {len(annotations['annotations'])} GT, mAP {evaluation.stats[0]:.4f}, AP50 {evaluation.stats[1]:.4f}")


if __name__ == "__main__":
    main()
