"""``mmg-export run``: answer a question about a video (file, folder of images, or a live stream)."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .decoders import DECODERS
from .llm import LLM_BACKENDS

DEFAULT_ARTIFACTS = Path("artifacts") / "tiny-cpu-ort-fp32-32f-r0.25"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="answer a question about a video with the built artifacts",
                                   description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="video file or folder of images (sampled uniformly)")
    source.add_argument("--stream", help="live source: a video file replayed at its frame rate, a folder of images, "
                                         "a camera (/dev/video0), an rtsp:// or http:// URL, or gst:<pipeline>")
    parser.add_argument("--prompt", required=True, help="the question")
    add_pipeline_options(parser)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--sample-fps", type=float, default=1.0,
                        help="with --stream: frames sampled and encoded per second of video (default 1: the window "
                             "of T frames covers T seconds)")
    parser.add_argument("--ask-after", type=float, default=None, metavar="SECONDS",
                        help="with --stream: ask after this much video (default: at its end)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (answer, timings, tokens, providers) to stdout instead of text")
    parser.set_defaults(handler=run)


def add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    """--artifacts, --llm, --model, --decoder and --keep-positions: what :func:`load_pipeline` reads
    (``run`` and ``serve`` share them)."""
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


def check_pipeline_options(args: argparse.Namespace) -> None:
    """The pipeline options' own checks (UserError with one line), before anything loads."""
    from .errors import UserError

    if args.keep_positions and args.llm != "transformers":
        raise UserError(f"--keep-positions needs --llm transformers: {args.llm} derives positions from token order")


def load_pipeline(args: argparse.Namespace, question: str | None = None):
    """The :class:`~mmg_runtime.pipeline.Pipeline` that the pipeline options describe (verified, warmed
    up with ``question`` where the first question is known, else a generic one)."""
    from .pipeline import WARM_UP_QUESTION, Pipeline

    return Pipeline.from_artifacts(args.artifacts, llm=args.llm, model_dir=args.model,
                                   keep_positions=args.keep_positions, decoder=args.decoder,
                                   warm_up_question=question or WARM_UP_QUESTION)


def check_options(args: argparse.Namespace) -> None:
    """Every option checkable without loading anything; UserError with one line otherwise."""
    from .errors import UserError

    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens {args.max_new_tokens}: expected an integer >= 1")
    if not args.prompt.strip():
        raise UserError("--prompt is empty: expected a question about the video")
    if args.video is not None and not args.video.strip():
        raise UserError("--video is empty: expected a video file or a folder of images")
    if args.stream is not None and not args.stream.strip():
        raise UserError("--stream is empty: expected a video file, a folder of images, a camera such as /dev/video0, "
                        "a network URL or gst:<pipeline>")
    check_pipeline_options(args)
    if not args.stream and (args.ask_after is not None or args.sample_fps != 1.0):
        raise UserError("--ask-after and --sample-fps work with --stream only")
    if args.ask_after is not None and not (math.isfinite(args.ask_after) and args.ask_after >= 0):
        raise UserError(f"--ask-after {args.ask_after}: expected a number of seconds >= 0")
    if not (math.isfinite(args.sample_fps) and args.sample_fps > 0):
        raise UserError(f"--sample-fps {args.sample_fps}: expected a positive number of frames per second")


def run(args: argparse.Namespace) -> int:
    check_options(args)
    with load_pipeline(args, question=args.prompt) as pipeline:  # closing saves TensorRT-RTX's runtime cache
        if args.stream is not None:
            answer, header = _stream(pipeline, args)
        else:
            answer = pipeline.ask(args.video, args.prompt, args.max_new_tokens)
            header = f"video {args.video}"
        if args.json:
            print(json.dumps(answer.to_json()))
            return 0
        if answer.note:
            print(f"note: {answer.note}", file=sys.stderr)
        print(answer.text)
        print(f"\n{header}, LLM {pipeline.llm.name}, {pipeline.manifest.backend} on {pipeline.encoder.device}, "
              f"decoder {pipeline.reader.name}\n{answer.timings.table()}", file=sys.stderr)
    return 0


def _stream(pipeline, args):
    from .stream import LiveStream

    stream = LiveStream(pipeline, args.stream, sample_fps=args.sample_fps).start()
    try:
        while not stream.wait(args.ask_after, timeout=1.0):
            if not args.json:
                print(stream.stats.line(), file=sys.stderr)
        answer = stream.ask(args.prompt, args.max_new_tokens)
    finally:
        stream.stop()
    header = (f"stream {args.stream} at {args.sample_fps:g} fps: {stream.stats.line()}; asked at "
              f"{stream.stats.stream_seconds:.2f} s, question to first token "
              f"{answer.timings.question_to_first_token * 1e3:.1f} ms")
    return answer, header
