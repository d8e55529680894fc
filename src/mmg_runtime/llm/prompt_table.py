"""Prompt-table layout for the TensorRT-LLM engine path (0.12-jetson and 0.15 to 0.21).

The legacy engine path feeds precomputed embeddings through prompt tuning
(``tensorrt_llm.layers.PromptTuningEmbedding``): every input id ``>= vocab_size`` is looked up
in a runtime table instead of the word embedding, at row ``(id - vocab_size) + task *
prompt_vocab_size``. ``examples/multimodal`` (LLaVA-OneVision included) uses it this way:

* the placeholder is replaced by the "fake prompt ids" ``vocab_size, ..., vocab_size + M - 1``;
* ``ModelRunner(Cpp).generate(..., prompt_table=T, prompt_tasks="0")`` with ``T`` of shape
  ``(1, M, H)``: one task per request. ``ModelRunner`` derives ``prompt_vocab_size = M`` from
  ``T.shape[1]`` and flattens ``T`` to ``(M, H)``; ``ModelRunnerCpp`` hands ``T[0]`` to the
  request's ``PromptTuningConfig``. Both cast ``T`` to the engine dtype.
* the engine must be built with ``trtllm-build --max_multimodal_len`` (an alias of
  ``--max_prompt_embedding_table_size``, stored under that name in the engine config.json);
  at 0 the runners ignore the table and the fake ids would be out of range.

numpy has no bfloat16: for a bf16 engine the table stays float32 here and becomes a
``torch.bfloat16`` tensor at call time (``trtllm_engine.table_to_torch``); fp16 engines get a
float16 table directly.

Positions: the engine's Qwen2 (``QWenDecoderLayer``) takes no position ids; RoPE positions come
from token order inside the GPT attention plugin, so pruned-token positions
(``VideoPrompt.video_position_ids``) cannot be honoured on this path.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import VideoPrompt

# Engine dtype (pretrained_config.dtype) -> numpy dtype of the table built here.
TABLE_NUMPY_DTYPE: dict[str, type] = {
    "float16": np.float16,
    "bfloat16": np.float32,
    "float32": np.float32,
}


@dataclass(frozen=True)
class EngineLimits:
    """What an LLM engine accepts, read from its config.json (see ``trtllm_engine``).

    hidden_size is the full (unsharded) hidden size the prompt table must have.
    max_multimodal_len is the engine's max_prompt_embedding_table_size.
    """

    vocab_size: int
    hidden_size: int
    dtype: str
    max_multimodal_len: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int


@dataclass(frozen=True)
class EnginePrompt:
    """Inputs of ``ModelRunner(Cpp).generate`` for one request.

    input_ids: (L,) int32, the prompt with the placeholder replaced by M fake prompt ids.
    prompt_table: (1, M, H), dtype ``TABLE_NUMPY_DTYPE[limits.dtype]``.
    prompt_tasks: "0", the comma-separated task index per request.
    input_lengths: (1,) int32, [L].
    """

    input_ids: np.ndarray
    prompt_table: np.ndarray
    prompt_tasks: str
    input_lengths: np.ndarray


def fake_prompt_ids(vocab_size: int, count: int) -> np.ndarray:
    """(count,) int32 ids vocab_size, vocab_size + 1, ... that index rows of the prompt table."""
    return np.arange(vocab_size, vocab_size + count, dtype=np.int32)


def expand_placeholder(prompt: VideoPrompt, vocab_size: int) -> np.ndarray:
    """(L,) int32 input ids with the single video placeholder replaced by M fake prompt ids."""
    index = prompt.placeholder_index()
    ids = np.asarray(prompt.input_ids, dtype=np.int32)
    fake = fake_prompt_ids(vocab_size, prompt.video_embeds.shape[0])
    return np.concatenate([ids[:index], fake, ids[index + 1:]])


def require_contiguous_positions(prompt: VideoPrompt, backend: str) -> None:
    """Raise ValueError unless the video positions are absent or exactly 0 .. M-1."""
    positions = prompt.video_position_ids
    if positions is None:
        return
    if np.array_equal(np.asarray(positions), np.arange(prompt.video_embeds.shape[0])):
        return
    raise ValueError(
        f"video_position_ids (kept-token positions) are unsupported on the {backend} backend: "
        "its Qwen2 takes RoPE positions from token order (no per-request position ids); "
        "drop video_position_ids (contiguous positions) or use a backend that accepts them"
    )


def check_video_matrix(embeds: np.ndarray, hidden_size: int, owner: str) -> None:
    """Raise ValueError unless ``embeds`` is a non-empty (M, hidden_size) array."""
    if embeds.ndim != 2 or len(embeds) == 0:
        raise ValueError(
            f"video_embeds: expected a non-empty (M, H) array, got shape {embeds.shape}"
        )
    if embeds.shape[1] != hidden_size:
        raise ValueError(
            f"video_embeds: hidden size {embeds.shape[1]} does not match the {owner} hidden size "
            f"{hidden_size}"
        )


def check_video_embeds(embeds: np.ndarray, limits: EngineLimits) -> None:
    """Raise ValueError if (M, H) embeddings do not fit the engine's prompt table."""
    check_video_matrix(embeds, limits.hidden_size, "engine")
    count = len(embeds)
    if limits.max_multimodal_len == 0:
        raise ValueError(
            "the LLM engine was built without a prompt table (max_prompt_embedding_table_size 0): "
            "rebuild it with trtllm-build --max_multimodal_len N"
        )
    if count > limits.max_multimodal_len:
        raise ValueError(
            f"video_embeds: {count} video tokens exceed the engine's max_multimodal_len "
            f"{limits.max_multimodal_len}; prune harder or rebuild with a larger "
            "--max_multimodal_len"
        )


def build_engine_prompt(prompt: VideoPrompt, limits: EngineLimits) -> EnginePrompt:
    """Validate ``prompt`` against ``limits`` and lay it out for the prompt-table runners."""
    require_contiguous_positions(prompt, "TensorRT-LLM engine")
    embeds = prompt.embeds_numpy()
    check_video_embeds(embeds, limits)
    input_ids = expand_placeholder(prompt, limits.vocab_size)
    if len(input_ids) > limits.max_input_len:
        text = len(input_ids) - len(embeds)
        raise ValueError(
            f"prompt: {len(input_ids)} tokens ({len(embeds)} video + {text} text) exceed the "
            f"engine's max_input_len {limits.max_input_len}"
        )
    table = embeds.astype(TABLE_NUMPY_DTYPE[limits.dtype], copy=False)[np.newaxis]
    return EnginePrompt(
        input_ids=input_ids,
        prompt_table=table,
        prompt_tasks="0",
        input_lengths=np.array([len(input_ids)], dtype=np.int32),
    )
