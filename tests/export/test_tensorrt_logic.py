"""TensorRT builder logic without TensorRT, plus real build/run tests where TensorRT imports.

The stand-in (``trt_standin``) checks what needs TensorRT proper or a GPU: DLA, hardware
compatibility, the timing cache, loading the built engine, TensorRT 10's network flag. What
TensorRT for RTX shares with this path (parse step, optimisation profile and level, build errors)
is checked on its real builder in test_tensorrt_rtx_build.py."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

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
from mmg_runtime.tensorrt import import_tensorrt

import trt_standin

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
    assert parse_version("1.7.1.116", "tensorrt-rtx") == (1, 7)
    for bad in ("", "10", "ten.three", "10.3-jetson"):
        with pytest.raises(UserError, match="not a TensorRT version"):
            parse_version(bad)
    with pytest.raises(UserError, match="not a TensorRT-RTX version: 'latest'"):
        parse_version("latest", "tensorrt-rtx")


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


def test_one_import_with_the_extra_that_installs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    with pytest.raises(UserError) as error:
        import_tensorrt()
    assert str(error.value) == (
        "TensorRT is not installed: pip install 'mmg-export[tensorrt]' (x86) or use the TensorRT that "
        "JetPack ships (Jetson); or build and run ONNX Runtime artifacts (--backend onnxruntime)"
    )
    with pytest.raises(UserError) as error:
        import_tensorrt("tensorrt-rtx")
    assert str(error.value) == (
        "TensorRT-RTX is not installed: pip install 'mmg-export[tensorrt-rtx]' (it builds engines without a GPU); "
        "or build and run ONNX Runtime artifacts (--backend onnxruntime)"
    )



# --- build_engine through Polygraphy's loaders, against the checking TensorRT stand-in ------------


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch):
    """Install the stand-in ``tensorrt`` for one test; returns ``use(Scenario) -> state``."""
    trt = trt_standin.module()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_build, "device_info", lambda: {"name": "Orin", "compute_capability": "8.7"})

    def use(scenario: trt_standin.Scenario | None = None) -> trt_standin._State:
        scenario = scenario or trt_standin.Scenario()
        trt.__version__ = scenario.version
        trt_standin.STATE.reset(scenario)
        return trt_standin.STATE

    return use


def build(tmp_path: Path, target: str = "orin-agx", cache: Path | None = None, **kwargs):
    logs: list[str] = []
    info = build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", load_target(target),
                        cache or tmp_path / "cache" / "timing.cache", log=logs.append, **kwargs)
    return info, logs


def test_build_engine_call_order_on_10x(tmp_path: Path, standin) -> None:
    state = standin(trt_standin.Scenario(version="10.3.0.30"))
    info, logs = build(tmp_path)
    flow = [call for call in state.calls if not call.startswith(("init_libnvinfer", "TimingCache."))]
    assert flow == [
        "Builder", "create_network(2)", "OnnxParser", f"parse_from_file({tmp_path / 'm.onnx'})",
        "create_builder_config", f"set_memory_pool_limit(WORKSPACE, {2 << 30})",
        "create_timing_cache(b'')", "set_timing_cache(ignore_mismatch=False)", "clear_flag(TF32)",
        "build_serialized_network", "deserialize_cuda_engine",
    ]  # strongly typed (flag bit 1), workspace, empty cache (no file yet), TF32 off, then build
    assert trt_standin.BuilderFlag.TF32 not in state.built_with["flags"]
    assert state.config.builder_optimization_level == 3
    assert state.config.hardware_compatibility_level == trt_standin.HardwareCompatibilityLevel.NONE
    assert (tmp_path / "m.engine").read_bytes() == b"plan"
    assert (tmp_path / "cache" / "timing.cache").read_bytes() == b"timings"
    assert info.trt_version == "10.3.0.30" and info.hardware_compatibility is None
    assert info.device == {"name": "Orin", "compute_capability": "8.7"}
    assert info.io_tensors == (
        IOTensor("frames", (32, 3, 384, 384), "float16", "input"),
        IOTensor("features", (32, 196, 1152), "float16", "output"),
    )
    assert logs == [f"building {tmp_path / 'm.engine'} for target orin-agx with TensorRT 10.3.0.30"]


def test_build_engine_11x_reuses_cache_and_sets_hardware_level(tmp_path: Path, standin) -> None:
    state = standin(trt_standin.Scenario(version="11.4.1"))
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    info, logs = build(tmp_path, "datacenter", cache)
    assert "create_network(0)" in state.calls  # always strongly typed on 11: no flag
    assert "create_timing_cache(b'old')" in state.calls
    assert state.built_with["cache"] == b"old"
    assert state.config.hardware_compatibility_level == trt_standin.HardwareCompatibilityLevel.AMPERE_PLUS
    assert state.config.builder_optimization_level == 3 and state.config.pool_limits == {
        trt_standin.MemoryPoolType.WORKSPACE: 4 << 30}
    assert info.hardware_compatibility == "AMPERE_PLUS"
    assert cache.read_bytes() == b"timings+old"


def test_build_engine_refused_timing_cache_starts_a_new_one(tmp_path: Path, standin) -> None:
    """set_timing_cache(ignore_mismatch=False) returns False for another TensorRT's or GPU's cache."""
    state = standin()
    cache = tmp_path / "timing.cache"
    cache.write_bytes(trt_standin.FOREIGN_CACHE + b"sm_90")
    _, logs = build(tmp_path, cache=cache)
    assert [call for call in state.calls if "timing_cache" in call] == [
        "create_timing_cache(b'foreign:sm_90')", "set_timing_cache(ignore_mismatch=False)",
        "create_timing_cache(b'')", "set_timing_cache(ignore_mismatch=False)",
    ]
    assert state.built_with["cache"] == b""  # built with the fresh cache, not without one
    assert logs == [f"building {tmp_path / 'm.engine'} for target orin-agx with TensorRT 10.3.0.30",
                    f"{cache}: timing cache is from another TensorRT version or GPU; starting a new one"]
    assert cache.read_bytes() == b"timings"  # the stale entries are not merged back in


def test_build_engine_dla(tmp_path: Path, standin) -> None:
    state = standin()
    build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", replace(load_target("orin-agx"), use_dla=True, dla_core=1),
                 tmp_path / "c", log=lambda _: None)
    assert (state.config.default_device_type, state.config.DLA_core) == (trt_standin.DeviceType.DLA, 1)
    assert trt_standin.BuilderFlag.GPU_FALLBACK in state.built_with["flags"]


def test_build_engine_sets_the_targets_workspace_and_level(tmp_path: Path, standin) -> None:
    """TensorRT's own CreateConfig arguments; the optimisation profile and level, which TensorRT-RTX
    shares, are checked on its real builder (test_tensorrt_rtx_build.py)."""
    state = standin()
    build(tmp_path, "h100")
    assert state.config.builder_optimization_level == 4
    assert state.config.pool_limits == {trt_standin.MemoryPoolType.WORKSPACE: 8 << 30}


def test_build_engine_collects_every_parser_error(tmp_path: Path, standin) -> None:
    state = standin(trt_standin.Scenario(parse_errors=[("topk", "TopK", "K exceeds 3840"),
                                                       ("nz", "NonZero", "unsupported")]))
    with pytest.raises(UserError) as error:
        build(tmp_path)
    assert str(error.value) == (
        f"{tmp_path / 'm.onnx'}: the TensorRT 10.3.0.30 parser rejects this ONNX model: "
        "node 'topk' (TopK): K exceeds 3840; node 'nz' (NonZero): unsupported")
    assert "build_serialized_network" not in state.calls
    assert not (tmp_path / "m.engine").exists()


def test_build_engine_parser_failure_without_errors(tmp_path: Path, standin) -> None:
    standin(trt_standin.Scenario(parse_ok=False))
    with pytest.raises(UserError, match="parser rejects this ONNX model: rejected the model without an error$"):
        build(tmp_path)


def test_build_engine_failed_build(tmp_path: Path, standin) -> None:
    state = standin(trt_standin.Scenario(built=None))
    with pytest.raises(UserError, match="could not build an engine for target 'orin-agx'"):
        build(tmp_path)
    assert "deserialize_cuda_engine" not in state.calls
    assert not (tmp_path / "m.engine").exists()


def test_build_engine_engine_that_does_not_load(tmp_path: Path, standin) -> None:
    """deserialize_cuda_engine returning None: nothing is written."""
    standin(trt_standin.Scenario(deserialized=False))
    with pytest.raises(UserError, match="m.engine: TensorRT 10.3.0.30 cannot load the engine it just built"):
        build(tmp_path)
    assert not (tmp_path / "m.engine").exists()


def test_build_engine_out_of_range(tmp_path: Path, standin) -> None:
    state = standin(trt_standin.Scenario(version="12.0.0"))
    with pytest.raises(UserError, match="supports TensorRT 10.3 to 11.x, but TensorRT 12.0.0"):
        build(tmp_path, "h100")
    assert state.calls == []


# --- deploy-side runner ------------------------------------------------------------------------


def test_trt_engine_module_imports_without_tensorrt_or_torch() -> None:
    code = (
        "import sys; sys.modules['tensorrt'] = None; sys.modules['torch'] = None\n"
        "import mmg_runtime.trt_engine, mmg_runtime.manifest\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_trt_engine_errors_without_tensorrt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmg_runtime.tensorrt import install_hint
    from mmg_runtime.trt_engine import TrtEngine

    with pytest.raises(UserError, match="no such TensorRT engine"):
        TrtEngine(tmp_path / "missing.engine")
    engine = tmp_path / "vision.engine"
    engine.write_bytes(b"plan")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(UserError) as error:
        TrtEngine(engine)
    assert str(error.value) == install_hint("tensorrt")


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
