"""One question at a time: a bounded queue in front of one worker thread, and clients that leave.

    event loop --submit--> queue (at most max_queue waiting; 429 past that) --> worker thread: work(on_token)
               <--each token, then ("done", Answer) or ("error", exception)--

A client that disconnects leaves the queue (its question never runs) or, while it is being
answered, stops the generation at the next token.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request

from ..llm.base import TokenCallback
from ..pipeline import Answer
from .errors import ApiError

Work = Callable[[TokenCallback], Answer]
"""What a job runs on the worker thread: ``work(on_token) -> Answer``."""


class Cancelled(Exception):
    """Raised in a job's ``on_token`` once its client has left: the generation stops there."""


class Job:
    """One question for the pipeline. ``work(on_token)`` runs on the worker thread; each token,
    then ``("done", Answer)`` or ``("error", exception)``, reaches ``events`` on the event loop."""

    def __init__(self, work: Work, loop: asyncio.AbstractEventLoop) -> None:
        self.work, self.loop = work, loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.state = "queued"  # -> "running" -> "finished", or "queued" -> "left"
        self.submitted, self.started = time.perf_counter(), None
        self.cancelled = False

    @property
    def waited(self) -> float:
        """Seconds spent in the queue."""
        return (self.started or time.perf_counter()) - self.submitted

    def on_token(self, token: int) -> None:
        if self.cancelled:
            raise Cancelled
        self.post("token", token)

    def post(self, kind: str, value: object) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop has closed: the server is stopping
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class Scheduler:
    """Runs jobs one at a time on a worker thread, in arrival order, with at most ``max_queue`` waiting.

    ``submit`` refuses at once (429 with Retry-After) when the queue is full. ``leave`` takes a job
    back: a waiting one gives up its place at once and never runs; a running one stops at its next
    token. ``pending`` counts the waiting jobs and the running one.
    """

    def __init__(self, max_queue: int) -> None:
        self.max_queue, self.pending = max_queue, 0
        self.counts = {"answered": 0, "failed": 0, "stopped": 0, "left": 0, "refused": 0}
        self.seconds_per_job = 1.0  # running mean, for Retry-After
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        threading.Thread(target=self._work, name="mmg-serve-worker", daemon=True).start()

    def submit(self, work: Work, loop: asyncio.AbstractEventLoop) -> Job:
        with self._lock:
            if self.pending > self.max_queue:
                self.counts["refused"] += 1
                wait = max(1, math.ceil(self.seconds_per_job * self.pending))
                raise ApiError(429, f"the server is busy: {self.pending} questions are ahead and the queue holds "
                                    f"{self.max_queue}; retry in {wait} s", "queue_full",
                               headers={"Retry-After": str(wait)})
            self.pending += 1
        job = Job(work, loop)
        self._jobs.put(job)
        return job

    def leave(self, job: Job) -> None:
        with self._lock:
            if job.state == "queued":
                job.state, self.pending = "left", self.pending - 1
                self.counts["left"] += 1
            elif job.state == "running":
                job.cancelled = True

    def close(self) -> None:
        self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            with self._lock:
                if job.state != "queued":
                    continue
                job.state, job.started = "running", time.perf_counter()
            try:
                job.post("done", job.work(job.on_token))
                outcome = "answered"
            except Cancelled:
                outcome = "stopped"
            except Exception as error:  # handed to the request's handler  # noqa: BLE001
                job.post("error", error)
                outcome = "failed"
            with self._lock:
                job.state, self.pending = "finished", self.pending - 1
                self.counts[outcome] += 1
                self.seconds_per_job = 0.8 * self.seconds_per_job + 0.2 * (time.perf_counter() - job.started)


class ClientLeft(Exception):
    """The client disconnected before its answer was ready."""


async def until_disconnected(request: Request, awaitable: Awaitable) -> Any:
    """``await awaitable``, unless the client disconnects first (then ClientLeft)."""
    task = asyncio.ensure_future(awaitable)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    raise ClientLeft


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def answer_of(job: Job) -> Answer:
    """The job's answer (its tokens skipped); raises the job's error."""
    while True:
        kind, value = await job.events.get()
        if kind == "done":
            return value
        if kind == "error":
            raise value
