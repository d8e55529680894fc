"""Host-side half of the preprocessing graph: the resampling matrices for one frame size.

The "matmul" preprocessing graph (``mmg_export/builder/preprocess.py``) resizes a frame with two
MatMuls whose weights depend on the frame's size; they are computed here, once per size, with
ATen's own arithmetic (``_compute_index_ranges_int16_weights``, what torchvision's uint8 bicubic
antialiased resize runs for LlavaOnevisionVideoProcessor): Keys' cubic (a = -0.5) stretched by the
downscale factor, normalised, then rounded to int16 fixed point. The matrix holds those integers
divided by 2^precision, which float32 represents exactly, so the graph's sums of products are the
processor's fixed-point sums. NumPy only.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

_CUBIC_A = -0.5  # Keys' cubic, as torch uses for bicubic with antialias=True (and as PIL does)


@lru_cache(maxsize=16)
def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float32: row o holds the weights of output pixel o over the input pixels.

    Resizing along an axis is ``matrix @ x`` (then rounding to uint8 levels), exactly as ATen
    accumulates ``sum_k weight_k * x[first + k]`` in fixed point. Read-only (cached).
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resize_matrix({in_size}, {out_size}): sizes must be >= 1")
    first, fixed, precision = int16_weights(in_size, out_size)
    matrix = np.zeros((out_size, in_size), dtype=np.float32)
    rows = np.arange(out_size)[:, None]
    columns = np.minimum(first[:, None] + np.arange(fixed.shape[1]), in_size - 1)
    np.add.at(matrix, (np.broadcast_to(rows, columns.shape), columns), fixed / np.float32(2**precision))
    matrix.flags.writeable = False
    return matrix


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel (a = -0.5), float64, same operation order as ATen."""
    a = _CUBIC_A
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def int16_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Fixed-point resampling weights for one axis, as ATen's ``_compute_index_ranges_int16_weights``.

    Returns first_tap (out_size,) int64 (the first input index of each output), weights
    (out_size, taps) int32 (zero past the window) and the fixed-point precision in bits.
    """
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    inv_scale = 1.0 / scale if scale >= 1.0 else 1.0
    taps = int(math.ceil(support)) * 2 + 1
    center = scale * (np.arange(out_size) + 0.5)
    first = np.maximum((center - support + 0.5).astype(np.int64), 0)
    count = np.clip(np.minimum((center + support + 0.5).astype(np.int64), in_size) - first, 0, taps)
    j = np.arange(taps)
    weights = _cubic(((first[:, None] + j).astype(np.float64) - center[:, None] + 0.5) * inv_scale)
    weights = np.where(j < count[:, None], weights, 0.0)
    total = np.zeros(out_size)
    for k in range(taps):  # sequential sum, in ATen's order
        total += weights[:, k]
    weights = weights / total[:, None]
    precision = 0
    while precision < 22 and int(0.5 + weights.max() * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    fixed = weights * (1 << precision)
    fixed = np.where(fixed < 0, np.trunc(fixed - 0.5), np.trunc(fixed + 0.5)).astype(np.int32)
    return first, fixed, precision


class Preprocessor:
    """Runs the artifacts' preprocessing graph on frames already on its device.

    ``__call__(frames (N, H, W, 3) uint8, pixels (N, 3, S, S))`` writes the encoder's input into
    ``pixels``. For the "matmul" form the two resampling matrices of each frame size are computed
    once and kept on the device.
    """

    def __init__(self, session, size: int) -> None:
        self.session, self.size = session, size
        self.uses_matrices = "resize_rows" in session.inputs
        self._matrices: dict[tuple[int, int], dict] = {}

    def __call__(self, frames, pixels) -> None:
        inputs = {"frames": frames}
        if self.uses_matrices:
            inputs.update(self._matrices_for(frames.shape[1], frames.shape[2]))
        self.session.run_bound(inputs, {"pixel_values": pixels})

    def _matrices_for(self, height: int, width: int) -> dict:
        key = (height, width)
        if key not in self._matrices:
            self._matrices[key] = {
                "resize_rows": self.session.upload(resize_matrix(height, self.size)),
                "resize_cols": self.session.upload(np.ascontiguousarray(resize_matrix(width, self.size).T)),
            }
        return self._matrices[key]
