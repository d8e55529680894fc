"""Build target profiles: ``profiles/<name>.toml`` beside this module (schema documented at the top of ``h100.toml``)."""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mmg_runtime.device import sm_name
from mmg_runtime.errors import UserError
from mmg_runtime.tensorrt import FLAVOURS, LABELS
from mmg_runtime.versions import release

from .tensorrt import parse_version

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
"""The packaged target profiles (``*.toml``); built artifacts go to ``./artifacts/``, never here."""

PRECISIONS = ("fp32", "fp16", "bf16")
HARDWARE_COMPATIBILITY = ("none", "ampere_plus", "portable")
OPTIMIZATION_LEVELS = range(0, 6)

_FIELDS: dict[str, tuple[type, str]] = {
    "name": (str, "a string"),
    "description": (str, "a string"),
    "jetson": (bool, "true or false"),
    "tensorrt_flavour": (str, f"one of {', '.join(FLAVOURS)}"),
    "compute_capability": (str, 'a string "MAJOR.MINOR", e.g. "8.7"'),
    "tensorrt_min": (str, 'a string "MAJOR" or "MAJOR.MINOR", e.g. "10.3"'),
    "tensorrt_max": (str, 'a string "MAJOR" or "MAJOR.MINOR", e.g. "11"'),
    "workspace_bytes": (int, "a positive integer (bytes)"),
    "builder_optimization_level": (int, "an integer from 0 to 5"),
    "precision": (str, f"one of {', '.join(PRECISIONS)}"),
    "hardware_compatibility": (str, f"one of {', '.join(HARDWARE_COMPATIBILITY)}"),
    "frames": (int, "a positive integer"),
    "dla_cores": (int, "a non-negative integer"),
    "use_dla": (bool, "true or false"),
    "dla_core": (int, "a non-negative integer"),
    "gpu_fallback": (bool, "true or false"),
}
"""Profile key -> (TOML type, what the error message says was expected)."""

_DEFAULTS: dict[str, Any] = {"tensorrt_flavour": "tensorrt", "workspace_bytes": 2 << 30, "dla_cores": 0,
                             "use_dla": False, "dla_core": 0, "gpu_fallback": False}
"""The keys a profile may leave out, and their values then: a profile written before TensorRT-RTX is a TensorRT
one, and a TensorRT-RTX profile has no use for a workspace limit (its build sets none) or a DLA."""


def _version_bound(text: str) -> tuple[int, ...]:
    """``"11"`` -> ``(11,)``, ``"10.3"`` -> ``(10, 3)``; ``()`` for anything else (not a bound)."""
    bound = release(text)
    return bound if 1 <= len(bound) <= 2 else ()


def _within(version: tuple[int, ...], low: tuple[int, ...], high: tuple[int, ...]) -> bool:
    """Whether ``version`` is from ``low`` to ``high``, both inclusive; ``high`` (11,) admits every 11.x."""
    return low <= version and version[: len(high)] <= high


@dataclass(frozen=True)
class TargetProfile:
    """One build target, loaded and validated from a ``.toml`` profile (fields: see ``h100.toml``)."""

    name: str
    description: str
    jetson: bool
    tensorrt_flavour: str
    """``"tensorrt"`` (TensorRT) or ``"tensorrt-rtx"`` (TensorRT for RTX) builds this target's engines."""
    compute_capability: str
    tensorrt_min: str
    tensorrt_max: str
    workspace_bytes: int
    """Builder scratch-memory limit, bytes."""
    builder_optimization_level: int
    precision: str
    hardware_compatibility: str | None
    """``"ampere_plus"`` (TensorRT), ``"portable"`` (TensorRT-RTX), or None for an engine tied to one GPU
    (``"none"`` in the file)."""
    frames: int
    dla_cores: int
    use_dla: bool
    dla_core: int
    gpu_fallback: bool
    path: Path
    """The profile file, for error messages."""

    def check_tensorrt_version(self, version: str) -> None:
        """Raise UserError unless ``version`` of the target's TensorRT flavour is within
        ``tensorrt_min``..``tensorrt_max``."""
        label = LABELS[self.tensorrt_flavour]
        current = parse_version(version, self.tensorrt_flavour)
        if not _within(current, _version_bound(self.tensorrt_min), _version_bound(self.tensorrt_max)):
            raise UserError(
                f"target '{self.name}' supports {label} {self.tensorrt_min} to {self.tensorrt_max}.x, "
                f"but {label} {version} is installed ({self.path})"
            )


def manifest_target(name: str, target_file: str | None) -> TargetProfile:
    """The profile an artifact directory was built with: its file when it still exists, else by name."""
    if target_file and Path(target_file).is_file():
        return load_target(target_file)
    return load_target(name)


def list_targets() -> list[str]:
    """Names of the shipped profiles, sorted."""
    return sorted(path.stem for path in PROFILES_DIR.glob("*.toml"))


def load_target(name_or_path: str | os.PathLike[str]) -> TargetProfile:
    """Load a shipped profile by name (``"orin-agx"``) or any profile file by path."""
    text = os.fspath(name_or_path)
    if text.endswith(".toml") or os.sep in text or (os.altsep and os.altsep in text):
        path = Path(text)
        if not path.is_file():
            raise UserError(f"{path}: no such target profile")
        return _load_file(path)
    path = PROFILES_DIR / f"{text}.toml"
    if not path.is_file():
        raise UserError(
            f"unknown target '{text}': available targets are {', '.join(list_targets())} "
            "(or pass the path of a .toml profile)"
        )
    return _load_file(path)


def _load_file(path: Path) -> TargetProfile:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML: {error}") from error
    data = {**_DEFAULTS, **data}
    _check_types(path, data)
    _check_values(path, data)
    hardware = data["hardware_compatibility"]
    return TargetProfile(
        **{**data, "hardware_compatibility": None if hardware == "none" else hardware}, path=path
    )


def _fail(path: Path, field: str, expected: str, value: Any) -> UserError:
    return UserError(f"{path}: field '{field}': expected {expected}, got {value!r}")


def _check_types(path: Path, data: dict[str, Any]) -> None:
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise UserError(f"{path}: unknown field '{unknown[0]}': expected only {', '.join(_FIELDS)}")
    for field, (kind, expected) in _FIELDS.items():
        if field not in data:
            raise UserError(f"{path}: missing field '{field}': expected {expected}")
        value = data[field]
        # bool is a subclass of int: `frames = true` must not pass as 1.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _fail(path, field, expected, value)


def _check_values(path: Path, data: dict[str, Any]) -> None:
    """Check each value, then the combinations; UserError names the file and the field."""
    rules = {
        "name": data["name"].strip() != "",
        "tensorrt_flavour": data["tensorrt_flavour"] in FLAVOURS,
        "compute_capability": re.fullmatch(r"\d+\.\d", data["compute_capability"]) is not None,
        "tensorrt_min": _version_bound(data["tensorrt_min"]) != (),
        "tensorrt_max": _version_bound(data["tensorrt_max"]) != (),
        "workspace_bytes": data["workspace_bytes"] > 0,
        "builder_optimization_level": data["builder_optimization_level"] in OPTIMIZATION_LEVELS,
        "precision": data["precision"] in PRECISIONS,
        "hardware_compatibility": data["hardware_compatibility"] in HARDWARE_COMPATIBILITY,
        "frames": data["frames"] > 0,
        "dla_cores": data["dla_cores"] >= 0,
        "dla_core": data["dla_core"] >= 0,
    }
    for field, ok in rules.items():
        if not ok:
            expected = "a non-empty string" if field == "name" else _FIELDS[field][1]
            raise _fail(path, field, expected, data[field])

    if data["name"] != path.stem:
        raise _fail(path, "name", f"the file's stem ({path.stem!r})", data["name"])
    low, high = _version_bound(data["tensorrt_min"]), _version_bound(data["tensorrt_max"])
    if not _within(low, low, high):
        expected = f"at most tensorrt_max ({data['tensorrt_max']})"
        raise _fail(path, "tensorrt_min", expected, data["tensorrt_min"])
    flavour, hardware = data["tensorrt_flavour"], data["hardware_compatibility"]
    if flavour == "tensorrt-rtx" and data["jetson"]:
        raise _fail(path, "tensorrt_flavour", '"tensorrt" on Jetson (JetPack ships TensorRT)', flavour)
    portable = "portable" if flavour == "tensorrt-rtx" else "ampere_plus"
    if hardware not in ("none", portable):
        raise _fail(path, "hardware_compatibility", f'"none" or "{portable}" with {LABELS[flavour]}', hardware)
    if hardware == "ampere_plus":
        if data["jetson"]:
            raise _fail(path, "hardware_compatibility", '"none" on Jetson (TensorRT has none there)',
                        data["hardware_compatibility"])
        if int(data["compute_capability"].split(".")[0]) < 8:
            raise _fail(path, "hardware_compatibility", '"none" below compute capability 8.0 (Ampere)',
                        data["hardware_compatibility"])
    if data["use_dla"]:
        if flavour == "tensorrt-rtx":
            raise _fail(path, "use_dla", "false with TensorRT-RTX (it builds for no DLA)", True)
        if data["dla_cores"] == 0:
            raise _fail(path, "use_dla", "false: this target has no DLA (dla_cores = 0)", True)
        if data["dla_core"] >= data["dla_cores"]:
            raise _fail(path, "dla_core", f"a core index below dla_cores ({data['dla_cores']})",
                        data["dla_core"])


def check_build_device(target: TargetProfile, device: dict[str, str] | None) -> None:
    """Raise UserError unless a TensorRT engine for ``target`` can be built on ``device``.

    An engine runs on the GPU it was built on: this GPU's compute capability must be the
    target's, or, for a hardware-compatible target (``ampere_plus``), at least 8.0. ``device`` is
    :func:`mmg_runtime.device.device_info`'s answer (None: no GPU found).
    """
    wanted = sm_name(target.compute_capability)
    where = "on the Jetson module itself" if target.jetson else "on a machine with that GPU"
    if device is None:
        raise UserError(f"target '{target.name}' needs its GPU ({wanted}) to build TensorRT engines, and no "
                        f"CUDA GPU was found here: build {where}, or pass --backend onnxruntime")
    have = device["compute_capability"]
    if target.hardware_compatibility is not None:
        if int(have.split(".")[0]) >= 8:
            return
        raise UserError(f"target '{target.name}' builds hardware-compatible engines on Ampere or newer "
                        f"(sm_80+), but this GPU is {device['name']} ({sm_name(have)})")
    if have != target.compute_capability:
        raise UserError(
            f"target '{target.name}' is {wanted}, but this GPU is {device['name']} ({sm_name(have)}): a TensorRT "
            f"engine runs only on the GPU it was built for. Build {where}, choose the target of this GPU "
            "(--list-targets), or pass --hardware-compatible for an engine every Ampere+ GPU runs")


def hardware_compatible(target: TargetProfile) -> TargetProfile:
    """``target`` asking for a portable engine: with TensorRT one that every Ampere+ GPU runs
    (``HardwareCompatibilityLevel.AMPERE_PLUS``), with TensorRT-RTX one for every compute capability
    from the target's up that the installed release builds for (``"portable"``)."""
    if target.tensorrt_flavour == "tensorrt-rtx":
        return replace(target, hardware_compatibility="portable")
    if target.jetson:
        raise UserError(f"--hardware-compatible: target '{target.name}' is a Jetson, where TensorRT has no "
                        "hardware-compatible engines")
    if int(target.compute_capability.split(".")[0]) < 8:
        raise UserError(f"--hardware-compatible: target '{target.name}' is {sm_name(target.compute_capability)}; "
                        "hardware-compatible engines need Ampere (sm_80) or newer")
    return replace(target, hardware_compatibility="ampere_plus")


def jetson_note(target: TargetProfile, on_jetson: bool) -> str | None:
    """What a build for a Jetson target made on another machine is, and why it is not the Jetson artifact."""
    if not target.jetson or on_jetson:
        return None
    return (f"target {target.name} is a Jetson module and this machine is not one: this builds "
            f"{target.precision} ONNX models for ONNX Runtime with {target.name}'s settings, which a Jetson can "
            "run, but not its TensorRT engines (they are built on the module itself, for its GPU and "
            f"JetPack's TensorRT): run mmg-export build --target {target.name} there for those")


PORTABLE_RTX_TARGET = "rtx-portable"
"""The TensorRT-RTX target for no GPU in particular: one engine for every GPU the release builds for."""


def targets_of(flavour: str) -> list[TargetProfile]:
    """The shipped GPU profiles whose engines ``flavour`` (tensorrt, tensorrt-rtx) builds, by name."""
    return [profile for profile in map(load_target, list_targets())
            if profile.tensorrt_flavour == flavour and profile.name != "cpu"]


def check_flavour(target: TargetProfile, backend: str) -> None:
    """UserError unless the TensorRT ``backend`` (tensorrt, tensorrt-rtx) is the one that builds ``target``'s engines."""
    if target.tensorrt_flavour != backend:
        raise UserError(f"--backend {backend}: target '{target.name}' is built with {LABELS[target.tensorrt_flavour]} "
                        f"(--backend {target.tensorrt_flavour}); the {LABELS[backend]} targets are "
                        f"{', '.join(profile.name for profile in targets_of(backend))}")


def rtx_target(device: dict[str, str] | None) -> str:
    """The TensorRT-RTX target for this machine: the profile made for its GPU's compute capability
    (``device``: :func:`mmg_runtime.device.device_info`'s answer), else :data:`PORTABLE_RTX_TARGET`
    (no GPU, or one that no TensorRT-RTX profile names)."""
    capability = None if device is None else device["compute_capability"]
    return next((profile.name for profile in targets_of("tensorrt-rtx")
                 if profile.hardware_compatibility is None and profile.compute_capability == capability),
                PORTABLE_RTX_TARGET)
