"""Checkpoint directories checked before anything is instantiated (mmg_runtime.checkpoint), through
``run --model`` and ``build --model``: each bad checkpoint of issue 12 is one line, exit 1."""
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmg_export.cli import main
from mmg_export.models.llava import tiny_llava
from mmg_runtime.checkpoint import check_checkpoint, read_config
from mmg_runtime.errors import UserError

QUESTION = "What happens in this video?"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """The tiny model written by save_pretrained: a real (small) checkpoint directory."""
    directory = tmp_path_factory.mktemp("checkpoint") / "tiny"
    loaded = tiny_llava()
    loaded.model.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def checkpoint(saved, tmp_path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "ckpt"))


def edit_config(directory: Path, edit) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def fails(capsys, argv: list[str], expected: str) -> str:
    """``main(argv)`` exits 1; its last line (after the build's progress lines) holds ``expected``."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    error = err.strip().splitlines()[-1]
    assert expected in error and error.startswith(f"mmg-export {argv[0]}: error: ") and "Traceback" not in err, err
    return error


def run_args(artifacts, bikes, model) -> list[str]:
    return ["run", "--video", str(bikes), "--prompt", QUESTION, "--artifacts", str(artifacts), "--model", str(model),
            "--max-new-tokens", "2"]


def build_args(tmp_path, model) -> list[str]:
    return ["build", "--target", "cpu", "--out", str(tmp_path / "out"), "--model", str(model)]


def test_the_saved_tiny_model_passes(checkpoint):
    assert check_checkpoint(checkpoint)["text_config"]["hidden_size"] == 64


BAD_CONFIGS = [
    ("malformed", lambda path: path.write_text("{not json"), "config.json: not valid JSON"),
    ("a JSON list", lambda path: path.write_text("[1, 2]"), "config.json: expected a JSON object, got list"),
    ("other architecture", lambda path: edit_config(path.parent, lambda c: c.update(model_type="llama")),
     "config.json: model_type is 'llama', expected 'llava_onevision'"),
    ("no text_config", lambda path: edit_config(path.parent, lambda c: c.pop("text_config")),
     "config.json: 'text_config' is missing; transformers would fill in a default-size model"),
    ("other text model", lambda path: edit_config(path.parent, lambda c: c["text_config"].update(model_type="llama")),
     "config.json: text_config.model_type is 'llama', expected qwen2"),
    ("a size missing", lambda path: edit_config(path.parent, lambda c: c["text_config"].pop("hidden_size")),
     "config.json: text_config.hidden_size is None, expected an integer >= 1"),
    ("heads not dividing the width", lambda path: edit_config(
        path.parent, lambda c: c["text_config"].update(num_attention_heads=5)),
     "text_config.hidden_size must be a multiple of num_attention_heads; the sizes disagree"),
    ("a patch larger than the image", lambda path: edit_config(
        path.parent, lambda c: c["vision_config"].update(patch_size=400)),
     "vision_config.patch_size must not exceed image_size; the sizes disagree"),
    ("another patch size than the weights", lambda path: edit_config(
        path.parent, lambda c: c["vision_config"].update(patch_size=13)),
     "config.json and the weights disagree: config.json describes 1 more tensor(s) of shape [32, 3, 13, 13] (e.g. "
     "model.vision_tower.embeddings.patch_embedding.weight)"),
    ("placeholder outside the vocabulary", lambda path: edit_config(
        path.parent, lambda c: c["text_config"].update(vocab_size=4)),
     "video_token_index must be a token id below text_config.vocab_size (4)"),
    ("config and weights disagree", lambda path: edit_config(
        path.parent, lambda c: c["text_config"].update(hidden_size=96)),
     "ckpt: config.json and the weights disagree: config.json describes 10 more tensor(s) of shape [96]"),
    ("a layer fewer than the weights", lambda path: edit_config(
        path.parent, lambda c: (c["text_config"].update(num_hidden_layers=1), c["text_config"].pop("layer_types"))),
     "config.json and the weights disagree: the weights hold 3 more tensor(s) of shape [64]"),
    ("rejected by transformers", lambda path: edit_config(
        path.parent, lambda c: c["text_config"].update(num_hidden_layers=1)),
     "config.json: transformers rejects it: ValueError: `num_hidden_layers` (1) must be equal to the number of "
     "`layer_types` (2)"),
]


@pytest.mark.parametrize("case,damage,expected", BAD_CONFIGS, ids=[case for case, _, _ in BAD_CONFIGS])
def test_run_model_with_a_bad_config(artifacts, bikes, checkpoint, capsys, case, damage, expected):
    damage(checkpoint / "config.json")
    fails(capsys, run_args(artifacts, bikes, checkpoint), expected)


@pytest.mark.parametrize("case", ["a JSON list", "config and weights disagree", "heads not dividing the width"])
def test_build_model_with_a_bad_config(tmp_path, checkpoint, capsys, case):
    _, damage, expected = next(entry for entry in BAD_CONFIGS if entry[0] == case)
    damage(checkpoint / "config.json")
    fails(capsys, build_args(tmp_path, checkpoint), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_index_buffers_of_older_checkpoints_are_not_weights(checkpoint):
    """An int64 position_ids stored by an older transformers is accepted; an extra float tensor is not."""
    from safetensors.numpy import load_file, save_file

    weights = checkpoint / "model.safetensors"
    tensors = load_file(weights)
    tensors["vision_tower.vision_model.embeddings.position_ids"] = np.arange(729, dtype=np.int64)[None]
    save_file(tensors, weights, metadata={"format": "pt"})
    check_checkpoint(checkpoint)
    tensors["language_model.model.extra_norm.weight"] = np.ones(64, dtype=np.float32)
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"the weights hold 1 more tensor\(s\) of shape \[64\]"):
        check_checkpoint(checkpoint)


def test_truncated_weights(artifacts, bikes, checkpoint, capsys):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    fails(capsys, run_args(artifacts, bikes, checkpoint), f"{weights}: not a complete safetensors file")


class WritesAFile:
    """Unpickling this creates ``path``: proof that a pickle was (or was not) run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


@pytest.mark.parametrize("command", ["run", "build"])
def test_pickle_weights_are_never_unpickled(artifacts, bikes, checkpoint, tmp_path, capsys, command):
    marker = tmp_path / "pickle-ran"
    (checkpoint / "model.safetensors").unlink()
    (checkpoint / "pytorch_model.bin").write_bytes(pickle.dumps(WritesAFile(marker)))
    argv = run_args(artifacts, bikes, checkpoint) if command == "run" else build_args(tmp_path, checkpoint)
    error = fails(capsys, argv, f"{checkpoint / 'pytorch_model.bin'}: pickle weights are not loaded (unpickling can "
                                "run code); convert the checkpoint to safetensors")
    assert "weights_only" not in error
    assert not marker.exists()


def test_a_model_larger_than_the_memory_is_refused_before_allocating(checkpoint):
    """A consistent config of ~147 B parameters: refused from its size on the meta device, at once."""
    edit_config(checkpoint, lambda c: c["text_config"].update(
        hidden_size=65536, intermediate_size=262144, num_attention_heads=64, num_key_value_heads=8, vocab_size=152064))
    with pytest.raises(UserError, match=rf"^{checkpoint}: the model needs 546\.3 GiB in float32, more than the "
                                        r"[0-9.]+ GiB of memory available here$"):
        check_checkpoint(checkpoint)
    with pytest.raises(UserError, match="273.1 GiB in bfloat16"):
        import torch

        check_checkpoint(checkpoint, torch.bfloat16)


def test_config_checks_need_no_torch(checkpoint):
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from mmg_runtime.checkpoint import read_config\n"
            f"print(read_config({str(checkpoint)!r})['model_type'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "llava_onevision", result.stderr
    assert read_config(checkpoint)["vision_config"]["patch_size"] == 14
