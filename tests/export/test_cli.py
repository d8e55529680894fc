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
