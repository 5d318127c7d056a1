"""The GEMM's split over threads (gemm.pyx's _thread_grid) changes who computes a tile, never
its sum: every thread count gives the 1-thread bits, on shapes that make each kind of split
(one column panel, a last panel of one column, few rows, many columns) for the packed
pointwise, implicit im2col, padded and linear paths."""
import numpy as np
import pytest

import pyconv
import pyconv.functional as F

# (C_in, C_out, map, kernel, stride, padding)
CONV_SHAPES = [
    (256, 512, 4, 3, 1, 1),     # one 16-column panel, many row panels
    (256, 512, 8, 1, 2, 0),     # strided 1x1: implicit im2col on 16 columns
    (2048, 512, 7, 1, 1, 0),    # 49 columns: a last panel of one column
    (64, 256, 24, 1, 1, 0),     # pointwise, many column panels
    (96, 24, 13, 3, 1, 1),      # few rows (3 row panels), odd map
    (32, 40, 9, 3, 2, 0),       # strided 3x3, partial row panel
]


def _reference(x, w, stride, padding):
    """Float64 convolution of one image by its im2col columns."""
    xp = np.pad(x[0].astype(np.float64), ((0, 0), (padding, padding), (padding, padding)))
    k = w.shape[-1]
    oh = (xp.shape[1] - k) // stride + 1
    cols = np.stack([xp[:, i:i + stride * oh:stride, j:j + stride * oh:stride]
                     for i in range(k) for j in range(k)], axis=1)   # C, k*k, oh, ow
    wk = w.reshape(w.shape[0], w.shape[1], k * k).astype(np.float64)
    return np.einsum("ocj,cjhw->ohw", wk, cols)[None]


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_conv_bits_do_not_depend_on_the_thread_count(shape, rng=np.random.default_rng(3)):
    cin, cout, hw, k, stride, padding = shape
    x = rng.standard_normal((1, cin, hw, hw)).astype(np.float32)
    w = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    outs = []
    for threads in (1, 2, 3, 4):
        plan = F.ConvPlan(w, b, stride=stride, padding=padding,
                          context=pyconv.ExecutionContext(num_threads=threads))
        outs.append(plan(x))
    ref = _reference(x, w, stride, padding) + b[None, :, None, None]
    np.testing.assert_allclose(outs[0], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    for threads, out in zip((2, 3, 4), outs[1:]):
        assert np.array_equal(out, outs[0]), f"{threads} threads changed the bits"


@pytest.mark.parametrize("rows,k,n", [(49, 512, 1000), (200, 64, 16), (3, 300, 700)])
def test_linear_bits_do_not_depend_on_the_thread_count(rows, k, n, rng=np.random.default_rng(4)):
    x = rng.standard_normal((rows, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    outs = [F.LinearPlan(w, None, context=pyconv.ExecutionContext(num_threads=t))(x)
            for t in (1, 2, 3, 4)]
    np.testing.assert_allclose(outs[0], x.astype(np.float64) @ w.T.astype(np.float64),
                               rtol=1e-4, atol=1e-3)
    for out in outs[1:]:
        assert np.array_equal(out, outs[0])
