#!/usr/bin/env python3
"""Pruner latency on the CPU (the core issue's targets): PruningGraph and the reference.

    python scripts/bench_cpu.py [--frames 32] [--iterations 20]

Times with ``time.perf_counter`` around each call (torch's intra-op threads = all cores),
median and p90 after 3 warm-up calls; the reference (plain Python decisions) is timed a few
times. Also the exported ONNX under ONNX Runtime's CPU provider, for comparison.
Targets at T=32, P=196, D=3584 fp32: PruningGraph median <= 250 ms, reference < 5 s.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mmg_export import PruningGraph, select_tokens
from mmg_export.build.export import export_pruner


def timed(call, iterations: int, warm_up: int) -> list[float]:
    for _ in range(warm_up):
        call()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def row(name: str, times: list[float], target: str) -> str:
    p90 = float(np.percentile(times, 90))
    return f"| {name} | {statistics.median(times):.1f} | {p90:.1f} | {len(times)} | {target} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=196)
    parser.add_argument("--dim", type=int, default=3584)
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--reference-iterations", type=int, default=3)
    args = parser.parse_args()

    shape = (args.frames, args.tokens, args.dim)
    features = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    graph = PruningGraph(*shape, ratio=args.ratio).eval()
    with torch.no_grad():
        graph_times = timed(lambda: graph(features), args.iterations, 3)
        reference_times = timed(lambda: select_tokens(features, args.ratio), args.reference_iterations, 1)
        same = graph(features)[1].tolist() == select_tokens(features, args.ratio).indices.tolist()
    import onnxruntime

    with tempfile.TemporaryDirectory() as scratch:
        path = export_pruner(*shape, args.ratio, "fp32", Path(scratch) / "pruner.onnx")
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {"video_tokens": features.numpy()}
        ort_times = timed(lambda: session.run(None, feed), args.iterations, 3)

    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__}")
    print(f"T={args.frames}, P={args.tokens}, D={args.dim}, fp32, ratio {args.ratio}: K = {graph.keep}; "
          f"graph and reference select the same tokens: {same}\n")
    print("| form | median ms | p90 ms | runs | target |\n|---|---|---|---|---|")
    print(row("PruningGraph (torch eager)", graph_times, "<= 250 ms"))
    print(row("reference select_tokens", reference_times, "< 5000 ms"))
    print(row("pruner.onnx (ONNX Runtime CPU)", ort_times, "-"))


if __name__ == "__main__":
    main()
