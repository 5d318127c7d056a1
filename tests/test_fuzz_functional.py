"""Random (mostly bad) arguments to pyconv.functional: every call must either succeed
with a float32 result or raise a pyconv exception; never crash, hang or leak another error.

PYCONV_FUZZ_CASES sets the number of cases per op (default 300; a long campaign:
PYCONV_FUZZ_CASES=20000 python -m pytest tests/test_fuzz_functional.py)."""
import os

import numpy as np
import pytest

import pyconv.functional as F
from pyconv.errors import PyconvError

CASES = int(os.environ.get("PYCONV_FUZZ_CASES", "300"))
# Values chosen to hit the edges: zero, negative, one, typical, larger than the input.
INTS = [-2, -1, 0, 1, 1, 2, 2, 3, 5, 9, 1 << 40]


def pick(rng, values):
    return values[rng.integers(len(values))]


def rand_tuple(rng, n):
    """An int, an n-tuple, a wrong-length tuple or a junk value."""
    r = rng.random()
    if r < 0.5:
        return pick(rng, INTS)
    if r < 0.85:
        return tuple(pick(rng, INTS) for _ in range(n))
    if r < 0.95:
        return tuple(pick(rng, INTS) for _ in range(n + 1))
    return pick(rng, ["same", "valid", "bogus", 1.5, None, (1.0,) * n])


def rand_array(rng, nd):
    """A small array of a random shape (zero-size dims included) and mostly float32."""
    shape = tuple(int(pick(rng, [0, 1, 1, 2, 3, 4, 5, 7])) for _ in range(nd))
    if rng.random() < 0.1:  # wrong rank
        shape = shape[:-1] if rng.random() < 0.5 else shape + (2,)
    dtype = pick(rng, [np.float32] * 8 + [np.float64, np.int64, np.float16])
    x = rng.standard_normal(shape).astype(dtype)
    if rng.random() < 0.05 and x.size and np.issubdtype(dtype, np.floating):
        x.flat[0] = pick(rng, [np.nan, np.inf, -np.inf])
    return x


def call(fn, *args, **kwargs):
    try:
        out = fn(*args, **kwargs)
    except PyconvError:
        return None
    outs = out if isinstance(out, tuple) else (out,)
    for o in outs:
        assert isinstance(o, np.ndarray), type(o)
    return outs[0]


def conv_case(rng, nd, transposed):
    c = int(pick(rng, [1, 2, 3, 4]))
    groups = pick(rng, [1, 1, 1, 2, 3, c, 0, -1])
    x = rand_array(rng, nd + 2)
    if x.ndim == nd + 2 and rng.random() < 0.8:
        x = rng.standard_normal((x.shape[0] or 1, c) + x.shape[2:]).astype(x.dtype)
    k = tuple(int(pick(rng, [0, 1, 2, 3])) for _ in range(nd))
    g = groups if isinstance(groups, int) and groups > 0 else 1
    if transposed:
        w = rng.standard_normal((c, pick(rng, [1, 2]) * 1) + k).astype(np.float32)
    else:
        w = rng.standard_normal((pick(rng, [1, 2, 3, 4]) * g, max(c // g, 1)) + k).astype(
            np.float32)
    bias = None if rng.random() < 0.5 else rng.standard_normal(
        int(pick(rng, [1, 2, 3, 4, 8]))).astype(np.float32)
    return x, w, bias, groups


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_fuzz_conv(nd):
    rng = np.random.default_rng(100 + nd)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    for _ in range(CASES):
        x, w, bias, groups = conv_case(rng, nd, False)
        call(fn, x, w, bias, stride=rand_tuple(rng, nd), padding=rand_tuple(rng, nd),
             dilation=rand_tuple(rng, nd), groups=groups)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_fuzz_conv_transpose(nd):
    rng = np.random.default_rng(200 + nd)
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
    for _ in range(CASES):
        x, w, bias, groups = conv_case(rng, nd, True)
        call(fn, x, w, bias, stride=rand_tuple(rng, nd), padding=rand_tuple(rng, nd),
             output_padding=rand_tuple(rng, nd), groups=groups,
             dilation=rand_tuple(rng, nd))


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_fuzz_pooling(nd):
    rng = np.random.default_rng(300 + nd)
    fns = {1: (F.max_pool1d, F.avg_pool1d), 2: (F.max_pool2d, F.avg_pool2d),
           3: (F.max_pool3d, F.avg_pool3d)}[nd]
    for _ in range(CASES):
        x = rand_array(rng, nd + 2)
        k, s, p = rand_tuple(rng, nd), rand_tuple(rng, nd), rand_tuple(rng, nd)
        ceil = bool(rng.random() < 0.5)
        call(fns[0], x, k, s, p, dilation=rand_tuple(rng, nd), ceil_mode=ceil,
             return_indices=bool(rng.random() < 0.5))
        call(fns[1], x, k, s, p, ceil_mode=ceil, count_include_pad=bool(rng.random() < 0.5))


def test_fuzz_unpool_interpolate_and_friends():
    rng = np.random.default_rng(400)
    for _ in range(CASES):
        x = rand_array(rng, 4)
        idx = rng.integers(-3, 60, size=x.shape if rng.random() < 0.8 else (2, 2))
        call(F.max_unpool2d, x, idx, rand_tuple(rng, 2), rand_tuple(rng, 2),
             rand_tuple(rng, 2))
        call(F.interpolate, x, size=rand_tuple(rng, 2) if rng.random() < 0.5 else None,
             scale_factor=pick(rng, [None, 0.0, -1.0, 0.5, 2, 3.0, (2, 2), 1e12]),
             mode=pick(rng, ["nearest", "bilinear", "linear", "bogus"]))
        call(F.adaptive_avg_pool2d, x, rand_tuple(rng, 2))
        call(F.adaptive_max_pool2d, x, rand_tuple(rng, 2))
        call(F.lp_pool2d, x, pick(rng, [1, 2, 3, 0, -1]), rand_tuple(rng, 2),
             rand_tuple(rng, 2))
        mean = rand_array(rng, 1)
        call(F.batch_norm, x, mean, np.abs(mean), mean, mean,
             eps=pick(rng, [1e-5, 0.0, -1.0]))
        call(F.linear, rand_array(rng, 2), rand_array(rng, 2), rand_array(rng, 1))
        call(F.pad, x, tuple(pick(rng, INTS[:8]) for _ in range(pick(rng, [2, 4, 3]))),
             mode=pick(rng, ["constant", "reflect", "replicate", "circular", "bogus"]))
        call(F.softmax, x, dim=pick(rng, [-5, -1, 0, 1, 3, 4]))
        call(F.leaky_relu, x, pick(rng, [0.01, -1.0, np.nan]))
        call(F.hardtanh, x, pick(rng, [-1.0, 1.0, np.nan]), pick(rng, [1.0, -1.0]))
