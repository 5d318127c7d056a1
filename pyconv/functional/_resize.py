"""N-d resizing with the ONNX ``Resize`` semantics (every coordinate transformation,
nearest rounding mode, linear / cubic with antialias, crop-and-resize).

:func:`interpolate` keeps torch's float32 index arithmetic; this is the ONNX one. Both
are separable: one gather-and-weigh pass per resized axis.
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from pyconv._ext import resize as _resize_kernels
from pyconv.arithmetic import (as_bool, as_choice, as_float, as_floats, as_shape,
                               check_tensor_size, prefixed_errors)
from pyconv.errors import InvalidArgument, InvalidDType, ShapeError

__all__ = ["resize"]

COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel",
                    "align_corners", "asymmetric", "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
MODES = ("nearest", "linear", "cubic")


def _source_coords(mode, out_int, in_size, scale, roi):
    """Source coordinate of every output index along one axis (float64) and the mask of
    positions outside the input (``tf_crop_and_resize`` only)."""
    y = np.arange(out_int, dtype=np.float64)
    out_f = scale * in_size
    outside = None
    if mode == "align_corners":
        x = np.zeros(out_int) if out_f == 1 else y * (in_size - 1) / (out_f - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_crop_and_resize":
        start, end = roi
        if out_f == 1:
            x = np.full(out_int, (end - start) * (in_size - 1) / 2)
        else:
            x = y * (end - start) * (in_size - 1) / (out_f - 1)
        x = x + start * (in_size - 1)
        outside = (x < 0) | (x > in_size - 1)
    elif mode == "pytorch_half_pixel":
        x = np.full(out_int, -0.5) if out_f == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    else:  # half_pixel_symmetric
        adjustment = out_int / out_f
        offset = in_size / 2 * (1 - adjustment)
        x = offset + (y + 0.5) / scale - 0.5
    return x, outside


def _cubic(d, a):
    d = np.abs(d)
    d2, d3 = d * d, d * d * d
    near = (a + 2) * d3 - (a + 3) * d2 + 1
    far = a * d3 - 5 * a * d2 + 8 * a * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _taps(mode, x, in_size, scale, nearest_mode, cubic_a, exclude_outside, antialias):
    """(indices (O, T), weights (O, T)) of one axis."""
    if mode == "nearest":
        if nearest_mode == "round_prefer_floor":
            i = np.ceil(x - 0.5)
        elif nearest_mode == "round_prefer_ceil":
            i = np.floor(x + 0.5)
        elif nearest_mode == "floor":
            i = np.floor(x)
        else:
            i = np.ceil(x)
        i = np.clip(i.astype(np.int64), 0, in_size - 1)
        return i[:, None], None
    # The ratio is taken in (0, 1]: an integer coordinate weighs its left neighbour by 0.
    base = np.ceil(x).astype(np.int64)
    ratio = x - (base - 1)
    s = min(scale, 1.0) if antialias else 1.0
    if mode == "linear":
        start = int(math.floor(-1 / s) + 1) if antialias else 0
    else:
        start = int(math.floor(-2 / s) + 1) if antialias else -1
    count = 2 - 2 * start
    offsets = np.arange(start, start + count)                   # relative to base - 1
    dist = (offsets[None, :] - ratio[:, None])                   # tap - x
    if mode == "linear":
        w = np.clip(1 - np.abs(dist * s), 0, 1)
    else:
        w = _cubic(dist * s, cubic_a)
    if antialias:
        w = w / w.sum(axis=1, keepdims=True)
    idx = base[:, None] - 1 + offsets[None, :]
    if exclude_outside:
        w = np.where((idx < 0) | (idx >= in_size), 0.0, w)
        w = w / w.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, in_size - 1), w


@functools.lru_cache(maxsize=256)
def _axis_taps(mode, coordinate_mode, out_size, in_size, scale, nearest_mode):
    """The C kernels' (int64 indices (O, T), float32 weights or None) of one axis, kept:
    a model resizes the same shapes on every run, and computing them cost several times
    the copy (a 2x nearest upsampling of 18 x 20 x 20: 50 us of a 60 us node)."""
    idx, w = _taps(mode, _source_coords(coordinate_mode, out_size, in_size, scale,
                                        (0.0, 1.0))[0],
                   in_size, scale, nearest_mode, 0.0, False, False)
    idx = np.ascontiguousarray(idx, np.int64)
    idx.flags.writeable = False
    if w is not None:
        w = np.ascontiguousarray(w, np.float32)
        w.flags.writeable = False
    return idx, w


def _integer_repeat(x, sizes, scales, coordinate_mode, nearest_mode):
    """Nearest resizing that repeats every input element k_d times along each axis d (the
    common 2x upsampling) as prod(k_d) strided copies; None when some axis does
    otherwise."""
    factors = []
    for axis, (in_size, out_size) in enumerate(zip(x.shape, sizes)):
        k, rem = divmod(out_size, in_size)
        if rem or k < 1:
            return None
        if k > 1 or scales[axis] != 1.0:
            coords, _ = _source_coords(coordinate_mode, out_size, in_size, scales[axis],
                                       (0.0, 1.0))
            idx, _ = _taps("nearest", coords, in_size, scales[axis], nearest_mode, 0.0,
                           False, False)
            if not np.array_equal(idx[:, 0], np.arange(out_size) // k):
                return None
        factors.append(k)
    # One plane copy per phase (NumPy copies long rows fast, stride-0 runs of k slowly).
    y = np.empty(sizes, x.dtype)
    view = y.reshape([d for s, k in zip(x.shape, factors) for d in (s, k)])
    for phase in itertools.product(*(range(k) for k in factors)):
        view[tuple(i for p in phase for i in (slice(None), p))] = x
    return y


def _checked(sizes, scales, roi, mode, coordinate_mode, nearest_mode, antialias,
             exclude_outside, cubic_coeff_a, extrapolation_value):
    """resize()'s arguments validated and normalised (lists of ints / floats, bools,
    floats), in this order: sizes, scales, roi, antialias, exclude_outside, cubic_coeff_a,
    extrapolation_value."""
    with prefixed_errors("resize"):
        as_choice(mode, MODES, "mode")
        as_choice(coordinate_mode, COORDINATE_MODES, "coordinate_transformation_mode")
        as_choice(nearest_mode, NEAREST_MODES, "nearest_mode")
        antialias = as_bool(antialias, "antialias")
        exclude_outside = as_bool(exclude_outside, "exclude_outside")
        cubic_coeff_a = as_float(cubic_coeff_a, "cubic_coeff_a")
        extrapolation_value = as_float(extrapolation_value, "extrapolation_value")
        if sizes is not None:
            sizes = list(as_shape(sizes, "sizes"))
        if scales is not None:
            scales = as_floats(scales, "scales")
        if roi is not None:
            roi = as_floats(roi, "roi")
    if sizes is None and scales is None:
        raise InvalidArgument("resize: sizes or scales must be given")
    return sizes, scales, roi, antialias, exclude_outside, cubic_coeff_a, extrapolation_value


def _resolve(shape, sizes, scales, roi, coordinate_transformation_mode):
    """(sizes, scales, rois, crop) of a resize of an input of ``shape``: the output size
    per axis, the scale per axis, the (start, end) region per axis and whether it is
    ``tf_crop_and_resize`` (validated: see :func:`resize`)."""
    r = len(shape)
    crop = coordinate_transformation_mode == "tf_crop_and_resize"
    if crop:
        if roi is None or len(roi) != 2 * r:
            raise ShapeError(f"resize: tf_crop_and_resize needs roi with {2 * r} values for a "
                             f"rank-{r} input, got {None if roi is None else list(roi)}")
        rois = [(float(roi[i]), float(roi[i + r])) for i in range(r)]
    else:
        rois = [(0.0, 1.0)] * r
    if sizes is not None:
        if len(sizes) != r or min(sizes, default=1) < 0:
            raise ShapeError(f"resize: sizes {sizes} must have {r} non-negative values for "
                             f"input shape {shape}")
        if scales is not None and len(scales) not in (0, r):
            raise ShapeError(f"resize: scales {scales} must have {r} values for input shape "
                             f"{shape}")
        if not scales:
            scales = [o / i if i else 1.0 for o, i in zip(sizes, shape)]
    else:
        if len(scales) != r:
            raise ShapeError(f"resize: scales {scales} must have {r} values for input shape "
                             f"{shape}")
        if not all(0 < s < math.inf for s in scales):
            raise InvalidArgument(f"resize: scales {scales} must be positive and finite")
        sizes = [math.floor(i * s) if math.isfinite(i * s) else math.inf
                 for i, s in zip(shape, scales)]
        if math.inf in sizes:
            raise ShapeError(f"resize: scales {scales} make an infinite output size from "
                             f"input shape {shape}")
    check_tensor_size(sizes, "resize")
    return sizes, scales, rois, crop


def _taps_2d(shape, dtype, sizes, scales, mode, coordinate_mode, nearest_mode, antialias,
             exclude_outside, crop):
    """The C kernels' per-axis (indices, weights) of the last two axes when the resize is
    nearest / bilinear over exactly those (both resized, float32), else None."""
    r = len(shape)
    if mode in ("nearest", "linear") and dtype == np.float32 and r >= 2 and \
            not antialias and not exclude_outside and not crop and \
            all(sizes[a] == shape[a] and scales[a] == 1.0 for a in range(r - 2)) and \
            not any(sizes[a] == shape[a] and scales[a] == 1.0 for a in (r - 2, r - 1)):
        return [_axis_taps(mode, coordinate_mode, sizes[a], shape[a], scales[a],
                           nearest_mode) for a in (r - 2, r - 1)]
    return None


def _run_2d(x, sizes, mode, taps, context, out=None):
    """The C kernel over the planes of ``x``; into ``out`` (a C-contiguous float32 array of
    ``sizes``) when given."""
    (iy, wy), (ix, wx) = taps
    planes = np.ascontiguousarray(x).reshape(-1, x.shape[-2], x.shape[-1])
    y = None if out is None else out.reshape(-1, sizes[-2], sizes[-1])
    if mode == "nearest":
        y = _resize_kernels.nearest_2d(planes, iy, ix, context, y)
    else:
        y = _resize_kernels.linear_2d(planes, iy, wy, ix, wx, context, y)
    return y.reshape(sizes) if out is None else out


def resize(x, sizes=None, scales=None, mode="nearest",
           coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_floor",
           cubic_coeff_a=-0.75, exclude_outside=False, extrapolation_value=0.0,
           antialias=False, roi=None, context=None):
    """Resize every axis of ``x`` (ONNX ``Resize``, opset 10 to 19 semantics).

    Parameters
    ----------
    x : ndarray, any rank, float (integer dtypes work for ``nearest``)
    sizes : sequence of int, optional
        Output shape (one per axis); the scale is then ``out / in`` unless ``scales`` is
        also given (ONNX ``keep_aspect_ratio_policy``).
    scales : sequence of float, optional
        Per-axis scale; without ``sizes`` the output size is ``floor(in * scale)``.
    mode : {'nearest', 'linear', 'cubic'}
        ``linear`` and ``cubic`` are separable (bilinear / bicubic in 2-D).
    coordinate_transformation_mode : str
        One of ``half_pixel`` (default), ``half_pixel_symmetric``, ``pytorch_half_pixel``,
        ``align_corners``, ``asymmetric``, ``tf_crop_and_resize``.
    nearest_mode : {'round_prefer_floor', 'round_prefer_ceil', 'floor', 'ceil'}
    cubic_coeff_a : float
        The cubic kernel's ``a`` (-0.75 like TensorFlow; -0.5 like some others).
    exclude_outside : bool
        Give taps outside the input a zero weight and renormalise.
    extrapolation_value : float
        Value of ``tf_crop_and_resize`` outputs whose source lies outside the input.
    antialias : bool
        When downscaling with linear / cubic, widen the kernel by ``1 / scale``.
    roi : sequence of float, optional
        ``(start_0, ..., start_{r-1}, end_0, ..., end_{r-1})`` in normalised
        coordinates, for ``tf_crop_and_resize``.
    context : ExecutionContext, optional
        Threads of the C bilinear kernel (float32, the last two axes resized).

    Returns
    -------
    ndarray, dtype of ``x``, shape ``sizes`` (or the scaled shape)

    Raises
    ------
    InvalidArgument
        On an unknown mode, neither sizes nor scales, a non-positive scale.
    ShapeError
        If sizes / scales / roi do not have one value per axis.
    """
    try:
        x = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"resize: x must be an array, got {type(x).__name__}: "
                              f"{exc}") from None
    if x.dtype.kind not in "biuf":
        raise InvalidDType(f"resize: x must be a numeric array, got dtype {x.dtype}")
    r = x.ndim
    (sizes, scales, roi, antialias, exclude_outside, cubic_coeff_a,
     extrapolation_value) = _checked(sizes, scales, roi, mode, coordinate_transformation_mode,
                                     nearest_mode, antialias, exclude_outside, cubic_coeff_a,
                                     extrapolation_value)
    sizes, scales, rois, crop = _resolve(x.shape, sizes, scales, roi,
                                         coordinate_transformation_mode)
    if 0 in x.shape or 0 in sizes:
        return np.zeros(sizes, x.dtype)
    taps = _taps_2d(x.shape, x.dtype, sizes, scales, mode, coordinate_transformation_mode,
                    nearest_mode, antialias, exclude_outside, crop)
    if taps is not None:        # nearest / bilinear over the last two axes: one C pass
        return _run_2d(x, sizes, mode, taps, context)
    if mode == "nearest" and not crop:
        repeated = _integer_repeat(x, sizes, scales, coordinate_transformation_mode,
                                   nearest_mode)
        if repeated is not None:
            return repeated
    y = x
    compute = np.float32 if x.dtype == np.float32 else np.float64
    for axis in range(r):
        in_size, out_size, scale = x.shape[axis], sizes[axis], scales[axis]
        if out_size == in_size and scale == 1.0 and not crop:
            continue
        coords, outside = _source_coords(coordinate_transformation_mode, out_size, in_size,
                                         scale, rois[axis])
        idx, w = _taps(mode, coords, in_size, scale, nearest_mode, float(cubic_coeff_a),
                       bool(exclude_outside), bool(antialias))
        bshape = [1] * r
        bshape[axis] = out_size
        if w is None:
            z = np.take(y, idx[:, 0], axis=axis)
        else:
            src = y.astype(compute, copy=False)
            z = None
            for t in range(idx.shape[1]):
                term = np.take(src, idx[:, t], axis=axis)
                term *= w[:, t].astype(compute).reshape(bshape)
                z = term if z is None else np.add(z, term, out=z)
        if outside is not None and outside.any():
            z = np.where(outside.reshape(bshape), np.asarray(extrapolation_value, z.dtype), z)
        y = z
    if y.dtype != x.dtype:
        y = np.rint(y).astype(x.dtype) if x.dtype.kind in "iub" else y.astype(x.dtype)
    return np.ascontiguousarray(y)


def bind_resize(x_shape, sizes=None, scales=None, mode="nearest",
                coordinate_transformation_mode="half_pixel",
                nearest_mode="round_prefer_floor", antialias=False, exclude_outside=False,
                roi=None, context=None, out=None):
    """:func:`resize` of a float32 input of ``x_shape`` bound once (a memory planner's
    step), when it runs the C kernels (nearest / bilinear over the last two axes, both
    resized); None otherwise. ``out``: where each call writes (a memory planner's buffer),
    used when it is a writeable C-contiguous float32 array of the output shape; else each
    call returns a new array.

    Returns
    -------
    call : callable or None
        ``call(x)`` returns the resized array, or None without computing anything when x
        is not a float32 C-contiguous ndarray of ``x_shape`` (the caller then takes
        :func:`resize`, which converts or reports)."""
    shape = tuple(int(d) for d in x_shape)
    sizes, scales, roi, antialias, exclude_outside, _, _ = _checked(
        sizes, scales, roi, mode, coordinate_transformation_mode, nearest_mode, antialias,
        exclude_outside, -0.75, 0.0)
    sizes, scales, _, crop = _resolve(shape, sizes, scales, roi,
                                      coordinate_transformation_mode)
    if 0 in shape or 0 in sizes:
        return None
    taps = _taps_2d(shape, np.float32, sizes, scales, mode, coordinate_transformation_mode,
                    nearest_mode, antialias, exclude_outside, crop)
    if taps is None:
        return None

    if out is not None and not (isinstance(out, np.ndarray) and out.dtype == np.float32
                                and out.shape == tuple(sizes) and out.flags.c_contiguous
                                and out.flags.writeable):
        out = None

    def call(x):
        if (type(x) is not np.ndarray or x.dtype != np.float32 or x.shape != shape
                or not x.flags.c_contiguous):
            return None
        if out is not None and np.may_share_memory(x, out):
            return _run_2d(x, sizes, mode, taps, context)
        return _run_2d(x, sizes, mode, taps, context, out)
    return call

