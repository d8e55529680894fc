"""The NVDEC reader's scheduling (``run_in_order``): chunks decoded at once on several sessions, handed
on in order. NVDEC itself needs an NVIDIA GPU: it ran on the GPU machine only (BENCHMARKS.md)."""
from __future__ import annotations

import functools
import threading
import time

import pytest

from mmg_runtime.nvdec import run_in_order


def test_results_come_in_call_order_whatever_finishes_first():
    def late(index: int) -> int:
        time.sleep(0.02 * (4 - index))  # the last call finishes first
        return index

    assert list(run_in_order([functools.partial(late, i) for i in range(5)], workers=4)) == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_calls_run_at_once_up_to_the_workers():
    """Two calls that each wait for the other finish only when both run at the same time."""
    barrier = threading.Barrier(2, timeout=1.0)
    calls = [barrier.wait, barrier.wait]
    assert sorted(run_in_order(calls, workers=2)) == [0, 1]
    barrier.reset()
    with pytest.raises(threading.BrokenBarrierError):
        list(run_in_order(calls, workers=1))


def test_an_error_is_raised_at_its_place():
    def fail() -> int:
        raise ValueError("frame 8 does not decode")

    results = run_in_order([lambda: 0, fail, lambda: 2], workers=3)
    assert next(results) == 0
    with pytest.raises(ValueError, match="frame 8 does not decode"):
        next(results)


def test_leaving_early_runs_nothing_more():
    started: list[int] = []

    def record(index: int) -> int:
        started.append(index)
        time.sleep(0.05)
        return index

    results = run_in_order([functools.partial(record, i) for i in range(6)], workers=1)
    assert next(results) == 0
    results.close()  # waits for a running call, cancels the rest
    seen = list(started)
    time.sleep(0.2)
    assert started == seen and seen in ([0], [0, 1])


def test_no_calls_no_results():
    assert list(run_in_order([], workers=0)) == []
