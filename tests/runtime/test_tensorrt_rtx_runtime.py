"""TensorRT-RTX artifacts at run time: where they cannot run, one line before anything loads.

No GPU here runs a TensorRT-RTX engine (this machine has none; the H100 is sm_90, which TensorRT-RTX
does not support), so what is tested is every refusal: the manifest's engines against this
machine (:func:`mmg_runtime.trust.verify_artifacts`, which ``Pipeline.from_artifacts`` calls before
the LLM or any engine is opened), and the runner against real engines built ahead of time, which
the real TensorRT-RTX refuses on this CPU. The runner's calls on a GPU are checked against a
stand-in (tests/runtime/test_trt_engine.py).
"""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mmg_runtime import pipeline, trust
from mmg_runtime.errors import UserError
from mmg_runtime.manifest import write_manifest
from mmg_runtime.trust import verify_artifacts
from samples import make_manifest

BUILT = "1.7.1.116"
H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
NOT_INSTALLED = (f"{{what}}; this machine has no TensorRT-RTX to run them (they need {BUILT}, the release that "
                 "built them): pip install 'mmg-export[tensorrt-rtx]', or build --backend onnxruntime artifacts "
                 "to run here")
"""The refusal where TensorRT-RTX is not installed: what running the engines needs."""


def rtx_manifest(directory: Path, compute_capabilities: str = "8.9", version: str = BUILT) -> Path:
    """A TensorRT-RTX manifest (as ``mmg-export build --backend tensorrt-rtx`` writes one) over small files."""
    manifest = make_manifest(directory, "tensorrt-rtx", versions={"python": "3.11.7", "tensorrt_rtx": version},
                             device={"compute_capabilities": compute_capabilities})
    write_manifest(directory, replace(manifest, target="rtx-ada"))
    return directory


def refusal(directory: Path, **machine) -> str:
    with pytest.raises(UserError) as error:
        verify_artifacts(directory, here=True, **machine)
    return str(error.value)


# --- the manifest against this machine (verify_artifacts) ----------------------------------------------


def test_a_gpu_tensorrt_rtx_does_not_support_names_both(tmp_path: Path) -> None:
    """The H100 (sm_90): TensorRT-RTX 1.7 has no SM90 at all, whatever the engines were built for."""
    trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX is not installed: pip install 'mmg-export[tensorrt-rtx]'")
    from mmg_runtime.tensorrt import offered_compute_capabilities

    supported = ", ".join("sm_" + cc.replace(".", "") for cc in offered_compute_capabilities(trt))
    assert refusal(rtx_manifest(tmp_path), trt_rtx_version=trt.__version__, compute_capability="9.0") == (
        f"{tmp_path}: engines built with TensorRT-RTX {BUILT} for sm_89; this machine has TensorRT-RTX "
        f"{trt.__version__} on sm_90, which it does not support (it supports {supported}): build --backend tensorrt "
        "or --backend onnxruntime artifacts for this GPU")


def test_a_gpu_the_engines_were_not_built_for_names_both(tmp_path: Path) -> None:
    assert refusal(rtx_manifest(tmp_path), trt_rtx_version=BUILT, compute_capability="8.6") == (
        f"{tmp_path}: engines built with TensorRT-RTX {BUILT} for sm_89; this machine has TensorRT-RTX {BUILT} on "
        "sm_86; rebuild with mmg-export build --backend tensorrt-rtx on this machine")
    rtx_manifest(tmp_path, "8.0,8.6,8.9,12.0,12.1")
    assert refusal(tmp_path, trt_rtx_version=BUILT, compute_capability="7.5").startswith(
        f"{tmp_path}: engines built with TensorRT-RTX {BUILT} for sm_80, sm_86, sm_89, sm_120, sm_121; this machine "
        f"has TensorRT-RTX {BUILT} on sm_75")


def test_another_tensorrt_rtx_release_names_both(tmp_path: Path) -> None:
    assert refusal(rtx_manifest(tmp_path), trt_rtx_version="1.8.0.20", compute_capability="8.9") == (
        f"{tmp_path}: engines built with TensorRT-RTX {BUILT} for sm_89; this machine has TensorRT-RTX 1.8.0.20 on "
        "sm_89; rebuild with mmg-export build --backend tensorrt-rtx on this machine")


def test_no_gpu_or_no_tensorrt_rtx_is_one_line(tmp_path: Path) -> None:
    rtx_manifest(tmp_path)
    what = f"{tmp_path}: engines built with TensorRT-RTX {BUILT} for sm_89"
    assert refusal(tmp_path, trt_rtx_version=BUILT, compute_capability=None) == (
        f"{what}; this machine has no NVIDIA GPU, which TensorRT-RTX engines need: build --backend onnxruntime "
        "artifacts to run here")
    assert refusal(tmp_path, trt_rtx_version=None, compute_capability="8.9") == NOT_INSTALLED.format(what=what)


def test_engines_that_run_here_pass(tmp_path: Path) -> None:
    """Same release (its first three numbers), a GPU the engines were built for; without ``here`` only
    what is given is checked (a build machine verifies its output without a GPU)."""
    rtx_manifest(tmp_path, "8.0,8.6,8.9,12.0,12.1")
    for compute_capability in ("8.0", "8.9", "12.1"):
        verify_artifacts(tmp_path, trt_rtx_version="1.7.1.200", compute_capability=compute_capability, here=True)
    assert verify_artifacts(tmp_path).backend == "tensorrt-rtx"
    verify_artifacts(tmp_path, compute_capability="8.6")
    with pytest.raises(UserError, match=r"this machine has TensorRT-RTX \? on sm_90"):
        verify_artifacts(tmp_path, compute_capability="9.0")


def test_tensorrt_and_onnxruntime_artifacts_ignore_tensorrt_rtx(tmp_path: Path) -> None:
    write_manifest(tmp_path, make_manifest(tmp_path, "onnxruntime"))
    verify_artifacts(tmp_path, trt_rtx_version=None, compute_capability=None, here=True)
    write_manifest(tmp_path, make_manifest(tmp_path, "tensorrt"))
    verify_artifacts(tmp_path, trt_version="10.3.0.30", trt_rtx_version=None, compute_capability="8.7", here=True)


# --- Pipeline.from_artifacts: the refusal comes before the LLM or any engine ---------------------------


@pytest.fixture
def nothing_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What from_artifacts opened: the LLM (make_llm) and each component (open_component), by name."""
    opened: list[str] = []
    monkeypatch.setattr(pipeline, "make_llm", lambda *args: opened.append("llm"))
    monkeypatch.setattr(pipeline, "open_component", lambda manifest, directory, name, *args: opened.append(name))
    return opened


def test_this_machine_describes_tensorrt_rtx_and_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX is not installed: pip install 'mmg-export[tensorrt-rtx]'")
    monkeypatch.setattr(trust, "device_info", lambda: H100)
    machine = trust.this_machine()
    assert (machine["trt_rtx_version"], machine["compute_capability"], machine["here"]) == (trt.__version__, "9.0", True)
    monkeypatch.setattr(trust, "device_info", lambda: None)
    assert trust.this_machine()["compute_capability"] is None


@pytest.mark.parametrize("gpu", [H100, None], ids=["h100", "no-gpu"])
def test_pipeline_refuses_before_anything_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                nothing_loads: list[str], gpu) -> None:
    trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX is not installed: pip install 'mmg-export[tensorrt-rtx]'")
    monkeypatch.setattr(trust, "device_info", lambda: gpu)
    with pytest.raises(UserError) as error:
        pipeline.Pipeline.from_artifacts(rtx_manifest(tmp_path, version=trt.__version__))
    assert str(error.value) == refusal(tmp_path, trt_rtx_version=trt.__version__,
                                       compute_capability=gpu and gpu["compute_capability"])
    assert ("on sm_90, which it does not support" if gpu else "has no NVIDIA GPU") in str(error.value)
    assert nothing_loads == []


def test_pipeline_without_tensorrt_rtx_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       nothing_loads: list[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)  # import tensorrt_rtx: ImportError
    monkeypatch.setattr(trust, "device_info", lambda: {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"})
    with pytest.raises(UserError) as error:
        pipeline.Pipeline.from_artifacts(rtx_manifest(tmp_path))
    what = f"{tmp_path}: engines built with TensorRT-RTX {BUILT} for sm_89"
    assert str(error.value) == NOT_INSTALLED.format(what=what)
    assert nothing_loads == []


# --- real engines, built ahead of time; the real TensorRT-RTX refuses them on this CPU -------------------


@pytest.fixture(scope="session")
def rtx_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's artifacts, ``mmg-export build --backend tensorrt-rtx --target rtx-ada`` (about 35 s)."""
    pytest.importorskip("torch", reason="building is the export role's (torch)")
    pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX is not installed: pip install 'mmg-export[tensorrt-rtx]'")
    out = tmp_path_factory.mktemp("rtx") / "rtx-ada"
    done = subprocess.run([sys.executable, "-m", "mmg_export.cli", "build", "--backend", "tensorrt-rtx", "--target",
                           "rtx-ada", "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture
def deserialized(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of what the real ``Runtime.deserialize_cuda_engine`` was given (it still runs)."""
    import tensorrt_rtx

    given: list[int] = []
    real = tensorrt_rtx.Runtime.deserialize_cuda_engine

    def spy(runtime, data):
        given.append(len(data))
        return real(runtime, data)

    monkeypatch.setattr(tensorrt_rtx.Runtime, "deserialize_cuda_engine", spy)
    return given


@pytest.mark.slow
def test_real_engines_refused_by_the_manifest_on_an_h100(rtx_artifacts: Path, monkeypatch: pytest.MonkeyPatch,
                                                          nothing_loads: list[str], deserialized: list[int]) -> None:
    import tensorrt_rtx

    monkeypatch.setattr(trust, "device_info", lambda: H100)
    with pytest.raises(UserError) as error:
        pipeline.Pipeline.from_artifacts(rtx_artifacts)
    assert str(error.value).startswith(
        f"{rtx_artifacts}: engines built with TensorRT-RTX {tensorrt_rtx.__version__} for sm_89; this machine has "
        f"TensorRT-RTX {tensorrt_rtx.__version__} on sm_90, which it does not support (it supports sm_75, ")
    assert nothing_loads == [] and deserialized == []


@pytest.mark.slow
def test_real_engine_the_runner_cannot_run_here_is_one_line(rtx_artifacts: Path, deserialized: list[int]) -> None:
    """The runner asks TensorRT-RTX about the header (which cannot read this machine's GPU: there is
    none) and stops before the engine is read or deserialized."""
    import tensorrt_rtx

    from mmg_runtime.trt_engine import TrtEngine

    manifest = verify_artifacts(rtx_artifacts)
    with pytest.raises(UserError) as error:
        pipeline.open_component(manifest, rtx_artifacts, "encoder")
    message = str(error.value)
    assert message.startswith(f"{rtx_artifacts / 'encoder.engine'}: TensorRT-RTX {tensorrt_rtx.__version__} cannot "
                              "run this engine here: ")
    assert "CUDA driver version is insufficient" in message and "\n" not in message
    assert deserialized == []
    with pytest.raises(UserError, match="cannot run this engine here"):
        TrtEngine(rtx_artifacts / "pruner.engine", "tensorrt-rtx")


@pytest.mark.slow
def test_real_deserialize_that_returns_none_is_one_line(rtx_artifacts: Path, monkeypatch: pytest.MonkeyPatch,
                                                        deserialized: list[int]) -> None:
    """Past the header check (forced valid), the real ``deserialize_cuda_engine`` returns None without
    a GPU: its logged error becomes the one line."""
    import tensorrt_rtx

    from mmg_runtime.trt_engine import TrtEngine

    monkeypatch.setattr(tensorrt_rtx.Runtime, "get_engine_validity",
                        lambda runtime, header: (tensorrt_rtx.EngineValidity.VALID, 0))
    path = rtx_artifacts / "encoder.engine"
    with pytest.raises(UserError) as error:
        TrtEngine(path, "tensorrt-rtx")
    message = str(error.value)
    assert message.startswith(f"{path}: TensorRT-RTX {tensorrt_rtx.__version__} cannot load this engine: ")
    assert "CUDA driver version is insufficient" in message and "\n" not in message
    assert message.endswith("(an engine built for another release or GPU does not load: rebuild it with mmg-export build)")
    assert deserialized == [path.stat().st_size]
