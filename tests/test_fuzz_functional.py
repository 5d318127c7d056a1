"""Random (mostly bad) arguments to pyconv.functional: every call must either succeed
with a float32 result or raise a pyconv exception; never crash, hang or leak another error.

PYCONV_FUZZ_CASES sets the number of cases per op (default 300; a long campaign:
PYCONV_FUZZ_CASES=20000 python -m pytest tests/test_fuzz_functional.py), and a fifth of it
the hypothesis examples per public function of the hostile-argument sweep at the end
(every function in pyconv.functional.__all__ must have a valid call in VALID_CALLS)."""
import inspect
import os
import warnings

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


# ---------------------------------------------------------------------------------------
# Every public function, hypothesis-driven: one valid call per function, then one or two
# of its arguments replaced by hostile values (huge and negative sizes, wrong types,
# ragged lists, arrays of every dtype and rank, np.matrix, NaN). Each call must return
# plain ndarrays or raise a pyconv error whose message names the function.

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

_r = np.random.default_rng(0)
_x3 = _r.standard_normal((1, 2, 6)).astype(np.float32)
_x4 = _r.standard_normal((1, 2, 5, 5)).astype(np.float32)
_x5 = _r.standard_normal((1, 2, 3, 4, 4)).astype(np.float32)
_w3 = _r.standard_normal((2, 2, 3)).astype(np.float32)
_w4 = _r.standard_normal((2, 2, 3, 3)).astype(np.float32)
_w5 = _r.standard_normal((2, 2, 1, 3, 3)).astype(np.float32)
_i3, _i4, _i5 = (np.zeros(x.shape, np.int64) for x in (_x3, _x4, _x5))
# A valid call of each public function (positional arguments).
VALID_CALLS = {
    "adaptive_avg_pool": (_x4, 2), "adaptive_avg_pool1d": (_x3, 2),
    "adaptive_avg_pool2d": (_x4, 2), "adaptive_avg_pool3d": (_x5, 2),
    "adaptive_max_pool": (_x4, 2), "adaptive_max_pool1d": (_x3, 2),
    "adaptive_max_pool2d": (_x4, 2), "adaptive_max_pool3d": (_x5, 2),
    "avg_pool": (_x4, (2, 2)), "avg_pool1d": (_x3, 2), "avg_pool2d": (_x4, 2),
    "avg_pool3d": (_x5, 1),
    "batch_norm": (_x4, np.zeros(2, np.float32), np.ones(2, np.float32)),
    "bind_global_pool": ((1, 2, 5, 5), True),
    "bind_pool": ("max", (1, 2, 5, 5), (2, 2), 1, 0, 0, 1, False,
                  np.empty((1, 2, 4, 4), np.float32)),
    "clip": (_x4, -1.0, 1.0), "conv1d": (_x3, _w3), "conv2d": (_x4, _w4),
    "conv3d": (_x5, _w5), "conv_matrix": (_w4, (1, 2, 5, 5)),
    "conv_transpose1d": (_x3, _w3), "conv_transpose2d": (_x4, _w4),
    "conv_transpose3d": (_x5, _w5), "dropout": (_x4,), "elu": (_x4,), "flatten": (_x4,),
    "gelu": (_x4,), "global_avg_pool": (_x4,), "global_max_pool": (_x4,),
    "hardsigmoid": (_x4,), "hardswish": (_x4,), "hardtanh": (_x4,),
    "interpolate": (_x4, (3, 3)), "leaky_relu": (_x4,),
    "linear": (_x4, np.ones((3, 5), np.float32)), "log_softmax": (_x4, 1),
    "lp_pool": (_x4, (2, 2)), "lp_pool1d": (_x3, 2, 2), "lp_pool2d": (_x4, 2, 2),
    "lp_pool3d": (_x5, 2, 1), "max_pool": (_x4, (2, 2)), "max_pool1d": (_x3, 2),
    "max_pool2d": (_x4, 2), "max_pool3d": (_x5, 1), "max_unpool": (_x4, _i4, (5, 5)),
    "max_unpool1d": (_x3, _i3, 1), "max_unpool2d": (_x4, _i4, 1),
    "max_unpool3d": (_x5, _i5, 1), "mish": (_x4,), "pad": (_x4, (1, 1)), "relu": (_x4,),
    "relu6": (_x4,), "resize": (_x4, (1, 2, 3, 3)), "selu": (_x4,), "sigmoid": (_x4,),
    "silu": (_x4,), "softmax": (_x4, 1), "softplus": (_x4,), "tanh": (_x4,),
    "depth_to_space": (np.ones((1, 8, 2, 2), np.float32), 2),
    "space_to_depth": (np.ones((1, 2, 4, 4), np.float32), 2),
    "pixel_shuffle": (np.ones((1, 8, 2, 2), np.float32), 2),
    "pixel_unshuffle": (np.ones((1, 2, 4, 4), np.float32), 2),
    "unfold": (_x4, 2), "fold": (np.ones((1, 8, 4), np.float32), (3, 3), 2),
    "layer_norm": (_x4, (5, 5)), "group_norm": (_x4, 2), "instance_norm": (_x4,),
    "matmul": (_x4, np.ones((5, 3), np.float32)),
    "prelu": (_x4, np.full(2, 0.25, np.float32)),
}
FUNCTIONS = sorted(n for n in F.__all__ if not n[0].isupper())
# Sizes that are absurd (far above pyconv's tensor limit, or past int64) or negative;
# never "valid but merely large", which would allocate gigabytes legitimately.
_huge = st.sampled_from([2**31, 2**40, 2**62, 2**63, 2**64, -2**63, -2**40, -2**31])
_ints = st.one_of(st.integers(-3, 6), _huge)
_scalars = st.one_of(_ints, st.floats(), st.booleans(), st.none(), st.text(max_size=3),
                     st.sampled_from([b"x", object(), {}, {"a": 1}, np.int64(2),
                                      np.float32(0.5), np.bool_(True), np.array(2),
                                      complex(1, 1)]))
_seqs = st.one_of(st.lists(_ints, max_size=7).map(tuple), st.lists(_ints, max_size=4),
                  st.lists(st.floats(), max_size=4).map(tuple),
                  st.lists(_scalars, max_size=4).map(tuple),
                  st.sampled_from([[[1.0, 2.0], [3.0]], [(1, 2), (3,)], ("a", 1)]))
_dtypes = st.sampled_from([np.float32, np.float32, np.float64, np.float16, np.int64,
                           np.int32, np.uint8, np.bool_, np.complex64])
_arrays = hnp.arrays(_dtypes, hnp.array_shapes(min_dims=0, max_dims=5, min_side=0,
                                               max_side=4))
with warnings.catch_warnings():
    warnings.simplefilter("ignore", PendingDeprecationWarning)
    _np_matrix = np.matrix([[1.0, 2.0]], np.float32)
_matrix = st.sampled_from([_np_matrix,
                           np.full((1, 2, 5, 5), np.nan, np.float32),
                           np.ones((1, 2, 5, 5), np.float32)[..., ::2],
                           np.ones((1, 2, 5, 5), np.float32).view(np.recarray)])
HOSTILE = st.one_of(_scalars, _seqs, _arrays, _matrix)


def _params(fn):
    sig = inspect.signature(fn)
    return [p.name for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", FUNCTIONS)
@settings(max_examples=max(CASES // 5, 20), deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_arguments_raise_pyconv_errors_naming_the_function(name, data):
    fn = getattr(F, name)
    assert name in VALID_CALLS, f"{name}: add a valid call to VALID_CALLS"
    params = _params(fn)
    args = {p: v for p, v in zip(params, VALID_CALLS[name])}
    hostile = [p for p in params if p not in ("context", "out", "out_indices")]
    changed = data.draw(st.lists(st.sampled_from(hostile), min_size=1, max_size=2,
                                 unique=True), label="arguments")
    for p in changed:
        args[p] = data.draw(HOSTILE, label=p)
    try:
        out = fn(**args)
    except PyconvError as exc:
        stem = name[:-2] if name[-2:] in ("1d", "2d", "3d") else name
        if "op" not in changed and not name.startswith("bind_"):
            assert stem in str(exc), f"{name}: the message does not name it: {exc}"
        return
    for o in out if isinstance(out, tuple) else (out,):
        if callable(o) and name.startswith("bind_"):
            continue
        if o is args.get("x"):
            continue        # inplace=True returns the caller's own array, as torch does
        assert type(o) is np.ndarray, f"{name} returned {type(o).__name__}"
