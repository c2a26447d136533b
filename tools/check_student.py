#!/usr/bin/env python3
"""Checks a trained student written by `distill train`: onnx.checker accepts it, and onnxruntime's
outputs on random inputs equal `distill run`'s by the rule of tools/compare.py.

usage: check_student.py DISTILL_BINARY STUDENT.onnx [STUDENT.onnx ...]
Prints one line per model and a closing 'N passed, N failed' line; exits 1 on any failure.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

from check_export import differs_from_onnxruntime, random_inputs


def check(distill, path):
    model = onnx.load(path)
    onnx.checker.check_model(model)
    feeds = random_inputs(model, np.random.default_rng(0))
    with tempfile.TemporaryDirectory() as work:
        data = os.path.join(work, "data")
        os.makedirs(data)
        names = [v.name for v in model.graph.input if v.name in feeds]
        for index, name in enumerate(names):
            with open(os.path.join(data, f"input_{index}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(feeds[name], name).SerializeToString())
        outputs = os.path.join(work, "outputs")
        result = subprocess.run([distill, "run", path, "--data", data, "--output-dir", outputs], capture_output=True, text=True)
        if result.returncode != 0:
            return f"distill run failed: {result.stderr.strip()}"
        actuals = []
        for index in range(len(model.graph.output)):
            tensor = onnx.TensorProto()
            with open(os.path.join(outputs, f"output_{index}.pb"), "rb") as f:
                tensor.ParseFromString(f.read())
            actuals.append(numpy_helper.to_array(tensor))
        return differs_from_onnxruntime(model, feeds, actuals, 1e-3, 1e-5)


def main():
    distill, paths = sys.argv[1], sys.argv[2:]
    passed = failed = 0
    for path in paths:
        try:
            problem = check(distill, path)
        except Exception as error:  # a checker or runtime rejection is a failure to report
            problem = f"{type(error).__name__}: {error}"
        passed += problem is None
        failed += problem is not None
        print(f"{'PASS' if problem is None else 'FAIL'} {path}{'' if problem is None else ': ' + problem}")
    print(f"student: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
