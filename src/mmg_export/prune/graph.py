"""MMG-Vid as a fixed-shape graph that exports to ONNX and parses in TensorRT.

It selects exactly the tokens of :func:`.reference.select_tokens` (tests pin the two together),
with every decision written as static-shape tensor algebra:

* no data-dependent Python control flow, no NonZero / Unique / Compress;
* TopK only within a frame (k = P), never over all tokens; other ranks come from comparison
  counts over T x T (frames) or P x P (tokens of one frame); every decision compares quantised
  values turned into unique integer keys (:mod:`.scores`), so no runtime breaks a tie;
* budget arithmetic on integers held in float32 (every product stays below 2**24, so it is
  exact), so that no runtime needs integer division;
* the token stage is ``rounds * stride * substeps`` batched picks (24 by default), each over the
  frames of one group (a static strided slice), never a loop over tokens or frames;
* kept tokens compacted with float CumSums and one ScatterElements without reduction, a
  permutation of all T x P tokens (kept ones first) into a buffer as large: TensorRT's parser
  wants every scatter's indices no larger than its data.
"""
from __future__ import annotations

import numpy as np
import torch

from .config import MMGConfig, check_ratio, check_shape, keep_count
from .scores import (KEY_LIMIT, TokenStats, band, coverage, cut_threshold, frame_weight, group_frames, marginal_gain,
                     merge_keys, peak_scores, pick_levels, pick_schedule, put_rows, quantise, rank_keys,
                     similarity_levels, token_stats, weight_scale)


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
        self.register_buffer("token_index", torch.arange(tokens_per_frame), persistent=False)
        self.register_buffer("flat_index", torch.arange(frames * tokens_per_frame), persistent=False)
        gap = (frame_index[:, None] - frame_index[None, :]).abs()
        self.register_buffer("near_cut", (gap > 0) & (gap < self.config.min_segment_frames), persistent=False)

    def forward(self, features: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.check(features)
        stats = token_stats(features, self.config)
        starts = self.segment_starts(stats.frame_similarity)
        budget = self.allocate(self.frame_weights(stats, starts))
        keep = self.pick_tokens(stats, starts, budget)
        indices = self.compact(keep.reshape(-1))
        flat = features.reshape(-1, self.dim)
        if self.config.merge:
            flat = self.merge_dropped(features, stats.gram, keep).reshape(-1, self.dim)
        return flat[indices], indices

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
        """similarity: (T-1,) -> (T,) bool, True where a segment begins (see the reference)."""
        frames, shortest = self.frames, self.config.min_segment_frames
        first = torch.ones(1, dtype=torch.bool, device=similarity.device)
        if frames == 1:
            return first
        quantised = quantise(similarity, similarity_levels())
        pair, column = self.frame_index[: frames - 1], quantised.unsqueeze(1)
        below = (quantised < column) | ((quantised == column) & (pair < pair.unsqueeze(1)))  # [a, b]: b before a
        is_median = below.sum(dim=1) == (frames - 2) // 2  # the lower median: rank (n - 1) // 2 of n = T - 1
        median = torch.where(is_median, quantised, torch.zeros_like(quantised)).sum()
        threshold = cut_threshold(quantised, median, self.config)
        # cut t sits before frame t; pad so that row/column t is cut t (t = 0 is never a cut)
        sim = torch.cat([quantised.new_full((1,), float("inf")), quantised])
        t = self.frame_index
        candidate = (sim < threshold) & (t >= shortest) & (t <= frames - shortest)
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
        same_segment = segment.unsqueeze(1) == segment
        total = torch.where(same_segment, level, torch.zeros_like(level)).sum(dim=1)
        return frame_weight(total, same_segment.float().sum(dim=1), self.weight_scale)
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

    def pick_tokens(self, stats: TokenStats, starts: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
        """(T, P) bool: the tokens every frame keeps (see :func:`.reference.pick_tokens`).

        Each pick of :func:`.scores.pick_schedule` is batched over the frames of its group (a
        static strided slice): they top up to their target with their best candidates, ranked
        within the frame by unique keys.
        """
        reach = band(stats, starts)
        kept = torch.zeros(self.frames, self.tokens, dtype=torch.bool, device=budget.device)
        cover = torch.zeros(self.frames, self.tokens, device=budget.device)
        for pick in pick_schedule(self.frames, self.config):
            if pick.chain_steps is not None:  # before the first pick nothing is covered
                cover = coverage(reach, kept, cover, pick.chain_steps, pick.changed)
            if pick.group >= self.frames:  # an empty group picks nothing
                continue
            # floor(budget * share / parts), off every integer boundary by half a step: exact in float32
            target = torch.floor((budget.float() * pick.share + 0.5) / pick.parts)
            rows = group_frames(pick.group, self.config.stride)
            gain_q = quantise(marginal_gain(reach, cover, rows), self.gain_levels)
            kept_rows = kept[rows]
            peak = peak_scores(reach.squared_distance[rows], rank_keys(gain_q, kept_rows, -1.0), gain_q)
            score = quantise(peak, self.score_levels)
            # kept tokens rank first (key above every candidate): a frame keeps its top `target`
            score_key = rank_keys(score, kept_rows, float(KEY_LIMIT))
            picked = kept_rows | (self.rank_in_frame(score_key) < target[rows].unsqueeze(1))
            kept = put_rows(kept.float(), rows, picked.float()) > 0  # as float: TensorRT scatters no bool
        return kept

    def rank_in_frame(self, keys: torch.Tensor) -> torch.Tensor:
        """keys: (F, P) unique within each frame -> (F, P) float32 rank (0 = highest key).

        A TopK over the P tokens of each frame (k = P, never over all tokens) and its inverse
        permutation, scattered without reduction."""
        order = torch.topk(keys, self.tokens, dim=1).indices
        position = self.token_index.float().expand_as(keys)
        return torch.zeros_like(keys).scatter(1, order, position)

    def compact(self, keep: torch.Tensor) -> torch.Tensor:
        """keep: (N,) bool with exactly K True -> (K,) int64 their indices, ascending.

        A stable partition, kept tokens first: token i goes to slot (kept tokens before it) if kept,
        else K + (dropped tokens before it); the slots, a permutation of 0..N-1, are scattered into
        an (N,) buffer whose first K entries are the result. Never indexes out of bounds: should
        non-finite input (NaN or inf tokens, which the deployed graph flags) break the count, the
        slots are clamped to the buffer.
        """
        # running count in two levels (within each frame, then over frame totals): ONNX Runtime's
        # CUDA CumSum is quadratic in the axis length
        rows = keep.float().reshape(self.frames, self.tokens)
        within = torch.cumsum(rows, dim=1)
        before = torch.cumsum(within[:, -1], dim=0) - within[:, -1]
        position = (within + before.unsqueeze(1)).reshape(-1) - 1.0  # kept tokens up to i, less one
        dropped_slot = (self.keep - 1.0) + self.flat_index.float() - position  # K + (i - kept up to i)
        slot = torch.where(keep, position, dropped_slot).clamp(max=self.frames * self.tokens - 1).long()
        # every slot is written (a permutation), so the buffer's own values never show
        return self.flat_index.scatter(0, slot, self.flat_index)[: self.keep]

    def merge_dropped(self, features: torch.Tensor, gram: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(T, P, D) where each kept token is the mean of itself and the dropped tokens nearest to it."""
        target = merge_keys(gram, keep).argmax(dim=2)  # unique keys: no tie for the runtime to break
        assign = torch.nn.functional.one_hot(target, self.tokens).to(features.dtype)
        assign = assign * keep.any(dim=1, keepdim=True).unsqueeze(2).to(features.dtype)
        keep_f = keep.to(features.dtype)
        assign = assign * (1 - keep_f).unsqueeze(2) + torch.diag_embed(keep_f)
        merged = assign.transpose(1, 2) @ features
        return merged / assign.sum(dim=1).clamp(min=1).unsqueeze(2)
