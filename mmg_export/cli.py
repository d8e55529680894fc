"""Command-line entry point: ``mmg-export <command>``.

Each command lives in its own module exposing ``register(subparsers)``; modules are imported
lazily so that ``mmg-export --help`` stays fast and a command's heavy dependencies load only
when it runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from mmg_runtime.errors import UserError

COMMANDS = {
    "build": "mmg_export.builder.cli",
    "lint": "mmg_export.lint.cli",
    "profile": "mmg_export.builder.profile",
    "run": "mmg_runtime.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmg-export",
        description="MMG-Vid video-token pruning: build, lint, profile and run LLaVA-OneVision artifacts.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (UserError, ValueError, FileNotFoundError) as error:
        if args.debug:
            raise
        print(f"mmg-export {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
