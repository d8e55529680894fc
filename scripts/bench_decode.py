#!/usr/bin/env python3
"""Decoding the sampled frames of a clip, as ``Pipeline.ask`` asks for them: NVDEC with 1..N decoder
sessions in parallel (``NvdecReader(sessions=N)``) against threaded PyAV (``PyAVReader``).

For each clip: the reader is created and warmed up (``NvdecReader.warm_up`` on the clip itself), then
``open`` + every frame of ``frames(plan)`` is timed (host clock; NVDEC frames are copied out and
synchronised by the reader), medians of --runs after one untimed run. Also: the GPU memory the
NVDEC sessions hold (``cudaMemGetInfo`` before and after), and whether every session count hands
on exactly the frames of one session.

GPU:   python scripts/bench_decode.py --media .media [--sessions 1 2 4 7] [--frames 32]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _bench_common import markdown_table

import numpy as np

from mmg_runtime import nvdec
from mmg_runtime.video import PyAVReader

CLIPS = ("bigbuckbunny.mp4", "long_g25.mp4", "long_g250.mp4")


def decode_ms(reader, path: Path, frames: int, runs: int) -> tuple[float, list]:
    """Median ms of open + decode over ``runs`` (after one untimed run), and the last run's frames."""
    times, decoded = [], []
    for run in range(runs + 1):
        start = time.perf_counter()
        decoded = list(reader.frames(reader.open(path, frames)))
        if run:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), decoded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, required=True)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 7])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import torch

    rows = []
    for name in CLIPS:
        path = (args.media / name).resolve()
        pyav_ms, _ = decode_ms(PyAVReader(), path, args.frames, args.runs)
        reference = None
        for sessions in args.sessions:
            torch.cuda.synchronize()
            free_before = torch.cuda.mem_get_info()[0]
            reader = nvdec.NvdecReader(chunk=8, sessions=sessions)
            reader.warm_up(path)
            held_mb = (free_before - torch.cuda.mem_get_info()[0]) / 2**20
            ms, decoded = decode_ms(reader, path, args.frames, args.runs)
            pixels = [frame.numpy() for _, frame in decoded]
            reference = reference or pixels
            same = len(pixels) == len(reference) and all(np.array_equal(a, b) for a, b in zip(pixels, reference))
            rows.append((name, sessions, ms, pyav_ms, round(held_mb), same))
            del reader
    print(markdown_table(["clip", "NVDEC sessions", "NVDEC ms", "PyAV ms", "sessions hold MB",
                          "same frames as 1 session"], rows))


if __name__ == "__main__":
    main()
