"""``mmg-export run`` and ``serve`` as a user meets them: errors before loading, in the CLI's words, with
the README's exit statuses; conversations on stdin (``--interactive``); what ``serve`` prints where."""
from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from samples import write_jpeg

from mmg_export.cli import main
from mmg_runtime.pipeline import Pipeline

BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"
"""Prefix for ``python -c``: any ``import torch`` then fails, so does loading the transformers LLM."""
QUESTION = "What happens in this video?"
LONG_PROMPT = "word " * 20_000
"""100,000 characters: 101,589 prompt tokens with the video's K + 1 = 1,569 (the tiny model's tokenizer)."""


def run_cli(*argv: str, block_torch: bool = True) -> subprocess.CompletedProcess:
    """``mmg-export ARGV`` in a fresh interpreter (``import torch`` fails there when ``block_torch``)."""
    code = (BLOCK_TORCH if block_torch else "import sys\n") + (
        f"sys.argv = ['mmg-export', *{list(argv)!r}]\nfrom mmg_export.cli import entry_point; entry_point()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.fixture
def constructed(monkeypatch: pytest.MonkeyPatch) -> list[Pipeline]:
    """Every Pipeline constructed while the test runs (the real constructor runs)."""
    made, real_init = [], Pipeline.__init__

    def recording_init(self, *args, **kwargs):
        made.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "__init__", recording_init)
    return made


def truncated_jpegs(folder: Path) -> Path:
    """A folder of three 64x48 JPEGs whose second is cut before its frame header."""
    folder.mkdir()
    for index in range(3):
        write_jpeg(folder / f"f{index}.jpg", np.full((48, 64, 3), 60 * index, np.uint8))
    (folder / "f1.jpg").write_bytes((folder / "f1.jpg").read_bytes()[:300])
    return folder


# ----------------------------------------------------------------------------------------------
# Errors before loading


def test_a_missing_video_is_said_before_torch_or_the_model_loads(artifacts: Path) -> None:
    """In a process where torch cannot be imported, the transformers LLM could never load: the error
    comes first, exactly, in the CLI's words (not the Python API's "(N, H, W, 3) uint8 array")."""
    done = run_cli("run", "--video", "nope.mp4", "--prompt", QUESTION, "--artifacts", str(artifacts))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == ("mmg-export run: error: --video nope.mp4: no such file or folder; expected a video file "
                           "or a folder of images\n")


@pytest.mark.parametrize("case", ["stream", "text", "jpeg", "prompt", "device"])
def test_errors_come_before_the_pipeline_is_constructed(artifacts, bikes, tmp_path, capsys, constructed, case):
    text = tmp_path / "notes.mp4"
    text.write_text("this is text, not H.264")
    folder = truncated_jpegs(tmp_path / "frames")
    argv, message = {
        "stream": (["--stream", "nope.mp4"], "--stream nope.mp4: no such file or folder; expected a video file, a "
                   "folder of images, a camera such as /dev/video0, a network URL or gst:<pipeline>"),
        "text": (["--video", str(text)], f"cannot read {text}: not a video or image FFmpeg can decode"),
        "jpeg": (["--video", str(folder)], f"cannot decode image {folder / 'f1.jpg'}: Invalid data found when "
                 "processing input; expected a complete image file"),
        "prompt": (["--video", str(bikes), "--prompt", LONG_PROMPT], "--prompt is too long: 101589 prompt tokens "
                   "(the video's 1569 included) + 64 new ones (--max-new-tokens) = 101653, more than the model's "
                   "context of 32768 tokens"),
        "device": (["--stream", "/dev/video99"], "--stream /dev/video99: no such device; expected a camera such "
                   "as /dev/video0"),
    }[case]
    prompt = [] if "--prompt" in argv else ["--prompt", QUESTION]
    assert main(["run", *argv, *prompt, "--artifacts", str(artifacts)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"mmg-export run: error: {message}") and err.count("\n") == 1
    assert constructed == []


def test_a_stream_folder_with_a_truncated_first_image_is_refused_before_loading(artifacts, tmp_path, capsys,
                                                                                 constructed):
    folder = truncated_jpegs(tmp_path / "frames")
    (folder / "f0.jpg").write_bytes((folder / "f0.jpg").read_bytes()[:300])
    assert main(["run", "--stream", str(folder), "--prompt", QUESTION, "--artifacts", str(artifacts)]) == 1
    assert capsys.readouterr().err == (f"mmg-export run: error: cannot decode image {folder / 'f0.jpg'}: Invalid data "
                                       "found when processing input; expected a complete image file\n")
    assert constructed == []


@pytest.mark.parametrize("argv,message", [
    (["--video", "v.mp4", "--prompt", "q", "--sample-fps", "2"], "--ask-after and --sample-fps work with --stream only"),
    (["--video", "v.mp4"], "--prompt QUESTION is required (or --interactive, to read the questions from stdin)"),
    (["--video", "v.mp4", "--prompt", "q", "--keep-positions", "--llm", "trtllm-engine"],
     "--keep-positions needs --llm transformers: trtllm-engine derives positions from token order"),
])
def test_options_that_do_not_go_together_exit_2_in_one_line(argv, message) -> None:
    done = run_cli("run", *argv)
    assert (done.returncode, done.stderr) == (2, f"mmg-export run: error: {message}\n")


TORCH_INSTALL_LINE = ("pip install 'torch==2.13.0+cpu' --extra-index-url https://download.pytorch.org/whl/cpu "
                      "(a CUDA machine: pip install torch==2.13.0; Jetson: README's Install)")


@pytest.mark.parametrize("command", ["run", "serve"])
def test_an_install_without_torch_is_told_the_command_before_loading(artifacts, bikes, command) -> None:
    """--llm transformers needs torch alone (not the export extra): the exact command, before any loading."""
    argv = ["--video", str(bikes), "--prompt", QUESTION] if command == "run" else ["--port", str(_free_port())]
    done = run_cli(command, *argv, "--artifacts", str(artifacts))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"mmg-export {command}: error: --llm transformers needs torch, which this install lacks: " \
                          f"{TORCH_INSTALL_LINE}\n"


def test_a_missing_model_directory_is_said_before_loading(artifacts, bikes, tmp_path, capsys, constructed) -> None:
    assert main(["run", "--video", str(bikes), "--prompt", QUESTION, "--artifacts", str(artifacts),
                 "--model", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err == (f"mmg-export run: error: --model {tmp_path / 'nope'}: no such directory; "
                                       "expected the checkpoint, engine or model directory that --llm transformers "
                                       "loads\n")
    assert constructed == []


def test_serve_takes_how_long_an_ended_stream_stays_readable() -> None:
    from mmg_export.cli import build_parser
    from mmg_runtime.serve_cli import server_settings

    args = build_parser().parse_args(["serve", "--ended-stream-seconds", "30"])
    assert server_settings(args)["ended_stream_seconds"] == 30.0
    assert build_parser().parse_args(["serve"]).ended_stream_seconds == 600.0
    done = run_cli("serve", "--ended-stream-seconds", "-1")
    assert (done.returncode, done.stderr.splitlines()[-1]) == (
        2, "mmg-export serve: error: argument --ended-stream-seconds: expected a number >= 0, got -1")


# ----------------------------------------------------------------------------------------------
# Answers


def test_interactive_is_one_conversation_about_the_video(artifacts, bikes, monkeypatch, capsys) -> None:
    """Two questions on stdin, then an empty line (what follows is not asked): two JSON lines, the second
    answered from the first's video tokens and KV prefix, with the first question and answer as history."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{QUESTION}\nAnd then?\n\nNever asked.\n"))
    assert main(["run", "--video", str(bikes), "--interactive", "--json", "--max-new-tokens", "2",
                 "--artifacts", str(artifacts), "--system", "Answer briefly."]) == 0
    first, second = map(json.loads, capsys.readouterr().out.splitlines())
    assert first["reused"] == [] and first["cached_tokens"] == 0
    assert second["reused"] == ["video_tokens", "kv_prefix"] and second["cached_tokens"] > 1569
    assert second["timings_ms"]["encode"] == 0 and first["timings_ms"]["encode"] > 0


def test_interactive_text_goes_on_after_an_error(artifacts, bikes, monkeypatch, capsys) -> None:
    """A question that does not fit is one error line; the next question is answered; the status is 1."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{LONG_PROMPT}\n{QUESTION}\n"))
    assert main(["run", "--video", str(bikes), "--interactive", "--max-new-tokens", "2", "--artifacts",
                 str(artifacts), "--temperature", "0.5", "--seed", "7"]) == 1
    out, err = capsys.readouterr()
    assert "mmg-export run: error: the conversation needs 101588 prompt tokens + 2 new ones" in err  # line stripped
    assert out.strip() and err.count(f"video {bikes}, LLM transformers") == 1


def test_a_stream_reports_its_load_time_and_one_header(artifacts, bikes, capsys) -> None:
    assert main(["run", "--stream", str(bikes), "--prompt", QUESTION, "--artifacts", str(artifacts),
                 "--sample-fps", "8", "--ask-after", "1.0", "--max-new-tokens", "2"]) == 0
    err = capsys.readouterr().err
    header = [line for line in err.splitlines() if line.startswith(f"stream {bikes}")]
    assert header == [f"stream {bikes} at 8 fps: 9 frames encoded, 0 dropped, window 1.1 s; LLM transformers, "
                      "onnxruntime on cpu, decoder pyav"]
    load = next(line for line in err.splitlines() if line.startswith("  load "))
    assert float(load.split()[1]) > 100  # milliseconds: loading and warming up took that at least


# ----------------------------------------------------------------------------------------------
# serve


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_on_a_port_in_use_is_one_line(artifacts: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("serve", "--artifacts", str(artifacts), "--port", str(port))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (f"mmg-export serve: error: --port {port}: 127.0.0.1:{port} is in use by another program; "
                           "stop it or pass another --port\n")


def test_serve_logs_requests_on_stderr_not_stdout(artifacts: Path) -> None:
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "mmg_export.cli", "serve", "--artifacts", str(artifacts),
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/health").status_code
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert out == ""
    assert f'"GET /health HTTP/1.1" {status}' in err
    assert f"mmg-export serve: listening on http://127.0.0.1:{port}; loading {artifacts}" in err
