"""The comparison baselines on inputs small enough to work out by hand (arithmetic in comments)."""
import math
from fractions import Fraction

import pytest
import torch

from mmg_export.prune import baselines
from mmg_export.prune.reference import allocate
from mmg_export.eval.synthetic import make_video, new_shot


def degrees(*angles: float) -> torch.Tensor:
    """(1, len(angles), 2): one frame of unit tokens at the given angles."""
    return torch.tensor([[[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in angles]])


# a = 0 deg, b = 10 deg, c = 90 deg, d = 180 deg: cos(a, b) = 0.985, cos(b, c) = sin 10 deg = 0.174, cos(a, d) = -1
FOUR = degrees(0, 10, 90, 180)


def test_grid_spreads_each_frames_budget_evenly_in_raster_order():
    video = make_video("random", 0, 2, 8, 3)
    # K = 4 of 16: budgets [2, 2]; positions (2i + 1) * 8 // 4 = 2, 6
    assert baselines.grid(video, 0.25).indices.tolist() == [2, 6, 10, 14]
    # K = floor(4.8 + 0.5) = 5: budgets [3, 2]; frame 0: (2i + 1) * 8 // 6 = 1, 4, 6
    assert baselines.grid(video, 0.3).indices.tolist() == [1, 4, 6, 10, 14]


def test_random_depends_on_its_seed_only():
    video = make_video("random", 0, 4, 8, 4)
    first = baselines.random(video, 0.25).indices.tolist()
    assert first == baselines.random(video * 3.0 + 1.0, 0.25).indices.tolist()
    assert first != baselines.random(video, 0.25, seed=1).indices.tolist()
    assert len(first) == 8 and first == sorted(set(first))


def test_divprune_keeps_the_most_isolated_token_then_the_farthest():
    # nearest-neighbour cosine distances: a 0.015, b 0.015, c 0.826, d 1.0 -> d first;
    # farthest from d: a (2), then from {d, a}: b min(1.985, 0.015), c min(1, 1) -> c
    assert baselines.divprune(FOUR, 0.75).indices.tolist() == [0, 2, 3]
    assert baselines.divprune(FOUR, 0.25).indices.tolist() == [3]


def test_facility_location_greedy_by_hand():
    # clamped similarities; gains with nothing kept: a 1 + 0.985 = 1.985, b 0.985 + 1 + 0.174 = 2.159,
    # c 0.174 + 1 = 1.174, d 1 -> b. Cover [0.985, 1, 0.174, 0]: a adds 0.015, c 0.826, d 1 -> d; then c
    assert baselines.facility_location(FOUR, 0.25).indices.tolist() == [1]
    assert baselines.facility_location(FOUR, 0.5).indices.tolist() == [1, 3]
    assert baselines.facility_location(FOUR, 0.75).indices.tolist() == [1, 2, 3]


def test_budgeted_greedy_keeps_mmg_vids_budgets_and_picks_by_exact_gain():
    # two frames: [a, b] then [a', d] with a' = a; K = 2 of 4, one per frame (MMG-Vid's budgets).
    # frame 0: gains a 1 + 0.985 + 1 = 2.985 (a' counts), b 0.985 + 1 + 0.985 = 2.970 -> a;
    # frame 1: a' adds 0 (a covers it and b's 0.985), d adds 1 (itself; cos(d, .) <= 0) -> d
    video = torch.cat([degrees(0, 10), degrees(0, 180)])
    selection = baselines.budgeted_greedy(video, 0.5)
    assert selection.budget_per_frame.tolist() == baselines.select_tokens(video, 0.5).budget_per_frame.tolist()
    assert selection.indices.tolist() == [0, 3]
    # one frame: the same picks as the unbudgeted greedy
    frame = make_video("clustered", 3, 1, 24, 6)
    assert baselines.budgeted_greedy(frame, 0.25).indices.tolist() == \
        baselines.facility_location(frame, 0.25).indices.tolist()


def test_frame_greedy_picks_inside_each_frame_alone_with_the_grids_budgets():
    # K = 2 of 6, one per frame; gains within each frame only (clamped cosines, itself 1):
    # frame 0 [0, 10, 90 deg]: 1 + 0.985 = 1.985, 0.985 + 1 + 0.174 = 2.159, 0.174 + 1 = 1.174 -> 10 deg;
    # frame 1 [90, 10, 20 deg]: 1 + 0.174 + 0.342 = 1.516, 0.174 + 1 + 0.985 = 2.159, 0.342 + 0.985 + 1
    # = 2.327 -> 20 deg, although frame 0's 10 deg token covers it by 0.985
    video = torch.cat([degrees(0, 10, 90), degrees(90, 10, 20)])
    assert baselines.frame_greedy(video, 0.3).indices.tolist() == [1, 5]
    clips = make_video("cuts", 4, 5, 24, 6)
    assert baselines.frame_greedy(clips, 0.3).budget_per_frame.tolist() == \
        baselines.grid(clips, 0.3).budget_per_frame.tolist()
    # one frame: the same picks as the greedy over the whole video
    frame = make_video("clustered", 3, 1, 24, 6)
    assert baselines.frame_greedy(frame, 0.25).indices.tolist() == \
        baselines.facility_location(frame, 0.25).indices.tolist()


def test_vidcom2_gives_the_distinct_frame_more_and_keeps_atypical_tokens():
    # frame embeddings e0 = (1, 0), e1 = e2 = (0, 1); video embedding normalize((1, 2)) = (0.447, 0.894);
    # distinctiveness 1 - e.v: 0.553, 0.106, 0.106 -> softmax(d / 0.01) = (1.0, 1.8e-20, 1.8e-20);
    # weights 1 + s - 1/3 = (1.667, 0.667, 0.667); K = 3 of 9: shares (1.667, 0.667, 0.667) -> floors (1, 0, 0),
    # the two leftover units to the largest remainders (0.667 each), frames 0 and 1 -> [2, 1, 0]
    video = torch.tensor([[[1.0, 0.0], [1.0, 0.1], [1.0, -0.2]], [[0.0, 1.0]] * 3, [[0.0, 1.0]] * 3])
    selection = baselines.vidcom2(video, 1 / 3)
    assert selection.budget_per_frame.tolist() == [2, 1, 0]
    # frame 0 (unit tokens (1, 0), (0.995, 0.0995), (0.981, -0.196); e0 = (0.9995, -0.032), video (0.453, 0.892)):
    # typicality cos(token, e0) + cos(token, video) = 1.452, 1.531, 1.256 -> the least typical two: tokens 2, 0
    assert selection.indices.tolist() == [0, 2, 3]


def test_temporal_difference_keeps_frame_zero_then_the_biggest_changes():
    video = torch.zeros(3, 2, 2)
    video[:, :, 0] = 1.0
    video[1, 1] = torch.tensor([0.0, 1.0])  # token (1, 1) changes completely: 1 - cos = 1; then back at frame 2
    assert baselines.temporal_difference(video, 0.5).indices.tolist() == [0, 1, 3]
    assert baselines.temporal_difference(video, 5 / 6).indices.tolist() == [0, 1, 2, 3, 5]


@pytest.mark.parametrize("method", baselines.REFERENCE_METHODS)
def test_reference_methods_keep_k_sorted_unique_tokens(method):
    selection = baselines.REFERENCE_METHODS[method](make_video("drifting", 2, 4, 6, 3), 0.3)
    assert selection.indices.tolist() == sorted(set(selection.indices.tolist()))
    assert selection.indices.numel() == 7  # floor(7.2 + 0.5)


@pytest.mark.parametrize("method", {**baselines.METHODS, **baselines.REFERENCE_METHODS})
def test_every_method_keeps_a_quarter_by_default(method):
    video = make_video("cuts", 3, 4, 10, 3)
    method_fn = {**baselines.METHODS, **baselines.REFERENCE_METHODS}[method]
    assert method_fn(video).indices.numel() == 10  # floor(0.25 * 40 + 0.5)


def test_temporal_difference_scores_a_reversed_token_as_the_largest_change():
    video = torch.zeros(2, 3, 2)
    video[:, :, 0] = 1.0
    video[1, 2] = torch.tensor([-1.0, 0.0])  # 1 - cos = 2: ties frame 0's 2, which wins on the lower index
    selection = baselines.temporal_difference(video, 0.5)  # K = 3: frame 0 only
    assert selection.indices.tolist() == [0, 1, 2]
    assert selection.scores.tolist() == [[2.0, 2.0, 2.0], [0.0, 0.0, 2.0]]
    assert baselines.temporal_difference(video, 4 / 6).indices.tolist() == [0, 1, 2, 5]


def vidcom2_by_hand(video: torch.Tensor, ratio: float) -> tuple[list[float], list[list[float]]]:
    """VidCom2-style frame weights and token typicality in plain Python, from the baseline's docstring."""
    def unit(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    def dot(u, v):
        return sum(a * b for a, b in zip(u, v))

    frames = [[unit(token) for token in frame] for frame in video.tolist()]
    dims = len(frames[0][0])
    frame_embedding = [unit([sum(t[d] for t in frame) / len(frame) for d in range(dims)]) for frame in frames]
    video_embedding = unit([sum(e[d] for e in frame_embedding) / len(frames) for d in range(dims)])
    logits = [(1.0 - dot(e, video_embedding)) / 0.01 for e in frame_embedding]
    exp = [math.exp(x - max(logits)) for x in logits]
    share = [x / sum(exp) for x in exp]
    weights = [1.0 + s - sum(share) / len(share) for s in share]
    typical = [[dot(token, frame_embedding[t]) + dot(token, video_embedding) for token in frame]
               for t, frame in enumerate(frames)]
    return weights, typical


@pytest.mark.parametrize("seed", range(4))
def test_vidcom2_matches_its_formulas(seed):
    video = make_video("random", seed, 3, 4, 3)
    selection = baselines.vidcom2(video, 0.5)  # K = 6
    weights, typical = vidcom2_by_hand(video, 0.5)
    shares = [6 * w / sum(weights) for w in weights]
    remainders = sorted(x - math.floor(x) for x in shares)
    if min(b - a for a, b in zip(remainders, remainders[1:])) > 1e-4:  # no near-tie for float rounding to break
        assert selection.budget_per_frame.tolist() == allocate(6, [Fraction(w) for w in weights], 4)
    budget = selection.budget_per_frame.tolist()
    least_typical = [sorted(range(4), key=lambda p: (typical[t][p], p))[:budget[t]] for t in range(3)]
    assert selection.indices.tolist() == [t * 4 + p for t in range(3) for p in sorted(least_typical[t])]
    torch.testing.assert_close(selection.scores, -torch.tensor(typical, dtype=torch.float32))


def test_baseline_selections_carry_their_features_and_one_segment():
    video = make_video("cuts", 1, 3, 4, 2)
    for method in ("grid", "random", "divprune", "temporal-difference", "vidcom2"):
        selection = baselines.METHODS[method](video, 0.5)
        torch.testing.assert_close(selection.features, video.reshape(-1, 2)[selection.indices])
        assert selection.segment_of_frame.tolist() == [0, 0, 0] and selection.segment_of_frame.dtype == torch.int64
        assert selection.budget_per_segment.tolist() == [6]


def test_uniform_splits_equally_where_mmg_vid_would_not():

    assert baselines.uniform(new_shot(), 0.3).budget_per_frame.tolist() == [1, 1, 1, 0, 0]


def test_divprune_small_videos():
    assert baselines.divprune(torch.ones(1, 1, 2), 1.0).indices.tolist() == [0]  # one token: nothing to compare
    # two frames of two tokens (T == P): all four at 0, 30, 60, 90 degrees; K = 2: the isolated ends
    video = torch.cat([degrees(0, 30), degrees(60, 90)])
    assert baselines.divprune(video, 0.5).indices.tolist() == [0, 3]


def test_divprune_never_repeats_a_token_when_all_are_close():
    # 0, 10, 20, 30, 40 degrees: every cosine distance < 1, every nearest neighbour 10 degrees away, so the
    # first pick is 0 deg; it must not be picked again. Then 40 deg (farthest), 20 deg, and 10 or 30 deg
    # (10 degrees from the kept ones either way: which one is up to rounding)
    kept = baselines.divprune(degrees(0, 10, 20, 30, 40), 0.8).indices.tolist()
    assert kept == sorted(set(kept)) and len(kept) == 4
    assert {0, 2, 4} <= set(kept)


def test_token_stats_do_not_depend_on_the_sign_of_the_largest_entry():
    from mmg_export import MMGConfig
    from mmg_export.prune import scores

    video = -make_video("random", 2, 3, 4, 4).abs() * 1e30  # every entry negative, huge
    expected = scores.token_stats(video / 1e30, MMGConfig()).gram
    torch.testing.assert_close(scores.token_stats(video, MMGConfig()).gram, expected, atol=1e-5, rtol=0)
