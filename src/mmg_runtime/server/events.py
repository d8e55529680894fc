"""Server-sent events: one ``data: <JSON>`` event per chunk (the text of a growing answer comes from
:class:`~mmg_runtime.prompt.IncrementalText`, which the pipeline's stop strings share)."""
from __future__ import annotations

import json

from ..prompt import IncrementalText

__all__ = ["DONE", "SSE_HEADERS", "IncrementalText", "sse"]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = "data: [DONE]\n\n"


def sse(payload: dict) -> str:
    """One server-sent event carrying ``payload`` as JSON."""
    return f"data: {json.dumps(payload)}\n\n"
