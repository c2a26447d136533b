#!/usr/bin/env python3
"""The speed table of issue #11, measured in one run on this machine: distill, onnxruntime and
PyTorch (eager) with the same thread count on the FCOS-style ResNet-18-FPN and ResNet-50-FPN of
tools/bench_distill.py at 320x320.

Rows: forward at batch 1 and 8 for both models (distill / onnxruntime / PyTorch), the
ResNet-18-FPN training step at batch 8 (recorded forward and backward to every parameter, BN on
batch statistics; distill's against its own forward and against PyTorch's), and with
--distillation the whole distillation step of tools/bench_distill.py.

usage: bench_speed.py [--distill .build/release/distill] [--threads 2] [--runs 5] [--only r18,r50]
                      [--batches 1,8] [--distillation] [--work DIR]
Needs a release build and the PyTorch environment (`make torch-deps`). Prints a Markdown table;
the last line is JSON with every median.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_distill import build, export  # noqa: E402


def median_ms(run, runs, warmup=1):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def distill_bench(args, model, batch, train=False):
    command = [args.distill, "bench", model, f"--input=images={batch}x3x320x320", "--runs", str(args.runs), "--warmup", "1",
               "--threads", str(args.threads)] + (["--train"] if train else [])
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"distill bench failed: {result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distill", default=".build/release/distill")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="r18,r50")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--distillation", action="store_true", help="also run tools/bench_distill.py (the whole step)")
    parser.add_argument("--work", default=".build-fixtures/bench-speed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    teacher, student = build()
    models = {"r18": ("ResNet-18-FPN", student, os.path.join(args.work, "r18_fpn.onnx")),
              "r50": ("ResNet-50-FPN", teacher, os.path.join(args.work, "r50_fpn.onnx"))}
    rows, results = [], {}
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    for key in args.only.split(","):
        title, module, path = models[key]
        if not os.path.exists(path):
            export(module, path)
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for batch in [int(b) for b in args.batches.split(",")]:
            images = np.random.default_rng(0).random((batch, 3, 320, 320), dtype=np.float32)
            ort_ms = median_ms(lambda: session.run(None, {"images": images}), args.runs)
            tensor = torch.from_numpy(images)
            module.eval()
            with torch.no_grad():
                torch_ms = median_ms(lambda: module(tensor), args.runs)
            train = key == "r18" and batch == 8
            report = distill_bench(args, path, batch, train=train)
            distill_ms = report["forward_ms_median"]
            results[f"{key}_b{batch}"] = {"distill_ms": distill_ms, "ort_ms": round(ort_ms, 1), "pytorch_ms": round(torch_ms, 1),
                                          "ratio_to_ort": round(distill_ms / ort_ms, 3), "ratio_to_pytorch": round(distill_ms / torch_ms, 3)}
            rows.append(f"| {title} forward, batch {batch} | {distill_ms:.0f} ms | {ort_ms:.0f} ms ({distill_ms / ort_ms:.2f}x) | "
                        f"{torch_ms:.0f} ms ({distill_ms / torch_ms:.2f}x) |")
            print(rows[-1], file=sys.stderr, flush=True)
            if train:
                module.train()
                parameters = [p for p in module.parameters() if p.requires_grad]

                def step():
                    outputs = module(tensor)
                    grads = torch.autograd.grad(sum(o.sum() for o in outputs), parameters, allow_unused=True)
                    return grads
                torch_train = median_ms(step, args.runs)
                module.eval()
                distill_train = report["train_step_ms_median"]
                results["r18_train_b8"] = {"distill_ms": distill_train, "pytorch_ms": round(torch_train, 1),
                                           "to_own_forward": report["train_to_forward_ratio"], "ratio_to_pytorch": round(distill_train / torch_train, 3)}
                rows.append(f"| {title} training step, batch {batch} | {distill_train:.0f} ms ({report['train_to_forward_ratio']:.2f}x its forward) | - | "
                            f"{torch_train:.0f} ms ({distill_train / torch_train:.2f}x) |")
                print(rows[-1], file=sys.stderr, flush=True)
    if args.distillation:
        result = subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_distill.py"),
                                 "--distill", args.distill, "--threads", str(args.threads)], capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"bench_distill.py failed: {result.stderr}")
        step = json.loads(result.stdout.strip().splitlines()[-1])
        results["distillation_step_b8"] = step
        rows.append(f"| distillation step (R50-FPN teacher, R18-FPN student), batch 8 | {step['distill_step_ms_median']:.0f} ms, "
                    f"peak {step['distill_peak_rss_mb']} MB | - | {step['pytorch_step_ms_median']:.0f} ms ({step['ratio']:.2f}x), "
                    f"peak {step['pytorch_peak_rss_mb']} MB |")
    print(f"\n{args.threads} threads, 320x320, onnxruntime {ort.__version__}, PyTorch {torch.__version__}\n")
    print("| work | distill | onnxruntime | PyTorch (eager) |")
    print("| --- | --- | --- | --- |")
    print("\n".join(rows))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
