"""Command-line entry point: ``mmg-export [--debug] [-v | -q] COMMAND ...``.

Each command lives in its own module exposing ``register(subparsers)``; modules are imported
lazily so that ``mmg-export --help`` stays fast and a command's heavy dependencies (torch for
``build``) load only when it runs.

Conventions, as the NVIDIA command-line tools and POSIX have them: exit status 0 on success, 1 on
a runtime error (one line on stderr, a traceback only with ``--debug``), 2 on a usage error
(argparse: a bad value, checked by the option's type, or a :class:`UsageError`: options that do not
go together; both before anything heavy is imported), 130 when interrupted by SIGINT or SIGTERM;
the global flags go before or after the command; a closed stdout (``mmg-export build --list-targets | head -1``) ends quietly.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import os
import re
import signal
import sys
from collections.abc import Iterator

from mmg_runtime.errors import UsageError, UserError

from . import __version__

COMMANDS = {
    "build": "mmg_export.builder.cli",
    "lint": "mmg_export.lint.cli",
    "profile": "mmg_export.builder.profile",
    "run": "mmg_runtime.cli",
    "serve": "mmg_runtime.serve_cli",
    "trtllm-adapter": "mmg_export.builder.trtllm_adapter",
}

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

INSTALL_OF_MODULE = {
    "torch": "'mmg-export[export]'", "onnxscript": "'mmg-export[export]'", "matplotlib": "'mmg-export[export]'",
    "onnxruntime": "'mmg-export[cpu]' or 'mmg-export[gpu]'",
    "tensorrt": "'mmg-export[tensorrt]' (on Jetson: JetPack's python3-libnvinfer)",
    "tensorrt_llm": "'mmg-export[trtllm]' or 'mmg-export[trtllm-engine]' (docs/trtllm.md)",
    "fastapi": "'mmg-export[serve]'", "uvicorn": "'mmg-export[serve]'", "starlette": "'mmg-export[serve]'",
    "pydantic": "'mmg-export[serve]'",
}
"""Top-level module -> what installs it, for a one-line hint when a command needs it."""
DEPLOY_COMMANDS = frozenset({"run", "serve", "profile"})
"""Commands that run built artifacts: what they need of torch is torch alone (the transformers LLM, an
AOTInductor pruner), not the export extra."""

_MARKUP = re.compile(r":[a-z]+:`([^`]*)`|``([^`]*)``")
"""reStructuredText roles (:func:`x`) and inline literals (``x``), as docstrings write them."""


def strip_markup(text: str) -> str:
    """``text`` with reStructuredText roles and inline literals reduced to their content."""
    return _MARKUP.sub(lambda match: match.group(1) or match.group(2) or "", text)


class PlainHelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, minus the reStructuredText markup that docstring-derived help carries."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(strip_markup(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return strip_markup(super()._expand_help(action))


def _add_global_flags(parser: argparse.ArgumentParser, in_command: bool) -> None:
    """``--debug``, ``-v`` and ``-q`` on the top parser and (without defaults) on every command.

    A command's parser must not reset what was given before the command: there the flags default
    to SUPPRESS, so they appear in the namespace only when given after it.
    """
    default = argparse.SUPPRESS if in_command else None
    group = parser.add_argument_group("global options")
    group.add_argument("--debug", action="store_true", default=default if in_command else False,
                       help="show full tracebacks on errors")
    group.add_argument("-v", "--verbose", action="count", default=default if in_command else 0,
                       help="more output: Polygraphy and TensorRT logs (repeat for more)")
    group.add_argument("-q", "--quiet", action="count", default=default if in_command else 0,
                       help="less output: errors only (no progress)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmg-export", formatter_class=PlainHelpFormatter,
        description="MMG-Vid video-token pruning: build, lint, profile and run LLaVA-OneVision artifacts.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_flags(parser, in_command=False)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).register(subparsers)
    for command in subparsers.choices.values():
        command.formatter_class = PlainHelpFormatter
        _add_global_flags(command, in_command=True)
    return parser


def missing_module_hint(error: ModuleNotFoundError, command: str = "") -> str | None:
    """One line naming what installs the missing module, or None for other modules: torch alone for the
    commands that run artifacts (:data:`DEPLOY_COMMANDS`), the extra that installs it otherwise."""
    module = (error.name or "").split(".")[0]
    if module == "torch" and command in DEPLOY_COMMANDS:
        from mmg_runtime.llm import TORCH_INSTALL

        return f"this command needs torch, which this install lacks: {TORCH_INSTALL}"
    install = INSTALL_OF_MODULE.get(module)
    if install is None:
        return None
    return f"this command needs {module}, which this install lacks: pip install {install}"


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt like SIGINT, so both unwind (temporary files go) the same way."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _configure_logging(verbosity: int) -> None:
    """Polygraphy's (and through it TensorRT's) logs on stderr: warnings by default, INFO with -v,
    everything with -vv, errors only with -q."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(max(-1, verbosity), logging.DEBUG)
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = level
    G_LOGGER.use_python_logging_system = True  # stdout carries results only
    polygraphy = logging.getLogger("Polygraphy")
    if not any(isinstance(handler, _StderrHandler) for handler in polygraphy.handlers):
        polygraphy.addHandler(_StderrHandler())
        polygraphy.propagate = False


class _StderrHandler(logging.StreamHandler):
    """Writes each record to the sys.stderr of the moment (so -q's redirection applies)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _closed_stdout() -> int:
    """stdout went away (``| head``): point it at /dev/null so that the exit flush stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):
        os.dup2(devnull, sys.stdout.fileno())
    return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = args.verbose - args.quiet
    _configure_logging(verbosity)
    quiet = io.StringIO() if verbosity < 0 else None
    try:
        with _sigterm_interrupts(), contextlib.redirect_stderr(quiet) if quiet else contextlib.nullcontext():
            status = int(args.handler(args) or 0)
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
            return status
    except KeyboardInterrupt:
        print(f"mmg-export {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _closed_stdout()
    except (UserError, ValueError, FileNotFoundError, ModuleNotFoundError) as error:
        if args.debug:
            raise
        message = missing_module_hint(error, args.command) if isinstance(error, ModuleNotFoundError) else str(error)
        if message is None:
            raise
        print(f"mmg-export {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(error, UsageError) else EXIT_ERROR


def entry_point() -> None:
    """The ``mmg-export`` console script: exit with :func:`main`'s status."""
    try:
        sys.exit(main())
    except BrokenPipeError:
        sys.exit(_closed_stdout())


if __name__ == "__main__":
    entry_point()
