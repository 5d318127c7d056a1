"""A layer norm over the channels of NCHW maps, as exporters write it (ConvNeXt's
LayerNorm2d: Transpose to channels-last, LayerNormalization over the last axis, Transpose
back): the column kernel runs on the NCHW data itself, no transposed copy. Checked
against onnxruntime and the ONNX reference evaluator, bound and unbound, and through
``pyconv.functional.layer_norm`` on a transposed view against float64."""
import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import pyconv
from pyconv import functional as F
from tests.graph import _build as B


def channels_first_ln(rng, dims, bias=True, stats=False, after="Transpose", scale_shape=None):
    """Conv -> Transpose -> LayerNormalization(axis -1) -> ``after`` (a Transpose back, or
    a Relu on the channels-last result); outputs y (and Mean when ``stats``). Scale has
    ``scale_shape`` (default: (C,))."""
    rank = len(dims)
    c = 6
    to_last = [0] + list(range(2, rank)) + [1]
    to_first = [0, rank - 1] + list(range(1, rank - 1))
    k = [3] * (rank - 2)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * (2 * (rank - 2))),
             helper.make_node("Transpose", ["c"], ["t"], perm=to_last),
             helper.make_node("LayerNormalization", ["t", "s"] + (["b"] if bias else []),
                              ["n"] + (["mean"] if stats else []), axis=-1, epsilon=1e-5)]
    if after == "Transpose":
        nodes.append(helper.make_node("Transpose", ["n"], ["y"], perm=to_first))
    else:
        nodes.append(helper.make_node(after, ["n"], ["y"]))
    inits = {"w": B.rand(rng, c, dims[1], *k), "s": B.rand(rng, *(scale_shape or (c,))) + 1,
             "b": B.rand(rng, c)}
    if not bias:
        del inits["b"]
    outputs = [("y", None)] + ([("mean", None)] if stats else [])
    return B.model(nodes, [("x", dims)], outputs, inits)


@pytest.mark.parametrize("kw", [{}, {"bias": False}, {"stats": True}, {"after": "Relu"},
                                {"scale_shape": (1,)}, {"scale_shape": (1, 1, 6)}],
                         ids=["transpose-back", "no-bias", "mean-output", "channels-last",
                              "scalar-scale", "broadcast-scale"])
@pytest.mark.parametrize("dims,shapes", [
    ([1, 3, 16, 20], [(1, 3, 16, 20)]),
    (["N", 3, "H", "W"], [(2, 3, 5, 7), (1, 3, 9, 4), (2, 3, 5, 7)]),
    ([2, 3, 11], [(2, 3, 11)]),                       # 1-D maps (N, C, L)
], ids=["static", "dynamic", "rank3"])
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_onnxruntime(kw, dims, shapes, threads):
    rng = np.random.default_rng(7)
    m = channels_first_ln(rng, dims, **kw)
    ref = ReferenceEvaluator(m)
    opts = pyconv.SessionOptions()
    opts.intra_op_num_threads = threads
    s = pyconv.InferenceSession(m, opts)
    for shape in shapes:
        x = B.rand(rng, *shape)
        want, ort = ref.run(None, {"x": x}), B.ort_run(m, {"x": x})
        for _ in range(3):              # the first run records, the others are bound
            for g, w, o in zip(s.run(None, {"x": x}), want, ort):
                assert g.shape == w.shape
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(g, o, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 8, 5, 7), (1, 70, 3, 3), (3, 4, 17)])
def test_layer_norm_of_a_channels_last_view(shape):
    """``F.layer_norm`` over the last axis of ``np.moveaxis(nchw, 1, -1)`` (a view) against
    float64; the result has the view's values whatever its layout."""
    rng = np.random.default_rng(8)
    nchw = (rng.standard_normal(shape) * 2 + 5).astype(np.float32)
    x = np.moveaxis(nchw, 1, -1)
    c = shape[1]
    w, b = B.rand(rng, c), B.rand(rng, c)
    y = F.layer_norm(x, (c,), w, b, eps=1e-5)
    x64 = x.astype(np.float64)
    mean = x64.mean(-1, keepdims=True)
    want = (x64 - mean) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5) * w + b
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-5)


def test_bound_step_runs_the_column_kernel(monkeypatch):
    """Planned runs call the column kernel on the NCHW data (and the row kernel where the
    input is C-contiguous), not run's general path."""
    from pyconv._ext import eltwise
    rng = np.random.default_rng(9)
    m = channels_first_ln(rng, [1, 3, 8, 8])
    s = pyconv.InferenceSession(m)
    x = B.rand(rng, 1, 3, 8, 8)
    s.run(None, {"x": x})
    calls = []
    real = eltwise.standardize_columns
    monkeypatch.setattr(eltwise, "standardize_columns",
                        lambda v, *a, **k: calls.append(v.shape) or real(v, *a, **k))
    np.testing.assert_allclose(s.run(None, {"x": x})[0], B.ort_run(m, {"x": x})[0],
                               rtol=1e-5, atol=1e-5)
    assert calls == [(1, 6, 64)]


def test_scale_varying_over_another_axis():
    """A Scale of shape (W, 1) on the (N, H, W, C) view (W == C here) varies over W, not
    the channels: no per-channel kernel pass, the values still right."""
    rng = np.random.default_rng(11)
    m = channels_first_ln(rng, [1, 3, 6, 6], scale_shape=(6, 1))
    s = pyconv.InferenceSession(m)
    x = B.rand(rng, 1, 3, 6, 6)
    want = ReferenceEvaluator(m).run(None, {"x": x})[0]
    for _ in range(3):
        np.testing.assert_allclose(s.run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-5)


def test_bound_step_runs_the_row_kernel_on_contiguous_input(monkeypatch):
    from pyconv._ext import eltwise
    rng = np.random.default_rng(10)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("LayerNormalization", ["r", "s", "b"], ["y"], axis=-1)]
    m = B.model(nodes, [("x", ["N", 5, 12])], [("y", None)],
                {"s": B.rand(rng, 12), "b": B.rand(rng, 12)})
    s = pyconv.InferenceSession(m)
    x = B.rand(rng, 2, 5, 12)
    s.run(None, {"x": x})
    calls = []
    real = eltwise.standardize
    monkeypatch.setattr(eltwise, "standardize",
                        lambda v, *a, **k: calls.append(v.shape) or real(v, *a, **k))
    for _ in range(2):
        np.testing.assert_allclose(s.run(None, {"x": x})[0], B.ort_run(m, {"x": x})[0],
                                   rtol=1e-5, atol=1e-5)
    assert calls == [(10, 12)] * 2
