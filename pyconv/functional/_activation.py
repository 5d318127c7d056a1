"""Activation functions on float32 arrays, with ``torch.nn.functional`` signatures.

The element-wise activations run :func:`pyconv._ext.eltwise.unary`, the same C code as
the fused GEMM epilogue, so an activation layer and a convolution with the
activation fused give the same numbers. NaN passes through every activation unchanged.

Every function takes a float32 array of any shape and returns a new float32 array of the
same shape, unless ``inplace=True`` (where torch offers it): then ``x`` itself is
overwritten and returned. Python lists of floats are converted; arrays of any other dtype
raise :class:`~pyconv.errors.InvalidDType`.
"""
from __future__ import annotations

import operator
import warnings

import numpy as np

from pyconv import arithmetic
from pyconv._arrays import as_float32
from pyconv._ext import eltwise
from pyconv.errors import InvalidArgument, ShapeError

__all__ = ["relu", "relu6", "hardtanh", "leaky_relu", "sigmoid", "hardsigmoid", "hardswish",
           "tanh", "silu", "elu", "selu", "gelu", "mish", "softplus", "clip", "softmax",
           "log_softmax", "prelu"]


def _elementwise(x, inplace, act, op, a=0.0, b=0.0, context=None):
    with arithmetic.prefixed_errors(op):
        inplace = arithmetic.as_bool(inplace, "inplace")
    if inplace:
        if not isinstance(x, np.ndarray):
            raise InvalidArgument(
                f"{op}: inplace=True needs a float32 ndarray to write into, "
                f"got {type(x).__name__}")
        as_float32(x, "input", op)
        if not x.flags.writeable:
            raise InvalidArgument(f"{op}: inplace=True but the input array is read-only")
        if x.flags.c_contiguous:
            return eltwise.unary(x, act, a, b, x, context)
        x[...] = eltwise.unary(x, act, a, b, None, context)
        return x
    x = as_float32(x, "input", op)
    return eltwise.unary(x, act, a, b, None, context)


def _as_float_scalar(value, name, op):
    if isinstance(value, bool):
        raise InvalidArgument(f"{op}: {name} must be a number, got bool {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(
            f"{op}: {name} must be a number, got {type(value).__name__} {value!r}") from None


def relu(x, inplace=False):
    """Rectified linear unit: ``max(x, 0)``.

    Parameters
    ----------
    x : ndarray, float32, any shape
    inplace : bool, optional
        Overwrite ``x`` and return it.

    Returns
    -------
    ndarray, float32, same shape as ``x``
    """
    return _elementwise(x, inplace, "relu", "relu")


def hardtanh(x, min_val=-1.0, max_val=1.0, inplace=False):
    """Clamp to ``[min_val, max_val]``.

    Parameters
    ----------
    x : ndarray, float32, any shape
    min_val, max_val : float
        ``min_val <= max_val``.
    inplace : bool, optional
        Overwrite ``x`` and return it.

    Returns
    -------
    ndarray, float32, same shape as ``x``

    Raises
    ------
    InvalidArgument
        If ``max_val < min_val``.
    """
    lo = _as_float_scalar(min_val, "min_val", "hardtanh")
    hi = _as_float_scalar(max_val, "max_val", "hardtanh")
    if hi < lo:
        raise InvalidArgument(
            f"hardtanh: max_val ({max_val}) must not be lower than min_val ({min_val})")
    return _elementwise(x, inplace, "clip", "hardtanh", lo, hi)


def relu6(x, inplace=False):
    """``min(max(x, 0), 6)``.

    Parameters
    ----------
    x : ndarray, float32, any shape
    inplace : bool, optional
        Overwrite ``x`` and return it.

    Returns
    -------
    ndarray, float32, same shape as ``x``
    """
    return _elementwise(x, inplace, "clip", "relu6", 0.0, 6.0)


def clip(x, min=None, max=None):
    """Clamp every element to ``[min, max]`` (``torch.clip`` / ``torch.clamp``).

    Parameters
    ----------
    x : ndarray, float32, any shape
    min, max : float or None
        Bounds; at least one must be given. When ``min > max`` every element becomes
        ``max`` (as in torch).

    Returns
    -------
    ndarray, float32, same shape as ``x``
    """
    if min is None and max is None:
        raise InvalidArgument("clip: at least one of 'min' or 'max' must not be None")
    lo = -np.inf if min is None else _as_float_scalar(min, "min", "clip")
    hi = np.inf if max is None else _as_float_scalar(max, "max", "clip")
    return _elementwise(x, False, "clip", "clip", lo, hi)


def leaky_relu(x, negative_slope=0.01, inplace=False):
    """``x`` where ``x >= 0``, else ``negative_slope * x``.

    Parameters
    ----------
    x : ndarray, float32, any shape
    negative_slope : float, optional
    inplace : bool, optional
        Overwrite ``x`` and return it.

    Returns
    -------
    ndarray, float32, same shape as ``x``
    """
    slope = _as_float_scalar(negative_slope, "negative_slope", "leaky_relu")
    return _elementwise(x, inplace, "leaky_relu", "leaky_relu", slope)


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))``.

    Parameters
    ----------
    x : ndarray, float32, any shape

    Returns
    -------
    ndarray, float32, same shape as ``x``
    """
    return _elementwise(x, False, "sigmoid", "sigmoid")


def hardsigmoid(x, inplace=False):
    """``relu6(x + 3) / 6``, i.e. ``clip(x / 6 + 1/2, 0, 1)``.

    Parameters
    ----------
    x : ndarray, float32, any shape
    inplace : bool, optional
        Overwrite ``x`` and return it.

    Returns
    -------
    ndarray, float32, same shape as ``x``
    """
    return _elementwise(x, inplace, "hardsigmoid", "hardsigmoid", 1.0 / 6.0, 0.5)


def hardswish(x, inplace=False):
    """``x * relu6(x + 3) / 6``.

    Parameters
    ----------
    x : ndarray, float32, any shape
    inplace : bool, optional
        Overwrite ``x`` and return it.

    Returns
    -------
    ndarray, float32, same shape as ``x``
    """
    return _elementwise(x, inplace, "hardswish", "hardswish")


def tanh(x):
    """Hyperbolic tangent.

    Parameters
    ----------
    x : ndarray, float32, any shape

    Returns
    -------
    ndarray, float32, same shape as ``x``
    """
    return _elementwise(x, False, "tanh", "tanh")


def silu(x, inplace=False):
    """Sigmoid linear unit (swish): ``x * sigmoid(x)``.

    Parameters
    ----------
    x : ndarray, float32, any shape
    inplace : bool, optional
        Overwrite ``x`` and return it.

    Returns
    -------
    ndarray, float32, same shape as ``x``
    """
    return _elementwise(x, inplace, "silu", "silu")


def elu(x, alpha=1.0, inplace=False):
    """Exponential linear unit: ``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``.

    Parameters
    ----------
    x : ndarray, float32, any shape
    alpha : float, optional
    inplace : bool, optional
        Overwrite ``x`` and return it.

    Returns
    -------
    ndarray, float32, same shape as ``x``
    """
    a = _as_float_scalar(alpha, "alpha", "elu")
    return _elementwise(x, inplace, "elu", "elu", a)


def selu(x, inplace=False):
    """Scaled ELU: ``scale * elu(x, alpha)`` with torch's (and ONNX's) constants
    ``alpha = 1.6732632423543772``, ``scale = 1.0507009873554805``.

    Parameters
    ----------
    x : ndarray, float32, any shape
    inplace : bool, optional
        Overwrite ``x`` and return it.

    Returns
    -------
    ndarray, float32, same shape as ``x``
    """
    return _elementwise(x, inplace, "selu", "selu", 1.6732632423543772, 1.0507009873554805)


def gelu(x, approximate="none"):
    """Gaussian error linear unit: ``x * Phi(x)`` = ``x / 2 * (1 + erf(x / sqrt(2)))``, or
    with ``approximate="tanh"`` ``x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))``.

    Parameters
    ----------
    x : ndarray, float32, any shape
    approximate : {"none", "tanh"}, optional

    Returns
    -------
    ndarray, float32, same shape as ``x``
    """
    forms = {"none": "gelu", "tanh": "gelu_tanh"}
    if not isinstance(approximate, str) or approximate not in forms:
        raise InvalidArgument(
            f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _elementwise(x, False, forms[approximate], "gelu")


def mish(x, inplace=False):
    """``x * tanh(softplus(x))``.

    Parameters
    ----------
    x : ndarray, float32, any shape
    inplace : bool, optional
        Overwrite ``x`` and return it.

    Returns
    -------
    ndarray, float32, same shape as ``x``
    """
    return _elementwise(x, inplace, "mish", "mish")


def softplus(x, beta=1.0, threshold=20.0):
    """``log(1 + exp(beta * x)) / beta``, and ``x`` itself where ``beta * x > threshold``
    (as in torch).

    Parameters
    ----------
    x : ndarray, float32, any shape
    beta : float, optional
        Nonzero.
    threshold : float, optional

    Returns
    -------
    ndarray, float32, same shape as ``x``
    """
    b = _as_float_scalar(beta, "beta", "softplus")
    t = _as_float_scalar(threshold, "threshold", "softplus")
    if b == 0.0:
        raise InvalidArgument("softplus: beta must not be 0")
    x = as_float32(x, "input", "softplus")
    if b == 1.0:
        y = _elementwise(x, False, "softplus", "softplus")
    else:
        bx = x * np.float32(b)
        y = _elementwise(bx, True, "softplus", "softplus")
        y /= np.float32(b)
    # above the threshold torch returns x; the kernel's log1p term is below half an ulp
    # of x from 16 on, so this only differs for thresholds under 16
    return np.where(x * np.float32(b) > t, x, y).astype(np.float32, copy=False)


def _softmax_dim(ndim, dim, op):
    if dim is None:
        # torch's legacy implicit choice (deprecated there too).
        warnings.warn(f"{op}: implicit dimension choice is deprecated; pass dim explicitly",
                      UserWarning, stacklevel=3)
        return 0 if ndim in (0, 1, 3) else 1
    if isinstance(dim, bool):
        raise InvalidArgument(f"{op}: dim must be an int, got bool {dim!r}")
    try:
        d = operator.index(dim)
    except TypeError:
        raise InvalidArgument(
            f"{op}: dim must be an int, got {type(dim).__name__} {dim!r}") from None
    rank = max(ndim, 1)
    if not -rank <= d < rank:
        raise InvalidArgument(
            f"{op}: dim {d} is out of range for an input with {ndim} dims "
            f"(expected {-rank} <= dim < {rank})")
    return d % rank


def _softmax(x, dim, op, log):
    """(log_)softmax of x along dim: the element-wise engine's row kernel where only axes
    of size 1 follow dim (x is then rows of dim's length; one call), else NumPy on x
    minus its maximum."""
    x = as_float32(x, "input", op)
    d = _softmax_dim(x.ndim, dim, op)
    if x.size and all(n == 1 for n in x.shape[d + 1:]):
        n = x.shape[d] if x.ndim else 1
        return eltwise.softmax(x.reshape(x.size // n, n), log=log).reshape(x.shape)
    work = x.reshape(1) if x.ndim == 0 else x
    # Subtracting the maximum keeps exp() from overflowing; NaN propagates, as in torch.
    with np.errstate(invalid="ignore"):   # inf - inf: NaN, silently, as in torch
        s = work - np.max(work, axis=d, keepdims=True) if work.size else work.copy()
    if log:
        s -= np.log(np.sum(np.exp(s), axis=d, keepdims=True))
    else:
        np.exp(s, out=s)
        s /= np.sum(s, axis=d, keepdims=True)
    return s.reshape(x.shape)


def softmax(x, dim=None):
    """Softmax along ``dim``: ``exp(x) / sum(exp(x), dim)``, numerically stable.

    Parameters
    ----------
    x : ndarray, float32, any shape
    dim : int
        Axis to normalise (negative values count from the end). ``None`` picks torch's
        legacy implicit axis (0 for 0-, 1- and 3-D inputs, else 1) with a warning.

    Returns
    -------
    ndarray, float32, same shape as ``x``; sums to 1 along ``dim``.
    """
    return _softmax(x, dim, "softmax", False)


def log_softmax(x, dim=None):
    """``log(softmax(x, dim))``, computed stably as ``x - max - log(sum(exp(x - max)))``.

    Parameters
    ----------
    x : ndarray, float32, any shape
    dim : int
        As in :func:`softmax`.

    Returns
    -------
    ndarray, float32, same shape as ``x``
    """
    return _softmax(x, dim, "log_softmax", True)


def _prelu(x, slope):
    """``x`` where ``x >= 0`` (NaN passes through), ``x * slope`` elsewhere, ``slope``
    broadcast against ``x``: the one formula of :func:`prelu`, ``nn.PReLU`` and the ONNX
    ``PRelu`` operator (which broadcasts its slope the ONNX way)."""
    return np.where(x < 0, x * slope, x).astype(x.dtype, copy=False)


def prelu(input, weight, *, op="prelu"):
    """``torch.nn.functional.prelu``: one learnt slope for the negative part, shared
    (``weight`` of one value) or per channel (dim 1; the only channel of a rank < 2
    input).

    Parameters
    ----------
    input : array_like, float32
    weight : array_like, float32, shape (1,) or (C,)

    Returns
    -------
    ndarray, float32, the shape of ``input``

    Raises
    ------
    ShapeError
        When ``weight`` has neither 1 nor C values.
    """
    arithmetic.check_op_name(op)
    x = as_float32(input, "input", op)
    w = as_float32(weight, "weight", op)
    channels = x.shape[1] if x.ndim >= 2 else 1
    if w.ndim > 1 or w.size not in (1, channels):
        raise ShapeError(f"{op}: num_parameters={w.size} does not match the {channels} "
                         f"channels (dim 1) of the input of shape {x.shape} (weight shape "
                         f"{w.shape})")
    if x.ndim >= 2:
        w = w.reshape((1, w.size) + (1,) * (x.ndim - 2))
    else:
        w = w.reshape(())
    return _prelu(x, w)
