"""TensorRT-compatibility linter: each rule on a small hand-built ONNX model, the CLI, and a torch export."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import mmg_export.cli
from mmg_export.lint import supported_versions
from mmg_export.lint.rules import Finding, LintReport, lint_model, lint_versions, load_table
from mmg_runtime.errors import UserError

FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def value(name: str, elem_type: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def const(name: str, array) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def model(nodes, inputs, outputs, initializers=(), opset: int = 18, domains=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(domain, 1) for domain in domains)]
    return helper.make_model(graph, opset_imports=opsets)


def rules(report: LintReport) -> list[tuple[str, str]]:
    return [(f.severity, f.rule) for f in report.findings]


def topk_model(k: int, *, sorted_: int = 1, axis: int = -1, shape=(1, 6272)) -> onnx.ModelProto:
    out_shape = [*shape[:-1], k] if axis == -1 else None
    node = helper.make_node("TopK", ["x", "k"], ["values", "indices"], name="topk", axis=axis, sorted=sorted_)
    return model([node], [value("x", FLOAT, list(shape))],
                 [value("values", FLOAT, out_shape), value("indices", INT64, out_shape)], [const("k", [k])])


def clean_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("CumSum", ["r", "axis"], ["y"], name="cumsum")]
    return model(nodes, [value("x", FLOAT, [2, 8])], [value("y", FLOAT, [2, 8])], [const("axis", np.int64(1))])


# --------------------------------------------------------------------------- TopK


def test_topk_k_above_limit_is_an_error_naming_3840():
    report = lint_model(topk_model(5000))
    assert rules(report) == [("error", "topk-k-limit")]
    assert report.errors[0].node == "topk" and report.errors[0].op_type == "TopK"
    assert report.errors[0].message.startswith("TopK K=5000 exceeds the TensorRT limit of 3840")
    assert not report.ok


@pytest.mark.parametrize("version", ["10.3", "11"])
def test_topk_small_constant_k_passes(version):
    report = lint_model(topk_model(5), version)
    assert report.findings == [] and report.ok and report.trt_version == version


def test_topk_k_attribute_before_opset_10():
    node = helper.make_node("TopK", ["x"], ["values", "indices"], name="topk", k=4000)
    old = model([node], [value("x", FLOAT, [1, 6272])],
                [value("values", FLOAT, [1, 4000]), value("indices", INT64, [1, 4000])], opset=9)
    assert rules(lint_model(old)) == [("error", "topk-k-limit")]


def test_topk_runtime_k_is_a_warning():
    node = helper.make_node("TopK", ["x", "k"], ["values", "indices"], name="topk")
    runtime_k = model([node], [value("x", FLOAT, [1, 64]), value("k", INT64, [1])],
                      [value("values", FLOAT, [1, 8]), value("indices", INT64, [1, 8])])
    report = lint_model(runtime_k)
    assert rules(report) == [("warning", "topk-k-not-constant")] and report.ok
    assert "input 'k'" in report.warnings[0].message


def topk_rules(report: LintReport) -> list[tuple[str, str]]:
    """The findings but the dynamic-shape warnings of outputs whose K inference cannot know."""
    return [(severity, rule) for severity, rule in rules(report) if rule != "dynamic-shape"]


def topk_k_chain(nodes, initializers=(), shape=(1, 8000)) -> onnx.ModelProto:
    """TopK over ``x`` whose K is the tensor 'k' computed by ``nodes``."""
    node = helper.make_node("TopK", ["x", "k"], ["values", "indices"], name="topk")
    return model([*nodes, node], [value("x", FLOAT, list(shape))],
                 [value("values", FLOAT, None), value("indices", INT64, None)], initializers)


K_CHAINS = {
    "Identity(initializer)": ([helper.make_node("Identity", ["k0"], ["k"])], [const("k0", [5000])]),
    "Identity(Identity(Constant))": ([helper.make_node("Constant", [], ["k0"], value=const("c", [5000])),
                                      helper.make_node("Identity", ["k0"], ["k1"]),
                                      helper.make_node("Identity", ["k1"], ["k"])], []),
    "Cast(initializer)": ([helper.make_node("Cast", ["k0"], ["k"], to=INT64)],
                          [const("k0", np.array([5000.0], np.float32))]),
    "Mul(initializers)": ([helper.make_node("Mul", ["a", "b"], ["k"])], [const("a", [2500]), const("b", [2])]),
    "Shape sliced": ([helper.make_node("Shape", ["x"], ["k"], start=1)], []),
    "Gather(Shape) unsqueezed": ([helper.make_node("Shape", ["x"], ["s"]),
                                  helper.make_node("Gather", ["s", "one"], ["k1"]),
                                  helper.make_node("Unsqueeze", ["k1", "zero"], ["k"])],
                                 [const("one", np.int64(1)), const("zero", [0])]),
    "Size // 2": ([helper.make_node("Size", ["x"], ["n"]), helper.make_node("Div", ["n", "two"], ["k0"]),
                   helper.make_node("Reshape", ["k0", "one"], ["k"])], [const("two", np.int64(2)), const("one", [1])]),
}


@pytest.mark.parametrize("chain", K_CHAINS, ids=list(K_CHAINS))
def test_topk_k_computed_from_constants_above_the_limit_is_an_error(chain):
    nodes, initializers = K_CHAINS[chain]
    report = lint_model(topk_k_chain(nodes, initializers))
    assert topk_rules(report) == [("error", "topk-k-limit")], report.format_table()
    k = 4000 if chain == "Size // 2" else (8000 if "Shape" in chain else 5000)
    assert report.errors[0].message.startswith(f"TopK K={k} (input 'k', computed from constants and static shapes) "
                                               "exceeds the TensorRT limit of 3840")


def test_topk_k_computed_within_the_limit_or_unknown_is_a_warning():
    small = topk_k_chain([helper.make_node("Identity", ["k0"], ["k"])], [const("k0", [100])])
    assert topk_rules(lint_model(small)) == [("warning", "topk-k-not-constant")]
    dynamic = topk_k_chain([helper.make_node("Shape", ["x"], ["k"], start=1)], shape=(1, "n"))
    assert topk_rules(lint_model(dynamic)) == [("warning", "topk-k-not-constant")]


def external_model(location: str, offset: int = 0, length: int = 32) -> onnx.ModelProto:
    weight = TensorProto(name="w", data_type=FLOAT, dims=[8])
    weight.data_location = TensorProto.EXTERNAL
    for key, entry in (("location", location), ("offset", str(offset)), ("length", str(length))):
        weight.external_data.add(key=key, value=entry)
    node = helper.make_node("Add", ["x", "w"], ["y"], name="add")
    return model([node], [value("x", FLOAT, [8])], [value("y", FLOAT, [8])], [weight])


@pytest.mark.parametrize("location,problem", [
    ("/etc/passwd", "must be a path relative to the model's folder, without '..'"),
    ("../../etc/passwd", "must be a path relative to the model's folder, without '..'"),
    ("data/../../weights.bin", "must be a path relative to the model's folder, without '..'"),
    ("missing.bin", "is missing"),
    ("link.bin", "leads outside the model's folder"),
    ("short.bin", "ends at byte 32, beyond the file's 16 bytes"),
])
def test_external_data_outside_the_folder_or_missing_is_an_error(tmp_path, location, problem):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "weights.bin").write_bytes(bytes(32))
    (folder / "link.bin").symlink_to(tmp_path / "weights.bin")
    (folder / "short.bin").write_bytes(bytes(16))
    path = folder / "model.onnx"
    onnx.save(external_model(location), path)
    report = lint_model(path)
    assert rules(report) == [("error", "external-data")], report.format_table()
    assert report.errors[0].node == "w"
    assert report.errors[0].message.startswith(f"initializer 'w': external data {location!r} {problem}")


def test_external_data_inside_the_folder_passes(tmp_path):
    (tmp_path / "weights.bin").write_bytes(bytes(64))
    onnx.save(external_model("weights.bin", offset=32), tmp_path / "model.onnx")
    assert lint_model(tmp_path / "model.onnx").findings == []
    assert rules(lint_model(external_model("/etc/passwd"))) == [("error", "external-data")]  # in memory: no folder


def test_topk_unsorted_and_leading_axis_are_errors():
    assert rules(lint_model(topk_model(5, sorted_=0))) == [("error", "topk-sorted")]
    report = lint_model(topk_model(1, axis=0, shape=(2, 2, 2, 2, 2)))
    assert rules(report) == [("error", "topk-axis")]
    assert report.errors[0].message == "TopK axis=0 of a rank-5 input is not among the last four dimensions"


# --------------------------------------------------------------------------- types, unsupported ops


def cumsum_model(elem_type: int) -> onnx.ModelProto:
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], name="count")
    return model([node], [value("x", elem_type, [4, 196])], [value("y", elem_type, [4, 196])],
                 [const("axis", np.int64(1))])


def test_cumsum_on_int64_is_an_error():
    report = lint_model(cumsum_model(INT64))
    assert rules(report) == [("error", "unsupported-type")]
    assert report.errors[0].message == ("CumSum does not support INT64 input 'x' in TensorRT 10.3 "
                                        "(supported: FP32, FP16, BF16)")


@pytest.mark.parametrize("elem_type", [FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_cumsum_on_float_passes(elem_type):
    assert lint_model(cumsum_model(elem_type)).findings == []


def test_cumsum_axis_computed_at_runtime_is_an_error():
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], name="count")
    runtime_axis = model([node], [value("x", FLOAT, [4, 196]), value("axis", INT64, [])],
                         [value("y", FLOAT, [4, 196])])
    assert rules(lint_model(runtime_axis)) == [("error", "cumsum-axis-not-constant")]


def test_double_input_is_a_warning():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    double = model([node], [value("x", TensorProto.DOUBLE, [2])], [value("y", TensorProto.DOUBLE, [2])])
    assert rules(lint_model(double)) == [("warning", "double-type")]


def test_nonzero_is_a_data_dependent_shape_error():
    node = helper.make_node("NonZero", ["x"], ["y"], name="nz")
    report = lint_model(model([node], [value("x", FLOAT, [4, 4])], [value("y", INT64, [2, "n"])]))
    assert [f.rule for f in report.errors] == ["data-dependent-shape"]
    assert report.errors[0].message.startswith("NonZero has a data-dependent output shape")


@pytest.mark.parametrize("op, inputs", [("Unique", ["x"]), ("Compress", ["x", "mask"])])
def test_unique_and_compress_are_unsupported(op, inputs):
    node = helper.make_node(op, inputs, ["y"], name="n")
    inputs = [value("x", FLOAT, [4]), value("mask", BOOL, [4])]
    report = lint_model(model([node], inputs, [value("y", FLOAT, [4])]))
    assert rules(report) == [("error", "unsupported-op")]
    assert report.errors[0].message == f"{op} is listed as unsupported in the TensorRT 10.3 operator table"


def test_unknown_op_is_an_error():
    node = helper.make_node("FancyGather", ["x"], ["y"], name="fancy")
    report = lint_model(model([node], [value("x", FLOAT, [4])], [value("y", FLOAT, [4])]), "11")
    assert rules(report) == [("error", "unsupported-op")]
    assert report.errors[0].message == "FancyGather is not in the TensorRT 11 operator table"


def test_custom_domain_is_an_error():
    node = helper.make_node("BiasGelu", ["x"], ["y"], name="gelu", domain="com.microsoft")
    report = lint_model(model([node], [value("x", FLOAT, [4])], [value("y", FLOAT, [4])],
                              domains=["com.microsoft"]))
    assert rules(report) == [("error", "custom-domain")]
    assert report.errors[0].message.startswith("com.microsoft::BiasGelu is a custom operator")


def test_tables_differ_where_the_changelog_says():
    """Swish arrived in TensorRT 11.0; BlackmanWindow in 10.4 (so not in the 10.3 table)."""
    node = helper.make_node("Swish", ["x"], ["y"], name="swish")
    swish = model([node], [value("x", FLOAT, [4])], [value("y", FLOAT, [4])], opset=24)
    assert rules(lint_model(swish, "10.3")) == [("error", "unsupported-op")]
    assert lint_model(swish, "11").findings == []
    assert not load_table("10.3").ops["BlackmanWindow"].supported
    assert load_table("11").ops["BlackmanWindow"].supported


# --------------------------------------------------------------------------- scatter, reduce, layer norm


def scatternd_model(elem_type: int, **attrs) -> onnx.ModelProto:
    node = helper.make_node("ScatterND", ["data", "idx", "upd"], ["y"], name="scatter", **attrs)
    return model([node], [value("data", elem_type, [8]), value("upd", elem_type, [2])],
                 [value("y", elem_type, [8])], [const("idx", np.array([[1], [3]], dtype=np.int64))])


def test_scatternd_reduction_is_an_error():
    report = lint_model(scatternd_model(FLOAT, reduction="add"))
    assert rules(report) == [("error", "scatternd-reduction")]
    assert report.errors[0].message == "ScatterND reduction='add' is not supported; only 'none'"
    assert lint_model(scatternd_model(FLOAT, reduction="none")).findings == []


def test_scatternd_on_bool_is_an_error():
    report = lint_model(scatternd_model(BOOL))
    assert rules(report) == [("error", "unsupported-type")]
    assert "ScatterND does not support BOOL input 'data'" in report.errors[0].message


def test_scatter_elements_reduction_is_a_warning():
    node = helper.make_node("ScatterElements", ["data", "idx", "upd"], ["y"], name="s", reduction="max")
    report = lint_model(model([node], [value("data", FLOAT, [8]), value("upd", FLOAT, [2])],
                              [value("y", FLOAT, [8])], [const("idx", np.array([1, 3], dtype=np.int64))]))
    assert rules(report) == [("warning", "scatter-elements-reduction")] and report.ok


def scatter_elements_model(data: list, indices: list) -> onnx.ModelProto:
    node = helper.make_node("ScatterElements", ["data", "idx", "upd"], ["y"], name="scatter", axis=0)
    return model([node], [value("data", INT64, data), value("idx", INT64, indices), value("upd", INT64, indices)],
                 [value("y", INT64, data)])


@pytest.mark.parametrize("version", ["10.3", "11"])
def test_scatter_elements_indices_larger_than_data_is_an_error(version):
    """The pruner's first compaction: T * P = 6272 slots written into a K + 1 = 1569 buffer, which TensorRT's
    parser rejects ("Indices dimensions must be less than data dimensions! indices dimension = 6272, data
    dimension = 1569 on index 0")."""
    report = lint_model(scatter_elements_model([1569], [6272]), version)
    assert rules(report) == [("error", "scatter-elements-shape")]
    assert report.errors[0].message.startswith(
        "ScatterElements indices 'idx' [6272], updates 'upd' [6272]: indices and updates larger than data 'data' "
        "[1569] on axis 0; TensorRT's parser needs indices and updates no larger than data on every axis")


def test_scatter_elements_larger_on_another_axis_or_of_another_rank_is_an_error():
    larger = lint_model(scatter_elements_model([4, 3], [2, 5]))
    assert rules(larger) == [("error", "scatter-elements-shape")] and " on axis 1;" in larger.errors[0].message
    other_rank = lint_model(scatter_elements_model([4, 3], [6]))
    assert ("error", "scatter-elements-shape") in rules(other_rank)
    assert "differ in rank" in other_rank.errors[-1].message


@pytest.mark.parametrize("data, indices", [([6272], [6272]), ([4, 3], [2, 3]), (["n"], [8])])
def test_scatter_elements_within_data_or_of_dynamic_size_passes(data, indices):
    report = lint_model(scatter_elements_model(data, indices))
    assert report.ok and "scatter-elements-shape" not in {rule for _, rule in rules(report)}


@pytest.mark.slow
def test_pruner_scatters_fit_their_data(tmp_path):
    """The pruner compacts with a permutation of all T * P tokens, scattered into a T * P buffer."""
    pytest.importorskip("torch")
    from mmg_export.builder.export import export_pruner

    path = export_pruner(2, 16, 8, 0.25, "fp16", tmp_path / "pruner.onnx")
    assert "ScatterElements" in {node.op_type for node in onnx.load(path).graph.node}
    for version in supported_versions():
        report = lint_model(path, version)
        assert report.findings == [], report.format_table()


@pytest.mark.parametrize("op, shape_in, shape_out", [("Squeeze", [1, 3], [3]), ("Unsqueeze", [3], [1, 3])])
def test_squeeze_axes_computed_at_runtime_are_an_error(op, shape_in, shape_out):
    node = helper.make_node(op, ["x", "axes"], ["y"], name="squeeze")
    runtime = model([node], [value("x", FLOAT, shape_in), value("axes", INT64, [1])], [value("y", FLOAT, shape_out)])
    report = lint_model(runtime)
    assert rules(report) == [("error", "squeeze-axes-not-constant")]
    assert report.errors[0].message == (f"{op} axes 'axes' is computed at runtime; "
                                        "TensorRT needs it as an initializer or Constant")
    constant = model([node], [value("x", FLOAT, shape_in)], [value("y", FLOAT, shape_out)], [const("axes", [0])])
    assert lint_model(constant).findings == []


def reducemax_model(axes_constant: bool) -> onnx.ModelProto:
    node = helper.make_node("ReduceMax", ["x", "axes"], ["y"], name="rmax", keepdims=0)
    inputs = [value("x", FLOAT, [4, 196])] + ([] if axes_constant else [value("axes", INT64, [1])])
    initializers = [const("axes", [1])] if axes_constant else []
    return model([node], inputs, [value("y", FLOAT, [4])], initializers)


def test_reducemax_runtime_axes_is_an_error():
    report = lint_model(reducemax_model(axes_constant=False))
    assert rules(report) == [("error", "reduce-axes-not-constant")]
    assert report.errors[0].message == ("ReduceMax axes 'axes' is computed at runtime; "
                                        "TensorRT needs it as an initializer or Constant")
    assert lint_model(reducemax_model(axes_constant=True)).findings == []


def test_reducemax_axes_attribute_before_opset_18_passes():
    node = helper.make_node("ReduceMax", ["x"], ["y"], name="rmax", axes=[1], keepdims=0)
    assert lint_model(model([node], [value("x", FLOAT, [4, 196])], [value("y", FLOAT, [4])], opset=13)).ok


def test_layernorm_extra_outputs_are_errors():
    node = helper.make_node("LayerNormalization", ["x", "scale"], ["y", "mean"], name="ln", axis=-1)
    report = lint_model(model([node], [value("x", FLOAT, [2, 8])],
                              [value("y", FLOAT, [2, 8]), value("mean", FLOAT, [2, 1])],
                              [const("scale", np.ones(8, dtype=np.float32))]))
    assert rules(report) == [("error", "layernorm-outputs")]
    assert report.errors[0].message == "LayerNormalization output Mean ('mean') is not supported; only Y"


# --------------------------------------------------------------------------- shapes and sizes


def test_dynamic_input_dim_is_a_warning():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    report = lint_model(model([node], [value("x", FLOAT, ["batch", 8])], [value("y", FLOAT, ["batch", 8])]))
    assert rules(report) == [("warning", "dynamic-shape"), ("warning", "dynamic-shape")] and report.ok
    assert report.warnings[0].message == ("graph input 'x' has dynamic shape [batch, 8]; "
                                          "it needs an optimisation profile (static shapes expected)")


def test_huge_tensor_shape_is_an_error():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    report = lint_model(model([node], [value("x", FLOAT, [65536, 32768])], [value("y", FLOAT, [65536, 32768])]))
    assert rules(report) == [("error", "tensor-too-large")] * 2
    assert {f.node for f in report.errors} == {"x", "y"}
    assert report.errors[0].message == ("tensor 'x' [65536, 32768] has 2,147,483,648 elements; "
                                        "TensorRT limits every tensor to 2^31-1")


def test_huge_external_initializer_is_an_error_without_its_data(tmp_path):
    """External data is never read: the initializer's dims are enough."""
    weight = TensorProto(name="w", data_type=FLOAT, dims=[2**31])
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="missing.bin")
    node = helper.make_node("Add", ["x", "w"], ["y"], name="add")
    path = tmp_path / "big.onnx"
    onnx.save(model([node], [value("x", FLOAT, [1])], [value("y", FLOAT, [2**31])], [weight]), path)
    report = lint_model(path)
    assert ("error", "tensor-too-large") in rules(report)
    assert "w" in {f.node for f in report.errors}


def test_subgraphs_are_linted():
    branch = helper.make_graph([helper.make_node("NonZero", ["x"], ["nz"], name="nz")], "then",
                               [], [value("nz", INT64, [1, "n"])])
    other = helper.make_graph([helper.make_node("Shape", ["x"], ["shape"], name="shape")], "else",
                              [], [value("shape", INT64, [1])])
    node = helper.make_node("If", ["cond"], ["y"], name="if", then_branch=branch, else_branch=other)
    report = lint_model(model([node], [value("cond", BOOL, []), value("x", FLOAT, [4])],
                              [value("y", INT64, None)], opset=18))
    assert [(f.rule, f.node) for f in report.errors] == [("data-dependent-shape", "if/then_branch/nz")]


# --------------------------------------------------------------------------- report, errors, CLI


def test_report_table_and_summary():
    report = lint_model(topk_model(5000), "11")
    table = report.format_table().splitlines()
    assert table[0].split() == ["SEVERITY", "RULE", "OP", "NODE", "MESSAGE"]
    assert table[1].split()[:4] == ["error", "topk-k-limit", "TopK", "topk"]
    assert table[-1] == ("<in-memory model>: 1 error, 0 warnings against TensorRT 11 operator table "
                         "(source: onnx/onnx-tensorrt docs/operators.md@2f3fa34 (TensorRT 11.0))")


@pytest.mark.parametrize("version", ["10.3", "11"])
def test_tables_record_their_source(version):
    source = load_table(version).source
    assert source["repo"] == "onnx/onnx-tensorrt" and source["path"] == "docs/operators.md"
    assert len(source["commit"]) == 40 and source["commit"][:7] in source["summary"]


def test_lint_versions_reads_once_and_reports_as_lint_model_per_version(tmp_path):
    """RMSNormalization (opset 23) is in TensorRT 11's table, not in 10.3's: the two reports differ."""
    rms = model([helper.make_node("RMSNormalization", ["x", "scale"], ["y"], axis=-1)],
                [value("x", TensorProto.FLOAT, [2, 8])], [value("y", TensorProto.FLOAT, [2, 8])],
                [const("scale", np.ones(8, np.float32))], opset=23)
    path = tmp_path / "rms.onnx"
    onnx.save(rms, path)
    reports = lint_versions(path, ("10.3", "11"))
    assert [report.trt_version for report in reports] == ["10.3", "11"]
    assert [report.to_dict() for report in reports] == [lint_model(path, "10.3").to_dict(),
                                                        lint_model(path, "11").to_dict()]
    assert not reports[0].ok and reports[1].ok


def test_unknown_trt_version_is_a_value_error():
    with pytest.raises(ValueError, match=r"trt_version='9\.0' is not supported; supported versions: 10\.3, 11"):
        lint_model(clean_model(), "9.0")
    assert supported_versions() == ("10.3", "11")


@pytest.mark.parametrize("content, reason", [(b"not an onnx model at all", "not"), (None, "no such ONNX file")])
def test_unreadable_file_is_a_user_error_naming_it(tmp_path, content, reason):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=rf"^{path}: {reason}"):
        lint_model(path)


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``mmg-export`` with only the lint command registered and no real parser installed (a test
    of the parsers installs one); returns (exit code, stdout, stderr)."""
    import sys

    monkeypatch.setattr(mmg_export.cli, "COMMANDS", {"lint": "mmg_export.lint.cli"})
    for module in ("tensorrt", "tensorrt_rtx"):
        monkeypatch.setitem(sys.modules, module, None)

    def run(*argv: str) -> tuple[int, str, str]:
        code = mmg_export.cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_cli_clean_model_exits_0(cli, tmp_path):
    path = tmp_path / "clean.onnx"
    onnx.save(clean_model(), path)
    code, out, _ = cli("lint", str(path), "--trt", "11")
    assert code == 0
    assert out.splitlines() == ["No findings.",
                                f"{path}: 0 errors, 0 warnings against TensorRT 11 operator table "
                                f"(source: onnx/onnx-tensorrt docs/operators.md@2f3fa34 (TensorRT 11.0))"]


def test_cli_errors_exit_1(cli, tmp_path):
    path = tmp_path / "topk.onnx"
    onnx.save(topk_model(5000), path)
    code, out, _ = cli("lint", str(path))
    assert code == 1
    assert "topk-k-limit" in out and "1 error, 0 warnings against TensorRT 10.3" in out


def test_cli_json(cli, tmp_path):
    path = tmp_path / "cumsum.onnx"
    onnx.save(cumsum_model(INT64), path)
    code, out, _ = cli("lint", str(path), "--json")
    data = json.loads(out)
    assert code == 1 and data["errors"] == 1 and data["trt_version"] == "10.3"
    assert data["findings"][0] | {"message": ""} == {"severity": "error", "rule": "unsupported-type",
                                                    "node": "count", "op_type": "CumSum", "message": ""}


def test_cli_unknown_trt_version(cli, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli("lint", str(tmp_path / "m.onnx"), "--trt", "9.0")
    assert exit_info.value.code == 2


def test_cli_non_onnx_file_names_it(cli, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    code, out, err = cli("lint", str(path))
    assert code == 1 and out == ""
    assert err.startswith(f"mmg-export lint: error: {path}: not ")


# --------------------------------------------------------------------------- real torch export


@pytest.fixture(scope="module")
def torch_model_path(tmp_path_factory) -> Path:
    """Linear + ReLU + TopK(k=3) over the last dim, exported by torch.onnx (dynamo exporter)."""
    torch = pytest.importorskip("torch")

    class Scorer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 16)

        def forward(self, x):
            return torch.topk(torch.relu(self.fc(x)), k=3, dim=-1).values

    path = tmp_path_factory.mktemp("torch") / "scorer.onnx"
    torch.onnx.export(Scorer().eval(), (torch.randn(2, 8),), str(path))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("version", ["10.3", "11"])
def test_torch_export_passes(torch_model_path, version):
    report = lint_model(torch_model_path, version)
    assert {node.op_type for node in onnx.load(torch_model_path).graph.node} >= {"TopK", "Relu"}
    assert report.findings == [] and report.ok, report.format_table()


def test_invalid_onnx_types_are_an_error() -> None:
    """A bfloat16 Conv is not valid ONNX (Conv has no bf16 type): the strict type check says so."""
    x = helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [1, 3, 8, 8])
    w = helper.make_tensor_value_info("w", TensorProto.BFLOAT16, [4, 3, 2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [1, 4, 4, 4])
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2], name="conv")
    model = helper.make_model(helper.make_graph([node], "g", [x, w], [y]), opset_imports=[helper.make_opsetid("", 18)])
    report = lint_model(model, "11")
    assert not report.ok
    assert [f.rule for f in report.errors][0] == "invalid-onnx"
    assert "bfloat16" in report.errors[0].message


# --------------------------------------------------------------------------- the real TensorRT parser


def test_parser_verdict_of_the_tensorrt_parser(monkeypatch, tmp_path):
    """Each IParserError becomes an error naming its node and operator; the network is the builder's."""
    import sys

    import trt_standin
    from mmg_export.lint.parser import parser_verdict

    trt = trt_standin.module()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    trt.__version__ = "10.3.0.30"
    trt_standin.STATE.reset(trt_standin.Scenario(parse_errors=[("fancy", "FancyGather", "No importer registered")]))
    path = tmp_path / "m.onnx"
    verdict = parser_verdict(path)
    assert verdict.findings == [
        Finding("error", "trt-parser", "fancy", "FancyGather", "TensorRT parser: No importer registered")]
    assert verdict.note == "TensorRT 10.3.0.30 parser: rejected the model"
    assert trt_standin.STATE.calls == ["Builder", "create_network(2)", "OnnxParser", f"parse_from_file({path})"]
    trt_standin.STATE.reset(trt_standin.Scenario())
    verdict = parser_verdict(path)
    assert (verdict.findings, verdict.note) == ([], "TensorRT 10.3.0.30 parser: accepted the model")
    trt_standin.STATE.reset(trt_standin.Scenario(gpu=False))
    verdict = parser_verdict(path)
    assert [f.rule for f in verdict.findings] == ["trt-parser-unavailable"]
    assert verdict.note.endswith("not consulted: no builder")


def test_cli_reports_parser_errors(cli, monkeypatch, tmp_path):
    import sys

    import trt_standin

    trt = trt_standin.module()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    trt.__version__ = "11.4.1"
    trt_standin.STATE.reset(trt_standin.Scenario(parse_errors=[("relu", "Relu", "made-up failure")]))
    path = tmp_path / "clean.onnx"
    onnx.save(clean_model(), path)
    code, out, err = cli("lint", str(path), "--trt", "11")
    assert code == 1 and err == ""
    assert "trt-parser" in out and "made-up failure" in out
    assert out.splitlines()[-1].endswith("; TensorRT 11.4.1 parser: rejected the model")
    assert cli("lint", str(path), "--trt", "11", "--no-parser")[0] == 0


def test_cli_says_when_the_parser_is_absent(cli, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    path = tmp_path / "clean.onnx"
    onnx.save(clean_model(), path)
    assert cli("lint", str(path))[2] == ("note: no real parser consulted: neither TensorRT nor TensorRT-RTX is "
                                         "installed here\n")


def test_real_parser_accepts_a_clean_model_and_names_a_custom_op(tmp_path):
    pytest.importorskip("tensorrt", reason="needs TensorRT, not installable in this workplace")
    from mmg_export.lint.parser import parser_verdict

    clean, custom = tmp_path / "clean.onnx", tmp_path / "custom.onnx"
    onnx.save(clean_model(), clean)
    node = helper.make_node("BiasGelu", ["x"], ["y"], name="gelu", domain="com.example")
    onnx.save(model([node], [value("x", FLOAT, [4])], [value("y", FLOAT, [4])], domains=["com.example"]), custom)
    assert parser_verdict(clean).findings == []
    findings = parser_verdict(custom).findings
    assert findings and findings[0].rule == "trt-parser" and findings[0].node == "gelu"


# --------------------------------------------------------------------------- artifact directories


def test_dimensions_the_design_declares_dynamic_are_not_warned_of():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    dynamic = model([node], [value("x", FLOAT, ["batch", 8])], [value("y", FLOAT, ["batch", 8])])
    declared = lint_versions(dynamic, ("11",), {"x": ("frames", 8), "y": ("frames", 8)})[0]
    assert declared.findings == []
    static_declared = lint_versions(dynamic, ("11",), {"x": (2, 8)})[0]
    assert rules(static_declared) == [("warning", "dynamic-shape"), ("warning", "dynamic-shape")]


FRAMES, TOKENS, HIDDEN, SIDE, KEEP = 2, 4, 8, 4, 2
"""A hand-made artifact geometry: 2 frames of 4 tokens of width 8, 4x4 images, 25% kept (K = 2)."""
UINT8 = TensorProto.UINT8


def preprocess_graph() -> onnx.ModelProto:
    """uint8 frames (frames, height, width, 3) -> Transpose -> uint8 Resize to 4x4 -> float pixel_values: ONNX
    Runtime runs it, TensorRT's table has no uint8 Transpose (the quickstart's preprocess.onnx, in small)."""
    nodes = [helper.make_node("Transpose", ["frames"], ["planar"], name="planar", perm=[0, 3, 1, 2]),
             helper.make_node("Shape", ["planar"], ["leading"], name="leading", end=2),
             helper.make_node("Concat", ["leading", "side"], ["sizes"], name="sizes", axis=0),
             helper.make_node("Resize", ["planar", "", "", "sizes"], ["small"], name="resize", mode="linear"),
             helper.make_node("Cast", ["small"], ["pixel_values"], name="cast", to=FLOAT)]
    return model(nodes, [value("frames", UINT8, ["frames", "height", "width", 3])],
                 [value("pixel_values", FLOAT, ["frames", 3, SIDE, SIDE])], [const("side", np.int64([SIDE, SIDE]))])


def encoder_graph() -> onnx.ModelProto:
    """pixel_values (frames, 3, 4, 4) -> video_tokens (frames, 4, 8): channel mean, rows as tokens, twice."""
    nodes = [helper.make_node("ReduceMean", ["pixel_values", "channel"], ["mean"], name="mean", keepdims=0),
             helper.make_node("Concat", ["mean", "mean"], ["video_tokens"], name="concat", axis=-1)]
    return model(nodes, [value("pixel_values", FLOAT, ["frames", 3, SIDE, SIDE])],
                 [value("video_tokens", FLOAT, ["frames", TOKENS, HIDDEN])], [const("channel", np.int64([1]))])


def pruner_graph(int64_cumsum: bool = False) -> onnx.ModelProto:
    """video_tokens (2, 4, 8) -> the first K + 1 rows as video_embeds, kept_indices (K,); ``int64_cumsum``
    computes the indices with a CumSum over int64, which TensorRT's table does not support."""
    nodes = [helper.make_node("Reshape", ["video_tokens", "rows"], ["flat"], name="flat"),
             helper.make_node("Slice", ["flat", "start", "stop"], ["video_embeds"], name="first")]
    initializers = [const("rows", np.int64([FRAMES * TOKENS, HIDDEN])), const("start", np.int64([0])),
                    const("stop", np.int64([KEEP + 1]))]
    if int64_cumsum:
        nodes.append(helper.make_node("CumSum", ["zero_based", "axis"], ["kept_indices"], name="count"))
        initializers += [const("zero_based", np.int64([0, 1])), const("axis", np.int64(0))]
    else:
        nodes.append(helper.make_node("Identity", ["indices"], ["kept_indices"], name="indices"))
        initializers.append(const("indices", np.int64([0, 1])))
    return model(nodes, [value("video_tokens", FLOAT, [FRAMES, TOKENS, HIDDEN])],
                 [value("video_embeds", FLOAT, [KEEP + 1, HIDDEN]), value("kept_indices", INT64, [KEEP])],
                 initializers)


def graph_io(graph: onnx.ModelProto):
    """The manifest's TensorSpecs of a graph's (inputs, outputs): a name for each dynamic dimension."""
    from mmg_runtime.manifest import TensorSpec

    dtypes = {FLOAT: "float32", UINT8: "uint8", INT64: "int64"}

    def specs(values):
        return {v.name: TensorSpec(tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim),
                                   dtypes[v.type.tensor_type.elem_type]) for v in values}

    return specs(graph.graph.input), specs(graph.graph.output)


def artifact_dir(root: Path, backend: str, graphs: dict[str, onnx.ModelProto], kept_onnx=("encoder", "pruner"),
                 **fields) -> Path:
    """A hand-made artifact directory of ``backend``: ONNX Runtime's holds the graphs; TensorRT's holds
    stand-in engines and, in onnx/, the sources of ``kept_onnx``. Returns the directory."""
    from mmg_runtime.manifest import Component, Manifest, write_manifest

    root.mkdir()
    components = {}
    for name, graph in graphs.items():
        file = f"{name}.onnx" if backend == "onnxruntime" else f"{name}.engine"
        if backend == "onnxruntime":
            onnx.save(graph, root / file)
        else:
            (root / file).write_bytes(b"engine")
            if name in kept_onnx:
                (root / "onnx").mkdir(exist_ok=True)
                onnx.save(graph, root / "onnx" / f"{name}.onnx")
        components[name] = Component(file, "0" * 64, *graph_io(graph))
    write_manifest(root, Manifest(tool_version="0.1.0", backend=backend, precision="fp32", frames=FRAMES,
                                  tokens_per_frame=TOKENS, hidden_size=HIDDEN, ratio=0.25, keep=KEEP,
                                  components=components, extra={"image_size": SIDE, **fields.pop("extra", {})},
                                  **fields))
    return root


TABLE_SOURCES = {version: load_table(version).source["summary"] for version in supported_versions()}


def test_lint_of_an_onnxruntime_directory_opens_each_graph_as_run_does(cli, tmp_path):
    """preprocess' uint8 Transpose fails TensorRT's table, but the directory runs it under ONNX Runtime: it
    passes; the pruner is also linted against both TensorRT tables, as the build does."""
    import onnxruntime

    directory = artifact_dir(tmp_path / "ort", "onnxruntime", {"preprocess": preprocess_graph(),
                             "encoder": encoder_graph(), "pruner": pruner_graph()}, target="cpu",
                             extra={"providers": [["CPUExecutionProvider", {}]]})
    assert not lint_model(directory / "preprocess.onnx").ok
    code, out, err = cli("lint", str(directory))
    ort = f"under ONNX Runtime {onnxruntime.__version__} on CPUExecutionProvider"
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{directory}/preprocess.onnx: 0 errors, 0 warnings {ort}",
        f"{directory}/encoder.onnx: 0 errors, 0 warnings {ort}",
        f"{directory}/pruner.onnx: 0 errors, 0 warnings {ort}",
        f"{directory}/pruner.onnx: 0 errors, 0 warnings against TensorRT 10.3 operator table (source: {TABLE_SOURCES['10.3']})",
        f"{directory}/pruner.onnx: 0 errors, 0 warnings against TensorRT 11 operator table (source: {TABLE_SOURCES['11']})",
        f"{directory}: onnxruntime artifacts for target cpu: 3 graphs, 5 checks, 0 errors, 0 warnings"]


def test_lint_of_an_onnxruntime_directory_names_what_onnxruntime_refuses(cli, tmp_path):
    """A graph whose I/O is not the manifest's fails as run would fail to open it."""
    directory = artifact_dir(tmp_path / "ort", "onnxruntime", {"encoder": encoder_graph(), "pruner": pruner_graph()},
                             target="cpu", extra={"providers": [["CUDAExecutionProvider", {}]]})
    onnx.save(preprocess_graph(), directory / "encoder.onnx")  # another graph under the encoder's name
    code, out, _ = cli("lint", str(directory), "--json")
    data = json.loads(out)
    assert code == 1 and (data["errors"], data["warnings"]) == (1, 2)
    encoder = data["checks"][0]
    assert [(f["severity"], f["rule"]) for f in encoder["findings"]] == [
        ("warning", "onnxruntime-provider"), ("error", "onnxruntime")]
    assert encoder["findings"][0]["message"].startswith("CUDAExecutionProvider is not in this onnxruntime (it has ")
    assert encoder["findings"][0]["message"].endswith("): checked on CPUExecutionProvider only")
    assert encoder["findings"][1]["message"] == (
        f"{directory}/encoder.onnx: inputs are ['frames'], the manifest says ['pixel_values']; "
        f"rebuild with mmg-export build")


def test_lint_of_a_tensorrt_directory_catches_a_tensorrt_fault(cli, tmp_path):
    """The kept ONNX sources are linted against the table of the manifest's TensorRT release (10.3): the planted
    int64 CumSum is an error; the encoder's dynamic frames axis, which the manifest declares, is no warning."""
    directory = artifact_dir(tmp_path / "trt", "tensorrt", {"preprocess": preprocess_graph(),
                             "encoder": encoder_graph(), "pruner": pruner_graph(int64_cumsum=True)},
                             target="orin-agx", versions={"tensorrt": "10.3.0.30"},
                             device={"name": "Orin", "compute_capability": "8.7"})
    code, out, err = cli("lint", str(directory))
    lines = out.splitlines()
    against = f"against TensorRT 10.3 operator table (source: {TABLE_SOURCES['10.3']}); TensorRT parser: not installed here"
    assert (code, err) == (1, "")
    assert lines[0] == f"{directory}/onnx/encoder.onnx: 0 errors, 0 warnings {against}"
    assert lines[2].split()[:4] == ["error", "unsupported-type", "CumSum", "count"]
    assert lines[2].endswith("CumSum does not support INT64 input 'zero_based' in TensorRT 10.3 (supported: FP32, FP16, BF16)")
    assert lines[3:] == [
        "", f"{directory}/onnx/pruner.onnx: 1 error, 0 warnings {against}", "",
        ("preprocess.engine: a TensorRT engine whose ONNX source was not kept (mmg-export build --keep-onnx keeps "
         "it in onnx/): nothing to lint"),
        f"{directory}: tensorrt artifacts for target orin-agx: 2 graphs, 2 checks, 1 error, 0 warnings"]
    assert cli("lint", str(directory / "onnx" / "encoder.onnx"), "--no-parser")[1].splitlines()[1].split()[:2] == [
        "warning", "dynamic-shape"]  # the file alone has no manifest to declare its dynamic axis


def test_lint_of_a_tensorrt_rtx_directory_asks_its_real_parser(tmp_path, capsys):
    """TensorRT-RTX (installed here): its real parser reads the kept sources and names the planted custom op."""
    pytest.importorskip("tensorrt_rtx", reason="needs TensorRT-RTX: pip install 'mmg-export[tensorrt-rtx]'")
    custom = encoder_graph()
    custom.graph.node.append(helper.make_node("BiasGelu", ["video_tokens"], ["gelu"], name="gelu", domain="com.example"))
    custom.opset_import.append(helper.make_opsetid("com.example", 1))
    directory = artifact_dir(tmp_path / "rtx", "tensorrt-rtx", {"encoder": custom, "pruner": pruner_graph()},
                             target="rtx-portable", device={"compute_capabilities": "8.6"})
    assert mmg_export.cli.main(["lint", str(directory)]) == 1
    out = capsys.readouterr().out
    assert {tuple(line.split()[:2]) for line in out.splitlines() if line.startswith("error")} == {
        ("error", "custom-domain"), ("error", "trt-parser")}
    assert "TensorRT-RTX parser: " in out and out.count("TensorRT-RTX 1.") == 2  # each graph's last table
    assert out.splitlines()[-1] == (f"{directory}: tensorrt-rtx artifacts for target rtx-portable: 2 graphs, 4 checks, "
                                    f"4 errors, 0 warnings")


def test_lint_of_a_directory_without_a_manifest_says_so_in_one_line(cli, tmp_path):
    code, out, err = cli("lint", str(tmp_path))
    assert (code, out) == (1, "")
    assert err == (f"mmg-export lint: error: {tmp_path}: a directory without manifest.json; expected an ONNX file "
                   f"or an artifact directory written by mmg-export build\n")


def test_lint_passes_on_the_built_onnxruntime_artifacts(cli, artifacts):
    """The quickstart's own artifacts: preprocess (uint8 Resize) and encoder (Attention) under ONNX Runtime."""
    code, out, _ = cli("lint", str(artifacts), "--no-parser")
    assert code == 0, out
    assert out.splitlines()[-1] == f"{artifacts}: onnxruntime artifacts for target cpu: 3 graphs, 5 checks, 0 errors, 0 warnings"
