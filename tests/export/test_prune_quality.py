"""Issue 10's quality targets on real clips, as a regression guard for the token stage.

MMG-Vid's coverage of the dropped tokens must beat max(random, grid) by >= 0.01 at 10, 15 and 25 %
and come within 0.02 of the facility-location greedy at 25 % (``docs/quality.md`` reports all
seven clips). Here the two that change most with the token stage: bikes.mp4 (six shots, a moving
camera: the chain of neighbouring frames does the work) and vtest.avi (a still surveillance
camera: the same-place coverage does; before it, MMG-Vid missed both of its targets there).
"""
from pathlib import Path

import pytest

from mmg_export import select_tokens
from mmg_export.eval.metrics import coverage
from mmg_export.prune.baselines import REFERENCE_METHODS, grid, random

pytestmark = pytest.mark.slow  # EfficientNet features of two real clips, then every method
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")  # Debian's opencv-doc


@pytest.fixture(scope="module")
def vtest_features():
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} not found (Debian package opencv-doc)")
    pytest.importorskip("efficientnet_lite_pytorch", reason="needs the dev extra: pip install -e '.[dev]'")
    from mmg_export.eval.features import clip_tokens

    return clip_tokens(VTEST, num_frames=32)


def check_targets(features):
    """Rows (ratio, MMG-Vid's coverage, the least it must reach), one per target, and the missed ones."""
    rows = []
    for ratio in (0.1, 0.15, 0.25):
        mmg = coverage(features, select_tokens(features, ratio).indices)
        trivial = max(coverage(features, random(features, ratio).indices),
                      coverage(features, grid(features, ratio).indices))
        rows.append((ratio, mmg, trivial + 0.01))
    greedy = coverage(features, REFERENCE_METHODS["facility-location"](features, 0.25).indices)
    rows.append(("0.25 vs greedy", rows[-1][1], greedy - 0.02))
    return rows, [row for row in rows if row[1] < row[2]]


def test_moving_camera_with_cuts_meets_the_quality_targets(clip_features):
    rows, misses = check_targets(clip_features)
    assert not misses, rows


def test_still_camera_meets_the_quality_targets(vtest_features):
    rows, misses = check_targets(vtest_features)
    assert not misses, rows
