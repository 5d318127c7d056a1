"""Pooling vs the naive reference (tests/reference.py), ONNX, onnxruntime and torch.

Every sliding-window case runs through the N-d entry points (per-side pads, ONNX
semantics) and, where torch's padding rule allows it, through the torch-style functions.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from _helpers import rand
import reference as R
import pyconv
import pyconv.functional as F
from pyconv import arithmetic
from pyconv.errors import InvalidArgument, InvalidDType, ShapeError

TORCH_REASON = "torch is not installed (optional cross-check; CI runs without it)"
ONNX_REASON = "onnx is not installed (optional cross-check)"
ORT_REASON = "onnxruntime is not installed (optional cross-check)"

MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
LP = {1: F.lp_pool1d, 2: F.lp_pool2d, 3: F.lp_pool3d}
AAVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
AMAX = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}
UNPOOL = {1: F.max_unpool1d, 2: F.max_unpool2d, 3: F.max_unpool3d}


def assert_sum_close(got, ref, rtol=1e-5):
    """Sums / means of float32 against a float64 reference (NaN where the reference is)."""
    ref = np.asarray(ref)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=1e-6)


def assert_max_equal(got, ref):
    """Max pooling is exact: same values (NaN and -inf included)."""
    ref = np.asarray(ref)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref.astype(np.float32))


# (batch, channels, spatial, kernel, stride, pads_begin, pads_end, dilation, ceil_mode)
CASES = [
    (2, 3, (9, 7), 3, 2, 1, 1, 1, False),                     # MaxPool 3x3/2 pad 1
    (2, 3, (9, 7), 3, 2, 1, 1, 1, True),
    (2, 24, (9, 7), 2, 2, 0, 0, 1, True),                     # AvgPool 2x2/2, ceil
    (2, 16, (25, 33), 3, 1, 1, 1, 1, False),                  # stride 1: contiguous loops
    (2, 1, (25, 33), (3, 2), (2, 3), (1, 0), (2, 1), (1, 2), True),  # asymmetric everything
    (2, 13, (9, 7), 2, 1, 0, 0, 2, False),                    # dilated
    (2, 3, (25, 33), 5, 3, (2, 2), (4, 3), 1, True),          # pads up to kernel - 1
    (2, 3, (9, 7), (4, 1), 1, (3, 0), (0, 0), 1, False),      # 1-wide kernel
    (2, 13, (9, 7), 3, 4, 1, 1, 1, True),                     # stride > kernel
    (2, 16, (25, 33), 7, 2, 3, 3, 1, False),                  # 7 rows: chunked vertical pass
    (2, 3, (2, 3), 2, 1, 1, 1, 3, False),                     # windows of padding only
    (2, 3, (3, 2), 3, 1, 1, 1, 1, False),                     # no interior column at all
    (1, 1, (25, 33), 3, 2, 1, 1, 1, True),                    # 1 plane: rows split
    (2, 3, (31,), 5, 3, 2, 4, 2, True),                       # 1-D
    (2, 16, (9,), 2, 2, 0, 0, 1, True),
    (2, 24, (33,), 3, 1, 1, 1, 1, False),
    (2, 3, (5, 6, 7), (2, 3, 2), (1, 2, 1), (1, 1, 0), (0, 1, 1), (2, 1, 1), False),  # 3-D
    (2, 13, (4, 5, 6), 3, 2, 1, 1, 1, True),                  # 3x3x3: 9 rows per window
]


def case_id(c):
    n, ch, sp, k, s, pb, pe, d, ceil = c
    return (f"n{n}c{ch}-{'x'.join(map(str, sp))}-k{k}-s{s}-p{pb}_{pe}-d{d}"
            + ("-ceil" if ceil else "")).replace(" ", "")


def geometry(case):
    """Per-axis tuples (kernel, stride, pads_begin, pads_end, dilation) of a case."""
    n, ch, sp, k, s, pb, pe, d, ceil = case
    nd = len(sp)
    return tuple(arithmetic.normalize_tuple(v, nd, "v", minimum=0) for v in (k, s, pb, pe, d))


def torch_padding(case):
    """The case's symmetric padding when torch's rule (pad <= kernel // 2) allows it."""
    k, s, pb, pe, d = geometry(case)
    if pb != pe or any(p > ki // 2 for p, ki in zip(pb, k)):
        return None
    return pb


# --- sliding windows vs the reference -------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_max_pool_matches_reference(threads, rng, case):
    n, ch, sp, *_, ceil = case
    k, s, pb, pe, d = geometry(case)
    x = rand(rng, n, ch, *sp)
    ref, ref_idx = R.max_pool_nd(x, k, s, pb, pe, d, ceil)
    y = F.max_pool(x, k, s, pb, pe, d, ceil)
    assert_max_equal(y, ref)
    y, idx = F.max_pool(x, k, s, pb, pe, d, ceil, indices="torch")
    assert_max_equal(y, ref)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ref_idx)
    # ONNX Indices: flattened over the whole NC... tensor (storage_order 0)
    _, onnx_idx = F.max_pool(x, k, s, pb, pe, d, ceil, indices="onnx")
    plane = math.prod(sp)
    offsets = (np.arange(n * ch) * plane).reshape((n, ch) + (1,) * len(sp))
    np.testing.assert_array_equal(onnx_idx, np.where(ref_idx >= 0, ref_idx + offsets, -1))
    if torch_padding(case) is not None:
        y2, idx2 = MAX[len(sp)](x, k, s, torch_padding(case), d, ceil, return_indices=True)
        assert_max_equal(y2, ref)
        np.testing.assert_array_equal(idx2, ref_idx)


@pytest.mark.parametrize("count_include_pad", [True, False], ids=["incl_pad", "excl_pad"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_avg_pool_matches_reference(threads, rng, case, count_include_pad):
    n, ch, sp, *_, ceil = case
    k, s, pb, pe, d = geometry(case)
    x = rand(rng, n, ch, *sp)
    ref = R.avg_pool_nd(x, k, s, pb, pe, d, ceil, count_include_pad)
    assert_sum_close(F.avg_pool(x, k, s, pb, pe, d, ceil, count_include_pad), ref)
    if torch_padding(case) is not None and d == (1,) * len(sp):
        got = AVG[len(sp)](x, k, s, torch_padding(case), ceil, count_include_pad)
        assert_sum_close(got, ref)


@pytest.mark.parametrize("p", [1, 2, 3.5])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_lp_pool_matches_reference(threads, rng, case, p):
    n, ch, sp, *_, ceil = case
    k, s, pb, pe, d = geometry(case)
    x = rand(rng, n, ch, *sp)
    ref = R.lp_pool_nd(x, p, k, s, pb, pe, d, ceil)
    assert_sum_close(F.lp_pool(x, k, p, s, pb, pe, d, ceil), ref, rtol=2e-5)
    if pb == pe == (0,) * len(sp) and d == (1,) * len(sp):
        assert_sum_close(LP[len(sp)](x, p, k, s, ceil), ref, rtol=2e-5)


def test_avg_pool_divisor_override(rng):
    x = np.abs(rand(rng, 2, 3, 9, 7)) + 0.1
    total = R.lp_pool_nd(x, 1, 3, 2, 1, 1, 1, True)         # p = 1 on x > 0: window sums
    assert_sum_close(F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, divisor_override=5), total / 5)
    assert_sum_close(F.avg_pool(x, 3, 2, 1, 1, ceil_mode=True, divisor_override=2.5),
                     total / 2.5)
    x1 = x[:, :, 0]                                            # 1-D: (2, 3, 7)
    assert_sum_close(F.avg_pool1d(x1, 3, 2, 1, divisor_override=-2),
                     R.lp_pool_nd(x1, 1, 3, 2, 1, 1) / -2)


def test_windows_of_padding_only(rng):
    """Dilation can give windows with no input element: -inf / index -1 for max, NaN for
    an average that counts only input elements, 0 for one that counts the padding."""
    x = rand(rng, 1, 2, 2)
    y, idx = F.max_pool(x, 2, 1, 1, 1, 3, indices="torch")       # taps at -1 and 2
    assert y.shape == (1, 2, 1)
    assert np.all(y == -np.inf) and np.all(idx == -1)
    assert np.all(np.isnan(F.avg_pool(x, 2, 1, 1, 1, 3, count_include_pad=False)))
    assert np.all(F.avg_pool(x, 2, 1, 1, 1, 3, count_include_pad=True) == 0)


def test_max_pool_nan_and_inf_follow_torch(threads, rng):
    x = rand(rng, 2, 3, 9, 7)
    x[0, 0, 2, 3] = np.nan
    x[0, 1, 4:6, 2] = np.nan                      # two NaNs in a window: the last one wins
    x[1, 2] = -np.inf                             # all -inf: the first tap inside
    x[1, 1, 0, :] = np.inf
    for ceil in (False, True):
        ref, ref_idx = R.max_pool_nd(x, 3, 2, 1, 1, 1, ceil)
        y, idx = F.max_pool2d(x, 3, 2, 1, ceil_mode=ceil, return_indices=True)
        assert_max_equal(y, ref)
        np.testing.assert_array_equal(idx, ref_idx)
        assert_max_equal(F.max_pool2d(x, 3, 2, 1, ceil_mode=ceil), ref)
    # NaN in every row layout the kernels take (single row, chunked rows, stride 1)
    for k, s in ((1, 1), (3, 1), (7, 2), ((3, 1), 2)):
        ref, ref_idx = R.max_pool_nd(x, k, s)
        y, idx = F.max_pool2d(x, k, s, return_indices=True)
        assert_max_equal(y, ref)
        assert_max_equal(F.max_pool2d(x, k, s), ref)
        np.testing.assert_array_equal(idx, ref_idx)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_same_and_valid_padding(rng, nd):
    sp = (9, 7, 5)[:nd]
    x = rand(rng, 2, 3, *sp)
    y = MAX[nd](x, 3, 2, "same")
    assert y.shape[2:] == tuple(math.ceil(i / 2) for i in sp)
    pb, pe = arithmetic.resolve_padding("same", nd, sp, 3, 2)
    assert_max_equal(y, R.max_pool_nd(x, 3, 2, pb, pe)[0])
    assert_max_equal(MAX[nd](x, 3, 2, "valid"), R.max_pool_nd(x, 3, 2)[0])
    assert_sum_close(AVG[nd](x, 2, 1, "SAME", count_include_pad=False),
                     R.avg_pool_nd(x, 2, 1, 0, 1, 1, False, False))


def test_unbatched_and_strided_inputs(rng):
    x = rand(rng, 3, 9, 7)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    ref, ref_idx = R.max_pool_nd(x[None], 2)
    assert_max_equal(y, ref[0])
    np.testing.assert_array_equal(idx, ref_idx[0])
    assert F.avg_pool1d(x[0], 3).shape == (9, 2)
    big = rand(rng, 2, 6, 18, 7)
    view = big[:, ::2, ::2, :]                      # not contiguous
    assert_max_equal(F.max_pool2d(view, 3, 1, 1), R.max_pool_nd(view, 3, 1, 1, 1)[0])
    as_list = F.avg_pool1d([[[1.0, 2.0, 3.0, 4.0]]], 2)
    np.testing.assert_array_equal(as_list, np.array([[[1.5, 3.5]]], np.float32))


def test_preallocated_outputs(threads, rng):
    x = rand(rng, 2, 13, 9, 7)
    ref, ref_idx = R.max_pool_nd(x, 3, 2, 1, 1, 1, True)
    out = np.full(ref.shape, 7.0, np.float32)
    out_idx = np.full(ref.shape, 7, np.int64)
    y, idx = F.max_pool(x, 3, 2, 1, 1, 1, True, "onnx", out=out, out_indices=out_idx)
    assert y is out and idx is out_idx
    assert_max_equal(out, ref)
    np.testing.assert_array_equal(out_idx, F.max_pool(x, 3, 2, 1, 1, 1, True, "onnx")[1])
    avg = np.empty((2, 13, 5, 4), np.float32)
    assert F.avg_pool(x, 3, 2, 1, 1, 1, True, True, out=avg) is avg
    assert_sum_close(avg, R.avg_pool_nd(x, 3, 2, 1, 1, 1, True, True))
    assert F.lp_pool(x, 3, 2, 2, 1, 1, 1, True, out=avg) is avg
    assert_sum_close(avg, R.lp_pool_nd(x, 2, 3, 2, 1, 1, 1, True), rtol=2e-5)


@pytest.mark.parametrize("bad,match", [
    (np.empty((2, 13, 4, 4), np.float32), r"\(2, 13, 5, 4\), got float32 array of shape "
                                          r"\(2, 13, 4, 4\)"),
    (np.empty((2, 13, 5, 4), np.float64), r"got float64 array"),
    (np.empty((2, 13, 4, 5), np.float32).transpose(0, 1, 3, 2), r"not C-contiguous"),
    ([0.0] * 520, r"got list"),
], ids=["shape", "dtype", "strides", "list"])
def test_preallocated_output_errors(rng, bad, match):
    x = rand(rng, 2, 13, 9, 7)
    with pytest.raises(InvalidArgument, match=r"avg_pool: out must be a writeable "
                                              r"C-contiguous float32 array of shape .*" + match):
        F.avg_pool(x, 3, 2, 1, 1, ceil_mode=True, out=bad)


def test_preallocated_output_misuse(rng):
    x = rand(rng, 2, 3, 8, 8)
    ro = np.empty((2, 3, 4, 4), np.float32)
    ro.flags.writeable = False
    with pytest.raises(InvalidArgument, match=r"max_pool: out must be .* got float32 array of "
                                              r"shape \(2, 3, 4, 4\), read-only"):
        F.max_pool(x, 2, 2, out=ro)
    with pytest.raises(InvalidArgument, match=r"max_pool: out_indices needs indices='torch'"):
        F.max_pool(x, 2, 2, out_indices=np.empty((2, 3, 4, 4), np.int64))
    with pytest.raises(InvalidArgument, match=r"max_pool: out_indices must be .* int64"):
        F.max_pool(x, 2, 2, indices="torch", out_indices=np.empty((2, 3, 4, 4), np.int32))
    with pytest.raises(InvalidArgument, match=r"avg_pool: out overlaps the input x"):
        F.avg_pool(x, (1, 2), (1, 2), out=x.reshape(-1)[:192].reshape(2, 3, 8, 4))


def test_thread_counts_give_identical_results(rng):
    x = rand(rng, 1, 1, 61, 45)                     # one plane: rows split across threads
    xs = rand(rng, 2, 13, 25, 33)
    previous = pyconv.get_num_threads()
    outs = []
    try:
        for t in (1, 2, 3):
            pyconv.set_num_threads(t)
            outs.append([F.max_pool2d(x, 3, 2, 1, return_indices=True)[1],
                         F.avg_pool2d(xs, 3, 1, 1), F.lp_pool2d(xs, 2, 3, 2),
                         F.adaptive_avg_pool2d(xs, (5, 7)), F.global_avg_pool(xs),
                         F.max_unpool2d(*F.max_pool2d(xs, 2, return_indices=True), 2,
                                        output_size=(25, 33))])
    finally:
        pyconv.set_num_threads(previous)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_array_equal(a, b)


# --- random geometry (hypothesis) -----------------------------------------------------------

@st.composite
def pool_geometry(draw):
    nd = draw(st.integers(1, 3))
    k, s, d, pb, pe, sp = [], [], [], [], [], []
    for _ in range(nd):
        ki, di = draw(st.integers(1, 4)), draw(st.integers(1, 3))
        b, e = draw(st.integers(0, ki - 1)), draw(st.integers(0, ki - 1))
        least = max(1, (ki - 1) * di + 1 - b - e)
        k.append(ki), d.append(di), pb.append(b), pe.append(e)
        s.append(draw(st.integers(1, 4)))
        sp.append(draw(st.integers(least, least + (7 if nd < 3 else 4))))
    return dict(nd=nd, sp=tuple(sp), k=tuple(k), s=tuple(s), pb=tuple(pb), pe=tuple(pe),
                d=tuple(d), ceil=draw(st.booleans()), n=draw(st.integers(1, 2)),
                c=draw(st.sampled_from([1, 2, 3])), threads=draw(st.sampled_from([1, 2])),
                seed=draw(st.integers(0, 2**32 - 1)))


def _with_threads(t, fn):
    previous = pyconv.get_num_threads()
    pyconv.set_num_threads(t)
    try:
        return fn()
    finally:
        pyconv.set_num_threads(previous)


@settings(max_examples=60, deadline=None)
@given(g=pool_geometry())
def test_random_geometry_matches_reference(g):
    rng = np.random.default_rng(g["seed"])
    x = rand(rng, g["n"], g["c"], *g["sp"])
    geo = (g["k"], g["s"], g["pb"], g["pe"], g["d"], g["ceil"])
    out = arithmetic.pool_output_shape(g["sp"], g["k"], g["s"], g["pb"], g["pe"], g["d"],
                                       g["ceil"])
    y, idx = _with_threads(g["threads"], lambda: F.max_pool(x, *geo, indices="torch"))
    ref, ref_idx = R.max_pool_nd(x, *geo)
    assert y.shape[2:] == out
    assert_max_equal(y, ref)
    np.testing.assert_array_equal(idx, ref_idx)
    for cip in (True, False):
        got = _with_threads(g["threads"], lambda: F.avg_pool(x, *geo, count_include_pad=cip))
        assert_sum_close(got, R.avg_pool_nd(x, *geo, cip))
    got = _with_threads(g["threads"], lambda: F.lp_pool(x, g["k"], 2, *geo[1:]))
    assert_sum_close(got, R.lp_pool_nd(x, 2, *geo), rtol=2e-5)


@settings(max_examples=40, deadline=None)
@given(nd=st.integers(1, 3), data=st.data())
def test_random_adaptive_and_unpool_match_reference(nd, data):
    sp = tuple(data.draw(st.integers(1, 9)) for _ in range(nd))
    out = tuple(data.draw(st.integers(1, 10)) for _ in range(nd))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rand(rng, 2, 2, *sp)
    assert_sum_close(F.adaptive_avg_pool(x, out), R.adaptive_avg_pool_nd(x, out))
    y, idx = F.adaptive_max_pool(x, out, return_indices=True)
    ref, ref_idx = R.adaptive_max_pool_nd(x, out)
    assert_max_equal(y, ref)
    np.testing.assert_array_equal(idx, ref_idx)
    # unpool the adaptive maxima back into the input shape (duplicates: the last wins)
    np.testing.assert_array_equal(F.max_unpool(y, idx, sp),
                                  R.max_unpool_nd(y, idx, sp).astype(np.float32))


# --- adaptive and global ----------------------------------------------------------------------

ADAPTIVE = [((9, 7), (3, 2)), ((25, 33), (7, 7)), ((9, 7), (9, 7)), ((5, 4), (7, 9)),
            ((25, 33), (1, 1)), ((31,), (4,)), ((33,), (1,)), ((5, 6, 7), (2, 3, 4)),
            ((4, 5, 6), (1, 1, 1))]


@pytest.mark.parametrize("channels", [1, 13, 24])
@pytest.mark.parametrize("sp,out", ADAPTIVE, ids=lambda v: "x".join(map(str, v)))
def test_adaptive_pools_match_reference(threads, rng, sp, out, channels):
    nd = len(sp)
    x = rand(rng, 2, channels, *sp)
    assert_sum_close(AAVG[nd](x, out), R.adaptive_avg_pool_nd(x, out))
    y, idx = AMAX[nd](x, out, return_indices=True)
    ref, ref_idx = R.adaptive_max_pool_nd(x, out)
    assert_max_equal(y, ref)
    assert_max_equal(AMAX[nd](x, out), ref)
    np.testing.assert_array_equal(idx, ref_idx)


def test_adaptive_output_size_none_keeps_the_input_size(rng):
    x = rand(rng, 2, 3, 9, 7)
    y = F.adaptive_avg_pool2d(x, (None, 3))
    assert y.shape == (2, 3, 9, 3)
    assert_sum_close(y, R.adaptive_avg_pool_nd(x, (9, 3)))
    assert F.adaptive_max_pool2d(x, 4).shape == (2, 3, 4, 4)


@pytest.mark.parametrize("sp", [(9,), (9, 7), (10, 10), (16, 16), (25, 33), (4, 5, 6), (2, 3, 2, 3)],
                         ids=lambda v: "x".join(map(str, v)))
def test_global_pools_match_reference(threads, rng, sp):
    x = rand(rng, 2, 16, *sp) + 3.0
    y = F.global_avg_pool(x)
    assert y.shape == (2, 16) + (1,) * len(sp)
    assert_sum_close(y, R.global_avg_pool(x))
    assert_max_equal(F.global_max_pool(x), R.global_max_pool(x))


def test_global_pools_large_plane_nan_and_inf(rng):
    x = rand(rng, 1, 3, 112, 112) + 100.0            # sums of 12544 values stay accurate
    np.testing.assert_allclose(F.global_avg_pool(x), R.global_avg_pool(x), rtol=1e-6)
    x[0, 1, 100, 5] = np.nan
    x[0, 2, 3, 111] = np.inf
    y = F.global_max_pool(x).ravel()
    assert y[0] == x[0, 0].max() and np.isnan(y[1]) and y[2] == np.inf
    assert np.isnan(F.global_avg_pool(x).ravel()[1])
    y, idx = F.adaptive_max_pool2d(x, (2, 2), return_indices=True)
    assert np.isnan(y[0, 1, 1, 0]) and idx[0, 1, 1, 0] == 100 * 112 + 5
    assert np.isnan(F.adaptive_max_pool2d(x, (2, 2))[0, 1, 1, 0])


# --- max unpooling ----------------------------------------------------------------------------

@pytest.mark.parametrize("case", [c for c in CASES if torch_padding(c) is not None
                                  and geometry(c)[4] == (1,) * len(c[2])], ids=case_id)
def test_max_unpool_inverts_max_pool(threads, rng, case):
    n, ch, sp, *_, ceil = case
    k, s, pb, pe, d = geometry(case)
    x = rand(rng, n, ch, *sp)
    y, idx = MAX[len(sp)](x, k, s, pb, ceil_mode=ceil, return_indices=True)
    back = UNPOOL[len(sp)](y, idx, k, s, pb, output_size=sp)
    np.testing.assert_array_equal(back, R.max_unpool_nd(y, idx, sp).astype(np.float32))
    # every maximum is back in its place
    np.testing.assert_array_equal(np.take_along_axis(back.reshape(n, ch, -1),
                                                     idx.reshape(n, ch, -1), 2),
                                  y.reshape(n, ch, -1))


def test_max_unpool_default_size_and_duplicates(rng):
    x = rand(rng, 2, 3, 4, 5)
    idx = np.zeros(x.shape, np.int64)              # every value to position 0: the last wins
    y = F.max_unpool2d(x, idx, 2)
    assert y.shape == (2, 3, 8, 10)
    np.testing.assert_array_equal(y, R.max_unpool_nd(x, idx, (8, 10)).astype(np.float32))
    assert F.max_unpool2d(x, idx, 3, 2, 1).shape == (2, 3, 7, 9)   # (L-1)*s - 2p + k
    assert F.max_unpool2d(x, idx, 3, 2, 1, output_size=(2, 3, 8, 10)).shape == (2, 3, 8, 10)


def test_max_unpool_onnx_convention_may_cross_planes(rng):
    x = rand(rng, 2, 3, 2, 2)
    plane = 16                                      # output (4, 4)
    idx = rng.integers(0, 2 * 3 * plane, size=x.shape)
    idx[1, 2, 1, 1] = 5                             # into plane (0, 0)
    y = F.max_unpool(x, idx, (4, 4), convention="onnx")
    ref = np.zeros(2 * 3 * plane)
    for v, i in zip(x.ravel(), idx.ravel()):        # whole-tensor scatter in C order
        ref[i] = v
    np.testing.assert_array_equal(y.ravel(), ref.astype(np.float32))
    own = (np.arange(6) * plane).reshape(2, 3, 1, 1) + rng.integers(0, plane, size=x.shape)
    np.testing.assert_array_equal(F.max_unpool(x, own, (2, 3, 4, 4), convention="onnx"),
                                  F.max_unpool(x, own - (np.arange(6) * plane).reshape(2, 3, 1, 1),
                                               (4, 4)))


@pytest.mark.parametrize("bad", [48, -1, 10**12])
def test_max_unpool_rejects_out_of_range_indices(threads, rng, bad):
    x = rand(rng, 2, 3, 4, 3)
    idx = np.zeros(x.shape, np.int64)
    idx[1, 2, 3, 1] = bad
    with pytest.raises(InvalidArgument, match=rf"max_unpool2d: indices\[1, 2, 3, 1\] = {bad} "
                                              r"is out of range .* 8x6 .*0 <= index < 48"):
        F.max_unpool2d(x, idx, 2)
    idx[1, 2, 3, 1] = 0
    idx[0, 0, 0, 0] = 2 * 3 * 48 if bad > 0 else bad
    with pytest.raises(InvalidArgument, match=r"max_unpool: indices\[0, 0, 0, 0\] = .* out of "
                                              r"range .* \(2, 3, 8, 6\)"):
        F.max_unpool(x, idx, (8, 6), convention="onnx")


def test_max_unpool_argument_errors(rng):
    x = rand(rng, 2, 3, 4, 3)
    idx = np.zeros(x.shape, np.int64)
    with pytest.raises(InvalidArgument, match=r"max_unpool2d: output_size \(10, 6\) is "
                                              r"invalid: dim 0 must be strictly between 6 and 10"):
        F.max_unpool2d(x, idx, 2, output_size=(10, 6))
    with pytest.raises(InvalidArgument, match=r"max_unpool2d: output_size must have 2 or 4"):
        F.max_unpool2d(x, idx, 2, output_size=(8,))
    with pytest.raises(ShapeError, match=r"max_unpool2d: indices has shape \(2, 3, 4, 2\), "
                                         r"expected the shape of x \(2, 3, 4, 3\)"):
        F.max_unpool2d(x, idx[..., :2], 2)
    with pytest.raises(InvalidDType, match=r"max_unpool2d: indices must be an integer array.*"
                                           r"float32"):
        F.max_unpool2d(x, idx.astype(np.float32), 2)
    with pytest.raises(InvalidArgument, match=r"max_unpool: convention must be 'torch' or 'onnx'"):
        F.max_unpool(x, idx, (8, 6), convention="tf")


# --- bad input ---------------------------------------------------------------------------------

def test_input_errors(rng):
    x = rand(rng, 2, 3, 9, 7)
    with pytest.raises(InvalidDType, match=r"max_pool2d: x must be float32, got dtype float64"):
        F.max_pool2d(x.astype(np.float64), 2)
    with pytest.raises(InvalidDType, match=r"avg_pool: x must be float32, got dtype int32"):
        F.avg_pool(x.astype(np.int32), 2)
    with pytest.raises(InvalidDType, match=r"global_max_pool: x must be float32.*float16"):
        F.global_max_pool(x.astype(np.float16))
    with pytest.raises(ShapeError, match=r"max_pool2d: x must be a 4-D \(N, C, H, W\) or 3-D "
                                         r"\(C, H, W\) array, got shape \(9, 7\)"):
        F.max_pool2d(x[0, 0], 2)
    with pytest.raises(ShapeError, match=r"avg_pool3d: x must be .* got shape \(3, 9, 7\)"):
        F.avg_pool3d(x[0], 2)
    with pytest.raises(ShapeError, match=r"max_pool: x must be \(N, C, \*spatial\) with 1 to 3 "
                                         r"spatial dims, got shape \(2, 3\)"):
        F.max_pool(x[:, :, 0, 0], 2)
    with pytest.raises(ShapeError, match=r"global_avg_pool: x must be \(N, C, \*spatial\)"):
        F.global_avg_pool(x[:, :, 0, 0])
    with pytest.raises(ShapeError, match=r"adaptive_avg_pool2d: x has an empty spatial dim"):
        F.adaptive_avg_pool2d(x[:, :, :0], 2)


def test_geometry_errors(rng):
    x = rand(rng, 2, 3, 9, 7)
    with pytest.raises(ShapeError, match=r"max_pool2d: kernel size 10 is larger than the padded "
                                         r"input 9 along dim 0"):
        F.max_pool2d(x, (10, 3))
    with pytest.raises(ShapeError, match=r"max_pool: kernel size 4 \(dilated 10\) is larger "
                                         r"than the padded input 9"):
        F.max_pool(x, 4, dilations=3)
    with pytest.raises(InvalidArgument, match=r"max_pool2d: padding 2 must be at most half the "
                                              r"kernel size 3 along dim 0"):
        F.max_pool2d(x, 3, padding=2)
    with pytest.raises(InvalidArgument, match=r"avg_pool1d: padding 2 must be at most half"):
        F.avg_pool1d(x[0], 3, padding=2)
    # per-side pads may go up to kernel - 1 (onnxruntime's rule), not further
    assert F.max_pool2d(x, 3, padding=(2, 2, 2, 2)).shape == (2, 3, 4, 3)
    with pytest.raises(InvalidArgument, match=r"max_pool: pad_end 3 must be smaller than the "
                                              r"kernel size 3 along dim 1"):
        F.max_pool(x, 3, 1, 0, (0, 3))
    with pytest.raises(InvalidArgument, match=r"max_pool2d: kernel_size must have 2 elements"):
        F.max_pool2d(x, (3, 3, 3))
    with pytest.raises(InvalidArgument, match=r"avg_pool2d: stride\[1\] must be positive, got 0"):
        F.avg_pool2d(x, 3, (1, 0))
    with pytest.raises(InvalidArgument, match=r"max_pool2d: dilation must be positive, got 0"):
        F.max_pool2d(x, 3, dilation=0)
    with pytest.raises(InvalidArgument, match=r"max_pool2d: padding must be an int, a sequence "
                                              r"of 2 or 4 ints.*'bogus'"):
        F.max_pool2d(x, 3, padding="bogus")
    with pytest.raises(InvalidArgument, match=r"max_pool2d: padding must have 2 \(per dim\) or 4"):
        F.max_pool2d(x, 3, padding=(1, 1, 1))
    with pytest.raises(InvalidArgument, match=r"avg_pool2d: divisor_override must be a finite "
                                              r"non-zero number, got 0"):
        F.avg_pool2d(x, 2, divisor_override=0)
    with pytest.raises(InvalidArgument, match=r"lp_pool2d: norm_type must be a positive number "
                                              r"or \+-inf, got -1.0"):
        F.lp_pool2d(x, -1, 2)
    with pytest.raises(InvalidArgument, match=r"lp_pool: norm_type must be a positive finite"):
        F.lp_pool(x, 2, p=float("inf"))
    with pytest.raises(InvalidArgument, match=r"max_pool: indices must be one of"):
        F.max_pool(x, 2, indices="tf")
    with pytest.raises(InvalidArgument, match=r"max_pool2d: ceil_mode must be a bool"):
        F.max_pool2d(x, 2, ceil_mode="yes")
    with pytest.raises(InvalidArgument, match=r"adaptive_avg_pool2d: output_size\[0\] must be "
                                              r"positive, got 0"):
        F.adaptive_avg_pool2d(x, (0, 2))
    with pytest.raises(InvalidArgument, match=r"adaptive_max_pool1d: output_size must be an int"):
        F.adaptive_max_pool1d(x[0], None)
    # geometry is cached per call signature: never an error turned into a hit
    assert F.max_pool2d(x, 1).shape == x.shape
    with pytest.raises(InvalidArgument, match=r"max_pool2d: kernel_size must be an int, got bool"):
        F.max_pool2d(x, True)
    with pytest.raises(InvalidArgument, match=r"max_pool2d: kernel_size\[1\] must be an int, "
                                              r"got bool"):
        F.max_pool2d(x, (1, True))


def test_lp_pool_infinite_norm_is_max_of_abs(rng):
    x = rand(rng, 2, 3, 9, 7)
    assert_max_equal(F.lp_pool2d(x, float("inf"), 3, 2), R.max_pool_nd(np.abs(x), 3, 2)[0])
    assert_max_equal(F.lp_pool2d(x, -float("inf"), 3, 2), -R.max_pool_nd(-np.abs(x), 3, 2)[0])


def test_public_api_is_documented():
    for name in F._pool.__all__:
        fn = getattr(F, name)
        assert fn.__doc__ and "Returns" in fn.__doc__ and "float32" in fn.__doc__, name


# --- torch.nn.functional (optional) -----------------------------------------------------------

TORCH_CASES = [c for c in CASES if torch_padding(c) is not None]


@pytest.mark.parametrize("case", TORCH_CASES, ids=case_id)
def test_matches_torch(rng, case):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    tf = torch.nn.functional
    n, ch, sp, *_, ceil = case
    nd = len(sp)
    k, s, pb, pe, d = geometry(case)
    x = rand(rng, n, ch, *sp)
    t = torch.from_numpy(x)
    y, idx = MAX[nd](x, k, s, pb, d, ceil, return_indices=True)
    ty, tidx = getattr(tf, f"max_pool{nd}d")(t, k, s, pb, d, ceil, return_indices=True)
    assert_max_equal(y, ty.numpy())
    empty = np.isneginf(y)             # a window of padding only: torch's index is arbitrary
    np.testing.assert_array_equal(idx[~empty], tidx.numpy()[~empty])
    if d == (1,) * nd:                 # with dilation the input size is out of unpool's reach
        back = UNPOOL[nd](y, idx, k, s, pb, output_size=sp)
        tback = getattr(tf, f"max_unpool{nd}d")(ty, tidx, k, s, pb, output_size=sp)
        np.testing.assert_array_equal(back, tback.numpy())
    if d == (1,) * nd:
        for cip in (True, False):
            got = AVG[nd](x, k, s, pb, ceil, cip)
            assert_sum_close(got, getattr(tf, f"avg_pool{nd}d")(t, k, s, pb, ceil, cip).numpy())
        if nd > 1:                                   # torch has divisor_override for 2-D/3-D
            got = AVG[nd](x, k, s, pb, ceil, True, 3)
            want = getattr(tf, f"avg_pool{nd}d")(t, k, s, pb, ceil, True, 3).numpy()
            assert_sum_close(got, want)
    if pb == (0,) * nd:
        # torch's lp_pool is avg_pool(x ** p) * volume: equal for p = 2, |x| for odd p,
        # and ceil_mode=False (torch rescales partial windows); its 1-D version needs an
        # int kernel_size
        tk, ts = (k[0], s[0]) if nd == 1 else (k, s)
        tlp = getattr(tf, f"lp_pool{nd}d")
        assert_sum_close(LP[nd](x, 2, k, s), tlp(t, 2, tk, ts).numpy(), rtol=2e-5)
        ax = np.abs(x)
        assert_sum_close(LP[nd](ax, 3, k, s), tlp(torch.from_numpy(ax), 3, tk, ts).numpy(),
                         rtol=2e-5)
        assert_max_equal(LP[nd](x, float("inf"), k, s, ceil),
                         tlp(t, float("inf"), tk, ts, ceil).numpy())


@pytest.mark.parametrize("sp,out", ADAPTIVE, ids=lambda v: "x".join(map(str, v)))
def test_adaptive_matches_torch(rng, sp, out):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    tf = torch.nn.functional
    nd = len(sp)
    x = rand(rng, 2, 3, *sp)
    x[0, 1].flat[0] = np.nan                        # torch: NaN propagates, the last NaN wins
    x[1, 2].flat[-1] = np.nan
    x[1, 0].flat[: x[1, 0].size // 2] = np.nan
    t = torch.from_numpy(x)
    assert_sum_close(AAVG[nd](x, out),
                     getattr(tf, f"adaptive_avg_pool{nd}d")(t, out).numpy())
    y, idx = AMAX[nd](x, out, return_indices=True)
    ty, tidx = getattr(tf, f"adaptive_max_pool{nd}d")(t, out, return_indices=True)
    assert_max_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    assert_max_equal(AMAX[nd](x, out), ty.numpy())


def test_max_pool_nan_matches_torch(rng):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    x = rand(rng, 2, 3, 9, 7)
    x[0, 0, 2:4, 3] = np.nan
    x[1, 1] = -np.inf
    x[1, 2, 1:3, 1:3] = np.nan
    for ceil in (False, True):
        y, idx = F.max_pool2d(x, 3, 2, 1, ceil_mode=ceil, return_indices=True)
        ty, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 2, 1, ceil_mode=ceil,
                                                  return_indices=True)
        assert_max_equal(y, ty.numpy())
        np.testing.assert_array_equal(idx, tidx.numpy())


# --- ONNX reference evaluator and onnxruntime (optional) --------------------------------------

def _onnx_model(op, x, outputs=("y",), extra_inputs=(), **attrs):
    pytest.importorskip("onnx", reason=ONNX_REASON)
    from onnx import TensorProto, helper
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))]
    for name, arr in extra_inputs:
        inputs.append(helper.make_tensor_value_info(name, TensorProto.INT64, list(arr.shape)))
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT if o == "y" else TensorProto.INT64,
                                          None) for o in outputs]
    node = helper.make_node(op, ["x"] + [name for name, _ in extra_inputs], list(outputs),
                            **attrs)
    model = helper.make_model(helper.make_graph([node], op, inputs, outs),
                              opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9                            # readable by older onnxruntime builds
    return model


def _run_onnx(model, feeds):
    from onnx.reference import ReferenceEvaluator
    return ReferenceEvaluator(model).run(None, feeds)


def _run_ort(model, feeds):
    ort = pytest.importorskip("onnxruntime", reason=ORT_REASON)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


ONNX_CASES = [c for c in CASES if len(c[2]) == 2][:8]


@pytest.mark.parametrize("runner", ["onnx_reference", "onnxruntime"])
@pytest.mark.parametrize("case", ONNX_CASES, ids=case_id)
def test_matches_onnx(rng, case, runner):
    run = _run_onnx if runner == "onnx_reference" else _run_ort
    n, ch, sp, *_, ceil = case
    k, s, pb, pe, d = geometry(case)
    x = rand(rng, n, ch, *sp)
    attrs = dict(kernel_shape=list(k), strides=list(s), pads=list(pb + pe), ceil_mode=int(ceil))
    feeds = {"x": x}
    y, idx = run(_onnx_model("MaxPool", x, ("y", "i"), dilations=list(d), **attrs), feeds)
    got, got_idx = F.max_pool(x, k, s, pb, pe, d, ceil, indices="onnx")
    assert_max_equal(got, y)
    # onnx.reference's MaxPool Indices are wrong with pads (negative, shifted positions);
    # windows of padding only have no defined index
    if runner == "onnxruntime" and not np.isinf(got).any():
        np.testing.assert_array_equal(got_idx, idx)
    for cip in (0, 1):
        (y,) = run(_onnx_model("AveragePool", x, count_include_pad=cip, dilations=list(d),
                               **attrs), feeds)
        assert_sum_close(F.avg_pool(x, k, s, pb, pe, d, ceil, bool(cip)), y)
    # onnx.reference scales a partial ceil_mode window up to the full kernel (as torch does);
    # onnxruntime, the ONNX spec's "padding contributes zeros" and tests/reference.py do not
    if (runner == "onnx_reference" and not ceil) or (runner == "onnxruntime" and d == (1, 1)):
        (y,) = run(_onnx_model("LpPool", x, p=3, dilations=list(d), **attrs), feeds)
        assert_sum_close(F.lp_pool(x, k, 3, s, pb, pe, d, ceil), y, rtol=2e-5)


@pytest.mark.parametrize("runner", ["onnx_reference", "onnxruntime"])
def test_global_pools_and_unpool_match_onnx(rng, runner):
    run = _run_onnx if runner == "onnx_reference" else _run_ort
    x = rand(rng, 2, 13, 9, 7)
    (y,) = run(_onnx_model("GlobalAveragePool", x), {"x": x})
    assert_sum_close(F.global_avg_pool(x), y)
    (y,) = run(_onnx_model("GlobalMaxPool", x), {"x": x})
    assert_max_equal(F.global_max_pool(x), y)
    if runner == "onnx_reference":
        return          # onnx.reference's MaxUnpool ignores the output_shape input
    pooled, idx = F.max_pool(x, 2, 2, indices="onnx")
    shape = np.array(x.shape, np.int64)
    (y,) = run(_onnx_model("MaxUnpool", pooled, extra_inputs=[("i", idx), ("s", shape)],
                           kernel_shape=[2, 2], strides=[2, 2]),
               {"x": pooled, "i": idx, "s": shape})
    assert y.shape == x.shape
    np.testing.assert_array_equal(F.max_unpool(pooled, idx, y.shape, convention="onnx"), y)


def test_geometry_cache_tells_types_apart(rng):
    """The per-arguments geometry cache must not hand a bool the result cached for 1, nor
    skip validating a list because an equal tuple was seen."""
    x = rand(rng, 1, 2, 6, 6)
    assert F.max_pool2d(x, 1).shape == (1, 2, 6, 6)
    with pytest.raises(InvalidArgument, match="kernel_size must be an int, got bool"):
        F.max_pool2d(x, True)
    assert F.max_pool2d(x, (2, 2)).shape == F.max_pool2d(x, [2, 2]).shape == (1, 2, 3, 3)
    with pytest.raises(InvalidArgument, match="kernel_size"):
        F.max_pool2d(x, (2, True))


def test_pool_plan_create_reshape_run(threads, rng):
    """A PoolPlan resolves each input shape once and runs, binds and errs as the entry
    points do."""
    attrs = arithmetic.ConvAttributes("pool", (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), "NOTSET",
                           ceil_mode=True, op="pool_plan")
    ctx = pyconv.ExecutionContext(num_threads=threads)
    x, x2 = rand(rng, 2, 3, 9, 7), rand(rng, 1, 3, 12, 12)
    for mode, opts, fn in (("max", {}, F.max_pool), ("lp", {"p": 3}, F.lp_pool),
                           ("avg", {"count_include_pad": True}, F.avg_pool)):
        plan = F.PoolPlan(mode, attrs, context=ctx, **opts)
        for xi in (x, x2, x):
            ref = fn(xi, 3, **opts, strides=2, pads_begin=1, pads_end=1, ceil_mode=True)
            assert plan.output_shape(xi.shape) == ref.shape
            np.testing.assert_array_equal(plan.run(xi), ref)
        assert plan.reshape(x.shape) is plan.reshape(list(x.shape))   # resolved once
        if mode != "lp":
            out = np.empty(ref.shape, np.float32)
            assert plan.bind(x.shape, out)(x) is out
            np.testing.assert_array_equal(out, ref)
    y, idx = F.PoolPlan("max", attrs, indices="torch").run(x)
    ref_y, ref_idx = F.max_pool(x, 3, 2, 1, 1, ceil_mode=True, indices="torch")
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(idx, ref_idx)
    with pytest.raises(InvalidArgument, match="pool_plan: only max and average pooling"):
        F.PoolPlan("max", attrs, indices="onnx").bind(x.shape, np.empty(ref.shape, np.float32))
    with pytest.raises(InvalidArgument, match="pool_plan: norm_type must be"):
        F.PoolPlan("lp", attrs, p=0)
    with pytest.raises(ShapeError, match="pool_plan: x must be"):
        F.PoolPlan("max", attrs).output_shape((2, 3))
