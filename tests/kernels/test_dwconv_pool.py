"""Depthwise convolution and max / average pooling kernels (src/kernels/dwconv_*, pool_*)
against the naive reference, under every ISA and 1 and 2 threads.

The cases aim at the kernels' edges: widths around the vector lengths (8, 16) and the
masked-load table limit (wide rows), stride 1 / 2 (phase-split rows) and 3 (generic
packing), dilation, padding wider than the kernel, 1-D and 3-D, depth taps that all fall in
the padding, channel multipliers, row blocks (tall planes), 3x3 / 5x5 specialisations, fused
bias / residual / activation, NaN planes handed back by the pooling kernel."""
import numpy as np
import pytest

from _helpers import assert_close, rand
import reference as R
import pyconv
import pyconv.functional as F
from pyconv import arithmetic

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _tup(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


# (batch, channels, multiplier, spatial, kernel, stride, padding, dilation)
DW_CASES = [
    (2, 13, 1, (9, 17), 3, 1, 1, 1),             # odd sizes, batch 2
    (1, 16, 1, (25, 33), 3, 2, 1, 1),            # stride 2, widths past 2 vectors
    (1, 24, 1, (8, 16), 3, 1, 1, 1),             # widths = the vector lengths
    (1, 3, 1, (15, 31), 5, 1, 2, 1),             # 5x5 stride 1
    (2, 3, 1, (16, 17), 5, 2, 2, 1),             # 5x5 stride 2
    (1, 1, 1, (7, 9), 3, 3, 1, 1),               # stride 3: generic phase split
    (1, 5, 1, (11, 13), 3, 1, 2, 2),             # dilation 2
    (1, 4, 1, (6, 7), 3, 1, 4, 1),               # padding wider than the kernel
    (1, 4, 2, (9, 10), 3, (2, 1), (2, 0), 1),     # multiplier 2, mixed strides and pads
    (1, 2, 1, (3, 600), 3, 1, 1, 1),             # wide rows: the unmasked packing path
    (1, 2, 1, (300, 70), 3, 1, 1, 1),            # tall plane: several row blocks
    (1, 3, 1, (5, 40), (1, 3), (1, 2), (0, 1), 1),   # one-row kernel
    (1, 2, 1, (1, 1), 3, 1, 1, 1),               # 1x1 plane, all taps but one padding
    (2, 13, 1, (37,), 3, 2, 1, 1),               # 1-D
    (1, 3, 1, (33,), 7, 1, 3, 3),                # 1-D, long dilated kernel
    (2, 3, 1, (4, 5, 6), 3, 1, 1, 1),            # 3-D
    (1, 4, 1, (3, 6, 7), (2, 3, 3), 1, (3, 1, 1), 1),   # 3-D, depth taps all in padding
    (1, 2, 3, (3, 9, 17), 3, (1, 2, 2), 1, (2, 1, 1)),  # 3-D, multiplier 3, depth dilation
]


def _dw_id(c):
    return "-".join(str(v).replace(" ", "") for v in c)


@pytest.mark.parametrize("case", DW_CASES, ids=_dw_id)
def test_depthwise_matches_reference(isa, threads, rng, case):
    n, c, mult, sp, k, s, p, d = case
    nd = len(sp)
    k = _tup(k, nd)
    x = rand(rng, n, c, *sp)
    w = rand(rng, c * mult, 1, *k)
    b = rand(rng, c * mult)
    got = CONV[nd](x, w, b, stride=s, padding=p, dilation=d, groups=c)
    ref = R.conv_nd(x, w, b, s, p, p, d, c)
    assert_close(got, ref, int(np.prod(k)))


ACTIVATIONS = [
    (None, 0.0, 0.0, lambda v: v),
    ("relu", 0.0, 0.0, lambda v: np.maximum(v, 0)),
    ("clip", 0.0, 6.0, lambda v: np.clip(v, 0, 6)),
    ("leaky_relu", 0.1, 0.0, lambda v: np.where(v < 0, 0.1 * v, v)),
    ("hardswish", 0.0, 0.0, lambda v: v * np.clip(v + 3, 0, 6) / 6),
    ("sigmoid", 0.0, 0.0, lambda v: 1 / (1 + np.exp(-v))),
]


@pytest.mark.parametrize("act,a,b_,fn", ACTIVATIONS, ids=lambda v: str(v)[:10])
@pytest.mark.parametrize("sp,k,s,p", [((13, 19), 3, 1, 1), ((13, 19), 3, 2, 1),
                                      ((4, 6, 9), 3, 1, 1), ((12, 40), 5, 2, 2),
                                      ((7, 11), 3, 3, 0)])
def test_depthwise_fused_bias_residual_activation(isa, threads, rng, act, a, b_, fn, sp, k, s,
                                                  p):
    nd = len(sp)
    c = 5
    x = 3 * rand(rng, 2, c, *sp)
    w = rand(rng, c, 1, *(k,) * nd)
    bias = rand(rng, c)
    plan = F.ConvPlan(w, bias, stride=s, padding=p, groups=c, activation=act, act_alpha=a,
                      act_beta=b_)
    ref = R.conv_nd(x, w, bias, s, p, p, 1, c)
    res = rand(rng, *ref.shape)
    assert_close(plan.run(x), fn(ref), k ** nd)
    assert_close(plan.run(x, residual=res), fn(ref + res), k ** nd)


@pytest.mark.parametrize("act", ["silu", "sigmoid", "gelu"])
@pytest.mark.parametrize("sp", [(10, 10), (5, 5), (3, 7), (40, 21)], ids=str)
def test_depthwise_activation_after_the_block_is_the_engine(isa, threads, rng, act, sp):
    """The activations not fused into the depthwise tile run over each block's rows as one
    run of floats (rows narrower than a vector end mid-vector): the bits of the standalone
    op on the conv's output, with and without a residual, on both depthwise paths."""
    from pyconv._ext import conv as conv_ext, eltwise
    c = 7
    x = 3 * rand(rng, 1, c, *sp)
    w, bias = rand(rng, c, 1, 3, 3), rand(rng, c)
    res = rand(rng, 1, c, *sp)
    for width in (0, 1000):       # rows kernel, then channels at a time
        previous = conv_ext.set_depthwise_channels_max_width(width)
        try:
            fused = F.ConvPlan(w, bias, padding=1, groups=c, activation=act)
            plain = F.ConvPlan(w, bias, padding=1, groups=c)
            np.testing.assert_array_equal(fused.run(x), eltwise.unary(plain.run(x), act))
            np.testing.assert_array_equal(fused.run(x, residual=res),
                                          eltwise.unary(plain.run(x, residual=res), act))
            assert fused.kernel.last_algorithm == "depthwise"
        finally:
            conv_ext.set_depthwise_channels_max_width(previous)


def test_depthwise_relu_keeps_nan(isa, rng):
    x = rand(rng, 1, 3, 6, 20)
    x[0, 1, 2, 5] = np.nan
    w = rand(rng, 3, 1, 3, 3)
    for act, b_ in (("relu", 0.0), ("clip", 6.0)):
        y = F.ConvPlan(w, None, padding=1, groups=3, activation=act, act_beta=b_).run(x)
        assert np.isnan(y[0, 1, 1:4, 4:7]).all()
        assert not np.isnan(np.delete(y[0], 1, axis=0)).any()


# (spatial, kernel, stride, padding, dilation, ceil_mode)
POOL_CASES = [
    ((112, 112), 3, 2, 1, 1, False),     # the ResNet stem pool
    ((9, 7), 2, 2, 0, 1, False),
    ((32, 32), 2, 2, 0, 1, False),       # 2x2 / 2, every window inside: the direct rows
    ((6, 45), 2, 2, 0, 1, False),        # ... with a partial vector at the row's end
    ((9, 12), 2, 2, 0, 2, False),        # 2x2 / 2 dilated: not the direct rows
    ((3, 8, 10), (1, 2, 2), (1, 2, 2), 0, 1, False),   # ... and 3-D with a 1-deep window
    ((8, 16), 3, 1, 1, 1, False),        # widths = the vector lengths
    ((15, 17), 3, 2, 1, 1, True),        # ceil_mode
    ((11, 33), 3, 2, 1, 2, False),       # dilation 2
    ((13, 31), 2, 1, 0, 1, False),
    ((10, 23), (3, 4), (2, 1), (1, 2), 1, False),
    ((6, 700), 3, 2, 1, 1, False),       # wide rows
    ((7, 9), 3, 3, 1, 1, False),         # stride 3: the AVX kernels hand it back
    ((1, 1), 1, 1, 0, 1, False),
    ((37,), 3, 2, 1, 1, True),           # 1-D
    ((40,), 4, 1, 2, 1, False),
    ((4, 6, 9), 3, 2, 1, 1, False),      # 3-D
    ((5, 5, 18), 5, 1, 2, 1, False),     # 3-D, 25 window rows
    ((9, 9, 12), (9, 9, 3), 1, 0, 1, False),    # 81 window rows: past the kernel's limit
    # planes of at most one vector a row: each output row in registers
    ((8, 8), 3, 1, 1, 1, False),         # Inception's 3x3 / 1 average on an 8x8 map
    ((3, 3), 3, 1, 1, 1, False),
    ((17, 5), (5, 3), (2, 1), (2, 1), 1, True),    # more rows than columns, ceil_mode
    ((6, 16), 5, 3, 2, 1, False),        # a full vector in, stride 3
    ((5, 12), (2, 4), (1, 3), 0, (2, 3), True),    # dilated, ceil_mode
    ((9,), 3, 1, 1, 1, False),           # 1-D
]


def _pool_id(c):
    return "-".join(str(v).replace(" ", "") for v in c)


@pytest.mark.parametrize("channels", [1, 3, 13, 16, 24])
@pytest.mark.parametrize("case", POOL_CASES, ids=_pool_id)
def test_max_pool_matches_reference(isa, threads, rng, case, channels):
    sp, k, s, p, d, ceil = case
    nd = len(sp)
    x = rand(rng, 2, channels, *sp)
    got = MAX_POOL[nd](x, k, s, p, d, ceil_mode=ceil)
    ref = R.max_pool_nd(x, _tup(k, nd), _tup(s, nd), p, p, d, ceil)[0]
    np.testing.assert_array_equal(got, ref.astype(np.float32))


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("case", [c for c in POOL_CASES if c[4] == 1], ids=_pool_id)
def test_avg_pool_matches_reference(isa, threads, rng, case, count_include_pad):
    sp, k, s, p, _, ceil = case
    nd = len(sp)
    if 2 * max(_tup(p, nd)) > min(_tup(k, nd)):
        pytest.skip("torch's rule: padding at most half the kernel")
    x = rand(rng, 2, 3, *sp)
    got = AVG_POOL[nd](x, k, s, p, ceil_mode=ceil, count_include_pad=count_include_pad)
    ref = R.avg_pool_nd(x, _tup(k, nd), _tup(s, nd), p, p, 1, ceil, count_include_pad)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sp", [(10, 37), (7, 9)])
def test_avg_pool_divisor_override(isa, threads, rng, sp):
    x = rand(rng, 2, 5, *sp)
    got = F.avg_pool2d(x, 3, 2, 1, divisor_override=4)
    ref = R.avg_pool_nd(x, (3, 3), (2, 2), 1, 1, 1, False, True) * 9 / 4
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


# (spatial, kernel, stride, pads_begin, pads_end, dilation, ceil_mode)
@pytest.mark.parametrize("sp,k,s,pb,pe,d,ceil", [
    ((2, 3), 2, 1, 1, 1, 3, False),              # windows of padding only
    ((3, 5), (2, 3), 2, (1, 2), (1, 2), 4, True),   # ... and past the end padding (ceil)
    ((11, 13), 3, 2, 1, 1, 2, True),             # dilated ceil_mode windows
    ((6, 40), 3, 3, 2, 0, (1, 2), True),         # stride 3, pads on one side only
    ((4, 6, 9), (2, 2, 3), (1, 2, 2), (1, 0, 1), (0, 1, 1), (2, 1, 3), True),   # 3-D
])
def test_pool_dilated_and_padding_windows(isa, threads, rng, sp, k, s, pb, pe, d, ceil):
    """ONNX MaxPool / AveragePool (dilations, per-side pads) on the SIMD kernel: windows
    with no input element (-inf; 0 or NaN for the average) and ceil_mode windows past the
    end padding, whose positions there do not count."""
    nd = len(sp)
    x = rand(rng, 2, 3, *sp)
    geo = (_tup(k, nd), _tup(s, nd), _tup(pb, nd), _tup(pe, nd), _tup(d, nd), ceil)
    np.testing.assert_array_equal(F.max_pool(x, *geo), R.max_pool_nd(x, *geo)[0].astype(
        np.float32))
    for cip in (True, False):
        np.testing.assert_allclose(F.avg_pool(x, *geo, count_include_pad=cip),
                                   R.avg_pool_nd(x, *geo, count_include_pad=cip),
                                   rtol=1e-5, atol=1e-6)


def test_max_pool_planes_with_nan_and_inf(isa, threads, rng):
    """A NaN anywhere in a window gives NaN (torch); the SIMD kernel hands NaN planes back
    to the loops with that rule, the other planes stay on the fast path."""
    x = rand(rng, 2, 4, 12, 40)
    x[0, 1, 5, 17] = np.nan
    x[1, 3, 0, 0] = np.nan
    x[1, 2] = -np.inf
    x[0, 2, 3, 3] = np.inf
    for k, s, p in ((3, 1, 1), (3, 2, 1), (2, 2, 0)):
        got = F.max_pool2d(x, k, s, p)
        ref = R.max_pool_nd(x, (k, k), (s, s), p, p, 1, False)[0]
        np.testing.assert_array_equal(got, ref.astype(np.float32))
    # +inf and -inf in one window (the kernel's NaN check sees a NaN sum): still right
    y = rand(rng, 1, 2, 5, 20)
    y[0, 0, 2, 3], y[0, 0, 2, 4] = np.inf, -np.inf
    np.testing.assert_array_equal(F.max_pool2d(y, 2, 2),
                                  R.max_pool_nd(y, (2, 2), (2, 2), 0, 0, 1, False)[0])


@pytest.mark.parametrize("sp,k,s,p,d", [
    ((12, 40), 3, 3, 1, 1),              # stride 3: one column at a time
    ((12, 40), 3, 2, 1, 2),              # dilated
    ((9, 9, 12), (9, 9, 3), 1, 0, 1),    # 81 window rows: two vertical steps
    ((37,), 3, 2, 1, 1),                 # 1-D
    ((6, 45), 2, 2, 0, 1),               # the direct 2x2 / 2 rows, a partial last vector
    ((8, 8), 3, 1, 1, 1),                # small planes: rows in registers
    ((7, 13), 3, 2, 1, 2),
])
def test_max_pool_nan_rows_every_path(isa, threads, rng, sp, k, s, p, d):
    """Rows whose window holds a NaN are redone with torch's rule on every path of the
    kernel, NaN in a border column included; +inf with -inf is not a NaN."""
    nd = len(sp)
    x = rand(rng, 2, 3, *sp)
    x[(0, 1) + (0,) * nd] = np.nan
    x[(1, 0) + tuple(n // 2 for n in sp)] = np.nan
    x[(1, 2) + tuple(n - 1 for n in sp)] = np.nan
    x[(0, 2) + tuple(n // 3 for n in sp)] = np.inf
    x[(0, 2) + tuple(n // 3 + 1 for n in sp)] = -np.inf
    got = MAX_POOL[nd](x, k, s, p, d)
    ref = R.max_pool_nd(x, _tup(k, nd), _tup(s, nd), p, p, d, False)[0]
    np.testing.assert_array_equal(got, ref.astype(np.float32))


@pytest.mark.parametrize("stride", [1, 2])
def test_large_maps_split_over_threads_match_one_thread(isa, rng, stride):
    """Small layers now run on one thread (threads_for); these are big enough to be split,
    so the parallel paths of the depthwise and pooling kernels stay covered."""
    x = rng.standard_normal((2, 32, 64, 96)).astype(np.float32)
    w = rng.standard_normal((32, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    calls = [lambda: F.conv2d(x, w, b, stride=stride, padding=1, groups=32),
             lambda: F.max_pool2d(x, 3, stride, 1),
             lambda: F.avg_pool2d(x, 2, stride)]
    previous = pyconv.get_num_threads()
    try:
        pyconv.set_num_threads(1)
        single = [f() for f in calls]
        pyconv.set_num_threads(2)
        for f, want in zip(calls, single):
            np.testing.assert_array_equal(f(), want)
    finally:
        pyconv.set_num_threads(previous)
    np.testing.assert_allclose(single[0], R.conv_nd(x, w, b, stride, 1, 1, 1, 32),
                               rtol=1e-4, atol=1e-4)


@pytest.fixture
def pool_lanes():
    """``force(width)``: the widest output rows pooled lanes planes at a time (0: never,
    large: always); the default is restored after the test."""
    from pyconv._ext import pool as pool_ext
    previous = pool_ext.set_pool_lanes_max_width(-1)
    yield pool_ext.set_pool_lanes_max_width
    pool_ext.set_pool_lanes_max_width(previous)


def _pool_both_paths(force, mode, x, geo, **options):
    """(rows result, lanes result, lanes algorithm) of one pooling."""
    attributes = arithmetic.ConvAttributes.from_onnx(
        "pool", {"kernel_shape": list(geo[0]), "strides": list(geo[1]),
                 "pads": list(geo[2]) + list(geo[3]), "dilations": list(geo[4]),
                 "ceil_mode": int(geo[5])}, op="pool")
    results = []
    for width in (0, 10_000):
        force(width)
        plan = F.PoolPlan(mode, attributes, **options)
        results.append((plan.run(x), plan.reshape(x.shape).algorithm))
    force(-1)
    assert results[0][1] == "rows"
    return results[0][0], results[1][0], results[1][1]


# (planes: batch, channels), (spatial, kernel, stride, pads_begin, pads_end, dilation, ceil)
LANES_CASES = [
    ((1, 288), ((17, 17), 3, 1, 1, 1, 1, False)),     # Inception's averages, several blocks
    ((2, 13), ((8, 8), 3, 1, 1, 1, 1, False)),        # a partial last block across the batch
    ((1, 16), ((3, 3), 3, 1, 1, 1, 1, False)),        # 3x3 planes
    ((1, 40), ((36, 36), 3, 2, 0, 0, 1, False)),      # Inception's 3x3 / 2 max pools
    ((1, 9), ((15, 15), 3, 2, 0, 0, 1, True)),        # SqueezeNet's ceil_mode
    ((1, 24), ((16, 16), 2, 2, 0, 0, 1, False)),      # 2x2 / 2
    ((2, 8), ((11, 13), (3, 2), (2, 1), (1, 0), (2, 1), (2, 3), True)),  # everything odd
    ((1, 17), ((2, 3), 2, 1, 1, 1, 3, False)),        # windows of padding only
    ((1, 20), ((3, 5), (2, 3), 2, (1, 2), (1, 2), 4, True)),   # ... past the end padding
    ((1, 16), ((16, 8), 8, 8, 0, 0, 1, False)),       # PSPNet's 8x8 / 8 pyramid pool
    ((1, 12), ((1, 1), 1, 1, 0, 0, 1, False)),
    ((1, 16), ((37,), 3, 2, 1, 1, 1, True)),          # 1-D: a one-row plane
    ((1, 9), ((1, 6, 7), (1, 3, 3), 1, (0, 1, 1), (0, 1, 1), 1, False)),  # 3-D, depth 1
]


def _lanes_id(c):
    return "-".join(str(v).replace(" ", "") for v in (c[0],) + c[1])


@pytest.mark.parametrize("planes,case", LANES_CASES, ids=[_lanes_id(c) for c in LANES_CASES])
def test_pool_lanes_match_rows_and_reference(isa, threads, rng, pool_lanes, planes, case):
    """Small 2-D planes pooled lanes planes at a time (pool_lanes) give the row kernel's
    values bit for bit (the same operations in the same order; padding is the neutral
    value), and the reference's; max with NaN and infinities by torch's rule."""
    sp, *geo = case
    geo = tuple(_tup(v, len(sp)) for v in geo[:5]) + (geo[5],)
    x = rand(rng, *planes, *sp)
    y = x.copy()
    y.reshape(-1)[:: 7] = np.nan          # NaN in some blocks' planes, not in others
    y[0, -1] = -np.inf
    y.reshape(-1)[3:: 11] = np.inf
    rows, lanes, algorithm = _pool_both_paths(pool_lanes, "max", y, geo)
    if pyconv.get_isa() == "generic" and algorithm != "lanes":
        pytest.skip("no vector lanes on this build's portable path")
    assert algorithm == "lanes"
    np.testing.assert_array_equal(lanes, rows)
    np.testing.assert_array_equal(lanes, R.max_pool_nd(y, *geo)[0].astype(np.float32))
    for cip in (True, False):
        rows, lanes, _ = _pool_both_paths(pool_lanes, "avg", x, geo, count_include_pad=cip)
        np.testing.assert_array_equal(lanes, rows)
        np.testing.assert_allclose(lanes, R.avg_pool_nd(x, *geo, count_include_pad=cip),
                                   rtol=1e-5, atol=1e-6)
    rows, lanes, _ = _pool_both_paths(pool_lanes, "avg", x, geo, divisor_override=5)
    np.testing.assert_array_equal(lanes, rows)


def test_pool_lanes_chosen_for_small_planes(pool_lanes):
    """The default choice: small planes of enough channels by lanes, wide maps, few planes
    and the direct 2x2 / 2 rows of 16 outputs or more by rows."""
    from pyconv._ext import pool as pool_ext
    if "avx512" not in pyconv.supported_isas():
        pytest.skip("the choice is measured for AVX-512's 16 lanes; this CPU lacks it")
    ctx = pyconv.ExecutionContext(isa="avx512")

    def algorithm(mode, x_shape, out, k, s, p):
        return pool_ext.pool_work(mode, x_shape, out, (1, k, k), (1, s, s), (0, p, p),
                                  (0, p, p), (1, 1, 1), context=ctx)[0]

    assert algorithm("avg", (768, 1, 8, 8), (1, 8, 8), 3, 1, 1) == "lanes"
    assert algorithm("max", (288, 1, 17, 17), (1, 8, 8), 3, 2, 0) == "lanes"
    assert algorithm("max", (512, 1, 16, 16), (1, 8, 8), 2, 2, 0) == "lanes"
    assert algorithm("max", (256, 1, 32, 32), (1, 16, 16), 2, 2, 0) == "rows"
    assert algorithm("max", (64, 1, 112, 112), (1, 56, 56), 3, 2, 1) == "rows"   # scratch
    assert algorithm("avg", (3, 1, 8, 8), (1, 8, 8), 3, 1, 1) == "rows"          # planes
    assert algorithm("max", (768, 1, 8, 8), (1, 8, 8), 3, 1, 1) == "lanes"
    assert pool_ext.pool_work("max", (768, 1, 8, 8), (1, 8, 8), (1, 3, 3), (1, 1, 1),
                              (0, 1, 1), (0, 1, 1), (1, 1, 1), indices="onnx",
                              context=ctx)[0] == "generic"
