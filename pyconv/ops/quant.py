"""Quantization: QuantizeLinear / DequantizeLinear (per tensor, per axis, blocked),
DynamicQuantizeLinear, the integer products ConvInteger and MatMulInteger, QLinearConv and
QLinearMatMul, and the ``com.microsoft`` QLinearAdd / QLinearMul that onnxruntime's
quantizer emits.

Integer products run on the exact int8 GEMM (pyconv._ext.qgemm: AVX-512 VNNI, AVX2 or
portable), int8 activations and uint8 weights mapped onto its uint8 x int8 form by moving
their zero points; requantization follows onnxruntime (the float32 scale ``x_scale * w_scale /
y_scale``, the accumulator times it, rounded half to even, plus the zero point,
saturated).
"""
from __future__ import annotations

import numpy as np

from pyconv._ext import qgemm
from pyconv.arithmetic import ConvAttributes, check_tensor_size
from pyconv.errors import InvalidDType, InvalidModel, PyconvError
from pyconv.functional import ConvPlan
from pyconv.ops._base import REQUIRED, Node, Op, bound_step, register, wrap_errors

__all__ = ["QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger",
           "MatMulInteger", "QLinearConv", "QLinearMatMul"]

#: Integer types a quantized tensor may have, by ONNX TensorProto code.
_QUANT_TYPES = {2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16}
_INTEGER_INPUTS = (np.uint8, np.int8, np.uint16, np.int16, np.int32)
_UINT8 = np.dtype(np.uint8)
_FLOAT32 = np.dtype(np.float32)
U8, I8 = np.dtype(np.uint8), np.dtype(np.int8)


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


def _per_tensor_const(scale, zp):
    """Whether constant ``scale`` and ``zp`` are one finite float scale and one integer
    zero point."""
    return isinstance(scale, np.ndarray) and isinstance(zp, np.ndarray) \
        and scale.size == 1 and zp.size == 1 and scale.dtype.kind == "f" \
        and bool(np.all(np.isfinite(scale)))


@register("QuantizeLinear")
class QuantizeLinear(Op):
    """``y = saturate(round_half_even(x / scale) + zero_point)``."""

    attributes = {"axis": 1, "saturate": 1, "block_size": 0, "output_dtype": 0,
                  "precision": 0}
    required_inputs = 2

    def setup(self, consts):
        # Constant per-tensor parameters (a QDQ model's): checked once, each run goes
        # straight to the kernel.
        self.fast = None
        scale, zp = consts.get(1), consts.get(2)
        code = int(self.attrs["output_dtype"] or 0)
        if int(self.attrs["block_size"]) == 0 and _per_tensor_const(scale, zp) \
                and zp.dtype.type in _QUANT_TYPES.values() and scale.dtype == np.float32 \
                and np.all(scale > 0) and (not code or _QUANT_TYPES.get(code) is zp.dtype.type):
            self.fast = (scale.reshape(()), zp.reshape(()), zp.dtype.type)

    def run(self, inputs, out=None):
        x = inputs[0]
        fast = self.fast
        if fast is not None and type(x) is np.ndarray and x.dtype == _FLOAT32 and x.ndim:
            return [qgemm.quantize(x, fast[0], fast[1], 0, fast[2], self.context)]
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
        scale_b = _along(self, scale, x, axis, block, "y_scale")
        zp_b = _along(self, zp, x, axis, block, "y_zero_point")
        if block == 0 and x.dtype == np.float32 and x.ndim:
            axis = self.check_axis(axis, x.ndim) if scale.size > 1 else 0
            return [qgemm.quantize(x, scale.astype(np.float32), zp, axis, dtype,
                                   self.context)]
        q = np.rint(x / scale_b.astype(x.dtype)) + zp_b.astype(np.float32)
        return [_saturate(q, dtype)]


@register("DequantizeLinear")
class DequantizeLinear(Op):
    """``y = (x - zero_point) * scale``, in the scale's float type."""

    attributes = {"axis": 1, "block_size": 0, "output_dtype": 0}
    required_inputs = 2

    def setup(self, consts):
        self.fast = None        # as QuantizeLinear's
        scale, zp = consts.get(1), consts.get(2)
        if int(self.attrs["block_size"]) == 0 and _per_tensor_const(scale, zp) \
                and scale.dtype == np.float32 and zp.dtype.type in _QUANT_TYPES.values():
            self.fast = (scale.reshape(()), zp.reshape(()), zp.dtype)

    def run(self, inputs, out=None):
        x = inputs[0]
        fast = self.fast
        if fast is not None and type(x) is np.ndarray and x.dtype == fast[2] and x.ndim:
            return [qgemm.dequantize(x, fast[0], fast[1], 0, self.context)]
        x = _integer(self, x, 0, _INTEGER_INPUTS)
        scale = _scale(self, inputs, 1)
        zp = _zero_point(self, inputs, 2)
        axis, block = self.attrs["axis"], int(self.attrs["block_size"])
        scale_b = _along(self, scale, x, axis, block, "x_scale")
        if zp is not None and zp.dtype != x.dtype:
            self.fail(f"x_zero_point is {zp.dtype} but x is {x.dtype}", InvalidDType)
        zp_b = None if zp is None else _along(self, zp, x, axis, block, "x_zero_point")
        if block == 0 and scale.dtype == np.float32 and x.dtype != np.int32 and x.ndim:
            zero = np.zeros(scale.shape, np.float32) if zp is None else zp
            axis = self.check_axis(axis, x.ndim) if scale.size > 1 else 0
            return [qgemm.dequantize(x, scale, zero, axis, self.context)]
        shifted = x.astype(np.int64)
        if zp_b is not None:
            shifted = shifted - zp_b
        return [(shifted.astype(np.float32) * scale_b).astype(scale.dtype, copy=False)]


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
        y = qgemm.quantize(x.reshape(-1), np.float32([scale]), np.asarray([zp], np.uint8), 0,
                           np.uint8, self.context).reshape(x.shape)
        return [y, np.asarray(scale, np.float32), np.asarray(zp, np.uint8)]


def _as_uint8(x, zp):
    """``x`` as uint8 and its zero point (int64) moved with it: int8 + 128."""
    if x.dtype == np.int8:
        return x.view(np.uint8) ^ np.uint8(0x80), zp + 128
    return x, zp


def _as_int8(b, zp):
    """``b`` as int8 and its zero point (int64) moved with it: uint8 - 128."""
    if b.dtype == np.uint8:
        return (b ^ np.uint8(0x80)).view(np.int8), zp - 128
    return b, zp


def _zero_points(op, zp, dtype, count, name, what):
    """An optional zero point as int64: a scalar, or ``count`` values (one per ``what``)."""
    if zp is None:
        return np.zeros((), np.int64)
    if zp.dtype != dtype:
        op.fail(f"{name} is {zp.dtype} but its input is {np.dtype(dtype)}", InvalidDType)
    if zp.size == 1:
        return zp.astype(np.int64).reshape(())
    if zp.shape != (count,):
        op.fail(f"{name} has shape {zp.shape}, expected a scalar or ({count},) (one per "
                f"{what})")
    return zp.astype(np.int64)


class _PackedWeights:
    """The int8 right operands of a layer, packed once per distinct weight array (a
    constant initializer is the same array on every run)."""

    def __init__(self):
        self._cache = (None, None, None)

    def get(self, weight, zero_point, build):
        w, zp, packs = self._cache
        if w is weight and zp is zero_point:
            return packs
        packs = build()
        self._cache = (weight, zero_point, packs)
        return packs


def _product(a, za, b, zb, context):
    """``(a - za) @ (b - zb)`` exactly, as int32: ``a`` uint8 (m, k) with ``za`` a scalar
    or one value per row, ``b`` a packed int8 (k, n) operand with ``zb`` a scalar or one
    value per column (zero points int64). Runs on the int8 GEMM; the zero points enter as
    row and column sums."""
    acc = qgemm.matmul_u8s8(a, b, context)
    za = za.reshape(-1, 1) if za.ndim else za
    zb = zb.reshape(1, -1) if zb.ndim else zb
    # The corrections in int64, applied in int32: the same result modulo 2 ** 32 (int32
    # sums wrap), in two passes over the product instead of int64 copies of it.
    acc -= (za * b.column_sums.reshape(1, -1)).astype(np.int32)
    acc -= (a.sum(axis=1, dtype=np.int64).reshape(-1, 1) * zb - b.k * za * zb).astype(
        np.int32)
    return acc


def _integer_matmul(op, a, za, b, zb, cache=None):
    """MatMulInteger's product with numpy.matmul's shapes and broadcasting; ``za`` per
    tensor or per row of ``a``, ``zb`` per tensor or per column of ``b``."""
    if a.ndim < 1 or b.ndim < 1:
        op.fail(f"inputs of shapes {a.shape} and {b.shape} cannot be multiplied")
    a2 = a.reshape(1, -1) if a.ndim == 1 else a
    b2 = b.reshape(-1, 1) if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        op.fail(f"inputs of shapes {a.shape} and {b.shape} cannot be multiplied")
    try:
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        op.fail(f"the batch dims of inputs of shapes {a.shape} and {b.shape} do not "
                f"broadcast")
    m, k, n = a2.shape[-2], a2.shape[-1], b2.shape[-1]
    check_tensor_size(batch + (m, n))
    weight_key = (b, zb)        # the node's own arrays: the same on every run if constant
    za = _zero_points(op, za, a.dtype, m, "a_zero_point", "row of a")
    zb = _zero_points(op, zb, b.dtype, n, "b_zero_point", "column of b")
    a2, za = _as_uint8(a2, za)
    b2, zb = _as_int8(b2, zb)
    if b2.ndim == 2:            # one packed operand for every row of every batch
        rows = np.ascontiguousarray(a2).reshape(-1, k)
        packed = (cache.get(*weight_key, lambda: qgemm.PackedInt8(b2)) if cache is not None
                  else qgemm.PackedInt8(b2))
        za_rows = np.broadcast_to(za, a2.shape[:-1]).reshape(-1) if za.ndim else za
        y = _product(rows, za_rows, packed, zb, op.context).reshape(a2.shape[:-1] + (n,))
        y = np.broadcast_to(y, batch + (m, n))
    else:
        a3 = np.broadcast_to(a2, batch + (m, k)).reshape(-1, m, k)
        b3 = np.broadcast_to(b2, batch + (k, n)).reshape(-1, k, n)
        y = np.stack([_product(np.ascontiguousarray(x), za, qgemm.PackedInt8(w), zb,
                               op.context) for x, w in zip(a3, b3)]).reshape(batch + (m, n))
    if a.ndim == 1:
        y = y[..., 0, :]
    if b.ndim == 1:
        y = y[..., 0]
    return np.ascontiguousarray(y)


@register("MatMulInteger")
class MatMulInteger(Op):
    """``(a - a_zero_point) @ (b - b_zero_point)`` as int32; zero points per tensor, per
    row of ``a`` or per column of ``b``."""

    required_inputs = 2

    def setup(self, consts):
        self.packed = _PackedWeights()

    def run(self, inputs, out=None):
        a = _integer(self, inputs[0], 0)
        b = _integer(self, inputs[1], 1)
        return [_integer_matmul(self, a, _zero_point(self, inputs, 2), b,
                                _zero_point(self, inputs, 3), self.packed)]


def _integer_conv(op, x, xz, w, wz, attrs, cache):
    """``conv(x - xz, w - wz)`` exactly, as int32 (NC... and MC/group...): im2col rows of
    uint8 windows (padded with the zero point, which contributes nothing) times the
    packed int8 weights of each group."""
    group = int(attrs["group"])
    if x.ndim < 3 or w.ndim != x.ndim:
        op.fail(f"input of shape {x.shape} and weight of shape {w.shape}: expected "
                f"(N, C, spatial...) and (M, C/group, kernel...) of the same rank")
    n, c = x.shape[:2]
    m, cg = w.shape[:2]
    if group <= 0 or c % group or m % group or cg != c // group:
        op.fail(f"group {group}: input channels {c} and weight shape {w.shape} disagree")
    weight_key = (w, wz)        # the node's own arrays: the same on every run if constant
    xz = _zero_points(op, xz, x.dtype, 1, "x_zero_point", "tensor")
    wz = _zero_points(op, wz, w.dtype, m, "w_zero_point", "output channel")
    x, xz = _as_uint8(x, xz)
    geometry = ConvAttributes.from_onnx("conv", attrs, w.shape[2:], op=op.node.label)
    g = geometry.resolve(x.shape[2:])
    spatial = len(w.shape) - 2
    out_size, k_size = int(np.prod(g.output_shape)), int(np.prod(w.shape[2:]))
    check_tensor_size((n, c, out_size, k_size))
    crop = tuple(slice(max(0, -b), x.shape[i + 2] - max(0, -e) if e < 0 else None)
                 for i, (b, e) in enumerate(zip(g.pads_begin, g.pads_end)))
    x = np.pad(x[(slice(None), slice(None)) + crop],
               [(0, 0), (0, 0)] + [(max(0, b), max(0, e)) for b, e in
                                   zip(g.pads_begin, g.pads_end)],
               constant_values=np.uint8(int(xz)))
    extent = [d * (k - 1) + 1 for d, k in zip(geometry.dilations, w.shape[2:])]
    windows = np.lib.stride_tricks.sliding_window_view(x, extent, axis=tuple(
        range(2, 2 + spatial)))
    windows = windows[(slice(None), slice(None))
                      + tuple(slice(None, o * s, s) for o, s in
                              zip(g.output_shape, geometry.strides))
                      + tuple(slice(None, None, d) for d in geometry.dilations)]
    # (n, group, c/group, out..., kernel...) -> per group, rows (n * out) of c/group * kernel
    cols = windows.reshape(n, group, cg, out_size, k_size).transpose(1, 0, 3, 2, 4)
    cols = np.ascontiguousarray(cols).reshape(group, n * out_size, cg * k_size)
    mg = m // group

    def pack():
        w8, wz8 = _as_int8(w, wz)
        mats = w8.reshape(group, mg, cg * k_size)
        return [(qgemm.PackedInt8(np.ascontiguousarray(mats[i].T)),
                 wz8[i * mg:(i + 1) * mg] if wz8.ndim else wz8) for i in range(group)]
    y = np.empty((n, m, out_size), np.int32)
    if mg == 1 and group > 1:
        # Depthwise: one output channel per group is a GEMM of one column; a batched dot
        # product over all channels at once instead (int64: exact for any kernel size).
        wmat = w.reshape(group, cg * k_size).astype(np.int64) - wz.reshape(-1, 1)
        dots = np.einsum("gpk,gk->gp", cols.astype(np.int64) - xz, wmat)
        y[:] = dots.reshape(group, n, out_size).transpose(1, 0, 2)
        return y.reshape(n, m, *g.output_shape)
    for i, (packed, zb) in enumerate(cache.get(*weight_key, pack)):
        y[:, i * mg:(i + 1) * mg] = _product(cols[i], xz, packed, zb, op.context).reshape(
            n, out_size, mg).transpose(0, 2, 1)
    return y.reshape(n, m, *g.output_shape)


_CONV_ATTRIBUTES = {"auto_pad": "NOTSET", "dilations": None, "group": 1,
                    "kernel_shape": None, "pads": None, "strides": None}


def _planned_qconv(op, shape):
    """op's conv bound to a planned input shape (cached per shape), or None where its run
    must decide (a geometry or input the bound call does not take)."""
    try:
        return op.fast_calls[shape] if shape in op.fast_calls else _bound_qconv(op, shape)
    except PyconvError:
        return None


def _bound_qconv(op, shape):
    """``op.fast`` (a qgemm.QConv2d) bound to inputs of ``shape`` (QConv2d.bind), cached
    in ``op.fast_calls``; None where it does not apply (the general path reports errors)."""
    call = None
    channels, spatial = (shape[3], shape[1:3]) if op.channels_last else (shape[1], shape[2:])
    if channels == op.fast.cg * op.fast.groups:
        if op.geometry is None:
            op.geometry = ConvAttributes.from_onnx("conv", op.attrs, op.fast_kernel_shape,
                                                   op=op.node.label)
        g = op.geometry.resolve(spatial)
        if min(g.pads_begin) >= 0:
            call = wrap_errors(op, op.fast.bind, shape, g.output_shape, op.geometry.strides,
                               g.pads_begin, op.geometry.dilations, op.context,
                               channels_last=op.channels_last)
    op.fast_calls[shape] = call
    return call


def _integer_qconv(op, consts):
    """The C convolution with int32 output (qgemm.QConv2d, ``out_dtype`` int32) of a
    ConvInteger whose weights (2-D, uint8 or int8) and weight zero point (per tensor or per
    output channel) are constants; else None (the NumPy path runs, and reports bad
    parameters)."""
    nin = len(op.node.inputs)
    has_wz = nin > 3 and op.node.inputs[3]
    if 1 not in consts or has_wz and 3 not in consts:
        return None
    w, wz = consts[1], consts.get(3) if has_wz else None
    if not isinstance(w, np.ndarray) or w.dtype not in (U8, I8) or w.ndim != 4:
        return None
    m = w.shape[0]
    if wz is not None and (not isinstance(wz, np.ndarray) or wz.dtype != w.dtype
                           or wz.size != 1 and wz.shape != (m,)):
        return None
    group = int(op.attrs["group"])
    if group < 1 or m % group:
        return None
    w8, wz8 = _as_int8(w, np.zeros((), np.int64) if wz is None else wz.astype(np.int64))
    if np.any(wz8 < -128) or np.any(wz8 > 127):
        return None
    op.fast_kernel_shape = w.shape[2:]
    return qgemm.QConv2d(np.ascontiguousarray(w8), None, 1, 0, 0, 0, 0, group, np.int32,
                         w_zero_point=wz8)


@register("ConvInteger")
class ConvInteger(Op):
    """``conv(x - x_zero_point, w - w_zero_point)`` as int32; the weight's zero point per
    tensor or per output channel. 2-D with constant weights on the int8 conv kernels
    (qgemm.QConv2d with int32 output), bound per input shape; else NumPy-assisted."""

    attributes = dict(_CONV_ATTRIBUTES)
    required_inputs = 2
    channels_last = False

    def setup(self, consts):
        self.packed = _PackedWeights()
        self.fast = _integer_qconv(self, consts)
        self.geometry = None
        self.fast_calls = {}        # input shape -> the C conv bound to it, or None

    def _fast(self, call, inputs):
        """The bound C conv's output for these inputs, or None where it does not apply
        (an input zero point that is not one value of x's type, x of another shape)."""
        x = inputs[0]
        xz = inputs[2] if len(inputs) > 2 else None
        if xz is None:
            z = 0
        elif type(xz) is np.ndarray and xz.dtype == x.dtype and xz.size == 1:
            z = int(xz.reshape(()))
        else:
            return None
        if x.dtype == I8:           # onto uint8: x + 128 with its zero point
            x, z = x.view(np.uint8) ^ np.uint8(0x80), z + 128
        y = call.integer(x, z)
        if y is None and type(x) is np.ndarray and x.shape == call.x_shape:
            y = call.integer(np.ascontiguousarray(x), z)
        return y

    def run(self, inputs, out=None):
        x = inputs[0]
        if self.fast is not None and type(x) is np.ndarray and x.ndim == 4 \
                and x.dtype in (U8, I8):
            call = self.fast_calls.get(x.shape, False)
            if call is False:
                call = _bound_qconv(self, x.shape)
            if call is not None:
                y = self._fast(call, inputs)
                if y is not None:
                    return [y]
        x = _integer(self, x, 0)
        w = _integer(self, inputs[1], 1)
        return [_integer_conv(self, x, _zero_point(self, inputs, 2), w,
                              _zero_point(self, inputs, 3), self.attrs, self.packed)]

    def bind(self, specs, out):
        """The C convolution bound to the planned input shape; None where ``run`` must
        decide."""
        if self.fast is None or specs[0] is None:
            return None
        shape, dtype = specs[0]
        if dtype not in (U8, I8) or len(shape) != 4:
            return None
        call = _planned_qconv(self, shape)
        if call is None:
            return None
        fast, run = self._fast, self.run

        def step(inputs):
            y = fast(call, inputs)
            return [y] if y is not None else run(inputs, out)
        return step


def _requantize(acc, scale, zp, dtype):
    """onnxruntime's requantization: float32 ``acc * scale``, rounded half to even, plus
    the zero point, saturated to ``dtype``."""
    v = np.rint(acc.astype(np.float32) * scale.astype(np.float32))
    return _saturate(v + zp.astype(np.float32), dtype)


def _output_scale(a_scale, b_scale, y_scale, shape):
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
        scale = _output_scale(a_scale, b_scale, y_scale, scale_shape)
        return [_requantize(acc, scale, y_zp.reshape(()), y_zp.dtype.type)]


def _clamp_bounds(attrs, dtype):
    """The output range of a QLinearConv: its type's, or narrower where the optimizer
    folded a Relu / Clip after it (``_pyconv_qmin`` / ``_pyconv_qmax``, quantized)."""
    info = np.iinfo(dtype)
    return (max(int(attrs.get("_pyconv_qmin", info.min)), int(info.min)),
            min(int(attrs.get("_pyconv_qmax", info.max)), int(info.max)))


def packed_qconv_form(x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias=None):
    """Whether constant QLinearConv parameters are of the form qgemm.QConv2d runs (see
    _packed_qconv); the graph passes ask it too (pyconv/graph/_qdq.py)."""
    params = (x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp)
    if any(not isinstance(p, np.ndarray) for p in params) \
            or bias is not None and not isinstance(bias, np.ndarray):
        return False
    scales_ok = all(s.dtype.kind == "f" and np.all(np.isfinite(s)) and np.all(s > 0)
                    for s in (x_scale, w_scale, y_scale))
    return bool(scales_ok and x_scale.size == 1 and y_scale.size == 1
                and x_zp.dtype == np.uint8 and x_zp.size == 1
                and y_zp.dtype in (np.uint8, np.int8) and y_zp.size == 1
                and w.dtype == np.int8 and w.ndim == 4 and w_zp.dtype == np.int8
                and not np.any(w_zp) and w_zp.size in (1, w.shape[0])
                and w_scale.size in (1, w.shape[0])
                and (bias is None or bias.dtype == np.int32 and bias.shape == (w.shape[0],)))


def _packed_qconv(op, consts, float_sums=True):
    """The C convolution (qgemm.QConv2d) of a QLinearConv whose parameters are constants
    of the form it runs: uint8 input, int8 2-D weights with zero point 0 (onnxruntime's
    symmetric weights), per-tensor input and output scales, uint8 or int8 output; else
    None (the exact NumPy-assisted path runs, and reports bad parameters). A depthwise
    layer runs on the float kernels (_FloatSumsConv) where ``float_sums`` and exact."""
    nin = len(op.node.inputs)
    has_bias = nin > 8 and op.node.inputs[8]
    if any(i not in consts for i in range(1, 9 if has_bias else 8)):
        return None
    x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp = (consts[i] for i in range(1, 8))
    bias = consts[8] if has_bias else None
    if not packed_qconv_form(*(consts.get(i) for i in range(1, 9))):
        return None
    group = int(op.attrs["group"])
    if group < 1 or w.shape[0] % group:
        return None
    op.fast_kernel_shape = w.shape[2:]
    multiplier = np.broadcast_to(_output_scale(x_scale, w_scale, y_scale, (w.shape[0],)),
                                 (w.shape[0],))
    lo, hi = _clamp_bounds(op.attrs, y_zp.dtype)
    args = (w, bias, multiplier, int(x_zp.reshape(())), int(y_zp.reshape(())), lo, hi,
            group, y_zp.dtype)
    taps = int(np.prod(w.shape[1:]))
    largest = taps * 255 * 128 + (int(np.abs(bias.astype(np.int64)).max()) if bias is not None
                                  and bias.size else 0)
    if float_sums and w.shape[1] == 1 and group == w.shape[0] and largest < 2 ** 24:
        return _FloatSumsConv(op, *args)
    return qgemm.QConv2d(*args)


class _FloatSumsConv:
    """A depthwise QLinearConv on pyconv's float depthwise kernels: the shifted input
    ``x - x_zero_point``, weights and bias are small integers, and every partial sum stays
    below 2 ** 24, so the float32 sums are the exact int32 ones; requantized as those
    (qgemm.requantize_float). Faster than an integer depthwise kernel: fused multiply-adds
    at full vector width."""

    def __init__(self, op, w, bias, multiplier, x_zero_point, y_zero_point, qmin, qmax,
                 group, out_dtype):
        self.cg, self.groups = w.shape[1], group
        self.plan = ConvPlan(w.astype(np.float32),
                             None if bias is None else bias.astype(np.float32),
                             groups=group, context=op.context,
                             attributes=ConvAttributes.from_onnx("conv", op.attrs, w.shape[2:],
                                                                 op=op.node.label))
        self.multiplier = np.ascontiguousarray(multiplier, np.float32)
        self.x_zero_point, self.y_zero_point = x_zero_point, y_zero_point
        self.qmin, self.qmax, self.out_dtype = qmin, qmax, out_dtype

    def run(self, x, context):
        acc = self.plan.run(qgemm.shift_to_float(x, self.x_zero_point, context))
        return qgemm.requantize_float(acc, self.multiplier, self.y_zero_point, self.qmin,
                                      self.qmax, self.out_dtype, context)


@register("QLinearConv")
class QLinearConv(_QLinear):
    """ConvInteger plus an optional int32 bias, requantized; the weight's scale and zero
    point per tensor or per output channel."""

    attributes = dict(_CONV_ATTRIBUTES)
    channels_last = False

    def channel_axis(self, acc):
        return 1

    def setup(self, consts):
        self.packed = _PackedWeights()
        # NHWC runs on the integer depthwise kernel: the float one is NCHW.
        self.fast = _packed_qconv(self, consts, float_sums=not self.channels_last)
        self.geometry = None
        self.fast_calls = {}        # input shape -> the C conv bound to it, or None

    def run(self, inputs, out=None):
        x = inputs[0]
        if self.fast is not None and type(x) is np.ndarray and x.dtype == _UINT8 \
                and x.ndim == 4:
            if isinstance(self.fast, _FloatSumsConv):
                if x.shape[1] == self.fast.cg * self.fast.groups:
                    return [self.fast.run(x, self.context)]
            else:
                call = self.fast_calls.get(x.shape, False)
                if call is False:
                    call = _bound_qconv(self, x.shape)
                if call is not None:
                    y = call(x)
                    if y is None:       # not C-contiguous (an NHWC view of NCHW bytes)
                        y = call(qgemm.contiguous_bytes(x, self.context))
                    return [y]
        if self.channels_last:      # the general path is NCHW
            x = _integer(self, x, 0)
            if x.ndim != 4:
                self.fail(f"input must be 4-D (N, H, W, C) with channels_last, got shape "
                          f"{x.shape}")
            y = self._general([x.transpose(0, 3, 1, 2)] + list(inputs[1:]), out)
            return [np.ascontiguousarray(y.transpose(0, 2, 3, 1))]
        return [self._general(inputs, out)]

    def bind(self, specs, out):
        """The C convolution bound to the planned input shape (no per-call geometry or
        checks in Python); None where ``run`` must decide."""
        if not isinstance(self.fast, qgemm.QConv2d) or specs[0] is None:
            return None
        shape, dtype = specs[0]
        if dtype != _UINT8 or len(shape) != 4:
            return None
        call = _planned_qconv(self, shape)
        return None if call is None else bound_step(call, self, out)

    def _general(self, inputs, out):
        y = super().run(inputs, out)[0]
        lo, hi = _clamp_bounds(self.attrs, y.dtype)
        if (lo, hi) != _clamp_bounds({}, y.dtype):
            y = np.clip(y, lo, hi).astype(y.dtype, copy=False)
        return y

    def product(self, x, x_zp, w, w_zp, inputs):
        acc = _integer_conv(self, x, x_zp, w, w_zp, self.attrs, self.packed)
        bias = inputs[8] if len(inputs) > 8 else None
        if bias is not None:
            bias = _integer(self, bias, 8, (np.int32,))
            if bias.shape != (acc.shape[1],):
                self.fail(f"bias has shape {bias.shape}, expected ({acc.shape[1]},)")
            acc = acc + bias.reshape((-1,) + (1,) * (acc.ndim - 2))
        return acc, acc.shape


@register("QLinearConv", domain="com.microsoft")
class QLinearConvChannelsLast(QLinearConv):
    """``com.microsoft.QLinearConv``: ONNX QLinearConv, reading and writing NHWC where
    ``channels_last`` is 1 (onnxruntime's NHWC form; the integer chains of QDQ models run
    in it, pyconv/graph/_qdq.py). 2-D only."""

    attributes = dict(_CONV_ATTRIBUTES, channels_last=0)

    def setup(self, consts):
        self.channels_last = bool(int(self.attrs["channels_last"]))
        super().setup(consts)


@register("NhwcMaxPool", domain="com.microsoft")
class NhwcMaxPool(Op):
    """``com.microsoft.NhwcMaxPool``: 2-D MaxPool of an 8-bit NHWC tensor, on the integers
    (qgemm.max_pool_nhwc)."""

    attributes = {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None,
                  "kernel_shape": REQUIRED, "pads": None, "storage_order": 0,
                  "strides": None}

    def setup(self, consts):
        self.geometry = ConvAttributes.from_onnx("pool", self.attrs, op=self.node.label)
        if len(self.geometry.kernel_shape) != 2:
            self.fail(f"kernel_shape {list(self.geometry.kernel_shape)}: only 2-D pooling is "
                      f"supported")

    def run(self, inputs, out=None):
        x = _integer(self, inputs[0], 0, (np.uint8, np.int8))
        if x.ndim != 4:
            self.fail(f"input must be 4-D (N, H, W, C), got shape {x.shape}")
        g = self.geometry.resolve(x.shape[1:3])
        return [qgemm.max_pool_nhwc(x, self.geometry.kernel_shape, self.geometry.strides,
                                    g.pads_begin, self.geometry.dilations, g.output_shape,
                                    self.context)]


@register("QLinearMatMul")
class QLinearMatMul(_QLinear):
    """MatMulInteger requantized; ``b``'s scale and zero point per tensor or per
    column."""

    def channel_axis(self, acc):
        return acc.ndim - 1

    def setup(self, consts):
        self.packed = _PackedWeights()

    def product(self, a, a_zp, b, b_zp, inputs):
        acc = _integer_matmul(self, a, a_zp, b, b_zp, self.packed)
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


def _per_tensor(op, inputs, scale_i, zp_i, dtype):
    """A per-tensor scale (float32) and zero point (``dtype`` when absent), each (1,)."""
    scale = _scale(op, inputs, scale_i)
    zp = _zero_point(op, inputs, zp_i, dtype)
    if zp.size != 1 or scale.size != 1:
        op.fail(f"inputs '{op.input_name(scale_i)}' and '{op.input_name(zp_i)}' must be "
                f"scalars (per-tensor quantization)")
    return scale.astype(np.float32).reshape(1), zp.reshape(1)


def _dequantize(op, q, inputs, scale_i, zp_i):
    """Per-tensor ``(q - zp) * scale`` in float32 (DequantizeLinear's kernel)."""
    scale, zp = _per_tensor(op, inputs, scale_i, zp_i, q.dtype)
    return qgemm.dequantize(q.reshape(-1), scale, zp, 0, op.context).reshape(q.shape)


def _quantize(op, y, inputs, scale_i, zp_i, a_dtype):
    """Per-tensor requantization of float32 ``y`` to the type of the zero point (or of
    the quantized inputs when it is absent): QuantizeLinear's kernel."""
    scale, zp = _per_tensor(op, inputs, scale_i, zp_i, a_dtype)
    y = np.asarray(y, np.float32)
    return qgemm.quantize(y.reshape(-1), scale, zp, 0, zp.dtype, op.context).reshape(y.shape)


@register("QLinearAdd", domain="com.microsoft")
class QLinearAdd(_QLinearBinary):
    def setup(self, consts):
        # Constant per-tensor parameters of one 8-bit type (a QDQ model's residual adds):
        # same-shape inputs run in one pass with onnxruntime's arithmetic.
        self.fast = None
        if all(i in consts for i in (1, 2, 4, 5, 6, 7)):
            params = [consts[i] for i in (1, 2, 4, 5, 6, 7)]
            scales, zps = params[0::2], params[1::2]
            if all(s.dtype.kind == "f" and s.size == 1 and np.isfinite(s).all() and s > 0
                   for s in scales) and all(z.size == 1 for z in zps) \
                    and len({z.dtype for z in zps}) == 1 and zps[0].dtype in (U8, I8):
                self.fast = (zps[0].dtype,) + tuple(
                    v for s, z in zip(scales, zps)
                    for v in (np.float32(s.reshape(())), int(z.reshape(()))))

    def run(self, inputs, out=None):
        a, b = inputs[0], inputs[3]
        fast = self.fast
        if fast is not None and type(a) is np.ndarray and type(b) is np.ndarray \
                and a.dtype == fast[0] and b.dtype == fast[0] and a.shape == b.shape:
            return [qgemm.qlinear_add(a, fast[1], fast[2], b, fast[3], fast[4], fast[5],
                                      fast[6], self.context)]
        return super().run(inputs, out)

    def compute(self, a, b):
        return a + b


@register("QLinearConvAdd", domain="pyconv")
class QLinearConvAdd(QLinearConvChannelsLast):
    """A channels-last QLinearConv whose output only a QLinearAdd reads, fused by the
    optimizer (pyconv/graph/_qdq.py): inputs 0-8 the conv's (8, the bias, may be empty),
    9 the add's other operand, 10-15 the add's a_scale, a_zero_point, b_scale,
    b_zero_point, y_scale, y_zero_point; ``_pyconv_conv_operand`` 0 where the conv's
    output is the add's first operand, 1 where it is its second. The add runs on the
    requantized values as they are finished (qgemm.QConvCall.with_add: in the AVX-512
    VNNI GEMM's epilogue, else per block of rows): the two nodes' arithmetic on the same
    uint8 values, without the pass over the whole output."""

    required_inputs = 8

    def setup(self, consts):
        self.side = int(self.attrs.get("_pyconv_conv_operand", 0))
        if len(self.node.inputs) != 16 or not self.node.inputs[9] or self.side not in (0, 1):
            self.fail(f"expected 16 inputs (the conv's 9, the residual, the add's 6 "
                      f"parameters) and _pyconv_conv_operand 0 or 1, got "
                      f"{len(self.node.inputs)} inputs and {self.side}", InvalidModel)
        super().setup({i: v for i, v in consts.items() if i < 9})
        # The add as its own node runs it (the general path; its parameters, checked once).
        ins = self.node.inputs
        pair = [self.node.outputs[0] + "_conv", ins[9]]
        a, b = pair if self.side == 0 else pair[::-1]
        node = Node("QLinearAdd", [a, ins[10], ins[11], b, ins[12], ins[13], ins[14], ins[15]],
                    list(self.node.outputs), name=self.node.name, domain="com.microsoft")
        self.add = QLinearAdd(node, self.opset, {i: consts[j] for i, j in zip(
            (1, 2, 4, 5, 6, 7), range(10, 16)) if j in consts}, self.context)
        self.add_calls = {}         # input shape -> the conv call with the add, or None

    def _add_call(self, shape):
        call = None
        fast = self.add.fast
        if isinstance(self.fast, qgemm.QConv2d) and fast is not None and fast[0] == U8:
            conv = self.fast_calls[shape] if shape in self.fast_calls else \
                _bound_qconv(self, shape)
            try:
                call = None if conv is None else conv.with_add(*fast[1:], self.side == 0)
            except ValueError:      # a conv the fused add does not run in (int8 output)
                call = None
        self.add_calls[shape] = call
        return call

    def run(self, inputs, out=None):
        x, res = inputs[0], inputs[9]
        if type(x) is np.ndarray and x.dtype == _UINT8 and x.ndim == 4:
            call = self.add_calls.get(x.shape, False)
            if call is False:
                call = self._add_call(x.shape)
            if call is not None:
                y = call(x, res)
                if y is None and type(res) is np.ndarray:
                    y = call(qgemm.contiguous_bytes(x, self.context),
                             qgemm.contiguous_bytes(res, self.context))
                if y is not None:
                    return [y]
        y = super().run(inputs[:9])[0]
        pair = [y, res] if self.side == 0 else [res, y]
        return self.add.run([pair[0], inputs[10], inputs[11], pair[1]] + list(inputs[12:16]))

    def bind(self, specs, out):
        """The conv with the add bound to the planned input shapes; None where ``run``
        must decide."""
        if specs[0] is None or specs[9] is None:
            return None
        (shape, dtype), (res_shape, res_dtype) = specs[0], specs[9]
        if dtype != _UINT8 or res_dtype != _UINT8 or len(shape) != 4:
            return None
        try:
            call = self.add_calls[shape] if shape in self.add_calls else \
                self._add_call(shape)
        except PyconvError:
            return None
        if call is None or call.y_shape != res_shape:
            return None
        return bound_step(call, self, out, 9)


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
        channels_last = bool(self.attrs["channels_last"])
        axes = tuple(range(1, x.ndim - 1)) if channels_last else tuple(range(2, x.ndim))
        count = int(np.prod([x.shape[a] for a in axes]))
        keep = [1 if a in axes else x.shape[a] for a in range(x.ndim)]
        if x.dtype in (U8, I8) and 0 < count < 1 << 23:
            total = qgemm.channel_sums(x, channels_last, self.context).astype(np.int64).reshape(
                keep)
        else:
            total = x.astype(np.int64).sum(axis=axes, keepdims=True)
        x_scale, x_zp = _per_tensor(self, inputs, 1, 2, x.dtype)
        mean = (total - count * int(x_zp[0])).astype(np.float32) \
            * (x_scale[0] / np.float32(count))
        return [_quantize(self, mean, inputs, 3, 4, a_dtype=x.dtype)]
