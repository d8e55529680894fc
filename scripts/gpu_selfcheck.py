#!/usr/bin/env python3
"""On a CUDA machine: the exported pruner under ONNX Runtime's CUDA provider, and the whole
runtime on the GPU with bf16 artifacts.

    python scripts/gpu_selfcheck.py [--clip bikes.mp4]

1. pruner.onnx (T=32, P=196, D=3584) in fp32 and bf16 under ONNX Runtime CUDA (TF32 off), against
   the torch PruningGraph on the GPU in the same dtype and, for fp32, the reference on the CPU;
2. ``mmg-export build --target h100 --backend onnxruntime`` (bf16) of the tiny model, then
   ``Pipeline.ask`` on a real clip with the transformers LLM on the GPU, then
   ``mmg-export profile`` of those artifacts (ONNX Runtime CUDA) into ``--out-dir``.
Prints one line per check.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from mmg_export import PruningGraph, select_tokens
from mmg_export.builder.export import export_pruner, torch_dtype
from mmg_export.builder.onnxruntime import local_session
from mmg_export.cli import main as cli


def check_pruner(precision: str, scratch: Path) -> None:
    """ONNX Runtime CUDA against the torch graph on the GPU (and, for fp32, the CPU reference)."""
    shape = (32, 196, 3584)
    features = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    session = local_session(export_pruner(*shape, 0.25, precision, scratch / f"pruner-{precision}.onnx"))
    ort_indices = session.run(["kept_indices"], {"video_tokens": features.numpy()})[0]
    with torch.no_grad():
        _, torch_indices = PruningGraph(*shape, ratio=0.25).cuda()(features.to(torch_dtype(precision)).cuda())
    torch_indices = torch_indices.cpu().numpy()
    overlap = len(np.intersect1d(ort_indices, torch_indices)) / len(ort_indices)
    line = (f"pruner {precision} under ONNX Runtime {session.get_providers()[0]}: K = {len(ort_indices)}, "
            f"identical to torch CUDA {precision}: {np.array_equal(ort_indices, torch_indices)} (overlap {overlap:.4f})")
    if precision == "fp32":
        line += f", identical to the CPU reference: {np.array_equal(ort_indices, select_tokens(features, 0.25).indices.numpy())}"
    print(line, flush=True)


def check_runtime(clip: str, scratch: Path, out_dir: Path) -> None:
    from mmg_runtime.pipeline import Pipeline

    out = scratch / "h100-bf16"
    assert cli(["build", "--target", "h100", "--backend", "onnxruntime", "--out", str(out)]) == 0
    pipeline = Pipeline.from_artifacts(out)
    print("providers:", pipeline.encoder.providers, "| LLM device:", pipeline.llm.device)
    answer = pipeline.ask(clip, "What happens in this video?", max_new_tokens=8)
    print(f"runtime bf16 on GPU: {len(answer.token_ids)} tokens, answer {answer.text!r}\n{answer.timings.table()}")
    out_dir.mkdir(parents=True, exist_ok=True)
    assert cli(["profile", str(out), "--ratios", "0.1,0.25,0.5", "--iterations", "50", "--json",
                str(out_dir / "profile.json"), "--plot", str(out_dir / "profile.png")]) == 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", required=True)
    parser.add_argument("--out-dir", type=Path, default=Path("gpu-selfcheck"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    with tempfile.TemporaryDirectory() as scratch:
        for precision in ("fp32", "bf16"):
            try:
                check_pruner(precision, Path(scratch))
            except Exception as error:  # report and go on to the next check
                print(f"pruner {precision}: FAILED: {type(error).__name__}: {str(error)[:400]}")
        check_runtime(args.clip, Path(scratch), args.out_dir)
