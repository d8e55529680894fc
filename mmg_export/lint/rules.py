"""TensorRT-compatibility rules for ONNX models.

``lint_model`` loads a model (without external data), runs ONNX shape inference to learn tensor
types and shapes, and applies small composable rules: node rules see one node at a time, graph
rules see one graph (the main graph and every If/Loop/Scan body). Each rule yields ``Finding``s.
The operator table per TensorRT version is package data (``trt_ops_<version>.json``), taken from
``docs/operators.md`` of onnx/onnx-tensorrt; its ``source`` field says which commit.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from mmg_export.lint import DEFAULT_VERSION, supported_versions
from mmg_runtime.errors import UserError

TOPK_MAX_K = 3840
MAX_TENSOR_ELEMENTS = 2**31 - 1
DEFAULT_DOMAINS = ("", "ai.onnx")
DATA_DEPENDENT_OPS = ("NonZero", "Unique", "Compress")
REDUCE_OPS = (
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
    "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare",
)
# op -> (input index, input name, rule) of inputs TensorRT needs as build-time constants
CONSTANT_INPUTS = {
    "CumSum": (1, "axis", "cumsum-axis-not-constant"),
    **{op: (1, "axes", "reduce-axes-not-constant") for op in REDUCE_OPS},
}
# ops whose table types describe their output (they have no data input)
OUTPUT_TYPED_OPS = ("Constant", "ConstantOfShape", "RandomNormal", "RandomUniform")
LAYERNORM_OUTPUTS = ("Y", "Mean", "InvStdDev")
# ONNX type names as the operator table spells them (others, e.g. INT64, are spelled alike)
TYPE_NAMES = {"FLOAT": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16", "FLOAT8E4M3FN": "FP8", "FLOAT4E2M1": "FP4"}


@dataclass(frozen=True)
class Finding:
    """One problem found in a model."""

    severity: str  # "error" | "warning"
    rule: str
    node: str
    op_type: str
    message: str


@dataclass(frozen=True)
class OpSpec:
    """One row of the supported-operator table."""

    supported: bool
    types: tuple[str, ...]
    notes: str


@dataclass(frozen=True)
class OpTable:
    """Supported-operator table of one TensorRT version, with where it came from."""

    trt_version: str
    source: dict
    ops: dict[str, OpSpec]


@dataclass(frozen=True)
class TensorInfo:
    """Element type and shape of a tensor; ``dims`` is None for unknown rank, a dim None or str if dynamic."""

    elem_type: int
    dims: tuple[int | str | None, ...] | None


@dataclass(frozen=True)
class Scope:
    """What the rules know about one graph: tables, opset and tensors visible from it."""

    table: OpTable
    opset: int
    constants: dict[str, TensorProto]
    tensors: dict[str, TensorInfo]
    prefix: str = ""


@dataclass
class LintReport:
    """Findings of one lint run."""

    findings: list[Finding]
    trt_version: str
    model_path: str | None
    source: str
    parser: str | None = None
    """What the real TensorRT parser said (:mod:`mmg_export.lint.parser`), or None if not asked."""

    @property
    def errors(self) -> list[Finding]:
        """Findings that would stop the TensorRT parser or builder."""
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        """Findings worth a look that do not block a build."""
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there are no errors."""
        return not self.errors

    def summary(self) -> str:
        """One line: model, counts, TensorRT version and table source."""
        name = self.model_path or "<in-memory model>"
        parser = f"; {self.parser}" if self.parser else ""
        return (f"{name}: {_count(len(self.errors), 'error')}, {_count(len(self.warnings), 'warning')} "
                f"against TensorRT {self.trt_version} operator table (source: {self.source}){parser}")

    def format_table(self) -> str:
        """Fixed-width table of the findings followed by the summary line."""
        if not self.findings:
            return f"No findings.\n{self.summary()}"
        header = ("SEVERITY", "RULE", "OP", "NODE", "MESSAGE")
        rows = [header] + [(f.severity, f.rule, f.op_type or "-", f.node or "-", f.message) for f in self.findings]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        lines = ["  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]]) for row in rows]
        return "\n".join([*lines, "", self.summary()])

    def to_dict(self) -> dict:
        """JSON-ready form of the report."""
        return {
            "model": self.model_path, "trt_version": self.trt_version, "source": self.source,
            "parser": self.parser, "errors": len(self.errors), "warnings": len(self.warnings),
            "findings": [asdict(f) for f in self.findings],
        }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@cache
def load_table(trt_version: str) -> OpTable:
    """Packaged operator table of ``trt_version``; ValueError for a version without one."""
    versions = supported_versions()
    if trt_version not in versions:
        raise ValueError(f"trt_version={trt_version!r} is not supported; "
                         f"supported versions: {', '.join(versions)}")
    text = resources.files(__package__).joinpath(f"trt_ops_{trt_version}.json").read_text(encoding="utf-8")
    data = json.loads(text)
    ops = {name: OpSpec(row["supported"], tuple(row["types"]), row["notes"]) for name, row in data["ops"].items()}
    return OpTable(trt_version, data["source"], ops)


# --------------------------------------------------------------------------- helpers


def _type_name(elem_type: int) -> str:
    name = TensorProto.DataType.Name(elem_type)
    return TYPE_NAMES.get(name, name)


def _attr(node: onnx.NodeProto, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _input(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if len(node.input) > index else ""


def _finding(scope: Scope, node: onnx.NodeProto, severity: str, rule: str, message: str) -> Finding:
    label = node.name or (node.output[0] if node.output else "") or "<unnamed>"
    return Finding(severity, rule, scope.prefix + label, node.op_type, message)


def _constant_array(scope: Scope, name: str) -> np.ndarray | None:
    """Value of a constant tensor, None when it is stored as external data."""
    tensor = scope.constants[name]
    if tensor.data_location == TensorProto.EXTERNAL:
        return None
    return numpy_helper.to_array(tensor)


def _shape_text(dims: tuple[int | str | None, ...] | None) -> str:
    if dims is None:
        return "unknown rank"
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _info_from_value(value: onnx.ValueInfoProto) -> TensorInfo | None:
    if not value.type.HasField("tensor_type"):
        return None
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return TensorInfo(tensor_type.elem_type, None)
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim)
    return TensorInfo(tensor_type.elem_type, dims)


def _constant_node_tensor(node: onnx.NodeProto) -> TensorProto | None:
    """Value of a Constant node as a TensorProto (sparse and string values are not needed here)."""
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if attribute.name == "value":
            return value
        if attribute.name in ("value_int", "value_ints", "value_float", "value_floats"):
            return numpy_helper.from_array(np.array(value))
    return None


def _graph_tensors(graph: onnx.GraphProto) -> dict[str, TensorInfo]:
    """Types and shapes of the tensors a graph declares (inputs, outputs, value_info, initializers)."""
    tensors = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        info = _info_from_value(value)
        if info is not None:
            tensors[value.name] = info
    for tensor in graph.initializer:
        tensors[tensor.name] = TensorInfo(tensor.data_type, tuple(tensor.dims))
    return tensors


def _graph_constants(graph: onnx.GraphProto) -> dict[str, TensorProto]:
    constants = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS and node.output:
            tensor = _constant_node_tensor(node)
            if tensor is not None:
                constants[node.output[0]] = tensor
    return constants


def _child_scope(parent: Scope, graph: onnx.GraphProto, prefix: str) -> Scope:
    constants = {**parent.constants, **_graph_constants(graph)}
    tensors = {**parent.tensors, **_graph_tensors(graph)}
    return Scope(parent.table, parent.opset, constants, tensors, prefix)


# --------------------------------------------------------------------------- node rules


def check_custom_domain(node: onnx.NodeProto, scope: Scope) -> Iterator[Finding]:
    """Operators outside the default ONNX domain need a TensorRT plugin."""
    if node.domain not in DEFAULT_DOMAINS:
        yield _finding(scope, node, "error", "custom-domain",
                       f"{node.domain}::{node.op_type} is a custom operator (domain '{node.domain}'); "
                       f"the TensorRT ONNX parser cannot import it without a plugin")


def check_operator_supported(node: onnx.NodeProto, scope: Scope) -> Iterator[Finding]:
    """The operator must be listed as supported in the table of the target TensorRT version."""
    if node.domain not in DEFAULT_DOMAINS:
        return
    spec = scope.table.ops.get(node.op_type)
    version = scope.table.trt_version
    if spec is None:
        yield _finding(scope, node, "error", "unsupported-op",
                       f"{node.op_type} is not in the TensorRT {version} operator table")
    elif not spec.supported:
        notes = f" ({spec.notes})" if spec.notes else ""
        yield _finding(scope, node, "error", "unsupported-op",
                       f"{node.op_type} is listed as unsupported in the TensorRT {version} operator table{notes}")


def check_tensor_types(node: onnx.NodeProto, scope: Scope) -> Iterator[Finding]:
    """The data tensor of a supported operator must have one of the table's types."""
    spec = scope.table.ops.get(node.op_type)
    if node.domain not in DEFAULT_DOMAINS or spec is None or not spec.supported or not spec.types:
        return
    role, name = ("output", node.output[0]) if node.op_type in OUTPUT_TYPED_OPS else ("input", _input(node, 0))
    info = scope.tensors.get(name)
    if not name or info is None or info.elem_type == TensorProto.UNDEFINED:
        return
    type_name = _type_name(info.elem_type)
    if type_name == "DOUBLE":
        yield _finding(scope, node, "warning", "double-type",
                       f"{node.op_type} {role} '{name}' is DOUBLE; TensorRT casts it down to FLOAT "
                       f"(clamping to +-FLT_MAX)")
    elif type_name not in spec.types:
        yield _finding(scope, node, "error", "unsupported-type",
                       f"{node.op_type} does not support {type_name} {role} '{name}' in TensorRT "
                       f"{scope.table.trt_version} (supported: {', '.join(spec.types)})")


def check_data_dependent_shape(node: onnx.NodeProto, scope: Scope) -> Iterator[Finding]:
    """Operators whose output shape depends on data (those the table does not reject already)."""
    spec = scope.table.ops.get(node.op_type)
    if node.domain in DEFAULT_DOMAINS and node.op_type in DATA_DEPENDENT_OPS and spec and spec.supported:
        yield _finding(scope, node, "error", "data-dependent-shape",
                       f"{node.op_type} has a data-dependent output shape (needs an output allocator); "
                       f"use a fixed-size formulation instead")


def _topk_k(node: onnx.NodeProto, scope: Scope) -> tuple[bool, str, int | None]:
    """(is constant, description, value or None) of TopK's K: attribute before opset 10, input after."""
    if scope.opset < 10:
        k = _attr(node, "k")
        return True, "attribute k", None if k is None else int(k)
    name = _input(node, 1)
    if name not in scope.constants:
        return False, f"input '{name}'", None
    value = _constant_array(scope, name)
    return True, f"input '{name}'", None if value is None else int(value.reshape(-1)[0])


def check_topk_k(node: onnx.NodeProto, scope: Scope) -> Iterator[Finding]:
    """TopK's K must be a constant no larger than TensorRT's limit."""
    if node.op_type != "TopK" or node.domain not in DEFAULT_DOMAINS:
        return
    constant, where, k = _topk_k(node, scope)
    if not constant:
        yield _finding(scope, node, "warning", "topk-k-not-constant",
                       f"TopK K ({where}) is not a constant initializer; TensorRT needs K <= {TOPK_MAX_K} "
                       f"at runtime and prefers a constant K")
    elif k is not None and k > TOPK_MAX_K:
        yield _finding(scope, node, "error", "topk-k-limit",
                       f"TopK K={k} exceeds the TensorRT limit of {TOPK_MAX_K}; "
                       f"TopK within a smaller group (e.g. per frame) or rank by pairwise comparison counts")


def check_topk_sorted(node: onnx.NodeProto, scope: Scope) -> Iterator[Finding]:
    """TensorRT only implements sorted TopK (the attribute exists from opset 11)."""
    if node.op_type == "TopK" and node.domain in DEFAULT_DOMAINS and _attr(node, "sorted", 1) != 1:
        yield _finding(scope, node, "error", "topk-sorted", "TopK sorted=0 is not supported; sorted must be 1")


def check_topk_axis(node: onnx.NodeProto, scope: Scope) -> Iterator[Finding]:
    """TopK's axis must be one of the last four dimensions."""
    if node.op_type != "TopK" or node.domain not in DEFAULT_DOMAINS:
        return
    axis = int(_attr(node, "axis", -1))
    info = scope.tensors.get(_input(node, 0))
    rank = len(info.dims) if info is not None and info.dims is not None else None
    from_end = axis if axis < 0 else (axis - rank if rank is not None else None)
    if from_end is not None and from_end < -4:
        yield _finding(scope, node, "error", "topk-axis",
                       f"TopK axis={axis} of a rank-{rank if rank is not None else '?'} input is not among "
                       f"the last four dimensions")


def check_constant_inputs(node: onnx.NodeProto, scope: Scope) -> Iterator[Finding]:
    """Axes of Reduce* and CumSum must be build-time constants.

    Before opset 18 (opset 13 for ReduceSum) Reduce* axes are an attribute, which is constant by
    definition; from then on they are an optional input, checked here.
    """
    if node.domain not in DEFAULT_DOMAINS or node.op_type not in CONSTANT_INPUTS:
        return
    index, input_name, rule = CONSTANT_INPUTS[node.op_type]
    name = _input(node, index)
    if name and name not in scope.constants:
        yield _finding(scope, node, "error", rule,
                       f"{node.op_type} {input_name} '{name}' is computed at runtime; "
                       f"TensorRT needs it as an initializer or Constant")


def check_scatter_reduction(node: onnx.NodeProto, scope: Scope) -> Iterator[Finding]:
    """ScatterND supports no reduction; ScatterElements with a reduction runs as a plugin."""
    if node.domain not in DEFAULT_DOMAINS:
        return
    reduction = _attr(node, "reduction", b"none")
    reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
    if reduction == "none":
        return
    if node.op_type == "ScatterND":
        yield _finding(scope, node, "error", "scatternd-reduction",
                       f"ScatterND reduction='{reduction}' is not supported; only 'none'")
    elif node.op_type == "ScatterElements":
        yield _finding(scope, node, "warning", "scatter-elements-reduction",
                       f"ScatterElements reduction='{reduction}' runs as a TensorRT plugin, not a native layer")


def check_layernorm_outputs(node: onnx.NodeProto, scope: Scope) -> Iterator[Finding]:
    """TensorRT's LayerNormalization produces only its first output, Y."""
    if node.op_type != "LayerNormalization" or node.domain not in DEFAULT_DOMAINS:
        return
    for index, name in enumerate(node.output[1:], start=1):
        if name:
            yield _finding(scope, node, "error", "layernorm-outputs",
                           f"LayerNormalization output {LAYERNORM_OUTPUTS[index]} ('{name}') is not supported; "
                           f"only Y")


NodeRule = Callable[[onnx.NodeProto, Scope], Iterator[Finding]]
NODE_RULES: tuple[NodeRule, ...] = (
    check_custom_domain,
    check_operator_supported,
    check_tensor_types,
    check_data_dependent_shape,
    check_topk_k,
    check_topk_sorted,
    check_topk_axis,
    check_constant_inputs,
    check_scatter_reduction,
    check_layernorm_outputs,
)


# --------------------------------------------------------------------------- graph rules


def check_dynamic_io(graph: onnx.GraphProto, scope: Scope) -> Iterator[Finding]:
    """Main-graph inputs and outputs should have static shapes (each dynamic one needs a profile)."""
    if scope.prefix:
        return
    initializers = {tensor.name for tensor in graph.initializer}
    for kind, values in (("input", graph.input), ("output", graph.output)):
        for value in values:
            info = _info_from_value(value)
            if value.name in initializers or info is None:
                continue
            if info.dims is None or not all(isinstance(d, int) for d in info.dims):
                yield Finding("warning", "dynamic-shape", value.name, "",
                              f"graph {kind} '{value.name}' has dynamic shape {_shape_text(info.dims)}; "
                              f"it needs an optimisation profile (static shapes expected)")


def check_tensor_sizes(graph: onnx.GraphProto, scope: Scope) -> Iterator[Finding]:
    """Every tensor is limited to 2^31-1 elements."""
    for name, info in _graph_tensors(graph).items():
        if info.dims is None or not all(isinstance(d, int) for d in info.dims):
            continue
        elements = math.prod(info.dims)
        if elements > MAX_TENSOR_ELEMENTS:
            yield Finding("error", "tensor-too-large", scope.prefix + name, "",
                          f"tensor '{name}' {_shape_text(info.dims)} has {elements:,} elements; "
                          f"TensorRT limits every tensor to 2^31-1")


GraphRule = Callable[[onnx.GraphProto, Scope], Iterator[Finding]]
GRAPH_RULES: tuple[GraphRule, ...] = (check_dynamic_io, check_tensor_sizes)


# --------------------------------------------------------------------------- driver


def _lint_graph(graph: onnx.GraphProto, scope: Scope) -> Iterator[Finding]:
    for rule in GRAPH_RULES:
        yield from rule(graph, scope)
    for index, node in enumerate(graph.node):
        for rule in NODE_RULES:
            yield from rule(node, scope)
        for attribute in node.attribute:
            subgraphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs
            for subgraph in subgraphs:
                prefix = f"{scope.prefix}{node.name or f'{node.op_type}#{index}'}/{attribute.name}/"
                yield from _lint_graph(subgraph, _child_scope(scope, subgraph, prefix))


def _load_model(model: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """The model proto (external data not loaded) and its path; UserError for an unreadable file."""
    if isinstance(model, onnx.ModelProto):
        return model, None
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as error:  # protobuf raises several error types for non-ONNX bytes
        raise UserError(f"{path}: not a readable ONNX model ({type(error).__name__}: {error})") from error
    if proto.ir_version == 0 or not proto.HasField("graph"):
        raise UserError(f"{path}: not an ONNX model (no IR version or graph)")
    return proto, path


def _default_opset(model: onnx.ModelProto) -> int:
    for opset in model.opset_import:
        if opset.domain in DEFAULT_DOMAINS:
            return opset.version
    return onnx.defs.onnx_opset_version()


def _infer_shapes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Finding]]:
    """Model with inferred value_info, plus findings.

    A strict, type-checked inference first: a node whose input type its operator does not
    allow (say a bfloat16 Conv) makes the model invalid ONNX, an error. Then a lenient inference
    for the other rules; when even that fails, a warning that their checks are incomplete.
    """
    findings = []
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.shape_inference.InferenceError, ValueError) as error:
        findings.append(Finding("error", "invalid-onnx", "", "",
                                f"not valid ONNX (type-checked shape inference failed): {error}"))
    try:
        return onnx.shape_inference.infer_shapes(model), findings
    except (onnx.shape_inference.InferenceError, ValueError) as error:
        return model, findings + [Finding("warning", "shape-inference", "", "",
                                          f"ONNX shape inference failed, type and size checks are incomplete: {error}")]


def lint_model(model: str | os.PathLike | onnx.ModelProto, trt_version: str = DEFAULT_VERSION) -> LintReport:
    """Check an ONNX model (path or proto) against the TensorRT ``trt_version`` parser constraints."""
    table = load_table(str(trt_version))
    proto, path = _load_model(model)
    inferred, findings = _infer_shapes(proto)
    graph = inferred.graph
    scope = Scope(table, _default_opset(inferred), _graph_constants(graph), _graph_tensors(graph))
    findings += list(_lint_graph(graph, scope))
    return LintReport(findings, table.trt_version, path, table.source["summary"])
