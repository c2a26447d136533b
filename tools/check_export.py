#!/usr/bin/env python3
"""Checks `distill export --checkpoint` against onnxruntime. For each model: writes a checkpoint
(format version 1, see Sources/DistillTrain/Checkpoint.swift) holding every parameter of the model
perturbed (float initializers, BatchNormalization statistics included, and float Constant tensors),
exports it with distill, checks that the exported initializers and Constant tensors equal the
checkpoint bit for bit and everything else is unchanged, then runs the exported model on random
inputs with onnxruntime and with `distill run` and compares them by the rule of tools/compare.py.

With --self-test it also shows that this comparison catches the bugs it exists for: it breaks
the exported model in one place at a time (a Conv weight left at its value before training, a
Conv kernel transposed, a BatchNormalization running statistic left as it was) and requires
every broken copy, run by onnxruntime, to fail the comparison with distill's outputs.

usage: check_export.py DISTILL_BINARY MODEL.onnx [MODEL.onnx ...] [--rtol 1e-3] [--atol 1e-5] [--self-test]
Prints one line per model (and per self-test) and a closing 'N passed, N failed' line; exits 1 on any failure.
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

from compare import ATOL, RTOL, mismatch

FLOAT_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


def fnv1a64(data, value=0xCBF29CE484222325):
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def model_tensors(model):
    """Float initializers and float Constant-node tensors by name: (ONNX data type, float32 array)."""
    result = {}
    for tensor in model.graph.initializer:
        if tensor.data_type in FLOAT_TYPES:
            result[tensor.name] = (tensor.data_type, numpy_helper.to_array(tensor).astype(np.float32))
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.t.data_type in FLOAT_TYPES:
                    result[node.output[0]] = (attribute.t.data_type, numpy_helper.to_array(attribute.t).astype(np.float32))
    return result


def parameters(distill, model_path, model):
    """The parameters a distill Trainer sees, as `distill inspect --json` lists them (merged
    parameters untied), with their starting values: [(name, ONNX data type, float32 array)]."""
    result = subprocess.run([distill, "inspect", "--json", model_path], capture_output=True, text=True, check=True)
    tensors = model_tensors(model)
    listed = json.loads(result.stdout)["parameters"]
    return [(p["name"], tensors[p["initial"]][0], tensors[p["initial"]][1]) for p in listed]


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


def check(distill, model_path, rtol, atol, self_test):
    model = onnx.load(model_path)
    rng = np.random.default_rng(0)
    student = []
    for name, data_type, values in parameters(distill, model_path, model):
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
            return f"distill export failed: {result.stderr.strip()}", []
        exported = onnx.load(out)
        values = {name: array for name, _, array in student}
        got = {name: array for name, (_, array) in model_tensors(exported).items()}
        for name, array in values.items():
            if got[name].tobytes() != array.tobytes():
                return f"exported '{name}' differs from the checkpoint", []
        merged_aliases = [n for n in model.graph.node if n.op_type == "Identity" and n.output[0] in values]
        if [n.op_type for n in exported.graph.node] != [n.op_type for n in model.graph.node if n not in merged_aliases]:
            return "the exported graph has other nodes", []
        for before, after in zip(model.graph.initializer, exported.graph.initializer):
            if before.name != after.name or (before.data_type not in FLOAT_TYPES and before.SerializeToString() != after.SerializeToString()):
                return f"initializer '{before.name}' changed though it is not a parameter", []

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
            return f"distill run failed: {result.stderr.strip()}", []
        actuals = []
        for index in range(len(exported.graph.output)):
            tensor = onnx.TensorProto()
            with open(os.path.join(outputs, f"output_{index}.pb"), "rb") as f:
                tensor.ParseFromString(f.read())
            actuals.append(numpy_helper.to_array(tensor))
        problem = differs_from_onnxruntime(exported, feeds, actuals, rtol, atol)
        if problem or not self_test:
            return problem, []
        return None, self_test_results(model, exported, feeds, actuals, rtol, atol)


def differs_from_onnxruntime(model, feeds, actuals, rtol, atol):
    """None when onnxruntime's outputs of `model` on `feeds` match `actuals`, else the first difference."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for index, (actual, reference) in enumerate(zip(actuals, session.run(None, feeds))):
        problem = mismatch(actual, reference, rtol, atol)
        if problem:
            return f"output {index}: {problem}"
    return None


def broken_copies(original, exported):
    """(description, model) pairs: `exported` with one bug of the kinds an export can have."""
    before = {tensor.name: tensor for tensor in original.graph.initializer}
    by_name = {tensor.name: index for index, tensor in enumerate(exported.graph.initializer)}
    copies, seen = [], set()

    def replaced(name, array, what):
        if (what, name) in seen:
            return
        seen.add((what, name))
        model = onnx.ModelProto()
        model.CopyFrom(exported)
        tensor = numpy_helper.from_array(array.astype(numpy_helper.to_array(before[name]).dtype), name)
        model.graph.initializer[by_name[name]].CopyFrom(tensor)
        copies.append((f"{what} '{name}'", model))

    for node in exported.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in before and node.input[1] in by_name:
            name = node.input[1]
            replaced(name, numpy_helper.to_array(before[name]), "Conv weight left untrained:")
            trained = numpy_helper.to_array(exported.graph.initializer[by_name[name]])
            if trained.ndim == 4 and trained.shape[2] == trained.shape[3] and trained.shape[2] > 1:
                replaced(name, trained.transpose(0, 1, 3, 2), "Conv kernel transposed:")
        if node.op_type == "BatchNormalization":
            for name in node.input[3:5]:
                if name in before and name in by_name:
                    replaced(name, numpy_helper.to_array(before[name]), "BatchNormalization statistic not exported:")
    return copies


def self_test_results(original, exported, feeds, actuals, rtol, atol):
    """(description, caught) for each broken copy of the export."""
    return [(what, differs_from_onnxruntime(model, feeds, actuals, rtol, atol) is not None)
            for what, model in broken_copies(original, exported)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("distill")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--rtol", type=float, default=RTOL)
    parser.add_argument("--atol", type=float, default=ATOL)
    parser.add_argument("--self-test", action="store_true", help="also require broken copies of each export to fail")
    args = parser.parse_args()
    passed = failed = 0
    for model in args.models:
        problem, self_tests = check(args.distill, model, args.rtol, args.atol, args.self_test)
        failed += problem is not None
        passed += problem is None
        print(f"{'PASS' if problem is None else 'FAIL'} {model}{'' if problem is None else ': ' + problem}")
        for what, caught in self_tests:
            passed += caught
            failed += not caught
            print(f"{'PASS' if caught else 'FAIL'} {model}: self-test: {what} {'caught' if caught else 'NOT caught'}")
    print(f"export: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
