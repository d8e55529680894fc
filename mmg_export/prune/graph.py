"""MMG-Vid as a fixed-shape graph that exports to ONNX and parses in TensorRT.

It selects exactly the tokens of :func:`.reference.select_tokens` (tests pin the two together),
with every decision written as static-shape tensor algebra:

* no data-dependent Python control flow, no NonZero / Unique / Compress;
* TopK only within a frame (k = knn), never over all tokens: ranks come from comparison counts
  over T x T (frames) or P x P (tokens of one frame);
* budget arithmetic on integers held in float32 (every product stays below 2**24, so it is
  exact), so that no runtime needs integer division;
* kept tokens compacted with a float CumSum and one ScatterElements without reduction.
"""
from __future__ import annotations

import torch

from .config import MMGConfig, check_ratio, check_shape, keep_count
from .scores import TokenStats, frame_weight, token_scores, token_stats, weight_scale


class PruningGraph(torch.nn.Module):
    """Fixed-budget MMG-Vid pruner for ``features: (frames, tokens_per_frame, dim)``.

    ``forward(features)`` returns ``(kept_features (K, dim), kept_indices (K,) int64)``, indices
    ascending (temporal order), K = max(1, floor(ratio * frames * tokens_per_frame + 0.5)).
    """

    def __init__(self, frames: int, tokens_per_frame: int, dim: int, ratio: float = 0.25,
                 config: MMGConfig | None = None) -> None:
        super().__init__()
        check_shape(frames, tokens_per_frame, dim)
        self.frames, self.tokens, self.dim = frames, tokens_per_frame, dim
        self.ratio = check_ratio(ratio)
        self.config = config or MMGConfig()
        self.keep = keep_count(frames * tokens_per_frame, self.ratio)
        _, self.weight_scale = weight_scale(frames * tokens_per_frame, self.config.novelty_levels)
        frame_index = torch.arange(frames)
        self.register_buffer("frame_index", frame_index, persistent=False)
        self.register_buffer("token_index", torch.arange(tokens_per_frame), persistent=False)
        self.register_buffer("flat_index", torch.arange(frames * tokens_per_frame), persistent=False)
        gap = (frame_index[:, None] - frame_index[None, :]).abs()
        self.register_buffer("near_cut", (gap > 0) & (gap < self.config.min_segment_frames), persistent=False)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        expected = (self.frames, self.tokens, self.dim)
        if tuple(features.shape) != expected:
            raise ValueError(f"features: shape {tuple(features.shape)}, expected {expected}")
        stats = token_stats(features, self.config)
        starts = self.segment_starts(stats.frame_similarity)
        budget = self.allocate(self.frame_weights(stats, starts))
        keep = self.rank_in_frame(token_scores(stats, starts, self.config)) < budget.unsqueeze(1)
        indices = self.compact(keep.reshape(-1))
        flat = features.reshape(-1, self.dim)
        if self.config.merge:
            flat = self.merge_dropped(features, stats.gram, keep).reshape(-1, self.dim)
        return flat[indices], indices

    def segment_starts(self, similarity: torch.Tensor) -> torch.Tensor:
        """similarity: (T-1,) -> (T,) bool, True where a segment begins (see the reference)."""
        frames, shortest = self.frames, self.config.min_segment_frames
        first = torch.ones(1, dtype=torch.bool, device=similarity.device)
        if frames == 1:
            return first
        # cut t sits before frame t; pad so that row/column t is cut t (t = 0 is never a cut)
        sim = torch.cat([similarity.new_full((1,), float("inf")), similarity])
        t = self.frame_index
        candidate = (sim < self.config.tau32) & (t >= shortest) & (t <= frames - shortest)
        stronger = (sim.unsqueeze(1) < sim) | ((sim.unsqueeze(1) == sim) & (t.unsqueeze(1) < t))
        beaten = (candidate.unsqueeze(1) & self.near_cut & stronger).any(dim=0)
        local = candidate & ~beaten
        rank = (local.unsqueeze(1) & stronger).sum(dim=0)
        cut = local & (rank < self.config.max_segments - 1)
        return torch.cat([first, cut[1:]])

    def frame_weights(self, stats: TokenStats, starts: torch.Tensor) -> torch.Tensor:
        """(T,) float32 integer weights: see :func:`.reference.frame_weights`."""
        if self.config.budget == "uniform":
            return torch.ones(self.frames, device=starts.device)
        level = torch.where(starts, torch.full_like(stats.novelty_level, self.config.novelty_levels),
                            stats.novelty_level)
        segment = torch.cumsum(starts.float(), dim=0)
        same_segment = (segment.unsqueeze(1) == segment).float()
        return frame_weight(level, same_segment @ level, self.weight_scale)

    def allocate(self, weight: torch.Tensor) -> torch.Tensor:
        """weight: (T,) integers in float32 -> (T,) int64 budgets summing to K.

        Closed form of the reference's water-filling: frame j is capped iff the water level at
        which it fills, P / w_j, is reachable, i.e. P * sum_i min(w_i, w_j) <= K * w_j.
        """
        cap, total = float(self.tokens), float(self.keep)
        capped = cap * torch.minimum(weight.unsqueeze(1), weight).sum(dim=0) <= total * weight
        free = ~capped
        rest = total - cap * capped.float().sum()
        weight_free = torch.where(free, weight, torch.zeros_like(weight)).sum()
        share = rest * weight
        base = torch.floor(share / weight_free.clamp(min=1.0))
        remainder = torch.where(free, share - weight_free * base, torch.full_like(share, -1.0))
        leftover = rest - torch.where(free, base, torch.zeros_like(base)).sum()
        t = self.frame_index
        ahead = (remainder.unsqueeze(1) > remainder) | ((remainder.unsqueeze(1) == remainder) & (t.unsqueeze(1) < t))
        rank = (ahead & free.unsqueeze(1)).float().sum(dim=0)
        budget = torch.where(capped, torch.full_like(base, cap), base + (free & (rank < leftover)).float())
        return budget.long()

    def rank_in_frame(self, scores: torch.Tensor) -> torch.Tensor:
        """scores: (T, P) -> (T, P) int64 rank of each token in its frame (0 = best; ties by index)."""
        other, this = scores.unsqueeze(1), scores.unsqueeze(2)
        p = self.token_index
        ahead = (other > this) | ((other == this) & (p < p.unsqueeze(1)))
        return ahead.sum(dim=2)

    def compact(self, keep: torch.Tensor) -> torch.Tensor:
        """keep: (N,) bool with exactly K True -> (K,) int64 their indices, ascending."""
        position = torch.cumsum(keep.float(), dim=0) - 1.0
        slot = torch.where(keep, position, torch.full_like(position, float(self.keep))).long()
        out = torch.zeros(self.keep + 1, dtype=torch.int64, device=keep.device)
        return out.scatter(0, slot, self.flat_index)[: self.keep]

    def merge_dropped(self, features: torch.Tensor, gram: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(T, P, D) where each kept token is the mean of itself and the dropped tokens nearest to it."""
        target = gram.masked_fill(~keep.unsqueeze(1), float("-inf")).argmax(dim=2)
        assign = torch.nn.functional.one_hot(target, self.tokens).to(features.dtype)
        assign = assign * keep.any(dim=1, keepdim=True).unsqueeze(2).to(features.dtype)
        keep_f = keep.to(features.dtype)
        assign = assign * (1 - keep_f).unsqueeze(2) + torch.diag_embed(keep_f)
        merged = assign.transpose(1, 2) @ features
        return merged / assign.sum(dim=1).clamp(min=1).unsqueeze(2)
