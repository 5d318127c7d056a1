"""Reductions along axes (the Reduce* family, ArgMax / ArgMin, TopK, CumSum), any
numeric dtype, NumPy.

The reduced axes are an attribute up to opset 17 (ReduceSum: 12) and an optional input
from opset 18 (ReduceSum: 13); ``noop_with_empty_axes`` makes absent / empty axes the
identity instead of a reduction over every axis."""
from __future__ import annotations

import math

import numpy as np

from pyconv import functional as F
from pyconv.errors import InvalidDType, PyconvError, ShapeError
from pyconv.functional._pool import global_avg_pool
from pyconv.ops._base import Op, register
from pyconv.ops.tensor import _axes_from, _int_list, _resolved_for_plan


class _Reduce(Op):
    attributes = {"axes": None, "keepdims": 1, "noop_with_empty_axes": 0}
    axes_input_since = 18
    #: dtype kinds the op accepts ("b" bool, "iu" integers, "f" floats).
    kinds = "iuf"

    def setup(self, consts):
        self.consts = consts

    def run(self, inputs, out=None):
        x = inputs[0]
        if x.dtype.kind not in self.kinds:
            self.fail(f"input '{self.input_name(0)}' has dtype {x.dtype}, not supported by "
                      f"{self.node.op_type}", InvalidDType)
        axes = self._axes(x.ndim, inputs)
        keep = bool(self.attrs["keepdims"])
        if axes == ():
            # Reduced over no axis: the element-wise part still applies (ReduceL2
            # gives |x|, ReduceSumSquare x * x), as in onnxruntime.
            return [np.asarray(self.reduce(x, (), True))]
        return [np.asarray(self.reduce(x, axes, keep))]

    def _axes(self, rank, inputs):
        """The reduced axes, sorted and non-negative; () for the identity
        (``noop_with_empty_axes`` with no axes)."""
        axes = _axes_from(self, inputs, 1, since=self.axes_input_since)
        if not axes:
            if self.attrs["noop_with_empty_axes"] and (axes is not None
                                                       or self.opset >= self.axes_input_since):
                return ()
            axes = list(range(rank))
        return tuple(sorted({self.check_axis(a, rank) for a in axes}))


@register("ReduceSum")
class ReduceSum(_Reduce):
    axes_input_since = 13

    def reduce(self, x, axes, keep):
        return np.sum(x, axis=axes, keepdims=keep, dtype=x.dtype)


def _trailing(shape, axes):
    """Whether ``axes`` are all the dims after the first kept one (global pooling as the
    dynamo exporter writes it: ReduceMean over (2, 3) of NCHW)."""
    return bool(axes) and axes[0] > 0 and axes == tuple(range(axes[0], len(shape)))


@register("ReduceMean")
class ReduceMean(_Reduce):
    def reduce(self, x, axes, keep):
        if x.dtype == np.float32 and x.size and _trailing(x.shape, axes):
            # the global pool's kernel, which sums in float64; NumPy's mean took 10x
            # onnxruntime's time
            lead = x.shape[:axes[0]]
            y = global_avg_pool(x.reshape(1, math.prod(lead), -1), context=self.context)
            return y.reshape(lead + (1,) * len(axes) if keep else lead)
        if x.dtype.kind in "iu":
            return np.mean(x, axis=axes, keepdims=keep).astype(x.dtype)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.mean(x, axis=axes, keepdims=keep, dtype=x.dtype)

    def bind(self, specs, out):
        """Over trailing axes of a planned float32 shape: the global pool's bound kernel
        on a (1, leading, trailing) view, the axes resolved once (the unbound run cost
        16 us of Python per call on a 960 x 5 x 5 map against 9 us of pooling)."""
        resolved = _resolved_for_plan(self, specs, lambda shape, inputs: self._axes(
            len(shape), inputs))
        if resolved is None or specs[0][1] != np.float32:
            return None
        shape, axes = resolved
        if not _trailing(shape, axes) or 0 in shape:
            return None
        lead = shape[:axes[0]]
        flat = (1, math.prod(lead), math.prod(shape[axes[0]:]))
        y_shape = lead + (1,) * len(axes) if self.attrs["keepdims"] else lead
        try:
            kernel = F.GlobalPoolPlan(False, op=self.node.label,
                                      context=self.context).bind(flat)
        except (PyconvError, ValueError):
            return None
        run = self.run

        def call(inputs):
            x = inputs[0]
            if type(x) is np.ndarray and x.shape == shape:
                y = kernel(x.reshape(flat))
                if y is not None:
                    return [y.reshape(y_shape)]
            return run(inputs, out)
        return call


@register("ReduceMax")
class ReduceMax(_Reduce):
    kinds = "biuf"

    def reduce(self, x, axes, keep):
        if x.dtype == np.bool_:
            return np.any(x, axis=axes, keepdims=keep)
        init = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        return np.max(x, axis=axes, keepdims=keep, initial=init)


@register("ReduceMin")
class ReduceMin(_Reduce):
    kinds = "biuf"

    def reduce(self, x, axes, keep):
        if x.dtype == np.bool_:
            return np.all(x, axis=axes, keepdims=keep)
        init = np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).max
        return np.min(x, axis=axes, keepdims=keep, initial=init)


@register("ReduceProd")
class ReduceProd(_Reduce):
    def reduce(self, x, axes, keep):
        return np.prod(x, axis=axes, keepdims=keep, dtype=x.dtype)


@register("ReduceSumSquare")
class ReduceSumSquare(_Reduce):
    def reduce(self, x, axes, keep):
        return np.sum(np.square(x), axis=axes, keepdims=keep, dtype=x.dtype)


@register("ReduceL1")
class ReduceL1(_Reduce):
    def reduce(self, x, axes, keep):
        return np.sum(np.abs(x), axis=axes, keepdims=keep, dtype=x.dtype)


@register("ReduceL2")
class ReduceL2(_Reduce):
    def reduce(self, x, axes, keep):
        # Integer inputs: the root of the integer sum of squares, truncated (as ORT).
        work = x.dtype if x.dtype.kind == "f" else np.float64
        sq = np.sum(np.square(x.astype(work, copy=False)), axis=axes, keepdims=keep)
        return np.sqrt(sq).astype(x.dtype)


@register("ReduceLogSum")
class ReduceLogSum(_Reduce):
    kinds = "f"

    def reduce(self, x, axes, keep):
        with np.errstate(divide="ignore", invalid="ignore"):   # log(0) = -inf, as ORT
            return np.log(np.sum(x, axis=axes, keepdims=keep, dtype=x.dtype))


@register("ReduceLogSumExp")
class ReduceLogSumExp(_Reduce):
    """``log(sum(exp(x)))`` computed as ``m + log(sum(exp(x - m)))`` with ``m`` the
    maximum, so that large inputs do not overflow."""
    kinds = "f"

    def reduce(self, x, axes, keep):
        m = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
        m = np.where(np.isfinite(m), m, 0).astype(x.dtype)   # all -inf / empty: shift 0
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            y = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
        return y if keep else np.squeeze(y, axis=axes)


class _ArgReduce(Op):
    """ArgMax / ArgMin: int64 indices along ``axis``; the first extreme unless
    ``select_last_index`` (opset 12)."""
    attributes = {"axis": 0, "keepdims": 1, "select_last_index": 0}
    find = None

    def run(self, inputs, out=None):
        x = inputs[0]
        if x.dtype.kind not in "iufb":
            self.fail(f"input dtype {x.dtype} is not supported", InvalidDType)
        if x.ndim == 0:
            self.fail("input must have at least one dim, got a scalar", ShapeError)
        axis = self.check_axis(self.attrs["axis"], x.ndim)
        n = x.shape[axis]
        if n == 0:
            self.fail(f"cannot take {self.node.op_type} along axis {axis} of size 0 (input "
                      f"shape {x.shape})", ShapeError)
        find = type(self).find
        if int(self.attrs["select_last_index"]):
            y = (n - 1) - find(np.flip(x, axis), axis=axis)
        else:
            y = find(x, axis=axis)
        y = y.astype(np.int64, copy=False)
        return [np.expand_dims(y, axis) if int(self.attrs["keepdims"]) else y]


@register("ArgMax")
class ArgMax(_ArgReduce):
    find = staticmethod(np.argmax)


@register("ArgMin")
class ArgMin(_ArgReduce):
    find = staticmethod(np.argmin)


@register("TopK")
class TopK(Op):
    """The ``k`` largest (or smallest) values along ``axis`` and their int64 indices,
    sorted; equal values in index order, lower first (as onnxruntime). ``k`` is an
    attribute up to opset 9, a one-element int64 input from opset 10."""
    attributes = {"axis": -1, "largest": 1, "sorted": 1, "k": None}
    required_inputs = staticmethod(lambda opset: 2 if opset >= 10 else 1)

    def run(self, inputs, out=None):
        x = inputs[0]
        if x.dtype.kind not in "iuf":
            self.fail(f"input dtype {x.dtype} is not supported", InvalidDType)
        if x.ndim == 0:
            self.fail("input must have at least one dim, got a scalar", ShapeError)
        axis = self.check_axis(self.attrs["axis"], x.ndim)
        if self.opset < 10:
            if self.attrs["k"] is None:
                self.fail("attribute 'k' is required before opset 10")
            k = int(self.attrs["k"])
        else:
            ks = _int_list(self, inputs[1], "K")
            if len(ks) != 1:
                self.fail(f"K must hold one value, got {ks}")
            k = ks[0]
        n = x.shape[axis]
        if not 0 <= k <= n:
            self.fail(f"k = {k} is out of range [0, {n}] for axis {axis} of input shape "
                      f"{x.shape}", ShapeError)
        if int(self.attrs["largest"]):
            # Descending with ties in ascending index order: a stable ascending sort of
            # the reversed axis, read backwards.
            rev = np.argsort(np.flip(x, axis), axis=axis, kind="stable")
            order = (n - 1) - np.flip(rev, axis)
        else:
            order = np.argsort(x, axis=axis, kind="stable")
        idx = np.take(order, np.arange(k), axis=axis).astype(np.int64, copy=False)
        return [np.take_along_axis(x, idx, axis=axis), idx]


@register("CumSum")
class CumSum(Op):
    """Cumulative sum along the axis given by a scalar input; ``exclusive`` leaves out
    the current element, ``reverse`` sums from the end."""
    required_inputs = 2
    attributes = {"exclusive": 0, "reverse": 0}

    def run(self, inputs, out=None):
        x = inputs[0]
        if x.dtype.kind not in "iuf":
            self.fail(f"input dtype {x.dtype} is not supported", InvalidDType)
        axes = _int_list(self, inputs[1], "axis")
        if len(axes) != 1 or np.ndim(inputs[1]) > 1:
            self.fail(f"axis must be a scalar, got {inputs[1]!r}")
        if x.ndim == 0:
            self.fail("input must have at least one dim, got a scalar", ShapeError)
        axis = self.check_axis(axes[0], x.ndim)
        reverse = bool(self.attrs["reverse"])
        t = np.flip(x, axis) if reverse else x
        y = np.cumsum(t, axis=axis, dtype=x.dtype)
        if int(self.attrs["exclusive"]):
            shifted = np.zeros_like(y)
            src = [slice(None)] * x.ndim
            dst = [slice(None)] * x.ndim
            src[axis], dst[axis] = slice(0, -1), slice(1, None)
            shifted[tuple(dst)] = y[tuple(src)]
            y = shifted
        return [np.flip(y, axis).copy() if reverse else y]
