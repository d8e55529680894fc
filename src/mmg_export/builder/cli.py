"""``mmg-export build``: the main job (see :mod:`.pipeline`)."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mmg_runtime.arguments import integer, number
from mmg_runtime.errors import UserError
from mmg_runtime.manifest import BACKENDS
from mmg_runtime.tensorrt import FLAVOURS, LABELS, import_tensorrt, installed

from .targets import PRECISIONS

if TYPE_CHECKING:
    from ..prune import MMGConfig
    from .targets import TargetProfile

DEFAULT_OUT = Path("artifacts")
TINY_MODEL = "tiny"
"""Model part of the default output name for the built-in model."""
MAX_FRAMES = 256
"""Most frames per video a build takes."""
MAX_STRIDE = 8
"""MMGConfig's largest stride (pick groups per round); kept here so that the CLI loads without torch."""
MAX_REACH = MAX_STRIDE // 2
MAX_ROUNDS = 8
"""MMGConfig's most selection rounds (likewise)."""
MAX_SUBSTEPS = 8
"""MMGConfig's most steps per group's pick (likewise)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build", help="export the encoder and the pruning graph, lint, and build engines",
        description="Export the LLaVA-OneVision vision encoder and a fixed-budget MMG-Vid pruning graph to "
                    "typed ONNX, lint them for TensorRT, and build TensorRT engines or ONNX Runtime models "
                    "into one artifact directory with a manifest.")
    parser.add_argument("--ratio", type=number(0.0, 1.0, low_open=True), default=0.25,
                        help="fraction of video tokens kept, in (0, 1] (default 0.25)")
    parser.add_argument("--model", type=Path, default=None, metavar="DIR",
                        help="local LLaVA-OneVision checkpoint directory (default: the built-in tiny model)")
    parser.add_argument("--frames", type=integer(1, MAX_FRAMES), default=None,
                        help=f"frames per video, 1-{MAX_FRAMES} (default: the target's, 32)")
    parser.add_argument("--target", default=None,
                        help="target profile name (mmg-export build --list-targets) or a .toml path (default: this machine: "
                             "its GPU's profile, or cpu)")
    parser.add_argument("--precision", choices=list(PRECISIONS), default=None,
                        help="export precision (default: the target's)")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="tensorrt: TensorRT engines, built on the target's GPU; tensorrt-rtx: TensorRT for RTX "
                             "engines (RTX GPUs, DGX Spark), built ahead of time on any machine (without --target: "
                             "for this machine's GPU, or one engine for every GPU TensorRT-RTX supports); default: "
                             "the target's TensorRT where it is installed, else onnxruntime")
    parser.add_argument("--pruner-backend", choices=["auto", "aotinductor", "onnx"], default="auto",
                        help="with --backend onnxruntime: aotinductor ships the pruner compiled by TorchInductor for "
                             "this machine's GPU or CPU (pruner.pt2: fused kernels, ~3x faster on an H100; needs the "
                             "same torch release and GPU model where it runs), onnx the portable pruner.onnx (or "
                             "the TensorRT engine with --backend tensorrt); auto (default): aotinductor when "
                             "building ONNX Runtime artifacts for this machine's own datacenter GPU, else onnx")
    parser.add_argument("--hardware-compatible", action="store_true",
                        help="TensorRT engines that every Ampere+ GPU runs (not on Jetson), or TensorRT-RTX engines "
                             "for every GPU from the target's up, instead of engines for the target's GPU only")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"artifact directory (default: {DEFAULT_OUT}/MODEL-TARGET-BACKEND-PRECISION-"
                             "FRAMESf-rRATIO, then -merge, -roundsN, -substepsN, -reachN, -aoti where they apply)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing artifact directory")
    parser.add_argument("--keep-onnx", action="store_true",
                        help="tensorrt backend: also keep the engines' ONNX sources in onnx/ (for verification; "
                             "each weight is then stored twice)")
    parser.add_argument("--merge", action="store_true", help="merge dropped tokens into their nearest kept token")
    parser.add_argument("--rounds", type=integer(1, MAX_ROUNDS), default=None,
                        help="token-selection rounds, 1-8 (default 2; 3 keeps slightly more of the video and "
                             "makes the pruner slower: docs/quality.md)")
    parser.add_argument("--reach", type=integer(0, MAX_REACH), default=None,
                        help=f"frames each way that one coverage update carries a pick's coverage, 0-{MAX_REACH} "
                             "(default 2); the frames pick in 2 x reach groups (1 for reach 0; 3 keeps a little more of "
                             "the video for a slower pruner, 0 and 1 keep much less: docs/quality.md)")
    parser.add_argument("--substeps", type=integer(1, MAX_SUBSTEPS), default=None,
                        help=f"steps each group's pick takes, its gains refreshed between them, 1-{MAX_SUBSTEPS} "
                             "(default 3; 1 is the faster token stage before it, which loses on long, sparsely "
                             "sampled videos: docs/quality.md)")
    parser.add_argument("--list-targets", action="store_true", help="list the build profiles and exit")
    parser.set_defaults(handler=run)


def pruning_config(args: argparse.Namespace) -> MMGConfig:
    """The pruner's settings from ``--merge``, ``--rounds``, ``--substeps`` and ``--reach`` (their ranges
    are argparse's to check). ``--reach N`` sets chain_steps = N and stride = max(1, 2N), the rule of
    :class:`MMGConfig`."""
    from ..prune import MMGConfig

    settings: dict = {"merge": args.merge}
    if args.rounds is not None:
        settings["rounds"] = args.rounds
    if args.substeps is not None:
        settings["substeps"] = args.substeps
    if args.reach is not None:
        settings.update(chain_steps=args.reach, stride=max(1, 2 * args.reach))
    return MMGConfig(**settings)


def pruning_suffix(pruning: MMGConfig) -> str:
    """The default artifact name's part for pruner settings other than the defaults, e.g. ``-merge``,
    ``-rounds3-reach3`` (empty for the defaults), so that such a build does not land on the default's."""
    from ..prune import MMGConfig

    default = MMGConfig()
    parts = ["merge"] if pruning.merge else []
    if pruning.rounds != default.rounds:
        parts.append(f"rounds{pruning.rounds}")
    if pruning.substeps != default.substeps:
        parts.append(f"substeps{pruning.substeps}")
    if (pruning.chain_steps, pruning.stride) != (default.chain_steps, default.stride):
        parts.append(f"reach{pruning.chain_steps}")
    return "".join(f"-{part}" for part in parts)


def run(args: argparse.Namespace) -> int:
    from mmg_runtime.device import device_info, is_jetson

    from .targets import check_build_device, hardware_compatible, jetson_note, list_targets, load_target

    if args.list_targets:
        names = list_targets()
        for name in names:
            print(f"{name:{max(map(len, names))}s} {load_target(name).description}")
        return 0
    pruning = pruning_config(args)
    target = load_target(args.target or (detect_rtx_target() if args.backend == "tensorrt-rtx" else detect_target()))
    if args.hardware_compatible:
        target = hardware_compatible(target)
    compiled = args.pruner_backend == "aotinductor"
    backend = args.backend or ("onnxruntime" if target.name == "cpu" or compiled
                               else default_backend(target.tensorrt_flavour))
    if compiled and backend != "onnxruntime":
        raise UserError("--pruner-backend aotinductor goes with --backend onnxruntime (a TensorRT build fuses the "
                        "pruner's engine itself)")
    pruner_backend, pruner_note = pruner_choice(args.pruner_backend, backend, target)
    precision = args.precision or target.precision
    frames = args.frames if args.frames is not None else target.frames
    out = args.out or DEFAULT_OUT / (default_name(args.model, target.name, backend, precision, frames, args.ratio)
                                     + pruning_suffix(pruning) + ("-aoti" if pruner_backend else ""))

    from .pipeline import BuildOptions, build

    options = BuildOptions(out=out, target=target, ratio=args.ratio, frames=frames, precision=precision,
                           backend=backend, model_dir=args.model, overwrite=args.overwrite, keep_onnx=args.keep_onnx,
                           pruning=pruning, pruner_backend=pruner_backend)
    if backend in FLAVOURS:  # a TensorRT backend: the flavour it builds with
        import_tensorrt(backend)
    if backend == "tensorrt":
        check_build_device(target, device_info())
    note = jetson_note(target, is_jetson())
    if note:
        print(f"note: {note}", file=sys.stderr)
    print(f"target {target.name}, backend {backend}, precision {precision}, {frames} frames, ratio {args.ratio:g}",
          file=sys.stderr)
    if pruner_note:
        print(pruner_note, file=sys.stderr)
    manifest = build(options)
    print(f"wrote {out}: K = {manifest.keep} of {manifest.frames * manifest.tokens_per_frame} video tokens, "
          f"components {', '.join(manifest.components)}")
    if note:
        print(f"note: {out} holds ONNX Runtime models, not the {target.name} TensorRT engines", file=sys.stderr)
    return 0


def default_name(model: Path | None, target: str, backend: str, precision: str, frames: int, ratio: float) -> str:
    """Artifact directory name: what distinguishes one build from another, e.g.
    ``tiny-cpu-ort-fp32-32f-r0.25`` or ``llava-onevision-qwen2-7b-ov-hf-h100-trt-bf16-32f-r0.25``."""
    name = TINY_MODEL if model is None else re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model).resolve().name)
    short = {"onnxruntime": "ort", "tensorrt": "trt", "tensorrt-rtx": "trtrtx"}.get(backend, backend)
    return f"{name}-{target}-{short}-{precision}-{frames}f-r{ratio:g}"


def pruner_choice(requested: str, backend: str, target: TargetProfile) -> tuple[str | None, str]:
    """``--pruner-backend`` resolved: "aotinductor" or None (``pruner.onnx``), and a note to print."""
    if requested == "auto" and backend == "onnxruntime" and target.name != "cpu":
        from .aotinductor import default_pruner_backend

        return default_pruner_backend(backend, target)
    return ("aotinductor" if requested == "aotinductor" else None), ""


def default_backend(flavour: str) -> str:
    """The target's TensorRT (``flavour``: tensorrt or tensorrt-rtx) where it imports; otherwise
    onnxruntime, saying so."""
    if installed(flavour) is None:
        print(f"{LABELS[flavour]} is not installed: using the onnxruntime backend (pass --backend to choose)",
              file=sys.stderr)
        return "onnxruntime"
    return flavour


def detect_target() -> str:
    """The profile for this machine's GPU by compute capability, or ``cpu`` without one."""
    from mmg_runtime.device import device_info

    device = device_info()
    if device is None:
        print("no CUDA GPU found: target cpu (pass --target NAME to build for a GPU)", file=sys.stderr)
        return "cpu"
    capability = device["compute_capability"]
    # sm_87 is every Jetson Orin: orin-nano's smaller workspace also fits an AGX Orin
    name = {"9.0": "h100", "8.7": "orin-nano", "11.0": "thor", "10.1": "thor"}.get(capability, "datacenter")
    print(f"GPU {device['name']} (compute capability {capability}): target {name} "
          "(pass --target NAME to choose, e.g. orin-agx on an AGX Orin)", file=sys.stderr)
    return name


def detect_rtx_target() -> str:
    """The TensorRT-RTX profile for this machine's GPU, or rtx-portable (no GPU, or one no profile names; on a
    GPU that rtx-portable's engines do not run on either, such as sm_75 or sm_90, the line says they are for
    other machines)."""
    from mmg_runtime.device import device_info, sm_name

    from .targets import PORTABLE_RTX_TARGET, load_target, rtx_target
    from .tensorrt_rtx import compute_capabilities

    device = device_info()
    name = rtx_target(device)
    choose = "pass --target NAME to build for one GPU family"
    if device is None:
        found = "no CUDA GPU found"
    else:
        capability = device["compute_capability"]
        found = f"GPU {device['name']} (compute capability {capability})"
        if name == PORTABLE_RTX_TARGET:
            portable = compute_capabilities(load_target(name), import_tensorrt("tensorrt-rtx"))
            if capability not in portable:
                print(f"GPU {device['name']} ({sm_name(capability)}) is not supported by the TensorRT-RTX targets "
                      f"({name} builds for {', '.join(map(sm_name, portable))}): building {name} for other "
                      f"machines; these engines will not run here ({choose})", file=sys.stderr)
                return name
            found += ", which no TensorRT-RTX target names"
    print(f"{found}: target {name} ({choose})", file=sys.stderr)
    return name
