"""Operators the optimizer makes from exporter idioms (domain ``pyconv``): an epilogue
activation without an ONNX operator of its own (SiLU, written ``x * Sigmoid(x)`` by
exporters) and the squeeze-and-excitation block as one step."""
from __future__ import annotations

import math

import numpy as np

from pyconv._activations import ACTIVATIONS
from pyconv._ext import gemm, pool
from pyconv.errors import InvalidModel, ShapeError
from pyconv.ops._base import Op, register, take_out
from pyconv.ops.activation import activate, bind_unary


def _epilogue(op, prefix):
    """(name, alpha, beta) of the activation in attributes ``_pyconv_<prefix>...``."""
    name = op.attrs.get(f"_pyconv_{prefix}activation") or "none"
    if name not in ACTIVATIONS:
        op.fail(f"unknown activation {name!r}", InvalidModel)
    return (name, float(op.attrs.get(f"_pyconv_{prefix}alpha", 0.0)),
            float(op.attrs.get(f"_pyconv_{prefix}beta", 0.0)))


@register("Activation", domain="pyconv")
class Activation(Op):
    """An activation of the fused epilogue by name (``_pyconv_activation``, parameters
    ``_pyconv_alpha/_beta``): the C code a fused Conv runs."""
    supports_out = True

    def setup(self, consts):
        self.activation, self.alpha, self.beta = _epilogue(self, "")

    def run(self, inputs, out=None):
        return [activate(self, inputs[0], self.activation, self.alpha, self.beta, out)]

    def bind(self, specs, out):
        return bind_unary(self, specs, out, self.activation, self.alpha, self.beta)


@register("SqueezeExcite", domain="pyconv")
class SqueezeExcite(Op):
    """``x * gate(W2 @ act(W1 @ mean(x) + b1) + b2)``: a squeeze-and-excitation block
    (global average pool, two 1x1 convs with their activations, channel scaling) in one
    step. Inputs: x (N, C, *spatial), W1 (C', C), b1 (C',) or absent, W2 (C, C'), b2
    (C,) or absent, all constant but x; the activations are ``_pyconv_reduce_*`` and
    ``_pyconv_gate_*`` (epilogue names and parameters). The pooling is the
    GlobalAveragePool kernel, the scaling one C pass."""
    supports_out = True

    def setup(self, consts):
        if not all(i in consts for i in (1, 3)):
            self.fail("the weights must be constant", InvalidModel)
        w1 = np.asarray(consts[1], np.float32)
        w2 = np.asarray(consts[3], np.float32)
        if w1.ndim != 2:
            self.fail(f"W1 has shape {w1.shape}, expected (C', C)", InvalidModel)
        mid, channels = w1.shape
        if w2.shape != (channels, mid):
            self.fail(f"W2 has shape {w2.shape}, expected {(channels, mid)}", InvalidModel)
        self.channels = channels
        # The products in NumPy (its BLAS): a GEMV of pyconv's sums 1152 products in other
        # float chains, and the gate's rounding moves ill-conditioned exports (the zoo's
        # first EfficientNet / TinyNet) twice as far from onnxruntime.
        self.w1t = np.ascontiguousarray(w1.T)
        self.w2t = np.ascontiguousarray(w2.T)
        self.b1 = consts.get(2, np.zeros(mid, np.float32)).astype(np.float32).reshape(mid)
        self.b2 = consts.get(4, np.zeros(channels, np.float32)).astype(np.float32)
        self.b2 = self.b2.reshape(channels)
        self.reduce_act = _epilogue(self, "reduce_")
        self.gate_act = _epilogue(self, "gate_")

    def _gate(self, pooled):
        """The (N, C) gate of the (N, C) pooled means."""
        hidden = pooled @ self.w1t
        hidden += self.b1
        gemm.apply_activation(hidden, *self.reduce_act, self.context)
        gate = hidden @ self.w2t
        gate += self.b2
        gemm.apply_activation(gate, *self.gate_act, self.context)
        return gate

    def _check(self, x):
        if x.ndim < 3 or x.shape[1] != self.channels:
            self.fail(f"input '{self.input_name(0)}' has shape {x.shape}; expected "
                      f"(N, {self.channels}, *spatial)", ShapeError)
        if math.prod(x.shape[2:]) == 0:
            self.fail(f"input '{self.input_name(0)}' has shape {x.shape}: empty spatial "
                      f"dims have no mean", ShapeError)

    def run(self, inputs, out=None):
        x = self.float32(inputs[0])
        self._check(x)
        n, size = x.shape[0], math.prod(x.shape[2:])
        planes = np.ascontiguousarray(x).reshape(n * self.channels, size)
        pooled = pool.global_pool(planes, False, self.context).reshape(n, self.channels)
        gate = self._gate(pooled)
        y = take_out(out, x.shape)
        if np.may_share_memory(y, x):
            y = gemm.empty_aligned(x.shape, check=False)
        pool.scale_planes(planes, gate.reshape(-1), y.reshape(n * self.channels, size),
                          self.context)
        return [y]

    def bind(self, specs, out):
        """The run's operations for the planned input shape, checked once; writes the
        planned buffer."""
        if specs[0] is None or specs[0][1] != np.float32:
            return None
        shape = tuple(specs[0][0])
        if len(shape) < 3 or shape[1] != self.channels or math.prod(shape[2:]) == 0:
            return None                 # the run reports it
        n = shape[0]
        planes_shape = (n * self.channels, math.prod(shape[2:]))
        y = out if (out is not None and out.shape == shape and out.flags.c_contiguous
                    and out.flags.aligned) else None
        run, gate_of, ctx = self.run, self._gate, self.context

        def call(inputs):
            x = inputs[0]
            if (type(x) is not np.ndarray or x.dtype != np.float32 or x.shape != shape
                    or not x.flags.c_contiguous):
                return run(inputs, out)
            planes = x.reshape(planes_shape)
            gate = gate_of(pool.global_pool(planes, False, ctx).reshape(n, -1))
            dst = y if y is not None else gemm.empty_aligned(shape, check=False)
            pool.scale_planes(planes, gate.reshape(-1), dst.reshape(planes_shape), ctx)
            return [dst]
        return call
