"""Component I/O specs against real ONNX Runtime sessions (mmg_runtime.component_io), as the
runtime's OrtSession reports them; TensorRT's -1 for a dynamic dimension as pure logic."""
from dataclasses import replace

import onnx
import pytest
from onnx import TensorProto, helper

from mmg_runtime.component_io import check_component_io
from mmg_runtime.errors import UserError
from mmg_runtime.manifest import Component, TensorSpec
from mmg_runtime.sessions import OrtSession
from mmg_runtime.trust import verify_artifacts


def open_session(path):
    session = OrtSession(path, [["CPUExecutionProvider", {}]])
    return session.inputs, session.outputs


def test_every_built_graph_matches_its_manifest(artifacts):
    manifest = verify_artifacts(artifacts)
    assert set(manifest.components) == {"preprocess", "encoder", "pruner"}
    for component in manifest.components.values():
        check_component_io(artifacts / component.file, component, *open_session(artifacts / component.file))
    inputs, outputs = open_session(artifacts / manifest.components["pruner"].file)
    assert inputs == {"video_tokens": ((32, 196, 64), "float32")}
    assert outputs == {"video_embeds": ((1569, 64), "float32"), "kept_indices": ((1568,), "int64"),
                       "finite": ((1,), "bool")}
    inputs, outputs = open_session(artifacts / manifest.components["encoder"].file)
    assert inputs == {"pixel_values": (("frames", 3, 384, 384), "float32")}


@pytest.mark.parametrize("edit,message", [
    (lambda c: replace(c, outputs={**c.outputs, "kept_indices": TensorSpec((1568,), "int32")}),
     "output 'kept_indices' is int64 [1568], the manifest says int32 [1568]"),
    (lambda c: replace(c, outputs={**c.outputs, "video_embeds": TensorSpec((1000, 64), "float32")}),
     "output 'video_embeds' is float32 [1569, 64], the manifest says float32 [1000, 64]"),
    (lambda c: replace(c, outputs={**c.outputs, "finite": TensorSpec((), "bool")}),
     "output 'finite' is bool [1], the manifest says bool []"),
    (lambda c: replace(c, inputs={"video_tokens": TensorSpec(("frames", 196, 64), "float32")}),
     "input 'video_tokens' is float32 [32, 196, 64], the manifest says float32 [frames, 196, 64]"),
    (lambda c: replace(c, inputs={"tokens": c.inputs["video_tokens"]}),
     "inputs are ['video_tokens'], the manifest says ['tokens']"),
    (lambda c: replace(c, outputs={"video_embeds": c.outputs["video_embeds"]}),
     "outputs are ['finite', 'kept_indices', 'video_embeds'], the manifest says ['video_embeds']"),
])
def test_a_spec_that_differs_from_the_graph_is_refused(artifacts, edit, message):
    component = verify_artifacts(artifacts).components["pruner"]
    path = artifacts / component.file
    with pytest.raises(UserError) as error:
        check_component_io(path, edit(component), *open_session(path))
    assert str(error.value) == f"{path}: {message}; rebuild with mmg-export build"


def test_dynamic_axes(tmp_path):
    """Named and unnamed dynamic axes (ONNX Runtime) and -1 (TensorRT) are dynamic; names are not compared."""
    x = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT16, ["frames", 3, 8, 8])
    y = helper.make_tensor_value_info("video_tokens", TensorProto.FLOAT16, [None, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["pixel_values"], ["video_tokens"])], "g", [x], [y])
    path = tmp_path / "encoder.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    inputs, outputs = open_session(path)
    assert inputs == {"pixel_values": (("frames", 3, 8, 8), "float16")}
    component = Component("encoder.onnx", "0" * 64, {"pixel_values": TensorSpec(("T", 3, 8, 8), "float16")},
                          {"video_tokens": TensorSpec(("T", 3, 8, 8), "float16")})
    check_component_io(path, component, inputs, outputs)
    check_component_io("encoder.engine", component, {"pixel_values": ((-1, 3, 8, 8), "float16")},
                       {"video_tokens": ((-1, 3, 8, 8), "float16")})
    static = replace(component, inputs={"pixel_values": TensorSpec((32, 3, 8, 8), "float16")})
    with pytest.raises(UserError, match=r"input 'pixel_values' is float16 \[frames, 3, 8, 8\], the manifest says "
                                        r"float16 \[32, 3, 8, 8\]"):
        check_component_io(path, static, inputs, outputs)
    with pytest.raises(UserError, match=r"^encoder.engine: input 'pixel_values' is float16 \[\?, 3, 8, 8\], the "
                                        r"manifest says float16 \[32, 3, 8, 8\]"):
        check_component_io("encoder.engine", static, {"pixel_values": ((-1, 3, 8, 8), "float16")},
                           {"video_tokens": ((-1, 3, 8, 8), "float16")})
