#!/usr/bin/env python3
"""Writes COCO evaluation fixtures scored by pycocotools, for Tests/DetectionTests/COCOEvaluationTests.swift.

For each seed, Tests/Fixtures/coco/seed<N>/ gets
  annotations.json  a small, nasty ground truth: non-contiguous category ids (one without any ground truth),
                    crowd regions, `area` fields unlike w*h, areas exactly on the 32^2 and 96^2 boundaries,
                    images without ground truth, images with nothing at all;
  results.json      detections in shuffled order: jittered and duplicate hits, misses, false positives,
                    classes absent from the image, hits inside crowds, scores quantised so that many tie
                    (within and across images), boxes whose IoU with a ground truth is exactly k/100 for
                    the IoU thresholds, and more than 100 detections on one image;
  expected.json     pycocotools COCOeval(iouType='bbox'): the 12 stats, per-category AP@[.5:.95] and AP50
                    (area all, 100 detections; -1 when undefined), and the IoU and recall thresholds.

Usage: /tmp/venv-torch/bin/python tools/make_coco_fixture.py [--out Tests/Fixtures/coco] [--seeds 1 2 3]
"""
import argparse
import contextlib
import io
import json
import os

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

CATEGORIES = [(1, "person"), (3, "car"), (7, "dog"), (12, "kite"), (20, "never_annotated")]
ANNOTATED = [1, 3, 7, 12]


def box_of_size(rng, width, height, image_w=640, image_h=480):
    x = float(rng.uniform(0, max(1.0, image_w - width)))
    y = float(rng.uniform(0, max(1.0, image_h - height)))
    return [round(x, 2), round(y, 2), round(width, 2), round(height, 2)]


def random_box(rng):
    side = float(np.exp(rng.uniform(np.log(4), np.log(300))))
    aspect = float(np.exp(rng.uniform(-0.7, 0.7)))
    return box_of_size(rng, side * aspect, side / aspect)


def jitter(rng, box, scale):
    x, y, w, h = box
    dx, dy, dw, dh = rng.normal(0, scale, 4)
    return [round(x + dx * w, 2), round(y + dy * h, 2), round(max(0.5, w * (1 + dw)), 2), round(max(0.5, h * (1 + dh)), 2)]


def score(rng):
    return round(float(rng.integers(1, 21)) * 0.05, 2)  # 20 levels: many exact ties


def make(seed):
    rng = np.random.default_rng(seed)
    image_ids = [int(i) for i in rng.choice(np.arange(1, 1000), size=16, replace=False)]
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480} for i in image_ids]
    no_truth, empty, crowded, exact, no_detections = image_ids[0:2], image_ids[2], image_ids[3], image_ids[4], image_ids[5:7]
    annotations, detections = [], []
    next_id = 1

    def add_truth(image_id, category_id, box, area=None, crowd=0):
        nonlocal next_id
        annotations.append({"id": next_id, "image_id": image_id, "category_id": category_id, "bbox": box,
                            "area": round(box[2] * box[3], 4) if area is None else area, "iscrowd": crowd})
        next_id += 1

    def add_detection(image_id, category_id, box, value=None):
        detections.append({"image_id": image_id, "category_id": category_id, "bbox": box,
                           "score": score(rng) if value is None else value})

    for image_id in image_ids:
        if image_id in no_truth or image_id == empty:
            continue
        for _ in range(int(rng.integers(1, 9))):
            category = int(rng.choice(ANNOTATED))
            box = random_box(rng)
            kind = rng.uniform()
            if kind < 0.4:
                area = round(box[2] * box[3] * float(rng.uniform(0.5, 1.0)), 3)  # a segmentation's area
            elif kind < 0.5:
                side = float(rng.choice([32, 96]))  # exactly on a range boundary, which both ranges include
                box = box_of_size(rng, side, side)
                area = side * side
            else:
                area = None
            add_truth(image_id, category, box, area)
        if rng.uniform() < 0.4:
            crowd = box_of_size(rng, float(rng.uniform(150, 400)), float(rng.uniform(100, 300)))
            add_truth(image_id, int(rng.choice(ANNOTATED)), crowd, round(crowd[2] * crowd[3] * 0.6, 2), 1)

    # Exact IoUs k/100 against the thresholds: truth 100x100, detection k x 100 sharing its corner.
    for k in (50, 55, 60, 65, 70, 75, 80, 85, 90, 95):
        category = ANNOTATED[k % len(ANNOTATED)]
        x, y = float(rng.integers(0, 500)), float(rng.integers(0, 350))
        add_truth(exact, category, [x, y, 100.0, 100.0])
        add_detection(exact, category, [x, y, float(k), 100.0])

    truths_by_image = {}
    for a in annotations:
        truths_by_image.setdefault(a["image_id"], []).append(a)
    for image_id in image_ids:
        if image_id == empty or image_id in no_detections or image_id == exact:
            continue
        present = set()
        for truth in truths_by_image.get(image_id, []):
            present.add(truth["category_id"])
            if truth["iscrowd"]:
                for _ in range(int(rng.integers(1, 5))):  # hits inside the crowd region
                    inner = [truth["bbox"][0] + float(rng.uniform(0, 50)), truth["bbox"][1] + float(rng.uniform(0, 50)),
                             float(rng.uniform(20, 80)), float(rng.uniform(20, 80))]
                    add_detection(image_id, truth["category_id"], [round(v, 2) for v in inner])
                continue
            if rng.uniform() < 0.15:
                continue  # missed
            for _ in range(int(rng.integers(1, 4))):  # a hit and maybe duplicates
                add_detection(image_id, truth["category_id"], jitter(rng, truth["bbox"], float(rng.choice([0.02, 0.08, 0.2]))))
        for _ in range(int(rng.integers(0, 5))):  # false positives, some of classes absent from the image
            category = int(rng.choice([c for c, _ in CATEGORIES if c not in present] or ANNOTATED))
            add_detection(image_id, category, random_box(rng))

    # More than 100 detections on the crowded image, many tied in score around the cut.
    for _ in range(3):
        add_truth(crowded, 1, random_box(rng))
    for truth in [a for a in annotations if a["image_id"] == crowded and a["category_id"] == 1 and not a["iscrowd"]]:
        add_detection(crowded, 1, jitter(rng, truth["bbox"], 0.05), 0.3)
    for _ in range(125):
        add_detection(crowded, 1, random_box(rng), round(float(rng.choice([0.3, 0.35, 0.4, 0.9])), 2))

    order = rng.permutation(len(detections))
    detections = [detections[i] for i in order]
    ground_truth = {"images": [images[i] for i in rng.permutation(len(images))],
                    "categories": [{"id": c, "name": n} for c, n in CATEGORIES], "annotations": annotations}
    return ground_truth, detections


def evaluate(annotations_path, results_path):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(annotations_path)
        dt = gt.loadRes(results_path)
        evaluation = COCOeval(gt, dt, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    precision = evaluation.eval["precision"]  # T x R x K x A x M
    per_class = {}
    for k, category_id in enumerate(evaluation.params.catIds):
        def mean_defined(values):
            values = values[values > -1]
            return float(np.mean(values)) if values.size else -1.0
        per_class[str(category_id)] = {"ap": mean_defined(precision[:, :, k, 0, 2]), "ap50": mean_defined(precision[0, :, k, 0, 2])}
    return {"stats": [float(s) for s in evaluation.stats], "per_class": per_class,
            "iou_thresholds": evaluation.params.iouThrs.tolist(), "recall_thresholds": evaluation.params.recThrs.tolist()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "coco"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    for seed in args.seeds:
        directory = os.path.join(args.out, f"seed{seed}")
        os.makedirs(directory, exist_ok=True)
        ground_truth, detections = make(seed)
        paths = {name: os.path.join(directory, f"{name}.json") for name in ("annotations", "results", "expected")}
        with open(paths["annotations"], "w") as f:
            json.dump(ground_truth, f, separators=(",", ":"))
        with open(paths["results"], "w") as f:
            json.dump(detections, f, separators=(",", ":"))
        expected = evaluate(paths["annotations"], paths["results"])
        with open(paths["expected"], "w") as f:
            json.dump(expected, f, indent=1)
        print(f"seed {seed}: {len(ground_truth['annotations'])} annotations, {len(detections)} detections, "
              f"AP {expected['stats'][0]:.4f} AP50 {expected['stats'][1]:.4f}")


if __name__ == "__main__":
    main()
