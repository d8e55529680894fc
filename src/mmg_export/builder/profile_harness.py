"""Timing harness of ``mmg-export profile``: every component opened as ``run`` opens it and timed
on buffers bound as the pipeline binds them; pruners at other ratios exported for the profile.

Timing: every call ends synchronised with the device, so it is timed with the host clock around
the call. ONNX Runtime's Python API has no CUDA events; its runs synchronise their providers
before returning (the default of the run option ``disable_synchronize_execution_providers``, CUDA
graph replays included); the TensorRT ``run_bound`` synchronises its stream after
``execute_async_v3``; the copies are synchronous. Compute rows therefore hold device time plus
launch overhead and no host<->device copies (those are the upload and download rows). The
prefill row is the LLM backend's own prefill time, as ``run`` reports it. Warm-up runs are
excluded from every statistic.

Order: each timed call follows, untimed, the stage that precedes it in ``run`` (upload -> preprocess
-> encoder -> pruner -> download -> prefill), as it does there: on the CPU the sessions share the
cores, and a stage run right after another pays for the other's worker threads still spinning and
its evicted caches (on 2 cores the tiny model's prefill right after the pruner takes several times
its back-to-back time; BENCHMARKS.md). Timed back to back, rows would report a machine the pipeline
never runs on.
"""
from __future__ import annotations

import contextlib
import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmg_runtime.errors import UserError
from mmg_runtime.manifest import Manifest
from mmg_runtime.tensorrt import FLAVOURS

if TYPE_CHECKING:
    from mmg_runtime.llm.hf import TransformersBackend

COMPONENTS = ("upload", "preprocess", "encoder", "pruner", "download", "prefill")
"""Row order of the table, the report and the plot."""
QUESTION = "What happens in this video?"
"""The short question of the prefill rows."""
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


def check_extra_ratios(ratios: list[float], built: float) -> list[float]:
    """The ratios other than the artifacts' (each needs a pruner export); UserError if torch is missing."""
    extra = [ratio for ratio in ratios if ratio != built]
    if extra and importlib.util.find_spec("torch") is None:
        raise UserError(f"--ratios {','.join(f'{r:g}' for r in extra)}: ratios other than the artifacts' {built:g} "
                        f"export a pruner, and exporting needs torch, which this install lacks: {EXPORT_HINT}")
    return extra


class Timer:
    """Times callables: ``warm_up`` untimed calls, then ``iterations`` timed ones; a progress line
    on stderr per row (``-q`` silences it)."""

    def __init__(self, iterations: int, warm_up: int, rows: int) -> None:
        self.iterations, self.warm_up, self.rows, self.done = iterations, warm_up, rows, 0

    def measure(self, component: str, frames: int, runs_on: str, call: Callable[[], float | None],
                ratio: float | None = None, keep: int | None = None,
                after: Callable[[], object] | None = None) -> Measurement:
        """``call`` runs the work once and returns its own seconds, or None to be timed by the host clock;
        ``after``, untimed, runs before every call (warm-up ones too): the stage that precedes it in ``run``."""
        self.done += 1
        row = Measurement(component, frames, ratio, keep, runs_on, [])
        print(f"[{self.done}/{self.rows}] {row.label()}: {self.warm_up} warm-up + {self.iterations} timed runs",
              file=sys.stderr, flush=True)
        before = after or (lambda: None)
        for _ in range(self.warm_up):
            before()
            call()
        for _ in range(self.iterations):
            before()
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
        results, encode_chunk = measure_encoding(manifest, preprocessor, encoder, frame_size, tokens, timer)
        components = {"preprocess": _component(manifest, preprocess), "encoder": _component(manifest, encoder)}
        prefill = None if llm is None else _Prefill(llm, directory, manifest)
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mmg-profile-")))
        for ratio, pruner in _pruners(directory, manifest, ratios, scratch):
            _closing(stack, pruner)
            results += measure_pruning(manifest, pruner, tokens, ratio, timer, prefill, encode_chunk)
            components["pruner"] = _component(manifest, pruner)
    if llm is not None:
        components["llm"] = {"backend": llm.name, "providers": [_llm_runs_on(llm)]}
    results.sort(key=lambda m: (COMPONENTS.index(m.component), m.ratio or 0.0, -m.frames))
    return results, components


def measure_encoding(manifest: Manifest, preprocessor, encoder, frame_size: tuple[int, int], tokens,
                     timer: Timer) -> tuple[list[Measurement], Callable[[], None]]:
    """upload, preprocess and encoder rows at each of :func:`frame_counts`, writing ``tokens (T, P, D)``;
    returns them and the encoder's run on one chunk (what precedes the pruner in ``run``)."""
    from mmg_runtime.tensor import Tensor

    frames, size, (height, width) = manifest.frames, preprocessor.size, frame_size
    decoded = np.random.default_rng(0).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    host_frames = [Tensor.from_numpy(frame) for frame in decoded]
    device_frames = encoder.empty((frames, height, width, 3), "uint8")
    pixels = encoder.empty((frames, 3, size, size), tokens.dtype)
    copy = "host copy" if encoder.device == "cpu" else "cudaMemcpy host->device"
    counts = frame_counts(frames)
    upload = {n: _upload(host_frames[:n], device_frames) for n in counts}
    preprocess = {n: _bound(preprocessor, device_frames.rows(0, n), pixels.rows(0, n)) for n in counts}
    encode = {n: _bound(encoder.run_bound, {"pixel_values": pixels.rows(0, n)}, {"video_tokens": tokens.rows(0, n)})
              for n in counts}
    results = [timer.measure("upload", n, copy, upload[n]) for n in counts]
    results += [timer.measure("preprocess", n, _runs_on(preprocessor.session), preprocess[n], after=upload[n])
                for n in counts]
    results += [timer.measure("encoder", n, _runs_on(encoder), encode[n], after=preprocess[n]) for n in counts]
    return results, encode[counts[-1]]


def measure_pruning(manifest: Manifest, pruner, tokens, ratio: float, timer: Timer,
                    prefill: _Prefill | None, encode_chunk: Callable[[], None]) -> list[Measurement]:
    """pruner, download (and prefill) rows of one pruner over ``tokens (T, P, D)``, each after what precedes
    it in ``run``: the encoder's last chunk (``encode_chunk``), the pruner, the pruner and the download."""
    keep, hidden = int(pruner.outputs["kept_indices"][0][0]), manifest.hidden_size
    outputs = {"video_embeds": pruner.empty((keep + 1, hidden), tokens.dtype),
               "kept_indices": pruner.empty((keep,), "int64"), "finite": pruner.empty(pruner.outputs["finite"][0], "bool")}
    copy = "host copy" if pruner.device == "cpu" else "cudaMemcpy device->host"
    frames = manifest.frames
    prune, download = _bound(pruner.run_bound, {"video_tokens": tokens}, outputs), _bound(outputs["kept_indices"].numpy)
    results = [timer.measure("pruner", frames, _runs_on(pruner), prune, ratio, keep, after=encode_chunk),
               timer.measure("download", frames, copy, download, ratio, keep, after=prune)]
    if prefill is not None:
        results.append(timer.measure("prefill", frames, _llm_runs_on(prefill.llm), prefill.of(outputs["video_embeds"]),
                                     ratio, keep, after=_in_turn(prune, download)))
    return results


def _in_turn(*calls: Callable[[], None]) -> Callable[[], None]:
    """One callable running ``calls`` one after another."""

    def call() -> None:
        for each in calls:
            each()

    return call


def _closing(stack: contextlib.ExitStack, session):
    """``session``, closed when ``stack`` closes."""
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
    artifacts' are exported (and built, for TensorRT and TensorRT-RTX) into ``scratch``."""
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
    """The artifacts' pruner at another ``ratio``: ONNX, its engine like the artifacts' (TensorRT or
    TensorRT-RTX), or its AOTInductor package (needs torch)."""
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
    if manifest.backend not in FLAVOURS:
        return onnx_path
    from .engines import artifacts_engine_builder

    engine = scratch / f"pruner-{ratio:g}.engine"
    artifacts_engine_builder(manifest, scratch / "timing.cache")(onnx_path, engine)
    return engine


def load_llm(directory: Path, manifest: Manifest) -> tuple[TransformersBackend | None, str]:
    """(the transformers LLM run uses by default, "") or (None, a one-line note saying why there is none)."""
    if importlib.util.find_spec("torch") is None:
        from mmg_runtime.llm import TORCH_INSTALL

        return None, f"prefill not measured: the transformers LLM needs torch, which this install lacks: {TORCH_INSTALL}"
    from mmg_runtime.llm import make_llm

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
