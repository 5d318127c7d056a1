"""Gemm and MatMul on the pyconv GEMM engine (float32): a constant right operand is a
:class:`pyconv.functional.LinearPlan` (the plan of ``nn.Linear`` and
``functional.linear``), two dynamic operands go to :func:`pyconv.functional.matmul`."""
from __future__ import annotations

import numpy as np

from pyconv._ext import gemm
from pyconv.errors import PyconvError, ShapeError
from pyconv.functional import LinearPlan, matmul
from pyconv.ops._base import Op, bound_step, register, wrap_errors


def _fitting_out(out, shape, *inputs):
    """out when it is a C-contiguous aligned writeable float32 array of shape that shares
    no memory with the inputs (a planned buffer), else None."""
    if (out is None or out.shape != shape or out.dtype != np.float32
            or not out.flags.c_contiguous or not out.flags.aligned
            or not out.flags.writeable):
        return None
    if any(np.may_share_memory(out, x) for x in inputs):
        return None
    return out


@register("Gemm")
class Gemm(Op):
    """``Y = alpha * A' @ B' + beta * C`` (opsets 7-13; C optional from 11).

    A constant B is a :class:`LinearPlan` made once: the weight B' (transB applied), alpha
    as the product's scale and ``beta * C`` as the fused bias when C is one value per
    output column or a scalar; any other C ((M, 1) per row, (M, N) full) is added
    after."""
    attributes = {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}
    required_inputs = 2
    supports_out = True

    def setup(self, consts):
        self.alpha = float(self.attrs["alpha"])
        self.beta = float(self.attrs["beta"])
        self.trans_a = bool(int(self.attrs["transA"]))
        self.trans_b = bool(int(self.attrs["transB"]))
        has_c = len(self.node.inputs) > 2 and bool(self.node.inputs[2])
        self.plan = None
        self.addend = None          # beta * C added after the plan (a constant C)
        if 1 in consts and (not has_c or 2 in consts):
            bias, self.addend, c_shape = (self._c_terms(consts[2]) if has_c
                                          else (None, None, None))
            self.plan = self._make_plan(consts[1], bias, c_shape, prepack=True)

    def _c_terms(self, c):
        """C split into (bias, addend, C's shape): ``beta * C`` as the plan's bias when C
        is a scalar or one value per output column (bias of 1 or N values), else as an
        addend."""
        c = self.float32(c, 2)
        if c.ndim > 2:
            self.fail(f"C '{self.input_name(2)}' has shape {c.shape}; it must broadcast to "
                      f"the 2-D output", ShapeError)
        scaled = np.float32(self.beta) * c
        if c.ndim < 2 or c.shape[0] == 1:
            return scaled.reshape(-1), None, c.shape
        return None, scaled, c.shape

    def _make_plan(self, b, bias, c_shape, prepack):
        b = self.float32(b, 1)
        if b.ndim != 2:
            self.fail(f"B '{self.input_name(1)}' must be 2-D, got shape {b.shape}",
                      ShapeError)
        weight = b if self.trans_b else b.T         # (N, K)
        n = weight.shape[0]
        if bias is not None and bias.shape != (n,):
            if bias.shape != (1,):
                self.fail(f"C '{self.input_name(2)}' has shape {c_shape}, not broadcastable "
                          f"to an output of {n} columns", ShapeError)
            bias = np.full(n, bias[0], np.float32)
        return wrap_errors(self, LinearPlan, weight, bias, alpha=self.alpha,
                           op=self.node.label, context=self.context, prepack=prepack)

    def run(self, inputs, out=None):
        a = self.float32(inputs[0])
        if a.ndim != 2:
            self.fail(f"A '{self.input_name(0)}' must be 2-D, got shape {a.shape}",
                      ShapeError)
        x = a.T if self.trans_a else a
        plan, addend = self.plan, self.addend
        if plan is None:
            c = inputs[2] if len(inputs) > 2 else None
            bias, addend, c_shape = self._c_terms(c) if c is not None else (None, None, None)
            plan = self._make_plan(inputs[1], bias, c_shape, prepack=False)
        m, n = x.shape[0], plan.out_features
        if x.shape[1] != plan.in_features:
            self.fail(f"inner dims differ: A' (A '{self.input_name(0)}' {a.shape}, transA="
                      f"{int(self.trans_a)}) has {x.shape[1]} columns, B' has "
                      f"{plan.in_features} rows (transB={int(self.trans_b)})", ShapeError)
        if addend is not None and (addend.shape[0] not in (1, m)
                                   or addend.shape[1] not in (1, n)):
            self.fail(f"C '{self.input_name(2)}' has shape {addend.shape}, not broadcastable "
                      f"to the output ({m}, {n})", ShapeError)
        out = _fitting_out(out, (m, n), x, *(() if addend is None else (addend,)))
        y = wrap_errors(self, plan.run, x, out)
        if x.shape[1] == 0 and not np.isfinite(self.alpha):
            # K = 0: alpha times an empty sum is NaN for alpha NaN or inf (the plan folds
            # alpha into a product that is never computed).
            y.fill(np.nan)
        if addend is not None:
            np.add(y, addend, out=y)
        return [y]

    def bind(self, specs, out):
        """The plan bound to the planned input shape and ``out``
        (:meth:`pyconv.functional.LinearPlan.bind`): constant B, C absent or fused, A not
        transposed."""
        if (self.plan is None or self.trans_a or self.addend is not None or specs[0] is None
                or specs[0][1] != np.float32 or len(specs[0][0]) != 2
                or specs[0][0][1] == 0):
            return None
        try:
            call = self.plan.bind(specs[0][0], out)
        except PyconvError:
            return None
        return bound_step(call, self, out)


@register("MatMul")
class MatMul(Op):
    """NumPy ``matmul`` semantics. A constant 2-D right operand B is the weight of a
    :class:`LinearPlan` (B.T), whatever the left operand's leading dims; two dynamic
    operands run :func:`pyconv.functional.matmul` (batched packed GEMM)."""
    required_inputs = 2
    supports_out = True

    def setup(self, consts):
        self.plan = None
        b = consts.get(1)
        if b is not None and b.ndim == 2 and b.dtype == np.float32:
            self.plan = wrap_errors(self, LinearPlan, b.T, op=self.node.label,
                                    context=self.context)

    def run(self, inputs, out=None):
        a = self.float32(inputs[0])
        if a.ndim == 0:
            self.fail(f"A '{self.input_name(0)}' must have at least one dim", ShapeError)
        if self.plan is not None:
            if a.shape[-1] != self.plan.in_features:
                self.fail(f"inner dims differ: A {a.shape}, B ({self.plan.in_features}, "
                          f"{self.plan.out_features})", ShapeError)
            out = _fitting_out(out, a.shape[:-1] + (self.plan.out_features,), a)
            return [wrap_errors(self, self.plan.run, a, out)]
        b = self.float32(inputs[1], 1)
        if out is not None:
            try:
                out = _fitting_out(out, gemm.matmul_shape(a.shape, b.shape), a, b)
            except ShapeError:
                out = None          # matmul says why
        return [wrap_errors(self, matmul, a, b, out=out, context=self.context)]

    def bind(self, specs, out):
        """A constant B: the plan bound to the planned input shape and ``out``
        (:meth:`pyconv.functional.LinearPlan.bind`). Two dynamic operands: a
        :class:`pyconv._ext.gemm.MatmulCall`, the product into ``out`` while the inputs
        keep their planned shapes."""
        if specs[0] is None or specs[0][1] != np.float32 or not specs[0][0]:
            return None
        if self.plan is not None:
            try:
                call = self.plan.bind(specs[0][0], out)
            except PyconvError:
                return None
            return bound_step(call, self, out)
        if specs[1] is None or specs[1][1] != np.float32 or not specs[1][0]:
            return None
        try:
            return gemm.MatmulCall(specs[0][0], specs[1][0], out, self.run, self.context)
        except PyconvError:
            return None         # an empty product: the run
