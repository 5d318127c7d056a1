"""Comparisons, logical operators, NaN / infinity tests, rounding and Mod, with NumPy
broadcasting (opset 7+ semantics). Comparisons and logic give bool tensors."""
from __future__ import annotations

import numpy as np

from pyconv.errors import InvalidDType
from pyconv.ops._base import Op, register
from pyconv.ops.elementwise import _broadcast, _same_dtype


class _Compare(Op):
    """``ufunc(a, b)`` of two tensors of the same numeric dtype -> bool."""
    required_inputs = 2
    ufunc = None
    kinds = "biuf"

    def run(self, inputs, out=None):
        a, b = inputs[0], inputs[1]
        dtype = _same_dtype(self, (a, b))
        if dtype.kind not in self.kinds:
            self.fail(f"inputs of dtype {dtype} are not supported", InvalidDType)
        _broadcast(self, (a, b))
        return [np.asarray(type(self).ufunc(a, b))]


@register("Less")
class Less(_Compare):
    ufunc = np.less


@register("LessOrEqual")
class LessOrEqual(_Compare):
    ufunc = np.less_equal


@register("Greater")
class Greater(_Compare):
    ufunc = np.greater


@register("GreaterOrEqual")
class GreaterOrEqual(_Compare):
    ufunc = np.greater_equal


@register("And")
class And(_Compare):
    ufunc = np.logical_and
    kinds = "b"


@register("Or")
class Or(_Compare):
    ufunc = np.logical_or
    kinds = "b"


@register("Xor")
class Xor(_Compare):
    ufunc = np.logical_xor
    kinds = "b"


class _UnaryOf(Op):
    """``ufunc(x)`` for inputs whose dtype kind is in ``kinds``."""
    ufunc = None
    kinds = "f"

    def run(self, inputs, out=None):
        x = inputs[0]
        if x.dtype.kind not in self.kinds:
            self.fail(f"input '{self.input_name(0)}' has dtype {x.dtype}, not supported by "
                      f"{self.node.op_type}", InvalidDType)
        return [np.asarray(self.apply(x))]

    def apply(self, x):
        return type(self).ufunc(x)


@register("Not")
class Not(_UnaryOf):
    ufunc = np.logical_not
    kinds = "b"


@register("IsNaN")
class IsNaN(_UnaryOf):
    ufunc = np.isnan


@register("IsInf")
class IsInf(_UnaryOf):
    attributes = {"detect_negative": 1, "detect_positive": 1}

    def apply(self, x):
        neg, pos = int(self.attrs["detect_negative"]), int(self.attrs["detect_positive"])
        if neg and pos:
            return np.isinf(x)
        if pos:
            return np.isposinf(x)
        if neg:
            return np.isneginf(x)
        return np.zeros(x.shape, np.bool_)


@register("Floor")
class Floor(_UnaryOf):
    ufunc = np.floor


@register("Ceil")
class Ceil(_UnaryOf):
    ufunc = np.ceil


@register("Round")
class Round(_UnaryOf):
    """Halves to even, as ONNX specifies (NumPy's rint)."""
    ufunc = np.rint


@register("Sign")
class Sign(_UnaryOf):
    ufunc = np.sign
    kinds = "iuf"


@register("Mod")
class Mod(Op):
    """Remainder: with the divisor's sign (Python's %) for ``fmod=0``, with the dividend's
    sign (C's fmod) for ``fmod=1``. Integer division by zero is refused; float division
    by zero gives NaN."""
    required_inputs = 2
    attributes = {"fmod": 0}

    def run(self, inputs, out=None):
        a, b = inputs[0], inputs[1]
        dtype = _same_dtype(self, (a, b))
        _broadcast(self, (a, b))
        if dtype.kind not in "iuf":
            self.fail(f"inputs of dtype {dtype} are not supported", InvalidDType)
        fmod = int(self.attrs["fmod"])
        if fmod not in (0, 1):
            self.fail(f"fmod must be 0 or 1, got {fmod}")
        if dtype.kind == "f":
            with np.errstate(invalid="ignore", divide="ignore"):   # x mod 0: NaN
                return [np.asarray(np.fmod(a, b) if fmod else np.mod(a, b))]
        if np.any(b == 0):
            self.fail(f"integer modulo by zero (divisor '{self.input_name(1)}')")
        return [np.asarray(np.fmod(a, b) if fmod else np.mod(a, b))]
