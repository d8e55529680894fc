"""Issues 10 and 24's quality targets on real footage, as a regression guard for the token stage.

Issue 10: MMG-Vid's coverage of the dropped tokens must beat max(random, grid) by >= 0.01 at 10, 15
and 25 % and come within 0.02 of the facility-location greedy at 25 % (``docs/quality.md`` reports
all seven clips). Here the two that change most with the token stage: bikes.mp4 (six shots, a
moving camera: the chain of neighbouring frames does the work) and vtest.avi (a still surveillance
camera: the same-place coverage does; before it, MMG-Vid missed both of its targets there).

Issue 24: on long, sparsely sampled footage (a ten-minute montage where almost every sampled frame
is its own shot, :mod:`mmg_export.eval.montage`) it must also beat max(random, grid) by >= 0.01 and
come within 0.005 of the facility-location greedy run inside each frame alone; with one step per
group's pick (``substeps=1``, the token stage before issue 24) it did not (0.020-0.028 behind).
"""
from pathlib import Path

import pytest

from mmg_export import MMGConfig, select_tokens
from mmg_export.eval.metrics import coverage
from mmg_export.prune.baselines import REFERENCE_METHODS, frame_greedy, grid, random

pytestmark = pytest.mark.slow  # EfficientNet features of real footage, then every method
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")  # Debian's opencv-doc (.ci/run installs it)
RATIOS = (0.1, 0.15, 0.25)


def efficientnet():
    pytest.importorskip("efficientnet_lite_pytorch", reason="needs the dev extra: pip install -e '.[dev]'")
    from mmg_export.eval import features

    return features


@pytest.fixture(scope="module")
def vtest_features():
    assert VTEST.is_file(), f"{VTEST} not found: apt-get install opencv-doc (.ci/run does)"
    return efficientnet().clip_tokens(VTEST, num_frames=32)


@pytest.fixture(scope="module", params=[32, 64], ids=lambda frames: f"{frames}-frames")
def montage_features(request):
    from mmg_export.eval.montage import montage_tokens

    return montage_tokens(request.param, efficientnet().efficientnet_lite0())[0]


def trivial(features, ratio):
    """max(random, grid) coverage at ``ratio``."""
    return max(coverage(features, random(features, ratio).indices), coverage(features, grid(features, ratio).indices))


def check_targets(features):
    """Rows (ratio, MMG-Vid's coverage, the least it must reach), one per target, and the missed ones."""
    rows = []
    for ratio in RATIOS:
        mmg = coverage(features, select_tokens(features, ratio).indices)
        rows.append((ratio, mmg, trivial(features, ratio) + 0.01))
    greedy = coverage(features, REFERENCE_METHODS["facility-location"](features, 0.25).indices)
    rows.append(("0.25 vs greedy", rows[-1][1], greedy - 0.02))
    return rows, [row for row in rows if row[1] < row[2]]


def test_moving_camera_with_cuts_meets_the_quality_targets(clip_features):
    rows, misses = check_targets(clip_features)
    assert not misses, rows


def test_still_camera_meets_the_quality_targets(vtest_features):
    rows, misses = check_targets(vtest_features)
    assert not misses, rows


def frame_greedy_rows(features, config: MMGConfig | None = None):
    """(ratio, MMG-Vid's coverage, max(random, grid) + 0.01, the per-frame greedy - 0.005) at every ratio."""
    return [(ratio, coverage(features, select_tokens(features, ratio, config).indices), trivial(features, ratio) + 0.01,
             coverage(features, frame_greedy(features, ratio).indices) - 0.005) for ratio in RATIOS]


def test_long_sparse_footage_keeps_up_with_the_per_frame_greedy(montage_features):
    rows = frame_greedy_rows(montage_features)
    assert all(mmg >= least and mmg >= greedy for _, mmg, least, greedy in rows), rows


def test_one_step_per_pick_falls_behind_the_per_frame_greedy_on_long_sparse_footage(montage_features):
    """What the substeps win: batched picks take near-copies together where frames share nothing."""
    rows = frame_greedy_rows(montage_features, MMGConfig(substeps=1))
    assert all(mmg < greedy - 0.01 for _, mmg, _, greedy in rows), rows
