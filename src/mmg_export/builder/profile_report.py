"""Output of ``mmg-export profile``: the table on stdout and the ``--json`` report."""
from __future__ import annotations

import argparse
import os
import platform
from dataclasses import asdict

from mmg_runtime.manifest import Manifest
from mmg_runtime.versions import LIBRARIES, library_versions

from .profile_harness import Measurement

STATISTICS = ("min", "median", "mean", "p90", "p99")
TIMING = ("host clock (time.perf_counter) around each call; every call ends synchronised with the device "
          "(ONNX Runtime exposes no CUDA events and synchronises its providers before a run returns; the TensorRT "
          "run synchronises its stream; copies are synchronous). Compute rows bind device buffers, so they hold "
          "no host<->device copies: those are the upload and download rows. prefill is the LLM backend's own "
          "prefill time, as run reports it. Each call follows, untimed, the stage that precedes it in run (upload, "
          "preprocess, encoder, pruner, download, prefill), as there: on the CPU a stage right after another shares "
          "the cores with the other's spinning worker threads. Warm-up runs excluded.")


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
        "versions": library_versions(LIBRARIES), "gpu": gpu,
        "host": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "timing": TIMING, "notes": notes,
        "measurements": [{**asdict(m), "statistics_ms": m.statistics()} for m in measurements],
    }
