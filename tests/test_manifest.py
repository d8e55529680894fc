"""Artifact manifest, hash verification and atomic output directories (mmg_runtime.manifest)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from mmg_runtime.errors import UserError
from mmg_runtime.manifest import (
    MANIFEST_NAME,
    Component,
    Manifest,
    TensorSpec,
    atomic_output_dir,
    load_manifest,
    sha256_file,
    verify_artifacts,
    write_manifest,
)


def make_manifest(directory: Path, backend: str = "tensorrt", **changes: object) -> Manifest:
    """A manifest for two small component files written into ``directory``."""
    (directory / "vision.engine").write_bytes(b"vision plan")
    (directory / "prune.engine").write_bytes(b"prune plan")
    frames = TensorSpec(shape=(32, 3, 384, 384), dtype="float16")
    features = TensorSpec(shape=(32, 196, 1152), dtype="float16")
    manifest = Manifest(
        tool_version="0.1.0",
        backend=backend,
        target="orin-agx",
        precision="fp16",
        frames=32,
        tokens_per_frame=196,
        hidden_size=1152,
        ratio=0.25,
        keep=1568,
        components={
            "vision": Component("vision.engine", sha256_file(directory / "vision.engine"),
                                {"frames": frames}, {"features": features}),
            "prune": Component("prune.engine", sha256_file(directory / "prune.engine"),
                               {"features": features},
                               {"kept": TensorSpec(shape=(1568, 1152), dtype="float16"),
                                "index": TensorSpec(shape=("keep",), dtype="int64")}),
        },
        versions={"python": "3.10.12", "tensorrt": "10.3.0.30", "onnx": "1.16.0"},
        device={"name": "Orin", "compute_capability": "8.7"},
        extra={"model": "llava-hf/llava-onevision-qwen2-0.5b-ov-hf"},
    )
    return replace(manifest, **changes)


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x" * (3 << 20))
    assert sha256_file(path) == hashlib.sha256(b"x" * (3 << 20)).hexdigest()


def test_round_trip(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path)
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert write_manifest(tmp_path, manifest) == tmp_path / MANIFEST_NAME
    assert load_manifest(tmp_path) == manifest
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert data["schema_version"] == 1
    assert data["created"].endswith("+00:00")
    assert data["components"]["prune"]["outputs"]["index"] == {"shape": ["keep"], "dtype": "int64"}


def test_load_manifest_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_NAME
    with pytest.raises(UserError, match="missing; expected an artifact directory written by mmg-export"):
        load_manifest(tmp_path)
    path.write_text("{not json")
    with pytest.raises(UserError, match=f"^{path}: not valid JSON"):
        load_manifest(tmp_path)
    data = json.loads(make_manifest(tmp_path).to_json())
    for change, expected in [
        ({"schema_version": 7}, "schema_version 7 is not supported (expected 1)"),
        ({"schema_version": True}, "schema_version True is not supported"),
        ({"backend": "tflite"}, "field 'backend': expected one of tensorrt, onnxruntime, got 'tflite'"),
        ({"frames": "32"}, "field 'frames': expected int, got '32'"),
        ({"keep": None}, "field 'keep': expected int, got None"),
        ({"versions": {"torch": 2}}, "field 'versions.torch': expected str, got 2"),
        ({"components": {"vision": {"file": "v.engine", "sha256": "abc", "inputs": {}, "outputs": {}}}},
         "field 'components.vision.sha256': expected 64 lowercase hex digits"),
    ]:
        path.write_text(json.dumps({**data, **change}))
        with pytest.raises(UserError) as error:
            load_manifest(tmp_path)
        assert str(error.value).startswith(f"{path}: ")
        assert expected in str(error.value)
    del data["target"]
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="field 'target' is missing"):
        load_manifest(tmp_path)


def test_verify_artifacts_ok(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path)
    write_manifest(tmp_path, manifest)
    assert verify_artifacts(tmp_path, trt_version="10.3.0.30", compute_capability="8.7") == manifest
    assert verify_artifacts(tmp_path, trt_version="10.3.0") == manifest
    assert verify_artifacts(tmp_path) == manifest


def test_verify_hash_mismatch_names_the_file(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path)
    write_manifest(tmp_path, manifest)
    (tmp_path / "prune.engine").write_bytes(b"tampered")
    with pytest.raises(UserError) as error:
        verify_artifacts(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'prune.engine'}: sha256 mismatch")
    assert f"expected {manifest.components['prune'].sha256[:12]}..." in message
    assert f"got {hashlib.sha256(b'tampered').hexdigest()[:12]}..." in message


def test_verify_missing_component(tmp_path: Path) -> None:
    write_manifest(tmp_path, make_manifest(tmp_path))
    (tmp_path / "vision.engine").unlink()
    with pytest.raises(UserError, match=r"vision\.engine: missing \(component 'vision'"):
        verify_artifacts(tmp_path)


def test_verify_rejects_paths_outside_the_directory(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path)
    escaped = replace(manifest.components["vision"], file="../vision.engine")
    write_manifest(tmp_path, replace(manifest, components={"vision": escaped}))
    with pytest.raises(UserError, match="must be a relative path inside"):
        verify_artifacts(tmp_path)


def test_verify_tensorrt_version_and_gpu(tmp_path: Path) -> None:
    write_manifest(tmp_path, make_manifest(tmp_path))
    expected = (
        f"{tmp_path}: engine built for TensorRT 10.3.0.30 on sm_87; this machine has TensorRT "
        "{trt} on sm_{sm}; rebuild with mmg-export build"
    )
    with pytest.raises(UserError) as error:
        verify_artifacts(tmp_path, trt_version="11.4.1", compute_capability="8.7")
    assert str(error.value) == expected.format(trt="11.4.1", sm="87")
    with pytest.raises(UserError) as error:
        verify_artifacts(tmp_path, trt_version="10.3.0.30", compute_capability="11.0")
    assert str(error.value) == expected.format(trt="10.3.0.30", sm="110")
    with pytest.raises(UserError, match=r"this machine has TensorRT \? on sm_90"):
        verify_artifacts(tmp_path, compute_capability="9.0")


def test_verify_hardware_compatible_engine_runs_on_later_gpus(tmp_path: Path) -> None:
    device = {
        "name": "NVIDIA A100",
        "compute_capability": "8.0",
        "hardware_compatibility": "AMPERE_PLUS",
    }
    write_manifest(tmp_path, make_manifest(tmp_path, device=device))
    verify_artifacts(tmp_path, trt_version="10.3.0", compute_capability="9.0")
    with pytest.raises(UserError, match="sm_75"):
        verify_artifacts(tmp_path, compute_capability="7.5")


def test_verify_onnxruntime_ignores_tensorrt_and_gpu(tmp_path: Path) -> None:
    write_manifest(tmp_path, make_manifest(tmp_path, backend="onnxruntime"))
    verify_artifacts(tmp_path, trt_version="11.4.1", compute_capability="9.0")


def _siblings(path: Path) -> list[str]:
    return sorted(entry.name for entry in path.parent.iterdir())


def test_atomic_output_dir_success(tmp_path: Path) -> None:
    final = tmp_path / "out" / "orin-agx"
    with atomic_output_dir(final) as work:
        assert work.parent == final.parent and work.name.startswith(".orin-agx.tmp-")
        assert not final.exists()
        (work / "manifest.json").write_text("{}")
    assert (final / "manifest.json").read_text() == "{}"
    assert _siblings(final) == ["orin-agx"]


def test_atomic_output_dir_exception_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "artifacts"
    with pytest.raises(RuntimeError, match="build failed"):
        with atomic_output_dir(final) as work:
            (work / "half.engine").write_bytes(b"partial")
            raise RuntimeError("build failed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_dir_existing(tmp_path: Path) -> None:
    final = tmp_path / "artifacts"
    final.mkdir()
    (final / "old.engine").write_bytes(b"old")
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        with atomic_output_dir(final):
            pytest.fail("must not get here")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(final, overwrite=True) as work:
            (work / "new.engine").write_bytes(b"new")
            raise KeyboardInterrupt
    assert [p.name for p in final.iterdir()] == ["old.engine"]
    with atomic_output_dir(final, overwrite=True) as work:
        (work / "new.engine").write_bytes(b"new")
    assert [p.name for p in final.iterdir()] == ["new.engine"]
    assert _siblings(final) == ["artifacts"]


def test_atomic_output_dir_under_an_unwritable_parent(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match=r"file/out: cannot create the output directory"):
        with atomic_output_dir(blocker / "out"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
