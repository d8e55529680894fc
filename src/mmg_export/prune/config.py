"""MMG-Vid settings, the selection result, and input validation shared by both forms."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MMGConfig:
    """Every MMG-Vid knob, with this project's defaults (``docs/algorithm.md`` explains each).

    tau: frames t and t+1 are never cut apart when the cosine similarity of their mean token
        embeddings is at least ``tau`` (the paper's value, 0.95, as an upper bound).
    cut_factor: a cut candidate is a pair whose dissimilarity 1 - sim exceeds ``cut_factor`` times
        the clip's median dissimilarity (the threshold follows the encoder's own statistics).
    min_segment_frames: no segment is shorter than this many frames; a candidate closer than this
        to a stronger one (lower similarity) is dropped.
    max_segments: at most this many segments; the weakest boundaries are dropped.
    rounds: every frame picks its tokens in this many rounds (half of its budget in the first of
        two), each round by marginal gain given everything kept before it.
    substeps: each group takes its pick in this many steps, its own frames' coverage and gains
        refreshed between them (a batched pick takes near-copies together where frames share
        nothing; smaller steps come closer to a one-token-at-a-time greedy).
    stride: frames t with the same t mod ``stride`` pick together; the others see their picks.
        With 2 * chain_steps (the default, 4), what one coverage update carries from two frames
        picking together (chain_steps each way) meets only in the frame between them, at the
        group's first step; each later step carries older coverage one frame further, so with more
        than 4 substeps frames of one group come to see each other's early steps.
    chain_steps: frame-to-frame steps coverage is carried along a segment before each pick.
    novelty_levels: frame novelty is quantised to integers 0..novelty_levels (exact budget
        arithmetic in every runtime).
    novelty_floor: share of a frame's novelty that it has even when nothing in it is new.
    budget: "marginal" (MMG-Vid: segments weighted by the square root of their novelty) or
        "uniform" (equal per frame; the static-split baseline).
    merge: average every dropped token into its most similar kept token of the same frame.
    """

    tau: float = 0.95
    cut_factor: float = 4.0
    min_segment_frames: int = 1
    max_segments: int = 8
    rounds: int = 2
    substeps: int = 3
    stride: int = 4
    chain_steps: int = 2
    novelty_levels: int = 64
    novelty_floor: float = 0.1
    budget: str = "marginal"
    merge: bool = False

    def __post_init__(self) -> None:
        _expect(0.0 < self.tau <= 1.0, "tau", self.tau, "a float in (0, 1]")
        _expect(self.cut_factor >= 1.0, "cut_factor", self.cut_factor, "a float >= 1")
        _expect(_is_int(self.min_segment_frames) and self.min_segment_frames >= 1, "min_segment_frames",
                self.min_segment_frames, "an int >= 1")
        _expect(_is_int(self.max_segments) and self.max_segments >= 1, "max_segments", self.max_segments,
                "an int >= 1")
        _expect(_is_int(self.rounds) and 1 <= self.rounds <= 8, "rounds", self.rounds, "an int in [1, 8]")
        _expect(_is_int(self.substeps) and 1 <= self.substeps <= 8, "substeps", self.substeps,
                "an int in [1, 8]")
        _expect(_is_int(self.stride) and 1 <= self.stride <= 8, "stride", self.stride, "an int in [1, 8]")
        _expect(_is_int(self.chain_steps) and 0 <= self.chain_steps <= 8, "chain_steps", self.chain_steps,
                "an int in [0, 8]")
        _expect(_is_int(self.novelty_levels) and 1 <= self.novelty_levels <= 1024, "novelty_levels",
                self.novelty_levels, "an int in [1, 1024]")
        _expect(0.0 <= self.novelty_floor <= 1.0, "novelty_floor", self.novelty_floor, "a float in [0, 1]")
        _expect(self.budget in ("marginal", "uniform"), "budget", self.budget, "'marginal' or 'uniform'")
        _expect(isinstance(self.merge, bool), "merge", self.merge, "True or False")


@dataclass
class Selection:
    """The tokens a pruning method keeps, with diagnostics.

    indices: (K,) int64 flat token indices t * P + p, ascending (temporal order).
    features: (K, D) the kept tokens (merged averages when ``merge`` is on).
    segment_of_frame: (T,) int64 segment id of every frame, 0-based.
    budget_per_frame: (T,) int64 tokens kept per frame; sums to K.
    budget_per_segment: (S,) int64 tokens kept per segment.
    scores: (T, P) float32 token scores the method ranked by (MMG-Vid: the marginal gain of each
        token when its frame made its last pick; None for methods without scores).
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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def keep_count(num_tokens: int, ratio: float) -> int:
    """K = max(1, round(ratio * num_tokens)), halves rounded up."""
    return max(1, int(np.floor(ratio * num_tokens + 0.5)))


def check_ratio(ratio: float) -> float:
    """Return ``ratio`` as float, or raise ValueError unless 0 < ratio <= 1."""
    _expect(isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0.0 < ratio <= 1.0,
            "ratio", ratio, "a number in (0, 1]")
    return float(ratio)


def check_shape(frames: int, tokens_per_frame: int, dim: int) -> None:
    """Raise ValueError unless the static video-token shape is usable."""
    _expect(_is_int(frames) and frames >= 1, "frames", frames, "an int >= 1")
    _expect(_is_int(tokens_per_frame) and tokens_per_frame >= 1, "tokens_per_frame", tokens_per_frame,
            "an int >= 1")
    _expect(_is_int(dim) and dim >= 1, "dim", dim, "an int >= 1")


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
