#!/usr/bin/env python3
"""End-to-end prefill at Qwen2-7B geometry: all video tokens vs MMG-Vid pruning + pruned prefill.

Model: Qwen2ForCausalLM from a Qwen2Config (hidden 3584, 28 layers, 28 heads, 4 KV heads,
intermediate 18944, vocab 152064, rope theta 1e6), bf16, SDPA, random weights: built on the meta
device, ``to_empty(device="cuda")``, parameters drawn N(0, 0.02) (norm weights 1), rotary buffers
rebuilt. Input: ``inputs_embeds`` = video tokens (T*196) + 1 newline + --text-tokens text embeddings.

Prefill = one forward pass, ``use_cache=True``, ``logits_to_keep=1``. Timed with CUDA events,
median (and p90) of --iterations runs after --warmup.

For each ratio and each pruner form in --prune-forms (default: CUDA-graph replay of the eager
PruningGraph, and of the torch.compile'd one, both on bf16 features) the pruner is timed alone;
then the pruned prefill (K + 1 + text tokens) alone and, per form, the two back to back in one timed
region ("prune + prefill": pruner, torch.cat of kept + newline + text, forward) are timed
interleaved in the same loop (so that clock drift hits them alike).

  speedup without pruning = full prefill / pruned prefill
  speedup with pruning    = full prefill / (prune + prefill)
  ratio                   = with / without      (target >= 0.97 at 25 %)

GPU:   python scripts/bench_prefill.py --out-dir $OUT
Smoke: python scripts/bench_prefill.py --smoke    (tiny Qwen2 on the CPU, eager pruner)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from _bench_common import (capture_graph, environment, make_video, markdown_table, print_environment,
                           setup_path, time_any, time_interleaved, write_json)

setup_path()

import torch  # noqa: E402

from mmg_export.prune import PruningGraph  # noqa: E402

FORMS = ["eager", "cudagraph", "compiled", "compiled+cudagraph"]


def qwen2_config(args):
    from transformers import Qwen2Config

    config = Qwen2Config(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, intermediate_size=args.intermediate,
                         vocab_size=args.vocab, rope_theta=1e6, max_position_embeddings=32768,
                         tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    return config


def build_model(config, device: torch.device, dtype: torch.dtype):
    """Qwen2ForCausalLM with random weights, without CPU initialisation."""
    from transformers import Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    model = model.to(dtype)
    model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=generator)
        # non-persistent buffers are garbage after to_empty: rebuild the rotary embedding (fp32)
        model.model.rotary_emb = type(model.model.rotary_emb)(config=config).to(device)
    return model.eval()


def make_pruner(form: str, graph, video, args):
    """A zero-argument callable returning (kept, indices) for one PruningGraph form."""
    fn = graph
    if form.startswith("compiled"):
        fn = torch.compile(graph, mode=None if args.compile_mode == "default" else args.compile_mode, dynamic=False)
    if form.endswith("cudagraph"):
        cg, outputs = capture_graph(fn, video.clone())

        def replay():
            cg.replay()
            return outputs
        return replay
    return lambda: fn(video)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.10, 0.15, 0.25, 0.50])
    parser.add_argument("--tokens", type=int, default=196, help="video tokens per frame")
    parser.add_argument("--text-tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=3584)
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--heads", type=int, default=28)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=18944)
    parser.add_argument("--vocab", type=int, default=152064)
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--prune-iterations", type=int, default=100)
    parser.add_argument("--prune-forms", nargs="+", default=["cudagraph", "compiled+cudagraph"], choices=FORMS)
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if args.smoke:
        args.frames, args.ratios, args.tokens = [2, 4], [0.25, 0.5], 16
        args.hidden, args.layers, args.heads, args.kv_heads, args.intermediate, args.vocab = 64, 2, 4, 2, 128, 256
        args.text_tokens, args.iterations, args.warmup, args.prune_iterations = 8, 3, 1, 3
    if not cuda and any("cudagraph" in form for form in args.prune_forms):
        print(f"note: {args.prune_forms} need CUDA; using eager and compiled on the CPU")
        args.prune_forms = sorted({form.replace("+cudagraph", "").replace("cudagraph", "eager") for form in args.prune_forms})
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    env = environment()
    print_environment(env)

    config = qwen2_config(args)
    t0 = time.perf_counter()
    model = build_model(config, device, dtype)
    if cuda:
        torch.cuda.synchronize()
    print(f"model built in {time.perf_counter() - t0:.1f} s, attention {model.config._attn_implementation}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters", flush=True)

    def prefill(embeds):
        return model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)

    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    newline = (torch.randn(1, args.hidden, generator=gen) * 0.5).to(device, dtype)
    text = (torch.randn(args.text_tokens, args.hidden, generator=gen) * 0.02).to(device, dtype)
    rows, results = [], []
    with torch.inference_mode():
        for frames in args.frames:
            video = make_video(frames, args.tokens, args.hidden, args.seed + frames).to(device, dtype)
            full = torch.cat([video.reshape(-1, args.hidden), newline, text]).unsqueeze(0)
            logits = prefill(full).logits
            assert logits.shape[1] == 1, logits.shape
            full_stats = time_any(lambda: prefill(full), args.iterations, args.warmup, cuda)
            n_full = full.shape[1]
            print(f"T={frames}: full prefill {n_full} tokens: {full_stats['median_ms']:.2f} ms", flush=True)
            results.append({"frames": frames, "ratio": 1.0, "tokens": n_full, "prefill": full_stats})
            rows.append((frames, "all", n_full, "-", "-", full_stats["median_ms"], full_stats["p90_ms"], "-", "-",
                         "1.00x", "-", "-", "-"))
            del full
            for ratio in args.ratios:
                graph = PruningGraph(frames, args.tokens, args.hidden, ratio).to(device).eval()
                pruners, prune_stats = {}, {}
                for form in args.prune_forms:
                    pruners[form] = make_pruner(form, graph, video, args)
                    prune_stats[form] = time_any(pruners[form], args.prune_iterations, 10, cuda)
                first = pruners[args.prune_forms[0]]
                kept, index = first()
                same = {form: torch.equal(pruners[form]()[1], index) for form in args.prune_forms}
                embeds = torch.cat([kept, newline, text]).unsqueeze(0)
                n_pruned = embeds.shape[1]

                def pruned_then_prefill(prune):
                    kept, _ = prune()
                    return prefill(torch.cat([kept, newline, text]).unsqueeze(0))

                fns = {"prefill": lambda: prefill(embeds)}
                for form in args.prune_forms:
                    fns[form] = lambda prune=pruners[form]: pruned_then_prefill(prune)
                timed = time_interleaved(fns, args.iterations, args.warmup, cuda)
                pruned_stats = timed["prefill"]
                without = full_stats["median_ms"] / pruned_stats["median_ms"]
                entry = {"frames": frames, "ratio": ratio, "tokens": n_pruned, "K": graph.keep,
                         "prefill": pruned_stats, "speedup_without": without, "forms": {}}
                for form in args.prune_forms:
                    both = timed[form]
                    with_ = full_stats["median_ms"] / both["median_ms"]
                    summed = full_stats["median_ms"] / (prune_stats[form]["median_ms"] + pruned_stats["median_ms"])
                    entry["forms"][form] = {"prune": prune_stats[form], "prune_plus_prefill": both,
                                            "speedup_with": with_, "speedup_with_summed": summed,
                                            "ratio_with_without": with_ / without, "same_indices": same[form]}
                    print(f"T={frames} ratio={ratio:.2f} {form}: {n_pruned} tokens, prune {prune_stats[form]['median_ms']:.3f} ms, "
                          f"prefill {pruned_stats['median_ms']:.2f} ms, prune+prefill {both['median_ms']:.2f} ms, "
                          f"speedup {without:.2f}x / {with_:.2f}x (ratio {with_ / without:.3f}; from summed medians "
                          f"{summed / without:.3f})", flush=True)
                    rows.append((frames, f"{ratio:.2f}", n_pruned, form, prune_stats[form]["median_ms"],
                                 pruned_stats["median_ms"], pruned_stats["p90_ms"], both["median_ms"], both["p90_ms"],
                                 f"{without:.2f}x", f"{with_:.2f}x", f"{with_ / without:.3f}", f"{summed / without:.3f}"))
                results.append(entry)
                del graph, pruners, embeds, fns
                if cuda:
                    torch.cuda.empty_cache()
            del video

    headers = ["frames", "kept", "LLM tokens", "pruner form", "prune ms", "prefill ms", "prefill p90", "prune+prefill ms",
               "prune+prefill p90", "speedup w/o pruning", "speedup with pruning", "with / w/o",
               "with / w/o (summed medians)"]
    title = (f"# Prefill, Qwen2 geometry (hidden {args.hidden}, {args.layers} layers, {args.heads}/{args.kv_heads} heads, "
             f"vocab {args.vocab}), {args.dtype}, SDPA, device {env['device']}")
    table = markdown_table(headers, rows)
    if args.out_dir:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.out_dir) / "prefill.md").write_text(title + "\n\n" + table + "\n")
        write_json(str(Path(args.out_dir) / "prefill.json"), {"env": env, "args": vars(args), "results": results})
    print()
    print(title)
    print(table)


if __name__ == "__main__":
    main()
