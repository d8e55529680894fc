"""The TensorRT ONNX parser itself as a lint check, where TensorRT is installed.

The operator tables say what a TensorRT release documents; the parser says what this machine's
TensorRT accepts. The model is parsed into a network created with the builder's own flags
(strongly typed, :func:`mmg_export.builder.tensorrt.network_flags`), as Polygraphy's
``inspect capability`` does by default: ``parse_from_file`` (which also reads external data)
reports every error with its node and operator, which ``supports_model_v2``'s subgraph
partition does not. Each parser error becomes an error finding (rule ``trt-parser``).
"""
from __future__ import annotations

import os
from typing import Any

from mmg_export.lint.rules import Finding

NOT_INSTALLED = "TensorRT parser not consulted: TensorRT is not installed here"


def _tensorrt() -> Any | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt


def parser_findings(path: str | os.PathLike[str]) -> tuple[list[Finding], str] | None:
    """(findings, one line saying what the parser did) for the ONNX file at ``path``; None without TensorRT."""
    from mmg_export.builder.tensorrt import network_flags

    trt = _tensorrt()
    if trt is None:
        return None
    version = trt.__version__
    logger = trt.Logger(trt.Logger.ERROR)
    try:
        builder = trt.Builder(logger)
    except (TypeError, RuntimeError) as error:  # no usable GPU: the factory returns nullptr
        return [Finding("warning", "trt-parser-unavailable", "", "",
                        f"TensorRT {version} is installed but cannot create a builder here ({error})")], \
            f"TensorRT {version} parser not consulted: no builder"
    flags = 0
    for flag in network_flags(version):
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, flag))
    parser = trt.OnnxParser(builder.create_network(flags), logger)
    accepted = parser.parse_from_file(os.fspath(path))
    findings = [_finding(parser.get_error(index)) for index in range(parser.num_errors)]
    if not accepted and not findings:
        findings.append(Finding("error", "trt-parser", "", "", "the parser rejected the model without an error"))
    return findings, f"TensorRT {version} parser: {'accepted' if accepted and not findings else 'rejected'} the model"


def _finding(error: Any) -> Finding:
    """An error finding from one ``IParserError`` (``node_name()``/``node_operator()``: TensorRT 10+)."""
    return Finding("error", "trt-parser", error.node_name(), error.node_operator(), f"TensorRT parser: {error.desc()}")
