#!/usr/bin/env python3
"""Runs `distill run --data` on models in the ONNX test-data layout (MODEL_DIR/model.onnx +
test_data_set_*/input_*.pb, output_*.pb written by onnxruntime) and compares distill's outputs
with onnxruntime's by the rule of tools/compare.py (|a - b| <= atol + rtol * max|b| per output;
shapes, dtypes and non-float outputs exactly).

usage: check_parity.py DISTILL_BINARY MODEL_DIR [MODEL_DIR ...] [--rtol 1e-3] [--atol 1e-5]
Prints one line per data set and a closing 'N passed, N failed' line; exits 1 on any failure.
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile

import onnx
from onnx import numpy_helper

from compare import ATOL, RTOL, close, float_scale, mismatch


def load(path):
    tensor = onnx.TensorProto()
    with open(path, "rb") as f:
        tensor.ParseFromString(f.read())
    return numpy_helper.to_array(tensor)


def rows_match_in_any_order(actuals, expecteds, rtol, atol):
    """Post-processed detections (boxes, scores, labels sharing a leading dim) may list near-tied
    detections in another order; accept when every expected row matches a distinct actual row."""
    count = expecteds[0].shape[0] if expecteds and expecteds[0].ndim else None
    if count is None or any(x.ndim == 0 or x.shape[0] != count for x in actuals + expecteds):
        return False
    if any(a.shape != e.shape or a.dtype != e.dtype for a, e in zip(actuals, expecteds)):
        return False
    scales = [float_scale(e) for e in expecteds]
    unused = set(range(count))
    for i in range(count):
        match = next((j for j in sorted(unused, key=lambda j: abs(j - i))
                      if all(close(a[j], e[i], rtol, atol, s) for a, e, s in zip(actuals, expecteds, scales))), None)
        if match is None:
            return False
        unused.remove(match)
    return True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("distill")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--rtol", type=float, default=RTOL)
    parser.add_argument("--atol", type=float, default=ATOL)
    args = parser.parse_args()
    passed = failed = 0
    for model_dir in args.models:
        for data_dir in sorted(glob.glob(os.path.join(model_dir, "test_data_set_*"))):
            with tempfile.TemporaryDirectory() as out:
                result = subprocess.run([args.distill, "run", os.path.join(model_dir, "model.onnx"), "--data", data_dir,
                                         "--output-dir", out], capture_output=True, text=True)
                problem = None
                if result.returncode != 0:
                    problem = f"distill run failed: {result.stderr.strip()}"
                else:
                    paths = sorted(glob.glob(os.path.join(data_dir, "output_*.pb")))
                    expecteds = [load(path) for path in paths]
                    actuals = [load(os.path.join(out, os.path.basename(path))) for path in paths]
                    for path, actual, expected in zip(paths, actuals, expecteds):
                        problem = mismatch(actual, expected, args.rtol, args.atol)
                        if problem:
                            problem = f"{os.path.basename(path)}: {problem}"
                            break
                    if problem and rows_match_in_any_order(actuals, expecteds, args.rtol, args.atol):
                        print(f"note {data_dir}: same detections, near-tied ones in another order")
                        problem = None
            ok = problem is None
            passed += ok
            failed += not ok
            print(f"{'PASS' if ok else 'FAIL'} {data_dir}{'' if ok else ': ' + problem}")
    print(f"parity: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
