"""Layers: pyconv beside onnxruntime (a single-node ONNX model) and a NumPy baseline, same run.

    pytest benchmarks/test_layers.py --benchmark-columns=median,ops

Convolutions (`test_conv_layer`, the layers `CONV_CASES` names) are also timed under torch
when it is installed; pooling layers are `LayerCase`s in `CASES` (`test_layer`). Every
implementation is timed at 1 and 2 threads and its output checked against the NumPy
result; the summary at the end gives GFLOP/s, % of the machine's peak and ratios to
onnxruntime (> 1: faster than onnxruntime).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import pyconv.functional as F
from pyconv import arithmetic

from benchmarks._bench import limit_threads, record

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


# --- Convolution layers ----------------------------------------------------------------

# name: (C_in, C_out, size, kernel, stride, padding, dilation, groups, transposed, out_pad
#        [, spatial dims: 2 unless given])
CONV_CASES = {
    "conv3x3 64-64 @56": (64, 64, 56, 3, 1, 1, 1, 1, False, 0),
    "conv3x3 256-256 @14": (256, 256, 14, 3, 1, 1, 1, 1, False, 0),
    "conv1x1 256-64 @56": (256, 64, 56, 1, 1, 0, 1, 1, False, 0),
    "conv7x7/2 3-64 @224": (3, 64, 224, 7, 2, 3, 1, 1, False, 0),
    "conv3x3 d2 128-128 @64": (128, 128, 64, 3, 1, 2, 2, 1, False, 0),
    "dwconv3x3 144 @56": (144, 144, 56, 3, 1, 1, 1, 144, False, 0),
    "dwconv3x3/2 144 @56": (144, 144, 56, 3, 2, 1, 1, 144, False, 0),
    "gconv3x3 g8 128-128 @28": (128, 128, 28, 3, 1, 1, 1, 8, False, 0),
    "convT4x4/2 128-64 @28": (128, 64, 28, 4, 2, 1, 1, 1, True, 0),
    "convT3x3/2 op1 64-32 @56": (64, 32, 56, 3, 2, 1, 1, 1, True, 1),
    "dwconvT4x4/2 64 @56": (64, 64, 56, 4, 2, 1, 1, 64, True, 0),
    # DeepLabV3's ASPP: dilation past the 20x20 map, taps that read only padding skipped
    "aspp3x3 d12 320-64 @20": (320, 64, 20, 3, 1, 12, 12, 1, False, 0),
    "aspp3x3 d24 320-64 @20": (320, 64, 20, 3, 1, 24, 24, 1, False, 0),
    "aspp3x3 d36 320-64 @20": (320, 64, 20, 3, 1, 36, 36, 1, False, 0),
    # small maps: MobileNetV3's last stages, the bundled shapes classifier's layers
    "dwconv5x5 672 @7": (672, 672, 7, 5, 1, 2, 1, 672, False, 0),
    "dwconv5x5 672 @14": (672, 672, 14, 5, 1, 2, 1, 672, False, 0),
    "dwconv3x3 960 @7": (960, 960, 7, 3, 1, 1, 1, 960, False, 0),
    "dwconv5x5/2 240 @14": (240, 240, 14, 5, 2, 2, 1, 240, False, 0),
    "conv3x3 d2 16-32 @32": (16, 32, 32, 3, 1, 2, 2, 1, False, 0),
    "conv3x3 d2 64-64 @8": (64, 64, 8, 3, 1, 2, 2, 1, False, 0),
    "gconv3x3 g4 64-64 @8": (64, 64, 8, 3, 1, 1, 1, 4, False, 0),
    "conv3x3 64-64 @16": (64, 64, 16, 3, 1, 1, 1, 1, False, 0),
    # 1-D TCN layers (torch TCNs pad (k-1)*d on both sides, then trim the right end)
    "tcn1d k3 d1 128 @400": (128, 128, 400, 3, 1, 2, 1, 1, False, 0, 1),
    "tcn1d k3 d8 128 @400": (128, 128, 400, 3, 1, 16, 8, 1, False, 0, 1),
    "tcn1d k3 d4 256 @1000": (256, 256, 1000, 3, 1, 8, 4, 1, False, 0, 1),
}


def make_case(name):
    cin, cout, size, k, s, p, d, g, transposed, op, *rest = CONV_CASES[name]
    nd = rest[0] if rest else 2
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, cin) + (size,) * nd, dtype=np.float32)
    wshape = (cin, cout // g) if transposed else (cout, cin // g)
    w = (rng.standard_normal(wshape + (k,) * nd) / np.sqrt(cin // g * k ** nd)).astype(
        np.float32)
    b = rng.standard_normal(cout, dtype=np.float32)
    if transposed:
        out = arithmetic.conv_transpose_output_size(size, k, s, p, p, d, op)
        flops = 2.0 * cin * size ** nd * (cout // g) * k ** nd
    else:
        out = arithmetic.conv_output_size(size, k, s, p, p, d)
        flops = 2.0 * cout * out ** nd * (cin // g) * k ** nd
    return dict(x=x, w=w, b=b, k=k, s=s, p=p, d=d, g=g, transposed=transposed, op=op,
                flops=flops, out=out, nd=nd)


def pyconv_runner(c):
    plan = F.ConvPlan(c["w"], c["b"], c["s"], c["p"], c["d"], c["g"],
                      transposed=c["transposed"], output_padding=c["op"])
    return lambda x: plan.run(x)


def onnxruntime_runner(c, threads):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the reference here")
    nd = c["nd"]
    attrs = dict(kernel_shape=[c["k"]] * nd, strides=[c["s"]] * nd, pads=[c["p"]] * 2 * nd,
                 dilations=[c["d"]] * nd, group=c["g"])
    if c["transposed"]:
        attrs["output_padding"] = [c["op"]] * nd
    model = single_node_model("ConvTranspose" if c["transposed"] else "Conv", c["x"].shape,
                              attrs, {"w": c["w"], "b": c["b"]})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"x": x})[0]


def numpy_runner(c):
    """im2col with sliding_window_view + one matmul per group (col2im for transposed)."""
    w, b, k, s, p, d, g = c["w"], c["b"], c["k"], c["s"], c["p"], c["d"], c["g"]
    keff = (k - 1) * d + 1
    if c["nd"] == 1:
        def conv1(x):
            n, cin, length = x.shape
            xp = np.pad(x, ((0, 0), (0, 0), (p, p)))
            win = sliding_window_view(xp, keff, axis=2)[:, :, ::s, ::d]    # (N, C, Lo, k)
            cin_g, cout_g = cin // g, w.shape[0] // g
            out = np.empty((n, w.shape[0], win.shape[2]), np.float32)
            for gi in range(g):
                cg = win[:, gi * cin_g:(gi + 1) * cin_g]
                out[:, gi * cout_g:(gi + 1) * cout_g] = np.einsum(
                    "nclk,ock->nol", cg, w[gi * cout_g:(gi + 1) * cout_g])
            return out + b[:, None]
        return conv1

    def conv(x):
        n, cin, h, _ = x.shape
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        win = sliding_window_view(xp, (keff, keff), axis=(2, 3))[:, :, ::s, ::s, ::d, ::d]
        ho = win.shape[2]
        cols = win.transpose(0, 2, 3, 1, 4, 5)          # (N, Ho, Wo, C, k, k)
        cin_g, cout_g = cin // g, w.shape[0] // g
        out = np.empty((n, w.shape[0], ho, ho), np.float32)
        for gi in range(g):
            cg = cols[:, :, :, gi * cin_g:(gi + 1) * cin_g].reshape(n * ho * ho, -1)
            wg = w[gi * cout_g:(gi + 1) * cout_g].reshape(cout_g, -1)
            out[:, gi * cout_g:(gi + 1) * cout_g] = (cg @ wg.T).reshape(
                n, ho, ho, cout_g).transpose(0, 3, 1, 2)
        return out + b[:, None, None]

    def conv_t(x):
        n, cin, h, _ = x.shape
        cin_g, cout_g = cin // g, w.shape[1]
        full = (h - 1) * s + keff + c["op"]
        y = np.zeros((n, cout_g * g, full, full), np.float32)
        for gi in range(g):
            xg = x[:, gi * cin_g:(gi + 1) * cin_g].reshape(n, cin_g, h * h)
            wg = w[gi * cin_g:(gi + 1) * cin_g].reshape(cin_g, -1)
            cols = (wg.T @ xg).reshape(n, cout_g, k, k, h, h)
            for a in range(k):
                for e in range(k):
                    y[:, gi * cout_g:(gi + 1) * cout_g, a * d:a * d + s * (h - 1) + 1:s,
                      e * d:e * d + s * (h - 1) + 1:s] += cols[:, :, a, e]
        return y[:, :, p:full - p, p:full - p] + b[:, None, None]

    return conv_t if c["transposed"] else conv


def torch_runner(c):
    torch = pytest.importorskip("torch", reason="torch not installed")
    w, b = torch.from_numpy(c["w"]), torch.from_numpy(c["b"])
    if c["nd"] == 1:
        fn = lambda x: torch.nn.functional.conv1d(x, w, b, c["s"], c["p"], c["d"], c["g"])
    elif c["transposed"]:
        fn = lambda x: torch.nn.functional.conv_transpose2d(x, w, b, c["s"], c["p"], c["op"],
                                                            c["g"], c["d"])
    else:
        fn = lambda x: torch.nn.functional.conv2d(x, w, b, c["s"], c["p"], c["d"], c["g"])

    def run(x):
        with torch.inference_mode():
            return fn(torch.from_numpy(x)).numpy()
    return run


CONV_IMPLS = ["pyconv", "onnxruntime", "numpy", "torch"]


@pytest.mark.parametrize("threads", [1, 2], ids=lambda t: f"{t}thr")
@pytest.mark.parametrize("name", list(CONV_CASES))
@pytest.mark.parametrize("impl", CONV_IMPLS)
def test_conv_layer(benchmark, impl, name, threads):
    c = make_case(name)
    with limit_threads(threads):
        run = {"pyconv": lambda: pyconv_runner(c),
               "onnxruntime": lambda: onnxruntime_runner(c, threads),
               "numpy": lambda: numpy_runner(c),
               "torch": lambda: torch_runner(c)}[impl]()
        benchmark.group = f"{name} {threads}thr"
        record(benchmark, impl=impl, flops=c["flops"], threads=threads,
               reference="onnxruntime")
        y = benchmark(run, c["x"])
    ref = numpy_runner(c)(c["x"])
    np.testing.assert_allclose(y, ref, rtol=1e-3, atol=1e-3)
