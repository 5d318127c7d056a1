"""PoolPlan / GlobalPoolPlan: create -> reshape -> run, the frozen PoolReshape checked
against the plain output-size formulas (written here again) and the naive references of
tests/reference.py; the functional entry points run through these plans."""
import dataclasses
import itertools

import numpy as np
import pytest

from _helpers import rand
import reference as R
import pyconv
import pyconv.functional as F
from pyconv import arithmetic
from pyconv.errors import InvalidArgument, ShapeError


def pool_size(size, k, s, pb, pe, d, ceil_mode):
    """Output size; with ceil_mode a last window starting in the end padding is dropped."""
    span = size + pb + pe - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + pb:
        out -= 1
    return out


# (size, kernel, stride, (pad begin, pad end), dilation, ceil_mode); pads below the kernel
POOL_GRID = [case for case in itertools.product(
    (5, 6, 9), (1, 2, 3), (1, 2, 3), ((0, 0), (1, 0), (1, 1), (0, 2)), (1, 2), (False, True))
    if max(case[3]) < case[1]
    and pool_size(case[0], case[1], case[2], *case[3], case[4], case[5]) >= 1]


@pytest.mark.parametrize("size,k,s,pads,d,ceil", POOL_GRID, ids=str)
def test_pool_reshape_geometry_and_values(rng, size, k, s, pads, d, ceil):
    pb, pe = pads
    attrs = arithmetic.ConvAttributes("pool", (k, k), s, d, (pb, pb, pe, pe), ceil_mode=ceil,
                                      op="pool")
    x = rand(rng, 2, 3, size, size + 2)
    want = tuple(pool_size(L, k, s, pb, pe, d, ceil) for L in x.shape[2:])
    for mode, ref in (("max", lambda: R.max_pool_nd(x, k, s, pb, pe, d, ceil)[0]),
                      ("avg", lambda: R.avg_pool_nd(x, k, s, pb, pe, d, ceil, False))):
        plan = F.PoolPlan(mode, attrs)
        r = plan.reshape(x.shape)
        assert r.input_shape == x.shape and r.output_shape == (2, 3) + want
        assert (r.kernel_shape, r.strides, r.dilations) == ((k, k), (s, s), (d, d))
        assert (r.pads_begin, r.pads_end) == ((pb, pb), (pe, pe))
        # 6 planes: rows on AVX-512, a vector's width of planes at a time (lanes) on AVX2
        assert r.algorithm in ("rows", "lanes") and r.num_threads >= 1
        assert r.workspace_bytes > 0
        y = plan.run(x)
        assert y.shape == r.output_shape
        np.testing.assert_allclose(y, ref(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_pool_reshape_auto_pad(rng, auto_pad):
    attrs = arithmetic.ConvAttributes("pool", (3, 2), (2, 3), auto_pad=auto_pad, op="p")
    r = F.PoolPlan("max", attrs).reshape((1, 1, 9, 10))
    for dim, (L, k, s) in enumerate(((9, 3, 2), (10, 2, 3))):
        if auto_pad == "VALID":
            assert r.output_shape[2 + dim] == (L - k) // s + 1
            continue
        out = -(-L // s)
        total = max((out - 1) * s + k - L, 0)
        small = total // 2
        pb, pe = (total - small, small) if auto_pad == "SAME_LOWER" else (small, total - small)
        assert r.output_shape[2 + dim] == out
        assert (r.pads_begin[dim], r.pads_end[dim]) == (pb, pe)


def test_pool_reshape_is_frozen_cached_and_checked(rng):
    attrs = arithmetic.ConvAttributes("pool", (2, 2), 2, op="mp")
    plan = F.PoolPlan("max", attrs, indices="torch")
    r = plan.reshape((1, 2, 6, 6))
    assert plan.reshape([1, 2, 6, 6]) is r and r.algorithm == "generic"
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.output_shape = (1, 2, 2, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.algorithm = "rows"
    with pytest.raises(ShapeError, match=r"mp: x must be \(N, C, \*spatial\) .* got x_shape "
                                         r"\(1, 2\)"):
        plan.reshape((1, 2))
    with pytest.raises(ShapeError, match=r"mp: .*none empty, got x_shape \(1, 2, 0, 3\)"):
        plan.reshape((1, 2, 0, 3))
    with pytest.raises(InvalidArgument, match=r"mp: x_shape must be a sequence of "
                                              r"non-negative ints"):
        plan.reshape((1, 2, -4, 4))
    with pytest.raises(ShapeError, match=r"mp: "):
        plan.reshape((1, 2, 1, 6))                  # a 2-row window on 1 row


def test_global_pool_plan(rng):
    x = rand(rng, 2, 3, 5, 4, 3)
    for is_max, ref in ((False, R.global_avg_pool), (True, R.global_max_pool)):
        plan = F.GlobalPoolPlan(is_max, op="gp", context=pyconv.ExecutionContext(1))
        r = plan.reshape(x.shape)
        assert r.output_shape == (2, 3, 1, 1, 1) and r.kernel_shape == (5, 4, 3)
        assert (r.algorithm, r.num_threads, r.workspace_bytes) == ("global", 1, 0)
        assert plan.reshape(list(x.shape)) is r
        y = plan.run(x)
        np.testing.assert_allclose(y, ref(x), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(plan.bind(x.shape)(x), y)
        assert F.bind_global_pool(x.shape, is_max)(x[:1]) is None   # another shape
        with pytest.raises(ShapeError, match=r"gp: x must be .* got x_shape \(2, 3\)"):
            plan.reshape((2, 3))
        with pytest.raises(ShapeError, match=r"gp: .*x_shape \(2, 3, 4, 0\)"):
            plan.run(np.zeros((2, 3, 4, 0), np.float32))


# --- the functional entry points run through cached plans -------------------------------

def test_functional_pools_match_the_references(rng):
    """Same answers as the naive references, on the first call and on the cached plan of
    the second (batched and unbatched)."""
    x = rand(rng, 2, 3, 9, 8)
    for _ in range(2):
        y, idx = F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
        ref_y, ref_idx = R.max_pool_nd(x, 3, 2, 1, 1, 1, True)
        np.testing.assert_array_equal(y, ref_y)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(F.max_pool2d(x[0], 3, 2, 1, ceil_mode=True), ref_y[0])
        for cip in (False, True):
            np.testing.assert_allclose(F.avg_pool2d(x, (3, 2), 2, (1, 0), True, cip),
                                       R.avg_pool_nd(x, (3, 2), 2, (1, 0), (1, 0), 1, True, cip),
                                       rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(F.lp_pool2d(x, 3, 2), R.lp_pool_nd(x, 3, 2),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(F.lp_pool2d(x, np.inf, 2),
                                   R.max_pool_nd(np.abs(x), 2)[0], rtol=0, atol=0)
        np.testing.assert_allclose(F.avg_pool(x, 2, 1, 0, 1, dilations=2),
                                   R.avg_pool_nd(x, 2, 1, 0, 1, 2, False, False),
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(F.global_max_pool(x), R.global_max_pool(x))


def test_functional_plan_cache_tells_argument_types_apart(rng):
    """1, 1.0, True and np.int64(1) are equal dict keys but not equal arguments: a cached
    plan never lets an invalid one through, and NumPy ints still work."""
    x = rand(rng, 1, 2, 6, 6)
    assert F.max_pool2d(x, 2).shape == (1, 2, 3, 3)
    with pytest.raises(InvalidArgument, match="kernel_size must be an int, got float"):
        F.max_pool2d(x, 2.0)
    assert F.max_pool2d(x, 1).shape == (1, 2, 6, 6)
    with pytest.raises(InvalidArgument, match="kernel_size must be an int, got bool"):
        F.max_pool2d(x, True)
    np.testing.assert_array_equal(F.max_pool2d(x, np.int64(2)), F.max_pool2d(x, 2))
    np.testing.assert_array_equal(F.avg_pool2d(x, [2, 2]), F.avg_pool2d(x, (2, 2)))
    assert arithmetic.exact_key((2, (1, 2))) != arithmetic.exact_key((2.0, (1, 2)))
    assert arithmetic.exact_key((np.int64(2),)) is None
    assert arithmetic.exact_key(((1, True),)) is None


def test_functional_plans_follow_the_default_context(rng):
    """A functional call without a context runs with the defaults at the call: the plan
    cache is keyed by the context too."""
    x = rand(rng, 1, 2, 6, 6)
    previous = pyconv.get_num_threads()
    try:
        for n in (1, 2):
            pyconv.set_num_threads(n)
            F.max_pool2d(x, 2)
            plan = F._pool._torch_plan("max_pool2d", 2, "max", 2, None, 0, 1, False,
                                       indices="none")
            assert plan.context.num_threads == n
    finally:
        pyconv.set_num_threads(previous)
