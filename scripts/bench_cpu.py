#!/usr/bin/env python3
"""Pruner latency on the CPU (the core issue's targets): PruningGraph and the reference.

    python scripts/bench_cpu.py [--frames 32] [--iterations 20] [--rounds R --stride S --chain-steps C]

Times with ``time.perf_counter`` around each call (``_bench_common.time_wall``) (torch's intra-op threads = all cores),
median, p90 and min after 3 warm-up calls, and the median process CPU time per call (all
threads: on a machine shared with other work the wall clock stretches, the CPU time much less);
the reference (plain Python decisions) is timed a few times. Also the exported ONNX under ONNX
Runtime's CPU provider, for comparison, and its node count.
Targets at T=32, P=196, D=3584 fp32: PruningGraph median <= 250 ms, reference < 5 s.
--rounds, --stride and --chain-steps time another token stage (``build --reach 3``: --chain-steps 3
--stride 6).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _bench_common import add_token_stage_options, markdown_table, time_wall, token_stage_config

import torch

from mmg_export import PruningGraph, select_tokens
from mmg_export.builder.export import export_pruner


def timed(fn: Callable[[], object], iterations: int, warmup: int) -> dict:
    """time_wall's statistics plus the min wall time and the median process CPU time, in ms."""
    stats = time_wall(fn, iterations, warmup, cuda=False)
    walls, cpus = [], []
    for _ in range(iterations):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append((time.perf_counter() - wall) * 1e3)
        cpus.append((time.process_time() - cpu) * 1e3)
    return {**stats, "min_ms": min(walls), "cpu_ms": statistics.median(cpus)}


def row(name: str, stats: dict, target: str) -> list:
    return [name, f"{stats['median_ms']:.1f}", f"{stats['p90_ms']:.1f}", f"{stats['min_ms']:.1f}",
            f"{stats['cpu_ms']:.1f}", stats["runs"], target]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=196)
    parser.add_argument("--dim", type=int, default=3584)
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--reference-iterations", type=int, default=3)
    add_token_stage_options(parser)
    args = parser.parse_args()
    config = token_stage_config(parser, args)

    shape = (args.frames, args.tokens, args.dim)
    features = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    graph = PruningGraph(*shape, ratio=args.ratio, config=config).eval()
    with torch.no_grad():
        graph_times = timed(lambda: graph(features), args.iterations, 3)
        reference_times = timed(lambda: select_tokens(features, args.ratio, config), args.reference_iterations, 1)
        same = graph(features)[1].tolist() == select_tokens(features, args.ratio, config).indices.tolist()
    import onnx
    import onnxruntime

    with tempfile.TemporaryDirectory() as scratch:
        path = export_pruner(*shape, args.ratio, "fp32", Path(scratch) / "pruner.onnx", config)
        nodes = len(onnx.load(str(path)).graph.node)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {"video_tokens": features.numpy()}
        ort_times = timed(lambda: session.run(None, feed), args.iterations, 3)

    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__}")
    print(f"T={args.frames}, P={args.tokens}, D={args.dim}, fp32, ratio {args.ratio}: K = {graph.keep}; "
          f"rounds {config.rounds}, stride {config.stride}, substeps {config.substeps}, "
          f"chain_steps {config.chain_steps}; "
          f"graph and reference select the same tokens: {same}; pruner.onnx (opset 18): {nodes} nodes\n")
    print(markdown_table(["form", "median ms", "p90 ms", "min ms", "CPU ms (all threads)", "runs", "target"], [
        row("PruningGraph (torch eager)", graph_times, "<= 250 ms"),
        row("reference select_tokens", reference_times, "< 5000 ms"),
        row("pruner.onnx (ONNX Runtime CPU)", ort_times, "-"),
    ]))


if __name__ == "__main__":
    main()
