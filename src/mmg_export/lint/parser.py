"""The real ONNX parsers as a lint check: TensorRT's and TensorRT for RTX's, wherever installed.

The operator tables say what a TensorRT release documents; a parser says what an installed release
accepts. The model is parsed into a network created with the builder's own flags (strongly typed:
:func:`network_flags`), as Polygraphy's ``inspect capability`` does by default:
``parse_from_file`` (which also reads external data) reports every error with its node and
operator, which ``supports_model_v2``'s subgraph partition does not. Each parser error becomes an
error finding (rule ``trt-parser``) that names the parser. :func:`parse_into` is also the build's
parse step (:mod:`mmg_export.builder.tensorrt`), so that lint and build read the same errors.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from mmg_runtime.tensorrt import FLAVOURS, LABELS, installed

from .rules import Finding

NONE_INSTALLED = "no real parser consulted: neither TensorRT nor TensorRT-RTX is installed here"


class ParserError(NamedTuple):
    """One error of a real parser: the node (its name, else ``#INDEX``), its operator, the parser's words."""

    node: str
    operator: str
    words: str

    def __str__(self) -> str:
        return f"node '{self.node}' ({self.operator}): {self.words}" if self.node else self.words


@dataclass(frozen=True)
class ParserVerdict:
    """What one real parser said about one model."""

    flavour: str
    version: str
    errors: list[ParserError]
    """Empty: accepted (or not parsed: :attr:`unavailable`)."""
    unavailable: str = ""
    """Why the parser could not run here ("" when it ran)."""

    @property
    def findings(self) -> list[Finding]:
        """An error finding per parser error, naming the parser; a warning where it could not run."""
        label = LABELS[self.flavour]
        if self.unavailable:
            return [Finding("warning", "trt-parser-unavailable", "", "",
                            f"{label} {self.version} is installed but {self.unavailable}")]
        return [Finding("error", "trt-parser", error.node, error.operator, f"{label} parser: {error.words}")
                for error in self.errors]

    @property
    def note(self) -> str:
        """One line, e.g. ``"TensorRT-RTX 1.7.1.116 parser: rejected the model"``."""
        said = "not consulted: no builder" if self.unavailable else "rejected the model" if self.errors else \
            "accepted the model"
        return f"{LABELS[self.flavour]} {self.version} parser: {said}"

    def rejection(self, path: str | os.PathLike[str]) -> str:
        """One line: the parser rejects the model at ``path``, with every error (node, operator, words)."""
        return (f"{path}: the {LABELS[self.flavour]} {self.version} parser rejects this ONNX model: "
                + "; ".join(map(str, self.errors)))


def network_flags(flavour: str, version: str) -> list[str]:
    """``NetworkDefinitionCreationFlag`` names for a network of ``flavour`` (TensorRT-RTX's are always
    strongly typed: none; TensorRT's: :func:`mmg_export.builder.tensorrt.network_flags`)."""
    from ..builder.tensorrt import network_flags as tensorrt_flags

    return [] if flavour == "tensorrt-rtx" else tensorrt_flags(version)


def flag_bits(trt: Any, flags: list[str]) -> int:
    """The ``create_network`` bit mask of ``NetworkDefinitionCreationFlag`` names."""
    bits = 0
    for flag in flags:
        bits |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, flag))
    return bits


def parse_into(trt: Any, network: Any, path: str | os.PathLike[str]) -> tuple[Any, list[ParserError]]:
    """Parse the ONNX file at ``path`` into ``network`` with ``trt``'s ``OnnxParser``; returns the parser
    (it owns the weights: keep it while the network is used) and its errors (none: accepted). The parser
    logs only internal errors: the caller reports the errors it returns."""
    parser = trt.OnnxParser(network, trt.Logger(trt.Logger.INTERNAL_ERROR))
    accepted = parser.parse_from_file(os.fspath(path))
    errors = [_error(parser.get_error(index)) for index in range(parser.num_errors)]
    if not accepted and not errors:
        errors.append(ParserError("", "", "rejected the model without an error"))
    return parser, errors


def parser_verdict(path: str | os.PathLike[str], flavour: str = "tensorrt") -> ParserVerdict | None:
    """What ``flavour``'s parser says of the ONNX file at ``path``; None where it is not installed."""
    trt = installed(flavour)
    if trt is None:
        return None
    version = trt.__version__
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    except (TypeError, RuntimeError) as error:  # TensorRT without a usable GPU: the factory returns nullptr
        return ParserVerdict(flavour, version, [], f"cannot create a builder here ({error})")
    network = builder.create_network(flag_bits(trt, network_flags(flavour, version)))
    return ParserVerdict(flavour, version, parse_into(trt, network, path)[1])


def parser_verdicts(path: str | os.PathLike[str]) -> list[ParserVerdict]:
    """The verdict on the ONNX file at ``path`` of every parser installed here (TensorRT, TensorRT-RTX)."""
    verdicts = (parser_verdict(path, flavour) for flavour in FLAVOURS)
    return [verdict for verdict in verdicts if verdict is not None]


def _error(error: Any) -> ParserError:
    """One ``IParserError`` (``node_name()``/``node_operator()``: TensorRT 10+; ``node()``: the node's index),
    its words on one line (a shape error spans two)."""
    node = error.node_name() or (f"#{error.node()}" if error.node() >= 0 else "")
    return ParserError(node, error.node_operator(), re.sub(r"\s*\n\s*", " ", error.desc()))
