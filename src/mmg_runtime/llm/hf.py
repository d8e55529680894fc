"""transformers backend: LLaVA-OneVision's LLM generating from ``inputs_embeds`` (needs torch).

Decoding is a plain loop (prefill once, then one token at a time on the KV cache), so prefill and
decode are timed apart and original position ids can be passed through. The next token is chosen
by :mod:`.torch_sampling` (transformers' logits processors); greedy without penalties stays a plain
argmax.

KV prefix reuse (:mod:`.kv_prefix`): with a ``cache`` and a prompt that has a ``video_key``, the
longest stored prefix of the prompt's expanded sequence is not prefilled again; its tensors enter a
new ``DynamicCache`` (whose appends make new tensors: stored ones are never written), and after
generating, the KV of prompt + answer (less its last token, never fed back) is stored in place of
the prefix it extends.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..checkpoint import check_checkpoint
from ..errors import UserError
from .base import GREEDY, Generation, Sampling, TokenCallback, VideoPrompt
from .kv_prefix import KvPrefix, expanded_ids, longest_prefix, store_prefix

if TYPE_CHECKING:
    from ..cache import CacheStore


class TransformersBackend:
    """``LlavaOnevisionForConditionalGeneration`` from a local directory, on CPU or CUDA."""

    name = "transformers"

    def __init__(self, model_dir: str | Path, device: str | None = None, dtype: str | None = None) -> None:
        import importlib.util
        import inspect

        import torch
        from transformers import LlavaOnevisionForConditionalGeneration
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        model_dir = Path(model_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if self.device == "cuda" else torch.float32)
        check_checkpoint(model_dir, torch_dtype, self.device)
        placement = {"device_map": self.device} if importlib.util.find_spec("accelerate") else {}
        self.model = LlavaOnevisionForConditionalGeneration.from_pretrained(  # straight onto the GPU where it can
            model_dir, dtype=torch_dtype, local_files_only=True, **placement).to(self.device).eval()
        text = self.model.config.text_config
        self.max_context = int(text.max_position_embeddings)
        self.eos_ids = _as_list(self.model.generation_config.eos_token_id)
        self.owner = (str(model_dir.resolve()), str(torch_dtype), self.device)  # whose KV a cache entry is
        # transformers renamed past_key_values to cache (5.2x); use whichever this version takes
        parameters = inspect.signature(self.model.forward).parameters
        self.cache_argument = "cache" if "cache" in parameters else "past_key_values"

    def embed(self, prompt: VideoPrompt):
        """(1, L, H) prompt embeddings with the placeholder replaced by the video embeddings."""
        import torch

        at = prompt.placeholder_index()
        ids = torch.tensor([prompt.input_ids], device=self.device)
        text = self.model.get_input_embeddings()(ids)
        video = prompt.embeds_torch().to(self.device, text.dtype)[None]  # no copy when already there
        return torch.cat([text[:, :at], video, text[:, at + 1:]], dim=1)

    def position_ids(self, prompt: VideoPrompt):
        """(1, L) positions: contiguous, or the kept tokens' original ones when the prompt has them."""
        import torch

        at, count = prompt.placeholder_index(), prompt.video_embeds.shape[0]
        after = len(prompt.input_ids) - at - 1
        if prompt.video_position_ids is None:
            return torch.arange(at + count + after, device=self.device)[None]
        video = at + torch.as_tensor(prompt.video_position_ids, device=self.device)
        tail = video[-1] + 1 + torch.arange(after, device=self.device)
        return torch.cat([torch.arange(at, device=self.device), video, tail])[None]

    def generate(self, prompt: VideoPrompt, max_new_tokens: int, on_token: TokenCallback | None = None,
                 sampling: Sampling = GREEDY, cache: CacheStore | None = None) -> Generation:
        """At most ``max_new_tokens`` tokens, chosen as ``sampling`` says; ``on_token`` returning True
        stops after that token. With ``cache`` and ``prompt.video_key``, a stored prefix is reused and
        this prompt's KV kept (see the module docstring). Attention runs on the flash /
        memory-efficient kernels, not cuDNN's: cuDNN builds an execution plan for every new sequence
        length, which cost the first question of each new length ~40 ms of prefill (measured on an
        H200 at 7B geometry)."""
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel

        from .torch_sampling import TokenChooser

        if prompt.sequence_length + max_new_tokens > self.max_context:
            raise UserError(f"the prompt needs {prompt.sequence_length} + {max_new_tokens} new tokens, more than the "
                            f"model's context of {self.max_context}; prune harder or ask a shorter question")
        reusing = cache is not None and prompt.video_key is not None
        backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        with torch.no_grad(), sdpa_kernel(backends):
            start = time.perf_counter()
            choose = TokenChooser(sampling, prompt.input_ids, self.device)
            positions = self.position_ids(prompt)
            ids, position_list = expanded_ids(prompt), positions[0].cpu().numpy()
            entry, cached = longest_prefix(cache, prompt, self.owner, ids, position_list) if reusing else (None, 0)
            kv = self.kv_cache(entry, cached)
            out = self.model(inputs_embeds=self.embed(prompt)[:, cached:], position_ids=positions[:, cached:],
                             use_cache=True, logits_to_keep=1, **{self.cache_argument: kv})
            token = choose(out.logits[0, -1])
            _sync(self.device)
            prefill = time.perf_counter() - start
            tokens, next_position = [token], positions[0, -1] + 1
            stopped = on_token is not None and on_token(token) is True
            while not stopped and len(tokens) < max_new_tokens and token not in self.eos_ids:
                step = torch.tensor([[token]], device=self.device)
                out = self.model(input_ids=step, position_ids=next_position.view(1, 1), use_cache=True,
                                 **{self.cache_argument: kv})
                token, next_position = choose(out.logits[0, -1]), next_position + 1
                tokens.append(token)
                stopped = on_token is not None and on_token(token) is True
            _sync(self.device)
            decode = time.perf_counter() - start - prefill
        if reusing:
            self.keep_prefix(cache, prompt, ids, position_list, tokens, kv)
        return Generation(token_ids=tokens, prefill_s=prefill, decode_s=decode, cached_tokens=cached,
                          stopped=stopped)

    def kv_cache(self, entry: KvPrefix | None, length: int):
        """A new ``DynamicCache`` holding the first ``length`` tokens of ``entry`` (views: the stored
        tensors are copied into the cache's own, never written), or an empty one."""
        from transformers import DynamicCache

        if entry is None:
            return DynamicCache()
        return DynamicCache([(keys[:, :, :length], values[:, :, :length]) for keys, values in entry.layers])

    def keep_prefix(self, cache: CacheStore, prompt: VideoPrompt, ids, positions, tokens: list[int], kv) -> bool:
        """Store the KV of prompt + ``tokens[:-1]`` (what ``kv`` holds) under the prompt's video key.

        ids, positions: (L,) int64 arrays of the expanded prompt. nbytes counts the storage of every
        tensor kept (the real bytes held)."""
        import numpy as np

        fed = len(tokens) - 1
        layers = tuple((layer.keys, layer.values) for layer in kv.layers)
        if kv.get_seq_length() != len(ids) + fed:
            return False  # a cache layout this code does not know (e.g. sliding layers): keep nothing
        entry = KvPrefix(owner=self.owner,
                         ids=np.concatenate([ids, np.asarray(tokens[:-1], np.int64)]),
                         positions=np.concatenate([positions, positions[-1] + 1 + np.arange(fed, dtype=np.int64)]),
                         layers=layers)
        nbytes = sum(tensor.untyped_storage().nbytes() for pair in layers for tensor in pair)
        return store_prefix(cache, prompt, entry, nbytes)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
