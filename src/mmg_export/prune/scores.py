"""The numeric kernels of MMG-Vid, shared by the reference and the fixed-shape graph.

Both forms call these functions on whole tensors, so every number they decide on is bitwise the
same; they differ only in how they turn the numbers into decisions (segments, budgets, picks).
Everything here is fixed-shape tensor algebra that exports to ONNX: normalisation is float32,
the three heavy products run in the input dtype (bf16/fp16 on a GPU), everything after is float32.

Decisions are made on *quantised* values (:func:`quantise`): a float that another runtime computes
a few ulps differently lands on the same grid point unless it sits within those ulps of a grid
boundary, so near-ties become exact ties, broken by index alike in every runtime.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .config import MMGConfig

KEY_LIMIT = 2**24
"""Integers below this are exact in float32: every decision key stays below it."""


class TokenStats(NamedTuple):
    """Per-video statistics that every decision of MMG-Vid is made from.

    frame_similarity: (T-1,) cosine similarity of the mean unit-token embeddings of frames t, t+1.
    gram: (T, P, P) cosine similarity of every pair of tokens within a frame.
    previous: (T, P, P) previous[t, i, j] = cosine of token i of frame t and token j of frame t-1
        (all 0 for t = 0).
    same_position: (T, P, T) same_position[t, p, s] = cosine of token p of frame t and token p of
        frame s (the same place in the picture, any frame).
    novelty_level: (T,) how much of frame t the previous frame does not hold, an integer
        0..config.novelty_levels (frame 0: the maximum).
    """

    frame_similarity: torch.Tensor
    gram: torch.Tensor
    previous: torch.Tensor
    same_position: torch.Tensor
    novelty_level: torch.Tensor


def token_stats(features: torch.Tensor, config: MMGConfig) -> TokenStats:
    """Compute :class:`TokenStats` for ``features: (T, P, D)``.

    The video is first divided by its largest absolute entry (one scalar), so that the dot
    products neither overflow (features x 1e30) nor underflow (x 1e-30) in float32; cosines then
    come from the three products and the tokens' norms on the first one's diagonal (no unit-token
    pass).
    """
    tokens = features.float()
    tiny = torch.finfo(torch.float32).tiny
    largest = torch.maximum(tokens.amax(dim=(0, 1, 2)), -tokens.amin(dim=(0, 1, 2))).clamp(min=tiny)
    scaled32 = tokens / largest
    scaled = scaled32.to(features.dtype)  # the three products below run in the input dtype
    dot = (scaled @ scaled.transpose(1, 2)).float()
    eye = torch.eye(dot.shape[1], dtype=torch.bool, device=dot.device)
    norm = torch.where(eye, dot, 0.0).sum(dim=2).clamp(min=tiny).sqrt()
    gram = dot / (norm.unsqueeze(2) * norm.unsqueeze(1))
    previous = (scaled[1:] @ scaled[:-1].transpose(1, 2)).float() / (norm[1:].unsqueeze(2) * norm[:-1].unsqueeze(1))
    previous = torch.cat([torch.zeros_like(gram[:1]), previous])
    by_position = scaled.transpose(0, 1)  # (P, T, D)
    same_position = (by_position @ by_position.transpose(1, 2)).float().transpose(0, 1)  # (T, P, T)
    same_position = same_position / (norm.unsqueeze(2) * norm.T.unsqueeze(0))
    uniqueness = (1.0 - previous.amax(dim=2)).clamp(0.0, 1.0)  # (T, P): share the previous frame lacks
    uniqueness[0] = 1.0
    floor = config.novelty_floor
    novelty = floor + (1.0 - floor) * uniqueness.mean(dim=1)
    # frame embedding: normalised mean of the unit tokens, one (1, P) x (P, D) product per frame;
    # the norm as Sqrt(ReduceSum(x * x)): ONNX Runtime's CUDA ReduceL2 is ~30x slower
    frame = ((1.0 / norm).unsqueeze(1) @ scaled32).squeeze(1)
    frame = frame / (frame * frame).sum(dim=-1, keepdim=True).sqrt().clamp(min=1e-12)
    return TokenStats(
        frame_similarity=(frame[:-1] * frame[1:]).sum(dim=-1),
        gram=gram,
        previous=previous,
        same_position=same_position,
        novelty_level=torch.round(novelty * config.novelty_levels),
    )


def quantise(values: torch.Tensor, levels: int) -> torch.Tensor:
    """values * levels rounded to an integer (float32), half to even as ONNX Round."""
    return torch.round(values * float(levels))


def similarity_levels() -> int:
    """Grid of frame similarities and of the cut threshold: 2**12 steps per unit (runtimes differ
    by ~1e-7, a step is 2.4e-4: a flip needs a similarity within that much of a grid boundary)."""
    return 2**12


def cut_threshold(similarity_q: torch.Tensor, median_q: torch.Tensor, config: MMGConfig) -> torch.Tensor:
    """Quantised similarity below which a pair of frames is a cut candidate (a 0-d tensor).

    similarity_q: quantised frame similarities; median_q: their median. A pair is a candidate
    when its dissimilarity 1 - s exceeds ``cut_factor`` times the clip's median dissimilarity,
    and never above ``tau``: threshold = min(tau, 1 - cut_factor * (1 - median)), on the grid.
    """
    levels = float(similarity_levels())
    relative = levels - torch.round((levels - median_q) * config.cut_factor)
    return torch.minimum(relative, similarity_q.new_tensor(float(round(config.tau * levels))))


class Band(NamedTuple):
    """Similarities of every token to the tokens of its own frame and of its linked neighbours,
    and to the tokens at its place in every frame of its segment.

    reach: (T, P, 3P) reach[t, i] = similarities of token i of frame t to the tokens of frame t,
        of frame t-1 and of frame t+1 (neighbour parts clamped at 0, and 0 across a cut).
    same_position: (T, P, T) same_position[t, p, s] = similarity of token p of frame t to token p
        of frame s, clamped at 0, and 0 when a cut lies between t and s.
    squared_distance: (T, P, P) ||u_i - u_j||^2 = 2 - 2 cos of the unit tokens of one frame.
    """

    reach: torch.Tensor
    same_position: torch.Tensor
    squared_distance: torch.Tensor


def band(stats: TokenStats, starts: torch.Tensor) -> Band:
    """The :class:`Band` of a video whose segments begin where ``starts`` (T,) bool is True."""
    links = torch.where(starts.reshape(-1, 1, 1), torch.zeros_like(stats.previous), stats.previous.clamp(min=0.0))
    to_next = torch.cat([links[1:].transpose(1, 2), torch.zeros_like(links[:1])])
    segment = torch.cumsum(starts.float(), dim=0)
    same_segment = (segment.unsqueeze(1) == segment).unsqueeze(1)  # (T, 1, T)
    same_position = torch.where(same_segment, stats.same_position.clamp(min=0.0), 0.0)
    squared_distance = (2.0 - 2.0 * stats.gram).clamp(min=0.0)
    return Band(reach=torch.cat([stats.gram, links, to_next], dim=2), same_position=same_position,
                squared_distance=squared_distance)


def _neighbours(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, P) -> (values[t-1], values[t+1]), each (T, P), 0 past the ends: the order of :class:`Band`'s links."""
    padded = torch.nn.functional.pad(values, (0, 0, 1, 1))
    return padded[:-2], padded[2:]


def coverage(band: Band, kept: torch.Tensor, carried: torch.Tensor, steps: int,
             changed: slice = slice(None)) -> torch.Tensor:
    """(T, P) how well the kept tokens already represent every token, in [0, 1].

    A token is covered by its best kept token of the same frame (cosine), by the kept tokens at
    its place in the other frames of its segment (what a still camera keeps once stays kept),
    and along the segment through the neighbouring frames: cover_t(i) >= link(i, j) *
    cover_{t+-1}(j) for every token j of frame t-1 or t+1, so a kept token's reach decays with
    every frame it is carried. ``carried`` (T, P) is the coverage before (it only grows as tokens
    are kept). Only the frames ``changed`` (a static slice; all by default) kept tokens since it
    was computed; every other kept token is already in ``carried``, so only the changed frames'
    kept tokens are compared again. Then each of the ``steps`` steps carries coverage one frame
    further, the first from ``carried`` (as if the new tokens and the carry were one step); with
    0 steps only the kept tokens of the same frame and at the same place count. kept: (T, P) bool.
    """
    tokens = kept.shape[1]
    new = kept[changed].float()
    own = (band.reach[changed, :, :tokens] * new.unsqueeze(1)).amax(dim=2)
    same_place = (band.same_position[:, :, changed] * new.T.unsqueeze(0)).amax(dim=2)
    cover = torch.maximum(put_rows(carried, changed, torch.maximum(carried[changed], own)), same_place)
    carry_from = carried
    for _ in range(steps):
        neighbours = torch.cat(_neighbours(carry_from), dim=1).unsqueeze(1)  # (T, 1, 2P): c_{t-1}, c_{t+1}
        cover = torch.maximum(cover, (band.reach[:, :, tokens:] * neighbours).amax(dim=2))
        carry_from = cover
    return cover


def put_rows(values: torch.Tensor, rows: slice, new: torch.Tensor) -> torch.Tensor:
    """(T, P) float ``values`` with its rows ``rows`` replaced by ``new`` (F, P), as one
    ScatterElements (the ScatterND that slice assignment exports to is ~4x slower under ONNX
    Runtime's CUDA provider, and TensorRT scatters no bool)."""
    index = torch.arange(values.shape[0], device=values.device)[rows].unsqueeze(1).expand_as(new)
    return values.scatter(0, index, new)


def group_frames(group: int, stride: int) -> slice:
    """The frames of pick group ``group`` (t mod stride == group), as a static strided slice."""
    return slice(group, None, stride)


def picked_since(group: int, frames: int, stride: int) -> slice:
    """The frames that kept tokens since the coverage before group ``group``'s pick was last
    recomputed: the previous group's (all frames where that group is empty: the same coverage)."""
    previous = (group - 1) % stride
    return group_frames(previous, stride) if previous < frames else slice(None)


SUBSTEP_CHAIN = 1
"""Chain steps of the coverage update between the steps of one group's pick: the group's new tokens
enter their own frame and the same place in the segment, and what was covered before moves one
frame further (with 0 steps: up to 0.003 less coverage on docs/quality.md's clips, 0.002-0.004
less on its montage); the new tokens travel the chain at the next group's update."""


class PickStep(NamedTuple):
    """One batched pick of the token stage (:func:`pick_schedule`).

    group: the frames t with t mod stride == group pick (none when group >= T).
    share: after the pick, frame t holds floor(budget[t] * share / parts) tokens.
    parts: rounds * substeps, the same for every pick.
    chain_steps: steps of the coverage update before the pick (None: nothing kept yet).
    changed: the frames that kept tokens since the update before (a static slice).
    """

    group: int
    share: int
    parts: int
    chain_steps: int | None
    changed: slice


def pick_schedule(frames: int, config: MMGConfig) -> list[PickStep]:
    """The token stage's picks, in order: ``rounds`` rounds of ``stride`` groups, each group's
    pick in ``substeps`` steps.

    Before a group's first step coverage is recomputed with ``chain_steps`` (the previous group
    picked since); before each further step only the group's own new tokens enter it
    (:data:`SUBSTEP_CHAIN` steps, at most ``chain_steps``). A group without frames (stride > T)
    takes one step, an update without a pick.
    """
    parts = config.rounds * config.substeps
    schedule: list[PickStep] = []
    for round_ in range(config.rounds):
        for group in range(config.stride):
            for sub in range(config.substeps if group < frames else 1):
                chain = config.chain_steps if sub == 0 else min(SUBSTEP_CHAIN, config.chain_steps)
                changed = picked_since(group, frames, config.stride) if sub == 0 else group_frames(group, config.stride)
                schedule.append(PickStep(group, round_ * config.substeps + sub + 1, parts,
                                         chain if schedule else None, changed))
    return schedule


def marginal_gain(band: Band, cover: torch.Tensor, frames: slice = slice(None)) -> torch.Tensor:
    """(F, P) facility-location gain of keeping each token of ``frames`` (all T by default), in [0, 3P].

    gain(j) = sum over the tokens i of the frame and of its linked neighbour frames of
    max(0, sim(i, j) - cover(i)): how much keeping j would raise the best similarity of every
    token near it in time to a kept token. cover: (T, P), every frame's.
    """
    cover_by_column = torch.cat([cover, *_neighbours(cover)], dim=1)[frames]  # (F, 3P), columns as in the band
    room = band.reach[frames] - cover_by_column.unsqueeze(1)  # [t, j, i]: sim(i, j) - cover(i)
    return room.clamp_(min=0.0).sum(dim=2)


def key_levels(tokens: int, largest: float) -> float:
    """Quantisation levels (a power of two, so scaling is exact) for values in [0, largest]
    whose key ``q * P + (P - 1 - p)`` stays below 2**24: the largest L with (largest * L + 1) * P
    <= 2**24."""
    levels = 2.0**-24
    while (largest * levels * 2 + 1) * tokens <= KEY_LIMIT:
        levels *= 2
    return levels


GAIN_LEVELS = 128.0
"""Gains are compared on a 1/128 grid (runtimes differ by ~1e-5 on a sum of 3P terms)."""
SCORE_LEVELS = 0.25
"""Peak scores (quantised gain x squared distance <= 4) are compared on a grid of 4: a quantised
score is at most the largest quantised gain, so its key fits below 2**24 whenever the gain's does."""


def pick_levels(tokens: int) -> tuple[float, float]:
    """(gain levels, score levels) of the token stage for P = ``tokens``: gains lie in [0, 3P];
    at most GAIN_LEVELS (robust to runtime differences), fewer where P is large enough that the
    keys would not fit below 2**24."""
    return min(GAIN_LEVELS, key_levels(tokens, 3.0 * tokens)), SCORE_LEVELS


def rank_keys(values_q: torch.Tensor, kept: torch.Tensor, kept_key: float) -> torch.Tensor:
    """(F, P) unique float32 integer keys: quantised value first, then the lower token index.

    values_q: (F, P) quantised values >= 0 of F frames (all, or a pick group's); kept: (F, P)
    bool, whose tokens get ``kept_key`` instead (-1 puts them below every candidate, KEY_LIMIT
    above).
    """
    tokens = values_q.shape[1]
    reverse_index = torch.arange(tokens - 1, -1, -1, device=values_q.device, dtype=torch.float32)
    return torch.where(kept, kept_key, values_q * float(tokens) + reverse_index)


def peak_scores(squared_distance: torch.Tensor, gain_key: torch.Tensor, gain_q: torch.Tensor) -> torch.Tensor:
    """(F, P) density-peak score of every candidate: quantised gain * squared distance to a better one.

    As in DPC (gain playing density): delta(j) = min ||u_j - u_k||^2 over the candidates k of the
    frame with a higher gain key (4, the largest, for the best one), so a near-copy of a better
    candidate scores low and the round keeps spread-out peaks. The squared distance (2 - 2 cos)
    suppresses near-copies harder than the distance and needs no square root.
    squared_distance: (F, P, P) of F frames (all, or a pick group's) from :class:`Band`;
    gain_key: (F, P) from :func:`rank_keys` (kept tokens -1); gain_q: (F, P) quantised gains.
    """
    better = gain_key.unsqueeze(1) > gain_key.unsqueeze(2)  # [t, j, k]: k beats j
    delta = torch.where(better, squared_distance, 4.0).amin(dim=2)
    return gain_q * delta


def merge_keys(gram: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """(T, P, P) unique keys of the kept tokens j as merge targets of token i (-1 where j is dropped):
    the cosine quantised on [-1, 1], then the lower index. gram: (T, P, P); kept: (T, P) bool."""
    tokens = gram.shape[1]
    levels = key_levels(tokens, 2.0)
    reverse_index = torch.arange(tokens - 1, -1, -1, device=gram.device, dtype=torch.float32)
    keys = quantise(gram.clamp(-1.0, 1.0) + 1.0, levels) * float(tokens) + reverse_index
    return torch.where(kept.unsqueeze(1), keys, -1.0)


def frame_weight(segment_level: torch.Tensor, segment_frames: torch.Tensor, scale: float) -> torch.Tensor:
    """Integer budget weight of each frame (elementwise, float32 holding integers >= 1).

    Every frame of a segment weighs the square root of the segment's mean novelty level (a new
    segment's first frame counts as fully novel): busy segments get more tokens per frame than
    static ones, with diminishing returns. weight = max(1, round(scale * sqrt(total / frames))).
    """
    return torch.round((segment_level / segment_frames).sqrt() * scale).clamp(min=1.0)


def weight_scale(num_tokens: int, novelty_levels: int) -> tuple[int, float]:
    """(max weight, scale) keeping every budget product below 2**24 (exact in float32).

    Weights are at most ``(2**24 - 1) // (2 * num_tokens)``; ``frame_weight`` reaches that bound
    for a segment of full novelty (sqrt(total / frames) = sqrt(novelty_levels)).
    """
    max_weight = (KEY_LIMIT - 1) // (2 * num_tokens)
    return max_weight, float(torch.tensor(max_weight / novelty_levels**0.5, dtype=torch.float32))
