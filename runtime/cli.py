"""``mmg-export run``: answer a question about a video (file, folder of images, or a live stream)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_ARTIFACTS = Path("engines") / "out" / "cpu-fp32-r0.25"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="answer a question about a video with the built artifacts",
                                   description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="video file or folder of images (sampled uniformly)")
    source.add_argument("--stream", help="video file replayed at its frame rate, or a camera such as /dev/video0")
    parser.add_argument("--prompt", required=True, help="the question")
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS,
                        help=f"artifact directory from mmg-export build (default: {DEFAULT_ARTIFACTS})")
    parser.add_argument("--llm", choices=["transformers", "trtllm-engine", "trtllm-api"], default="transformers",
                        help="LLM backend (default transformers)")
    parser.add_argument("--model", type=Path, default=None,
                        help="transformers: LLaVA-OneVision checkpoint (default: the one the artifacts name); "
                             "trtllm-engine: TensorRT-LLM engine directory; trtllm-api: model directory")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--keep-positions", action="store_true",
                        help="give the kept video tokens their original position ids")
    parser.add_argument("--ask-after", type=float, default=None, metavar="SECONDS",
                        help="with --stream: ask after this much video (default: at its end)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .pipeline import Pipeline

    from .errors import UserError

    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens {args.max_new_tokens}: expected an integer >= 1")
    if not args.prompt.strip():
        raise UserError("--prompt is empty: expected a question about the video")
    if args.keep_positions and args.llm != "transformers":
        raise UserError(f"--keep-positions needs --llm transformers: {args.llm} derives positions from token order")
    if args.ask_after is not None and not args.stream:
        raise UserError("--ask-after works with --stream only")
    pipeline = Pipeline.from_artifacts(args.artifacts, llm=args.llm, model_dir=args.model,
                                       keep_positions=args.keep_positions)
    if args.stream:
        answer, header = _stream(pipeline, args)
    else:
        answer = pipeline.ask(args.video, args.prompt, args.max_new_tokens)
        header = f"video {args.video}"
    if answer.note:
        print(f"note: {answer.note}", file=sys.stderr)
    print(answer.text)
    print(f"\n{header}, LLM {pipeline.llm.name}, pruner backend {pipeline.manifest.backend}\n"
          f"{answer.timings.table()}", file=sys.stderr)
    return 0


def _stream(pipeline, args):
    import time

    from .stream import StreamingSession, replay

    session = StreamingSession(pipeline)
    reached = replay(session, args.stream, realtime=True, ask_after=args.ask_after)
    asked = time.perf_counter()
    answer = session.ask(args.prompt, args.max_new_tokens)
    first_token = answer.timings.prune + answer.timings.prefill
    header = (f"stream {args.stream}: {session.frames_encoded} frames encoded once each "
              f"({session.encode_seconds * 1e3 / max(1, session.frames_encoded):.1f} ms per frame), "
              f"asked at {reached:.2f} s; question to first token {first_token * 1e3:.1f} ms "
              f"(wall {(time.perf_counter() - asked) * 1e3:.1f} ms to the full answer)")
    return answer, header
