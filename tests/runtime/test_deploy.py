"""The deploy role: what the install without torch promises (pyproject's roles, the encoder and
pruner path, profile). CI runs this module in a second virtual environment that has no torch,
against artifacts built beforehand (``MMG_TEST_ARTIFACTS``); here it runs with the others."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

from mmg_export.cli import main
from mmg_runtime.llm.base import Generation, VideoPrompt

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def requirements(group: str | None) -> dict[str, Requirement]:
    """name -> requirement of the base dependencies (None) or of one extra."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    lines = project["dependencies"] if group is None else project["optional-dependencies"][group]
    parsed = [Requirement(line) for line in lines]
    return {requirement.name: requirement for requirement in parsed}


def closure(extras: list[str]) -> set[str]:
    """Distribution names that ``pip install 'mmg-export[EXTRAS]'`` asks for (self-references followed)."""
    names, pending = set(requirements(None)), list(extras)
    while pending:
        for name, requirement in requirements(pending.pop()).items():
            if name == "mmg-export":
                pending.extend(requirement.extras)
            else:
                names.add(name)
    return names


def test_deploy_install_has_no_torch_and_no_onnxruntime_of_its_own() -> None:
    base = set(requirements(None))
    assert {"numpy", "av", "onnx", "polygraphy", "transformers", "jinja2"} <= base
    assert not base & {"torch", "onnxscript", "matplotlib", "onnxruntime", "onnxruntime-gpu", "tensorrt"}


def test_gpu_never_brings_the_cpu_onnxruntime() -> None:
    assert "onnxruntime" not in closure(["gpu"]) and "onnxruntime-gpu" in closure(["gpu"])
    assert "onnxruntime" in closure(["cpu"]) and "onnxruntime-gpu" not in closure(["cpu"])
    assert {"torch", "onnxscript", "onnx", "matplotlib", "transformers"} <= closure(["export"])
    assert "onnxruntime-gpu" not in closure(["dev"])


@pytest.mark.parametrize("extra,inside,outside", [
    ("tensorrt", ["10.3.0.30", "10.13.3", "11.4.1"], ["10.2.0", "12.0"]),
    ("trtllm", ["1.0.0", "1.2.1"], ["0.21.0", "1.3.0"]),
    ("trtllm-engine", ["0.15.0", "0.21.0"], ["0.14.0", "0.22.0", "1.0.0"]),
])
def test_nvidia_extras_are_bounded(extra: str, inside: list[str], outside: list[str]) -> None:
    (requirement,) = requirements(extra).values()
    assert [requirement.specifier.contains(v) for v in inside] == [True] * len(inside)
    assert [requirement.specifier.contains(v) for v in outside] == [False] * len(outside)


class RecordingLLM:
    """An LLM backend that records its prompt (the deploy install's LLM is TensorRT-LLM, absent here)."""

    name = "recording"
    max_context = 1 << 20

    def __init__(self) -> None:
        self.prompts: list[VideoPrompt] = []

    def generate(self, prompt: VideoPrompt, max_new_tokens: int, on_token=None, **options) -> Generation:
        self.prompts.append(prompt)
        return Generation(token_ids=[], prefill_s=0.0, decode_s=0.0)


def test_encoder_and_pruner_path(artifacts: Path) -> None:
    from mmg_runtime.pipeline import Pipeline

    llm = RecordingLLM()
    manifest = json.loads((artifacts / "manifest.json").read_text())
    frames = np.random.default_rng(0).integers(0, 256, size=(manifest["frames"], 48, 64, 3), dtype=np.uint8)
    pipeline = Pipeline.from_artifacts(artifacts, llm=llm)
    answer = pipeline.ask(frames, "What happens?", max_new_tokens=4)
    keep, hidden = manifest["keep"], manifest["hidden_size"]
    assert answer.kept_indices.shape == (keep,)
    assert np.all(np.diff(answer.kept_indices) > 0)
    *warm_up, prompt = llm.prompts  # loading asks a question and a follow-up itself
    assert prompt.video_embeds.shape == (keep + 1, hidden)
    assert prompt.input_ids.count(prompt.video_token_id) == 1


def test_profile_runs_what_the_pipeline_runs(artifacts: Path, tmp_path: Path) -> None:
    """Same sessions and providers as run; without torch (CI's deploy venv) no prefill, and a note says why."""
    from mmg_runtime.pipeline import Pipeline

    report = tmp_path / "profile.json"
    assert main(["profile", str(artifacts), "--iterations", "2", "--warm-up", "0", "--frame-size", "64x48",
                 "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    pipeline = Pipeline.from_artifacts(artifacts, llm=RecordingLLM(), warm_up=False)
    stages = ("preprocess", "encoder", "pruner")
    assert {name: data["components"][name]["providers"] for name in stages} == {
        name: pipeline.providers[name] for name in stages}
    keep, have_torch = data["keep"], importlib.util.find_spec("torch") is not None
    rows = [(m["component"], m["frames"], m["ratio"], m["keep"], len(m["times_ms"])) for m in data["measurements"]]
    assert rows == [("upload", 32, None, None, 2), ("upload", 8, None, None, 2), ("preprocess", 32, None, None, 2),
                    ("preprocess", 8, None, None, 2), ("encoder", 32, None, None, 2), ("encoder", 8, None, None, 2),
                    ("pruner", 32, 0.25, keep, 2), ("download", 32, 0.25, keep, 2)] + (
                       [("prefill", 32, 0.25, keep, 2)] if have_torch else [])
    assert data["notes"] == ([] if have_torch else [
        "prefill not measured: the transformers LLM needs torch, which this install lacks: "
        "pip install 'torch==2.13.0+cpu' --extra-index-url https://download.pytorch.org/whl/cpu "
        "(a CUDA machine: pip install torch==2.13.0; Jetson: README's Install)"])


@pytest.mark.parametrize("args,message", [
    (["--iterations", "1000000000"], "--iterations 1000000000: expected an integer from 1 to 100,000"),
    (["--warm-up", "-1"], "--warm-up -1: expected an integer from 0 to 100,000"),
    (["--json", "{tmp}/missing/r.json"], "--json {tmp}/missing/r.json: the directory {tmp}/missing does not exist"),
    (["--json", "{tmp}"], "--json {tmp}: is a directory; expected a file name"),
    (["--plot", "{tmp}/missing/p.png"], "--plot {tmp}/missing/p.png: the directory {tmp}/missing does not exist"),
    (["--frame-size", "720p"], "--frame-size 720p: expected WIDTHxHEIGHT in pixels, such as 1280x720"),
])
def test_profile_refuses_before_running(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        args: list[str], message: str) -> None:
    """Checked before anything runs: the artifacts argument here is not even a directory."""
    args = [arg.format(tmp=tmp_path) for arg in args]
    assert main(["profile", str(tmp_path / "no-artifacts"), *args]) == 1
    assert capsys.readouterr().err == f"mmg-export profile: error: {message.format(tmp=tmp_path)}\n"
