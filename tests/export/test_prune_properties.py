"""Property tests (Hypothesis) of the MMG-Vid contract, for the reference, the torch graph and the
exported ONNX graph under ONNX Runtime: exact K, ascending unique indices, per-frame budgets within
P, determinism, and invariance to what must not matter (a power-of-two feature scale, the order of
the tokens within a frame)."""
from __future__ import annotations

import functools

import numpy as np
import onnxruntime
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmg_export import MMGConfig, PruningGraph, select_tokens
from mmg_export.builder.export import export_pruner
from mmg_export.prune import scores
from mmg_export.prune.config import keep_count
from mmg_export.eval.synthetic import KINDS, make_video

pytestmark = pytest.mark.slow  # seconds a property (60 examples); the ONNX ones export the pruner
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

shapes = st.tuples(st.integers(1, 6), st.integers(1, 10), st.integers(1, 6))
ratios = st.sampled_from([0.01, 0.1, 0.125, 0.25, 0.3, 0.5, 0.75, 1.0]) | st.floats(0.01, 1.0)
configs = st.builds(MMGConfig, rounds=st.integers(1, 3), substeps=st.integers(1, 4), stride=st.integers(1, 4),
                    chain_steps=st.integers(0, 3),
                    budget=st.sampled_from(["marginal", "uniform"]), min_segment_frames=st.integers(1, 3),
                    max_segments=st.integers(1, 8))


@st.composite
def videos(draw, shape=shapes):
    """Synthetic videos of every kind, or raw arrays whose repeated values make ties."""
    frames, tokens, dim = draw(shape)
    if draw(st.booleans()):
        return make_video(draw(st.sampled_from(sorted(KINDS))), draw(st.integers(0, 2**16)), frames, tokens, dim)
    values = arrays(np.float32, (frames, tokens, dim), elements=st.sampled_from([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0]))
    return torch.from_numpy(draw(values))


def assert_contract(indices: list[int], frames: int, tokens: int, ratio: float) -> None:
    assert len(indices) == keep_count(frames * tokens, ratio)
    assert indices == sorted(set(indices))
    assert all(0 <= i < frames * tokens for i in indices)
    assert max(np.bincount(np.asarray(indices) // tokens, minlength=frames)) <= tokens


@PROPERTY
@given(video=videos(), ratio=ratios, config=configs)
def test_reference_and_graph_keep_the_same_exact_k_sorted_tokens(video, ratio, config):
    frames, tokens, dim = video.shape
    selection = select_tokens(video, ratio, config)
    indices = selection.indices.tolist()
    assert_contract(indices, frames, tokens, ratio)
    assert selection.budget_per_frame.tolist() == np.bincount(np.asarray(indices) // tokens, minlength=frames).tolist()
    assert int(selection.budget_per_segment.sum()) == len(indices)
    assert select_tokens(video, ratio, config).indices.tolist() == indices  # deterministic
    _, graph_indices = PruningGraph(frames, tokens, dim, ratio, config)(video)
    assert graph_indices.tolist() == indices


@PROPERTY
@given(video=videos(), ratio=ratios, exponent=st.integers(-60, 60))
def test_a_power_of_two_scale_changes_nothing(video, ratio, exponent):
    """Every decision depends on directions only; 2**k scales every float exactly."""
    scaled = video * 2.0**exponent
    assert select_tokens(scaled, ratio).indices.tolist() == select_tokens(video, ratio).indices.tolist()


def first_pick_keys(video: torch.Tensor, config: MMGConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(quantised gains, quantised peak scores), (T, P), at the first pick of a one-segment video."""
    stats = scores.token_stats(video, config)
    band = scores.band(stats, torch.ones(video.shape[0], dtype=torch.bool))
    gain_levels, score_levels = scores.pick_levels(video.shape[1])
    gain_q = scores.quantise(scores.marginal_gain(band, torch.zeros(video.shape[:2])), gain_levels)
    kept = torch.zeros(video.shape[:2], dtype=torch.bool)
    peak = scores.peak_scores(band.squared_distance, scores.rank_keys(gain_q, kept, -1.0), gain_q)
    return gain_q, scores.quantise(peak, score_levels)


@PROPERTY
@given(data=st.data(), shape=shapes, seed=st.integers(0, 2**16), ratio=ratios)
def test_token_order_within_a_frame_does_not_matter(data, shape, seed, ratio):
    """Permuting each frame's tokens permutes what MMG-Vid keeps, up to ties: segments and budgets
    always; the kept tokens exactly in a one-pick configuration (one round, all frames at once, no
    segment cuts) whenever no two tokens of a frame tie and the quantised numbers themselves are
    permuted alike (sums in another order can round across a grid step)."""
    frames, tokens, dim = shape
    video = make_video("random", seed, frames, tokens, dim)
    order = torch.stack([torch.tensor(data.draw(st.permutations(range(tokens)))) for _ in range(frames)])
    permuted = torch.gather(video, 1, order.unsqueeze(2).expand(frames, tokens, dim))
    one_pick = MMGConfig(rounds=1, stride=1, substeps=1, max_segments=1)
    original, moved = first_pick_keys(video, one_pick), first_pick_keys(permuted, one_pick)
    assume(all(len(set(row)) == len(row) for values in original for row in values.tolist()))
    assume(all(torch.equal(torch.gather(a, 1, order), b) for a, b in zip(original, moved)))
    before, after = select_tokens(video, ratio), select_tokens(permuted, ratio)
    assert after.segment_of_frame.tolist() == before.segment_of_frame.tolist()
    assert after.budget_per_frame.tolist() == before.budget_per_frame.tolist()
    kept = select_tokens(permuted, ratio, one_pick).indices
    mapped = sorted((kept // tokens * tokens + order.reshape(-1)[kept]).tolist())
    assert mapped == select_tokens(video, ratio, one_pick).indices.tolist()


ONNX_CASES = [(1, 5, 3, 0.5), (3, 7, 4, 0.3), (5, 9, 4, 0.1), (6, 10, 6, 0.25)]


@functools.cache
def onnx_session(frames: int, tokens: int, dim: int, ratio: float, scratch: str) -> onnxruntime.InferenceSession:
    path = export_pruner(frames, tokens, dim, ratio, "fp32", __import__("pathlib").Path(scratch) /
                         f"pruner-{frames}x{tokens}x{dim}-{ratio}.onnx")
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("case", ONNX_CASES, ids=["x".join(map(str, c)) for c in ONNX_CASES])
def test_onnx_under_onnx_runtime_keeps_the_references_tokens(case, tmp_path_factory):
    frames, tokens, dim, ratio = case
    session = onnx_session(*case, str(tmp_path_factory.getbasetemp()))
    names = [output.name for output in session.get_outputs()]

    @PROPERTY
    @given(video=videos(st.just((frames, tokens, dim))))
    def check(video):
        outputs = dict(zip(names, session.run(None, {"video_tokens": video.numpy()})))
        indices = outputs["kept_indices"].tolist()
        assert_contract(indices, frames, tokens, ratio)
        assert indices == select_tokens(video, ratio).indices.tolist()

    check()
