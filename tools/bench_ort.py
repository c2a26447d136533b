#!/usr/bin/env python3
"""Times onnxruntime and `distill bench` on the same model, input shape and thread count, in the
same run, and prints both medians and their ratio.

usage: bench_ort.py MODEL --input NAME=8x3x320x320 [--runs 10] [--warmup 2] [--threads 2]
                    [--distill .build/release/distill]
The last line is a JSON object: {"ort_ms_median", "distill_ms_median", "ratio", ...}.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--input", action="append", default=[], help="NAME=8x3x320x320")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--distill", default=".build/release/distill")
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    shapes = {}
    for item in args.input:
        name, dims = item.rsplit("=", 1)
        shapes[name] = [int(d) for d in dims.split("x")]
    rng = np.random.default_rng(0)
    feeds = {}
    for i in session.get_inputs():
        shape = shapes.get(i.name) or [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = rng.random(shape, dtype=np.float32)
    for _ in range(args.warmup):
        session.run(None, feeds)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1000)
    ort_median = statistics.median(times)
    print(f"onnxruntime {ort.__version__}: median {ort_median:.1f} ms over {args.runs} runs, {args.threads} threads", file=sys.stderr)

    command = [args.distill, "bench", args.model, "--runs", str(args.runs), "--warmup", str(args.warmup),
               "--threads", str(args.threads)] + [f"--input={item}" for item in args.input]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        sys.exit(1)
    distill = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"distill: median {distill['forward_ms_median']:.1f} ms, peak RSS {distill['peak_rss_mb']} MB", file=sys.stderr)
    print(json.dumps({
        "model": args.model, "inputs": shapes, "threads": args.threads, "runs": args.runs,
        "ort_ms_median": round(ort_median, 2), "distill_ms_median": distill["forward_ms_median"],
        "ratio": round(distill["forward_ms_median"] / ort_median, 3), "distill_peak_rss_mb": distill["peak_rss_mb"],
    }))


if __name__ == "__main__":
    main()
