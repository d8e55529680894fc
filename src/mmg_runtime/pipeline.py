"""Video in, answer out: decode -> preprocess -> encode -> prune -> LLM, from a verified artifact directory.

    frames (N, H, W, 3) uint8, a chunk at a time --preprocess--> (n, 3, S, S) --encoder--> tokens[t:t+n]
    tokens (T, P, D) --pruner--> video_embeds (K + 1, D) (kept tokens + image_newline), kept_indices (K,)
    video_embeds --LLM (inputs_embeds / prompt table)--> answer

Every buffer between the stages is allocated once, on the device the components run on, and
bound by address (ONNX Runtime I/O binding, TensorRT tensor addresses): on a GPU nothing goes
through host memory but the decoded frames of a CPU decoder (uploaded chunk by chunk) and the
K kept indices. Decoding runs on its own thread, so frames are decoded while earlier chunks are
encoded. Loading ends with a warm-up question, so the first real question costs what later ones do.
"""
from __future__ import annotations

import functools
import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cache import CacheStore, VideoKey, default_cache_memory
from .decoders import DECODERS, make_reader
from .errors import UserError
from .llm import make_llm
from .llm.base import GREEDY, Generation, LLMBackend, Sampling, TokenCallback, VideoPrompt
from .llm.kv_prefix import KV_GROUP
from .component_io import check_component_io
from .conversation import Conversation
from .manifest import Manifest
from .preprocess import Preprocessor
from .prompt import IncrementalText, chat_ids, check_stop, cut_at_stop, load_tokenizer
from .sessions import OrtSession, Session
from .tensor import Tensor
from .tensorrt import FLAVOURS
from .trust import this_machine, verify_artifacts
from .video import PyAVReader, StreamEndedEarly, VideoClip, VideoPlan, replan_short_stream
from .video_cache import VIDEO_GROUP, ContentDigests, VideoTokens, array_digest

CHUNK_FRAMES = 8
"""Frames preprocessed and encoded per call: large enough to fill a GPU, small enough to overlap decoding."""
STAGES = ("load", "decode", "preprocess", "encode", "prune", "prefill", "generation")


@dataclass
class Timings:
    """Seconds per stage, and what reached the LLM.

    decode, preprocess and encode overlap (decoding runs on its own thread), so the stages can add
    up to more than ``question_to_first_token``, the wall time from the question to the first
    generated token. ``load`` is the pipeline's one-time start-up (artifacts, LLM, warm-up).
    """

    load: float = 0.0
    decode: float = 0.0
    preprocess: float = 0.0
    encode: float = 0.0
    prune: float = 0.0
    prefill: float = 0.0
    generation: float = 0.0
    question_to_first_token: float = 0.0
    tokens_kept: int = 0
    tokens_total: int = 0
    generated_tokens: int = 0

    def table(self) -> str:
        rows = [(name, f"{getattr(self, name) * 1e3:9.1f} ms") for name in STAGES]
        rows.append(("to 1st token", f"{self.question_to_first_token * 1e3:9.1f} ms  (decode, preprocess and "
                                      "encode overlap)"))
        rows.append(("tokens kept", f"{self.tokens_kept} of {self.tokens_total} video tokens (+1 newline)"))
        return "\n".join(f"  {name:13s} {value}" for name, value in rows)

    def milliseconds(self) -> dict[str, float]:
        """Every stage in milliseconds (the ``timings_ms`` of ``run --json``)."""
        return {name: round(getattr(self, name) * 1e3, 3) for name in STAGES}


@dataclass
class Answer:
    """One answer and how it came about.

    token_ids: the generated ids (prompt excluded). kept_indices: (K,) int64, the video tokens the
    pruner kept. prompt_tokens: the prompt's length with the video as its K + 1 embeddings.
    finish_reason: "length" when the answer was cut at ``max_new_tokens``, "stop" when it ended by
    itself or at a stop string (OpenAI's terms). providers: who ran each stage (:attr:`Pipeline.providers`).
    cached_tokens: prompt tokens whose KV cache came from an earlier question (not prefilled again).
    reused: what came from the cache: "video_tokens" (decode, preprocess, encode and prune skipped;
    their timings are 0), "kv_prefix" (``cached_tokens`` > 0). extra: the LLM backend's fields, and a
    live stream's frame counts and window (:meth:`LiveStream.chat`).
    """

    text: str
    token_ids: list[int]
    kept_indices: np.ndarray
    timings: Timings
    prompt_tokens: int
    finish_reason: str
    providers: dict[str, object]
    note: str = ""
    extra: dict = field(default_factory=dict)
    cached_tokens: int = 0
    reused: tuple[str, ...] = ()

    def to_json(self) -> dict:
        """The ``run --json`` object: answer, per-stage milliseconds, tokens (cached ones too), what was
        reused, who ran each stage, note, and a live stream's frame counts (the server's ``mmg`` field
        is this without the answer)."""
        timings = self.timings
        result = {
            "answer": self.text,
            "timings_ms": timings.milliseconds(),
            "question_to_first_token_ms": round(timings.question_to_first_token * 1e3, 3),
            "tokens_kept": timings.tokens_kept,
            "tokens_total": timings.tokens_total,
            "generated_tokens": timings.generated_tokens,
            "cached_tokens": self.cached_tokens,
            "reused": list(self.reused),
            "providers": self.providers,
            "note": self.note,
        }
        result.update({key: self.extra[key] for key in ("frames_encoded", "frames_dropped", "window_seconds")
                       if key in self.extra})
        return result


class ContextTooLong(UserError):
    """A conversation (prompt + new tokens) that does not fit the LLM's context."""

    code = "context_length_exceeded"
    """OpenAI's error code for it (the server's 400 carries it)."""


class ChunkEncoder:
    """Preprocessing + encoder over its own buffers: up to ``chunk`` frames (n, H, W, 3) uint8 -> tokens.

    Each user of the encoder (a question about a file, a live stream's worker) owns one, so they
    can run at the same time; the sessions themselves are shared (ONNX Runtime and TensorRT
    contexts run concurrent calls).
    """

    def __init__(self, preprocessor: Preprocessor, encoder, chunk: int, image_size: int, dtype: str) -> None:
        self.preprocessor, self.encoder, self.chunk = preprocessor, encoder, chunk
        self.pixels = encoder.empty((chunk, 3, image_size, image_size), dtype)
        self._frames: dict[tuple[int, int], Tensor] = {}

    def frame_buffer(self, height: int, width: int) -> Tensor:
        """The (chunk, H, W, 3) uint8 frame buffer for one frame size, on the encoder's device (kept)."""
        if (height, width) not in self._frames:
            if len(self._frames) >= 4:
                self._frames.clear()
            self._frames[height, width] = self.encoder.empty((self.chunk, height, width, 3), "uint8")
        return self._frames[height, width]

    def __call__(self, frames: Tensor, tokens: Tensor, timings: Timings) -> None:
        """frames (n, H, W, 3) uint8 on the encoder's device -> tokens (n, P, D); times go to ``timings``."""
        pixels = self.pixels.rows(0, frames.shape[0])
        start = time.perf_counter()
        self.preprocessor(frames, pixels)
        middle = time.perf_counter()
        self.encoder.run_bound({"pixel_values": pixels}, {"video_tokens": tokens})
        timings.preprocess += middle - start
        timings.encode += time.perf_counter() - middle


WARM_UP_QUESTION = "Describe the video."
"""What loading asks the synthetic clip when the first question is not known in advance."""
WARM_UP_NAMESPACE = "\0warm-up"
"""The warm-up's cache entries, dropped once it is done (no caller's namespace starts with NUL)."""
WARM_UP_SAMPLING = Sampling(temperature=1.0, top_p=0.9, top_k=50, seed=0, repetition_penalty=1.1,
                            frequency_penalty=0.1, presence_penalty=0.1)
"""How the warm-up's follow-up draws its tokens: every sampling kernel (penalties, top-k, top-p, the
draw) is loaded during loading, not by the first sampled question."""

Video = str | Path | np.ndarray | VideoClip
"""A video file, a folder of images, an (N, H, W, 3) uint8 array or a clip."""


class Pipeline:
    """Preprocess -> encoder -> pruner -> LLM over one artifact directory (``mmg-export build`` output).

    decoder: "pyav" (CPU), "nvdec" (NVIDIA hardware decoder, files only) or "auto": nvdec where
    the components run on a GPU and PyNvVideoCodec is installed, else pyav.
    cache_memory: bytes for :attr:`cache`, which keeps each video's pruned tokens and the LLM's KV
    cache of the prompt prefix that holds them between questions (None: :func:`default_cache_memory`;
    0: nothing is kept, every question pays the whole pipeline).
    """

    def __init__(self, directory: Path, manifest: Manifest, llm: LLMBackend, keep_positions: bool = False,
                 decoder: str = "auto", warm_up: bool = True, warm_up_question: str = WARM_UP_QUESTION,
                 cache_memory: int | None = None) -> None:
        start = time.perf_counter()
        self.load_seconds = 0.0
        self.directory, self.manifest, self.llm = directory, manifest, llm
        self.keep_positions = keep_positions
        self.tokenizer = load_tokenizer(directory / "tokenizer")
        size = int(manifest.extra["image_size"])
        self.preprocessor = Preprocessor(open_component(manifest, directory, "preprocess"), size)
        self.encoder = open_component(manifest, directory, "encoder")
        self.pruner = open_component(manifest, directory, "pruner", cuda_graph=True)
        dtype = manifest.component("encoder", directory).outputs["video_tokens"].dtype
        frames, tokens, hidden = manifest.frames, manifest.tokens_per_frame, manifest.hidden_size
        self.dtype = dtype
        self.tokens = self.encoder.empty((frames, tokens, hidden), dtype)
        self.chunk_encoder = ChunkEncoder(self.preprocessor, self.encoder, CHUNK_FRAMES, size, dtype)
        self.video_embeds = self.pruner.empty((manifest.keep + 1, hidden), dtype)
        self.kept_indices = self.pruner.empty((manifest.keep,), "int64")
        self.finite = self.pruner.empty(manifest.component("pruner", directory).outputs["finite"].shape, "bool")
        self.lock = threading.RLock()
        """Held by every question: the pruner's buffers and the LLM serve one at a time."""
        self.reader = make_reader(decoder, self.encoder.device, CHUNK_FRAMES)
        self._pyav = self.reader if isinstance(self.reader, PyAVReader) else PyAVReader()
        self.artifacts_digest = hashlib.sha256(manifest.to_json().encode()).hexdigest()
        self.digests = ContentDigests()
        if cache_memory is not None and (not isinstance(cache_memory, int) or cache_memory < 0):
            raise UserError(f"cache_memory={cache_memory!r}: expected a number of bytes >= 0 (0: no cache)")
        self.cache = CacheStore(default_cache_memory(self.encoder.device) if cache_memory is None else cache_memory)
        if warm_up:
            self.warm_up(warm_up_question)
        self.load_seconds = time.perf_counter() - start

    @classmethod
    def from_artifacts(cls, directory: str | Path, llm: LLMBackend | str = "transformers",
                       model_dir: str | Path | None = None, keep_positions: bool = False, decoder: str = "auto",
                       warm_up: bool = True, warm_up_question: str = WARM_UP_QUESTION,
                       cache_memory: int | None = None) -> Pipeline:
        """Verify the manifest and hashes, open every component, attach the LLM, and warm up.

        llm: an :class:`LLMBackend`, or a name from :data:`~.llm.LLM_BACKENDS`: "transformers" loads
        LLaVA-OneVision from ``model_dir`` (default: the model the artifacts were built from);
        "trtllm-engine" takes a TensorRT-LLM engine directory and "trtllm-api" a model directory
        for the TensorRT-LLM LLM API, both as ``model_dir``. warm_up_question: see :meth:`warm_up`.
        cache_memory: see the class.
        """
        start = time.perf_counter()
        directory = Path(directory)
        if decoder not in DECODERS:
            raise UserError(f"decoder={decoder!r}: expected one of {', '.join(DECODERS)}")
        manifest = verify_artifacts(directory, **this_machine())
        if isinstance(llm, str):
            llm = make_llm(llm, directory, manifest, model_dir)
        pipeline = cls(directory, manifest, llm, keep_positions, decoder, warm_up, warm_up_question, cache_memory)
        pipeline.load_seconds = time.perf_counter() - start
        return pipeline

    def close(self) -> None:
        """Release the engines (TensorRT); ONNX Runtime sessions and buffers go with the object."""
        for session in (self.preprocessor.session, self.encoder, self.pruner):
            session.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def frames(self) -> int:
        return self.manifest.frames

    @property
    def providers(self) -> dict[str, object]:
        """Who runs each stage: the decoder, the execution providers / engines, the LLM."""
        return {"decoder": self.reader.name, "preprocess": self.preprocessor.session.providers,
                "encoder": self.encoder.providers, "pruner": self.pruner.providers,
                "llm": getattr(self.llm, "name", type(self.llm).__name__)}

    # -- questions ------------------------------------------------------------------------
    def ask(self, video: Video, question: str, max_new_tokens: int = 64, on_token: TokenCallback | None = None,
            sampling: Sampling = GREEDY, stop: str | Sequence[str] = ()) -> Answer:
        """Answer ``question`` about a video file, image folder, (N, H, W, 3) uint8 array or clip;
        ``on_token`` is called with each token id as it is generated. One user turn of :meth:`chat`."""
        return self.chat(video, [{"role": "user", "content": question}], max_new_tokens, sampling, stop, on_token)

    def chat(self, video: Video, messages: Sequence[dict], max_new_tokens: int = 64, sampling: Sampling = GREEDY,
             stop: str | Sequence[str] = (), on_token: TokenCallback | None = None, namespace: str = "") -> Answer:
        """Answer the last of ``messages`` (OpenAI-style ``{"role": "system" | "user" | "assistant",
        "content": str}``, the last one the user's) about ``video``, which belongs to the first user
        message; the chat template places everything.

        The video's pruned tokens and the LLM's KV cache of the prompt so far are kept in
        :attr:`cache` under (artifacts, the video's content digest, its sampling plan, ``namespace``):
        a follow-up question about the same, unchanged video skips decode to prune and prefills only
        its new tokens. sampling: how tokens are chosen (greedy by default). stop: up to four
        strings; generation stops at the first one, and the answer ends before it. on_token: each
        token id as it is generated (returning True stops generation there).
        """
        ids = self.prompt_ids(messages, max_new_tokens)
        stop = check_stop(stop)
        asked = time.perf_counter()
        key = self.video_key(video, namespace)  # hashing a new file or an array holds no lock
        with self.lock:
            return self.answer(ids, key, functools.partial(self.encode_and_prune, video), max_new_tokens, asked,
                               sampling, stop, on_token)

    def conversation(self, video: Video, system: str | None = None, namespace: str = "") -> Conversation:
        """A :class:`Conversation` about ``video`` (a system prompt first, if given)."""
        return Conversation(functools.partial(self.chat, video), system, namespace)

    def prompt_ids(self, messages: Sequence[dict], max_new_tokens: int) -> list[int]:
        """The conversation's token ids (video placeholder included), checked against the LLM's context
        with the video as its K + 1 embeddings (ContextTooLong, before any video work)."""
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            raise UserError(f"max_new_tokens={max_new_tokens!r}: expected an integer >= 1")
        ids = chat_ids(self.tokenizer, messages)
        needed, limit = len(ids) + self.manifest.keep, self.llm.max_context
        if needed + max_new_tokens > limit:
            raise ContextTooLong(f"the conversation needs {needed} prompt tokens + {max_new_tokens} new ones, more "
                                 f"than the model's context of {limit}; start a new conversation, ask fewer new "
                                 "tokens or prune harder")
        return ids

    def video_key(self, video: Video, namespace: str = "") -> VideoKey | None:
        """What the cache keeps ``video``'s tokens under; None when there is no cache, or when the
        video cannot be read (the reader then says why)."""
        if self.cache.budget_bytes == 0:
            return None
        source = video.frames if isinstance(video, VideoClip) else video
        if isinstance(source, np.ndarray):
            plan = self._pyav.open(source, self.frames)
            return VideoKey(self.artifacts_digest, array_digest(source, plan.indices), ("array", self.frames),
                            namespace)
        if not isinstance(source, (str, Path)) or not str(source):
            return None
        path = Path(source)
        if path.is_file():
            content = self.digests.file(path)
        elif path.is_dir():
            content = self.digests.folder(path)
        else:
            return None
        return VideoKey(self.artifacts_digest, content, (self.reader.name, self.frames), namespace)

    def answer(self, ids: list[int], key: VideoKey | None, make_tokens: Callable[[Timings], VideoTokens],
               max_new_tokens: int, asked: float, sampling: Sampling = GREEDY, stop: Sequence[str] = (),
               on_token: TokenCallback | None = None) -> Answer:
        """Answer the prompt ``ids`` about the video under ``key``: its tokens from the cache, else from
        ``make_tokens(timings)`` (then kept); ``asked`` is when the question came (perf_counter)."""
        with self.lock:
            timings = Timings(load=self.load_seconds)
            tokens = None if key is None else self.cache.get(VIDEO_GROUP, key)
            reused = ("video_tokens",) if tokens is not None else ()
            if tokens is None:
                tokens = make_tokens(timings)
                if key is not None:
                    self.cache.put(VIDEO_GROUP, key, tokens, tokens.nbytes)
            timings.tokens_kept, timings.tokens_total = len(tokens.kept_indices), tokens.tokens_total
            return self._generate(ids, key, tokens, max_new_tokens, timings, asked, sampling, stop, on_token, reused)

    def forget_video(self, key: VideoKey) -> None:
        """Drop the video tokens under ``key`` and the KV prefixes made from them (group ``("kv", key)``)."""
        self.cache.remove(VIDEO_GROUP, key)
        for prefix, _ in self.cache.items((KV_GROUP, key)):
            self.cache.remove((KV_GROUP, key), prefix)

    # -- stages ---------------------------------------------------------------------------
    def encode_and_prune(self, video: Video, timings: Timings) -> VideoTokens:
        """Decode, encode and prune ``video`` (stage times go to ``timings``)."""
        source = video.frames if isinstance(video, VideoClip) else video
        reader = self.reader if isinstance(source, (str, Path)) else self._pyav
        plan = reader.open(source, self.frames)
        try:
            self.encode_video(reader, plan, timings)
        except StreamEndedEarly as short:  # the header promised more frames than decode: sample again
            plan = replan_short_stream(reader, source, self.frames, plan, short.decoded)
            self.encode_video(reader, plan, timings)
        return self.prune_tokens(self.tokens, timings, plan.note)

    def encode_video(self, reader, plan: VideoPlan, timings: Timings) -> None:
        """Decode the plan's frames (on a thread) and encode them into ``self.tokens``, a chunk at a time."""
        frames = self.chunk_encoder.frame_buffer(plan.height, plan.width)
        indices, position = plan.indices.tolist(), 0
        for index, frame in _prefetch(reader.frames(plan), timings):
            while position < len(indices) and indices[position] == index:  # repeats fill several positions
                slot = position % CHUNK_FRAMES
                frames.rows(slot, slot + 1).copy_from(frame)
                position += 1
                if slot == CHUNK_FRAMES - 1 or position == len(indices):
                    first = position - slot - 1
                    self.chunk_encoder(frames.rows(0, slot + 1), self.tokens.rows(first, position), timings)

    def prune(self, tokens: Tensor) -> tuple[Tensor, np.ndarray]:
        """tokens (T, P, D) -> (video_embeds (K + 1, D) on the device, kept indices (K,) on the host).
        Both are the pipeline's buffers, overwritten by the next call."""
        self.pruner.run_bound({"video_tokens": tokens}, {"video_embeds": self.video_embeds,
                                                         "kept_indices": self.kept_indices, "finite": self.finite})
        if not bool(self.finite.numpy()):
            raise UserError("the encoder produced NaN or inf tokens for this video: expected finite features; "
                            "check the artifacts' precision (fp16 can overflow) and the checkpoint")
        return self.video_embeds, self.kept_indices.numpy()

    def prune_tokens(self, tokens: Tensor, timings: Timings, note: str = "") -> VideoTokens:
        """tokens (T, P, D) pruned into :class:`VideoTokens` of their own (a device copy of the embeddings)."""
        start = time.perf_counter()
        with self.lock:
            video_embeds, indices = self.prune(tokens)
            embeds = self.pruner.empty(video_embeds.shape, video_embeds.dtype)
            embeds.copy_from(video_embeds)
        timings.prune = time.perf_counter() - start
        return VideoTokens(embeds, indices, tokens.shape[0] * tokens.shape[1], note)

    def _generate(self, ids: list[int], key: VideoKey | None, tokens: VideoTokens, max_new_tokens: int,
                  timings: Timings, asked: float, sampling: Sampling, stop: Sequence[str],
                  on_token: TokenCallback | None, reused: tuple[str, ...]) -> Answer:
        positions = None
        if self.keep_positions:
            positions = np.append(tokens.kept_indices, self.manifest.frames * self.manifest.tokens_per_frame)
        prompt = VideoPrompt(ids, int(self.manifest.extra["video_token_id"]), tokens.embeds, positions,
                             video_key=key)
        callback = on_token if not stop else _stopping(on_token, IncrementalText(self.tokenizer, stop))
        before_llm = time.perf_counter()
        generation: Generation = self.llm.generate(prompt, max_new_tokens, callback, sampling=sampling,
                                                   cache=None if key is None else self.cache)
        timings.prefill, timings.generation = generation.prefill_s, generation.decode_s
        timings.question_to_first_token = before_llm - asked + generation.prefill_s
        timings.generated_tokens = len(generation.token_ids)
        ids = generation.token_ids
        text, stopped = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), stop)
        ends = getattr(self.llm, "eos_ids", None) or [self.tokenizer.eos_token_id]  # backends without eos_ids
        cut = len(ids) >= max_new_tokens and ids[-1] not in ends and not (stopped or generation.stopped)
        if generation.cached_tokens:
            reused += ("kv_prefix",)
        return Answer(text, ids, tokens.kept_indices, timings, prompt_tokens=prompt.sequence_length,
                      finish_reason="length" if cut else "stop", providers=self.providers,
                      note=tokens.note, extra=generation.extra, cached_tokens=generation.cached_tokens,
                      reused=reused)

    def warm_up(self, question: str = WARM_UP_QUESTION) -> None:
        """A question and a follow-up on a synthetic 720p clip (and a decode through NVDEC where it is
        the decoder): allocations, kernel selection, CUDA graph capture and the LLM's first calls, with
        and without a cached prefix, greedy and sampled (:data:`WARM_UP_SAMPLING`; the first sampled
        question after a greedy-only warm-up paid +91 ms of prefill at 7B geometry on an H100), happen
        here; the warm-up's cache entries are dropped after.

        The transformers LLM's first prefill at a new prompt length costs more than later ones
        (+8 to +14 ms at 7B geometry on an H100, BENCHMARKS.md), so where the question is known
        before loading (``mmg-export run --prompt``) warming up with it moves that cost into loading.
        """
        clip = np.random.default_rng(0).integers(0, 256, (self.frames, 720, 1280, 3), dtype=np.uint8)
        conversation = self.conversation(clip, namespace=WARM_UP_NAMESPACE)
        conversation.ask(question, max_new_tokens=2)
        key = self.video_key(clip, WARM_UP_NAMESPACE)
        if key is not None:
            conversation.ask(question, max_new_tokens=2, sampling=WARM_UP_SAMPLING)
            self.forget_video(key)
        if self.reader is not self._pyav:
            from .nvdec import warm_up_file

            with warm_up_file() as path:
                if path is not None:
                    self.reader.warm_up(path)


def _stopping(on_token: TokenCallback | None, text: IncrementalText) -> TokenCallback:
    """``on_token`` that also stops generation once ``text`` (fed each token) reaches a stop string."""
    def token(token_id: int) -> bool:
        text.push(token_id)
        asked = on_token(token_id) if on_token is not None else None
        return text.stopped or asked is True

    return token


def open_component(manifest: Manifest, directory: Path, name: str, cuda_graph: bool = False) -> Session:
    """Component ``name`` of the artifacts in ``directory``, opened as the pipeline runs it (see
    :func:`open_model`), its inputs and outputs checked against the manifest's."""
    component = manifest.component(name, directory)
    path = directory / component.file
    session = open_model(manifest, path, cuda_graph, component.sha256)
    check_component_io(path, component, session.inputs, session.outputs)
    return session


def open_model(manifest: Manifest, path: Path, cuda_graph: bool = False, sha256: str | None = None) -> Session:
    """A model file under the manifest's backend: a :class:`TrtEngine` (TensorRT or TensorRT-RTX), an
    :class:`OrtSession` on exactly the manifest's providers, or for a ``.pt2`` file (``--pruner-backend
    aotinductor``) an :class:`~.aotinductor.AotiPackage` with the pruner's I/O (``cuda_graph``: captured
    and replayed, GPU only). ``sha256``: the file's, which names a TensorRT-RTX engine's runtime cache."""
    if path.suffix == ".pt2":
        from .aotinductor import open_package

        return open_package(path, manifest, cuda_graph)
    if manifest.backend in FLAVOURS:
        from .trt_engine import TrtEngine, runtime_cache_file

        rtx = manifest.backend == "tensorrt-rtx" and sha256 is not None
        return TrtEngine(path, manifest.backend, cuda_graph, runtime_cache_file(sha256) if rtx else None)
    return OrtSession(path, manifest.extra["providers"], cuda_graph=cuda_graph)


def _prefetch(frames: Iterator, timings: Timings, depth: int = 2 * CHUNK_FRAMES) -> Iterator:
    """Run ``frames`` on a background thread, ``depth`` items ahead; its busy time goes to ``timings.decode``.

    Exceptions from the decoder are raised in the caller; leaving the loop early stops the thread.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            iterator = iter(frames)
            while not stop.is_set():
                start = time.perf_counter()
                item = next(iterator, done)
                timings.decode += time.perf_counter() - start
                items.put(item)
                if item is done:
                    return
        except BaseException as error:  # handed to the consumer  # noqa: BLE001
            items.put(error)

    thread = threading.Thread(target=produce, name="mmg-decode", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(0.01)
