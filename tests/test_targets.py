"""Build target profiles: the shipped ones, validation messages, TensorRT version ranges."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mmg_engines import PROFILES_DIR
from mmg_export.builder.targets import list_targets, load_target
from mmg_runtime.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SHIPPED = ["datacenter", "h100", "orin-agx", "orin-nano", "thor"]
"""The GPU targets; other profiles (e.g. a CPU-only one) may ship beside them."""


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
