"""``mmg-export trtllm-adapter``: the model directory for the TensorRT-LLM 1.x LLM API backend.

LLaVA-OneVision's language model is a plain Qwen2. This writes it as a Qwen2 checkpoint
(``model.*`` and ``lm_head.*`` weights in safetensors, the tokenizer with its chat template,
the generation config) whose config.json names the adapter architecture and the video token
id (:func:`mmg_runtime.llm.trtllm_llmapi.adapter_config`), so that
``TrtLlmApiBackend(model_dir)`` (``mmg-export run --llm trtllm-api --model DIR``) can serve it with
the pruned video tokens as external embeddings. The vision tower and projector are left out: the
encoder artifacts carry them. See docs/trtllm.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from mmg_runtime.errors import UserError
from mmg_runtime.llm.trtllm_llmapi import adapter_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "trtllm-adapter", help="write the LLM model directory for --llm trtllm-api (TensorRT-LLM 1.x)",
        description="Write LLaVA-OneVision's Qwen2 language model, tokenizer and adapter config.json "
                    "as the model directory that the TensorRT-LLM LLM API backend loads (docs/trtllm.md).")
    parser.add_argument("--model", type=Path, default=None, metavar="DIR",
                        help="local LLaVA-OneVision checkpoint directory (default: the built-in tiny model)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="model directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing adapter directory")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    out = write_adapter(args.model, args.out, args.overwrite)
    print(f"wrote {out}: serve it with mmg-export run --llm trtllm-api --model {out}")
    return 0


def write_adapter(model_dir: Path | None, out: Path, overwrite: bool = False) -> Path:
    """Write the adapter model directory for the checkpoint at ``model_dir`` (None: the tiny model).

    The weights keep the checkpoint's dtype. Writes into a temporary sibling and renames it into
    place, so a failure leaves nothing at ``out``; ``overwrite`` replaces only an adapter
    directory written by this command.
    """
    from ..models.llava import load_llava

    _check_out(out, overwrite)
    loaded = load_llava(model_dir, _checkpoint_dtype(model_dir))
    work = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    try:
        _save_language_model(loaded.model, work)
        loaded.tokenizer.save_pretrained(work)
        config = json.loads((work / "config.json").read_text())
        adapted = adapter_config(config, int(loaded.config.video_token_index))
        (work / "config.json").write_text(json.dumps(adapted, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    print(f"language model of {loaded.source} -> {out}", file=sys.stderr)
    return out


def _check_out(out: Path, overwrite: bool) -> None:
    if not out.exists():
        if not out.parent.is_dir():
            raise UserError(f"--out {out}: the parent directory {out.parent} does not exist")
        return
    if not overwrite:
        raise UserError(f"--out {out}: already exists (pass --overwrite to replace an adapter directory)")
    try:
        adapter = json.loads((out / "config.json").read_text()).get("video_token_index") is not None
    except (OSError, ValueError):
        adapter = False
    if not adapter:
        raise UserError(f"--out {out}: not an adapter directory written by mmg-export trtllm-adapter; "
                        "refusing to replace it")


def _checkpoint_dtype(model_dir: Path | None):
    """The dtype a checkpoint was saved in (its text config's), float32 for the tiny model."""
    import torch

    if model_dir is None:
        return torch.float32
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return torch.bfloat16  # load_llava reports the unreadable config
    text = config.get("text_config", {})
    name = text.get("dtype") or text.get("torch_dtype") or config.get("torch_dtype") or "bfloat16"
    return getattr(torch, name)


def _save_language_model(llava, directory: Path) -> None:
    """Save LLaVA-OneVision's Qwen2 (language model + lm_head) as a ``Qwen2ForCausalLM`` checkpoint."""
    import torch
    from transformers import Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with torch.device("meta"):
        qwen2 = Qwen2ForCausalLM(llava.config.text_config)
    qwen2.model = llava.model.language_model
    qwen2.lm_head = llava.lm_head
    qwen2.generation_config = llava.generation_config
    qwen2.save_pretrained(directory)
