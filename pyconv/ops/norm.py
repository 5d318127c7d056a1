"""Normalisation: BatchNormalization (inference), the optimizer's ChannelAffine,
InstanceNormalization and LRN."""
from __future__ import annotations

import numpy as np

from pyconv._ext import gemm
from pyconv.errors import ShapeError
from pyconv.functional._misc import _bn_scale_shift
from pyconv.ops._base import REQUIRED, Op, register, take_out, wrap_errors


class _Affine(Op):
    """``act(x * scale + shift)`` with per-channel (axis 1) scale and shift."""
    supports_out = True

    def affine(self, x, scale, shift, out, activation=None, a=0.0, b=0.0):
        x = self.float32(x)
        if x.ndim < 2 or x.shape[1] != scale.shape[0]:
            self.fail(f"input '{self.input_name(0)}' has shape {x.shape}; expected "
                      f"(N, {scale.shape[0]}, ...)", ShapeError)
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        y = take_out(out, x.shape)
        if np.may_share_memory(y, x):
            y = np.empty(x.shape, np.float32)
        np.multiply(x, scale.reshape(shape), out=y)
        y += shift.reshape(shape)
        if activation:
            gemm.apply_activation(y, activation, a, b, self.context)
        return y


@register("BatchNormalization")
class BatchNormalization(_Affine):
    """Inference batch norm (opsets 7-15); ``training_mode=1`` is refused."""
    required_inputs = 5
    attributes = {"epsilon": 1e-5, "momentum": 0.9, "spatial": 1, "training_mode": 0,
                  "is_test": 0}

    def setup(self, consts):
        if int(self.attrs["training_mode"]):
            self.fail("training_mode=1 (batch statistics) is not supported: pyconv is "
                      "inference-only")
        if int(self.attrs["spatial"]) != 1:
            self.fail("spatial=0 is not supported")
        self.ss = None
        if all(i in consts for i in range(1, 5)):
            self.ss = self._scale_shift([consts[i] for i in range(1, 5)])

    def _scale_shift(self, params):
        scale, bias, mean, var = params
        return wrap_errors(self, _bn_scale_shift, mean, var, scale, bias,
                           float(self.attrs["epsilon"]), scale.shape[0], self.node.label)

    def run(self, inputs, out=None):
        scale, shift = self.ss if self.ss is not None else self._scale_shift(inputs[1:5])
        return [self.affine(inputs[0], scale, shift, out)]


@register("ChannelAffine", domain="pyconv")
class ChannelAffine(_Affine):
    """Fused by the optimizer from BatchNormalization / per-channel Mul and Add and a
    following activation: inputs x, scale (C,), shift (C,)."""
    required_inputs = 3
    attributes = {"_pyconv_activation": None, "_pyconv_alpha": 0.0, "_pyconv_beta": 0.0}

    def run(self, inputs, out=None):
        a = self.attrs
        return [self.affine(inputs[0], inputs[1], inputs[2], out, a["_pyconv_activation"],
                            float(a["_pyconv_alpha"]), float(a["_pyconv_beta"]))]


@register("InstanceNormalization")
class InstanceNormalization(Op):
    """Normalises each (n, c) plane with its own mean and variance (float64 sums)."""
    required_inputs = 3
    attributes = {"epsilon": 1e-5}

    def run(self, inputs, out=None):
        x, scale, bias = inputs
        x = self.float32(x)
        if x.ndim < 3 or scale.shape != (x.shape[1],) or bias.shape != (x.shape[1],):
            self.fail(f"input {x.shape}, scale {scale.shape}, B {bias.shape}: expected "
                      f"(N, C, *spatial), (C,), (C,)", ShapeError)
        axes = tuple(range(2, x.ndim))
        mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
        var = np.square(x - mean).mean(axis=axes, keepdims=True)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        y = (x - mean) / np.sqrt(var + float(self.attrs["epsilon"]))
        y = y * scale.reshape(shape) + bias.reshape(shape)
        return [y.astype(np.float32)]


@register("LRN")
class LRN(Op):
    """Local response normalisation across channels (float32)."""
    attributes = {"alpha": 1e-4, "beta": 0.75, "bias": 1.0, "size": REQUIRED}

    def run(self, inputs, out=None):
        x = self.float32(inputs[0])
        size = int(self.attrs["size"])
        if size < 1:
            self.fail(f"size must be positive, got {size}")
        c = x.shape[1]
        lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
        sq = np.square(x, dtype=np.float32)
        # Windowed sum over channels as a difference of cumulative sums.
        cs = np.zeros((x.shape[0], c + 1) + x.shape[2:], np.float64)
        np.cumsum(sq, axis=1, out=cs[:, 1:])
        top = np.minimum(np.arange(c) + hi + 1, c)
        bottom = np.maximum(np.arange(c) - lo, 0)
        window = (cs[:, top] - cs[:, bottom]).astype(np.float32)
        a = self.attrs
        den = np.float32(a["bias"]) + np.float32(a["alpha"]) / np.float32(size) * window
        return [(x / den ** np.float32(a["beta"])).astype(np.float32, copy=False)]
