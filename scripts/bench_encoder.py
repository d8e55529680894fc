#!/usr/bin/env python3
"""Vision encoder latency: ONNX Runtime CUDA (io_binding) vs PyTorch eager, same module.

The module is ``mmg_export.models.encoder.VideoEncoder`` around a random-weight
LlavaOnevisionForConditionalGeneration with SigLIP so400m geometry (hidden 1152, intermediate
4304, 26 layers, 16 heads, image 384, patch 14) and the 1152 -> 3584 -> 3584 projector; the
language model is a 1-layer stand-in (only its hidden size, 3584, matters: the encoder never calls
it). The model is built directly on the GPU (no CPU initialisation), cast to --precision, timed
in eager (CUDA events), moved to the CPU and exported with ``export_encoder`` (dynamo exporter,
opset 18), then run under ONNX Runtime's CUDA EP with io_binding on device tensors (wall clock
around run_with_iobinding + torch.cuda.synchronize). Outputs of the two are compared.

--ort-fusion also runs onnxruntime.transformers.optimizer (model_type vit) over the export and
times the result, reporting which fusions it found.

GPU:   python scripts/bench_encoder.py --out-dir $OUT
Smoke: python scripts/bench_encoder.py --smoke    (tiny SigLIP on the CPU, ORT CPU EP)
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import traceback
from pathlib import Path

from _bench_common import (environment, kernel_table, markdown_table, ort_profile_summary, print_environment, setup_path, time_any,
                           time_wall_adaptive, write_json)

setup_path()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmg_export.builder.export import export_encoder, torch_dtype  # noqa: E402
from mmg_export.models.encoder import VideoEncoder  # noqa: E402

NUMPY_TYPES = {"fp32": np.float32, "fp16": np.float16, "bf16": 16}


def build_encoder(args, device: torch.device) -> VideoEncoder:
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, Qwen2Config, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=args.vision_hidden, intermediate_size=args.vision_intermediate,
                                num_hidden_layers=args.vision_layers, num_attention_heads=args.vision_heads,
                                image_size=args.image, patch_size=args.patch)
    text = Qwen2Config(hidden_size=args.hidden, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=1,
                       intermediate_size=64, vocab_size=1024)
    config = LlavaOnevisionConfig(vision_config=vision, text_config=text, video_token_index=1000,
                                  image_token_index=1001)
    with torch.device(device):
        llava = LlavaOnevisionForConditionalGeneration(config)
    encoder = VideoEncoder(llava).eval()
    del llava
    return encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--precision", default="fp16", choices=["fp16", "bf16", "fp32"])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--vision-hidden", type=int, default=1152)
    parser.add_argument("--vision-intermediate", type=int, default=4304)
    parser.add_argument("--vision-layers", type=int, default=26)
    parser.add_argument("--vision-heads", type=int, default=16)
    parser.add_argument("--image", type=int, default=384)
    parser.add_argument("--patch", type=int, default=14)
    parser.add_argument("--hidden", type=int, default=3584, help="projector output = LLM hidden size")
    parser.add_argument("--ort-fusion", action="store_true", help="also try onnxruntime.transformers.optimizer")
    parser.add_argument("--opset23", action="store_true",
                        help="also export at opset 23 (ONNX Attention + Gelu ops; export_encoder itself uses "
                             "opset 18) and time that under ORT: a diagnostic, not the package's export")
    parser.add_argument("--ort-profile", action="store_true", help="ORT profile: nodes per EP, slowest op types")
    parser.add_argument("--torch-profile", action="store_true", help="torch.profiler kernel table of the eager run")
    parser.add_argument("--onnx-dir", default=None, help="where to write the ONNX files (default: a temp dir)")
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny SigLIP on the CPU")
    args = parser.parse_args()
    if args.smoke:
        args.frames, args.vision_hidden, args.vision_intermediate, args.vision_layers = 2, 32, 64, 2
        args.vision_heads, args.image, args.hidden, args.iterations, args.warmup = 2, 56, 64, 3, 1
        if args.precision == "fp16":
            args.precision = "fp32"  # fp16 convolution / matmul kernels are missing or slow on the CPU
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch_dtype(args.precision)
    env = environment()
    print_environment(env)
    rows, notes, profiles, kernel_tables = [], [], [], []
    onnx_dir = Path(args.onnx_dir or tempfile.mkdtemp(prefix="encoder_onnx_"))
    onnx_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    encoder = build_encoder(args, device).to(dtype)
    params = sum(p.numel() for p in encoder.parameters())
    print(f"encoder built on {device} in {time.perf_counter() - t0:.1f} s: {params / 1e6:.1f} M parameters, "
          f"attention {encoder.vision_tower.config._attn_implementation}", flush=True)
    gen = torch.Generator(device="cpu").manual_seed(0)
    pixels = (torch.rand(args.frames, 3, args.image, args.image, generator=gen) * 2 - 1).to(device, dtype)

    with torch.inference_mode():
        reference = encoder(pixels).float()
        eager = time_any(lambda: encoder(pixels), args.iterations, args.warmup, cuda)
    print(f"eager: {eager['median_ms']:.2f} ms, output {tuple(reference.shape)}", flush=True)
    torch_table = None
    if args.torch_profile and cuda:
        from torch.profiler import ProfilerActivity, profile

        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                encoder(pixels)
            torch.cuda.synchronize()
        torch_table = kernel_table(prof, 3, limit=12)
        kernel_tables.append(("PyTorch eager", torch_table))
        print(f"eager profile: {torch_table[1]:.0f} launches, {torch_table[2]:.2f} ms kernels per call", flush=True)
    rows.append(("PyTorch eager", args.precision, eager["median_ms"], eager["p90_ms"], eager["runs"], "-",
                 "CUDA events" if cuda else "CPU wall clock"))

    encoder = encoder.cpu()
    if cuda:
        torch.cuda.empty_cache()
    path = onnx_dir / f"encoder_T{args.frames}_{args.precision}.onnx"
    try:
        t0 = time.perf_counter()
        export_encoder(encoder, args.frames, args.precision, path)
        export_s = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in onnx_dir.glob(f"{path.stem}*"))
        print(f"exported {path.name} in {export_s:.1f} s ({size / 2**20:.0f} MiB)", flush=True)
        notes.append(f"export_encoder ({args.precision}, on the CPU): {export_s:.1f} s, {size / 2**20:.0f} MiB")
    except Exception as error:  # noqa: BLE001
        traceback.print_exc()
        rows.append(("ORT", args.precision, None, None, None, "-", f"export FAILED: {error.__class__.__name__}: "
                     f"{str(error).splitlines()[0][:200] if str(error) else ''}"))
        path = None

    def run_ort(label: str, model_path: Path, profile: bool = False) -> None:
        import onnxruntime as ort

        use_cuda = cuda and "CUDAExecutionProvider" in ort.get_available_providers()
        if cuda and not use_cuda:
            rows.append((label, args.precision, None, None, None, "-", "skipped: no CUDAExecutionProvider"))
            return
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        providers = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        t0 = time.perf_counter()
        session = ort.InferenceSession(str(model_path), options, providers=providers)
        session_s = time.perf_counter() - t0
        if use_cuda and "CUDAExecutionProvider" not in session.get_providers():
            raise RuntimeError(f"CUDA EP not active: {session.get_providers()}")
        where = "cuda" if use_cuda else "cpu"
        x = pixels.to(where).contiguous()
        out = torch.empty(args.frames, reference.shape[1], args.hidden, dtype=dtype, device=where)
        binding = session.io_binding()
        etype = NUMPY_TYPES[args.precision]
        binding.bind_input("pixel_values", where, 0, etype, tuple(x.shape), x.data_ptr())
        binding.bind_output("video_tokens", where, 0, etype, tuple(out.shape), out.data_ptr())
        stats = time_wall_adaptive(lambda: session.run_with_iobinding(binding), args.iterations, args.warmup, cuda=use_cuda)
        diff = (out.float().to(reference.device) - reference)
        rel = (diff.norm() / reference.norm()).item()
        print(f"{label}: {stats['median_ms']:.2f} ms (session {session_s:.1f} s), rel. error vs eager {rel:.2e}", flush=True)
        rows.append((label, args.precision, stats["median_ms"], stats["p90_ms"], stats["runs"], f"{rel:.1e}",
                     f"{'CUDA' if use_cuda else 'CPU'} EP, io_binding on device tensors, wall clock + sync; "
                     f"session {session_s:.1f} s"))
        if args.torch_profile and use_cuda:
            # CUPTI records every kernel of the process, ONNX Runtime's included
            from torch.profiler import ProfilerActivity, profile as torch_profile

            with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(3):
                    session.run_with_iobinding(binding)
                torch.cuda.synchronize()
            kt = kernel_table(prof, 3, limit=12)
            kernel_tables.append((label, kt))
            print(f"{label} kernels: {kt[1]:.0f} launches, {kt[2]:.2f} ms of kernels per call", flush=True)
        del session
        if profile:
            options.enable_profiling = True
            options.profile_file_prefix = str(onnx_dir / f"ortprof_{model_path.stem}")
            psession = ort.InferenceSession(str(model_path), options, providers=providers)
            pbinding = psession.io_binding()
            pbinding.bind_input("pixel_values", where, 0, etype, tuple(x.shape), x.data_ptr())
            pbinding.bind_output("video_tokens", where, 0, etype, tuple(out.shape), out.data_ptr())
            for _ in range(4):
                psession.run_with_iobinding(pbinding)
            summary = ort_profile_summary(psession.end_profiling(), skip_runs=1)
            profiles.append((label, summary))
            print(f"{label} profile: {summary['nodes_per_provider']}, top ops {summary['top_ops_ms_per_run'][:6]}", flush=True)

    if path is not None:
        try:
            run_ort("ORT", path, profile=args.ort_profile)
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            rows.append(("ORT", args.precision, None, None, None, "-", f"FAILED: {error.__class__.__name__}: "
                         f"{str(error).splitlines()[0][:200] if str(error) else ''}"))
        if args.ort_fusion:
            try:
                from onnxruntime.transformers.optimizer import optimize_model

                t0 = time.perf_counter()
                optimized = optimize_model(str(path), model_type="vit", num_heads=args.vision_heads,
                                           hidden_size=args.vision_hidden, opt_level=0, use_gpu=cuda)
                fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
                fused_path = onnx_dir / f"{path.stem}_fused.onnx"
                optimized.save_model_to_file(str(fused_path))
                print(f"ORT transformers optimizer: {time.perf_counter() - t0:.1f} s, fused {fused}", flush=True)
                notes.append(f"onnxruntime.transformers.optimizer (vit): fused operators {fused}")
                run_ort("ORT + transformers optimizer", fused_path)
            except Exception as error:  # noqa: BLE001
                traceback.print_exc()
                rows.append(("ORT + transformers optimizer", args.precision, None, None, None, "-",
                             f"FAILED: {error.__class__.__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"))

    if path is not None and args.opset23:
        from mmg_export.builder import export as export_module

        saved = export_module.OPSET
        try:
            export_module.OPSET = 23
            path23 = onnx_dir / f"encoder_T{args.frames}_{args.precision}_opset23.onnx"
            t0 = time.perf_counter()
            export_encoder(encoder, args.frames, args.precision, path23)
            import collections

            import onnx

            ops = collections.Counter(n.op_type for n in onnx.load(str(path23), load_external_data=False).graph.node)
            notes.append(f"opset-23 export: {time.perf_counter() - t0:.1f} s, Attention nodes {ops.get('Attention', 0)}, "
                         f"Gelu nodes {ops.get('Gelu', 0)}")
            run_ort("ORT, opset 23 export (Attention op)", path23, profile=args.ort_profile)
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            rows.append(("ORT, opset 23 export (Attention op)", args.precision, None, None, None, "-",
                         f"FAILED: {error.__class__.__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"))
        finally:
            export_module.OPSET = saved

    headers = ["runtime", "precision", "median ms", "p90 ms", "runs", "rel. error vs eager", "note"]
    title = (f"# Vision encoder: SigLIP ({args.vision_layers} layers, hidden {args.vision_hidden}, {args.image} px) + "
             f"projector -> {args.hidden}, {args.frames} frames, device {env['device']}")
    table = markdown_table(headers, rows)
    if args.out_dir:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        extra = ""
        for label, summary in profiles:
            extra += f"\n## ORT profile: {label}\n\n```\n{json.dumps(summary, indent=1)}\n```\n"
        for label, kt in kernel_tables:
            extra += f"\n## torch.profiler kernels, {label}: {kt[1]:.0f} launches, {kt[2]:.2f} ms of kernels per call\n\n{kt[0]}\n"
        (Path(args.out_dir) / "encoder.md").write_text(title + "\n\n" + table + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n" + extra)
        write_json(str(Path(args.out_dir) / "encoder.json"), {"env": env, "args": vars(args), "rows": rows, "notes": notes,
                                                              "ort_profiles": profiles})
    if not args.onnx_dir:
        shutil.rmtree(onnx_dir, ignore_errors=True)
    print()
    print(title)
    print(table)
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
