"""LLaVA-OneVision loading: a local checkpoint directory, or the built-in seeded tiny model.

Nothing here downloads: a real checkpoint comes from ``--model DIR`` (a directory written by
``save_pretrained``); without one, a tiny model with LLaVA-OneVision's real video geometry
(384 px, patch 14 -> 27 x 27 patches -> 14 x 14 = 196 tokens per frame) and tiny widths is
built from a fixed seed, so every machine gets the same weights.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import torch

from mmg_runtime.checkpoint import check_checkpoint
from mmg_runtime.errors import UserError
from mmg_runtime.prompt import CHAT_TEMPLATE

TINY_NAME = "tiny-llava-onevision (built-in, seeded random weights)"
TINY_SEED = 0
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]


@dataclass
class LoadedModel:
    """A LLaVA-OneVision model, its tokenizer, and where it came from (for the manifest)."""

    model: torch.nn.Module
    tokenizer: object
    source: str

    @property
    def config(self):
        return self.model.config


def load_llava(model_dir: str | Path | None = None, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load ``LlavaOnevisionForConditionalGeneration`` from a local directory, or the tiny model."""
    if model_dir is None:
        return tiny_llava(dtype)
    return _load_checkpoint(Path(model_dir), dtype)


def _load_checkpoint(path: Path, dtype: torch.dtype) -> LoadedModel:
    """``from_pretrained`` of a directory that :func:`check_checkpoint` accepted (safetensors only)."""
    from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration

    check_checkpoint(path, dtype)
    try:
        model = LlavaOnevisionForConditionalGeneration.from_pretrained(path, dtype=dtype, local_files_only=True,
                                                                       use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"--model {path}: could not load the checkpoint ({error})") from None
    return LoadedModel(model.eval(), tokenizer, str(path.resolve()))


def tiny_llava(dtype: torch.dtype = torch.float32) -> LoadedModel:
    """The built-in model: real video geometry, tiny widths, weights from ``TINY_SEED``."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    tokenizer = tiny_tokenizer()
    vocab = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=384, patch_size=14),
        text_config=dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tokenizer),
                         max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=False,
                         eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<|endoftext|>"]),
        image_token_index=vocab["<image>"],
        video_token_index=vocab["<video>"],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = LlavaOnevisionForConditionalGeneration(config)
    model.generation_config.eos_token_id = vocab["<|im_end|>"]
    model.generation_config.pad_token_id = vocab["<|endoftext|>"]
    return LoadedModel(model.to(dtype).eval(), tokenizer, TINY_NAME)


def tiny_tokenizer():
    """A character-level tokenizer with ChatML special tokens and LLaVA's <image>/<video>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    characters = sorted(set(string.printable))
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + characters + ["<unk>"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", additional_special_tokens=SPECIAL_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
