"""The runtime's TensorRT engine runner against the TensorRT stand-in (no GPU here runs an engine).

The stand-in checks the documented tensor API (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3(stream handle)``) and runs ``output = 2 * input + 1`` on the bound memory, so
these tests see which addresses the runner binds and what it reads back. The CUDA stream is a
stand-in too: it records ``synchronize`` and ``free``.

TensorRT-RTX's runner adds the engine-validity check on the header, the runtime config, its runtime
cache and its CUDA graphs: :func:`rtx_module` extends the stand-in with those calls, as NVIDIA's
TensorRT-RTX samples make them (the real TensorRT-RTX refuses every engine on this CPU:
tests/runtime/test_tensorrt_rtx_runtime.py).
"""
from __future__ import annotations

import enum
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import trt_standin
from mmg_runtime.errors import UserError
from mmg_runtime.tensor import Tensor

IO = {"pixel_values": ("INPUT", (-1, 3, 2, 2), "FLOAT"), "video_tokens": ("OUTPUT", (-1, 3, 2, 2), "FLOAT")}
RTX_VERSION = "1.7.1.116"
KERNELS = b"kernels compiled for this GPU"


class Stream:
    """A CUDA stream stand-in: a handle and a log."""

    log: list[str] = []

    def __init__(self) -> None:
        self.ptr = 0x5EED

    def synchronize(self) -> None:
        Stream.log.append("synchronize")

    def free(self) -> None:
        Stream.log.append("free")


# --- a TensorRT-RTX stand-in: the stand-in's runtime plus TensorRT-RTX's runtime calls ----------------

RTX = {"validity": "VALID", "diagnostics": 0, "said": None}
"""What the TensorRT-RTX stand-in's ``get_engine_validity`` answers (and logs as an error), per test."""
EngineValidity = enum.IntEnum("EngineValidity", {"VALID": 0, "SUBOPTIMAL": 1, "INVALID": 2})
EngineInvalidityDiagnostics = enum.IntFlag("EngineInvalidityDiagnostics", {
    "VERSION_MISMATCH": 1, "UNSUPPORTED_CC": 2, "OLD_CUDA_DRIVER": 4, "OLD_CUDA_RUNTIME": 8,
    "INSUFFICIENT_GPU_MEMORY": 16, "MALFORMED_ENGINE": 32, "CUDA_ERROR": 64})
CudaGraphStrategy = enum.IntEnum("CudaGraphStrategy", {"DISABLED": 0, "WHOLE_GRAPH_CAPTURE": 1})


class RuntimeCache:
    """``IRuntimeCache``: takes back only what it serialized (another GPU's or release's cache: False)."""

    def __init__(self) -> None:
        self.kernels = b""

    def deserialize(self, blob: bytes) -> bool:
        trt_standin._record(f"RuntimeCache.deserialize({bytes(blob)!r})")
        if bytes(blob) != KERNELS:
            return False
        self.kernels = bytes(blob)
        return True

    def serialize(self) -> trt_standin.HostMemory:
        return trt_standin.HostMemory(KERNELS)


class RuntimeConfig:
    def __init__(self) -> None:
        self.cuda_graph_strategy = CudaGraphStrategy.DISABLED
        self.cache: RuntimeCache | None = None

    def create_runtime_cache(self) -> RuntimeCache:
        trt_standin._record("create_runtime_cache")
        return RuntimeCache()

    def set_runtime_cache(self, cache: RuntimeCache) -> bool:
        trt_standin._record("set_runtime_cache")
        self.cache = cache
        return True


class RtxEngine(trt_standin.Engine):
    def create_runtime_config(self) -> RuntimeConfig:
        trt_standin._record("create_runtime_config")
        self.config = RuntimeConfig()
        return self.config

    def create_execution_context(self, runtime_config: RuntimeConfig | None = None) -> trt_standin.ExecutionContext:
        trt_standin._record(f"create_execution_context(runtime config: {runtime_config is self.config})")
        return trt_standin.ExecutionContext(self)


class RtxRuntime(trt_standin.Runtime):
    engine_header_size = 64

    def __init__(self, logger: trt_standin.ILogger) -> None:
        super().__init__(logger)
        self.logger = logger

    def get_engine_validity(self, header: bytes) -> tuple:
        trt_standin._record(f"get_engine_validity({len(header)} bytes)")
        if RTX["said"]:
            self.logger.log(trt_standin.Logger.ERROR, RTX["said"])
        return EngineValidity[RTX["validity"]], RTX["diagnostics"]

    def deserialize_cuda_engine(self, data: bytes) -> RtxEngine | None:
        engine = super().deserialize_cuda_engine(data)
        return None if engine is None else RtxEngine(engine._tensors)


def rtx_module() -> types.ModuleType:
    """The TensorRT-RTX stand-in: the TensorRT stand-in's runtime classes and TensorRT-RTX's own."""
    trt = trt_standin.module()
    rtx = types.ModuleType("tensorrt_rtx")
    rtx.__version__ = RTX_VERSION
    for name in ("ILogger", "Logger", "TensorIOMode", "DataType"):
        setattr(rtx, name, getattr(trt, name))
    rtx.Runtime, rtx.EngineValidity, rtx.CudaGraphStrategy = RtxRuntime, EngineValidity, CudaGraphStrategy
    rtx.EngineInvalidityDiagnostics = EngineInvalidityDiagnostics
    return rtx


@pytest.fixture
def engine_file(tmp_path, monkeypatch):
    """make(flavour="tensorrt", **scenario) -> (an engine file of 100 bytes, the stand-in's state)."""
    from polygraphy import cuda

    trt = trt_standin.module()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", rtx_module())
    monkeypatch.setattr(cuda, "Stream", Stream)
    monkeypatch.setitem(RTX, "validity", "VALID")
    monkeypatch.setitem(RTX, "diagnostics", 0)
    monkeypatch.setitem(RTX, "said", None)
    Stream.log = []

    def make(**scenario) -> tuple:
        scenario = trt_standin.Scenario(io_tensors=IO, **scenario)
        trt.__version__ = scenario.version
        trt_standin.STATE.reset(scenario)
        path = tmp_path / "encoder.engine"
        path.write_bytes(b"plan" * 25)
        return path, trt_standin.STATE

    return make


def test_run_bound_sets_shapes_and_addresses_then_executes_and_waits(engine_file):
    from mmg_runtime.trt_engine import TrtEngine

    path, state = engine_file()
    engine = TrtEngine(path)
    assert engine.inputs == {"pixel_values": ((-1, 3, 2, 2), "float32")}
    assert engine.outputs == {"video_tokens": ((-1, 3, 2, 2), "float32")}
    assert engine.providers == ["TensorRT 10.3.0.30"]
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


def test_run_on_host_arrays_sets_each_shape_once(engine_file, monkeypatch):
    """``run`` binds and executes under one hold of the lock, each input's shape set once (host memory
    stands in for device memory: no GPU here)."""
    from mmg_runtime.tensor import HOST_TYPES
    from mmg_runtime.trt_engine import TrtEngine

    monkeypatch.setattr(TrtEngine, "empty",
                        lambda self, shape, dtype: Tensor.from_numpy(np.empty(shape, HOST_TYPES[dtype])))
    path, state = engine_file()
    engine = TrtEngine(path)
    frames = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    out = engine.run({"pixel_values": frames})
    np.testing.assert_array_equal(out["video_tokens"], 2 * frames + 1)
    assert state.calls[2:] == ["set_input_shape pixel_values (2, 3, 2, 2)", "set_tensor_address pixel_values",
                               "set_tensor_address video_tokens", "execute_async_v3"]
    with pytest.raises(UserError, match=r"input 'pixel_values' of shape \(33, 3, 2, 2\) is outside"):
        engine.run({"pixel_values": np.zeros((33, 3, 2, 2), np.float32)})


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
    with pytest.raises(UserError) as error:
        TrtEngine(path).run_bound({"pixel_values": data}, {"video_tokens": data})
    assert str(error.value) == "encoder.engine: TensorRT 10.3.0.30 failed to run the engine (it logged no error)"
    assert Stream.log == []


def test_an_engine_that_does_not_deserialize_is_one_line(engine_file):
    from mmg_runtime.trt_engine import TrtEngine

    path, state = engine_file(deserialized=False)
    with pytest.raises(UserError) as error:
        TrtEngine(path)
    assert str(error.value) == (f"{path}: TensorRT 10.3.0.30 cannot load this engine: it logged no error (an engine "
                                "built for another release or GPU does not load: rebuild it with mmg-export build)")
    assert state.calls == ["deserialize_cuda_engine"]


def test_a_missing_engine_file(tmp_path):
    from mmg_runtime.trt_engine import TrtEngine

    with pytest.raises(UserError, match=r"nope.engine: no such TensorRT engine"):
        TrtEngine(tmp_path / "nope.engine")
    with pytest.raises(UserError, match=r"nope.engine: no such TensorRT-RTX engine"):
        TrtEngine(tmp_path / "nope.engine", "tensorrt-rtx")


# --- TensorRT-RTX ------------------------------------------------------------------------------------


def test_rtx_engine_checks_its_header_then_runs_from_a_runtime_config(engine_file, tmp_path, caplog):
    """Header first (64 bytes of a 100-byte file), then the engine, a runtime config with the runtime
    cache and CUDA graphs, and the context made from that config; the cache is written on close. Where
    the cache lives is logged, never in ``providers`` (which the server's clients see)."""
    from mmg_runtime.trt_engine import TrtEngine

    path, state = engine_file()
    cache = tmp_path / "cache" / "encoder.runtime-cache"
    caplog.set_level("INFO", logger="mmg_runtime.trt_engine")
    engine = TrtEngine(path, "tensorrt-rtx", cuda_graph=True, runtime_cache=cache)
    assert engine.providers == [f"TensorRT-RTX {RTX_VERSION}", "CUDA graph", "runtime cache new"]
    assert caplog.messages == [f"encoder.engine: TensorRT-RTX's runtime cache new, kept in {cache}"]
    assert engine.runtime_config.cuda_graph_strategy == CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
    assert state.calls == ["get_engine_validity(64 bytes)", "deserialize_cuda_engine", "create_runtime_config",
                           "create_runtime_cache", "set_runtime_cache", "create_execution_context(runtime config: True)"]
    data = Tensor.from_numpy(np.ones((2, 3, 2, 2), np.float32))
    out = Tensor.from_numpy(np.zeros((2, 3, 2, 2), np.float32))
    engine.run_bound({"pixel_values": data}, {"video_tokens": out})
    assert (out.array() == 3).all()
    assert not cache.exists()
    engine.close()
    assert cache.read_bytes() == KERNELS and list(cache.parent.iterdir()) == [cache]
    assert Stream.log == ["synchronize", "free"]

    again = TrtEngine(path, "tensorrt-rtx", runtime_cache=cache)
    assert again.providers == [f"TensorRT-RTX {RTX_VERSION}", "runtime cache read"]
    assert caplog.messages[-1] == f"encoder.engine: TensorRT-RTX's runtime cache read from {cache}"
    assert f"RuntimeCache.deserialize({KERNELS!r})" in state.calls
    assert again.runtime_config.cuda_graph_strategy == CudaGraphStrategy.DISABLED


def test_a_runtime_cache_from_another_gpu_is_replaced(engine_file, tmp_path):
    """TensorRT-RTX rejects a cache from another release, GPU or driver: the engine compiles afresh
    and the file is replaced on close."""
    from mmg_runtime.trt_engine import TrtEngine

    path, _ = engine_file()
    cache = tmp_path / "foreign.runtime-cache"
    cache.write_bytes(b"kernels for another GPU")
    with TrtEngine(path, "tensorrt-rtx", runtime_cache=cache) as engine:
        assert engine.providers[-1] == "runtime cache new"
    assert cache.read_bytes() == KERNELS


def test_an_unreadable_runtime_cache_is_a_warning_and_the_engine_starts_without_it(engine_file, tmp_path):
    from mmg_runtime.trt_engine import TrtEngine

    path, state = engine_file()
    cache = tmp_path / "encoder.runtime-cache"
    cache.mkdir()  # read_bytes: IsADirectoryError, whoever runs the test (root reads any file)
    with pytest.warns(RuntimeWarning, match=r"^encoder.engine: TensorRT-RTX's runtime cache not read from "
                                            r".*encoder.runtime-cache, the engine starts without it: \[Errno 21\]"):
        engine = TrtEngine(path, "tensorrt-rtx", runtime_cache=cache)
    assert engine.providers == [f"TensorRT-RTX {RTX_VERSION}", "runtime cache new"]
    assert not any(call.startswith("RuntimeCache.deserialize") for call in state.calls)


def test_an_unwritable_runtime_cache_is_a_warning(engine_file, tmp_path):
    from mmg_runtime.trt_engine import TrtEngine

    path, _ = engine_file()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache's folder would be")
    engine = TrtEngine(path, "tensorrt-rtx", runtime_cache=blocker / "encoder.runtime-cache")
    with pytest.warns(RuntimeWarning, match=r"^encoder.engine: TensorRT-RTX's runtime cache not saved to .*not-a-folder"):
        engine.close()
    assert Stream.log == ["free"] and engine.context is None


def test_an_rtx_engine_that_cannot_run_here_is_one_line_before_it_is_read(engine_file):
    """TensorRT-RTX's validity flags and its logged error, in one line; only the header was read."""
    from mmg_runtime.trt_engine import TrtEngine

    path, state = engine_file()
    RTX.update(validity="INVALID", diagnostics=EngineInvalidityDiagnostics.VERSION_MISMATCH
               | EngineInvalidityDiagnostics.UNSUPPORTED_CC, said="The engine cannot run on this GPU,\n  which has "
               "compute capability 9.0.")
    with pytest.raises(UserError) as error:
        TrtEngine(path, "tensorrt-rtx")
    assert str(error.value) == (
        f"{path}: TensorRT-RTX {RTX_VERSION} cannot run this engine here: built with another TensorRT-RTX release "
        "(rebuild with mmg-export build); not built for this GPU's compute capability, or one TensorRT-RTX does not "
        "support; The engine cannot run on this GPU, which has compute capability 9.0.")
    assert state.calls == ["get_engine_validity(64 bytes)"]
    assert Stream.log == []


def test_a_suboptimal_rtx_engine_runs_with_a_note(engine_file):
    from mmg_runtime.trt_engine import TrtEngine

    path, _ = engine_file()
    RTX["validity"] = "SUBOPTIMAL"
    with TrtEngine(path, "tensorrt-rtx") as engine:
        assert engine.providers == [f"TensorRT-RTX {RTX_VERSION}", "may run slower here (engine validity SUBOPTIMAL)"]


def test_runtime_cache_file_is_outside_the_artifacts(monkeypatch, tmp_path):
    from mmg_runtime.trt_engine import runtime_cache_file

    digest = "ab" * 32
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert runtime_cache_file(digest) == tmp_path / "mmg-export" / "tensorrt-rtx" / f"{digest}.runtime-cache"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert runtime_cache_file(digest) == Path.home() / ".cache" / "mmg-export" / "tensorrt-rtx" / f"{digest}.runtime-cache"
