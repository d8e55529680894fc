"""``mmg-export build --pruner-backend aotinductor``: the pruner compiled by TorchInductor
(``pruner.pt2``) on the CPU here, run by the pipeline, selecting exactly the reference's tokens.

The GPU package (Triton kernels, one CUDA graph) is measured in BENCHMARKS.md; this machine has
no GPU, so these tests compile and run the CPU package through the same code.
"""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmg_export import select_tokens
from mmg_export.cli import main
from mmg_runtime.aotinductor import check_compatible, open_package
from mmg_runtime.errors import UserError
from mmg_runtime.pipeline import Pipeline
from mmg_runtime.trust import verify_artifacts


@pytest.fixture(scope="module")
def aoti_artifacts(tmp_path_factory):
    out = tmp_path_factory.mktemp("aoti") / "artifacts"
    assert main(["build", "--target", "cpu", "--pruner-backend", "aotinductor", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_the_manifest_names_the_package_and_no_onnx_pruner_ships(aoti_artifacts):
    manifest = verify_artifacts(aoti_artifacts)
    assert manifest.components["pruner"].file == "pruner.pt2"
    assert manifest.extra["pruner_backend"] == "aotinductor"
    assert manifest.backend == "onnxruntime" and manifest.device is None  # compiled for the CPU
    assert manifest.versions["torch"] == torch.__version__  # with its local build (+cpu, +cu130), as checked at load
    assert manifest.components["pruner"].outputs["video_embeds"].shape == (1569, 64)
    assert not (aoti_artifacts / "pruner.onnx").exists()
    assert sorted(p.name for p in aoti_artifacts.iterdir()) == [
        "encoder.onnx", "manifest.json", "model", "preprocess.onnx", "pruner.pt2", "tokenizer"]


@pytest.mark.slow
def test_the_package_selects_exactly_the_reference(aoti_artifacts):
    package = open_package(aoti_artifacts / "pruner.pt2", verify_artifacts(aoti_artifacts))
    assert package.providers == [f"AOTInductor (torch {torch.__version__}, cpu)"]
    for seed in range(3):
        video = np.random.default_rng(seed).standard_normal((32, 196, 64)).astype(np.float32)
        out = package.run({"video_tokens": video})
        expected = select_tokens(torch.from_numpy(video), 0.25)
        np.testing.assert_array_equal(out["kept_indices"], expected.indices.numpy())
        np.testing.assert_array_equal(out["video_embeds"][:-1], expected.features.numpy())
        assert out["finite"].tolist() == [True]
    video[3, 5, 7] = np.nan
    assert package.run({"video_tokens": video})["finite"].tolist() == [False]


@pytest.mark.slow
def test_the_pipeline_runs_the_package_on_a_real_clip(aoti_artifacts, bikes):
    with Pipeline.from_artifacts(aoti_artifacts, decoder="pyav") as pipeline:
        answer = pipeline.ask(bikes, "What happens in this video?", max_new_tokens=3)
        expected = select_tokens(torch.from_numpy(pipeline.tokens.numpy()), 0.25).indices.numpy()
        assert pipeline.providers["pruner"] == [f"AOTInductor (torch {torch.__version__}, cpu)"]
    np.testing.assert_array_equal(answer.kept_indices, expected)
    assert len(answer.token_ids) == 3 and answer.timings.tokens_kept == 1568


@pytest.mark.slow
def test_another_torch_release_or_device_is_refused_in_one_line(aoti_artifacts):
    manifest = verify_artifacts(aoti_artifacts)
    path = aoti_artifacts / "pruner.pt2"
    check_compatible(path, manifest, torch.__version__, None)
    older = dataclasses.replace(manifest, versions={**manifest.versions, "torch": "2.9.1"})
    with pytest.raises(UserError) as error:
        check_compatible(path, older, "2.11.0+cu130", None)
    assert str(error.value) == (f"{path}: AOTInductor package compiled with torch 2.9.1 for the CPU; this machine has "
                                "torch 2.11.0+cu130 on the CPU; rebuild with mmg-export build here, or with "
                                "--pruner-backend onnx for a pruner that runs anywhere")
    check_compatible(path, dataclasses.replace(manifest, versions={**manifest.versions, "torch": "2.13.0"}),
                     "2.13.5+cu130", None)  # no local build recorded (metadata without it): major.minor only
    with pytest.raises(UserError, match=r"compiled with torch 2.13.0\+cpu for the CPU; this machine has torch "
                                        r"2.13.0\+cu130"):
        check_compatible(path, dataclasses.replace(manifest, versions={**manifest.versions, "torch": "2.13.0+cpu"}),
                         "2.13.0+cu130", None)
    on_gpu = dataclasses.replace(manifest, device={"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})
    with pytest.raises(UserError, match=r"for sm_90; this machine has torch .* on sm_87; rebuild"):
        check_compatible(path, on_gpu, torch.__version__, "8.7")


@pytest.mark.slow
def test_the_package_output_order_and_shapes_are_checked(aoti_artifacts):
    manifest = verify_artifacts(aoti_artifacts)
    pruner = manifest.components["pruner"]
    renamed = {("embeds" if name == "video_embeds" else name): spec for name, spec in pruner.outputs.items()}
    edited = dataclasses.replace(manifest, components={**manifest.components,
                                                       "pruner": dataclasses.replace(pruner, outputs=renamed)})
    with pytest.raises(UserError, match=r"pruner outputs are \['embeds', 'finite', 'kept_indices'\], an AOTInductor "
                                        r"pruner returns video_embeds, kept_indices, finite; rebuild"):
        open_package(aoti_artifacts / "pruner.pt2", edited)
    other_k = open_package(aoti_artifacts / "pruner.pt2", manifest, keep=627)  # as if compiled at ratio 0.1
    with pytest.raises(UserError, match=r"output 'video_embeds' is torch.float32 \(1569, 64\), the bound buffer "
                                        r"torch.float32 \(628, 64\); rebuild"):
        other_k.run({"video_tokens": np.zeros((32, 196, 64), np.float32)})


@pytest.mark.slow
def test_the_runtime_module_imports_without_torch(aoti_artifacts):
    code = ("import sys; sys.modules['torch'] = None\nfrom pathlib import Path\n"
            "from mmg_runtime.aotinductor import open_package\nfrom mmg_runtime.trust import verify_artifacts\n"
            f"path = Path({str(aoti_artifacts)!r})\nopen_package(path / 'pruner.pt2', verify_artifacts(path))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"mmg_runtime.errors.UserError: {aoti_artifacts / 'pruner.pt2'}: an AOTInductor package needs torch on this "
        "machine (pip install torch, the release the artifacts were built with); or rebuild with "
        "--pruner-backend onnx")


@pytest.mark.slow
def test_an_edited_package_is_refused_before_loading(aoti_artifacts, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(aoti_artifacts, copy)
    with open(copy / "pruner.pt2", "ab") as package:
        package.write(b"\0")
    with pytest.raises(UserError, match=r"pruner.pt2: sha256 mismatch"):
        Pipeline.from_artifacts(copy, warm_up=False)


@pytest.mark.parametrize("backend, target, capability, compiles", [
    ("onnxruntime", "h100", "9.0", True),           # ONNX Runtime artifacts for this machine's own H100
    ("onnxruntime", "h100", None, False),           # no GPU here (the ONNX graph is portable)
    ("onnxruntime", "h100", "8.0", False),          # another GPU than the target's
    ("tensorrt", "h100", "9.0", False),             # TensorRT builds the pruner's engine itself
    ("onnxruntime", "datacenter", "8.0", False),    # portable target (an A100 detects as it): one GPU model only
    ("onnxruntime", "h100-portable", "9.0", False),  # --hardware-compatible
    ("onnxruntime", "orin-nano", "8.7", False),     # Jetson: may carry no torch
    ("onnxruntime", "cpu", "0.0", False),           # no gain on the CPU
])
def test_which_builds_ship_the_compiled_pruner_by_default(backend, target, capability, compiles):
    from mmg_export.builder.aotinductor import compiles_for_this_gpu
    from mmg_export.builder.targets import hardware_compatible, load_target

    profile = hardware_compatible(load_target("h100")) if target == "h100-portable" else load_target(target)
    assert profile.compute_capability == capability or target == "h100"
    assert compiles_for_this_gpu(backend, profile, capability) is compiles


@pytest.mark.parametrize("gpu, missing, expected, note", [
    ({"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}, "", "aotinductor",
     "pruner: compiled by TorchInductor for this GPU (pruner.pt2, ~3x faster than pruner.onnx on an H100); where it "
     "runs needs torch {release} and this GPU model (--pruner-backend onnx: the portable pruner.onnx)"),
    ({"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}, "Triton (pip install triton)", None,
     "pruner: pruner.onnx, not the ~3x faster compiled pruner.pt2: TorchInductor needs Triton (pip install triton) "
     "here"),
    ({"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}, "", None, ""),
    (None, "", None, ""),  # the driver does not answer
])
def test_the_default_pruner_backend_on_a_gpu_machine(monkeypatch, gpu, missing, expected, note):
    from mmg_export.builder import aotinductor
    from mmg_export.builder.cli import pruner_choice
    from mmg_export.builder.targets import load_target

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(aotinductor, "device_info", lambda: gpu)
    monkeypatch.setattr(aotinductor, "_missing_toolchain", lambda: missing)
    h100 = load_target("h100")
    assert pruner_choice("auto", "onnxruntime", h100) == (
        expected, note.format(release=torch.__version__.split("+")[0]))
    assert pruner_choice("auto", "tensorrt", h100) == (None, "")
    assert pruner_choice("onnx", "onnxruntime", h100) == (None, "")
    assert pruner_choice("onnx", "tensorrt", h100) == (None, "")  # the TensorRT engine, as always
    assert pruner_choice("aotinductor", "onnxruntime", load_target("cpu")) == ("aotinductor", "")


def test_the_toolchain_check_names_what_is_missing(monkeypatch):
    import importlib.util

    from mmg_export.builder import aotinductor

    has_triton = importlib.util.find_spec("triton") is not None
    assert aotinductor._missing_toolchain() == ("" if has_triton else "Triton (pip install triton)")
    with torch._inductor.config.patch({"cpp.cxx": ("no-such-compiler",)}):
        assert aotinductor._missing_toolchain() == "a C++ compiler (g++)"
    monkeypatch.setattr(torch, "__version__", "2.10.1+cu128")
    assert aotinductor._missing_toolchain() == "torch >= 2.11 (this is 2.10.1+cu128)"


@pytest.mark.slow
def test_without_a_gpu_a_gpu_target_ships_the_onnx_pruner_by_default(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the default compiles the pruner for it")
    out = tmp_path / "out"
    assert main(["build", "--target", "h100", "--backend", "onnxruntime", "--frames", "8", "--out", str(out)]) == 0
    manifest = verify_artifacts(out)
    assert manifest.components["pruner"].file == "pruner.onnx" and "pruner_backend" not in manifest.extra
    assert "TorchInductor" not in capsys.readouterr().err


def test_the_compiled_pruner_asks_for_onnx_runtime_even_where_tensorrt_is_installed(monkeypatch, tmp_path, capsys):
    import types

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the package can be compiled for it")
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # the default backend: tensorrt
    out = tmp_path / "out"
    assert main(["build", "--target", "h100", "--pruner-backend", "aotinductor", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("mmg-export build: error: --pruner-backend aotinductor compiles the pruner for the GPU it "
                          "is built on: target h100 needs a CUDA GPU")  # not the TensorRT refusal
    assert list(tmp_path.iterdir()) == []


def test_an_older_torch_is_refused_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch, "__version__", "2.9.1+cpu")
    out = tmp_path / "out"
    assert main(["build", "--target", "cpu", "--pruner-backend", "aotinductor", "--out", str(out)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "mmg-export build: error: --pruner-backend aotinductor needs torch >= 2.11, this machine has 2.9.1+cpu (or "
        "use --pruner-backend onnx)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arguments, message, needs_no_gpu", [
    (["--backend", "tensorrt", "--target", "h100"],
     "--pruner-backend aotinductor goes with --backend onnxruntime", False),
    (["--target", "h100"],
     "compiles the pruner for the GPU it is built on: target h100 needs a CUDA GPU on this machine", True),
])
def test_a_package_that_cannot_be_built_fails_at_once_in_one_line(arguments, message, needs_no_gpu, tmp_path, capsys):
    if needs_no_gpu and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the package can be compiled for it")
    out = tmp_path / "out"
    assert main(["build", "--pruner-backend", "aotinductor", *arguments, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err and "[1/" not in err  # before any stage ran
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_profile_compiles_the_package_at_another_ratio(aoti_artifacts, tmp_path, capsys):
    report = tmp_path / "profile.json"
    assert main(["profile", str(aoti_artifacts), "--ratios", "0.1", "--iterations", "1", "--warm-up", "0",
                 "--json", str(report)]) == 0
    rows = [row for row in json.loads(report.read_text())["measurements"] if row["component"] == "pruner"]
    assert [(row["ratio"], row["keep"]) for row in rows] == [(0.1, 627)]
    assert "AOTInductor" in rows[0]["runs_on"]


@pytest.mark.slow
def test_a_failed_compilation_is_one_line_and_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    broken = {"cpp.cxx": ("no-such-compiler",), "force_disable_caches": True}
    with torch._inductor.config.patch(broken):
        assert main(["build", "--target", "cpu", "--pruner-backend", "aotinductor", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "pruner.pt2: TorchInductor could not compile the pruner for cpu (" in err
    assert err.strip().splitlines()[-1].startswith("mmg-export build: error: pruner.pt2: TorchInductor could not")
    assert list(tmp_path.iterdir()) == []
