#!/usr/bin/env python3
"""Checks a dataset written by `distill data synth` with pycocotools: train.json and val.json load
with pycocotools.coco.COCO, categories are 1..C with names, every image file exists with the listed
size (read from the PNG header), every box lies inside its image with area = width * height and
iscrowd 0, image ids are unique over both splits, and COCOeval scores the ground truth given back as
detections at AP = 1.

usage: check_synth.py DIR
Prints one line per split and exits 1 on any failure.
"""
import contextlib
import io
import os
import struct
import sys

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    if header[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    return struct.unpack(">II", header[16:24])


def check_split(root, split, seen_ids):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(os.path.join(root, f"{split}.json"))
    problems = []
    categories = sorted(coco.getCatIds())
    if categories != list(range(1, len(categories) + 1)) or len(categories) < 8:
        problems.append(f"category ids {categories} are not 1..C with C >= 8")
    if any(not coco.cats[c]["name"] for c in categories):
        problems.append("a category has no name")
    for image_id, image in coco.imgs.items():
        if image_id in seen_ids:
            problems.append(f"image id {image_id} appears in two splits")
        seen_ids.add(image_id)
        path = os.path.join(root, split, image["file_name"])
        if not os.path.exists(path):
            problems.append(f"{path} is missing")
            continue
        if png_size(path) != (image["width"], image["height"]):
            problems.append(f"{path}: size {png_size(path)} differs from the JSON's")
    for ann in coco.anns.values():
        image = coco.imgs[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        if not (x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= image["width"] and y + h <= image["height"]):
            problems.append(f"annotation {ann['id']}: bbox {ann['bbox']} is not inside its {image['width']}x{image['height']} image")
        if ann["area"] != w * h or ann["iscrowd"] != 0:
            problems.append(f"annotation {ann['id']}: area {ann['area']} or iscrowd {ann['iscrowd']} wrong")
    ap = None
    if coco.anns:
        results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0} for a in coco.anns.values()]
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation = COCOeval(coco, coco.loadRes(results), "bbox")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        ap = evaluation.stats[0]
        if abs(ap - 1) > 1e-9:
            problems.append(f"the ground truth scored as detections gives AP {ap}, not 1")
    print(f"{split}: {len(coco.imgs)} images, {len(coco.anns)} annotations, {len(categories)} categories, "
          f"AP of the ground truth {ap}: {'ok' if not problems else 'FAILED'}")
    for problem in problems[:20]:
        print(f"  {problem}")
    return not problems


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    seen = set()
    results = [check_split(sys.argv[1], split, seen) for split in ("train", "val")]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
