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
copies are host copies, as they are in ``run``. Each timed call follows, untimed, the stage that precedes
it in ``run`` (the pruner the encoder's last chunk, the prefill the pruner and the download), as there.
``run`` times one question after a one-question warm-up (each stage has run once); ``profile`` reports
the spread after ``--warm-up`` runs of each row (``--warm-up 1`` is ``run``'s case). Each ratio other than the artifacts' gets a pruner
exported (and, for TensorRT and TensorRT-RTX, built as the artifacts' engines were) into a scratch
directory for this profile.

The timing harness is :mod:`.profile_harness`, the table and the ``--json`` report
:mod:`.profile_report`, the ``--plot`` :mod:`.profile_plot`.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

from mmg_runtime.device import device_info
from mmg_runtime.errors import UserError
from mmg_runtime.trust import this_machine, verify_artifacts

from .profile_harness import EXPORT_HINT, Timer, check_extra_ratios, load_llm, profile, row_count
from .profile_plot import plot_latency
from .profile_report import format_table, make_report

MAX_ITERATIONS = 100_000
"""Upper bound of --iterations and --warm-up: a typo such as 1000000000 must not run for days."""


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
