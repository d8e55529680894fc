"""MMG-Vid, readable reference implementation: the specification in code.

    1. segment the video where consecutive frames stop looking alike;
    2. split the budget K over segments by marginal gain (sqrt of their novelty), and over each
       segment's frames by novelty (capped proportional allocation, largest-remainder rounding);
    3. in every frame keep the tokens with the best temporal-guided DPC score
       (density x distance-to-denser x uniqueness against the previous frame).

Decisions are plain Python over exact numbers (ints, Fractions, float32 values compared as
is); the numeric kernels come from :mod:`.scores`, shared with the fixed-shape graph
(:mod:`.graph`), which must select exactly the same tokens. ``docs/algorithm.md`` gives the
formulas and says which come from the paper.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch

from .config import MMGConfig, Selection, check_features, check_ratio, keep_count
from .scores import TokenStats, frame_weight, token_scores, token_stats, weight_scale


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
        starts = segment_starts(stats.frame_similarity.tolist(), frames, config)
        segment = np.cumsum([f in starts for f in range(frames)]) - 1
        weights = frame_weights(stats, segment, config)
        budget = allocate(keep, weights, tokens)
        is_start = torch.tensor([f in starts for f in range(frames)])
        scores = token_scores(stats, is_start, config)
        kept = [f * tokens + p for f in range(frames) for p in best_tokens(scores[f].tolist(), budget[f])]
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
        scores=scores,
    )


def segment_starts(similarity: list[float], frames: int, config: MMGConfig) -> list[int]:
    """Frames that begin a segment (always frame 0), from ``similarity[t] = sim(frame t, t+1)``.

    A cut before frame t is a candidate when sim < tau and both sides keep at least
    ``min_segment_frames`` frames. A candidate with a stronger one (lower similarity, then lower
    index) closer than ``min_segment_frames`` is dropped; of the rest, the
    ``max_segments - 1`` strongest are kept.
    """
    shortest = config.min_segment_frames

    def sim_before(t: int) -> float:
        return similarity[t - 1]

    def stronger(a: int, b: int) -> bool:
        return (sim_before(a), a) < (sim_before(b), b)

    candidates = [t for t in range(1, frames)
                  if sim_before(t) < config.tau32 and shortest <= t <= frames - shortest]
    local = [t for t in candidates
             if not any(stronger(u, t) for u in candidates if 0 < abs(u - t) < shortest)]
    strongest = sorted(local, key=lambda t: (sim_before(t), t))[:config.max_segments - 1]
    return [0] + sorted(strongest)


def frame_weights(stats: TokenStats, segment: np.ndarray, config: MMGConfig) -> list[int]:
    """Integer budget weight of every frame.

    marginal: a segment's first frame counts as fully novel; a segment's total novelty is the
    sum of its frames' levels; :func:`.scores.frame_weight` turns level and total into a weight.
    uniform: every frame weighs 1.
    """
    frames = len(segment)
    if config.budget == "uniform":
        return [1] * frames
    level = [config.novelty_levels if f == 0 or segment[f] != segment[f - 1] else int(stats.novelty_level[f])
             for f in range(frames)]
    total = {s: sum(lv for lv, sf in zip(level, segment) if sf == s) for s in set(segment.tolist())}
    _, scale = weight_scale(frames * stats.dpc.shape[1], config.novelty_levels)
    weight = frame_weight(torch.tensor(level, dtype=torch.float32),
                          torch.tensor([total[s] for s in segment], dtype=torch.float32), scale)
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


def best_tokens(scores: list[float], count: int) -> list[int]:
    """Indices of the ``count`` highest scores, ties to the lower index, in ascending order."""
    return sorted(sorted(range(len(scores)), key=lambda p: (-scores[p], p))[:count])


def merge_dropped(features: torch.Tensor, gram: torch.Tensor, kept: list[int]) -> torch.Tensor:
    """Average every dropped token into its most similar kept token of the same frame.

    features: (T, P, D); gram: (T, P, P) cosine similarities; kept: flat indices.
    Frames that keep no token merge nothing. Returns (K, D) in the order of ``kept``.
    """
    tokens = features.shape[1]
    kept_set = set(kept)
    sums = {i: features.reshape(-1, features.shape[2])[i].clone() for i in kept}
    counts = dict.fromkeys(kept, 1)
    for frame in range(features.shape[0]):
        kept_here = [p for p in range(tokens) if frame * tokens + p in kept_set]
        if not kept_here:
            continue
        for p in range(tokens):
            if frame * tokens + p in kept_set:
                continue
            similarity = gram[frame, p, kept_here].tolist()
            target = frame * tokens + kept_here[similarity.index(max(similarity))]
            sums[target] += features[frame, p]
            counts[target] += 1
    return torch.stack([sums[i] / counts[i] for i in kept])
