"""TensorRT for RTX, the real parser and builder, ahead of time on this CPU (skipped where it is absent).

Polygraphy binds its TensorRT loaders to one module per process, when they are first imported
(:func:`mmg_runtime.tensorrt.use_in_polygraphy`), and the TensorRT stand-in's tests bind this
process's to the stand-in: what goes through Polygraphy's TensorRT-RTX loaders runs here in a Python
of its own (:func:`in_rtx_process`). The raw parser (lint) runs in this process.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mmg_export.builder.targets import load_target
from mmg_export.builder.tensorrt import IOTensor, network_io
from mmg_export.builder.tensorrt_rtx import compute_capabilities, offered_compute_capabilities
from mmg_export.lint.parser import flag_bits, parse_into, parser_verdict
from mmg_runtime.errors import UserError

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX is not installed: pip install 'mmg-export[tensorrt-rtx]'")
VERSION = trt.__version__


def save(path: Path, nodes: list, inputs: list, outputs: list, initializers: tuple = ()) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def doubling_model(path: Path) -> Path:
    """y = x + x, fp16, x of shape (n, 3) with n dynamic."""
    return save(path, [helper.make_node("Add", ["x", "x"], ["y"], name="double")],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", 3])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["n", 3])])


def reshape_model(path: Path) -> Path:
    """A Reshape of (2, 3) to (4, 2): valid ONNX that the operator tables pass and the parser rejects."""
    return save(path, [helper.make_node("Reshape", ["x", "shape"], ["y"], name="grow")],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2])],
                (numpy_helper.from_array(np.array([4, 2], np.int64), "shape"),))


def in_rtx_process(code: str, cwd: Path) -> Any:
    """Run ``code`` (which prints one JSON value last) in a Python of its own; return that value."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


# --- compute capabilities and targets: pure logic on the installed module -------------------------


def test_offered_compute_capabilities_are_its_sm_members() -> None:
    offered = offered_compute_capabilities(trt)
    assert {"8.0", "8.6", "8.9", "12.0", "12.1"} <= set(offered)
    assert offered == sorted(offered, key=lambda cc: tuple(map(int, cc.split("."))))
    assert len(offered) == sum(name.startswith("SM") for name in trt.ComputeCapability.__members__)


def test_each_target_builds_for_its_gpu_and_portable_for_every_one_from_ampere() -> None:
    assert {name: compute_capabilities(load_target(name), trt) for name in
            ("rtx-ampere", "rtx-ada", "rtx-blackwell", "dgx-spark")} == {
        "rtx-ampere": ["8.6"], "rtx-ada": ["8.9"], "rtx-blackwell": ["12.0"], "dgx-spark": ["12.1"]}
    assert compute_capabilities(load_target("rtx-portable"), trt) == [
        cc for cc in offered_compute_capabilities(trt) if tuple(map(int, cc.split("."))) >= (8, 0)]


def test_a_gpu_tensorrt_rtx_does_not_build_for_is_one_line() -> None:
    hopper = replace(load_target("rtx-ada"), compute_capability="9.0")
    with pytest.raises(UserError) as error:
        compute_capabilities(hopper, trt)
    offered = ", ".join("sm_" + cc.replace(".", "") for cc in offered_compute_capabilities(trt))
    assert str(error.value) == (f"target 'rtx-ada' is sm_90, which TensorRT-RTX {VERSION} does not build for "
                                f"(it builds for {offered}) ({hopper.path})")


def test_tensorrt_targets_and_releases_out_of_range_are_refused() -> None:
    with pytest.raises(UserError, match=r"^--backend tensorrt-rtx: target 'h100' is built with TensorRT \(--backend "
                                        r"tensorrt\); the TensorRT-RTX targets are dgx-spark, rtx-ada"):
        compute_capabilities(load_target("h100"), trt)
    newer = replace(load_target("rtx-ada"), tensorrt_min="1.99")
    with pytest.raises(UserError, match=rf"supports TensorRT-RTX 1.99 to 1.x, but TensorRT-RTX {VERSION} is installed"):
        compute_capabilities(newer, trt)


# --- the real parser (in this process: no Polygraphy) ---------------------------------------------


def test_real_parser_names_node_operator_and_words(tmp_path: Path) -> None:
    verdict = parser_verdict(reshape_model(tmp_path / "grow.onnx"), "tensorrt-rtx")
    (error,) = verdict.errors
    assert (error.node, error.operator) == ("grow", "Reshape")
    assert "reshape changes volume. Reshaping [2,3] to [4,2]" in error.words and "\n" not in error.words
    assert verdict.note == f"TensorRT-RTX {VERSION} parser: rejected the model"
    assert verdict.findings[0].message.startswith("TensorRT-RTX parser: Invalid Node - grow")
    accepted = parser_verdict(doubling_model(tmp_path / "double.onnx"), "tensorrt-rtx")
    assert (accepted.errors, accepted.note) == ([], f"TensorRT-RTX {VERSION} parser: accepted the model")


def test_lint_names_the_parser_that_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmg_export.cli import main

    path = reshape_model(tmp_path / "grow.onnx")
    assert main(["lint", str(path), "--trt", "11"]) == 1
    out = capsys.readouterr().out
    assert "trt-parser  Reshape  grow" in out and "TensorRT-RTX parser: Invalid Node - grow" in out
    assert f"; TensorRT-RTX {VERSION} parser: rejected the model" in out.splitlines()[-1]


@pytest.mark.slow
def test_build_stops_at_the_real_parser_before_any_engine(tmp_path: Path) -> None:
    """The build's engines stage parses every graph before it builds one: the last graph (the tables pass it, the
    parser does not) stops it in one line, and no engine of the first two is built."""
    pytest.importorskip("torch", reason="the build pipeline is the export role's")
    for name in ("preprocess", "encoder"):
        doubling_model(tmp_path / f"{name}.onnx")
    reshape_model(tmp_path / "pruner.onnx")
    message = in_rtx_process(BUILD + """
    from types import SimpleNamespace
    from mmg_export.builder.engines import engine_builder
    from mmg_export.builder.pipeline import GRAPHS, _engines
    options = SimpleNamespace(backend="tensorrt-rtx", frames=2)
    try:
        _engines(options, Path("."), Path("."), {name: ({}, {}) for name in GRAPHS},
                 engine_builder("tensorrt-rtx", load_target("rtx-ada"), Path("timing.cache")))
    except UserError as error:
        print(json.dumps(str(error)))
    """, tmp_path)
    assert message.startswith(f"pruner.onnx: the TensorRT-RTX {VERSION} parser rejects this ONNX model: node 'grow' "
                              "(Reshape): Invalid Node - grow ITensor::getDimensions: Error Code 4: Shape Error "
                              "(reshape changes volume. Reshaping [2,3] to [4,2].")
    assert "\n" not in message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["encoder.onnx", "preprocess.onnx", "pruner.onnx"]


# --- the real builder, through Polygraphy's TensorRT-RTX loaders (a process of its own) -----------

BUILD = """
    import json
    from dataclasses import replace
    from pathlib import Path
    from mmg_export.builder import tensorrt_rtx
    from mmg_export.builder.targets import load_target
    from mmg_runtime.errors import UserError
"""


@pytest.mark.slow
def test_builder_config_has_the_targets_settings(tmp_path: Path) -> None:
    """On the real IBuilderConfig: optimisation level, compute capabilities, TF32 off, one profile whose
    shapes are the ones given, a strongly typed network, no workspace limit (TensorRT-RTX's default)."""
    doubling_model(tmp_path / "double.onnx")
    configs = in_rtx_process(BUILD + """
    import tensorrt_rtx as trt
    from mmg_export.builder.tensorrt import optimisation_profiles, parse_network
    shapes = {"x": ((1, 3), (2, 3), (5, 3))}
    configs = {}
    for name, level in (("rtx-ada", 1), ("rtx-portable", 5)):  # neither is TensorRT's default level (3)
        profile = replace(load_target(name), builder_optimization_level=level)
        _, builder, network, _parser = parse_network("double.onnx", "tensorrt-rtx")
        loader = tensorrt_rtx.config_loader(trt, profile, tensorrt_rtx.compute_capabilities(profile, trt), shapes)
        config = loader(builder, network)
        configs[name] = {
            "level": config.builder_optimization_level,
            "capabilities": [config.get_compute_capability(i).name for i in range(config.num_compute_capabilities)],
            "tf32": config.get_flag(trt.BuilderFlag.TF32),
            "workspace": config.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE),
            "profiles": config.num_optimization_profiles,
            "shapes": [list(dims) for dims in optimisation_profiles(shapes)[0].to_trt(builder, network).get_shape("x")],
            "strongly_typed": network.get_flag(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED),
        }
    print(json.dumps(configs))
    """, tmp_path)
    workspace = trt.Builder(trt.Logger()).create_builder_config().get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE)
    common = {"tf32": False, "workspace": workspace, "profiles": 1, "shapes": [[1, 3], [2, 3], [5, 3]],
              "strongly_typed": True}
    assert configs == {"rtx-ada": {"level": 1, "capabilities": ["SM89"], **common},
                       "rtx-portable": {"level": 5, "capabilities": ["SM80", "SM86", "SM89", "SM120", "SM121"],
                                        **common}}


@pytest.mark.slow
def test_build_writes_the_engine_and_reports_the_networks_io(tmp_path: Path) -> None:
    doubling_model(tmp_path / "double.onnx")
    info = in_rtx_process(BUILD + """
    import dataclasses
    info = tensorrt_rtx.build_engine("double.onnx", "double.engine", load_target("rtx-ada"), log=print,
                                     input_shapes={"x": ((1, 3), (2, 3), (5, 3))})
    print(json.dumps(dataclasses.asdict(info)))
    """, tmp_path)
    assert info == {"trt_version": VERSION, "device": None, "hardware_compatibility": None,
                    "io_tensors": [["x", [-1, 3], "float16", "input"], ["y", [-1, 3], "float16", "output"]],
                    "compute_capabilities": ["8.9"]}
    assert (tmp_path / "double.engine").stat().st_size > 10_000


@pytest.mark.slow
def test_rejected_graph_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    reshape_model(tmp_path / "grow.onnx")
    message = in_rtx_process(BUILD + """
    try:
        tensorrt_rtx.build_engine("grow.onnx", "grow.engine", load_target("rtx-ada"), log=print)
    except UserError as error:
        print(json.dumps(str(error)))
    """, tmp_path)
    assert message.startswith(f"grow.onnx: the TensorRT-RTX {VERSION} parser rejects this ONNX model: node 'grow' "
                              "(Reshape): Invalid Node - grow ITensor::getDimensions")
    assert "\n" not in message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["grow.onnx"]


@pytest.mark.slow
def test_failed_build_says_what_the_builder_said(tmp_path: Path) -> None:
    """TensorRT-RTX compiles no fp32 matrix product for Turing (sm_75): the builder's own words, no engine."""
    save(tmp_path / "product.onnx", [helper.make_node("MatMul", ["a", "b"], ["y"], name="product")],
         [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4, 8]),
          helper.make_tensor_value_info("b", TensorProto.FLOAT, [8, 4])],
         [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])])
    if "7.5" not in offered_compute_capabilities(trt):
        pytest.skip(f"TensorRT-RTX {VERSION} does not build for sm_75")
    message = in_rtx_process(BUILD + """
    turing = replace(load_target("rtx-ada"), compute_capability="7.5")
    try:
        tensorrt_rtx.build_engine("product.onnx", "product.engine", turing, log=lambda _: None)
    except UserError as error:
        print(json.dumps(str(error)))
    """, tmp_path)
    assert message.startswith(f"product.onnx: TensorRT-RTX {VERSION} could not build an engine for target 'rtx-ada':\n")
    assert "for Turing (SM75): FP32 GEMM is not supported" in message
    assert not (tmp_path / "product.engine").exists()


@pytest.mark.slow
def test_profile_builds_the_pruner_of_another_ratio_as_the_artifacts_engines(tmp_path: Path) -> None:
    """``mmg-export profile --ratios`` on TensorRT-RTX artifacts: the pruner of another ratio is a TensorRT-RTX
    engine for the manifest's compute capabilities (sm_86 here, not target rtx-ada's own sm_89)."""
    pytest.importorskip("torch", reason="exporting a pruner is the export role's")
    built = in_rtx_process(BUILD + """
    from mmg_export.builder.engines import artifacts_engine_builder
    from mmg_export.builder.profile_harness import _extra_pruner
    from mmg_runtime.manifest import Manifest
    manifest = Manifest(tool_version="0.1.0", backend="tensorrt-rtx", target="rtx-ada", precision="fp16", frames=2,
                        tokens_per_frame=4, hidden_size=8, ratio=0.25, keep=2, device={"compute_capabilities": "8.6"})
    pruner = _extra_pruner(manifest, 0.5, Path("."))
    info = artifacts_engine_builder(manifest, Path("timing.cache"))(Path("pruner-0.5.onnx"), Path("again.engine"))
    print(json.dumps([pruner.name, pruner.stat().st_size, info.compute_capabilities]))
    """, tmp_path)
    assert built[0] == "pruner-0.5.engine" and built[1] > 10_000
    assert built[2] == ["8.6"]
    assert not (tmp_path / "timing.cache").exists()  # TensorRT-RTX keeps no timing cache


# --- the tiny model's artifacts, built with mmg-export build ---------------------------------------


def parsed_io(path: Path) -> tuple[IOTensor, ...]:
    """The I/O of the network the real parser makes of the ONNX file at ``path``."""
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    network = builder.create_network(flag_bits(trt, []))
    _parser, errors = parse_into(trt, network, path)  # the parser owns the weights: alive while the network is read
    assert errors == []
    return network_io(network)


def engine_io(path: Path) -> dict[str, tuple] | None:
    """Name -> (shape, dtype name, profile shapes) of the engine at ``path``; None where no supported GPU
    can deserialize it (on a CPU: "CUDA driver version is insufficient")."""
    engine = trt.Runtime(trt.Logger(trt.Logger.INTERNAL_ERROR)).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        return None
    names = [engine.get_tensor_name(index) for index in range(engine.num_io_tensors)]
    return {name: (tuple(engine.get_tensor_shape(name)), engine.get_tensor_dtype(name).name,
                   [list(dims) for dims in engine.get_tensor_profile_shape(name, 0)]
                   if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT and -1 in engine.get_tensor_shape(name)
                   else None)
            for name in names}


@pytest.mark.slow
def test_tiny_model_engines_built_ahead_of_time_match_the_manifest(tmp_path: Path) -> None:
    """``mmg-export build --backend tensorrt-rtx --target rtx-ada`` on a machine without a GPU (about
    30 s: the export dominates; the three engines build in ~2 s)."""
    pytest.importorskip("torch", reason="building is the export role's")
    from mmg_runtime.tensorrt import dtype_name
    from mmg_runtime.trust import verify_artifacts

    out = tmp_path / "rtx"
    done = subprocess.run([sys.executable, "-m", "mmg_export.cli", "build", "--backend", "tensorrt-rtx", "--target",
                           "rtx-ada", "--keep-onnx", "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = verify_artifacts(out)
    assert (manifest.backend, manifest.target, manifest.precision) == ("tensorrt-rtx", "rtx-ada", "bf16")
    assert manifest.versions["tensorrt_rtx"] == VERSION and "tensorrt" not in manifest.versions
    assert manifest.device == {"compute_capabilities": "8.9"}
    assert {name: component.file for name, component in manifest.components.items()} == {
        "preprocess": "preprocess.engine", "encoder": "encoder.engine", "pruner": "pruner.engine"}
    frames, side = manifest.frames, manifest.extra["image_size"]
    assert manifest.extra["optimization_profiles"] == {
        "preprocess": {"frames": [[1, 1, 1, 3], [8, 720, 1280, 3], [frames, 4096, 4096, 3]],
                       "resize_rows": [[side, 1], [side, 720], [side, 4096]],
                       "resize_cols": [[1, side], [1280, side], [4096, side]]},
        "encoder": {"pixel_values": [[1, 3, side, side], [8, 3, side, side], [frames, 3, side, side]]},
        "pruner": {}}
    for name, component in manifest.components.items():
        specs = {**component.inputs, **component.outputs}
        expected = {tensor: (tuple(-1 if isinstance(dim, str) else dim for dim in spec.shape), spec.dtype)
                    for tensor, spec in specs.items()}
        network = parsed_io(out / "onnx" / f"{name}.onnx")
        assert {t.name: (t.shape, t.dtype) for t in network} == expected, name
        assert [t.name for t in network if t.mode == "input"] == list(component.inputs), name
        profiles = manifest.extra["optimization_profiles"][name]
        for tensor, (low, best, high) in profiles.items():
            shape = expected[tensor][0]
            assert all(dim == -1 or low[i] == best[i] == high[i] == dim for i, dim in enumerate(shape)), tensor
            assert all(a <= b <= c for a, b, c in zip(low, best, high)), tensor
        assert set(profiles) == {tensor for tensor, (shape, _) in expected.items()
                                 if -1 in shape and tensor in component.inputs}, name
        engine = engine_io(out / component.file)
        if engine is not None:  # a GPU of this compute capability: the engine itself
            assert {tensor: (shape, dtype_name(dtype)) for tensor, (shape, dtype, _) in engine.items()} == expected
            assert {tensor: ranges for tensor, (_, _, ranges) in engine.items() if ranges} == profiles
