"""transformers backend: LLaVA-OneVision's LLM generating from ``inputs_embeds`` (needs torch).

Greedy decoding is a plain loop (prefill once, then one token at a time on the KV cache), so
prefill and decode are timed apart and original position ids can be passed through.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..checkpoint import check_checkpoint
from ..errors import UserError
from .base import Generation, TokenCallback, VideoPrompt


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

    def generate(self, prompt: VideoPrompt, max_new_tokens: int, on_token: TokenCallback | None = None) -> Generation:
        """Greedy decoding. Attention runs on the flash / memory-efficient kernels, not cuDNN's: cuDNN
        builds an execution plan for every new sequence length, which cost the first question of each
        new length ~40 ms of prefill (measured on an H200 at 7B geometry)."""
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from transformers import DynamicCache

        if prompt.sequence_length + max_new_tokens > self.max_context:
            raise UserError(f"the prompt needs {prompt.sequence_length} + {max_new_tokens} new tokens, more than the "
                            f"model's context of {self.max_context}; prune harder or ask a shorter question")
        backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        with torch.no_grad(), sdpa_kernel(backends):
            start = time.perf_counter()
            positions = self.position_ids(prompt)
            cache = DynamicCache()
            out = self.model(inputs_embeds=self.embed(prompt), position_ids=positions, use_cache=True,
                             logits_to_keep=1, **{self.cache_argument: cache})
            token = int(out.logits[0, -1].argmax())
            _sync(self.device)
            prefill = time.perf_counter() - start
            tokens, next_position = [token], positions[0, -1] + 1
            if on_token is not None:
                on_token(token)
            while len(tokens) < max_new_tokens and token not in self.eos_ids:
                step = torch.tensor([[token]], device=self.device)
                out = self.model(input_ids=step, position_ids=next_position.view(1, 1), use_cache=True,
                                 **{self.cache_argument: cache})
                token, next_position = int(out.logits[0, -1].argmax()), next_position + 1
                tokens.append(token)
                if on_token is not None:
                    on_token(token)
            _sync(self.device)
        return Generation(token_ids=tokens, prefill_s=prefill, decode_s=time.perf_counter() - start - prefill)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
