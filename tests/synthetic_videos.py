"""Seeded synthetic token videos (T, P, D) that stress each decision of MMG-Vid."""
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


def make_video(kind: str, seed: int, frames: int, tokens: int, dim: int) -> torch.Tensor:
    return KINDS[kind](torch.Generator().manual_seed(seed), frames, tokens, dim)
