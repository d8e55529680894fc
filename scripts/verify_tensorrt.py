#!/usr/bin/env python3
"""Check a TensorRT or TensorRT-RTX build against ONNX Runtime on this machine.

    python scripts/verify_tensorrt.py --target orin-agx [--model DIR] [--ratio 0.25]
    python scripts/verify_tensorrt.py --backend tensorrt-rtx [--target rtx-ada]

1. builds the artifacts with the TensorRT backend (``mmg-export build --backend tensorrt``), or
   with TensorRT-RTX (``--backend tensorrt-rtx``: the real parser and an ahead-of-time build, on any
   machine; without ``--target`` for this machine's GPU, or for every GPU TensorRT-RTX supports);
2. runs every engine and its ONNX model under ONNX Runtime (CUDA provider where present) on the
   same seeded inputs through Polygraphy's Comparator: encoder features within the tolerance of
   the precision, pruner indices identical (an extra fp32 pruner is built so that this check
   does not depend on fp16/bf16 rounding; at the artifacts' precision the index agreement is
   reported);
3. profiles the artifacts (``mmg-export profile``);
and prints one PASS/FAIL line per check. Exit status 1 if any check fails. TensorRT-RTX engines that
cannot run here (no GPU, or one TensorRT-RTX does not support, such as the H100's sm_90) stop after
step 1 with one NOT RUN line saying why: exit status 0, "built, not run".
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mmg_runtime.tensorrt import FLAVOURS, LABELS, use_in_polygraphy

TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 5e-2}
BUILD_CHECK = {"tensorrt": "build (TensorRT backend)",
               "tensorrt-rtx": "build (TensorRT-RTX backend: the real parser, then ahead of time)"}
FRAME_SIZE = {"height": 720, "width": 1280}
"""Size of the random frames fed to the preprocessing graph."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=FLAVOURS, default="tensorrt")
    parser.add_argument("--target", default=None, help="target profile (mmg-export build --list-targets), e.g. h100, "
                                                       "orin-agx, rtx-ada (default: the build's, for this machine)")
    parser.add_argument("--model", default=None, help="LLaVA-OneVision checkpoint (default: the tiny model)")
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="artifact directory (default: a temporary one)")
    args = parser.parse_args()
    use_in_polygraphy(args.backend)  # before Polygraphy's TensorRT runner is imported

    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / "artifacts"
        checks = [check_build(args, out)]
        why_not = cannot_run_here(out) if checks[0] and args.backend == "tensorrt-rtx" else ""
        if checks[0] and not why_not:
            from mmg_runtime.manifest import load_manifest

            manifest = load_manifest(out)
            checks += [compare(out, manifest, name) for name in ("preprocess", "encoder")]
            checks.append(compare_pruner_indices(out, manifest, Path(scratch)))
            checks.append(check_profile(out))
    print(f"{sum(checks)} passed, {len(checks) - sum(checks)} failed"
          + ("; built, not run: no GPU here runs these TensorRT-RTX engines" if why_not else ""))
    return 0 if all(checks) else 1


def report(name: str, ok: bool, detail: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
    return ok


def check_build(args: argparse.Namespace, out: Path) -> bool:
    """``mmg-export build``: for TensorRT-RTX the real parser reads every graph before any engine is built
    (one line naming the node it rejects) and the engines are built ahead of time."""
    command = [sys.executable, "-m", "mmg_export.cli", "build", "--backend", args.backend, "--ratio", str(args.ratio),
               "--out", str(out), "--overwrite", "--keep-onnx"]
    command += ["--target", args.target] if args.target else []
    command += ["--model", args.model] if args.model else []
    command += ["--frames", str(args.frames)] if args.frames else []
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return report(BUILD_CHECK[args.backend], False, (result.stderr.strip().splitlines() or ["(no output)"])[-1])
    from mmg_runtime.device import sm_name
    from mmg_runtime.manifest import load_manifest

    device = load_manifest(out).device or {}
    built_for = device.get("compute_capabilities", device.get("compute_capability"))
    targets = ", ".join(sm_name(cc.strip()) for cc in built_for.split(",")) if built_for else "this GPU"
    return report(BUILD_CHECK[args.backend], True, f"{out}, for {targets}")


def cannot_run_here(out: Path) -> str:
    """Why this machine cannot run the TensorRT-RTX engines in ``out`` (reported in one NOT RUN line),
    or "" where it can: the runtime's own check (:func:`mmg_runtime.trust.verify_artifacts`)."""
    from mmg_runtime.errors import UserError
    from mmg_runtime.trust import this_machine, verify_artifacts

    try:
        verify_artifacts(out, **this_machine())
    except UserError as error:
        print(f"NOT RUN  engines vs ONNX Runtime: {error}", flush=True)
        return str(error)
    return ""


def ort_runner(onnx_path: Path):
    """Polygraphy's ONNX Runtime runner, on the CUDA provider where this onnxruntime has it, else the CPU."""
    import onnxruntime
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    return OnnxrtRunner(SessionFromOnnx(str(onnx_path), providers=["cuda", "cpu"] if cuda else ["cpu"]))


def trt_runner(engine_path: Path):
    """Polygraphy's TensorRT runner over a serialized engine (TensorRT-RTX's where :func:`main` set it up)."""
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    return TrtRunner(EngineFromBytes(BytesFromPath(str(engine_path))))


def random_feeds(manifest, name: str, seed: int = 0, precision: str | None = None) -> dict:
    """Seeded inputs of component ``name`` at the artifacts' frame count: uint8 frames of FRAME_SIZE, the
    runtime's resampling matrices, standard-normal features in ``precision`` (default: the artifacts')."""
    from mmg_runtime.preprocess import resize_matrix

    generator = np.random.default_rng(seed)
    sizes = {"frames": manifest.frames, **FRAME_SIZE}
    size = int(manifest.extra["image_size"])
    feeds = {}
    for tensor, spec in manifest.components[name].inputs.items():
        shape = tuple(sizes.get(dim, dim) for dim in spec.shape)
        if spec.dtype == "uint8":
            feeds[tensor] = generator.integers(0, 256, shape, dtype=np.uint8)
        elif tensor == "resize_rows":
            feeds[tensor] = resize_matrix(FRAME_SIZE["height"], size).copy()
        elif tensor == "resize_cols":
            feeds[tensor] = np.ascontiguousarray(resize_matrix(FRAME_SIZE["width"], size).T)
        else:
            feeds[tensor] = typed(generator.standard_normal(shape).astype(np.float32), precision or manifest.precision)
    return feeds


def typed(array: np.ndarray, precision: str):
    """``array`` in ``precision``: NumPy for fp32 / fp16, a torch tensor for bf16 (NumPy has none)."""
    if precision == "bf16":
        import torch

        return torch.from_numpy(array).to(torch.bfloat16)
    return array.astype(np.float16 if precision == "fp16" else np.float32)


def feeds(manifest, name: str, count: int = 2, precision: str | None = None) -> list[dict]:
    return [random_feeds(manifest, name, seed, precision) for seed in range(count)]


def compare(out: Path, manifest, name: str) -> bool:
    """TensorRT (or TensorRT-RTX) engine vs ONNX Runtime on the same ONNX, with Polygraphy's Comparator."""
    from polygraphy.comparator import Comparator, CompareFunc

    runners = [trt_runner(out / manifest.components[name].file), ort_runner(out / "onnx" / f"{name}.onnx")]
    results = Comparator.run(runners, data_loader=feeds(manifest, name))
    tolerance = TOLERANCE[manifest.precision]
    accuracy = Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(
        rtol=tolerance, atol=tolerance, check_error_stat="median"))
    return report(f"{name}: {LABELS[manifest.backend]} vs ONNX Runtime", bool(accuracy),
                  f"median error within rtol = atol = {tolerance} ({manifest.precision})")


def compare_pruner_indices(out: Path, manifest, scratch: Path) -> bool:
    """fp32 pruner: TensorRT (or TensorRT-RTX) and ONNX Runtime keep exactly the same tokens; artifacts'
    precision: agreement."""
    from polygraphy.comparator import Comparator, CompareFunc

    from mmg_export.builder.engines import artifacts_engine_builder
    from mmg_export.builder.export import export_pruner
    from mmg_export.prune import MMGConfig

    onnx_path = export_pruner(manifest.frames, manifest.tokens_per_frame, manifest.hidden_size, manifest.ratio,
                              "fp32", scratch / "pruner32.onnx", MMGConfig(**manifest.extra.get("pruning", {})))
    engine = scratch / "pruner32.engine"
    artifacts_engine_builder(manifest, scratch / "timing.cache")(onnx_path, engine)
    data = feeds(manifest, "pruner", precision="fp32")
    results = Comparator.run([trt_runner(engine), ort_runner(onnx_path)], data_loader=data)
    exact = bool(Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(
        rtol={"kept_indices": 0.0, "": 1e-3}, atol={"kept_indices": 0.0, "": 1e-3}, check_error_stat="max")))
    ok = report("pruner fp32: kept indices identical", exact, f"{LABELS[manifest.backend]} vs ONNX Runtime, 2 seeded "
                "inputs")
    if manifest.precision != "fp32":
        native = Comparator.run([trt_runner(out / manifest.components["pruner"].file),
                                 ort_runner(out / "onnx" / "pruner.onnx")], data_loader=feeds(manifest, "pruner"))
        first, second = (iterations[0]["kept_indices"] for _, iterations in native)
        agreement = len(np.intersect1d(first, second)) / len(first)
        report(f"pruner {manifest.precision}: kept-index agreement", True, f"{agreement:.4f} (informational)")
    return ok


def check_profile(out: Path) -> bool:
    """``mmg-export profile`` of the artifacts, at three ratios (the pruners of the others built for it)."""
    command = [sys.executable, "-m", "mmg_export.cli", "profile", str(out), "--ratios", "0.1,0.25,0.5",
               "--iterations", "20", "--json", str(out / ".." / "verify_profile.json"), "--plot",
               str(out / ".." / "verify_profile.png")]
    result = subprocess.run(command, capture_output=True, text=True)
    print(result.stdout)
    lines = result.stderr.strip().splitlines() or ["(no output)"]
    detail = "report and plot beside the artifacts" if result.returncode == 0 else lines[-1]
    return report("profile", result.returncode == 0, detail)


if __name__ == "__main__":
    sys.exit(main())
