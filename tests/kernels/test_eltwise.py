"""The element-wise engine (pyconv._ext.eltwise) on every ISA path of this CPU: each unary
function against a float64 reference over a sweep of every binade (zeros, denormals,
infinities, NaN, the largest floats) with a max-ulp bound; binary broadcasts against
NumPy; threads, out= and the bound calls."""
import math

import numpy as np
import pytest

import pyconv
from pyconv._ext import eltwise, gemm
from pyconv.errors import InvalidArgument, InvalidDType
from reference import _sigmoid, unary as reference

FLT_MIN = float(np.finfo(np.float32).tiny)
SELU = (1.6732632423543772, 1.0507009873554805)
PARAMS = {"clip": (-1.5, 2.5), "leaky_relu": (0.1, 0.0), "hardsigmoid": (0.2, 0.5),
          "elu": (1.0, 0.0), "selu": SELU}

# Max error in float32 ulps of the result (results >= FLT_MIN; below it, the denormal
# range, the error is at most FLT_MIN as with flush-to-zero). Measured on this sweep with
# some margin: the largest errors seen (AVX-512 / AVX2 / portable) are exp 0.86 / 0.86 /
# 1.14, sigmoid 1.77 / 1.77 / 2.48, tanh 2.26 / 2.26 / 2.99, silu 2.67 / 2.67 / 3.37, elu
# 0.92 / 0.92 / 0.87, selu 1.93 / 1.93 / 2.06, erf 2.31 / 2.31 / 2.23, gelu 6.07 / 6.07 /
# 6.81, gelu_tanh (x >= -2) 5.40 / 5.40 / 6.51, mish 4.52, softplus 2.75 (the x86 paths
# divide by a refined reciprocal estimate, the portable one exactly).
MAX_ULP = {"relu": 0, "clip": 0, "leaky_relu": 0.5, "hardsigmoid": 1.5, "hardswish": 2,
           "neg": 0, "abs": 0, "reciprocal": 0.5, "sqrt": 0.5,
           "exp": 1.5, "log": 1.5, "sigmoid": 3, "tanh": 3.5, "silu": 4, "elu": 2,
           "selu": 3, "erf": 3, "gelu": 8, "mish": 5, "softplus": 3, "gelu_tanh": 8}
# The tanh form of GELU in its negative tail (x < -2) is about x exp(2u) with
# u = sqrt(2/pi) (x + 0.044715 x^3): the float32 rounding of u (any float32 evaluation
# has it) is amplified by |2u| (up to 104), so there the bound is relative.
GELU_TANH_TAIL = (-2.0, 2e-5)


# The hard activations compute a x + b in float32 as the ONNX formulas do: next to its
# zero the rounding of that sum (up to one ulp of a |x|) is the error, not a fault.
def formula_rounding(name, x, a):
    ax = np.abs(np.float32(a) * x) if name == "hardsigmoid" else np.abs(x / np.float32(6))
    with np.errstate(invalid="ignore"):
        slack = np.spacing(ax).astype(np.float64) * (np.abs(x) if name == "hardswish" else 1.0)
    return np.where(np.isfinite(slack), slack, 0.0)


def float_sweep():
    """Every 4099th positive float (all binades, denormals included), random ones, a dense
    grid of [0, 20] (step 5e-5: the range where activations vary), both signs, and the
    special values."""
    rng = np.random.default_rng(7)
    bits = np.concatenate([np.arange(0, 0x7F800000, 4099, dtype=np.int64),
                           rng.integers(0, 0x7F800000, 50000)]).astype(np.uint32)
    pos = bits.view(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, FLT_MIN, 1e-45, 88.72283,
                        88.72284, -87.33655, -103.97, -104.0, 0.625, 0.921875, 20.0, -80.0,
                        np.finfo(np.float32).max], np.float32)
    pos = np.concatenate([pos, np.linspace(0, 20, 400001, dtype=np.float32)])
    return np.concatenate([pos, -pos, special, -special])


SWEEP = float_sweep()


def ulp_errors(y, ref):
    """(ulp errors of the normal results, mask of results wrong in kind, max |error| of
    the denormal-range results)."""
    y = y.astype(np.float64)
    with np.errstate(over="ignore"):
        r32 = ref.astype(np.float32)
    wrong = (np.isnan(y) != np.isnan(ref)) | ((np.isinf(r32) | np.isinf(y)) & (y != r32)
                                              & ~np.isnan(ref))
    finite = np.isfinite(r32) & np.isfinite(y)
    normal = finite & (np.abs(ref) >= FLT_MIN)
    with np.errstate(over="ignore"):    # the spacing above FLT_MAX
        ulp = np.spacing(np.abs(r32[normal])).astype(np.float64)
    err = np.abs(y[normal] - ref[normal]) / ulp
    tiny = finite & (np.abs(ref) < FLT_MIN)
    den = np.abs(y[tiny] - ref[tiny]).max() if tiny.any() else 0.0
    return err, normal, wrong, den


@pytest.mark.parametrize("name", sorted(MAX_ULP))
@pytest.mark.parametrize("isa_name", pyconv.supported_isas())
def test_unary_within_ulp_bound_over_all_floats(name, isa_name):
    a, b = PARAMS.get(name, (0.0, 0.0))
    a32, b32 = float(np.float32(a)), float(np.float32(b))
    x = SWEEP
    y = eltwise.unary(x, name, a, b, context=pyconv.ExecutionContext(isa=isa_name))
    ref = reference(name, x, a32, b32)
    err, normal, wrong, den = ulp_errors(y, ref)
    assert not wrong.any(), (name, x[wrong][:8], y[wrong][:8], ref[wrong][:8])
    assert den <= FLT_MIN, (name, den)
    xs = x[normal]
    if name == "gelu_tanh":
        tail = xs < GELU_TANH_TAIL[0]
        rel = np.abs(y[normal][tail] - ref[normal][tail]) / np.abs(ref[normal][tail])
        assert rel.max() <= GELU_TANH_TAIL[1]
        err = err[~tail]
        xs = xs[~tail]
    if name in ("hardsigmoid", "hardswish"):
        with np.errstate(over="ignore", invalid="ignore"):
            ulp = np.spacing(np.abs(ref[normal].astype(np.float32))).astype(np.float64)
            err = np.maximum(err - formula_rounding(name, xs, a) / ulp, 0)
    worst = int(np.argmax(err))
    assert err[worst] <= MAX_ULP[name], (name, float(xs[worst]), float(err[worst]))


def test_special_values(isa):
    ctx = pyconv.ExecutionContext()
    u = lambda name, v, *p: eltwise.unary(np.array(v, np.float32), name, *p, context=ctx)
    assert u("sigmoid", [-100.0])[0] == np.float32(_sigmoid(np.array(-100.0)))   # 3.7e-44
    assert u("sigmoid", [-200.0, -np.inf, np.inf]).tolist() == [0.0, 0.0, 1.0]
    assert u("tanh", [np.inf, -np.inf, 30.0, -0.0]).tolist() == [1.0, -1.0, 1.0, -0.0]
    assert np.signbit(u("tanh", [-0.0])[0]) and np.signbit(u("erf", [-0.0])[0])
    assert u("exp", [100.0, 88.8, -np.inf, np.inf, -200.0]).tolist() == [np.inf, np.inf, 0.0,
                                                                         np.inf, 0.0]
    assert u("erf", [np.inf, -np.inf, 12.0]).tolist() == [1.0, -1.0, 1.0]
    assert u("log", [0.0, -1.0, np.inf])[0] == -np.inf
    assert np.isnan(u("log", [-1.0])[0]) and u("log", [np.inf])[0] == np.inf
    assert u("gelu", [np.inf])[0] == np.inf and u("mish", [np.inf])[0] == np.inf
    assert u("softplus", [np.inf, -np.inf]).tolist() == [np.inf, 0.0]
    for name in sorted(eltwise.UNARY):
        if name != "none":
            assert np.isnan(u(name, [np.nan] * 19, *PARAMS.get(name, (0.0, 1.0)))).all(), name


@pytest.mark.parametrize("name", sorted(set(gemm.ACTIVATIONS) - {"none"}))
def test_gemm_epilogue_is_the_engine(isa, rng, name):
    """The conv / GEMM epilogue and the standalone op give the same bits."""
    x = (rng.standard_normal(1000) * 4).astype(np.float32)
    a, b = PARAMS.get(name, (0.0, 0.0))
    fused = gemm.apply_activation(x.copy(), name, a, b)
    np.testing.assert_array_equal(fused, eltwise.unary(x, name, a, b))


def test_threads_split_large_tensors_and_match_one_thread(rng):
    x = (rng.standard_normal((3, 64, 97, 53)) * 3).astype(np.float32)   # 1M floats
    one = eltwise.unary(x, "gelu", context=pyconv.ExecutionContext(num_threads=1))
    two = eltwise.unary(x, "gelu", context=pyconv.ExecutionContext(num_threads=2))
    np.testing.assert_array_equal(one, two)
    c = (rng.standard_normal((64, 1, 1))).astype(np.float32)
    for op in ("add", "mul", "sub", "div"):
        y1 = eltwise.binary(x, c, op, context=pyconv.ExecutionContext(num_threads=1))
        y2 = eltwise.binary(x, c, op, context=pyconv.ExecutionContext(num_threads=2))
        np.testing.assert_array_equal(y1, y2)


def test_unary_out_and_in_place(rng):
    x = rng.standard_normal((5, 7)).astype(np.float32)
    want = eltwise.unary(x, "tanh")
    out = np.empty_like(x)
    assert eltwise.unary(x, "tanh", out=out) is out
    np.testing.assert_array_equal(out, want)
    y = x.copy()
    assert eltwise.unary(y, "tanh", out=y) is y
    np.testing.assert_array_equal(y, want)
    big = np.zeros(40, np.float32)
    with pytest.raises(InvalidArgument, match="overlaps"):
        eltwise.unary(big[:35], "tanh", out=big[5:])
    with pytest.raises(InvalidArgument, match="shape"):
        eltwise.unary(x, "tanh", out=np.empty((7, 5), np.float32))
    with pytest.raises(InvalidArgument, match="unknown 'tahn'"):
        eltwise.unary(x, "tahn")
    # strided input: read through a contiguous copy
    np.testing.assert_array_equal(eltwise.unary(x.T, "tanh"), want.T)


NUMPY_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
                "max": np.maximum, "min": np.minimum, "pow": np.power}

BROADCASTS = [
    ((2, 3, 4, 5), (2, 3, 4, 5)),       # same shape
    ((2, 3, 4, 5), ()),                 # scalar
    ((2, 3, 4, 5), (1,)),
    ((), (2, 3, 4, 5)),                 # scalar on the left
    ((2, 3, 4, 5), (3, 1, 1)),          # per channel (NCHW)
    ((2, 3, 4, 5), (1, 3, 1, 1)),
    ((3, 1, 1), (2, 3, 4, 5)),          # per channel on the left
    ((2, 3, 4, 5), (5,)),               # last axis (a bias)
    ((2, 3, 4, 5), (4, 5)),
    ((2, 3, 4, 5), (3, 4, 1)),          # a block of middle dims
    ((2, 3, 1, 5), (3, 1, 5)),          # output dims of 1 inside the block
    ((1, 3, 37, 41), (1, 3, 1, 1)),     # rows that are not a multiple of the vector width
]


@pytest.mark.parametrize("op", sorted(NUMPY_BINARY))
@pytest.mark.parametrize("sa,sb", BROADCASTS, ids=str)
def test_binary_broadcasts_match_numpy(isa, rng, op, sa, sb):
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    if op == "pow":
        a = np.asarray(np.abs(a) + np.float32(0.1))
    y = eltwise.binary(a, b, op)
    with np.errstate(all="ignore"):
        want = NUMPY_BINARY[op](a, b)
    assert y.shape == want.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=0)
    if op != "pow":
        np.testing.assert_array_equal(y, want)


def test_binary_uncovered_broadcasts_return_none(rng):
    a = rng.standard_normal((3, 1)).astype(np.float32)
    b = rng.standard_normal((1, 4)).astype(np.float32)
    assert eltwise.binary(a, b, "add") is None                      # outer product
    c = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    assert eltwise.binary(c, rng.standard_normal((3, 1, 5)).astype(np.float32), "add") is None
    assert eltwise.binary(c, c.astype(np.float64), "add") is None  # not float32
    assert eltwise.binary(c, rng.standard_normal(4).astype(np.float32), "add") is None


def test_binary_special_values_follow_numpy(isa):
    v = np.array([np.nan, 1.0, -np.inf, np.inf, 0.0, -0.0, 3.0, np.nan, 2.0], np.float32)
    w = np.array([1.0, np.nan, 5.0, np.nan, -0.0, 0.0, np.inf, np.nan, -2.0], np.float32)
    with np.errstate(all="ignore"):
        for op in ("add", "sub", "mul", "div", "max", "min"):
            y = eltwise.binary(v, w, op)
            want = NUMPY_BINARY[op](v, w)
            np.testing.assert_array_equal(np.isnan(y), np.isnan(want), err_msg=op)
            ok = ~np.isnan(want)
            assert (y[ok] == want[ok]).all(), op
        x = np.array([-0.0, 0.0, -np.inf, np.inf, 4.0, -4.0, 1e-45, np.nan], np.float32)
        for e in (2.0, 0.5, 1.0, 3.0, -1.0):
            y = eltwise.binary(x, np.array(e, np.float32), "pow")
            want = np.power(x, np.float32(e))
            np.testing.assert_array_equal(y, want, err_msg=str(e))
            np.testing.assert_array_equal(np.signbit(y), np.signbit(want), err_msg=str(e))


def test_binary_out_in_place_and_overlap(rng):
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    c = rng.standard_normal((3, 1)).astype(np.float32)
    want = a + c
    y = a.copy()
    assert eltwise.binary(y, c, "add", out=y) is y                 # in place on the full side
    np.testing.assert_array_equal(y, want)
    big = np.zeros(30, np.float32)
    big[:24] = a.ravel()
    # out overlapping the input without being it: a new array is returned
    out = big[1:25].reshape(2, 3, 4)
    r = eltwise.binary(big[:24].reshape(2, 3, 4), c, "add", out=out)
    assert r is not out
    np.testing.assert_array_equal(r, want)


def test_bound_calls_run_and_fall_back(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    out = np.empty_like(x)
    calls = []

    def run(inputs, o):
        calls.append(o)
        return ["fallback"]

    u = eltwise.UnaryCall("sigmoid", x.shape, out, run)
    assert u([x])[0] is out
    np.testing.assert_array_equal(out, eltwise.unary(x, "sigmoid"))
    assert u([x.astype(np.float64)]) == ["fallback"]                 # not the planned input
    assert u([x[:1]]) == ["fallback"]
    c = rng.standard_normal((3, 1)).astype(np.float32)
    bc = eltwise.BinaryCall("mul", x.shape, c.shape, out, run)
    assert bc([x, c])[0] is out
    np.testing.assert_array_equal(out, x * c)
    assert bc([x, c.ravel()]) == ["fallback"]
    with pytest.raises(InvalidArgument):
        eltwise.BinaryCall("mul", (3, 1), (1, 4), None, run)


def test_empty_tensors():
    x = np.empty((0, 3), np.float32)
    assert eltwise.unary(x, "exp").shape == (0, 3)
    assert eltwise.binary(x, np.ones(3, np.float32), "add").shape == (0, 3)


# ---------------------------------------------------------------------------------------
# Row standardisation (the normalisation ops' kernel)

def standardize_reference(x, eps, scale, bias):
    """float64: (x - mean) / sqrt(var + eps), then scale / bias of shape (P, K)."""
    x = x.astype(np.float64)
    mean = x.mean(1, keepdims=True)
    inv = 1 / np.sqrt(np.square(x - mean).mean(1, keepdims=True) + eps)
    y = (x - mean) * inv
    rows, cols = x.shape
    for p, apply in ((scale, np.multiply), (bias, np.add)):
        if p is not None:
            runs = y.reshape(rows // p.shape[0], p.shape[0], p.shape[1], cols // p.shape[1])
            y = apply(runs, p.astype(np.float64)[None, :, :, None]).reshape(rows, cols)
    return y, mean, inv


@pytest.mark.parametrize("rows,cols,params", [
    (196, 768, (1, 768)),       # LayerNormalization: per column
    (12, 96, (1, 96)),
    (64, 4 * 49, (16, 4)),      # GroupNormalization (opset 21): per channel runs
    (6, 37, (3, 1)),            # per row (InstanceNormalization, GroupNormalization 18)
    (5, 37, None),
    (3, 1, (1, 1)),             # one value per row: y = bias
    (2, 3000, None),            # several summation blocks
])
@pytest.mark.parametrize("isa_name", pyconv.supported_isas())
def test_standardize_matches_float64(rng, isa_name, rows, cols, params):
    x = (rng.standard_normal((rows, cols)) * 3 + 7).astype(np.float32)
    scale = bias = None
    if params is not None:
        scale = rng.standard_normal(params).astype(np.float32)
        bias = rng.standard_normal(params).astype(np.float32)
    ctx = pyconv.ExecutionContext(isa=isa_name)
    y, mean, inv = eltwise.standardize(x, 1e-5, scale, bias, context=ctx)
    want, want_mean, want_inv = standardize_reference(x, 1e-5, scale, bias)
    assert y.dtype == np.float32 and mean.shape == inv.shape == (rows, 1)
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-6 * max(np.abs(want).max(), 1))
    np.testing.assert_allclose(mean, want_mean, rtol=1e-7)
    np.testing.assert_allclose(inv, want_inv, rtol=1e-6)
    # scale only, bias only
    y, _, _ = eltwise.standardize(x, 1e-5, scale, None, context=ctx)
    np.testing.assert_allclose(y, standardize_reference(x, 1e-5, scale, None)[0], atol=1e-5)
    y, _, _ = eltwise.standardize(x, 1e-5, None, bias, context=ctx)
    np.testing.assert_allclose(y, standardize_reference(x, 1e-5, None, bias)[0], atol=1e-5)


def test_standardize_large_offset_constant_rows_and_threads(rng):
    # mean 1e4, spread 1: the centred pass keeps the variance accurate
    x = (rng.standard_normal((4, 4096)) + 1e4).astype(np.float32)
    y, _, _ = eltwise.standardize(x, 1e-5)
    np.testing.assert_allclose(y, standardize_reference(x, 1e-5, None, None)[0], atol=2e-3)
    # a constant row: variance 0, y = 0; eps 0 gives inf / NaN as onnxruntime
    c = np.full((2, 50), 3.0, np.float32)
    y, mean, inv = eltwise.standardize(c, 1e-5)
    assert (y == 0).all() and (mean == 3).all()
    with np.errstate(all="ignore"):
        y, _, inv = eltwise.standardize(c, 0.0)
    assert np.isinf(inv).all() and np.isnan(y).all()
    # split over threads by rows: the same bits
    x = rng.standard_normal((300, 777)).astype(np.float32)
    s = rng.standard_normal((1, 777)).astype(np.float32)
    one = eltwise.standardize(x, 1e-5, s, s, context=pyconv.ExecutionContext(num_threads=1))
    two = eltwise.standardize(x, 1e-5, s, s, context=pyconv.ExecutionContext(num_threads=2))
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    # in place
    z = x.copy()
    assert eltwise.standardize(z, 1e-5, s, s, out=z)[0] is z
    np.testing.assert_array_equal(z, one[0])


@pytest.mark.parametrize("n,c,p", [
    (1, 40, 1024),              # ConvNeXt's stem: whole blocks of 4 vectors
    (2, 80, 63),                # single vectors and a column tail
    (1, 130, 5),                # more rows than one float block, columns under a vector
    (3, 1, 17),                 # one channel: y = bias
])
@pytest.mark.parametrize("isa_name", pyconv.supported_isas())
def test_standardize_columns_matches_float64(rng, isa_name, n, c, p):
    """Channels-first layer norm: the columns of each (C, P) image against the rows of its
    transpose in float64, with per-channel scale and bias."""
    x = (rng.standard_normal((n, c, p)) * 3 + 7).astype(np.float32)
    scale = rng.standard_normal(c).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    ctx = pyconv.ExecutionContext(isa=isa_name)
    rows = x.transpose(0, 2, 1).reshape(n * p, c)
    for s, b in ((scale, bias), (None, bias), (scale, None), (None, None)):
        y, mean, inv = eltwise.standardize_columns(x, 1e-5, s, b, context=ctx)
        want, want_mean, want_inv = standardize_reference(
            rows, 1e-5, None if s is None else s.reshape(1, c),
            None if b is None else b.reshape(1, c))
        want = want.reshape(n, p, c).transpose(0, 2, 1)
        assert y.dtype == np.float32 and y.shape == x.shape and mean.shape == (n, p)
        np.testing.assert_allclose(y, want, rtol=0, atol=1e-6 * max(np.abs(want).max(), 1))
        np.testing.assert_allclose(mean.reshape(-1, 1), want_mean, rtol=1e-7)
        np.testing.assert_allclose(inv.reshape(-1, 1), want_inv, rtol=1e-6)


def test_standardize_columns_threads_offset_and_errors(rng):
    x = (rng.standard_normal((2, 96, 300)) + 1e4).astype(np.float32)
    s = rng.standard_normal(96).astype(np.float32)
    one = eltwise.standardize_columns(x, 1e-5, s, s,
                                      context=pyconv.ExecutionContext(num_threads=1))
    two = eltwise.standardize_columns(x, 1e-5, s, s,
                                      context=pyconv.ExecutionContext(num_threads=2))
    for a, b in zip(one, two):          # split over threads by columns: the same bits
        np.testing.assert_array_equal(a, b)
    rows = x.transpose(0, 2, 1).reshape(-1, 96)
    want = standardize_reference(rows, 1e-5, s.reshape(1, 96), s.reshape(1, 96))[0]
    np.testing.assert_allclose(one[0], want.reshape(2, 300, 96).transpose(0, 2, 1), atol=2e-3)
    with pytest.raises(InvalidArgument, match=r"scale of shape \(4,\): expected \(96,\)"):
        eltwise.standardize_columns(x, 1e-5, np.ones(4, np.float32))
    with pytest.raises(InvalidArgument, match="no mean"):
        eltwise.standardize_columns(np.zeros((1, 0, 3), np.float32), 1e-5)
    with pytest.raises(InvalidDType):
        eltwise.standardize_columns(np.zeros((4, 3), np.float32), 1e-5)


def test_standardize_errors():
    x = np.zeros((4, 6), np.float32)
    with pytest.raises(InvalidArgument, match=r"scale of shape \(3, 1\)"):
        eltwise.standardize(x, 1e-5, np.ones((3, 1), np.float32))     # 3 does not divide 4
    with pytest.raises(InvalidArgument, match=r"bias of shape \(1, 4\)"):
        eltwise.standardize(x, 1e-5, None, np.ones((1, 4), np.float32))
    with pytest.raises(InvalidArgument, match="differ"):
        eltwise.standardize(x, 1e-5, np.ones((1, 6), np.float32), np.ones((2, 1), np.float32))
    with pytest.raises(InvalidArgument, match="no mean"):
        eltwise.standardize(np.zeros((4, 0), np.float32), 1e-5)
    with pytest.raises(InvalidDType):
        eltwise.standardize(np.zeros(4, np.float32), 1e-5)
