"""``mmg-export trtllm-adapter``: the LLM API backend's model directory, checked with transformers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, Qwen2ForCausalLM

from mmg_export.cli import main
from mmg_export.models.llava import tiny_llava
from mmg_runtime.llm.trtllm_llmapi import ADAPTER_ARCHITECTURE, read_adapter_config


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("adapter") / "llava-ov-trtllm"
    assert main(["trtllm-adapter", "--out", str(out)]) == 0
    return out


def test_config_names_the_adapter_and_the_video_token(adapter: Path) -> None:
    config = json.loads((adapter / "config.json").read_text())
    loaded = tiny_llava()
    assert config["architectures"] == [ADAPTER_ARCHITECTURE] and config["model_type"] == "qwen2"
    assert read_adapter_config(config) == (64, loaded.config.video_token_index)


def test_weights_are_the_language_model_of_llava(adapter: Path) -> None:
    """A plain Qwen2 loads every weight (none missing, none left over) and computes LLaVA's logits."""
    qwen2, info = Qwen2ForCausalLM.from_pretrained(adapter, output_loading_info=True)
    assert [set(info[key]) for key in ("missing_keys", "unexpected_keys", "mismatched_keys")] == [set()] * 3
    llava = tiny_llava().model
    ids = torch.tensor([[1, 5, 9, 30, 2]])
    with torch.no_grad():
        expected = llava.lm_head(llava.model.language_model(input_ids=ids).last_hidden_state)
        torch.testing.assert_close(qwen2(input_ids=ids).logits, expected)


def test_tokenizer_and_chat_template_travel(adapter: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    original = tiny_llava().tokenizer
    assert tokenizer.convert_tokens_to_ids("<video>") == original.convert_tokens_to_ids("<video>")
    assert tokenizer.chat_template == original.chat_template


def test_refuses_to_replace_what_it_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    assert main(["trtllm-adapter", "--out", str(other)]) == 1
    assert main(["trtllm-adapter", "--out", str(other), "--overwrite"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"mmg-export trtllm-adapter: error: --out {other}: not an adapter directory written by mmg-export "
        "trtllm-adapter; refusing to replace it")
    assert sorted(p.name for p in other.iterdir()) == ["cat.jpg"]
    assert main(["trtllm-adapter", "--out", str(tmp_path / "missing" / "x")]) == 1
