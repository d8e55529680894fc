"""MMG-Vid, readable reference implementation: the specification in code.

    1. segment the video where consecutive frames stop looking alike (relative to the clip's own
       frame-to-frame similarity);
    2. split the budget K over segments by marginal gain (square root of their novelty), equally
       over each segment's frames (capped proportional allocation, largest-remainder rounding);
    3. in every frame keep tokens by marginal gain: in a few rounds, each frame picks the
       candidates that most raise the facility-location coverage of its frame and of its linked
       neighbour frames given every token kept so far (in its frame, along the segment's chain of
       neighbours, and at the same place in the segment's other frames), spread out as density
       peaks, a few steps per pick with its own frame's coverage refreshed between them.

Decisions are plain Python over exact numbers (ints, Fractions, quantised float32 values); the
numeric kernels come from :mod:`.scores`, shared with the fixed-shape graph (:mod:`.graph`), which
must select exactly the same tokens. ``docs/algorithm.md`` gives the formulas and says which come
from the paper.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch

from .config import MMGConfig, Selection, check_features, check_ratio, keep_count
from .scores import (TokenStats, band, coverage, cut_threshold, frame_weight, group_frames, marginal_gain,
                     merge_keys, peak_scores, pick_levels, pick_schedule, quantise, rank_keys, similarity_levels,
                     token_stats, weight_scale)


def select_tokens(features: torch.Tensor | np.ndarray, ratio: float = 0.25,
                  config: MMGConfig | None = None) -> Selection:
    """Keep K = max(1, floor(ratio * T * P + 0.5)) of the video tokens ``features: (T, P, D)``."""
    features = check_features(features)
    ratio = check_ratio(ratio)
    config = config or MMGConfig()
    frames, tokens, _ = features.shape
    keep = keep_count(frames * tokens, ratio)
    with torch.no_grad():
        stats = token_stats(features, config)
        starts = segment_starts(stats.frame_similarity, frames, config)
        segment = np.cumsum([f in starts for f in range(frames)]) - 1
        budget = allocate(keep, frame_weights(stats, segment, config), tokens)
        is_start = torch.tensor([f in starts for f in range(frames)])
        kept, gains = pick_tokens(stats, is_start, budget, config)
        kept_features = features.reshape(frames * tokens, -1)[kept]
        if config.merge:
            kept_features = merge_dropped(features, stats.gram, kept)
    segment_t = torch.as_tensor(segment, dtype=torch.int64)
    budget_t = torch.tensor(budget, dtype=torch.int64)
    return Selection(
        indices=torch.tensor(kept, dtype=torch.int64),
        features=kept_features,
        segment_of_frame=segment_t,
        budget_per_frame=budget_t,
        budget_per_segment=torch.zeros(len(starts), dtype=torch.int64).index_add_(0, segment_t, budget_t),
        scores=gains,
    )


def segment_starts(similarity: torch.Tensor, frames: int, config: MMGConfig) -> list[int]:
    """Frames that begin a segment (always frame 0), from ``similarity[t] = sim(frame t, t+1)``.

    Similarities are quantised (:func:`.scores.quantise`). A cut before frame t is a candidate when
    sim(t-1, t) is below :func:`.scores.cut_threshold` (set by the median similarity of the clip)
    and both sides keep at least ``min_segment_frames`` frames. A candidate with a stronger one
    (lower similarity, then lower index) closer than ``min_segment_frames`` is dropped; of the
    rest, the ``max_segments - 1`` strongest are kept.
    """
    if frames == 1:
        return [0]
    quantised = quantise(similarity, similarity_levels())
    values = quantised.tolist()
    median = sorted(values)[(len(values) - 1) // 2]  # the lower median
    threshold = float(cut_threshold(quantised, quantised.new_tensor(median), config))
    shortest = config.min_segment_frames

    def sim_before(t: int) -> float:
        return values[t - 1]

    def stronger(a: int, b: int) -> bool:
        return (sim_before(a), a) < (sim_before(b), b)

    candidates = [t for t in range(1, frames)
                  if sim_before(t) < threshold and shortest <= t <= frames - shortest]
    local = [t for t in candidates
             if not any(stronger(u, t) for u in candidates if 0 < abs(u - t) < shortest)]
    strongest = sorted(local, key=lambda t: (sim_before(t), t))[:config.max_segments - 1]
    return [0] + sorted(strongest)


def frame_weights(stats: TokenStats, segment: np.ndarray, config: MMGConfig) -> list[int]:
    """Integer budget weight of every frame.

    marginal: a segment's first frame counts as fully novel, a segment's novelty is the sum of its
    frames' levels; :func:`.scores.frame_weight` turns the segment's novelty and length into the
    weight of each of its frames. uniform: every frame weighs 1.
    """
    frames = len(segment)
    if config.budget == "uniform":
        return [1] * frames
    level = [config.novelty_levels if f == 0 or segment[f] != segment[f - 1] else int(stats.novelty_level[f])
             for f in range(frames)]
    total = {s: sum(lv for lv, sf in zip(level, segment) if sf == s) for s in set(segment.tolist())}
    length = {s: int((segment == s).sum()) for s in total}
    _, scale = weight_scale(frames * stats.gram.shape[1], config.novelty_levels)
    weight = frame_weight(torch.tensor([total[s] for s in segment], dtype=torch.float32),
                          torch.tensor([length[s] for s in segment], dtype=torch.float32), scale)
    return [int(w) for w in weight]


def allocate(total: int, weights: list[int], cap: int) -> list[int]:
    """Split ``total`` tokens over frames: capped proportional shares, largest-remainder rounding.

    Proportional shares maximise sum(w_f * log b_f), the marginal-gain (diminishing-returns)
    objective; a frame whose share exceeds ``cap`` gets ``cap`` and the rest is shared again.
    Leftover units go to the largest fractional parts, ties to the lower frame index.
    """
    capped: set[int] = set()
    while True:
        free = [f for f in range(len(weights)) if f not in capped]
        rest, weight = total - cap * len(capped), sum(weights[f] for f in free)
        over = {f for f in free if Fraction(rest * weights[f], weight) > cap}
        if not over:
            break
        capped |= over
    share = {f: Fraction(rest * weights[f], weight) for f in free}
    budget = [cap if f in capped else math.floor(share[f]) for f in range(len(weights))]
    leftover = total - sum(budget)
    for f in sorted(free, key=lambda f: (-(share[f] - budget[f]), f))[:leftover]:
        budget[f] += 1
    return budget


def pick_tokens(stats: TokenStats, starts: torch.Tensor, budget: list[int],
                config: MMGConfig) -> tuple[list[int], torch.Tensor]:
    """Flat indices (ascending) of the tokens every frame keeps, and each frame's gains (T, P) at
    its last pick.

    The picks of :func:`.scores.pick_schedule`: ``config.rounds`` rounds of ``config.stride``
    groups (f mod stride), each group's pick in ``config.substeps`` steps. Before every step
    coverage is updated from what was kept since, then the group's marginal gains and peak scores
    (:mod:`.scores`); frame f tops up to floor(budget[f] * share / parts) tokens, its candidates
    with the highest peak-score keys.
    """
    frames, tokens = starts.shape[0], stats.gram.shape[1]
    reach = band(stats, starts)
    gain_levels, score_levels = pick_levels(tokens)
    kept = torch.zeros(frames, tokens, dtype=torch.bool)
    cover = torch.zeros(frames, tokens)
    gains = torch.zeros(frames, tokens)
    for pick in pick_schedule(frames, config):
        if pick.chain_steps is not None:  # before the first pick nothing is covered
            cover = coverage(reach, kept, cover, pick.chain_steps, pick.changed)
        rows = group_frames(pick.group, config.stride)
        gain = marginal_gain(reach, cover, rows)
        gain_q = quantise(gain, gain_levels)
        peak = peak_scores(reach.squared_distance[rows], rank_keys(gain_q, kept[rows], -1.0), gain_q)
        score_key = rank_keys(quantise(peak, score_levels), kept[rows], -1.0)
        for row, f in enumerate(range(pick.group, frames, config.stride)):
            need = budget[f] * pick.share // pick.parts - int(kept[f].sum())
            kept[f, best_tokens(score_key[row].tolist(), need)] = True
            gains[f] = gain[row]
    return kept.reshape(-1).nonzero().squeeze(1).tolist(), gains


def best_tokens(keys: list[float], count: int) -> list[int]:
    """Indices of the ``count`` highest keys (ties to the lower index), in ascending order."""
    return sorted(sorted(range(len(keys)), key=lambda p: (-keys[p], p))[:count])


def merge_dropped(features: torch.Tensor, gram: torch.Tensor, kept: list[int]) -> torch.Tensor:
    """Average every dropped token into its most similar kept token of the same frame.

    features: (T, P, D); gram: (T, P, P) cosine similarities, compared by
    :func:`.scores.merge_keys` (quantised, ties to the lower index); kept: flat indices. Frames
    that keep no token merge nothing. Returns (K, D) in the order of ``kept``.
    """
    frames, tokens = features.shape[:2]
    kept_set = set(kept)
    kept_mask = torch.zeros(frames * tokens, dtype=torch.bool)
    kept_mask[kept] = True
    similarity = merge_keys(gram, kept_mask.reshape(frames, tokens)).tolist()
    sums = {i: features.reshape(-1, features.shape[2])[i].clone() for i in kept}
    counts = dict.fromkeys(kept, 1)
    for frame in range(features.shape[0]):
        kept_here = [p for p in range(tokens) if frame * tokens + p in kept_set]
        if not kept_here:
            continue
        for p in range(tokens):
            if frame * tokens + p in kept_set:
                continue
            row = similarity[frame][p]
            target = frame * tokens + max(kept_here, key=lambda q: row[q])
            sums[target] += features[frame, p]
            counts[target] += 1
    return torch.stack([sums[i] / counts[i] for i in kept])

