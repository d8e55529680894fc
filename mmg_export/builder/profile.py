"""``mmg-export profile``: per-component latency of an artifact directory through Polygraphy.

TensorRT engines run in Polygraphy's ``TrtRunner``; ONNX models in its ``OnnxrtRunner`` with the
CUDA provider where this onnxruntime has it, else the CPU. With several ``--ratios``, a pruner
is exported (and built, for TensorRT) per extra ratio in a scratch directory, so the table and
the plot show how pruning cost moves with the budget. Times are Polygraphy's per-inference
host wall clock (host<->device copies included), median and p90 over ``--iterations`` runs
after ``--warm-up`` runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mmg_runtime.device import device_info
from mmg_runtime.errors import UserError
from mmg_runtime.manifest import Manifest, verify_artifacts

MAX_ITERATIONS = 100_000
"""Upper bound of --iterations and --warm-up: a typo such as 1000000000 must not run for days."""

HOST_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64}
"""NumPy dtype of each manifest tensor dtype."""


@dataclass
class Measurement:
    component: str
    ratio: float | None
    keep: int | None
    median_ms: float
    p90_ms: float
    iterations: int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("profile", help="measure per-component latency with Polygraphy",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", type=Path, help="artifact directory from mmg-export build")
    parser.add_argument("--ratios", default=None, help="comma-separated pruning ratios (default: the artifacts')")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--warm-up", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write the measurements here (default: print)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="PNG of latency against ratio (default with several ratios: ./profile.png)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    check_counts(args.iterations, args.warm_up)
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path is not None:
            check_writable(path, flag)
    from polygraphy.logger import G_LOGGER

    G_LOGGER.severity = G_LOGGER.WARNING
    manifest = verify_artifacts(args.artifacts)
    ratios = parse_ratios(args.ratios, manifest.ratio)
    backend, device = describe_backend(manifest)
    print(f"profiling {args.artifacts} with {backend} on {device}", file=sys.stderr)
    results = profile(args.artifacts, manifest, ratios, args.iterations, args.warm_up)
    print(format_table(results))
    report = {"artifacts": str(args.artifacts), "backend": backend, "device": device,
              "timing": "Polygraphy host wall clock per inference, copies included",
              "measurements": [asdict(m) for m in results]}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    else:
        print(json.dumps(report, indent=2))
    if len(ratios) > 1:
        plot = args.plot or Path("profile.png")
        plot_latency(results, plot, f"{backend} on {device}")
        print(f"plot: {plot}", file=sys.stderr)
    return 0


def check_counts(iterations: int, warm_up: int) -> None:
    """UserError unless 1 <= iterations <= MAX_ITERATIONS and 0 <= warm_up <= MAX_ITERATIONS."""
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise UserError(f"--iterations {iterations}: expected an integer from 1 to {MAX_ITERATIONS:,}")
    if not 0 <= warm_up <= MAX_ITERATIONS:
        raise UserError(f"--warm-up {warm_up}: expected an integer from 0 to {MAX_ITERATIONS:,}")


def check_writable(path: Path, flag: str) -> None:
    """UserError unless a file can be written at ``path``: checked before the run, not after it."""
    parent = path.parent
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a directory; expected a file name")
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: the directory {parent} does not exist")
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise UserError(f"{flag} {path}: not writable")


def parse_ratios(text: str | None, default: float) -> list[float]:
    """``"0.1,0.25"`` -> [0.1, 0.25]; UserError for anything outside (0, 1]."""
    if text is None:
        return [default]
    try:
        ratios = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--ratios {text}: expected comma-separated numbers such as 0.1,0.25,0.5") from None
    if not ratios or any(not 0 < r <= 1 for r in ratios):
        raise UserError(f"--ratios {text}: every ratio must be in (0, 1]")
    return sorted(set(ratios))


def describe_backend(manifest: Manifest) -> tuple[str, str]:
    """(backend, device) in words, for the report."""
    if manifest.backend == "tensorrt":
        from .tensorrt import require_tensorrt

        tensorrt = require_tensorrt()
        return f"TensorRT {tensorrt.__version__} (Polygraphy TrtRunner)", (manifest.device or {}).get("name", "GPU")
    import onnxruntime

    provider = "CUDA" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "CPU"
    device = platform.processor() or platform.machine()
    if provider == "CUDA":
        device = (device_info() or {}).get("name", "CUDA GPU")
    return f"ONNX Runtime {onnxruntime.__version__} {provider} provider (Polygraphy OnnxrtRunner)", device


def profile(directory: Path, manifest: Manifest, ratios: list[float], iterations: int,
            warm_up: int) -> list[Measurement]:
    """Measure the encoder, the frame encoder and a pruner per ratio."""
    files = {name: directory / manifest.component(name, directory).file
             for name in ("encoder", "frame_encoder", "pruner")}
    results = [_measure(name, files[name], manifest, name, iterations, warm_up)
               for name in ("encoder", "frame_encoder")]
    with tempfile.TemporaryDirectory() as scratch:
        for ratio in ratios:
            path = files["pruner"] if ratio == manifest.ratio else _extra_pruner(manifest, ratio, Path(scratch))
            results.append(_measure("pruner", path, manifest, "pruner", iterations, warm_up, ratio))
    return results


def _extra_pruner(manifest: Manifest, ratio: float, scratch: Path) -> Path:
    from ..prune import MMGConfig
    from .export import export_pruner

    onnx_path = export_pruner(manifest.frames, manifest.tokens_per_frame, manifest.hidden_size, ratio,
                              manifest.precision, scratch / f"pruner-{ratio:g}.onnx",
                              MMGConfig(**manifest.extra.get("pruning", {})))
    if manifest.backend != "tensorrt":
        return onnx_path
    from .targets import manifest_target
    from .tensorrt import build_engine

    engine = scratch / f"pruner-{ratio:g}.engine"
    target = manifest_target(manifest.target, manifest.extra.get("target_file"))
    build_engine(onnx_path, engine, target, scratch / "timing.cache", log=lambda _: None)
    return engine


def runner(path: Path, backend: str):
    """A Polygraphy runner for a TensorRT engine or (on this machine's best provider) an ONNX model."""
    if backend == "tensorrt":
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        return TrtRunner(EngineFromBytes(BytesFromPath(str(path))))
    from polygraphy.backend.onnxrt import OnnxrtRunner

    from .onnxruntime import local_session

    return OnnxrtRunner(local_session(path))


def _measure(name: str, path: Path, manifest: Manifest, spec_name: str, iterations: int, warm_up: int,
             ratio: float | None = None) -> Measurement:
    feeds = random_feeds(manifest, spec_name)
    times = []
    with runner(path, manifest.backend) as active:
        for index in range(warm_up + iterations):
            outputs = active.infer(feeds)
            if index >= warm_up:
                times.append(active.last_inference_time() * 1e3)
    keep = int(outputs["kept_indices"].shape[0]) if "kept_indices" in outputs else None
    return Measurement(name, ratio, keep, float(np.median(times)), float(np.percentile(times, 90)), iterations)


def random_feeds(manifest: Manifest, name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded standard-normal inputs of component ``name``, shaped and typed as the manifest says."""
    generator = np.random.default_rng(seed)
    feeds = {}
    for tensor, spec in manifest.components[name].inputs.items():
        feeds[tensor] = generator.standard_normal(spec.shape).astype(HOST_DTYPES[spec.dtype])
    return feeds


def format_table(results: list[Measurement]) -> str:
    lines = ["| component | ratio | K | median ms | p90 ms |", "|---|---|---|---|---|"]
    for m in results:
        ratio = "" if m.ratio is None else f"{m.ratio:g}"
        keep = "" if m.keep is None else str(m.keep)
        lines.append(f"| {m.component} | {ratio} | {keep} | {m.median_ms:.2f} | {m.p90_ms:.2f} |")
    return "\n".join(lines)


def plot_latency(results: list[Measurement], path: Path, title: str) -> Path:
    """PNG: pruner median latency against ratio, with the 32-frame encoder for scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pruners = [m for m in results if m.component == "pruner"]
    encoder = next(m for m in results if m.component == "encoder")
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot([m.ratio for m in pruners], [m.median_ms for m in pruners], "o-", label="pruner (median)")
    axis.axhline(encoder.median_ms, color="gray", linestyle="--", label="encoder, all frames (median)")
    axis.set_xlabel("kept ratio")
    axis.set_ylabel("latency (ms)")
    axis.set_title(title, fontsize=9)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
