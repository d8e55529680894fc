"""Near-tie parity: the deployed ONNX graph under ONNX Runtime against the reference, on inputs whose
scores tie or nearly tie (issue 12): duplicated tokens, clustered tokens, frozen frames with flat
letterbox bars, low-rank features, huge and tiny magnitudes, fp16 and bf16-valued inputs, small
shapes. ONNX Runtime computes the products a few ulps differently from torch; the quantised
decisions must absorb that: >= 99.5 % of the kept indices agree on every input, exactly on real
clips, and the torch graph stays exactly the reference everywhere."""
from __future__ import annotations

import functools
from pathlib import Path

import onnxruntime
import pytest
import torch

from mmg_export import PruningGraph, select_tokens
from mmg_export.builder.export import export_pruner
from mmg_export.eval.synthetic import NEAR_TIE_FAMILIES as FAMILIES
from mmg_export.eval.synthetic import make_video

pytestmark = pytest.mark.slow  # every test exports the pruner or reruns the reference on 40 videos
AGREEMENT = 0.995


@functools.cache
def deployed(frames: int, tokens: int, dim: int, ratio: float, precision: str, scratch: str):
    """ONNX Runtime CPU session of ``export_pruner``'s graph, and the index of its ``kept_indices`` output."""
    path = export_pruner(frames, tokens, dim, ratio, precision,
                         Path(scratch) / f"pruner-{frames}x{tokens}x{dim}-{ratio}-{precision}.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, [output.name for output in session.get_outputs()].index("kept_indices")


def agreement(video: torch.Tensor, ratio: float, scratch: Path, precision: str = "fp32") -> float:
    """Share of the reference's kept indices that ONNX Runtime keeps too (the torch graph must be exact)."""
    frames, tokens, dim = video.shape
    expected = select_tokens(video, ratio).indices.tolist()
    with torch.no_grad():
        assert PruningGraph(frames, tokens, dim, ratio)(video)[1].tolist() == expected
    session, output = deployed(frames, tokens, dim, ratio, precision, str(scratch))
    kept = session.run(None, {"video_tokens": video.numpy()})[output]
    assert len(kept) == len(expected)
    return len(set(kept.tolist()) & set(expected)) / len(expected)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_runtime_agrees_on_near_ties(family, seed, tmp_path_factory):
    assert agreement(FAMILIES[family](seed), 0.25, tmp_path_factory.getbasetemp()) >= AGREEMENT


@pytest.mark.parametrize("seed", range(3))
def test_onnx_runtime_agrees_on_fp16_inputs(seed, tmp_path_factory):
    video = make_video("clustered", seed, 16, 49, 32).half()
    assert agreement(video, 0.25, tmp_path_factory.getbasetemp(), "fp16") >= AGREEMENT


def test_onnx_runtime_agrees_on_small_shapes(tmp_path_factory):
    """Small-shape fuzz: 8 x 12 x 6 videos of every kind, 40 seeds, each one >= 99.5 % (here: exact)."""
    kinds = ["random", "static", "cuts", "duplicated", "drifting", "clustered", "low-rank"]
    results = [agreement(make_video(kinds[seed % len(kinds)], seed, 8, 12, 6), 0.3, tmp_path_factory.getbasetemp())
               for seed in range(40)]
    assert min(results) >= AGREEMENT


@pytest.mark.parametrize("ratio", [0.1, 0.25])
def test_onnx_runtime_selects_exactly_the_reference_on_a_real_clip(clip_features, ratio, tmp_path_factory):
    assert agreement(clip_features, ratio, tmp_path_factory.getbasetemp()) == 1.0


def nudge(video: torch.Tensor, seed: int) -> torch.Tensor:
    """Every entry moved by one ulp up or down at random: what another runtime's rounding looks like."""
    up = torch.rand(video.shape, generator=torch.Generator().manual_seed(seed)) < 0.5
    return torch.nextafter(video, torch.where(up, float("inf"), float("-inf")))


@pytest.mark.parametrize("family", ["clustered-8", "duplicated-frames", "letterbox", "low-rank", "bf16-valued"])
def test_a_one_ulp_perturbation_rarely_flips_a_decision(family):
    """Exact duplicates stop being exact after the nudge; quantised decisions still see them as ties.
    A value within a few ulps of a grid boundary still flips (1 of these 40 low-rank videos, whose
    gains crowd together, and 1 bf16-valued one): at most 1 in 10 may change any kept token, and no
    video may lose more than 5 % of them."""
    shares = []
    for seed in range(40):
        video = FAMILIES[family](seed)
        expected = select_tokens(video, 0.25).indices.tolist()
        kept = select_tokens(nudge(video, 1), 0.25).indices.tolist()
        shares.append(len(set(kept) & set(expected)) / len(expected))
    assert sum(share < 1.0 for share in shares) <= 4
    assert min(shares) >= 0.95
