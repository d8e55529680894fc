"""Artifact manifest: what ``mmg-export build`` wrote into an artifact directory, with hashes.

``manifest.json`` lists each component file with its SHA-256 and I/O tensors, the model geometry,
the library versions and the build GPU. The runtime verifies it before loading anything, so a
changed file, or an engine built for another TensorRT or GPU, fails with a clear message instead
of a deserialization error. Standard library only (imports without torch, numpy or tensorrt).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mmg_runtime.errors import UserError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
BACKENDS = ("tensorrt", "onnxruntime")
REBUILD_HINT = "rebuild with mmg-export build"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's contents, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def utc_now() -> str:
    """Current UTC time, ISO 8601 with seconds (``2026-05-01T12:00:00+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class TensorSpec:
    """Shape (ints; strings name dynamic dimensions) and dtype (NumPy spelling) of one tensor."""

    shape: tuple[int | str, ...]
    dtype: str


@dataclass(frozen=True)
class Component:
    """One artifact file: path relative to the artifact directory, hash and I/O tensors."""

    file: str
    sha256: str
    inputs: dict[str, TensorSpec] = field(default_factory=dict)
    outputs: dict[str, TensorSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """Contents of ``manifest.json`` (``schema_version`` 1)."""

    tool_version: str
    backend: str
    """``"tensorrt"`` or ``"onnxruntime"``."""
    target: str
    precision: str
    frames: int
    tokens_per_frame: int
    hidden_size: int
    ratio: float
    """Fraction of video tokens the pruner keeps."""
    keep: int
    """K: tokens kept in total."""
    components: dict[str, Component] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    """Library versions at build time: python, torch, onnx, tensorrt, ..."""
    device: dict[str, str] | None = None
    """Build GPU: ``name``, ``compute_capability`` ("8.7"), optionally ``hardware_compatibility``
    ("AMPERE_PLUS") for engines that run on any later GPU."""
    extra: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=utc_now)
    """UTC, ISO 8601."""
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        """Indented JSON text."""
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = MANIFEST_NAME) -> Manifest:
        """Parse and validate; UserError names ``source`` and the offending field."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"{source}: not valid JSON: {error}") from error
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a JSON object, got {type(data).__name__}")
        schema = data.get("schema_version")
        if type(schema) is not int or schema != SCHEMA_VERSION:
            raise UserError(
                f"{source}: schema_version {schema!r} is not supported (expected {SCHEMA_VERSION}); "
                f"{REBUILD_HINT} or use the matching mmg_runtime"
            )
        reader = _Reader(source, data)
        backend = reader.get("backend", str)
        if backend not in BACKENDS:
            raise UserError(
                f"{source}: field 'backend': expected one of {', '.join(BACKENDS)}, got {backend!r}"
            )
        components = {
            name: _component(source, name, value)
            for name, value in reader.get("components", dict).items()
        }
        device = reader.get("device", (dict, type(None)))
        return cls(
            tool_version=reader.get("tool_version", str),
            backend=backend,
            target=reader.get("target", str),
            precision=reader.get("precision", str),
            frames=reader.get("frames", int),
            tokens_per_frame=reader.get("tokens_per_frame", int),
            hidden_size=reader.get("hidden_size", int),
            ratio=float(reader.get("ratio", (int, float))),
            keep=reader.get("keep", int),
            components=components,
            versions=_string_map(source, "versions", reader.get("versions", dict)),
            device=None if device is None else _string_map(source, "device", device),
            extra=reader.get("extra", dict),
            created=reader.get("created", str),
            schema_version=schema,
        )


class _Reader:
    """Typed access to the fields of one JSON object, with errors that name the source and field."""

    def __init__(self, source: str, data: dict[str, Any], prefix: str = "") -> None:
        self.source, self.data, self.prefix = source, data, prefix

    def get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        where = f"{self.source}: field '{self.prefix}{key}'"
        if key not in self.data:
            raise UserError(f"{where} is missing")
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise UserError(f"{where}: expected {names}, got {value!r}")
        return value


def _string_map(source: str, key: str, value: dict[str, Any]) -> dict[str, str]:
    for item_key, item in value.items():
        if not isinstance(item, str):
            raise UserError(f"{source}: field '{key}.{item_key}': expected str, got {item!r}")
    return dict(value)


def _tensors(source: str, prefix: str, value: dict[str, Any]) -> dict[str, TensorSpec]:
    specs = {}
    for name, spec in value.items():
        if not isinstance(spec, dict):
            raise UserError(f"{source}: field '{prefix}.{name}': expected an object, got {spec!r}")
        reader = _Reader(source, spec, f"{prefix}.{name}.")
        shape = reader.get("shape", list)
        if not all(isinstance(dim, (int, str)) and not isinstance(dim, bool) for dim in shape):
            raise UserError(
                f"{source}: field '{prefix}.{name}.shape': expected ints or names, got {shape!r}"
            )
        specs[name] = TensorSpec(shape=tuple(shape), dtype=reader.get("dtype", str))
    return specs


def _component(source: str, name: str, value: Any) -> Component:
    prefix = f"components.{name}"
    if not isinstance(value, dict):
        raise UserError(f"{source}: field '{prefix}': expected an object, got {value!r}")
    reader = _Reader(source, value, prefix + ".")
    sha256 = reader.get("sha256", str)
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise UserError(
            f"{source}: field '{prefix}.sha256': expected 64 lowercase hex digits, got {sha256!r}"
        )
    return Component(
        file=reader.get("file", str),
        sha256=sha256,
        inputs=_tensors(source, prefix + ".inputs", reader.get("inputs", dict)),
        outputs=_tensors(source, prefix + ".outputs", reader.get("outputs", dict)),
    )


def write_manifest(directory: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Write ``directory/manifest.json`` (replacing it atomically) and return its path."""
    path = Path(directory) / MANIFEST_NAME
    partial = path.with_name(MANIFEST_NAME + ".partial")
    partial.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(partial, path)
    return path


def load_manifest(directory: str | os.PathLike[str]) -> Manifest:
    """Read and validate ``directory/manifest.json``."""
    path = Path(directory) / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            f"{path}: missing; expected an artifact directory written by mmg-export build"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read the manifest: {error}") from error
    return Manifest.from_json(text, source=str(path))


def _component_path(directory: Path, manifest_path: Path, name: str, component: Component) -> Path:
    relative = Path(component.file)
    if relative.is_absolute() or ".." in relative.parts:
        raise UserError(
            f"{manifest_path}: component '{name}': file {component.file!r} must be a relative path "
            f"inside {directory}"
        )
    return directory / relative


def _release(version: str) -> tuple[int, ...]:
    """Numeric ``major.minor.patch`` prefix of a version string: engines need the same release."""
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def _sm(compute_capability: str | None) -> str:
    return "sm_?" if compute_capability is None else "sm_" + compute_capability.replace(".", "")


def _device_matches(device: dict[str, str], compute_capability: str) -> bool:
    built = device.get("compute_capability")
    if built is None:
        return True
    if device.get("hardware_compatibility", "").upper() == "AMPERE_PLUS":
        return int(compute_capability.split(".")[0]) >= 8
    return built == compute_capability


def verify_artifacts(
    directory: str | os.PathLike[str],
    *,
    trt_version: str | None = None,
    compute_capability: str | None = None,
) -> Manifest:
    """Load the manifest and check every component's presence and SHA-256.

    For TensorRT artifacts, also check that the engines match this machine's TensorRT release
    (``trt_version``) and GPU (``compute_capability``, ``"MAJOR.MINOR"``) when those are given.
    Raises UserError naming the file and the mismatch.
    """
    directory = Path(directory)
    manifest = load_manifest(directory)
    manifest_path = directory / MANIFEST_NAME
    for name, component in manifest.components.items():
        path = _component_path(directory, manifest_path, name, component)
        if not path.is_file():
            raise UserError(f"{path}: missing (component '{name}' of {manifest_path})")
        actual = sha256_file(path)
        if actual != component.sha256:
            raise UserError(
                f"{path}: sha256 mismatch: expected {component.sha256[:12]}..., got {actual[:12]}...; "
                f"the file changed after the build, {REBUILD_HINT}"
            )
    if manifest.backend == "tensorrt":
        built_trt = manifest.versions.get("tensorrt")
        device = manifest.device or {}
        trt_ok = trt_version is None or built_trt is None or _release(built_trt) == _release(trt_version)
        gpu_ok = compute_capability is None or _device_matches(device, compute_capability)
        if not (trt_ok and gpu_ok):
            raise UserError(
                f"{directory}: engine built for TensorRT {built_trt or '?'} on "
                f"{_sm(device.get('compute_capability'))}; this machine has TensorRT "
                f"{trt_version or '?'} on {_sm(compute_capability)}; {REBUILD_HINT}"
            )
    return manifest


@contextlib.contextmanager
def atomic_output_dir(final_dir: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh directory beside ``final_dir`` and move it into place when the block succeeds.

    The temporary directory (``.NAME.tmp-XXXXXXXX``) lives in the same parent, hence on the same
    filesystem, so the final rename is atomic: readers see the old directory or the new one, never
    a partial one. On any exception the temporary directory is removed and the exception re-raised.
    An existing ``final_dir`` is a UserError unless ``overwrite``; then it is renamed aside, the new
    directory renamed in, and the old one deleted.
    """
    final = Path(final_dir)
    if final.exists() and not overwrite:
        raise UserError(f"{final}: already exists; pass --overwrite to replace it")
    temporary = final.parent / f".{final.name}.tmp-{secrets.token_hex(4)}"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary.mkdir()
    except OSError as error:
        raise UserError(f"{final}: cannot create the output directory ({error.strerror or error})") from error
    try:
        yield temporary
        _move_into_place(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _move_into_place(temporary: Path, final: Path) -> None:
    if not final.exists() and not final.is_symlink():
        os.rename(temporary, final)
        return
    aside = final.parent / f".{final.name}.old-{secrets.token_hex(4)}"
    os.rename(final, aside)
    try:
        os.rename(temporary, final)
    except BaseException:
        os.rename(aside, final)
        raise
    _remove(aside)
