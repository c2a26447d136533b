#!/usr/bin/env python3
"""Checks `distill export --checkpoint` against onnxruntime. For each model: writes a checkpoint
(format version 1, see Sources/DistillTrain/Checkpoint.swift) holding every parameter of the model
perturbed (float initializers, BatchNormalization statistics included, and float Constant tensors),
exports it with distill, checks that the exported initializers and Constant tensors equal the
checkpoint bit for bit and everything else is unchanged, then runs the exported model on random
inputs with onnxruntime and with `distill run` and compares: |a - b| <= atol + rtol * |b|.

usage: check_export.py DISTILL_BINARY MODEL.onnx [MODEL.onnx ...] [--rtol 1e-4] [--atol 1e-5]
Exits 1 on any failure.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


def fnv1a64(data, value=0xCBF29CE484222325):
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def parameters(model):
    """The parameters a distill Trainer sees: float initializers, then float Constant tensors."""
    result = []
    for tensor in model.graph.initializer:
        if tensor.data_type in FLOAT_TYPES:
            result.append((tensor.name, tensor.data_type, numpy_helper.to_array(tensor).astype(np.float32)))
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.t.data_type in FLOAT_TYPES:
                    result.append((node.output[0], attribute.t.data_type, numpy_helper.to_array(attribute.t).astype(np.float32)))
    return result


def write_checkpoint(path, student, step=1):
    payload = bytearray()
    entries = []
    for name, data_type, values in student:
        entries.append({"name": name, "dtype": FLOAT_TYPES[data_type], "onnxType": data_type,
                        "shape": list(values.shape), "offset": len(payload), "count": int(values.size)})
        payload += values.astype("<f4").tobytes()
    header = {"format": "distill checkpoint", "step": step, "configHash": "check_export", "rng": ["1"],
              "consecutiveNonFinite": 0, "optimizerKind": "sgd", "optimizerStep": step, "student": entries,
              "adapters": [], "optimizer": [], "metadata": {"writer": "tools/check_export.py"}}
    header = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    checksum = fnv1a64(payload, fnv1a64(header))
    with open(path, "wb") as f:
        f.write(b"DSTLCKPT" + struct.pack("<IIQQ", 1, len(header), len(payload), checksum) + header + payload)


def random_inputs(model, rng):
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in value.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        feeds[value.name] = rng.uniform(0, 1, dims).astype(dtype)
    return feeds


def check(distill, model_path, rtol, atol):
    model = onnx.load(model_path)
    rng = np.random.default_rng(0)
    student = []
    for name, data_type, values in parameters(model):
        scale = 1 + 0.1 * rng.uniform(size=values.shape)
        shift = 0 if name.endswith("var") else 0.01 * rng.standard_normal(values.shape)
        trained = values if "scales" in name or "shape" in name else values * scale + shift
        if data_type == 10:
            trained = trained.astype(np.float16)
        student.append((name, data_type, np.asarray(trained, dtype=np.float32)))
    with tempfile.TemporaryDirectory() as work:
        checkpoint, out = os.path.join(work, "ckpt"), os.path.join(work, "out.onnx")
        write_checkpoint(checkpoint, student)
        result = subprocess.run([distill, "export", model_path, "--checkpoint", checkpoint, "--out", out],
                                capture_output=True, text=True)
        if result.returncode != 0:
            return f"distill export failed: {result.stderr.strip()}"
        exported = onnx.load(out)
        values = {name: array for name, _, array in student}
        got = {name: array for name, _, array in parameters(exported)}
        for name, array in values.items():
            if got[name].tobytes() != array.tobytes():
                return f"exported '{name}' differs from the checkpoint"
        if len(exported.graph.node) != len(model.graph.node) or \
                [n.op_type for n in exported.graph.node] != [n.op_type for n in model.graph.node]:
            return "the exported graph has other nodes"
        for before, after in zip(model.graph.initializer, exported.graph.initializer):
            if before.name != after.name or (before.data_type not in FLOAT_TYPES and before.SerializeToString() != after.SerializeToString()):
                return f"initializer '{before.name}' changed though it is not a parameter"

        feeds = random_inputs(exported, rng)
        data = os.path.join(work, "data")
        os.makedirs(data)
        inputs = [v.name for v in exported.graph.input if v.name in feeds]
        for index, name in enumerate(inputs):
            with open(os.path.join(data, f"input_{index}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(feeds[name], name).SerializeToString())
        outputs = os.path.join(work, "outputs")
        result = subprocess.run([distill, "run", out, "--data", data, "--output-dir", outputs], capture_output=True, text=True)
        if result.returncode != 0:
            return f"distill run failed: {result.stderr.strip()}"
        expected = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, feeds)
        for index, reference in enumerate(expected):
            tensor = onnx.TensorProto()
            with open(os.path.join(outputs, f"output_{index}.pb"), "rb") as f:
                tensor.ParseFromString(f.read())
            actual = numpy_helper.to_array(tensor)
            if actual.shape != reference.shape:
                return f"output {index}: shape {actual.shape}, onnxruntime {reference.shape}"
            a, e = actual.astype(np.float64), reference.astype(np.float64)
            bad = np.abs(a - e) > atol + rtol * np.abs(e)
            if bad.any():
                return f"output {index}: {bad.sum()} of {bad.size} elements differ from onnxruntime, max |diff| {np.abs(a - e).max()}"
        return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("distill")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--atol", type=float, default=1e-5)
    args = parser.parse_args()
    failed = 0
    for model in args.models:
        problem = check(args.distill, model, args.rtol, args.atol)
        failed += problem is not None
        print(f"{'PASS' if problem is None else 'FAIL'} {model}{'' if problem is None else ': ' + problem}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
