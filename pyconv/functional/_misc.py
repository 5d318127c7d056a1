"""Batch norm, interpolation, padding, flatten and dropout on float32 arrays.

Signatures follow ``torch.nn.functional`` (``flatten`` follows ``torch.flatten``).
Layouts are PyTorch's: activations ``(N, C, *spatial)``. Float32 only: arrays of another
dtype raise :class:`~pyconv.errors.InvalidDType` naming the argument; lists of Python
floats are converted.
"""
from __future__ import annotations

import math
import operator

import numpy as np

from pyconv._arrays import as_float32
from pyconv.arithmetic import (as_bool, as_choice, as_float, check_tensor_size,
                               prefixed_errors)
from pyconv.errors import InvalidArgument, ShapeError
from pyconv.functional._pool import adaptive_avg_pool
from pyconv.functional._resize import resize

__all__ = ["batch_norm", "interpolate", "pad", "flatten", "dropout"]


# ---------------------------------------------------------------------------------------
# batch norm

def _bn_scale_shift(running_mean, running_var, weight, bias, eps, channels, op):
    """Per-channel ``scale``, ``shift`` (float32) with ``y = x * scale + shift``."""
    params = {"running_mean": running_mean, "running_var": running_var,
              "weight": weight, "bias": bias}
    arrays = {}
    for name, value in params.items():
        if value is None:
            arrays[name] = None
            continue
        value = as_float32(value, name, op)
        if value.shape != (channels,):
            raise ShapeError(f"{op}: {name} has shape {value.shape}, expected ({channels},) "
                             f"for an input with {channels} channels")
        arrays[name] = value.astype(np.float64)
    with prefixed_errors(op):
        eps = as_float(eps, "eps")
    # Folded in float64, rounded once: y = (x - mean) / sqrt(var + eps) * weight + bias.
    with np.errstate(invalid="ignore", divide="ignore"):  # var + eps <= 0: NaN/inf, as ORT
        scale = 1.0 / np.sqrt(arrays["running_var"] + eps)
        if arrays["weight"] is not None:
            scale = scale * arrays["weight"]
    shift = -arrays["running_mean"] * scale
    if arrays["bias"] is not None:
        shift = shift + arrays["bias"]
    return scale.astype(np.float32), shift.astype(np.float32)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Inference batch normalisation over the channel axis (axis 1).

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``, with the
    statistics folded into one multiply-add per element.

    Parameters
    ----------
    x : ndarray, shape (N, C) or (N, C, *spatial), float32
    running_mean, running_var : ndarray, shape (C,), float32
    weight, bias : ndarray, shape (C,), float32, optional
        Affine parameters (``gamma``, ``beta``); ``None`` means 1 and 0.
    training : bool
        Must be False: pyconv is inference-only and never uses batch statistics.
    momentum : float
        Accepted for signature compatibility; unused at inference.
    eps : float
        Added to the variance.

    Returns
    -------
    ndarray, same shape as ``x``, float32

    Raises
    ------
    InvalidArgument
        If ``training`` is true or the running statistics are missing.
    ShapeError
        If ``x`` has fewer than 2 dims or a parameter is not of shape (C,).
    """
    op = "batch_norm"
    with prefixed_errors(op):
        training = as_bool(training, "training")
    if training:
        raise InvalidArgument(
            f"{op}: training=True (normalising with batch statistics and updating the "
            f"running ones) is not supported: pyconv is inference-only; pass training=False")
    if running_mean is None or running_var is None:
        raise InvalidArgument(f"{op}: running_mean and running_var are required at inference")
    x = as_float32(x, "input", op)
    if x.ndim < 2:
        raise ShapeError(f"{op}: input must have shape (N, C, *), got {x.shape}")
    channels = x.shape[1]
    scale, shift = _bn_scale_shift(running_mean, running_var, weight, bias, eps, channels, op)
    shape = (1, channels) + (1,) * (x.ndim - 2)
    y = np.multiply(x, scale.reshape(shape))
    y += shift.reshape(shape)
    return y


# ---------------------------------------------------------------------------------------
# dropout / flatten

def dropout(x, p=0.5, training=False, inplace=False):
    """Dropout at inference: the identity.

    Parameters
    ----------
    x : ndarray, float32, any shape
    p : float
        Drop probability, ``0 <= p <= 1`` (checked, unused at inference).
    training : bool
        Must be False (pyconv is inference-only).
    inplace : bool
        Return ``x`` itself rather than a copy.

    Returns
    -------
    ndarray, float32, same shape as ``x``
    """
    with prefixed_errors("dropout"):
        p = as_float(p, "p")
        training = as_bool(training, "training")
        inplace = as_bool(inplace, "inplace")
    if not 0.0 <= p <= 1.0:
        raise InvalidArgument(f"dropout: probability p must be between 0 and 1, got {p}")
    if training:
        raise InvalidArgument("dropout: training=True is not supported: pyconv is "
                              "inference-only (dropout is the identity at inference)")
    x = as_float32(x, "input", "dropout")
    return x if inplace else x.copy()


def _axis(value, ndim, name, op):
    if isinstance(value, bool):
        raise InvalidArgument(f"{op}: {name} must be an int, got bool")
    try:
        d = operator.index(value)
    except TypeError:
        raise InvalidArgument(f"{op}: {name} must be an int, got {value!r}") from None
    rank = max(ndim, 1)
    if not -rank <= d < rank:
        raise InvalidArgument(f"{op}: {name} {d} is out of range for an input with "
                              f"{ndim} dims (expected {-rank} <= {name} < {rank})")
    return d % rank


def flatten(x, start_dim=0, end_dim=-1):
    """Merge dims ``start_dim`` to ``end_dim`` (inclusive) into one (``torch.flatten``).

    Parameters
    ----------
    x : ndarray, float32, any shape
    start_dim, end_dim : int
        Negative values count from the end; ``start_dim <= end_dim`` after that.

    Returns
    -------
    ndarray, float32
        A view of ``x`` when the memory layout allows it, else a copy (as torch).
        A 0-d input gives a 1-element 1-D array.
    """
    x = as_float32(x, "input", "flatten")
    s = _axis(start_dim, x.ndim, "start_dim", "flatten")
    e = _axis(end_dim, x.ndim, "end_dim", "flatten")
    if s > e:
        raise InvalidArgument(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} "
                              f"for an input with {x.ndim} dims")
    if x.ndim == 0:
        return x.reshape(1)
    merged = math.prod(x.shape[s:e + 1])
    return x.reshape(x.shape[:s] + (merged,) + x.shape[e + 1:])


# ---------------------------------------------------------------------------------------
# pad

_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
              "circular": "wrap"}


def pad(x, pad, mode="constant", value=0):
    """Pad (or, with negative amounts in constant mode, crop) the trailing dims.

    Parameters
    ----------
    x : ndarray, float32, any shape
    pad : sequence of int, even length ``2 * m``, ``m <= x.ndim``
        torch order, last dim first: ``(left_{-1}, right_{-1}, left_{-2}, right_{-2},
        ...)``.
    mode : {'constant', 'reflect', 'replicate', 'circular'}
        ``reflect`` mirrors without repeating the edge (needs ``pad < size``),
        ``replicate`` repeats the edge, ``circular`` wraps around (needs
        ``pad <= size``).
    value : float, optional
        Fill value of ``constant`` mode (``None`` means 0).

    Returns
    -------
    ndarray, float32, C-contiguous
    """
    op = "pad"
    x = as_float32(x, "input", op)
    if not isinstance(mode, str) or mode not in _PAD_MODES:
        raise InvalidArgument(f"{op}: mode must be one of {sorted(_PAD_MODES)}, got {mode!r}")
    if isinstance(pad, (str, bytes)) or not hasattr(pad, "__len__") or \
            getattr(pad, "ndim", 1) != 1:
        raise InvalidArgument(f"{op}: pad must be a sequence of ints, got {pad!r}")
    amounts = []
    for i, v in enumerate(pad):
        if isinstance(v, bool):
            raise InvalidArgument(f"{op}: pad[{i}] must be an int, got bool")
        try:
            amounts.append(operator.index(v))
        except TypeError:
            raise InvalidArgument(f"{op}: pad[{i}] must be an int, got {v!r}") from None
    if len(amounts) % 2:
        raise InvalidArgument(f"{op}: pad must have an even length, got {len(amounts)}: "
                              f"{tuple(amounts)}")
    m = len(amounts) // 2
    if m > x.ndim:
        raise InvalidArgument(f"{op}: pad {tuple(amounts)} pads {m} dims but the input has "
                              f"only {x.ndim} (shape {x.shape})")
    widths = [(0, 0)] * x.ndim
    for j in range(m):
        widths[x.ndim - 1 - j] = (amounts[2 * j], amounts[2 * j + 1])
    if mode != "constant" and not (value is None or isinstance(value, (int, float))
                                   and value == 0):
        raise InvalidArgument(f"{op}: value is only meaningful in constant mode, "
                              f"got value={value!r} with mode={mode!r}")
    # torch's own limits, stricter than ONNX Pad's (torch reflects a mixed crop-and-pad
    # against the uncropped input, ONNX crops first: refused rather than answered
    # differently).
    for axis, (b, e) in enumerate(widths):
        if max(-b, 0) + max(-e, 0) > x.shape[axis]:
            raise ShapeError(f"{op}: padding {(b, e)} of dim {axis} crops an input of size "
                             f"{x.shape[axis]} to a negative size")
        if mode != "constant" and (b < 0 or e < 0):
            raise InvalidArgument(f"{op}: negative padding {tuple(amounts)} is only "
                                  f"supported in constant mode, got mode={mode!r}")
        if mode == "circular" and max(b, e) > x.shape[axis]:
            raise ShapeError(f"{op}: circular padding {(b, e)} must not exceed the size "
                             f"{x.shape[axis]} of dim {axis} (input shape {x.shape})")
    if value is None:
        value = 0.0
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise InvalidArgument(f"{op}: value must be a real number, got "
                              f"{type(value).__name__} {value!r}")
    return pad_widths(x, widths, _PAD_MODES[mode], value, op)


def pad_widths(x, widths, mode, value=0, op="pad"):
    """``x`` (any dtype) padded by ``widths[axis] = (begin, end)``: the one padding of
    ``pad`` and the ONNX ``Pad`` operator, with ONNX's semantics.

    A negative amount crops that side first; the other side is then padded from what
    is left: ``constant`` fills with ``value`` (output element ``o`` is input element
    ``o - begin`` where that exists, so crops past the dim leave only fill),
    ``reflect`` mirrors without repeating the edge (needs ``pad < size`` of what is
    left), ``edge`` repeats the edge, ``wrap`` repeats the dim cyclically (any number
    of times). Those three need at least one element left in a dim they pad or crop.
    The output size is checked before it is allocated.
    """
    shape = []
    for axis, (n, (b, e)) in enumerate(zip(x.shape, widths)):
        size = n + b + e
        if size < 0:
            raise ShapeError(f"{op}: padding {(b, e)} of dim {axis} leaves a negative size "
                             f"{size} (input shape {x.shape})")
        kept = n - max(-b, 0) - max(-e, 0)
        if mode != "constant" and (b or e):
            if kept <= 0:
                raise ShapeError(f"{op}: {mode} padding {(b, e)} of dim {axis} leaves no "
                                 f"element to pad from (input shape {x.shape})")
            if mode == "reflect" and max(b, e) >= kept:
                raise ShapeError(f"{op}: reflect padding {(b, e)} of dim {axis} must be "
                                 f"smaller than the {kept} elements it reflects "
                                 f"(input shape {x.shape})")
        shape.append(size)
    shape = check_tensor_size(shape, op, itemsize=x.itemsize)
    # What stays of the input: x[lo:hi] along each dim, at lo + begin in the output.
    keep = [(max(-b, 0), min(n, n + e)) for n, (b, e) in zip(x.shape, widths)]
    if mode == "constant":
        fill = np.asarray(value)
        if fill.dtype != x.dtype:
            with np.errstate(invalid="ignore", over="ignore"):
                fill = fill.astype(x.dtype)     # as onnxruntime casts the value input
        out = np.full(shape, fill, dtype=x.dtype)
        if all(hi > lo for lo, hi in keep):
            out[tuple(slice(lo + b, hi + b) for (lo, hi), (b, _) in zip(keep, widths))] = \
                x[tuple(slice(lo, hi) for lo, hi in keep)]
        return out
    x = x[tuple(slice(lo, max(hi, lo)) for lo, hi in keep)]
    return np.pad(x, [(max(b, 0), max(e, 0)) for b, e in widths], mode=mode)


# ---------------------------------------------------------------------------------------
# interpolate

_LINEAR_MODES = {"linear": 1, "bilinear": 2, "trilinear": 3}
#: The modes that take align_corners, and the spatial rank each needs.
_INTERPOLATING_MODES = {**_LINEAR_MODES, "bicubic": 2}
_NEAREST_MODES = ("nearest", "nearest-exact")
_AREA = "area"


def _per_spatial(value, n, name, cast, op):
    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim):
        items = list(value)
        if len(items) != n:
            raise InvalidArgument(
                f"{op}: {name} {tuple(items)} has {len(items)} elements but the input has "
                f"{n} spatial dims")
    else:
        items = [value] * n
    out = []
    for v in items:
        if isinstance(v, bool):
            raise InvalidArgument(f"{op}: {name} must be numbers, got bool")
        try:
            out.append(cast(v))
        except (TypeError, ValueError, OverflowError):
            raise InvalidArgument(f"{op}: {name} must be numbers, got {value!r}") from None
    return out


def _nearest_index(in_size, out_size, scale, exact, shortcuts):
    """Source index of every output index (torch's float32 arithmetic, clamped)."""
    if shortcuts and not exact:
        # torch's 2-D nearest kernel (not its 1-D / 3-D ones) special-cases these sizes
        # and skips the float arithmetic, which with a scale_factor that rounds to such
        # a size gives other indices (e.g. 3 -> 3 with scale_factor 1.3).
        if out_size == in_size:
            return np.arange(out_size)
        if out_size == 2 * in_size:
            return np.arange(out_size) >> 1
    j = np.arange(out_size, dtype=np.float32)
    if exact:
        src = np.floor((j + np.float32(0.5)) * scale)
    else:
        src = np.floor(j * scale)
    return np.minimum(src.astype(np.int64), in_size - 1)


def _linear_weights(in_size, out_size, scale, align_corners):
    """Neighbour indices ``i0, i1`` and weights ``l0, l1`` (float32, torch's rule)."""
    if out_size == in_size and not align_corners:
        idx = np.arange(out_size)
        return idx, idx, np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
    j = np.arange(out_size, dtype=np.float32)
    if align_corners:
        src = scale * j
    else:
        src = np.maximum(scale * (j + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    l1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    i1 = i0 + (i0 < in_size - 1)
    return i0, i1, (np.float32(1) - l1).astype(np.float32), l1


def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the spatial dims of ``x`` (``torch.nn.functional.interpolate``).

    Parameters
    ----------
    x : ndarray, shape (N, C, *spatial), float32
        1 to 3 spatial dims.
    size : int or sequence of int, optional
        Output spatial size. Exactly one of ``size`` and ``scale_factor`` is given.
    scale_factor : float or sequence of float, optional
        Output size ``floor(in * scale_factor)``; the source coordinates use
        ``1 / scale_factor`` unless ``recompute_scale_factor`` is true (then
        ``in / out``), as in torch.
    mode : {'nearest', 'nearest-exact', 'linear', 'bilinear', 'bicubic', 'trilinear', \
'area'}
        ``nearest``: source ``floor(dst * in / out)`` (torch's legacy rule, ONNX
        asymmetric + floor); ``nearest-exact``: ``floor((dst + 0.5) * in / out)``;
        ``linear`` / ``bilinear`` / ``trilinear`` need 1 / 2 / 3 spatial dims;
        ``bicubic`` (2 spatial dims) is the ONNX ``Resize`` cubic of
        :func:`resize` with torch's ``a = -0.75`` and edge clamping; ``area`` is
        :func:`adaptive_avg_pool` to the output size.
    align_corners : bool, optional
        Linear and bicubic modes only (default False): map corner pixel centres onto
        each other (``src = dst * (in - 1) / (out - 1)``, ONNX ``align_corners``) rather
        than ``(dst + 0.5) * in / out - 0.5`` (ONNX ``half_pixel``, which torch's
        exporter writes as ``pytorch_half_pixel``: the two differ only for an output
        size of 1, where torch's kernels follow ``half_pixel``).
    recompute_scale_factor : bool, optional
    antialias : bool
        Must be False (not supported).

    Returns
    -------
    ndarray, shape (N, C, *out_spatial), float32

    Raises
    ------
    InvalidArgument
        On an unknown mode, a mode that does not fit the input rank, ``align_corners``
        with a nearest mode, both or neither of ``size`` / ``scale_factor``, or a
        non-positive output size.
    """
    op = "interpolate"
    x = as_float32(x, "input", op)
    with prefixed_errors(op):
        mode = as_choice(mode, list(_NEAREST_MODES) + list(_INTERPOLATING_MODES) + [_AREA],
                         "mode")
        antialias = as_bool(antialias, "antialias")
        if recompute_scale_factor is not None:
            recompute_scale_factor = as_bool(recompute_scale_factor, "recompute_scale_factor")
        if align_corners is not None:
            align_corners = as_bool(align_corners, "align_corners")
    if mode in _NEAREST_MODES or mode == _AREA:
        if align_corners is not None:
            raise InvalidArgument(
                f"{op}: align_corners can only be set with the interpolating modes "
                f"linear | bilinear | bicubic | trilinear, got mode={mode!r}")
    elif mode in _INTERPOLATING_MODES:
        align_corners = align_corners if align_corners is not None else False
    else:
        raise InvalidArgument(f"{op}: mode must be one of {list(_NEAREST_MODES)} + "
                              f"{list(_INTERPOLATING_MODES)} + [{_AREA!r}], got {mode!r}")
    if antialias:
        raise InvalidArgument(f"{op}: antialias=True is not supported")
    if x.ndim not in (3, 4, 5):
        raise ShapeError(f"{op}: input must have shape (N, C, *spatial) with 1 to 3 spatial "
                         f"dims, got {x.shape}")
    n = x.ndim - 2
    if mode in _INTERPOLATING_MODES and _INTERPOLATING_MODES[mode] != n:
        rank = _INTERPOLATING_MODES[mode]
        raise InvalidArgument(f"{op}: mode={mode!r} needs {rank} spatial dims "
                              f"(a {rank + 2}-D input), got input shape "
                              f"{x.shape}")
    if (size is None) == (scale_factor is None):
        raise InvalidArgument(f"{op}: exactly one of size or scale_factor must be given, "
                              f"got size={size!r}, scale_factor={scale_factor!r}")
    in_sizes = x.shape[2:]
    if size is not None:
        if recompute_scale_factor:
            raise InvalidArgument(f"{op}: recompute_scale_factor is not meaningful with an "
                                  f"explicit size")
        out_sizes = _per_spatial(size, n, "size", operator.index, op)
        scales = [None] * n
    else:
        factors = _per_spatial(scale_factor, n, "scale_factor", float, op)
        for f in factors:
            if not f > 0 or not math.isfinite(f):
                raise InvalidArgument(f"{op}: scale_factor must be positive and finite, "
                                      f"got {scale_factor!r}")
        sizes = [math.floor(i * f) for i, f in zip(in_sizes, factors) if math.isfinite(i * f)]
        if len(sizes) != n:
            raise InvalidArgument(f"{op}: scale_factor {scale_factor!r} makes an infinite "
                                  f"output size from input shape {x.shape}")
        out_sizes = [int(o) for o in sizes]
        scales = [None] * n if recompute_scale_factor else factors
    for axis, o in enumerate(out_sizes):
        if o <= 0:
            raise InvalidArgument(f"{op}: output size {tuple(out_sizes)} must be positive "
                                  f"along every spatial dim (input shape {x.shape}, "
                                  f"size={size!r}, scale_factor={scale_factor!r})")
    if 0 in in_sizes:
        raise InvalidArgument(f"{op}: input shape {x.shape} has an empty spatial dim; "
                              f"there is nothing to resize")
    check_tensor_size(x.shape[:2] + tuple(out_sizes), op)
    if 0 in x.shape[:2]:
        return np.zeros(x.shape[:2] + tuple(out_sizes), np.float32)

    def ratio(i, o, s):
        # torch: 1 / scale_factor when one was given, else in / out; float32.
        return np.float32(1.0 / s) if s is not None else np.float32(i) / np.float32(o)

    if mode == _AREA:
        return adaptive_avg_pool(x, tuple(out_sizes), op=op)
    if mode == "bicubic":
        # torch's bicubic is the ONNX cubic resize (a = -0.75, taps clamped to the edge)
        # in half_pixel or align_corners coordinates, with the scale torch uses: the
        # given scale_factor, else out / in.
        coordinates = "align_corners" if align_corners else "half_pixel"
        given = None if align_corners or scales[0] is None else [1.0, 1.0] + scales
        return resize(x, list(x.shape[:2]) + out_sizes, given, "cubic", coordinates,
                      cubic_coeff_a=-0.75)
    if mode in _NEAREST_MODES:
        index = []
        for axis, (i, o, s) in enumerate(zip(in_sizes, out_sizes, scales)):
            src = _nearest_index(i, o, ratio(i, o, s), mode == "nearest-exact", n == 2)
            shape = [1] * n
            shape[axis] = o
            index.append(src.reshape(shape))
        return np.ascontiguousarray(x[(slice(None), slice(None)) + tuple(index)])

    # Separable (bi/tri)linear: the last axis first, then the earlier ones, which is the
    # order torch's kernel nests its weights in.
    y = x
    for axis in reversed(range(n)):
        i, o, s = in_sizes[axis], out_sizes[axis], scales[axis]
        if align_corners:
            r = np.float32(i - 1) / np.float32(o - 1) if o > 1 else np.float32(0)
        else:
            r = ratio(i, o, s)
        i0, i1, l0, l1 = _linear_weights(i, o, r, align_corners)
        bshape = [1] * y.ndim
        bshape[axis + 2] = o
        with np.errstate(invalid="ignore"):  # inf * 0 weight: NaN, as in torch
            y0 = np.take(y, i0, axis=axis + 2)
            y0 *= l0.reshape(bshape)
            y1 = np.take(y, i1, axis=axis + 2)
            y1 *= l1.reshape(bshape)
            y0 += y1
        y = y0
    return y
