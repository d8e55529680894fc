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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx.reference import ReferenceEvaluator

from mmg_runtime.errors import UserError

from . import DEFAULT_VERSION, supported_versions

TOPK_MAX_K = 3840
FOLD_DEPTH, FOLD_MAX_ELEMENTS = 32, 64  # constant folding for TopK's K: a short chain of small tensors
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
    **{op: (1, "axes", "squeeze-axes-not-constant") for op in ("Squeeze", "Unsqueeze")},
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
    producers: dict[str, onnx.NodeProto]
    """Node that computes each tensor (from this graph and the graphs around it)."""
    model_dir: str | None
    """Folder of the model file (external data must stay in it); None for an in-memory model."""
    prefix: str = ""
    declared: Mapping[str, tuple[int | str, ...]] = field(default_factory=dict)
    """Shapes of the main graph's inputs and outputs as the design declares them (an artifact's manifest):
    a dimension given as a name is meant to be dynamic."""


@dataclass
class LintReport:
    """Findings of one lint run: against a TensorRT operator table (``runtime`` "tensorrt"), or of a graph
    opened by ONNX Runtime (``runtime`` "onnxruntime": ``trt_version`` None, ``source`` says which release
    and providers)."""

    findings: list[Finding]
    trt_version: str | None
    model_path: str | None
    source: str
    parser: str | None = None
    """What the real TensorRT parser said (:mod:`mmg_export.lint.parser`), or None if not asked."""
    runtime: str = "tensorrt"

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
        """One line: model, counts, what it was checked against (TensorRT version and table source, or
        the ONNX Runtime that opened it)."""
        name = self.model_path or "<in-memory model>"
        parser = f"; {self.parser}" if self.parser else ""
        against = (f"under {self.source}" if self.runtime == "onnxruntime" else
                   f"against TensorRT {self.trt_version} operator table (source: {self.source})")
        return f"{name}: {count(len(self.errors), 'error')}, {count(len(self.warnings), 'warning')} {against}{parser}"

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
            "model": self.model_path, "runtime": self.runtime, "trt_version": self.trt_version, "source": self.source,
            "parser": self.parser, "errors": len(self.errors), "warnings": len(self.warnings),
            "findings": [asdict(f) for f in self.findings],
        }


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless one: "1 error", "2 errors"."""
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


def _graph_producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in graph.node for output in node.output if output}


def _child_scope(parent: Scope, graph: onnx.GraphProto, prefix: str) -> Scope:
    constants = {**parent.constants, **_graph_constants(graph)}
    tensors = {**parent.tensors, **_graph_tensors(graph)}
    producers = {**parent.producers, **_graph_producers(graph)}
    return Scope(parent.table, parent.opset, constants, tensors, producers, parent.model_dir, prefix, parent.declared)


def _folded(scope: Scope, name: str, depth: int = 0) -> np.ndarray | None:
    """Value of tensor ``name`` when it follows from constants and static shapes alone (through
    Identity, Cast, Shape, Gather, Concat, arithmetic, ...), else None. Small tensors only."""
    if name in scope.constants:
        return _constant_array(scope, name)
    node = scope.producers.get(name)
    if node is None or depth > FOLD_DEPTH or node.domain not in DEFAULT_DOMAINS or node.op_type.startswith("Random"):
        return None
    if node.op_type in ("Shape", "Size"):
        info = scope.tensors.get(_input(node, 0))
        if info is None or info.dims is None or not all(isinstance(d, int) for d in info.dims):
            return None
        dims = np.array(info.dims, dtype=np.int64)
        if node.op_type == "Size":
            return np.array(dims.prod(), dtype=np.int64)
        return dims[_attr(node, "start", 0):_attr(node, "end", len(dims))]
    inputs = {input_name: _folded(scope, input_name, depth + 1) for input_name in node.input if input_name}
    if any(value is None or value.size > FOLD_MAX_ELEMENTS for value in inputs.values()):
        return None
    try:
        outputs = ReferenceEvaluator(node, opsets={"": scope.opset}).run(None, inputs)
    except Exception:  # an operator the reference evaluator lacks, or invalid constants: not foldable
        return None
    return np.asarray(outputs[list(node.output).index(name)])


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
    """(is constant, description, value or None) of TopK's K: attribute before opset 10, input after.

    A K computed from constants and static shapes (Identity, Cast, Shape, ...) is not constant
    for TensorRT's parser but its value is known: it is folded here so that the limit applies.
    """
    if scope.opset < 10:
        k = _attr(node, "k")
        return True, "attribute k", None if k is None else int(k)
    name = _input(node, 1)
    if name in scope.constants:
        value = _constant_array(scope, name)
        return True, f"input '{name}'", None if value is None else int(value.reshape(-1)[0])
    value = _folded(scope, name)
    where = f"input '{name}'" + ("" if value is None else ", computed from constants and static shapes")
    return False, where, None if value is None or value.size != 1 else int(value.reshape(-1)[0])


def check_topk_k(node: onnx.NodeProto, scope: Scope) -> Iterator[Finding]:
    """TopK's K must be no larger than TensorRT's limit, and preferably a constant."""
    if node.op_type != "TopK" or node.domain not in DEFAULT_DOMAINS:
        return
    constant, where, k = _topk_k(node, scope)
    if k is not None and k > TOPK_MAX_K:
        computed = "" if constant else f" ({where})"
        yield _finding(scope, node, "error", "topk-k-limit",
                       f"TopK K={k}{computed} exceeds the TensorRT limit of {TOPK_MAX_K}; "
                       f"TopK within a smaller group (e.g. per frame) or rank by pairwise comparison counts")
    elif not constant:
        yield _finding(scope, node, "warning", "topk-k-not-constant",
                       f"TopK K ({where}) is not a constant initializer; TensorRT needs K <= {TOPK_MAX_K} "
                       f"at runtime and prefers a constant K")


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
    """Axes of Reduce*, CumSum, Squeeze and Unsqueeze must be build-time constants.

    Before opset 18 (opset 13 for ReduceSum, Squeeze and Unsqueeze) their axes are an attribute,
    which is constant by definition; from then on they are an optional input, checked here.
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


def check_scatter_elements_shape(node: onnx.NodeProto, scope: Scope) -> Iterator[Finding]:
    """ScatterElements' indices and updates must have data's rank and be no larger than data on any
    static axis: TensorRT's importer asserts it (``addScatterLayer``), although ONNX lets indices repeat
    positions, so that N indices may write into fewer than N slots."""
    if node.op_type != "ScatterElements" or node.domain not in DEFAULT_DOMAINS:
        return
    names = dict(zip(("data", "indices", "updates"), node.input))
    infos = {role: scope.tensors.get(name) for role, name in names.items()}
    if len(infos) < 3 or any(info is None or info.dims is None for info in infos.values()):
        return
    data = infos.pop("data").dims
    shapes = ", ".join(f"{role} '{names[role]}' {_shape_text(info.dims)}" for role, info in infos.items())
    if any(len(info.dims) != len(data) for info in infos.values()):
        yield _finding(scope, node, "error", "scatter-elements-shape",
                       f"ScatterElements {shapes} and data {_shape_text(data)} differ in rank; TensorRT needs one rank")
        return
    for axis, limit in enumerate(data):
        larger = [role for role, info in infos.items()
                  if isinstance(info.dims[axis], int) and isinstance(limit, int) and info.dims[axis] > limit]
        if larger:
            yield _finding(scope, node, "error", "scatter-elements-shape",
                           f"ScatterElements {shapes}: {' and '.join(larger)} larger than data '{names['data']}' "
                           f"{_shape_text(data)} on axis {axis}; TensorRT's parser needs indices and updates no larger "
                           f"than data on every axis (scatter into a buffer as large as the indices, then slice)")


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
    check_scatter_elements_shape,
    check_layernorm_outputs,
)


# --------------------------------------------------------------------------- graph rules


def check_dynamic_io(graph: onnx.GraphProto, scope: Scope) -> Iterator[Finding]:
    """Main-graph inputs and outputs should have static shapes (each dynamic one needs a profile), but
    for the dimensions the design declares dynamic (:attr:`Scope.declared`)."""
    if scope.prefix:
        return
    initializers = {tensor.name for tensor in graph.initializer}
    for kind, values in (("input", graph.input), ("output", graph.output)):
        for value in values:
            info = _info_from_value(value)
            if value.name in initializers or info is None:
                continue
            if not _static_or_declared(info.dims, scope.declared.get(value.name)):
                yield Finding("warning", "dynamic-shape", value.name, "",
                              f"graph {kind} '{value.name}' has dynamic shape {_shape_text(info.dims)}; "
                              f"it needs an optimisation profile (static shapes expected)")


def _static_or_declared(dims: tuple[int | str | None, ...] | None, declared: tuple[int | str, ...] | None) -> bool:
    """Every dimension is static, or dynamic where ``declared`` names it (a string)."""
    if dims is None:
        return False
    if declared is None or len(declared) != len(dims):
        return all(isinstance(d, int) for d in dims)
    return all(isinstance(d, int) or isinstance(want, str) for d, want in zip(dims, declared, strict=True))


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


def check_external_data(graph: onnx.GraphProto, scope: Scope) -> Iterator[Finding]:
    """Initializers stored as external data must name a file inside the model's folder, present and
    long enough: an absolute path, ``../`` or a link out would make the parser read any file."""
    for tensor in graph.initializer:
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        problem = _external_data_problem(entries, scope.model_dir)
        if problem:
            yield Finding("error", "external-data", scope.prefix + tensor.name, "",
                          f"initializer '{tensor.name}': external data {entries.get('location', '')!r} {problem}")


def _external_data_problem(entries: dict[str, str], model_dir: str | None) -> str:
    location = entries.get("location", "")
    if not location:
        return "names no file"
    if os.path.isabs(location) or ".." in location.replace("\\", "/").split("/"):
        return "must be a path relative to the model's folder, without '..'"
    if model_dir is None:
        return ""
    folder = os.path.realpath(model_dir)
    path = os.path.realpath(os.path.join(folder, location))
    if os.path.commonpath([folder, path]) != folder:
        return f"leads outside the model's folder (to {path})"
    if not os.path.isfile(path):
        return "is missing"
    end = int(entries.get("offset", 0) or 0) + int(entries.get("length", 0) or 0)
    if end > os.path.getsize(path):
        return f"ends at byte {end}, beyond the file's {os.path.getsize(path)} bytes"
    return ""


GraphRule = Callable[[onnx.GraphProto, Scope], Iterator[Finding]]
GRAPH_RULES: tuple[GraphRule, ...] = (check_dynamic_io, check_tensor_sizes, check_external_data)


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
    return lint_versions(model, (trt_version,))[0]


def lint_versions(model: str | os.PathLike | onnx.ModelProto, trt_versions: Sequence[str],
                  declared: Mapping[str, tuple[int | str, ...]] | None = None) -> list[LintReport]:
    """:func:`lint_model` for each of ``trt_versions``, reading the model and inferring its shapes once
    (at 7B geometry the encoder's two shape inferences take ~10 s). ``declared``: the I/O shapes the design
    declares (tensor -> shape, a name for each dynamic dimension), whose dynamic dimensions are not warned of."""
    tables = [load_table(str(version)) for version in trt_versions]
    proto, path = _load_model(model)
    inferred, findings = _infer_shapes(proto)
    graph = inferred.graph
    constants, tensors, producers = _graph_constants(graph), _graph_tensors(graph), _graph_producers(graph)
    model_dir = None if path is None else os.path.dirname(os.path.abspath(path))
    reports = []
    for table in tables:
        scope = Scope(table, _default_opset(inferred), constants, tensors, producers, model_dir, "", declared or {})
        reports.append(LintReport(findings + list(_lint_graph(graph, scope)), table.trt_version, path,
                                  table.source["summary"]))
    return reports
