#!/usr/bin/env python3
"""How long ``mmg-export build`` takes, and its peak memory, at real LLaVA-OneVision geometry.

A random-weight checkpoint of the 7B or 0.5B geometry is written first (``bench_e2e.make_checkpoint``,
on the CPU): the vision tower (SigLIP so400m, 384 px) and the projector are the real model's, so
the three graphs (preprocess, encoder, pruner at D = the LLM's width) are the ones a real
checkpoint gives. The LLM is cut to ``--llm-layers`` layers (default 1): no graph holds it, and its
weights only cost load time and memory (reported). Then the build runs in its own process under
``/usr/bin/time -v`` (wall seconds, peak resident memory), and its per-step times are printed.

    python scripts/bench_build.py --geometry 7b --backend tensorrt-rtx --target rtx-ada --work /tmp/build7b
    python scripts/bench_build.py --geometry 0.5b --backend tensorrt-rtx --target rtx-ada --work /tmp/build05b
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from bench_e2e import SEVEN_B, make_checkpoint

HALF_B = dict(vision=SEVEN_B["vision"],
              text=dict(SEVEN_B["text"], hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                        num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True))
GEOMETRIES = {"7b": SEVEN_B, "0.5b": HALF_B}


def timed_build(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak resident GiB, stderr) of ``command`` run under ``/usr/bin/time -v``."""
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"build failed ({result.returncode}):\n{result.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    hours, minutes, seconds = (float(part or 0) for part in wall.groups())
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return hours * 3600 + minutes * 60 + seconds, peak_kib / 2**20, result.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geometry", choices=list(GEOMETRIES), default="7b")
    parser.add_argument("--llm-layers", type=int, default=1, help="LLM layers kept in the checkpoint (default 1)")
    parser.add_argument("--backend", default="tensorrt-rtx")
    parser.add_argument("--target", default="rtx-ada")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--work", type=Path, required=True, help="checkpoint and artifact folder")
    args = parser.parse_args()

    geometry = GEOMETRIES[args.geometry]
    geometry = dict(geometry, text=dict(geometry["text"], num_hidden_layers=args.llm_layers))
    checkpoint = args.work / f"checkpoint-{args.geometry}"
    if not (checkpoint / "config.json").is_file():
        seconds = make_checkpoint(checkpoint, geometry, "cpu")
        print(f"checkpoint {checkpoint}: {seconds:.1f} s")
    out = args.work / f"artifacts-{args.geometry}-{args.target}"
    command = ["mmg-export", "build", "--model", str(checkpoint), "--backend", args.backend, "--target", args.target,
               "--frames", str(args.frames), "--out", str(out), "--overwrite"]
    wall, peak_gib, log = timed_build(command)
    steps = [line.strip() for line in log.splitlines() if re.match(r"\s*\[\d/\d\]|\s*\.\.\. [\d.]+ s", line)]
    print(f"| geometry | backend, target | frames | wall s | peak RSS GiB |\n| --- | --- | --- | --- | --- |\n"
          f"| {args.geometry} (LLM {args.llm_layers} layer(s)) | {args.backend}, {args.target} | {args.frames} | "
          f"{wall:.1f} | {peak_gib:.2f} |")
    print("\n".join(steps))
    sizes = {path.name: path.stat().st_size / 2**20 for path in sorted(out.glob("*.engine"))}
    print("engines: " + ", ".join(f"{name} {size:.1f} MiB" for name, size in sizes.items()))


if __name__ == "__main__":
    main()
