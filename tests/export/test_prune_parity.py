"""The fixed-shape graph selects exactly the reference's tokens, on every kind of input."""
import itertools

import pytest
import torch

from mmg_export import MMGConfig, PruningGraph, select_tokens
from mmg_export.eval.synthetic import KINDS, make_video

# 0.3 at 5 x 9 tokens is K = floor(13.5 + 0.5) = 14, 0.125 at 4 x 12 is floor(6 + 0.5) = 6 ... and
# 0.5 * 1 x 5 = 2.5 -> 3: the shapes below put K exactly on a .5 boundary for several ratios.
RATIOS = [0.05, 0.1, 0.15, 0.25, 0.3, 0.5, 1.0]
SHAPES = [(1, 5, 8), (2, 9, 8), (5, 9, 4), (4, 12, 16), (8, 20, 16), (16, 24, 32), (64, 12, 8)]
CASES = list(itertools.product(KINDS, RATIOS, SHAPES))  # 7 x 7 x 7 = 343 inputs


def assert_same_selection(features: torch.Tensor, ratio: float, config: MMGConfig) -> None:
    frames, tokens, dim = features.shape
    expected = select_tokens(features, ratio, config)
    with torch.no_grad():
        kept_features, kept_indices = PruningGraph(frames, tokens, dim, ratio, config)(features)
    assert kept_indices.tolist() == expected.indices.tolist()
    torch.testing.assert_close(kept_features, expected.features, rtol=1e-5, atol=1e-5)


def test_cases_include_half_way_budgets():
    halves = {(r, s) for _, r, s in CASES if (r * s[0] * s[1]) % 1 == 0.5}
    assert len(halves) >= 3


@pytest.mark.parametrize("kind,ratio,shape", CASES, ids=[f"{k}-{r}-{'x'.join(map(str, s))}" for k, r, s in CASES])
def test_graph_matches_reference(kind, ratio, shape):
    seed = CASES.index((kind, ratio, shape))
    assert_same_selection(make_video(kind, seed, *shape), ratio, MMGConfig())


CONFIGS = {
    "merge": MMGConfig(merge=True),
    "uniform": MMGConfig(budget="uniform"),
    "min-length-3": MMGConfig(min_segment_frames=3),
    "few-segments": MMGConfig(min_segment_frames=2, max_segments=3),
    "one-segment": MMGConfig(max_segments=1),
    "low-tau": MMGConfig(tau=0.5),
    "sensitive-cuts": MMGConfig(cut_factor=1.0),
    "one-round-no-chain": MMGConfig(rounds=1, stride=1, chain_steps=0),
    "many-rounds": MMGConfig(rounds=4, stride=2, chain_steps=3),
    "reach-3": MMGConfig(chain_steps=3, stride=6),  # mmg-export build --reach 3
    "reach-3-three-rounds": MMGConfig(rounds=3, chain_steps=3, stride=6),
    "no-novelty-floor": MMGConfig(novelty_floor=0.0, novelty_levels=1),
    "one-step-per-pick": MMGConfig(substeps=1),  # the token stage before issue 24
    "many-steps": MMGConfig(substeps=8, rounds=3),  # more steps than most frames' budgets
    "steps-without-chain": MMGConfig(substeps=2, chain_steps=0),
    "steps-and-one-frame-groups": MMGConfig(substeps=4, stride=8),  # 12 frames: groups 4..7 hold one frame
}


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("kind", ["random", "cuts", "duplicated", "clustered"])
def test_graph_matches_reference_for_every_option(name, kind):
    assert_same_selection(make_video(kind, 7, 12, 20, 16), 0.2, CONFIGS[name])


@pytest.mark.parametrize("merge", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["cuts", "clustered"])
def test_graph_matches_reference_in_half_precision(kind, dtype, merge):
    features = make_video(kind, 5, 8, 20, 16).to(dtype)
    frames, tokens, dim = features.shape
    expected = select_tokens(features, 0.25, MMGConfig(merge=merge))
    kept_features, kept_indices = PruningGraph(frames, tokens, dim, 0.25, MMGConfig(merge=merge))(features)
    assert kept_indices.tolist() == expected.indices.tolist()
    assert kept_features.dtype == expected.features.dtype == dtype
    torch.testing.assert_close(kept_features, expected.features, rtol=1e-2, atol=1e-2)


def test_merge_handles_more_frames_than_tokens():
    assert_same_selection(make_video("cuts", 2, 12, 3, 4), 0.5, MMGConfig(merge=True))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cuts", "drifting", "clustered"])
def test_graph_matches_reference_at_llava_geometry(kind):
    """P = 196 tokens per frame as LLaVA-OneVision has (a small D keeps the test fast)."""
    assert_same_selection(make_video(kind, 3, 32, 196, 64), 0.25, MMGConfig())


@pytest.mark.parametrize("frames", [1, 3, 7])
@pytest.mark.parametrize("substeps", [2, 5])
def test_graph_matches_reference_when_groups_outnumber_frames(frames, substeps):
    """stride 4 > T: the empty groups only update coverage; their steps are left out in both forms."""
    assert_same_selection(make_video("random", frames, frames, 24, 8), 0.3, MMGConfig(substeps=substeps))


def test_graph_matches_reference_on_real_clip(clip_features):
    for ratio in (0.1, 0.25):
        assert_same_selection(clip_features, ratio, MMGConfig())
