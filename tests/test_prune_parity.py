"""The fixed-shape graph selects exactly the reference's tokens, on every kind of input."""
import itertools

import pytest
import torch

from mmg_export import MMGConfig, PruningGraph, select_tokens
from synthetic_videos import KINDS, make_video

RATIOS = [0.05, 0.1, 0.15, 0.25, 0.5, 1.0]
SHAPES = [(1, 16, 8), (2, 9, 8), (4, 12, 16), (8, 20, 16), (16, 24, 32), (32, 30, 16), (64, 12, 8)]
CASES = list(itertools.product(KINDS, RATIOS, SHAPES))  # 5 x 6 x 7 = 210 inputs


def assert_same_selection(features: torch.Tensor, ratio: float, config: MMGConfig) -> None:
    frames, tokens, dim = features.shape
    expected = select_tokens(features, ratio, config)
    with torch.no_grad():
        kept_features, kept_indices = PruningGraph(frames, tokens, dim, ratio, config)(features)
    assert kept_indices.tolist() == expected.indices.tolist()
    torch.testing.assert_close(kept_features, expected.features, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,ratio,shape", CASES, ids=[f"{k}-{r}-{'x'.join(map(str, s))}" for k, r, s in CASES])
def test_graph_matches_reference(kind, ratio, shape):
    seed = CASES.index((kind, ratio, shape))
    assert_same_selection(make_video(kind, seed, *shape), ratio, MMGConfig())


CONFIGS = {
    "merge": MMGConfig(merge=True),
    "uniform": MMGConfig(budget="uniform"),
    "no-min-length": MMGConfig(min_segment_frames=1),
    "long-segments": MMGConfig(min_segment_frames=4, max_segments=3),
    "one-segment": MMGConfig(max_segments=1),
    "low-tau": MMGConfig(tau=0.5),
    "knn-1-no-floors": MMGConfig(knn=1, novelty_floor=0.0, uniqueness_floor=0.0),
}


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("kind", ["random", "cuts", "duplicated"])
def test_graph_matches_reference_for_every_option(name, kind):
    assert_same_selection(make_video(kind, 7, 12, 20, 16), 0.2, CONFIGS[name])


@pytest.mark.parametrize("kind", ["cuts", "drifting"])
def test_graph_matches_reference_at_llava_geometry(kind):
    """P = 196 tokens per frame as LLaVA-OneVision has (a small D keeps the test fast)."""
    assert_same_selection(make_video(kind, 3, 32, 196, 64), 0.25, MMGConfig())


def test_graph_matches_reference_on_real_clip(clip_features):
    for ratio in (0.1, 0.25):
        assert_same_selection(clip_features, ratio, MMGConfig())
