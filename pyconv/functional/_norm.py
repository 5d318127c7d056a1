"""Layer, group and instance normalisation (torch.nn.functional signatures).

Each is also the implementation of its ONNX operator (``LayerNormalization``,
``GroupNormalization``, ``InstanceNormalization`` in :mod:`pyconv.ops.norm`): both end
in :func:`normalize_last_axes` / :func:`normalize_groups`, which standardise rows with
the ops' :func:`pyconv.ops.norm.standardize_rows`.
"""
from __future__ import annotations

import math

import numpy as np

from pyconv import arithmetic
from pyconv._arrays import as_float32
from pyconv.errors import InvalidArgument, ShapeError
from pyconv.functional._misc import batch_norm

__all__ = ["layer_norm", "group_norm", "instance_norm"]


def _standardize_rows(rows, eps, scale, bias, context):
    # The one row standardisation of the normalisation operators lives with them (its
    # body is the kernel); imported at call time because pyconv.ops imports this package.
    from pyconv.ops.norm import standardize_rows
    return standardize_rows(rows, eps, scale, bias, context)


def _row_vector(p, axis, x_shape):
    """A parameter that broadcasts to ``x_shape`` as a (1, prod(x_shape[axis:])) row, or
    None when it is None or varies along an axis before ``axis``."""
    if p is None:
        return None
    padded = (1,) * (len(x_shape) - p.ndim) + p.shape
    if any(d != 1 for d in padded[:axis]):
        return None
    return np.broadcast_to(p.reshape(padded[axis:]), x_shape[axis:]).reshape(1, -1)


def normalize_last_axes(x, axis, eps, weight=None, bias=None, context=None):
    """Standardise ``x`` over the axes ``axis..ndim-1``, then ``* weight + bias``.

    Shared by :func:`layer_norm` and the ONNX ``LayerNormalization``.

    Parameters
    ----------
    x : ndarray, float32 or float64 (the compute dtype), at least ``axis + 1`` dims
    axis : int
        First normalised axis, ``0 <= axis < x.ndim``.
    eps : float
    weight, bias : ndarray, optional
        Broadcast against ``x`` (already checked by the caller). Varying only over the
        normalised axes (the usual case), they are applied in the kernel's pass.
    context : pyconv.ExecutionContext, optional

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
    mean, inv_std : ndarray, shape (prod(x.shape[:axis]), 1), float64
        The statistics of each normalised row.
    """
    rows = math.prod(x.shape[:axis])
    cols = math.prod(x.shape[axis:])
    if rows * cols == 0:
        nan = np.full((rows, 1), np.nan)
        return np.empty(x.shape, x.dtype), nan, nan
    channels_first = _channels_first(x, axis, weight, bias)
    if channels_first is not None:
        return _normalize_channels(channels_first, x.shape, eps, weight, bias, context)
    row_weight, row_bias = _row_vector(weight, axis, x.shape), _row_vector(bias, axis, x.shape)
    fused = (weight is None or row_weight is not None) and (bias is None or
                                                            row_bias is not None)
    y, mean, inv_std = _standardize_rows(x.reshape(rows, cols), float(eps),
                                         row_weight if fused else None,
                                         row_bias if fused else None, context)
    y = y.reshape(x.shape)
    if not fused:
        if weight is not None:
            y *= weight.astype(y.dtype, copy=False)
        if bias is not None:
            y += bias.astype(y.dtype, copy=False)
    return y, mean, inv_std


def last_axis_vector(p, size):
    """A parameter that broadcasts against (..., ``size``) varying over the last axis only
    (or not at all) as its ``size`` values; None when it is None or varies elsewhere."""
    if p is None or any(d != 1 for d in p.shape[:-1]) or (p.ndim and p.shape[-1]
                                                           not in (1, size)):
        return None
    return np.broadcast_to(p.reshape(-1), (size,))


def _channels_first(x, axis, weight, bias):
    """``x`` with its last axis moved to axis 1, when that is a C-contiguous float32 array
    (x is the NHWC view of NCHW data, as exporters write a channels-first layer norm:
    Transpose, LayerNormalization over the last axis, Transpose back) and the norm is over
    that axis alone with per-channel parameters; else None."""
    c = x.shape[-1]
    if (x.dtype != np.float32 or x.ndim < 3 or axis != x.ndim - 1 or x.flags.c_contiguous
            or any(p is not None and last_axis_vector(p, c) is None for p in (weight, bias))):
        return None
    moved = np.moveaxis(x, -1, 1)
    return moved if moved.flags.c_contiguous else None


def _normalize_channels(moved, shape, eps, weight, bias, context):
    """:func:`normalize_last_axes` of the channels-last view of ``moved`` (N, C, *) over C:
    each pixel standardised over its channels in place in the NCHW layout (the column
    kernel), the result handed back as the same channels-last view; no transposed copy."""
    from pyconv._ext import eltwise
    n, c = moved.shape[:2]
    y, mean, inv_std = eltwise.standardize_columns(
        moved.reshape(n, c, -1), float(eps), last_axis_vector(weight, c),
        last_axis_vector(bias, c), context=context)
    return (np.moveaxis(y.reshape(moved.shape), 1, -1), mean.reshape(-1, 1),
            inv_std.reshape(-1, 1))


def normalize_groups(x, num_groups, eps, weight=None, bias=None, context=None):
    """Standardise each (sample, group of channels) of ``x`` (N, C, *) over its channels
    and positions, then ``* weight + bias`` per channel (in the kernel's pass).

    Shared by :func:`group_norm`, :func:`instance_norm` (``num_groups = C``) and the ONNX
    ``GroupNormalization`` / ``InstanceNormalization``.

    Parameters
    ----------
    x : ndarray, (N, C, *), float32 or float64, C divisible by ``num_groups``
    num_groups : int
    eps : float
    weight, bias : ndarray (C,), optional
    context : pyconv.ExecutionContext, optional

    Returns
    -------
    ndarray, shape and dtype of ``x``
    """
    n, c = x.shape[:2]
    if x.size == 0:
        return np.empty(x.shape, x.dtype)
    # A group row holds C / G channels, each a run of its positions: (G, C / G) values.
    view = (num_groups, c // num_groups)
    y, _, _ = _standardize_rows(
        x.reshape(n * num_groups, -1), float(eps),
        None if weight is None else weight.reshape(view),
        None if bias is None else bias.reshape(view), context)
    return y.reshape(x.shape)


def _param(value, name, shape, op, what):
    """An optional float32 parameter of exactly ``shape``."""
    if value is None:
        return None
    value = as_float32(value, name, op)
    if value.shape != shape:
        raise ShapeError(f"{op}: {name} has shape {value.shape}, expected {shape} ({what})")
    return value


def _eps(eps, op):
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{op}: eps must be a float, got {eps!r}") from None
    return eps


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing dims ``normalized_shape``
    (``torch.nn.functional.layer_norm``).

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, mean and (biased) variance taken
    over the last ``len(normalized_shape)`` dims.

    Parameters
    ----------
    input : ndarray, shape (*, *normalized_shape), float32
    normalized_shape : int or sequence of int
        The trailing shape of ``input`` to normalise over (at least one dim).
    weight, bias : ndarray, shape normalized_shape, float32, optional
        Element-wise affine parameters; None means 1 and 0.
    eps : float
        Added to the variance.

    Returns
    -------
    ndarray, shape of ``input``, float32

    Raises
    ------
    ShapeError
        If the input's trailing dims or a parameter's shape differ from
        ``normalized_shape``.
    InvalidArgument
        If ``normalized_shape`` is empty or not ints.
    """
    op = "layer_norm"
    x = as_float32(input, "input", op)
    if isinstance(normalized_shape, (str, bytes)):
        raise InvalidArgument(f"{op}: normalized_shape must be an int or a sequence of ints, "
                              f"got {normalized_shape!r}")
    try:
        shape = tuple(normalized_shape)
    except TypeError:
        shape = (normalized_shape,)
    shape = tuple(arithmetic._as_int(s, f"normalized_shape[{i}]", 0, op)
                  for i, s in enumerate(shape))
    if not shape:
        raise InvalidArgument(f"{op}: normalized_shape must have at least one dim, got ()")
    k = len(shape)
    if x.ndim < k or x.shape[x.ndim - k:] != shape:
        raise ShapeError(f"{op}: normalized_shape={shape} expects an input of shape "
                         f"(*, {', '.join(map(str, shape))}), got {x.shape}")
    weight = _param(weight, "weight", shape, op, "normalized_shape")
    bias = _param(bias, "bias", shape, op, "normalized_shape")
    y, _, _ = normalize_last_axes(x, x.ndim - k, _eps(eps, op), weight, bias)
    return y


def _channels_input(x, op, min_ndim):
    x = as_float32(x, "input", op)
    if x.ndim < min_ndim:
        want = "(N, C, *)" if min_ndim == 2 else "(N, C, *spatial) with a spatial dim"
        raise ShapeError(f"{op}: input must have shape {want}, got {x.shape} "
                         f"({x.ndim}-D)")
    return x


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise each group of channels of every sample
    (``torch.nn.functional.group_norm``).

    The channels are cut into ``num_groups`` consecutive groups; each (sample, group) is
    standardised over its channels and positions, then scaled and shifted per channel.

    Parameters
    ----------
    input : ndarray, shape (N, C, *), float32
        C divisible by ``num_groups``.
    num_groups : int
        Positive.
    weight, bias : ndarray, shape (C,), float32, optional
    eps : float

    Returns
    -------
    ndarray, shape of ``input``, float32

    Raises
    ------
    ShapeError
        If the input has fewer than 2 dims, C is not divisible by ``num_groups`` or a
        parameter is not (C,).
    InvalidArgument
        If ``num_groups`` is not a positive int.
    """
    op = "group_norm"
    x = _channels_input(input, op, 2)
    g = arithmetic._as_int(num_groups, "num_groups", 1, op)
    c = x.shape[1]
    if c % g:
        raise ShapeError(f"{op}: the input's {c} channels (shape {x.shape}) are not "
                         f"divisible by num_groups={g}")
    weight = _param(weight, "weight", (c,), op, "one value per channel")
    bias = _param(bias, "bias", (c,), op, "one value per channel")
    return normalize_groups(x, g, _eps(eps, op), weight, bias)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Normalise every channel of every sample on its own
    (``torch.nn.functional.instance_norm``), at inference.

    With ``use_input_stats`` (the default) each (n, c) plane is standardised with its own
    mean and variance; otherwise with ``running_mean`` / ``running_var``, as
    :func:`batch_norm` does. Then ``* weight + bias`` per channel.

    Parameters
    ----------
    input : ndarray, shape (N, C, *spatial), float32
        At least one spatial dim; with ``use_input_stats`` more than one position.
    running_mean, running_var : ndarray, shape (C,), float32, optional
        Required when ``use_input_stats`` is false; must be None when it is true (torch
        would update them: training, which pyconv does not do).
    weight, bias : ndarray, shape (C,), float32, optional
    use_input_stats : bool
    momentum : float
        Accepted for signature compatibility; unused at inference.
    eps : float

    Returns
    -------
    ndarray, shape of ``input``, float32

    Raises
    ------
    ShapeError
        If the input is not (N, C, *spatial) or a parameter is not (C,), or with
        ``use_input_stats`` the planes have a single element.
    InvalidArgument
        If running statistics are missing (``use_input_stats=False``) or given with
        ``use_input_stats=True``.
    """
    op = "instance_norm"
    x = _channels_input(input, op, 3)
    with arithmetic.prefixed_errors(op):
        use_input_stats = arithmetic.as_bool(use_input_stats, "use_input_stats")
    eps = _eps(eps, op)
    c = x.shape[1]
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise InvalidArgument(f"{op}: running_mean and running_var are required with "
                                  f"use_input_stats=False")
        return batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)
    if running_mean is not None or running_var is not None:
        raise InvalidArgument(
            f"{op}: running_mean / running_var with use_input_stats=True would be updated "
            f"with the batch statistics (training); pyconv is inference-only: pass None, "
            f"or use_input_stats=False to normalise with them")
    if math.prod(x.shape[2:]) == 1:
        raise ShapeError(f"{op}: expected more than 1 spatial element per plane to "
                         f"normalise with the input's statistics, got input shape {x.shape}")
    weight = _param(weight, "weight", (c,), op, "one value per channel")
    bias = _param(bias, "bias", (c,), op, "one value per channel")
    return normalize_groups(x, c, eps, weight, bias)

