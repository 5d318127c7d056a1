"""Exact ONNX semantics where pyconv used to answer differently, each checked against
onnxruntime (or the ONNX reference evaluator): Pad on every dtype and mode, the
channel-affine fold's rank, MaxPool Indices with storage_order=1, Gemm with K = 0, and
np.matrix feeds."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyconv
import pyconv.functional as F
from pyconv.errors import PyconvError

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the reference here")
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix


def _model(nodes, inputs, outputs, inits=(), opset=19):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=9).SerializeToString()


def _both(model, feed, level=None):
    """(pyconv's outputs or its exception, onnxruntime's outputs or None if it refused)."""
    opts = pyconv.SessionOptions()
    if level is not None:
        opts.graph_optimization_level = level
    try:
        got = pyconv.InferenceSession(model, opts).run(None, feed)
    except PyconvError as exc:
        got = exc
    try:
        want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feed)
    except Exception:       # onnxruntime refuses: pyconv must refuse too
        want = None
    return got, want


# -- Pad ---------------------------------------------------------------------------------

_PAD_DTYPES = [(np.float32, TensorProto.FLOAT), (np.int64, TensorProto.INT64),
               (np.uint8, TensorProto.UINT8), (np.float64, TensorProto.DOUBLE),
               (np.int32, TensorProto.INT32), (np.bool_, TensorProto.BOOL)]
_PADS_1D = [(0, -7), (0, -5), (0, -4), (-2, 1), (-6, 1), (-6, 3), (-7, 2), (4, 0), (5, 0),
            (6, 0), (11, 0), (-1, -1), (3, -2), (-3, 3), (0, 0), (2, 2)]


def _pad_model(elem, with_axes=False):
    names = ["x", "pads", "value"] + (["axes"] if with_axes else [])
    inputs = [helper.make_tensor_value_info("x", elem, None),
              helper.make_tensor_value_info("pads", TensorProto.INT64, None),
              helper.make_tensor_value_info("value", elem, [])]
    if with_axes:
        inputs.append(helper.make_tensor_value_info("axes", TensorProto.INT64, None))
    return {mode: _model([helper.make_node("Pad", names, ["y"], mode=mode, name="pad")],
                         inputs, [helper.make_tensor_value_info("y", elem, None)])
            for mode in ("constant", "reflect", "edge", "wrap")}


def _check_same(got, want, what):
    if want is None:
        assert isinstance(got, PyconvError), f"{what}: onnxruntime refuses, pyconv gave {got}"
        return
    assert not isinstance(got, Exception), f"{what}: pyconv refused ({got}), ORT gave {want}"
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (what, g, w)
        np.testing.assert_array_equal(g, w, err_msg=what)


@pytest.mark.parametrize("dtype,elem", _PAD_DTYPES)
def test_pad_every_dtype_and_mode_matches_onnxruntime_1d(dtype, elem):
    models = _pad_model(elem)
    x = np.arange(1, 6).astype(dtype)
    for mode, model in models.items():
        for pads in _PADS_1D:
            feed = {"x": x, "pads": np.array(pads, np.int64), "value": np.array(7, dtype)}
            got, want = _both(model, feed)
            _check_same(got, want, f"{dtype.__name__} {mode} {pads}")


def test_pad_issue_cases():
    """int64 [1..5] padded (0, -7) and [7] padded (1, -2) were answered as Python slices
    ([1, 2, 3] and [0]): the first leaves a negative size (refused, as onnxruntime does),
    the second an empty output (onnxruntime's answer too)."""
    model = _pad_model(TensorProto.INT64)["constant"]
    sess = pyconv.InferenceSession(model)
    zero = np.array(0, np.int64)
    with pytest.raises(PyconvError, match="pad.*negative size"):
        sess.run(None, {"x": np.arange(1, 6, dtype=np.int64),
                        "pads": np.array([0, -7], np.int64), "value": zero})
    got = sess.run(None, {"x": np.array([7], np.int64), "pads": np.array([1, -2], np.int64),
                          "value": zero})[0]
    assert got.shape == (0,) and got.dtype == np.int64


@pytest.mark.parametrize("dtype,elem", _PAD_DTYPES[:3])
def test_pad_2d_and_axes_match_onnxruntime(dtype, elem):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 9, (3, 4)).astype(dtype)
    models = _pad_model(elem, with_axes=True)
    cases = [((1, 2, 0, 1), (0, 1)), ((-1, 2, 2, -3), (0, 1)), ((2, 3), (-1,)),
             ((1, 1), (0,)), ((3, -1, 2, 0), (1, 0)), ((4, 0), (1,))]
    for mode, model in models.items():
        for pads, axes in cases:
            feed = {"x": x, "pads": np.array(pads, np.int64),
                    "axes": np.array(axes, np.int64), "value": np.array(5, dtype)}
            got, want = _both(model, feed)
            _check_same(got, want, f"{mode} pads={pads} axes={axes}")


def test_pad_matches_onnx_reference_where_it_is_defined():
    """The reference evaluator (np.pad) has no negative pads; where it runs it agrees,
    reflect pads wider than the dim (which np.pad folds) included: refused."""
    from onnx.reference import ReferenceEvaluator
    x = np.arange(12, dtype=np.int64).reshape(3, 4)
    for mode, model in _pad_model(TensorProto.INT64).items():
        ref = ReferenceEvaluator(model)
        sess = pyconv.InferenceSession(model)
        for pads in ((1, 2, 0, 1), (2, 3, 2, 3), (0, 4, 0, 0), (3, 0, 0, 0)):
            feed = {"x": x, "pads": np.array(pads, np.int64), "value": np.array(-1, np.int64)}
            if mode == "reflect" and max(pads[0], pads[2]) >= 3 or \
                    mode == "reflect" and max(pads[1], pads[3]) >= 4:
                with pytest.raises(PyconvError, match="reflect padding"):
                    sess.run(None, feed)
                continue
            np.testing.assert_array_equal(sess.run(None, feed)[0], ref.run(None, feed)[0],
                                          err_msg=f"{mode} {pads}")


def test_pad_repeated_axes_are_refused():
    model = _pad_model(TensorProto.FLOAT, with_axes=True)["constant"]
    with pytest.raises(PyconvError, match="axes"):
        pyconv.InferenceSession(model).run(None, {
            "x": np.ones((2, 3), np.float32), "pads": np.array([1, 1, 0, 0], np.int64),
            "axes": np.array([1, -1], np.int64), "value": np.array(0, np.float32)})


def test_functional_pad_is_the_same_padding():
    """F.pad (torch order, float32) and the ONNX op share pad_widths."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    model = _pad_model(TensorProto.FLOAT)
    for torch_mode, onnx_mode in (("constant", "constant"), ("reflect", "reflect"),
                                  ("replicate", "edge"), ("circular", "wrap")):
        got = F.pad(x, (1, 2, 3, 0), torch_mode)
        pads = np.array([0, 0, 3, 1, 0, 0, 0, 2], np.int64)
        want = pyconv.InferenceSession(model[onnx_mode]).run(
            None, {"x": x, "pads": pads, "value": np.array(0, np.float32)})[0]
        np.testing.assert_array_equal(got, want)


# -- channel-affine fold -------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (1, 1, 1, 1, 1, 1), (1, 1, 1, 1),
                                   (1, 4, 1, 1), (1,), ()])
@pytest.mark.parametrize("op", ["Mul", "Add"])
def test_channel_affine_fold_keeps_the_broadcast_rank(shape, op):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    c = (rng.random(shape) + 0.5).astype(np.float32)
    model = _model(
        [helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node(op, ["h", "c"], ["y"], name="scale")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(c, "c")], opset=17)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    for level in (pyconv.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  pyconv.GraphOptimizationLevel.ORT_ENABLE_ALL):
        got, want = _both(model, {"x": x}, level)
        assert got[0].shape == want[0].shape
        np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-4)


# -- MaxPool Indices, storage_order ----------------------------------------------------------

@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("spatial,kernel", [((9,), [2]), ((5, 7), [2, 3]),
                                            ((4, 5, 6), [2, 2, 3])])
def test_maxpool_indices_match_onnxruntime(spatial, kernel, storage_order):
    rng = np.random.default_rng(len(spatial))
    shape = (2, 3) + spatial
    x = rng.permutation(np.prod(shape)).astype(np.float32).reshape(shape)  # no ties
    model = _model(
        [helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=kernel,
                          strides=[1] * len(kernel), storage_order=storage_order,
                          name="pool")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("i", TensorProto.INT64, None)], opset=12)
    got, want = _both(model, {"x": x})
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


# -- Gemm with K = 0 -------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), 2.0, 0.0])
@pytest.mark.parametrize("const_b", [False, True])
def test_gemm_with_empty_k_is_alpha_times_zero_plus_beta_c(alpha, const_b):
    """alpha * (an empty sum) + beta * C: NaN for alpha NaN or inf (was C)."""
    from onnx.reference import ReferenceEvaluator
    a = np.zeros((2, 0), np.float32)
    b = np.zeros((0, 3), np.float32)
    c = np.arange(3, dtype=np.float32)
    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 0])]
    inits = [numpy_helper.from_array(c, "c")]
    feed = {"a": a}
    if const_b:
        inits.append(numpy_helper.from_array(b, "b"))
    else:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, [0, 3]))
        feed["b"] = b
    model = _model([helper.make_node("Gemm", ["a", "b", "c"], ["y"], alpha=alpha,
                                     beta=0.5, name="gemm")],
                   inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                   inits, opset=13)
    want = ReferenceEvaluator(model).run(None, feed)[0]
    got = pyconv.InferenceSession(model).run(None, feed)[0]
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want.astype(np.float32))


# -- np.matrix feeds -------------------------------------------------------------------------

def test_matrix_feed_is_a_plain_array_at_the_session_boundary():
    model = _model([helper.make_node("Reshape", ["x", "s"], ["y"], name="reshape")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                   [numpy_helper.from_array(np.array([6], np.int64), "s")], opset=17)
    m = np.matrix(np.arange(6, dtype=np.float32).reshape(2, 3))
    got = pyconv.InferenceSession(model).run(None, {"x": m})[0]
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(
        None, {"x": np.asarray(m)})[0]
    assert type(got) is np.ndarray and got.shape == (6,) == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fn", [F.relu, F.flatten, F.dropout,
                                lambda m: F.softmax(m, dim=1),
                                lambda m: F.log_softmax(m, dim=1),
                                lambda m: F.pad(m, (1, 1))])
def test_matrix_is_a_plain_array_in_functional_entries(fn):
    m = np.matrix([[1.0, 2.0, 3.0]], dtype=np.float32)
    y = fn(m)
    assert type(y) is np.ndarray
