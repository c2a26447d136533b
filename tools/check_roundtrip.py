#!/usr/bin/env python3
"""Independent check of `distill export`: for each model, export it with the distill binary,
then check the output with onnx.checker (full_check, unless the original fails it too) and compare onnxruntime's outputs on the
original and the exported model bit for bit, on the model's test_data_set_* inputs (or random
inputs when it has none).

usage: check_roundtrip.py DISTILL_BINARY MODEL.onnx [MODEL.onnx ...]
Exits 1 if any check fails; prints one line per model and a closing 'N passed, N failed' line.
"""
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

ort.set_default_logger_severity(3)
from onnx import numpy_helper


def inputs_for(model_path, session):
    sets = sorted(glob.glob(os.path.join(os.path.dirname(model_path), "test_data_set_*")))
    if sets:
        for data_dir in sets:
            files = sorted(glob.glob(os.path.join(data_dir, "input_*.pb")), key=lambda p: int(p.rsplit("_", 1)[1][:-3]))
            tensors = []
            for path in files:
                tensor = onnx.TensorProto()
                with open(path, "rb") as f:
                    tensor.ParseFromString(f.read())
                tensors.append(numpy_helper.to_array(tensor))
            yield {i.name: t for i, t in zip(session.get_inputs(), tensors)}
        return
    rng = np.random.default_rng(0)
    feed = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        if "float" in i.type:
            feed[i.name] = rng.random(shape, dtype=np.float32)
        elif "bool" in i.type:
            feed[i.name] = rng.random(shape) > 0.5
        else:
            feed[i.name] = rng.integers(0, 4, shape).astype(np.int64)
    yield feed


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return a.tobytes() == b.tobytes()


def check(binary, model_path, out_dir):
    exported = os.path.join(out_dir, os.path.basename(os.path.dirname(model_path)) + "-" + os.path.basename(model_path))
    result = subprocess.run([binary, "export", model_path, "--out", exported], capture_output=True, text=True)
    if result.returncode != 0:
        return f"distill export failed: {result.stderr.strip()}"
    try:
        onnx.checker.check_model(model_path, full_check=True)
        full_check = True
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        # onnx's shape inference refuses some real exports (e.g. -1 written for a dynamic
        # dimension by older paddle2onnx); then the export must pass what the original passes.
        full_check = False
    onnx.checker.check_model(exported, full_check=full_check)
    original = onnx.load(model_path)
    written = onnx.load(exported)
    for model in (original, written):
        for tensor in list(model.graph.initializer):
            tensor.ClearField("external_data")
            tensor.ClearField("data_location")
    if original != written:
        return "the exported ModelProto differs from the original"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    first = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    second = ort.InferenceSession(exported, options, providers=["CPUExecutionProvider"])
    count = 0
    for feed in inputs_for(model_path, first):
        for a, b in zip(first.run(None, feed), second.run(None, feed)):
            if not same(a, b):
                return "onnxruntime outputs differ between original and exported model"
            count += 1
    return f"ok ({count} outputs bit-identical{'' if full_check else '; onnx full_check refuses the original too, plain check passed'})"


def main():
    binary, models = sys.argv[1], sys.argv[2:]
    passed = failed = 0
    with tempfile.TemporaryDirectory() as out_dir:
        for model_path in models:
            try:
                verdict = check(binary, model_path, out_dir)
            except Exception as error:  # a checker or runtime rejection is a failure to report
                verdict = f"{type(error).__name__}: {error}"
            ok = verdict.startswith("ok")
            passed += ok
            failed += not ok
            print(f"{'PASS' if ok else 'FAIL'} {model_path}: {verdict}")
    print(f"roundtrip: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
