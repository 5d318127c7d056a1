"""Element-wise arithmetic with NumPy broadcasting (opset 7+ semantics), any dtype."""
from __future__ import annotations

import numpy as np

from pyconv.errors import ShapeError
from pyconv.ops._base import Op, register


def _broadcast(op, arrays):
    try:
        return np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        op.fail("inputs " + ", ".join(f"'{op.input_name(i)}' {a.shape}"
                                      for i, a in enumerate(arrays))
                + " cannot be broadcast together", ShapeError)


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
    supports_out = True

    def run(self, inputs, out=None):
        a, b = inputs[0], inputs[1]
        dtype = _same_dtype(self, (a, b))
        shape = _broadcast(self, (a, b))
        if out is not None and out.shape == shape and out.dtype == dtype:
            return [type(self).ufunc(a, b, out=out)]
        return [np.asarray(type(self).ufunc(a, b))]


@register("Add")
class Add(_Binary):
    ufunc = np.add


@register("Sub")
class Sub(_Binary):
    ufunc = np.subtract


@register("Mul")
class Mul(_Binary):
    ufunc = np.multiply


@register("Div")
class Div(_Binary):
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

    def run(self, inputs, out=None):
        x, y = inputs
        _broadcast(self, (x, y))
        if x.dtype == y.dtype:
            return [np.asarray(np.power(x, y))]
        if x.dtype.kind == "f":
            return [np.power(x, y.astype(x.dtype)).astype(x.dtype, copy=False)]
        return [np.power(x.astype(np.float64), y.astype(np.float64)).astype(x.dtype)]


class _Unary(Op):
    ufunc = None
    supports_out = True

    def run(self, inputs, out=None):
        x = inputs[0]
        if out is not None and out.shape == x.shape and out.dtype == x.dtype:
            return [type(self).ufunc(x, out=out)]
        return [np.asarray(type(self).ufunc(x))]


@register("Sqrt")
class Sqrt(_Unary):
    ufunc = np.sqrt


@register("Exp")
class Exp(_Unary):
    ufunc = np.exp


@register("Log")
class Log(_Unary):
    ufunc = np.log


@register("Neg")
class Neg(_Unary):
    ufunc = np.negative


@register("Abs")
class Abs(_Unary):
    ufunc = np.abs


class _Variadic(Op):
    ufunc = None

    def run(self, inputs, out=None):
        arrays = [a for a in inputs if a is not None]
        if not arrays:
            self.fail("needs at least one input")
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
    supports_out = True

    def run(self, inputs, out=None):
        arrays = [a for a in inputs if a is not None]
        if len(arrays) == 2 and out is not None:
            _same_dtype(self, arrays)
            if out.shape == _broadcast(self, arrays) and out.dtype == arrays[0].dtype:
                return [np.add(arrays[0], arrays[1], out=out)]
        return super().run(inputs)


@register("Mean")
class Mean(_Variadic):
    ufunc = np.add

    def finish(self, y, n):
        y /= np.asarray(n, y.dtype)
        return y


@register("Max")
class Max(_Variadic):
    ufunc = np.maximum


@register("Min")
class Min(_Variadic):
    ufunc = np.minimum


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
