"""``mmg-export lint MODEL.onnx | ARTIFACTS``: check an ONNX model against TensorRT's ONNX-parser
constraints, or every graph of an artifact directory against the runtime it is built for."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import DEFAULT_VERSION, supported_versions


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``lint`` subcommand."""
    parser = subparsers.add_parser(
        "lint", help="check an ONNX model against TensorRT, or an artifact directory against its runtimes",
        description="Check an ONNX model for operators, types and shapes the TensorRT ONNX parser rejects "
                    "(operator table from onnx/onnx-tensorrt docs/operators.md); where TensorRT or TensorRT for RTX "
                    "is installed, also parse it with each real parser. Given an artifact directory, check each "
                    "graph of its manifest against the runtime it is built for: ONNX Runtime graphs opened as run "
                    "opens them (the pruner also against the TensorRT tables, as the build does), the ONNX sources "
                    "of TensorRT engines (build --keep-onnx) against that TensorRT's table and parser; dynamic axes "
                    "the manifest declares are not warned of. Exit status 1 on errors.")
    parser.add_argument("model", help="ONNX model file, or an artifact directory written by mmg-export build")
    parser.add_argument("--trt", choices=supported_versions(), default=None,
                        help=f"TensorRT version whose operator table to use (default: {DEFAULT_VERSION} for a file; "
                             "for a directory the manifest's TensorRT release)")
    parser.add_argument("--no-parser", action="store_true",
                        help="skip the real parsers (TensorRT, TensorRT-RTX) even where installed")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Lint ``args.model`` (a file or an artifact directory), print the report; 1 if it has errors, else 0."""
    if Path(args.model).is_dir():
        return _run_directory(args)
    from .parser import NONE_INSTALLED, parser_verdicts
    from .rules import lint_model

    report = lint_model(args.model, args.trt or DEFAULT_VERSION)
    if not args.no_parser:
        verdicts = parser_verdicts(args.model)
        if not verdicts:
            print(f"note: {NONE_INSTALLED}", file=sys.stderr)
        for verdict in verdicts:
            report.findings.extend(verdict.findings)
        report.parser = "; ".join(verdict.note for verdict in verdicts) or None
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_table())
    return 0 if report.ok else 1


def _run_directory(args: argparse.Namespace) -> int:
    """Lint every graph of the artifact directory ``args.model``: a line per check (with its findings' table
    where it has any), the notes, a summary line."""
    from .artifacts import lint_artifacts, summary, to_dict

    directory = Path(args.model)
    manifest, reports, notes = lint_artifacts(directory, [args.trt] if args.trt else None, not args.no_parser)
    if args.json:
        print(json.dumps(to_dict(directory, manifest, reports, notes), indent=2))
    else:
        for report in reports:
            print(f"{report.format_table()}\n" if report.findings else report.summary())
        print("\n".join([*notes, summary(directory, manifest, reports)]))
    return 0 if all(report.ok for report in reports) else 1
