#!/usr/bin/env python3
"""The pruner as deployed: ``pruner.onnx`` under ONNX Runtime's CUDA provider, bound on the device and
replayed as one CUDA graph (what ``Pipeline.prune`` runs), against PyTorch eager of the same graph.

For each --frames and --dtypes: the exported pruner (``export_pruner``, the graph the artifacts hold)
opened with ``mmg_runtime.sessions.OrtSession`` exactly as the pipeline opens it, inputs and outputs
bound to device tensors; timed with the host clock around each synchronous run (ONNX Runtime waits
for the GPU before returning). Eager: CUDA events. Medians over --iterations after --warmup, on
video-like features (``make_video``); "same idx" compares the deployed graph's kept indices with
eager's on the same input. --profile adds the GPU kernel time of the deployed runs (CUPTI through
torch.profiler: ONNX Runtime's own profile times kernel launches on the host, not the GPU).
--rounds, --stride, --substeps and --chain-steps time a token stage of that many rounds, pick groups,
steps per pick and coverage steps instead of the default (the quality trade-off of ``docs/quality.md``'s
ablation; --substeps 1 is the token stage before issue 24; ``build --reach 3`` is --chain-steps 3 --stride 6). --pruner-backend aotinductor times ``pruner.pt2`` instead (what
``build`` ships for ONNX Runtime artifacts on their own GPU: the same module compiled by TorchInductor for this
device, opened as ``mmg_runtime.aotinductor.AotiPackage``, bound, one CUDA graph).

GPU:   python scripts/bench_pruner.py --out-dir $OUT
Smoke: python scripts/bench_pruner.py --smoke      (tiny sizes on the CPU)
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _bench_common import (add_pruner_backend_option, add_token_stage_options, cuda_kernels, environment,
                           make_video, markdown_table, open_pruner, print_environment, time_any,
                           token_stage_config, write_json)

import numpy as np
import torch

from mmg_export.builder.export import IO_DTYPES, torch_dtype
from mmg_export.prune import MMGConfig, PruningGraph
from mmg_runtime.aotinductor import AotiPackage
from mmg_runtime.sessions import OrtSession
from mmg_runtime.tensor import Tensor


def device_tokens(session: OrtSession | AotiPackage, features: torch.Tensor, dtype: str) -> Tensor:
    """``features`` as a ``dtype`` tensor on the session's device (bfloat16 through its bit patterns)."""
    if dtype != "bfloat16":
        return session.upload(features.float().numpy().astype(dtype))
    bits = features.to(torch.bfloat16).contiguous().view(torch.int16).numpy()
    tensor = session.empty(tuple(bits.shape), "bfloat16")
    tensor.copy_from(Tensor.from_numpy(bits.view(np.float16)))
    return tensor


def measure(args, config: MMGConfig, frames: int, precision: str, scratch: Path, cuda: bool) -> dict:
    dtype = IO_DTYPES[precision]
    keep = int(np.floor(args.ratio * frames * args.tokens + 0.5))
    session = open_pruner(args.pruner_backend, (frames, args.tokens, args.dim), args.ratio, precision, config,
                          scratch / f"pruner-{frames}-{precision}", cuda)
    features = make_video(frames, args.tokens, args.dim, seed=frames)
    inputs = {"video_tokens": device_tokens(session, features, dtype)}
    outputs = {"video_embeds": session.empty((keep + 1, args.dim), dtype),
               "kept_indices": session.empty((keep,), "int64"), "finite": session.empty((1,), "bool")}
    deployed = time_any(lambda: session.run_bound(inputs, outputs), args.iterations, args.warmup, False)
    graph = PruningGraph(frames, args.tokens, args.dim, args.ratio, config).to("cuda" if cuda else "cpu")
    on_device = features.to("cuda" if cuda else "cpu", torch_dtype(precision))
    with torch.no_grad():
        eager = time_any(lambda: graph(on_device), args.iterations, args.warmup, cuda)
        _, expected = graph(on_device)
    row = {"frames": frames, "precision": precision, "rounds": config.rounds, "stride": config.stride,
           "substeps": config.substeps, "chain_steps": config.chain_steps, "K": keep,
           "deployed_ms": deployed["median_ms"], "deployed_p90_ms": deployed["p90_ms"], "eager_ms": eager["median_ms"],
           "providers": session.providers,
           "same_idx": outputs["kept_indices"].numpy().tolist() == expected.cpu().tolist()}
    if args.profile and cuda:
        row["profile"] = kernel_profile(session, inputs, outputs)
    return row


def kernel_profile(session: OrtSession | AotiPackage, inputs: dict, outputs: dict, runs: int = 5) -> dict:
    """GPU kernel time of ``runs`` deployed runs (CUDA graph replays), from CUPTI via torch.profiler:
    how long the GPU is busy per run, how many kernels, and the kernels that take longest."""
    kernels = cuda_kernels(lambda: session.run_bound(inputs, outputs), runs)
    return {"gpu_busy_ms_per_run": round(sum(k[0] for k in kernels), 3),
            "kernels_per_run": round(sum(k[1] for k in kernels)),
            "top_kernels": [(round(ms, 4), count, name[:100]) for ms, count, name in kernels[:12]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--tokens", type=int, default=196)
    parser.add_argument("--dim", type=int, default=3584)
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    add_token_stage_options(parser)
    add_pruner_backend_option(parser)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    args = parser.parse_args()
    config = token_stage_config(parser, args)
    cuda = torch.cuda.is_available() and not args.smoke
    if args.smoke:
        args.frames, args.dim, args.dtypes, args.iterations, args.warmup = [4], 64, ["fp32"], 3, 1
    env = environment()
    print_environment(env)
    with tempfile.TemporaryDirectory() as scratch:
        rows = [measure(args, config, frames, precision, Path(scratch), cuda) for frames in args.frames
                for precision in args.dtypes]
    columns = {"frames": "frames", "precision": "precision", "rounds": "rounds", "stride": "stride",
               "substeps": "substeps", "chain_steps": "chain steps", "K": "K",
               "deployed_ms": "deployed (bound; on a GPU one CUDA graph) ms", "deployed_p90_ms": "p90 ms",
               "eager_ms": "eager ms", "same_idx": "same idx", "providers": "runs on"}
    print(markdown_table(list(columns.values()), [[r[key] for key in columns] for r in rows]))
    for row in rows:
        if "profile" in row:
            profile = row["profile"]
            print(f"\n{row['frames']} frames {row['precision']}: GPU busy {profile['gpu_busy_ms_per_run']} ms per run, "
                  f"{profile['kernels_per_run']} kernels; longest (ms per run, launches, kernel):")
            for kernel in profile["top_kernels"]:
                print(f"  {kernel[0]:.4f}  x{kernel[1]:g}  {kernel[2]}")
    if args.out_dir:
        write_json(str(Path(args.out_dir) / "pruner.json"), {"env": env, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
