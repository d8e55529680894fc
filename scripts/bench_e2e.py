#!/usr/bin/env python3
"""The user's path end to end at LLaVA-OneVision-7B geometry: question to first token through our own API.

Stage ``build``:
  1. a random-weight LLaVA-OneVision-7B-geometry checkpoint, made on the GPU in bf16 and written with
     ``save_pretrained``: SigLIP so400m (26 layers, 1152 wide, 384 px, patch 14), projector
     1152 -> 3584 -> 3584, Qwen2-7B (28 layers, hidden 3584, 28 heads, 4 KV heads, intermediate
     18944, vocab 152064), with the built-in character tokenizer;
  2. ``mmg-export build --model DIR --target h100 --backend onnxruntime --ratio 0.25`` and ``--ratio 1.0``
     (on an H100 the pruner is then ``pruner.pt2``, compiled by TorchInductor: the default there).
Stage ``measure`` (same machine, right after):
  3. ``Pipeline.from_artifacts`` for both ratios and both decoders (nvdec, pyav), one transformers LLM
     shared, without a cache (``cache_memory=0``: every question pays the whole pipeline); load time
     (with the warm-up), the first question after load, then --runs questions; every stage and
     question to first token, medians; 25 % against 100 % in the same pipeline;
  3b. conversations (issue 25) through the user's path: ``Pipeline.conversation`` on a pipeline with
     the default cache (sized for the device), a first question then --follow-ups follow-ups about the
     same clip, --runs conversations each in a namespace of its own (so each first question is cold);
     the cache's bytes against its budget; and ``mmg-export run --interactive --json`` in its own
     process, the questions on stdin;
  4. a live stream (``LiveStream``, --sample-fps, real time) on the long clip: frames encoded and
     dropped, then questions about the 32-frame window, each after a new frame has arrived (the window
     moved: pruned and prefilled again), each followed at once by a follow-up in a conversation (the
     same window: reused), against encoding those 32 frames and prefilling all their tokens at
     question time;
  5. the encoder as deployed (ONNX Runtime CUDA session, bound on the device) against PyTorch eager on
     the same weights and pixels, 32 frames; the artifact directory's size against the weights'.
Prints markdown tables, writes bench_e2e.json to --out.

GPU:   python scripts/bench_e2e.py --stage all --work /tmp/e2e --media .media --out $OUT
Smoke: python scripts/bench_e2e.py --smoke --work /tmp/e2e-smoke --media .media   (tiny geometry, CPU)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _bench_common import FOLLOW_UPS, environment, markdown_table, print_environment, time_any

import numpy as np
import torch

QUESTION = "What happens in this video?"
SEVEN_B = dict(
    vision=dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
                num_attention_heads=16, image_size=384, patch_size=14),
    text=dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
              num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768,
              rope_theta=1e6, tie_word_embeddings=False))
TINY = dict(
    vision=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, image_size=384, patch_size=14),
    text=dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=1024, max_position_embeddings=32768, rope_theta=1e6,
              tie_word_embeddings=False))


def make_checkpoint(path: Path, geometry: dict, device: str) -> float:
    """Write a random-weight LLaVA-OneVision checkpoint of ``geometry`` to ``path``; returns seconds."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    from mmg_export.models.llava import tiny_tokenizer

    start = time.perf_counter()
    tokenizer = tiny_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ("<|im_end|>", "<|endoftext|>", "<image>",
                                                                        "<video>")}
    text = dict(geometry["text"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    config = LlavaOnevisionConfig(vision_config=geometry["vision"], text_config=text,
                                  image_token_index=ids["<image>"], video_token_index=ids["<video>"],
                                  vision_feature_layer=-1, vision_feature_select_strategy="full")
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlavaOnevisionForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    del model
    return time.perf_counter() - start


def build(args, checkpoint: Path) -> dict:
    from mmg_export.cli import main

    times = {}
    for ratio in (0.25, 1.0):
        out = args.work / f"artifacts-r{ratio:g}"
        start = time.perf_counter()
        command = ["build", "--model", str(checkpoint), "--target", args.target, "--backend", "onnxruntime",
                   "--ratio", str(ratio), "--out", str(out), "--overwrite"]
        if main(command) != 0:
            raise SystemExit(f"build failed: {' '.join(command)}")
        times[f"build r{ratio:g} s"] = round(time.perf_counter() - start, 1)
    return times


def summary(values: list[float]) -> float:
    return round(statistics.median(values) * 1e3, 2)


def measure_clip(pipeline, video, runs: int) -> dict:
    """First question after load, then ``runs`` more: median of every stage (ms)."""
    first = pipeline.ask(video, QUESTION, max_new_tokens=8)
    answers = [pipeline.ask(video, QUESTION, max_new_tokens=8) for _ in range(runs)]
    stages = {name: summary([getattr(a.timings, name) for a in answers])
              for name in ("decode", "preprocess", "encode", "prune", "prefill")}
    return {"first_qtft_ms": round(first.timings.question_to_first_token * 1e3, 2),
            "first_stages_ms": {name: round(getattr(first.timings, name) * 1e3, 2)
                                for name in ("decode", "preprocess", "encode", "prune", "prefill")},
            "qtft_ms": summary([a.timings.question_to_first_token for a in answers]),
            "qtft_spread_ms": [round(min(a.timings.question_to_first_token for a in answers) * 1e3, 2),
                               round(max(a.timings.question_to_first_token for a in answers) * 1e3, 2)],
            **stages, "tokens_kept": answers[0].timings.tokens_kept, "note": answers[0].note}


def measure(args, checkpoint: Path) -> dict:
    from mmg_runtime.llm.hf import TransformersBackend
    from mmg_runtime.pipeline import Pipeline

    result: dict = {"env": environment()}
    start = time.perf_counter()
    llm = TransformersBackend(checkpoint)
    result["llm_load_s"] = round(time.perf_counter() - start, 1)
    decoders = ["pyav"] if args.smoke else ["nvdec", "pyav"]
    pipelines = {}
    for decoder in decoders:
        for ratio in (0.25, 1.0):
            pipeline = Pipeline.from_artifacts(args.work / f"artifacts-r{ratio:g}", llm=llm, decoder=decoder,
                                               cache_memory=0)
            pipelines[decoder, ratio] = pipeline
            result[f"load {decoder} r{ratio:g} s (sessions + warm-up)"] = round(pipeline.load_seconds, 2)
    result["providers"] = pipelines[decoders[0], 0.25].providers
    clips = {"bigbuckbunny.mp4 (1280x720, 132 frames)": args.media / "bigbuckbunny.mp4",
             "long_g250.mp4 (1280x720, 55 s, GOP 250)": args.media / "long_g250.mp4",
             "long_g25.mp4 (1280x720, 55 s, GOP 25)": args.media / "long_g25.mp4"}
    rows = []
    for clip, path in clips.items():
        for decoder in decoders:
            for ratio in (0.25, 1.0):
                if "long" in clip and ratio == 1.0 and decoder != decoders[0]:
                    continue
                runs = args.runs if "bigbuckbunny" in clip else max(2, args.runs // 2)
                row = measure_clip(pipelines[decoder, ratio], path, runs)
                rows.append({"clip": clip, "decoder": decoder, "ratio": ratio, **row})
                print(f"{clip} {decoder} r{ratio:g}: {row}", flush=True)
    result["clips"] = rows
    if args.diagnose:
        result["timelines"] = {decoder: timeline(pipelines[decoder, 0.25], args.media / "bigbuckbunny.mp4")
                               for decoder in decoders}
        result["pruner_profile"] = profile_component(args.work / "artifacts-r0.25", "pruner")
        result["encoder_profile"] = profile_component(args.work / "artifacts-r0.25", "encoder")
        result["encoder_variants"] = encoder_variants(args, checkpoint, pipelines[decoders[0], 0.25])
    cached = Pipeline.from_artifacts(args.work / "artifacts-r0.25", llm=llm, decoder=decoders[0])
    result["conversation"] = {clip: measure_conversation(cached, args.media / name, args.runs, args.follow_ups)
                              for clip, name in [("bigbuckbunny.mp4", "bigbuckbunny.mp4"),
                                                 ("long_g25.mp4", "long_g25.mp4")]}
    result["conversation"]["cache"] = {"bytes": cached.cache.nbytes, "budget_bytes": cached.cache.budget_bytes,
                                       "entries": len(cached.cache)}
    print(f"conversation: {result['conversation']}", flush=True)
    result["stream"] = measure_stream(args, cached, pipelines[decoders[0], 1.0])
    result["encoder"] = measure_encoder(pipelines[decoders[0], 0.25], llm)
    result["artifacts"] = artifact_sizes(args.work, llm)
    return result


def measure_conversation(pipeline, video: Path, runs: int, follow_ups: int) -> dict:
    """``runs`` conversations about ``video`` (each in a namespace of its own: a cold first question),
    a first question and ``follow_ups`` follow-ups each: question to first token, prefill, cached tokens."""
    firsts, later = [], []
    for run in range(runs):
        conversation = pipeline.conversation(video, system="You answer questions about videos.",
                                             namespace=f"bench {video.name} {run}")
        firsts.append(conversation.ask(QUESTION, max_new_tokens=8))
        later += [conversation.ask(question, max_new_tokens=8) for question in FOLLOW_UPS[:follow_ups]]
    return {"first_qtft_ms": summary([a.timings.question_to_first_token for a in firsts]),
            "follow_up_qtft_ms": summary([a.timings.question_to_first_token for a in later]),
            "follow_up_qtft_max_ms": round(max(a.timings.question_to_first_token for a in later) * 1e3, 2),
            "follow_up_prefill_ms": summary([a.timings.prefill for a in later]),
            "follow_up_new_tokens": statistics.median(a.prompt_tokens - a.cached_tokens for a in later),
            "follow_up_cached_tokens": statistics.median(a.cached_tokens for a in later),
            "reused": sorted({r for a in later for r in a.reused}),
            "ratio": round(statistics.median(a.timings.question_to_first_token for a in later)
                           / statistics.median(a.timings.question_to_first_token for a in firsts), 3)}


def measure_stream(args, pruned, full) -> dict:
    """A live replay at --sample-fps, then questions about the window, each once a new frame has moved
    it, each followed at once by a follow-up in the same conversation (same window unless a frame came
    in between); against encoding the window's 32 frames and prefilling all their tokens at question
    time (the 100 % pipeline on the same frames)."""
    from mmg_runtime.stream import LiveStream
    from mmg_runtime.video import iter_frames

    source = str(args.media / "long_g25.mp4")
    stream = LiveStream(pruned, source, sample_fps=args.sample_fps, realtime=True).start()
    seconds = args.stream_seconds
    stream.wait(stream_seconds=seconds)
    answers, follow_ups = [], []
    for run in range(args.runs):
        stream.wait(stream_seconds=stream.stamps[-1] + 1 / args.sample_fps)  # the window moved
        conversation = stream.conversation(namespace=f"bench {run}")
        answers.append(conversation.ask(QUESTION, max_new_tokens=8))
        follow_ups.append(conversation.ask(FOLLOW_UPS[0], max_new_tokens=8))
    count = stream.stats.frames_encoded
    stream.stop()
    stats = stream.stats
    samples = [frame.array() for _, frame in iter_frames(source, sample_fps=args.sample_fps)]
    window = np.stack(samples[max(0, count - pruned.frames):count])
    baseline = [full.ask(window, QUESTION, max_new_tokens=8) for _ in range(args.runs)]
    qtft, base = summary([a.timings.question_to_first_token for a in answers]), \
        summary([a.timings.question_to_first_token for a in baseline])
    same_window = [a for a in follow_ups if a.reused]
    return {"sample_fps": args.sample_fps, "stream_seconds": round(stats.stream_seconds, 2),
            "frames_encoded": count, "frames_dropped": stats.frames_dropped,
            "encode_ms_per_frame": round(stats.encode_seconds * 1e3 / max(1, count), 2),
            "window_seconds": round(stats.window_seconds, 2), "qtft_ms": qtft,
            "prune_ms": summary([a.timings.prune for a in answers]),
            "prefill_ms": summary([a.timings.prefill for a in answers]),
            "encode_all_and_prefill_all_ms": base, "speedup": round(base / qtft, 2),
            "follow_up_qtft_ms": summary([a.timings.question_to_first_token for a in follow_ups]),
            "follow_ups_same_window": f"{len(same_window)} of {len(follow_ups)}",
            "follow_up_same_window_qtft_ms": summary([a.timings.question_to_first_token for a in same_window])
            if same_window else None}


def measure_encoder(pipeline, llm) -> dict:
    """32 frames: the deployed ONNX Runtime session (device-bound) against PyTorch eager, same weights and pixels."""
    from mmg_export.models.encoder import VideoEncoder

    device = "cuda" if torch.cuda.is_available() else "cpu"
    frames, size = pipeline.frames, int(pipeline.manifest.extra["image_size"])
    eager = VideoEncoder(llm.model).eval()
    pixels = torch.randn(frames, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device, llm.model.dtype)
    with torch.no_grad():
        reference = eager(pixels).float()
        eager_ms = time_any(lambda: eager(pixels), 20, 3, device == "cuda")["median_ms"]
    session = pipeline.encoder
    inputs = {"pixel_values": _device_tensor(session, pipeline.dtype, pixels)}
    tokens = session.empty((frames, pipeline.manifest.tokens_per_frame, pipeline.manifest.hidden_size), pipeline.dtype)
    outputs = {"video_tokens": tokens}
    ort_ms = time_any(lambda: session.run_bound(inputs, outputs), 20, 3, False)["median_ms"]
    ours = torch.from_numpy(tokens.numpy()).to(device)
    error = float((ours - reference).abs().max() / reference.abs().max())
    return {"frames": frames, "eager_ms": round(eager_ms, 2), "onnxruntime_ms": round(ort_ms, 2),
            "ratio": round(ort_ms / eager_ms, 3), "relative_error": error,
            "providers": session.providers}


def _device_tensor(session, dtype: str, values: torch.Tensor):
    """``values`` as a ``dtype`` tensor on the session's device (bfloat16 through its bit patterns)."""
    from mmg_runtime.tensor import Tensor

    if dtype != "bfloat16":
        return session.upload(values.float().cpu().numpy().astype(dtype))
    bits = values.to(torch.bfloat16).contiguous().view(torch.int16).cpu().numpy()
    tensor = session.empty(tuple(bits.shape), "bfloat16")
    tensor.copy_from(Tensor.from_numpy(bits.view(np.float16)))
    return tensor


class _Recorder:
    """A ChunkEncoder that notes when each chunk starts and ends."""

    def __init__(self, inner, events: list, start: float) -> None:
        self.inner, self.events, self.start = inner, events, start

    def frame_buffer(self, height: int, width: int):
        return self.inner.frame_buffer(height, width)

    def __call__(self, frames, tokens, timings) -> None:
        began = time.perf_counter()
        self.inner(frames, tokens, timings)
        self.events.append(("chunk", round((began - self.start) * 1e3, 1),
                            round((time.perf_counter() - self.start) * 1e3, 1)))


def timeline(pipeline, video) -> dict:
    """When each frame left the decoder and each chunk was preprocessed + encoded, in ms from the question."""
    events: list = []
    start = time.perf_counter()
    reader_frames, encoder = pipeline.reader.frames, pipeline.chunk_encoder

    def frames(plan):
        for item in reader_frames(plan):
            events.append(("frame", round((time.perf_counter() - start) * 1e3, 1)))
            yield item

    pipeline.reader.frames, pipeline.chunk_encoder = frames, _Recorder(encoder, events, start)
    try:
        answer = pipeline.ask(video, QUESTION, max_new_tokens=1)
    finally:
        pipeline.chunk_encoder = encoder
        del pipeline.reader.frames
    return {"events": events, "qtft_ms": round(answer.timings.question_to_first_token * 1e3, 1)}


def profile_component(directory: Path, name: str) -> dict:
    """ONNX Runtime's own profile of a component (CUDA provider, no CUDA graph): which nodes cost what."""
    import onnxruntime

    from _bench_common import ort_profile_summary

    from mmg_runtime.manifest import load_manifest
    from mmg_runtime.sessions import OrtSession

    manifest = load_manifest(directory)
    component = manifest.components[name]
    options = onnxruntime.SessionOptions()
    options.enable_profiling = True
    holder = OrtSession(directory / component.file, manifest.extra["providers"])
    holder.session = onnxruntime.InferenceSession(str(directory / component.file), options,
                                                  providers=[tuple(p) for p in manifest.extra["providers"]])
    shapes = {"frames": manifest.frames}
    inputs = {tensor: _device_tensor(holder, spec.dtype, torch.randn(*[shapes.get(d, d) for d in spec.shape]))
              for tensor, spec in component.inputs.items()}
    outputs = {tensor: holder.empty(tuple(shapes.get(d, d) for d in spec.shape), spec.dtype)
               for tensor, spec in component.outputs.items()}
    for _ in range(6):
        holder.run_bound(inputs, outputs)
    summary = ort_profile_summary(holder.session.end_profiling(), skip_runs=1)
    summary["op_types"] = sorted({op for op, _ in summary["top_ops_ms_per_run"]})
    return summary


def encoder_variants(args, checkpoint: Path, pipeline) -> dict:
    """The encoder exported three ways from the same weights, each timed on the same bound buffers."""
    from mmg_export.builder.export import export_encoder
    from mmg_export.models.encoder import VideoEncoder
    from mmg_export.models.llava import load_llava
    from mmg_runtime.sessions import OrtSession

    manifest = pipeline.manifest
    dtype, precision = pipeline.dtype, manifest.precision
    encoder = VideoEncoder(load_llava(checkpoint, {"bfloat16": torch.bfloat16}.get(dtype, torch.float32)).model)
    frames = manifest.frames
    results = {}
    for name in ("onnxruntime-flavour (opset 23)", "tensorrt-flavour (opset 18)"):
        path = args.work / "encoder-variant.onnx"
        export_encoder(encoder, frames, precision, path, "tensorrt" if "opset 18" in name else "onnxruntime")
        session = OrtSession(path, manifest.extra["providers"])
        pixels = _device_tensor(session, dtype, torch.randn(frames, 3, 384, 384, generator=torch.Generator().manual_seed(0)))
        tokens = session.empty((frames, manifest.tokens_per_frame, manifest.hidden_size), dtype)
        run = lambda: session.run_bound({"pixel_values": pixels}, {"video_tokens": tokens})  # noqa: E731
        results[name] = round(time_any(run, 20, 3, False)["median_ms"], 2)
        path.unlink()
    return results


def artifact_sizes(work: Path, llm) -> dict:
    from mmg_export.models.encoder import VideoEncoder

    weights = sum(p.numel() * p.element_size() for p in VideoEncoder(llm.model).parameters())
    sizes = {}
    for directory in sorted(work.glob("artifacts-r*")):
        files = [p for p in directory.rglob("*") if p.is_file() and "tokenizer" not in p.parts]
        total = sum(p.stat().st_size for p in files)
        sizes[directory.name] = {"bytes": total, "over_encoder_weights": round(total / weights, 3),
                                 "files": sorted(str(p.relative_to(directory)) for p in files)[:10]}
    return {"encoder_weight_bytes": weights, **sizes}


def cli_json(args) -> dict:
    """``mmg-export run --json`` as a user types it (its own process: load included)."""
    command = [sys.executable, "-m", "mmg_export.cli", "run", "--artifacts", str(args.work / "artifacts-r0.25"),
               "--model", str(args.work / "checkpoint"), "--video", str(args.media / "bigbuckbunny.mp4"),
               "--prompt", QUESTION, "--max-new-tokens", "8", "--json"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return {"wall_s": round(time.perf_counter() - start, 1), **json.loads(done.stdout)}


def cli_interactive(args) -> dict:
    """``mmg-export run --interactive --json`` as a user types it: the first question and the follow-ups
    on stdin, one conversation, one JSON object per answer (its own process: load included)."""
    command = [sys.executable, "-m", "mmg_export.cli", "run", "--artifacts", str(args.work / "artifacts-r0.25"),
               "--model", str(args.work / "checkpoint"), "--video", str(args.media / "bigbuckbunny.mp4"),
               "--interactive", "--max-new-tokens", "8", "--json"]
    questions = "".join(f"{q}\n" for q in [QUESTION, *FOLLOW_UPS[:args.follow_ups]])
    start = time.perf_counter()
    done = subprocess.run(command, input=questions, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return {"wall_s": round(time.perf_counter() - start, 1),
            "qtft_ms": [a["question_to_first_token_ms"] for a in answers],
            "cached_tokens": [a["cached_tokens"] for a in answers], "reused": [a["reused"] for a in answers]}


def report(result: dict) -> str:
    rows = [(r["clip"], r["decoder"], f"{r['ratio']:.0%}", r["decode"], r["preprocess"], r["encode"], r["prune"],
             r["prefill"], r["qtft_ms"], r["first_qtft_ms"]) for r in result["clips"]]
    lines = ["## Question to first token, Pipeline.ask (ms, medians)", "",
             markdown_table(["clip", "decoder", "kept", "decode", "preprocess", "encode", "prune", "prefill",
                             "to 1st token", "first after load"], rows), ""]
    for clip in {r["clip"] for r in result["clips"]}:
        for decoder in {r["decoder"] for r in result["clips"]}:
            pair = {r["ratio"]: r["qtft_ms"] for r in result["clips"] if r["clip"] == clip and r["decoder"] == decoder}
            if {0.25, 1.0} <= set(pair):
                lines.append(f"- speedup 25 % vs 100 %, {clip}, {decoder}: {pair[1.0] / pair[0.25]:.2f}x")
    lines += ["", "## Conversations: a first question, then follow-ups about the same clip (Pipeline.conversation,"
              " default cache)", "", json.dumps(result["conversation"]), "",
              "## run --interactive --json (own process)", "", json.dumps(result.get("cli_interactive")), ""]
    lines += ["", "## Live stream", "", json.dumps(result["stream"]), "", "## Encoder, 32 frames", "",
              json.dumps(result["encoder"]), "",
              "## Artifacts", "", json.dumps(result["artifacts"]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["build", "measure", "all"], default="all")
    parser.add_argument("--work", type=Path, required=True, help="checkpoint and artifact folder")
    parser.add_argument("--media", type=Path, required=True, help="bigbuckbunny.mp4, long_g250.mp4, long_g25.mp4")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sample-fps", type=float, default=2.0)
    parser.add_argument("--stream-seconds", type=float, default=20.0)
    parser.add_argument("--follow-ups", type=int, default=3, help="follow-up questions per conversation")
    parser.add_argument("--smoke", action="store_true", help="tiny geometry on the CPU")
    parser.add_argument("--diagnose", action="store_true",
                        help="also: decode/encode timelines, ONNX Runtime's profile of the pruner, encoder variants")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.target = "cpu" if args.smoke else "h100"
    device = "cpu" if args.smoke else "cuda"
    checkpoint = args.work / "checkpoint"
    result: dict = {}
    if args.stage in ("build", "all"):
        result["checkpoint_s"] = round(make_checkpoint(checkpoint, TINY if args.smoke else SEVEN_B, device), 1)
        result.update(build(args, checkpoint))
        if device == "cuda":
            torch.cuda.empty_cache()
    if args.stage in ("measure", "all"):
        print_environment(environment())
        result.update(measure(args, checkpoint))
        result["cli_run_json"] = cli_json(args)
        result["cli_interactive"] = cli_interactive(args)
        print(report(result))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"bench_e2e_{args.stage}.json").write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({k: v for k, v in result.items() if k in ("checkpoint_s", "build r0.25 s", "build r1 s")}))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
