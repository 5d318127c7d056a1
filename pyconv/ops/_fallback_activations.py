"""TEMPORARY NumPy Erf, Gelu and Mish, registered only where no real operator is (the real
kernels live in pyconv/ops/activation.py, on another branch): the optimizer rewrites
exporters' GELU / Mish idioms into these ONNX operators (and the idioms' unfused
graphs need Erf). Delete this module once
ops/activation.py registers both."""
from __future__ import annotations

import math

import numpy as np

from pyconv.ops._base import Op, lookup, register

_erf = np.frompyfunc(math.erf, 1, 1)


class _Float64Unary(Op):
    """Computes in float64, returns the input's dtype."""

    def run(self, inputs, out=None):
        x = self.float32(inputs[0])
        return [self.compute(x.astype(np.float64)).astype(np.float32)]


if lookup("Erf") is None:
    @register("Erf")
    class Erf(_Float64Unary):
        def compute(self, x):
            return _erf(x).astype(np.float64)


if lookup("Gelu") is None:
    @register("Gelu")
    class Gelu(_Float64Unary):
        attributes = {"approximate": "none"}

        def setup(self, consts):
            if self.attrs["approximate"] not in ("none", "tanh"):
                self.fail(f"approximate must be 'none' or 'tanh', got "
                          f"{self.attrs['approximate']!r}")

        def compute(self, x):
            if self.attrs["approximate"] == "tanh":
                inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
                return 0.5 * x * (1 + np.tanh(inner))
            return 0.5 * x * (1 + _erf(x / math.sqrt(2)).astype(np.float64))


if lookup("Mish") is None:
    @register("Mish")
    class Mish(_Float64Unary):
        def compute(self, x):
            return x * np.tanh(np.logaddexp(x, 0.0))
