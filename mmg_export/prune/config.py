"""MMG-Vid settings, the selection result, and input validation shared by both forms."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MMGConfig:
    """Every MMG-Vid knob, with this project's defaults (``docs/algorithm.md`` explains each).

    tau: frames t and t+1 may start a new segment when the cosine similarity of their mean
        token embeddings is below ``tau`` (from the paper: 0.95).
    min_segment_frames: no segment is shorter than this many frames; a boundary closer than
        this to a stronger one (lower similarity) is dropped, so the fragment joins the
        neighbour it resembles more.
    max_segments: at most this many segments; the weakest boundaries are dropped.
    knn: neighbours used for the DPC density of a token within its frame.
    novelty_levels: frame novelty is quantised to integers 0..novelty_levels (exact budget
        arithmetic in every runtime).
    novelty_floor: share of a frame's weight that it gets even when nothing in it is new.
    uniqueness_floor: added to a token's uniqueness before it multiplies the DPC score, so that
        an exactly repeated frame still ranks its tokens by diversity.
    budget: "marginal" (MMG-Vid: segment- and novelty-weighted) or "uniform" (equal per frame;
        the static-split baseline).
    merge: average every dropped token into its most similar kept token of the same frame.
    """

    tau: float = 0.95
    min_segment_frames: int = 2
    max_segments: int = 8
    knn: int = 5
    novelty_levels: int = 64
    novelty_floor: float = 0.1
    uniqueness_floor: float = 0.1
    budget: str = "marginal"
    merge: bool = False

    def __post_init__(self) -> None:
        _expect(0.0 < self.tau <= 1.0, "tau", self.tau, "a float in (0, 1]")
        _expect(self.min_segment_frames >= 1, "min_segment_frames", self.min_segment_frames, "an int >= 1")
        _expect(self.max_segments >= 1, "max_segments", self.max_segments, "an int >= 1")
        _expect(self.knn >= 1, "knn", self.knn, "an int >= 1")
        _expect(1 <= self.novelty_levels <= 1024, "novelty_levels", self.novelty_levels, "an int in [1, 1024]")
        _expect(0.0 <= self.novelty_floor <= 1.0, "novelty_floor", self.novelty_floor, "a float in [0, 1]")
        _expect(self.uniqueness_floor >= 0.0, "uniqueness_floor", self.uniqueness_floor, "a float >= 0")
        _expect(self.budget in ("marginal", "uniform"), "budget", self.budget, "'marginal' or 'uniform'")

    @property
    def tau32(self) -> float:
        """``tau`` rounded to float32, the precision every form compares in."""
        return float(np.float32(self.tau))


@dataclass
class Selection:
    """The tokens a pruning method keeps, with diagnostics.

    indices: (K,) int64 flat token indices t * P + p, ascending (temporal order).
    features: (K, D) the kept tokens (merged averages when ``merge`` is on).
    segment_of_frame: (T,) int64 segment id of every frame, 0-based.
    budget_per_frame: (T,) int64 tokens kept per frame; sums to K.
    budget_per_segment: (S,) int64 tokens kept per segment.
    scores: (T, P) float32 token scores the method ranked by (None for random).
    """

    indices: torch.Tensor
    features: torch.Tensor
    segment_of_frame: torch.Tensor
    budget_per_frame: torch.Tensor
    budget_per_segment: torch.Tensor
    scores: torch.Tensor | None


def _expect(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r}: expected {expected}")


def keep_count(num_tokens: int, ratio: float) -> int:
    """K = max(1, round(ratio * num_tokens)), halves rounded up."""
    return max(1, int(np.floor(ratio * num_tokens + 0.5)))


def check_ratio(ratio: float) -> float:
    """Return ``ratio`` as float, or raise ValueError unless 0 < ratio <= 1."""
    _expect(isinstance(ratio, (int, float)) and 0.0 < ratio <= 1.0, "ratio", ratio, "a number in (0, 1]")
    return float(ratio)


def check_shape(frames: int, tokens_per_frame: int, dim: int) -> None:
    """Raise ValueError unless the static video-token shape is usable."""
    _expect(isinstance(frames, int) and frames >= 1, "frames", frames, "an int >= 1")
    _expect(isinstance(tokens_per_frame, int) and tokens_per_frame >= 1, "tokens_per_frame",
            tokens_per_frame, "an int >= 1")
    _expect(isinstance(dim, int) and dim >= 1, "dim", dim, "an int >= 1")


def check_features(features: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Validate ``features: (T, P, D)`` float with finite values; return it as a torch tensor.

    The input is never modified; numpy arrays are wrapped without copying.
    """
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    _expect(isinstance(features, torch.Tensor), "features", type(features).__name__,
            "a torch.Tensor or numpy array of shape (T, P, D)")
    _expect(features.dim() == 3, "features", f"tensor of shape {tuple(features.shape)}",
            "rank 3: (frames T, tokens per frame P, dim D)")
    _expect(features.is_floating_point(), "features", f"tensor of dtype {features.dtype}", "a floating dtype")
    _expect(features.numel() >= 1, "features", f"tensor of shape {tuple(features.shape)}",
            "at least one token (T, P, D >= 1)")
    _expect(bool(torch.isfinite(features).all()), "features", "a tensor with NaN or inf values",
            "finite values")
    return features
