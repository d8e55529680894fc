"""Artifact manifest: what ``mmg-export build`` wrote into an artifact directory, with hashes.

``manifest.json`` lists the SHA-256 of every file in the artifact directory (the graphs or
engines, ``tokenizer/``, the built-in ``model/``), each runnable component's I/O
tensors, the model geometry, the library versions and the build GPU. The runtime verifies it
before loading anything:

* every field agrees with the components' I/O specs (``frames`` with the pruner's input, ``keep``
  with its output, ``extra.image_size`` with ``pixel_values``, ...), so an edited field is refused;
* every path stays inside the artifact directory once resolved (no ``..``, no absolute path, no
  symbolic link that leads out);
* every file is listed and has its recorded hash, so nothing is loaded that the build did not
  write;
* TensorRT engines match this machine's TensorRT release and GPU.

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

from mmg_runtime.errors import UserError

SCHEMA_VERSION = 2
"""2: ``files`` hashes every file of the directory and the fields are cross-checked."""
MANIFEST_NAME = "manifest.json"
BACKENDS = ("tensorrt", "onnxruntime")
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
    return {relative: sha256_file(directory / relative) for relative in sorted(_present_files(directory))}


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


# -- writing, reading, verifying -------------------------------------------------------------


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


def confined_path(directory: str | os.PathLike[str], relative: str, what: str) -> Path:
    """``directory / relative`` resolved (symbolic links followed); UserError unless it stays
    inside ``directory`` (itself resolved). ``what`` names the path in the message."""
    root = Path(directory).resolve()
    path = Path(relative)
    resolved = (root / path).resolve()
    if path.is_absolute() or not resolved.is_relative_to(root):
        raise UserError(f"{Path(directory) / relative}: {what} leads outside the artifact directory "
                        f"(to {resolved}); refused")
    return resolved


def _present_files(directory: Path) -> list[str]:
    """Relative POSIX paths of the files and symbolic links under ``directory`` (links not
    followed), the manifest left out."""
    found = []
    for root, folders, files in os.walk(directory):
        relative_root = Path(root).relative_to(directory)
        links = [name for name in folders if (Path(root) / name).is_symlink()]
        folders[:] = [name for name in folders if name not in links]
        found += [(relative_root / name).as_posix() for name in files + links]
    return [path for path in found if path != MANIFEST_NAME]


def unlisted_files(directory: str | os.PathLike[str], manifest: Manifest) -> list[str]:
    """Files (and links) in ``directory`` that ``manifest.files`` does not list."""
    return sorted(set(_present_files(Path(directory))) - set(manifest.files))


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


def _verify_files(directory: Path, manifest: Manifest) -> None:
    """Every file listed, inside the directory, and with its recorded hash; every component listed."""
    manifest_path = directory / MANIFEST_NAME
    model = manifest.extra.get("model")
    if isinstance(model, str) and model and not Path(model).is_absolute():  # absolute: see model_directory()
        confined_path(directory, model, "the model path in the manifest")
    unlisted = unlisted_files(directory, manifest)
    if unlisted:
        raise UserError(f"{directory / unlisted[0]}: not listed in {manifest_path}; the artifact directory changed "
                        f"after the build (remove it, or {REBUILD_HINT})")
    for name, component in manifest.components.items():
        if manifest.files.get(component.file) != component.sha256:
            raise UserError(f"{manifest_path}: component '{name}': file {component.file!r} is not listed in 'files' "
                            f"with the same sha256; {REBUILD_HINT}")
    for relative, expected in manifest.files.items():
        path = confined_path(directory, relative, "a file listed in the manifest")
        if not path.is_file():
            raise UserError(f"{directory / relative}: missing (listed in {manifest_path})")
        actual = sha256_file(path)
        if actual != expected:
            raise UserError(
                f"{directory / relative}: sha256 mismatch: expected {expected[:12]}..., got {actual[:12]}...; "
                f"the file changed after the build, {REBUILD_HINT}"
            )


def verify_artifacts(
    directory: str | os.PathLike[str],
    *,
    trt_version: str | None = None,
    compute_capability: str | None = None,
) -> Manifest:
    """Load the manifest (fields cross-checked) and check every file of the directory: listed,
    confined to it, and with its recorded SHA-256.

    For TensorRT artifacts, also check that the engines match this machine's TensorRT release
    (``trt_version``) and GPU (``compute_capability``, ``"MAJOR.MINOR"``) when those are given.
    Raises UserError naming the file and the mismatch.
    """
    directory = Path(directory)
    manifest = load_manifest(directory)
    _verify_files(directory, manifest)
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


def model_directory(directory: str | os.PathLike[str], manifest: Manifest) -> Path:
    """The LLM checkpoint the manifest names (``extra.model``), confined to the artifact directory.

    The built-in model travels inside the artifacts (``model/``, hashed). A real checkpoint is
    recorded by its absolute path: it lies outside, unhashed, so it is used only when the user
    names it (``--model DIR``); here it is a UserError that says so.
    """
    source = manifest.extra.get("model")
    if not isinstance(source, str) or not source:
        raise UserError(f"{directory}: the manifest names no model; pass --model DIR")
    if Path(source).is_absolute() or ".." in PurePosixPath(source).parts:
        raise UserError(f"{directory}: the artifacts were built from the checkpoint {source}, outside the artifact "
                        f"directory (not hashed by its manifest); pass --model {source} to use it")
    return confined_path(directory, source, "the model path in the manifest")
