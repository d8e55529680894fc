"""The numeric kernels of MMG-Vid, shared by the reference and the fixed-shape graph.

Both forms call these functions on the whole (T, P, D) tensor, so every float they compare is
bitwise the same; the two forms differ only in how they turn these numbers into decisions
(segments, budgets, ranks). Everything here is fixed-shape tensor algebra that exports to ONNX:
normalisation is float32, the two heavy products run in the input dtype (bf16/fp16 on a GPU),
everything after them is float32.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .config import MMGConfig


class TokenStats(NamedTuple):
    """Per-video statistics that every decision of MMG-Vid is made from.

    frame_similarity: (T-1,) cosine similarity of the mean token embeddings of frames t, t+1.
    gram: (T, P, P) cosine similarity of every pair of tokens within a frame.
    dpc: (T, P) density-peak score rho * delta of every token within its frame.
    uniqueness: (T, P) 1 - best cosine similarity to a token of the previous frame, in [0, 1]
        (1 for frame 0).
    novelty_level: (T,) frame novelty quantised to integers 0..config.novelty_levels.
    """

    frame_similarity: torch.Tensor
    gram: torch.Tensor
    dpc: torch.Tensor
    uniqueness: torch.Tensor
    novelty_level: torch.Tensor


def token_stats(features: torch.Tensor, config: MMGConfig) -> TokenStats:
    """Compute :class:`TokenStats` for ``features: (T, P, D)``."""
    unit32 = torch.nn.functional.normalize(features.float(), dim=-1)
    unit = unit32.to(features.dtype)  # the two products below run in the input dtype
    gram = (unit @ unit.transpose(1, 2)).float()
    uniqueness = _uniqueness(unit)
    floor = config.novelty_floor
    novelty = floor + (1.0 - floor) * uniqueness.mean(dim=1)
    return TokenStats(
        frame_similarity=_adjacent_frame_similarity(unit32),
        gram=gram,
        dpc=_dpc_scores(gram, config.knn),
        uniqueness=uniqueness,
        novelty_level=torch.round(novelty * config.novelty_levels),
    )


def _adjacent_frame_similarity(unit: torch.Tensor) -> torch.Tensor:
    """unit: (T, P, D) float32 unit tokens -> (T-1,) cosine of consecutive frame embeddings."""
    frames = torch.nn.functional.normalize(unit.mean(dim=1), dim=-1)
    return (frames[:-1] * frames[1:]).sum(dim=-1)


def _uniqueness(unit: torch.Tensor) -> torch.Tensor:
    """unit: (T, P, D) -> (T, P) float32, 1 - best cosine to the previous frame, clamped to [0, 1]."""
    first = unit.new_ones(1, unit.shape[1], dtype=torch.float32)
    if unit.shape[0] == 1:
        return first
    best = (unit[1:] @ unit[:-1].transpose(1, 2)).float().amax(dim=2)
    return torch.cat([first, (1.0 - best).clamp(0.0, 1.0)])


def _dpc_scores(gram: torch.Tensor, knn: int) -> torch.Tensor:
    """Density-peak score of every token within its frame.

    gram: (T, P, P) float32 cosine similarities. Distances are ||u_i - u_j|| of unit tokens
    (sqrt(2 - 2 cos)); density rho_i = exp(-mean squared distance to the k nearest tokens);
    delta_i = distance to the nearest denser token (equal densities: the lower index counts
    as denser), or the largest distance for the densest token. Returns (T, P) rho * delta.
    """
    frames, tokens, _ = gram.shape
    if tokens == 1:
        return gram.new_zeros(frames, 1)
    squared = (2.0 - 2.0 * gram).clamp(min=0.0)
    self_pair = torch.eye(tokens, dtype=torch.bool, device=gram.device)
    nearest = torch.topk(squared.masked_fill(self_pair, float("inf")), min(knn, tokens - 1),
                         dim=2, largest=False).values
    density = torch.exp(-nearest.mean(dim=2))
    distance = squared.sqrt()
    index = torch.arange(tokens, device=gram.device)
    other, this = density.unsqueeze(1), density.unsqueeze(2)  # (T, 1, P) and (T, P, 1)
    denser = (other > this) | ((other == this) & (index < index.unsqueeze(1)))
    to_denser = distance.masked_fill(~denser, float("inf")).amin(dim=2)
    delta = torch.where(denser.any(dim=2), to_denser, distance.amax(dim=2))
    return density * delta


def token_scores(stats: TokenStats, segment_start: torch.Tensor, config: MMGConfig) -> torch.Tensor:
    """TG-DPC score (T, P): dpc * (uniqueness_floor + uniqueness), uniqueness 1 in a segment's first frame.

    segment_start: (T,) bool, True where a segment begins.
    """
    uniqueness = torch.where(segment_start.unsqueeze(1), torch.ones_like(stats.uniqueness), stats.uniqueness)
    return stats.dpc * (config.uniqueness_floor + uniqueness)


def frame_weight(novelty_level: torch.Tensor, segment_total: torch.Tensor, scale: float) -> torch.Tensor:
    """Integer budget weight of each frame (elementwise, float32 holding integers >= 1).

    A segment's share grows with the square root of its total novelty (diminishing returns),
    and is split over its frames in proportion to their novelty:
    weight = max(1, round(scale * level / sqrt(segment_total))).
    """
    return torch.round(novelty_level / segment_total.sqrt() * scale).clamp(min=1.0)


def weight_scale(num_tokens: int, novelty_levels: int) -> tuple[int, float]:
    """(max weight, scale) keeping every budget product below 2**24 (exact in float32).

    Weights are at most ``(2**24 - 1) // (2 * num_tokens)``; ``frame_weight`` reaches that bound
    at level / sqrt(total) = sqrt(novelty_levels).
    """
    max_weight = (2**24 - 1) // (2 * num_tokens)
    return max_weight, float(torch.tensor(max_weight / novelty_levels**0.5, dtype=torch.float32))
