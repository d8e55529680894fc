"""Whether an artifact directory can be trusted here: checked against its manifest before anything loads.

:func:`verify_artifacts` loads the manifest (its fields cross-checked, :mod:`mmg_runtime.manifest`)
and then checks the directory:

* every path stays inside the artifact directory once resolved (no ``..``, no absolute path, no
  symbolic link that leads out);
* every file is listed and has its recorded hash, so nothing is loaded that the build did not
  write;
* TensorRT engines match this machine's TensorRT release and GPU;
* TensorRT-RTX engines run here: TensorRT-RTX installed, a GPU of a compute capability they were
  built for and that TensorRT-RTX runs, the release they were built with.

:func:`this_machine` describes this machine for that check: the TensorRT releases installed (their
modules imported) and the GPU (asked of the CUDA driver). Standard library and packaging only
otherwise (imports without torch, numpy or tensorrt; the installed TensorRT-RTX is read only to
name the GPUs it runs, when it does not run this one).
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from .device import device_info, sm_name
from .errors import UserError
from .manifest import (
    MANIFEST_NAME,
    REBUILD_HINT,
    Manifest,
    load_manifest,
    present_files,
    sha256_file,
)
from .tensorrt import installed, offered_compute_capabilities
from .versions import release

TENSORRT_RELEASE_PARTS = 3
"""``major.minor.patch``: an engine needs the TensorRT release it was built with."""


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


def unlisted_files(directory: str | os.PathLike[str], manifest: Manifest) -> list[str]:
    """Files (and links) in ``directory`` that ``manifest.files`` does not list."""
    return sorted(set(present_files(Path(directory))) - set(manifest.files))


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


def _check_tensorrt_rtx(directory: Path, manifest: Manifest, version: str | None, compute_capability: str | None,
                        here: bool) -> None:
    """UserError, one line naming what the engines were built with and for and what this machine has,
    unless TensorRT-RTX ``version`` runs them on a GPU of ``compute_capability``. Each fact is checked
    when given; with ``here`` a missing one is this machine's (not installed, no GPU) and refused."""
    built = manifest.versions.get("tensorrt_rtx") or "?"
    targets = [cc.strip() for cc in (manifest.device or {}).get("compute_capabilities", "").split(",") if cc.strip()]
    what = f"{directory}: engines built with TensorRT-RTX {built} for {', '.join(map(sm_name, targets)) or 'sm_?'}"
    if here and version is None:
        raise UserError(f"{what}; this machine has no TensorRT-RTX to run them (they need {built}, the release that "
                        "built them): pip install 'mmg-export[tensorrt-rtx]', or build --backend onnxruntime artifacts "
                        "to run here")
    if here and compute_capability is None:
        raise UserError(f"{what}; this machine has no NVIDIA GPU, which TensorRT-RTX engines need: build "
                        "--backend onnxruntime artifacts to run here")
    release_ok = version is None or built == "?" or (
        release(built, TENSORRT_RELEASE_PARTS) == release(version, TENSORRT_RELEASE_PARTS))
    gpu_ok = compute_capability is None or not targets or compute_capability in targets
    if release_ok and gpu_ok:
        return
    found = f"{what}; this machine has TensorRT-RTX {version or '?'} on {sm_name(compute_capability)}"
    offered = _offered_here(version)
    if compute_capability is not None and offered and compute_capability not in offered:
        raise UserError(f"{found}, which it does not support (it supports "
                        f"{', '.join(map(sm_name, offered))}): build --backend tensorrt or --backend onnxruntime "
                        "artifacts for this GPU")
    raise UserError(f"{found}; {REBUILD_HINT} --backend tensorrt-rtx on this machine")


def _offered_here(version: str | None) -> list[str]:
    """The compute capabilities the installed TensorRT-RTX supports, when it is release ``version``; else []."""
    trt = installed("tensorrt-rtx") if version is not None else None
    return offered_compute_capabilities(trt) if trt is not None and trt.__version__ == version else []


def this_machine() -> dict:
    """This machine as :func:`verify_artifacts` checks engines against it (``here``): the TensorRT and
    TensorRT-RTX releases installed (None: not installed) and the GPU's compute capability (None: no GPU)."""
    tensorrt, tensorrt_rtx = installed("tensorrt"), installed("tensorrt-rtx")
    return {"trt_version": getattr(tensorrt, "__version__", None),
            "trt_rtx_version": getattr(tensorrt_rtx, "__version__", None),
            "compute_capability": (device_info() or {}).get("compute_capability"), "here": True}


def verify_artifacts(
    directory: str | os.PathLike[str],
    *,
    trt_version: str | None = None,
    compute_capability: str | None = None,
    trt_rtx_version: str | None = None,
    here: bool = False,
) -> Manifest:
    """Load the manifest (fields cross-checked) and check every file of the directory: listed,
    confined to it, and with its recorded SHA-256.

    For TensorRT artifacts, also check that the engines match this machine's TensorRT release
    (``trt_version``) and GPU (``compute_capability``, ``"MAJOR.MINOR"``) when those are given.
    For TensorRT-RTX artifacts, that this machine's TensorRT-RTX release (``trt_rtx_version``) is the
    engines' and runs them on its GPU (``compute_capability``: one the engines were built for, and
    one that release runs). ``here``: the keywords describe this machine in full
    (:func:`this_machine`), so None is "not installed" / "no GPU", which
    TensorRT-RTX engines cannot run without. Raises UserError naming the file and the mismatch,
    before anything is loaded.
    """
    directory = Path(directory)
    manifest = load_manifest(directory)
    _verify_files(directory, manifest)
    if manifest.backend == "tensorrt-rtx":
        _check_tensorrt_rtx(directory, manifest, trt_rtx_version, compute_capability, here)
    if manifest.backend == "tensorrt":
        built_trt = manifest.versions.get("tensorrt")
        device = manifest.device or {}
        trt_ok = (trt_version is None or built_trt is None
                  or release(built_trt, TENSORRT_RELEASE_PARTS) == release(trt_version, TENSORRT_RELEASE_PARTS))
        gpu_ok = compute_capability is None or _device_matches(device, compute_capability)
        if not (trt_ok and gpu_ok):
            raise UserError(
                f"{directory}: engine built for TensorRT {built_trt or '?'} on "
                f"{sm_name(device.get('compute_capability'))}; this machine has TensorRT "
                f"{trt_version or '?'} on {sm_name(compute_capability)}; {REBUILD_HINT}"
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
