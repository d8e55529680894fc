"""The real TensorRT ONNX parser (TensorRT for RTX, which parses and builds without a GPU) on the pruner.

The fast tier parses the compaction's scatter alone, in the shape the pruner had (T * P indices
into a K + 1 buffer, which the parser rejects) and in the shape it has. Every geometry
``mmg-export build`` can ask for must parse: frames 1 to 256 (a pick group may hold no frame),
ratios up to 1 (K = T * P), fp32 / fp16 / bf16, ``--merge``, ``--rounds``, ``--reach``; those
tests export (seconds each), so they are slow, as is the build of one small pruner (the tiny
model's P = 196 tokens of H = 64, 3 frames in pick groups of 2 and 1: ``--rounds 1 --reach 1``,
the fewest nodes with every kind of scatter).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mmg_export.builder.cli import pruning_config
from mmg_export.builder.export import IO_DTYPES, export_pruner
from mmg_export.builder.pipeline import pruner_specs
from mmg_export.prune.config import keep_count

trt = pytest.importorskip("tensorrt_rtx", reason="needs TensorRT for RTX: pip install -e '.[tensorrt-rtx]'")

TOKENS, HIDDEN = 196, 64
"""The built-in tiny model's tokens per frame and hidden size."""
SMALL_FRAMES = 3
LOGGER = trt.Logger(trt.Logger.ERROR)


def cli_config(merge: bool = False, rounds: int | None = None, reach: int | None = None):
    """The pruner settings that ``mmg-export build [--merge] [--rounds N] [--reach N]`` exports."""
    return pruning_config(argparse.Namespace(merge=merge, rounds=rounds, reach=reach, substeps=None))


def parse(path: Path) -> tuple[object, object, list[str]]:
    """(builder, strongly typed network, the parser's errors) of the ONNX file."""
    builder = trt.Builder(LOGGER)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, LOGGER)
    accepted = parser.parse_from_file(str(path))
    errors = [parser.get_error(index) for index in range(parser.num_errors)]
    errors = [f"{error.node_name()} ({error.node_operator()}): {error.desc()}" for error in errors]
    return builder, network, errors if accepted or errors else ["rejected without an error"]


def parsed(path: Path) -> tuple[object, object]:
    """(builder, strongly typed network) of the ONNX file; fails naming every parser error."""
    builder, network, errors = parse(path)
    assert not errors, errors
    return builder, network


def compaction(path: Path, buffer: int, tokens: int) -> Path:
    """The pruner's compaction scatter alone: ``tokens`` int64 slots written into a ``buffer`` long buffer."""
    int64 = TensorProto.INT64
    node = helper.make_node("ScatterElements", ["buffer", "slot", "index"], ["out"], name="compact", axis=0)
    graph = helper.make_graph([node], "compaction", [helper.make_tensor_value_info("buffer", int64, [buffer]),
                                                      helper.make_tensor_value_info("slot", int64, [tokens]),
                                                      helper.make_tensor_value_info("index", int64, [tokens])],
                              [helper.make_tensor_value_info("out", int64, [buffer])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_parser_rejects_the_old_compaction_and_accepts_the_new(tmp_path):
    """T = 32 frames of P = 196 at ratio 0.25: 6272 slots into K + 1 = 1569 entries (issue 26's error),
    and the permutation of all 6272 tokens into 6272 entries."""
    errors = parse(compaction(tmp_path / "old.onnx", 1569, 6272))[2]
    assert len(errors) == 1 and errors[0].startswith("compact (ScatterElements): ")
    assert "indices dimension = 6272, data dimension = 1569 on index 0" in errors[0]
    parsed(compaction(tmp_path / "new.onnx", 6272, 6272))


@pytest.fixture(scope="module")
def small_pruner(tmp_path_factory) -> Path:
    return export_pruner(SMALL_FRAMES, TOKENS, HIDDEN, 0.25, "fp16", tmp_path_factory.mktemp("rtx") / "pruner.onnx",
                         cli_config(rounds=1, reach=1))


@pytest.mark.slow
def test_parser_accepts_the_pruner(small_pruner):
    parsed(small_pruner)


@pytest.mark.slow
def test_pruner_builds_for_sm89_with_the_manifests_io(small_pruner):
    """An ahead-of-time build for compute capability 8.9 (no GPU needed); the network's inputs and
    outputs are the manifest's (names, shapes, dtypes)."""
    builder, network = parsed(small_pruner)
    config = builder.create_builder_config()
    config.num_compute_capabilities = 1
    config.set_compute_capability(trt.ComputeCapability.SM89, 0)
    assert builder.build_serialized_network(network, config) is not None
    tensors = [network.get_input(i) for i in range(network.num_inputs)] + \
        [network.get_output(i) for i in range(network.num_outputs)]
    built = {t.name: (tuple(t.shape), np.dtype(trt.nptype(t.dtype))) for t in tensors}
    keep = keep_count(SMALL_FRAMES * TOKENS, 0.25)
    inputs, outputs = pruner_specs(SMALL_FRAMES, TOKENS, HIDDEN, keep, IO_DTYPES["fp16"])
    assert built == {name: (spec.shape, np.dtype(spec.dtype)) for name, spec in {**inputs, **outputs}.items()}


GRID = {
    "1-frame-ratio-0.05-fp32": (1, 0.05, "fp32", {}),
    "3-frames-ratio-1-bf16": (3, 1.0, "bf16", {}),  # fewer frames than pick groups; K = T * P
    "9-frames-merge": (9, 0.25, "fp16", {"merge": True}),
    "5-frames-rounds-1-reach-0": (5, 0.25, "fp16", {"rounds": 1, "reach": 0}),
    "7-frames-rounds-3-reach-3-merge": (7, 0.1, "bf16", {"rounds": 3, "reach": 3, "merge": True}),
    "9-frames-reach-4": (9, 0.5, "fp32", {"reach": 4}),
    "256-frames": (256, 0.25, "fp16", {}),
    "256-frames-ratio-0.05-bf16-merge": (256, 0.05, "bf16", {"merge": True}),
}


@pytest.mark.slow
@pytest.mark.parametrize("frames, ratio, precision, settings", GRID.values(), ids=GRID.keys())
def test_parser_accepts_every_cli_geometry(tmp_path, frames, ratio, precision, settings):
    parsed(export_pruner(frames, TOKENS, HIDDEN, ratio, precision, tmp_path / "pruner.onnx", cli_config(**settings)))
