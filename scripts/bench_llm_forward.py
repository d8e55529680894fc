#!/usr/bin/env python3
"""Where a follow-up's prefill goes: one transformers LLM forward of n new tokens, with and without a
cached prefix, timed on the GPU (median of 10 after 3 warm-ups), then a profile of one 44-token forward.

The follow-up figures of BENCHMARKS.md section 6 are bound by this forward's fixed cost (kernel launches
from Python), not by the number of new tokens.

GPU: python scripts/bench_e2e.py --stage build --work /tmp/e2e --media .media
     python scripts/bench_llm_forward.py --checkpoint /tmp/e2e/checkpoint
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import DynamicCache

from mmg_runtime.llm.hf import TransformersBackend


def median_ms(forward, runs: int = 10) -> float:
    for _ in range(3):
        forward()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        forward()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[runs // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="LLaVA-OneVision checkpoint (bench_e2e.py --stage build)")
    parser.add_argument("--prefix", type=int, default=1694, help="cached prompt tokens (a follow-up's)")
    args = parser.parse_args()
    llm = TransformersBackend(args.checkpoint)
    model, device = llm.model, llm.device
    hidden = model.config.text_config.hidden_size

    def forward(embeds, start: int, layers=None):
        positions = torch.arange(start, start + embeds.shape[1], device=device)[None]
        cache = DynamicCache(layers) if layers is not None else DynamicCache()
        return model(inputs_embeds=embeds, position_ids=positions, use_cache=True, logits_to_keep=1,
                     **{llm.cache_argument: cache})

    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    with torch.no_grad(), sdpa_kernel(backends):
        prefix = torch.randn(1, args.prefix, hidden, device=device, dtype=model.dtype)
        cache = DynamicCache()
        model(inputs_embeds=prefix, position_ids=torch.arange(args.prefix, device=device)[None], use_cache=True,
              logits_to_keep=1, **{llm.cache_argument: cache})
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        for new in (1, 8, 44):
            embeds = torch.randn(1, new, hidden, device=device, dtype=model.dtype)
            cached = median_ms(lambda: forward(embeds, args.prefix, layers))
            cold = median_ms(lambda: forward(embeds, 0))
            print(f"{new} new tokens: {cached:.2f} ms with {args.prefix} cached, {cold:.2f} ms without a cache")
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=activities) as profile:
            forward(embeds, args.prefix, layers)
            torch.cuda.synchronize()
    print(profile.key_averages().table(sort_by="cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
