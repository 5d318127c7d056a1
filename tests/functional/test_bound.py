"""Bound calls, the memory planner's fast path (ConvPlan.bind, functional.bind_pool):
they give exactly what the general entry points give, and decline (None, nothing
written) any call they were not bound for."""
import numpy as np
import pytest

from _helpers import rand
import pyconv
import pyconv.functional as F
from pyconv._ext import conv as conv_ext
from tests.functional.test_conv import CASES, case_id


@pytest.fixture(params=["auto", "im2col", "shifted", "padded"])
def algorithm(request):
    previous = conv_ext.set_algorithm(request.param)
    yield request.param
    conv_ext.set_algorithm(previous)


def bound_conv(plan, x_shape, fill=np.nan):
    out = np.full(plan.reshape(x_shape).output_shape, fill, np.float32)
    return plan.bind(x_shape, out), out


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bound_conv_matches_run(threads, algorithm, rng, case):
    n, cin, cout, sp, k, s, p, d, g = case
    plan = F.ConvPlan(rand(rng, cout, cin // g, *k), rand(rng, cout), s, p, d, g,
                      activation="leaky_relu", act_alpha=0.1)
    x, residual = rand(rng, n, cin, *sp), None
    call, out = bound_conv(plan, x.shape)
    assert call(x) is out
    np.testing.assert_array_equal(out, plan.run(x))
    residual = rand(rng, *out.shape)
    assert call(x, residual) is out
    np.testing.assert_array_equal(out, plan.run(x, residual))


# (batch, C_in, C_out, spatial, kernel, stride, padding, output_padding, dilation, groups)
TRANSPOSED = [
    (2, 3, 5, (9, 7), (3, 3), 2, 1, 1, 1, 1),
    (1, 8, 8, (6, 5), (4, 4), 2, 1, 0, 1, 8),          # one input channel per group
    (1, 4, 6, (7,), (3,), 3, 0, 2, 2, 2),
    (1, 2, 4, (3, 4, 5), (2, 3, 2), (1, 2, 1), 0, 0, 1, 1),
]


@pytest.mark.parametrize("case", TRANSPOSED, ids=str)
def test_bound_conv_transpose_matches_run(threads, rng, case):
    n, cin, cout, sp, k, s, p, op, d, g = case
    plan = F.ConvPlan(rand(rng, cin, cout // g, *k), rand(rng, cout), s, p, d, g,
                      transposed=True, output_padding=op, activation="relu")
    x = rand(rng, n, cin, *sp)
    call, out = bound_conv(plan, x.shape)
    assert call(x) is out
    np.testing.assert_array_equal(out, plan.run(x))


def test_bound_conv_declines_what_it_was_not_bound_for(rng):
    plan = F.ConvPlan(rand(rng, 8, 4, 3, 3), rand(rng, 8), 1, 1)
    x = rand(rng, 2, 4, 9, 7)
    call, out = bound_conv(plan, x.shape, fill=7.0)
    wrong = [x[:, :, :, :-1], rand(rng, 2, 4, 9, 8), x[None], x.astype(np.float64),
             np.asfortranarray(x), x[:, ::-1], x.tolist(), None]
    for bad in wrong:
        assert call(bad) is None
    for bad in (rand(rng, 2, 8, 9, 6), out.astype(np.float64), out.T):
        assert call(x, bad) is None
    assert call(x, out) is None                       # the residual is the output
    # An input sharing the output's bytes (convolution cannot run in place).
    shared = np.zeros(max(x.size, out.size), np.float32)
    call2 = plan.bind(x.shape, shared[:out.size].reshape(out.shape))
    assert call2(shared[:x.size].reshape(x.shape)) is None
    assert (out == 7).all() and not shared.any()
    assert (out == 7).all()
    assert call(x) is out and np.array_equal(out, plan.run(x))


def test_bound_conv_without_out_returns_a_new_array_per_call(rng):
    """Bound without a buffer (a graph output, handed to the caller): each call writes a
    new array, the same values as run; wrong arguments are declined as with a buffer."""
    plan = F.ConvPlan(rand(rng, 8, 4, 3, 3), rand(rng, 8), 1, 1, activation="relu")
    x, residual = rand(rng, 2, 4, 9, 7), rand(rng, 2, 8, 9, 7)
    call = plan.bind(x.shape, None)
    assert call.out is None and call.output_shape == (2, 8, 9, 7)
    first, second = call(x), call(x, residual)
    assert first is not second and first.flags.c_contiguous and first.dtype == np.float32
    np.testing.assert_array_equal(first, plan.run(x))
    np.testing.assert_array_equal(second, plan.run(x, residual))
    for bad in (x[:, :, :, :-1], x.astype(np.float64), np.asfortranarray(x), None):
        assert call(bad) is None
    assert call(x, residual[:, :4]) is None


def test_bound_conv_keeps_its_plans_context(rng):
    """A plan's context is fixed when it is made: later default changes (threads,
    algorithm) reach new plans only, never a bound call of an existing one."""
    plan = F.ConvPlan(rand(rng, 8, 4, 3, 3), rand(rng, 8), 1, 1)
    x = rand(rng, 2, 4, 9, 7)
    call, out = bound_conv(plan, x.shape, fill=7.0)
    expected = plan.run(x).copy()
    algorithm = plan.kernel.last_algorithm
    previous_threads = pyconv.get_num_threads()
    previous_algorithm = conv_ext.set_algorithm("im2col" if algorithm != "im2col" else "padded")
    pyconv.set_num_threads(previous_threads % 2 + 1)
    try:
        assert call(x) is out and np.array_equal(out, expected)
        assert plan.kernel.last_algorithm == algorithm
        assert plan.kernel.context.num_threads == previous_threads
        fresh = F.ConvPlan(plan.kernel.weight, plan.kernel.bias, 1, 1)
        assert fresh.kernel.context.num_threads == previous_threads % 2 + 1
    finally:
        pyconv.set_num_threads(previous_threads)
        conv_ext.set_algorithm(previous_algorithm)


# (shape, kernel, strides, pads_begin, pads_end, dilations, ceil_mode)
POOLS = [
    ((1, 32, 32, 32), (2, 2), (2, 2), (0, 0), (0, 0), (1, 1), False),
    ((2, 3, 9, 12), (3, 3), (2, 2), (1, 1), (1, 0), (1, 1), True),
    ((1, 4, 9, 12), (2, 2), (2, 2), (0, 0), (0, 0), (2, 2), False),
    ((1, 2, 7), (3,), (1,), (1,), (1,), (1,), False),
    ((1, 2, 5, 6, 7), (2, 2, 2), (1, 2, 2), (0, 0, 0), (1, 1, 1), (1, 1, 1), False),
]


@pytest.mark.parametrize("case", POOLS, ids=lambda c: "x".join(map(str, c[0])))
@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("count_include_pad", [False, True])
def test_bound_pool_matches_the_entry_points(threads, rng, case, mode, count_include_pad):
    shape, k, s, pb, pe, d, ceil = case
    x = rand(rng, *shape)
    x.flat[::17] = np.nan                             # NaN windows take their own path
    want = (F.max_pool(x, k, s, pb, pe, d, ceil) if mode == "max" else
            F.avg_pool(x, k, s, pb, pe, d, ceil, count_include_pad))
    out = np.full(want.shape, 7, np.float32)
    call = F.bind_pool(mode, x.shape, k, s, pb, pe, d, ceil, out,
                       count_include_pad=count_include_pad)
    assert call(x) is out
    np.testing.assert_array_equal(out, want)


def test_bound_pool_declines_and_checks(rng):
    x = rand(rng, 1, 4, 8, 8)
    out = np.full((1, 4, 4, 4), 7, np.float32)
    call = F.bind_pool("max", x.shape, 2, 2, 0, 0, 1, False, out)
    for bad in (x[..., :-1], x.astype(np.float64), x[:, ::-1], rand(rng, 1, 4, 8, 9),
                x[0], x.tolist()):
        assert call(bad) is None
    shared = np.zeros(x.size, np.float32)
    call2 = F.bind_pool("avg", x.shape, 2, 2, 0, 0, 1, False, shared[:out.size].reshape(
        out.shape))
    assert call2(shared.reshape(x.shape)) is None
    assert (out == 7).all() and not shared.any()
    with pytest.raises(pyconv.errors.InvalidArgument, match="out must be"):
        F.bind_pool("max", x.shape, 2, 2, 0, 0, 1, False, np.empty((1, 4, 4, 5), np.float32))
    with pytest.raises(pyconv.errors.ShapeError, match="x must be"):
        F.bind_pool("max", (4, 8), 2, 2, 0, 0, 1, False, out)


@pytest.mark.parametrize("shape", [(1, 96, 8, 8), (2, 3, 7), (1, 2, 3, 4, 5), (3, 5, 1, 1)],
                         ids=str)
@pytest.mark.parametrize("is_max", [False, True])
def test_bound_global_pool_matches_the_entry_points(threads, rng, shape, is_max):
    x = rand(rng, *shape)
    x.flat[::13] = np.nan if is_max else 1e30       # NaN propagation / float64 sums
    call = F.bind_global_pool(x.shape, is_max)
    want = F.global_max_pool(x) if is_max else F.global_avg_pool(x)
    np.testing.assert_array_equal(call(x), want)
    for bad in (x[..., :-1] if shape[-1] > 1 else x[:1, :1], x.astype(np.float64),
                np.asfortranarray(x) if x.ndim > 2 and not x.flags.f_contiguous else x[None],
                x.tolist()):
        assert call(bad) is None
    with pytest.raises(pyconv.errors.ShapeError, match=r"none empty, got x_shape \(1, 2, 0\)"):
        F.bind_global_pool((1, 2, 0), is_max)


@pytest.mark.parametrize("rows,k,n", [(1, 96, 6), (1, 1, 1), (1, 300, 37), (4, 96, 6)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_bound_linear_matches_linear(threads, rng, rows, k, n, with_bias):
    w, b = rand(rng, n, k), rand(rng, n) if with_bias else None
    x = rand(rng, rows, k)
    call = F.LinearPlan(w, b).bind(x.shape)
    np.testing.assert_allclose(call(x), F.linear(x, w, b), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(call(x), x.astype(np.float64) @ w.T + (0 if b is None else b),
                               rtol=1e-4, atol=1e-4)
    for bad in (x[:, :-1], x.astype(np.float64), rand(rng, rows + 1, k), x[0], x.tolist()):
        assert call(bad) is None
    empty = F.LinearPlan(w[:, :0].copy(), b).bind((rows, 0))
    np.testing.assert_array_equal(empty(np.zeros((rows, 0), np.float32)),
                                  np.zeros((rows, n), np.float32) + (0 if b is None else b))
    with pytest.raises(pyconv.errors.InvalidDType, match="weight must be float32"):
        F.LinearPlan(w.astype(np.float64), b).bind(x.shape)
