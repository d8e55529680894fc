"""Build target profiles: the shipped ones, validation messages, TensorRT version ranges."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mmg_export.builder.targets import (PROFILES_DIR,
    check_build_device,
    check_flavour,
    hardware_compatible,
    jetson_note,
    list_targets,
    load_target,
    rtx_target,
)
from mmg_runtime.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SHIPPED = ["datacenter", "h100", "orin-agx", "orin-nano", "thor"]
"""The TensorRT GPU targets; other profiles (a CPU-only one, the TensorRT-RTX ones) ship beside them."""
RTX = {"dgx-spark": "12.1", "rtx-ada": "8.9", "rtx-ampere": "8.6", "rtx-blackwell": "12.0", "rtx-portable": "8.0"}
"""The TensorRT-RTX targets and their compute capabilities (rtx-portable's: the lowest it runs on)."""


def write_profile(directory: Path, **changes: object) -> Path:
    """h100.toml with ``changes`` applied (a value of None drops the key), written as TOML."""
    data = tomllib.loads((PROFILES_DIR / "h100.toml").read_text())
    data.update({"name": "custom", **changes})
    lines = []
    for key, value in data.items():
        if value is None:
            continue
        text = str(value).lower() if isinstance(value, bool) else json.dumps(value)
        lines.append(f"{key} = {text}")
    path = directory / "custom.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_list_targets_names_every_shipped_profile() -> None:
    names = list_targets()
    assert names == sorted(path.stem for path in PROFILES_DIR.glob("*.toml"))
    assert set(SHIPPED) <= set(names)


@pytest.mark.parametrize("name", list_targets())
def test_every_shipped_profile_loads(name: str) -> None:
    profile = load_target(name)
    assert profile.name == name
    assert profile.path == PROFILES_DIR / f"{name}.toml"
    assert profile.description
    assert profile.frames == 32


@pytest.mark.parametrize("name", SHIPPED)
def test_gpu_profile_has_sane_fields(name: str) -> None:
    profile = load_target(name)
    assert profile.precision in ("fp16", "bf16")
    assert 0 <= profile.builder_optimization_level <= 5
    assert 256 << 20 <= profile.workspace_bytes <= 16 << 30
    major, minor = (int(part) for part in profile.compute_capability.split("."))
    assert major >= 8
    profile.check_tensorrt_version(profile.tensorrt_min + ".0")
    if profile.jetson:
        assert profile.hardware_compatibility is None
        assert profile.workspace_bytes <= 4 << 30


def test_jetson_and_datacenter_specifics() -> None:
    assert load_target("h100").compute_capability == "9.0"
    assert load_target("datacenter").hardware_compatibility == "ampere_plus"
    assert load_target("datacenter").compute_capability == "8.0"
    assert [load_target(name).jetson for name in SHIPPED] == [False, False, True, True, True]
    orin = load_target("orin-agx")
    assert (orin.compute_capability, orin.dla_cores, orin.use_dla) == ("8.7", 2, False)
    assert orin.dla_core == 0 and orin.gpu_fallback
    for name in ("orin-nano", "thor", "h100", "datacenter"):
        profile = load_target(name)
        assert (profile.dla_cores, profile.use_dla) == (0, False), name
    thor = load_target("thor")
    assert (thor.compute_capability, thor.tensorrt_min) == ("11.0", "10.13")


def test_unknown_target_lists_available_names() -> None:
    with pytest.raises(UserError) as error:
        load_target("rtx9090")
    message = str(error.value)
    assert "unknown target 'rtx9090'" in message
    assert ", ".join(list_targets()) in message


def test_load_by_path(tmp_path: Path) -> None:
    path = write_profile(tmp_path, name="custom", workspace_bytes=1 << 30)
    profile = load_target(path)
    assert (profile.name, profile.workspace_bytes, profile.path) == ("custom", 1 << 30, path)
    assert load_target(str(path)) == profile


def test_profile_fields_with_defaults_may_be_left_out(tmp_path: Path) -> None:
    """A profile written before TensorRT-RTX is a TensorRT one; a TensorRT-RTX one needs no workspace or DLA keys."""
    assert load_target(write_profile(tmp_path, tensorrt_flavour=None)).tensorrt_flavour == "tensorrt"
    left_out = dict.fromkeys(("workspace_bytes", "dla_cores", "use_dla", "dla_core", "gpu_fallback"))
    rtx = load_target(write_profile(tmp_path, tensorrt_flavour="tensorrt-rtx", tensorrt_min="1.7", tensorrt_max="1",
                                    **left_out))
    assert (rtx.tensorrt_flavour, rtx.workspace_bytes, rtx.dla_cores, rtx.use_dla, rtx.dla_core, rtx.gpu_fallback) == (
        "tensorrt-rtx", 2 << 30, 0, False, 0, False)
    for name in RTX:
        assert not left_out.keys() & tomllib.loads((PROFILES_DIR / f"{name}.toml").read_text()).keys(), name


def test_missing_profile_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such target profile"):
        load_target(tmp_path / "nope.toml")


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "broken"\nframes = = 3\n')
    with pytest.raises(UserError) as error:
        load_target(path)
    assert str(error.value).startswith(f"{path}: not valid TOML")


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        ({"frames": None}, "frames", "missing field 'frames'"),
        ({"frames": "32"}, "frames", "expected a positive integer, got '32'"),
        ({"frames": True}, "frames", "expected a positive integer, got True"),
        ({"frames": 0}, "frames", "expected a positive integer, got 0"),
        ({"jetson": 1}, "jetson", "expected true or false, got 1"),
        ({"workspace_bytes": -1}, "workspace_bytes", "expected a positive integer (bytes)"),
        ({"precision": "int8"}, "precision", "expected one of fp32, fp16, bf16, got 'int8'"),
        ({"compute_capability": "sm_90"}, "compute_capability", "MAJOR.MINOR"),
        ({"builder_optimization_level": 6}, "builder_optimization_level", "from 0 to 5"),
        ({"tensorrt_max": "eleven"}, "tensorrt_max", "got 'eleven'"),
        ({"tensorrt_min": "12"}, "tensorrt_min", "at most tensorrt_max (11)"),
        ({"hardware_compatibility": "same_cc"}, "hardware_compatibility", "got 'same_cc'"),
        ({"jetson": True, "hardware_compatibility": "ampere_plus"},
         "hardware_compatibility", "on Jetson"),
        ({"compute_capability": "7.5", "hardware_compatibility": "ampere_plus"},
         "hardware_compatibility", "below compute capability 8.0"),
        ({"use_dla": True}, "use_dla", "no DLA (dla_cores = 0)"),
        ({"use_dla": True, "dla_cores": 2, "dla_core": 2}, "dla_core", "below dla_cores (2)"),
        ({"dla_corez": 1}, "dla_corez", "unknown field 'dla_corez'"),
        ({"name": "h100"}, "name", "expected the file's stem ('custom')"),
        ({"tensorrt_flavour": "tensorrt_rtx"}, "tensorrt_flavour", "expected one of tensorrt, tensorrt-rtx"),
        ({"tensorrt_flavour": "tensorrt-rtx", "tensorrt_min": "1.7", "tensorrt_max": "1", "jetson": True},
         "tensorrt_flavour", 'expected "tensorrt" on Jetson'),
        ({"hardware_compatibility": "portable"}, "hardware_compatibility",
         "expected \"none\" or \"ampere_plus\" with TensorRT, got 'portable'"),
        ({"tensorrt_flavour": "tensorrt-rtx", "tensorrt_min": "1.7", "tensorrt_max": "1",
          "hardware_compatibility": "ampere_plus"},
         "hardware_compatibility", "expected \"none\" or \"portable\" with TensorRT-RTX, got 'ampere_plus'"),
        ({"tensorrt_min": "10.3.1"}, "tensorrt_min", "got '10.3.1'"),
        ({"tensorrt_flavour": "tensorrt-rtx", "tensorrt_min": "1.7", "tensorrt_max": "1", "use_dla": True,
          "dla_cores": 2}, "use_dla", "expected false with TensorRT-RTX (it builds for no DLA), got True"),
    ],
)
def test_invalid_field_message_names_file_and_field(
    tmp_path: Path, changes: dict[str, object], field: str, expected: str
) -> None:
    path = write_profile(tmp_path, **changes)
    with pytest.raises(UserError) as error:
        load_target(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ")
    assert f"'{field}'" in message
    assert expected in message


def test_tensorrt_rtx_profiles() -> None:
    profiles = {name: load_target(name) for name in RTX}
    assert {name: profile.compute_capability for name, profile in profiles.items()} == RTX
    for profile in profiles.values():
        assert (profile.tensorrt_flavour, profile.jetson, profile.use_dla) == ("tensorrt-rtx", False, False)
        assert profile.precision == "bf16" and profile.frames == 32
        profile.check_tensorrt_version("1.7.1.116")
        with pytest.raises(UserError, match=f"target '{profile.name}' supports TensorRT-RTX 1.7 to 1.x, but "
                                            "TensorRT-RTX 2.0.0 is installed"):
            profile.check_tensorrt_version("2.0.0")
    assert [name for name, profile in profiles.items() if profile.hardware_compatibility] == ["rtx-portable"]
    assert profiles["rtx-portable"].hardware_compatibility == "portable"
    assert {load_target(name).tensorrt_flavour for name in SHIPPED + ["cpu"]} == {"tensorrt"}
    assert set(list_targets()) == set(SHIPPED) | set(RTX) | {"cpu"}


def test_tensorrt_rtx_target_of_this_machine() -> None:
    assert rtx_target(None) == "rtx-portable"
    assert rtx_target({"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}) == "rtx-ada"
    assert rtx_target({"name": "NVIDIA GB10", "compute_capability": "12.1"}) == "dgx-spark"
    assert rtx_target(H100) == "rtx-portable"  # TensorRT-RTX does not run on Hopper
    assert hardware_compatible(load_target("rtx-ada")).hardware_compatibility == "portable"


def test_each_backend_builds_its_own_targets() -> None:
    check_flavour(load_target("h100"), "tensorrt")
    check_flavour(load_target("rtx-ada"), "tensorrt-rtx")
    with pytest.raises(UserError) as error:
        check_flavour(load_target("rtx-ada"), "tensorrt")
    assert str(error.value) == ("--backend tensorrt: target 'rtx-ada' is built with TensorRT-RTX (--backend "
                                "tensorrt-rtx); the TensorRT targets are datacenter, h100, orin-agx, orin-nano, thor")
    with pytest.raises(UserError, match=r"^--backend tensorrt-rtx: target 'orin-agx' is built with TensorRT "
                                        r"\(--backend tensorrt\); the TensorRT-RTX targets are dgx-spark, rtx-ada, "
                                        r"rtx-ampere, rtx-blackwell, rtx-portable$"):
        check_flavour(load_target("orin-agx"), "tensorrt-rtx")


def test_tensorrt_version_range() -> None:
    orin = load_target("orin-agx")
    for version in ("10.3.0.30", "10.16.0", "11.4.1.2"):
        orin.check_tensorrt_version(version)
    for version in ("10.2.0", "12.0.0"):
        with pytest.raises(UserError, match=f"supports TensorRT 10.3 to 11.x, but TensorRT {version}"):
            orin.check_tensorrt_version(version)
    thor = load_target("thor")
    thor.check_tensorrt_version("10.13.3.9")
    with pytest.raises(UserError, match="target 'thor' supports TensorRT 10.13 to 11.x"):
        thor.check_tensorrt_version("10.3.0")
    pinned = replace(orin, tensorrt_max="11.4")
    pinned.check_tensorrt_version("11.4.9")
    with pytest.raises(UserError, match="10.3 to 11.4.x"):
        pinned.check_tensorrt_version("11.5.0")
    with pytest.raises(UserError, match="not a TensorRT version"):
        orin.check_tensorrt_version("latest")


# --- targets mean devices -----------------------------------------------------------------------

H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
ORIN = {"name": "Orin", "compute_capability": "8.7"}
T4 = {"name": "Tesla T4", "compute_capability": "7.5"}


def test_tensorrt_build_needs_the_targets_gpu() -> None:
    check_build_device(load_target("h100"), H100)
    check_build_device(load_target("orin-agx"), ORIN)
    with pytest.raises(UserError) as error:
        check_build_device(load_target("orin-agx"), H100)
    assert str(error.value) == (
        "target 'orin-agx' is sm_87, but this GPU is NVIDIA H100 80GB HBM3 (sm_90): a TensorRT engine runs "
        "only on the GPU it was built for. Build on the Jetson module itself, choose the target of this GPU "
        "(--list-targets), or pass --hardware-compatible for an engine every Ampere+ GPU runs")
    with pytest.raises(UserError, match=r"target 'h100' is sm_90, but this GPU is Orin \(sm_87\)"):
        check_build_device(load_target("h100"), ORIN)
    with pytest.raises(UserError, match=r"target 'orin-agx' is sm_87, but this GPU is A100 \(sm_80\)"):
        check_build_device(load_target("orin-agx"), {"name": "A100", "compute_capability": "8.0"})
    with pytest.raises(UserError, match=r"target 'thor' needs its GPU \(sm_110\) .* no CUDA GPU was found here"):
        check_build_device(load_target("thor"), None)


def test_hardware_compatible_builds_run_on_any_ampere_plus_gpu() -> None:
    check_build_device(load_target("datacenter"), H100)
    check_build_device(load_target("datacenter"), ORIN)
    with pytest.raises(UserError, match=r"on Ampere or newer \(sm_80\+\), but this GPU is Tesla T4 \(sm_75\)"):
        check_build_device(load_target("datacenter"), T4)
    asked = hardware_compatible(load_target("h100"))
    assert asked.hardware_compatibility == "ampere_plus"
    check_build_device(asked, {"name": "A100", "compute_capability": "8.0"})
    with pytest.raises(UserError, match="target 'orin-agx' is a Jetson, where TensorRT has no hardware-compatible"):
        hardware_compatible(load_target("orin-agx"))


def test_jetson_note() -> None:
    assert jetson_note(load_target("h100"), on_jetson=False) is None
    assert jetson_note(load_target("orin-agx"), on_jetson=True) is None
    note = jetson_note(load_target("orin-agx"), on_jetson=False)
    assert note.startswith("target orin-agx is a Jetson module and this machine is not one: this builds fp16 ONNX "
                           "models for ONNX Runtime")
    assert note.endswith("run mmg-export build --target orin-agx there for those")


def test_default_output_names_tell_builds_apart(tmp_path: Path) -> None:
    from mmg_export.builder.cli import default_name

    assert default_name(None, "cpu", "onnxruntime", "fp32", 32, 0.25) == "tiny-cpu-ort-fp32-32f-r0.25"
    model = tmp_path / "llava-onevision-qwen2-7b-ov-hf"
    assert default_name(model, "h100", "tensorrt", "bf16", 64, 0.1) == (
        "llava-onevision-qwen2-7b-ov-hf-h100-trt-bf16-64f-r0.1")
    names = {default_name(m, "cpu", "onnxruntime", "fp32", f, 0.25)
             for m in (None, tmp_path / "a", tmp_path / "b") for f in (16, 32)}
    assert len(names) == 6
    assert default_name(tmp_path / "my model!", "cpu", "onnxruntime", "fp32", 8, 1.0) == "my_model_-cpu-ort-fp32-8f-r1"


@pytest.fixture
def tensorrt_here(monkeypatch: pytest.MonkeyPatch):
    """TensorRT importable (the stand-in) and this machine's GPU as the test says."""
    import sys

    import trt_standin
    from mmg_runtime import device

    trt = trt_standin.module()
    trt.__version__ = "10.3.0.30"
    monkeypatch.setitem(sys.modules, "tensorrt", trt)

    def gpu(found):
        monkeypatch.setattr(device, "device_info", lambda: found)

    return gpu


def test_build_refuses_another_gpus_target_before_exporting(tmp_path: Path, tensorrt_here, capsys) -> None:
    pytest.importorskip("torch", reason="building is the export role's (torch)")
    from mmg_export.cli import main

    tensorrt_here(H100)
    out = tmp_path / "out"
    assert main(["build", "--target", "orin-agx", "--backend", "tensorrt", "--out", str(out)]) == 1
    assert "target 'orin-agx' is sm_87, but this GPU is NVIDIA H100 80GB HBM3 (sm_90)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match="where TensorRT has no hardware-compatible engines"):
        main(["--debug", "build", "--target", "orin-agx", "--hardware-compatible", "--out", str(out)])


def recorded_builds(monkeypatch) -> list:
    """The options of every ``build`` the CLI asks for, recorded instead of built (a stand-in manifest back)."""
    from mmg_export.builder import pipeline

    built = []

    def build(options):
        built.append(options)
        return type("Manifest", (), {"keep": 1568, "frames": 32, "tokens_per_frame": 196, "components": {}})()

    monkeypatch.setattr(pipeline, "build", build)
    return built


def test_jetson_target_on_another_machine_says_what_it_built(tmp_path: Path, monkeypatch, capsys) -> None:
    """The ONNX Runtime build itself is tested in test_build; here only what the command says around it."""
    pytest.importorskip("torch", reason="building is the export role's (torch)")
    from mmg_export.cli import main
    from mmg_runtime import device

    built = recorded_builds(monkeypatch)
    monkeypatch.setattr(device, "is_jetson", lambda: False)
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--target", "orin-agx", "--backend", "onnxruntime"]) == 0
    (options,) = built
    assert (options.backend, options.precision, options.out) == (
        "onnxruntime", "fp16", Path("artifacts/tiny-orin-agx-ort-fp16-32f-r0.25"))
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("note: target orin-agx is a Jetson module and this machine is not one")
    assert err[-1] == ("note: artifacts/tiny-orin-agx-ort-fp16-32f-r0.25 holds ONNX Runtime models, not the "
                       "orin-agx TensorRT engines")


@pytest.mark.parametrize(("gpu", "target"), [(None, "rtx-portable"), ({"name": "RTX 4090", "compute_capability": "8.9"},
                                                                       "rtx-ada")])
def test_tensorrt_rtx_without_target_builds_for_this_machine(tmp_path: Path, monkeypatch, capsys, gpu, target) -> None:
    """No GPU: one portable engine; a GPU TensorRT-RTX builds for: its own (the build itself: test_tensorrt_rtx_build)."""
    pytest.importorskip("torch", reason="building is the export role's (torch)")
    pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX is not installed")
    from mmg_export.cli import main
    from mmg_runtime import device

    built = recorded_builds(monkeypatch)
    monkeypatch.setattr(device, "device_info", lambda: gpu)
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--backend", "tensorrt-rtx"]) == 0
    (options,) = built
    assert (options.target.name, options.backend, options.precision, options.out) == (
        target, "tensorrt-rtx", "bf16", Path(f"artifacts/tiny-{target}-trtrtx-bf16-32f-r0.25"))
    found = "no CUDA GPU found" if gpu is None else "GPU RTX 4090 (compute capability 8.9)"
    assert f"{found}: target {target} (pass --target NAME to build for one GPU family)" in capsys.readouterr().err
    assert main(["build", "--target", "rtx-ada"]) == 0  # the target's TensorRT is the default backend
    assert built[-1].backend == "tensorrt-rtx"


@pytest.mark.parametrize("gpu", [H100, T4])
def test_tensorrt_rtx_on_a_gpu_no_target_runs_on_says_the_engines_are_for_others(tmp_path: Path, monkeypatch, capsys,
                                                                                gpu) -> None:
    """Hopper (which TensorRT-RTX does not support) and Turing (whose fp32 GEMMs it cannot compile): rtx-portable,
    whose engines will not run on this machine, and the line says so."""
    pytest.importorskip("torch", reason="building is the export role's (torch)")
    trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX is not installed")
    from mmg_export.builder import pipeline
    from mmg_export.builder.tensorrt_rtx import compute_capabilities
    from mmg_export.cli import main
    from mmg_runtime import device
    from mmg_runtime.device import sm_name

    monkeypatch.setattr(pipeline, "build", lambda options: type("Manifest", (), {
        "keep": 1568, "frames": 32, "tokens_per_frame": 196, "components": {}})())
    monkeypatch.setattr(device, "device_info", lambda: gpu)
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--backend", "tensorrt-rtx"]) == 0
    portable = ", ".join(map(sm_name, compute_capabilities(load_target("rtx-portable"), trt)))  # 1.7: sm_80 to sm_121
    assert capsys.readouterr().err.splitlines()[0] == (
        f"GPU {gpu['name']} ({sm_name(gpu['compute_capability'])}) is not supported by the TensorRT-RTX targets "
        f"(rtx-portable builds for {portable}): building rtx-portable for other machines; these engines will not run "
        "here (pass --target NAME to build for one GPU family)")
