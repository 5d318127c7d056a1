"""Element-wise arithmetic with NumPy broadcasting (opset 7+ semantics), any dtype.

float32 runs the element-wise engine (:mod:`pyconv._ext.eltwise`: SIMD kernels, threads on
large tensors, bound to planned buffers) where it covers the broadcast (scalar, same
shape, one block of dims such as a per-channel vector); NumPy does the rest."""
from __future__ import annotations

import math

import numpy as np

from pyconv._ext import eltwise
from pyconv.arithmetic import check_tensor_size
from pyconv.errors import ShapeError
from pyconv.ops._base import Op, register
from pyconv.ops.activation import bind_unary, planned_out


def _broadcast(op, arrays):
    """The broadcast output shape, checked by the size gate (inputs of a few elements
    can broadcast to an absurd output)."""
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        op.fail("inputs " + ", ".join(f"'{op.input_name(i)}' {a.shape}"
                                      for i, a in enumerate(arrays))
                + " cannot be broadcast together", ShapeError)
    return check_tensor_size(shape, op.node.label)


def _same_dtype(op, arrays):
    d = arrays[0].dtype
    for i, a in enumerate(arrays[1:], 1):
        if a.dtype != d:
            op.fail(f"input '{op.input_name(i)}' has dtype {a.dtype}, input "
                    f"'{op.input_name(0)}' has {d}; ONNX requires the same type")
    return d


class _Binary(Op):
    required_inputs = 2
    ufunc = None
    #: The engine's name of the operation (pyconv._ext.eltwise.BINARY).
    function = None
    supports_out = True

    def run(self, inputs, out=None):
        a, b = inputs[0], inputs[1]
        dtype = _same_dtype(self, (a, b))
        if dtype == np.float32:
            y = eltwise.binary(a, b, self.function, out, self.context)
            if y is not None:
                return [y]
        shape = _broadcast(self, (a, b))
        if out is not None and out.shape == shape and out.dtype == dtype:
            return [type(self).ufunc(a, b, out=out)]
        return [np.asarray(type(self).ufunc(a, b))]

    def bind(self, specs, out):
        return bind_binary(self, specs, out, self.function)


def bind_binary(op, specs, out, function):
    """The bound step of a float32 binary op whose broadcast the engine takes, or None."""
    if (len(specs) != 2 or any(sp is None or sp[1] != np.float32 for sp in specs)
            or eltwise.binary_layout(specs[0][0], specs[1][0]) is None):
        return None
    return eltwise.BinaryCall(function, specs[0][0], specs[1][0], out, op.run, op.context)


@register("Add")
class Add(_Binary):
    function = "add"
    ufunc = np.add


@register("Sub")
class Sub(_Binary):
    function = "sub"
    ufunc = np.subtract


@register("Mul")
class Mul(_Binary):
    function = "mul"
    ufunc = np.multiply


@register("Div")
class Div(_Binary):
    function = "div"
    ufunc = np.divide

    def run(self, inputs, out=None):
        a, b = inputs
        if a.dtype.kind in "iu" and b.dtype.kind in "iu":
            _same_dtype(self, (a, b))
            _broadcast(self, (a, b))
            if np.any(b == 0):
                self.fail("integer division by zero")
            # C semantics: truncate toward zero (NumPy floors).
            q = np.floor_divide(a, b)
            fix = (q < 0) & (q * b != a)
            return [(q + fix).astype(a.dtype)]
        return super().run(inputs, out)


@register("Pow")
class Pow(Op):
    """``x ** y``; the result has the type of ``x`` (exponent types may differ)."""
    required_inputs = 2
    supports_out = True

    def run(self, inputs, out=None):
        x, y = inputs
        _broadcast(self, (x, y))
        if x.dtype == np.float32 and y.dtype.kind in "fiu":
            # a scalar exponent 2 or 0.5 is a vector loop in the engine, others powf
            r = eltwise.binary(x, y.astype(np.float32, copy=False), "pow", out, self.context)
            if r is not None:
                return [r]
        if x.dtype == y.dtype:
            return [np.asarray(np.power(x, y))]
        if x.dtype.kind == "f":
            return [np.power(x, y.astype(x.dtype)).astype(x.dtype, copy=False)]
        return [np.power(x.astype(np.float64), y.astype(np.float64)).astype(x.dtype)]

    def bind(self, specs, out):
        return bind_binary(self, specs, out, "pow")


class _Unary(Op):
    """A unary op: the engine's ``function`` on float32, the NumPy ``ufunc`` otherwise."""
    ufunc = None
    function = None
    supports_out = True

    def run(self, inputs, out=None):
        x = inputs[0]
        if x.dtype == np.float32:
            return [eltwise.unary(x, self.function, 0.0, 0.0, planned_out(out, x),
                                  self.context)]
        if out is not None and out.shape == x.shape and out.dtype == x.dtype:
            return [type(self).ufunc(x, out=out)]
        return [np.asarray(type(self).ufunc(x))]

    def bind(self, specs, out):
        return bind_unary(self, specs, out, self.function)


@register("Sqrt")
class Sqrt(_Unary):
    function = "sqrt"
    ufunc = np.sqrt


@register("Exp")
class Exp(_Unary):
    function = "exp"
    ufunc = np.exp


@register("Log")
class Log(_Unary):
    function = "log"
    ufunc = np.log


@register("Neg")
class Neg(_Unary):
    function = "neg"
    ufunc = np.negative


@register("Abs")
class Abs(_Unary):
    function = "abs"
    ufunc = np.abs


@register("Reciprocal")
class Reciprocal(_Unary):
    function = "reciprocal"
    ufunc = np.reciprocal


def _erf_any(x, out=None):
    """erf on non-float32 inputs (float64 / float16 / ints), through Python's math.erf."""
    y = np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype, copy=False)
    if out is not None:
        out[...] = y
        return out
    return y


@register("Erf")
class Erf(_Unary):
    function = "erf"
    ufunc = staticmethod(_erf_any)


class _Variadic(Op):
    ufunc = None
    #: The engine's operation for two float32 inputs, if any.
    function = None

    def run(self, inputs, out=None):
        arrays = [a for a in inputs if a is not None]
        if not arrays:
            self.fail("needs at least one input")
        if (self.function and len(arrays) == 2 and arrays[0].dtype == np.float32
                and arrays[1].dtype == np.float32):
            y = eltwise.binary(arrays[0], arrays[1], self.function, out, self.context)
            if y is not None:
                return [y]
        _same_dtype(self, arrays)
        shape = _broadcast(self, arrays)
        y = np.array(np.broadcast_to(arrays[0], shape))
        for a in arrays[1:]:
            type(self).ufunc(y, a, out=y)
        return [self.finish(y, len(arrays))]

    def finish(self, y, n):
        return y


@register("Sum")
class Sum(_Variadic):
    ufunc = np.add
    function = "add"
    supports_out = True

    def run(self, inputs, out=None):
        arrays = [a for a in inputs if a is not None]
        if len(arrays) == 2 and out is not None:
            _same_dtype(self, arrays)
            y = super().run(inputs, out) if arrays[0].dtype == np.float32 else None
            if y is not None and y[0] is out:
                return y
            if out.shape == _broadcast(self, arrays) and out.dtype == arrays[0].dtype:
                return [np.add(arrays[0], arrays[1], out=out)]
        return super().run(inputs)

    def bind(self, specs, out):
        return bind_binary(self, specs, out, "add")


@register("Mean")
class Mean(_Variadic):
    ufunc = np.add

    def finish(self, y, n):
        y /= np.asarray(n, y.dtype)
        return y


@register("Max")
class Max(_Variadic):
    ufunc = np.maximum
    function = "max"


@register("Min")
class Min(_Variadic):
    ufunc = np.minimum
    function = "min"


@register("Equal")
class Equal(Op):
    required_inputs = 2
    def run(self, inputs, out=None):
        a, b = inputs
        _broadcast(self, (a, b))
        return [np.asarray(np.equal(a, b))]


@register("Where")
class Where(Op):
    required_inputs = 3
    def run(self, inputs, out=None):
        c, x, y = inputs
        _broadcast(self, (c, x, y))
        if c.dtype != np.bool_:
            self.fail(f"condition '{self.input_name(0)}' must be bool, got {c.dtype}")
        return [np.asarray(np.where(c, x, y))]
