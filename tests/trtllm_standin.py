"""Stand-ins for the parts of ``tensorrt_llm`` the two backends call, checking names and shapes.

TensorRT-LLM cannot be installed here. These stand-ins take exactly the keyword names that the
cited sources define and return what those sources return (docs/unverified.md has the
citations): ``ModelRunnerCpp.generate`` / ``ModelRunner.generate`` with ``streaming=True,
return_dict=True, output_sequence_lengths=True`` yield dicts with ``output_ids`` (batch, beams,
max_seq_len) int32, the prompt then the new tokens then ``end_id`` padding, and
``sequence_lengths`` (batch, beams); ``LLM.generate_async(inputs, sampling_params=,
streaming=True)`` hands ``inputs["multi_modal_embeddings"]`` to the registered input processor's
``attach_multimodal_embeddings(inputs, multimodal_embedding, sampling_params)`` and yields
``GenerationResult`` objects whose ``outputs[0].token_ids`` grow by one token per step.
Both generate ``new_tokens`` (a list the test sets) and record what they were given.

As in TensorRT-LLM 1.x, ``LLM(model=dir)`` resolves ``architectures[0]`` of ``dir/config.json``
when it is constructed (``AutoModelForCausalLM.from_config`` raises ``ValueError: Unknown
architecture for AutoModelForCausalLM: <name>`` for one not registered with
``register_auto_model``) and picks the input processor registered for that model class then
(``create_input_processor``): a registration after ``LLM(...)`` is never seen.
"""
from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ENGINE_SAMPLING_KEYWORDS = {
    # the SamplingConfig fields ModelRunnerCpp.generate takes from **kwargs (its accepted_parameters;
    # any other keyword is dropped there without a word) and that the Python ModelRunner's
    # SamplingConfig (runtime/generation.py) has too
    "num_beams", "top_k", "top_p", "temperature", "repetition_penalty", "presence_penalty",
    "frequency_penalty", "random_seed",
}
ENGINE_GENERATE_KEYWORDS = {
    # ModelRunnerCpp.generate's own keywords (tensorrt_llm/runtime/model_runner_cpp.py) ...
    "prompt_table", "prompt_tasks", "streaming", "max_new_tokens", "end_id", "pad_id", "return_dict",
    "output_sequence_lengths", "input_token_extra_ids",
} | ENGINE_SAMPLING_KEYWORDS
PYTHON_GENERATE_KEYWORDS = ENGINE_GENERATE_KEYWORDS - {"input_token_extra_ids"}  # "only available with cpp session"


@dataclass
class Calls:
    new_tokens: list[int] = field(default_factory=lambda: [7, 8, 9])
    from_dir: dict = field(default_factory=dict)
    generate: dict = field(default_factory=dict)
    llm: dict = field(default_factory=dict)
    attached: tuple | None = None
    drained: bool = False
    aborted: bool = False
    forward: dict = field(default_factory=dict)
    registered: dict = field(default_factory=dict)


CALLS = Calls()


# --- engine path: tensorrt_llm.runtime ---------------------------------------------------------


class _Runner:
    max_seq_len = 64
    keywords = ENGINE_GENERATE_KEYWORDS

    @classmethod
    def from_dir(cls, engine_dir: str, *, rank: int = 0, **kwargs: Any) -> _Runner:
        CALLS.from_dir = {"class": cls.__name__, "engine_dir": engine_dir, "rank": rank, **kwargs}
        return cls()

    def generate(self, batch_input_ids: list[torch.Tensor], **kwargs: Any):
        unknown = set(kwargs) - self.keywords
        assert not unknown, f"generate() got keywords TensorRT-LLM does not define: {sorted(unknown)}"
        assert isinstance(batch_input_ids, list) and all(ids.dim() == 1 for ids in batch_input_ids)
        table = kwargs["prompt_table"]
        assert isinstance(table, torch.Tensor) and table.dim() == 3 and table.shape[0] == 1
        assert isinstance(kwargs["prompt_tasks"], str)
        CALLS.generate = {"batch_input_ids": [ids.tolist() for ids in batch_input_ids], **kwargs}
        assert kwargs["streaming"] and kwargs["return_dict"] and kwargs["output_sequence_lengths"]
        return self._stream(batch_input_ids[0].tolist(), kwargs["end_id"], kwargs["max_new_tokens"])

    def _stream(self, prompt: list[int], end_id: int, max_new_tokens: int):
        tokens = list(prompt)
        for token in CALLS.new_tokens[:max_new_tokens]:
            tokens.append(token)
            padded = tokens + [end_id] * (self.max_seq_len - len(tokens))
            yield {"output_ids": torch.tensor([[padded]], dtype=torch.int32),
                   "sequence_lengths": torch.tensor([[len(tokens)]], dtype=torch.int32)}
        CALLS.drained = True


class ModelRunnerCpp(_Runner):
    @classmethod
    def from_dir(cls, engine_dir: str, *, rank: int = 0, kv_cache_free_gpu_memory_fraction: float | None = None,
                 enable_chunked_context: bool = False, kv_cache_enable_block_reuse: bool = False) -> ModelRunnerCpp:
        return super().from_dir(engine_dir, rank=rank, kv_cache_free_gpu_memory_fraction=kv_cache_free_gpu_memory_fraction,
                                enable_chunked_context=enable_chunked_context,
                                kv_cache_enable_block_reuse=kv_cache_enable_block_reuse)


class ModelRunner(_Runner):
    keywords = PYTHON_GENERATE_KEYWORDS

    @classmethod
    def from_dir(cls, engine_dir: str, rank: int = 0) -> ModelRunner:
        return super().from_dir(engine_dir, rank=rank)


# --- LLM API: tensorrt_llm.LLM and the registries the adapter uses ------------------------------


@dataclass(kw_only=True)
class SamplingParams:
    """The fields of tensorrt_llm/sampling_params.py that the backend may set (a keyword it does not
    define is a TypeError, as with the real kw_only dataclass)."""

    max_tokens: int = 32
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    temperature: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    add_special_tokens: bool = True


@dataclass
class KvCacheConfig:
    enable_block_reuse: bool = True
    free_gpu_memory_fraction: float | None = None


@dataclass
class MultimodalPlaceholderMetadata:
    placeholder_map: dict = field(default_factory=dict)


def register_input_processor(processor_class, model_type: str, placeholder_metadata=None):
    def register(model_class):
        CALLS.registered.update(processor=processor_class, model_type=model_type,
                                placeholders=placeholder_metadata.placeholder_map)
        return model_class
    return register


def register_auto_model(name: str):
    def register(model_class):
        CALLS.registered.update(architecture=name, model=model_class)
        return model_class
    return register


def fuse_input_embeds(embedding_layer, input_ids: torch.Tensor, mm_embeds: list[torch.Tensor],
                      mm_token_ids: torch.Tensor):
    """As documented: text ids embedded, positions holding an mm token id filled with mm_embeds in order;
    returns (None, inputs_embeds)."""
    embeds = embedding_layer(input_ids.clamp(max=embedding_layer.num_embeddings - 1))
    mask = torch.isin(input_ids, mm_token_ids)
    embeds[mask] = torch.cat(mm_embeds).to(embeds.dtype)
    return None, embeds


class Qwen2ForCausalLM(torch.nn.Module):
    def __init__(self, hidden_size: int, video_token_index: int) -> None:
        super().__init__()
        self.model = types.SimpleNamespace(embed_tokens=torch.nn.Embedding(16, hidden_size))
        self.model_config = types.SimpleNamespace(
            pretrained_config=types.SimpleNamespace(video_token_index=video_token_index))

    def forward(self, attn_metadata, input_ids=None, position_ids=None, inputs_embeds=None,
                return_context_logits=False, **kwargs):
        CALLS.forward = {"input_ids": input_ids, "inputs_embeds": inputs_embeds}


class CompletionOutput:
    def __init__(self) -> None:
        self.token_ids: list[int] = []


class GenerationResult:
    def __init__(self, steps: list[int]) -> None:
        self.outputs = [CompletionOutput()]
        self._steps = list(steps)

    def __iter__(self):
        return self

    def __next__(self) -> GenerationResult:
        if not self._steps or CALLS.aborted:
            raise StopIteration
        self.outputs[0].token_ids.append(self._steps.pop(0))
        return self

    def abort(self) -> None:
        CALLS.aborted = True


class LLM:
    def __init__(self, model: str, **kwargs: Any) -> None:
        CALLS.llm = {"model": model, **kwargs}
        self.tokenizer = types.SimpleNamespace(decode=lambda ids: " ".join(map(str, ids)))
        architecture = json.loads((Path(model) / "config.json").read_text())["architectures"][0]
        if CALLS.registered.get("architecture") != architecture:
            raise ValueError(f"Unknown architecture for AutoModelForCausalLM: {architecture}")
        self.input_processor = CALLS.registered["processor"](model, None, self.tokenizer)

    def generate_async(self, inputs: dict, sampling_params: SamplingParams | None = None, streaming: bool = False):
        assert set(inputs) <= {"prompt", "prompt_token_ids", "multi_modal_embeddings", "mm_processor_kwargs"}
        ids, extra = self.input_processor.attach_multimodal_embeddings(
            inputs, inputs["multi_modal_embeddings"], sampling_params)
        CALLS.attached = (ids, extra, sampling_params, streaming)
        return GenerationResult(CALLS.new_tokens[:sampling_params.max_tokens])


def install(monkeypatch) -> Calls:
    """Put the stand-in ``tensorrt_llm`` packages into sys.modules for one test; returns the recorder."""
    global CALLS
    CALLS = Calls()
    modules = {name: types.ModuleType(name) for name in (
        "tensorrt_llm", "tensorrt_llm.runtime", "tensorrt_llm.llmapi", "tensorrt_llm.inputs",
        "tensorrt_llm._torch", "tensorrt_llm._torch.models", "tensorrt_llm._torch.models.modeling_qwen",
        "tensorrt_llm._torch.models.modeling_utils", "tensorrt_llm._torch.models.modeling_multimodal_utils")}
    own = sys.modules[__name__]
    contents = {
        "tensorrt_llm": ["LLM", "SamplingParams"], "tensorrt_llm.runtime": ["ModelRunnerCpp", "ModelRunner"],
        "tensorrt_llm.llmapi": ["KvCacheConfig"],
        "tensorrt_llm.inputs": ["MultimodalPlaceholderMetadata", "register_input_processor"],
        "tensorrt_llm._torch.models.modeling_qwen": ["Qwen2ForCausalLM"],
        "tensorrt_llm._torch.models.modeling_utils": ["register_auto_model"],
        "tensorrt_llm._torch.models.modeling_multimodal_utils": ["fuse_input_embeds"],
    }
    for name, module in modules.items():
        for attribute in contents.get(name, []):
            setattr(module, attribute, getattr(own, attribute))
        monkeypatch.setitem(sys.modules, name, module)
    return CALLS
