"""The preprocessing graph (both forms) against LlavaOnevisionVideoProcessor's arithmetic.

The processor (transformers 5.x, torchvision backend, CPU) resizes uint8 frames with
``F.interpolate(mode="bicubic", antialias=True)`` and normalises in float32; ``reference_pixels``
writes those ops out in torch. The bound we state and test: the "matmul" form (GPU targets) is
within 1 uint8 level of the processor's resized pixels everywhere and equal on >= 99.99 % of
them; the "resize" form (CPU target) within 1 level everywhere and equal on >= 99 %.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from mmg_export.builder.preprocess import write_preprocess_graph
from mmg_export.lint import supported_versions
from mmg_export.lint.rules import lint_model
from mmg_runtime.preprocess import int16_weights, resize_matrix
from mmg_runtime.video import load_video

SIGLIP = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def reference_pixels(frames: np.ndarray, mean=SIGLIP[0], std=SIGLIP[1], size: int = 384) -> np.ndarray:
    """What LlavaOnevisionVideoProcessor computes on a CPU, op by op (float32 (N, 3, S, S))."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    mean_t = (torch.tensor(mean) * (1.0 / (1 / 255))).view(1, 3, 1, 1)
    std_t = (torch.tensor(std) * (1.0 / (1 / 255))).view(1, 3, 1, 1)
    return ((x.to(torch.float32) - mean_t) / std_t).numpy()


def run_graph(path: Path, frames: np.ndarray, size: int = 384) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"frames": frames}
    if "resize_rows" in {i.name for i in session.get_inputs()}:
        feeds["resize_rows"] = resize_matrix(frames.shape[1], size)
        feeds["resize_cols"] = np.ascontiguousarray(resize_matrix(frames.shape[2], size).T)
    return session.run(None, feeds)[0]


def levels(pixels: np.ndarray, mean, std) -> np.ndarray:
    """Back from normalised pixels to the 0-255 resized values (float64, to compare levels)."""
    mean255 = np.asarray(mean, np.float64).reshape(1, 3, 1, 1) * 255
    std255 = np.asarray(std, np.float64).reshape(1, 3, 1, 1) * 255
    return pixels.astype(np.float64) * std255 + mean255


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("preprocess")
    return {form: write_preprocess_graph(folder / f"{form}.onnx", 384, "float32", form) for form in ("matmul", "resize")}


@pytest.fixture(scope="module")
def bunny4(bigbuckbunny) -> np.ndarray:
    """4 sampled frames of bigbuckbunny.mp4, (4, 720, 1280, 3) uint8."""
    return load_video(bigbuckbunny, num_frames=4).frames


@pytest.mark.parametrize(("form", "exact_share"), [("matmul", 0.9999), ("resize", 0.99)])
@pytest.mark.parametrize("mean_std", [SIGLIP, CLIP], ids=["siglip", "clip"])
def test_graph_is_within_one_level_of_the_processor(tmp_path, bunny4, form, exact_share, mean_std):
    mean, std = mean_std
    path = write_preprocess_graph(tmp_path / "p.onnx", 384, "float32", form, mean=mean, std=std)
    ours = run_graph(path, bunny4)
    expected = reference_pixels(bunny4, mean, std)
    assert ours.shape == expected.shape == (4, 3, 384, 384) and ours.dtype == np.float32
    difference = np.abs(np.round(levels(ours, mean, std)) - np.round(levels(expected, mean, std)))
    assert difference.max() <= 1 and (difference == 0).mean() >= exact_share
    if form == "matmul":  # same levels -> the very same float32 normalisation
        same = difference == 0
        np.testing.assert_array_equal(ours[same], expected[same])


@pytest.mark.parametrize(("shape", "size"), [((37, 53), 384), ((720, 1280), 100), ((5, 7), 3), ((1, 1), 4),
                                             ((300, 200), 301), ((16, 16), 16), ((1080, 1920), 384)])
def test_matmul_form_any_size(tmp_path, shape, size):
    frames = np.random.default_rng(1).integers(0, 256, (2, *shape, 3), dtype=np.uint8)
    path = write_preprocess_graph(tmp_path / "p.onnx", size, "float32", "matmul")
    ours = np.round(levels(run_graph(path, frames, size), *SIGLIP))
    expected = np.round(levels(reference_pixels(frames, size=size), *SIGLIP))
    difference = np.abs(ours - expected)
    assert difference.max() <= 1 and (difference == 0).mean() >= 0.9999


def test_resize_matrix_rows_are_atens_fixed_point_weights():
    """Row o of the matrix holds ATen's int16 weights / 2^precision at columns first[o] .. first[o] + taps."""
    first, fixed, precision = int16_weights(1280, 384)
    matrix = resize_matrix(1280, 384)
    assert matrix.shape == (384, 1280) and matrix.dtype == np.float32 and not matrix.flags.writeable
    row = 100
    taps = np.count_nonzero(fixed[row])
    np.testing.assert_array_equal(matrix[row, first[row]:first[row] + taps], fixed[row, :taps] / 2.0**precision)
    assert np.count_nonzero(matrix[row]) == taps
    # 1280 -> 384 is a 3.33x downscale: Keys' cubic stretched to +-6.67 input pixels, 15 taps, sums to 1
    assert fixed.shape[1] == 15 and abs(matrix.sum(axis=1) - 1).max() < 1e-4


def test_matmul_form_passes_the_tensorrt_lint(graphs):
    for version in supported_versions():
        report = lint_model(graphs["matmul"], version)
        assert report.ok, report.format_table()


def test_graph_types_and_dynamic_axes(tmp_path):
    import onnx

    model = onnx.load(write_preprocess_graph(tmp_path / "p.onnx", 384, "bfloat16", "matmul"))
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert [d.dim_param or d.dim_value for d in inputs["frames"].shape.dim] == ["frames", "height", "width", 3]
    assert inputs["frames"].elem_type == onnx.TensorProto.UINT8
    output = model.graph.output[0].type.tensor_type
    assert output.elem_type == onnx.TensorProto.BFLOAT16
    assert [d.dim_param or d.dim_value for d in output.shape.dim] == ["frames", 3, 384, 384]
    assert model.ir_version == 10
    with pytest.raises(ValueError, match="form='bilinear': expected one of matmul, resize"):
        write_preprocess_graph(tmp_path / "q.onnx", 384, "float32", "bilinear")
