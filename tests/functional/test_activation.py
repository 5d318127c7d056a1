"""pyconv.functional activations: NumPy formulas, the fused GEMM epilogue, torch."""
import warnings

import numpy as np
import pytest

import pyconv
import pyconv.functional as F
from pyconv._ext import eltwise, gemm
from pyconv.errors import InvalidArgument, InvalidDType

# name -> (pyconv call, float64 reference, gemm activation name, act_alpha, act_beta)
ELEMENTWISE = {
    "relu": (F.relu, lambda x: np.maximum(x, 0), "relu", 0.0, 0.0),
    "relu6": (F.relu6, lambda x: np.clip(x, 0, 6), "clip", 0.0, 6.0),
    "hardtanh": (lambda x, **k: F.hardtanh(x, -0.5, 2.0, **k), lambda x: np.clip(x, -0.5, 2.0),
                 "clip", -0.5, 2.0),
    "leaky_relu": (lambda x, **k: F.leaky_relu(x, 0.2, **k), lambda x: np.where(x < 0, 0.2 * x, x),
                   "leaky_relu", 0.2, 0.0),
    "sigmoid": (F.sigmoid, lambda x: 1 / (1 + np.exp(-x)), "sigmoid", 0.0, 0.0),
    "hardsigmoid": (F.hardsigmoid, lambda x: np.clip(x + 3, 0, 6) / 6, "hardsigmoid",
                    1 / 6, 0.5),
    "hardswish": (F.hardswish, lambda x: x * np.clip(x + 3, 0, 6) / 6, "hardswish", 0.0, 0.0),
    "tanh": (F.tanh, np.tanh, "tanh", 0.0, 0.0),
    "silu": (F.silu, lambda x: x / (1 + np.exp(-x)), "silu", 0.0, 0.0),
    "elu": (lambda x, **k: F.elu(x, 0.7, **k), lambda x: np.where(x > 0, x, 0.7 * np.expm1(x)),
            "elu", 0.7, 0.0),
}
INPLACE = ["relu", "relu6", "hardtanh", "leaky_relu", "hardsigmoid", "hardswish", "silu", "elu"]


def special_values():
    """Values around every kink and far in the tails (float32)."""
    v = [0.0, -0.0, 1e-30, -1e-30, 1e-3, -1e-3, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0, 5.999,
         6.0, 6.001, -6.0, 20.0, -20.0, 88.0, -88.0, 100.0, -100.0, 1e30, -1e30]
    return np.array(v, np.float32)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_matches_formula_on_every_isa(name, isa, rng):
    fn, ref, *_ = ELEMENTWISE[name]
    x = np.concatenate([special_values(), rng.standard_normal(1000).astype(np.float32) * 4])
    y = fn(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    with np.errstate(over="ignore"):
        expected = ref(x.astype(np.float64))
    np.testing.assert_allclose(y, expected, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_is_the_fused_gemm_epilogue(name, rng):
    # An identity GEMM with the activation fused gives the input back through the same
    # C code: the layer and a fused convolution agree bit for bit.
    fn, _, act, a, b = ELEMENTWISE[name]
    x = (rng.standard_normal((7, 37)) * 4).astype(np.float32)
    fused = gemm.sgemm(np.eye(7, dtype=np.float32), x, activation=act, act_alpha=a,
                       act_beta=b)
    np.testing.assert_array_equal(fn(x), fused)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_shapes_and_layouts(name, rng):
    fn, ref, *_ = ELEMENTWISE[name]
    for x in [np.float32(1.5) * np.ones((), np.float32),            # 0-d
              np.zeros((0, 3), np.float32),                         # empty
              rng.standard_normal((2, 3, 5, 7)).astype(np.float32),
              rng.standard_normal((6, 9)).astype(np.float32).T,    # transposed view
              rng.standard_normal((40000,)).astype(np.float32)[::3]]:  # strided, > 1 chunk
        before = x.copy()
        y = fn(x)
        assert y.shape == x.shape and y.dtype == np.float32
        assert y is not x
        np.testing.assert_array_equal(x, before)                     # input untouched
        np.testing.assert_allclose(y, ref(x.astype(np.float64)), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("name", INPLACE)
def test_inplace_overwrites_and_returns_input(name, rng):
    fn, ref, *_ = ELEMENTWISE[name]
    base = rng.standard_normal((8, 10)).astype(np.float32) * 3
    expected = ref(base.astype(np.float64))
    x = base.copy()
    assert fn(x, inplace=True) is x
    np.testing.assert_allclose(x, expected, rtol=2e-6, atol=1e-7)
    # A non-contiguous view is written back through its strides.
    x = base.copy()
    view = x[:, ::2]
    assert fn(view, inplace=True) is view
    np.testing.assert_allclose(x[:, ::2], expected[:, ::2], rtol=2e-6, atol=1e-7)
    np.testing.assert_array_equal(x[:, 1::2], base[:, 1::2])


def test_inplace_needs_a_writeable_float32_array():
    x = np.ones(4, np.float32)
    x.flags.writeable = False
    with pytest.raises(InvalidArgument, match="read-only"):
        F.relu(x, inplace=True)
    with pytest.raises(InvalidArgument, match="ndarray"):
        F.relu([1.0, -1.0], inplace=True)
    with pytest.raises(InvalidDType, match="float64"):
        F.relu(np.ones(3), inplace=True)


def test_nan_passes_through():
    x = np.array([np.nan, -1.0, 1.0], np.float32)
    for name, (fn, *_) in ELEMENTWISE.items():
        y = fn(x)
        assert np.isnan(y[0]), name
        assert not np.isnan(y[1:]).any(), name


def test_dtype_errors_name_the_argument():
    with pytest.raises(InvalidDType, match=r"relu: input must be float32, got dtype float64"):
        F.relu(np.zeros(3))
    with pytest.raises(InvalidDType, match="int64"):
        F.sigmoid(np.zeros(3, np.int64))
    with pytest.raises(InvalidDType, match="float16"):
        F.softmax(np.zeros(3, np.float16), dim=0)
    with pytest.raises(InvalidDType, match="list of dtype int"):
        F.tanh([1, 2, 3])
    # Python floats are converted.
    y = F.relu([[-1.0, 2.0]])
    assert y.dtype == np.float32 and y.tolist() == [[0.0, 2.0]]


def test_hardtanh_and_clip_bounds():
    x = np.array([-3.0, -0.2, 0.4, 7.0], np.float32)
    with pytest.raises(InvalidArgument, match="max_val"):
        F.hardtanh(x, 1.0, -1.0)
    with pytest.raises(InvalidArgument, match="at least one of 'min' or 'max'"):
        F.clip(x)
    with pytest.raises(InvalidArgument, match="min must be a number"):
        F.clip(x, "a", 1.0)
    f32 = lambda *v: np.array(v, np.float32)  # noqa: E731
    np.testing.assert_array_equal(F.clip(x, min=0.0), f32(0.0, 0.0, 0.4, 7.0))
    np.testing.assert_array_equal(F.clip(x, max=0.0), f32(-3.0, -0.2, 0.0, 0.0))
    np.testing.assert_array_equal(F.clip(x, -1, 1), f32(-1.0, -0.2, 0.4, 1.0))
    np.testing.assert_array_equal(F.clip(x, 2.0, 1.0), [1.0] * 4)   # min > max: all max


def _softmax_ref(x, axis):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("shape", [(5,), (3, 7), (2, 4, 5), (2, 3, 4, 5)])
def test_softmax_and_log_softmax_every_dim(shape, rng):
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    for dim in range(-len(shape), len(shape)):
        y = F.softmax(x, dim)
        assert y.dtype == np.float32 and y.shape == x.shape
        ref = _softmax_ref(x, dim)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(y.sum(axis=dim), 1.0, rtol=1e-5)
        np.testing.assert_allclose(F.log_softmax(x, dim), np.log(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads_", [1, 2])
def test_softmax_rows_kernel_on_every_isa(isa, threads_, rng):
    """The last axis goes through the element-wise engine's row kernel (one call; rows
    split over the threads when large): every row length around the vector widths and
    the sum's blocks, wide value ranges, and the special values NumPy's formula gives
    (-inf: 0 / -inf; a NaN or +inf anywhere: a NaN row)."""
    ctx = pyconv.ExecutionContext(num_threads=threads_)
    for n in [1, 2, 7, 8, 15, 16, 17, 31, 33, 100, 1000, 1025, 3000]:
        x = (rng.standard_normal((3, n)) * rng.choice([1, 30, 300], (3, 1))).astype(np.float32)
        x[1, :: max(1, n // 3)] = -np.inf
        x[1, -1] = 0.0                        # one finite value left in the row
        ref = _softmax_ref(x, 1)
        y = eltwise.softmax(x, context=ctx)
        np.testing.assert_allclose(y, ref, rtol=2e-6, atol=1e-30)
        d = x.astype(np.float64) - x.max(axis=1, keepdims=True)
        with np.errstate(invalid="ignore"):
            log_ref = d - np.log(np.exp(d).sum(axis=1, keepdims=True))
        np.testing.assert_allclose(eltwise.softmax(x, log=True, context=ctx), log_ref,
                                   rtol=2e-6, atol=2e-5)
    many = (rng.standard_normal((600, 64)) * 4).astype(np.float32)   # threads split rows
    np.testing.assert_allclose(eltwise.softmax(many, context=ctx), _softmax_ref(many, 1),
                               rtol=2e-6, atol=1e-30)
    special = np.array([[1, np.nan, 2], [1, np.inf, 2], [-np.inf, -np.inf, -np.inf]],
                       np.float32)
    for log in (False, True):
        got = eltwise.softmax(special, log=log, context=ctx)
        with np.errstate(invalid="ignore"):
            want = F._activation._softmax(special[:, :, None], 1, "softmax", log)[:, :, 0]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        assert np.isnan(got).all()
    x = rng.standard_normal((4, 9)).astype(np.float32)
    out = eltwise.softmax(x, out=x)                     # in place
    assert out is x and np.allclose(x.sum(axis=1), 1, rtol=1e-6)


def test_softmax_is_numerically_stable():
    x = np.array([[1000.0, 1001.0, -np.inf], [-1000.0, -1001.0, -1002.0]], np.float32)
    y = F.softmax(x, dim=1)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y[0], [1 / (1 + np.e), np.e / (1 + np.e), 0.0], rtol=1e-6)
    ls = F.log_softmax(x, dim=1)
    np.testing.assert_allclose(ls[1], np.log(_softmax_ref(x[1:], 1))[0], rtol=1e-6)
    assert ls[0, 2] == -np.inf and np.isfinite(ls[0, :2]).all()


def test_softmax_dim_errors_and_legacy_default():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(InvalidArgument, match=r"dim 2 is out of range .* 2 dims"):
        F.softmax(x, 2)
    with pytest.raises(InvalidArgument, match="dim must be an int"):
        F.log_softmax(x, 1.0)
    with pytest.warns(UserWarning, match="implicit dimension"):
        y = F.softmax(x)                     # torch's legacy rule: dim 1 for 2-D input
    np.testing.assert_allclose(y, 1 / 3, rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(F.softmax(np.float32(2.0) * np.ones((), np.float32), 0), 1.0)
        assert F.softmax(np.zeros((0, 4), np.float32), 1).shape == (0, 4)


def test_all_exports_are_callable():
    from pyconv.functional import _activation
    for name in _activation.__all__:
        assert callable(getattr(pyconv.functional, name)), name


# ---------------------------------------------------------------------------------------
# torch cross-check (optional)

def test_matches_torch(rng):
    torch = pytest.importorskip("torch", reason="torch not installed: optional cross-check")
    tf = torch.nn.functional
    x = np.concatenate([special_values()[:-2],
                        (rng.standard_normal(500) * 5).astype(np.float32)]).reshape(2, -1)
    t = torch.from_numpy(x)
    pairs = [
        (F.relu(x), tf.relu(t)), (F.relu6(x), tf.relu6(t)),
        (F.hardtanh(x, -2.0, 0.5), tf.hardtanh(t, -2.0, 0.5)),
        (F.leaky_relu(x, 0.1), tf.leaky_relu(t, 0.1)), (F.sigmoid(x), torch.sigmoid(t)),
        (F.hardsigmoid(x), tf.hardsigmoid(t)), (F.hardswish(x), tf.hardswish(t)),
        (F.tanh(x), torch.tanh(t)), (F.silu(x), tf.silu(t)), (F.elu(x, 1.3), tf.elu(t, 1.3)),
        (F.clip(x, -1.5, 2.5), torch.clip(t, -1.5, 2.5)), (F.clip(x, min=0.3), torch.clip(t, min=0.3)),
        (F.softmax(x, 1), tf.softmax(t, 1)), (F.softmax(x, 0), tf.softmax(t, 0)),
        (F.log_softmax(x, 1), tf.log_softmax(t, 1)), (F.log_softmax(x, -2), tf.log_softmax(t, -2)),
    ]
    for i, (ours, theirs) in enumerate(pairs):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-6, err_msg=str(i))


def test_prelu_is_the_onnx_prelu_per_channel():
    """F.prelu (torch's signature: one slope or one per channel of dim 1) against float64
    NumPy and the ONNX reference evaluator's PRelu, NaN passing through."""
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator
    from pyconv.errors import ShapeError
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    w = rng.uniform(0.1, 0.5, 3).astype(np.float32)
    got = F.prelu(x, w)
    x64 = x.astype(np.float64)
    want = np.where(x64 < 0, x64 * w.reshape(1, 3, 1, 1), x64)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.isnan(got[0, 0, 0, 0])
    slope = w.reshape(3, 1, 1)
    model = helper.make_model(helper.make_graph(
        [helper.make_node("PRelu", ["x", "s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)],
        [numpy_helper.from_array(slope, "s")]), opset_imports=[helper.make_opsetid("", 16)])
    np.testing.assert_array_equal(got, ReferenceEvaluator(model).run(None, {"x": x})[0])
    np.testing.assert_array_equal(F.prelu(x[0, 0, 0], np.float32([0.3])),
                                  np.where(x[0, 0, 0] < 0, x[0, 0, 0] * np.float32(0.3),
                                           x[0, 0, 0]))
    with pytest.raises(ShapeError, match=r"prelu: num_parameters=2 does not match the 3"):
        F.prelu(x, w[:2])
