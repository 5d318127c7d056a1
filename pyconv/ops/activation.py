"""Activations and softmax.

The float32 activations run the element-wise engine (:mod:`pyconv._ext.eltwise`), the
very code of the fused convolution epilogue (so fusing an activation into a Conv changes
nothing), and bind to planned buffers (:class:`pyconv._ext.eltwise.UnaryCall`)."""
from __future__ import annotations

import math

import numpy as np

from pyconv import functional as F
from pyconv._activations import ACTIVATIONS, onnx_activation
from pyconv._ext import eltwise
from pyconv.errors import InvalidModel, PyconvError
from pyconv.ops._base import Op, register, wrap_errors


def planned_out(out, x):
    """``out`` when the kernels may write it for input ``x`` (a float32 C-contiguous buffer
    of x's shape that is x or does not overlap it), else None (a new array)."""
    if (out is None or out.shape != x.shape or out.dtype != np.float32
            or not out.flags.c_contiguous or not out.flags.writeable):
        return None
    if out.ctypes.data != x.ctypes.data and np.may_share_memory(out, x):
        return None
    return out


def activate(op, x, name, a=0.0, b=0.0, out=None):
    """``name`` applied to float32 ``x`` into ``out`` (planned buffer) or a new array."""
    x = op.float32(x)
    return eltwise.unary(x, name, a, b, planned_out(out, x), op.context)


def bind_unary(op, specs, out, name, a=0.0, b=0.0):
    """The bound step of a float32 unary op (:meth:`Op.bind`), or None."""
    if specs[0] is None or specs[0][1] != np.float32:
        return None
    return eltwise.UnaryCall(name, specs[0][0], out, op.run, a, b, op.context)


class _Activation(Op):
    """An element-wise activation of the fused epilogue: its ONNX attributes, defaults and
    parameters come from the registry entry ``activation``."""
    activation = ACTIVATIONS["none"]
    supports_out = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.attributes = cls.activation.onnx_attributes

    def setup(self, consts):
        self.act = self.activation
        self.alpha, self.beta = self.act.params(self.attrs)

    def run(self, inputs, out=None):
        return [activate(self, inputs[0], self.act.name, self.alpha, self.beta, out)]

    def bind(self, specs, out):
        return bind_unary(self, specs, out, self.act.name, self.alpha, self.beta)


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

    def setup(self, consts):
        self.consts = consts

    def bind(self, specs, out):
        """Bounds from the attributes, or from inputs that are constants (as exporters
        write ReLU6), resolved once; computed bounds are read at each run."""
        if not ACTIVATIONS["clip"].takes_inputs(self.opset):
            lo, hi = ACTIVATIONS["clip"].params(self.attrs)
            return bind_unary(self, specs, out, "clip", lo, hi)
        given = [None]
        for i, spec in enumerate(specs[1:], 1):
            if spec is not None and i not in self.consts:
                return None
            given.append(None if spec is None else self.consts[i])
        try:
            lo, hi = self.bounds(given)
        except PyconvError:
            return None                 # the run reports it
        lo, hi = ACTIVATIONS["clip"].params({"min": lo, "max": hi})
        return bind_unary(self, specs, out, "clip", lo, hi)


@register("Selu")
class Selu(_Activation):
    activation = ACTIVATIONS["selu"]


@register("Softplus")
class Softplus(_Activation):
    activation = ACTIVATIONS["softplus"]

    def run(self, inputs, out=None):
        x = inputs[0]
        if x.dtype != np.float32 and x.dtype.kind == "f":
            return [np.logaddexp(x, np.zeros((), x.dtype)).astype(x.dtype, copy=False)]
        return super().run(inputs, out)


@register("Mish")
class Mish(_Activation):
    activation = ACTIVATIONS["mish"]


@register("Gelu")
class Gelu(_Activation):
    """GELU (opset 20): ``approximate="none"`` is the erf form, ``"tanh"`` the tanh one."""
    activation = ACTIVATIONS["gelu"]

    def setup(self, consts):
        act = onnx_activation("Gelu", self.attrs)
        if act is None:
            raise InvalidModel(f"{self.node.label}: attribute 'approximate' must be 'none' "
                               f"or 'tanh', got {self.attrs['approximate']!r}")
        self.act = act
        self.alpha, self.beta = act.params(self.attrs)


@register("PRelu")
class PRelu(Op):
    """``x`` where positive, ``slope * x`` elsewhere (slope broadcast to x)."""
    required_inputs = 2

    def run(self, inputs, out=None):
        x, slope = inputs
        if slope.ndim == 1 and x.ndim > 2 and slope.shape[0] == x.shape[1] != x.shape[-1]:
            # Opset < 7 models (pytorch-converted): one slope per channel (axis 1).
            slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))
        return [F._activation._prelu(x, slope)]


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
