"""``mmg-export build`` end to end on the tiny model with ONNX Runtime (CPU), and its failures."""
import json
import os

import numpy as np
import onnxruntime as ort
import pytest
import torch

from mmg_export import PruningGraph
from mmg_export.cli import main
from mmg_export.lint import supported_versions
from mmg_export.lint.rules import lint_model
from mmg_export.models.encoder import VideoEncoder
from mmg_export.models.llava import tiny_llava
from mmg_runtime.manifest import load_manifest, sha256_file
from mmg_runtime.trust import verify_artifacts


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_manifest_describes_the_artifacts(artifacts):
    manifest = verify_artifacts(artifacts)
    assert (manifest.backend, manifest.target, manifest.precision) == ("onnxruntime", "cpu", "fp32")
    assert (manifest.frames, manifest.tokens_per_frame, manifest.hidden_size) == (32, 196, 64)
    assert manifest.ratio == 0.25 and manifest.keep == 1568
    assert set(manifest.components) == {"preprocess", "encoder", "pruner"}
    for component in manifest.components.values():
        assert component.sha256 == sha256_file(artifacts / component.file)
    assert manifest.components["pruner"].outputs["video_embeds"].shape == (1569, 64)
    assert manifest.components["pruner"].outputs["finite"].shape == (1,)
    assert manifest.components["encoder"].inputs["pixel_values"].shape == ("frames", 3, 384, 384)
    assert manifest.components["preprocess"].inputs["frames"].shape == ("frames", "height", "width", 3)
    for library in ("torch", "transformers", "onnx", "onnxruntime", "python"):
        assert library in manifest.versions
    assert manifest.extra["providers"] == [["CPUExecutionProvider", {}]]
    assert not [p for p in artifacts.parent.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("frames", [32, 5, 1])
def test_encoder_matches_transformers_within_1e5(artifacts, frames):
    """The one encoder graph takes 1 to 32 frames (whole clips, chunks, live frames)."""
    model = tiny_llava().model
    pixels = torch.randn(frames, 3, 384, 384, generator=torch.Generator().manual_seed(frames))
    with torch.no_grad():
        expected = model.model.get_video_features(pixels[None]).pooler_output[0]
    tokens = session(artifacts / "encoder.onnx").run(None, {"pixel_values": pixels.numpy()})[0]
    expected_tokens = expected[:-1].reshape(frames, 196, 64).numpy()
    relative = np.abs(tokens - expected_tokens).max() / np.abs(expected_tokens).max()
    assert relative < 1e-5


def test_encoder_attention_is_fused_for_onnx_runtime_and_plain_for_tensorrt(artifacts, tmp_path):
    import onnx

    from mmg_export.builder.export import export_encoder

    ops = {n.op_type for n in onnx.load(artifacts / "encoder.onnx").graph.node}
    assert {"Attention", "Gelu"} <= ops and "Softmax" not in ops
    plain = onnx.load(export_encoder(VideoEncoder(tiny_llava().model), 32, "fp32", tmp_path / "e.onnx", "tensorrt"))
    assert "Attention" not in {n.op_type for n in plain.graph.node}
    for version in supported_versions():
        assert lint_model(plain, version).ok


@pytest.mark.slow
def test_fp16_encoder_error_is_bounded(tmp_path):
    """The fp16 export against the fp32 torch encoder: measured max relative error ~1e-3 (bound 1e-2)."""
    from mmg_export.builder.export import export_encoder

    fp32, half = VideoEncoder(tiny_llava().model), VideoEncoder(tiny_llava(torch.float16).model)
    pixels = torch.randn(2, 3, 384, 384, generator=torch.Generator().manual_seed(1))
    path = export_encoder(half, 2, "fp16", tmp_path / "encoder16.onnx", "tensorrt")
    tokens = session(path).run(None, {"pixel_values": pixels.half().numpy()})[0]
    assert tokens.dtype == np.float16
    with torch.no_grad():
        expected = fp32(pixels).numpy()
    assert np.abs(tokens.astype(np.float32) - expected).max() / np.abs(expected).max() < 1e-2


def test_pruner_onnx_selects_the_torch_graph_tokens(artifacts):
    pruner = session(artifacts / "pruner.onnx")
    graph = PruningGraph(32, 196, 64, 0.25)
    newline = tiny_llava().model.model.image_newline.detach().numpy()
    for seed in range(3):
        tokens = torch.randn(32, 196, 64, generator=torch.Generator().manual_seed(seed))
        embeds, indices, finite = pruner.run(None, {"video_tokens": tokens.numpy()})
        with torch.no_grad():
            expected_kept, expected_indices = graph(tokens)
        assert indices.tolist() == expected_indices.tolist() and bool(finite)
        np.testing.assert_array_equal(embeds[:-1], expected_kept.numpy())
        np.testing.assert_array_equal(embeds[-1], newline)


def test_pruner_onnx_matches_on_real_clip_features(tmp_path, clip_features):
    from mmg_export.builder.export import export_pruner

    path = export_pruner(32, 196, 1280, 0.15, "fp32", tmp_path / "pruner.onnx")
    _, indices, _ = session(path).run(None, {"video_tokens": clip_features.numpy()})
    with torch.no_grad():
        _, expected = PruningGraph(32, 196, 1280, 0.15)(clip_features)
    assert indices.tolist() == expected.tolist()


@pytest.mark.slow
def test_rounds_option_builds_that_pruner_and_records_it(tmp_path):
    """--rounds 3: the manifest says so and pruner.onnx selects what PruningGraph(rounds=3) selects,
    which differs from the default's selection on this input."""
    from mmg_export.prune import MMGConfig

    out = tmp_path / "r3"
    assert main(["build", "--target", "cpu", "--frames", "8", "--rounds", "3", "--out", str(out)]) == 0
    manifest = verify_artifacts(out)
    assert manifest.extra["pruning"]["rounds"] == 3
    tokens = torch.randn(8, 196, 64, generator=torch.Generator().manual_seed(3))
    _, indices, _ = session(out / "pruner.onnx").run(None, {"video_tokens": tokens.numpy()})
    with torch.no_grad():
        _, three_rounds = PruningGraph(8, 196, 64, 0.25, MMGConfig(rounds=3))(tokens)
        _, default = PruningGraph(8, 196, 64, 0.25)(tokens)
    assert indices.tolist() == three_rounds.tolist() != default.tolist()


@pytest.mark.slow
def test_reach_option_builds_that_pruner_and_records_it(tmp_path):
    """--reach 3: chain_steps 3 and 2 x 3 = 6 pick groups in the manifest, and pruner.onnx
    selects what PruningGraph with that config selects, which differs from the default's here."""
    from mmg_export.builder.cli import MAX_STRIDE
    from mmg_export.prune import MMGConfig

    out = tmp_path / "reach3"
    assert main(["build", "--target", "cpu", "--frames", "8", "--reach", "3", "--out", str(out)]) == 0
    pruning = verify_artifacts(out).extra["pruning"]
    assert (pruning["chain_steps"], pruning["stride"], pruning["rounds"]) == (3, 6, 2)
    tokens = torch.randn(8, 196, 64, generator=torch.Generator().manual_seed(3))
    _, indices, _ = session(out / "pruner.onnx").run(None, {"video_tokens": tokens.numpy()})
    with torch.no_grad():
        _, reach3 = PruningGraph(8, 196, 64, 0.25, MMGConfig(chain_steps=3, stride=6))(tokens)
        _, default = PruningGraph(8, 196, 64, 0.25)(tokens)
    assert indices.tolist() == reach3.tolist() != default.tolist()
    MMGConfig(stride=MAX_STRIDE)
    with pytest.raises(ValueError, match="stride"):
        MMGConfig(stride=MAX_STRIDE + 1)


def test_pruner_settings_other_than_the_defaults_name_the_build():
    from mmg_export.builder.cli import MAX_SUBSTEPS, pruning_suffix
    from mmg_export.prune import MMGConfig

    MMGConfig(substeps=MAX_SUBSTEPS)  # the CLI's bound is the config's
    with pytest.raises(ValueError, match="substeps"):
        MMGConfig(substeps=MAX_SUBSTEPS + 1)

    assert pruning_suffix(MMGConfig()) == ""
    assert pruning_suffix(MMGConfig(merge=True)) == "-merge"
    assert pruning_suffix(MMGConfig(rounds=3, chain_steps=3, stride=6)) == "-rounds3-reach3"
    assert pruning_suffix(MMGConfig(substeps=1)) == "-substeps1"
    assert pruning_suffix(MMGConfig(chain_steps=1, stride=2)) == "-reach1"


@pytest.mark.slow
def test_a_build_without_out_names_its_pruner_settings(tmp_path, monkeypatch):
    """Without --out, --reach 3 lands beside the default's directory, not on it."""
    monkeypatch.chdir(tmp_path)
    assert main(["build", "--target", "cpu", "--frames", "8", "--reach", "3"]) == 0
    assert [p.name for p in (tmp_path / "artifacts").iterdir()] == ["tiny-cpu-ort-fp32-8f-r0.25-reach3"]


def test_the_pruner_passes_the_lint(artifacts):
    """The pruner is the same graph for both backends; the TensorRT-flavour encoder and the matmul
    preprocessing are linted in their own tests (the CPU artifacts hold the ONNX Runtime ones)."""
    for version in supported_versions():
        report = lint_model(artifacts / "pruner.onnx", version)
        assert report.ok, report.format_table()


def test_lint_command_on_an_exported_graph(artifacts, capsys):
    assert main(["lint", str(artifacts / "pruner.onnx"), "--trt", "11"]) == 0
    assert "0 errors" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--target", "nope"], "unknown target 'nope': available targets are cpu, datacenter, dgx-spark, h100"),
    (["--target", "cpu", "--backend", "tensorrt"], "--backend tensorrt needs a GPU target"),
])  # out-of-range --ratio, --frames, --rounds, --reach are usage errors (exit 2): tests/export/test_cli.py
def test_bad_build_arguments_fail_with_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["build", "--out", str(out), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_missing_or_malformed_checkpoint(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["build", "--target", "cpu", "--out", str(out), "--model", str(tmp_path / "nothing")]) == 1
    assert "nothing: no config.json there; expected a LLaVA-OneVision checkpoint" in capsys.readouterr().err
    bad = tmp_path / "ckpt"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert main(["build", "--target", "cpu", "--out", str(out), "--model", str(bad)]) == 1
    assert "model_type is 'llama', expected 'llava_onevision'" in capsys.readouterr().err
    (bad / "config.json").write_text("{not json")
    assert main(["build", "--target", "cpu", "--out", str(out), "--model", str(bad)]) == 1
    assert "config.json: not valid JSON" in capsys.readouterr().err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_tensorrt_requested_without_tensorrt(tmp_path, capsys):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    assert main(["build", "--target", "h100", "--backend", "tensorrt", "--out", str(tmp_path / "o")]) == 1
    assert "TensorRT is not installed: pip install 'mmg-export[tensorrt]'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_failed_build_leaves_nothing(tmp_path, monkeypatch, capsys):
    """A failure in a late stage (here: the lint) removes the half-built directory."""
    from mmg_export.builder import pipeline
    from mmg_runtime.errors import UserError

    def failing_lint(paths):
        assert (paths[0].parent / "encoder.onnx").is_file()  # the earlier stages did write
        raise UserError("pruner.onnx fails the TensorRT 10.3 compatibility lint")

    monkeypatch.setattr(pipeline, "_lint", failing_lint)
    assert main(["build", "--target", "cpu", "--out", str(tmp_path / "out")]) == 1
    assert "fails the TensorRT 10.3 compatibility lint" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(artifacts, capsys):
    assert main(["build", "--target", "cpu", "--out", str(artifacts)]) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert load_manifest(artifacts).keep == 1568


def test_tampered_artifacts_are_refused(artifacts, tmp_path):
    import shutil

    from mmg_runtime.errors import UserError

    copy = tmp_path / "copy"
    shutil.copytree(artifacts, copy)
    with open(copy / "pruner.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(UserError, match=r"pruner.onnx: sha256 mismatch"):
        verify_artifacts(copy)
    os.remove(copy / "encoder.onnx")
    with pytest.raises(UserError, match=r"encoder.onnx: missing"):
        verify_artifacts(copy)


def test_gpu_provider_settings_keep_fp32_exact():
    from mmg_export.builder.onnxruntime import provider_settings
    from mmg_export.builder.targets import load_target

    providers = provider_settings(load_target("h100"))
    assert providers == [["CUDAExecutionProvider", {"use_tf32": "0"}], ["CPUExecutionProvider", {}]]
    assert provider_settings(load_target("cpu")) == [["CPUExecutionProvider", {}]]


@pytest.mark.slow
def test_bf16_graphs_are_bf16_end_to_end(tmp_path):
    """bf16 in and out (the runtime keeps them on the device); the products run in bf16."""
    import onnx

    from mmg_export.builder.export import export_pruner

    model = onnx.load(export_pruner(4, 196, 64, 0.25, "bf16", tmp_path / "pruner.onnx"))
    float32, bfloat16, int64 = onnx.TensorProto.FLOAT, onnx.TensorProto.BFLOAT16, onnx.TensorProto.INT64
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [bfloat16]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [bfloat16, int64, onnx.TensorProto.BOOL]
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    matmul_inputs = [types.get(n.input[0]) for n in inferred.graph.node if n.op_type == "MatMul"]
    # the three token products (within a frame, against the previous frame, at the same place) in
    # bf16; the budget's segment sums (exact small integers) in float32
    assert sorted(matmul_inputs) == sorted([bfloat16, bfloat16, bfloat16, float32])
    for version in supported_versions():
        assert lint_model(model, version).ok


@pytest.mark.slow
def test_patch_matmul_equals_the_conv_and_export_restores_it(tmp_path):
    from mmg_export.builder.export import export_encoder
    from mmg_export.models.encoder import PatchMatMul

    conv = torch.nn.Conv2d(3, 8, kernel_size=14, stride=14)
    pixels = torch.randn(2, 3, 384, 384)
    with torch.no_grad():
        torch.testing.assert_close(PatchMatMul(conv)(pixels), conv(pixels), rtol=1e-5, atol=1e-5)
    encoder = VideoEncoder(tiny_llava().model)
    export_encoder(encoder, 1, "fp32", tmp_path / "encoder.onnx", "onnxruntime")
    convs = [m for n, m in encoder.vision_tower.named_modules() if n.endswith("patch_embedding")]
    assert convs and all(isinstance(m, torch.nn.Conv2d) for m in convs)
    attentions = [m for n, m in encoder.vision_tower.named_modules() if n.endswith("self_attn")]
    assert attentions and all(type(m).__name__ == "SiglipAttention" for m in attentions)


def test_fused_attention_computes_what_siglip_attention_does():
    from mmg_export.models.encoder import FusedAttention

    encoder = VideoEncoder(tiny_llava().model)
    attention = encoder.vision_tower.encoder.layers[0].self_attn
    hidden = torch.randn(3, 729, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, _ = attention(hidden, None)
        fused, _ = FusedAttention(attention)(hidden, None)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_bf16_build_for_a_gpu_on_a_cpu_machine(tmp_path):
    """A GPU target builds on a CPU machine (graph rewriting only); each weight is stored once."""
    out = tmp_path / "h100"
    assert main(["build", "--target", "h100", "--backend", "onnxruntime", "--out", str(out)]) == 0
    manifest = verify_artifacts(out)
    assert manifest.precision == "bf16"
    assert manifest.components["pruner"].inputs["video_tokens"].dtype == "bfloat16"
    assert set(manifest.components["preprocess"].inputs) == {"frames", "resize_rows", "resize_cols"}
    onnx_files = sorted(p.name for p in out.iterdir() if p.suffix == ".onnx")
    assert onnx_files == ["encoder.onnx", "preprocess.onnx", "pruner.onnx"]


def test_engine_io_must_match_the_manifest():
    """The TensorRT path cannot run here; its I/O check is pure logic and is tested as such."""
    from mmg_export.builder.pipeline import check_engine_io
    from mmg_export.builder.tensorrt import IOTensor
    from mmg_runtime.errors import UserError
    from mmg_runtime.manifest import TensorSpec

    expected = ({"video_tokens": TensorSpec((32, 196, 64), "float32")},
                {"kept_tokens": TensorSpec((1568, 64), "float32"), "kept_indices": TensorSpec((1568,), "int64")})
    built = [IOTensor("video_tokens", (32, 196, 64), "float32", "input"),
             IOTensor("kept_tokens", (1568, 64), "float32", "output"),
             IOTensor("kept_indices", (1568,), "int64", "output")]
    check_engine_io("pruner.engine", built, expected)
    built[2] = IOTensor("kept_indices", (1568,), "int32", "output")
    with pytest.raises(UserError, match=r"pruner.engine: TensorRT built I/O .*'int32'.*expected"):
        check_engine_io("pruner.engine", built, expected)
