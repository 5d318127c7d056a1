"""Naive NumPy references: the ground truth every pyconv op is tested against.

Rules for this file
-------------------
* Obviously correct beats fast: explicit loops over output positions
  (convolutions) or kernel taps (pooling: each tap gathers its input
  coordinate ``o * stride - pad_begin + tap * dilation`` for every output
  ``o`` at once), vectorised only over batch, group, channel and, for a
  pooling tap, output positions.
* Every function accumulates and returns ``float64`` (indices ``int64``).
* No pyconv code is used, not even :mod:`pyconv.arithmetic`: output sizes
  are computed here again from the plain formulas, so a test comparing an
  op with its reference also checks the arithmetic.
* Layouts are those of PyTorch / ONNX: activations ``(N, C, *spatial)``,
  convolution weights ``(C_out, C_in / groups, *kernel)``, transposed
  convolution weights ``(C_in, C_out / groups, *kernel)``.
* Geometry arguments (``stride``, ``pads_begin``, ...) take an int (same
  for every spatial axis) or one int per spatial axis. Pads are per side.

Functions cover 1-D, 2-D and 3-D (any number of spatial dims, in fact).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = [
    "conv_nd", "conv_transpose_nd",
    "max_pool_nd", "avg_pool_nd", "lp_pool_nd", "max_unpool_nd",
    "global_avg_pool", "global_max_pool",
    "adaptive_avg_pool_nd", "adaptive_max_pool_nd",
    "batch_norm", "linear",
    "interpolate_nearest", "interpolate_linear",
]


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------

def _per_dim(value, n):
    """An int -> (int,) * n; a sequence -> tuple (length checked)."""
    if np.ndim(value) == 0:
        return (int(value),) * n
    value = tuple(int(v) for v in value)
    assert len(value) == n, f"expected {n} values, got {value}"
    return value


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _positions(shape):
    """Every index tuple of a spatial shape, in C order."""
    return itertools.product(*(range(s) for s in shape))


def _spatial_slice(starts, kernel, dilation):
    """Slices selecting the taps ``start + t * dilation`` for ``t < kernel``."""
    return tuple(slice(b, b + (k - 1) * d + 1, d) for b, k, d in zip(starts, kernel, dilation))


def _pool_out_size(size, k, s, pb, pe, d, ceil_mode):
    """torch / ONNX pooling output size (written out again on purpose)."""
    span = size + pb + pe - (d * (k - 1) + 1)
    assert span >= 0, "window larger than the padded input"
    out = (math.ceil(span / s) if ceil_mode else span // s) + 1
    # ceil mode: a last window that starts in the right padding is dropped
    if ceil_mode and (out - 1) * s >= size + pb:
        out -= 1
    return out


def _pool_setup(x, kernel, stride, pads_begin, pads_end, dilation, ceil_mode):
    x = _f64(x)
    n = x.ndim - 2
    k = _per_dim(kernel, n)
    s = k if stride is None else _per_dim(stride, n)
    pb, pe, d = _per_dim(pads_begin, n), _per_dim(pads_end, n), _per_dim(dilation, n)
    sp = x.shape[2:]
    out = tuple(_pool_out_size(*a, ceil_mode) for a in zip(sp, k, s, pb, pe, d))
    return x, n, k, s, pb, pe, d, sp, out


def _pool_taps(x, k, s, pb, pe, d, out):
    """Yield, for each kernel tap ``t``, arrays of shape (N, C, *out) / (*out):

    ``values``     x at input coordinate ``o * s - pb + t * d`` (clipped where outside),
    ``inside``     whether that coordinate lies in the input,
    ``in_padded``  whether it lies in the padded input ``[-pb, in + pe)``,
    ``flat``       its per-plane flattened index (clipped where outside).
    """
    sp = x.shape[2:]
    for t in _positions(k):
        coords = [np.arange(o) * si - pbi + ti * di
                  for o, si, pbi, ti, di in zip(out, s, pb, t, d)]
        clipped = np.ix_(*[np.clip(c, 0, size - 1) for c, size in zip(coords, sp)])
        grids = np.ix_(*coords)
        inside = np.ones(out, dtype=bool)
        in_padded = np.ones(out, dtype=bool)
        for g, size, pbi, pei in zip(grids, sp, pb, pe):
            inside = inside & (g >= 0) & (g < size)
            in_padded = in_padded & (g >= -pbi) & (g < size + pei)
        values = x[(slice(None), slice(None)) + clipped]
        yield values, inside, in_padded, np.ravel_multi_index(clipped, sp)


# ---------------------------------------------------------------------------
# convolution
# ---------------------------------------------------------------------------

def conv_nd(x, w, bias=None, stride=1, pads_begin=0, pads_end=0, dilation=1, groups=1):
    """Direct n-d convolution (cross-correlation, as in PyTorch and ONNX).

    ``y[n, o, p] = bias[o] + sum_{c, t} x_pad[n, g*Cin_g + c, p*stride + t*dilation] * w[o, c, t]``
    with ``g = o // Cout_g`` and ``x_pad`` the zero-padded input.

    Parameters
    ----------
    x : array (N, C_in, *in_spatial)
    w : array (C_out, C_in / groups, *kernel)
    bias : array (C_out,) or None
    stride, dilation : int or tuple
    pads_begin, pads_end : int or tuple
    groups : int

    Returns
    -------
    ndarray float64 (N, C_out, *out_spatial)
    """
    x, w = _f64(x), _f64(w)
    n = x.ndim - 2
    N, C = x.shape[:2]
    Cout, Cin_g = w.shape[:2]
    kernel = w.shape[2:]
    assert w.ndim == x.ndim and C == Cin_g * groups and Cout % groups == 0
    s, d = _per_dim(stride, n), _per_dim(dilation, n)
    pb, pe = _per_dim(pads_begin, n), _per_dim(pads_end, n)
    xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(pb, pe)))
    out = tuple((xp.shape[2 + i] - (d[i] * (kernel[i] - 1) + 1)) // s[i] + 1 for i in range(n))
    assert all(o >= 1 for o in out), "kernel larger than the padded input"
    Cout_g = Cout // groups
    xg = xp.reshape(N, groups, Cin_g, *xp.shape[2:])     # (N, G, Cin_g, *padded)
    wg = w.reshape(groups, Cout_g, Cin_g, *kernel)        # (G, Cout_g, Cin_g, *k)
    y = np.zeros((N, groups, Cout_g) + out)
    taps = "klmpqrstuvw"[:n]  # one einsum letter per spatial axis, summed over
    for o in _positions(out):
        starts = [oi * si for oi, si in zip(o, s)]
        window = xg[(slice(None),) * 3 + _spatial_slice(starts, kernel, d)]  # (N, G, Cin_g, *k)
        y[(slice(None),) * 3 + o] = np.einsum(f"ngc{taps},goc{taps}->ngo", window, wg)
    y = y.reshape(N, Cout, *out)
    if bias is not None:
        y += _f64(bias).reshape((1, Cout) + (1,) * n)
    return y


def conv_transpose_nd(x, w, bias=None, stride=1, pads_begin=0, pads_end=0, dilation=1,
                      groups=1, output_padding=0):
    """Transposed n-d convolution in scatter form.

    Each input element ``x[n, c, i]`` adds ``x[n, c, i] * w[c, o, t]`` to the
    full output at ``i * stride + t * dilation``; the full output has size
    ``stride * (in - 1) + (k - 1) * dilation + 1 + output_padding`` and is
    then cropped by ``pads_begin`` at the start and ``pads_end`` at the end.

    Parameters
    ----------
    x : array (N, C_in, *in_spatial)
    w : array (C_in, C_out / groups, *kernel)
    bias : array (C_out,) or None
    stride, dilation, pads_begin, pads_end, output_padding : int or tuple
    groups : int

    Returns
    -------
    ndarray float64 (N, C_out, *out_spatial)
    """
    x, w = _f64(x), _f64(w)
    n = x.ndim - 2
    N, C = x.shape[:2]
    Cin, Cout_g = w.shape[:2]
    kernel = w.shape[2:]
    assert w.ndim == x.ndim and C == Cin and Cin % groups == 0
    s, d = _per_dim(stride, n), _per_dim(dilation, n)
    pb, pe = _per_dim(pads_begin, n), _per_dim(pads_end, n)
    op = _per_dim(output_padding, n)
    sp = x.shape[2:]
    full = tuple(s[i] * (sp[i] - 1) + (kernel[i] - 1) * d[i] + 1 + op[i] for i in range(n))
    Cin_g = Cin // groups
    xg = x.reshape(N, groups, Cin_g, *sp)
    wg = w.reshape(groups, Cin_g, Cout_g, *kernel)
    y = np.zeros((N, groups, Cout_g) + full)
    for i in _positions(sp):
        contrib = np.einsum("ngc,gco...->ngo...", xg[(slice(None),) * 3 + i], wg)  # (N,G,Cout_g,*k)
        starts = [ii * si for ii, si in zip(i, s)]
        y[(slice(None),) * 3 + _spatial_slice(starts, kernel, d)] += contrib
    crop = tuple(slice(pb[i], full[i] - pe[i]) for i in range(n))
    assert all(c.stop - c.start >= 1 for c in crop), "padding crops the whole output"
    y = y[(slice(None),) * 3 + crop].reshape(N, groups * Cout_g, *[c.stop - c.start for c in crop])
    if bias is not None:
        y = y + _f64(bias).reshape((1, -1) + (1,) * n)
    return y


# ---------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------

def max_pool_nd(x, kernel, stride=None, pads_begin=0, pads_end=0, dilation=1, ceil_mode=False):
    """Max pooling with torch-style indices.

    Padding is never a candidate (as if padded with ``-inf``). ``stride``
    defaults to ``kernel``. Ties keep the first tap in C order of the window.

    Returns
    -------
    values : ndarray float64 (N, C, *out_spatial)
    indices : ndarray int64 (N, C, *out_spatial)
        Flattened index into the *unpadded* spatial plane of the same
        ``(n, c)`` (``h * W + w`` in 2-D), as ``torch.nn.functional.max_pool*d``
        with ``return_indices=True``. A window of ``-inf`` values points at
        its first tap inside the input; a window with no input element gets
        ``-inf`` and index ``-1``. NaN propagates (the last NaN tap wins),
        as in torch.
    """
    x, n, k, s, pb, pe, d, sp, out = _pool_setup(x, kernel, stride, pads_begin, pads_end,
                                                 dilation, ceil_mode)
    values = np.full(x.shape[:2] + out, -np.inf)
    indices = np.full(x.shape[:2] + out, -1, dtype=np.int64)
    for v, inside, _, flat in _pool_taps(x, k, s, pb, pe, d, out):
        # torch: NaN wins; the first tap inside the input is taken even if it is -inf
        better = inside & ((v > values) | np.isnan(v) | (indices == -1))
        values = np.where(better, v, values)
        indices = np.where(better, flat, indices)
    return values, indices


def avg_pool_nd(x, kernel, stride=None, pads_begin=0, pads_end=0, dilation=1,
                ceil_mode=False, count_include_pad=True):
    """Average pooling (torch semantics, ONNX ``AveragePool`` with dilations).

    The sum runs over the taps inside the input. The divisor is the number
    of those taps, or with ``count_include_pad`` the number of taps inside
    the *padded* input ``[-pads_begin, in + pads_end)`` — taps that a
    ceil-mode window puts beyond the padded input never count.
    ``stride`` defaults to ``kernel``. A window with nothing to count is NaN.

    Returns
    -------
    ndarray float64 (N, C, *out_spatial)
    """
    x, n, k, s, pb, pe, d, sp, out = _pool_setup(x, kernel, stride, pads_begin, pads_end,
                                                 dilation, ceil_mode)
    total = np.zeros(x.shape[:2] + out)
    n_inside = np.zeros(out)
    n_padded = np.zeros(out)
    for v, inside, in_padded, _ in _pool_taps(x, k, s, pb, pe, d, out):
        total += np.where(inside, v, 0.0)
        n_inside += inside
        n_padded += in_padded
    divisor = n_padded if count_include_pad else n_inside
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(divisor > 0, total / divisor, np.nan)


def lp_pool_nd(x, p, kernel, stride=None, pads_begin=0, pads_end=0, dilation=1,
               ceil_mode=False):
    """Lp pooling as ONNX ``LpPool``: ``(sum |x|^p) ** (1/p)`` over each window.

    Padding contributes zeros. ``stride`` defaults to ``kernel``.

    Returns
    -------
    ndarray float64 (N, C, *out_spatial)
    """
    x, n, k, s, pb, pe, d, sp, out = _pool_setup(x, kernel, stride, pads_begin, pads_end,
                                                 dilation, ceil_mode)
    total = np.zeros(x.shape[:2] + out)
    for v, inside, _, _ in _pool_taps(x, k, s, pb, pe, d, out):
        total += np.where(inside, np.abs(v) ** p, 0.0)
    return total ** (1.0 / p)


def max_unpool_nd(x, indices, output_size):
    """Inverse of :func:`max_pool_nd`: scatter values to their indices.

    Parameters
    ----------
    x : array (N, C, *in_spatial)
    indices : int array, same shape as ``x``
        torch-style per-plane flattened indices into ``output_size``.
    output_size : tuple of int
        Spatial output shape.

    Returns
    -------
    ndarray float64 (N, C, *output_size); zeros where no index points.
    When several entries share an index, the last one in C order wins.
    """
    x = _f64(x)
    indices = np.asarray(indices)
    assert indices.shape == x.shape
    N, C = x.shape[:2]
    plane = int(np.prod(output_size))
    if indices.size and (indices.min() < 0 or indices.max() >= plane):
        raise ValueError(f"index out of range for output size {tuple(output_size)}")
    y = np.zeros((N, C, plane))
    for nn, cc in itertools.product(range(N), range(C)):
        for value, index in zip(x[nn, cc].ravel(), indices[nn, cc].ravel()):
            y[nn, cc, index] = value
    return y.reshape((N, C) + tuple(output_size))


def global_avg_pool(x):
    """Mean over all spatial axes, kept as size-1 axes: (N, C, 1, ..., 1)."""
    x = _f64(x)
    return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True)


def global_max_pool(x):
    """Max over all spatial axes, kept as size-1 axes: (N, C, 1, ..., 1)."""
    x = _f64(x)
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)


def _adaptive_bounds(o, size, out):
    """torch: start = floor(o * in / out), end = ceil((o + 1) * in / out)."""
    return (o * size) // out, -(-((o + 1) * size) // out)


def _adaptive_windows(x, output_size):
    x = _f64(x)
    n = x.ndim - 2
    out = _per_dim(output_size, n)
    sp = x.shape[2:]
    for o in _positions(out):
        bounds = [_adaptive_bounds(oi, si, ni) for oi, si, ni in zip(o, sp, out)]
        yield out, o, bounds, x[(slice(None), slice(None)) + tuple(slice(a, b) for a, b in bounds)]


def adaptive_avg_pool_nd(x, output_size):
    """torch ``adaptive_avg_pool*d``: mean over ``[floor(o*in/out), ceil((o+1)*in/out))``.

    Returns
    -------
    ndarray float64 (N, C, *output_size)
    """
    y = None
    for out, o, _, window in _adaptive_windows(x, output_size):
        if y is None:
            y = np.zeros(window.shape[:2] + out)
        y[(slice(None), slice(None)) + o] = window.mean(axis=tuple(range(2, window.ndim)))
    return y


def adaptive_max_pool_nd(x, output_size):
    """torch ``adaptive_max_pool*d`` with ``return_indices=True``.

    Returns
    -------
    values : ndarray float64 (N, C, *output_size)
    indices : ndarray int64, per-plane flattened indices (first max wins)
    """
    sp = np.shape(x)[2:]
    values = indices = None
    for out, o, bounds, window in _adaptive_windows(x, output_size):
        if values is None:
            values = np.zeros(window.shape[:2] + out)
            indices = np.zeros(window.shape[:2] + out, dtype=np.int64)
        flat = window.reshape(window.shape[:2] + (-1,))
        arg = flat.argmax(axis=2)                                  # first max, C order
        local = np.unravel_index(arg, window.shape[2:])           # within the window
        glob = tuple(li + a for li, (a, _) in zip(local, bounds))  # within the plane
        values[(slice(None), slice(None)) + o] = flat.max(axis=2)
        indices[(slice(None), slice(None)) + o] = np.ravel_multi_index(glob, sp)
    return values, indices


# ---------------------------------------------------------------------------
# other layers
# ---------------------------------------------------------------------------

def batch_norm(x, mean, var, weight=None, bias=None, eps=1e-5):
    """Inference batch norm over axis 1: ``(x - mean) / sqrt(var + eps) * weight + bias``."""
    x = _f64(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - _f64(mean).reshape(shape)) / np.sqrt(_f64(var).reshape(shape) + eps)
    if weight is not None:
        y = y * _f64(weight).reshape(shape)
    if bias is not None:
        y = y + _f64(bias).reshape(shape)
    return y


def linear(x, w, b=None):
    """``y = x @ w.T + b`` with ``w`` of shape (out_features, in_features) (torch layout)."""
    x, w = _f64(x), _f64(w)
    y = np.zeros(x.shape[:-1] + (w.shape[0],))
    for o in range(w.shape[0]):
        y[..., o] = (x * w[o]).sum(axis=-1)
    if b is not None:
        y = y + _f64(b)
    return y


def interpolate_nearest(x, size, mode="nearest"):
    """Nearest resize to spatial ``size`` (torch ``F.interpolate(size=...)``).

    ``mode='nearest'``: ``src = floor(dst * in / out)`` (torch's legacy rule,
    ONNX ``Resize`` asymmetric + floor); ``mode='nearest-exact'``:
    ``src = floor((dst + 0.5) * in / out)``. Indices are clamped to
    ``in - 1``.
    """
    x = _f64(x)
    out = _per_dim(size, x.ndim - 2)
    offset = {"nearest": 0.0, "nearest-exact": 0.5}[mode]
    for axis, o in enumerate(out, start=2):
        size_in = x.shape[axis]
        src = [min(int(math.floor((j + offset) * size_in / o)), size_in - 1) for j in range(o)]
        x = np.take(x, src, axis=axis)
    return x


def interpolate_linear(x, size, align_corners=False):
    """(Bi/tri-)linear resize to spatial ``size``, one axis at a time (separable).

    Source coordinate of output ``j`` along an axis (torch rules with
    ``size=`` given): ``align_corners=True``: ``j * (in - 1) / (out - 1)``
    (0 when ``out == 1``); otherwise ``(j + 0.5) * in / out - 0.5`` clamped
    below at 0. The two neighbours ``floor(src)`` and ``min(floor(src) + 1,
    in - 1)`` are blended with weight ``src - floor(src)``.
    """
    x = _f64(x)
    out = _per_dim(size, x.ndim - 2)
    for axis, o in enumerate(out, start=2):
        size_in = x.shape[axis]
        parts = []
        for j in range(o):
            if align_corners:
                src = j * (size_in - 1) / (o - 1) if o > 1 else 0.0
            else:
                src = max((j + 0.5) * size_in / o - 0.5, 0.0)
            i0 = min(int(math.floor(src)), size_in - 1)
            i1 = min(i0 + 1, size_in - 1)
            lam = src - i0
            parts.append((1 - lam) * np.take(x, i0, axis=axis) + lam * np.take(x, i1, axis=axis))
        x = np.stack(parts, axis=axis)
    return x


# ---------------------------------------------------------------------------------------
# Element-wise functions (pyconv._ext.eltwise.UNARY), in float64.

_erf = np.vectorize(math.erf, otypes=[np.float64])
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x < 0, e / (1 + e), 1 / (1 + e))


def _softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def unary(name, x, a=0.0, b=0.0):
    """float64 values of an element-wise function of pyconv._ext.eltwise (the formulas of the ONNX operators; written so
    that float64 itself does not cancel: 1 + erf(-t) as erfc(t), 1 + tanh(u) as
    2 sigmoid(2u))."""
    x = np.asarray(x, np.float64)
    with np.errstate(all="ignore"):
        return {
            "relu": lambda: np.where(x < 0, 0.0, x),
            "clip": lambda: np.where(x < a, a, np.where(x > b, b, x)),
            "leaky_relu": lambda: np.where(x < 0, a * x, x),
            "sigmoid": lambda: _sigmoid(x),
            "hardsigmoid": lambda: np.clip(a * x + b, 0, 1),
            "hardswish": lambda: x * np.clip(x / 6 + 0.5, 0, 1),
            "tanh": lambda: np.tanh(x),
            "silu": lambda: x * _sigmoid(x),
            "elu": lambda: np.where(x < 0, a * np.expm1(x), x),
            "gelu": lambda: 0.5 * x * np.where(x < 0, _erfc(-x / math.sqrt(2)),
                                                1 + _erf(x / math.sqrt(2))),
            "gelu_tanh": lambda: x * _sigmoid(2 * math.sqrt(2 / math.pi)
                                              * (x + 0.044715 * x ** 3)),
            "mish": lambda: x * np.tanh(_softplus(x)),
            "softplus": lambda: _softplus(x),
            "selu": lambda: b * np.where(x <= 0, a * np.expm1(x), x),
            "exp": lambda: np.exp(x),
            "erf": lambda: _erf(x),
            "reciprocal": lambda: 1 / x,
            "sqrt": lambda: np.sqrt(x),
            "neg": lambda: -x,
            "abs": lambda: np.abs(x),
            "log": lambda: np.log(x),
        }[name]()
