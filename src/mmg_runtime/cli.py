"""``mmg-export run``: answer questions about a video (file, folder of images, or a live stream).

Everything that can be checked without the model is checked before it loads (loading and warming
up takes seconds): the options (usage errors, exit status 2), the artifact directory's manifest, the
video or stream source, and whether the question fits the model's context.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from .arguments import byte_size, integer, number, text
from .decoders import DECODERS
from .errors import UsageError, UserError
from .llm import LLM_BACKENDS, check_llm

DEFAULT_ARTIFACTS = Path("artifacts") / "tiny-cpu-ort-fp32-32f-r0.25"
DEFAULT_SAMPLE_FPS = 1.0
VIDEO_EXPECTED = "a video file or a folder of images"
STREAM_EXPECTED = "a video file, a folder of images, a camera such as /dev/video0, a network URL or gst:<pipeline>"
SAMPLING_OPTIONS = {"temperature": float, "top_p": float, "top_k": int, "seed": int}
"""The :class:`~mmg_runtime.llm.base.Sampling` fields that ``run`` takes as options (``--top-p`` ...)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="answer questions about a video with the built artifacts",
                                   description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", type=text(VIDEO_EXPECTED), help="video file or folder of images (sampled uniformly)")
    source.add_argument("--stream", type=text(STREAM_EXPECTED),
                        help="live source: a video file replayed at its frame rate, a folder of images, "
                             "a camera (/dev/video0), an rtsp:// or http:// URL, or gst:<pipeline>")
    parser.add_argument("--prompt", type=text("a question about the video"),
                        help="the question (with --interactive: the first one, optional)")
    parser.add_argument("--interactive", action="store_true",
                        help="then read one question per line from stdin, all in one conversation (about the video, "
                             "encoded once; or about the stream's window when each is asked); an empty line or the "
                             "end of input ends it")
    parser.add_argument("--system", type=text("a system prompt"), default=None, metavar="TEXT",
                        help="the system prompt of the conversation")
    add_pipeline_options(parser)
    parser.add_argument("--max-new-tokens", type=integer(1), default=64, help="longest answer in tokens (default 64)")
    sampling = parser.add_argument_group("sampling (default: greedy)")
    sampling.add_argument("--temperature", type=sampling_field("temperature"), default=None,
                          help="0 (default) picks the most likely token; up to 2: draw, the higher the more varied")
    sampling.add_argument("--top-p", type=sampling_field("top_p"), default=None,
                          help="draw among the most likely tokens that together hold this probability (default 1)")
    sampling.add_argument("--top-k", type=sampling_field("top_k"), default=None,
                          help="draw among the k most likely tokens (default 0: all)")
    sampling.add_argument("--seed", type=sampling_field("seed"), default=None,
                          help="seed of the draw: the same answers again on this machine (default: a fresh one)")
    parser.add_argument("--sample-fps", type=number(0.0, low_open=True), default=None,
                        help=f"with --stream: frames sampled and encoded per second of video (default "
                             f"{DEFAULT_SAMPLE_FPS:g}: the window of T frames covers T seconds)")
    parser.add_argument("--ask-after", type=number(0.0), default=None, metavar="SECONDS",
                        help="with --stream: ask after this much video (default: at its end)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per answer (answer, timings, tokens, providers, note) on one line "
                             "of stdout instead of text")
    parser.set_defaults(handler=run)


def add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    """--artifacts, --llm, --model, --decoder, --keep-positions and --cache-memory: what :func:`load_pipeline`
    reads (``run`` and ``serve`` share them)."""
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS,
                        help=f"artifact directory from mmg-export build (default: {DEFAULT_ARTIFACTS})")
    parser.add_argument("--llm", choices=list(LLM_BACKENDS), default="transformers",
                        help="LLM backend (default transformers)")
    parser.add_argument("--model", type=Path, default=None,
                        help="transformers: LLaVA-OneVision checkpoint (default: the one the artifacts name); "
                             "trtllm-engine: TensorRT-LLM engine directory; trtllm-api: model directory")
    parser.add_argument("--decoder", choices=list(DECODERS), default="auto",
                        help="video decoder: nvdec (NVIDIA hardware, files) or pyav (CPU); auto: nvdec where the "
                             "components run on a GPU and PyNvVideoCodec is installed")
    parser.add_argument("--keep-positions", action="store_true",
                        help="give the kept video tokens their original position ids")
    parser.add_argument("--cache-memory", type=byte_size, default=None, metavar="SIZE",
                        help="memory kept for videos' tokens and the LLM's prompt prefixes between questions, e.g. "
                             "2GiB, 512MiB, 1.5GB; 0 keeps nothing (default: sized for the device)")


def sampling_field(name: str):
    """An argparse type for the :class:`~mmg_runtime.llm.base.Sampling` field ``name``, whose range Sampling
    checks (in its words: "expected a number from 0 (greedy) to 2")."""
    kind = SAMPLING_OPTIONS[name]

    def parse(text: str):
        from .llm.base import Sampling

        try:
            value = kind(text)
        except ValueError:
            value = text  # Sampling says what it expects
        try:
            Sampling(**{name: value})
        except UserError as error:
            raise argparse.ArgumentTypeError(f"{str(error).partition(': ')[2]}, got {text}") from None
        return value

    parse.__name__ = name
    return parse


def check_pipeline_options(args: argparse.Namespace) -> None:
    """The pipeline options' own checks (UsageError with one line), before anything loads."""
    if args.keep_positions and args.llm != "transformers":
        raise UsageError(f"--keep-positions needs --llm transformers: {args.llm} derives positions from token order")


def load_pipeline(args: argparse.Namespace, question: str | None = None):
    """The :class:`~mmg_runtime.pipeline.Pipeline` that the pipeline options describe (verified, warmed
    up with ``question`` where the first question is known, else a generic one)."""
    from .pipeline import WARM_UP_QUESTION, Pipeline

    return Pipeline.from_artifacts(args.artifacts, llm=args.llm, model_dir=args.model,
                                   keep_positions=args.keep_positions, decoder=args.decoder,
                                   warm_up_question=question or WARM_UP_QUESTION, cache_memory=args.cache_memory)


def check_options(args: argparse.Namespace) -> None:
    """The options' combinations (each option's own value is argparse's to check); UsageError otherwise."""
    check_pipeline_options(args)
    if args.prompt is None and not args.interactive:
        raise UsageError("--prompt QUESTION is required (or --interactive, to read the questions from stdin)")
    if args.stream is None and (args.ask_after is not None or args.sample_fps is not None):
        raise UsageError("--ask-after and --sample-fps work with --stream only")


def check_before_loading(args: argparse.Namespace) -> None:
    """What the artifacts' manifest and tokenizer, the video or stream source, the LLM backend's install
    and the model's config can tell before the pipeline loads (UserError with one line, in the options'
    words)."""
    from .manifest import load_manifest

    manifest = load_manifest(args.artifacts)
    if args.video is not None:
        check_video(args.video, manifest.frames)
    else:
        check_stream_source(args.stream)
    check_llm(args.llm, args.model)
    if args.prompt is not None:
        check_prompt_fits(args, manifest)


def check_video(video: str, frames: int) -> None:
    """``--video``: a file whose header FFmpeg reads, or a folder whose sampled images are readable (headers
    only: a long file's packets are indexed once, when the pipeline plans it)."""
    from .video import PyAVReader, check_sampled_images, check_video_file

    path = Path(video)
    if path.is_file():
        check_video_file(path)
    elif path.is_dir():
        check_sampled_images(PyAVReader().open(path, frames))
    else:
        raise UserError(f"--video {video}: no such file or folder; expected {VIDEO_EXPECTED}")


def check_stream_source(source: str) -> None:
    """``--stream``: a file FFmpeg opens, a folder of images or a camera that exists; network URLs and
    GStreamer pipelines are tried when the stream starts."""
    from .stream import NETWORK_PREFIXES
    from .video import PyAVReader, check_video_file

    path = Path(source)
    if source.startswith(("gst:", *NETWORK_PREFIXES)):
        return
    if source.startswith("/dev/"):
        if not path.exists():
            raise UserError(f"--stream {source}: no such device; expected a camera such as /dev/video0")
    elif path.is_dir():
        PyAVReader().open(path, 1)
    elif path.is_file():
        check_video_file(path)
    else:
        raise UserError(f"--stream {source}: no such file or folder; expected {STREAM_EXPECTED}")


def check_prompt_fits(args: argparse.Namespace, manifest) -> None:
    """The question (with --system) and the video's K + 1 embeddings, plus --max-new-tokens, within the
    model's context: counted with the artifacts' tokenizer, the context read from the model's config."""
    from .prompt import chat_ids, load_tokenizer

    context = model_context(args, manifest)
    if context is None:
        return  # the backend knows its context once loaded, and checks there
    tokenizer = load_tokenizer(args.artifacts / "tokenizer")
    video = manifest.keep + 1
    prompt = len(chat_ids(tokenizer, conversation_start(args.system, args.prompt))) - 1 + video
    if prompt + args.max_new_tokens > context:
        raise UserError(f"--prompt is too long: {prompt} prompt tokens (the video's {video} included) + "
                        f"{args.max_new_tokens} new ones (--max-new-tokens) = {prompt + args.max_new_tokens}, "
                        f"more than the model's context of {context} tokens")


def conversation_start(system: str | None, question: str) -> list[dict]:
    """The messages of a first question, after the system prompt if there is one."""
    messages = [{"role": "system", "content": system}] if system is not None else []
    return messages + [{"role": "user", "content": question}]


def model_context(args: argparse.Namespace, manifest) -> int | None:
    """The transformers LLM's context in tokens, from its checkpoint's config.json (nothing loaded); None
    for the TensorRT-LLM backends and a config that does not say."""
    from .trust import model_directory

    if args.llm != "transformers":
        return None
    model = args.model if args.model is not None else model_directory(args.artifacts, manifest)
    try:
        config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the backend says what is wrong with the checkpoint when it loads
    text = config.get("text_config") if isinstance(config, dict) else None
    context = text.get("max_position_embeddings") if isinstance(text, dict) else None
    return context if isinstance(context, int) else None  # else the backend says what is wrong


def sampling_of(args: argparse.Namespace):
    """The :class:`~mmg_runtime.llm.base.Sampling` that the sampling options ask for."""
    from .llm.base import Sampling

    return Sampling(**{name: getattr(args, name) for name in SAMPLING_OPTIONS if getattr(args, name) is not None})


def run(args: argparse.Namespace) -> int:
    check_options(args)
    check_before_loading(args)
    with load_pipeline(args, question=args.prompt) as pipeline:  # closing saves TensorRT-RTX's runtime cache
        if args.stream is None:
            setup = f"video {args.video}, {_setup(pipeline, pipeline.reader.name)}"
            return _converse(pipeline.conversation(args.video, system=args.system), args, lambda answer: setup)
        with _live_stream(pipeline, args) as stream:
            fps = stream.sample_fps

            def describe(answer) -> str:
                extra = answer.extra
                return (f"stream {args.stream} at {fps:g} fps: {extra['frames_encoded']} frames encoded, "
                        f"{extra['frames_dropped']} dropped, window {extra['window_seconds']:.1f} s; "
                        f"{_setup(pipeline, 'pyav')}")

            return _converse(stream.conversation(system=args.system), args, describe)


def _converse(conversation, args: argparse.Namespace, describe: Callable) -> int:
    """Ask --prompt and, with --interactive, each line of stdin, in one conversation; 1 when a question
    failed (with --interactive its error line is printed and the conversation goes on).
    ``describe(answer)``: the line about the source and the setup printed above the timings."""
    sampling, status = sampling_of(args), 0
    if args.interactive and sys.stdin.isatty():
        print("mmg-export run: one question per line; an empty line or Ctrl-D ends", file=sys.stderr)
    for question in _questions(args):
        try:
            answer = conversation.ask(question, args.max_new_tokens, sampling=sampling)
        except UserError as error:
            if not args.interactive:
                raise
            print(f"mmg-export run: error: {error}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            print(json.dumps(answer.to_json()), flush=True)
            continue
        if answer.note:
            print(f"note: {answer.note}", file=sys.stderr)
        print(answer.text, flush=True)
        print(f"\n{describe(answer)}\n{answer.timings.table()}", file=sys.stderr)
    return status


def _questions(args: argparse.Namespace) -> Iterator[str]:
    """--prompt, then with --interactive each line of stdin up to an empty one or the end."""
    if args.prompt is not None:
        yield args.prompt
    if args.interactive:
        for line in sys.stdin:
            if not line.strip():
                return
            yield line.strip()


def _setup(pipeline, decoder: str) -> str:
    return (f"LLM {pipeline.llm.name}, {pipeline.manifest.backend} on {pipeline.encoder.device}, "
            f"decoder {decoder}")


@contextlib.contextmanager
def _live_stream(pipeline, args: argparse.Namespace) -> Iterator:
    """--stream started, once --ask-after seconds of it are encoded (or it ended); stopped on leaving.
    Without --json a progress line a second on stderr while waiting."""
    from .stream import LiveStream

    stream = LiveStream(pipeline, args.stream, sample_fps=args.sample_fps or DEFAULT_SAMPLE_FPS).start()
    try:
        while not stream.wait(args.ask_after, timeout=1.0):
            if not args.json:
                print(stream.stats.line(), file=sys.stderr)
        yield stream
    finally:
        stream.stop()
