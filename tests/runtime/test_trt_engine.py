"""The runtime's TensorRT engine runner against the TensorRT stand-in (TensorRT cannot be installed here).

The stand-in checks the documented tensor API (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3(stream handle)``) and runs ``output = 2 * input + 1`` on the bound memory, so
these tests see which addresses the runner binds and what it reads back. The CUDA stream is a
stand-in too (no GPU here): it records ``synchronize`` and ``free``.
"""
from __future__ import annotations

import numpy as np
import pytest

import trt_standin
from mmg_runtime.errors import UserError
from mmg_runtime.tensor import Tensor

IO = {"pixel_values": ("INPUT", (-1, 3, 2, 2), "FLOAT"), "video_tokens": ("OUTPUT", (-1, 3, 2, 2), "FLOAT")}


class Stream:
    """A CUDA stream stand-in: a handle and a log."""

    log: list[str] = []

    def __init__(self) -> None:
        self.ptr = 0x5EED

    def synchronize(self) -> None:
        Stream.log.append("synchronize")

    def free(self) -> None:
        Stream.log.append("free")


@pytest.fixture
def engine_file(tmp_path, monkeypatch):
    from polygraphy import cuda

    trt = trt_standin.module()
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", trt)
    monkeypatch.setattr(cuda, "Stream", Stream)
    Stream.log = []

    def make(**scenario) -> tuple:
        scenario = trt_standin.Scenario(io_tensors=IO, **scenario)
        trt.__version__ = scenario.version
        trt_standin.STATE.reset(scenario)
        path = tmp_path / "encoder.engine"
        path.write_bytes(b"plan")
        return path, trt_standin.STATE

    return make


def test_run_bound_sets_shapes_and_addresses_then_executes_and_waits(engine_file):
    from mmg_runtime.trt_engine import TrtEngine

    path, state = engine_file()
    engine = TrtEngine(path)
    assert engine.inputs == {"pixel_values": ((-1, 3, 2, 2), "float32")}
    assert engine.outputs == {"video_tokens": ((-1, 3, 2, 2), "float32")}
    source = Tensor.from_numpy(np.arange(36, dtype=np.float32).reshape(3, 3, 2, 2))
    target = Tensor.from_numpy(np.zeros((3, 3, 2, 2), np.float32))
    engine.run_bound({"pixel_values": source}, {"video_tokens": target})
    assert state.calls == ["deserialize_cuda_engine", "create_execution_context",
                           "set_input_shape pixel_values (3, 3, 2, 2)", "set_tensor_address pixel_values",
                           "set_tensor_address video_tokens", "execute_async_v3"]
    assert Stream.log == ["synchronize"]
    np.testing.assert_array_equal(target.array(), 2 * source.array() + 1)
    engine.close()
    engine.close()
    assert Stream.log == ["synchronize", "free"]


def test_rows_of_a_buffer_are_bound_by_address(engine_file):
    """The pipeline encodes a chunk into rows [8:16) of the video's token buffer: only those rows change."""
    from mmg_runtime.trt_engine import TrtEngine

    path, _ = engine_file()
    engine = TrtEngine(path)
    tokens = Tensor.from_numpy(np.zeros((32, 3, 2, 2), np.float32))
    chunk = Tensor.from_numpy(np.ones((8, 3, 2, 2), np.float32))
    engine.run_bound({"pixel_values": chunk}, {"video_tokens": tokens.rows(8, 16)})
    written = tokens.array()
    assert (written[8:16] == 3).all() and (written[:8] == 0).all() and (written[16:] == 0).all()


def test_a_shape_outside_the_profile_is_one_line(engine_file):
    from mmg_runtime.trt_engine import TrtEngine

    path, state = engine_file(max_rows=32)
    engine = TrtEngine(path)
    big = Tensor.from_numpy(np.zeros((33, 3, 2, 2), np.float32))
    with pytest.raises(UserError, match=r"encoder.engine: input 'pixel_values' of shape \(33, 3, 2, 2\) is outside "
                                        r"the engine's optimisation profile"):
        engine.run_bound({"pixel_values": big}, {"video_tokens": big})
    assert "execute_async_v3" not in state.calls


def test_a_failed_execution_is_one_line(engine_file):
    from mmg_runtime.trt_engine import TrtEngine

    path, _ = engine_file(executes=False)
    data = Tensor.from_numpy(np.zeros((1, 3, 2, 2), np.float32))
    with pytest.raises(UserError, match="encoder.engine: TensorRT failed to run the engine"):
        TrtEngine(path).run_bound({"pixel_values": data}, {"video_tokens": data})
    assert Stream.log == []


def test_an_engine_that_does_not_deserialize_is_one_line(engine_file):
    from mmg_runtime.trt_engine import TrtEngine

    path, state = engine_file(deserialized=False)
    with pytest.raises(UserError, match=r"encoder.engine: TensorRT 10.3.0.30 cannot load this engine; .*rebuild"):
        TrtEngine(path)
    assert state.calls == ["deserialize_cuda_engine"]


def test_a_missing_engine_file(tmp_path):
    from mmg_runtime.trt_engine import TrtEngine

    with pytest.raises(UserError, match=r"nope.engine: no such TensorRT engine"):
        TrtEngine(tmp_path / "nope.engine")
