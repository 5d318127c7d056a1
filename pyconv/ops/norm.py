"""Normalisation: BatchNormalization (inference), the optimizer's ChannelAffine,
InstanceNormalization, LayerNormalization, GroupNormalization and LRN."""
from __future__ import annotations

import math

import numpy as np

from pyconv._ext import eltwise, gemm
from pyconv.errors import InvalidDType, PyconvError, ShapeError
from pyconv.functional._misc import _bn_scale_shift
from pyconv.functional._norm import last_axis_vector, normalize_groups, normalize_last_axes
from pyconv.ops._base import REQUIRED, Op, bound_step, register, take_out, wrap_errors


class _Affine(Op):
    """``act(x * scale + shift)`` with per-channel (axis 1) scale and shift."""
    supports_out = True

    def constant_affine(self):
        """(scale, shift, activation, alpha, beta) when scale and shift are constants,
        else None."""
        return None

    def bind(self, specs, out):
        """The kernel bound to the planned input shape with its constant scale and shift
        (the unbound run's checks and conversions cost several microseconds a call, 62
        times in DenseNet-121)."""
        affine = self.constant_affine()
        if affine is None or specs[0] is None or specs[0][1] != np.float32:
            return None
        scale, shift, activation, a, b = affine
        try:
            kernel = gemm.bind_channel_affine(tuple(specs[0][0]), scale, shift, activation, a,
                                              b, out=out, context=self.context)
        except (PyconvError, ValueError):
            return None                 # the run reports it
        return bound_step(kernel, self, out)

    def affine(self, x, scale, shift, out, activation=None, a=0.0, b=0.0):
        x = self.float32(x)
        if x.ndim < 2 or x.shape[1] != scale.shape[0]:
            self.fail(f"input '{self.input_name(0)}' has shape {x.shape}; expected "
                      f"(N, {scale.shape[0]}, ...)", ShapeError)
        y = take_out(out, x.shape)
        if (not (y.flags.c_contiguous and y.flags.aligned and y.flags.writeable)
                or (y is not x and np.may_share_memory(y, x))):
            y = None        # the kernel writes a plain buffer, x itself or a separate one
        return gemm.channel_affine(x, np.asarray(scale, np.float32),
                                   np.asarray(shift, np.float32), activation, a, b, out=y,
                                   context=self.context)


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

    def constant_affine(self):
        return None if self.ss is None else (*self.ss, None, 0.0, 0.0)


@register("ChannelAffine", domain="pyconv")
class ChannelAffine(_Affine):
    """Fused by the optimizer from BatchNormalization / per-channel Mul and Add and a
    following activation: inputs x, scale (C,), shift (C,)."""
    required_inputs = 3
    attributes = {"_pyconv_activation": None, "_pyconv_alpha": 0.0, "_pyconv_beta": 0.0}

    def setup(self, consts):
        self.consts = consts

    def run(self, inputs, out=None):
        a = self.attrs
        return [self.affine(inputs[0], inputs[1], inputs[2], out, a["_pyconv_activation"],
                            float(a["_pyconv_alpha"]), float(a["_pyconv_beta"]))]

    def constant_affine(self):
        if 1 not in self.consts or 2 not in self.consts:
            return None
        a = self.attrs
        return (self.consts[1], self.consts[2], a["_pyconv_activation"],
                float(a["_pyconv_alpha"]), float(a["_pyconv_beta"]))


@register("InstanceNormalization")
class InstanceNormalization(Op):
    """Normalises each (n, c) plane with its own mean and variance: the implementation of
    :func:`pyconv.functional.instance_norm` (group normalisation with one channel per
    group)."""
    required_inputs = 3
    attributes = {"epsilon": 1e-5}

    def run(self, inputs, out=None):
        x, scale, bias = inputs
        x = self.float32(x)
        if x.ndim < 3 or scale.shape != (x.shape[1],) or bias.shape != (x.shape[1],):
            self.fail(f"input {x.shape}, scale {scale.shape}, B {bias.shape}: expected "
                      f"(N, C, *spatial), (C,), (C,)", ShapeError)
        return [normalize_groups(x, x.shape[1], float(self.attrs["epsilon"]), scale, bias,
                                 self.context)]


def standardize_rows(x, eps, scale=None, bias=None, context=None):
    """``(x - mean) / sqrt(var + eps)`` of each row of a 2-D array, then ``* scale + bias``
    when given, with the row means and ``1 / sqrt(var + eps)`` as (rows, 1) float64
    columns.

    ``scale`` / ``bias`` are (P, K) arrays: row ``r`` takes row ``r % P``, its K values each
    for a run of ``cols / K`` consecutive columns ((1, cols): per column; (P, 1): one value
    per row). Two passes (the variance from the centred values, as onnxruntime does), the
    sums accumulated in float64, the element-wise work in the dtype of ``x``: float32 in
    the C kernel (pyconv._ext.eltwise.standardize, split over threads by rows), float64 in
    NumPy."""
    if x.dtype == np.float32 and x.ndim == 2 and x.shape[1] > 0:
        return eltwise.standardize(x, eps, scale, bias, context=context)
    mean = x.mean(axis=1, keepdims=True, dtype=np.float64)
    centred = x - mean.astype(x.dtype)
    var = np.square(centred).mean(axis=1, keepdims=True, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):   # var + eps <= 0: inf/NaN, as ORT
        inv_std = 1.0 / np.sqrt(var + eps)
    centred *= inv_std.astype(x.dtype)
    for p, apply in ((scale, np.multiply), (bias, np.add)):
        if p is not None and centred.size:
            p = np.asarray(p, x.dtype)
            runs = centred.reshape(-1, p.shape[0], p.shape[1], x.shape[1] // p.shape[1])
            apply(runs, p[None, :, :, None], out=runs)
    return centred, mean, inv_std


_STASH = {1: np.float32}      # stash_type (ONNX TensorProto type) -> dtype of Mean / InvStdDev


class _Standardize(Op):
    """The input as a float tensor in its compute dtype (float16 computes in float32)."""

    def compute_input(self, x):
        if not isinstance(x, np.ndarray) or x.dtype not in (np.float16, np.float32,
                                                            np.float64):
            self.fail(f"input '{self.input_name(0)}' must be float16/32/64, got "
                      f"{getattr(x, 'dtype', type(x).__name__)}", InvalidDType)
        return x.astype(np.float32) if x.dtype == np.float16 else x

    def check_stash_type(self):
        stash = int(self.attrs["stash_type"])
        if stash not in _STASH:
            self.fail(f"stash_type {stash} is not supported (1: float32)")
        return _STASH[stash]

    def broadcast_param(self, p, i, x_shape):
        """Optional input ``i`` (Scale / B), unidirectionally broadcast to ``x_shape``."""
        if p is None:
            return None
        try:
            ok = np.broadcast_shapes(p.shape, x_shape) == tuple(x_shape)
        except ValueError:
            ok = False
        if not ok:
            self.fail(f"input '{self.input_name(i)}' of shape {p.shape} does not broadcast "
                      f"to the input shape {tuple(x_shape)}", ShapeError)
        return p


@register("LayerNormalization")
class LayerNormalization(_Standardize):
    """Normalises over the axes ``axis..rank-1``, then ``* Scale + B`` (broadcast).

    Opset 17 (onnxruntime also runs it in models of older opsets). Outputs ``Mean`` and
    ``InvStdDev`` (shape ``x.shape[:axis] + (1,) * (rank - axis)``, float32 for
    ``stash_type`` 1, whatever the input dtype) are optional."""
    required_inputs = 2
    attributes = {"axis": -1, "epsilon": 1e-5, "stash_type": 1}

    def setup(self, consts):
        self.stash = self.check_stash_type()
        self.consts = consts

    def bind(self, specs, out):
        """The kernel bound to a planned float32 input normalised over its last axis alone,
        Scale and B constant and Mean / InvStdDev not wanted: a call runs the column kernel
        when the input is the channels-last view of NCHW data (the exporters' channels-
        first norm: Transpose, LayerNormalization, Transpose back; the result is the same
        view of NCHW data, so the second Transpose gives it back contiguous), the row
        kernel when it is C-contiguous, else ``run``."""
        if (specs[0] is None or specs[0][1] != np.float32 or any(self.node.outputs[1:])
                or any(self.node.inputs[i] and i not in self.consts
                       for i in range(1, len(self.node.inputs)))):
            return None
        shape = tuple(specs[0][0])
        rank = len(shape)
        params = [self.consts.get(i) for i in (1, 2)]
        try:
            if rank < 2 or self.check_axis(self.attrs["axis"], rank) != rank - 1:
                return None
            for i, p in zip((1, 2), params):
                self.broadcast_param(p, i, shape)
        except PyconvError:
            return None                 # the run reports it
        c = shape[-1]
        if c == 0 or math.prod(shape) == 0:
            return None
        s, b = [None if p is None else last_axis_vector(np.asarray(p, np.float32), c)
                for p in params]
        if any(v is None and p is not None for v, p in zip((s, b), params)):
            return None                 # a parameter varying over other axes: run
        s, b = [None if v is None else np.ascontiguousarray(v) for v in (s, b)]
        s_row, b_row = [None if p is None else p.reshape(1, c) for p in (s, b)]
        eps, rows, ctx, run = float(self.attrs["epsilon"]), math.prod(shape[:-1]), \
            self.context, self.run
        # the NCHW shape, its strides, and the channels-last view's strides
        to_last = (0,) + tuple(range(2, rank)) + (1,)
        to_first = (0, rank - 1) + tuple(range(1, rank - 1))
        nchw = tuple(shape[k] for k in to_first)
        nchw_strides = np.empty(0, np.float32).itemsize * np.cumprod(
            (1,) + nchw[:0:-1])[::-1]
        view_strides = tuple(int(nchw_strides[k]) for k in to_last)
        columns = (shape[0], c, math.prod(shape[1:-1]))

        def call(inputs):
            x = inputs[0]
            if type(x) is np.ndarray and x.dtype == np.float32 and x.shape == shape:
                if rank >= 3 and x.strides == view_strides:
                    y = eltwise.standardize_columns(x.transpose(to_first).reshape(columns),
                                                    eps, s, b, context=ctx)[0]
                    return [y.reshape(nchw).transpose(to_last)]
                if x.flags.c_contiguous:
                    return [eltwise.standardize(x.reshape(rows, c), eps, s_row, b_row,
                                                context=ctx)[0].reshape(shape)]
            return run(inputs)
        return call

    def run(self, inputs, out=None):
        x = inputs[0]
        scale = inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        xc = self.compute_input(x)
        if xc.ndim == 0:
            self.fail("input must have at least one dim, got a scalar", ShapeError)
        axis = self.check_axis(self.attrs["axis"], xc.ndim)
        self.broadcast_param(scale, 1, x.shape)
        self.broadcast_param(bias, 2, x.shape)
        y, mean, inv_std = normalize_last_axes(xc, axis, float(self.attrs["epsilon"]),
                                               scale, bias, self.context)
        stat_shape = x.shape[:axis] + (1,) * (x.ndim - axis)
        outs = [y.astype(x.dtype, copy=False)]
        wanted = [bool(o) for o in self.node.outputs[1:3]]
        if any(wanted):
            outs += [mean.astype(self.stash).reshape(stat_shape),
                     inv_std.astype(self.stash).reshape(stat_shape)][:len(wanted)]
        return outs


@register("GroupNormalization")
class GroupNormalization(_Standardize):
    """Normalises each (n, group of channels) over its channels and spatial positions,
    then applies ``scale`` and ``bias``: one value per group in opset 18 (deprecated),
    one per channel from opset 21."""
    required_inputs = 3
    attributes = {"num_groups": REQUIRED, "epsilon": 1e-5, "stash_type": 1}

    def setup(self, consts):
        self.groups = int(self.attrs["num_groups"])
        if self.groups < 1:
            self.fail(f"num_groups must be positive, got {self.groups}")
        if self.opset >= 21:
            self.check_stash_type()

    def run(self, inputs, out=None):
        x, scale, bias = inputs[:3]
        xc = self.compute_input(x)
        g = self.groups
        if xc.ndim < 2 or xc.shape[1] % g:
            self.fail(f"input shape {x.shape}: expected (N, C, ...) with C divisible by "
                      f"num_groups {g}", ShapeError)
        n, c = xc.shape[:2]
        per = g if self.opset < 21 else c
        for i, p in ((1, scale), (2, bias)):
            if p is None or p.shape != (per,):
                self.fail(f"input '{self.input_name(i)}' must have shape ({per},) (one value "
                          f"per {'group' if self.opset < 21 else 'channel'} at opset "
                          f"{self.opset}), got {getattr(p, 'shape', None)}", ShapeError)
        if self.opset < 21:     # one value per group: the same for each of its channels
            scale, bias = np.repeat(scale, c // g), np.repeat(bias, c // g)
        y = normalize_groups(xc, g, float(self.attrs["epsilon"]), scale, bias, self.context)
        return [y.astype(x.dtype, copy=False)]


@register("LRN")
class LRN(Op):
    """Local response normalisation across channels (float32)."""
    attributes = {"alpha": 1e-4, "beta": 0.75, "bias": 1.0, "size": REQUIRED}

    def run(self, inputs, out=None):
        x = self.float32(inputs[0])
        size = int(self.attrs["size"])
        if size < 1:
            self.fail(f"size must be positive, got {size}")
        if x.ndim < 2:
            self.fail(f"input '{self.input_name(0)}' has shape {x.shape}; LRN normalises "
                      f"across channels (axis 1), so it needs a tensor (N, C, ...) of rank "
                      f"2 or more", ShapeError)
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
