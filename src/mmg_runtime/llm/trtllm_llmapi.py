"""LLM backend over the TensorRT-LLM 1.x LLM API (PyTorch backend).

TensorRT-LLM 1.x has no LLaVA-OneVision, and its plain ``Qwen2ForCausalLM`` ignores external
embeddings. External embeddings enter an LLM API request as
``{"prompt": str, "multi_modal_embeddings": {modality: [tensor (M, H)]}}``: ``LLM.generate_async``
passes that dict to the model's registered input processor,
``attach_multimodal_embeddings(inputs, multi_modal_embeddings, sampling_params) ->
(prompt_token_ids, {"multimodal_data": {"multimodal_embedding": tensor}})``, and the model's
``forward`` receives the embedding back in ``kwargs["multimodal_params"]`` for each context
request. (A ``prompt_token_ids`` request skips the input processor, so the ids travel in
``mm_processor_kwargs``.)

The adapter (:func:`register_adapter`) is therefore two small classes:

* ``VideoEmbeddingInputProcessor``: expands the single video placeholder of
  ``mm_processor_kwargs["prompt_token_ids"]`` to M copies of the video token id and attaches the
  (M, H) embedding;
* ``LlavaOnevisionQwen2ForCausalLM``: TensorRT-LLM's ``Qwen2ForCausalLM`` whose forward replaces
  the embeddings at the video token id with the attached ones (``fuse_input_embeds``).

The model directory is the LLaVA-OneVision language model saved as a plain Qwen2 checkpoint
(``model.*`` and ``lm_head.*`` weights, tokenizer files), its config.json rewritten by
:func:`adapter_config` (architecture name + ``video_token_index``).

Sampling maps onto ``SamplingParams`` (:func:`llmapi_sampling`); a stop asked by ``on_token``
aborts the request (``GenerationResult.abort()``).

Limits: KV-cache block reuse is disabled (requests that differ only in their video would share
cache blocks: the placeholder ids are identical, and this request form is not known to carry
multimodal hashes for the block keys); no chunked prefill; no explicit positions (Qwen2 derives
RoPE positions from token order; only mRoPE models take ``mrope_config``). ``generate``'s
``cache`` is therefore not used.

Written against the TensorRT-LLM 1.x sources listed in ``docs/unverified.md`` (not run here);
tensorrt_llm and torch are imported only when a backend is constructed.
"""
from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import (
    GREEDY,
    Generation,
    Sampling,
    TokenCallback,
    TokenEmitter,
    VideoPrompt,
    placeholder_index,
)
from .prompt_table import check_video_matrix, require_contiguous_positions

if TYPE_CHECKING:
    from ..cache import CacheStore

ADAPTER_ARCHITECTURE = "LlavaOnevisionQwen2ForCausalLM"
ADAPTER_MODEL_TYPE = "llava_onevision_qwen2"
VIDEO_MODALITY = "video"
VIDEO_PLACEHOLDER = "<video>"

_registered = False


def adapter_config(qwen2_config: dict, video_token_id: int) -> dict:
    """config.json of the adapter model directory from the Qwen2 text config of LLaVA-OneVision."""
    config = dict(qwen2_config)
    config["architectures"] = [ADAPTER_ARCHITECTURE]
    config["video_token_index"] = video_token_id
    return config


def read_adapter_config(config: dict) -> tuple[int, int]:
    """(hidden_size, video_token_index) of an adapter model config.json; ValueError otherwise."""
    if config.get("architectures") != [ADAPTER_ARCHITECTURE]:
        raise ValueError(
            f"model config.json: architectures {config.get('architectures')} is not "
            f"[{ADAPTER_ARCHITECTURE!r}]; write it with adapter_config()"
        )
    return config["hidden_size"], config["video_token_index"]


def expand_video_placeholder(input_ids: list[int], video_token_id: int, count: int) -> list[int]:
    """input_ids with its single video placeholder repeated ``count`` times."""
    index = placeholder_index(input_ids, video_token_id)
    return [*input_ids[:index], *[video_token_id] * count, *input_ids[index + 1:]]


def check_llmapi_prompt(prompt: VideoPrompt, hidden_size: int) -> None:
    """Raise ValueError if ``prompt`` cannot go through the adapter."""
    require_contiguous_positions(prompt, "TensorRT-LLM LLM API")
    prompt.placeholder_index()
    check_video_matrix(prompt.embeds_numpy(), hidden_size, "model")


def build_llmapi_request(prompt: VideoPrompt, prompt_text: str, embedding: Any) -> dict:
    """The LLM API input dict for one request.

    prompt_text: the prompt as text (shown in RequestOutput.prompt; not re-tokenized).
    embedding: the (M, H) video embeddings as the tensor the model will consume
        (a torch tensor at call time).
    """
    return {
        "prompt": prompt_text,
        "multi_modal_embeddings": {VIDEO_MODALITY: [embedding]},
        "mm_processor_kwargs": {
            "prompt_token_ids": list(prompt.input_ids),
            "video_token_id": prompt.video_token_id,
        },
    }


def llmapi_sampling(sampling: Sampling) -> dict[str, Any]:
    """Keywords of ``tensorrt_llm.SamplingParams`` for ``sampling``.

    Greedy is ``top_k=1`` (SamplingParams counts top_k 1 with no top_p as greedy decoding). Sampling
    passes temperature, top_k (None for 0: the runtime's default, every token), top_p (always, so
    that the request is not taken for greedy) and a seed, drawn here when none is given (the
    runtime's default seed is 0 for every request). The repetition penalty passes when set; a
    frequency or presence penalty is refused (:meth:`Sampling.prompt_counting_penalties`)."""
    keywords: dict[str, Any] = {"top_k": 1} if sampling.greedy else {
        "temperature": float(sampling.temperature), "top_k": int(sampling.top_k) or None,
        "top_p": float(sampling.top_p), "seed": sampling.seed if sampling.seed is not None else secrets.randbits(63)}
    return {**keywords, **sampling.prompt_counting_penalties("--llm trtllm-api")}


def register_adapter() -> None:
    """Register the adapter model and its input processor with TensorRT-LLM (once per process)."""
    global _registered
    if _registered:
        return
    import torch
    from tensorrt_llm._torch.models.modeling_multimodal_utils import fuse_input_embeds
    from tensorrt_llm._torch.models.modeling_qwen import Qwen2ForCausalLM
    from tensorrt_llm._torch.models.modeling_utils import register_auto_model
    from tensorrt_llm.inputs import (
        MultimodalPlaceholderMetadata,
        register_input_processor,
    )

    class VideoEmbeddingInputProcessor:
        """Input processor: text prompts are tokenized; video requests carry their ids."""

        def __init__(self, model_path, config, tokenizer, trust_remote_code: bool = True):
            self.model_path = model_path
            self.config = config
            self.tokenizer = tokenizer

        def __call__(self, inputs, sampling_params):
            ids = self.tokenizer.encode(
                inputs["prompt"], add_special_tokens=sampling_params.add_special_tokens
            )
            return ids, None

        def attach_multimodal_embeddings(self, inputs, multimodal_embedding, sampling_params):
            kwargs = inputs["mm_processor_kwargs"]
            (embedding,) = multimodal_embedding[VIDEO_MODALITY]
            ids = expand_video_placeholder(
                kwargs["prompt_token_ids"], kwargs["video_token_id"], embedding.shape[0]
            )
            return ids, {"multimodal_data": {"multimodal_embedding": embedding}}

    @register_auto_model(ADAPTER_ARCHITECTURE)
    @register_input_processor(
        VideoEmbeddingInputProcessor,
        model_type=ADAPTER_MODEL_TYPE,
        placeholder_metadata=MultimodalPlaceholderMetadata(
            placeholder_map={VIDEO_MODALITY: VIDEO_PLACEHOLDER}
        ),
    )
    class LlavaOnevisionQwen2ForCausalLM(Qwen2ForCausalLM):
        """Qwen2 whose context tokens at the video token id take the attached embeddings."""

        def forward(self, attn_metadata, input_ids=None, position_ids=None, inputs_embeds=None,
                    return_context_logits=False, **kwargs):
            params = kwargs.get("multimodal_params", [])[: attn_metadata.num_contexts]
            embeds = [param.multimodal_data["multimodal_embedding"] for param in params]
            video_id = self.model_config.pretrained_config.video_token_index
            input_ids, inputs_embeds = fuse_input_embeds(
                self.model.embed_tokens, input_ids, embeds,
                mm_token_ids=torch.tensor([video_id], dtype=torch.int32),
            )
            return super().forward(attn_metadata, input_ids=input_ids,
                                   position_ids=position_ids, inputs_embeds=inputs_embeds,
                                   return_context_logits=return_context_logits)

    _registered = True


class TrtLlmApiBackend:
    """LLMBackend over ``tensorrt_llm.LLM`` (PyTorch backend) with the LLaVA-OneVision adapter.

    model_dir: the adapter model directory (see module docstring).
    max_seq_len / max_num_tokens: passed to ``LLM``; a prompt must fit max_num_tokens
        (no chunked prefill).
    """

    name = "tensorrt-llm-llmapi"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        max_seq_len: int = 16384,
        max_num_tokens: int = 16384,
        kv_cache_free_gpu_memory_fraction: float = 0.9,
    ) -> None:
        config = json.loads((Path(model_dir) / "config.json").read_text())
        self.hidden_size, self.video_token_id = read_adapter_config(config)
        self.max_context = max_seq_len
        register_adapter()
        from tensorrt_llm import LLM
        from tensorrt_llm.llmapi import KvCacheConfig

        self._llm = LLM(
            model=str(model_dir),
            max_batch_size=1,
            max_seq_len=max_seq_len,
            max_num_tokens=max_num_tokens,
            kv_cache_config=KvCacheConfig(
                enable_block_reuse=False,
                free_gpu_memory_fraction=kv_cache_free_gpu_memory_fraction,
            ),
        )

    def generate(self, prompt: VideoPrompt, max_new_tokens: int, on_token: TokenCallback | None = None,
                 sampling: Sampling = GREEDY, cache: CacheStore | None = None) -> Generation:
        """Generation as ``sampling`` says; prefill_s is the time to the first streamed token. When
        ``on_token`` asks to stop, the request is aborted. ``cache`` is not used (module docstring)."""
        from tensorrt_llm import SamplingParams

        check_llmapi_prompt(prompt, self.hidden_size)
        if prompt.video_token_id != self.video_token_id:
            raise ValueError(
                f"video_token_id {prompt.video_token_id} differs from the model's "
                f"video_token_index {self.video_token_id}"
            )
        embedding = prompt.embeds_torch()
        text = self._llm.tokenizer.decode(prompt.input_ids)
        request = build_llmapi_request(prompt, text, embedding)
        params = SamplingParams(max_tokens=max_new_tokens, **llmapi_sampling(sampling))
        start = time.perf_counter()
        first_token_at, emit = None, TokenEmitter(on_token)
        for output in self._llm.generate_async(request, sampling_params=params, streaming=True):
            first_token_at = first_token_at or time.perf_counter()
            if emit(list(output.outputs[0].token_ids)):
                output.abort()
                break
        end = time.perf_counter()
        tokens = list(output.outputs[0].token_ids)
        return Generation(
            token_ids=tokens[:emit.sent] if emit.stopped else tokens,
            prefill_s=first_token_at - start,
            decode_s=end - first_token_at,
            extra={"input_length": prompt.sequence_length,
                   "video_tokens": prompt.video_embeds.shape[0]},
            stopped=emit.stopped,
        )
