"""argparse types for the command line: each turns one option's text into its value or refuses it as a
usage error (exit status 2, one ``mmg-export COMMAND: error: argument --OPTION: ...`` line after the
usage), before anything is imported or loaded. Standard library only.
"""
from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

BYTE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
              "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
"""Units of :func:`byte_size`, upper-cased: SI (GB = 10^9 bytes) and binary (GiB = 2^30 bytes)."""
_BYTE_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")


def _interval(low: float | None, high: float | None, low_open: bool) -> str:
    """How a range reads in a message: "from 1 to 8", "in (0, 1]", ">= 0", "> 0"."""
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}"
    if low_open:
        return f"in ({low:g}, {high:g}]"
    return f"from {low:g} to {high:g}"


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high`` (None: no upper bound)."""
    return _bounded(int, "an integer", low, high, low_open=False)


def number(low: float, high: float | None = None, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number from ``low`` (excluded when ``low_open``) to ``high`` (None: no
    upper bound)."""
    return _bounded(float, "a number", low, high, low_open)


def _bounded(convert: Callable[[str], float], kind: str, low: float, high: float | None,
             low_open: bool) -> Callable[[str], float]:
    """An argparse type: ``convert(text)`` within the range (see :func:`integer`, :func:`number`)."""
    expected = f"{kind} {_interval(low, high, low_open)}"

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        below = value <= low if low_open else value < low
        if not math.isfinite(value) or below or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


def byte_size(text: str) -> int:
    """An argparse type: a memory size such as "2GiB", "512MiB", "1.5GB" or "0", in bytes (a bare number is
    bytes; units in :data:`BYTE_UNITS`, any case)."""
    match = _BYTE_SIZE.fullmatch(text)
    unit = match and BYTE_UNITS.get(match.group(2).upper())
    if unit is None:
        raise argparse.ArgumentTypeError(f"expected a size such as 2GiB, 512MiB, 1.5GB or 0, got {text!r}")
    return int(float(match.group(1)) * unit)


def text(what: str) -> Callable[[str], str]:
    """An argparse type: a string with something besides white space in it; ``what`` says what is expected."""

    def parse(value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError(f"is empty; expected {what}")
        return value

    return parse
