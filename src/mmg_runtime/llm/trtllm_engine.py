"""LLM backend over a TensorRT-LLM engine (legacy engine path: 0.12-jetson, 0.15 to 0.21).

The Qwen2 LLM of LLaVA-OneVision is built as ``examples/multimodal`` does it
(``convert_checkpoint.py`` then ``trtllm-build --max_multimodal_len N``); the video embeddings
reach it as a prompt table (layout in ``prompt_table``). The runner is the one the multimodal
example uses by default (``--session cpp_llm_only``: ``ModelRunnerCpp``), or the Python
``ModelRunner`` (``session="python"``, the example's ``--session python``).

Sampling maps onto the runners' sampling keywords (:func:`engine_sampling`). KV reuse is
TensorRT-LLM's own block reuse (``enable_block_reuse=True``, cpp session, an engine built with
``--use_paged_context_fmha enable``): the prompt table's fake ids are the same for every video of M
tokens, so each request also passes ``input_token_extra_ids`` (:func:`token_extra_ids`), which
TensorRT-LLM documents as the way to use prompt tuning and KV cache reuse together: the video's
positions carry a number derived from ``prompt.video_key``. The ``cache`` argument of
``generate`` is not used: the blocks live in TensorRT-LLM's own KV pool.

tensorrt_llm and torch are imported only when a backend is constructed.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .base import GREEDY, Generation, Sampling, TokenCallback, TokenEmitter, VideoPrompt
from .prompt_table import TABLE_NUMPY_DTYPE, EngineLimits, build_engine_prompt

if TYPE_CHECKING:
    from ..cache import CacheStore

Session = Literal["cpp", "python"]


def _config_field(config: dict, section: str, key: str) -> Any:
    try:
        return config[section][key]
    except KeyError:
        raise ValueError(
            f"engine config.json: missing {section}.{key} "
            "(expected an LLM engine config written by trtllm-build 0.12 or later)"
        ) from None


def parse_engine_config(config: dict) -> EngineLimits:
    """EngineLimits from the config.json that trtllm-build writes next to the engine.

    Keys: pretrained_config.{vocab_size, hidden_size, dtype, mapping.world_size} and
    build_config.{max_prompt_embedding_table_size (set by --max_multimodal_len), max_input_len,
    max_seq_len, max_num_tokens}.
    """
    dtype = _config_field(config, "pretrained_config", "dtype")
    if dtype not in TABLE_NUMPY_DTYPE:
        raise ValueError(
            f"engine config.json: dtype {dtype!r} is not one of {sorted(TABLE_NUMPY_DTYPE)}"
        )
    world_size = config["pretrained_config"].get("mapping", {}).get("world_size", 1)
    if world_size != 1:
        raise ValueError(
            f"engine config.json: the engine is split over {world_size} GPUs; "
            "this backend runs single-GPU engines only"
        )
    return EngineLimits(
        vocab_size=_config_field(config, "pretrained_config", "vocab_size"),
        hidden_size=_config_field(config, "pretrained_config", "hidden_size"),
        dtype=dtype,
        max_multimodal_len=config["build_config"].get("max_prompt_embedding_table_size", 0),
        max_input_len=_config_field(config, "build_config", "max_input_len"),
        max_seq_len=_config_field(config, "build_config", "max_seq_len"),
        max_num_tokens=_config_field(config, "build_config", "max_num_tokens"),
    )


def load_engine_limits(engine_dir: Path) -> EngineLimits:
    """Read ``engine_dir/config.json`` and parse it with :func:`parse_engine_config`."""
    path = Path(engine_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"{path}: not found; expected a trtllm-build LLM engine directory")
    return parse_engine_config(json.loads(path.read_text()))


def check_generation_fits(
    input_length: int, max_new_tokens: int, limits: EngineLimits, chunked_context: bool
) -> None:
    """Raise ValueError if a prompt of ``input_length`` tokens cannot run on the engine."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected at least 1, got {max_new_tokens}")
    if input_length + max_new_tokens > limits.max_seq_len:
        raise ValueError(
            f"prompt of {input_length} tokens + {max_new_tokens} new tokens exceed the engine's "
            f"max_seq_len {limits.max_seq_len}"
        )
    if not chunked_context and input_length > limits.max_num_tokens:
        raise ValueError(
            f"prompt of {input_length} tokens exceeds the engine's max_num_tokens "
            f"{limits.max_num_tokens}; rebuild with a larger --max_num_tokens or enable "
            "chunked context (paged context FMHA engines)"
        )


def new_tokens(output_ids: list[int], input_length: int, sequence_length: int) -> list[int]:
    """The generated ids of one beam: ``output_ids`` holds prompt + new tokens + padding."""
    return [int(token) for token in output_ids[input_length:sequence_length]]


def table_to_torch(table: np.ndarray, dtype: str):
    """The (1, M, H) prompt table as a torch tensor of the engine dtype (bf16 included)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(table)).to(getattr(torch, dtype))


def resolve_special_ids(
    end_id: int | None, pad_id: int | None, tokenizer_dir: str | Path | None
) -> tuple[int, int]:
    """(end_id, pad_id): as given, else the tokenizer's eos/pad ids (pad falls back to end)."""
    if end_id is None:
        if tokenizer_dir is None:
            raise ValueError("TrtLlmEngineBackend: give end_id or tokenizer_dir")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        end_id = tokenizer.eos_token_id
        pad_id = tokenizer.pad_token_id if pad_id is None else pad_id
    return end_id, end_id if pad_id is None else pad_id


def engine_sampling(sampling: Sampling) -> dict[str, Any]:
    """Keywords of ``ModelRunner(Cpp).generate`` for ``sampling`` (SamplingConfig fields).

    Greedy is ``top_k=1`` (what the runners' own default SamplingConfig does). Sampling passes
    temperature, top_k (0 = every token) and top_p (1 = every token; 0 would mean greedy to
    ModelRunnerCpp) and a ``random_seed``: drawn here when none is given, since the runtime's
    default seed is 0 for every request. The repetition penalty passes when set; a frequency or
    presence penalty is refused (:meth:`Sampling.prompt_counting_penalties`)."""
    keywords: dict[str, Any] = {"top_k": 1} if sampling.greedy else {
        "temperature": float(sampling.temperature), "top_k": int(sampling.top_k), "top_p": float(sampling.top_p),
        "random_seed": sampling.seed if sampling.seed is not None else secrets.randbits(63)}
    return {**keywords, **sampling.prompt_counting_penalties("--llm trtllm-engine")}


def video_extra_id(video_key: Hashable | None) -> int:
    """A positive 63-bit number standing for the video in KV block hashes: a digest of ``repr(video_key)``
    (equal keys, equal numbers), or a fresh random one when there is no key (never reused)."""
    if video_key is None:
        return 1 + secrets.randbits(62)
    digest = hashlib.blake2b(repr(video_key).encode(), digest_size=8).digest()
    return 1 + (int.from_bytes(digest, "little") >> 2)


def token_extra_ids(input_ids: np.ndarray, vocab_size: int, video_key: Hashable | None) -> list[int]:
    """One extra id per input id: the video's :func:`video_extra_id` where a fake prompt id (``>=
    vocab_size``) stands, 0 at text tokens."""
    extra = video_extra_id(video_key)
    return [extra if token >= vocab_size else 0 for token in input_ids.tolist()]


def _load_runner(engine_dir: Path, session: Session, kv_cache_fraction: float, chunked: bool, block_reuse: bool):
    if session == "cpp":
        from tensorrt_llm.runtime import ModelRunnerCpp

        return ModelRunnerCpp.from_dir(
            engine_dir=str(engine_dir),
            rank=0,
            kv_cache_free_gpu_memory_fraction=kv_cache_fraction,
            enable_chunked_context=chunked,
            kv_cache_enable_block_reuse=block_reuse,
        )
    if session == "python":
        if chunked or block_reuse:
            raise ValueError("chunked context and KV block reuse need session='cpp'")
        from tensorrt_llm.runtime import ModelRunner

        return ModelRunner.from_dir(engine_dir=str(engine_dir), rank=0)
    raise ValueError(f"session: expected 'cpp' or 'python', got {session!r}")


class TrtLlmEngineBackend:
    """LLMBackend over a trtllm-build Qwen2 engine, video embeddings passed as a prompt table.

    engine_dir: the LLM engine directory (``rank0.engine`` + ``config.json``).
    end_id / pad_id: stop and padding ids; or tokenizer_dir to read them from the tokenizer.
    session: "cpp" (ModelRunnerCpp, needs the C++ bindings) or "python" (ModelRunner).
    enable_chunked_context: prompts longer than max_num_tokens (engine built with
        paged context FMHA; cpp session only).
    enable_block_reuse: TensorRT-LLM's KV block reuse across requests (engine built with paged
        context FMHA; cpp session only); prompts are told apart by their video key.
    """

    name = "tensorrt-llm-engine"

    def __init__(
        self,
        engine_dir: str | Path,
        *,
        tokenizer_dir: str | Path | None = None,
        end_id: int | None = None,
        pad_id: int | None = None,
        session: Session = "cpp",
        kv_cache_free_gpu_memory_fraction: float = 0.9,
        enable_chunked_context: bool = False,
        enable_block_reuse: bool = False,
    ) -> None:
        self.limits = load_engine_limits(Path(engine_dir))
        self.max_context = self.limits.max_seq_len
        self.session = session
        self._chunked, self._block_reuse = enable_chunked_context, enable_block_reuse
        self._end_id, self._pad_id = resolve_special_ids(end_id, pad_id, tokenizer_dir)
        self._runner = _load_runner(
            Path(engine_dir), session, kv_cache_free_gpu_memory_fraction, enable_chunked_context, enable_block_reuse
        )

    def generate(self, prompt: VideoPrompt, max_new_tokens: int, on_token: TokenCallback | None = None,
                 sampling: Sampling = GREEDY, cache: CacheStore | None = None) -> Generation:
        """Generation as ``sampling`` says; prefill_s is the time to the first streamed token.

        When ``on_token`` asks to stop, the stream is still read to its end, unseen: ModelRunnerCpp
        collects its responses from the executor by awaiting all of them, so a request left running
        would hand its late responses to the next call. ``cache`` is not used (see the module
        docstring); cached_tokens stays 0 since the runners do not report reused blocks."""
        import torch

        engine_prompt = build_engine_prompt(prompt, self.limits)
        length = int(engine_prompt.input_lengths[0])
        check_generation_fits(length, max_new_tokens, self.limits, self._chunked)
        input_ids = torch.from_numpy(engine_prompt.input_ids)
        table = table_to_torch(engine_prompt.prompt_table, self.limits.dtype)
        reuse = {"input_token_extra_ids": [token_extra_ids(engine_prompt.input_ids, self.limits.vocab_size,
                                                           prompt.video_key)]} if self._block_reuse else {}
        start = time.perf_counter()
        stream = self._runner.generate(
            batch_input_ids=[input_ids],
            prompt_table=table,
            prompt_tasks=engine_prompt.prompt_tasks,
            max_new_tokens=max_new_tokens,
            end_id=self._end_id,
            pad_id=self._pad_id,
            streaming=True,
            return_dict=True,
            output_sequence_lengths=True,
            **engine_sampling(sampling),
            **reuse,
        )
        first_token_at, emit = None, TokenEmitter(on_token)
        for outputs in stream:
            first_token_at = first_token_at or time.perf_counter()
            tokens = new_tokens(outputs["output_ids"][0][0].tolist(), length, int(outputs["sequence_lengths"][0][0]))
            emit(tokens)
        end = time.perf_counter()
        return Generation(
            token_ids=tokens[:emit.sent] if emit.stopped else tokens,
            prefill_s=first_token_at - start,
            decode_s=end - first_token_at,
            extra={"session": self.session, "input_length": length,
                   "video_tokens": prompt.video_embeds.shape[0]},
            stopped=emit.stopped,
        )
