"""Baselines behind the same interface as :func:`mmg_export.select_tokens`, for comparison.

Each takes ``(features (T, P, D), ratio, config)`` and keeps exactly K = max(1, floor(ratio * T
* P + 0.5)) tokens, ascending:

* ``uniform``: MMG-Vid's token stage with a static equal budget per frame;
* ``grid``: an evenly spaced spatial grid in every frame (equal budget per frame);
* ``random``: K tokens drawn uniformly with a seeded generator;
* ``temporal_difference``: vLLM-EVS-style, drop the tokens that barely changed from the same
  position in the previous frame (frame 0 is kept first);
* ``vidcom2``: VidCom2-style frame-distinctiveness budget, then the least typical tokens of each
  frame;
* ``divprune``: DivPrune-style max-min diversity over all tokens of the video;
* ``facility_location``: the slow greedy facility-location selection over all tokens of the video
  (an upper reference for the coverage metric, not a deployable method: report only);
* ``budgeted_greedy``: the same greedy held to MMG-Vid's own per-frame budgets, frame after frame
  (report only: what exact marginal gains reach within the budgets MMG-Vid deploys);
* ``frame_greedy``: the greedy within each frame alone, the grid's equal budgets, nothing across
  frames (report only: what one-token-at-a-time picks reach where frames share nothing).
"""
from __future__ import annotations

import dataclasses
import heapq
from fractions import Fraction

import numpy as np
import torch

from .config import MMGConfig, Selection, check_features, check_ratio, keep_count
from .reference import allocate, best_tokens, select_tokens

VIDCOM2_TEMPERATURE = 0.01  # softmax temperature of the frame distinctiveness (VidCom2's value)


def uniform(features: torch.Tensor | np.ndarray, ratio: float = 0.25,
            config: MMGConfig | None = None) -> Selection:
    """MMG-Vid's token stage with an equal budget per frame (the static split)."""
    return select_tokens(features, ratio, dataclasses.replace(config or MMGConfig(), budget="uniform"))


def grid(features: torch.Tensor | np.ndarray, ratio: float = 0.25,
         config: MMGConfig | None = None) -> Selection:
    """An evenly spaced grid of tokens in every frame, equal budgets (the first frames get the
    remainder): frame t with budget b keeps positions floor((i + 1/2) * P / b), i < b, in raster order."""
    features, frames, tokens, count = _prepare(features, ratio)
    budget = allocate(count, [1] * frames, tokens)
    kept = [t * tokens + (2 * i + 1) * tokens // (2 * b) for t, b in enumerate(budget) for i in range(b)]
    return _selection(features, kept, None)


def random(features: torch.Tensor | np.ndarray, ratio: float = 0.25,
           config: MMGConfig | None = None, seed: int = 0) -> Selection:
    """K tokens drawn uniformly without replacement, seeded."""
    features, frames, tokens, count = _prepare(features, ratio)
    drawn = torch.randperm(frames * tokens, generator=torch.Generator().manual_seed(seed))[:count]
    return _selection(features, sorted(drawn.tolist()), None)


def temporal_difference(features: torch.Tensor | np.ndarray, ratio: float = 0.25,
                        config: MMGConfig | None = None) -> Selection:
    """Keep the K tokens that changed most from the same position in the previous frame.

    score = 1 - cos(x[t, p], x[t-1, p]); frame 0 scores 2 (above any change), so it is kept
    first. Ties go to the lower flat index.
    """
    features, frames, tokens, count = _prepare(features, ratio)
    unit = _unit(features)
    change = 1.0 - (unit[1:] * unit[:-1]).sum(dim=-1)
    scores = torch.cat([change.new_full((1, tokens), 2.0), change])
    kept = sorted(best_tokens(scores.reshape(-1).tolist(), count))
    return _selection(features, kept, scores)


def vidcom2(features: torch.Tensor | np.ndarray, ratio: float = 0.25,
            config: MMGConfig | None = None) -> Selection:
    """VidCom2-style: budget by frame distinctiveness, then each frame's least typical tokens.

    Frame t gets a share proportional to 1 + s_t - mean(s), s = softmax(d / 0.01), d_t = 1 -
    cos(frame embedding, video embedding) (embeddings: normalised means of unit tokens); shares
    are capped at P and rounded by largest remainder. Within a frame, tokens are ranked by
    -(cos(token, frame embedding) + cos(token, video embedding)): distinct from their frame and
    from the video first.
    """
    features, frames, tokens, count = _prepare(features, ratio)
    unit = _unit(features)
    frame_embedding = torch.nn.functional.normalize(unit.mean(dim=1), dim=-1)
    video_embedding = torch.nn.functional.normalize(frame_embedding.mean(dim=0), dim=-1)
    distinct = torch.softmax((1.0 - frame_embedding @ video_embedding) / VIDCOM2_TEMPERATURE, dim=0)
    weights = [Fraction(float(w)) for w in (1.0 + distinct - distinct.mean()).double()]
    budget = allocate(count, weights, tokens)
    typical = (unit * frame_embedding.unsqueeze(1)).sum(-1) + unit @ video_embedding
    scores = -typical
    kept = [t * tokens + p for t in range(frames) for p in best_tokens(scores[t].tolist(), budget[t])]
    return _selection(features, kept, scores)


def divprune(features: torch.Tensor | np.ndarray, ratio: float = 0.25,
             config: MMGConfig | None = None) -> Selection:
    """DivPrune-style max-min diversity over all tokens of the video (cosine distance 1 - cos).

    The first token is the one whose nearest other token is farthest; then, one at a time, the
    token farthest from everything kept so far (ties to the lower index), as DivPrune's greedy
    solution of the max-min diversity problem.
    """
    features, frames, tokens, count = _prepare(features, ratio)
    unit = _unit(features).reshape(frames * tokens, -1)
    distance = 1.0 - unit @ unit.T
    if frames * tokens == 1:
        return _selection(features, [0], None)
    nearest = distance.fill_diagonal_(float("inf")).amin(dim=1)
    kept = [int(torch.argmax(nearest))]  # argmax returns the first maximum: ties to the lower index
    farthest = distance[kept[0]].clone()
    farthest[kept[0]] = -1.0
    while len(kept) < count:
        kept.append(int(torch.argmax(farthest)))
        farthest = torch.minimum(farthest, distance[kept[-1]])
        farthest[kept] = -1.0
    return _selection(features, sorted(kept), None)


def facility_location(features: torch.Tensor | np.ndarray, ratio: float = 0.25,
                      config: MMGConfig | None = None) -> Selection:
    """Greedy facility location over all tokens (lazy evaluation; slow, report only).

    Keeps, one at a time, the token that most raises sum_i max(0, max_{j kept} cos(i, j)) over
    every token i of the video; ties to the lower index. The (1 - 1/e)-approximation of the best
    coverage any K tokens can reach.
    """
    features, frames, tokens, count = _prepare(features, ratio)
    unit = _unit(features).reshape(frames * tokens, -1).double()
    similarity = (unit @ unit.T).clamp(min=0.0).numpy()
    cover = np.zeros(similarity.shape[0])
    heap = [(-float(g), j) for j, g in enumerate(similarity.sum(axis=0))]
    heapq.heapify(heap)
    kept: list[int] = []
    while len(kept) < count:
        _, j = heapq.heappop(heap)
        gain = float(np.maximum(similarity[:, j] - cover, 0.0).sum())
        if not heap or (-gain, j) <= heap[0]:  # still the best: gains only shrink (submodular)
            kept.append(j)
            cover = np.maximum(cover, similarity[:, j])
        else:
            heapq.heappush(heap, (-gain, j))
    return _selection(features, sorted(kept), None)


def budgeted_greedy(features: torch.Tensor | np.ndarray, ratio: float = 0.25,
                    config: MMGConfig | None = None) -> Selection:
    """Facility-location greedy within MMG-Vid's per-frame budgets (slow, report only).

    Frames in temporal order; each keeps, one at a time, its token that most raises
    sum_i max(0, max_{j kept} cos(i, j)) over every token i of the video, given every token kept
    so far in any frame (ties to the lower index), until it holds the budget that
    :func:`~.reference.select_tokens` gives it. Tells the loss of MMG-Vid's batched, band-limited
    gains apart from the loss of its budgets.
    """
    features, frames, tokens, _ = _prepare(features, ratio)
    budget = select_tokens(features, ratio, config).budget_per_frame.tolist()
    unit = _unit(features).reshape(frames * tokens, -1).double()
    similarity = (unit @ unit.T).clamp(min=0.0)
    cover = torch.zeros(frames * tokens, dtype=torch.float64)
    kept: list[int] = []
    for frame, count in enumerate(budget):
        rows = similarity[frame * tokens:(frame + 1) * tokens]  # (P, T * P): this frame's candidates
        taken = torch.zeros(tokens, dtype=torch.bool)
        for _ in range(count):
            gain = (rows - cover).clamp(min=0.0).sum(dim=1).masked_fill(taken, -1.0)
            best = int(torch.argmax(gain))  # the first of equal maxima: the lower index
            taken[best] = True
            kept.append(frame * tokens + best)
            cover = torch.maximum(cover, rows[best])
    return _selection(features, sorted(kept), None)


def frame_greedy(features: torch.Tensor | np.ndarray, ratio: float = 0.25,
                 config: MMGConfig | None = None) -> Selection:
    """Facility-location greedy inside every frame, on its own (slow, report only).

    Every frame keeps the grid's count (equal budgets, the first frames get the remainder), one
    token at a time: the one that most raises sum_i max(0, max_{j kept} cos(i, j)) over the tokens
    i of its frame, given the tokens that frame kept before (ties to the lower index). All frames
    step together; nothing is shared across frames.
    """
    features, frames, tokens, count = _prepare(features, ratio)
    budget = torch.tensor(allocate(count, [1] * frames, tokens))
    unit = _unit(features).double()
    similarity = (unit @ unit.transpose(1, 2)).clamp(min=0.0)  # (T, P, P), symmetric
    cover = torch.zeros(frames, tokens, dtype=torch.float64)
    taken = torch.zeros(frames, tokens, dtype=torch.bool)
    for step in range(int(budget.max())):
        gain = (similarity - cover.unsqueeze(2)).clamp(min=0.0).sum(dim=1).masked_fill(taken, -1.0)
        best = torch.argmax(gain, dim=1)  # the first of equal maxima: the lower index
        picking = budget > step
        taken[picking, best[picking]] = True
        best_column = similarity[torch.arange(frames), :, best]  # (T, P) cos(i, best)
        cover = torch.where(picking.unsqueeze(1), torch.maximum(cover, best_column), cover)
    kept = taken.reshape(-1).nonzero().squeeze(1).tolist()
    return _selection(features, kept, None)


def _prepare(features: torch.Tensor | np.ndarray, ratio: float) -> tuple[torch.Tensor, int, int, int]:
    """Validated features, T, P and K."""
    features = check_features(features)
    frames, tokens, _ = features.shape
    return features, frames, tokens, keep_count(frames * tokens, check_ratio(ratio))


def _unit(features: torch.Tensor) -> torch.Tensor:
    """(T, P, D) -> (T, P, D) float32 unit tokens."""
    return torch.nn.functional.normalize(features.float(), dim=-1)


def _selection(features: torch.Tensor, kept: list[int], scores: torch.Tensor | None) -> Selection:
    """A single-segment :class:`Selection` for methods that do not segment."""
    frames, tokens, dim = features.shape
    indices = torch.tensor(kept, dtype=torch.int64)
    per_frame = torch.bincount(indices // tokens, minlength=frames)
    return Selection(
        indices=indices,
        features=features.reshape(-1, dim)[indices],
        segment_of_frame=torch.zeros(frames, dtype=torch.int64),
        budget_per_frame=per_frame,
        budget_per_segment=per_frame.sum().reshape(1),
        scores=scores,
    )


METHODS = {"mmg-vid": select_tokens, "uniform": uniform, "grid": grid, "random": random,
           "temporal-difference": temporal_difference, "vidcom2": vidcom2, "divprune": divprune}
"""Every method the quality report compares, by name."""
REFERENCE_METHODS = {"facility-location": facility_location, "budgeted-greedy": budgeted_greedy,
                     "frame-greedy": frame_greedy}
"""Upper references that are too slow to deploy (reported, never a candidate)."""
