"""Sliding-block extraction and its adjoint: ``unfold`` (im2col) and ``fold`` (col2im),
with torch.nn.functional signatures.

The block grid is a convolution's output grid: :class:`pyconv.arithmetic.ConvAttributes`
resolves it (with the same validation as ``conv2d``), so a (C, kH, kW) block of
``unfold`` is exactly what ``conv2d`` multiplies by one output position's weights.
"""
from __future__ import annotations

import numpy as np

from pyconv import arithmetic
from pyconv._arrays import as_float32
from pyconv.errors import ShapeError

__all__ = ["unfold", "fold"]


def _geometry(op, spatial, kernel_size, dilation, padding, stride):
    """((kH, kW), (dH, dW), (pH, pW), (sH, sW), block grid (bH, bW)) of a 2-D input of
    spatial size ``spatial``."""
    with arithmetic.prefixed_errors(op):
        # torch takes symmetric pads only: an int or one per spatial dim.
        pads = arithmetic.normalize_tuple(padding, 2, "padding", minimum=0)
    attributes = arithmetic.torch_attributes("conv", 2, kernel_size, stride, pads, dilation,
                                             op=op)
    geometry = attributes.resolve(spatial)
    return (attributes.kernel_shape, attributes.dilations, pads, attributes.strides,
            geometry.output_shape)


def _tap(k, d, s, blocks):
    """The slice of a padded axis that kernel tap ``k`` reads at every block."""
    start = k * d
    return slice(start, start + s * (blocks - 1) + 1, s)


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """Extract sliding blocks as columns (``torch.nn.functional.unfold``, im2col).

    Parameters
    ----------
    input : ndarray, shape (N, C, H, W) or unbatched (C, H, W), float32
    kernel_size, dilation, stride : int or (int, int)
        Positive.
    padding : int or (int, int)
        Zeros added on both sides of each spatial dim.

    Returns
    -------
    ndarray, shape (N, C * kH * kW, L) (unbatched: (C * kH * kW, L)), float32
        Row ``(c * kH + i) * kW + j`` holds tap (i, j) of channel c; column
        ``bh * bW + bw`` is block (bh, bw) of the ``L = bH * bW`` blocks, ``bH`` and
        ``bW`` being a convolution's output size
        (``(H + 2 pH - dH (kH - 1) - 1) // sH + 1``).

    Raises
    ------
    ShapeError
        If the input is not 3-D or 4-D, has an empty channel or spatial dim, or the
        dilated kernel does not fit the padded input.
    InvalidArgument
        On a non-positive kernel size, dilation or stride, a negative padding, or a
        tuple of the wrong length.
    """
    op = "unfold"
    x = as_float32(input, "input", op)
    if x.ndim not in (3, 4):
        raise ShapeError(f"{op}: input must be 4-D (N, C, H, W) or unbatched 3-D (C, H, W), "
                         f"got shape {x.shape}")
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    if 0 in x.shape[1:]:
        raise ShapeError(f"{op}: input of shape {x.shape} has an empty channel or spatial "
                         f"dim (only the batch may be empty)")
    n, c, h, w = x.shape
    (kh, kw), (dh, dw), (ph, pw), (sh, sw), (bh, bw) = _geometry(
        op, (h, w), kernel_size, dilation, padding, stride)
    arithmetic.check_tensor_size((n, c * kh * kw, bh * bw), op)
    if ph or pw:
        arithmetic.check_tensor_size((n, c, h + 2 * ph, w + 2 * pw), op, "padded input")
        padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), np.float32)
        padded[:, :, ph:ph + h, pw:pw + w] = x
    else:
        padded = x
    # One strided copy per kernel tap (kH * kW NumPy copies of whole block grids).
    cols = np.empty((n, c, kh, kw, bh, bw), np.float32)
    for i in range(kh):
        rows = _tap(i, dh, sh, bh)
        for j in range(kw):
            cols[:, :, i, j] = padded[:, :, rows, _tap(j, dw, sw, bw)]
    cols = cols.reshape(n, c * kh * kw, bh * bw)
    return cols[0] if unbatched else cols


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """Sum sliding blocks back into an image (``torch.nn.functional.fold``, col2im): the
    adjoint of :func:`unfold`; overlapping taps add up.

    Parameters
    ----------
    input : ndarray, shape (N, C * kH * kW, L) or unbatched (C * kH * kW, L), float32
        Columns laid out as :func:`unfold` returns them.
    output_size : int or (int, int)
        (H, W) of the image; ``L`` must be the number of blocks it holds.
    kernel_size, dilation, padding, stride : as in :func:`unfold`.

    Returns
    -------
    ndarray, shape (N, C, H, W) (unbatched: (C, H, W)), float32

    Raises
    ------
    ShapeError
        If the input is not 2-D or 3-D, its rows are not a multiple of ``kH * kW``, or
        ``L`` differs from the number of blocks of ``output_size``.
    InvalidArgument
        On an invalid ``output_size`` or geometry argument.
    """
    op = "fold"
    x = as_float32(input, "input", op)
    if x.ndim not in (2, 3):
        raise ShapeError(f"{op}: input must be 3-D (N, C * kH * kW, L) or unbatched 2-D "
                         f"(C * kH * kW, L), got shape {x.shape}")
    unbatched = x.ndim == 2
    if unbatched:
        x = x[None]
    with arithmetic.prefixed_errors(op):
        h, w = arithmetic.normalize_tuple(output_size, 2, "output_size")
    (kh, kw), (dh, dw), (ph, pw), (sh, sw), (bh, bw) = _geometry(
        op, (h, w), kernel_size, dilation, padding, stride)
    n, rows, length = x.shape
    if rows == 0 or rows % (kh * kw):
        raise ShapeError(f"{op}: input has {rows} rows (shape {x.shape}), expected a "
                         f"positive multiple of the kernel's {kh} * {kw} = {kh * kw} taps")
    if length != bh * bw:
        raise ShapeError(f"{op}: input has {length} columns (shape {x.shape}), but "
                         f"output_size={(h, w)} with kernel_size={(kh, kw)}, dilation="
                         f"{(dh, dw)}, padding={(ph, pw)}, stride={(sh, sw)} holds "
                         f"{bh} * {bw} = {bh * bw} blocks")
    c = rows // (kh * kw)
    arithmetic.check_tensor_size((n, c, h + 2 * ph, w + 2 * pw), op, "padded output")
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), np.float32)
    cols = x.reshape(n, c, kh, kw, bh, bw)
    # One strided add per kernel tap: within a tap, blocks write distinct positions.
    for i in range(kh):
        rows_slice = _tap(i, dh, sh, bh)
        for j in range(kw):
            padded[:, :, rows_slice, _tap(j, dw, sw, bw)] += cols[:, :, i, j]
    y = padded[:, :, ph:ph + h, pw:pw + w]
    if ph or pw:
        y = np.ascontiguousarray(y)
    return y[0] if unbatched else y

