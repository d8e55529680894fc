"""Shared helpers of the GPU benchmarks (bench_e2e.py, bench_pruner.py, bench_server.py, bench_cpu.py, gpu_parity.py).

* ``time_cuda_events``: per-iteration CUDA events on the current stream, after warm-up.
* ``time_wall``: host ``perf_counter`` around the call followed by ``torch.cuda.synchronize()``
  (for ONNX Runtime, which runs on its own stream, and for CPU work).
* ``environment()``: card, driver (nvidia-smi), library versions.
* ``markdown_table``: the tables the scripts print and BENCHMARKS.md copies.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]


FOLLOW_UPS = ["Who is in it?", "Where does it take place?", "What colour is the sky?", "Is it day or night?",
              "What happens at the end?", "Is anyone talking?", "How many people are there?", "Is it indoors?",
              "What is moving fastest?", "What happens first?", "Is it raining?"]
"""Follow-up questions the benchmarks ask about one clip (bench_e2e.py's conversations, bench_server.py's turns)."""

def summarize(times_ms: Sequence[float]) -> dict:
    """Median, p90, min and count of a list of milliseconds."""
    ordered = sorted(times_ms)
    p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
    return {"median_ms": statistics.median(ordered), "p90_ms": p90, "min_ms": ordered[0], "runs": len(ordered)}


def time_cuda_events(fn: Callable[[], object], iterations: int, warmup: int) -> dict:
    """Time ``fn`` with a pair of CUDA events per call on the current stream (warm-up excluded)."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    pairs = []
    for _ in range(iterations):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        pairs.append((start, end))
    torch.cuda.synchronize()
    return summarize([s.elapsed_time(e) for s, e in pairs])


def time_wall(fn: Callable[[], object], iterations: int, warmup: int, cuda: bool) -> dict:
    """Time ``fn`` with the host clock; with ``cuda`` each call ends with torch.cuda.synchronize()."""
    import torch

    def call() -> None:
        fn()
        if cuda:
            torch.cuda.synchronize()

    for _ in range(warmup):
        call()
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return summarize(times)


def time_any(fn: Callable[[], object], iterations: int, warmup: int, cuda: bool) -> dict:
    """CUDA events on a GPU, the host clock on the CPU."""
    return time_cuda_events(fn, iterations, warmup) if cuda else time_wall(fn, iterations, warmup, cuda=False)


def cuda_kernels(fn: Callable[[], object], runs: int) -> list[tuple[float, float, str]]:
    """GPU work of ``runs`` calls of ``fn``, from CUPTI via torch.profiler: (ms per call, launches per
    call, name) of every kernel and device copy, longest first."""
    import torch
    from torch.autograd import DeviceType

    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(runs):
            fn()
        torch.cuda.synchronize()
    return sorted(((avg.device_time_total / 1e3 / runs, avg.count / runs, avg.key) for avg in prof.key_averages()
                   if avg.device_type == DeviceType.CUDA), reverse=True)


def add_token_stage_options(parser) -> None:
    """--rounds, --stride, --substeps and --chain-steps: a token stage other than MMGConfig's default."""
    parser.add_argument("--rounds", type=int, default=None, help="token-stage rounds (default: MMGConfig's)")
    parser.add_argument("--stride", type=int, default=None, help="pick groups per round (default: MMGConfig's)")
    parser.add_argument("--substeps", type=int, default=None,
                        help="steps per group's pick (default: MMGConfig's; 1: the token stage before issue 24)")
    parser.add_argument("--chain-steps", type=int, default=None,
                        help="coverage steps per update (default: MMGConfig's)")


def token_stage_config(parser, args):
    """The MMGConfig that :func:`add_token_stage_options`' arguments ask for; out of range: the
    parser's one-line error (exit 2)."""
    from mmg_export.prune import MMGConfig

    knobs = {knob: getattr(args, knob) for knob in ("rounds", "stride", "substeps", "chain_steps")}
    try:
        return MMGConfig(**{knob: value for knob, value in knobs.items() if value is not None})
    except ValueError as error:
        parser.error(str(error))


def add_pruner_backend_option(parser) -> None:
    """--pruner-backend: the pruner as ``pruner.onnx`` under ONNX Runtime, or as ``pruner.pt2``."""
    parser.add_argument("--pruner-backend", choices=["onnxruntime", "aotinductor"], default="onnxruntime",
                        help="onnxruntime: pruner.onnx (default here); aotinductor: pruner.pt2, what build "
                             "ships for ONNX Runtime artifacts on their own GPU")


def open_pruner(backend: str, shape: tuple[int, int, int], ratio: float, precision: str, config, stem: Path,
                cuda: bool):
    """The pruner for ``video_tokens`` of ``shape`` (T, P, D) opened as the pipeline opens it: ``stem``.onnx
    under ONNX Runtime (TF32 off), or ``stem``.pt2 compiled by AOTInductor for this device; on a GPU
    replayed as one CUDA graph. config: an MMGConfig (None: the default)."""
    from mmg_export.builder.export import IO_DTYPES, export_pruner
    from mmg_export.builder.pipeline import pruner_specs
    from mmg_export.prune.config import keep_count
    from mmg_runtime.aotinductor import AotiPackage
    from mmg_runtime.sessions import OrtSession

    frames, tokens, dim = shape
    if backend == "aotinductor":
        from mmg_export.builder.aotinductor import compile_pruner

        device = "cuda" if cuda else "cpu"
        path = compile_pruner(*shape, ratio, precision, stem.with_suffix(".pt2"), config, device=device)
        specs = pruner_specs(*shape, keep_count(frames * tokens, ratio), IO_DTYPES[precision])
        return AotiPackage(path, *specs, device, cuda_graph=cuda)
    path = export_pruner(*shape, ratio, precision, stem.with_suffix(".onnx"), config)
    providers = [["CUDAExecutionProvider", {"use_tf32": "0"}]] if cuda else []
    return OrtSession(path, providers + [["CPUExecutionProvider", {}]], cuda_graph=cuda)


def make_video(frames: int, tokens: int, dim: int, seed: int):
    """Video-like fp32 features (T, P, D): a few scenes (one every 8 frames) of per-token prototypes
    sharing a scene component, with per-frame drift, so that segments, budgets and ranks all vary."""
    import torch

    g = torch.Generator().manual_seed(seed)
    scenes = max(1, frames // 8)
    scene_of = (torch.arange(frames) * scenes) // frames
    common = torch.randn(scenes, 1, dim, generator=g)
    proto = torch.randn(scenes, tokens, dim, generator=g)
    x = (0.6 * common + proto)[scene_of]
    x += 0.35 * torch.randn(frames, tokens, dim, generator=g)
    x *= torch.linspace(0.5, 1.5, frames).view(frames, 1, 1) ** 0.5
    return x


def ort_profile_summary(profile_file: str, skip_runs: int = 1) -> dict:
    """Nodes per execution provider and the op types that take most kernel time, from an ONNX
    Runtime profile; the first ``skip_runs`` runs (warm-up) are left out of the times."""
    events = json.loads(Path(profile_file).read_text())
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    cutoff = runs[skip_runs - 1]["ts"] + runs[skip_runs - 1]["dur"] if 0 < skip_runs <= len(runs) else -1
    timed_runs = max(1, len(runs) - max(0, skip_runs))
    providers: dict[str, set] = {}
    per_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        args = event.get("args", {})
        provider = args.get("provider", "?")
        providers.setdefault(provider, set()).add(event["name"])
        if event["ts"] <= cutoff:
            continue
        op = f"{args.get('op_name', '?')}@{provider.replace('ExecutionProvider', '')}"
        per_op[op] = per_op.get(op, 0.0) + event.get("dur", 0) / 1e3 / timed_runs
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:12]
    return {"timed_runs": timed_runs,
            "model_run_ms": [round(r["dur"] / 1e3, 3) for r in runs],
            "nodes_per_provider": {k: len(v) for k, v in providers.items()},
            "cpu_nodes": sorted({n.replace("_kernel_time", "") for n in providers.get("CPUExecutionProvider", set())})[:40],
            "top_ops_ms_per_run": [(name, round(ms, 4)) for name, ms in top]}


def nvidia_smi() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        return out.stdout.strip() or out.stderr.strip()
    except (OSError, subprocess.SubprocessError) as error:
        return f"nvidia-smi unavailable ({error.__class__.__name__})"


def environment() -> dict:
    """Card, driver and library versions."""
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "host": platform.node()}
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name(0)
        env["nvidia_smi"] = nvidia_smi()
        props = torch.cuda.get_device_properties(0)
        env["sms"] = props.multi_processor_count
    else:
        env["device"] = f"CPU only ({platform.processor() or platform.machine()}, {os.cpu_count()} threads)"
    for name in ("transformers", "onnxruntime", "onnx", "onnxscript", "triton"):
        try:
            module = __import__(name)
            env[name] = getattr(module, "__version__", "?")
        except Exception as error:  # noqa: BLE001 - report whatever stops the import
            env[name] = f"not importable ({error.__class__.__name__})"
    try:
        import onnxruntime

        env["ort_providers"] = ",".join(onnxruntime.get_available_providers())
    except Exception:  # noqa: BLE001
        pass
    return env


def print_environment(env: dict) -> None:
    print("## Environment")
    for key, value in env.items():
        print(f"- {key}: {value}")
    print()


def fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(cell) for cell in row) + " |")
    return "\n".join(lines)


def write_json(path: str | None, payload: dict) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2, default=str))
