"""Streaming for live cameras: encode each frame once as it arrives, prune a rolling window on demand.

    camera --frame--> frame encoder (1 frame) --> ring of the last T frames' tokens
    question --> stack the ring (T, P, D) --> pruner --> LLM        (no re-encoding)
"""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from .errors import UserError
from .pipeline import Answer, Pipeline, Timings
from .video import iter_frames


class StreamingSession:
    """Keeps the tokens of the last ``pipeline.frames`` frames; thread-safe ``push`` / ``ask``."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.window: deque[np.ndarray] = deque(maxlen=pipeline.frames)
        self.frames_encoded = 0
        self.encode_seconds = 0.0
        self._lock = threading.Lock()

    def push(self, frame: np.ndarray) -> None:
        """Encode one (H, W, 3) uint8 frame and append its (P, D) tokens to the window."""
        start = time.perf_counter()
        tokens = self.pipeline.encode_frame(frame)[0]
        with self._lock:
            self.window.append(tokens)
            self.frames_encoded += 1
            self.encode_seconds += time.perf_counter() - start

    def ask(self, question: str, max_new_tokens: int = 64) -> Answer:
        """Answer about the frames in the window; time to first token excludes encoding."""
        with self._lock:
            tokens, note = self._window_tokens()
        answer = self.pipeline.prune_and_generate(question, tokens, max_new_tokens, Timings())
        answer.note = note
        return answer

    def _window_tokens(self) -> tuple[np.ndarray, str]:
        """(T, P, D) tokens of the window; with n < T frames so far, each is repeated about T/n times
        (uniform sampling with repeats, as for a short video file)."""
        if not self.window:
            raise UserError("no frame has arrived yet: nothing to answer about")
        frames = list(self.window)
        wanted = self.pipeline.frames
        if len(frames) == wanted:
            return np.stack(frames), ""
        picks = np.arange(wanted) * len(frames) // wanted
        return np.stack([frames[i] for i in picks]), (f"only {len(frames)} frames so far; {wanted} expected: "
                                                      "frames repeated")


def replay(session: StreamingSession, source: str, realtime: bool = True, ask_after: float | None = None) -> float:
    """Feed ``source`` (file or camera) into ``session``; stop after ``ask_after`` seconds of
    video (or at its end). Returns the stream time reached, seconds."""
    stamp = 0.0
    for stamp, frame in iter_frames(source, realtime=realtime):
        session.push(frame)
        if ask_after is not None and stamp >= ask_after:
            break
    return stamp
