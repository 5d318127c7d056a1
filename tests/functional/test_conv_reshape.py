"""ConvPlan's create -> reshape -> run: the frozen ConvReshape of one input shape, checked
against the plain output-size formulas (written here again, not taken from
pyconv.arithmetic), the naive references of tests/reference.py and its errors; and
with_activation, the plan sharing packed weights with another epilogue."""
import itertools

import numpy as np
import pytest

from _helpers import assert_close, avx512_context, rand
import reference as R
import pyconv
import pyconv.functional as F
from pyconv.errors import InvalidArgument, ShapeError


def conv_size(size, k, s, pb, pe, d):
    return (size + pb + pe - d * (k - 1) - 1) // s + 1


def conv_transpose_size(size, k, s, pb, pe, d, output_padding):
    return (size - 1) * s - pb - pe + d * (k - 1) + output_padding + 1


def same_pads(size, k, s, d, lower):
    """ONNX SAME_UPPER / SAME_LOWER: output ceil(size / s), the odd pad at the end
    (upper) or at the beginning (lower)."""
    out = -(-size // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
    small = total // 2
    return (total - small, small) if lower else (small, total - small)


# (spatial size, kernel, stride, (pad begin, pad end), dilation): 1-D and 2-D
CONV_GRID = [case for case in itertools.product(
    (5, 8, 9), (1, 2, 3), (1, 2, 3), ((0, 0), (1, 1), (2, 1), (0, 2)), (1, 2))
    if conv_size(case[0], case[1], case[2], *case[3], case[4]) >= 1
    and max(case[3]) < case[1] * case[4] + 1]


@pytest.mark.parametrize("size,k,s,pads,d", CONV_GRID, ids=str)
def test_conv_reshape_geometry_and_values(rng, size, k, s, pads, d):
    pb, pe = pads
    for n in (1, 2):
        w = rand(rng, 3, 2, *(k,) * n)
        plan = F.ConvPlan(w, None, s, (pb,) * n + (pe,) * n, d)
        x_shape = (2, 2) + (size, size + 1)[:n]
        r = plan.reshape(x_shape)
        want = tuple(conv_size(L, k, s, pb, pe, d) for L in x_shape[2:])
        assert r.input_shape == x_shape
        assert r.output_shape == (2, 3) + want
        assert (r.strides, r.dilations) == ((s,) * n, (d,) * n)
        assert (r.pads_begin, r.pads_end, r.output_padding) == ((pb,) * n, (pe,) * n,
                                                                 (0,) * n)
        assert r.geometry.output_shape == want
        assert r.workspace_bytes >= 0 and 1 <= r.num_threads <= plan.kernel.context.num_threads
        x = rand(rng, *x_shape)
        y = plan.run(x)
        assert y.shape == r.output_shape
        assert plan.kernel.last_algorithm == r.algorithm
        assert_close(y, R.conv_nd(x, w, None, s, pb, pe, d), 2 * k ** n)


@pytest.mark.parametrize("size,k,s,d", itertools.product((5, 8), (1, 3, 4), (1, 2, 3),
                                                         (1, 2)), ids=str)
@pytest.mark.parametrize("mode", ["same_upper", "same_lower"])
def test_conv_reshape_same_padding(rng, size, k, s, d, mode):
    plan = F.ConvPlan(rand(rng, 2, 2, k, k), None, s, mode, d)
    r = plan.reshape((1, 2, size, size + 3))
    for dim, L in enumerate((size, size + 3)):
        pb, pe = same_pads(L, k, s, d, mode == "same_lower")
        assert r.output_shape[2 + dim] == -(-L // s)
        assert (r.pads_begin[dim], r.pads_end[dim]) == (pb, pe)


TRANSPOSED_GRID = [case for case in itertools.product(
    (3, 5), (1, 2, 3), (1, 2, 3), ((0, 0), (1, 0), (1, 1)), (1, 2), (0, 1))
    if case[5] < max(case[2], case[4])
    and conv_transpose_size(case[0], case[1], case[2], *case[3], case[4], case[5]) >= 1]


@pytest.mark.parametrize("size,k,s,pads,d,opad", TRANSPOSED_GRID, ids=str)
def test_conv_transpose_reshape_geometry_and_values(rng, size, k, s, pads, d, opad):
    pb, pe = pads
    w = rand(rng, 2, 3, k, k)
    plan = F.ConvPlan(w, None, s, (pb, pb, pe, pe), d, transposed=True,
                      output_padding=opad)
    r = plan.reshape((1, 2, size, size + 1))
    want = tuple(conv_transpose_size(L, k, s, pb, pe, d, opad) for L in (size, size + 1))
    assert r.output_shape == (1, 3) + want
    assert r.output_padding == (opad, opad)
    assert r.algorithm == "col2im"
    x = rand(rng, 1, 2, size, size + 1)
    assert_close(plan.run(x), R.conv_transpose_nd(x, w, None, s, pb, pe, d, 1, opad), 2 * k * k)


def test_conv_transpose_reshape_output_size(rng):
    """output_size (torch's forward argument) is part of the reshape: one per size."""
    plan = F.ConvPlan(rand(rng, 2, 3, 3, 3), None, 2, 1, transposed=True)
    r8, r9 = plan.reshape((1, 2, 4, 4), (7, 7)), plan.reshape((1, 2, 4, 4), (8, 8))
    assert r8.output_shape == (1, 3, 7, 7) and r8.output_padding == (0, 0)
    assert r9.output_shape == (1, 3, 8, 8) and r9.output_padding == (1, 1)
    assert plan.reshape((1, 2, 4, 4), [8, 8]) is r9


def test_reshape_is_frozen_and_cached(rng):
    plan = F.ConvPlan(rand(rng, 4, 2, 3, 3), None, 2, "same")
    r = plan.reshape((1, 2, 9, 8))
    assert plan.reshape([1, 2, 9, 8]) is r and plan.geometry((1, 2, 9, 8)) is r.geometry
    assert plan.output_shape((1, 2, 9, 8)) == r.output_shape
    for name, value in (("output_shape", (1, 4, 1, 1)), ("algorithm", "im2col"),
                        ("strides", (1, 1)), ("pads_begin", (0, 0)),
                        ("workspace_bytes", 0), ("num_threads", 8)):
        with pytest.raises(AttributeError):
            setattr(r, name, value)
    with pytest.raises(AttributeError):
        r.anything_new = 1
    assert r.output_shape == (1, 4, 5, 4)


@pytest.mark.parametrize("shape,expected", [
    ((1, 64, 56, 56, 64, 3, 1, 1, 1), "shifted"),
    ((1, 64, 8, 8, 96, 3, 1, 2, 2), "channels"),
    ((1, 32, 16, 16, 64, 1, 1, 0, 1), "pointwise"),
    ((1, 16, 32, 32, 16, 1, 2, 0, 1), "im2col"),
    ((1, 8, 9, 9, 8, 3, 1, 1, 1), None),                  # groups=8: depthwise
])
def test_reshape_chooses_the_algorithm_once(rng, shape, expected):
    n, cin, h, w, cout, k, s, p, d = shape
    groups = 1 if expected else cin
    ctx = avx512_context()
    plan = F.ConvPlan(rand(rng, cout, cin // groups, k, k), None, s, p, d, groups, context=ctx)
    r = plan.reshape((n, cin, h, w))
    assert r.algorithm == (expected or "depthwise")
    assert r.num_threads == 1
    assert r.workspace_bytes > 0 or r.algorithm == "pointwise"
    assert r.workspace_bytes % 4 == 0
    # An empty batch needs no workspace.
    assert plan.reshape((0, cin, h, w)).workspace_bytes == 0


def test_reshape_errors_name_the_argument(rng):
    plan = F.ConvPlan(rand(rng, 4, 3, 3, 3), None, op="c1")
    with pytest.raises(ShapeError, match=r"c1: expected a 4-D input .* got shape \(2, 3, 9\)"):
        plan.reshape((2, 3, 9))
    with pytest.raises(ShapeError, match=r"c1: input has 2 channels, the weight expects 3"):
        plan.reshape((1, 2, 5, 5))
    with pytest.raises(InvalidArgument, match=r"c1: input_shape must be non-negative ints.*"
                                              r"dim 2"):
        plan.reshape((1, 3, -3, 4))
    with pytest.raises(InvalidArgument, match=r"c1: input_shape must be non-negative ints"):
        plan.reshape((1, 3, 4.0, 4))
    with pytest.raises(InvalidArgument, match=r"c1: input_shape and output_size"):
        plan.reshape(None)
    with pytest.raises(ShapeError, match=r"c1: .*kernel"):
        plan.reshape((1, 3, 2, 5))          # a 3x3 kernel on 2 rows, no padding
    out = np.empty((1, 4, 3, 3), np.float32)
    with pytest.raises(InvalidArgument, match=r"c1: out must be .* shape \(1, 4, 4, 4\)"):
        plan.bind((1, 3, 6, 6), out)


def test_kernel_refuses_a_reshape_it_does_not_fit(rng):
    """The Cython layer checks what it is handed: another kernel's reshape, or arrays of
    other shapes, raise instead of reading out of bounds."""
    a = F.ConvPlan(rand(rng, 4, 3, 3, 3))
    b = F.ConvPlan(rand(rng, 4, 3, 3, 3))
    r = a.reshape((1, 3, 6, 6))
    x, out = rand(rng, 1, 3, 6, 6), np.empty((1, 4, 4, 4), np.float32)
    with pytest.raises(ValueError, match="another kernel"):
        b.kernel.run(r, x, out)
    with pytest.raises(ValueError, match="shapes"):
        a.kernel.run(r, rand(rng, 1, 3, 7, 6), out)
    with pytest.raises(ValueError, match="shapes"):
        a.kernel.run(r, x, np.empty((1, 4, 4, 5), np.float32))
    assert a.kernel.run(r, x, out) is out


@pytest.mark.parametrize("transposed", [False, True])
def test_with_activation_shares_the_packed_weights(rng, transposed):
    w, b = rand(rng, 4, 4, 3, 3), rand(rng, 4)
    plan = F.ConvPlan(w, b, 2, 1, transposed=transposed, activation="leaky_relu",
                      act_alpha=0.2)
    plain = plan.with_activation(None)
    relu6 = plan.with_activation("clip", 0.0, 6.0)
    assert plain.kernel is plan.kernel and relu6.kernel is plan.kernel
    assert plain.attributes is plan.attributes
    x = rand(rng, 2, 4, 7, 6)
    assert plain.reshape(x.shape) is plan.reshape(x.shape)   # reshapes are shared too
    y = plain.run(x)
    ref = (R.conv_transpose_nd(x, w, b, 2, 1, 1) if transposed
           else R.conv_nd(x, w, b, 2, 1, 1))
    assert_close(y, ref, 36)
    np.testing.assert_array_equal(plan.run(x), np.where(y > 0, y, np.float32(0.2) * y))
    np.testing.assert_array_equal(relu6.run(x), np.clip(y, 0, 6))
    assert (plan.activation, plan.act_alpha) == ("leaky_relu", 0.2)   # unchanged
    assert plain.activation is None
    with pytest.raises(InvalidArgument, match="activation must be one of"):
        plan.with_activation("swish2")


def test_one_shot_calls_share_attributes_and_geometry(rng):
    """Functional calls build their ConvAttributes once per argument tuple and resolve a
    geometry once per input shape (both immutable), never letting an argument of another
    type through a cached entry."""
    from pyconv import arithmetic
    a = arithmetic.torch_attributes("conv", 2, (3, 3), 2, 1, 1, op="conv2d")
    assert arithmetic.torch_attributes("conv", 2, (3, 3), 2, 1, 1, op="conv2d") is a
    g = a.resolve((7, 8))
    assert a.resolve((7, 8)) is g and g.output_shape == (4, 4)
    with pytest.raises(InvalidArgument, match="input spatial shape.* must be an int, got float"):
        a.resolve((7.0, 8))
    x, w = rand(rng, 1, 2, 7, 8), rand(rng, 3, 2, 3, 3)
    np.testing.assert_array_equal(F.conv2d(x, w, None, 2, 1), F.conv2d(x, w, None, 2, 1))
    with pytest.raises(InvalidArgument, match="stride"):
        F.conv2d(x, w, None, 2.0, 1)
    with pytest.raises(InvalidArgument, match="stride"):
        F.conv2d(x, w, None, True, 1)
