"""gemm.channel_affine, the one-pass kernel of BatchNormalization (inference) and the
optimizer's ChannelAffine: act(x * scale + shift) per channel, against float64 NumPy, for
every fused activation, map sizes with vector tails, in place, and 1-4 threads."""
import numpy as np
import pytest

import pyconv
from pyconv import _activations
from pyconv._ext import gemm
from pyconv.errors import InvalidArgument, InvalidDType, ShapeError

SHAPES = [(2, 5, 7, 3), (1, 16, 1, 1), (3, 4, 17), (1, 3, 33, 33), (1, 64, 128)]


def _reference(x, scale, shift):
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    return x.astype(np.float64) * scale.reshape(shape) + shift.reshape(shape)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64_without_activation(shape, rng=np.random.default_rng(1)):
    x = rng.standard_normal(shape).astype(np.float32)
    scale = rng.standard_normal(shape[1]).astype(np.float32)
    shift = rng.standard_normal(shape[1]).astype(np.float32)
    ref = _reference(x, scale, shift)
    for threads in (1, 2, 4):
        y = gemm.channel_affine(x, scale, shift,
                                context=pyconv.ExecutionContext(num_threads=threads))
        np.testing.assert_allclose(y, ref, rtol=2e-7, atol=2e-7)


@pytest.mark.parametrize("activation", sorted(_activations.ACTIVATIONS))
def test_activation_is_the_epilogues(activation, rng=np.random.default_rng(2)):
    """The activation part is bit for bit the fused epilogue's (apply_activation) on the
    affine values."""
    x = rng.standard_normal((2, 6, 5, 9)).astype(np.float32) * 3
    scale = rng.standard_normal(6).astype(np.float32)
    shift = rng.standard_normal(6).astype(np.float32)
    a, b = (0.0, 6.0) if activation == "clip" else (0.1, 0.5)
    affine = gemm.channel_affine(x, scale, shift)
    want = gemm.apply_activation(affine.copy(), activation, a, b)
    got = gemm.channel_affine(x, scale, shift, activation, a, b)
    np.testing.assert_array_equal(got, want)


def test_in_place_and_preallocated(rng=np.random.default_rng(3)):
    x = rng.standard_normal((1, 8, 10, 10)).astype(np.float32)
    scale = rng.standard_normal(8).astype(np.float32)
    shift = rng.standard_normal(8).astype(np.float32)
    want = gemm.channel_affine(x, scale, shift, "relu")
    out = np.empty_like(x)
    assert gemm.channel_affine(x, scale, shift, "relu", out=out) is out
    np.testing.assert_array_equal(out, want)
    assert gemm.channel_affine(x, scale, shift, "relu", out=x) is x
    np.testing.assert_array_equal(x, want)


def test_bad_arguments_are_named():
    x = np.ones((1, 3, 4, 4), np.float32)
    s = np.ones(3, np.float32)
    with pytest.raises(ShapeError, match="scale"):
        gemm.channel_affine(x, np.ones(4, np.float32), s)
    with pytest.raises(ShapeError, match=r"\(N, C"):
        gemm.channel_affine(np.ones(3, np.float32), s, s)
    with pytest.raises(InvalidDType):
        gemm.channel_affine(x.astype(np.float64), s, s)
    with pytest.raises(InvalidArgument, match="out"):
        gemm.channel_affine(x, s, s, out=np.empty((1, 3, 4, 5), np.float32))
    with pytest.raises(Exception, match="activation|unknown"):
        gemm.channel_affine(x, s, s, "no-such-activation")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("activation", [None, "relu", "hardswish"])
def test_bound_call_gives_the_unbound_bits(shape, activation, rng=np.random.default_rng(5)):
    """bind_channel_affine: the bits of channel_affine into the planned buffer, in place
    (out is x), or into a new array when the buffer overlaps x otherwise; None for an
    input it was not bound to."""
    x = rng.standard_normal(shape).astype(np.float32)
    scale = rng.standard_normal(shape[1]).astype(np.float32)
    shift = rng.standard_normal(shape[1]).astype(np.float32)
    want = gemm.channel_affine(x, scale, shift, activation)
    for threads in (1, 2):
        ctx = pyconv.ExecutionContext(num_threads=threads)
        out = np.empty(shape, np.float32)
        call = gemm.bind_channel_affine(shape, scale, shift, activation, out=out, context=ctx)
        y = call(x)
        assert y is out
        np.testing.assert_array_equal(y, want)
        assert gemm.bind_channel_affine(shape, scale, shift, activation)(x) is not x
        xi = x.copy()
        assert gemm.bind_channel_affine(shape, scale, shift, activation, out=xi)(xi) is xi
        np.testing.assert_array_equal(xi, want)
        assert call(x.astype(np.float64)) is None
        assert call(np.zeros((1,) + shape, np.float32)) is None


def test_bind_refuses_bad_arguments():
    with pytest.raises(ValueError, match="scale and shift"):
        gemm.bind_channel_affine((1, 3, 4), None, np.zeros(3, np.float32))
    with pytest.raises((ShapeError, InvalidArgument, ValueError)):
        gemm.bind_channel_affine((1, 3, 4), np.zeros(4, np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="out must be"):
        gemm.bind_channel_affine((1, 3, 4), np.zeros(3, np.float32), np.zeros(3, np.float32),
                                 out=np.zeros((1, 3, 5), np.float32))
