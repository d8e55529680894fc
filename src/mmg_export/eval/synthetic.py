"""Seeded synthetic token videos (T, P, D) that stress each decision of MMG-Vid.

The tests, the parity suites and ``scripts/gpu_parity.py`` draw their inputs from here.
"""
from __future__ import annotations

import torch


def random_video(gen: torch.Generator, frames: int, tokens: int, dim: int) -> torch.Tensor:
    return torch.randn(frames, tokens, dim, generator=gen)


def static_video(gen: torch.Generator, frames: int, tokens: int, dim: int) -> torch.Tensor:
    """One frame repeated exactly: every later frame has zero novelty."""
    return torch.randn(1, tokens, dim, generator=gen).expand(frames, tokens, dim).clone()


def scene_cuts(gen: torch.Generator, frames: int, tokens: int, dim: int, scenes: int = 3) -> torch.Tensor:
    """``scenes`` shots of near-identical frames (small motion noise), hard cuts between them."""
    shot = torch.randint(0, scenes, (frames,), generator=gen).sort().values
    base = torch.randn(scenes, tokens, dim, generator=gen)
    return base[shot] + 0.05 * torch.randn(frames, tokens, dim, generator=gen)


def duplicated_frames(gen: torch.Generator, frames: int, tokens: int, dim: int) -> torch.Tensor:
    """Random frames where about half are exact copies of the frame before (frozen video)."""
    video = torch.randn(frames, tokens, dim, generator=gen)
    for t in range(1, frames):
        if torch.rand((), generator=gen) < 0.5:
            video[t] = video[t - 1]
    return video


def drifting_video(gen: torch.Generator, frames: int, tokens: int, dim: int) -> torch.Tensor:
    """A slow pan: each frame is the previous plus a little noise, so similarity decays gradually."""
    steps = 0.3 * torch.randn(frames, tokens, dim, generator=gen)
    return torch.randn(1, tokens, dim, generator=gen) + steps.cumsum(dim=0)


def clustered_tokens(gen: torch.Generator, frames: int, tokens: int, dim: int, centres: int = 4) -> torch.Tensor:
    """Every token an exact copy of one of a few centres per frame: tied scores within each frame."""
    base = torch.randn(frames, centres, dim, generator=gen)
    choice = torch.randint(0, centres, (frames, tokens), generator=gen)
    return torch.gather(base, 1, choice.unsqueeze(2).expand(frames, tokens, dim))


def low_rank(gen: torch.Generator, frames: int, tokens: int, dim: int, rank: int = 2) -> torch.Tensor:
    """Tokens in a rank-2 subspace: many near-equal similarities."""
    return torch.randn(frames, tokens, rank, generator=gen) @ torch.randn(rank, dim, generator=gen)


KINDS = {
    "random": random_video,
    "static": static_video,
    "cuts": scene_cuts,
    "duplicated": duplicated_frames,
    "drifting": drifting_video,
    "clustered": clustered_tokens,
    "low-rank": low_rank,
}


def make_video(kind: str, seed: int, frames: int, tokens: int, dim: int, **options: int) -> torch.Tensor:
    """A (frames, tokens, dim) fp32 video of one of :data:`KINDS`, seeded; ``options`` go to its maker."""
    return KINDS[kind](torch.Generator().manual_seed(seed), frames, tokens, dim, **options)


def letterboxed(seed: int, frames: int = 16, tokens: int = 49, dim: int = 32) -> torch.Tensor:
    """A frozen video (about half the frames repeat the previous one) with two rows of identical flat
    tokens (black bars) in every frame."""
    video = make_video("duplicated", seed, frames, tokens, dim)
    video[:, :7] = 0.01
    video[:, -7:] = 0.01
    return video


NEAR_TIE_FAMILIES = {
    "clustered-8": lambda seed: make_video("clustered", seed, 32, 196, 64, centres=8),  # issue 12's case, P = 196
    "duplicated-frames": lambda seed: make_video("duplicated", seed, 16, 49, 32),
    "letterbox": letterboxed,
    "low-rank": lambda seed: make_video("low-rank", seed, 16, 49, 32),
    "huge": lambda seed: make_video("cuts", seed, 16, 49, 32) * 1e30,
    "tiny": lambda seed: make_video("cuts", seed, 16, 49, 32) * 1e-30,
    "bf16-valued": lambda seed: make_video("clustered", seed, 16, 49, 32).bfloat16().float(),
}
"""Inputs whose scores tie or nearly tie: seed -> video. The deployed graphs must agree with the reference on them."""


def new_shot() -> torch.Tensor:
    """(5, 2, 4): frames 0-3 hold the same two tokens (e1, e2), frame 4 two new ones (e3, e4).

    P = 2, K = floor(3 + 0.5) = 3 at ratio 0.3. Frame similarities [1, 1, 1, 0]: lower median 1 ->
    threshold min(0.95, 1 - 4 * 0) = 0.95 -> one cut, before 4. Novelty: frames 1-3 repeat their
    predecessor: level round(64 * 0.1) = 6; segment starts (0, 4) count 64. Marginal weights
    sqrt(mean level): segment 0 sqrt(82 / 4) = 4.53, segment 1 sqrt(64) = 8 (times the same scale):
    shares 3 * w / (4 * 4.53 + 8) = 0.52 for frames 0-3 and 0.92 for frame 4: floors 0, the 3 units
    go to the largest remainders: frame 4, then frames 0 and 1 (ties to the lower index) ->
    [1, 1, 0, 0, 1]. Uniform: shares 0.6 each -> frames 0, 1, 2 -> [1, 1, 1, 0, 0]: the new shot
    keeps nothing.
    """
    video = torch.zeros(5, 2, 4)
    video[:4, 0, 0] = video[:4, 1, 1] = video[4, 0, 2] = video[4, 1, 3] = 1.0
    return video
