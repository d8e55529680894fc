"""The numeric kernels of MMG-Vid, shared by the reference and the fixed-shape graph.

Both forms call these functions on whole tensors, so every number they decide on is bitwise the
same; they differ only in how they turn the numbers into decisions (segments, budgets, picks).
Everything here is fixed-shape tensor algebra that exports to ONNX: normalisation is float32,
the two heavy products run in the input dtype (bf16/fp16 on a GPU), everything after is float32.

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
    novelty_level: (T,) how much of frame t the previous frame does not hold, an integer
        0..config.novelty_levels (frame 0: the maximum).
    """

    frame_similarity: torch.Tensor
    gram: torch.Tensor
    previous: torch.Tensor
    novelty_level: torch.Tensor


def token_stats(features: torch.Tensor, config: MMGConfig) -> TokenStats:
    """Compute :class:`TokenStats` for ``features: (T, P, D)``.

    The video is first divided by its largest absolute entry (one scalar), so that the dot
    products neither overflow (features x 1e30) nor underflow (x 1e-30) in float32; cosines then
    come from the two products and the tokens' norms on their diagonal (no unit-token pass).
    """
    frames = features.shape[0]
    tokens = features.float()
    tiny = torch.finfo(torch.float32).tiny
    largest = torch.maximum(tokens.amax(dim=(0, 1, 2)), -tokens.amin(dim=(0, 1, 2))).clamp(min=tiny)
    scaled32 = tokens / largest
    scaled = scaled32.to(features.dtype)  # the two products below run in the input dtype
    columns = scaled.transpose(1, 2)  # (T, D, P)
    dot = (scaled @ columns).float()
    eye = torch.eye(dot.shape[1], dtype=torch.bool, device=dot.device)
    norm = torch.where(eye, dot, 0.0).sum(dim=2, keepdim=True).clamp(min=tiny).sqrt()  # (T, P, 1)
    norm_row = norm.transpose(1, 2)  # (T, 1, P)
    gram = dot / (norm * norm_row)
    # against frame t-1: frame 0 meets itself, then is zeroed (it has no previous frame)
    frame_index = torch.arange(frames, device=dot.device)
    earlier = (frame_index - 1).clamp(min=0)
    previous = (scaled @ columns[earlier]).float() / (norm * norm_row[earlier])
    previous = torch.where((frame_index == 0).reshape(-1, 1, 1), 0.0, previous)
    uniqueness = (1.0 - previous.amax(dim=2)).clamp(0.0, 1.0)  # (T, P): share the previous frame lacks (frame 0: 1)
    floor = config.novelty_floor
    novelty = floor + (1.0 - floor) * uniqueness.mean(dim=1)
    # frame embedding: normalised mean of the unit tokens, one (1, P) x (P, D) product per frame
    frame = (1.0 / norm_row) @ scaled32  # (T, 1, D)
    frame = frame / frame.norm(dim=2, keepdim=True).clamp(min=1e-12)
    return TokenStats(
        frame_similarity=(frame[:-1] * frame[1:]).sum(dim=(1, 2)),
        gram=gram,
        previous=previous,
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
    """Similarities of every token to the tokens of its own frame and of its linked neighbours.

    The blocks stand side by side on axis 2, so that one product with weights gathered from (T, P)
    per-token values (:func:`gather_rows`) reaches all of them at once. The links are 0 across a
    cut and past either end of the video (there is no frame -1 or T), whatever weight meets them.

    reach: (T, P, 3, P) reach[t, i, b, j]: similarity of token i of frame t to token j of frame t
        (b = 0), of frame t-1 (b = 1) and of frame t+1 (b = 2) (links: clamped at 0).
    carry: (T, P, 4, P) [similarity within the frame, identity, link to t-1, link to t+1]: one
        coverage step takes the largest product with [kept, cover, cover of t-1, cover of t+1].
    squared_distance: (T, P, P) ||u_i - u_j||^2 = 2 - 2 cos of the unit tokens of one frame.
    """

    reach: torch.Tensor
    carry: torch.Tensor
    squared_distance: torch.Tensor


def band(stats: TokenStats, starts: torch.Tensor) -> Band:
    """The :class:`Band` of a video whose segments begin where ``starts`` (T,) bool is True."""
    frames, tokens = stats.gram.shape[:2]
    links = torch.where(starts.reshape(-1, 1, 1), 0.0, stats.previous.clamp(min=0.0))  # links[0] = 0
    # links to the next frame: frame t+1's links, transposed; the last frame takes links[0] = 0
    to_next = links.transpose(1, 2)[(torch.arange(frames, device=links.device) + 1) % frames]
    identity = torch.eye(tokens, device=links.device).expand(frames, tokens, tokens)
    carry = torch.cat([stats.gram, identity, links, to_next], dim=2).reshape(frames, tokens, 4, tokens)
    reach = carry.index_select(2, torch.tensor([0, 2, 3], device=carry.device))  # all but the identity
    return Band(reach=reach, carry=carry, squared_distance=(2.0 - 2.0 * stats.gram).clamp(min=0.0))


def gather_rows(table: torch.Tensor, frames: int, parts: list[tuple[int, int]]) -> torch.Tensor:
    """(T, 1, len(parts), P) rows of ``table`` (stacked (T, P) values): part (offset, shift) is row
    offset + t + shift for frame t, clamped to the video (a missing neighbour meets a 0 link)."""
    t = torch.arange(frames, device=table.device)
    rows = torch.stack([offset + (t + shift).clamp(0, frames - 1) for offset, shift in parts], dim=1)
    return table[rows.unsqueeze(1)]


def coverage(band: Band, kept: torch.Tensor, carried: torch.Tensor, steps: int) -> torch.Tensor:
    """(T, P) how well the kept tokens already represent every token, in [0, 1].

    A token is covered by its best kept token of the same frame (cosine), and along the segment
    through the neighbouring frames: cover_t(i) >= link(i, j) * cover_{t+-1}(j) for every token j
    of frame t-1 or t+1, so a kept token's reach decays with every frame it is carried.
    ``carried`` (T, P) is the coverage before (it only grows as tokens are kept). Each of the
    ``steps`` steps carries coverage one frame further (the first also adds the kept tokens); with
    0 steps only the kept tokens of the same frame count. kept: (T, P) bool or 0/1 float.
    """
    frames = kept.shape[0]
    table = torch.cat([kept.float(), carried])  # rows: kept of frame t, then cover of frame t
    if not steps:
        return (band.carry[:, :, :2] * gather_rows(table, frames, [(0, 0), (frames, 0)])).amax(dim=(2, 3))
    weight = gather_rows(table, frames, [(0, 0), (frames, 0), (frames, -1), (frames, 1)])
    cover = (band.carry * weight).amax(dim=(2, 3))
    for _ in range(steps - 1):  # the kept tokens are in cover already: identity and links only
        cover = (band.carry[:, :, 1:] * gather_rows(cover, frames, [(0, 0), (0, -1), (0, 1)])).amax(dim=(2, 3))
    return cover


def marginal_gain(band: Band, cover: torch.Tensor | None) -> torch.Tensor:
    """(T, P) facility-location gain of keeping each token, in [0, 3P].

    gain(j) = sum over the tokens i of the frame and of its linked neighbour frames of
    max(0, sim(i, j) - cover(i)): how much keeping j would raise the best similarity of every
    token near it in time to a kept token. ``cover`` None: nothing is covered yet.
    """
    room = band.reach  # [t, j, b, i]: sim(i, j) - cover(i)
    if cover is not None:
        room = room - gather_rows(cover, cover.shape[0], [(0, 0), (0, -1), (0, 1)])
    return room.clamp(min=0.0).sum(dim=(2, 3))


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


def rank_keys(values_q: torch.Tensor, kept: torch.Tensor | None, kept_key: float) -> torch.Tensor:
    """(T, P) unique float32 integer keys: quantised value first, then the lower token index.

    values_q: (T, P) quantised values >= 0; kept tokens (T, P) bool get ``kept_key`` instead (-1
    puts them below every candidate, KEY_LIMIT above); ``kept`` None: nothing is kept yet.
    """
    tokens = values_q.shape[1]
    reverse_index = torch.arange(tokens - 1, -1, -1, device=values_q.device, dtype=torch.float32)
    keys = values_q * float(tokens) + reverse_index
    return keys if kept is None else torch.where(kept, kept_key, keys)


def peak_scores(squared_distance: torch.Tensor, gain_key: torch.Tensor, gain_q: torch.Tensor) -> torch.Tensor:
    """(T, P) density-peak score of every candidate: quantised gain * squared distance to a better one.

    As in DPC (gain playing density): delta(j) = min ||u_j - u_k||^2 over the candidates k of the
    frame with a higher gain key (4, the largest, for the best one), so a near-copy of a better
    candidate scores low and the round keeps spread-out peaks. The squared distance (2 - 2 cos)
    suppresses near-copies harder than the distance and needs no square root.
    squared_distance: (T, P, P) from :class:`Band`; gain_key: (T, P) from :func:`rank_keys`
    (kept tokens -1); gain_q: quantised gains.
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
