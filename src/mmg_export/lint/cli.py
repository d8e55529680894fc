"""``mmg-export lint MODEL.onnx``: check an ONNX model against TensorRT's ONNX-parser constraints."""
from __future__ import annotations

import argparse
import json
import sys

from . import DEFAULT_VERSION, supported_versions


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``lint`` subcommand."""
    parser = subparsers.add_parser(
        "lint", help="check an ONNX model against TensorRT's operator table and parser constraints",
        description="Check an ONNX model for operators, types and shapes the TensorRT ONNX parser rejects "
                    "(operator table from onnx/onnx-tensorrt docs/operators.md); where TensorRT or TensorRT for RTX "
                    "is installed, also parse it with each real parser. Exit status 1 on errors.")
    parser.add_argument("model", help="ONNX model file")
    parser.add_argument("--trt", choices=supported_versions(), default=DEFAULT_VERSION,
                        help=f"TensorRT version whose operator table to use (default: {DEFAULT_VERSION})")
    parser.add_argument("--no-parser", action="store_true",
                        help="skip the real parsers (TensorRT, TensorRT-RTX) even where installed")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Lint ``args.model``, print the report; 1 if it has errors, else 0."""
    from .parser import NONE_INSTALLED, parser_verdicts
    from .rules import lint_model

    report = lint_model(args.model, args.trt)
    if not args.no_parser:
        verdicts = parser_verdicts(args.model)
        if not verdicts:
            print(f"note: {NONE_INSTALLED}", file=sys.stderr)
        for verdict in verdicts:
            report.findings.extend(verdict.findings)
        report.parser = "; ".join(verdict.note for verdict in verdicts) or None
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_table())
    return 0 if report.ok else 1
