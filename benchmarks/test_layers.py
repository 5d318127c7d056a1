"""Layers: pyconv beside onnxruntime (a single-node ONNX model) and a NumPy baseline, same run.

    pytest benchmarks/test_layers.py --benchmark-columns=median,ops

Each layer is a `LayerCase` in `CASES`: the ONNX node (op type, attributes, initializers),
the input shape, the pyconv call and a NumPy baseline. Every implementation is timed at 1
and 2 threads and its output checked against the NumPy result; the summary at the end gives
ratios to onnxruntime (> 1: faster than onnxruntime). New layers are appended to `CASES`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import pyconv.functional as F

from _bench import limit_threads, record

THREADS = [1, 2]
IMPLS = ["pyconv", "onnxruntime", "numpy"]


@dataclasses.dataclass(frozen=True)
class LayerCase:
    """One benchmarked layer.

    pyconv(x, params) and numpy(x, params) compute the layer; params are the arrays of
    make_params (the ONNX node's initializers, in its input order after x, e.g. W and B).
    flops counts the arithmetic (for pooling: one operation per window tap).
    """
    name: str
    op_type: str
    attrs: dict
    input_shape: tuple
    pyconv: Callable
    numpy: Callable
    flops: float
    make_params: Callable = lambda rng: {}
    rtol: float = 1e-5
    atol: float = 1e-5

    def __str__(self):
        return self.name


def single_node_model(op_type, input_shape, attrs, initializers=None, opset=19):
    """A serialized ONNX model with one node: input "x" (float32), output "y".

    initializers: name -> array, fed to the node after x in this order."""
    from onnx import TensorProto, helper, numpy_helper
    initializers = initializers or {}
    node = helper.make_node(op_type, ["x", *initializers], ["y"], **attrs)
    graph = helper.make_graph(
        [node], op_type,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, name) for name, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 9)     # readable by older onnxruntime builds
    return model.SerializeToString()


_SESSIONS = {}


def ort_session(case, params, threads):
    """An onnxruntime session for the case on `threads` intra-op threads (cached)."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    key = (case.name, threads)
    if key not in _SESSIONS:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        model = single_node_model(case.op_type, case.input_shape, case.attrs, params)
        _SESSIONS[key] = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    return _SESSIONS[key]


# --- NumPy baselines ------------------------------------------------------------------------

def numpy_max_pool2d(x, k, s, p):
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    return sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s].max(axis=(-2, -1))


def numpy_avg_pool2d(x, k, s):
    return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s].mean(axis=(-2, -1))


def _pool_flops(shape, k, s, p):
    n, c, h, w = shape
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    return float(n * c * oh * ow * k * k)


SHAPE = (1, 64, 112, 112)
CASES = [
    LayerCase("MaxPool 3x3/2 pad 1 1x64x112x112", "MaxPool",
              dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), SHAPE,
              pyconv=lambda x, prm: F.max_pool2d(x, 3, 2, 1),
              numpy=lambda x, prm: numpy_max_pool2d(x, 3, 2, 1),
              flops=_pool_flops(SHAPE, 3, 2, 1), rtol=0, atol=0),
    LayerCase("AvgPool 2x2/2 1x64x112x112", "AveragePool",
              dict(kernel_shape=[2, 2], strides=[2, 2]), SHAPE,
              pyconv=lambda x, prm: F.avg_pool2d(x, 2, 2),
              numpy=lambda x, prm: numpy_avg_pool2d(x, 2, 2),
              flops=_pool_flops(SHAPE, 2, 2, 0)),
]


@pytest.mark.parametrize("threads", THREADS, ids=lambda t: f"{t}thr")
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("impl", IMPLS)
def test_layer(benchmark, impl, case, threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(case.input_shape, dtype=np.float32)
    params = case.make_params(rng)
    if impl == "pyconv":
        fn = lambda: case.pyconv(x, params)                         # noqa: E731
    elif impl == "numpy":
        fn = lambda: case.numpy(x, params)                          # noqa: E731
    else:
        sess = ort_session(case, params, threads)
        fn = lambda: sess.run(None, {"x": x})[0]                    # noqa: E731
    benchmark.group = f"{case.name} {threads}thr"
    record(benchmark, impl=impl, flops=case.flops, threads=threads, reference="onnxruntime")
    with limit_threads(threads):
        y = benchmark(fn)
    ref = case.numpy(x.astype(np.float64), {k: v.astype(np.float64) for k, v in params.items()})
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=case.rtol, atol=case.atol)
