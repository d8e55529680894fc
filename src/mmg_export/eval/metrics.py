"""How well a set of kept video tokens represents the whole video, and segmentation scores.

Tokens are compared by cosine similarity. ``kept_indices`` are flat token indices
``t * P + p`` into ``features: (T, P, D)``, as in :class:`mmg_export.prune.Selection`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def _unit_tokens(features: torch.Tensor) -> torch.Tensor:
    """(T, P, D) -> (T * P, D) float32 tokens scaled to unit length."""
    return torch.nn.functional.normalize(features.reshape(-1, features.shape[-1]).float(), dim=-1)


def _kept_mask(num_tokens: int, kept_indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """(N,) bool, True at the kept flat indices; raise ValueError on an empty, repeated or out-of-range index."""
    kept = torch.as_tensor(kept_indices, dtype=torch.int64).reshape(-1)
    if kept.numel() == 0:
        raise ValueError("kept_indices is empty: expected at least one kept token")
    if int(kept.min()) < 0 or int(kept.max()) >= num_tokens:
        raise ValueError(f"kept_indices must lie in [0, {num_tokens}), got {kept.min()}..{kept.max()}")
    if kept.unique().numel() != kept.numel():
        raise ValueError("kept_indices has repeated indices: expected each token at most once")
    return torch.zeros(num_tokens, dtype=torch.bool).index_fill_(0, kept, True)


def coverage(features: torch.Tensor, kept_indices: torch.Tensor | Sequence[int]) -> float:
    """Mean, over the dropped tokens, of the best cosine similarity to any kept token (any frame).

    features: (T, P, D); kept_indices: (K,) flat indices. Higher is better: 1.0 means every
    dropped token has an exact (direction) copy among the kept ones. 1.0 when nothing is dropped.
    """
    unit = _unit_tokens(features)
    mask = _kept_mask(unit.shape[0], kept_indices)
    dropped = unit[~mask]
    if dropped.shape[0] == 0:
        return 1.0
    return float((dropped @ unit[mask].T).amax(dim=1).mean())


def facility_value(features: torch.Tensor, kept_indices: torch.Tensor | Sequence[int]) -> float:
    """Facility-location value: mean, over every token (kept ones count 1.0), of max(0, the best
    cosine similarity to a kept token). The objective the facility-location greedy maximises.

    features: (T, P, D); kept_indices: (K,) flat indices.
    """
    unit = _unit_tokens(features)
    mask = _kept_mask(unit.shape[0], kept_indices)
    return float((unit @ unit[mask].T).amax(dim=1).clamp(min=0.0).mean())


def merged_coverage(features: torch.Tensor, kept_indices: torch.Tensor | Sequence[int],
                    kept_features: torch.Tensor) -> float:
    """:func:`coverage` measured against the features actually handed on (e.g. merged averages).

    features: (T, P, D); kept_indices: (K,) flat indices; kept_features: (K, D). Mean, over the
    dropped tokens, of the best cosine similarity to any row of ``kept_features``.
    """
    unit = _unit_tokens(features)
    mask = _kept_mask(unit.shape[0], kept_indices)
    if bool(mask.all()):
        return 1.0
    kept = torch.nn.functional.normalize(kept_features.float(), dim=-1)
    return float((unit[~mask] @ kept.T).amax(dim=1).mean())


def shots_kept(kept_indices: torch.Tensor | Sequence[int], frames: int, tokens: int,
               cuts: Sequence[int]) -> tuple[int, int]:
    """(shots with at least one kept token, shots) for shots starting at frame 0 and at ``cuts``.

    kept_indices: flat indices t * tokens + p into ``frames`` frames; cuts: first frames of the
    shots after the first, in (0, frames).
    """
    starts = [0] + sorted(set(cuts) - {0})
    if starts[-1] >= frames:
        raise ValueError(f"cuts {list(cuts)} must lie in (0, {frames})")
    kept_frames = set((torch.as_tensor(kept_indices).reshape(-1) // tokens).tolist())
    ends = starts[1:] + [frames]
    return sum(any(f in kept_frames for f in range(a, b)) for a, b in zip(starts, ends)), len(starts)


def redundancy(features: torch.Tensor, kept_indices: torch.Tensor | Sequence[int]) -> float:
    """Mean, over the kept tokens, of the best cosine similarity to another kept token (any frame).

    features: (T, P, D); kept_indices: (K,) flat indices. Lower is better: two kept tokens that
    are exact copies both score 1.0. A single kept token has no other to repeat: 0.0.
    """
    unit = _unit_tokens(features)
    kept = unit[_kept_mask(unit.shape[0], kept_indices)]
    if kept.shape[0] == 1:
        return 0.0
    gram = (kept @ kept.T).fill_diagonal_(float("-inf"))
    return float(gram.amax(dim=1).mean())


def boundary_scores(predicted_starts: Sequence[int], true_starts: Sequence[int],
                    tolerance: int = 1) -> tuple[float, float]:
    """(precision, recall) of predicted segment-start frames against the true ones.

    A start is the first frame of a segment; frame 0 always starts one and is ignored in both
    lists. A predicted and a true start match when they differ by at most ``tolerance`` frames;
    each is matched at most once (in frame order, which is an optimal matching for equal windows).
    No predicted starts: precision 1.0 (no false cut). No true starts: recall 1.0 (none to find),
    so on a clip without cuts only precision, that is false cuts, is informative.
    """
    predicted = sorted(set(predicted_starts) - {0})
    truth = sorted(set(true_starts) - {0})
    used: set[int] = set()
    for cut in truth:
        match = next((p for p in predicted if p not in used and abs(p - cut) <= tolerance), None)
        if match is not None:
            used.add(match)
    precision = len(used) / len(predicted) if predicted else 1.0
    recall = len(used) / len(truth) if truth else 1.0
    return precision, recall
