"""``mmg-export serve``'s live-stream slots: only running streams count against ``max_streams``; a stream
whose source ended stays readable for ``ended_stream_seconds`` (at most ``max_streams`` of them), then goes.
A real server over the tiny model's CPU artifacts, streams over a folder of four frames."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from samples import write_png

from mmg_runtime.pipeline import Pipeline
from mmg_runtime.server import ServerSettings, Service, running_server

SHORT_FPS, LONG_FPS = 16.0, 0.25
"""Four frames replayed at 16 per second end in a quarter of a second; at 0.25 per second they take 12 s."""


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def pipeline(artifacts: Path) -> Pipeline:
    return Pipeline.from_artifacts(artifacts)


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """A media root holding ``frames/``: four 48x64 images."""
    root = tmp_path_factory.mktemp("media")
    (root / "frames").mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):
        write_png(root / "frames" / f"f{index}.png", rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    return root


@contextlib.contextmanager
def serve(pipeline: Pipeline, root: Path, **settings) -> Iterator[SimpleNamespace]:
    """A running server over ``pipeline`` with ``settings`` and the media ``root``: (url, service, root)."""
    service = Service(lambda: pipeline, ServerSettings(media_root=root, **settings), model_id="tiny").start()
    with running_server(service) as url:
        wait_until(lambda: service.pipeline is not None)
        yield SimpleNamespace(url=url, service=service, root=root)


@pytest.fixture(scope="module")
def server(pipeline: Pipeline, frames: Path):
    with serve(pipeline, frames, max_streams=4) as running:
        yield running


def open_stream(server, sample_fps: float) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/streams", json={"source": str(server.root / "frames"), "sample_fps": sample_fps},
                      timeout=60)


def card(server, stream_id: str) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/streams/{stream_id}", timeout=60)


def ended(server, stream_id: str) -> bool:
    return not card(server, stream_id).json()["running"]


@pytest.fixture
def at(server):
    """The module's server, its streams deleted after each test."""
    yield server
    for stream_id in list(server.service.streams):
        httpx.delete(f"{server.url}/v1/streams/{stream_id}", timeout=60)


def test_four_running_streams_fill_the_server(at):
    running = [open_stream(at, LONG_FPS).json()["id"] for _ in range(4)]
    refused = open_stream(at, SHORT_FPS)
    assert refused.status_code == 429
    assert refused.json()["error"] | {"param": None} == {
        "message": "4 live streams are running, as many as this server allows: DELETE one first (a stream whose "
                   "source ended frees its slot)", "type": "rate_limit_error", "code": "too_many_streams",
        "param": None}
    httpx.delete(f"{at.url}/v1/streams/{running[0]}", timeout=60)
    assert open_stream(at, SHORT_FPS).status_code == 200


def test_ended_streams_free_their_slot_and_stay_readable(at):
    """Four file streams end; a fifth opens; the ended ones still answer (card and question) until another
    ended stream pushes the oldest out (at most max_streams ended streams are kept)."""
    first = [open_stream(at, SHORT_FPS).json()["id"] for _ in range(4)]
    wait_until(lambda: all(ended(at, stream_id) for stream_id in first))
    fifth = open_stream(at, LONG_FPS)
    assert fifth.status_code == 200, fifth.text
    oldest = card(at, first[0]).json()
    assert oldest["running"] is False and oldest["error"] is None and oldest["frames_encoded"] == 4
    content = [{"type": "stream", "stream_id": first[0]}, {"type": "text", "text": "What happened last?"}]
    asked = httpx.post(f"{at.url}/v1/chat/completions", timeout=120,
                       json={"messages": [{"role": "user", "content": content}], "max_tokens": 2})
    assert asked.status_code == 200 and asked.json()["mmg"]["frames_encoded"] == 4
    sixth = open_stream(at, SHORT_FPS).json()["id"]
    wait_until(lambda: ended(at, sixth))
    assert card(at, first[0]).status_code == 404  # five ended streams: the oldest went
    listed = [entry["id"] for entry in httpx.get(f"{at.url}/v1/streams", timeout=60).json()["data"]]
    assert listed == [*first[1:], fifth.json()["id"], sixth]


def test_an_ended_stream_goes_after_ended_stream_seconds(pipeline, frames):
    with serve(pipeline, frames, max_streams=1, ended_stream_seconds=1.0) as quick:
        stream_id = open_stream(quick, SHORT_FPS).json()["id"]
        wait_until(lambda: ended(quick, stream_id))
        assert open_stream(quick, SHORT_FPS).status_code == 200  # the ended one freed the only slot
        assert card(quick, stream_id).json()["frames_encoded"] == 4  # and is still readable
        time.sleep(1.2)
        gone = card(quick, stream_id)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "stream_not_found"
