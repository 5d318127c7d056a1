"""Activations and softmax.

The float32 activations run :func:`pyconv._ext.gemm.apply_activation`, the very code of
the fused convolution epilogue (so fusing an activation into a Conv changes nothing)."""
from __future__ import annotations

import math

import numpy as np

from pyconv import functional as F
from pyconv._ext import gemm
from pyconv.ops._base import Op, register, wrap_errors


def activate(op, x, name, a=0.0, b=0.0, out=None):
    """``name`` applied to float32 ``x`` into ``out`` (planned buffer) or a new array."""
    x = op.float32(x)
    if out is None or out.shape != x.shape or out.dtype != np.float32 or \
            np.may_share_memory(out, x):
        out = np.array(x, dtype=np.float32, order="C", copy=True)
    else:
        np.copyto(out, x)
    return gemm.apply_activation(out, name, a, b, op.context)


class _Activation(Op):
    """An element-wise activation known to the fused epilogue."""
    act = "none"
    supports_out = True

    def params(self):
        return 0.0, 0.0

    def run(self, inputs, out=None):
        a, b = self.params()
        return [activate(self, inputs[0], self.act, a, b, out)]


@register("Relu")
class Relu(_Activation):
    act = "relu"

    def run(self, inputs, out=None):
        x = inputs[0]
        if x.dtype != np.float32 and x.dtype.kind in "if":
            return [np.maximum(x, np.zeros((), x.dtype))]
        return super().run(inputs, out)


@register("LeakyRelu")
class LeakyRelu(_Activation):
    act = "leaky_relu"
    attributes = {"alpha": 0.01}

    def params(self):
        return float(self.attrs["alpha"]), 0.0


@register("Elu")
class Elu(_Activation):
    act = "elu"
    attributes = {"alpha": 1.0}

    def params(self):
        return float(self.attrs["alpha"]), 0.0


@register("Sigmoid")
class Sigmoid(_Activation):
    act = "sigmoid"


@register("Tanh")
class Tanh(_Activation):
    act = "tanh"


@register("HardSwish")
class HardSwish(_Activation):
    act = "hardswish"


@register("HardSigmoid")
class HardSigmoid(_Activation):
    act = "hardsigmoid"
    attributes = {"alpha": 0.2, "beta": 0.5}

    def params(self):
        return float(self.attrs["alpha"]), float(self.attrs["beta"])


@register("Clip")
class Clip(Op):
    """Clip: bounds are attributes up to opset 10, optional inputs from 11."""
    attributes = {"min": None, "max": None}
    supports_out = True

    def bounds(self, inputs):
        if self.opset < 11:
            lo, hi = self.attrs["min"], self.attrs["max"]
        else:
            lo = inputs[1] if len(inputs) > 1 else None
            hi = inputs[2] if len(inputs) > 2 else None
            for name, v in (("min", lo), ("max", hi)):
                if v is not None and v.size != 1:
                    self.fail(f"{name} must be a scalar, got shape {v.shape}")
            lo = None if lo is None else lo.reshape(()).item()
            hi = None if hi is None else hi.reshape(()).item()
        return lo, hi

    def run(self, inputs, out=None):
        x = inputs[0]
        lo, hi = self.bounds(inputs)
        if x.dtype != np.float32:
            y = x.copy()
            if lo is not None:
                np.maximum(y, np.asarray(lo, x.dtype), out=y)
            if hi is not None:
                np.minimum(y, np.asarray(hi, x.dtype), out=y)
            return [y]
        lo = -np.inf if lo is None else float(lo)
        hi = np.inf if hi is None else float(hi)
        return [activate(self, x, "clip", lo, hi, out)]


@register("Selu")
class Selu(Op):
    """``gamma * elu(x, alpha)`` (the epilogue's ELU, then a scale)."""
    attributes = {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}

    def run(self, inputs, out=None):
        y = activate(self, inputs[0], "elu", float(self.attrs["alpha"]))
        y *= np.float32(self.attrs["gamma"])
        return [y]


@register("PRelu")
class PRelu(Op):
    """``x`` where positive, ``slope * x`` elsewhere (slope broadcast to x)."""
    required_inputs = 2

    def run(self, inputs, out=None):
        x, slope = inputs
        if slope.ndim == 1 and x.ndim > 2 and slope.shape[0] == x.shape[1] != x.shape[-1]:
            # Opset < 7 models (pytorch-converted): one slope per channel (axis 1).
            slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))
        return [np.where(x < 0, x * slope, x).astype(x.dtype, copy=False)]


@register("Softplus")
class Softplus(Op):
    """``log(1 + exp(x))``, computed without overflow."""

    def run(self, inputs, out=None):
        x = inputs[0]
        return [np.logaddexp(x, np.zeros((), x.dtype)).astype(x.dtype, copy=False)]


class _Softmax(Op):
    attributes = {"axis": None}
    fn = None

    def run(self, inputs, out=None):
        x = self.float32(inputs[0])
        axis = self.attrs["axis"]
        if self.opset < 13:
            # Opsets 1-12: the input is coerced to 2-D at `axis` (default 1).
            axis = self.check_axis(1 if axis is None else axis, x.ndim)
            rows = math.prod(x.shape[:axis])
            y = wrap_errors(self, type(self).fn, x.reshape(rows, -1), 1)
            return [y.reshape(x.shape)]
        axis = self.check_axis(-1 if axis is None else axis, x.ndim)
        return [wrap_errors(self, type(self).fn, x, axis)]


@register("Softmax")
class Softmax(_Softmax):
    fn = staticmethod(F.softmax)


@register("LogSoftmax")
class LogSoftmax(_Softmax):
    fn = staticmethod(F.log_softmax)
