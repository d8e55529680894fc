"""The preprocessing graph: uint8 RGB frames of any size -> the encoder's pixel values.

It computes what ``LlavaOnevisionVideoProcessor`` does on a CPU (torchvision backend): resize
each frame to S x S with antialiased bicubic (Keys' cubic, a = -0.5, stretched by the downscale
factor), horizontal pass then vertical pass, each rounded to uint8; then ``(x - mean) / std`` on
the 0-255 scale in float32; then the precision's dtype. Two forms of that computation:

* ``"matmul"`` (GPU targets, TensorRT and ONNX Runtime CUDA): each pass is one MatMul with a
  resampling matrix that the runtime computes on the host for the frame size
  (:func:`mmg_runtime.preprocess.resize_matrix`: ATen's own int16 fixed-point weights), followed
  by ``Floor(x + 0.5)`` and ``Clip(0, 255)``. Every product is exact in float32, so the result is
  the processor's up to the order of the sums (a pixel differs by 1 level at most, and rarely).
  Plain MatMul, Floor and Clip: any frame size, and TensorRT parses it (its Resize has no cubic
  mode and no antialiasing).
* ``"resize"`` (the CPU target): one ONNX ``Resize`` (cubic, a = -0.5, antialias, exclude_outside,
  half_pixel), which ONNX Runtime's CPU kernel runs as a banded fixed-point resampler in the
  manner of Pillow: within 1 level of the processor, and fast on a CPU, where the dense MatMuls
  of the first form would cost ~90 GFLOP per 32 frames of 720p.

Inputs: ``frames (N, H, W, 3) uint8`` (N, H, W dynamic) and, for "matmul", ``resize_rows (S, H)``
and ``resize_cols (W, S)`` float32. Output: ``pixel_values (N, 3, S, S)`` in the precision's dtype.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

FORMS = ("matmul", "resize")
OPSET = 18
IR_VERSION = 10
"""ONNX IR version written (the dynamo exporter's, which ONNX Runtime >= 1.16 and TensorRT 10.3 read)."""
ONNX_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)


def write_preprocess_graph(path: Path, size: int, dtype: str, form: str,
                           mean: tuple[float, ...] = SIGLIP_MEAN, std: tuple[float, ...] = SIGLIP_STD) -> Path:
    """Write the preprocessing graph for ``size`` x ``size`` pixel values of ``dtype`` to ``path``."""
    if form not in FORMS:
        raise ValueError(f"form={form!r}: expected one of {', '.join(FORMS)}")
    frames = helper.make_tensor_value_info("frames", TensorProto.UINT8, ["frames", "height", "width", 3])
    pixels = helper.make_tensor_value_info("pixel_values", ONNX_TYPES[dtype], ["frames", 3, size, size])
    constants = [_channel_vector("mean", mean), _channel_vector("std", std)]
    if form == "matmul":
        inputs = [frames, helper.make_tensor_value_info("resize_rows", TensorProto.FLOAT, [size, "height"]),
                  helper.make_tensor_value_info("resize_cols", TensorProto.FLOAT, ["width", size])]
        constants += [_scalar("half", 0.5), _scalar("low", 0.0), _scalar("high", 255.0)]
        nodes = _matmul_resize()
    else:
        inputs = [frames]
        constants.append(helper.make_tensor("sizes", TensorProto.INT64, [2], [size, size]))
        nodes = _onnx_resize()
    nodes += [helper.make_node("Sub", ["resized", "mean"], ["centred"]),
              helper.make_node("Div", ["centred", "std"], ["normalised"]),
              helper.make_node("Cast", ["normalised"], ["pixel_values"], to=ONNX_TYPES[dtype])]
    graph = helper.make_graph(nodes, "preprocess", inputs, [pixels], initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="mmg-export")
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def _matmul_resize() -> list[onnx.NodeProto]:
    """frames -> resized (N, 3, S, S) float32 on the 0-255 scale, rounded to integers after each pass."""
    return [
        helper.make_node("Cast", ["frames"], ["frames_float"], to=TensorProto.FLOAT),  # TensorRT casts uint8 only
        helper.make_node("Transpose", ["frames_float"], ["planar"], perm=[0, 3, 1, 2]),  # (N, 3, H, W)
        helper.make_node("MatMul", ["planar", "resize_cols"], ["wide"]),  # (N, 3, H, S)
        *_round_to_uint8_levels("wide", "wide_levels"),
        helper.make_node("MatMul", ["resize_rows", "wide_levels"], ["tall"]),  # (N, 3, S, S)
        *_round_to_uint8_levels("tall", "resized"),
    ]


def _onnx_resize() -> list[onnx.NodeProto]:
    """frames -> resized (N, 3, S, S) float32 through one antialiased cubic Resize on uint8."""
    return [
        helper.make_node("Resize", ["frames", "", "", "sizes"], ["small"], axes=[1, 2], mode="cubic",
                         cubic_coeff_a=-0.5, antialias=1, exclude_outside=1,
                         coordinate_transformation_mode="half_pixel"),  # (N, S, S, 3) uint8
        helper.make_node("Transpose", ["small"], ["small_planar"], perm=[0, 3, 1, 2]),
        helper.make_node("Cast", ["small_planar"], ["resized"], to=TensorProto.FLOAT),
    ]


def _round_to_uint8_levels(source: str, target: str) -> list[onnx.NodeProto]:
    """target = clip(floor(source + 0.5), 0, 255): ATen's rounding of each pass to uint8."""
    return [helper.make_node("Add", [source, "half"], [f"{source}_shifted"]),
            helper.make_node("Floor", [f"{source}_shifted"], [f"{source}_floor"]),
            helper.make_node("Clip", [f"{source}_floor", "low", "high"], [target])]


def _scalar(name: str, value: float) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.FLOAT, [], [value])


def _channel_vector(name: str, values: tuple[float, ...]) -> onnx.TensorProto:
    """(1, 3, 1, 1) float32 ``values`` on the 0-255 scale, as the processor fuses its rescale in."""
    scaled = np.asarray(values, dtype=np.float32) * np.float32(255.0)
    return helper.make_tensor(name, TensorProto.FLOAT, [1, 3, 1, 1], scaled.tolist())
