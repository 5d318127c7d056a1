"""Quantization: QuantizeLinear / DequantizeLinear (per tensor, per axis, blocked),
DynamicQuantizeLinear, the integer products ConvInteger and MatMulInteger, QLinearConv and
QLinearMatMul, and the ``com.microsoft`` QLinearAdd / QLinearMul that onnxruntime's
quantizer emits.

Exact semantics come first: integer products are computed on float64 (every product of
two 8-bit values and every sum of up to 2^37 of them is exact there), then converted to
int32; requantization follows onnxruntime (the float32 scale ``x_scale * w_scale /
y_scale``, the accumulator times it, rounded half to even, plus the zero point,
saturated).
"""
from __future__ import annotations

import numpy as np

from pyconv.arithmetic import ConvAttributes, check_tensor_size
from pyconv.errors import InvalidDType, InvalidModel
from pyconv.ops._base import Op, register

__all__ = ["QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger",
           "MatMulInteger", "QLinearConv", "QLinearMatMul"]

#: Integer types a quantized tensor may have, by ONNX TensorProto code.
_QUANT_TYPES = {2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16}
_INTEGER_INPUTS = (np.uint8, np.int8, np.uint16, np.int16, np.int32)


def _saturate(values, dtype):
    info = np.iinfo(dtype)
    return np.clip(values, info.min, info.max).astype(dtype)


def _integer(op, x, i, kinds=(np.uint8, np.int8)):
    """Input ``i`` as an integer array of one of ``kinds``."""
    if not isinstance(x, np.ndarray):
        op.fail(f"input '{op.input_name(i)}' is missing")
    if x.dtype.type not in kinds:
        op.fail(f"input '{op.input_name(i)}' must be one of "
                f"{[np.dtype(k).name for k in kinds]}, got {x.dtype}", InvalidDType)
    return x


def _scale(op, inputs, i):
    s = inputs[i] if len(inputs) > i else None
    if not isinstance(s, np.ndarray) or s.dtype.kind != "f":
        op.fail(f"input '{op.input_name(i)}' (a scale) must be a float tensor, got "
                f"{None if s is None else s.dtype}", InvalidDType)
    if not np.all(np.isfinite(s)):
        op.fail(f"input '{op.input_name(i)}' (a scale) must be finite, got "
                f"{s.ravel()[:8].tolist()}")
    if op.node.op_type != "DequantizeLinear" and np.any(s <= 0):   # it is a divisor
        op.fail(f"input '{op.input_name(i)}' (a scale) must be positive, got "
                f"{s.ravel()[:8].tolist()}")
    return s


def _zero_point(op, inputs, i, dtype=None):
    """Optional zero point ``i`` (0 of ``dtype`` when absent)."""
    zp = inputs[i] if len(inputs) > i else None
    if zp is None:
        return None if dtype is None else np.zeros((), dtype)
    return _integer(op, zp, i, _INTEGER_INPUTS)


def _along(op, param, x, axis, block_size, name):
    """``param`` (a scale or zero point) broadcast to ``x``: a scalar, one value per
    index of ``axis``, or (``block_size`` > 0) one per block of ``axis``."""
    if param.ndim == 0 or param.size == 1 and block_size == 0 and param.ndim <= 1:
        return param.reshape(())
    axis = op.check_axis(axis, x.ndim)
    if block_size > 0:
        want = list(x.shape)
        want[axis] = -(-x.shape[axis] // block_size)
        if list(param.shape) != want:
            op.fail(f"{name} has shape {param.shape}, expected {tuple(want)} for blocks "
                    f"of {block_size} along axis {axis} of an input of shape {x.shape}")
        return np.repeat(param, block_size, axis=axis)[
            tuple(slice(0, n) for n in x.shape)]
    if param.shape != (x.shape[axis],):
        op.fail(f"{name} has shape {param.shape}, expected a scalar or "
                f"({x.shape[axis]},) for axis {axis} of an input of shape {x.shape}")
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    return param.reshape(shape)


@register("QuantizeLinear")
class QuantizeLinear(Op):
    """``y = saturate(round_half_even(x / scale) + zero_point)``."""

    attributes = {"axis": 1, "saturate": 1, "block_size": 0, "output_dtype": 0,
                  "precision": 0}
    required_inputs = 2

    def run(self, inputs, out=None):
        x = inputs[0]
        if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
            self.fail(f"input '{self.input_name(0)}' must be a float tensor", InvalidDType)
        scale = _scale(self, inputs, 1)
        zp = _zero_point(self, inputs, 2)
        code = int(self.attrs["output_dtype"] or 0)
        if zp is None:
            if code and code not in _QUANT_TYPES:
                self.fail(f"output_dtype {code} is not supported (uint8, int8, uint16, "
                          f"int16)", InvalidDType)
            dtype = _QUANT_TYPES.get(code, np.uint8)
            zp = np.zeros(scale.shape, dtype)
        else:
            dtype = zp.dtype.type
            if dtype not in _QUANT_TYPES.values():
                self.fail(f"zero point of type {zp.dtype} is not supported", InvalidDType)
            if code and _QUANT_TYPES.get(code) is not dtype:
                self.fail(f"output_dtype {code} disagrees with the zero point's "
                          f"{zp.dtype}", InvalidModel)
        axis, block = self.attrs["axis"], int(self.attrs["block_size"])
        scale = _along(self, scale, x, axis, block, "y_scale")
        zp = _along(self, zp, x, axis, block, "y_zero_point")
        q = np.rint(x / scale.astype(x.dtype)) + zp.astype(np.float32)
        return [_saturate(q, dtype)]


@register("DequantizeLinear")
class DequantizeLinear(Op):
    """``y = (x - zero_point) * scale``, in the scale's float type."""

    attributes = {"axis": 1, "block_size": 0, "output_dtype": 0}
    required_inputs = 2

    def run(self, inputs, out=None):
        x = _integer(self, inputs[0], 0, _INTEGER_INPUTS)
        scale = _scale(self, inputs, 1)
        zp = _zero_point(self, inputs, 2)
        axis, block = self.attrs["axis"], int(self.attrs["block_size"])
        scale = _along(self, scale, x, axis, block, "x_scale")
        shifted = x.astype(np.int64)
        if zp is not None:
            if zp.dtype != x.dtype:
                self.fail(f"x_zero_point is {zp.dtype} but x is {x.dtype}", InvalidDType)
            shifted = shifted - _along(self, zp, x, axis, block, "x_zero_point")
        return [(shifted.astype(np.float32) * scale).astype(scale.dtype, copy=False)]


@register("DynamicQuantizeLinear")
class DynamicQuantizeLinear(Op):
    """uint8 quantization with the scale and zero point taken from the data's range
    (which always includes 0)."""

    def run(self, inputs, out=None):
        x = self.float32(inputs[0])
        lo = min(0.0, float(x.min())) if x.size else 0.0
        hi = max(0.0, float(x.max())) if x.size else 0.0
        scale = np.float32((np.float32(hi) - np.float32(lo)) / np.float32(255))
        if scale == 0:          # all zeros: scale 1 (onnxruntime's choice), never 0 / 0
            scale = np.float32(1)
        zp = _saturate(np.rint(np.float32(0) - np.float32(lo) / scale), np.uint8)
        y = _saturate(np.rint(x / scale) + np.float32(zp), np.uint8)
        return [y, np.asarray(scale, np.float32), np.asarray(zp, np.uint8)]


def _integer_matmul(op, a, b):
    """``a @ b`` of shifted integers (float64 arrays), exactly, as int32."""
    try:
        shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    except ValueError:
        shape = None
    if a.ndim < 1 or b.ndim < 1 or a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0] \
            or shape is None and a.ndim > 1 and b.ndim > 1:
        op.fail(f"inputs of shapes {a.shape} and {b.shape} cannot be multiplied")
    check_tensor_size(np.broadcast_shapes(a.shape[:-1], (1,)))
    return np.matmul(a, b).astype(np.int32)


def _shift(op, x, zp, axis, name):
    """``x - zp`` as float64; ``zp`` a scalar or a vector along ``axis`` of ``x``."""
    if zp is not None and zp.dtype != x.dtype:
        op.fail(f"{name} is {zp.dtype} but its input is {x.dtype}", InvalidDType)
    x = x.astype(np.float64)
    if zp is None:
        return x
    if zp.size == 1:
        return x - float(zp.reshape(()))
    if zp.ndim != 1 or zp.shape[0] != x.shape[axis]:
        op.fail(f"{name} has shape {zp.shape}, expected a scalar or ({x.shape[axis]},)")
    shape = [1] * x.ndim
    shape[axis] = zp.shape[0]
    return x - zp.reshape(shape).astype(np.float64)


@register("MatMulInteger")
class MatMulInteger(Op):
    """``(a - a_zero_point) @ (b - b_zero_point)`` as int32; zero points per tensor, per
    row of ``a`` or per column of ``b``."""

    required_inputs = 2

    def run(self, inputs, out=None):
        a = _integer(self, inputs[0], 0)
        b = _integer(self, inputs[1], 1)
        azp, bzp = _zero_point(self, inputs, 2), _zero_point(self, inputs, 3)
        a = _shift(self, a, azp, a.ndim - 2 if a.ndim > 1 else 0, "a_zero_point")
        b = _shift(self, b, bzp, b.ndim - 1, "b_zero_point")
        return [_integer_matmul(self, a, b)]


def _integer_conv(op, x, w, attrs, group):
    """Convolution of shifted integers (float64 arrays, NC... and MC/g...) as int32."""
    if x.ndim < 3 or w.ndim != x.ndim:
        op.fail(f"input of shape {x.shape} and weight of shape {w.shape}: expected "
                f"(N, C, spatial...) and (M, C/group, kernel...) of the same rank")
    n, c = x.shape[:2]
    m, cg = w.shape[:2]
    if group <= 0 or c % group or m % group or cg != c // group:
        op.fail(f"group {group}: input channels {c} and weight shape {w.shape} disagree")
    geometry = ConvAttributes.from_onnx("conv", attrs, w.shape[2:], op=op.node.label)
    g = geometry.resolve(x.shape[2:])
    spatial = len(w.shape) - 2
    check_tensor_size((n, c, *g.output_shape, *w.shape[2:]))
    pads = [(0, 0), (0, 0)] + list(zip(g.pads_begin, g.pads_end))
    # Negative pads crop; padding with 0 is padding with the zero point before the shift.
    crop = tuple(slice(max(0, -b), x.shape[i + 2] - max(0, -e) if e < 0 else None)
                 for i, (b, e) in enumerate(zip(g.pads_begin, g.pads_end)))
    x = np.pad(x[(slice(None), slice(None)) + crop],
               [(max(0, b), max(0, e)) for b, e in pads])
    extent = [d * (k - 1) + 1 for d, k in zip(geometry.dilations, w.shape[2:])]
    windows = np.lib.stride_tricks.sliding_window_view(x, extent, axis=tuple(
        range(2, 2 + spatial)))
    windows = windows[(slice(None), slice(None))
                      + tuple(slice(None, o * s, s) for o, s in
                              zip(g.output_shape, geometry.strides))
                      + tuple(slice(None, None, d) for d in geometry.dilations)]
    out_size = int(np.prod(g.output_shape))
    k_size = int(np.prod(w.shape[2:]))
    # (n, group, c/group, out..., kernel...) -> (n, group, out, c/group * kernel)
    cols = windows.reshape(n, group, cg, out_size, k_size).transpose(0, 1, 3, 2, 4)
    cols = cols.reshape(n, group, out_size, cg * k_size)
    wmat = w.reshape(group, m // group, cg * k_size).transpose(0, 2, 1)
    y = np.matmul(cols, wmat)                     # (n, group, out, m/group)
    return y.transpose(0, 1, 3, 2).reshape(n, m, *g.output_shape).astype(np.int32)


_CONV_ATTRIBUTES = {"auto_pad": "NOTSET", "dilations": None, "group": 1,
                    "kernel_shape": None, "pads": None, "strides": None}


@register("ConvInteger")
class ConvInteger(Op):
    """``conv(x - x_zero_point, w - w_zero_point)`` as int32; the weight's zero point per
    tensor or per output channel."""

    attributes = dict(_CONV_ATTRIBUTES)
    required_inputs = 2

    def run(self, inputs, out=None):
        x = _integer(self, inputs[0], 0)
        w = _integer(self, inputs[1], 1)
        x = _shift(self, x, _zero_point(self, inputs, 2), 1, "x_zero_point")
        w = _shift(self, w, _zero_point(self, inputs, 3), 0, "w_zero_point")
        return [_integer_conv(self, x, w, self.attrs, int(self.attrs["group"]))]


def _requantize(acc, scale, zp, dtype):
    """onnxruntime's requantization: float32 ``acc * scale``, rounded half to even, plus
    the zero point, saturated to ``dtype``."""
    v = np.rint(acc.astype(np.float32) * scale.astype(np.float32))
    return _saturate(v + zp.astype(np.float32), dtype)


def _output_scale(op, a_scale, b_scale, y_scale, shape):
    s = (np.float32(a_scale.reshape(())) * b_scale.astype(np.float32)
         / np.float32(y_scale.reshape(())))
    return s.reshape(shape) if s.size > 1 else s.reshape(())


class _QLinear(Op):
    """Inputs a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point:
    the integer product of the shifted inputs, requantized."""

    required_inputs = 8

    def run(self, inputs, out=None):
        a = _integer(self, inputs[0], 0)
        b = _integer(self, inputs[3], 3)
        a_scale, b_scale, y_scale = (_scale(self, inputs, i) for i in (1, 4, 6))
        for i, what in ((1, "a"), (6, "y")):
            if inputs[i].size != 1:
                self.fail(f"input '{self.input_name(i)}' ({what} scale) must be a scalar, "
                          f"got shape {inputs[i].shape}")
        y_zp = _integer(self, inputs[7], 7, (np.uint8, np.int8))
        if y_zp.size != 1:
            self.fail(f"input '{self.input_name(7)}' (y zero point) must be a scalar, got "
                      f"shape {y_zp.shape}")
        acc, channel_shape = self.product(a, _zero_point(self, inputs, 2), b,
                                          _zero_point(self, inputs, 5), inputs)
        if b_scale.size > 1 and b_scale.shape != (channel_shape[self.channel_axis(acc)],):
            self.fail(f"input '{self.input_name(4)}' has shape {b_scale.shape}, expected a "
                      f"scalar or one scale per output channel "
                      f"({channel_shape[self.channel_axis(acc)]},)")
        scale_shape = [1] * acc.ndim
        scale_shape[self.channel_axis(acc)] = b_scale.size
        scale = _output_scale(self, a_scale, b_scale, y_scale, scale_shape)
        return [_requantize(acc, scale, y_zp.reshape(()), y_zp.dtype.type)]


@register("QLinearConv")
class QLinearConv(_QLinear):
    """ConvInteger plus an optional int32 bias, requantized; the weight's scale and zero
    point per tensor or per output channel."""

    attributes = dict(_CONV_ATTRIBUTES)

    def channel_axis(self, acc):
        return 1

    def product(self, x, x_zp, w, w_zp, inputs):
        x = _shift(self, x, x_zp, 1, "x_zero_point")
        w = _shift(self, w, w_zp, 0, "w_zero_point")
        acc = _integer_conv(self, x, w, self.attrs, int(self.attrs["group"]))
        bias = inputs[8] if len(inputs) > 8 else None
        if bias is not None:
            bias = _integer(self, bias, 8, (np.int32,))
            if bias.shape != (acc.shape[1],):
                self.fail(f"bias has shape {bias.shape}, expected ({acc.shape[1]},)")
            acc = acc + bias.reshape((-1,) + (1,) * (acc.ndim - 2))
        return acc, acc.shape


@register("QLinearMatMul")
class QLinearMatMul(_QLinear):
    """MatMulInteger requantized; ``b``'s scale and zero point per tensor or per
    column."""

    def channel_axis(self, acc):
        return acc.ndim - 1

    def product(self, a, a_zp, b, b_zp, inputs):
        a = _shift(self, a, a_zp, a.ndim - 2 if a.ndim > 1 else 0, "a_zero_point")
        b = _shift(self, b, b_zp, b.ndim - 1, "b_zero_point")
        acc = _integer_matmul(self, a, b)
        return acc, acc.shape


class _QLinearBinary(Op):
    """``com.microsoft`` QLinearAdd / QLinearMul: inputs a, a_scale, a_zero_point, b,
    b_scale, b_zero_point, y_scale, y_zero_point; the float operation on the dequantized
    inputs, requantized (numpy broadcasting)."""

    required_inputs = 7

    def run(self, inputs, out=None):
        a = _integer(self, inputs[0], 0)
        b = _integer(self, inputs[3], 3)
        if b.dtype != a.dtype:
            self.fail(f"inputs are {a.dtype} and {b.dtype}; they must be the same type",
                      InvalidDType)
        a = _dequantize(self, a, inputs, 1, 2)
        b = _dequantize(self, b, inputs, 4, 5)
        try:
            y = self.compute(a, b)
        except ValueError:
            self.fail(f"inputs of shapes {a.shape} and {b.shape} do not broadcast")
        return [_quantize(self, y, inputs, 6, 7, a_dtype=inputs[0].dtype)]


def _dequantize(op, q, inputs, scale_i, zp_i):
    """Per-tensor ``(q - zp) * scale`` in float32."""
    scale = _scale(op, inputs, scale_i).reshape(())
    zp = _zero_point(op, inputs, zp_i, q.dtype)
    if zp.size != 1 or scale.size != 1:
        op.fail(f"inputs '{op.input_name(scale_i)}' and '{op.input_name(zp_i)}' must be "
                f"scalars (per-tensor quantization)")
    return (q.astype(np.float32) - np.float32(zp.reshape(()))) * np.float32(scale)


def _quantize(op, y, inputs, scale_i, zp_i, a_dtype):
    """Per-tensor requantization of float32 ``y`` to the type of the zero point (or of
    the quantized inputs when it is absent)."""
    scale = np.float32(_scale(op, inputs, scale_i).reshape(()))
    zp = _zero_point(op, inputs, zp_i, a_dtype)
    return _saturate(np.rint(y / scale) + np.float32(zp.reshape(())), zp.dtype.type)


@register("QLinearAdd", domain="com.microsoft")
class QLinearAdd(_QLinearBinary):
    def compute(self, a, b):
        return a + b


@register("QLinearMul", domain="com.microsoft")
class QLinearMul(_QLinearBinary):
    def compute(self, a, b):
        return a * b


@register("QLinearGlobalAveragePool", domain="com.microsoft")
class QLinearGlobalAveragePool(Op):
    """Inputs x, x_scale, x_zero_point, y_scale, y_zero_point: the mean over the spatial
    dims (``channels_last`` puts the channels last), requantized."""

    attributes = {"channels_last": 0}
    required_inputs = 5

    def run(self, inputs, out=None):
        x = _integer(self, inputs[0], 0)
        if x.ndim < 3:
            self.fail(f"input must have rank >= 3 (N, C, spatial...), got shape {x.shape}")
        axes = tuple(range(1, x.ndim - 1)) if self.attrs["channels_last"] else \
            tuple(range(2, x.ndim))
        total = x.astype(np.int64).sum(axis=axes, keepdims=True)
        count = int(np.prod([x.shape[a] for a in axes]))
        x_scale = np.float32(_scale(self, inputs, 1).reshape(()))
        x_zp = _zero_point(self, inputs, 2, x.dtype)
        mean = (total - count * int(x_zp.reshape(()))).astype(np.float32) \
            * (x_scale / np.float32(count))
        return [_quantize(self, mean, inputs, 3, 4, a_dtype=x.dtype)]
