"""Activations and softmax.

The float32 activations run :func:`pyconv._ext.gemm.apply_activation`, the very code of
the fused convolution epilogue (so fusing an activation into a Conv changes nothing)."""
from __future__ import annotations

import math

import numpy as np

from pyconv import functional as F
from pyconv._activations import ACTIVATIONS
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
    """An element-wise activation of the fused epilogue: its ONNX attributes, defaults and
    parameters come from the registry entry ``activation``."""
    activation = ACTIVATIONS["none"]
    supports_out = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.attributes = cls.activation.onnx_attributes

    def setup(self, consts):
        self.alpha, self.beta = self.activation.params(self.attrs)

    def run(self, inputs, out=None):
        return [activate(self, inputs[0], self.activation.name, self.alpha, self.beta, out)]


@register("Relu")
class Relu(_Activation):
    activation = ACTIVATIONS["relu"]

    def run(self, inputs, out=None):
        x = inputs[0]
        if x.dtype != np.float32 and x.dtype.kind in "if":
            return [np.maximum(x, np.zeros((), x.dtype))]
        return super().run(inputs, out)


@register("LeakyRelu")
class LeakyRelu(_Activation):
    activation = ACTIVATIONS["leaky_relu"]


@register("Elu")
class Elu(_Activation):
    activation = ACTIVATIONS["elu"]


@register("Sigmoid")
class Sigmoid(_Activation):
    activation = ACTIVATIONS["sigmoid"]


@register("Tanh")
class Tanh(_Activation):
    activation = ACTIVATIONS["tanh"]


@register("HardSwish")
class HardSwish(_Activation):
    activation = ACTIVATIONS["hardswish"]


@register("HardSigmoid")
class HardSigmoid(_Activation):
    activation = ACTIVATIONS["hardsigmoid"]


@register("Clip")
class Clip(Op):
    """Clip: bounds are attributes up to opset 10, optional inputs from 11."""
    attributes = {"min": None, "max": None}
    supports_out = True

    def bounds(self, inputs):
        if not ACTIVATIONS["clip"].takes_inputs(self.opset):
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
        lo, hi = ACTIVATIONS["clip"].params({"min": lo, "max": hi})
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
