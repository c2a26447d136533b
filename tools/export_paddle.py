#!/usr/bin/env python3
"""Export small PaddlePaddle models (random weights, nothing downloaded) to ONNX with paddle2onnx,
for distill's integration tests. Paddle exports matter because paddle2onnx (especially older
releases) may store weights in `Constant` nodes rather than graph initializers. The output is NOT
committed.

    python3 tools/export_paddle.py [OUT_DIR]        # default: .build-fixtures/paddle/

For each model writes OUT_DIR/NAME/model.onnx and OUT_DIR/NAME/test_data_set_0/{input_*,output_*}.pb
(ONNX backend-test layout, graph input/output order; outputs computed by onnxruntime). Models:

  ppyoloe_like        small PP-YOLOE-style detector: conv backbone with hardswish / hardsigmoid /
                      ReLU6 (-> Clip), an SE block, two feature levels joined by a nearest upsample
                      + concat neck, per-level 1x1 heads flattened/transposed/concatenated into
                      boxes [1, N, 4] and sigmoid scores [1, N, num_classes]
  mobilenet_v3_small  paddle.vision.models.mobilenet_v3_small(pretrained=False)

If an export keeps its weights as initializers, a variant NAME_constants/ is also written in which
every initializer has been moved into a Constant node producing the same name (mimicking older
Paddle exports). Every model is checked with onnx.checker and onnxruntime, and the script prints
per model its size, its op types and how many initializers vs Constant nodes it has. A failed
export is reported and the others continue; the exit status is 1 if any failed.

Requires paddlepaddle, paddle2onnx, onnx, onnxruntime, numpy.
"""

import argparse
import collections
import contextlib
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings

# Keep Paddle / glog quiet; must be set before paddle is imported.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("GLOG_v", "0")
os.environ.setdefault("FLAGS_call_stack_level", "0")
warnings.filterwarnings("ignore")

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from compare import mismatch

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OPSETS = (17, 16, 15, 14, 13, 12, 11)  # tried in this order; the first that exports is kept
SEED = 0


@contextlib.contextmanager
def captured_fds():
    """Redirect the process-level stdout/stderr (C++ glog output included) into a temp file.
    Yields a list that receives the captured text once the block ends."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = tempfile.TemporaryFile(mode="w+b")
    result = []
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        yield result
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        log.seek(0)
        result.append(log.read().decode("utf-8", "replace"))
        log.close()


with captured_fds():
    import paddle
    import paddle.nn as nn
    import paddle.nn.functional as F
    import paddle2onnx


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------

class ConvBN(nn.Layer):
    def __init__(self, cin, cout, k=3, s=1, groups=1, act=None):
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, k, stride=s, padding=k // 2, groups=groups, bias_attr=False)
        self.bn = nn.BatchNorm2D(cout)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        if self.act == "hardswish":
            x = F.hardswish(x)
        elif self.act == "relu6":
            x = F.relu6(x)
        elif self.act == "relu":
            x = F.relu(x)
        return x


class SEBlock(nn.Layer):
    def __init__(self, c, reduction=4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.fc1 = nn.Conv2D(c, c // reduction, 1)
        self.fc2 = nn.Conv2D(c // reduction, c, 1)

    def forward(self, x):
        s = self.pool(x)
        s = F.relu(self.fc1(s))
        s = F.hardsigmoid(self.fc2(s))
        return x * s


class PPYOLOELike(nn.Layer):
    """Input [1, 3, 160, 160] -> boxes [1, N, 4], scores [1, N, num_classes] with
    N = 20*20 + 10*10 (strides 8 and 16)."""

    def __init__(self, num_classes=8):
        super().__init__()
        self.stem = ConvBN(3, 16, 3, 2, act="hardswish")                  # /2
        self.down1 = ConvBN(16, 24, 3, 2, act="relu6")                    # /4
        self.dw = ConvBN(24, 24, 3, 2, groups=24, act="hardswish")        # /8 depthwise
        self.se = SEBlock(24)
        self.pw = ConvBN(24, 32, 1, 1, act="relu6")                       # C3: stride 8
        self.down2 = ConvBN(32, 48, 3, 2, act="hardswish")                # C4: stride 16
        self.lat4 = ConvBN(48, 32, 1, 1, act="hardswish")
        self.fuse3 = ConvBN(64, 32, 3, 1, act="hardswish")                # concat(up(P4), C3)
        self.cls_heads = nn.LayerList([nn.Conv2D(32, num_classes, 1), nn.Conv2D(48, num_classes, 1)])
        self.reg_heads = nn.LayerList([nn.Conv2D(32, 4, 1), nn.Conv2D(48, 4, 1)])

    def forward(self, x):
        x = self.stem(x)
        x = self.down1(x)
        x = self.se(self.dw(x))
        c3 = self.pw(x)
        c4 = self.down2(c3)
        # Explicit output size: paddle2onnx 2.1 rejects scale_factor ("elementwise MUST be
        # ir::FloatAttribute"); the shapes are static, so this still exports as a nearest Resize.
        up = F.interpolate(self.lat4(c4), size=[c3.shape[2], c3.shape[3]], mode="nearest")
        p3 = self.fuse3(paddle.concat([up, c3], axis=1))
        feats = [p3, c4]
        cls, reg = [], []
        for feat, cls_head, reg_head in zip(feats, self.cls_heads, self.reg_heads):
            c = cls_head(feat)                                            # [1, K, H, W]
            r = reg_head(feat)                                            # [1, 4, H, W]
            cls.append(paddle.transpose(paddle.reshape(c, [0, c.shape[1], -1]), [0, 2, 1]))
            reg.append(paddle.transpose(paddle.reshape(r, [0, 4, -1]), [0, 2, 1]))
        scores = F.sigmoid(paddle.concat(cls, axis=1))
        boxes = paddle.concat(reg, axis=1)
        return boxes, scores


def randomize_batchnorm(layer, rng):
    """Non-trivial BN statistics so folding / normalization is actually exercised."""
    for sub in layer.sublayers():
        if isinstance(sub, (nn.BatchNorm2D, nn.BatchNorm)):
            n = sub.weight.shape[0]
            sub.weight.set_value(rng.uniform(0.5, 1.5, n).astype("float32"))
            sub.bias.set_value(rng.uniform(-0.2, 0.2, n).astype("float32"))
            sub._mean.set_value(rng.uniform(-0.2, 0.2, n).astype("float32"))
            sub._variance.set_value(rng.uniform(0.5, 1.5, n).astype("float32"))


def make_ppyoloe_like():
    return PPYOLOELike(), [1, 3, 160, 160]


def make_mobilenet_v3_small():
    from paddle.vision.models import mobilenet_v3_small
    return mobilenet_v3_small(pretrained=False), [1, 3, 224, 224]


MODELS = [
    ("ppyoloe_like", make_ppyoloe_like),
    ("mobilenet_v3_small", make_mobilenet_v3_small),
]


# ----------------------------------------------------------------------------------------------
# export / checking helpers
# ----------------------------------------------------------------------------------------------

def paddle_to_onnx(layer, shape, workdir):
    """jit.save the layer, then paddle2onnx it; returns (onnx bytes, opset used)."""
    prefix = os.path.join(workdir, "model")
    spec = [paddle.static.InputSpec(shape=shape, dtype="float32", name="image")]
    errors = []
    with captured_fds() as log:
        paddle.jit.save(layer, prefix, input_spec=spec)
        model_file = prefix + ".json" if os.path.exists(prefix + ".json") else prefix + ".pdmodel"
        for opset in OPSETS:
            try:
                # save_file=None: return the raw bytes (skips paddle2onnx's Polygraphy folding
                # pass, which would turn Constant nodes into initializers).
                data = paddle2onnx.export(model_file, prefix + ".pdiparams", save_file=None,
                                          opset_version=opset, auto_upgrade_opset=False,
                                          enable_onnx_checker=True)
                if data:
                    return data, opset
                errors.append(f"opset {opset}: empty result")
            except (Exception, SystemExit) as err:  # paddle2onnx logs errors, then sys.exit(-1)
                errors.append(f"opset {opset}: {type(err).__name__}: {err}")
    tail = "\n".join(log[0].strip().splitlines()[-15:]) if log else ""
    raise RuntimeError("paddle2onnx failed for every opset:\n  " + "\n  ".join(errors) + "\n" + tail)


def count_storage(model):
    inits = len(model.graph.initializer)
    consts = sum(1 for n in model.graph.node if n.op_type == "Constant")
    return inits, consts


def op_histogram(model):
    return collections.Counter(n.op_type for n in model.graph.node)


def initializers_to_constants(model):
    """Copy of `model` with every initializer replaced by a Constant node producing the same
    name (placed before all other nodes, so the graph stays topologically sorted)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    names = {t.name for t in graph.initializer}
    consts = [helper.make_node("Constant", [], [t.name], name=f"const_{i}_{t.name}", value=t)
              for i, t in enumerate(graph.initializer)]
    # Older IRs list initializers as graph inputs too; those must not remain inputs.
    kept_inputs = [i for i in graph.input if i.name not in names]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    nodes = consts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    return out


def check_and_write(model, model_dir, rng_seed):
    """onnx.checker + onnxruntime, then write model.onnx and test_data_set_0."""
    onnx.checker.check_model(model, full_check=True)
    if os.path.exists(model_dir):
        shutil.rmtree(model_dir)
    data_dir = os.path.join(model_dir, "test_data_set_0")
    os.makedirs(data_dir)
    path = os.path.join(model_dir, "model.onnx")
    onnx.save(model, path)

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(rng_seed)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    outputs = sess.run(None, feeds)
    for i, inp in enumerate(sess.get_inputs()):
        with open(os.path.join(data_dir, f"input_{i}.pb"), "wb") as fh:
            fh.write(numpy_helper.from_array(feeds[inp.name], name=inp.name).SerializeToString())
    for i, (meta, value) in enumerate(zip(sess.get_outputs(), outputs)):
        with open(os.path.join(data_dir, f"output_{i}.pb"), "wb") as fh:
            fh.write(numpy_helper.from_array(np.asarray(value), name=meta.name).SerializeToString())
    for v in outputs:
        if not np.all(np.isfinite(v)):
            raise RuntimeError("onnxruntime produced non-finite outputs")
    return path, [(m.name, list(np.asarray(v).shape)) for m, v in zip(sess.get_outputs(), outputs)], feeds, outputs


def describe(name, path, model, opset, outs):
    inits, consts = count_storage(model)
    hist = op_histogram(model)
    size = os.path.getsize(path)
    print(f"  {name}: opset {opset}, {size / 1024:.1f} KiB, {len(model.graph.node)} nodes, "
          f"{inits} initializers, {consts} Constant nodes")
    print(f"    outputs: " + ", ".join(f"{n} {s}" for n, s in outs))
    print(f"    ops: " + ", ".join(f"{op} x{c}" for op, c in sorted(hist.items())))


def run_one(name, factory, out_dir, seed):
    paddle.seed(seed)
    np.random.seed(seed)
    layer, shape = factory()
    randomize_batchnorm(layer, np.random.default_rng(seed))
    layer.eval()
    with tempfile.TemporaryDirectory() as work:
        data, opset = paddle_to_onnx(layer, shape, work)
    model = onnx.load_from_string(data)
    model_dir = os.path.join(out_dir, name)
    path, outs, feeds, expected = check_and_write(model, model_dir, seed + 1)

    # Sanity check the export against Paddle itself (loose tolerance; fp32, different kernels).
    with captured_fds():
        got = layer(paddle.to_tensor(next(iter(feeds.values()))))
    got = got if isinstance(got, (list, tuple)) else [got]
    for g, e in zip(got, expected):
        problem = mismatch(g.numpy().astype(e.dtype), e)
        if problem:
            raise RuntimeError(f"onnxruntime differs from Paddle: {problem}")
    describe(name, path, model, opset, outs)

    inits, _ = count_storage(model)
    if inits:
        const_model = initializers_to_constants(model)
        cname = name + "_constants"
        cpath, couts, cfeeds, cexpected = check_and_write(const_model, os.path.join(out_dir, cname), seed + 1)
        # Same input seed -> same input; the outputs must match the initializer version.
        for a, b in zip(cexpected, expected):
            if mismatch(a, b):
                raise RuntimeError(f"{cname}: outputs differ from {name}")
        describe(cname, cpath, const_model, opset, couts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", default=os.path.join(ROOT, ".build-fixtures", "paddle"))
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    paddle.set_device("cpu")
    print(f"paddle {paddle.__version__}, paddle2onnx {paddle2onnx.__version__}, onnx {onnx.__version__}, "
          f"onnxruntime {ort.__version__} -> {args.out_dir}")
    start = time.time()
    failed = []
    for i, (name, factory) in enumerate(MODELS):
        t0 = time.time()
        try:
            run_one(name, factory, args.out_dir, SEED + 100 * i)
            print(f"    ({time.time() - t0:.1f}s)")
        except Exception as err:
            failed.append(name)
            print(f"  {name}: FAILED: {err}")
            traceback.print_exc(limit=3)
    print(f"done in {time.time() - start:.1f}s; {len(MODELS) - len(failed)} exported, {len(failed)} failed"
          + (f" ({', '.join(failed)})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
