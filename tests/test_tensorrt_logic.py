"""TensorRT builder logic without TensorRT, plus real build/run tests where TensorRT imports."""
from __future__ import annotations

import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from mmg_export.builder import tensorrt as trt_build
from mmg_export.builder.targets import load_target
from mmg_export.builder.tensorrt import (
    BuilderSettings,
    IOTensor,
    build_engine,
    builder_settings,
    dla_supported,
    dtype_name,
    network_flags,
    parse_version,
)
from mmg_runtime.errors import UserError

try:
    import tensorrt  # noqa: F401

    HAVE_TENSORRT = True
except ImportError:
    HAVE_TENSORRT = False
NEEDS_TENSORRT = pytest.mark.skipif(
    not HAVE_TENSORRT, reason="needs TensorRT, not installable in this workplace"
)


def test_parse_version() -> None:
    assert parse_version("10.3.0.30") == (10, 3)
    assert parse_version("11.4.1") == (11, 4)
    assert parse_version("10.13") == (10, 13)
    for bad in ("", "10", "v10.3", "ten.three"):
        with pytest.raises(UserError, match="not a TensorRT version"):
            parse_version(bad)


def test_network_flags_strongly_typed_only_on_10x() -> None:
    assert network_flags("10.3.0") == ["STRONGLY_TYPED"]
    assert network_flags("10.13.3.9") == ["STRONGLY_TYPED"]
    assert network_flags("11.0.0") == []
    assert network_flags("11.4.1") == []
    with pytest.raises(UserError, match="too old"):
        network_flags("10.2.0")


def test_dla_supported_versions() -> None:
    assert [dla_supported(v) for v in ("10.3.0", "10.7.0", "10.8.0", "10.13.3", "11.3.0", "11.4.1")] == [
        True, True, False, False, False, True,
    ]


@pytest.mark.parametrize("trt_version", ["10.3.0", "11.4.1"])
def test_builder_settings_per_target(trt_version: str) -> None:
    def gpu(workspace: int, level: int = 3, hardware: str | None = None) -> BuilderSettings:
        return BuilderSettings(workspace, level, None, False, hardware, ())

    expected = {
        "h100": gpu(8 << 30, level=4),
        "datacenter": gpu(4 << 30, hardware="AMPERE_PLUS"),
        "orin-agx": gpu(2 << 30),
        "orin-nano": gpu(1 << 30),
    }
    for name, settings in expected.items():
        assert builder_settings(load_target(name), trt_version) == settings, name


def test_builder_settings_thor_needs_10_13() -> None:
    thor = load_target("thor")
    with pytest.raises(UserError, match="target 'thor' supports TensorRT 10.13"):
        builder_settings(thor, "10.3.0")
    assert builder_settings(thor, "10.13.3") == BuilderSettings(4 << 30, 3, None, False, None, ())
    assert builder_settings(thor, "11.4.1") == BuilderSettings(4 << 30, 3, None, False, None, ())


def test_builder_settings_dla() -> None:
    dla = replace(load_target("orin-agx"), use_dla=True, dla_core=1)
    expected = BuilderSettings(2 << 30, 3, 1, True, None, ("GPU_FALLBACK",))
    assert builder_settings(dla, "10.3.0") == expected
    assert builder_settings(dla, "11.4.1") == expected
    strict = replace(dla, gpu_fallback=False)
    assert builder_settings(strict, "10.3.0") == BuilderSettings(2 << 30, 3, 1, False, None, ())
    no_dla = r"orin-agx\.toml: use_dla = true, but TensorRT 10\.13\.3 has no DLA"
    with pytest.raises(UserError, match=no_dla):
        builder_settings(dla, "10.13.3")


def test_builder_settings_never_hardware_compatible_on_jetson() -> None:
    odd = replace(load_target("orin-agx"), hardware_compatibility="ampere_plus")
    assert builder_settings(odd, "10.3.0").hardware_compatibility is None


def test_dtype_name() -> None:
    assert [dtype_name(n) for n in ("HALF", "BF16", "FLOAT", "INT64", "BOOL")] == [
        "float16", "bfloat16", "float32", "int64", "bool",
    ]


def test_require_tensorrt_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(UserError) as error:
        trt_build.require_tensorrt()
    assert str(error.value) == (
        "TensorRT is not installed: pip install 'mmg-export[tensorrt]' (x86) or use the TensorRT that "
        "JetPack ships (Jetson); or pass --backend onnxruntime"
    )


def test_device_info_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    assert trt_build.device_info() is None


# --- build_engine against a recording stand-in for the tensorrt module --------------------------


class _FakeConfig:
    def __init__(self) -> None:
        self.pool_limits: dict[str, int] = {}
        self.flags: list[str] = []
        self.cleared: list[str] = []
        self.timing_cache: Any = None

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.pool_limits[pool] = size

    def set_flag(self, flag: str) -> None:
        self.flags.append(flag)

    def clear_flag(self, flag: str) -> None:
        self.cleared.append(flag)

    def create_timing_cache(self, data: bytes) -> SimpleNamespace:
        return SimpleNamespace(serialize=lambda: b"cache+" + data)

    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
        assert ignore_mismatch is False
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> Any:
        return self.timing_cache


class _FakeEngine:
    num_io_tensors = 2
    _tensors = {
        "frames": ("INPUT", (32, 3, 384, 384), "HALF"),
        "features": ("OUTPUT", (32, 196, 1152), "HALF"),
    }

    def get_tensor_name(self, index: int) -> str:
        return list(self._tensors)[index]

    def get_tensor_mode(self, name: str) -> str:
        return self._tensors[name][0]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._tensors[name][1]

    def get_tensor_dtype(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(name=self._tensors[name][2])


def _fake_tensorrt(version: str, parse_errors: list[str], built: bytes | None) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = {}
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity: None})
    trt.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=1)
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.DeviceType = SimpleNamespace(DLA="DLA")
    trt.HardwareCompatibilityLevel = SimpleNamespace(AMPERE_PLUS="AMPERE_PLUS")
    trt.BuilderFlag = SimpleNamespace(GPU_FALLBACK="GPU_FALLBACK", TF32="TF32")
    trt.TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int) -> str:
            trt.calls["network_flags"] = flags
            return "network"

        def create_builder_config(self) -> _FakeConfig:
            trt.calls["config"] = _FakeConfig()
            return trt.calls["config"]

        def build_serialized_network(self, network: str, config: _FakeConfig) -> bytes | None:
            return built

    class OnnxParser:
        num_errors = len(parse_errors)

        def __init__(self, network: str, logger: Any) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            trt.calls["parsed"] = path
            return not parse_errors

        def get_error(self, index: int) -> str:
            return parse_errors[index]

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> _FakeEngine:
            return _FakeEngine()

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch):
    def install(version: str = "10.3.0.30", parse_errors: list[str] = (), built: bytes | None = b"plan"):
        trt = _fake_tensorrt(version, list(parse_errors), built)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        device = {"name": "Orin", "compute_capability": "8.7"}
        monkeypatch.setattr(trt_build, "device_info", lambda: device)
        return trt

    return install


def test_build_engine_10x_flow(tmp_path: Path, fake_trt) -> None:
    trt = fake_trt("10.3.0.30")
    cache = tmp_path / "cache" / "timing.cache"
    logs: list[str] = []
    profile = load_target("orin-agx")
    info = build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", profile, cache, log=logs.append)
    assert trt.calls["network_flags"] == 1 << 1
    assert trt.calls["parsed"] == str(tmp_path / "m.onnx")
    config = trt.calls["config"]
    assert config.pool_limits == {"WORKSPACE": 2 << 30}
    assert config.builder_optimization_level == 3
    assert config.flags == []
    assert config.cleared == ["TF32"]  # fp32 means fp32: TF32 would change the pruner's selection
    assert not hasattr(config, "hardware_compatibility_level")
    assert (tmp_path / "m.engine").read_bytes() == b"plan"
    assert cache.read_bytes() == b"cache+"
    assert info.trt_version == "10.3.0.30"
    assert info.device == {"name": "Orin", "compute_capability": "8.7"}
    assert info.io_tensors == (
        IOTensor("frames", (32, 3, 384, 384), "float16", "input"),
        IOTensor("features", (32, 196, 1152), "float16", "output"),
    )
    assert logs and "orin-agx" in logs[0]


def test_build_engine_11x_reuses_cache_and_sets_hardware_level(tmp_path: Path, fake_trt) -> None:
    trt = fake_trt("11.4.1")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    profile = load_target("datacenter")
    info = build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", profile, cache, log=print)
    assert trt.calls["network_flags"] == 0
    assert trt.calls["config"].hardware_compatibility_level == "AMPERE_PLUS"
    assert cache.read_bytes() == b"cache+old"
    assert info.hardware_compatibility == "AMPERE_PLUS"


def test_build_engine_dla(tmp_path: Path, fake_trt) -> None:
    trt = fake_trt("10.3.0")
    profile = replace(load_target("orin-agx"), use_dla=True, dla_core=1)
    build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", profile, tmp_path / "c", log=print)
    config = trt.calls["config"]
    assert (config.default_device_type, config.DLA_core, config.flags) == ("DLA", 1, ["GPU_FALLBACK"])


def test_build_engine_collects_every_parser_error(tmp_path: Path, fake_trt) -> None:
    fake_trt(parse_errors=["In node 3 (TopK): K exceeds 3840", "In node 9 (NonZero): unsupported"])
    with pytest.raises(UserError) as error:
        build_engine(tmp_path / "prune.onnx", tmp_path / "p.engine", load_target("h100"), tmp_path / "c")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'prune.onnx'}: TensorRT 10.3.0.30 cannot parse")
    assert "K exceeds 3840" in message and "NonZero" in message
    assert not (tmp_path / "p.engine").exists()


def test_build_engine_failed_build(tmp_path: Path, fake_trt) -> None:
    fake_trt(built=None)
    with pytest.raises(UserError, match="could not build an engine for target 'h100'"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", load_target("h100"), tmp_path / "c")


def test_build_engine_out_of_range(tmp_path: Path, fake_trt) -> None:
    fake_trt("12.0.0")
    with pytest.raises(UserError, match="supports TensorRT 10.3 to 11.x, but TensorRT 12.0.0"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", load_target("h100"), tmp_path / "c")


# --- deploy-side runner ------------------------------------------------------------------------


def test_trt_engine_module_imports_without_tensorrt_or_torch() -> None:
    code = (
        "import sys; sys.modules['tensorrt'] = None; sys.modules['torch'] = None\n"
        "import mmg_runtime.trt_engine, mmg_runtime.manifest\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_trt_engine_errors_without_tensorrt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmg_runtime.trt_engine import INSTALL_HINT, TrtEngine

    with pytest.raises(UserError, match="no such TensorRT engine"):
        TrtEngine(tmp_path / "missing.engine")
    engine = tmp_path / "vision.engine"
    engine.write_bytes(b"plan")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(UserError) as error:
        TrtEngine(engine)
    assert str(error.value) == INSTALL_HINT


@NEEDS_TENSORRT
def test_build_and_run_real_engine(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from mmg_runtime.trt_engine import TrtEngine

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 3])],
    )
    onnx_path = tmp_path / "double.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), onnx_path)
    profile = replace(load_target("h100"), tensorrt_min="10.3", tensorrt_max="11")
    info = build_engine(onnx_path, tmp_path / "double.engine", profile, tmp_path / "timing.cache")
    assert info.io_tensors == (
        IOTensor("x", (2, 3), "float16", "input"),
        IOTensor("y", (2, 3), "float16", "output"),
    )
    assert (tmp_path / "timing.cache").stat().st_size > 0
    x = np.arange(6, dtype=np.float16).reshape(2, 3)
    with TrtEngine(tmp_path / "double.engine") as engine:
        first = engine.run({"x": x})
        engine.run({"x": x + 1})
    np.testing.assert_array_equal(first["y"], x + x)
