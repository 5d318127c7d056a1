"""Gemm and MatMul on the pyconv GEMM engine (float32), through the same
:func:`pyconv.functional.linear` path as ``nn.Linear``."""
from __future__ import annotations

import math
import threading

import numpy as np

from pyconv._ext import gemm
from pyconv.arithmetic import check_tensor_size
from pyconv.errors import ShapeError
from pyconv.functional._misc import _GEMV_MAX_ROWS, _linear_checked
from pyconv.ops._base import Op, bound_step, register, wrap_errors

#: Largest m * k * n of the matrices of a batched MatMul that NumPy multiplies (measured:
#: [8, 26, 64] x [8, 64, 26] 16 us in NumPy, 260 us as packed GEMMs, 67 us onnxruntime;
#: at 64^3 NumPy still led). Small enough that OpenBLAS stays on one thread.
_SMALL_BATCHED = 64 * 64 * 64


class _Linear(Op):
    """A product ``x @ weight.T + bias`` whose constant weight is packed on first need
    (batch-1 inference uses the GEMV path on the plain weight, so nothing is packed)."""
    required_inputs = 2

    def init_linear(self):
        self._packed = None
        self._lock = threading.Lock()

    def packed(self, weight, rows):
        if rows <= _GEMV_MAX_ROWS:
            return None
        if self._packed is None:
            with self._lock:
                if self._packed is None:
                    self._packed = gemm.PackedMatrix(weight, self.context)
        return self._packed

    def linear(self, x, weight, bias, const):
        rows = math.prod(x.shape[:-1])
        packed = self.packed(weight, rows) if const else None
        return wrap_errors(self, _linear_checked, x, weight, bias, packed, self.node.label,
                           self.context)


@register("Gemm")
class Gemm(_Linear):
    """``alpha * A' @ B' + beta * C`` (opsets 7-13; C optional from 11)."""
    attributes = {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}

    def setup(self, consts):
        self.init_linear()
        self.alpha = float(self.attrs["alpha"])
        self.beta = float(self.attrs["beta"])
        self.weight = None
        self.bias = None
        self.c_const = False
        if 1 in consts:
            self.weight = self._weight(consts[1])
        if len(self.node.inputs) > 2 and self.node.inputs[2] and 2 in consts:
            self.bias = self._bias(consts[2])
            self.c_const = True

    def _weight(self, b):
        self.float32(b, 1)
        if b.ndim != 2:
            self.fail(f"B '{self.input_name(1)}' must be 2-D, got shape {b.shape}",
                      ShapeError)
        w = b if int(self.attrs["transB"]) else b.T
        if self.alpha != 1.0:
            w = w * np.float32(self.alpha)
        return np.ascontiguousarray(w, np.float32)

    def _bias(self, c):
        """C as a bias vector when it is one value per output column, else None."""
        if c.dtype == np.float32 and (c.ndim == 1 or (c.ndim == 2 and c.shape[0] == 1)):
            return np.ascontiguousarray(c.reshape(-1) * np.float32(self.beta))
        return None

    def bind(self, specs, out):
        """Batch-1 inference: the GEMV rows bound to the planned input shape, for a
        constant B and a C that is absent or a constant per-column bias."""
        if (self.weight is None or specs[0] is None or specs[0][1] != np.float32
                or int(self.attrs["transA"]) or len(specs[0][0]) != 2
                or specs[0][0][0] > _GEMV_MAX_ROWS or specs[0][0][1] != self.weight.shape[1]
                or self.weight.shape[1] == 0):
            return None
        has_c = len(specs) > 2 and specs[2] is not None
        if has_c and (self.bias is None or self.bias.shape != self.weight.shape[:1]):
            return None
        kernel = gemm.bind_linear(self.weight, self.bias if has_c else None, specs[0][0],
                                  self.context)
        if kernel is None:
            return None
        return bound_step(kernel, self, out)

    def run(self, inputs, out=None):
        a = self.float32(inputs[0])
        if a.ndim != 2:
            self.fail(f"A '{self.input_name(0)}' must be 2-D, got shape {a.shape}",
                      ShapeError)
        x = a.T if int(self.attrs["transA"]) else a
        const = self.weight is not None
        w = self.weight if const else self._weight(inputs[1])
        c = inputs[2] if len(inputs) > 2 else None
        bias = self.bias if self.c_const else (self._bias(c) if c is not None else None)
        if bias is not None and bias.shape[0] not in (w.shape[0], 1):
            self.fail(f"C has shape {c.shape}, not broadcastable to the output "
                      f"({x.shape[0]}, {w.shape[0]})", ShapeError)
        if bias is not None and bias.shape[0] == 1 and w.shape[0] != 1:
            bias = np.full(w.shape[0], bias[0], np.float32)
        y = self.linear(x, w, bias, const)
        if x.shape[1] == 0 and not np.isfinite(self.alpha):
            # K = 0: alpha times an empty sum, NaN for alpha NaN or inf (folded into the
            # empty B, alpha would be lost).
            y = np.full(y.shape, np.nan, np.float32)
        if c is not None and bias is None:
            try:
                y = y + np.float32(self.beta) * c
            except ValueError:
                self.fail(f"C has shape {c.shape}, not broadcastable to the output "
                          f"{y.shape}", ShapeError)
        return [y.astype(np.float32, copy=False)]


@register("MatMul")
class MatMul(_Linear):
    """NumPy ``matmul`` semantics; a constant 2-D right operand is a packed weight."""

    def setup(self, consts):
        self.init_linear()
        self.weight = None
        if 1 in consts and consts[1].ndim == 2 and consts[1].dtype == np.float32:
            self.weight = np.ascontiguousarray(consts[1].T)

    def run(self, inputs, out=None):
        a = self.float32(inputs[0])
        b = self.float32(inputs[1], 1)
        if a.ndim == 0 or b.ndim == 0:
            self.fail("MatMul inputs must have at least one dim", ShapeError)
        if b.ndim == 2:
            if a.shape[-1] != b.shape[0]:
                self.fail(f"inner dims differ: A {a.shape}, B {b.shape}", ShapeError)
            const = self.weight is not None
            return [self.linear(a, self.weight if const else b.T, None, const)]
        # Batched / vector right operand: one GEMM per broadcast matrix pair.
        a2 = a[None] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if a2.shape[-1] != b2.shape[-2]:
            self.fail(f"inner dims differ: A {a.shape}, B {b.shape}", ShapeError)
        try:
            batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        except ValueError:
            self.fail(f"batch dims of A {a.shape} and B {b.shape} do not broadcast",
                      ShapeError)
        check_tensor_size(batch + (a2.shape[-2], b2.shape[-1]), self.node.label)
        if a2.shape[-2] * a2.shape[-1] * b2.shape[-1] <= _SMALL_BATCHED:
            # Small matrices (attention in OCR recognisers): NumPy's matmul loops over the
            # batch in C; one packed GEMM per matrix costs more in calls than in math.
            return [np.matmul(a, b)]
        ab = np.broadcast_to(a2, batch + a2.shape[-2:])
        bb = np.broadcast_to(b2, batch + b2.shape[-2:])
        y = np.empty(batch + (a2.shape[-2], b2.shape[-1]), np.float32)
        for idx in np.ndindex(*batch):
            y[idx] = gemm.matmul(ab[idx], bb[idx], context=self.context)
        if a.ndim == 1:
            y = y[..., 0, :]
        if b.ndim == 1:
            y = y[..., 0]
        return [y]
