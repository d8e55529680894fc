"""``mmg-export profile`` on the CPU artifacts: what it measures, its table, report, plot, progress and errors."""
import io
import json
import re
import struct
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from mmg_export.builder.profile import parse_frame_size, parse_ratios
from mmg_export.builder.profile_harness import Measurement, Timer
from mmg_export.builder.profile_report import format_table
from mmg_export.cli import main
from mmg_runtime.errors import UserError
from mmg_runtime.tensorrt import installed

ROWS = [("upload", 32, None, None), ("upload", 8, None, None), ("preprocess", 32, None, None),
        ("preprocess", 8, None, None), ("encoder", 32, None, None), ("encoder", 8, None, None),
        ("pruner", 32, 0.1, 627), ("pruner", 32, 0.25, 1568), ("download", 32, 0.1, 627),
        ("download", 32, 0.25, 1568), ("prefill", 32, 0.1, 627), ("prefill", 32, 0.25, 1568)]
"""(component, frames, ratio, K) of every row with --ratios 0.1,0.25 on the tiny 32-frame artifacts (ratio 0.25)."""
PROGRESS = ["upload 32f", "upload 8f", "preprocess 32f", "preprocess 8f", "encoder 32f", "encoder 8f",
            "pruner r0.1", "download r0.1", "prefill r0.1", "pruner r0.25", "download r0.25", "prefill r0.25"]
"""Progress labels in the order the rows are measured (each ratio's pruner, download and prefill together)."""


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def profiled(artifacts, tmp_path_factory):
    """One profile of two ratios (0.1 exported for it) with --json and --plot: (report, stdout, stderr, plot)."""
    out = tmp_path_factory.mktemp("profile")
    report, plot = out / "profile.json", out / "latency.png"
    args = ["profile", str(artifacts), "--ratios", "0.1,0.25", "--iterations", "3", "--warm-up", "1",
            "--frame-size", "320x240", "--json", str(report), "--plot", str(plot)]
    stdout, stderr = io.StringIO(), io.StringIO()  # capsys is per test; this fixture serves the module
    with redirect_stdout(stdout), redirect_stderr(stderr):
        status = main(args)
    assert status == 0, stderr.getvalue()
    return json.loads(report.read_text()), stdout.getvalue(), stderr.getvalue(), plot


def test_report_rows_and_values(profiled):
    data, _, _, _ = profiled
    rows = [(m["component"], m["frames"], m["ratio"], m["keep"]) for m in data["measurements"]]
    assert rows == ROWS
    for m in data["measurements"]:
        times, stats = np.array(m["times_ms"]), m["statistics_ms"]
        assert len(times) == 3 and np.all(times > 0)
        assert stats["min"] <= stats["median"] <= stats["p90"] <= stats["p99"] <= times.max()
        assert stats["min"] <= stats["mean"] <= times.max()
        assert stats == pytest.approx({"min": times.min(), "median": np.median(times), "mean": times.mean(),
                                       "p90": np.percentile(times, 90), "p99": np.percentile(times, 99)})


def test_report_says_what_ran_where_and_how(profiled, artifacts):
    data, _, _, _ = profiled
    manifest = json.loads((artifacts / "manifest.json").read_text())
    assert {key: data[key] for key in ("backend", "precision", "frames", "ratio", "keep", "chunk_frames")} == {
        "backend": "onnxruntime", "precision": "fp32", "frames": 32, "ratio": 0.25, "keep": manifest["keep"],
        "chunk_frames": 8}
    assert data["frame_size"] == {"height": 240, "width": 320}
    assert (data["iterations"], data["warm_up"]) == (3, 1)
    assert data["gpu"] is None  # this machine has no GPU (mmg_runtime.device.device_info)
    assert data["versions"]["onnxruntime"] == onnxruntime.__version__
    assert {"python", "numpy", "onnx", "onnxscript", "polygraphy", "torch", "transformers"} <= set(data["versions"])
    assert "tensorrt" not in data["versions"]  # not installable here
    assert data["versions"].get("tensorrt_rtx") == getattr(installed("tensorrt-rtx"), "__version__", None)
    assert data["components"]["llm"] == {"backend": "transformers", "providers": ["transformers on cpu (float32)"]}
    assert [m["runs_on"] for m in data["measurements"] if m["component"] in ("upload", "download")] == ["host copy"] * 4
    assert data["timing"].startswith("host clock (time.perf_counter) around each call")
    assert "ONNX Runtime exposes no CUDA events" in data["timing"]
    assert data["notes"] == ["pruners at ratio 0.1 exported for this profile (the artifacts' pruner keeps 0.25)"]


def test_stdout_is_the_table_only(profiled):
    data, stdout, _, _ = profiled
    lines = stdout.splitlines()
    assert lines[0].split() == ["component", "frames", "ratio", "K", "min", "ms", "median", "ms", "mean", "ms",
                                "p90", "ms", "p99", "ms", "runs", "on"]
    assert len(lines) == 1 + len(ROWS) and "{" not in stdout
    pruner = next(m for m in data["measurements"] if m["component"] == "pruner" and m["ratio"] == 0.1)
    cells = lines[1 + ROWS.index(("pruner", 32, 0.1, 627))].split()
    assert cells[:4] == ["pruner", "32", "0.1", "627"]
    assert [float(cell) for cell in cells[4:9]] == pytest.approx(
        [round(v, 3) for v in pruner["statistics_ms"].values()], abs=1e-3)
    assert cells[9:] == ["CPUExecutionProvider"]


def test_progress_line_per_row_on_stderr(profiled):
    _, _, stderr, _ = profiled
    progress = [line for line in stderr.splitlines() if line.startswith("[")]
    assert progress == [f"[{i}/12] {label}: 1 warm-up + 3 timed runs" for i, label in enumerate(PROGRESS, 1)]
    assert "      exporting the pruner at ratio 0.1" in stderr.splitlines()
    assert stderr.splitlines()[0].startswith("profiling ")


def test_plot_has_the_spread_and_the_ratio_panel(profiled):
    *_, plot = profiled
    assert png_size(plot) == (1200, 500)  # spread (6 in) + against ratio (6 in), 5 in high, 100 dpi


def test_quiet_single_ratio(artifacts, tmp_path, capsys):
    plot = tmp_path / "one.png"
    assert main(["profile", str(artifacts), "-q", "--iterations", "1", "--warm-up", "0", "--frame-size", "64x48",
                 "--plot", str(plot)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert [line.split()[0] for line in captured.out.splitlines()[1:]] == [
        "upload", "upload", "preprocess", "preprocess", "encoder", "encoder", "pruner", "download", "prefill"]
    assert png_size(plot) == (600, 500)  # the spread alone


def test_without_torch_prefill_is_skipped_with_a_note(artifacts, tmp_path, capsys, monkeypatch):
    """The deploy install: sys.modules[name] = None makes ``import torch`` fail as if it were not installed."""
    monkeypatch.setitem(sys.modules, "torch", None)
    report = tmp_path / "r.json"
    assert main(["profile", str(artifacts), "--iterations", "1", "--warm-up", "0", "--frame-size", "64x48",
                 "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert "prefill" not in {m["component"] for m in data["measurements"]} and "llm" not in data["components"]
    note = ("prefill not measured: the transformers LLM needs torch, which this install lacks: "
            "pip install 'torch==2.13.0+cpu' --extra-index-url https://download.pytorch.org/whl/cpu "
            "(a CUDA machine: pip install torch==2.13.0; Jetson: README's Install)")
    assert data["notes"] == [note]
    err = capsys.readouterr().err
    assert f"note: {note}\n" in err and "[8/8] download r0.25" in err


def test_extra_ratios_need_torch(artifacts, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["profile", str(artifacts), "--ratios", "0.1,0.25,0.5"]) == 1
    assert capsys.readouterr().err == (
        "mmg-export profile: error: --ratios 0.1,0.5: ratios other than the artifacts' 0.25 export a pruner, "
        "and exporting needs torch, which this install lacks: pip install 'mmg-export[export]'\n")


def test_plot_needs_matplotlib_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["profile", str(tmp_path / "no-artifacts"), "--plot", str(tmp_path / "p.png")]) == 1
    assert capsys.readouterr().err == ("mmg-export profile: error: --plot needs matplotlib, which this install "
                                       "lacks: pip install 'mmg-export[export]'\n")
    assert not (tmp_path / "p.png").exists()


def test_each_call_follows_the_stage_before_it_in_run(capsys):
    """Warm-up and timed calls alike run right after, untimed, what precedes them in run; only the call is timed."""
    import time

    log = []

    def encode() -> None:
        log.append("encoder")
        time.sleep(0.02)

    row = Timer(iterations=2, warm_up=1, rows=1).measure("pruner", 32, "CPUExecutionProvider",
                                                          lambda: log.append("pruner"), 0.25, 1568, after=encode)
    assert log == ["encoder", "pruner"] * 3
    assert len(row.times_ms) == 2 and max(row.times_ms) < 10
    assert capsys.readouterr().err == "[1/1] pruner r0.25: 1 warm-up + 2 timed runs\n"


def test_statistics_and_table():
    row = Measurement("pruner", 32, 0.25, 1568, "CPUExecutionProvider", [4.0, 1.0, 100.0, 3.0, 2.0])
    assert row.statistics() == pytest.approx({"min": 1.0, "median": 3.0, "mean": 22.0, "p90": 61.6, "p99": 96.16})
    upload = Measurement("upload", 8, None, None, "host copy", [0.5])
    assert format_table([upload, row]).splitlines() == [
        "component  frames  ratio     K  min ms  median ms  mean ms  p90 ms  p99 ms  runs on",
        "upload          8                0.500      0.500    0.500   0.500   0.500  host copy",
        "pruner         32   0.25  1568   1.000      3.000   22.000  61.600  96.160  CPUExecutionProvider"]


@pytest.mark.parametrize("text,size", [("1280x720", (720, 1280)), (" 64X48 ", (48, 64))])
def test_frame_size(text, size):
    assert parse_frame_size(text) == size


@pytest.mark.parametrize("text", ["720p", "0x720", "1280x", "1280x720x3"])
def test_bad_frame_size(text):
    with pytest.raises(UserError, match=re.escape(f"--frame-size {text}: expected WIDTHxHEIGHT in pixels, "
                                                  "such as 1280x720")):
        parse_frame_size(text)


@pytest.mark.parametrize("text,message", [("0,0.5", "every ratio must be in (0, 1]"),
                                          ("a,b", "expected comma-separated numbers")])
def test_bad_ratios(text, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_ratios(text, 0.25)


def test_profile_of_a_directory_without_manifest(tmp_path, capsys):
    assert main(["profile", str(tmp_path)]) == 1
    assert "manifest.json: missing; expected an artifact directory written by mmg-export build" in capsys.readouterr().err
