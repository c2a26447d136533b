#!/usr/bin/env python3
"""Export real detector architectures (random weights, nothing downloaded) to ONNX for distill's
larger integration tests. The output is NOT committed.

    python3 tools/export_detectors.py [OUT_DIR]       # default: .build-fixtures/detectors/
    python3 tools/export_detectors.py OUT_DIR --only yolo_tiny,ssdlite320_mobilenet_v3_large

For each model writes OUT_DIR/NAME/model.onnx and OUT_DIR/NAME/test_data_set_0/{input_0,output_*}.pb
(ONNX backend-test layout; outputs computed by onnxruntime). Exports are opset 17, eval mode, fixed
1x3x320x320 input. torchvision models include their post-processing (NMS); the YOLO-style model is
exported without NMS. A failed export is reported and the others continue; the exit status is 1 if any failed.

Requires torch, torchvision, onnx, onnxruntime, numpy.
"""

import argparse
import os
import shutil
import sys
import time
import traceback

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OPSET = 17
SIZE = 320


# ----------------------------------------------------------------------------------------------
# torchvision detectors
# ----------------------------------------------------------------------------------------------

class TorchvisionDetector(nn.Module):
    """Tensor in, tensors out: [1,3,H,W] -> boxes [K,4], scores [K], labels [K] (after NMS)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        out = self.model([images[0]])[0]
        return out["boxes"], out["scores"], out["labels"]


def make_ssdlite():
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    return TorchvisionDetector(ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None))


def make_fcos():
    from torchvision.models.detection import fcos_resnet50_fpn
    # min/max size pinned to the export size so the internal resize is an identity; a low score
    # threshold keeps randomly initialised models producing some detections.
    return TorchvisionDetector(fcos_resnet50_fpn(weights=None, weights_backbone=None, min_size=SIZE,
                                                 max_size=SIZE, score_thresh=0.001))


def make_retinanet():
    from torchvision.models.detection import retinanet_resnet50_fpn
    return TorchvisionDetector(retinanet_resnet50_fpn(weights=None, weights_backbone=None, min_size=SIZE,
                                                      max_size=SIZE, score_thresh=0.001))


# ----------------------------------------------------------------------------------------------
# small YOLO-style model in plain torch
# ----------------------------------------------------------------------------------------------

class ConvBnAct(nn.Sequential):
    def __init__(self, cin, cout, k=3, s=1):
        super().__init__(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class Block(nn.Module):
    """Residual 1x1 -> 3x3 bottleneck."""

    def __init__(self, c):
        super().__init__()
        self.a = ConvBnAct(c, c // 2, 1)
        self.b = ConvBnAct(c // 2, c, 3)

    def forward(self, x):
        return x + self.b(self.a(x))


class YoloTiny(nn.Module):
    """Conv backbone (strides 8/16/32), PAN neck (upsample+concat, downsample+concat), per-level 1x1 head,
    YOLOv5-style decode (sigmoid, grid, anchors). Output: [1, N, 5 + num_classes] = (cx, cy, w, h, obj, cls...)."""

    STRIDES = (8, 16, 32)
    ANCHORS = (((10, 13), (16, 30), (33, 23)),
               ((30, 61), (62, 45), (59, 119)),
               ((116, 90), (156, 198), (373, 326)))

    def __init__(self, num_classes=8, size=SIZE):
        super().__init__()
        self.nc = num_classes
        self.no = 5 + num_classes
        self.na = 3
        self.stem = ConvBnAct(3, 16, 3, 2)                                           # /2
        self.s1 = nn.Sequential(ConvBnAct(16, 32, 3, 2), Block(32))                   # /4
        self.s2 = nn.Sequential(ConvBnAct(32, 64, 3, 2), Block(64))                   # /8   -> c3
        self.s3 = nn.Sequential(ConvBnAct(64, 128, 3, 2), Block(128))                 # /16  -> c4
        self.s4 = nn.Sequential(ConvBnAct(128, 256, 3, 2), Block(256))                # /32  -> c5
        # top-down
        self.reduce5 = ConvBnAct(256, 128, 1)
        self.td4 = ConvBnAct(128 + 128, 128, 3)
        self.reduce4 = ConvBnAct(128, 64, 1)
        self.td3 = ConvBnAct(64 + 64, 64, 3)
        # bottom-up
        self.down3 = ConvBnAct(64, 64, 3, 2)
        self.bu4 = ConvBnAct(64 + 64, 128, 3)
        self.down4 = ConvBnAct(128, 128, 3, 2)
        self.bu5 = ConvBnAct(128 + 128, 256, 3)
        self.heads = nn.ModuleList(nn.Conv2d(c, self.na * self.no, 1) for c in (64, 128, 256))
        for i, s in enumerate(self.STRIDES):
            h = w = size // s
            ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                    indexing="ij")
            grid = torch.stack((xs, ys), -1).view(1, 1, h, w, 2)
            anchor = torch.tensor(self.ANCHORS[i], dtype=torch.float32).view(1, self.na, 1, 1, 2)
            self.register_buffer("grid%d" % i, grid, persistent=False)
            self.register_buffer("anchor%d" % i, anchor, persistent=False)

    def forward(self, x):
        c3 = self.s2(self.s1(self.stem(x)))
        c4 = self.s3(c3)
        c5 = self.s4(c4)
        p5 = self.reduce5(c5)
        t4 = self.td4(torch.cat([F.interpolate(p5, scale_factor=2.0, mode="nearest"), c4], 1))
        p4 = self.reduce4(t4)
        n3 = self.td3(torch.cat([F.interpolate(p4, scale_factor=2.0, mode="nearest"), c3], 1))
        n4 = self.bu4(torch.cat([self.down3(n3), p4], 1))
        n5 = self.bu5(torch.cat([self.down4(n4), p5], 1))
        outs = []
        for i, feat in enumerate((n3, n4, n5)):
            y = self.heads[i](feat)
            b, _, h, w = y.shape
            y = y.view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).sigmoid()
            grid, anchor = getattr(self, "grid%d" % i), getattr(self, "anchor%d" % i)
            xy = (y[..., 0:2] * 2.0 - 0.5 + grid) * self.STRIDES[i]
            wh = (y[..., 2:4] * 2.0) ** 2 * anchor
            outs.append(torch.cat([xy, wh, y[..., 4:]], -1).reshape(b, -1, self.no))
        return torch.cat(outs, 1)


def make_yolo():
    return YoloTiny()


MODELS = [
    ("ssdlite320_mobilenet_v3_large", make_ssdlite, ["boxes", "scores", "labels"]),
    ("fcos_resnet50_fpn", make_fcos, ["boxes", "scores", "labels"]),
    ("retinanet_resnet50_fpn", make_retinanet, ["boxes", "scores", "labels"]),
    ("yolo_tiny", make_yolo, ["detections"]),
]


# ----------------------------------------------------------------------------------------------
# export + reference data
# ----------------------------------------------------------------------------------------------

def export(module, example, path, output_names):
    kwargs = dict(opset_version=OPSET, input_names=["images"], output_names=output_names, do_constant_folding=True)
    try:
        torch.onnx.export(module, (example,), path, dynamo=False, **kwargs)
        return "torchscript"
    except TypeError as exc:  # a torch without the dynamo keyword uses the classic exporter anyway
        if "dynamo" not in str(exc):
            raise
        torch.onnx.export(module, (example,), path, **kwargs)
        return "torchscript"


def write_test_data(model_dir, path, x):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(names, {in_name: x})
    ds = os.path.join(model_dir, "test_data_set_0")
    os.makedirs(ds, exist_ok=True)
    with open(os.path.join(ds, "input_0.pb"), "wb") as fh:
        fh.write(numpy_helper.from_array(x, name=in_name).SerializeToString())
    for i, (n, a) in enumerate(zip(names, outs)):
        with open(os.path.join(ds, "output_%d.pb" % i), "wb") as fh:
            fh.write(numpy_helper.from_array(np.asarray(a), name=n).SerializeToString())
    return {n: tuple(np.asarray(a).shape) for n, a in zip(names, outs)}


def all_op_types(graph):
    ops = set()
    for n in graph.node:
        ops.add(n.op_type if not n.domain else "%s::%s" % (n.domain, n.op_type))
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                ops |= all_op_types(g)
    return ops


def run_one(name, factory, output_names, out_dir, seed):
    model_dir = os.path.join(out_dir, name)
    if os.path.isdir(model_dir):
        shutil.rmtree(model_dir)
    os.makedirs(model_dir)
    path = os.path.join(model_dir, "model.onnx")
    torch.manual_seed(seed)
    module = factory().eval()
    x = torch.from_numpy(np.random.default_rng(seed).random((1, 3, SIZE, SIZE), dtype=np.float32))
    t0 = time.time()
    with torch.no_grad():
        via = export(module, x, path, output_names)
    t_export = time.time() - t0
    onnx.checker.check_model(path)
    model = onnx.load(path)
    t1 = time.time()
    shapes = write_test_data(model_dir, path, x.numpy())
    t_run = time.time() - t1
    ops = sorted(all_op_types(model.graph))
    return dict(export_s=t_export, ort_s=t_run, size=os.path.getsize(path), nodes=len(model.graph.node),
                via=via, shapes=shapes, ops=ops)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", nargs="?", default=os.path.join(ROOT, ".build-fixtures", "detectors"))
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(m[0] for m in MODELS))
    args = ap.parse_args()
    only = {s for s in args.only.split(",") if s}
    os.makedirs(args.out_dir, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print("torch %s, torchvision %s, onnx %s, onnxruntime %s -> %s" % (
        torch.__version__, torchvision.__version__, onnx.__version__, ort.__version__, args.out_dir))

    failures = []
    for seed, (name, factory, output_names) in enumerate(MODELS):
        if only and name not in only:
            continue
        print("\n== %s" % name, flush=True)
        try:
            r = run_one(name, factory, output_names, args.out_dir, seed)
        except Exception as exc:  # noqa: BLE001 - report and continue with the next model
            failures.append(name)
            print("FAILED: %s: %s" % (type(exc).__name__, exc))
            traceback.print_exc(limit=4)
            continue
        print("exported via %s in %.1fs, %.1f MB, %d nodes; onnxruntime %.2fs" % (
            r["via"], r["export_s"], r["size"] / 1e6, r["nodes"], r["ort_s"]))
        print("outputs: %s" % ", ".join("%s%s" % (n, list(s)) for n, s in r["shapes"].items()))
        print("ops: %s" % " ".join(r["ops"]))
    if failures:
        print("\nfailed: %s" % ", ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
