#!/usr/bin/env python3
"""Pruner latency: reference vs PruningGraph eager / torch.compile / CUDA graph / ONNX Runtime.

Forms (each at every --frames and --dtypes):
  reference           select_tokens on the CPU (Python decisions; fp32 only by default)
  eager               PruningGraph on the device, PyTorch eager
  compiled            torch.compile(PruningGraph, mode=--compile-mode, dynamic=False)
  cudagraph           torch.cuda.CUDAGraph capture of the eager module, static input, replay
  compiled+cudagraph  the same capture of the compiled module
  ort-iobinding       export_pruner ONNX under ONNX Runtime's CUDA EP, io_binding on device tensors
  ort-host            the same session fed a host numpy array, outputs bound to host (copies included)

Timing: CUDA events around each call on the current stream (torch forms); ONNX Runtime and the
reference: host perf_counter around the call followed by torch.cuda.synchronize(). Median and p90
of --iterations runs after --warmup runs. "same idx" compares the kept indices with eager of the
same dtype (eager fp32 for fp32 rows: the check the issue asks for); "overlap fp32" is the share of
indices a bf16 form has in common with eager fp32 on the same video.

GPU:   python scripts/bench_pruner.py --out-dir $OUT
Smoke: python scripts/bench_pruner.py --smoke      (tiny sizes on the CPU; CUDA-only forms skipped)
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from pathlib import Path

from _bench_common import (capture_graph, environment, kernel_table, make_video, markdown_table,
                           ort_profile_summary, print_environment, setup_path, time_any, time_wall, time_wall_adaptive, write_json)

setup_path()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmg_export.builder.export import export_pruner, torch_dtype  # noqa: E402
from mmg_export.prune import PruningGraph, select_tokens  # noqa: E402

ALL_FORMS = ["reference", "eager", "compiled", "cudagraph", "compiled+cudagraph", "ort-iobinding", "ort-host"]
ONNX_TYPES = {"fp32": 1, "fp16": 10, "bf16": 16}  # onnx.TensorProto enum values


def ort_session(path: Path, cuda: bool, profile_prefix: str | None = None, tf32: str = "default"):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    cuda_options = {"device_id": 0}
    if tf32 != "default":
        cuda_options["use_tf32"] = int(tf32)
    providers = [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), options, providers=providers)
    if cuda and "CUDAExecutionProvider" not in session.get_providers():
        raise RuntimeError(f"CUDAExecutionProvider not active: {session.get_providers()}")
    return session


def bench_ort(args, frames: int, dtype_name: str, x: torch.Tensor, keep: int, workdir: Path, cuda: bool,
              add, profile_notes: list, profiles: list) -> None:
    """ONNX Runtime forms: export, session, timings; rows go through ``add``."""
    import onnxruntime as ort

    path = workdir / f"pruner_T{frames}_{dtype_name}.onnx"
    t0 = time.perf_counter()
    export_pruner(frames, args.tokens, args.dim, args.ratio, dtype_name, path)
    export_s = time.perf_counter() - t0
    device = "cuda" if cuda else "cpu"
    # bf16 graphs take and give float32 (NumPy has no bf16; the casts are inside the graph)
    io_dtype = torch.float32 if dtype_name == "bf16" else x.dtype
    etype = np.float32 if io_dtype == torch.float32 else ONNX_TYPES[dtype_name]
    x_dev = x.to(io_dtype).contiguous()
    kept = torch.empty(keep, args.dim, dtype=io_dtype, device=x.device)
    index = torch.full((keep,), -1, dtype=torch.int64, device=x.device)
    settings = args.ort_tf32 if (cuda and dtype_name == "fp32") else args.ort_tf32[:1]

    def bind(session):
        binding = session.io_binding()
        binding.bind_input("video_tokens", device, 0, etype, tuple(x_dev.shape), x_dev.data_ptr())
        binding.bind_output("kept_tokens", device, 0, etype, (keep, args.dim), kept.data_ptr())
        binding.bind_output("kept_indices", device, 0, np.int64, (keep,), index.data_ptr())
        return binding

    for n, tf32 in enumerate(settings):
        t0 = time.perf_counter()
        session = ort_session(path, cuda, tf32=tf32)
        session_s = time.perf_counter() - t0
        binding = bind(session)
        tf32_note = f"use_tf32={tf32}" if cuda else ""

        def run_bound():
            session.run_with_iobinding(binding)

        if "ort-iobinding" in args.forms:
            index.fill_(-1)
            stats = time_wall_adaptive(run_bound, args.iterations, args.warmup, cuda=cuda)
            add("ort-iobinding", stats, f"{'CUDA' if cuda else 'CPU'} EP {tf32_note}, io_binding on {device} tensors, "
                f"wall clock + sync; export {export_s:.1f} s, session {session_s:.1f} s", index.clone())
        if "ort-host" in args.forms:
            host_value = ort.OrtValue.ortvalue_from_numpy(x_dev.detach().cpu().numpy())
            host_binding = session.io_binding()
            host_binding.bind_ortvalue_input("video_tokens", host_value)
            host_binding.bind_output("kept_tokens", "cpu")
            host_binding.bind_output("kept_indices", "cpu")

            def run_host():
                session.run_with_iobinding(host_binding)
                return host_binding.get_outputs()

            stats = time_wall_adaptive(run_host, max(10, args.iterations // 2), max(2, args.warmup // 2), cuda=cuda)
            idx = torch.from_numpy(host_binding.get_outputs()[1].numpy().copy()).to(x.device)
            add("ort-host", stats, f"{tf32_note} host numpy in, outputs bound to host: H2D + D2H copies included, "
                "wall clock", idx)
        if args.profile and cuda:
            # CUPTI sees every kernel of the process, ONNX Runtime's too: the GPU-side kernel table
            from torch.profiler import ProfilerActivity, profile

            for _ in range(3):
                run_bound()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    run_bound()
                torch.cuda.synchronize()
            table, launches, kernel_ms = kernel_table(prof, 5)
            profiles.append({"frames": frames, "dtype": dtype_name, "form": f"ort-iobinding {tf32_note}",
                             "launches_per_call": launches, "kernel_ms_per_call": kernel_ms, "table": table})
            print(f"  profile T={frames} {dtype_name} ort {tf32_note}: {launches:.0f} launches/call, "
                  f"{kernel_ms:.3f} ms of kernels/call", flush=True)
        if args.profile and n == 0:
            try:
                prefix = str(workdir / f"ortprof_T{frames}_{dtype_name}")
                prof_session = ort_session(path, cuda, profile_prefix=prefix, tf32=tf32)
                pb = bind(prof_session)
                for _ in range(8):
                    prof_session.run_with_iobinding(pb)
                summary = ort_profile_summary(prof_session.end_profiling(), skip_runs=3)
                summary["note"] = "ORT's own profile: times are host-side Compute() durations (CUDA kernels are async)"
                profile_notes.append((f"ORT {'CUDA' if cuda else 'CPU'} EP, T={frames}, {dtype_name}", summary))
            except Exception as error:  # noqa: BLE001
                profile_notes.append((f"ORT profile T={frames} {dtype_name}", {"error": repr(error)}))


def micro(args, cuda: bool) -> str:
    """Micro-benchmarks of the two kernels that dominate PruningGraph's GPU time."""
    device = torch.device("cuda" if cuda else "cpu")
    rows = []
    with torch.inference_mode():
        for frames in args.frames:
            gen = torch.Generator(device="cpu").manual_seed(frames)
            squared = torch.rand(frames, args.tokens, args.tokens, generator=gen).to(device) * 4
            knn = 5
            topk = lambda: torch.topk(squared, knn, dim=2, largest=False).values.mean(dim=2)  # noqa: E731
            sort = lambda: torch.sort(squared, dim=2).values[..., :knn].mean(dim=2)  # noqa: E731
            same = torch.equal(topk(), sort())
            for name, fn in (("topk(k=5, largest=False) + mean", topk), ("sort + [:5] + mean", sort)):
                stats = time_any(fn, args.iterations, args.warmup, cuda)
                rows.append((frames, "kNN density", name, stats["median_ms"], stats["p90_ms"],
                             f"bitwise equal: {same}"))
            x = torch.randn(frames, args.tokens, args.dim, generator=gen).to(device)
            unit = torch.nn.functional.normalize(x, dim=-1)
            exact = unit @ unit.transpose(1, 2)
            variants = [("fp32 (allow_tf32=False)", unit, False), ("fp32 with TF32", unit, True),
                        ("bf16 operands", unit.to(torch.bfloat16), False)]
            for name, operand, tf32 in variants:
                saved = torch.backends.cuda.matmul.allow_tf32
                torch.backends.cuda.matmul.allow_tf32 = tf32
                try:
                    fn = lambda operand=operand: operand @ operand.transpose(1, 2)  # noqa: E731
                    error = (fn().float() - exact).abs().max().item()
                    stats = time_any(fn, args.iterations, args.warmup, cuda)
                finally:
                    torch.backends.cuda.matmul.allow_tf32 = saved
                rows.append((frames, "gram bmm (T,P,D)x(T,D,P)", name, stats["median_ms"], stats["p90_ms"],
                             f"max abs err vs fp32 {error:.1e}"))
    return markdown_table(["frames", "kernel", "variant", "median ms", "p90 ms", "check"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--tokens", type=int, default=196)
    parser.add_argument("--dim", type=int, default=3584)
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--ref-iterations", type=int, default=3)
    parser.add_argument("--ref-dtypes", nargs="+", default=["fp32"])
    parser.add_argument("--forms", default=",".join(ALL_FORMS),
                        help="comma-separated subset of: " + ", ".join(ALL_FORMS))
    parser.add_argument("--compile-mode", default="default",
                        help='torch.compile mode: "default", "max-autotune-no-cudagraphs", ...')
    parser.add_argument("--ort-tf32", nargs="+", default=["default", "0"], choices=["default", "0", "1"],
                        help="CUDA EP use_tf32 settings to run (fp32 only; 'default' passes no option)")
    parser.add_argument("--emulate-precision-casts", action="store_true",
                        help="torch._inductor.config.emulate_precision_casts = True (bf16 rounding as in eager)")
    parser.add_argument("--micro", action="store_true", help="also time topk vs sort and the gram bmm precisions")
    parser.add_argument("--profile", action="store_true", help="torch.profiler kernel tables + ORT node placement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=None, help="write pruner.md / pruner.json here")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a CPU sanity check")
    args = parser.parse_args()
    args.forms = [f.strip() for f in args.forms.split(",") if f.strip()]
    unknown = set(args.forms) - set(ALL_FORMS)
    if unknown:
        parser.error(f"unknown forms {sorted(unknown)}")
    if args.smoke:
        args.frames, args.tokens, args.dim = [4, 8], 16, 64
        args.iterations, args.warmup, args.ref_iterations = 5, 1, 2

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.cache_size_limit = 64
    if args.emulate_precision_casts:
        import torch._inductor.config as inductor_config

        inductor_config.emulate_precision_casts = True
    env = environment()
    print_environment(env)
    workdir = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="bench_pruner_"))
    workdir.mkdir(parents=True, exist_ok=True)
    onnx_dir = Path(tempfile.mkdtemp(prefix="pruner_onnx_"))

    results, profiles, profile_notes = [], [], []
    try:
        import onnxruntime  # noqa: F401
        have_ort = True
    except ImportError:
        have_ort = False

    torch.backends.cuda.matmul.allow_tf32 = False  # exact fp32, as the reference
    with torch.inference_mode():
        for frames in args.frames:
            x32_cpu = make_video(frames, args.tokens, args.dim, args.seed + frames)
            eager_fp32_idx = None
            for dtype_name in args.dtypes:
                dtype = torch_dtype(dtype_name)
                x = x32_cpu.to(dtype).to(device)
                graph = PruningGraph(frames, args.tokens, args.dim, args.ratio).to(device).eval()
                keep = graph.keep
                eager_idx = graph(x)[1].clone()
                if dtype_name == "fp32":
                    eager_fp32_idx = eager_idx
                elif eager_fp32_idx is None:
                    g32 = PruningGraph(frames, args.tokens, args.dim, args.ratio).to(device).eval()
                    eager_fp32_idx = g32(x32_cpu.to(device))[1].clone()

                def add(form, stats, note, idx=None, _frames=frames, _dtype=dtype_name, _eager=eager_idx):
                    row = {"frames": _frames, "dtype": _dtype, "form": form, "K": keep, "note": note, **(stats or {})}
                    if idx is not None:
                        row["same_idx"] = bool(idx.shape == _eager.shape and torch.equal(idx.cpu(), _eager.cpu()))
                        ref32 = eager_fp32_idx.cpu()
                        common = np.intersect1d(idx.cpu().numpy(), ref32.numpy()).size
                        row["overlap_fp32"] = common / max(1, ref32.numel())
                    results.append(row)
                    shown = f"{row.get('median_ms', float('nan')):.3f} ms" if stats else "skipped"
                    print(f"  T={_frames:3d} {_dtype} {form:20s} {shown}  same_idx={row.get('same_idx', '-')}  {note}",
                          flush=True)

                def guarded(form, body):
                    if form not in args.forms:
                        return
                    try:
                        body()
                    except Exception as error:  # noqa: BLE001 - report and go on with the other forms
                        traceback.print_exc()
                        add(form, None, f"FAILED: {error.__class__.__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}")

                # reference (CPU, Python decisions)
                def reference():
                    if dtype_name not in args.ref_dtypes:
                        add("reference", None, f"skipped for {dtype_name} (--ref-dtypes {' '.join(args.ref_dtypes)})")
                        return
                    x_cpu = x32_cpu.to(dtype)
                    sel = [None]

                    def run():
                        sel[0] = select_tokens(x_cpu, args.ratio)

                    stats = time_wall(run, args.ref_iterations, 1, cuda=False)
                    add("reference", stats, f"select_tokens on CPU tensors, {torch.get_num_threads()} threads, wall clock",
                        sel[0].indices.to(device))
                guarded("reference", reference)

                def eager():
                    stats = time_any(lambda: graph(x), args.iterations, args.warmup, cuda)
                    add("eager", stats, "CUDA events" if cuda else "CPU wall clock", eager_idx)
                guarded("eager", eager)

                compiled = [None]

                def compiled_form():
                    fn = torch.compile(graph, mode=None if args.compile_mode == "default" else args.compile_mode,
                                       dynamic=False)
                    t0 = time.perf_counter()
                    idx = fn(x)[1].clone()
                    if cuda:
                        torch.cuda.synchronize()
                    compile_s = time.perf_counter() - t0
                    compiled[0] = fn
                    stats = time_any(lambda: fn(x), args.iterations, args.warmup, cuda)
                    casts = ", emulate_precision_casts" if args.emulate_precision_casts else ""
                    add("compiled", stats, f"torch.compile mode={args.compile_mode}{casts}, compile {compile_s:.1f} s", idx)
                guarded("compiled", compiled_form)

                def cudagraph_form(form, fn):
                    if not cuda:
                        add(form, None, "skipped: needs CUDA")
                        return
                    if fn is None:
                        add(form, None, "skipped: compiled form unavailable")
                        return
                    static = x.clone()
                    cg, outputs = capture_graph(fn, static)
                    cg.replay()
                    idx = outputs[1].clone()
                    stats = time_any(cg.replay, args.iterations, args.warmup, cuda)
                    add(form, stats, "torch.cuda.CUDAGraph replay, static input, CUDA events", idx)
                guarded("cudagraph", lambda: cudagraph_form("cudagraph", graph))
                guarded("compiled+cudagraph", lambda: cudagraph_form("compiled+cudagraph", compiled[0]))

                ort_forms = [f for f in ("ort-iobinding", "ort-host") if f in args.forms]
                if ort_forms:
                    if not have_ort:
                        for f in ort_forms:
                            add(f, None, "skipped: onnxruntime not importable")
                    else:
                        import onnxruntime as ort
                        use_cuda = cuda and "CUDAExecutionProvider" in ort.get_available_providers()
                        if cuda and not use_cuda:
                            for f in ort_forms:
                                add(f, None, "skipped: no CUDAExecutionProvider (onnxruntime-gpu not installed)")
                        else:
                            try:
                                bench_ort(args, frames, dtype_name, x, keep, onnx_dir, use_cuda, add, profile_notes,
                                          profiles)
                            except Exception as error:  # noqa: BLE001
                                traceback.print_exc()
                                message = str(error).splitlines()[0][:200] if str(error) else ""
                                for f in ort_forms:
                                    add(f, None, f"FAILED: {error.__class__.__name__}: {message}")

                if args.profile and cuda:
                    from torch.profiler import ProfilerActivity, profile
                    for name, fn in (("eager", graph), ("compiled", compiled[0])):
                        if fn is None:
                            continue
                        for _ in range(3):
                            fn(x)
                        torch.cuda.synchronize()
                        calls = 5
                        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                            for _ in range(calls):
                                fn(x)
                            torch.cuda.synchronize()
                        table, launches, kernel_ms = kernel_table(prof, calls)
                        profiles.append({"frames": frames, "dtype": dtype_name, "form": name,
                                         "launches_per_call": launches, "kernel_ms_per_call": kernel_ms, "table": table})
                        print(f"  profile T={frames} {dtype_name} {name}: {launches:.0f} launches/call, "
                              f"{kernel_ms:.3f} ms of kernels/call", flush=True)
                del graph
                if cuda:
                    torch.cuda.empty_cache()
                report(args, env, results, profiles, profile_notes, workdir)

    if args.micro:
        micro_table = micro(args, cuda)
        (workdir / "micro.md").write_text(micro_table + "\n")
        print()
        print(f"# Micro-benchmarks (P={args.tokens}, D={args.dim}, device {env['device']})")
        print(micro_table)
    report(args, env, results, profiles, profile_notes, workdir)
    print()
    print(f"# Pruner latency (P={args.tokens}, D={args.dim}, ratio={args.ratio}, device {env['device']})")
    print(results_table(results))
    print(f"\nfull report: {workdir / 'pruner.md'}")


HEADERS = ["frames", "dtype", "form", "K", "median ms", "p90 ms", "runs", "same idx", "overlap fp32", "note"]


def results_table(results: list) -> str:
    rows = [(r["frames"], r["dtype"], r["form"], r["K"], r.get("median_ms"), r.get("p90_ms"), r.get("runs"),
             {True: "yes", False: "NO"}.get(r.get("same_idx"), "-"),
             r.get("overlap_fp32"), r["note"]) for r in results]
    return markdown_table(HEADERS, rows)


def report(args, env, results, profiles, profile_notes, workdir: Path) -> None:
    """Write pruner.md and pruner.json (called after every block, so a timeout keeps what was done)."""
    text = [f"# Pruner latency (P={args.tokens}, D={args.dim}, ratio={args.ratio}, device {env['device']})", "",
            results_table(results)]
    if profiles:
        text += ["", "## torch.profiler kernel tables (per forward call)"]
        for p in profiles:
            text += ["", f"### T={p['frames']} {p['dtype']} {p['form']}: {p['launches_per_call']:.0f} launches, "
                         f"{p['kernel_ms_per_call']:.3f} ms of GPU time per call", "", p["table"]]
    if profile_notes:
        text += ["", "## ONNX Runtime profiles"]
        for title, summary in profile_notes:
            text += ["", f"### {title}", "", "```", json.dumps(summary, indent=1), "```"]
    (workdir / "pruner.md").write_text("\n".join(text) + "\n")
    write_json(str(workdir / "pruner.json"), {"env": env, "args": vars(args), "results": results,
                                              "profiles": profiles, "ort_profiles": profile_notes})


if __name__ == "__main__":
    main()
