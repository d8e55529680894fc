"""``mmg-export build``: export, lint, build and describe one artifact directory.

Stages, each timed on the progress display:

    load model -> export preprocess.onnx + encoder.onnx -> export pruner.onnx -> lint (TensorRT-bound graphs)
      -> TensorRT / TensorRT-RTX engines (every graph through the real parser first) | ONNX Runtime graphs
      [-> pruner.pt2 (TorchInductor, on the target's own GPU)] -> tokenizer, (tiny) LLM -> manifest

An artifact directory holds each weight once: the ONNX graphs themselves for ONNX Runtime, the
engines alone for TensorRT and TensorRT-RTX (their ONNX sources are written to a scratch folder).
Everything is written into a temporary directory beside ``--out`` and renamed into place at the
end, so a failed build leaves nothing that looks like artifacts.
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mmg_runtime.device import device_info
from mmg_runtime.errors import UserError
from mmg_runtime.manifest import BACKENDS, Component, Manifest, TensorSpec, sha256_file, write_manifest
from mmg_runtime.tensorrt import import_tensorrt
from mmg_runtime.versions import LIBRARIES, library_versions

from .. import __version__
from ..lint.artifacts import tensorrt_graphs
from ..models.encoder import VideoEncoder
from ..models.llava import TINY_NAME, load_llava
from ..prune import MMGConfig
from ..prune.config import check_ratio, keep_count
from . import export
from .cli import MAX_FRAMES
from .engines import EngineBuilder, engine_builder
from .onnxruntime import provider_settings
from .output_dir import atomic_output_dir
from .preprocess import write_preprocess_graph
from .targets import TargetProfile, check_flavour
from .tensorrt import EngineInfo, parse_network

GRAPHS = ("preprocess", "encoder", "pruner")
MAX_FRAME_SIDE = 4096
"""Largest frame height or width a TensorRT preprocess engine takes (its optimisation profile's max)."""
PROFILE_FRAMES = 8
"""Optimisation-profile ``opt`` frame count of the dynamic axes: the runtime's chunk (``CHUNK_FRAMES``)."""


def check_frames(frames: int) -> None:
    """UserError (one line) unless ``frames`` is an int from 1 to MAX_FRAMES."""
    if not isinstance(frames, int) or not 1 <= frames <= MAX_FRAMES:
        raise UserError(f"--frames {frames}: expected an integer from 1 to {MAX_FRAMES}")


@dataclass
class BuildOptions:
    """What ``mmg-export build`` was asked for."""

    out: Path
    target: TargetProfile
    ratio: float = 0.25
    frames: int = 32
    precision: str = "fp32"
    backend: str = "onnxruntime"
    model_dir: Path | None = None
    overwrite: bool = False
    keep_onnx: bool = False
    """TensorRT builds: also keep the engines' ONNX sources, in ``onnx/`` (for ``scripts/verify_tensorrt.py``)."""
    pruning: MMGConfig = field(default_factory=MMGConfig)
    pruner_backend: str | None = None
    """"aotinductor": the pruner compiled by TorchInductor (``pruner.pt2``) instead of ``pruner.onnx``
    (``mmg-export build`` picks it by default on the target's own GPU: :func:`.aotinductor.default_pruner_backend`)."""

    def __post_init__(self) -> None:
        check_ratio(self.ratio)
        check_frames(self.frames)
        export.torch_dtype(self.precision)
        if self.backend not in BACKENDS:
            raise UserError(f"--backend {self.backend}: expected one of {', '.join(BACKENDS)}")
        if self.backend != "onnxruntime" and self.target.name == "cpu":
            raise UserError(f"--backend {self.backend} needs a GPU target (--target NAME); target cpu builds "
                            "ONNX Runtime models only")
        if self.backend != "onnxruntime":
            check_flavour(self.target, self.backend)
        if self.pruner_backend not in (None, "aotinductor"):
            raise UserError(f"--pruner-backend {self.pruner_backend}: expected aotinductor")
        if self.pruner_backend and self.backend != "onnxruntime":
            raise UserError("--pruner-backend aotinductor goes with --backend onnxruntime (a TensorRT build fuses "
                            "the pruner's engine itself)")
        if self.pruner_backend:
            from .aotinductor import compile_device

            compile_device(self.target)  # fails at once where the package cannot be compiled


class Progress:
    """Prints each stage as it starts and its duration when it ends."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.title: str | None = None

    @property
    def stream(self):
        return sys.stderr

    @contextmanager
    def stage(self, title: str) -> Iterator[None]:
        self.done += 1
        self.title = f"[{self.done}/{self.total}] {title}"
        print(f"{self.title} ...", end="", flush=True, file=self.stream)
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            self._end("failed")
            raise
        self._end(f"{time.perf_counter() - start:.1f} s")

    def note(self, text: str) -> None:
        """A line under the current stage (the stage's time follows on a line of its own)."""
        if self.title is not None:
            print(file=self.stream)
        print(f"      {text}", file=self.stream)
        self.title = None

    def _end(self, result: str) -> None:
        prefix = " " if self.title is not None else "      ... "
        print(f"{prefix}{result}", file=self.stream)
        self.title = None


def build(options: BuildOptions) -> Manifest:
    """Run every stage and return the manifest written to ``options.out``.

    A TensorRT build checks TensorRT (installed, in the target's version range, DLA available
    where asked for) before anything is exported, so that it fails at once.
    """
    if options.backend == "tensorrt":
        from .tensorrt import builder_settings

        builder_settings(options.target, import_tensorrt("tensorrt").__version__)
    if options.backend == "tensorrt-rtx":
        from .tensorrt_rtx import compute_capabilities

        compute_capabilities(options.target, import_tensorrt("tensorrt-rtx"))
    progress = Progress(total=7 if options.pruner_backend else 6)
    dtype = export.IO_DTYPES[options.precision]
    with atomic_output_dir(options.out, overwrite=options.overwrite) as work, \
            tempfile.TemporaryDirectory(prefix=f".{options.out.name}.tmp-", dir=work.parent) as scratch:
        onnx_dir = work if options.backend == "onnxruntime" else work / "onnx" if options.keep_onnx else Path(scratch)
        onnx_dir.mkdir(exist_ok=True)
        with progress.stage(f"load model ({options.model_dir or TINY_NAME})"):
            loaded = load_llava(options.model_dir, export.torch_dtype(options.precision))
            encoder = VideoEncoder(loaded.model)
        form = "resize" if options.target.name == "cpu" else "matmul"
        with progress.stage(f"export preprocess.onnx ({form}) and encoder.onnx (1 to {options.frames} frames, "
                            f"{options.precision}, for {options.backend})"):
            write_preprocess_graph(onnx_dir / "preprocess.onnx", encoder.image_size, dtype, form)
            export.export_encoder(encoder, options.frames, options.precision, onnx_dir / "encoder.onnx",
                                  "onnxruntime" if options.backend == "onnxruntime" else "tensorrt")
        keep = keep_count(options.frames * encoder.tokens_per_frame, options.ratio)
        pruner_dir = Path(scratch) if options.pruner_backend else onnx_dir  # linted, not shipped
        with progress.stage(f"export pruner.onnx (ratio {options.ratio}, K = {keep})"):
            export.export_pruner(options.frames, encoder.tokens_per_frame, encoder.hidden_size, options.ratio,
                                 options.precision, pruner_dir / "pruner.onnx", options.pruning, encoder.newline)
        tensorrt_bound = tensorrt_graphs(options.backend)  # as mmg-export lint ARTIFACTS checks them
        with progress.stage(f"lint {', '.join(tensorrt_bound)} for TensorRT 10.3 and 11"):
            _lint([(pruner_dir if name == "pruner" else onnx_dir) / f"{name}.onnx" for name in tensorrt_bound])
        specs = component_specs(options, encoder, keep)
        with progress.stage(f"{options.backend} backend for target {options.target.name}"):
            files, device, versions = _backend(options, onnx_dir, work, progress, specs)
        if options.pruner_backend:
            files["pruner"], device = _aotinductor_pruner(options, encoder, work, progress)
            versions["pruner_backend"] = options.pruner_backend
        with progress.stage("tokenizer, manifest"):
            extra = _save_language_model(loaded, options, work)
            manifest = _manifest(options, specs, keep, work, files, device, versions, extra)
            write_manifest(work, manifest)
    return manifest


def _lint(paths: list[Path]) -> None:
    """Every graph must pass the lint of every TensorRT release we ship a table for (10.3 and 11). (The real
    parser of a TensorRT build reads every graph before any engine is built: :func:`_engines`.)"""
    from ..lint import supported_versions
    from ..lint.rules import lint_versions

    for path in paths:
        for report in lint_versions(path, supported_versions()):
            if not report.ok:
                raise UserError(f"{path.name} fails the TensorRT {report.trt_version} compatibility lint:\n"
                                f"{report.format_table()}")


def _aotinductor_pruner(options: BuildOptions, encoder: VideoEncoder, work: Path,
                        progress: Progress) -> tuple[str, dict | None]:
    """``pruner.pt2`` compiled for this machine's device; returns (its file, the manifest's device)."""
    from .aotinductor import compile_pruner

    device = "cpu" if options.target.name == "cpu" else "cuda"  # checked by BuildOptions
    with progress.stage(f"compile pruner.pt2 (AOTInductor, {device})"):
        compile_pruner(options.frames, encoder.tokens_per_frame, encoder.hidden_size, options.ratio,
                       options.precision, work / "pruner.pt2", options.pruning, encoder.newline, device)
    return "pruner.pt2", None if device == "cpu" else device_info()


def _backend(options: BuildOptions, onnx_dir: Path, work: Path, progress: Progress,
             specs: Specs) -> tuple[dict, dict | None, dict]:
    """The runnable components; returns (component files, build device, extra manifest fields).

    TensorRT engines are built on the target's GPU, with the timing cache beside the artifacts; the
    device is that GPU. TensorRT-RTX engines are built ahead of time (no GPU needed); the device is
    the engines' compute capabilities (``{"compute_capabilities": "8.6,8.9"}``), the release is in the
    versions (``tensorrt_rtx``).
    """
    if options.backend == "onnxruntime":
        return {name: f"{name}.onnx" for name in GRAPHS}, None, {"providers": provider_settings(options.target)}
    cache = options.out.parent / f"{options.target.name}.timing.cache"
    files, info, profiles = _engines(options, onnx_dir, work, specs,
                                     engine_builder(options.backend, options.target, cache, progress.note))
    if options.backend == "tensorrt-rtx":
        return files, {"compute_capabilities": ",".join(info.compute_capabilities)}, {"optimization_profiles": profiles}
    device = {**(info.device or {}), "hardware_compatibility": info.hardware_compatibility or ""}
    device.setdefault("compute_capability", options.target.compute_capability)
    return files, device, {"tensorrt_version": info.trt_version, "optimization_profiles": profiles}


def _engines(options: BuildOptions, onnx_dir: Path, work: Path, specs: Specs,
             build_engine: EngineBuilder) -> tuple[dict, EngineInfo, dict]:
    """One engine per graph, its I/O checked against the manifest's; the ONNX files stay outside the
    artifact directory (each weight is stored once). Every graph is parsed first, once, by the real parser
    of the backend (:func:`.tensorrt.parse_network`), so that one it rejects stops the build before any
    engine is built (one line: node, operator, the parser's words); ``build_engine(parsed, engine,
    input_shapes)`` (:func:`.engines.engine_builder`) builds one from its parse. Returns (component files,
    the last engine's info, each graph's optimisation profile: input -> (min, opt, max) shapes)."""
    parsed = {name: parse_network(onnx_dir / f"{name}.onnx", options.backend) for name in GRAPHS}
    files, profiles = {}, {}
    for name in GRAPHS:
        profiles[name] = profile_shapes(specs[name][0], options.frames)
        info = build_engine(parsed.pop(name), work / f"{name}.engine", profiles[name])  # its network freed once built
        check_engine_io(f"{name}.engine", info.io_tensors, specs[name])
        files[name] = f"{name}.engine"
    return files, info, profiles


def profile_shapes(inputs: dict[str, TensorSpec], frames: int) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shape of every input with dynamic dimensions, for a TensorRT optimisation profile.

    frames: 1 / the runtime's chunk / ``frames``; height, width: 1 / 720p / :data:`MAX_FRAME_SIDE`.
    """
    ranges = {"frames": (1, min(PROFILE_FRAMES, frames), frames), "height": (1, 720, MAX_FRAME_SIDE),
              "width": (1, 1280, MAX_FRAME_SIDE)}
    shapes = {}
    for name, spec in inputs.items():
        if any(isinstance(dim, str) for dim in spec.shape):
            shapes[name] = tuple(tuple(ranges[dim][i] if isinstance(dim, str) else dim for dim in spec.shape)
                                 for i in range(3))
    return shapes


def _save_language_model(loaded, options: BuildOptions, work: Path) -> dict:
    """The built-in model travels with the artifacts; a real checkpoint is referenced by path.

    The tokenizer is always saved (``tokenizer/``): the runtime needs it even where the LLM is
    served elsewhere (TensorRT-LLM).
    """
    loaded.tokenizer.save_pretrained(work / "tokenizer")
    common = {"video_token_id": int(loaded.config.video_token_index), "model_source": loaded.source}
    if options.model_dir is None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        loaded.model.to(torch.float32).save_pretrained(work / "model")
        return {**common, "model": "model"}
    return {**common, "model": str(Path(options.model_dir).resolve())}


Specs = dict[str, tuple[dict[str, TensorSpec], dict[str, TensorSpec]]]


def component_specs(options: BuildOptions, encoder: VideoEncoder, keep: int) -> Specs:
    """(inputs, outputs) of every component, as the manifest records them (names are dynamic dimensions)."""
    dtype = export.IO_DTYPES[options.precision]
    frames, tokens, hidden, size = options.frames, encoder.tokens_per_frame, encoder.hidden_size, encoder.image_size
    resize = {} if options.target.name == "cpu" else {
        "resize_rows": TensorSpec((size, "height"), "float32"), "resize_cols": TensorSpec(("width", size), "float32")}
    return {
        "preprocess": ({"frames": TensorSpec(("frames", "height", "width", 3), "uint8"), **resize},
                       {"pixel_values": TensorSpec(("frames", 3, size, size), dtype)}),
        "encoder": ({"pixel_values": TensorSpec(("frames", 3, size, size), dtype)},
                    {"video_tokens": TensorSpec(("frames", tokens, hidden), dtype)}),
        "pruner": pruner_specs(frames, tokens, hidden, keep, dtype),
    }


def pruner_specs(frames: int, tokens: int, hidden: int, keep: int, dtype: str) -> tuple[dict, dict]:
    """(inputs, outputs) of the pruner: video_tokens (T, P, H) -> video_embeds (K + 1, H), kept_indices
    (K,), finite (1,), in the order the module returns them."""
    return ({"video_tokens": TensorSpec((frames, tokens, hidden), dtype)},
            {"video_embeds": TensorSpec((keep + 1, hidden), dtype), "kept_indices": TensorSpec((keep,), "int64"),
             "finite": TensorSpec((1,), "bool")})


def check_engine_io(engine: str, io_tensors, expected: tuple[dict, dict]) -> None:
    """UserError unless the engine's I/O tensors are exactly the manifest's (names, shapes with -1 for
    each dynamic dimension, dtypes)."""
    built = {tensor.name: (tuple(tensor.shape), tensor.dtype) for tensor in io_tensors}
    wanted = {name: (tuple(-1 if isinstance(dim, str) else dim for dim in spec.shape), spec.dtype)
              for side in expected for name, spec in side.items()}
    if built != wanted:
        raise UserError(f"{engine}: TensorRT built I/O {built}, expected {wanted} (typed ONNX and engine disagree)")


def _manifest(options: BuildOptions, specs: Specs, keep: int, work: Path, files: dict,
              device: dict | None, extra_versions: dict, extra: dict) -> Manifest:
    frames, tokens, hidden = specs["pruner"][0]["video_tokens"].shape
    size = specs["encoder"][0]["pixel_values"].shape[-1]
    components = {
        name: Component(file=file, sha256=sha256_file(work / file), inputs=specs[name][0], outputs=specs[name][1])
        for name, file in files.items()
    }
    return Manifest(
        tool_version=__version__, backend=options.backend, target=options.target.name, precision=options.precision,
        frames=frames, tokens_per_frame=tokens, hidden_size=hidden, ratio=options.ratio, keep=keep,
        components=components, versions=_versions(extra_versions.pop("tensorrt_version", None)), device=device,
        extra={**extra, **extra_versions, "image_size": size, "pruning": dataclasses.asdict(options.pruning),
               "target_file": str(options.target.path.resolve())},
    )


def _versions(tensorrt: str | None) -> dict[str, str]:
    """Library versions (:func:`mmg_runtime.versions.library_versions`: torch's as the module reports it,
    with its local build such as +cu130, which an AOTInductor package is checked against); TensorRT's as
    the module reports it (JetPack's has no package metadata)."""
    versions = {"mmg-export": __version__, **library_versions(LIBRARIES)}
    if tensorrt:
        versions["tensorrt"] = tensorrt
    return versions
