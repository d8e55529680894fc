"""``mmg-export profile``: per-component latency of an artifact directory, on exactly what ``run`` runs.

Every component is opened through the runtime's own code path
(:func:`mmg_runtime.pipeline.open_component`: the manifest's ONNX Runtime providers, the pruner
with its CUDA graph, or the TensorRT engines) and runs on buffers allocated on its device and
bound by address, as the pipeline binds them:

    upload      N frames (N, H, W, 3) uint8, host -> device, a frame at a time as run copies them
    preprocess  frames -> pixel values (N, 3, S, S), with the runtime's resampling matrices
    encoder     pixel values -> video tokens (N, P, D)
    pruner      video tokens (T, P, D) -> video embeds (K + 1, D), kept indices (K,), finite   per ratio
    download    kept indices (K,) int64, device -> host                                     per ratio
    prefill     the LLM's prefill of the K + 1 video embeds and a short question             per ratio

N is the artifacts' frame count T and the runtime's chunk (``CHUNK_FRAMES``); on the CPU the
copies are host copies, as they are in ``run``. Each ratio other than the artifacts' gets a pruner
exported (and, for TensorRT, built) into a scratch directory for this profile.

Timing: every call ends synchronised with the device, so it is timed with the host clock around
the call. ONNX Runtime's Python API has no CUDA events; its runs synchronise their providers
before returning (the default of the run option ``disable_synchronize_execution_providers``, CUDA
graph replays included); the TensorRT ``run_bound`` synchronises its stream after
``execute_async_v3``; the copies are synchronous. Compute rows therefore hold device time plus
launch overhead and no host<->device copies (those are the upload and download rows). The
prefill row is the LLM backend's own prefill time, as ``run`` reports it. Warm-up runs are
excluded from every statistic.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmg_runtime.device import device_info
from mmg_runtime.errors import UserError
from mmg_runtime.manifest import Manifest

if TYPE_CHECKING:
    from mmg_runtime.llm.hf import TransformersBackend

MAX_ITERATIONS = 100_000
"""Upper bound of --iterations and --warm-up: a typo such as 1000000000 must not run for days."""
COMPONENTS = ("upload", "preprocess", "encoder", "pruner", "download", "prefill")
"""Row order of the table, the report and the plot."""
STATISTICS = ("min", "median", "mean", "p90", "p99")
LIBRARIES = ("numpy", "onnxruntime", "tensorrt", "polygraphy", "torch", "transformers")
"""Library versions the report records (those installed)."""
QUESTION = "What happens in this video?"
"""The short question of the prefill rows."""
TIMING = ("host clock (time.perf_counter) around each call; every call ends synchronised with the device "
          "(ONNX Runtime exposes no CUDA events and synchronises its providers before a run returns; the TensorRT "
          "run synchronises its stream; copies are synchronous). Compute rows bind device buffers, so they hold "
          "no host<->device copies: those are the upload and download rows. prefill is the LLM backend's own "
          "prefill time, as run reports it. Warm-up runs excluded.")
EXPORT_HINT = "pip install 'mmg-export[export]'"


@dataclass
class Measurement:
    """One row: every timed run (warm-up excluded) of one component at one size, in milliseconds.

    frames: frames per call (upload, preprocess, encoder) or the video's T (pruner, download,
    prefill); ratio and keep (K) for the rows that depend on the pruning budget.
    """

    component: str
    frames: int
    ratio: float | None
    keep: int | None
    runs_on: str
    times_ms: list[float]

    def statistics(self) -> dict[str, float]:
        """min / median / mean / p90 / p99 of ``times_ms`` (linear-interpolated percentiles)."""
        times = np.asarray(self.times_ms, dtype=np.float64)
        median, p90, p99 = np.percentile(times, [50, 90, 99])
        return {"min": float(times.min()), "median": float(median), "mean": float(times.mean()),
                "p90": float(p90), "p99": float(p99)}

    def label(self) -> str:
        """``encoder 32f`` or ``pruner r0.25``: the row's name in progress lines and the plot."""
        return f"{self.component} r{self.ratio:g}" if self.ratio is not None else f"{self.component} {self.frames}f"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("profile", help="measure per-component latency on what run runs",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", type=Path, help="artifact directory from mmg-export build")
    parser.add_argument("--ratios", default=None,
                        help="comma-separated pruning ratios (default: the artifacts'); other ratios export a "
                             "pruner for the profile, which needs the export extra")
    parser.add_argument("--iterations", type=int, default=20, help="timed runs per row (default 20)")
    parser.add_argument("--warm-up", type=int, default=3, help="untimed runs before them (default 3)")
    parser.add_argument("--frame-size", default="1280x720", metavar="WIDTHxHEIGHT",
                        help="size of the decoded frames that are uploaded and preprocessed (default 1280x720)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="write the report here: artifacts, versions, GPU, method, every run's time")
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE",
                        help="write a PNG: spread per component; the pruner and prefill against ratio "
                             "with several --ratios (needs matplotlib: the export extra)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    check_counts(args.iterations, args.warm_up)
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path is not None:
            check_writable(path, flag)
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise UserError(f"--plot needs matplotlib, which this install lacks: {EXPORT_HINT}")
    frame_size = parse_frame_size(args.frame_size)
    from mmg_runtime.manifest import verify_artifacts
    from mmg_runtime.pipeline import this_machine

    manifest = verify_artifacts(args.artifacts, **this_machine())
    ratios = parse_ratios(args.ratios, manifest.ratio)
    exported = check_extra_ratios(ratios, manifest.ratio)
    llm, note = load_llm(args.artifacts, manifest)
    if note:
        print(f"note: {note}", file=sys.stderr)
    notes = [note] if note else []
    if exported:
        notes.append(f"pruners at ratio {', '.join(f'{r:g}' for r in exported)} exported for this profile "
                     f"(the artifacts' pruner keeps {manifest.ratio:g})")
    timer = Timer(args.iterations, args.warm_up, rows=row_count(manifest.frames, ratios, llm is not None))
    print(f"profiling {args.artifacts}: {manifest.backend}, {manifest.precision}, {manifest.frames} frames, "
          f"frames of {frame_size[1]}x{frame_size[0]}, {args.warm_up} warm-up + {args.iterations} timed runs per row",
          file=sys.stderr)
    measurements, components = profile(args.artifacts, manifest, ratios, frame_size, timer, llm)
    print(format_table(measurements))
    gpu = device_info()
    if args.json:
        report = make_report(args, manifest, frame_size, components, measurements, notes, gpu)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        runs_on = components["encoder"]["providers"][0]
        where = f", {gpu['name']}" if gpu and runs_on != "CPUExecutionProvider" else ""
        plot_latency(measurements, args.plot, f"{args.artifacts.name}: {runs_on}, {manifest.precision}{where}")
    return 0


# -- arguments, checked before anything runs ---------------------------------------------------------
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


def parse_frame_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` (width x height, as video sizes are written) -> (height, width) = (720, 1280)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None or min(int(match[1]), int(match[2])) < 1:
        raise UserError(f"--frame-size {text}: expected WIDTHxHEIGHT in pixels, such as 1280x720")
    return int(match[2]), int(match[1])


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


def check_extra_ratios(ratios: list[float], built: float) -> list[float]:
    """The ratios other than the artifacts' (each needs a pruner export); UserError if torch is missing."""
    extra = [ratio for ratio in ratios if ratio != built]
    if extra and importlib.util.find_spec("torch") is None:
        raise UserError(f"--ratios {','.join(f'{r:g}' for r in extra)}: ratios other than the artifacts' {built:g} "
                        f"export a pruner, and exporting needs torch, which this install lacks: {EXPORT_HINT}")
    return extra


# -- measuring --------------------------------------------------------------------------------------
class Timer:
    """Times callables: ``warm_up`` untimed calls, then ``iterations`` timed ones; a progress line
    on stderr per row (``-q`` silences it)."""

    def __init__(self, iterations: int, warm_up: int, rows: int) -> None:
        self.iterations, self.warm_up, self.rows, self.done = iterations, warm_up, rows, 0

    def measure(self, component: str, frames: int, runs_on: str, call: Callable[[], float | None],
                ratio: float | None = None, keep: int | None = None) -> Measurement:
        """``call`` runs the work once and returns its own seconds, or None to be timed by the host clock."""
        self.done += 1
        row = Measurement(component, frames, ratio, keep, runs_on, [])
        print(f"[{self.done}/{self.rows}] {row.label()}: {self.warm_up} warm-up + {self.iterations} timed runs",
              file=sys.stderr, flush=True)
        for _ in range(self.warm_up):
            call()
        for _ in range(self.iterations):
            start = time.perf_counter()
            seconds = call()
            row.times_ms.append(1e3 * (time.perf_counter() - start if seconds is None else seconds))
        return row


def frame_counts(frames: int) -> list[int]:
    """Frames per call of the upload, preprocess and encoder rows: the video's T and the runtime's chunk."""
    from mmg_runtime.pipeline import CHUNK_FRAMES

    return sorted({frames, min(frames, CHUNK_FRAMES)}, reverse=True)


def row_count(frames: int, ratios: list[float], prefill: bool) -> int:
    """Rows :func:`profile` measures (for the progress lines)."""
    return 3 * len(frame_counts(frames)) + (3 if prefill else 2) * len(ratios)


def profile(directory: Path, manifest: Manifest, ratios: list[float], frame_size: tuple[int, int], timer: Timer,
            llm: TransformersBackend | None = None) -> tuple[list[Measurement], dict[str, dict]]:
    """Measure every component of the artifacts on frames of ``frame_size`` (height, width), and the
    prefill of ``llm`` where given.

    Returns the measurements in :data:`COMPONENTS` order and, per component, its backend and the
    providers or engine that ran it.
    """
    from mmg_runtime.pipeline import open_component
    from mmg_runtime.preprocess import Preprocessor

    with contextlib.ExitStack() as stack:
        preprocess = _closing(stack, open_component(manifest, directory, "preprocess"))
        encoder = _closing(stack, open_component(manifest, directory, "encoder"))
        preprocessor = Preprocessor(preprocess, int(manifest.extra["image_size"]))
        tokens = encoder.empty((manifest.frames, manifest.tokens_per_frame, manifest.hidden_size),
                               manifest.components["encoder"].outputs["video_tokens"].dtype)
        results = measure_encoding(manifest, preprocessor, encoder, frame_size, tokens, timer)
        components = {"preprocess": _component(manifest, preprocess), "encoder": _component(manifest, encoder)}
        prefill = None if llm is None else _Prefill(llm, directory, manifest)
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mmg-profile-")))
        for ratio, pruner in _pruners(directory, manifest, ratios, scratch):
            _closing(stack, pruner)
            results += measure_pruning(manifest, pruner, tokens, ratio, timer, prefill)
            components["pruner"] = _component(manifest, pruner)
    if llm is not None:
        components["llm"] = {"backend": llm.name, "providers": [_llm_runs_on(llm)]}
    results.sort(key=lambda m: (COMPONENTS.index(m.component), m.ratio or 0.0, -m.frames))
    return results, components


def measure_encoding(manifest: Manifest, preprocessor, encoder, frame_size: tuple[int, int], tokens,
                     timer: Timer) -> list[Measurement]:
    """upload, preprocess and encoder rows at each of :func:`frame_counts`, writing ``tokens (T, P, D)``."""
    from mmg_runtime.tensor import Tensor

    frames, size, (height, width) = manifest.frames, preprocessor.size, frame_size
    decoded = np.random.default_rng(0).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    host_frames = [Tensor.from_numpy(frame) for frame in decoded]
    device_frames = encoder.empty((frames, height, width, 3), "uint8")
    pixels = encoder.empty((frames, 3, size, size), tokens.dtype)
    copy = "host copy" if encoder.device == "cpu" else "cudaMemcpy host->device"
    counts = frame_counts(frames)
    results = [timer.measure("upload", n, copy, _upload(host_frames[:n], device_frames)) for n in counts]
    results += [timer.measure("preprocess", n, _runs_on(preprocessor.session),
                              _bound(preprocessor, device_frames.rows(0, n), pixels.rows(0, n))) for n in counts]
    results += [timer.measure("encoder", n, _runs_on(encoder), _bound(
        encoder.run_bound, {"pixel_values": pixels.rows(0, n)}, {"video_tokens": tokens.rows(0, n)})) for n in counts]
    return results


def measure_pruning(manifest: Manifest, pruner, tokens, ratio: float, timer: Timer,
                    prefill: _Prefill | None) -> list[Measurement]:
    """pruner, download (and prefill) rows of one pruner over ``tokens (T, P, D)``."""
    keep, hidden = int(pruner.outputs["kept_indices"][0][0]), manifest.hidden_size
    outputs = {"video_embeds": pruner.empty((keep + 1, hidden), tokens.dtype),
               "kept_indices": pruner.empty((keep,), "int64"), "finite": pruner.empty(pruner.outputs["finite"][0], "bool")}
    copy = "host copy" if pruner.device == "cpu" else "cudaMemcpy device->host"
    frames = manifest.frames
    results = [timer.measure("pruner", frames, _runs_on(pruner),
                             _bound(pruner.run_bound, {"video_tokens": tokens}, outputs), ratio, keep),
               timer.measure("download", frames, copy, _bound(outputs["kept_indices"].numpy), ratio, keep)]
    if prefill is not None:
        results.append(timer.measure("prefill", frames, _llm_runs_on(prefill.llm), prefill.of(outputs["video_embeds"]),
                                     ratio, keep))
    return results


def _closing(stack: contextlib.ExitStack, session):
    """``session``, closed when ``stack`` closes if it has ``close`` (TensorRT engines)."""
    if hasattr(session, "close"):
        stack.callback(session.close)
    return session


def _upload(frames: list, device_frames) -> Callable[[], None]:
    """Copy each host frame into its row of ``device_frames``, one synchronous copy per frame (as run does)."""

    def upload() -> None:
        for index, frame in enumerate(frames):
            device_frames.rows(index, index + 1).copy_from(frame)

    return upload


def _bound(function: Callable, *arguments) -> Callable[[], None]:
    """``function(*arguments)``, returning None: timed by the host clock."""

    def call() -> None:
        function(*arguments)

    return call


class _Prefill:
    """The LLM's prefill of :data:`QUESTION` with a video's embeddings, as run prompts it."""

    def __init__(self, llm: TransformersBackend, directory: Path, manifest: Manifest) -> None:
        from mmg_runtime.prompt import load_tokenizer, video_question_ids

        self.llm = llm
        self.question = video_question_ids(load_tokenizer(directory / "tokenizer"), QUESTION)
        self.video_token_id = int(manifest.extra["video_token_id"])

    def of(self, video_embeds) -> Callable[[], float]:
        """One prefill (``generate`` of one token) with ``video_embeds (K + 1, D)``; returns the backend's
        own prefill seconds."""
        from mmg_runtime.llm.base import VideoPrompt

        prompt = VideoPrompt(self.question, self.video_token_id, video_embeds)

        def call() -> float:
            return self.llm.generate(prompt, 1).prefill_s

        return call


def _pruners(directory: Path, manifest: Manifest, ratios: list[float], scratch: Path) -> Iterator[tuple[float, object]]:
    """(ratio, pruner opened as the pipeline opens it) per ratio, one at a time; ratios other than the
    artifacts' are exported (and built, for TensorRT) into ``scratch``."""
    from mmg_runtime.pipeline import open_component, open_model

    for ratio in ratios:
        if ratio == manifest.ratio:
            yield ratio, open_component(manifest, directory, "pruner", cuda_graph=True)
        elif manifest.extra.get("pruner_backend") == "aotinductor":
            from mmg_runtime.aotinductor import open_package

            from ..prune.config import keep_count

            keep = keep_count(manifest.frames * manifest.tokens_per_frame, ratio)
            yield ratio, open_package(_extra_pruner(manifest, ratio, scratch), manifest, cuda_graph=True, keep=keep)
        else:
            yield ratio, open_model(manifest, _extra_pruner(manifest, ratio, scratch), cuda_graph=True)


def _extra_pruner(manifest: Manifest, ratio: float, scratch: Path) -> Path:
    """The artifacts' pruner at another ``ratio``: ONNX, its TensorRT engine, or its AOTInductor
    package (needs torch)."""
    from ..prune import MMGConfig
    from .export import export_pruner

    print(f"      exporting the pruner at ratio {ratio:g}", file=sys.stderr, flush=True)
    if manifest.extra.get("pruner_backend") == "aotinductor":
        from .aotinductor import compile_pruner

        return compile_pruner(manifest.frames, manifest.tokens_per_frame, manifest.hidden_size, ratio,
                              manifest.precision, scratch / f"pruner-{ratio:g}.pt2",
                              MMGConfig(**manifest.extra.get("pruning", {})),
                              device="cpu" if manifest.device is None else "cuda")
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


def load_llm(directory: Path, manifest: Manifest) -> tuple[TransformersBackend | None, str]:
    """(the transformers LLM run uses by default, "") or (None, a one-line note saying why there is none)."""
    if importlib.util.find_spec("torch") is None:
        return None, f"prefill not measured: the transformers LLM needs torch, which this install lacks: {EXPORT_HINT}"
    from mmg_runtime.pipeline import make_llm

    try:
        llm = make_llm("transformers", directory, manifest, None)
    except UserError as error:
        return None, f"prefill not measured: {error}"
    return llm, ""


def _runs_on(session) -> str:
    return ", ".join(session.providers)


def _llm_runs_on(llm: TransformersBackend) -> str:
    dtype = str(llm.model.dtype).removeprefix("torch.")
    return f"transformers on {llm.device} ({dtype})"


def _component(manifest: Manifest, session) -> dict:
    return {"backend": getattr(session, "backend", manifest.backend), "providers": list(session.providers)}


# -- output -------------------------------------------------------------------------------------------
def format_table(measurements: list[Measurement]) -> str:
    """The human table: one row per measurement, milliseconds."""
    header = ["component", "frames", "ratio", "K", *(f"{name} ms" for name in STATISTICS), "runs on"]
    rows = [[m.component, str(m.frames), "" if m.ratio is None else f"{m.ratio:g}",
             "" if m.keep is None else str(m.keep), *(f"{v:.3f}" for v in m.statistics().values()), m.runs_on]
            for m in measurements]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i in (0, len(header) - 1) else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in [header, *rows])


def make_report(args: argparse.Namespace, manifest: Manifest, frame_size: tuple[int, int], components: dict,
                measurements: list[Measurement], notes: list[str], gpu: dict | None) -> dict:
    """The ``--json`` report: what was measured, on what, how, and every run's time; ``gpu`` is
    :func:`mmg_runtime.device.device_info` (None without a GPU)."""
    from mmg_runtime.pipeline import CHUNK_FRAMES

    return {
        "artifacts": str(args.artifacts), "backend": manifest.backend, "precision": manifest.precision,
        "frames": manifest.frames, "tokens_per_frame": manifest.tokens_per_frame,
        "hidden_size": manifest.hidden_size, "ratio": manifest.ratio, "keep": manifest.keep,
        "frame_size": {"height": frame_size[0], "width": frame_size[1]}, "chunk_frames": CHUNK_FRAMES,
        "iterations": args.iterations, "warm_up": args.warm_up, "components": components,
        "versions": library_versions(), "gpu": gpu,
        "host": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "timing": TIMING, "notes": notes,
        "measurements": [{**asdict(m), "statistics_ms": m.statistics()} for m in measurements],
    }


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Python and every library of ``names`` that is installed (torch's without importing it; as the
    module reports it once imported, with its local build such as +cu130)."""
    versions = {"python": platform.python_version()}
    for name in names:
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            continue
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # onnxruntime-gpu, JetPack's tensorrt: another distribution name
            versions[name] = str(importlib.import_module(name).__version__)
    if getattr(sys.modules.get("torch"), "__version__", None):  # imported (None: blocked)
        versions["torch"] = sys.modules["torch"].__version__
    return versions


def plot_latency(measurements: list[Measurement], path: Path, title: str) -> Path:
    """PNG: a box per row (whiskers min to p99); with several ratios, the pruner and prefill against ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_ratio = {c: [m for m in measurements if m.component == c and m.ratio is not None] for c in ("pruner", "prefill")}
    several = len(by_ratio["pruner"]) > 1
    widths = [max(6.0, 0.5 * len(measurements))] + ([6.0] if several else [])
    figure, axes = plt.subplots(1, len(widths), figsize=(sum(widths), 5), squeeze=False,
                                gridspec_kw={"width_ratios": widths})
    spread = axes[0][0]
    spread.boxplot([m.times_ms for m in measurements], whis=(0, 99))
    spread.set_xticks(range(1, len(measurements) + 1), [m.label() for m in measurements], rotation=45,
                      ha="right", fontsize=8)
    spread.set_yscale("log")
    spread.set_ylabel("latency (ms), log scale")
    spread.set_title("spread per component (box: quartiles, whiskers: min to p99)", fontsize=9)
    if several:
        against = axes[0][1]
        for component, rows in by_ratio.items():
            if rows:
                medians = [m.statistics()["median"] for m in rows]
                low = [median - m.statistics()["min"] for m, median in zip(rows, medians)]
                high = [m.statistics()["p99"] - median for m, median in zip(rows, medians)]
                against.errorbar([m.ratio for m in rows], medians, yerr=[low, high], marker="o", capsize=3,
                                 label=f"{component} (median, min to p99)")
        against.set_yscale("log")
        against.set_xlabel("kept ratio")
        against.set_ylabel("latency (ms), log scale")
        against.set_title("against the pruning ratio", fontsize=9)
        against.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
