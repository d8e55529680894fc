"""The reference's decisions on hand-checked inputs, its contract, and its error messages."""
import numpy as np
import pytest
import torch

from mmg_export import MMGConfig, PruningGraph, select_tokens
from mmg_export.prune.baselines import METHODS
from mmg_export.prune.reference import allocate, best_tokens, segment_starts
from mmg_export.eval.synthetic import make_video


def test_allocate_is_proportional_with_largest_remainders():
    # shares 10 * (1, 2, 2) / 5 = 2, 4, 4 exactly
    assert allocate(10, [1, 2, 2], cap=6) == [2, 4, 4]
    # shares 7/3 each: floors 2, 2, 2, one leftover goes to the lowest index
    assert allocate(7, [1, 1, 1], cap=5) == [3, 2, 2]
    # shares 5 * (1, 3) / 4 = 1.25, 3.75: the larger remainder gets the unit
    assert allocate(5, [1, 3], cap=5) == [1, 4]


def test_allocate_caps_and_redistributes():
    # share of frame 0 would be 12 * 8/10 = 9.6 > cap 4; the rest 8 splits 1:1
    assert allocate(12, [8, 1, 1], cap=4) == [4, 4, 4]
    assert allocate(10, [8, 1, 1], cap=4) == [4, 3, 3]
    assert allocate(9, [100, 1, 2], cap=4) == [4, 2, 3]
    assert allocate(6, [1, 1], cap=3) == [3, 3]


def test_segment_starts_cuts_at_low_similarity_and_respects_minimum_length():
    config = MMGConfig(tau=0.9, min_segment_frames=2, max_segments=8)
    # median 0.99 -> relative threshold 1 - 4 * 0.01 = 0.96, capped by tau = 0.9: cuts wanted before
    # frames 3 and 4 (sims 0.5, 0.6) are too close, the stronger (0.5) wins
    sims = torch.tensor([0.99, 0.99, 0.5, 0.6, 0.99, 0.99, 0.99])
    assert segment_starts(sims, 8, config) == [0, 3]
    # a cut before the last frame would leave a one-frame segment
    sims = torch.tensor([0.99, 0.99, 0.99, 0.2])
    assert segment_starts(sims, 5, config) == [0]
    assert segment_starts(sims, 5, MMGConfig(tau=0.9, min_segment_frames=1)) == [0, 4]


def test_segment_threshold_follows_the_clips_own_similarities():
    # sorted: 0.80 0.96 0.97 0.98 0.98 0.99 0.99 -> lower median (index 3 of 7) 0.98, dissimilarity 0.02;
    # on the 2**-12 grid: median round(4014.08) = 4014, 4096 - 4014 = 82
    sims = torch.tensor([0.98, 0.97, 0.99, 0.80, 0.98, 0.96, 0.99])
    # factor 4: threshold 4096 - 328 = 3768 (0.92, under tau): only 0.80 (3277, before frame 4) is below
    assert segment_starts(sims, 8, MMGConfig()) == [0, 4]
    # factor 2, no cap (tau = 1): 4096 - 164 = 3932; 0.96 is round(3932.16) = 3932, not below
    assert segment_starts(sims, 8, MMGConfig(cut_factor=2.0, tau=1.0)) == [0, 4]
    # factor 1.5: 4096 - 123 = 3973: 0.96 (3932) is below, 0.97 (3973) is not
    assert segment_starts(sims, 8, MMGConfig(cut_factor=1.5, tau=1.0)) == [0, 4, 6]
    # ... but tau = 0.95 caps it at round(3891.2) = 3891: 0.96 is above again
    assert segment_starts(sims, 8, MMGConfig(cut_factor=1.5)) == [0, 4]
    # the same dip in a clip whose frames all differ as much (CNN features: sim ~0.6) is no cut
    assert segment_starts(torch.tensor([0.6, 0.62, 0.58, 0.55, 0.61]), 6, MMGConfig()) == [0]
    # tau caps the threshold: identical frames (dissimilarity 0) never cut on rounding noise
    assert segment_starts(torch.tensor([1.0, 0.9999999, 1.0]), 4, MMGConfig()) == [0]


def test_segment_starts_keeps_the_strongest_cuts_up_to_max_segments():
    sims = torch.tensor([0.5, 0.99, 0.3, 0.99, 0.4, 0.99, 0.99])
    config = MMGConfig(tau=0.9, min_segment_frames=1, max_segments=3)
    assert segment_starts(sims, 8, config) == [0, 3, 5]
    assert segment_starts(sims, 8, MMGConfig(tau=0.9, min_segment_frames=1, max_segments=1)) == [0]


def test_best_tokens_breaks_ties_by_index():
    assert best_tokens([0.5, 0.9, 0.9, 0.1, 0.9], 2) == [1, 2]
    assert best_tokens([0.0, -0.0, 0.0], 2) == [0, 1]


def test_selection_contract():
    video = make_video("cuts", 1, 16, 20, 8)
    selection = select_tokens(video, 0.25)
    keep = round(0.25 * 16 * 20)
    assert selection.indices.shape == (keep,) and selection.indices.dtype == torch.int64
    assert torch.all(selection.indices[1:] > selection.indices[:-1])
    assert selection.features.shape == (keep, 8)
    torch.testing.assert_close(selection.features, video.reshape(-1, 8)[selection.indices])
    assert int(selection.budget_per_frame.sum()) == keep
    assert int(selection.budget_per_segment.sum()) == keep
    assert selection.budget_per_segment.numel() == int(selection.segment_of_frame.max()) + 1
    per_frame = torch.bincount(selection.indices // 20, minlength=16)
    assert per_frame.tolist() == selection.budget_per_frame.tolist()
    assert selection.scores.shape == (16, 20)


def test_scene_cuts_become_segments_and_get_budget():
    """Three shots of near-identical frames: MMG-Vid cuts exactly at the shots and splits each
    segment's budget equally over its frames (largest remainder: within one token)."""
    video = make_video("cuts", 4, 12, 10, 16)
    selection = select_tokens(video, 0.25)
    segment = selection.segment_of_frame.tolist()
    changes = [t for t in range(1, 12) if not torch.allclose(video[t], video[t - 1], atol=0.5)]
    assert [t for t in range(1, 12) if segment[t] != segment[t - 1]] == changes
    budget = selection.budget_per_frame.tolist()
    for first, end in zip([0] + changes, changes + [12]):
        assert max(budget[first:end]) - min(budget[first:end]) <= 1


def test_static_video_splits_evenly():
    # K = 40 of 8 x 10; one segment, so every frame weighs the same: 5 each
    selection = select_tokens(make_video("static", 0, 8, 10, 4), 0.5)
    assert selection.budget_per_frame.tolist() == [5] * 8
    assert selection.segment_of_frame.tolist() == [0] * 8


def test_ratio_one_keeps_everything_and_tiny_ratio_keeps_one():
    video = make_video("random", 0, 3, 5, 4)
    assert select_tokens(video, 1.0).indices.tolist() == list(range(15))
    assert select_tokens(video, 0.01).indices.numel() == 1


def test_numpy_input_is_accepted_and_never_modified():
    video = make_video("random", 0, 4, 6, 4).numpy()
    before = video.copy()
    selection = select_tokens(video, 0.5)
    assert np.array_equal(video, before)
    assert selection.indices.numel() == 12


@pytest.mark.parametrize("features,ratio,message", [
    (torch.zeros(4, 5), 0.25, "features=.*shape \\(4, 5\\).*expected rank 3"),
    (torch.zeros(2, 3, 4, dtype=torch.int64), 0.25, "features=.*int64.*floating"),
    (torch.zeros(0, 3, 4), 0.25, "features=.*at least one token"),
    (torch.tensor([[[1.0, float("nan")]]]), 0.25, "features=.*NaN or inf.*finite"),
    (torch.zeros(2, 3, 4), 0.0, "ratio=0.0: expected a number in \\(0, 1\\]"),
    (torch.zeros(2, 3, 4), 1.5, "ratio=1.5: expected a number in \\(0, 1\\]"),
    (torch.zeros(2, 3, 4), True, "ratio=True: expected a number in \\(0, 1\\]"),
    ([1, 2, 3], 0.25, "features='list'.*torch.Tensor or numpy array"),
])
def test_bad_input_names_the_argument(features, ratio, message):
    with pytest.raises(ValueError, match=message):
        select_tokens(features, ratio)


@pytest.mark.parametrize("kwargs,message", [
    (dict(frames=0, tokens_per_frame=196, dim=8), "frames=0: expected an int >= 1"),
    (dict(frames=2, tokens_per_frame=196, dim=8, ratio=2.0), "ratio=2.0"),
    (dict(frames=2, tokens_per_frame=196, dim=8, config=None), None),
])
def test_graph_constructor_validates(kwargs, message):
    if message is None:
        assert PruningGraph(**kwargs).keep == 98
        return
    with pytest.raises(ValueError, match=message):
        PruningGraph(**kwargs)


def test_graph_rejects_the_wrong_shape():
    with pytest.raises(ValueError, match=r"features: shape \(2, 5, 8\), expected \(2, 196, 8\)"):
        PruningGraph(2, 196, 8)(torch.zeros(2, 5, 8))


@pytest.mark.parametrize("features,error,message", [
    (torch.zeros(2, 5, 4, dtype=torch.int64), ValueError, r"features: dtype torch.int64, expected a floating dtype"),
    (np.zeros((2, 5, 4), dtype=np.int32), ValueError, r"features: dtype torch.int32, expected a floating dtype"),
    ([[[0.0] * 4] * 5] * 2, TypeError, r"features: expected a torch.Tensor or numpy array .*, got list"),
])
def test_graph_rejects_non_float_features_in_one_line(features, error, message):
    with pytest.raises(error, match=message):
        PruningGraph(2, 5, 4)(features)


def test_graph_takes_float_numpy_arrays_like_the_reference():
    video = make_video("cuts", 2, 4, 6, 4)
    kept_features, kept_indices = PruningGraph(4, 6, 4, 0.5)(video.numpy())
    assert kept_indices.tolist() == select_tokens(video.numpy(), 0.5).indices.tolist()
    torch.testing.assert_close(kept_features, video.reshape(-1, 4)[kept_indices])


def test_graph_refuses_a_boolean_ratio():
    with pytest.raises(ValueError, match=r"ratio=True: expected a number in \(0, 1\]"):
        PruningGraph(2, 5, 4, ratio=True)


@pytest.mark.parametrize("field,value", [("tau", 0.0), ("budget", "fancy"), ("rounds", 0), ("stride", 9),
                                         ("chain_steps", -1), ("cut_factor", 0.5), ("max_segments", 0),
                                         ("min_segment_frames", True), ("merge", 1)])
def test_config_validates(field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        MMGConfig(**{field: value})


@pytest.mark.parametrize("method", METHODS)
def test_every_method_keeps_k_sorted_unique_tokens(method):
    video = make_video("drifting", 2, 8, 12, 6)
    selection = METHODS[method](video, 0.15)
    keep = round(0.15 * 96)
    assert selection.indices.tolist() == sorted(set(selection.indices.tolist()))
    assert selection.indices.numel() == keep
    assert int(selection.budget_per_frame.sum()) == keep


def test_temporal_difference_keeps_frame_zero_then_the_biggest_changes():
    video = torch.zeros(3, 2, 2)
    video[:, :, 0] = 1.0
    video[1, 1] = torch.tensor([0.0, 1.0])  # token (1, 1) changes completely
    selection = METHODS["temporal-difference"](video, 0.5)  # K = 3
    assert selection.indices.tolist() == [0, 1, 3]


def test_random_is_seeded():
    video = make_video("random", 0, 4, 8, 4)
    assert METHODS["random"](video, 0.25).indices.tolist() == METHODS["random"](video, 0.25).indices.tolist()


@pytest.mark.parametrize("field,value,expected", [
    ("tau", 0.0, "a float in (0, 1]"), ("tau", 1.01, "a float in (0, 1]"),
    ("cut_factor", 0.99, "a float >= 1"),
    ("min_segment_frames", 0, "an int >= 1"), ("min_segment_frames", 2.0, "an int >= 1"),
    ("max_segments", 0, "an int >= 1"), ("max_segments", True, "an int >= 1"),
    ("rounds", 0, "an int in [1, 8]"), ("rounds", 9, "an int in [1, 8]"), ("rounds", 2.0, "an int in [1, 8]"),
    ("stride", 0, "an int in [1, 8]"), ("stride", 9, "an int in [1, 8]"),
    ("substeps", 0, "an int in [1, 8]"), ("substeps", 9, "an int in [1, 8]"), ("substeps", True, "an int in [1, 8]"),
    ("chain_steps", -1, "an int in [0, 8]"), ("chain_steps", 9, "an int in [0, 8]"),
    ("novelty_levels", 0, "an int in [1, 1024]"), ("novelty_levels", 1025, "an int in [1, 1024]"),
    ("novelty_levels", 64.0, "an int in [1, 1024]"),
    ("novelty_floor", -0.01, "a float in [0, 1]"), ("novelty_floor", 1.01, "a float in [0, 1]"),
    ("budget", "fancy", "'marginal' or 'uniform'"), ("merge", 1, "True or False"),
])
def test_config_names_the_field_the_value_and_what_was_expected(field, value, expected):
    with pytest.raises(ValueError) as error:
        MMGConfig(**{field: value})
    assert str(error.value) == f"{field}={value!r}: expected {expected}"


@pytest.mark.parametrize("field,value", [
    ("tau", 1.0), ("cut_factor", 1.0), ("min_segment_frames", 1), ("max_segments", 1), ("rounds", 1), ("rounds", 8),
    ("stride", 1), ("stride", 8), ("substeps", 1), ("substeps", 8), ("chain_steps", 0), ("chain_steps", 8),
    ("novelty_levels", 1), ("novelty_levels", 1024), ("novelty_floor", 0.0), ("novelty_floor", 1.0),
    ("budget", "uniform"), ("merge", True),
])
def test_config_accepts_its_boundaries(field, value):
    assert getattr(MMGConfig(**{field: value}), field) == value


@pytest.mark.parametrize("kwargs,message", [
    (dict(frames=0, tokens_per_frame=5, dim=4), "frames=0: expected an int >= 1"),
    (dict(frames=2, tokens_per_frame=0, dim=4), "tokens_per_frame=0: expected an int >= 1"),
    (dict(frames=2, tokens_per_frame=5.0, dim=4), "tokens_per_frame=5.0: expected an int >= 1"),
    (dict(frames=2, tokens_per_frame=5, dim=0), "dim=0: expected an int >= 1"),
    (dict(frames=2, tokens_per_frame=5, dim=True), "dim=True: expected an int >= 1"),
])
def test_graph_shape_errors_are_one_exact_line(kwargs, message):
    with pytest.raises(ValueError) as error:
        PruningGraph(**kwargs)
    assert str(error.value) == message


def test_graph_accepts_the_smallest_shape():
    assert PruningGraph(1, 1, 1, 1.0)(torch.ones(1, 1, 1))[1].tolist() == [0]


@pytest.mark.parametrize("features,message", [
    ([1, 2, 3], "features='list': expected a torch.Tensor or numpy array of shape (T, P, D)"),
    (torch.zeros(4, 5), "features='tensor of shape (4, 5)': expected rank 3: (frames T, tokens per frame P, dim D)"),
    (torch.zeros(2, 3, 4, dtype=torch.int64), "features='tensor of dtype torch.int64': expected a floating dtype"),
    (torch.zeros(0, 3, 4), "features='tensor of shape (0, 3, 4)': expected at least one token (T, P, D >= 1)"),
    (torch.tensor([[[1.0, float("inf")]]]), "features='a tensor with NaN or inf values': expected finite values"),
])
def test_feature_errors_are_one_exact_line(features, message):
    with pytest.raises(ValueError) as error:
        select_tokens(features, 0.25)
    assert str(error.value) == message


def test_a_single_token_is_a_video():
    assert select_tokens(torch.ones(1, 1, 1), 1.0).indices.tolist() == [0]


def test_select_tokens_keeps_a_quarter_by_default():
    assert select_tokens(make_video("random", 0, 4, 10, 3)).indices.numel() == 10


@pytest.mark.parametrize("total,weights,cap", [
    (9, [100, 10, 1], 4),  # two capping passes: 8.1 > 4, then 5 * 10 / 11 = 4.5 > 4 -> [4, 4, 1]
    (5, [100, 1], 3),  # one free frame of weight 1 takes the rest
    (8, [100, 1], 5),  # ... 3 of them: floor(3 / 1), no leftover
    (10, [8, 1, 1], 4), (12, [8, 1, 1], 4), (7, [1, 1, 1], 5), (13, [5, 3, 3, 2, 1], 4), (20, [1, 1, 1, 1, 1], 4),
])
def test_graph_allocation_matches_the_reference_water_filling(total, weights, cap):
    graph = PruningGraph(len(weights), cap, 2, total / (len(weights) * cap))
    assert graph.keep == total
    assert graph.allocate(torch.tensor(weights, dtype=torch.float32)).tolist() == allocate(total, weights, cap)
    assert allocate(9, [100, 10, 1], cap=4) == [4, 4, 1]


@pytest.mark.parametrize("sims,config", [
    ([0.99, 0.99, 0.99, 0.99, 0.2], MMGConfig(min_segment_frames=2)),  # a cut before the last frame: too short
    ([0.2, 0.99, 0.99, 0.99, 0.99], MMGConfig(min_segment_frames=2)),  # ... or after the first
    ([0.3, 0.99, 0.4, 0.99, 0.5, 0.99, 0.2, 0.99, 0.35], MMGConfig(min_segment_frames=1, max_segments=3)),
    ([0.3, 0.99, 0.3, 0.99, 0.3, 0.99, 0.3, 0.99, 0.3], MMGConfig(min_segment_frames=1, max_segments=3)),  # ties
    ([0.3, 0.3, 0.99, 0.3, 0.3, 0.99, 0.99, 0.99, 0.99], MMGConfig(min_segment_frames=2)),  # close pairs
    ([0.99] * 9, MMGConfig()),
])
def test_graph_segmentation_matches_the_reference(sims, config):
    similarity = torch.tensor(sims)
    graph = PruningGraph(len(sims) + 1, 3, 2, 0.5, config)
    starts = graph.segment_starts(similarity)
    assert [t for t in range(len(sims) + 1) if starts[t]] == segment_starts(similarity, len(sims) + 1, config)


def test_reference_and_graph_weigh_frames_alike():
    from mmg_export.prune.reference import frame_weights
    from mmg_export.prune.scores import token_stats

    video = make_video("cuts", 4, 32, 196, 8)
    stats = token_stats(video, MMGConfig())
    graph = PruningGraph(32, 196, 8, 0.25)
    starts = graph.segment_starts(stats.frame_similarity)
    segment = (torch.cumsum(starts.long(), 0) - 1).numpy()
    assert len(set(segment.tolist())) > 1
    assert frame_weights(stats, segment, MMGConfig()) == graph.frame_weights(stats, starts).long().tolist()
