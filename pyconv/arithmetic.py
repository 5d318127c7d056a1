"""Convolution arithmetic: output sizes, padding and group checks.

This module is the single source of truth for the geometry of the
convolution family (Conv, ConvTranspose, MaxPool, AveragePool, LpPool).
Every function is pure and works on Python ints and tuples; nothing here
touches an array.

Conventions
-----------
* ``k`` is a kernel size, ``d`` a dilation, ``s`` a stride, ``pb`` / ``pe``
  the padding added at the beginning / end of a spatial axis.
* The *effective* (dilated) kernel size is ``(k - 1) * d + 1``.
* Per-side pads follow the ONNX order ``(begin_0, ..., begin_{n-1},
  end_0, ..., end_{n-1})``; functions return them as two tuples
  ``(pads_begin, pads_end)``.

The formulas are those of Dumoulin & Visin, "A guide to convolution
arithmetic for deep learning" (2016), generalised to dilation and
asymmetric padding as in the ONNX operator specification and
``torch.nn``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import operator
from typing import NamedTuple

from pyconv.errors import InvalidArgument, MemoryLimitExceeded, ShapeError

__all__ = [
    "normalize_tuple",
    "effective_kernel_size",
    "same_padding",
    "split_padding",
    "resolve_padding",
    "conv_output_size",
    "conv_output_shape",
    "pool_output_size",
    "pool_output_shape",
    "conv_transpose_output_size",
    "conv_transpose_output_shape",
    "conv_transpose_output_padding",
    "conv_transpose_pads_for_output_shape",
    "max_unpool_output_shape",
    "TransposePads",
    "AUTO_PAD_MODES",
    "ConvAttributes",
    "ConvGeometry",
    "torch_attributes",
    "exact_key",
    "prefixed_errors",
    "as_bool",
    "as_float",
    "as_choice",
    "as_shape",
    "check_groups",
    "check_tensor_size",
    "AllocationBudget",
    "ALLOCATION_BUDGET",
    "MAX_DIM",
    "MAX_TENSOR_ELEMENTS",
]

#: Largest geometry value (size, kernel, stride, pad, dilation) pyconv accepts: the kernels
#: index with int64, and anything larger is a corrupt model or a typo, not a network.
MAX_DIM = 2**31 - 1
#: Largest tensor pyconv allocates (8 GiB of float32): a clear error instead of a giant
#: allocation when hostile or mistaken arguments ask for more.
MAX_TENSOR_ELEMENTS = 2**31

#: Padding mode strings accepted by :func:`resolve_padding` (lower case).
PADDING_MODES = ("valid", "same", "same_upper", "same_lower")
#: ONNX ``auto_pad`` values; each padding mode string is one of them (``'same'`` is
#: ``SAME_UPPER``).
AUTO_PAD_MODES = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


# ---------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------

def _where(op: str, dim: int | None) -> tuple[str, str]:
    """Message prefix ``"op: "`` and suffix ``" along dim i"``."""
    return (f"{op}: " if op else "", "" if dim is None else f" along dim {dim}")


def _as_int(value, name: str, minimum: int, op: str = "") -> int:
    """Return ``value`` as an int ``>= minimum``; bools and floats are refused."""
    prefix = _where(op, None)[0]
    if isinstance(value, bool):
        raise InvalidArgument(f"{prefix}{name} must be an int, got bool {value!r}")
    try:
        result = operator.index(value)
    except TypeError:
        raise InvalidArgument(
            f"{prefix}{name} must be an int, got {type(value).__name__} {value!r}"
        ) from None
    if result < minimum:
        kind = "positive" if minimum == 1 else f">= {minimum}"
        raise InvalidArgument(f"{prefix}{name} must be {kind}, got {result}")
    if result > MAX_DIM:
        raise InvalidArgument(f"{prefix}{name}={result} is out of range (max {MAX_DIM})")
    return result


class AllocationBudget(NamedTuple):
    """What the node now running may allocate under a session's memory limit."""
    #: ``SessionOptions.memory_limit_bytes``.
    limit: int
    #: Activation bytes the run holds before this node's outputs.
    held: int
    #: The node, for the message (``Expand node 'e'``).
    where: str


#: The :class:`AllocationBudget` of the node running in this thread (None outside a run
#: under a memory limit), set by the session's executor around each node so that
#: :func:`check_tensor_size` refuses a buffer past the limit before it is allocated.
ALLOCATION_BUDGET = contextvars.ContextVar("pyconv_allocation_budget", default=None)


def check_tensor_size(shape, op: str = "", what: str = "output",
                      itemsize: int = 4) -> tuple[int, ...]:
    """``shape`` as a tuple of ints, or ShapeError when it would exceed
    :data:`MAX_TENSOR_ELEMENTS` elements, or MemoryLimitExceeded when its bytes
    (``itemsize`` each) would take a run past its session's memory limit
    (:data:`ALLOCATION_BUDGET`); checked before anything is allocated."""
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise ShapeError(f"{_where(op, None)[0]}{what} shape {shape} has a negative dim")
    count = 1
    for d in shape:
        count *= max(d, 1)   # a zero dim does not excuse absurd others (NumPy refuses them)
    if count > MAX_TENSOR_ELEMENTS:
        raise ShapeError(f"{_where(op, None)[0]}{what} shape {shape} has {count:,} elements, "
                         f"above pyconv's limit of {MAX_TENSOR_ELEMENTS:,} per tensor")
    budget = ALLOCATION_BUDGET.get()
    if budget is not None:
        nbytes = math.prod(shape) * itemsize
        if budget.held + nbytes > budget.limit:
            raise MemoryLimitExceeded(
                f"{budget.where}: its {what} of shape {shape} would take {nbytes:,} bytes; "
                f"with the {budget.held:,} bytes of activations the run holds, that is above "
                f"the session's memory_limit_bytes={budget.limit:,} (refused before "
                f"allocating it)")
    return shape


def _as_items(value, name: str) -> tuple | None:
    """``tuple(value)`` for a sequence, ``None`` for a scalar; strings are refused."""
    if isinstance(value, (str, bytes)):
        raise InvalidArgument(f"{name} must be an int or a sequence of ints, got {value!r}")
    try:
        return tuple(value)
    except TypeError:  # not iterable (0-d arrays land here too)
        return None


def normalize_tuple(value, n: int, name: str, *, minimum: int = 1) -> tuple[int, ...]:
    """Expand an int or a sequence of ints into a tuple of ``n`` ints.

    Parameters
    ----------
    value : int or sequence of int
        A single int is repeated ``n`` times; a sequence must have length
        ``n``. NumPy integers are accepted, bools and floats are not.
    n : int
        Number of spatial dimensions (``>= 1``).
    name : str
        Argument name used in error messages (e.g. ``"stride"``).
    minimum : int, optional
        Smallest allowed value: 1 (default) for kernel sizes, strides and
        dilations, 0 for paddings.

    Returns
    -------
    tuple of int
        Length ``n``.

    Raises
    ------
    InvalidArgument
        If ``value`` has the wrong length or type, or an element is below
        ``minimum``.

    Examples
    --------
    >>> normalize_tuple(3, 2, "kernel_size")
    (3, 3)
    >>> normalize_tuple([1, 2], 2, "stride")
    (1, 2)
    """
    # Fast path for what the layers pass once normalised: plain ints in range.
    if type(n) is int and n >= 1:
        if type(value) is tuple and len(value) == n and all(
                type(v) is int and minimum <= v <= MAX_DIM for v in value):
            return value
        if type(value) is int and minimum <= value <= MAX_DIM:
            return (value,) * n
    n = _as_int(n, "n", 1)
    items = _as_items(value, name)
    if items is not None:
        if len(items) != n:
            raise InvalidArgument(
                f"{name} must have {n} element{'s' if n != 1 else ''} "
                f"(one per spatial dim), got {len(items)}: {items!r}"
            )
        return tuple(_as_int(v, f"{name}[{i}]", minimum) for i, v in enumerate(items))
    return (_as_int(value, name, minimum),) * n


# ---------------------------------------------------------------------------
# single formulas (scalar, one spatial dim)
# ---------------------------------------------------------------------------

def effective_kernel_size(kernel_size: int, dilation: int = 1) -> int:
    """Extent of a dilated kernel: ``(kernel_size - 1) * dilation + 1``.

    Examples
    --------
    >>> effective_kernel_size(3, 2)
    5
    """
    return (kernel_size - 1) * dilation + 1


def same_padding(input_size: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Total padding that makes a convolution output ``ceil(input_size / stride)``.

    This is the ONNX ``auto_pad=SAME_*`` rule (also TensorFlow's ``SAME``),
    valid for any stride::

        out   = ceil(input_size / stride)
        total = max(0, (out - 1) * stride + (kernel_size - 1) * dilation + 1 - input_size)

    Use :func:`split_padding` to divide the total between the two sides.

    Returns
    -------
    int
        The total (begin + end) padding, ``>= 0``.

    Examples
    --------
    >>> same_padding(7, 3, stride=2)   # out = 4: (4-1)*2 + 3 - 7
    2
    """
    out = _ceil_div(input_size, stride)
    return max(0, (out - 1) * stride + effective_kernel_size(kernel_size, dilation) - input_size)


def split_padding(total: int, mode: str = "same_upper") -> tuple[int, int]:
    """Split a total padding between the beginning and the end of an axis.

    Parameters
    ----------
    total : int
        Total padding, ``>= 0``.
    mode : {'same_upper', 'same_lower'}
        Where an odd extra element goes: at the end (``same_upper``, ONNX
        ``SAME_UPPER``, TensorFlow, ``torch`` ``padding='same'``) or at the
        beginning (``same_lower``).

    Returns
    -------
    (int, int)
        ``(pad_begin, pad_end)``.

    Examples
    --------
    >>> split_padding(3, "same_upper"), split_padding(3, "same_lower")
    ((1, 2), (2, 1))
    """
    half = total // 2
    if mode == "same_upper":
        return half, total - half
    if mode == "same_lower":
        return total - half, half
    raise InvalidArgument(f"padding split mode must be 'same_upper' or 'same_lower', got {mode!r}")


def _ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` on ints, exact for any size."""
    return -(-a // b)


def _axis(input_size, kernel_size, stride, pad_begin, pad_end, dilation, op):
    """Validate the geometry of one axis; return ``(in, k, s, pb, pe, d)`` as ints."""
    return (_as_int(input_size, "input size", 1, op),
            _as_int(kernel_size, "kernel size", 1, op),
            _as_int(stride, "stride", 1, op),
            _as_int(pad_begin, "pad_begin", 0, op),
            _as_int(pad_end, "pad_end", 0, op),
            _as_int(dilation, "dilation", 1, op))


def _padded_window_span(input_size, kernel_size, stride, pad_begin, pad_end, dilation,
                        op, dim) -> tuple[int, int, int, int, int, int]:
    """Validate one axis and return ``(in, k, s, pb, pe, span)``.

    ``span = in + pb + pe - effective_kernel`` is the distance the window can
    travel; it must be ``>= 0``.
    """
    i, k, s, pb, pe, d = _axis(input_size, kernel_size, stride, pad_begin, pad_end, dilation, op)
    eff = effective_kernel_size(k, d)
    span = i + pb + pe - eff
    if span < 0:
        prefix, suffix = _where(op, dim)
        dilated = f" (dilated {eff})" if d != 1 else ""
        raise ShapeError(
            f"{prefix}kernel size {k}{dilated} is larger than the padded input "
            f"{i + pb + pe}{suffix}"
        )
    return i, k, s, pb, pe, span


def conv_output_size(input_size: int, kernel_size: int, stride: int = 1,
                     pad_begin: int = 0, pad_end: int = 0, dilation: int = 1,
                     *, op: str = "conv", dim: int | None = None) -> int:
    """Output size of a convolution along one axis.

    ``floor((in + pb + pe - dilation * (k - 1) - 1) / stride) + 1``
    (Dumoulin & Visin relationship 6, with dilation and asymmetric pads).

    Parameters
    ----------
    input_size, kernel_size, stride, dilation : int
        Positive ints.
    pad_begin, pad_end : int
        Non-negative ints.
    op : str, optional
        Operation name used as the prefix of error messages.
    dim : int, optional
        Spatial axis index used in error messages.

    Returns
    -------
    int
        ``>= 1``.

    Raises
    ------
    ShapeError
        If the dilated kernel does not fit in the padded input.
    InvalidArgument
        If an argument is not an int in its allowed range.

    Examples
    --------
    >>> conv_output_size(5, 3, stride=2, pad_begin=1, pad_end=1)
    3
    """
    _, _, s, _, _, span = _padded_window_span(
        input_size, kernel_size, stride, pad_begin, pad_end, dilation, op, dim)
    return span // s + 1


def pool_output_size(input_size: int, kernel_size: int, stride: int = 1,
                     pad_begin: int = 0, pad_end: int = 0, dilation: int = 1,
                     ceil_mode: bool = False,
                     *, op: str = "pool", dim: int | None = None) -> int:
    """Output size of a pooling window along one axis.

    Without ``ceil_mode`` this is :func:`conv_output_size`. With
    ``ceil_mode`` the division is rounded up, then the last window is
    dropped if it would start in the right padding, i.e. if
    ``(out - 1) * stride >= input_size + pad_begin`` (the rule of
    ``torch.nn.MaxPool*`` / ``AvgPool*`` and of ONNX ``MaxPool`` /
    ``AveragePool``: "sliding windows that start in the right padded region
    are ignored"). Such a last window may extend past the padded input; the
    elements beyond it are not part of the window.

    Each pad must be smaller than the kernel size, as onnxruntime requires
    (``torch`` is stricter: ``pad <= kernel_size // 2``); this keeps
    ``floor <= ceil <= floor + 1`` and every window starting inside the
    input or the left padding.

    Parameters
    ----------
    input_size, kernel_size, stride, pad_begin, pad_end, dilation, op, dim
        As in :func:`conv_output_size`.
    ceil_mode : bool, optional
        Round the window count up instead of down.

    Returns
    -------
    int
        ``>= 1``.

    Examples
    --------
    >>> pool_output_size(5, 2, stride=2), pool_output_size(5, 2, stride=2, ceil_mode=True)
    (2, 3)
    """
    i, k, s, pb, pe, span = _padded_window_span(
        input_size, kernel_size, stride, pad_begin, pad_end, dilation, op, dim)
    for name, pad in (("pad_begin", pb), ("pad_end", pe)):
        if pad >= k:
            prefix, suffix = _where(op, dim)
            raise InvalidArgument(
                f"{prefix}{name} {pad} must be smaller than the kernel size {k}{suffix}")
    if not ceil_mode:
        return span // s + 1
    out = _ceil_div(span, s) + 1
    if (out - 1) * s >= i + pb:
        out -= 1
    return out


def conv_transpose_output_size(input_size: int, kernel_size: int, stride: int = 1,
                               pad_begin: int = 0, pad_end: int = 0, dilation: int = 1,
                               output_padding: int = 0,
                               *, op: str = "conv_transpose", dim: int | None = None) -> int:
    """Output size of a transposed convolution along one axis.

    ``stride * (in - 1) + output_padding + (k - 1) * dilation + 1 - pb - pe``
    (Dumoulin & Visin relationships 8-14; ONNX ``ConvTranspose``;
    ``torch.nn.ConvTranspose*d``).

    Parameters
    ----------
    input_size, kernel_size, stride, dilation : int
        Positive ints.
    pad_begin, pad_end : int
        Non-negative ints: the padding of the *forward* convolution, which
        crops the transposed output.
    output_padding : int, optional
        Extra elements added at the end of the output; must be smaller than
        ``max(stride, dilation)`` (the ``torch`` rule; ONNX says "smaller
        than the stride/dilation").
    op, dim
        Used in error messages.

    Returns
    -------
    int
        ``>= 1``.

    Raises
    ------
    InvalidArgument
        If ``output_padding >= max(stride, dilation)`` or an argument is out
        of range.
    ShapeError
        If the padding crops the whole output.

    Examples
    --------
    >>> conv_transpose_output_size(3, 3, stride=2, pad_begin=1, pad_end=1, output_padding=1)
    6
    """
    i, k, s, pb, pe, d = _axis(input_size, kernel_size, stride, pad_begin, pad_end, dilation, op)
    op_ = _as_int(output_padding, "output_padding", 0, op)
    prefix, suffix = _where(op, dim)
    if op_ >= max(s, d):
        raise InvalidArgument(
            f"{prefix}output_padding {op_} must be smaller than either stride {s} "
            f"or dilation {d}{suffix}"
        )
    full = s * (i - 1) + op_ + effective_kernel_size(k, d)
    out = full - pb - pe
    if out < 1:
        raise ShapeError(
            f"{prefix}padding {pb}+{pe} crops the whole transposed-convolution output "
            f"of size {full}{suffix}"
        )
    return out


def conv_transpose_output_padding(input_size: int, kernel_size: int, output_size: int,
                                  stride: int = 1, pad_begin: int = 0, pad_end: int = 0,
                                  dilation: int = 1,
                                  *, op: str = "conv_transpose", dim: int | None = None) -> int:
    """``output_padding`` that makes a transposed convolution produce ``output_size``.

    This is how ``torch.nn.ConvTranspose*d(..., output_size=...)`` resolves
    the ambiguity of a strided transposed convolution: the reachable sizes
    are ``[min, min + max(stride, dilation) - 1]`` with ``min`` the size for
    ``output_padding = 0`` (sizes below 1 excluded).

    Raises
    ------
    ShapeError
        If ``output_size`` is not reachable.

    Examples
    --------
    >>> conv_transpose_output_padding(3, 3, 6, stride=2, pad_begin=1, pad_end=1)
    1
    """
    pb = _as_int(pad_begin, "pad_begin", 0, op)
    pe = _as_int(pad_end, "pad_end", 0, op)
    unpadded = conv_transpose_output_size(input_size, kernel_size, stride, 0, 0, dilation, 0,
                                          op=op, dim=dim)
    smallest = max(1, unpadded - pb - pe)
    largest = unpadded - pb - pe + max(stride, dilation) - 1
    if not smallest <= output_size <= largest:
        prefix, suffix = _where(op, dim)
        raise ShapeError(
            f"{prefix}requested output size {output_size} is not reachable{suffix}: "
            f"valid sizes are {smallest} to {largest}"
        )
    return output_size - (unpadded - pb - pe)


# ---------------------------------------------------------------------------
# n-d helpers
# ---------------------------------------------------------------------------

def _spatial(input_shape, name: str = "input_shape") -> tuple[int, ...]:
    """Validate a sequence of spatial sizes (at least one, all positive)."""
    items = _as_items(input_shape, name)
    if not items:
        raise InvalidArgument(
            f"{name} must be a non-empty sequence of spatial sizes, got {input_shape!r}")
    return normalize_tuple(items, len(items), name)


def _unzip(pairs) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``[(b0, e0), (b1, e1)]`` -> ``((b0, b1), (e0, e1))``."""
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def resolve_padding(padding, n: int, input_size=None, kernel_size=None, stride=1,
                    dilation=1) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Turn any accepted padding specification into per-side pads.

    Parameters
    ----------
    padding : int, sequence of int, or str
        * an int: the same padding on both sides of every axis;
        * ``n`` ints: symmetric padding per axis (``torch`` style);
        * ``2 * n`` ints: per-side padding in ONNX order
          ``(begin_0, ..., begin_{n-1}, end_0, ..., end_{n-1})``;
        * ``'valid'``: no padding;
        * ``'same'`` or ``'same_upper'``: ONNX ``SAME_UPPER`` (odd extra
          pad at the end, as ``torch``'s ``padding='same'``);
        * ``'same_lower'``: ONNX ``SAME_LOWER`` (odd extra pad at the
          beginning).
        The ``same`` modes give an output of ``ceil(input / stride)`` for
        any stride (see :func:`same_padding`). Strings are case-insensitive,
        so ONNX ``auto_pad`` values (``'SAME_UPPER'``, ``'VALID'``) work.
    n : int
        Number of spatial dims.
    input_size, kernel_size : int or sequence of int, optional
        Needed only by the ``same`` modes.
    stride, dilation : int or sequence of int, optional
        Used only by the ``same`` modes.

    Returns
    -------
    (tuple of int, tuple of int)
        ``(pads_begin, pads_end)``, each of length ``n``.

    Raises
    ------
    InvalidArgument
        On an unknown mode, a wrong length, a negative pad, or a ``same``
        mode without ``input_size`` / ``kernel_size``.

    Examples
    --------
    >>> resolve_padding(1, 2)
    ((1, 1), (1, 1))
    >>> resolve_padding((0, 1, 2, 3), 2)
    ((0, 1), (2, 3))
    >>> resolve_padding("same_lower", 1, input_size=7, kernel_size=4, stride=2)
    ((2,), (1,))
    """
    n = _as_int(n, "n", 1)
    if isinstance(padding, str):
        auto_pad = _auto_pad_of(padding, n)
        if auto_pad == "VALID":
            return (0,) * n, (0,) * n
        if input_size is None or kernel_size is None:
            raise InvalidArgument(
                f"padding={padding!r} needs input_size and kernel_size to compute the pads"
            )
        sizes = normalize_tuple(input_size, n, "input_size")
        ks = normalize_tuple(kernel_size, n, "kernel_size")
        ss = normalize_tuple(stride, n, "stride")
        ds = normalize_tuple(dilation, n, "dilation")
        split = auto_pad.lower()
        pairs = [split_padding(same_padding(i, k, s, d), split)
                 for i, k, s, d in zip(sizes, ks, ss, ds)]
        return _unzip(pairs)
    items = _as_items(padding, "padding")
    if items is not None and len(items) == 2 * n:
        pads = normalize_tuple(items, 2 * n, "padding", minimum=0)
        return pads[:n], pads[n:]
    if items is not None and len(items) != n:
        raise InvalidArgument(
            f"padding must have {n} (per dim) or {2 * n} (per side, ONNX order) "
            f"elements, got {len(items)}: {items!r}"
        )
    pads = normalize_tuple(padding, n, "padding", minimum=0)
    return pads, pads


def _auto_pad_of(padding: str, n: int) -> str:
    """The ONNX ``auto_pad`` value of a padding mode string (case-insensitive)."""
    mode = padding.lower()
    if mode not in PADDING_MODES:
        raise InvalidArgument(
            f"padding must be an int, a sequence of {n} or {2 * n} ints, or one of "
            f"{', '.join(repr(m) for m in PADDING_MODES)}; got {padding!r}"
        )
    return "SAME_UPPER" if mode == "same" else mode.upper()


def _check_pads(pads_begin, pads_end, n):
    return (normalize_tuple(pads_begin, n, "pads_begin", minimum=0),
            normalize_tuple(pads_end, n, "pads_end", minimum=0))


def conv_output_shape(input_shape, kernel_shape, stride=1, pads_begin=0, pads_end=0,
                      dilation=1, *, op: str = "conv") -> tuple[int, ...]:
    """Spatial output shape of an n-d convolution.

    Parameters
    ----------
    input_shape : sequence of int
        Spatial input sizes (without batch and channel dims); its length is
        the number of spatial dims ``n``.
    kernel_shape, stride, dilation : int or sequence of int
        Positive; an int applies to every axis.
    pads_begin, pads_end : int or sequence of int
        Non-negative (see :func:`resolve_padding`).
    op : str, optional
        Operation name used in error messages.

    Returns
    -------
    tuple of int
        Length ``n``; each element from :func:`conv_output_size`.

    Examples
    --------
    >>> conv_output_shape((9, 7), 3, stride=2, pads_begin=1, pads_end=1)
    (5, 4)
    """
    sizes = _spatial(input_shape)
    n = len(sizes)
    ks = normalize_tuple(kernel_shape, n, "kernel_shape")
    ss = normalize_tuple(stride, n, "stride")
    ds = normalize_tuple(dilation, n, "dilation")
    pb, pe = _check_pads(pads_begin, pads_end, n)
    return tuple(conv_output_size(*args, op=op, dim=i)
                 for i, args in enumerate(zip(sizes, ks, ss, pb, pe, ds)))


def pool_output_shape(input_shape, kernel_shape, stride=None, pads_begin=0, pads_end=0,
                      dilation=1, ceil_mode: bool = False, *, op: str = "pool") -> tuple[int, ...]:
    """Spatial output shape of an n-d pooling.

    Arguments as in :func:`conv_output_shape`; ``stride`` defaults to
    ``kernel_shape`` (the ``torch`` default; ONNX's default is 1, so pass it
    explicitly for ONNX nodes). See :func:`pool_output_size` for
    ``ceil_mode``.

    Examples
    --------
    >>> pool_output_shape((5, 6), 2, ceil_mode=True)
    (3, 3)
    """
    sizes = _spatial(input_shape)
    n = len(sizes)
    ks = normalize_tuple(kernel_shape, n, "kernel_shape")
    ss = ks if stride is None else normalize_tuple(stride, n, "stride")
    ds = normalize_tuple(dilation, n, "dilation")
    pb, pe = _check_pads(pads_begin, pads_end, n)
    return tuple(pool_output_size(*args, ceil_mode, op=op, dim=i)
                 for i, args in enumerate(zip(sizes, ks, ss, pb, pe, ds)))


def conv_transpose_output_shape(input_shape, kernel_shape, stride=1, pads_begin=0, pads_end=0,
                                dilation=1, output_padding=0,
                                *, op: str = "conv_transpose") -> tuple[int, ...]:
    """Spatial output shape of an n-d transposed convolution.

    Each element is :func:`conv_transpose_output_size`.

    Examples
    --------
    >>> conv_transpose_output_shape((4, 5), 3, stride=2, pads_begin=1, pads_end=1, output_padding=(1, 0))
    (8, 9)
    """
    sizes = _spatial(input_shape)
    n = len(sizes)
    ks = normalize_tuple(kernel_shape, n, "kernel_shape")
    ss = normalize_tuple(stride, n, "stride")
    ds = normalize_tuple(dilation, n, "dilation")
    ops = normalize_tuple(output_padding, n, "output_padding", minimum=0)
    pb, pe = _check_pads(pads_begin, pads_end, n)
    return tuple(conv_transpose_output_size(*args, op=op, dim=i)
                 for i, args in enumerate(zip(sizes, ks, ss, pb, pe, ds, ops)))


def max_unpool_output_shape(input_shape, kernel_shape, stride, pads_begin=0, pads_end=0,
                            *, op: str = "max_unpool") -> tuple[int, ...]:
    """Default spatial output shape of max unpooling: the input shape of the pooling it
    inverts, ``(in - 1) * stride + kernel - pad_begin - pad_end`` (``torch`` and ONNX
    ``MaxUnpool``).

    Raises
    ------
    ShapeError
        If the pads leave an empty output.

    Examples
    --------
    >>> max_unpool_output_shape((2, 3), 2, 2)
    (4, 6)
    """
    sizes = _spatial(input_shape)
    n = len(sizes)
    ks = normalize_tuple(kernel_shape, n, "kernel_shape")
    ss = normalize_tuple(stride, n, "stride")
    pb, pe = _check_pads(pads_begin, pads_end, n)
    out = tuple((i - 1) * s + k - b - e for i, s, k, b, e in zip(sizes, ss, ks, pb, pe))
    if min(out) < 1:
        raise ShapeError(f"{op}: pads {pb}+{pe} leave an empty output {out} for input "
                         f"{sizes}, kernel {ks}, stride {ss}")
    return out


class TransposePads(NamedTuple):
    """Resolved geometry of an ONNX ``ConvTranspose`` (see
    :func:`conv_transpose_pads_for_output_shape`)."""

    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    output_padding: tuple[int, ...]


def conv_transpose_pads_for_output_shape(input_shape, kernel_shape, stride=1, dilation=1,
                                         output_padding=0, output_shape=None,
                                         auto_pad: str = "NOTSET",
                                         *, op: str = "ConvTranspose") -> TransposePads:
    """Pads of an ONNX ``ConvTranspose`` given ``output_shape`` and/or ``auto_pad``.

    Implements the ONNX operator specification::

        total_padding[i] = stride[i] * (input_size[i] - 1) + output_padding[i]
                           + ((kernel_shape[i] - 1) * dilations[i] + 1) - output_shape[i]
        SAME_UPPER:        pads_begin = total // 2,         pads_end = total - total // 2
        otherwise:         pads_begin = total - total // 2, pads_end = total // 2

    When ``output_shape`` is not given and ``auto_pad`` is ``SAME_UPPER`` or
    ``SAME_LOWER``, ``output_shape[i] = input_size[i] * stride[i]``.

    A negative ``total_padding`` (``output_shape`` larger than the unpadded
    output) is resolved as onnxruntime does and the ONNX conformance test
    ``test_convtranspose_output_shape`` expects: no padding, and the
    missing elements are added at the end (zeros plus bias), i.e. the
    returned ``output_padding`` grows by ``-total_padding``.

    Parameters
    ----------
    input_shape : sequence of int
        Spatial input sizes.
    kernel_shape, stride, dilation, output_padding : int or sequence of int
        As in :func:`conv_transpose_output_shape`.
    output_shape : sequence of int, optional
        Requested spatial output shape (ONNX ``output_shape`` attribute, no
        batch / channel dims).
    auto_pad : {'NOTSET', 'SAME_UPPER', 'SAME_LOWER', 'VALID'}
        Case-insensitive. Every mode but ``SAME_UPPER`` takes the spec's
        "otherwise" branch (the odd extra pad at the beginning), as
        onnxruntime's CPU provider does since microsoft/onnxruntime#13311;
        ``VALID`` without ``output_shape`` means zero pads.
    op : str, optional
        Operation name used in error messages.

    Returns
    -------
    TransposePads
        ``(pads_begin, pads_end, output_padding)``, tuples of length ``n``,
        such that :func:`conv_transpose_output_shape` with them gives
        ``output_shape``.

    Raises
    ------
    InvalidArgument
        On an unknown ``auto_pad``, ``NOTSET`` without ``output_shape``, or an
        invalid ``output_padding``.
    ShapeError
        If ``output_shape`` has the wrong length, or exceeds the unpadded
        output by ``max(stride, dilation)`` or more (the growth must be a
        valid ``output_padding``).

    Examples
    --------
    >>> conv_transpose_pads_for_output_shape((3,), 3, stride=2, output_shape=(6,), auto_pad="SAME_UPPER")
    TransposePads(pads_begin=(0,), pads_end=(1,), output_padding=(0,))
    >>> conv_transpose_pads_for_output_shape((3,), 3, stride=2, output_shape=(6,))
    TransposePads(pads_begin=(1,), pads_end=(0,), output_padding=(0,))
    """
    sizes = _spatial(input_shape)
    n = len(sizes)
    ks = normalize_tuple(kernel_shape, n, "kernel_shape")
    ss = normalize_tuple(stride, n, "stride")
    ds = normalize_tuple(dilation, n, "dilation")
    ops = normalize_tuple(output_padding, n, "output_padding", minimum=0)
    mode = str(auto_pad).upper()
    if mode not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise InvalidArgument(
            f"{op}: auto_pad must be NOTSET, SAME_UPPER, SAME_LOWER or VALID, got {auto_pad!r}"
        )
    if output_shape is None:
        if mode == "VALID":
            return TransposePads((0,) * n, (0,) * n, ops)
        if mode == "NOTSET":
            raise InvalidArgument(
                f"{op}: auto_pad NOTSET needs output_shape to compute pads "
                f"(use conv_transpose_output_shape with the explicit pads)")
        target = tuple(i * s for i, s in zip(sizes, ss))
    else:
        target = _spatial(output_shape, "output_shape")
        if len(target) != n:
            raise ShapeError(
                f"{op}: output_shape {target!r} has {len(target)} dims, "
                f"input has {n} spatial dims {sizes!r}"
            )
    # Unpadded transposed output; also validates output_padding.
    full = conv_transpose_output_shape(sizes, ks, ss, 0, 0, ds, ops, op=op)
    split = "same_upper" if mode == "SAME_UPPER" else "same_lower"
    begins, ends, paddings = [], [], []
    for dim, (f, t, s, d, o) in enumerate(zip(full, target, ss, ds, ops)):
        total = f - t
        if total >= 0:
            b, e = split_padding(total, split)
        elif o - total < max(s, d):
            b, e, o = 0, 0, o - total
        else:
            raise ShapeError(
                f"{op}: output_shape {t} is out of reach along dim {dim}: the unpadded output "
                f"is {f} and output_padding {o - total} would have to be smaller than "
                f"either stride {s} or dilation {d}"
            )
        begins.append(b)
        ends.append(e)
        paddings.append(o)
    return TransposePads(tuple(begins), tuple(ends), tuple(paddings))


def check_groups(in_channels: int, out_channels: int, groups: int, *, op: str = "conv") -> int:
    """Check that ``groups`` divides both channel counts.

    Parameters
    ----------
    in_channels, out_channels, groups : int
        Positive ints.
    op : str, optional
        Operation name used in error messages.

    Returns
    -------
    int
        ``groups`` (as an int).

    Raises
    ------
    InvalidArgument
        If ``groups`` is not a positive int or does not divide
        ``in_channels`` or ``out_channels``.

    Examples
    --------
    >>> check_groups(32, 64, 32)
    32
    """
    cin = _as_int(in_channels, "in_channels", 1, op)
    cout = _as_int(out_channels, "out_channels", 1, op)
    g = _as_int(groups, "groups", 1, op)
    for name, c in (("in_channels", cin), ("out_channels", cout)):
        if c % g:
            raise InvalidArgument(f"{op}: groups {g} does not divide {name} {c}")
    return g


# ---------------------------------------------------------------------------
# the attributes of one layer, resolved per input shape
# ---------------------------------------------------------------------------

class ConvGeometry(NamedTuple):
    """The geometry of one input shape (see :meth:`ConvAttributes.resolve`).

    Attributes
    ----------
    output_shape : tuple of int
        Spatial output sizes.
    pads_begin, pads_end : tuple of int
        Padding actually applied at each side (``auto_pad`` and, for a transposed
        convolution, ``output_shape`` resolved).
    output_padding : tuple of int
        Extra elements at the end of a transposed convolution's output; zeros otherwise.
    """

    output_shape: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    output_padding: tuple[int, ...]


class prefixed_errors:
    """Context manager: prefixes the InvalidArgument and ShapeError raised inside with
    ``"op: "``, unless their message already starts with it. (A class: a generator-based
    one costs more than the checks it wraps.)"""

    __slots__ = ("op",)

    def __init__(self, op: str):
        self.op = op

    def __enter__(self):
        return self

    def __exit__(self, cls, exc, tb):
        op = self.op
        if exc is None or not op or not isinstance(exc, (InvalidArgument, ShapeError)) \
                or str(exc).startswith(f"{op}:"):
            return False
        raise type(exc)(f"{op}: {exc}") from None


def check_op_name(op) -> str:
    """``op``, the name a call gives itself in messages (an internal keyword of the
    functional entries that the ONNX operators set to their node's label): a string."""
    if not isinstance(op, str):
        raise InvalidArgument(f"op must be a string naming the call in messages, got "
                              f"{type(op).__name__} {op!r}")
    return op


def as_bool(value, name: str) -> bool:
    """``value`` as a bool: a bool, a NumPy bool or an int (not a float or a string)."""
    if isinstance(value, bool) or type(value).__name__ in ("bool_", "bool"):
        return bool(value)
    try:
        return bool(operator.index(value))
    except TypeError:
        raise InvalidArgument(
            f"{name} must be a bool, got {type(value).__name__} {value!r}") from None


def as_float(value, name: str) -> float:
    """``value`` as a float: a Python or NumPy real number (not a bool, a string or an
    array of several values)."""
    if type(value).__name__ in ("bool_", "bool") or isinstance(value, (str, bytes)):
        raise InvalidArgument(f"{name} must be a number, got {type(value).__name__} "
                              f"{value!r}")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgument(f"{name} must be a number, got {type(value).__name__} "
                              f"{value!r}") from None


def as_choice(value, choices, name: str) -> str:
    """``value`` when it is one of the strings ``choices``, else InvalidArgument (arrays,
    lists and other unhashable values included)."""
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgument(f"{name} must be one of {sorted(choices)}, got "
                              f"{type(value).__name__} {value!r}")
    return value


def _sequence(value, name: str, what: str) -> tuple:
    """The items of a sequence or 1-D array ``value``; a scalar, a string or None is
    refused with the argument named (``what``: "ints", "numbers")."""
    try:
        if isinstance(value, (str, bytes)) or getattr(value, "ndim", 1) != 1:
            raise TypeError
        return tuple(value)
    except TypeError:
        raise InvalidArgument(f"{name} must be a sequence of {what}, got "
                              f"{type(value).__name__} {value!r}") from None


def as_shape(value, name: str, *, minimum: int = 0) -> tuple[int, ...]:
    """``value`` as a tuple of ints ``>= minimum`` (a sequence or a 1-D integer array;
    a single int, a string, a float or None is refused with the argument named)."""
    return tuple(_as_int(v, f"{name}[{i}]", minimum)
                 for i, v in enumerate(_sequence(value, name, "ints")))


def as_floats(value, name: str) -> list[float]:
    """``value`` as a list of floats (a sequence or a 1-D array), as :func:`as_shape`."""
    return [as_float(v, f"{name}[{i}]")
            for i, v in enumerate(_sequence(value, name, "numbers"))]


_KINDS = ("conv", "conv_transpose", "pool")


_EXACT_TYPES = frozenset((int, bool, float, str, type(None)))
_INT = frozenset((int,))


def exact_key(args: tuple) -> tuple | None:
    """A dict key for a tuple of layer arguments that tells ``1``, ``1.0``, ``True`` and
    ``np.int64(1)`` apart (they are equal as dict keys but not as arguments), or None when
    an argument is not a plain int, bool, float, str, None or tuple of ints: such calls
    are simply not cached. Much cheaper than the arguments' repr (set operations in C)."""
    types = tuple(map(type, args))
    if not _EXACT_TYPES.issuperset(types):
        for t, a in zip(types, args):
            if t is tuple:
                if not _INT.issuperset(map(type, a)):
                    return None
            elif t not in _EXACT_TYPES:
                return None
    return args + types


_TORCH_ATTRIBUTES: dict = {}


def torch_attributes(kind: str, n: int, kernel_size, stride=1, padding=0, dilation=1,
                     output_padding=0, ceil_mode=False, *, op: str = "") -> "ConvAttributes":
    """:meth:`ConvAttributes.from_torch`, memoised by :func:`exact_key` (attributes are
    immutable): one-shot functional calls then skip the validation, which costs more
    than a small layer's kernel. Errors are not cached."""
    args = (kind, n, kernel_size, stride, padding, dilation, output_padding, ceil_mode, op)
    key = exact_key(args)
    if key is None:
        return ConvAttributes.from_torch(kind, n, kernel_size, stride, padding, dilation,
                                         output_padding, ceil_mode, op=op)
    attributes = _TORCH_ATTRIBUTES.get(key)
    if attributes is None:
        attributes = ConvAttributes.from_torch(kind, n, kernel_size, stride, padding, dilation,
                                               output_padding, ceil_mode, op=op)
        if len(_TORCH_ATTRIBUTES) >= 1024:
            _TORCH_ATTRIBUTES.clear()
        _TORCH_ATTRIBUTES[key] = attributes
    return attributes


@dataclasses.dataclass(frozen=True)
class ConvAttributes:
    """The geometry attributes of a convolution, transposed convolution or pooling.

    Created once per layer (from ONNX attributes with :meth:`from_onnx`, from
    ``torch``-style arguments with :meth:`from_torch`), validated and normalised
    there, then resolved for each input shape by :meth:`resolve` into a
    :class:`ConvGeometry`. This is the one place where ``auto_pad``, pads,
    strides, dilations, ``output_padding`` / ``output_shape`` and ``ceil_mode``
    are interpreted, after onnxruntime's ``ConvAttributes`` / ``PoolAttributes``;
    the formulas themselves are the functions of this module.

    Parameters
    ----------
    kind : {'conv', 'conv_transpose', 'pool'}
    kernel_shape : sequence of int
        Spatial kernel sizes; its length is the number of spatial dims ``n``.
    strides, dilations : int or sequence of int
        Positive.
    pads : int or sequence of int
        ``2 * n`` ints in ONNX order (``begin..., end...``), ``n`` symmetric ones, or
        one int; used when ``auto_pad`` is ``NOTSET``.
    auto_pad : {'NOTSET', 'SAME_UPPER', 'SAME_LOWER', 'VALID'}
        Case-insensitive. ``SAME_*`` give an output of ``ceil(input / stride)``
        (``input * stride`` for a transposed convolution).
    output_padding : int or sequence of int
        Transposed convolution only: extra elements at the end of each output dim,
        smaller than ``max(stride, dilation)``.
    output_shape : sequence of int, optional
        Transposed convolution only: the spatial output shape to reach by padding
        (ONNX ``output_shape``; see :func:`conv_transpose_pads_for_output_shape`).
    ceil_mode : bool
        Pooling only: round the window count up (see :func:`pool_output_size`).
    op : str
        Names the layer in error messages (e.g. ``"Conv node 'c1'"``).

    Raises
    ------
    InvalidArgument, ShapeError
        On invalid attributes; messages start with ``op``.

    Examples
    --------
    >>> a = ConvAttributes("conv", (3, 3), strides=2, auto_pad="SAME_LOWER")
    >>> a.resolve((7, 8))
    ConvGeometry(output_shape=(4, 4), pads_begin=(1, 1), pads_end=(1, 0), output_padding=(0, 0))
    """

    kind: str
    kernel_shape: tuple[int, ...]
    strides: tuple[int, ...] = 1
    dilations: tuple[int, ...] = 1
    pads: tuple[int, ...] = 0
    auto_pad: str = "NOTSET"
    output_padding: tuple[int, ...] = 0
    output_shape: tuple[int, ...] | None = None
    ceil_mode: bool = False
    op: str = ""

    def __post_init__(self):
        with prefixed_errors(self.op):
            if self.kind not in _KINDS:
                raise InvalidArgument(f"kind must be one of {_KINDS}, got {self.kind!r}")
            ks = _spatial(self.kernel_shape, "kernel_shape")
            n = len(ks)
            ss = normalize_tuple(self.strides, n, "strides")
            ds = normalize_tuple(self.dilations, n, "dilations")
            if isinstance(self.pads, str):
                raise InvalidArgument(f"pads must be ints, got {self.pads!r} (a padding "
                                      f"mode is an auto_pad)")
            pb, pe = resolve_padding(self.pads, n)
            auto_pad = str(self.auto_pad).upper()
            if auto_pad not in AUTO_PAD_MODES:
                raise InvalidArgument(f"auto_pad must be one of {AUTO_PAD_MODES}, "
                                      f"got {self.auto_pad!r}")
            out_pad = normalize_tuple(self.output_padding, n, "output_padding", minimum=0)
            out_shape = self.output_shape
            transposed = self.kind == "conv_transpose"
            if any(out_pad) and not transposed:
                raise InvalidArgument("output_padding is only for transposed convolutions")
            for dim, (p, s, d) in enumerate(zip(out_pad, ss, ds)):
                if p >= max(s, d):
                    raise InvalidArgument(
                        f"output_padding {p} must be smaller than either stride {s} or "
                        f"dilation {d} along dim {dim}")
            if out_shape is not None:
                if not transposed:
                    raise InvalidArgument("output_shape is only for transposed convolutions")
                out_shape = _spatial(out_shape, "output_shape")
                if len(out_shape) != n:
                    raise InvalidArgument(f"output_shape {list(out_shape)} must have {n} "
                                          f"spatial values")
            ceil_mode = as_bool(self.ceil_mode, "ceil_mode")
            if ceil_mode and self.kind != "pool":
                raise InvalidArgument("ceil_mode is only for pooling")
        for name, value in (("kernel_shape", ks), ("strides", ss), ("dilations", ds),
                            ("pads", pb + pe), ("auto_pad", auto_pad),
                            ("output_padding", out_pad), ("output_shape", out_shape),
                            ("ceil_mode", ceil_mode)):
            object.__setattr__(self, name, value)
        # ConvGeometry per (input shape, output_size) of plain ints: attributes are
        # immutable and shared (torch_attributes), so one-shot calls resolve once.
        object.__setattr__(self, "_resolved", {})

    @property
    def pads_begin(self) -> tuple[int, ...]:
        """The explicit pads at the beginning of each axis (used with ``NOTSET``)."""
        return self.pads[:len(self.kernel_shape)]

    @property
    def pads_end(self) -> tuple[int, ...]:
        """The explicit pads at the end of each axis (used with ``NOTSET``)."""
        return self.pads[len(self.kernel_shape):]

    @classmethod
    def from_onnx(cls, kind: str, attrs: dict, kernel_shape=None, *,
                  op: str = "") -> "ConvAttributes":
        """Attributes of an ONNX Conv, ConvTranspose or MaxPool / AveragePool / LpPool node.

        Parameters
        ----------
        kind : {'conv', 'conv_transpose', 'pool'}
        attrs : dict
            The node's attributes by ONNX name; absent or None ones take the ONNX
            defaults (strides and dilations 1, no pads, ``auto_pad`` NOTSET).
        kernel_shape : sequence of int, optional
            The weight's kernel: ``attrs['kernel_shape']`` is optional for
            convolutions and must then agree with it.
        op : str
            Names the node in error messages.
        """
        def get(name, default=None):
            value = attrs.get(name)
            return default if value is None else value

        with prefixed_errors(op):
            ks = get("kernel_shape")
            if ks is not None and kernel_shape is not None and \
                    tuple(ks) != tuple(kernel_shape):
                raise InvalidArgument(f"kernel_shape {list(ks)} does not match the "
                                      f"weight's kernel {list(kernel_shape)}")
            ks = ks if ks is not None else kernel_shape
            if ks is None or not len(ks):
                raise InvalidArgument(f"kernel_shape must be a non-empty list of positive "
                                      f"ints, got {ks}")
            n = len(ks)
            pads = get("pads", 0)
            if pads != 0 and len(pads) != 2 * n:
                raise InvalidArgument(f"pads {list(pads)} must have {2 * n} values (begin "
                                      f"and end of each spatial dim)")
            output_shape = get("output_shape")
            if output_shape is not None and len(output_shape) == n + 2:
                output_shape = output_shape[2:]   # (N, C, *spatial), as some exporters write
            return cls(kind, tuple(ks), get("strides", 1), get("dilations", 1), pads,
                       get("auto_pad", "NOTSET"), get("output_padding", 0), output_shape,
                       bool(get("ceil_mode", 0)), op)

    @classmethod
    def from_torch(cls, kind: str, n: int, kernel_size, stride=1, padding=0, dilation=1,
                   output_padding=0, ceil_mode=False, *, op: str = "") -> "ConvAttributes":
        """Attributes from ``torch.nn.functional``-style arguments.

        Parameters
        ----------
        kind : {'conv', 'conv_transpose', 'pool'}
        n : int
            Number of spatial dims.
        kernel_size, stride, dilation, output_padding, ceil_mode
            As in ``torch``; a pooling ``stride`` of None (or ``()``) is the kernel size.
        padding : int, sequence of int, or str
            As in :func:`resolve_padding`: ``n`` ints (symmetric), ``2 * n`` (ONNX
            order), or ``'valid'``, ``'same'`` / ``'same_upper'``, ``'same_lower'``.
            Symmetric pooling pads obey torch's ``pad <= kernel_size // 2``.
        op : str
            Names the function or layer in error messages.
        """
        with prefixed_errors(op):
            ks = normalize_tuple(kernel_size, n, "kernel_size")
            if kind == "pool" and (stride is None or (isinstance(stride, (tuple, list))
                                                      and len(stride) == 0)):
                ss = ks
            else:
                ss = normalize_tuple(stride, n, "stride")
            ds = normalize_tuple(dilation, n, "dilation")
            auto_pad, pads = "NOTSET", 0
            if isinstance(padding, str):
                auto_pad = _auto_pad_of(padding, n)
            else:
                pb, pe = resolve_padding(padding, n)
                pads = pb + pe
                symmetric = _as_items(padding, "padding") is None or len(padding) == n
                for dim, (p, k) in enumerate(zip(pb, ks)):
                    if kind == "pool" and symmetric and p > k // 2:
                        raise InvalidArgument(
                            f"padding {p} must be at most half the kernel size {k} along "
                            f"dim {dim} (torch's rule pad <= kernel_size // 2; give "
                            f"per-side pads (begin..., end...) to use pads up to "
                            f"kernel_size - 1)")
            out_pad = normalize_tuple(output_padding, n, "output_padding", minimum=0)
            ceil_mode = as_bool(ceil_mode, "ceil_mode")
        return cls(kind, ks, ss, ds, pads, auto_pad, out_pad, None, ceil_mode, op)

    def resolve(self, input_shape, output_size=None) -> ConvGeometry:
        """The geometry for an input of spatial shape ``input_shape``.

        Parameters
        ----------
        input_shape : sequence of int
            Spatial input sizes (no batch or channel dims).
        output_size : sequence of int, optional
            Transposed convolution only: the spatial output size to reach with
            ``output_padding``, the pads staying (``torch``'s
            ``ConvTranspose.forward(x, output_size)``).

        Returns
        -------
        ConvGeometry

        Raises
        ------
        ShapeError
            If the kernel does not fit, the rank is wrong or a size is out of reach.
        InvalidArgument
            On an invalid pad (a pooling pad must be smaller than the kernel).

        Examples
        --------
        >>> ConvAttributes("conv_transpose", (3,), strides=2, auto_pad="SAME_UPPER").resolve((5,))
        ConvGeometry(output_shape=(10,), pads_begin=(0,), pads_end=(1,), output_padding=(0,))
        """
        key = exact_key((input_shape, output_size))
        geometry = None if key is None else self._resolved.get(key)
        if geometry is None:
            geometry = self._resolve(input_shape, output_size)
            if key is not None:
                if len(self._resolved) >= 64:
                    self._resolved.clear()
                self._resolved[key] = geometry
        return geometry

    def _resolve(self, input_shape, output_size):
        op = self.op
        ks, ss, ds = self.kernel_shape, self.strides, self.dilations
        n = len(ks)
        with prefixed_errors(op):
            spatial = _spatial(input_shape, "input spatial shape")
            if len(spatial) != n:
                raise ShapeError(f"the input has {len(spatial)} spatial dims {spatial}, "
                                 f"kernel_shape {ks} has {n}")
            if output_size is not None and self.kind != "conv_transpose":
                raise InvalidArgument("output_size is only for transposed convolutions")
            auto_pad = self.auto_pad
            if self.kind == "conv_transpose":
                if self.output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                    pb, pe, out_pad = conv_transpose_pads_for_output_shape(
                        spatial, ks, ss, ds, self.output_padding, self.output_shape,
                        auto_pad, op=op)
                else:
                    pb, pe = self._explicit_pads()
                    out_pad = self.output_padding
                if output_size is not None:
                    target = normalize_tuple(output_size, n, "output_size")
                    out_pad = tuple(
                        conv_transpose_output_padding(*args, op=op, dim=dim)
                        for dim, args in enumerate(zip(spatial, ks, target, ss, pb, pe, ds)))
                out = conv_transpose_output_shape(spatial, ks, ss, pb, pe, ds, out_pad, op=op)
                return ConvGeometry(out, pb, pe, out_pad)
            if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                pb, pe = resolve_padding(auto_pad.lower(), n, spatial, ks, ss, ds)
            else:
                pb, pe = self._explicit_pads()
            if self.kind == "pool":
                out = pool_output_shape(spatial, ks, ss, pb, pe, ds, self.ceil_mode, op=op)
            else:
                out = conv_output_shape(spatial, ks, ss, pb, pe, ds, op=op)
            return ConvGeometry(out, pb, pe, (0,) * n)

    def _explicit_pads(self):
        """The pads of ``NOTSET`` (``VALID``: none)."""
        if self.auto_pad == "VALID":
            n = len(self.kernel_shape)
            return (0,) * n, (0,) * n
        return self.pads_begin, self.pads_end
