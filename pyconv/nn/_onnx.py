"""Export of a :class:`~pyconv.nn.Module` to ONNX (``Module.to_onnx``, ``nn.to_onnx``).

The module's forward is run once on zeros of the input shape with the input wrapped in
a recording value (:class:`_Traced`). While it runs, every ``Module.__call__`` goes to
the :class:`_Tracer`: a pyconv layer with an ONNX form (``_EXPORTABLE``) is run on the
real array and adds its ONNX nodes (``_emit``, one home for each layer's ONNX form,
shared with the calls through :mod:`pyconv.functional`, which build the same layer);
any other module (containers, user modules) has its forward run on the recording
values. NumPy ufuncs and operators on recorded values (``x + y``, ``x * 0.5``,
``np.maximum``) become their ONNX operators, ``np.concatenate`` a Concat. The real
arrays give every shape the ONNX attributes need (explicit pads for
``padding='same'``, adaptive pooling windows). Nodes are named after the module path;
initializers carry the state_dict names.

With ``dynamic_batch`` the forward is traced at two batch sizes: the two graphs must be
the same (nothing recorded may depend on the batch size), and dim 0 of the input, and
every output dim that follows it, becomes the free dim ``"batch"``.
"""
from __future__ import annotations

import inspect
import os
import threading

import numpy as np

from pyconv import arithmetic
from pyconv._activations import ACTIVATIONS
from pyconv._arrays import as_float32
from pyconv.errors import InvalidArgument
from pyconv.nn import _conv, _layers, _norm, _pool
from pyconv.nn._module import Sequential
from pyconv.nn._module import Module, _tracing

MIN_OPSET = 13   # Softmax over one axis, Resize with sizes, Clip bounds as inputs


class _Builder:
    def __init__(self, helper, numpy_helper, dynamic_batch=False, param_names=None):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.dynamic_batch = dynamic_batch
        self.nodes, self.initializers, self._names = [], [], set()
        # id of each parameter / buffer array -> its state_dict key (the module keeps
        # the arrays alive, so ids are stable), and the initializer made of each.
        self._param_names = param_names or {}
        self._param_consts = {}

    def const(self, name, array):
        """An initializer holding ``array``; a module's parameter or buffer gets its
        state_dict name, once however often it is used."""
        key = id(array)
        if key in self._param_names:
            if key not in self._param_consts:
                self._param_consts[key] = self._add_const(self._param_names[key], array)
            return self._param_consts[key]
        return self._add_const(name, array)

    def _add_const(self, name, array):
        name = self._unique(name)
        self.initializers.append(self.numpy_helper.from_array(np.asarray(array), name))
        return name

    def _unique(self, name):
        base, i = name, 1
        while name in self._names:
            name = f"{base}_{i}"
            i += 1
        self._names.add(name)
        return name

    def node(self, op_type, inputs, output, name, **attrs):
        output = output if output is not None else self._unique(f"{name}.{op_type.lower()}")
        self._names.add(output)
        self.nodes.append(self.helper.make_node(op_type, inputs, [output],
                                                name=self._unique(f"{name}/{op_type}"),
                                                **attrs))
        return output


#: The activation layers as entries of the epilogue registry (pyconv._activations):
#: layer class -> (registry name, the layer's epilogue alpha, beta). The ONNX operator,
#: its attribute names and Clip's bounds-as-inputs come from the registry.
_ACTIVATION_LAYERS = {
    _layers.ReLU: lambda layer: ("relu", 0.0, 0.0),
    _layers.Hardtanh: lambda layer: ("clip", layer.min_val, layer.max_val),   # ReLU6 too
    _layers.LeakyReLU: lambda layer: ("leaky_relu", layer.negative_slope, 0.0),
    _layers.Sigmoid: lambda layer: ("sigmoid", 0.0, 0.0),
    _layers.Hardsigmoid: lambda layer: ("hardsigmoid", 1.0 / 6.0, 0.5),   # relu6(x + 3) / 6
    _layers.Hardswish: lambda layer: ("hardswish", 0.0, 0.0),
    _layers.Tanh: lambda layer: ("tanh", 0.0, 0.0),
    _layers.SiLU: lambda layer: ("silu", 0.0, 0.0),
    _layers.ELU: lambda layer: ("elu", layer.alpha, 0.0),
    _layers.GELU: lambda layer: ("gelu" if layer.approximate == "none" else "gelu_tanh",
                                 0.0, 0.0),
}

#: Opset of ONNX's Gelu operator; earlier opsets get its formula.
GELU_OPSET = 20

_EXPORTABLE = (_layers.PReLU, _layers._PadNd,
               _conv._ConvNd, _pool._MaxPoolNd, _pool._AvgPoolNd, _pool._AdaptivePoolNd,
               _layers._BatchNorm, _layers.Softmax, _layers.Linear, _layers.Flatten,
               _layers.Upsample, _layers.Identity, _layers.Dropout, _norm.LayerNorm,
               _norm.GroupNorm, _norm._InstanceNorm, _norm.PixelShuffle, _norm.PixelUnshuffle,
               *_ACTIVATION_LAYERS)


def _epilogue_of(layer):
    """(registry name, alpha, beta) of an activation layer; None for other layers."""
    for cls in type(layer).__mro__:
        params = _ACTIVATION_LAYERS.get(cls)
        if params is not None:
            return params(layer)
    return None


def _activation_node(b, path, x, out, opset, name, alpha, beta):
    """The ONNX node of an epilogue activation (its registry entry's operator, parameters
    as attributes or, from the opset its entry names, as inputs); SiLU, which no ONNX
    operator computes, and HardSwish before opset 14 as x * (their gate)."""
    act = ACTIVATIONS[name]
    if name in ("gelu", "gelu_tanh") and opset < GELU_OPSET:
        return _gelu_formula(b, path, x, out, name == "gelu_tanh")
    if name == "silu" or (name == "hardswish" and opset < 14):
        gate = _activation_node(b, path, x, None, opset,
                                *(("sigmoid", 0.0, 0.0) if name == "silu"
                                  else ("hardsigmoid", 1.0 / 6.0, 0.5)))
        return b.node("Mul", [x, gate], out, path)
    params = [(p[0], float(v)) for p, v in zip((act.alpha, act.beta), (alpha, beta))
              if p is not None]
    if act.takes_inputs(opset):
        inputs = [x] + [b.const(f"{path}.{key}", np.array(v, np.float32)) for key, v in params]
        return b.node(act.onnx_type, inputs, out, path)
    attrs = dict(params)
    if act.variant is not None:               # Gelu's approximate
        attrs[act.variant[0]] = act.variant[1]
    return b.node(act.onnx_type, [x], out, path, **attrs)


def _gelu_formula(b, path, x, out, tanh):
    """GELU before opset 20: ``x / 2 * (1 + erf(x / sqrt(2)))``, or torch's tanh form
    ``x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))``."""
    def const(key, value):
        return b.const(f"{path}.{key}", np.array(value, np.float32))

    if tanh:
        cube = b.node("Mul", [b.node("Mul", [x, x], None, path), x], None, path)
        inner = b.node("Add", [x, b.node("Mul", [cube, const("coeff", 0.044715)], None,
                                         path)], None, path)
        scaled = b.node("Mul", [inner, const("scale", np.sqrt(2.0 / np.pi))], None, path)
        gate = b.node("Tanh", [scaled], None, path)
    else:
        scaled = b.node("Mul", [x, const("scale", 1.0 / np.sqrt(2.0))], None, path)
        gate = b.node("Erf", [scaled], None, path)
    gate = b.node("Add", [gate, const("one", 1.0)], None, path)
    half = b.node("Mul", [x, const("half", 0.5)], None, path)
    return b.node("Mul", [half, gate], out, path)


def _pad_node(b, path, x, rank, amounts, mode, value):
    """ONNX Pad from torch's pad amounts (last dim first, negative ones crop)."""
    widths = [[0, 0] for _ in range(rank)]
    for j in range(len(amounts) // 2):
        widths[rank - 1 - j] = [int(amounts[2 * j]), int(amounts[2 * j + 1])]
    pads = np.array([w[0] for w in widths] + [w[1] for w in widths], np.int64)
    onnx_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}.get(mode)
    if onnx_mode is None:
        raise InvalidArgument(f"to_onnx: {path!r}: pad mode {mode!r} has no ONNX export "
                              f"here (constant, reflect and replicate do)")
    inputs = [x, b.const(f"{path}.pads", pads)]
    if mode == "constant" and value:
        inputs.append(b.const(f"{path}.value", np.array(value, np.float32)))
    return b.node("Pad", inputs, None, path, mode=onnx_mode)


def _window(layer, n):
    """The ONNX attributes kernel_shape, strides and pads of a pooling layer."""
    a = arithmetic.ConvAttributes.from_torch("pool", n, layer.kernel_size, layer.stride,
                                             layer.padding, op=type(layer).__name__)
    return list(a.kernel_shape), list(a.strides), list(a.pads)


def _adaptive_windows(path, layer, in_shape):
    """(kernel, stride) of a fixed pooling equal to an adaptive one on this input."""
    n = len(in_shape) - 2
    sizes = layer.output_size
    if not isinstance(sizes, (tuple, list)):
        sizes = (sizes,) * n
    spatial = in_shape[2:]
    out = [i if o is None else int(o) for i, o in zip(spatial, sizes)]
    if any(i % o for i, o in zip(spatial, out)):
        raise InvalidArgument(
            f"to_onnx: layer {path!r} ({layer!r}) pools {tuple(spatial)} to {tuple(out)}, "
            f"which is not a fixed pooling window; ONNX has no adaptive pooling")
    return out, [i // o for i, o in zip(spatial, out)]


def _check_exportable(path, layer):
    """Refuse, before running it, a layer that has no ONNX form here."""
    if getattr(layer, "return_indices", False):
        raise InvalidArgument(f"to_onnx: layer {path!r} returns indices, which the export "
                              f"does not support (torch and ONNX number them differently)")
    if not isinstance(layer, _EXPORTABLE):
        raise InvalidArgument(f"to_onnx: layer {path!r} of type {type(layer).__name__} has "
                              f"no ONNX export")


def _emit(b, path, layer, x, out, in_shape, out_shape, opset):
    """Add the nodes of one layer reading ``x``; its result is named ``out`` (or a
    generated name when ``out`` is None). Returns the result name."""
    rank = len(in_shape)
    n = rank - 2
    if isinstance(layer, _conv._ConvNd):
        inputs = [x, b.const(f"{path}.weight", layer.weight)]
        if layer.bias is not None:
            inputs.append(b.const(f"{path}.bias", layer.bias))
        attrs = dict(kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                     dilations=list(layer.dilation), group=layer.groups)
        # 'same' / 'valid' become the pads resolved for this input: exported models
        # have fixed shapes.
        geometry = arithmetic.ConvAttributes.from_torch(
            "conv_transpose" if layer.transposed else "conv", n, layer.kernel_size,
            layer.stride, layer.padding, layer.dilation, layer.output_padding,
            op=type(layer).__name__).resolve(in_shape[2:])
        attrs["pads"] = list(geometry.pads_begin + geometry.pads_end)
        if layer.transposed:
            attrs["output_padding"] = list(geometry.output_padding)
            return b.node("ConvTranspose", inputs, out, path, **attrs)
        return b.node("Conv", inputs, out, path, **attrs)
    if isinstance(layer, _pool._MaxPoolNd):
        k, s, pads = _window(layer, n)
        d = list(arithmetic.normalize_tuple(layer.dilation, n, "dilation"))
        attrs = dict(kernel_shape=k, strides=s, pads=pads, ceil_mode=int(layer.ceil_mode))
        if any(v != 1 for v in d):
            attrs["dilations"] = d
        return b.node("MaxPool", [x], out, path, **attrs)
    if isinstance(layer, _pool._AvgPoolNd):
        if layer.divisor_override is not None:
            raise InvalidArgument(f"to_onnx: layer {path!r}: divisor_override has no ONNX "
                                  f"AveragePool equivalent")
        k, s, pads = _window(layer, n)
        return b.node("AveragePool", [x], out, path, kernel_shape=k, strides=s, pads=pads,
                      ceil_mode=int(layer.ceil_mode),
                      count_include_pad=int(layer.count_include_pad))
    if isinstance(layer, _pool._AdaptivePoolNd):
        is_max = isinstance(layer, _pool._AdaptiveMaxPoolNd)
        if all(o == 1 for o in out_shape[2:]):
            return b.node("GlobalMaxPool" if is_max else "GlobalAveragePool", [x], out, path)
        _, k = _adaptive_windows(path, layer, in_shape)
        return b.node("MaxPool" if is_max else "AveragePool", [x], out, path,
                      kernel_shape=k, strides=k)
    if isinstance(layer, _layers._BatchNorm):
        c = layer.num_features
        scale = layer.weight if layer.weight is not None else np.ones(c, np.float32)
        shift = layer.bias if layer.bias is not None else np.zeros(c, np.float32)
        inputs = [x, b.const(f"{path}.weight", scale), b.const(f"{path}.bias", shift),
                  b.const(f"{path}.running_mean", layer.running_mean),
                  b.const(f"{path}.running_var", layer.running_var)]
        return b.node("BatchNormalization", inputs, out, path, epsilon=float(layer.eps))
    epilogue = _epilogue_of(layer)
    if epilogue is not None:
        return _activation_node(b, path, x, out, opset, *epilogue)
    if isinstance(layer, _layers.Softmax):           # LogSoftmax too
        dim = layer.dim
        if dim is None:
            dim = 0 if rank in (0, 1, 3) else 1
        op_type = "LogSoftmax" if isinstance(layer, _layers.LogSoftmax) else "Softmax"
        return b.node(op_type, [x], out, path, axis=int(dim) % rank)
    if isinstance(layer, _layers.Linear):
        if rank == 2:
            inputs = [x, b.const(f"{path}.weight", layer.weight)]
            if layer.bias is not None:
                inputs.append(b.const(f"{path}.bias", layer.bias))
            return b.node("Gemm", inputs, out, path, transB=1)
        # Gemm is 2-D only: MatMul broadcasts over the leading dims.
        wt = b.const(f"{path}.weight_t", np.ascontiguousarray(layer.weight.T))
        if layer.bias is None:
            return b.node("MatMul", [x, wt], out, path)
        y = b.node("MatMul", [x, wt], None, path)
        return b.node("Add", [y, b.const(f"{path}.bias", layer.bias)], out, path)
    if isinstance(layer, _layers.Flatten):
        start = layer.start_dim % rank
        end = layer.end_dim % rank
        if start == 1 and end == rank - 1:
            return b.node("Flatten", [x], out, path, axis=1)
        # 0 copies a leading dim; the trailing ones move, so they are given explicitly.
        shape = [0] * start + [-1] + list(out_shape[start + 1:])
        return b.node("Reshape", [x, b.const(f"{path}.shape", np.array(shape, np.int64))],
                      out, path)
    if isinstance(layer, _layers.Upsample):
        return _emit_resize(b, path, layer, x, out, in_shape, out_shape)
    if isinstance(layer, (_norm.LayerNorm, _norm.GroupNorm, _norm._InstanceNorm)):
        return _emit_norm(b, path, layer, x, out, in_shape, opset)
    if isinstance(layer, (_norm.PixelShuffle, _norm.PixelUnshuffle)):
        return _emit_shuffle(b, path, layer, x, out, in_shape)
    if isinstance(layer, (_layers.Identity, _layers.Dropout)):
        return b.node("Identity", [x], out, path)
    if isinstance(layer, _layers.PReLU):
        slope = layer.weight
        if rank >= 2:    # one slope per channel (dim 1), broadcast over the trailing dims
            slope = slope.reshape((slope.size,) + (1,) * (rank - 2))
        return b.node("PRelu", [x, b.const(f"{path}.weight", slope)], out, path)
    if isinstance(layer, _layers._PadNd):
        return _pad_node(b, path, x, rank, layer.padding, layer._mode, layer.value)
    raise InvalidArgument(f"to_onnx: layer {path!r} of type {type(layer).__name__} has no "
                          f"ONNX export")


def _ones_zeros(layer, c):
    """The layer's affine parameters, ones / zeros where it has none."""
    weight = layer.weight if layer.weight is not None else np.ones(c, np.float32)
    bias = layer.bias if layer.bias is not None else np.zeros(c, np.float32)
    return weight, bias


def _emit_norm(b, path, layer, x, out, in_shape, opset):
    """LayerNormalization (opset 17+; decomposed before), GroupNormalization (opset 21+;
    before, torch's form: InstanceNormalization of the (N, G, -1) view, then the
    per-channel affine), InstanceNormalization (BatchNormalization with tracked
    statistics, which evaluation mode uses)."""
    rank = len(in_shape)
    eps = float(layer.eps)
    if isinstance(layer, _norm.LayerNorm):
        k = len(layer.normalized_shape)
        if opset >= 17:
            scale = layer.weight if layer.weight is not None else \
                np.ones(layer.normalized_shape, np.float32)
            inputs = [x, b.const(f"{path}.weight", scale)]
            if layer.bias is not None:
                inputs.append(b.const(f"{path}.bias", layer.bias))
            return b.node("LayerNormalization", inputs, out, path, axis=-k, epsilon=eps)
        axes = list(range(rank - k, rank))
        mean = b.node("ReduceMean", [x], None, path, axes=axes)
        centred = b.node("Sub", [x, mean], None, path)
        var = b.node("ReduceMean", [b.node("Mul", [centred, centred], None, path)], None,
                     path, axes=axes)
        std = b.node("Sqrt", [b.node("Add", [var, b.const(f"{path}.eps",
                                                           np.array(eps, np.float32))],
                                     None, path)], None, path)
        last = layer.weight is None and layer.bias is None
        y = b.node("Div", [centred, std], out if last else None, path)
        if layer.weight is not None:
            last = layer.bias is None
            y = b.node("Mul", [y, b.const(f"{path}.weight", layer.weight)],
                       out if last else None, path)
        if layer.bias is not None:
            y = b.node("Add", [y, b.const(f"{path}.bias", layer.bias)], out, path)
        return y
    if isinstance(layer, _norm._InstanceNorm) and rank != layer._n + 2:
        raise InvalidArgument(f"to_onnx: layer {path!r} ({type(layer).__name__}) has an "
                              f"unbatched input of shape {tuple(in_shape)}; export a "
                              f"batched shape")
    c = in_shape[1]
    weight, bias = _ones_zeros(layer, c)
    if isinstance(layer, _norm._InstanceNorm):
        inputs = [x, b.const(f"{path}.weight", weight), b.const(f"{path}.bias", bias)]
        if layer.track_running_stats:
            inputs += [b.const(f"{path}.running_mean", layer.running_mean),
                       b.const(f"{path}.running_var", layer.running_var)]
            return b.node("BatchNormalization", inputs, out, path, epsilon=eps)
        return b.node("InstanceNormalization", inputs, out, path, epsilon=eps)
    g = layer.num_groups
    if opset >= 21:
        return b.node("GroupNormalization", [x, b.const(f"{path}.weight", weight),
                                             b.const(f"{path}.bias", bias)],
                      out, path, num_groups=g, epsilon=eps)
    grouped = b.node("Reshape", [x, b.const(f"{path}.group_shape",
                                            np.array([0, g, -1], np.int64))], None, path)
    normed = b.node("InstanceNormalization",
                    [grouped, b.const(f"{path}.group_scale", np.ones(g, np.float32)),
                     b.const(f"{path}.group_bias", np.zeros(g, np.float32))],
                    None, path, epsilon=eps)
    y = b.node("Reshape", [normed, b.const(f"{path}.shape", np.array(
        [0] + list(in_shape[1:]), np.int64))], None, path)
    view = (c,) + (1,) * (rank - 2)
    y = b.node("Mul", [y, b.const(f"{path}.weight", weight.reshape(view))], None, path)
    return b.node("Add", [y, b.const(f"{path}.bias", bias.reshape(view))], out, path)


def _emit_shuffle(b, path, layer, x, out, in_shape):
    """PixelShuffle: DepthToSpace in CRD mode; PixelUnshuffle: Reshape, Transpose,
    Reshape (ONNX SpaceToDepth has no CRD order before opset 28), as torch exports it."""
    if len(in_shape) != 4:
        raise InvalidArgument(f"to_onnx: layer {path!r} ({type(layer).__name__}) has an "
                              f"input of shape {tuple(in_shape)}; ONNX DepthToSpace / "
                              f"SpaceToDepth take (N, C, H, W)")
    if isinstance(layer, _norm.PixelShuffle):
        return b.node("DepthToSpace", [x], out, path, blocksize=layer.upscale_factor,
                      mode="CRD")
    r = layer.downscale_factor
    n, c, h, w = in_shape
    # 0 copies the input's batch dim (Reshape without allowzero): the batch stays free.
    blocks = b.node("Reshape", [x, b.const(f"{path}.blocks", np.array(
        [0, c, h // r, r, w // r, r], np.int64))], None, path)
    moved = b.node("Transpose", [blocks], None, path, perm=[0, 1, 3, 5, 2, 4])
    return b.node("Reshape", [moved, b.const(f"{path}.shape", np.array(
        [0, c * r * r, h // r, w // r], np.int64))], out, path)


def _emit_resize(b, path, layer, x, out, in_shape, out_shape):
    mode = layer.mode
    if mode == "area":
        # adaptive average pooling: a fixed window only where the sizes divide
        spatial, target = in_shape[2:], out_shape[2:]
        if all(o == 1 for o in target):
            return b.node("GlobalAveragePool", [x], out, path)
        if any(i % o for i, o in zip(spatial, target)):
            raise InvalidArgument(
                f"to_onnx: layer {path!r} ({layer!r}) averages {tuple(spatial)} into "
                f"{tuple(target)}, which is not a fixed pooling window; ONNX has no "
                f"adaptive pooling")
        k = [i // o for i, o in zip(spatial, target)]
        return b.node("AveragePool", [x], out, path, kernel_shape=k, strides=k)
    if mode == "nearest":
        attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                     nearest_mode="floor")
    elif mode == "nearest-exact":
        attrs = dict(mode="nearest", coordinate_transformation_mode="half_pixel",
                     nearest_mode="round_prefer_ceil")
    else:
        # half_pixel is torch's rule for every output size (torch's exporter writes
        # pytorch_half_pixel, which differs from it for an output size of 1).
        ac = bool(layer.align_corners)
        attrs = dict(mode="cubic" if mode == "bicubic" else "linear",
                     coordinate_transformation_mode="align_corners" if ac else "half_pixel")
        if mode == "bicubic":
            attrs["cubic_coeff_a"] = -0.75
    n = len(in_shape) - 2
    # align_corners maps corners with the integer output size, which only sizes give.
    if layer.scale_factor is not None and not layer.recompute_scale_factor and \
            not layer.align_corners:
        factors = layer.scale_factor
        if not isinstance(factors, (tuple, list)):
            factors = (factors,) * n
        factors = [float(f) for f in factors]
        for axis, (i, o) in enumerate(zip(in_shape[2:], out_shape[2:])):
            # Where torch's kernels skip the scale (2-D nearest: out == in or 2 * in;
            # linear without align_corners: out == in), give ONNX the exact ratio.
            if (mode == "nearest" and n == 2 and o in (i, 2 * i)) or (
                    mode not in ("nearest", "nearest-exact") and not layer.align_corners
                    and o == i):
                factors[axis] = o / i
        scales = np.array([1.0, 1.0] + factors, np.float32)
        inputs = [x, "", b.const(f"{path}.scales", scales)]
    elif b.dynamic_batch:
        # Sizes of (N, C) from the input at run time, the spatial ones fixed.
        shape = b.node("Shape", [x], None, path)
        lead = b.node("Slice", [shape, b.const(f"{path}.start", np.array([0], np.int64)),
                                b.const(f"{path}.end", np.array([2], np.int64))], None, path)
        spatial = b.const(f"{path}.spatial_sizes", np.array(out_shape[2:], np.int64))
        sizes = b.node("Concat", [lead, spatial], None, path, axis=0)
        inputs = [x, "", "", sizes]
    else:
        sizes = np.array(out_shape, np.int64)
        inputs = [x, "", "", b.const(f"{path}.sizes", sizes)]
    return b.node("Resize", inputs, out, path, **attrs)


# ---------------------------------------------------------------------------------------
# Tracing

#: NumPy ufuncs recorded as ONNX operators (float32 in, float32 out).
_UFUNCS = {
    np.add: "Add", np.subtract: "Sub", np.multiply: "Mul", np.true_divide: "Div",
    np.maximum: "Max", np.minimum: "Min", np.power: "Pow", np.negative: "Neg",
    np.exp: "Exp", np.log: "Log", np.sqrt: "Sqrt", np.tanh: "Tanh", np.abs: "Abs",
    np.reciprocal: "Reciprocal",
}


def _error(tracer, what):
    where = tracer.path or type(tracer.root).__name__
    return InvalidArgument(f"to_onnx: {what} (in module {where!r}) has no ONNX export; "
                           f"a traced forward may use pyconv.nn layers, pyconv.functional "
                           f"calls, arithmetic and NumPy ufuncs "
                           f"({', '.join(sorted(u.__name__ for u in _UFUNCS))}), "
                           f"np.concatenate, mean / sum / max, reshape and transpose")


class _BatchSize(int):
    """Dim 0 of a traced value that follows the free batch dim: ``x.reshape(x.shape[0],
    -1)`` keeps the batch free (any arithmetic on it gives a plain int)."""


class _Traced(np.lib.mixins.NDArrayOperatorsMixin):
    """A value recorded in the ONNX graph: its graph name and its real array (zeros in,
    so shapes are concrete), and whether its dim 0 is the free batch dim. Operators and
    NumPy ufuncs on it add nodes; anything that would need its numbers (``np.asarray``,
    ``bool``, ``float``) raises."""

    __slots__ = ("tracer", "name", "value", "batched")

    def __init__(self, tracer, name, value, batched=False):
        self.tracer, self.name, self.value, self.batched = tracer, name, value, batched

    @property
    def shape(self):
        shape = self.value.shape
        return (_BatchSize(shape[0]),) + shape[1:] if self.batched else shape

    ndim = property(lambda self: self.value.ndim)
    dtype = property(lambda self: self.value.dtype)
    size = property(lambda self: self.value.size)

    def __len__(self):
        return len(self.value)

    def __repr__(self):
        return f"<traced {self.name!r}: float32 {self.value.shape}>"

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return self.tracer.ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return self.tracer.array_function(func, args, kwargs)

    def __array__(self, dtype=None, copy=None):
        raise _error(self.tracer, "converting a traced value to a NumPy array (done by "
                                  "code other than pyconv layers and pyconv.functional "
                                  "calls looked up at call time, such as F.relu(x); a "
                                  "function imported by name is not recorded)")

    def __bool__(self):
        raise _error(self.tracer, "control flow on a traced value's numbers")

    def __float__(self):
        raise _error(self.tracer, "float() of a traced value")

    __int__ = __index__ = __float__

    def __getitem__(self, index):
        raise _error(self.tracer, "indexing a traced value")

    def __setitem__(self, index, value):
        raise _error(self.tracer, "assigning into a traced value")

    def __getattr__(self, name):
        if name.startswith("__") or name in _Traced.__slots__:
            raise AttributeError(name)
        raise _error(self.tracer, f"ndarray attribute {name!r} of a traced value")

    def reshape(self, *shape, order="C"):
        """Reshape; with dynamic_batch the batch size may appear only as ``x.shape[0]``
        in first place (the batch dim kept), no other way."""
        if order != "C":
            raise _error(self.tracer, f"reshape with order={order!r}")
        return self.tracer.reshape(self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes):
        return self.tracer.transpose(self, axes[0] if len(axes) == 1 else (axes or None))

    def mean(self, axis=None, dtype=None, out=None, keepdims=False):
        return self.tracer.reduce(np.mean, self, axis, dtype, out, keepdims)

    def sum(self, axis=None, dtype=None, out=None, keepdims=False):
        return self.tracer.reduce(np.sum, self, axis, dtype, out, keepdims)

    def max(self, axis=None, out=None, keepdims=False):
        return self.tracer.reduce(np.max, self, axis, None, out, keepdims)

    @property
    def T(self):
        return self.tracer.transpose(self, None)


def _any_traced(values):
    for v in values:
        if isinstance(v, _Traced):
            return True
        if isinstance(v, (list, tuple)) and _any_traced(v):
            return True
    return False


def _real(value):
    """``value`` with recorded values replaced by their arrays."""
    if isinstance(value, _Traced):
        return value.value
    if isinstance(value, (list, tuple)):
        return type(value)(_real(v) for v in value)
    return value


def _defines_forward(module):
    """The class whose ``forward`` a module runs."""
    for cls in type(module).__mro__:
        if "forward" in cls.__dict__:
            return cls
    return Module


def _is_pyconv_class(cls):
    return cls.__module__.startswith("pyconv.nn.")


class _Tracer:
    """Records one forward of ``root`` into a :class:`_Builder` (see the module doc)."""

    def __init__(self, builder, root, opset):
        self.b, self.root, self.opset = builder, root, opset
        self.paths = {id(m): p for p, m in root.named_modules()}
        self._stack = [""]
        self._calls = {}

    @property
    def path(self):
        return self._stack[-1]

    def _sub_path(self, what):
        count = self._calls[(self.path, what)] = self._calls.get((self.path, what), -1) + 1
        name = what if count == 0 else f"{what}_{count}"
        return f"{self.path}.{name}" if self.path else name

    def _wrap(self, name, value, batched=False):
        value = np.asarray(value)
        if value.dtype != np.float32:
            raise InvalidArgument(f"to_onnx: {name!r} (in module {self.path or 'root'!r}) "
                                  f"gives dtype {value.dtype}; the traced values must stay "
                                  f"float32")
        return _Traced(self, name, value, batched)

    @staticmethod
    def _keeps_batch(x, y):
        """Whether a layer's result ``y`` has the batch dim of its input ``x`` as dim 0
        (layers keep dim 0 or merge it into a larger one)."""
        return x.batched and y.ndim >= 1 and y.shape[0] == x.value.shape[0]

    def _const(self, value, what):
        """An operand that is not a recorded value, as a float32 initializer."""
        if isinstance(value, (bool, np.bool_)):
            raise _error(self, f"{what} with a bool operand")
        name = f"{self._sub_path(what)}.const"
        if isinstance(value, np.ndarray) and value.dtype == np.float32:
            return self.b.const(name, value)      # a parameter or buffer keeps its name
        arr = np.asarray(value)
        if arr.ndim == 0 and arr.dtype.kind in "iuf" and not isinstance(value, np.ndarray):
            return self.b.const(name, arr.astype(np.float32))
        raise InvalidArgument(f"to_onnx: {what} (in module {self.path or 'root'!r}) with an "
                              f"operand of dtype {arr.dtype}: constants must be float32 "
                              f"arrays or Python numbers")

    # -- modules ---------------------------------------------------------------------

    def call_module(self, module, args, kwargs):
        path = self.paths.get(id(module))
        if path is None:              # created inside forward: not in the state_dict
            path = self._sub_path(type(module).__name__)
        if not _any_traced(args) and not _any_traced(kwargs.values()):
            return module.forward(*args, **kwargs)          # a constant: just run it
        owner = _defines_forward(module)
        if _is_pyconv_class(owner) and isinstance(module, _EXPORTABLE):
            return self._layer(module, path, args, kwargs)
        if _is_pyconv_class(owner) and owner is not Sequential:
            _check_exportable(path, module)      # raises: a pyconv layer without export
        self._stack.append(path)
        try:
            return module.forward(*args, **kwargs)
        finally:
            self._stack.pop()

    def _layer(self, layer, path, args, kwargs):
        if len(args) != 1 or kwargs or not isinstance(args[0], _Traced):
            raise InvalidArgument(f"to_onnx: layer {path!r} ({type(layer).__name__}) must be "
                                  f"called with one traced input, got {len(args)} "
                                  f"positional and {sorted(kwargs)} keyword arguments")
        _check_exportable(path, layer)
        x = args[0]
        y = layer.forward(x.value)
        name = _emit(self.b, path, layer, x.name, None, x.value.shape, y.shape, self.opset)
        out = self._wrap(name, y, self._keeps_batch(x, y))
        if getattr(layer, "inplace", False):
            # In place, the caller's array holds the result too: so does its record.
            x.name, x.value = out.name, out.value
            return x
        return out

    # -- pyconv.functional ----------------------------------------------------------

    def call_function(self, fname, fn, args, kwargs):
        try:
            bound = inspect.signature(fn).bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidArgument(f"to_onnx: pyconv.functional.{fname}: {exc}") from None
        bound.apply_defaults()
        a = dict(bound.arguments)
        first = next(iter(a))
        x = a.pop(first)
        path = self._sub_path(fname)
        for key, value in a.items():
            if _any_traced([value]):
                raise _error(self, f"pyconv.functional.{fname} with traced argument {key!r} "
                                   f"(weights and options must be constants)")
        if not isinstance(x, _Traced):
            raise _error(self, f"pyconv.functional.{fname} with a traced argument other "
                               f"than its input")
        if fname == "pad":
            y = fn(x.value, **a)
            name = _pad_node(self.b, path, x.name, x.ndim, a["pad"], a["mode"],
                             0.0 if a["value"] is None else float(a["value"]))
            return self._wrap(name, y, self._keeps_batch(x, y))
        if fname == "dropout":
            if a["training"]:
                raise InvalidArgument(f"to_onnx: {path!r}: dropout with training=True")
            return x
        try:
            layer = _functional_layer(fname, fn, x.value, a)
        except InvalidArgument as exc:     # e.g. conv2d's ONNX-style pads, which no layer takes
            raise InvalidArgument(f"to_onnx: pyconv.functional.{fname} (in module "
                                  f"{self.path or 'root'!r}) with these arguments has no "
                                  f"ONNX export here: {exc}") from None
        if layer is None:
            raise _error(self, f"pyconv.functional.{fname}")
        y = fn(x.value, **a)                 # the function's own result and checks
        name = _emit(self.b, path, layer, x.name, None, x.value.shape, y.shape, self.opset)
        out = self._wrap(name, y, self._keeps_batch(x, y))
        if a.get("inplace"):
            x.name, x.value = out.name, out.value
            return x
        return out

    # -- NumPy ----------------------------------------------------------------------

    def ufunc(self, ufunc, method, inputs, kwargs):
        what = f"numpy.{ufunc.__name__}"
        op_type = _UFUNCS.get(ufunc)
        out = kwargs.pop("out", None)
        if method != "__call__" or op_type is None or kwargs:
            raise _error(self, what if method == "__call__" else f"{what}.{method}")
        if out is not None and (len(out) != 1 or not isinstance(out[0], _Traced)
                                or not any(out[0] is v for v in inputs)):
            raise _error(self, f"{what} with out= other than one of its traced inputs")
        with np.errstate(all="ignore"):        # zeros in: 0 / 0 and log(0) are expected
            y = ufunc(*[_real(v) for v in inputs])
        names = [v.name if isinstance(v, _Traced) else self._const(v, what) for v in inputs]
        # Broadcasting keeps the batch of an operand of the result's rank.
        batched = any(isinstance(v, _Traced) and v.batched and v.ndim == y.ndim
                      for v in inputs)
        result = self._wrap(self.b.node(op_type, names, None, self._sub_path(op_type)), y,
                            batched)
        if out is not None:                    # x += y: x itself now holds the result
            target = out[0]
            target.name, target.value = result.name, result.value
            target.batched = result.batched
            return target
        return result

    def array_function(self, func, args, kwargs):
        if func is np.concatenate:
            return self.concatenate(*args, **kwargs)
        if func is np.reshape:
            bound = inspect.signature(lambda a, newshape=None, order="C", *, shape=None,
                                      copy=None: None).bind(*args, **kwargs)
            a = bound.arguments
            shape = a.get("shape", a.get("newshape"))
            return self.reshape(a["a"], shape)
        if func is np.transpose:
            return self.transpose(*args, **kwargs)
        if func in _REDUCTIONS:
            a = inspect.signature(func).bind(*args, **kwargs).arguments
            extra = set(a) - {"a", "axis", "dtype", "out", "keepdims"}
            if extra or not isinstance(a.get("a"), _Traced):
                raise _error(self, f"numpy.{func.__name__} with {sorted(extra) or 'a'} "
                                   f"arguments")
            return self.reduce(func, a["a"], a.get("axis"), a.get("dtype"), a.get("out"),
                               bool(a.get("keepdims", False)))
        raise _error(self, f"numpy.{func.__name__}")

    def concatenate(self, arrays, axis=0, out=None, dtype=None, casting=None):
        if out is not None or dtype is not None or axis is None:
            raise _error(self, "numpy.concatenate with out, dtype or axis=None")
        arrays = list(arrays)
        y = np.concatenate([_real(v) for v in arrays], axis=axis)
        names = [v.name if isinstance(v, _Traced) else self._const(v, "numpy.concatenate")
                 for v in arrays]
        axis = int(axis) % y.ndim
        batched = axis != 0 and any(isinstance(v, _Traced) and v.batched for v in arrays)
        return self._wrap(self.b.node("Concat", names, None, self._sub_path("Concat"),
                                      axis=axis), y, batched)

    def reshape(self, x, shape):
        y = x.value.reshape(shape)
        dims = list(y.shape)
        # x.reshape(x.shape[0], ...): ONNX's 0 copies the (free) batch dim of the input.
        first = shape[0] if isinstance(shape, (tuple, list)) and shape else shape
        batched = x.batched and isinstance(first, _BatchSize)
        if batched:
            dims[0] = 0
        path = self._sub_path("Reshape")
        target = self.b.const(f"{path}.shape", np.array(dims, np.int64))
        return self._wrap(self.b.node("Reshape", [x.name, target], None, path), y, batched)

    def reduce(self, func, x, axis=None, dtype=None, out=None, keepdims=False):
        """np.mean / np.sum / np.max (and the methods) over some or all axes."""
        what = f"numpy.{func.__name__}"
        if dtype is not None or out is not None:
            raise _error(self, f"{what} with dtype or out")
        y = np.asarray(func(x.value, axis=axis, keepdims=keepdims))
        op_type = _REDUCTIONS[func]
        attrs = dict(keepdims=int(bool(keepdims)))
        inputs = [x.name]
        axes = None
        if axis is not None:
            axes = [int(a) % x.ndim for a in (axis if isinstance(axis, (tuple, list))
                                               else (axis,))]
            # ReduceSum takes the axes as an input from opset 13, the others from 18.
            if op_type == "ReduceSum" or self.opset >= 18:
                path = self._sub_path(op_type)
                inputs.append(self.b.const(f"{path}.axes", np.array(axes, np.int64)))
            else:
                attrs["axes"] = axes
        batched = x.batched and axes is not None and 0 not in axes
        return self._wrap(self.b.node(op_type, inputs, None, self._sub_path(op_type),
                                      **attrs), y, batched)

    def transpose(self, x, axes=None):
        y = np.transpose(x.value, axes)
        perm = list(range(x.ndim))[::-1] if axes is None else [int(a) % x.ndim for a in axes]
        return self._wrap(self.b.node("Transpose", [x.name], None,
                                      self._sub_path("Transpose"), perm=perm), y,
                          x.batched and perm[0] == 0)


#: NumPy reductions recorded as ONNX operators.
_REDUCTIONS = {np.mean: "ReduceMean", np.sum: "ReduceSum", np.max: "ReduceMax",
               np.amax: "ReduceMax"}


def _functional_layer(fname, fn, x, a):
    """The pyconv layer computing ``pyconv.functional.<fname>(x, **a)``, whose ONNX form
    is the call's; None when there is none."""
    cls = _FUNCTION_LAYERS.get(fname)
    if cls is not None:
        params = inspect.signature(cls.__init__).parameters
        defaults = inspect.signature(fn).parameters
        for key, value in a.items():
            # An argument the layer does not take must be the function's default.
            if key not in params and value is not defaults[key].default and \
                    value != defaults[key].default:
                return None
        return cls(**{k: v for k, v in a.items() if k in params})
    n = x.ndim - 2
    weight, bias = a.get("weight"), a.get("bias")
    if weight is not None:
        weight = as_float32(weight, "weight", fname)
    if bias is not None:
        bias = as_float32(bias, "bias", fname)
    if fname == "linear":
        layer = _layers.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    elif fname in ("conv1d", "conv2d", "conv3d"):
        layer = getattr(_conv, f"Conv{n}d")(
            weight.shape[1] * a["groups"], weight.shape[0], weight.shape[2:], a["stride"],
            a["padding"], a["dilation"], a["groups"], bias is not None)
    elif fname in ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
        if a["output_size"] is not None:
            return None
        layer = getattr(_conv, f"ConvTranspose{n}d")(
            weight.shape[0], weight.shape[1] * a["groups"], weight.shape[2:], a["stride"],
            a["padding"], a["output_padding"], a["groups"], bias is not None, a["dilation"])
    elif fname in ("layer_norm", "group_norm"):
        shape = (tuple(a["normalized_shape"]) if fname == "layer_norm" and
                 not isinstance(a["normalized_shape"], int) else a.get("normalized_shape"))
        layer = (_norm.LayerNorm(shape, eps=a["eps"], elementwise_affine=weight is not None,
                                 bias=bias is not None) if fname == "layer_norm" else
                 _norm.GroupNorm(a["num_groups"], x.shape[1], eps=a["eps"],
                                 affine=weight is not None))
        if weight is None or bias is None and fname == "group_norm":
            return layer if weight is None and bias is None else None
    elif fname == "batch_norm":
        if a["training"] or x.ndim not in (2, 3, 4, 5):
            return None
        cls = _layers.BatchNorm1d if x.ndim <= 3 else getattr(_layers, f"BatchNorm{n}d")
        layer = cls(x.shape[1], eps=a["eps"], affine=True)
        layer.__dict__["_buffers"].update(
            running_mean=as_float32(a["running_mean"], "running_mean", fname),
            running_var=as_float32(a["running_var"], "running_var", fname))
        c = x.shape[1]
        weight = np.ones(c, np.float32) if weight is None else weight
        bias = np.zeros(c, np.float32) if bias is None else bias
    else:
        return None
    # The call's own arrays, so that module parameters keep their state_dict names.
    layer.__dict__["_parameters"]["weight"] = weight
    layer.__dict__["_parameters"]["bias"] = bias
    return layer


#: pyconv.functional names computed by a layer built from the same arguments.
_FUNCTION_LAYERS = {
    "relu": _layers.ReLU, "relu6": _layers.ReLU6, "hardtanh": _layers.Hardtanh,
    "leaky_relu": _layers.LeakyReLU, "sigmoid": _layers.Sigmoid,
    "hardsigmoid": _layers.Hardsigmoid, "hardswish": _layers.Hardswish,
    "tanh": _layers.Tanh, "silu": _layers.SiLU, "elu": _layers.ELU, "gelu": _layers.GELU,
    "softmax": _layers.Softmax, "log_softmax": _layers.LogSoftmax,
    "flatten": _layers.Flatten, "interpolate": _layers.Upsample,
    "pixel_shuffle": _norm.PixelShuffle, "pixel_unshuffle": _norm.PixelUnshuffle,
    **{f"max_pool{n}d": getattr(_pool, f"MaxPool{n}d") for n in (1, 2, 3)},
    **{f"avg_pool{n}d": getattr(_pool, f"AvgPool{n}d") for n in (1, 2, 3)},
    **{f"adaptive_avg_pool{n}d": getattr(_pool, f"AdaptiveAvgPool{n}d") for n in (1, 2, 3)},
    **{f"adaptive_max_pool{n}d": getattr(_pool, f"AdaptiveMaxPool{n}d") for n in (1, 2, 3)},
}


# ---------------------------------------------------------------------------------------
# pyconv.functional during a trace

_patch_lock = threading.Lock()
_patch_count = 0


def _traceable(fname, fn):
    def call(*args, **kwargs):
        tracer = getattr(_tracing, "tracer", None)
        if tracer is None or not (_any_traced(args) or _any_traced(kwargs.values())):
            return fn(*args, **kwargs)
        return tracer.call_function(fname, fn, args, kwargs)
    call.__wrapped__ = fn
    call.__name__, call.__doc__ = fn.__name__, fn.__doc__
    return call


class _FunctionalRecording:
    """While any trace runs, the names of :mod:`pyconv.functional` (and its alias
    ``pyconv.nn.functional``) are wrappers that record calls on traced values and call
    the function otherwise (other threads are unaffected). Calls looked up at call time
    (``F.relu(x)``) are seen; a function imported by name before the export is not,
    and fails on the traced value with a clear error."""

    def __enter__(self):
        global _patch_count
        import pyconv.functional as functional
        from pyconv.nn import functional as nn_functional
        with _patch_lock:
            if _patch_count == 0:
                for namespace in (functional, nn_functional):
                    for fname in functional.__all__:
                        fn = getattr(namespace, fname)
                        if inspect.isfunction(fn):
                            setattr(namespace, fname, _traceable(fname, fn))
            _patch_count += 1
        return self

    def __exit__(self, *exc):
        global _patch_count
        import pyconv.functional as functional
        from pyconv.nn import functional as nn_functional
        with _patch_lock:
            _patch_count -= 1
            if _patch_count == 0:
                for namespace in (functional, nn_functional):
                    for fname in functional.__all__:
                        fn = getattr(namespace, fname)
                        setattr(namespace, fname, getattr(fn, "__wrapped__", fn))
        return False


# ---------------------------------------------------------------------------------------
# Export

def _trace(module, shape, opset, dynamic_batch, helper, numpy_helper):
    """Record one forward on zeros of ``shape``: (builder, output names, output arrays)."""
    param_names = {id(v): k for k, v in module.state_dict().items()}
    b = _Builder(helper, numpy_helper, dynamic_batch, param_names)
    tracer = _Tracer(b, module, opset)
    x = _Traced(tracer, "input", np.zeros(shape, np.float32), dynamic_batch)
    previous = getattr(_tracing, "tracer", None)
    if previous is not None:
        raise InvalidArgument("to_onnx: cannot export from inside a traced forward")
    _tracing.tracer = tracer
    try:
        with _FunctionalRecording(), np.errstate(all="ignore"):
            result = module(x)
    finally:
        _tracing.tracer = None
    results = list(result) if isinstance(result, (tuple, list)) else [result]
    for i, r in enumerate(results):
        if not isinstance(r, _Traced):
            raise InvalidArgument(f"to_onnx: output {i} of {type(module).__name__}.forward "
                                  f"is {type(r).__name__}, not a value computed from the "
                                  f"input")
    # Name the outputs: rename the producing node's output, or add an Identity when the
    # value is the input itself or is returned twice.
    out_names = ["output"] if len(results) == 1 else [f"output_{i}" for i in
                                                     range(len(results))]
    renamed = {}
    for r, out_name in zip(results, out_names):
        if r.name == "input" or r.name in renamed:
            b.node("Identity", [r.name], out_name, out_name)
        else:
            renamed[r.name] = out_name
    for node in b.nodes:
        node.output[:] = [renamed.get(n, n) for n in node.output]
        node.input[:] = [renamed.get(n, n) for n in node.input]
    _prune(b, out_names)
    return b, out_names, [r.value for r in results]


def _prune(b, outputs):
    """Drop the nodes (and initializers) no output depends on."""
    needed, kept = set(outputs), []
    for node in reversed(b.nodes):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    b.nodes = kept[::-1]
    b.initializers = [t for t in b.initializers if t.name in needed]


def _first_difference(b1, b2):
    """A description of the first node or initializer that differs, or None."""
    if len(b1.nodes) != len(b2.nodes):
        return f"{len(b1.nodes)} nodes against {len(b2.nodes)}"
    for n1, n2 in zip(b1.nodes, b2.nodes):
        if n1.SerializeToString() != n2.SerializeToString():
            return f"node {n1.name!r} ({n1.op_type})"
    if len(b1.initializers) != len(b2.initializers):
        return f"{len(b1.initializers)} initializers against {len(b2.initializers)}"
    for t1, t2 in zip(b1.initializers, b2.initializers):
        if t1.SerializeToString() != t2.SerializeToString():
            return f"constant {t1.name!r}"
    return None


def export(module, path, input_shape, opset=17, dynamic_batch=True):
    """Implementation of :meth:`pyconv.nn.Module.to_onnx` (see there)."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:  # pragma: no cover - onnx is a dependency
        raise ImportError("to_onnx needs the 'onnx' package") from exc
    if not isinstance(module, Module):
        raise InvalidArgument(f"to_onnx: expected a pyconv.nn.Module, got "
                              f"{type(module).__name__}")
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise InvalidArgument(f"to_onnx: opset must be an int, got {opset!r}")
    latest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= latest:
        raise InvalidArgument(f"to_onnx: opset must be between {MIN_OPSET} and {latest} "
                              f"(this onnx package), got {opset}")
    if not isinstance(dynamic_batch, bool):
        raise InvalidArgument(f"to_onnx: dynamic_batch must be a bool, got {dynamic_batch!r}")
    try:
        shape = tuple(int(s) for s in input_shape)
    except TypeError:
        raise InvalidArgument(f"to_onnx: input_shape must be a sequence of ints, "
                              f"got {input_shape!r}") from None
    if not shape or min(shape) < 1:
        raise InvalidArgument(f"to_onnx: input_shape must be non-empty with positive "
                              f"sizes, got {input_shape!r}")
    arithmetic.check_tensor_size(shape, "to_onnx", "input_shape")
    opset = int(opset)
    b, out_names, outs = _trace(module, shape, opset, dynamic_batch, helper, numpy_helper)
    in_dims = list(shape)
    out_dims = [list(y.shape) for y in outs]
    if dynamic_batch:
        # Trace again one batch larger: the graph must not change, and the output dims
        # that change with the batch are the free ones.
        shape2 = (shape[0] + 1,) + shape[1:]
        try:
            b2, _, outs2 = _trace(module, shape2, opset, True, helper, numpy_helper)
        except InvalidArgument as exc:
            raise InvalidArgument(f"to_onnx: with dynamic_batch=True the forward is traced "
                                  f"at batch {shape[0]} and {shape2[0]}; at {shape2[0]}: "
                                  f"{exc}") from None
        diff = _first_difference(b, b2)
        if diff is not None:
            raise InvalidArgument(
                f"to_onnx: the traced graph depends on the batch size ({diff} differs "
                f"between batch {shape[0]} and {shape2[0]}: e.g. a reshape naming the batch "
                f"size; use F.flatten, or export with dynamic_batch=False)")
        in_dims[0] = "batch"
        for dims, y2 in zip(out_dims, outs2):
            for k, (d1, d2) in enumerate(zip(list(dims), y2.shape)):
                if d1 != d2:
                    dims[k] = "batch" if (d1, d2) == (shape[0], shape2[0]) else None
    graph = helper.make_graph(
        b.nodes, type(module).__name__,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_dims)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)
         for name, dims in zip(out_names, out_dims)],
        initializer=b.initializers)
    opset_id = helper.make_opsetid("", opset)
    onnx_model = helper.make_model(graph, opset_imports=[opset_id],
                                   producer_name="pyconv")
    # The oldest IR version that carries this opset: readable by the most runtimes.
    onnx_model.ir_version = helper.find_min_ir_version_for([opset_id])
    onnx.checker.check_model(onnx_model, full_check=True)
    if path is not None:
        onnx.save(onnx_model, os.fspath(path))
    return onnx_model

