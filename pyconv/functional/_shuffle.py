"""Pixel shuffle: moving ``b x b`` blocks between the channels and the spatial dims.

One implementation, :func:`depth_to_space` / :func:`space_to_depth`, runs the ONNX
``DepthToSpace`` / ``SpaceToDepth`` operators and torch's ``pixel_shuffle`` /
``pixel_unshuffle`` (ONNX mode ``CRD``: channels ordered (c, block row, block column)).
"""
from __future__ import annotations

import math

import numpy as np

from pyconv import arithmetic
from pyconv._arrays import as_float32
from pyconv.errors import InvalidArgument, ShapeError

__all__ = ["pixel_shuffle", "pixel_unshuffle", "depth_to_space", "space_to_depth"]

MODES = ("DCR", "CRD")


def _check(x, blocksize, mode, op):
    arithmetic.check_op_name(op)
    if not isinstance(x, np.ndarray):
        raise InvalidArgument(f"{op}: input must be an ndarray, got {type(x).__name__}")
    if x.ndim < 3:
        raise ShapeError(f"{op}: input must have shape (*, C, H, W) (at least 3 dims), got "
                         f"{x.shape}")
    b = arithmetic._as_int(blocksize, "blocksize", 1, op)
    mode = str(mode).upper()
    if mode not in MODES:
        raise InvalidArgument(f"{op}: mode must be one of {MODES}, got {mode!r}")
    return b, mode


def _blocks(depth, lead, c, b, h, w, mode):
    """The (L, c, b, b, h, w) view of the depth-side array ``depth`` (``L`` the product of
    the leading dims), whose channels are ordered (c, b, b) in CRD mode and (b, b, c) in
    DCR mode."""
    if mode == "CRD":
        return depth.reshape(lead, c, b, b, h, w)
    return depth.reshape(lead, b, b, c, h, w).transpose(0, 3, 1, 2, 4, 5)


def _output(out, shape, dtype, x):
    """``out`` when it is a writeable C-contiguous array of ``shape`` / ``dtype`` that does
    not overlap ``x`` (a planned buffer), else a new array."""
    if (isinstance(out, np.ndarray) and out.shape == shape and out.dtype == dtype
            and out.flags.c_contiguous and out.flags.writeable
            and not np.may_share_memory(out, x)):
        return out
    return np.empty(arithmetic.check_tensor_size(shape), dtype)


# One strided copy per (row, column) position of the block (b * b NumPy copies of whole
# planes): much faster than one 6-D transposed copy whose innermost run is b elements.

def depth_to_space(x, blocksize, mode="DCR", out=None, *, op="depth_to_space"):
    """Move channel blocks into ``b x b`` spatial blocks (ONNX ``DepthToSpace``).

    Parameters
    ----------
    x : ndarray, shape (*, C * b * b, H, W), any dtype
    blocksize : int
        ``b``, positive.
    mode : {'DCR', 'CRD'}
        Channel order of the input: (block row, block column, c) or (c, block row,
        block column). ``CRD`` is torch's ``pixel_shuffle``.
    out : ndarray, optional
        Written and returned when it is a C-contiguous array of the output shape and
        dtype that does not overlap ``x``; otherwise a new array is returned.
    op : str
        Name used in error messages.

    Returns
    -------
    ndarray, shape (*, C, H * b, W * b), dtype of ``x``

    Raises
    ------
    ShapeError
        If ``x`` has fewer than 3 dims or its channels are not divisible by ``b * b``.
    InvalidArgument
        On a non-positive ``blocksize`` or an unknown mode.
    """
    b, mode = _check(x, blocksize, mode, op)
    c, h, w = x.shape[-3:]
    if c % (b * b):
        raise ShapeError(f"{op}: input has {c} channels (shape {x.shape}), not divisible "
                         f"by blocksize^2 = {b * b}")
    c //= b * b
    lead = math.prod(x.shape[:-3])
    y = _output(out, x.shape[:-3] + (c, h * b, w * b), x.dtype, x)
    src = _blocks(x, lead, c, b, h, w, mode)
    dst = y.reshape(lead, c, h, b, w, b)
    for i in range(b):
        for j in range(b):
            dst[:, :, :, i, :, j] = src[:, :, i, j]
    return y


def space_to_depth(x, blocksize, mode="DCR", out=None, *, op="space_to_depth"):
    """Move ``b x b`` spatial blocks into channels (ONNX ``SpaceToDepth``; the inverse of
    :func:`depth_to_space` in the same mode).

    Parameters
    ----------
    x : ndarray, shape (*, C, H * b, W * b), any dtype
    blocksize : int
    mode : {'DCR', 'CRD'}
        Channel order of the output (ONNX ``SpaceToDepth`` is ``DCR``; ``CRD`` is
        torch's ``pixel_unshuffle``).
    out : ndarray, optional
        As in :func:`depth_to_space`.
    op : str
        Name used in error messages.

    Returns
    -------
    ndarray, shape (*, C * b * b, H, W), dtype of ``x``

    Raises
    ------
    ShapeError
        If ``x`` has fewer than 3 dims or H, W are not divisible by ``b``.
    InvalidArgument
        On a non-positive ``blocksize`` or an unknown mode.
    """
    b, mode = _check(x, blocksize, mode, op)
    c, h, w = x.shape[-3:]
    if h % b or w % b:
        raise ShapeError(f"{op}: spatial size {(h, w)} of the input (shape {x.shape}) is "
                         f"not divisible by blocksize {b}")
    h, w = h // b, w // b
    lead = math.prod(x.shape[:-3])
    y = _output(out, x.shape[:-3] + (c * b * b, h, w), x.dtype, x)
    src = x.reshape(lead, c, h, b, w, b)
    dst = _blocks(y, lead, c, b, h, w, mode)
    for i in range(b):
        for j in range(b):
            dst[:, :, i, j] = src[:, :, :, i, :, j]
    return y


def pixel_shuffle(input, upscale_factor):
    """Rearrange (*, C * r^2, H, W) into (*, C, H * r, W * r)
    (``torch.nn.functional.pixel_shuffle``; ONNX ``DepthToSpace`` in ``CRD`` mode).

    Parameters
    ----------
    input : ndarray, shape (*, C * r^2, H, W), float32
        Any number of leading dims (none included).
    upscale_factor : int
        ``r``, positive.

    Returns
    -------
    ndarray, shape (*, C, H * r, W * r), float32

    Raises
    ------
    ShapeError
        If the input has fewer than 3 dims or its channels are not divisible by r^2.
    InvalidArgument
        If ``upscale_factor`` is not a positive int.
    """
    op = "pixel_shuffle"
    x = as_float32(input, "input", op)
    r = arithmetic._as_int(upscale_factor, "upscale_factor", 1, op)
    return depth_to_space(x, r, "CRD", op=op)


def pixel_unshuffle(input, downscale_factor):
    """Rearrange (*, C, H * r, W * r) into (*, C * r^2, H, W)
    (``torch.nn.functional.pixel_unshuffle``; ONNX ``SpaceToDepth`` in ``CRD`` order).

    Parameters
    ----------
    input : ndarray, shape (*, C, H * r, W * r), float32
    downscale_factor : int
        ``r``, positive.

    Returns
    -------
    ndarray, shape (*, C * r^2, H, W), float32

    Raises
    ------
    ShapeError
        If the input has fewer than 3 dims or H, W are not divisible by r.
    InvalidArgument
        If ``downscale_factor`` is not a positive int.
    """
    op = "pixel_unshuffle"
    x = as_float32(input, "input", op)
    r = arithmetic._as_int(downscale_factor, "downscale_factor", 1, op)
    return space_to_depth(x, r, "CRD", op=op)
