"""Baselines behind the same interface as :func:`mmg_export.select_tokens`, for comparison.

* ``uniform``: the same TG-DPC token scores with a static equal budget per frame;
* ``temporal_difference``: vLLM-EVS-style, drop the tokens that barely changed from the same
  position in the previous frame (frame 0 is kept first);
* ``random``: K tokens drawn uniformly with a seeded generator.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .config import MMGConfig, Selection, check_features, check_ratio, keep_count
from .reference import select_tokens


def uniform(features: torch.Tensor | np.ndarray, ratio: float = 0.25,
            config: MMGConfig | None = None) -> Selection:
    """MMG-Vid token scoring with an equal budget per frame (the static split)."""
    return select_tokens(features, ratio, dataclasses.replace(config or MMGConfig(), budget="uniform"))


def temporal_difference(features: torch.Tensor | np.ndarray, ratio: float = 0.25,
                        config: MMGConfig | None = None) -> Selection:
    """Keep the K tokens that changed most from the same position in the previous frame.

    score = 1 - cos(x[t, p], x[t-1, p]); frame 0 scores 2 (above any change), so it is kept
    first. Ties go to the lower flat index.
    """
    features = check_features(features)
    frames, tokens, _ = features.shape
    unit = torch.nn.functional.normalize(features.float(), dim=-1)
    change = 1.0 - (unit[1:] * unit[:-1]).sum(dim=-1)
    scores = torch.cat([change.new_full((1, tokens), 2.0), change])
    order = torch.sort(-scores.reshape(-1), stable=True).indices
    kept = sorted(order[:keep_count(frames * tokens, check_ratio(ratio))].tolist())
    return _selection(features, kept, scores)


def random(features: torch.Tensor | np.ndarray, ratio: float = 0.25,
           config: MMGConfig | None = None, seed: int = 0) -> Selection:
    """K tokens drawn uniformly without replacement, seeded."""
    features = check_features(features)
    frames, tokens, _ = features.shape
    count = keep_count(frames * tokens, check_ratio(ratio))
    drawn = torch.randperm(frames * tokens, generator=torch.Generator().manual_seed(seed))[:count]
    return _selection(features, sorted(drawn.tolist()), None)


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


METHODS = {"mmg-vid": select_tokens, "uniform": uniform, "temporal-difference": temporal_difference,
           "random": random}
