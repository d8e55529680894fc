#!/usr/bin/env python3
"""ONNX Runtime's CUDA kernels for the pruner's slowest nodes, one node per model: GPU time (CUPTI via
torch.profiler, memcpys left out, 20 runs after 5) of ReduceMax and its alternatives (MaxPool,
GlobalMaxPool, TopK k = 1, other layouts) on the coverage band's shape, ReduceL2 against
Mul + ReduceSum + Sqrt, CumSum over 6,272 values against 32 rows of 196. BENCHMARKS.md quotes it.

GPU:   python scripts/bench_ort_reductions.py
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
from _bench_common import cuda_kernels
from onnx import TensorProto, helper

F = TensorProto.FLOAT


def model(nodes, inputs, outputs, inits=()) -> bytes:
    """A serialized opset-18 model of ``nodes``; inputs are float32 (name, shape) pairs."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, t, None) for n, t in outputs], list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    return m.SerializeToString()


def const(name, values):
    """An int64 initializer (axes, k)."""
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def gpu_ms(blob, feeds, runs=20):
    """GPU ms per run of ``blob`` on ORT CUDA with bound inputs, the outputs, the kernels' names."""
    sess = ort.InferenceSession(blob, providers=["CUDAExecutionProvider"])
    binding = sess.io_binding()
    for name, arr in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0))
    for o in sess.get_outputs():
        binding.bind_output(o.name, "cuda")
    for _ in range(5):
        sess.run_with_iobinding(binding)
    kernels = cuda_kernels(lambda: sess.run_with_iobinding(binding), runs)
    total = sum(ms for ms, _, name in kernels if "Memcpy" not in name)
    return total, binding.copy_outputs_to_cpu(), sorted({name[:60] for _, _, name in kernels})


def main() -> None:
    T, P = 32, 196
    x = np.random.default_rng(0).random((T, P, 3 * P), dtype=np.float32)
    ref = x.max(axis=2, keepdims=True)
    cases = {
        "ReduceMax axes=[2] (T,P,3P)": (model([helper.make_node("ReduceMax", ["x", "ax"], ["y"], keepdims=1)],
                                             [("x", [T, P, 3 * P])], [("y", F)], [const("ax", [2])]), {"x": x}),
        "ReduceMax axes=[1] (T*P,3P)": (model([helper.make_node("ReduceMax", ["x", "ax"], ["y"], keepdims=1)],
                                             [("x", [T * P, 3 * P])], [("y", F)], [const("ax", [1])]), {"x": x.reshape(T * P, -1)}),
        "ReduceMax axes=[0] (3P,T*P)": (model([helper.make_node("ReduceMax", ["x", "ax"], ["y"], keepdims=1)],
                                             [("x", [3 * P, T * P])], [("y", F)], [const("ax", [0])]),
                                        {"x": np.ascontiguousarray(x.reshape(T * P, -1).T)}),
        "MaxPool k=3P (T,P,3P)": (model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3 * P])],
                                        [("x", [T, P, 3 * P])], [("y", F)]), {"x": x}),
        "GlobalMaxPool (T,P,3P)": (model([helper.make_node("GlobalMaxPool", ["x"], ["y"])],
                                         [("x", [T, P, 3 * P])], [("y", F)]), {"x": x}),
        "TopK k=1 (T,P,3P)": (model([helper.make_node("TopK", ["x", "k"], ["y", "i"], axis=-1)],
                                    [("x", [T, P, 3 * P])], [("y", F), ("i", TensorProto.INT64)], [const("k", [1])]), {"x": x}),
    }
    for name, (blob, feeds) in cases.items():
        try:
            ms, out, kernels = gpu_ms(blob, feeds)
            got = out[0].reshape(-1)
            print(f"{name:32s} {ms * 1e3:8.1f} us  exact={np.array_equal(got, ref.reshape(-1))}  {kernels}")
        except Exception as error:  # noqa: BLE001
            print(f"{name:32s} failed: {str(error)[:150]}")

    f = np.random.default_rng(1).random((T, 1, 3584), dtype=np.float32)
    for name, blob in {
        "ReduceL2 axes=[2] (T,1,D)": model([helper.make_node("ReduceL2", ["x", "ax"], ["y"], keepdims=1)],
                                           [("x", [T, 1, 3584])], [("y", F)], [const("ax", [2])]),
        "Mul+ReduceSum+Sqrt (T,1,D)": model([helper.make_node("Mul", ["x", "x"], ["s"]),
                                             helper.make_node("ReduceSum", ["s", "ax"], ["r"], keepdims=1),
                                             helper.make_node("Sqrt", ["r"], ["y"])],
                                            [("x", [T, 1, 3584])], [("y", F)], [const("ax", [2])]),
    }.items():
        ms, out, kernels = gpu_ms(blob, {"x": f})
        print(f"{name:32s} {ms * 1e3:8.1f} us  {kernels}")

    keep = (np.random.default_rng(2).random(T * P) < 0.25).astype(np.float32)
    for name, (blob, feeds) in {
        "CumSum N=6272": (model([helper.make_node("CumSum", ["x", "ax"], ["y"])], [("x", [T * P])], [("y", F)],
                                [helper.make_tensor("ax", TensorProto.INT64, [], [0])]), {"x": keep}),
        "CumSum (T,P) axis 1": (model([helper.make_node("CumSum", ["x", "ax"], ["y"])], [("x", [T, P])], [("y", F)],
                                      [helper.make_tensor("ax", TensorProto.INT64, [], [1])]), {"x": keep.reshape(T, P)}),
        "ReduceMin axes=[1] (T,P) ": (model([helper.make_node("ReduceMin", ["x", "ax"], ["y"], keepdims=1)],
                                            [("x", [T, P])], [("y", F)], [const("ax", [1])]), {"x": keep.reshape(T, P)}),
        "ReduceMax axes=[2] (T,P,P)": (model([helper.make_node("ReduceMax", ["x", "ax"], ["y"], keepdims=1)],
                                             [("x", [T, P, P])], [("y", F)], [const("ax", [2])]), {"x": x[:, :, :P].copy()}),
    }.items():
        ms, out, kernels = gpu_ms(blob, feeds)
        print(f"{name:32s} {ms * 1e3:8.1f} us  {kernels}")


if __name__ == "__main__":
    main()
