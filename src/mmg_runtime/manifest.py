"""Artifact manifest: what ``mmg-export build`` wrote into an artifact directory, with hashes.

``manifest.json`` lists the SHA-256 of every file in the artifact directory (the graphs or
engines, ``tokenizer/``, the built-in ``model/``), each runnable component's I/O
tensors, the model geometry, the library versions and the build GPU. This module reads and
writes it, and cross-checks its fields against the components' I/O specs (``frames`` with the
pruner's input, ``keep`` with its output, ``extra.image_size`` with ``pixel_values``, ...), so an
edited field is refused. Whether the directory matches it (hashes, paths, this machine's
TensorRT and GPU) is :mod:`mmg_runtime.trust`.

Standard library only (imports without torch, numpy or tensorrt).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import UserError

SCHEMA_VERSION = 2
"""2: ``files`` hashes every file of the directory and the fields are cross-checked."""
MANIFEST_NAME = "manifest.json"
BACKENDS = ("tensorrt", "tensorrt-rtx", "onnxruntime")
"""What artifacts run on (``mmg-export build --backend``): the first two are engines, of TensorRT or TensorRT
for RTX (:data:`mmg_runtime.tensorrt.FLAVOURS`), the last ONNX Runtime models."""
REBUILD_HINT = "rebuild with mmg-export build"

TENSOR_DIMS: dict[str, tuple[str | int, ...]] = {
    "pixel_values": ("frames", 3, "image_size", "image_size"),
    "video_tokens": ("frames", "tokens_per_frame", "hidden_size"),
    "kept_tokens": ("keep", "hidden_size"),
    "kept_indices": ("keep",),
    "video_embeds": ("keep + 1", "hidden_size"),
    "newline": ("hidden_size",),
}
"""Dimensions of the tensors the pipeline exchanges, named after the manifest fields that give them.

A ``frames`` axis may hold fewer frames than the field (an encoder run on one frame while
streaming) or be dynamic; every other dimension is the field's value, or dynamic where the
graph has a dynamic axis. Tensors with other names are not cross-checked here."""
TENSOR_DTYPES = {"kept_indices": ("int64",), "newline": ("float32",)}
"""dtypes of the tensors above that do not follow the precision."""
PRECISION_DTYPES = {"fp32": ("float32",), "fp16": ("float16",), "bf16": ("bfloat16", "float32")}
"""I/O dtypes each precision allows (bf16 graphs may keep float32 I/O: NumPy has no bfloat16)."""
GEOMETRY_FIELDS = ("frames", "tokens_per_frame", "hidden_size", "keep", "image_size")
DERIVED_FIELDS = {"keep + 1": "keep"}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's contents, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_files(directory: str | os.PathLike[str]) -> dict[str, str]:
    """SHA-256 of every file under ``directory`` but the manifest, by relative POSIX path, sorted."""
    directory = Path(directory)
    return {relative: sha256_file(directory / relative) for relative in sorted(present_files(directory))}


def present_files(directory: Path) -> list[str]:
    """Relative POSIX paths of the files and symbolic links under ``directory`` (links not
    followed), the manifest left out."""
    found = []
    for root, folders, files in os.walk(directory):
        relative_root = Path(root).relative_to(directory)
        links = [name for name in folders if (Path(root) / name).is_symlink()]
        folders[:] = [name for name in folders if name not in links]
        found += [(relative_root / name).as_posix() for name in files + links]
    return [path for path in found if path != MANIFEST_NAME]


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
    """Contents of ``manifest.json`` (``schema_version`` 2)."""

    tool_version: str
    backend: str
    """``"tensorrt"``, ``"tensorrt-rtx"`` or ``"onnxruntime"``."""
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
    files: dict[str, str] = field(default_factory=dict)
    """SHA-256 of every file in the artifact directory but ``manifest.json``, by relative POSIX
    path; filled in by :func:`write_manifest`."""
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        """Indented JSON text."""
        return json.dumps(asdict(self), indent=2) + "\n"

    def component(self, name: str, directory: str | os.PathLike[str] = ".") -> Component:
        """Component ``name``; UserError naming ``directory``'s manifest when it has none of that name."""
        if name not in self.components:
            raise UserError(f"{Path(directory) / MANIFEST_NAME}: no component '{name}' (it has "
                            f"{', '.join(self.components) or 'none'}); {REBUILD_HINT}")
        return self.components[name]

    @classmethod
    def from_json(cls, text: str, source: str = MANIFEST_NAME) -> Manifest:
        """Parse and validate; UserError names ``source`` and the offending field.

        Besides types, the fields must agree with the components' I/O specs (see
        :data:`TENSOR_DIMS`), and every path must be relative and stay inside the directory.
        """
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
        manifest = cls(
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
            files=_file_hashes(source, reader.get("files", dict)),
            schema_version=schema,
        )
        check_fields(manifest, source)
        return manifest


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


def _sha256(source: str, where: str, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise UserError(f"{source}: field '{where}': expected 64 lowercase hex digits, got {value!r}")
    return value


def _relative_path(source: str, where: str, value: str) -> str:
    """``value`` if it is a relative POSIX path without ``..`` (confinement is checked on disk later)."""
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\\" in value or value != path.as_posix():
        raise UserError(f"{source}: {where}: {value!r} must be a relative path inside the artifact directory")
    return value


def _file_hashes(source: str, value: dict[str, Any]) -> dict[str, str]:
    return {_relative_path(source, "field 'files'", path): _sha256(source, f"files.{path}", digest)
            for path, digest in value.items()}


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
    return Component(
        file=_relative_path(source, f"field '{prefix}.file'", reader.get("file", str)),
        sha256=_sha256(source, f"{prefix}.sha256", reader.get("sha256", str)),
        inputs=_tensors(source, prefix + ".inputs", reader.get("inputs", dict)),
        outputs=_tensors(source, prefix + ".outputs", reader.get("outputs", dict)),
    )


# -- cross-checks: fields against the components' I/O specs --------------------------------


def check_fields(manifest: Manifest, source: str = MANIFEST_NAME) -> None:
    """UserError unless the geometry fields, ``ratio``, ``precision`` and the newline agree with
    the components' I/O specs (:data:`TENSOR_DIMS`) and each geometry field is given by at least
    one of them."""
    values = _field_values(manifest, source)
    if manifest.precision not in PRECISION_DTYPES:
        raise UserError(f"{source}: field 'precision': expected one of {', '.join(PRECISION_DTYPES)}, "
                        f"got {manifest.precision!r}")
    given: set[str] = set()
    for where, name, spec in _specs(manifest):
        given |= _check_spec(source, where, spec, TENSOR_DIMS[name], values)
        allowed = TENSOR_DTYPES.get(name, PRECISION_DTYPES[manifest.precision])
        if spec.dtype not in allowed:
            raise UserError(f"{source}: field '{where}.dtype' is {spec.dtype!r}, but precision "
                            f"{manifest.precision} gives {' or '.join(allowed)}; {REBUILD_HINT}")
    for name in GEOMETRY_FIELDS:
        if name not in given:
            raise UserError(f"{source}: field '{_field_path(name)}' ({values[name]}) is the size of no component "
                            f"tensor; the manifest changed after the build, {REBUILD_HINT}")
    tokens = manifest.frames * manifest.tokens_per_frame
    if not 0 < manifest.ratio <= 1 or abs(manifest.keep - manifest.ratio * tokens) > 0.5:
        raise UserError(f"{source}: fields 'ratio' {manifest.ratio!r} and 'keep' {manifest.keep} disagree: keep must "
                        f"be ratio x {tokens} video tokens, rounded; the manifest changed after the build, "
                        f"{REBUILD_HINT}")
    if not any(name in ("newline", "video_embeds") for _, name, _ in _specs(manifest)):
        raise UserError(f"{source}: no component gives the image_newline row (an output 'newline' or "
                        f"'video_embeds'); {REBUILD_HINT}")


def _field_path(name: str) -> str:
    return f"extra.{name}" if name == "image_size" else name


def _field_values(manifest: Manifest, source: str) -> dict[str, int]:
    values = {name: getattr(manifest, name) for name in GEOMETRY_FIELDS if name != "image_size"}
    values["image_size"] = manifest.extra.get("image_size")
    for name, value in values.items():
        if type(value) is not int or value < 1:
            raise UserError(f"{source}: field '{_field_path(name)}': expected an integer >= 1, got {value!r}")
    return {**values, "keep + 1": manifest.keep + 1}


def _specs(manifest: Manifest):
    """(where, tensor name, spec) of every component tensor named in :data:`TENSOR_DIMS`."""
    for component_name, component in manifest.components.items():
        for side, specs in (("inputs", component.inputs), ("outputs", component.outputs)):
            for name, spec in specs.items():
                if name in TENSOR_DIMS:
                    yield f"components.{component_name}.{side}.{name}", name, spec


def _check_spec(source: str, where: str, spec: TensorSpec, dims: tuple[str | int, ...],
                values: dict[str, int]) -> set[str]:
    """The fields this spec gives exactly; UserError for a dimension that disagrees with its field."""
    pairs = list(zip(spec.shape, dims, strict=True)) if len(spec.shape) == len(dims) else None
    if pairs is not None and all(_dim_agrees(dim, name, values) for dim, name in pairs):
        return {DERIVED_FIELDS.get(name, name) for dim, name in pairs
                if isinstance(name, str) and dim == values[name]}
    names = ", ".join(f"{d}={values[d]}" if d in values else str(d) for d in dims)
    raise UserError(f"{source}: field '{where}.shape' is {list(spec.shape)}, but the manifest's fields give "
                    f"[{names}]; the manifest changed after the build, {REBUILD_HINT}")


def _dim_agrees(dim: int | str, name: str | int, values: dict[str, int]) -> bool:
    if isinstance(dim, str):
        return True  # a dynamic axis: checked against the graph when the session opens
    value = values.get(name, name)
    return dim == value or (name == "frames" and 1 <= dim <= value)


# -- writing, reading -------------------------------------------------------------------------


def write_manifest(directory: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Write ``directory/manifest.json`` (replacing it atomically) and return its path.

    ``files`` is filled in here with the SHA-256 of every file then in ``directory``: write the
    manifest last.
    """
    path = Path(directory) / MANIFEST_NAME
    manifest = replace(manifest, files=hash_files(directory))
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
