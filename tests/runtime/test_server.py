"""``mmg-export serve``: the OpenAI-compatible server, started on localhost inside the tests over the
tiny model's CPU artifacts and driven by the official openai client (raw HTTP where a client library
would hide what is tested: disconnects, malformed bodies)."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import openai
import pytest

from mmg_export.cli import main
from mmg_runtime.llm.base import Generation, VideoPrompt
from mmg_runtime.llm.hf import TransformersBackend
from mmg_runtime.pipeline import STAGES, Pipeline
from mmg_runtime.prompt import video_question_ids
from mmg_runtime.server import IncrementalText, ServerSettings, Service, running_server
from samples import write_png

QUESTION = "What happens in this video?"


class GatedBackend:
    """The real transformers backend behind a gate: while the gate is closed, ``generate`` waits, so
    the pipeline stays busy while a test queues more questions. Counts the questions that reach it."""

    name = "transformers"

    def __init__(self, inner: TransformersBackend) -> None:
        self.inner, self.max_context, self.eos_ids = inner, inner.max_context, inner.eos_ids
        self.gate, self.calls = threading.Event(), 0
        self.gate.set()

    def generate(self, prompt: VideoPrompt, max_new_tokens: int, on_token=None, **options) -> Generation:
        self.calls += 1
        assert self.gate.wait(timeout=120), "the test never opened the gate"
        return self.inner.generate(prompt, max_new_tokens, on_token, **options)


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def settled(scheduler) -> dict:
    """The scheduler's counts once no job is pending (a reply reaches its client just before the
    worker counts it)."""
    wait_until(lambda: scheduler.pending == 0)
    return dict(scheduler.counts)


def file_url(path: Path) -> str:
    return path.as_uri()


def video_messages(url: str, question: str = QUESTION) -> list[dict]:
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                         {"type": "text", "text": question}]}]


@pytest.fixture(scope="module")
def pipeline(artifacts: Path) -> Pipeline:
    return Pipeline.from_artifacts(artifacts, llm=GatedBackend(TransformersBackend(artifacts / "model")))


@pytest.fixture(scope="module")
def media(tmp_path_factory, bikes: Path) -> SimpleNamespace:
    """A media root: bikes.mp4, an unreadable bad.mp4, a folder of 4 frames, and a symlink that
    points outside the root (to a copy of bikes.mp4 in a folder beside it)."""
    root = tmp_path_factory.mktemp("media")
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(bikes, root / "bikes.mp4")
    shutil.copy(bikes, outside / "secret.mp4")
    (root / "bad.mp4").write_bytes(b"not a video")
    (root / "frames").mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):
        write_png(root / "frames" / f"f{index}.png", rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    (root / "link.mp4").symlink_to(outside / "secret.mp4")
    return SimpleNamespace(root=root, outside=outside)


@pytest.fixture(scope="module")
def server(pipeline: Pipeline, media: SimpleNamespace, artifacts: Path):
    settings = ServerSettings(media_root=media.root, max_queue=2, max_tokens=256)
    service = Service(lambda: pipeline, settings, model_id=artifacts.name).start()
    with running_server(service) as url:
        wait_until(lambda: service.pipeline is not None)
        yield SimpleNamespace(url=url, service=service, model=artifacts.name)


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_health_and_the_one_model(server, client, pipeline):
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and set(health["cache"]) == {"bytes", "budget_bytes", "entries"}
    assert health["cache"]["budget_bytes"] == pipeline.cache.budget_bytes == 1 << 30  # the CPU's default
    assert 0 <= health["cache"]["bytes"] <= health["cache"]["budget_bytes"]
    assert [model.id for model in client.models.list().data] == [server.model]


def test_plain_and_streamed_answers_are_the_python_apis(server, client, pipeline, media):
    """Same video, same question: the plain answer is Pipeline.ask's, and the streamed chunks, one per
    generated token, add up to it; usage counts the prompt with the video as K + 1 embeddings."""
    direct = pipeline.ask(media.root / "bikes.mp4", QUESTION, max_new_tokens=8)
    messages = video_messages(file_url(media.root / "bikes.mp4"))
    plain = client.chat.completions.create(model=server.model, messages=messages, max_tokens=8)
    (choice,) = plain.choices
    assert (choice.message.role, choice.message.content) == ("assistant", direct.text)
    ended = direct.token_ids[-1] in pipeline.llm.eos_ids
    assert choice.finish_reason == ("length" if len(direct.token_ids) == 8 and not ended else "stop")
    prompt_tokens = len(video_question_ids(pipeline.tokenizer, QUESTION)) - 1 + 1568 + 1
    assert (plain.usage.prompt_tokens, plain.usage.completion_tokens) == (prompt_tokens, len(direct.token_ids))
    assert plain.usage.total_tokens == prompt_tokens + len(direct.token_ids)
    assert plain.usage.prompt_tokens_details.cached_tokens == 0  # another namespace than Pipeline.ask's
    mmg = plain.model_extra["mmg"]
    assert set(mmg["timings_ms"]) == set(STAGES) and mmg["timings_ms"]["prefill"] > 0
    assert (mmg["tokens_kept"], mmg["tokens_total"], mmg["generated_tokens"]) == (1568, 6272, len(direct.token_ids))
    assert mmg["question_to_first_token_ms"] > 0 and mmg["queue_ms"] >= 0 and "answer" not in mmg
    assert mmg["reused"] == [] and mmg["cached_tokens"] == 0
    assert 0 < mmg["cache"]["bytes"] <= mmg["cache"]["budget_bytes"]

    chunks = list(client.chat.completions.create(model=server.model, messages=messages, max_tokens=8, stream=True,
                                                 stream_options={"include_usage": True}))
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    visible = [t for t in direct.token_ids if pipeline.tokenizer.decode([t], skip_special_tokens=True)]
    assert "".join(pieces) == direct.text and len(pieces) == len(visible)
    (final,) = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert final.choices[0].finish_reason == choice.finish_reason and final.model_extra["mmg"]["tokens_kept"] == 1568
    usage = chunks[-1].usage  # the same question again: the video tokens and the prompt's KV are reused
    assert chunks[-1].choices == [] and (usage.prompt_tokens, usage.completion_tokens) == \
        (plain.usage.prompt_tokens, plain.usage.completion_tokens)
    assert usage.prompt_tokens_details.cached_tokens == prompt_tokens - 1  # the last prompt token is prefilled
    assert final.model_extra["mmg"]["reused"] == ["video_tokens", "kv_prefix"]


def test_a_folder_of_images_is_a_video(server, client, media):
    messages = video_messages(file_url(media.root / "frames"))
    answer = client.chat.completions.create(model=server.model, messages=messages, max_tokens=2)
    mmg = answer.model_extra["mmg"]
    assert answer.choices[0].message.content and mmg["tokens_kept"] == 1568
    assert "4 frames" in mmg["note"] and "repeated" in mmg["note"]


def test_a_conversation_with_the_openai_client(server, client, pipeline, media):
    """System prompt, the video in the first user message, earlier turns as strings or text parts: each
    follow-up reuses the video tokens and the KV of everything before it, and its answer is the one
    Pipeline.chat gives the same conversation without a cache (greedy)."""
    messages = [{"role": "system", "content": "You answer questions about videos."},
                *video_messages(file_url(media.root / "bikes.mp4"), "Who rides?")]
    previous = None
    for turn, question in enumerate(["Where?", "When?", "Why?"]):
        answer = client.chat.completions.create(model=server.model, messages=messages, max_tokens=6)
        text, usage, mmg = answer.choices[0].message.content, answer.usage, answer.model_extra["mmg"]
        plain = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else
                  "\n".join(part["text"] for part in m["content"] if part["type"] == "text")} for m in messages]
        with pipeline.lock:
            cache, pipeline.cache = pipeline.cache, type(pipeline.cache)(0)
            try:
                reference = pipeline.chat(media.root / "bikes.mp4", plain, max_new_tokens=6)
            finally:
                pipeline.cache = cache
        assert text == reference.text and usage.prompt_tokens == reference.prompt_tokens
        if previous is not None:
            assert usage.prompt_tokens_details.cached_tokens >= previous.prompt_tokens
            assert mmg["reused"] == ["video_tokens", "kv_prefix"] and mmg["timings_ms"]["encode"] == 0
        assert mmg["cache"]["bytes"] <= mmg["cache"]["budget_bytes"]
        previous = usage
        reply = text if turn % 2 else [{"type": "text", "text": text}]  # both forms of earlier turns
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": question}]


def test_another_api_key_gets_nothing_from_the_cache(server, media):
    """Key B sending key A's exact conversation is answered from scratch: namespaces are API keys' digests."""
    messages = [{"role": "system", "content": "Answer in one word."},
                *video_messages(file_url(media.root / "frames"), "What is this?")]

    def ask(key: str):
        keyed = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120)
        return keyed.chat.completions.create(model=server.model, messages=messages, max_tokens=4)

    alice = ask("key-A")
    again = ask("key-A")
    bob = ask("key-B")
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1
    assert bob.usage.prompt_tokens_details.cached_tokens == 0 and bob.model_extra["mmg"]["reused"] == []
    assert bob.choices[0].message.content == alice.choices[0].message.content


def test_streamed_text_never_passes_a_stop_string(server, client, media):
    messages = video_messages(file_url(media.root / "bikes.mp4"), "Describe it.")
    full = client.chat.completions.create(model=server.model, messages=messages, max_tokens=16).choices[0]
    text = full.message.content
    assert len(text) >= 4, text
    stop = text[2:4]
    plain = client.chat.completions.create(model=server.model, messages=messages, max_tokens=16, stop=stop)
    pieces = []
    for chunk in client.chat.completions.create(model=server.model, messages=messages, max_tokens=16,
                                                stop=[stop, "zzzz"], stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
            assert stop not in "".join(pieces)
        if chunk.choices and chunk.choices[0].finish_reason:
            assert chunk.choices[0].finish_reason == "stop"
        if chunk.usage is not None:
            assert chunk.usage.completion_tokens < 16
    expected = text[:text.index(stop)]
    assert plain.choices[0].message.content == expected and plain.choices[0].finish_reason == "stop"
    assert "".join(pieces) == expected


def test_sampling_fields_are_honoured_and_a_seed_reproduces(server, client, media):
    messages = video_messages(file_url(media.root / "bikes.mp4"))

    def ask(**sampling) -> str:
        answer = client.chat.completions.create(model=server.model, messages=messages, max_tokens=8, **sampling)
        return answer.choices[0].message.content

    seeded = {"temperature": 1.0, "top_p": 0.9, "seed": 7, "frequency_penalty": 0.5, "presence_penalty": 0.5,
              "extra_body": {"top_k": 50, "repetition_penalty": 1.1}}
    first, again = ask(**seeded), ask(**seeded)
    assert first == again
    assert ask(**{**seeded, "seed": 8}) != first and ask() != first
    assert ask(temperature=0) == ask() and ask(extra_body={"top_k": -1}) == ask()


def _ask(client: openai.OpenAI, model: str, url: str) -> tuple:
    """(200, text) or (status, Retry-After, error body) of one chat completion."""
    try:
        answer = client.chat.completions.create(model=model, messages=video_messages(url), max_tokens=2)
        return 200, answer.choices[0].message.content
    except openai.APIStatusError as error:
        return error.status_code, error.response.headers.get("retry-after"), error.response.text


def test_sixteen_clients_and_a_queue_of_two(server, client, pipeline, media):
    """With the pipeline held busy, one question runs and two wait; the other thirteen are refused at
    once (429, Retry-After); once it is free, the three are answered. None is lost, none hangs."""
    scheduler, url = server.service.scheduler, file_url(media.root / "bikes.mp4")
    before, calls = settled(scheduler), pipeline.llm.calls
    pipeline.llm.gate.clear()
    try:
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(_ask, client, server.model, url) for _ in range(16)]
            wait_until(lambda: sum(future.done() for future in futures) == 13)
            assert scheduler.pending == 3
            pipeline.llm.gate.set()
            results = [future.result(timeout=120) for future in futures]
    finally:
        pipeline.llm.gate.set()
    answered = [result for result in results if result[0] == 200]
    refused = [result for result in results if result[0] == 429]
    assert len(answered) == 3 and len(refused) == 13
    assert len({text for _, text in answered}) == 1  # the same question about the same video
    for _, retry_after, body in refused:
        error = json.loads(body)["error"]
        assert int(retry_after) >= 1 and error["code"] == "queue_full" and error["type"] == "rate_limit_error"
        assert body.count("\n") == 0 and "queue holds 2" in error["message"]
    after = settled(scheduler)
    assert after["refused"] == before["refused"] + 13
    assert after["answered"] == before["answered"] + 3 and pipeline.llm.calls == calls + 3


def _raw_request(url: str, payload: dict) -> socket.socket:
    """A chat completion sent over a socket of our own, so that the test can hang up."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(payload).encode()
    connection = socket.create_connection((host, int(port)))
    connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return connection


def test_a_client_that_leaves_the_queue_gives_back_its_place(server, client, pipeline, media):
    """A runs (held), B and C wait: the queue is full. B hangs up: its place is free at once, so D is
    queued instead of refused, and B's question never runs (three answers, three LLM calls)."""
    scheduler, url = server.service.scheduler, file_url(media.root / "bikes.mp4")
    before, calls = settled(scheduler), pipeline.llm.calls
    pipeline.llm.gate.clear()
    try:
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(_ask, client, server.model, url)
            wait_until(lambda: pipeline.llm.calls == calls + 1)
            leaver = _raw_request(server.url, {"messages": video_messages(url), "max_tokens": 2})
            wait_until(lambda: scheduler.pending == 2)
            second = pool.submit(_ask, client, server.model, url)
            wait_until(lambda: scheduler.pending == 3)
            leaver.close()
            wait_until(lambda: scheduler.pending == 2)
            third = pool.submit(_ask, client, server.model, url)
            wait_until(lambda: scheduler.pending == 3)
            pipeline.llm.gate.set()
            results = [future.result(timeout=120)[0] for future in (first, second, third)]
    finally:
        pipeline.llm.gate.set()
    assert results == [200, 200, 200]
    after = settled(scheduler)
    assert after["left"] == before["left"] + 1 and after["refused"] == before["refused"]
    assert pipeline.llm.calls == calls + 3


def test_a_streamed_client_that_leaves_stops_the_generation(server, media):
    scheduler = server.service.scheduler
    stopped = settled(scheduler)["stopped"]
    payload = {"messages": video_messages(file_url(media.root / "bikes.mp4")), "max_tokens": 256, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=payload, timeout=120) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                break  # the first token: hang up
    wait_until(lambda: scheduler.counts["stopped"] == stopped + 1 and scheduler.pending == 0, timeout=30)


def test_live_stream_create_get_ask_delete(server, client, media):
    created = httpx.post(f"{server.url}/v1/streams", json={"source": file_url(media.root / "bikes.mp4"),
                                                          "sample_fps": 4}).json()
    stream_id = created["id"]
    assert created["object"] == "stream" and created["sample_fps"] == 4.0 and created["window_frames"] == 32
    assert created["source"] == file_url(media.root / "bikes.mp4") and created["error"] is None

    def card() -> dict:
        return httpx.get(f"{server.url}/v1/streams/{stream_id}").json()

    wait_until(lambda: card()["frames_encoded"] >= 2)
    stats = card()
    assert stats["running"] and stats["frames_encoded"] + stats["frames_dropped"] <= stats["frames_sampled"] + 1
    assert stats["window_seconds"] > 0 and stats["encode_ms_per_frame"] > 0
    content = [{"type": "stream", "stream_id": stream_id}, {"type": "text", "text": "What is happening now?"}]
    answer = client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": content}],
                                            max_tokens=3)
    mmg = answer.model_extra["mmg"]
    assert answer.choices[0].message.content and mmg["tokens_kept"] == 1568 and mmg["frames_encoded"] >= 2
    assert mmg["window_seconds"] > 0
    assert mmg["frames_encoded"] >= 32 or mmg["note"].startswith(f"only {mmg['frames_encoded']} frames so far")
    listed = httpx.get(f"{server.url}/v1/streams").json()
    assert stream_id in [entry["id"] for entry in listed["data"]]
    assert httpx.delete(f"{server.url}/v1/streams/{stream_id}").json() == {"id": stream_id, "object": "stream",
                                                                          "deleted": True}
    for method in ("GET", "DELETE"):
        gone = httpx.request(method, f"{server.url}/v1/streams/{stream_id}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "stream_not_found"


def test_standing_question_answers_until_the_source_ends(server, media):
    """4 images at 4 frames per second: one second of stream. Answers come every 0.5 s of wall time;
    the last one is about the final window, then [DONE]."""
    created = httpx.post(f"{server.url}/v1/streams", json={"source": str(media.root / "frames"),
                                                          "sample_fps": 4}).json()
    params = {"question": "Is anything moving?", "every": 0.5, "max_tokens": 2}
    with httpx.stream("GET", f"{server.url}/v1/streams/{created['id']}/events", params=params,
                      timeout=120) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and len(events) >= 2
    answers = [json.loads(event) for event in events[:-1]]
    assert {answer["object"] for answer in answers} <= {"stream.answer", "stream.skipped"}
    answered = [answer for answer in answers if answer["object"] == "stream.answer"]
    assert answered and all(answer["answer"] and answer["usage"]["completion_tokens"] <= 2 for answer in answered)
    last = answered[-1]["mmg"]
    assert last["frames_encoded"] + last["frames_dropped"] == 4 and answered[-1]["question"] == "Is anything moving?"
    encoded = [answer["mmg"]["frames_encoded"] for answer in answered]
    assert encoded == sorted(encoded)
    httpx.delete(f"{server.url}/v1/streams/{created['id']}")


def test_a_stream_whose_source_fails_says_why(server, media):
    """The source opens on the stream's thread: its failure shows in the stream's card, in a question
    about it (400) and in its standing question's events (an error, then [DONE])."""
    created = httpx.post(f"{server.url}/v1/streams", json={"source": file_url(media.root / "bad.mp4")}).json()
    url = f"{server.url}/v1/streams/{created['id']}"
    wait_until(lambda: not httpx.get(url).json()["running"])
    card = httpx.get(url).json()
    assert card["error"].startswith(f"cannot open video stream {media.root / 'bad.mp4'}") and card["frames_encoded"] == 0
    content = [{"type": "stream", "stream_id": created["id"]}, {"type": "text", "text": QUESTION}]
    asked = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": content}]})
    assert asked.status_code == 400 and asked.json()["error"]["message"] == card["error"]
    with httpx.stream("GET", f"{url}/events", params={"question": QUESTION}, timeout=60) as response:
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert len(events) == 2 and json.loads(events[0])["error"]["message"] == card["error"] and events[1] == "[DONE]"
    httpx.delete(url)


def _chat(media, url: str, **extra) -> dict:
    return {"messages": video_messages(url), "max_tokens": 2, **extra}


BAD_REQUESTS = {
    # name: (method, path, body (bytes, or a function of the media folders giving JSON), status, code, message)
    "malformed JSON": ("POST", "/v1/chat/completions", b'{"messages": [', 400, "invalid_json", "not valid JSON"),
    "not an object": ("POST", "/v1/chat/completions", b"[1]", 400, "invalid_value", "body: Input should be an object"),
    "empty body": ("POST", "/v1/chat/completions", b"", 400, "invalid_json", "not valid JSON"),
    "unknown stream id": ("GET", "/v1/streams/stream-nope", None, 404, "stream_not_found", "no live stream"),
    "unknown stream in a chat": ("POST", "/v1/chat/completions", lambda m: {"messages": [{"role": "user", "content": [
        {"type": "stream", "stream_id": "stream-nope"}, {"type": "text", "text": QUESTION}]}]},
        404, "stream_not_found", "no live stream 'stream-nope'"),
    "unreadable video": ("POST", "/v1/chat/completions", lambda m: _chat(m, file_url(m.root / "bad.mp4")),
                         400, None, "not a video or image FFmpeg can decode"),
    "outside the media root": ("POST", "/v1/chat/completions", lambda m: _chat(m, file_url(m.outside / "secret.mp4")),
                               403, "outside_media_root", "outside the server's media root"),
    "symlink out of the media root": ("POST", "/v1/chat/completions",
                                      lambda m: _chat(m, file_url(m.root / "link.mp4")),
                                      403, "outside_media_root", "outside the server's media root"),
    "dot-dot out of the media root": ("POST", "/v1/chat/completions",
                                      lambda m: _chat(m, f"file://{m.root}/../{m.outside.name}/secret.mp4"),
                                      403, "outside_media_root", "outside the server's media root"),
    "missing video": ("POST", "/v1/chat/completions", lambda m: _chat(m, file_url(m.root / "nope.mp4")),
                      400, "video_not_found", "no such file or folder"),
    "relative path": ("POST", "/v1/chat/completions", lambda m: _chat(m, "file:bikes.mp4"),
                      400, "invalid_path", "expected an absolute path"),
    "http video": ("POST", "/v1/chat/completions", lambda m: _chat(m, "http://127.0.0.1:9/clip.mp4"),
                   400, "invalid_video_url", "other URLs are not fetched"),
    "no video part": ("POST", "/v1/chat/completions",
                      lambda m: {"messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]},
                      400, "invalid_content", "found 0 video parts"),
    "no question": ("POST", "/v1/chat/completions", lambda m: {"messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": file_url(m.root / "bikes.mp4")}}]}]},
        400, "invalid_content", "and no question"),
    "string content": ("POST", "/v1/chat/completions", lambda m: {"messages": [{"role": "user", "content": QUESTION}]},
                       400, "invalid_content", "found 0 video parts and a question"),
    "content neither string nor list": ("POST", "/v1/chat/completions", lambda m: {"messages": [
        {"role": "user", "content": 3}]}, 400, "invalid_value", "messages.0.content: expected a string or a list"),
    "part without a type": ("POST", "/v1/chat/completions", lambda m: {"messages": [
        {"role": "user", "content": [{"text": QUESTION}]}]}, 400, "invalid_value", "messages.0.content.0.type: Field"),
    "image part": ("POST", "/v1/chat/completions", lambda m: {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///x.png"}}, {"type": "text", "text": QUESTION}]}]},
        400, "unsupported_content", "messages.0.content.0: images are not supported by this server"),
    "two videos": ("POST", "/v1/chat/completions", lambda m: {"messages": [{"role": "user", "content": [
        *video_messages(file_url(m.root / "bikes.mp4"))[0]["content"],
        {"type": "video_url", "video_url": {"url": file_url(m.root / "frames")}}]}]},
        400, "invalid_content", "found 2 video parts"),
    "a video after the first user message": ("POST", "/v1/chat/completions", lambda m: {"messages": [
        {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"},
        *video_messages(file_url(m.root / "bikes.mp4"))]},
        400, "invalid_content", "messages.2.content.0: the video belongs in the first user message (messages.0)"),
    "a video in an assistant message": ("POST", "/v1/chat/completions", lambda m: {"messages": [
        {"role": "assistant", "content": video_messages(file_url(m.root / "bikes.mp4"))[0]["content"]},
        {"role": "user", "content": QUESTION}]},
        400, "invalid_content", "messages.0.content.0: a video_url part in the assistant's message"),
    "the assistant's turn last": ("POST", "/v1/chat/completions", lambda m: {"messages": [
        *video_messages(file_url(m.root / "bikes.mp4")), {"role": "assistant", "content": "A bike."}]},
        400, "invalid_content", "found 1 video parts and no question"),
    "a tool message": ("POST", "/v1/chat/completions", lambda m: {"messages": [
        *video_messages(file_url(m.root / "bikes.mp4")), {"role": "tool", "content": "42", "tool_call_id": "x"}]},
        400, "unsupported_parameter", "messages.1: tool calls are not supported"),
    "tool calls": ("POST", "/v1/chat/completions", lambda m: {"messages": [
        *video_messages(file_url(m.root / "bikes.mp4")), {"role": "assistant", "content": None, "tool_calls": [
            {"id": "x", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": QUESTION}]}, 400, "unsupported_parameter", "messages.1: tool calls"),
    "tools": ("POST", "/v1/chat/completions", lambda m: _chat(m, file_url(m.root / "bikes.mp4"), tools=[
        {"type": "function", "function": {"name": "f"}}]), 400, "unsupported_parameter", "tools: not supported"),
    "unknown role": ("POST", "/v1/chat/completions", lambda m: {"messages": [
        {"role": "narrator", "content": "x"}, *video_messages(file_url(m.root / "bikes.mp4"))]},
        400, "invalid_value", "messages.0.role: 'narrator': expected system, user or assistant"),
    "temperature out of range": ("POST", "/v1/chat/completions",
                                 lambda m: _chat(m, file_url(m.root / "bikes.mp4"), temperature=3),
                                 400, "invalid_value", "temperature=3.0: expected a number from 0 (greedy) to 2"),
    "top_p zero": ("POST", "/v1/chat/completions", lambda m: _chat(m, file_url(m.root / "bikes.mp4"), top_p=0),
                   400, "invalid_value", "top_p=0.0: expected a number above 0, at most 1"),
    "history beyond the context": ("POST", "/v1/chat/completions", lambda m: {"max_tokens": 8, "messages": [
        *video_messages(file_url(m.root / "bikes.mp4"), "x" * 32_000), {"role": "assistant", "content": "y"},
        {"role": "user", "content": "and?"}]}, 400, "context_length_exceeded",
        "prompt tokens + 8 new ones, more than the model's context of 32768"),
    "unknown model": ("POST", "/v1/chat/completions",
                      lambda m: _chat(m, file_url(m.root / "bikes.mp4"), model="gpt-4o"),
                      404, "model_not_found", "model 'gpt-4o'"),
    "max_tokens too large": ("POST", "/v1/chat/completions",
                             lambda m: _chat(m, file_url(m.root / "bikes.mp4"), max_tokens=100_000),
                             400, "max_tokens_too_large", "more than this server allows (256)"),
    "max_tokens not an integer": ("POST", "/v1/chat/completions",
                                  lambda m: _chat(m, file_url(m.root / "bikes.mp4"), max_tokens="8"),
                                  400, "invalid_value", "max_tokens: Input should be a valid integer"),
    "five stop strings": ("POST", "/v1/chat/completions",
                          lambda m: _chat(m, file_url(m.root / "bikes.mp4"), stop=list("abcde")),
                          400, "invalid_value", "expected a non-empty string or a list of up to 4"),
    "body too large": ("POST", "/v1/chat/completions", b"{" + b" " * (1 << 20) + b"}", 413, "request_too_large",
                       "larger than 1048576 bytes"),
    "network stream source": ("POST", "/v1/streams", lambda m: {"source": "rtsp://127.0.0.1:9/cam"},
                              403, "source_not_allowed", "url sources are off"),
    "camera source": ("POST", "/v1/streams", lambda m: {"source": "/dev/video0"}, 403, "source_not_allowed",
                      "device sources are off"),
    "gstreamer source": ("POST", "/v1/streams", lambda m: {"source": "gst:filesrc location=/etc/passwd ! fakesink"},
                         403, "source_not_allowed", "gst sources are off"),
    "stream source outside the root": ("POST", "/v1/streams", lambda m: {"source": "/etc/passwd"},
                                       403, "outside_media_root", "outside the server's media root"),
    "stream fps not positive": ("POST", "/v1/streams", lambda m: {"source": str(m.root / "bikes.mp4"), "sample_fps": 0},
                                400, "invalid_value", "sample_fps: Input should be greater than 0"),
    "unknown endpoint": ("GET", "/v1/completions", None, 404, None, "no such endpoint: GET /v1/completions"),
    "wrong method": ("PUT", "/v1/models", None, 405, None, "method not allowed: PUT /v1/models"),
    "events without a question": ("GET", "/v1/streams/stream-nope/events", None, 400, "invalid_value",
                                  "question: Field required"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_requests_are_one_line_of_json(server, media, artifacts, name):
    method, path, body, status, code, message = BAD_REQUESTS[name]
    content = body if body is None or isinstance(body, bytes) else json.dumps(body(media)).encode()
    response = httpx.request(method, f"{server.url}{path}", content=content, timeout=60)
    assert response.status_code == status, response.text
    text = response.text
    assert text.count("\n") == 0 and list(response.json()) == ["error"]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    assert message in error["message"]
    for secret in (str(artifacts), str(media.outside), "secret.mp4", "Traceback", "site-packages", sys.prefix):
        assert secret not in text, f"{secret!r} leaked"


def test_loading_keys_and_no_local_files(pipeline, media):
    """Before the pipeline is ready /health is 503; an API key guards /v1; without --media-root no local
    path is read at all."""
    loaded = threading.Event()

    def load() -> Pipeline:
        assert loaded.wait(60)
        return pipeline

    service = Service(load, ServerSettings(api_key="sesame"), model_id="tiny").start()
    with running_server(service) as url:
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503 and health.json()["error"]["code"] == "model_loading"
        assert health.headers["retry-after"] == "5"
        keyed = {"Authorization": "Bearer sesame"}
        payload = _chat(media, file_url(media.root / "bikes.mp4"))
        assert httpx.post(f"{url}/v1/chat/completions", json=payload, headers=keyed).status_code == 503
        loaded.set()
        wait_until(lambda: httpx.get(f"{url}/health").status_code == 200)
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}  # no cache figures without the key
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = httpx.get(f"{url}/v1/models", headers=headers)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        keyed_client = openai.OpenAI(base_url=f"{url}/v1", api_key="sesame", max_retries=0)
        assert [model.id for model in keyed_client.models.list().data] == ["tiny"]
        with pytest.raises(openai.PermissionDeniedError, match="this server reads no local files"):
            keyed_client.chat.completions.create(model="tiny", messages=payload["messages"], max_tokens=2)


def test_stopping_the_server_closes_the_pipeline(pipeline, monkeypatch):
    """Closing a pipeline saves TensorRT-RTX's runtime cache: the server closes it when it stops, and
    closes one that was still loading then once it has loaded."""
    closed, real_close = [], Pipeline.close

    def recording_close(self):
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(Pipeline, "close", recording_close)
    service = Service(lambda: pipeline, ServerSettings(), model_id="tiny").start()
    with running_server(service):
        wait_until(lambda: service.pipeline is not None)
    assert closed == [pipeline]

    loaded = threading.Event()

    def load() -> Pipeline:
        assert loaded.wait(60)
        return pipeline

    late = Service(load, ServerSettings(), model_id="tiny").start()
    with running_server(late):
        pass
    assert closed == [pipeline]
    loaded.set()
    wait_until(lambda: len(closed) == 2)


def test_streamed_text_holds_back_incomplete_characters():
    """A byte-level BPE splits 'é', '日' and '🎉' over several tokens, each decoding alone to U+FFFD;
    the pieces handed out never carry one and add up to the text."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["plain ascii text about a video"], vocab_size=300, min_frequency=1, show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer)
    for text in ("héllo wörld", "日本語のテキスト", "emoji 🎉🚀 end", "plain ascii"):
        ids = tokenizer.encode(text)
        streamed = IncrementalText(tokenizer)
        pieces = [streamed.push(token) for token in ids]
        assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)
        assert streamed.finish(tokenizer.decode(ids)) == ""
        if not text.isascii():
            assert any(tokenizer.decode([token]) == "\ufffd" for token in ids)  # there was something to hold back


# ----------------------------------------------------------------------------------------------
# The command


def test_serve_options_and_a_missing_extra(artifacts, tmp_path, capsys, monkeypatch):
    """Option errors come before anything loads; without FastAPI the command names the extra."""
    base = ["serve", "--artifacts", str(artifacts)]
    for extra, message in [(["--allow-sources", "url,ftp"], "--allow-sources: unknown kind ftp"),
                           (["--media-root", str(tmp_path / "nope")], "not a folder")]:  # numbers: test_cli.py
        assert main(base + extra) == 1
        assert message in capsys.readouterr().err
    for name in [name for name in sys.modules if name.split(".")[:2] == ["mmg_runtime", "server"]]:
        monkeypatch.delitem(sys.modules, name)  # the server package and its modules import again
    monkeypatch.setitem(sys.modules, "fastapi", None)
    assert main(base) == 1
    assert "this command needs fastapi, which this install lacks: pip install 'mmg-export[serve]'" in \
        capsys.readouterr().err


def test_help_needs_no_fastapi():
    """Only running the server imports FastAPI and uvicorn: `mmg-export serve --help` works without them."""
    code = ("import sys; sys.modules['fastapi'] = sys.modules['uvicorn'] = None\n"
            "from mmg_export.cli import main; main(['serve', '--help'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--media-root" in result.stdout and "--allow-sources" in result.stdout and "--artifacts" in result.stdout


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_command_serves_until_sigterm(artifacts, media):
    """`mmg-export serve` listens at once (503 while loading), answers once loaded, ends with 130 on SIGTERM."""
    port = _free_port()
    command = [sys.executable, "-m", "mmg_export.cli", "serve", "--artifacts", str(artifacts), "--port", str(port),
               "--media-root", str(media.root)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        statuses = []

        def healthy() -> bool:
            try:
                statuses.append(httpx.get(f"http://127.0.0.1:{port}/health").status_code)
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read()
            return statuses[-1:] == [200]

        wait_until(healthy, timeout=120)
        assert set(statuses) <= {200, 503}
        local = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        answer = local.chat.completions.create(model=artifacts.name, max_tokens=2,
                                               messages=video_messages(file_url(media.root / "frames")))
        assert answer.choices[0].message.content
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "mmg-export serve: interrupted" in err


def test_artifacts_that_fail_to_load_stop_the_command(tmp_path, capsys):
    assert main(["serve", "--artifacts", str(tmp_path), "--port", str(_free_port())]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mmg-export serve: error:")]
    assert errors == [f"mmg-export serve: error: {tmp_path}/manifest.json: missing; expected an artifact directory "
                      "written by mmg-export build"]
    assert "Traceback" not in err
