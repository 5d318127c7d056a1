"""Pooling: max / average / Lp pooling, adaptive and global pooling, max unpooling.

Two levels, one implementation (the kernels of :mod:`pyconv._ext.pool`):

* ``torch.nn.functional``-compatible functions (``max_pool2d``, ``avg_pool2d``,
  ``adaptive_max_pool2d``, ``max_unpool2d``, ...) with torch's argument names and
  defaults (``stride`` defaults to ``kernel_size``);
* N-d entry points in ONNX terms (:func:`max_pool`, :func:`avg_pool`, :func:`lp_pool`,
  :func:`max_unpool`, :func:`adaptive_avg_pool`, :func:`adaptive_max_pool`): per-side pads,
  ONNX defaults (stride 1, ``count_include_pad=False``), ONNX-style indices on request.
  The ONNX operators call these.

Arrays are float32 ``(N, C, *spatial)`` with 1 to 3 spatial dims (global pooling takes
any number); outputs are new C-contiguous float32 arrays, indices int64. The geometry
(output sizes, ``ceil_mode``, ``'same'`` padding) comes from :mod:`pyconv.arithmetic`.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from pyconv import arithmetic
from pyconv._arrays import as_float32, c_aligned, check_out
from pyconv._ext import pool as _kernels
from pyconv._ext.gemm import ExecutionContext
from pyconv.errors import InvalidArgument, InvalidDType, ShapeError

__all__ = [
    "max_pool1d", "max_pool2d", "max_pool3d",
    "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "lp_pool1d", "lp_pool2d", "lp_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "max_unpool1d", "max_unpool2d", "max_unpool3d",
    "global_avg_pool", "global_max_pool", "bind_global_pool",
    "max_pool", "avg_pool", "bind_pool", "lp_pool", "max_unpool", "adaptive_avg_pool",
    "adaptive_max_pool", "PoolPlan", "GlobalPoolPlan", "PoolReshape",
]

_SPATIAL_NAMES = {1: "L", 2: "H, W", 3: "D, H, W"}
_INDEX_CONVENTIONS = ("none", "torch", "onnx")


# ---------------------------------------------------------------------------------------
# Validation helpers.

def _as_input(x, op, n=None, *, unbatched=False, name="x"):
    """x as a C-contiguous float32 array (N, C, *spatial) and whether a batch dim was added.

    n: number of spatial dims (None: 1 to 3, from x.ndim). unbatched: also accept
    (C, *spatial) as torch does.
    """
    arithmetic.check_op_name(op)
    x = as_float32(x, name, op)
    added = False
    if n is None:
        if not 3 <= x.ndim <= 5:
            raise ShapeError(f"{op}: {name} must be (N, C, *spatial) with 1 to 3 spatial "
                             f"dims, got shape {x.shape} ({x.ndim}-D)")
        n = x.ndim - 2
    elif x.ndim != n + 2:
        if unbatched and x.ndim == n + 1:
            x = x[None]
            added = True
        else:
            spatial = _SPATIAL_NAMES[n]
            accepted = (f"a {n + 2}-D (N, C, {spatial}) or {n + 1}-D (C, {spatial}) array"
                        if unbatched else f"a {n + 2}-D (N, C, {spatial}) array")
            raise ShapeError(f"{op}: {name} must be {accepted}, got shape {x.shape} "
                             f"({x.ndim}-D)")
    if any(s == 0 for s in x.shape[2:]):
        raise ShapeError(f"{op}: {name} has an empty spatial dim: shape {x.shape}")
    return c_aligned(x), added


def _bool(value, name, op):
    with arithmetic.prefixed_errors(op):
        return arithmetic.as_bool(value, name)


def _unset(stride):
    """A stride left to its default: None or empty (torch accepts ``stride=()``)."""
    return stride is None or (isinstance(stride, (tuple, list)) and not stride)


def _lead(t, fill):
    """A tuple of 1 to 3 spatial values as 3 (leading dims get `fill`)."""
    return (fill,) * (3 - len(t)) + tuple(t)


def _planes(x):
    """x (N, C, *spatial) as the kernels' (N*C, D, H, W) view."""
    n, c = x.shape[:2]
    return x.reshape((n * c,) + _lead(x.shape[2:], 1))


def _finish(y, x_shape, out, added):
    y = y.reshape(x_shape[:2] + tuple(out))
    return y[0] if added else y


def _run_sliding(mode, x, shape, added, op=None, out=None, out_indices=None, **kw):
    """Runs a validated sliding-window pooling of x (N, C, *spatial), resolved by the
    PoolReshape ``shape``; returns y or (y, indices).

    out / out_indices: preallocated results (N, C, *out_spatial), checked here."""
    full = shape.output_shape
    out_sp = full[2:]
    window = shape.window
    planes = (full[0] * full[1],) + window[0]
    if out is not None:
        out = check_out(op, "out", out, full, np.float32)
        kw["out"] = out.reshape(planes)
    if out_indices is not None:
        if kw.get("indices", "none") == "none":
            raise InvalidArgument(f"{op}: out_indices needs indices='torch' or 'onnx'")
        out_indices = check_out(op, "out_indices", out_indices, full, np.int64)
        kw["out_indices"] = out_indices.reshape(planes)
    for name, arr in (("out", out), ("out_indices", out_indices)):
        if arr is not None and np.may_share_memory(arr, x):
            raise InvalidArgument(f"{op}: {name} overlaps the input x (pooling cannot run "
                                  f"in place)")
    res = _kernels.pool(mode, _planes(x), *window, **kw)
    if isinstance(res, tuple):
        y = out if out is not None else _finish(res[0], x.shape, out_sp, added)
        i = out_indices if out_indices is not None else _finish(res[1], x.shape, out_sp, added)
        return y, i
    return out if out is not None else _finish(res, x.shape, out_sp, added)


def _onnx_attributes(op, n, kernel_shape, strides, pads_begin, pads_end, dilations,
                     ceil_mode, auto_pad):
    """The pool attributes of an N-d entry point (ONNX arguments, n spatial dims)."""
    if _unset(strides):
        strides = 1
    with arithmetic.prefixed_errors(op):
        kernel_shape = arithmetic.normalize_tuple(kernel_shape, n, "kernel_shape")
        pads = (arithmetic.normalize_tuple(pads_begin, n, "pads_begin", minimum=0)
                + arithmetic.normalize_tuple(pads_end, n, "pads_end", minimum=0))
    return arithmetic.ConvAttributes("pool", kernel_shape, strides, dilations, pads,
                                     auto_pad, ceil_mode=ceil_mode, op=op)


#: PoolPlan / GlobalPoolPlan of the functional entry points, by their arguments
#: (arithmetic.exact_key) and context: a one-shot call finds its plan and the plan its
#: reshape, so a layer called in a loop skips the Python validation.
_PLANS = {}


def _cached_plan(args, context, build):
    """The plan that ``build()`` makes for ``args`` under ``context`` (None: the process
    defaults now), made once; arguments that are not plain values are never cached."""
    key = arithmetic.exact_key(args)
    if key is None:
        return build(context)
    context = ExecutionContext() if context is None else context
    key = key + (context,)
    plan = _PLANS.get(key)
    if plan is None:
        plan = build(context)
        if len(_PLANS) >= 512:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _torch_plan(op, n, mode, kernel_size, stride, padding, dilation, ceil_mode, **options):
    """The plan of a torch-style call (stride defaults to the kernel, torch's padding
    rule)."""
    def build(context):
        attributes = arithmetic.torch_attributes(
            "pool", n, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode, op=op)
        return PoolPlan(mode, attributes, context=context, **options)
    return _cached_plan((op, n, mode, kernel_size, stride, padding, dilation, ceil_mode)
                        + tuple(options.values()), None, build)


def _onnx_plan(op, n, mode, kernel_shape, strides, pads_begin, pads_end, dilations,
               ceil_mode, auto_pad, context, **options):
    """The plan of an N-d entry point (ONNX arguments as :func:`_onnx_attributes`)."""
    def build(context):
        attributes = _onnx_attributes(op, n, kernel_shape, strides, pads_begin, pads_end,
                                      dilations, ceil_mode, auto_pad)
        return PoolPlan(mode, attributes, context=context, **options)
    return _cached_plan((op, n, mode, kernel_shape, strides, pads_begin, pads_end, dilations,
                         ceil_mode, auto_pad) + tuple(options.values()), context, build)


def _divisor(op, divisor_override):
    if divisor_override is None:
        return 0.0
    if isinstance(divisor_override, bool) or not isinstance(
            divisor_override, (int, float, np.integer, np.floating)):
        raise InvalidArgument(f"{op}: divisor_override must be a number, got "
                              f"{type(divisor_override).__name__} {divisor_override!r}")
    if divisor_override == 0 or not math.isfinite(divisor_override):
        raise InvalidArgument(f"{op}: divisor_override must be a finite non-zero number, "
                              f"got {divisor_override!r}")
    return float(divisor_override)


def _norm(op, p, allow_inf):
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise InvalidArgument(f"{op}: norm_type must be a number, got "
                              f"{type(p).__name__} {p!r}")
    p = float(p)
    if math.isnan(p) or p <= 0 and not (allow_inf and p == -math.inf) or (
            math.isinf(p) and not allow_inf):
        kind = "a positive number or +-inf" if allow_inf else "a positive finite number"
        raise InvalidArgument(f"{op}: norm_type must be {kind}, got {p!r}")
    return p


@dataclasses.dataclass(frozen=True)
class PoolReshape:
    """A pooling plan resolved for one input shape (:meth:`PoolPlan.reshape`,
    :meth:`GlobalPoolPlan.reshape`): frozen, used as is by every run and bound call.

    Attributes
    ----------
    input_shape, output_shape : tuple of int
        (N, C, *spatial) and (N, C, *out_spatial).
    kernel_shape, strides, pads_begin, pads_end, dilations : tuple of int
        The resolved window (``auto_pad`` and ``ceil_mode`` applied); a global pooling's
        window is the whole input plane.
    algorithm : str
        ``'lanes'`` (small 2-D planes, max or average without indices: the ISA's kernel
        that runs a vector's width of planes at a time, one plane a lane), ``'rows'`` (the
        ISA's SIMD row kernel: max or average without indices),
        ``'generic'`` (scalar windows: Lp pooling, max pooling with indices) or
        ``'global'`` (plane reductions).
    num_threads : int
        Threads a run uses (the context's, fewer for a small problem).
    workspace_bytes : int
        Scratch memory a run takes (per calling Python thread, reused between runs).

    Returns
    -------
    PoolReshape
        What a run on float32 (N, C, *spatial) arrays of ``input_shape`` produces:
        float32 arrays of ``output_shape``.
    """

    input_shape: tuple
    output_shape: tuple
    kernel_shape: tuple
    strides: tuple
    pads_begin: tuple
    pads_end: tuple
    dilations: tuple
    algorithm: str
    num_threads: int
    workspace_bytes: int
    #: the kernels' 3-D form: out, kernel, stride, pads_begin, pads_end, dilation
    window: tuple = dataclasses.field(default=(), repr=False, compare=False)


def _input_shape(op, x_shape, min_spatial, max_spatial):
    """x_shape as a tuple of ints (N, C, *spatial), checked against the spatial rank and
    for empty spatial dims; errors name ``x_shape``."""
    try:
        shape = tuple(x_shape)
        bad = any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0
                  for s in shape)
    except TypeError:
        bad, shape = True, x_shape
    if bad or math.prod(shape) > 2**62:     # the kernels count elements in int64
        raise InvalidArgument(f"{op}: x_shape must be a sequence of non-negative ints "
                              f"describing an array, got {x_shape!r}")
    if not min_spatial <= len(shape) - 2 <= max_spatial or 0 in shape[2:]:
        dims = (f"{min_spatial} to {max_spatial} spatial dims" if max_spatial < 99
                else f"at least {min_spatial} spatial dim")
        raise ShapeError(f"{op}: x must be (N, C, *spatial) with {dims}, none empty, got "
                         f"x_shape {shape}")
    return tuple(int(s) for s in shape)


class PoolPlan:
    """A sliding-window pooling prepared once and run on many inputs: create (mode,
    attributes, options and context fixed) -> :meth:`reshape` (the window resolved for
    one input shape, once) -> :meth:`run`, as :class:`pyconv.functional.ConvPlan`.

    Parameters
    ----------
    mode : {'max', 'avg', 'lp'}
    attributes : pyconv.arithmetic.ConvAttributes
        Of kind ``'pool'``: window, strides, pads or ``auto_pad``, dilations, ceil_mode;
        its ``op`` names the plan in error messages.
    count_include_pad : bool
        Average pooling, as in :func:`avg_pool`.
    divisor_override : number, optional
        Average pooling: non-zero fixed divisor (torch).
    p : float
        Lp pooling: positive and finite, as in :func:`lp_pool`.
    indices : {'none', 'torch', 'onnx'}
        Max pooling: also return indices, as in :func:`max_pool`.
    context : pyconv.ExecutionContext, optional
        Threads and ISA of every run (None: the process defaults now).

    Returns
    -------
    PoolPlan
        ``run(x)`` takes float32 (N, C, *spatial) arrays and returns float32
        (N, C, *out_spatial) ones (with int64 indices when asked); ``bind`` gives the
        memory planner's bound call.
    """

    def __init__(self, mode, attributes, *, count_include_pad=False, divisor_override=None,
                 p=2.0, indices="none", context=None):
        self.op = op = attributes.op
        if not isinstance(mode, str) or mode not in ("max", "avg", "lp") or \
                attributes.kind != "pool":
            raise InvalidArgument(f"{op}: a pool plan takes mode 'max', 'avg' or 'lp' and "
                                  f"pool attributes, got {mode!r}, {attributes.kind!r}")
        if not isinstance(indices, str) or indices not in _INDEX_CONVENTIONS:
            raise InvalidArgument(f"{op}: indices must be one of {_INDEX_CONVENTIONS}, "
                                  f"got {indices!r}")
        self.mode, self.attributes, self.indices = mode, attributes, indices
        self.context = ExecutionContext() if context is None else context
        # the kernels' keyword arguments, all but out / out_indices
        self._kw = {"context": self.context}
        if mode == "max":
            self._kw["indices"] = indices
        elif mode == "avg":
            self._kw["count_include_pad"] = _bool(count_include_pad, "count_include_pad", op)
            self._kw["divisor"] = _divisor(op, divisor_override)
        else:
            self._kw["p"] = _norm(op, p, allow_inf=False)
        # PoolReshape per input shape: the arithmetic costs more than a small pooling
        self._reshapes = {}

    def reshape(self, x_shape):
        """The plan resolved for inputs of ``x_shape`` (N, C, *spatial; 1 to 3 spatial
        dims): a frozen :class:`PoolReshape` (output shape, window, threads, workspace),
        cached per shape.

        Raises
        ------
        ShapeError, InvalidArgument
            On a wrong rank, an empty spatial dim or a window that does not fit; the
            message names the argument and the shapes.
        """
        hit = self._reshapes.get(x_shape) if type(x_shape) is tuple else None
        if hit is None:
            shape = _input_shape(self.op, x_shape, 1, 3)
            hit = self._reshapes.get(shape)
            if hit is None:
                hit = self._reshape(shape)
                if len(self._reshapes) < 64:
                    self._reshapes[shape] = hit
        return hit

    def _reshape(self, x_shape):
        a = self.attributes
        g = a.resolve(x_shape[2:])
        planes = x_shape[0] * x_shape[1]
        window = (_lead(g.output_shape, 1), _lead(a.kernel_shape, 1), _lead(a.strides, 1),
                  _lead(g.pads_begin, 0), _lead(g.pads_end, 0), _lead(a.dilations, 1))
        algorithm, nthreads, ws = _kernels.pool_work(
            self.mode, (planes,) + _lead(x_shape[2:], 1), *window, indices=self.indices,
            context=self.context)
        return PoolReshape(x_shape, x_shape[:2] + g.output_shape, a.kernel_shape, a.strides,
                           g.pads_begin, g.pads_end, a.dilations, algorithm, nthreads, ws,
                           window)

    def output_shape(self, x_shape):
        """Output shape (N, C, *out_spatial) for an input shape; validates the geometry."""
        return self.reshape(x_shape).output_shape

    def run(self, x, out=None, out_indices=None):
        """Pools x (N, C, *spatial) float32: y, or (y, indices) for max pooling with
        indices; ``out`` / ``out_indices`` are preallocated results, as in
        :func:`max_pool`."""
        x, _ = _as_input(x, self.op)
        return self._run(x, False, out, out_indices)

    def _run(self, x, added, out=None, out_indices=None):
        """run() on a validated x (a batch dim ``added`` to an unbatched input)."""
        return _run_sliding(self.mode, x, self.reshape(x.shape), added, self.op, out,
                            out_indices, **self._kw)

    def bind(self, x_shape, out):
        """The plan (max or average, no indices) bound to one input shape and a
        preallocated output (a memory planner's step).

        Returns a callable: ``call(x)`` writes and returns ``out``, or returns None
        without computing anything when x is not a float32 aligned C-contiguous array of
        ``x_shape`` (the caller then takes :meth:`run`, which converts or reports)."""
        if self.mode == "lp" or self.indices != "none":
            raise InvalidArgument(f"{self.op}: only max and average pooling without indices "
                                  f"can be bound")
        shape = self.reshape(x_shape)
        check_out(self.op, "out", out, shape.output_shape, np.float32)
        kw = dict(self._kw)
        kw.pop("indices", None)
        return _kernels.bind_pool(self.mode, shape.input_shape, *shape.window, out, **kw)


class GlobalPoolPlan:
    """Global average or max pooling (ONNX ``GlobalAveragePool`` / ``GlobalMaxPool``)
    prepared once: create -> :meth:`reshape` -> :meth:`run` / :meth:`bind`, as
    :class:`PoolPlan`.

    Parameters
    ----------
    is_max : bool
        Max (NaN propagates) rather than mean (accumulated in double precision).
    op : str
        Name used in error messages.
    context : pyconv.ExecutionContext, optional
        Threads and ISA of every run (None: the process defaults now).

    Returns
    -------
    GlobalPoolPlan
        ``run(x)`` takes float32 (N, C, *spatial) arrays and returns float32
        (N, C, 1, ..., 1) ones; ``bind`` gives the memory planner's bound call.
    """

    def __init__(self, is_max, *, op="global_pool", context=None):
        arithmetic.check_op_name(op)
        with arithmetic.prefixed_errors(op):
            self.is_max, self.op = arithmetic.as_bool(is_max, "is_max"), op
        self.context = ExecutionContext() if context is None else context
        self._reshapes = {}

    def reshape(self, x_shape):
        """The frozen :class:`PoolReshape` of inputs of ``x_shape`` (N, C, *spatial, at
        least one spatial dim, none empty): output (N, C, 1, ..., 1)."""
        hit = self._reshapes.get(x_shape) if type(x_shape) is tuple else None
        if hit is None:
            shape = _input_shape(self.op, x_shape, 1, 99)
            hit = self._reshapes.get(shape)
            if hit is None:
                n = len(shape) - 2
                hit = PoolReshape(shape, shape[:2] + (1,) * n, shape[2:], (1,) * n, (0,) * n,
                                  (0,) * n, (1,) * n, "global",
                                  _kernels.global_pool_threads(math.prod(shape), self.context),
                                  0)
                if len(self._reshapes) < 64:
                    self._reshapes[shape] = hit
        return hit

    def output_shape(self, x_shape):
        """(N, C, 1, ..., 1) for an input shape; validates it."""
        return self.reshape(x_shape).output_shape

    def run(self, x):
        """The mean (or max) of each (n, c) plane of x (N, C, *spatial) float32, as a new
        (N, C, 1, ..., 1) array."""
        x = as_float32(x, "x", self.op)
        shape = self.reshape(x.shape)
        x = c_aligned(x)
        n, c = x.shape[:2]
        # explicit: reshape(0, -1) is ambiguous when N * C == 0 (an empty batch)
        y = _kernels.global_pool(x.reshape(n * c, math.prod(x.shape[2:])), self.is_max,
                                 self.context)
        return y.reshape(shape.output_shape)

    def bind(self, x_shape):
        """The plan bound to one input shape (a memory planner's step): ``call(x)``
        returns a new float32 (N, C, 1, ..., 1) array, or None without computing anything
        when x is not a float32 aligned C-contiguous array of ``x_shape`` (the caller
        then takes :meth:`run`)."""
        shape = self.reshape(x_shape)
        if len(shape.input_shape) > 8:
            raise ShapeError(f"{self.op}: at most 6 spatial dims can be bound, got x_shape "
                             f"{shape.input_shape}")
        return _kernels.bind_global_pool(shape.input_shape, self.is_max, self.context)


# ---------------------------------------------------------------------------------------
# N-d entry points (ONNX semantics).

def max_pool(x, kernel_shape, strides=1, pads_begin=0, pads_end=0, dilations=1,
             ceil_mode=False, indices="none", *, auto_pad="NOTSET", out=None, out_indices=None,
             op="max_pool", context=None):
    """N-d max pooling with per-side pads (ONNX ``MaxPool``).

    Padding is never a candidate (as if padded with ``-inf``). NaN propagates (torch's
    rule). Ties keep the first element in the C order of the window.

    Parameters
    ----------
    x : ndarray, shape (N, C, *spatial), float32
        1 to 3 spatial dims.
    kernel_shape, strides, dilations : int or sequence of int
        Positive; an int applies to every spatial dim. ``strides`` defaults to 1 (ONNX).
    pads_begin, pads_end : int or sequence of int
        Non-negative, each smaller than the kernel size (onnxruntime's rule).
    ceil_mode : bool
        Round the output size up; a last window that would start in the end padding is
        dropped (see :func:`pyconv.arithmetic.pool_output_size`).
    auto_pad : {'NOTSET', 'SAME_UPPER', 'SAME_LOWER', 'VALID'}
        ONNX ``auto_pad``: other than ``NOTSET``, it replaces the pads (``SAME_*``: an
        output of ``ceil(input / stride)``, see :class:`pyconv.arithmetic.ConvAttributes`).
    indices : {'none', 'torch', 'onnx'}
        Also return the position of each maximum as int64: ``'torch'`` flattened within
        the unpadded ``(n, c)`` plane (``h * W + w``), ``'onnx'`` flattened over the whole
        input tensor (``((n * C + c) * H + h) * W + w``, ONNX ``Indices`` with
        ``storage_order=0``). A window with no input element (possible with dilation)
        gets ``-inf`` and index -1.
    out, out_indices : ndarray, optional
        Preallocated results (writeable, C-contiguous, float32 / int64, the result's
        shape), written and returned instead of new arrays (e.g. by a memory planner).
    op : str
        Name used in error messages (the ONNX node).
    context : pyconv.ExecutionContext, optional
        Threads and ISA of the kernels (None: the process defaults).

    Returns
    -------
    y : ndarray, shape (N, C, *out_spatial), float32
    indices : ndarray, shape (N, C, *out_spatial), int64
        Only when ``indices`` is not ``'none'``.

    Raises
    ------
    InvalidDType
        If ``x`` is not float32.
    ShapeError
        On a wrong rank, or a kernel larger than the padded input.
    InvalidArgument
        On invalid geometry or ``indices`` value.
    """
    x, _ = _as_input(x, op)
    plan = _onnx_plan(op, x.ndim - 2, "max", kernel_shape, strides, pads_begin, pads_end,
                      dilations, ceil_mode, auto_pad, context, indices=indices)
    return plan._run(x, False, out, out_indices)


def avg_pool(x, kernel_shape, strides=1, pads_begin=0, pads_end=0, dilations=1,
             ceil_mode=False, count_include_pad=False, divisor_override=None, *,
             auto_pad="NOTSET", out=None, op="avg_pool", context=None):
    """N-d average pooling with per-side pads (ONNX ``AveragePool``, with dilations).

    Each output is the sum of the window's elements inside the input divided by: the
    number of those elements, or with ``count_include_pad`` the number of window
    positions inside the padded input (a ``ceil_mode`` window's positions beyond the end
    padding never count, as in torch and ONNX), or ``divisor_override``.

    Parameters
    ----------
    x : ndarray, shape (N, C, *spatial), float32
        1 to 3 spatial dims.
    kernel_shape, strides, pads_begin, pads_end, dilations, ceil_mode, auto_pad
        As in :func:`max_pool`.
    count_include_pad : bool
        Default False (the ONNX default; torch's is True).
    divisor_override : number, optional
        Non-zero fixed divisor (torch).
    out : ndarray, optional
        Preallocated result, as in :func:`max_pool`.
    op : str
        Name used in error messages.
    context : pyconv.ExecutionContext, optional
        Threads and ISA of the kernels (None: the process defaults).

    Returns
    -------
    ndarray, shape (N, C, *out_spatial), float32
        NaN where a window has nothing to count (only possible with dilation and
        ``count_include_pad=False``).
    """
    x, _ = _as_input(x, op)
    plan = _onnx_plan(op, x.ndim - 2, "avg", kernel_shape, strides, pads_begin, pads_end,
                      dilations, ceil_mode, auto_pad, context,
                      count_include_pad=count_include_pad, divisor_override=divisor_override)
    return plan._run(x, False, out)


def bind_pool(mode, x_shape, kernel_shape, strides, pads_begin, pads_end, dilations,
              ceil_mode, out, *, count_include_pad=False, auto_pad="NOTSET", op="pool",
              context=None):
    """:func:`max_pool` (``mode='max'``, no indices) or :func:`avg_pool` (``'avg'``) bound
    to one input shape and a preallocated output, with the geometry validated and resolved
    once (a memory planner's step).

    Parameters
    ----------
    mode : {'max', 'avg'}
    x_shape : tuple of int
        (N, C, *spatial), 1 to 3 spatial dims.
    kernel_shape, strides, pads_begin, pads_end, dilations, ceil_mode, auto_pad
        As in :func:`max_pool`.
    out : ndarray
        Writeable C-contiguous float32 array of the output shape.
    count_include_pad : bool
        Average pooling, as in :func:`avg_pool`.
    op : str
        Name used in error messages.
    context : pyconv.ExecutionContext, optional
        Threads and ISA of the kernels (None: the process defaults).

    Returns
    -------
    call : callable
        ``call(x)`` writes and returns ``out``, or returns None without computing
        anything when x is not a float32 aligned C-contiguous array of ``x_shape`` (the
        caller then takes the general entry point, which converts or reports).
    """
    arithmetic.check_op_name(op)
    x_shape = _input_shape(op, x_shape, 1, 3)
    attributes = _onnx_attributes(op, len(x_shape) - 2, kernel_shape, strides, pads_begin,
                                  pads_end, dilations, ceil_mode, auto_pad)
    return PoolPlan(mode, attributes, count_include_pad=count_include_pad,
                    context=context).bind(x_shape, out)


def lp_pool(x, kernel_shape, p=2, strides=1, pads_begin=0, pads_end=0, dilations=1,
            ceil_mode=False, *, auto_pad="NOTSET", out=None, op="lp_pool", context=None):
    """N-d Lp pooling (ONNX ``LpPool``): ``(sum over the window of |x| ** p) ** (1 / p)``.

    Padding contributes zeros.

    Parameters
    ----------
    x : ndarray, shape (N, C, *spatial), float32
        1 to 3 spatial dims.
    kernel_shape : int or sequence of int
    p : float
        Positive and finite (ONNX default 2).
    strides, pads_begin, pads_end, dilations, ceil_mode, auto_pad, out
        As in :func:`max_pool`.
    op : str
        Name used in error messages.
    context : pyconv.ExecutionContext, optional
        Threads and ISA of the kernels (None: the process defaults).

    Returns
    -------
    ndarray, shape (N, C, *out_spatial), float32
    """
    x, _ = _as_input(x, op)
    plan = _onnx_plan(op, x.ndim - 2, "lp", kernel_shape, strides, pads_begin, pads_end,
                      dilations, ceil_mode, auto_pad, context, p=p)
    return plan._run(x, False, out)


def _adaptive_size(op, output_size, spatial):
    n = len(spatial)
    if output_size is None:
        raise InvalidArgument(f"{op}: output_size must be an int or a sequence of "
                              f"{n} ints (None entries keep the input size), got None")
    if isinstance(output_size, (list, tuple)) or (isinstance(output_size, np.ndarray)
                                                  and output_size.ndim == 1):
        output_size = tuple(s if o is None else o for o, s in zip(output_size, spatial)) \
            if len(output_size) == n else tuple(output_size)
    return arithmetic.normalize_tuple(output_size, n, f"{op}: output_size")


def _adaptive(op, x, output_size, is_max, return_indices, added):
    out = _adaptive_size(op, output_size, x.shape[2:])
    arithmetic.check_tensor_size(x.shape[:2] + out, op)
    if 0 in x.shape[2:] and 0 not in x.shape[:2] + out:
        raise ShapeError(f"{op}: cannot pool the empty input of shape {x.shape} to output "
                         f"size {out}")
    res = _kernels.adaptive_pool(_planes(x), _lead(out, 1), is_max, return_indices)
    if isinstance(res, tuple):
        return _finish(res[0], x.shape, out, added), _finish(res[1], x.shape, out, added)
    return _finish(res, x.shape, out, added)


def adaptive_avg_pool(x, output_size, *, op="adaptive_avg_pool"):
    """N-d adaptive average pooling (torch's windows).

    Output ``o`` along an axis of input size ``L`` and output size ``O`` averages the
    input range ``[floor(o * L / O), ceil((o + 1) * L / O))``.

    Parameters
    ----------
    x : ndarray, shape (N, C, *spatial), float32
        1 to 3 spatial dims.
    output_size : int or sequence of int (or None entries: keep that input size)
    op : str
        Name used in error messages.

    Returns
    -------
    ndarray, shape (N, C, *output_size), float32
    """
    x, _ = _as_input(x, op)
    return _adaptive(op, x, output_size, False, False, False)


def adaptive_max_pool(x, output_size, return_indices=False, *, op="adaptive_max_pool"):
    """N-d adaptive max pooling (torch's windows, see :func:`adaptive_avg_pool`).

    Returns
    -------
    y : ndarray, shape (N, C, *output_size), float32
    indices : ndarray, shape (N, C, *output_size), int64
        Only with ``return_indices``: flattened within the ``(n, c)`` plane (first maximum
        in C order; NaN propagates, the last NaN wins, as in torch).
    """
    x, _ = _as_input(x, op)
    return _adaptive(op, x, output_size, True, _bool(return_indices, "return_indices", op),
                     False)


def _unpool(op, x, indices, out, convention, added, context=None):
    try:
        ind = np.asarray(indices)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{op}: indices must be an integer array, got "
                              f"{type(indices).__name__}: {exc}") from None
    if not np.issubdtype(ind.dtype, np.integer):
        raise InvalidDType(f"{op}: indices must be an integer array (int64), got dtype "
                           f"{ind.dtype}")
    if added and ind.ndim == x.ndim - 1:
        ind = ind[None]
    if ind.shape != x.shape:
        raise ShapeError(f"{op}: indices has shape {ind.shape}, expected the shape of x "
                         f"{x.shape}")
    ind = np.require(ind, np.int64, "CA")
    n, c = x.shape[:2]
    plane = math.prod(out)
    arithmetic.check_tensor_size((n, c) + tuple(out), op)
    in_plane = math.prod(x.shape[2:])   # explicit: reshape(0, -1) is ambiguous for N*C == 0
    y, bad = _kernels.max_unpool(x.reshape(n * c, in_plane), ind.reshape(n * c, in_plane),
                                 plane, convention == "onnx", context)
    if bad >= 0:
        pos = np.unravel_index(bad, ind.shape)
        if added:
            pos = pos[1:]
        if convention == "torch":
            limit, where = plane, "the output plane of size " + "x".join(map(str, out))
        else:
            limit, where = n * c * plane, f"the output of shape {(n, c) + tuple(out)}"
        raise InvalidArgument(
            f"{op}: indices[{', '.join(str(int(i)) for i in pos)}] = {int(ind.flat[bad])} "
            f"is out of range for {where} (valid: 0 <= index < {limit})")
    return _finish(y, x.shape, out, added)


def max_unpool(x, indices, output_shape, convention="torch", *, op="max_unpool",
               context=None):
    """N-d max unpooling: scatter ``x`` into zeros at ``indices`` (ONNX ``MaxUnpool``).

    Parameters
    ----------
    x : ndarray, shape (N, C, *spatial), float32
        1 to 3 spatial dims.
    indices : ndarray, shape of ``x``, integer
        Positions as returned by :func:`max_pool` with ``indices=convention``.
    output_shape : sequence of int
        Spatial output shape (or the full ``(N, C, *spatial)`` shape).
    convention : {'torch', 'onnx'}
        ``'torch'``: indices within each ``(n, c)`` output plane; ``'onnx'``: indices into
        the whole output tensor.
    op : str
        Name used in error messages.
    context : pyconv.ExecutionContext, optional
        Threads and ISA of the kernels (None: the process defaults).

    Returns
    -------
    ndarray, shape (N, C, *output_shape), float32
        Zeros where no index points; when several values share an index, the last in C
        order wins.

    Raises
    ------
    InvalidArgument
        If an index is out of range (the message names its position and value); nothing
        is ever written out of bounds.
    """
    x, _ = _as_input(x, op)
    n = x.ndim - 2
    if not isinstance(convention, str) or convention not in ("torch", "onnx"):
        raise InvalidArgument(f"{op}: convention must be 'torch' or 'onnx', got "
                              f"{convention!r}")
    with arithmetic.prefixed_errors(op):
        shape = arithmetic.as_shape(output_shape, "output_shape")
    if len(shape) == n + 2:
        if tuple(shape[:2]) != x.shape[:2]:
            raise ShapeError(f"{op}: output_shape {shape} does not match the batch and "
                             f"channels of x {x.shape}")
        shape = shape[2:]
    out = arithmetic.normalize_tuple(shape, n, f"{op}: output_shape")
    return _unpool(op, x, indices, out, convention, False, context)


# ---------------------------------------------------------------------------------------
# torch.nn.functional signatures.

def _doc(template, n):
    spatial = _SPATIAL_NAMES[n]
    out_spatial = ", ".join(f"{s}_out" for s in spatial.split(", "))

    def deco(fn):
        fn.__doc__ = template.format(n=n, spatial=spatial, out=out_spatial)
        return fn
    return deco


_MAX_POOL_DOC = """{n}-D max pooling, as ``torch.nn.functional.max_pool{n}d``.

    Padding is never a candidate (as if padded with ``-inf``); NaN propagates; ties keep
    the first element in the C order of the window.

    Parameters
    ----------
    x : ndarray, shape (N, C, {spatial}) or (C, {spatial}), float32
    kernel_size : int or tuple of {n} ints
    stride : int or tuple of {n} ints, optional
        Defaults to ``kernel_size``.
    padding : int, tuple of {n} or {n2} ints, or str
        An int or {n} ints: symmetric, each at most ``kernel_size // 2`` (torch's rule);
        {n2} ints: per side in ONNX order ``(begin..., end...)``, each smaller than the
        kernel size; ``'valid'`` or ``'same'`` (output ``ceil(L / stride)``).
    dilation : int or tuple of {n} ints
    ceil_mode : bool
        Round the output size up (a last window starting in the end padding is dropped).
    return_indices : bool
        Also return the int64 position of each maximum flattened within its ``(n, c)``
        plane of the unpadded input, for :func:`max_unpool{n}d`.

    Returns
    -------
    y : ndarray, shape (N, C, {out}), float32
    indices : ndarray, shape (N, C, {out}), int64
        Only with ``return_indices``. An unbatched input gives unbatched outputs.

    Raises
    ------
    InvalidDType
        If ``x`` is not float32.
    ShapeError
        On a wrong rank, or a kernel larger than the padded input.
    InvalidArgument
        On invalid sizes, strides, dilations or pads.
    """

_AVG_POOL_DOC = """{n}-D average pooling, as ``torch.nn.functional.avg_pool{n}d``.

    The sum of the window's elements inside the input, divided by the number of window
    positions inside the padded input (``count_include_pad=True``; positions of a
    ``ceil_mode`` window beyond the end padding never count), by the number of elements
    inside the input (``count_include_pad=False``), or by ``divisor_override``.

    Parameters
    ----------
    x : ndarray, shape (N, C, {spatial}) or (C, {spatial}), float32
    kernel_size : int or tuple of {n} ints
    stride : int or tuple of {n} ints, optional
        Defaults to ``kernel_size``.
    padding : int, tuple of {n} or {n2} ints, or str
        As in :func:`max_pool{n}d`.
    ceil_mode : bool
    count_include_pad : bool
    divisor_override : number, optional
        Non-zero (accepted for every dimensionality; torch has it for 2-D and 3-D).

    Returns
    -------
    ndarray, shape (N, C, {out}), float32

    Raises
    ------
    InvalidDType, ShapeError, InvalidArgument
        As in :func:`max_pool{n}d`.
    """

_LP_POOL_DOC = """{n}-D power-average pooling, like ``torch.nn.functional.lp_pool{n}d``.

    ``(sum over the window of |x| ** norm_type) ** (1 / norm_type)``, computed as ONNX
    ``LpPool``; ``norm_type = inf`` gives the max of ``|x|`` (and ``-inf`` the min), as
    torch does. Differences from torch, which computes
    ``avg_pool(x ** p) * kernel_volume``: torch does not take ``|x|`` (so with odd
    ``norm_type`` and negative inputs it differs, e.g. ``p = 1`` gives the plain sum),
    and with ``ceil_mode`` it scales a partial last window up to the full kernel volume;
    here a partial window sums what it covers.

    Parameters
    ----------
    x : ndarray, shape (N, C, {spatial}) or (C, {spatial}), float32
    norm_type : float
        Positive, or +-inf.
    kernel_size : int or tuple of {n} ints
    stride : int or tuple of {n} ints, optional
        Defaults to ``kernel_size``.
    ceil_mode : bool

    Returns
    -------
    ndarray, shape (N, C, {out}), float32

    Raises
    ------
    InvalidDType, ShapeError, InvalidArgument
        As in :func:`max_pool{n}d`.
    """

_ADAPTIVE_AVG_DOC = """{n}-D adaptive average pooling, as
    ``torch.nn.functional.adaptive_avg_pool{n}d``.

    Output ``o`` along an axis of input size ``L`` and output size ``O`` averages the
    input range ``[floor(o * L / O), ceil((o + 1) * L / O))``.

    Parameters
    ----------
    x : ndarray, shape (N, C, {spatial}) or (C, {spatial}), float32
    output_size : int or tuple of {n} ints
        A ``None`` entry keeps that input size.

    Returns
    -------
    ndarray, shape (N, C, *output_size), float32
    """

_ADAPTIVE_MAX_DOC = """{n}-D adaptive max pooling, as
    ``torch.nn.functional.adaptive_max_pool{n}d``.

    Windows as in :func:`adaptive_avg_pool{n}d`.

    Parameters
    ----------
    x : ndarray, shape (N, C, {spatial}) or (C, {spatial}), float32
    output_size : int or tuple of {n} ints
        A ``None`` entry keeps that input size.
    return_indices : bool
        Also return the int64 position of each maximum flattened within its plane.

    Returns
    -------
    y : ndarray, shape (N, C, *output_size), float32
    indices : ndarray, shape (N, C, *output_size), int64
        Only with ``return_indices``.
    """

_MAX_UNPOOL_DOC = """{n}-D max unpooling, as ``torch.nn.functional.max_unpool{n}d``:
    the inverse of :func:`max_pool{n}d` with ``return_indices=True``.

    Scatters ``x`` into a zeroed output at ``indices``; when several values share an
    index, the last in C order wins.

    Parameters
    ----------
    x : ndarray, shape (N, C, {spatial}) or (C, {spatial}), float32
    indices : ndarray, shape of ``x``, integer
        Positions flattened within each ``(n, c)`` output plane.
    kernel_size : int or tuple of {n} ints
    stride : int or tuple of {n} ints, optional
        Defaults to ``kernel_size``.
    padding : int, tuple of {n} or {n2} ints
        Of the pooling being inverted.
    output_size : sequence of int, optional
        ``({out})`` or ``(N, C, {out})``; default
        ``(L - 1) * stride - 2 * padding + kernel_size`` per dim, and a given size must lie
        strictly within ``stride`` of it (torch's rule).

    Returns
    -------
    ndarray, shape (N, C, *output_size), float32

    Raises
    ------
    InvalidArgument
        If an index is out of range (the message names its position and value); nothing
        is ever written out of bounds.
    InvalidDType
        If ``x`` is not float32 or ``indices`` not an integer array.
    ShapeError
        If ``indices`` does not have the shape of ``x``.
    """


def _fmt(template, n):
    return template.replace("{n2}", str(2 * n))


def _max_pool_nd(op, n, x, kernel_size, stride, padding, dilation, ceil_mode,
                 return_indices):
    x, added = _as_input(x, op, n, unbatched=True)
    indices = "torch" if _bool(return_indices, "return_indices", op) else "none"
    return _torch_plan(op, n, "max", kernel_size, stride, padding, dilation, ceil_mode,
                       indices=indices)._run(x, added)


def _avg_pool_nd(op, n, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                 divisor_override):
    x, added = _as_input(x, op, n, unbatched=True)
    return _torch_plan(op, n, "avg", kernel_size, stride, padding, 1, ceil_mode,
                       count_include_pad=count_include_pad,
                       divisor_override=divisor_override)._run(x, added)


def _lp_pool_nd(op, n, x, norm_type, kernel_size, stride, ceil_mode):
    x, added = _as_input(x, op, n, unbatched=True)
    p = _norm(op, norm_type, allow_inf=True)
    if math.isinf(p):
        plan = _torch_plan(op, n, "max", kernel_size, stride, 0, 1, ceil_mode)
        if p > 0:
            return plan._run(np.abs(x), added)
        return -plan._run(-np.abs(x), added)
    return _torch_plan(op, n, "lp", kernel_size, stride, 0, 1, ceil_mode, p=p)._run(x, added)


def _adaptive_nd(op, n, x, output_size, is_max, return_indices):
    x, added = _as_input(x, op, n, unbatched=True)
    return _adaptive(op, x, output_size, is_max,
                     _bool(return_indices, "return_indices", op), added)


def _max_unpool_nd(op, n, x, indices, kernel_size, stride, padding, output_size):
    x, added = _as_input(x, op, n, unbatched=True)
    if isinstance(padding, str):
        raise InvalidArgument(f"{op}: padding must be an int or a tuple of {n} or {2 * n} "
                              f"ints, got {padding!r}")
    with arithmetic.prefixed_errors(op):
        ks = arithmetic.normalize_tuple(kernel_size, n, "kernel_size")
        ss = ks if _unset(stride) else arithmetic.normalize_tuple(stride, n, "stride")
        pb, pe = arithmetic.resolve_padding(padding, n)
        default = arithmetic.max_unpool_output_shape(x.shape[2:], ks, ss, pb, pe, op=op)
    if output_size is None:
        out = default
    else:
        # torch's max_unpool: a sequence of n (or n + 2) sizes; an int is refused there too
        with arithmetic.prefixed_errors(op):
            shape = arithmetic.as_shape(output_size, "output_size")
        if len(shape) == n + 2:
            shape = shape[2:]
        if len(shape) != n:
            raise InvalidArgument(f"{op}: output_size must have {n} or {n + 2} elements, "
                                  f"got {len(shape)}: {tuple(output_size)!r}")
        out = arithmetic.normalize_tuple(shape, n, f"{op}: output_size")
        for dim, (o, d, s) in enumerate(zip(out, default, ss)):
            if not d - s < o < d + s:
                raise InvalidArgument(
                    f"{op}: output_size {out} is invalid: dim {dim} must be strictly "
                    f"between {d - s} and {d + s} (default size {d}, stride {s})")
    return _unpool(op, x, indices, out, "torch", added)


@_doc(_fmt(_MAX_POOL_DOC, 1), 1)
def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    return _max_pool_nd("max_pool1d", 1, x, kernel_size, stride, padding, dilation,
                        ceil_mode, return_indices)


@_doc(_fmt(_MAX_POOL_DOC, 2), 2)
def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    return _max_pool_nd("max_pool2d", 2, x, kernel_size, stride, padding, dilation,
                        ceil_mode, return_indices)


@_doc(_fmt(_MAX_POOL_DOC, 3), 3)
def max_pool3d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    return _max_pool_nd("max_pool3d", 3, x, kernel_size, stride, padding, dilation,
                        ceil_mode, return_indices)


@_doc(_fmt(_AVG_POOL_DOC, 1), 1)
def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    return _avg_pool_nd("avg_pool1d", 1, x, kernel_size, stride, padding, ceil_mode,
                        count_include_pad, divisor_override)


@_doc(_fmt(_AVG_POOL_DOC, 2), 2)
def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    return _avg_pool_nd("avg_pool2d", 2, x, kernel_size, stride, padding, ceil_mode,
                        count_include_pad, divisor_override)


@_doc(_fmt(_AVG_POOL_DOC, 3), 3)
def avg_pool3d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    return _avg_pool_nd("avg_pool3d", 3, x, kernel_size, stride, padding, ceil_mode,
                        count_include_pad, divisor_override)


@_doc(_fmt(_LP_POOL_DOC, 1), 1)
def lp_pool1d(x, norm_type, kernel_size, stride=None, ceil_mode=False):
    return _lp_pool_nd("lp_pool1d", 1, x, norm_type, kernel_size, stride, ceil_mode)


@_doc(_fmt(_LP_POOL_DOC, 2), 2)
def lp_pool2d(x, norm_type, kernel_size, stride=None, ceil_mode=False):
    return _lp_pool_nd("lp_pool2d", 2, x, norm_type, kernel_size, stride, ceil_mode)


@_doc(_fmt(_LP_POOL_DOC, 3), 3)
def lp_pool3d(x, norm_type, kernel_size, stride=None, ceil_mode=False):
    return _lp_pool_nd("lp_pool3d", 3, x, norm_type, kernel_size, stride, ceil_mode)


@_doc(_fmt(_ADAPTIVE_AVG_DOC, 1), 1)
def adaptive_avg_pool1d(x, output_size):
    return _adaptive_nd("adaptive_avg_pool1d", 1, x, output_size, False, False)


@_doc(_fmt(_ADAPTIVE_AVG_DOC, 2), 2)
def adaptive_avg_pool2d(x, output_size):
    return _adaptive_nd("adaptive_avg_pool2d", 2, x, output_size, False, False)


@_doc(_fmt(_ADAPTIVE_AVG_DOC, 3), 3)
def adaptive_avg_pool3d(x, output_size):
    return _adaptive_nd("adaptive_avg_pool3d", 3, x, output_size, False, False)


@_doc(_fmt(_ADAPTIVE_MAX_DOC, 1), 1)
def adaptive_max_pool1d(x, output_size, return_indices=False):
    return _adaptive_nd("adaptive_max_pool1d", 1, x, output_size, True, return_indices)


@_doc(_fmt(_ADAPTIVE_MAX_DOC, 2), 2)
def adaptive_max_pool2d(x, output_size, return_indices=False):
    return _adaptive_nd("adaptive_max_pool2d", 2, x, output_size, True, return_indices)


@_doc(_fmt(_ADAPTIVE_MAX_DOC, 3), 3)
def adaptive_max_pool3d(x, output_size, return_indices=False):
    return _adaptive_nd("adaptive_max_pool3d", 3, x, output_size, True, return_indices)


@_doc(_fmt(_MAX_UNPOOL_DOC, 1), 1)
def max_unpool1d(x, indices, kernel_size, stride=None, padding=0, output_size=None):
    return _max_unpool_nd("max_unpool1d", 1, x, indices, kernel_size, stride, padding,
                          output_size)


@_doc(_fmt(_MAX_UNPOOL_DOC, 2), 2)
def max_unpool2d(x, indices, kernel_size, stride=None, padding=0, output_size=None):
    return _max_unpool_nd("max_unpool2d", 2, x, indices, kernel_size, stride, padding,
                          output_size)


@_doc(_fmt(_MAX_UNPOOL_DOC, 3), 3)
def max_unpool3d(x, indices, kernel_size, stride=None, padding=0, output_size=None):
    return _max_unpool_nd("max_unpool3d", 3, x, indices, kernel_size, stride, padding,
                          output_size)


def _global_plan(op, is_max, context):
    return _cached_plan((op, is_max), context,
                        lambda context: GlobalPoolPlan(is_max, op=op, context=context))


def bind_global_pool(x_shape, is_max, *, op="global_pool", context=None):
    """:func:`global_avg_pool` (``is_max`` false) or :func:`global_max_pool` bound to one
    input shape, with the checks done once (a memory planner's step):
    ``GlobalPoolPlan(is_max, op=op, context=context).bind(x_shape)``.

    Parameters
    ----------
    x_shape : tuple of int
        (N, C, *spatial), 1 to 6 spatial dims, none empty.
    is_max : bool
    context : pyconv.ExecutionContext, optional
        Threads and ISA of the kernels (None: the process defaults).

    Returns
    -------
    call : callable
        ``call(x)`` returns a new float32 (N, C, 1, ..., 1) array, or None without
        computing anything when x is not a float32 aligned C-contiguous array of
        ``x_shape`` (the caller then takes the general entry point).
    """
    return GlobalPoolPlan(is_max, op=op, context=context).bind(x_shape)


def global_avg_pool(x, *, context=None):
    """Mean over all spatial dims, kept as size-1 dims (ONNX ``GlobalAveragePool``).

    Accumulates in double precision.

    Parameters
    ----------
    x : ndarray, shape (N, C, *spatial), float32
        Any number (>= 1) of spatial dims.
    context : pyconv.ExecutionContext, optional
        Threads and ISA of the kernels (None: the process defaults).

    Returns
    -------
    ndarray, shape (N, C, 1, ..., 1), float32
    """
    return _global_plan("global_avg_pool", False, context).run(x)


def global_max_pool(x, *, context=None):
    """Max over all spatial dims, kept as size-1 dims (ONNX ``GlobalMaxPool``).

    NaN propagates.

    Parameters
    ----------
    x : ndarray, shape (N, C, *spatial), float32
        Any number (>= 1) of spatial dims.
    context : pyconv.ExecutionContext, optional
        Threads and ISA of the kernels (None: the process defaults).

    Returns
    -------
    ndarray, shape (N, C, 1, ..., 1), float32
    """
    return _global_plan("global_max_pool", True, context).run(x)
