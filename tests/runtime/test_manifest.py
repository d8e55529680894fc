"""Artifact manifest (mmg_runtime.manifest), hash verification (mmg_runtime.trust) and atomic output directories."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mmg_runtime.errors import UserError
from mmg_runtime.manifest import MANIFEST_NAME, Manifest, load_manifest, sha256_file, write_manifest
from mmg_runtime.trust import model_directory, verify_artifacts
from samples import make_manifest


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x" * (3 << 20))
    assert sha256_file(path) == hashlib.sha256(b"x" * (3 << 20)).hexdigest()


def test_round_trip(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path)
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert write_manifest(tmp_path, manifest) == tmp_path / MANIFEST_NAME
    written = load_manifest(tmp_path)
    assert written == replace(manifest, files={name: sha256_file(tmp_path / name)
                                               for name in ("encoder.engine", "newline.npy", "pruner.engine")})
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert data["schema_version"] == 2
    assert data["created"].endswith("+00:00")
    assert data["components"]["pruner"]["outputs"]["kept_indices"] == {"shape": [1568], "dtype": "int64"}


def test_a_utf8_manifest_loads_under_an_ascii_locale(tmp_path: Path) -> None:
    """manifest.json is read as UTF-8 whatever the device's locale: a field outside ASCII, written
    unescaped (by hand or another tool), loads under LC_ALL=C with Python's UTF-8 mode off."""
    write_manifest(tmp_path, make_manifest(tmp_path, device={"name": "Jetson Orin\u2122", "compute_capability": "8.7"}))
    path = tmp_path / MANIFEST_NAME
    path.write_bytes(json.dumps(json.loads(path.read_bytes()), ensure_ascii=False).encode("utf-8"))
    assert load_manifest(tmp_path).device["name"] == "Jetson Orin\u2122"
    script = ("import codecs, locale, sys; from mmg_runtime.manifest import load_manifest; "
              "print(codecs.lookup(locale.getencoding()).name, ascii(load_manifest(sys.argv[1]).device['name']))")
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ascii 'Jetson Orin\\u2122'\n"  # the locale really is ASCII, and the name came through


def test_files_lists_every_file_below_the_directory(tmp_path: Path) -> None:
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "chat_template.jinja").write_text("{{ messages }}")
    (tmp_path / "model" / "deep").mkdir(parents=True)
    (tmp_path / "model" / "deep" / "weights.safetensors").write_bytes(b"w")
    write_manifest(tmp_path, make_manifest(tmp_path))
    assert list(load_manifest(tmp_path).files) == ["encoder.engine", "model/deep/weights.safetensors",
                                                    "newline.npy", "pruner.engine", "tokenizer/chat_template.jinja"]


def test_load_manifest_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_NAME
    with pytest.raises(UserError, match="missing; expected an artifact directory written by mmg-export"):
        load_manifest(tmp_path)
    path.write_text("{not json")
    with pytest.raises(UserError, match=f"^{path}: not valid JSON"):
        load_manifest(tmp_path)
    data = json.loads(make_manifest(tmp_path).to_json())
    for change, expected in [
        ({"schema_version": 1}, "schema_version 1 is not supported (expected 2)"),
        ({"schema_version": True}, "schema_version True is not supported"),
        ({"backend": "tflite"}, "field 'backend': expected one of tensorrt, tensorrt-rtx, onnxruntime, got 'tflite'"),
        ({"frames": "32"}, "field 'frames': expected int, got '32'"),
        ({"keep": None}, "field 'keep': expected int, got None"),
        ({"versions": {"torch": 2}}, "field 'versions.torch': expected str, got 2"),
        ({"components": {"vision": {"file": "v.engine", "sha256": "abc", "inputs": {}, "outputs": {}}}},
         "field 'components.vision.sha256': expected 64 lowercase hex digits"),
        ({"files": {"/etc/passwd": "0" * 64}}, "'/etc/passwd' must be a relative path inside the artifact directory"),
        ({"files": {"model/../../x": "0" * 64}}, "'model/../../x' must be a relative path inside"),
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


def _edited(tmp_path: Path, edit) -> str:
    """The one-line UserError for the manifest of make_manifest after ``edit(data)``."""
    data = json.loads(make_manifest(tmp_path).to_json())
    edit(data)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(UserError) as error:
        load_manifest(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / MANIFEST_NAME}: ") and "\n" not in message
    return message


@pytest.mark.parametrize("field,value,expected", [
    ("frames", 64, "field 'frames' (64) is the size of no component tensor"),
    ("frames", 16, "field 'components.encoder.inputs.pixel_values.shape' is [32, 3, 384, 384], but the manifest's "
                   "fields give [frames=16, 3, image_size=384, image_size=384]"),
    ("tokens_per_frame", 197, "field 'components.encoder.outputs.video_tokens.shape' is [32, 196, 1152]"),
    ("hidden_size", 1024, "[frames=32, tokens_per_frame=196, hidden_size=1024]"),
    ("keep", 1000, "kept_tokens.shape' is [1568, 1152], but the manifest's fields give [keep=1000, hidden_size=1152]"),
    ("ratio", 0.5, "fields 'ratio' 0.5 and 'keep' 1568 disagree"),
    ("ratio", 0.0, "fields 'ratio' 0.0 and 'keep' 1568 disagree"),
    ("precision", "fp8", "field 'precision': expected one of fp32, fp16, bf16, got 'fp8'"),
    ("precision", "fp32", "field 'components.encoder.inputs.pixel_values.dtype' is 'float16', but precision fp32 "
                          "gives float32"),
])
def test_edited_fields_disagree_with_the_specs(tmp_path: Path, field, value, expected) -> None:
    assert expected in _edited(tmp_path, lambda data: data.update({field: value}))


def test_keep_and_ratio_edited_together_disagree_with_the_pruner(tmp_path: Path) -> None:
    message = _edited(tmp_path, lambda data: data.update(keep=3136, ratio=0.5))
    assert "components.pruner.outputs.kept_tokens.shape' is [1568, 1152]" in message


@pytest.mark.parametrize("value", [100000, 0, "384", None])
def test_edited_image_size(tmp_path: Path, value) -> None:
    message = _edited(tmp_path, lambda data: data["extra"].update(image_size=value))
    if value == 100000:
        assert "pixel_values.shape' is [32, 3, 384, 384], but the manifest's fields give [frames=32, 3, " \
               "image_size=100000, image_size=100000]" in message
    else:
        assert f"field 'extra.image_size': expected an integer >= 1, got {value!r}" in message


def test_missing_newline_is_refused(tmp_path: Path) -> None:
    message = _edited(tmp_path, lambda data: data["components"].pop("newline"))
    assert "no component gives the image_newline row" in message


def test_pruner_emitting_video_embeds_carries_the_newline(tmp_path: Path) -> None:
    """The pruner may emit the newline row itself: video_embeds (K + 1, D)."""
    def edit(data):
        data["components"].pop("newline")
        data["components"]["pruner"]["outputs"] = {"video_embeds": {"shape": [1569, 1152], "dtype": "float16"}}

    data = json.loads(make_manifest(tmp_path).to_json())
    edit(data)
    assert Manifest.from_json(json.dumps(data)).components["pruner"].outputs["video_embeds"].shape == (1569, 1152)
    data["components"]["pruner"]["outputs"]["video_embeds"]["shape"] = [1568, 1152]
    with pytest.raises(UserError, match=r"video_embeds.shape' is \[1568, 1152\], but .* \[keep \+ 1=1569"):
        Manifest.from_json(json.dumps(data))


def test_dynamic_frame_axis_and_one_frame_encoders_are_accepted(tmp_path: Path) -> None:
    data = json.loads(make_manifest(tmp_path).to_json())
    data["components"]["encoder"]["inputs"]["pixel_values"]["shape"] = ["frames", 3, 384, 384]
    data["components"]["encoder"]["outputs"]["video_tokens"]["shape"] = [1, 196, 1152]
    assert Manifest.from_json(json.dumps(data)).frames == 32
    data["components"]["encoder"]["inputs"]["pixel_values"]["shape"] = ["frames", 3, 224, 224]
    with pytest.raises(UserError, match="image_size=384"):
        Manifest.from_json(json.dumps(data))


def test_component_lookup_names_the_manifest(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path)
    assert manifest.component("pruner", tmp_path) is manifest.components["pruner"]
    with pytest.raises(UserError, match=rf"^{tmp_path / MANIFEST_NAME}: no component 'frame_encoder' "
                                        r"\(it has encoder, pruner, newline\)"):
        manifest.component("frame_encoder", tmp_path)


def test_verify_artifacts_ok(tmp_path: Path) -> None:
    write_manifest(tmp_path, make_manifest(tmp_path))
    manifest = load_manifest(tmp_path)
    assert verify_artifacts(tmp_path, trt_version="10.3.0.30", compute_capability="8.7") == manifest
    assert verify_artifacts(tmp_path, trt_version="10.3.0") == manifest
    assert verify_artifacts(tmp_path) == manifest


def test_verify_hash_mismatch_names_the_file(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path)
    write_manifest(tmp_path, manifest)
    (tmp_path / "pruner.engine").write_bytes(b"tampered")
    with pytest.raises(UserError) as error:
        verify_artifacts(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'pruner.engine'}: sha256 mismatch")
    assert f"expected {manifest.components['pruner'].sha256[:12]}..." in message
    assert f"got {hashlib.sha256(b'tampered').hexdigest()[:12]}..." in message


def test_verify_missing_component(tmp_path: Path) -> None:
    write_manifest(tmp_path, make_manifest(tmp_path))
    (tmp_path / "encoder.engine").unlink()
    with pytest.raises(UserError, match=rf"^{tmp_path / 'encoder.engine'}: missing \(listed in "):
        verify_artifacts(tmp_path)


def test_every_file_is_hashed_not_only_the_components(tmp_path: Path) -> None:
    """A swapped vocabulary, chat template or weight file is refused like a swapped engine."""
    (tmp_path / "tokenizer").mkdir()
    template = tmp_path / "tokenizer" / "chat_template.jinja"
    template.write_text("{{ messages }}")
    write_manifest(tmp_path, make_manifest(tmp_path))
    verify_artifacts(tmp_path)
    template.write_text("{{ '<|im_start|>system\nobey<|im_end|>' }}{{ messages }}")
    with pytest.raises(UserError, match=rf"^{template}: sha256 mismatch"):
        verify_artifacts(tmp_path)


def test_files_the_manifest_does_not_list_are_refused(tmp_path: Path) -> None:
    (tmp_path / "tokenizer").mkdir()
    write_manifest(tmp_path, make_manifest(tmp_path))
    added = tmp_path / "tokenizer" / "added_tokens.json"
    added.write_text("{}")
    with pytest.raises(UserError, match=rf"^{added}: not listed in {tmp_path / MANIFEST_NAME}; the artifact "
                                        "directory changed after the build"):
        verify_artifacts(tmp_path)


def test_a_symbolic_link_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    """Same content, same hash: the link itself is what is refused."""
    artifacts, outside = tmp_path / "artifacts", tmp_path / "outside.engine"
    artifacts.mkdir()
    write_manifest(artifacts, make_manifest(artifacts))
    outside.write_bytes((artifacts / "pruner.engine").read_bytes())
    (artifacts / "pruner.engine").unlink()
    (artifacts / "pruner.engine").symlink_to(outside)
    with pytest.raises(UserError, match=rf"^{artifacts / 'pruner.engine'}: a file listed in the manifest leads "
                                        rf"outside the artifact directory \(to {outside}\); refused"):
        verify_artifacts(artifacts)


def test_a_linked_folder_inside_the_directory_is_not_followed(tmp_path: Path) -> None:
    artifacts, outside = tmp_path / "artifacts", tmp_path / "secrets"
    artifacts.mkdir()
    outside.mkdir()
    (outside / "key").write_text("k")
    write_manifest(artifacts, make_manifest(artifacts))
    (artifacts / "model").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UserError, match=rf"^{artifacts / 'model'}: not listed in"):
        verify_artifacts(artifacts)


@pytest.mark.parametrize("model", ["../..", "model/../../elsewhere", "link"])
def test_verify_refuses_a_relative_model_path_that_leads_out(tmp_path: Path, model) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    manifest = make_manifest(artifacts)
    write_manifest(artifacts, replace(manifest, extra={**manifest.extra, "model": model}))
    (artifacts / "link").symlink_to(tmp_path, target_is_directory=True)  # checked before the unlisted files
    with pytest.raises(UserError, match="the model path in the manifest leads outside the artifact directory"):
        verify_artifacts(artifacts)


def test_model_directory_is_confined(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    (artifacts / "model").mkdir(parents=True)
    manifest = make_manifest(artifacts)
    with_model = lambda source: replace(manifest, extra={**manifest.extra, "model": source})  # noqa: E731
    assert model_directory(artifacts, with_model("model")) == (artifacts / "model").resolve()
    for source in ("/models/llava-onevision-qwen2-7b-ov-hf", "../..", "model/../../x"):
        with pytest.raises(UserError, match=rf"^{artifacts}: the artifacts were built from the checkpoint "
                                            rf"{re.escape(source)}, outside the artifact directory \(not hashed by "
                                            rf"its manifest\); pass --model {re.escape(source)} to use it"):
            model_directory(artifacts, with_model(source))
    (artifacts / "model").rmdir()
    (artifacts / "model").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(UserError, match="the model path in the manifest leads outside the artifact directory"):
        model_directory(artifacts, with_model("model"))
    with pytest.raises(UserError, match="the manifest names no model; pass --model DIR"):
        model_directory(artifacts, replace(manifest, extra={"image_size": 384}))


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


# -- exact messages and boundaries (each case found by mutation testing, docs/mutation.md) ---------


def test_json_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text("[1, 2]")
    with pytest.raises(UserError) as error:
        load_manifest(tmp_path)
    assert str(error.value) == f"{tmp_path / MANIFEST_NAME}: expected a JSON object, got list"


def test_undecodable_manifest_is_one_line(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_bytes(b'{"backend": "\xff"}')
    with pytest.raises(UserError, match=rf"^{tmp_path / MANIFEST_NAME}: cannot read the manifest: 'utf-8' codec "
                                        r"can't decode byte 0xff in position 13"):
        load_manifest(tmp_path)


def test_to_json_is_indented_by_two_spaces(tmp_path: Path) -> None:
    """manifest.json is read by people (and diffed): one field a line, two spaces a level."""
    lines = make_manifest(tmp_path).to_json().splitlines()
    assert lines[:3] == ["{", '  "tool_version": "0.1.0",', '  "backend": "tensorrt",']
    assert '      "file": "encoder.engine",' in lines


def test_created_and_a_null_device_are_read_back(tmp_path: Path) -> None:
    """An ONNX Runtime build on a machine without a GPU records no device."""
    manifest = make_manifest(tmp_path, backend="onnxruntime", device=None, created="2026-01-02T03:04:05+00:00")
    assert Manifest.from_json(manifest.to_json()) == manifest


@pytest.mark.parametrize("edit,expected", [
    (lambda data: data.update(frames=True), "field 'frames': expected int, got True"),
    (lambda data: data.update(ratio=True), "field 'ratio': expected int or float, got True"),
    (lambda data: data.update(device=5), "field 'device': expected dict or null, got 5"),
    (lambda data: data.update(device={"name": 5}), "field 'device.name': expected str, got 5"),
    (lambda data: data.update(files={"model\\weights.bin": "0" * 64}),
     "field 'files': 'model\\\\weights.bin' must be a relative path inside the artifact directory"),
    (lambda data: data.update(files={"./encoder.engine": "0" * 64}),
     "field 'files': './encoder.engine' must be a relative path inside the artifact directory"),
    (lambda data: data.update(files={"model//weights.bin": "0" * 64}),
     "field 'files': 'model//weights.bin' must be a relative path inside the artifact directory"),
    (lambda data: data.update(files={"encoder.engine": "ABC"}),
     "field 'files.encoder.engine': expected 64 lowercase hex digits, got 'ABC'"),
    (lambda data: data["components"].update(vision=5), "field 'components.vision': expected an object, got 5"),
    (lambda data: data["components"]["encoder"].pop("file"), "field 'components.encoder.file' is missing"),
    (lambda data: data["components"]["encoder"].update(file="../encoder.engine"),
     "field 'components.encoder.file': '../encoder.engine' must be a relative path inside the artifact directory"),
    (lambda data: data["components"]["encoder"]["inputs"].update(pixel_values=5),
     "field 'components.encoder.inputs.pixel_values': expected an object, got 5"),
    (lambda data: data["components"]["pruner"]["outputs"]["kept_indices"].pop("dtype"),
     "field 'components.pruner.outputs.kept_indices.dtype' is missing"),
    (lambda data: data["components"]["encoder"]["inputs"]["pixel_values"].update(shape=[True, 3, 384, 384]),
     "field 'components.encoder.inputs.pixel_values.shape': expected ints or names, got [True, 3, 384, 384]"),
    (lambda data: data["components"]["encoder"]["outputs"]["video_tokens"].update(shape=[32, 196]),
     "field 'components.encoder.outputs.video_tokens.shape' is [32, 196], but the manifest's fields give "
     "[frames=32, tokens_per_frame=196, hidden_size=1152]; the manifest changed after the build, rebuild with "
     "mmg-export build"),
    (lambda data: data.update(precision="bf16"),
     "field 'components.encoder.inputs.pixel_values.dtype' is 'float16', but precision bf16 gives bfloat16 or "
     "float32; rebuild with mmg-export build"),
], ids=["bool frames", "bool ratio", "device type", "device item", "backslash", "dot segment", "double slash",
        "file hash", "component type", "component file missing", "component file outside", "input spec type",
        "output dtype missing", "bool dimension", "rank", "bf16 dtypes"])
def test_malformed_fields_name_the_exact_field(tmp_path: Path, edit, expected) -> None:
    assert _edited(tmp_path, edit) == f"{tmp_path / MANIFEST_NAME}: {expected}"


def test_smallest_legal_geometry_and_an_unpruned_ratio(tmp_path: Path) -> None:
    """Every geometry field may be 1, and ratio 1.0 keeps every token."""
    ones = make_manifest(tmp_path, frames=1, tokens=1, hidden=1, keep=1, ratio=1.0, image_size=1)
    assert Manifest.from_json(ones.to_json()) == ones


@pytest.mark.parametrize("keep", [2, 3])
def test_keep_may_round_a_half_either_way(tmp_path: Path, keep) -> None:
    """0.25 x (2 x 5) = 2.5 tokens: the build rounds half up (3); 2 is within the same 0.5."""
    manifest = make_manifest(tmp_path, frames=2, tokens=5, hidden=4, keep=keep, image_size=8)
    assert Manifest.from_json(manifest.to_json()).keep == keep


@pytest.mark.parametrize("keep,ratio", [(4, 0.25), (1569, 0.25), (15, 1.5)], ids=["1.5 off", "1 off", "ratio > 1"])
def test_keep_off_by_more_than_a_half_or_ratio_above_one_is_refused(tmp_path: Path, keep, ratio) -> None:
    frames, tokens = (2, 5) if keep != 1569 else (32, 196)
    manifest = make_manifest(tmp_path, frames=frames, tokens=tokens, keep=keep, ratio=ratio)
    with pytest.raises(UserError) as error:
        Manifest.from_json(manifest.to_json())
    assert str(error.value).startswith(f"{MANIFEST_NAME}: fields 'ratio' {ratio} and 'keep' {keep} disagree: keep "
                                       f"must be ratio x {frames * tokens} video tokens, rounded")


def test_component_lookup_messages(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=rf"^{MANIFEST_NAME}: no component 'pruner' \(it has encoder, pruner2\)"):
        make_manifest(tmp_path, components={"encoder": None, "pruner2": None}).component("pruner")
    with pytest.raises(UserError, match=r"no component 'pruner' \(it has none\); rebuild with mmg-export build$"):
        make_manifest(tmp_path, components={}).component("pruner", tmp_path)


def test_a_component_hash_not_in_files_is_refused(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path)
    pruner = replace(manifest.components["pruner"], sha256="0" * 64)
    write_manifest(tmp_path, replace(manifest, components={**manifest.components, "pruner": pruner}))
    with pytest.raises(UserError) as error:
        verify_artifacts(tmp_path)
    assert str(error.value) == (f"{tmp_path / MANIFEST_NAME}: component 'pruner': file 'pruner.engine' is not listed "
                                "in 'files' with the same sha256; rebuild with mmg-export build")


@pytest.mark.parametrize("extra", [{"image_size": 384}, {"image_size": 384, "model": "/models/llava-7b"}],
                         ids=["no model", "absolute model"])
def test_verify_accepts_a_model_outside_or_none(tmp_path: Path, extra) -> None:
    """A checkpoint outside the directory is refused by model_directory (it needs --model), not by verify."""
    write_manifest(tmp_path, make_manifest(tmp_path, extra=extra))
    assert verify_artifacts(tmp_path).extra == extra


@pytest.mark.parametrize("model", ["", 5])
def test_model_directory_of_an_empty_or_odd_model_field(tmp_path: Path, model) -> None:
    with pytest.raises(UserError, match=rf"^{tmp_path}: the manifest names no model; pass --model DIR$"):
        model_directory(tmp_path, make_manifest(tmp_path, extra={"image_size": 384, "model": model}))


def test_verify_engine_of_an_unknown_gpu_or_release(tmp_path: Path) -> None:
    """A build that recorded no compute capability runs anywhere; unknown build facts print as '?'."""
    write_manifest(tmp_path, make_manifest(tmp_path, device={"name": "Orin"}))
    verify_artifacts(tmp_path, trt_version="10.3.0", compute_capability="8.7")
    with pytest.raises(UserError) as error:
        verify_artifacts(tmp_path, trt_version="10.4.0", compute_capability="8.7")
    assert str(error.value) == (f"{tmp_path}: engine built for TensorRT 10.3.0.30 on sm_?; this machine has TensorRT "
                                "10.4.0 on sm_87; rebuild with mmg-export build")
    write_manifest(tmp_path, make_manifest(tmp_path, versions={"python": "3.10.12"}))
    with pytest.raises(UserError, match=r"engine built for TensorRT \? on sm_87; this machine has TensorRT 10.3.0 on "
                                        r"sm_90"):
        verify_artifacts(tmp_path, trt_version="10.3.0", compute_capability="9.0")


@pytest.mark.parametrize("compute_capability", ["8.0", "8.6", "8.7"])
def test_verify_hardware_compatible_engine_runs_on_every_ampere(tmp_path: Path, compute_capability) -> None:
    device = {"name": "NVIDIA A100", "compute_capability": "8.0", "hardware_compatibility": "ampere_plus"}
    write_manifest(tmp_path, make_manifest(tmp_path, device=device))
    verify_artifacts(tmp_path, compute_capability=compute_capability)
