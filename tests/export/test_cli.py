"""CLI conventions: --version, exit statuses, global flags anywhere, plain help, closed pipes, signals.

Runs without torch (the deploy install): processes that must not import torch run in a
subprocess where ``import torch`` fails.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

import mmg_export.cli
from mmg_export import __version__
from mmg_export.cli import main, missing_module_hint, strip_markup

BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"
"""Prefix for ``python -c``: any ``import torch`` then fails as in an install without torch."""


def run_cli(*argv: str, block_torch: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """``mmg-export ARGV`` in a fresh interpreter (``import torch`` fails there when ``block_torch``)."""
    code = (BLOCK_TORCH if block_torch else "import sys\n") + (
        f"sys.argv = ['mmg-export', *{list(argv)!r}]\nfrom mmg_export.cli import entry_point; entry_point()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, **kwargs)


def clean_model(path: Path) -> Path:
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


# --- without torch ------------------------------------------------------------------------------


def test_version_and_help_without_torch() -> None:
    version = run_cli("--version")
    assert (version.returncode, version.stdout, version.stderr) == (0, f"mmg-export {__version__}\n", "")
    usage = run_cli("--help")
    assert usage.returncode == 0 and usage.stderr == ""
    for command in ("build", "lint", "profile", "run", "trtllm-adapter"):
        assert command in usage.stdout


@pytest.mark.slow
def test_lint_without_torch(tmp_path: Path) -> None:
    done = run_cli("lint", str(clean_model(tmp_path / "m.onnx")), "--trt", "11")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("No findings.\n")


def test_build_without_torch_names_the_extra() -> None:
    done = run_cli("build", "--target", "cpu")
    assert done.returncode == 1
    assert done.stderr == ("mmg-export build: error: this command needs torch, which this install lacks: "
                           "pip install 'mmg-export[export]'\n")


# --- help text ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(mmg_export.cli.COMMANDS))
def test_help_has_no_markup(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    text = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "``" not in text and ":func:" not in text and ":mod:" not in text
    assert "--debug" in text and "-q, --quiet" in text  # the global flags, after the command too


def test_strip_markup() -> None:
    assert strip_markup("``mmg-export profile``: see :func:`lint_model` and :mod:`mmg_export.lint`") == (
        "mmg-export profile: see lint_model and mmg_export.lint")


# --- exit statuses and global flags ------------------------------------------------------------------


def test_runtime_error_is_1_and_usage_error_is_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", str(tmp_path / "missing.onnx")]) == 1
    assert capsys.readouterr().err == f"mmg-export lint: error: {tmp_path / 'missing.onnx'}: no such ONNX file\n"
    with pytest.raises(SystemExit) as exit_info:
        main(["lint", "--no-such-flag"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("argv", [["--debug", "lint", "{path}"], ["lint", "{path}", "--debug"]])
def test_debug_before_or_after_the_command(tmp_path: Path, argv: list[str]) -> None:
    missing = str(tmp_path / "missing.onnx")
    with pytest.raises(Exception, match="no such ONNX file"):
        main([arg.format(path=missing) for arg in argv])


@pytest.mark.parametrize("argv", [["-q", "lint", "{path}"], ["lint", "{path}", "--quiet"]])
def test_quiet_before_or_after_the_command(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """-q silences the notes (here: that no real parser is installed) and keeps the results and errors."""
    for module in ("tensorrt", "tensorrt_rtx"):
        monkeypatch.setitem(sys.modules, module, None)
    path = str(clean_model(tmp_path / "m.onnx"))
    assert main(["lint", path]) == 0
    assert capsys.readouterr().err != ""
    assert main([arg.format(path=path) for arg in argv]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("No findings.") and err == ""


@pytest.mark.parametrize("argv,line", [
    (["build", "--ratio", "1.5"], "mmg-export build: error: argument --ratio: expected a number in (0, 1], got 1.5"),
    (["build", "--ratio", "abc"], "mmg-export build: error: argument --ratio: expected a number in (0, 1], got 'abc'"),
    (["run", "--video", "v.mp4", "--prompt", "q", "--temperature", "3"],
     "mmg-export run: error: argument --temperature: expected a number from 0 (greedy) to 2, got 3"),
    (["serve", "--port", "70000"], "mmg-export serve: error: argument --port: expected an integer from 1 to 65535, "
                                   "got 70000"),
])
def test_out_of_range_values_are_usage_errors_before_torch(argv: list[str], line: str) -> None:
    """Exit status 2, as for a value of the wrong type, without importing torch (it is blocked here)."""
    done = run_cli(*argv)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("usage: ") and done.stderr.splitlines()[-1] == line


@pytest.mark.parametrize("argv,message", [
    (["build", "--ratio", "0"], "argument --ratio: expected a number in (0, 1], got 0"),
    (["build", "--frames", "0"], "argument --frames: expected an integer from 1 to 256, got 0"),
    (["build", "--rounds", "9"], "argument --rounds: expected an integer from 1 to 8, got 9"),
    (["build", "--substeps", "0"], "argument --substeps: expected an integer from 1 to 8, got 0"),
    (["build", "--reach", "5"], "argument --reach: expected an integer from 0 to 4, got 5"),
    (["run", "--video", "v", "--max-new-tokens", "0"], "argument --max-new-tokens: expected an integer >= 1, got 0"),
    (["run", "--video", "v", "--top-p", "0"], "argument --top-p: expected a number above 0, at most 1, got 0"),
    (["run", "--video", "v", "--top-k", "-1"], "argument --top-k: expected 0 (off) or a positive integer, got -1"),
    (["run", "--video", "v", "--seed", "x"], "argument --seed: expected an integer from 0 to 2**63 - 1, or none, "
                                             "got x"),
    (["run", "--video", "v", "--sample-fps", "inf"], "argument --sample-fps: expected a number > 0, got inf"),
    (["run", "--video", "v", "--ask-after", "-1"], "argument --ask-after: expected a number >= 0, got -1"),
    (["run", "--video", "v", "--ask-after", "nan"], "argument --ask-after: expected a number >= 0, got nan"),
    (["run", "--video", "v", "--sample-fps", "0"], "argument --sample-fps: expected a number > 0, got 0"),
    (["run", "--video", "v", "--prompt", "  "], "argument --prompt: is empty; expected a question about the video"),
    (["run", "--video", " "], "argument --video: is empty; expected a video file or a folder of images"),
    (["run", "--video", "v", "--cache-memory", "2XB"],
     "argument --cache-memory: expected a size such as 2GiB, 512MiB, 1.5GB or 0, got '2XB'"),
    (["serve", "--max-queue", "-1"], "argument --max-queue: expected an integer >= 0, got -1"),
])
def test_bad_values_exit_2_naming_the_option(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"mmg-export {argv[0]}: error: {message}"


@pytest.mark.parametrize("text,size", [("0", 0), ("4096", 4096), ("2GiB", 2 << 30), ("512MiB", 512 << 20),
                                       ("1.5GB", 1_500_000_000), ("2 gib", 2 << 30), ("64kb", 64_000)])
def test_cache_memory_sizes(text: str, size: int) -> None:
    args = mmg_export.cli.build_parser().parse_args(["run", "--video", "v", "--cache-memory", text])
    assert args.cache_memory == size


def test_verbose_flag_counts(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = str(clean_model(tmp_path / "m.onnx"))
    args = mmg_export.cli.build_parser().parse_args(["-vv", "lint", path, "-v"])
    assert (args.verbose, args.quiet, args.debug) == (1, 0, False)  # the command's count replaces
    args = mmg_export.cli.build_parser().parse_args(["-vv", "lint", path])
    assert args.verbose == 2


def test_missing_module_hints() -> None:
    assert missing_module_hint(ModuleNotFoundError("x", name="torch")) == (
        "this command needs torch, which this install lacks: pip install 'mmg-export[export]'")
    assert missing_module_hint(ModuleNotFoundError("x", name="onnxruntime.capi")) == (
        "this command needs onnxruntime, which this install lacks: pip install 'mmg-export[cpu]' or 'mmg-export[gpu]'")
    assert missing_module_hint(ModuleNotFoundError("x", name="yaml")) is None
    assert missing_module_hint(ModuleNotFoundError("x", name="torch._inductor"), "run") == (
        "this command needs torch, which this install lacks: pip install 'torch==2.13.0+cpu' --extra-index-url "
        "https://download.pytorch.org/whl/cpu (a CUDA machine: pip install torch==2.13.0; Jetson: README's Install)")
    assert missing_module_hint(ModuleNotFoundError("x", name="torch"), "build").endswith("'mmg-export[export]'")


# --- closed pipe and signals -----------------------------------------------------------------------


def test_closed_stdout_ends_quietly() -> None:
    """``mmg-export build --list-targets | head -1``: the reader is gone before the output is flushed."""
    code = "import sys; sys.argv = ['mmg-export', 'build', '--list-targets']\n" \
           "from mmg_export.cli import entry_point; entry_point()\n"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # like head after its first line: every write now fails with EPIPE
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 1
    assert stderr == ""


SLEEPER = textwrap.dedent('''
    """A command that waits until a signal arrives."""
    import sys
    import time


    def register(subparsers):
        parser = subparsers.add_parser("sleep", help="wait")
        parser.set_defaults(handler=run)


    def run(args):
        print("ready", flush=True)
        time.sleep(60)
        return 0
''')


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_exits_130_with_one_line(tmp_path: Path, signum: int) -> None:
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    code = ("import sys; import mmg_export.cli as cli; cli.COMMANDS = {'sleep': 'sleeper'}\n"
            "sys.argv = ['mmg-export', 'sleep']; cli.entry_point()\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    assert process.stdout.readline() == "ready\n"
    time.sleep(0.2)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr == "mmg-export sleep: interrupted\n"
