"""MMG-Vid as a fixed-shape graph that exports to ONNX and parses in TensorRT.

It selects exactly the tokens of :func:`.reference.select_tokens` (tests pin the two together),
with every decision written as static-shape tensor algebra:

* no data-dependent Python control flow, no NonZero / Unique / Compress;
* TopK only within a frame (k = P), never over all tokens; other ranks come from comparison
  counts over T x T (frames) or P x P (tokens of one frame); every decision compares quantised
  values turned into unique integer keys (:mod:`.scores`), so no runtime breaks a tie;
* budget arithmetic on integers held in float32 (every product stays below 2**24, so it is
  exact), so that no runtime needs integer division;
* the token stage is ``rounds * stride`` batched picks over all frames at once (6 by default),
  never a loop over tokens or frames;
* kept tokens compacted with a float CumSum and one ScatterElements without reduction.
"""
from __future__ import annotations

import numpy as np
import torch

from .config import MMGConfig, check_ratio, check_shape, keep_count
from .scores import (KEY_LIMIT, TokenStats, band, coverage, cut_threshold, frame_weight, marginal_gain, merge_keys,
                     peak_scores, pick_levels, quantise, rank_keys, similarity_levels, token_stats,
                     weight_scale)


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
        self.gain_levels, self.score_levels = pick_levels(tokens_per_frame)
        frame_index = torch.arange(frames)
        self.register_buffer("frame_index", frame_index, persistent=False)
        self.register_buffer("rounds_done", self.rounds_done_after_each_pick(frame_index), persistent=False)
        self.register_buffer("token_index", torch.arange(tokens_per_frame), persistent=False)
        self.register_buffer("flat_index", torch.arange(frames * tokens_per_frame), persistent=False)
        gap = (frame_index[:, None] - frame_index[None, :]).abs()
        self.register_buffer("near_cut", (gap > 0) & (gap < self.config.min_segment_frames), persistent=False)

    def rounds_done_after_each_pick(self, frame_index: torch.Tensor) -> torch.Tensor:
        """(T, rounds * stride, 1) float32: the rounds frame t has picked in after each pick (its group
        t mod stride picks in pick (round - 1) * stride + group)."""
        stride, rounds = self.config.stride, self.config.rounds
        group = (frame_index % stride).unsqueeze(1)
        pick = torch.arange(rounds * stride)
        return (pick // stride + (group <= pick % stride).long()).float().unsqueeze(2)

    def forward(self, features: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.check(features)
        stats = token_stats(features, self.config)
        starts = self.segment_starts(stats.frame_similarity)
        budget = self.allocate(self.frame_weights(stats, starts))
        keep = self.pick_tokens(stats, starts, budget)
        indices = self.compact(keep.reshape(-1))
        flat = features.reshape(-1, self.dim)
        if self.config.merge:
            flat = self.merge_dropped(features, stats.gram, keep.bool()).reshape(-1, self.dim)
        return torch.nn.functional.embedding(indices, flat), indices  # the rows of flat (one Gather)

    def check(self, features: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``features`` as a float tensor of the graph's shape (numpy arrays are wrapped), or one
        clear error: TypeError for other types, ValueError for another dtype or shape."""
        expected = (self.frames, self.tokens, self.dim)
        if isinstance(features, np.ndarray):
            features = torch.from_numpy(features)
        if not isinstance(features, torch.Tensor):
            raise TypeError(f"features: expected a torch.Tensor or numpy array of shape {expected}, "
                            f"got {type(features).__name__}")
        if not features.is_floating_point():
            raise ValueError(f"features: dtype {features.dtype}, expected a floating dtype")
        if tuple(features.shape) != expected:
            raise ValueError(f"features: shape {tuple(features.shape)}, expected {expected}")
        return features

    def segment_starts(self, similarity: torch.Tensor) -> torch.Tensor:
        """similarity: (T-1,) -> (T,) bool, True where a segment begins (see the reference).

        Row and column t stand for the cut before frame t (frame 0: similarity inf, never a cut).
        """
        frames, config = self.frames, self.config
        if frames == 1:
            return torch.ones(1, dtype=torch.bool, device=similarity.device)
        t = self.frame_index
        sim = torch.cat([similarity.new_full((1,), float("inf")), quantise(similarity, similarity_levels())])
        # [u, t]: cut u is stronger than cut t (lower similarity, then lower index), a total order
        stronger = ((sim.unsqueeze(1) < sim) | ((sim.unsqueeze(1) == sim) & (t.unsqueeze(1) < t))).float()
        # the lower median of the T-1 similarities has rank (T - 2) // 2 (inf ranks last)
        median = torch.where(stronger.sum(dim=0) == (frames - 2) // 2, sim, 0.0).sum()
        candidate = sim < cut_threshold(sim, median, config)
        shortest = config.min_segment_frames
        if shortest > 1:  # both sides long enough, and no stronger candidate closer than `shortest`
            candidate = candidate & (t >= shortest) & (t <= frames - shortest)
            candidate = candidate & ~(candidate.unsqueeze(1) & self.near_cut & (stronger > 0)).any(dim=0)
        rank = torch.where(candidate.unsqueeze(1), stronger, 0.0).sum(dim=0)  # stronger candidates
        return (candidate & (rank < config.max_segments - 1)) | (t == 0)

    def frame_weights(self, stats: TokenStats, starts: torch.Tensor) -> torch.Tensor:
        """(T,) float32 integer weights: see :func:`.reference.frame_weights`."""
        if self.config.budget == "uniform":
            return torch.ones(self.frames, device=starts.device)
        level = torch.where(starts, float(self.config.novelty_levels), stats.novelty_level)
        segment = torch.cumsum(starts.float(), dim=0)
        same_segment = segment.unsqueeze(1) == segment
        total = torch.where(same_segment, level, 0.0).sum(dim=1)
        return frame_weight(total, same_segment.float().sum(dim=1), self.weight_scale)

    def allocate(self, weight: torch.Tensor) -> torch.Tensor:
        """weight: (T,) integers in float32 -> (T,) float32 integer budgets summing to K.

        Closed form of the reference's water-filling: frame j is capped iff the water level at
        which it fills, P / w_j, is reachable, i.e. P * sum_i min(w_i, w_j) <= K * w_j. The free
        frames share the rest in proportion to their weights; the leftover units go to the largest
        remainders, ties to the lower frame.
        """
        cap, total = float(self.tokens), float(self.keep)
        capped = cap * torch.minimum(weight.unsqueeze(1), weight).sum(dim=0) <= total * weight
        free_weight = torch.where(capped, 0.0, weight)
        rest = total - torch.where(capped, cap, 0.0).sum()
        share = rest * free_weight
        weight_free = free_weight.sum()
        base = torch.floor(share / weight_free.clamp(min=1.0))  # 0 for capped frames
        remainder = torch.where(capped, -1.0, share - weight_free * base)  # integers below 2**23
        leftover = rest - base.sum()
        # [u, t]: frame u's remainder is larger, or equal and u < t (the half only breaks ties)
        t = self.frame_index
        ahead = remainder.unsqueeze(1) + 0.5 * (t.unsqueeze(1) < t).float() > remainder
        rank = ahead.float().sum(dim=0)
        return torch.where(capped, cap, base + (rank < leftover).float())

    def pick_tokens(self, stats: TokenStats, starts: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
        """(T, P) float32, 1 for the tokens every frame keeps (see :func:`.reference.pick_tokens`).

        Each of the ``rounds * stride`` picks is batched over all frames: every frame keeps the
        tokens of its highest unique keys (kept tokens rank first), as many as it holds after the
        pick (:meth:`held_after_each_pick`): the frames of the group take their new candidates.
        """
        config = self.config
        reach = band(stats, starts)
        kept, cover = None, None  # nothing kept or covered before the first pick
        for pick, held in enumerate(self.held_after_each_pick(budget)):
            if pick:
                cover = coverage(reach, kept, torch.zeros_like(kept) if cover is None else cover, config.chain_steps)
            gain_q = quantise(marginal_gain(reach, cover), self.gain_levels)
            kept_mask = None if kept is None else kept.bool()
            peak = peak_scores(reach.squared_distance, rank_keys(gain_q, kept_mask, -1.0), gain_q)
            score_key = rank_keys(quantise(peak, self.score_levels), kept_mask, float(KEY_LIMIT))
            order = torch.topk(score_key, self.tokens, dim=1).indices  # within the frame, never over all tokens
            kept = torch.zeros_like(score_key).scatter(1, order, held)
        return kept

    def held_after_each_pick(self, budget: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """budget: (T,) -> one (T, P) float per pick, 1 at the rank positions (0 = highest key) that
        frame t holds after the pick: floor(budget * r / rounds), r = the rounds it has picked in.

        floor((budget * r + 0.5) / rounds) is off every integer boundary by half a step: exact in
        float32."""
        held = torch.floor((budget.reshape(-1, 1, 1) * self.rounds_done + 0.5) / self.config.rounds)
        by_rank = (self.token_index < held).float()  # (T, picks, P)
        return by_rank.reshape(self.frames, -1).split(self.tokens, dim=1)

    def compact(self, keep: torch.Tensor) -> torch.Tensor:
        """keep: (N,) float32 0/1 with exactly K ones -> (K,) int64 their indices, ascending.

        The n-th kept token (1-based) goes to slot n of K + 2, every other token to slot 0, which is
        dropped. Never indexes out of bounds: should non-finite input (NaN or inf tokens, which the
        deployed graph flags) break the count, surplus tokens land in the dropped slot K + 1.
        """
        slot = (torch.cumsum(keep, dim=0) * keep).clamp(max=self.keep + 1).long()
        out = torch.zeros(self.keep + 2, dtype=torch.int64, device=keep.device)
        return out.scatter(0, slot, self.flat_index)[1: self.keep + 1]

    def merge_dropped(self, features: torch.Tensor, gram: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(T, P, D) where each kept token is the mean of itself and the dropped tokens nearest to it."""
        target = merge_keys(gram, keep).argmax(dim=2)  # unique keys: no tie for the runtime to break
        assign = torch.nn.functional.one_hot(target, self.tokens).to(features.dtype)
        assign = assign * keep.any(dim=1, keepdim=True).unsqueeze(2).to(features.dtype)
        keep_f = keep.to(features.dtype)
        assign = assign * (1 - keep_f).unsqueeze(2) + torch.diag_embed(keep_f)
        merged = assign.transpose(1, 2) @ features
        return merged / assign.sum(dim=1).clamp(min=1).unsqueeze(2)
