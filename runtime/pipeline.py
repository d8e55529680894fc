"""Video in, answer out: decode -> encode -> prune -> LLM, from a verified artifact directory.

    frames (T, H, W, 3) uint8 --preprocess--> (T, 3, S, S) --encoder--> (T, P, D)
      --pruner--> kept (K, D) + indices (K,) --+ image_newline--> (K + 1, D) --LLM--> answer
"""
from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .device import device_info
from .errors import UserError
from .llm.base import Generation, LLMBackend, VideoPrompt
from .manifest import Manifest, verify_artifacts
from .prompt import load_tokenizer, video_question_ids
from .sessions import Session, open_component
from .video import VideoClip, load_video, preprocess_frames

NUMPY_DTYPES = {"fp32": np.float32, "fp16": np.float16, "bf16": np.float32}
"""Host dtype of the graphs' inputs per precision (bf16 graphs take float32: NumPy has no bf16)."""


@dataclass
class Timings:
    """Seconds per stage, and how many video tokens reached the LLM."""

    decode: float = 0.0
    encode: float = 0.0
    prune: float = 0.0
    prefill: float = 0.0
    generation: float = 0.0
    tokens_kept: int = 0
    tokens_total: int = 0

    def table(self) -> str:
        rows = [(name, f"{getattr(self, name) * 1e3:9.1f} ms") for name in
                ("decode", "encode", "prune", "prefill", "generation")]
        rows.append(("tokens kept", f"{self.tokens_kept} of {self.tokens_total} video tokens (+1 newline)"))
        return "\n".join(f"  {name:12s} {value}" for name, value in rows)


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    kept_indices: np.ndarray
    timings: Timings
    note: str = ""
    extra: dict = field(default_factory=dict)


class Pipeline:
    """Encoder -> pruner -> LLM over one artifact directory (``mmg-export build`` output)."""

    def __init__(self, directory: Path, manifest: Manifest, llm: LLMBackend, keep_positions: bool = False,
                 providers: list[list] | None = None) -> None:
        self.directory, self.manifest, self.llm = directory, manifest, llm
        self.keep_positions = keep_positions
        self.providers = providers
        self.tokenizer = load_tokenizer(directory / "tokenizer")
        self.newline = np.load(directory / manifest.components["newline"].file)
        self.encoder = self._open("encoder")
        self.pruner = self._open("pruner")
        self._frame_encoder: Session | None = None

    @classmethod
    def from_artifacts(cls, directory: str | Path, llm: LLMBackend | str = "transformers", model_dir: str | Path | None = None,
                       keep_positions: bool = False, providers: list[list] | None = None) -> Pipeline:
        """Verify the manifest and hashes, open every component, and attach the LLM.

        llm: an :class:`LLMBackend`, or a name from :data:`LLM_BACKENDS`: "transformers" loads
        LLaVA-OneVision from ``model_dir`` (default: the model the artifacts were built from);
        "trtllm-engine" takes a TensorRT-LLM engine directory and "trtllm-api" a model directory
        for the TensorRT-LLM LLM API, both as ``model_dir``.
        """
        directory = Path(directory)
        manifest = verify_artifacts(directory, **_this_machine())
        if isinstance(llm, str):
            llm = make_llm(llm, directory, manifest, model_dir)
        return cls(directory, manifest, llm, keep_positions, providers)

    def close(self) -> None:
        """Release the engines' GPU memory (TensorRT); ONNX Runtime sessions go with the object."""
        for session in (self.encoder, self.pruner, self._frame_encoder):
            if hasattr(session, "close"):
                session.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- stages ---------------------------------------------------------------------------
    @property
    def frames(self) -> int:
        return self.manifest.frames

    def _open(self, name: str) -> Session:
        return open_component(self.manifest, self.directory, name, self.providers)

    def pixels(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) uint8 -> (T, 3, S, S) in the artifacts' precision."""
        size = int(self.manifest.extra.get("image_size", 384))
        return preprocess_frames(frames, size=size).astype(NUMPY_DTYPES[self.manifest.precision])

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) uint8 -> (T, P, D) video tokens."""
        return self.encoder.run({"pixel_values": self.pixels(frames)})["video_tokens"]

    def encode_frame(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (1, P, D) tokens, with the one-frame encoder (streaming)."""
        if self._frame_encoder is None:
            self._frame_encoder = self._open("frame_encoder")
        return self._frame_encoder.run({"pixel_values": self.pixels(frame[None])})["video_tokens"]

    def prune(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, P, D) -> kept (K, D), indices (K,) int64 ascending."""
        outputs = self.pruner.run({"video_tokens": tokens})
        return outputs["kept_tokens"], outputs["kept_indices"]

    def prompt(self, question: str, kept: np.ndarray, indices: np.ndarray) -> VideoPrompt:
        """The chat prompt with the kept tokens and the newline in place of the video."""
        embeds = np.concatenate([kept.astype(np.float32), self.newline[None].astype(np.float32)])
        positions = None
        if self.keep_positions:
            positions = np.append(indices, self.manifest.frames * self.manifest.tokens_per_frame)
        return VideoPrompt(video_question_ids(self.tokenizer, question), int(self.manifest.extra["video_token_id"]),
                           embeds, positions)

    def prune_and_generate(self, question: str, tokens: np.ndarray, max_new_tokens: int, timings: Timings) -> Answer:
        """Prune ``tokens (T, P, D)`` and answer ``question``."""
        start = time.perf_counter()
        kept, indices = self.prune(tokens)
        timings.prune = time.perf_counter() - start
        timings.tokens_kept, timings.tokens_total = len(indices), tokens.shape[0] * tokens.shape[1]
        generation: Generation = self.llm.generate(self.prompt(question, kept, indices), max_new_tokens)
        timings.prefill, timings.generation = generation.prefill_s, generation.decode_s
        text = self.tokenizer.decode(generation.token_ids, skip_special_tokens=True)
        return Answer(text, generation.token_ids, indices, timings, extra=generation.extra)

    def ask(self, video: str | Path | np.ndarray | VideoClip, question: str, max_new_tokens: int = 64) -> Answer:
        """Answer ``question`` about a video file, image folder, (N, H, W, 3) array or clip."""
        timings = Timings()
        start = time.perf_counter()
        clip = video if isinstance(video, VideoClip) else load_video(video, self.frames)
        timings.decode = time.perf_counter() - start
        start = time.perf_counter()
        tokens = self.encode(clip.frames)
        timings.encode = time.perf_counter() - start
        answer = self.prune_and_generate(question, tokens, max_new_tokens, timings)
        answer.note = clip.note
        return answer


def _this_machine() -> dict:
    """TensorRT version and GPU compute capability that engines must match (where TensorRT exists;
    ``verify_artifacts`` checks them for TensorRT artifacts only)."""
    try:
        import tensorrt
    except ImportError:
        return {}
    device = device_info() or {}
    return {"trt_version": tensorrt.__version__, "compute_capability": device.get("compute_capability")}


LLM_BACKENDS = ("transformers", "trtllm-engine", "trtllm-api")


def make_llm(name: str, directory: Path, manifest: Manifest, model_dir: str | Path | None) -> LLMBackend:
    """The LLM backend ``name`` (see :data:`LLM_BACKENDS`) over ``model_dir``."""
    if name not in LLM_BACKENDS:
        raise UserError(f"llm={name!r}: expected one of {', '.join(LLM_BACKENDS)} or an LLMBackend instance")
    if name == "transformers":
        from .llm.hf import TransformersBackend

        if model_dir is not None:
            return TransformersBackend(Path(model_dir))
        source = manifest.extra.get("model")
        if source is None:
            raise UserError(f"{directory}: the manifest names no model; pass --model DIR")
        path = Path(source)  # relative paths in the manifest are inside the artifact directory
        return TransformersBackend(path if path.is_absolute() else directory / path)
    if model_dir is None:
        raise UserError(f"--llm {name} needs --model DIR (the TensorRT-LLM engine or model directory)")
    if importlib.util.find_spec("tensorrt_llm") is None:
        raise UserError(f"--llm {name}: TensorRT-LLM is not installed (pip install 'mmg-export[trtllm]' on x86, "
                        "the 0.12-jetson branch on JetPack 6); or use --llm transformers")
    if name == "trtllm-engine":
        from .llm.trtllm_engine import TrtLlmEngineBackend

        return TrtLlmEngineBackend(model_dir, tokenizer_dir=directory / "tokenizer")
    from .llm.trtllm_llmapi import TrtLlmApiBackend

    return TrtLlmApiBackend(model_dir)
