"""Export of a :class:`~pyconv.nn.Sequential` layer stack to ONNX (``Sequential.to_onnx``).

The stack is run once on zeros of the input shape to learn every layer's input and
output shape (some ONNX attributes depend on them: explicit pads for ``padding='same'``,
``Resize`` sizes, adaptive pooling windows). Each layer becomes one or two ONNX nodes
named after the layer's path; initializers carry the state_dict names.
"""
from __future__ import annotations

import os

import numpy as np

from pyconv import arithmetic
from pyconv._activations import ACTIVATIONS
from pyconv.errors import InvalidArgument
from pyconv.nn import _conv, _layers, _norm, _pool
from pyconv.nn._module import Sequential

MIN_OPSET = 13   # Softmax over one axis, Resize with sizes, Clip bounds as inputs


def _leaves(seq, prefix):
    """(path, module) of every layer, nested Sequentials flattened."""
    for name, module in seq.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if type(module) is Sequential or isinstance(module, Sequential):
            yield from _leaves(module, path)
        else:
            yield path, module


class _Builder:
    def __init__(self, helper, numpy_helper, TensorProto):
        self.helper, self.numpy_helper, self.TensorProto = helper, numpy_helper, TensorProto
        self.nodes, self.initializers, self._names = [], [], set()

    def const(self, name, array):
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
}

_EXPORTABLE = (_conv._ConvNd, _pool._MaxPoolNd, _pool._AvgPoolNd, _pool._AdaptivePoolNd,
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
    return b.node(act.onnx_type, [x], out, path, **dict(params))


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
    """Refuse, before running anything, layers that have no ONNX form here."""
    if getattr(layer, "return_indices", False):
        raise InvalidArgument(f"to_onnx: layer {path!r} returns indices, which a "
                              f"Sequential cannot pass on")
    if isinstance(layer, _pool._MaxUnpoolNd):
        raise InvalidArgument(f"to_onnx: layer {path!r} ({type(layer).__name__}) needs the "
                              f"indices of a pooling layer, which a Sequential cannot pass")
    if not isinstance(layer, _EXPORTABLE):
        raise InvalidArgument(f"to_onnx: layer {path!r} of type {type(layer).__name__} has "
                              f"no ONNX export (custom modules cannot be exported)")


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
        if layer.return_indices:
            raise InvalidArgument(f"to_onnx: layer {path!r} returns indices, which a "
                                  f"Sequential cannot pass on")
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
        if getattr(layer, "return_indices", False):
            raise InvalidArgument(f"to_onnx: layer {path!r} returns indices, which a "
                                  f"Sequential cannot pass on")
        is_max = isinstance(layer, _pool._AdaptiveMaxPoolNd)
        if all(o == 1 for o in out_shape[2:]):
            return b.node("GlobalMaxPool" if is_max else "GlobalAveragePool", [x], out, path)
        _, k = _adaptive_windows(path, layer, in_shape)
        return b.node("MaxPool" if is_max else "AveragePool", [x], out, path,
                      kernel_shape=k, strides=k)
    if isinstance(layer, _pool._MaxUnpoolNd):
        raise InvalidArgument(f"to_onnx: layer {path!r} ({type(layer).__name__}) needs the "
                              f"indices of a pooling layer, which a Sequential cannot pass")
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
    raise InvalidArgument(f"to_onnx: layer {path!r} of type {type(layer).__name__} has no "
                          f"ONNX export (custom modules cannot be exported)")


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
    blocks = b.node("Reshape", [x, b.const(f"{path}.blocks", np.array(
        [n, c, h // r, r, w // r, r], np.int64))], None, path)
    moved = b.node("Transpose", [blocks], None, path, perm=[0, 1, 3, 5, 2, 4])
    return b.node("Reshape", [moved, b.const(f"{path}.shape", np.array(
        [n, c * r * r, h // r, w // r], np.int64))], out, path)


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
    else:
        sizes = np.array(out_shape, np.int64)
        inputs = [x, "", "", b.const(f"{path}.sizes", sizes)]
    return b.node("Resize", inputs, out, path, **attrs)


def export_sequential(model, path, input_shape, opset=17):
    """Implementation of :meth:`pyconv.nn.Sequential.to_onnx`."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:  # pragma: no cover - onnx is a dependency
        raise ImportError("to_onnx needs the 'onnx' package") from exc
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise InvalidArgument(f"to_onnx: opset must be an int, got {opset!r}")
    latest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= latest:
        raise InvalidArgument(f"to_onnx: opset must be between {MIN_OPSET} and {latest} "
                              f"(this onnx package), got {opset}")
    try:
        shape = tuple(int(s) for s in input_shape)
    except TypeError:
        raise InvalidArgument(f"to_onnx: input_shape must be a sequence of ints, "
                              f"got {input_shape!r}") from None
    if not shape or min(shape) < 1:
        raise InvalidArgument(f"to_onnx: input_shape must be non-empty with positive "
                              f"sizes, got {input_shape!r}")
    layers = list(_leaves(model, ""))
    for lpath, layer in layers:
        _check_exportable(lpath, layer)
    # Shapes of every intermediate result, from one run on zeros.
    shapes = [shape]
    x = np.zeros(shape, np.float32)
    for _, layer in layers:
        x = layer(x)
        shapes.append(tuple(x.shape))
    b = _Builder(helper, numpy_helper, TensorProto)
    name = "input"
    if not layers:
        b.node("Identity", [name], "output", "identity")
    for i, (lpath, layer) in enumerate(layers):
        last = i == len(layers) - 1
        name = _emit(b, lpath, layer, name, "output" if last else None, shapes[i],
                     shapes[i + 1], opset)
    graph = helper.make_graph(
        b.nodes, type(model).__name__, [helper.make_tensor_value_info(
            "input", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(shapes[-1]))],
        initializer=b.initializers)
    opset_id = helper.make_opsetid("", int(opset))
    onnx_model = helper.make_model(graph, opset_imports=[opset_id],
                                   producer_name="pyconv")
    # The oldest IR version that carries this opset: readable by the most runtimes.
    onnx_model.ir_version = helper.find_min_ir_version_for([opset_id])
    onnx.checker.check_model(onnx_model, full_check=True)
    if path is not None:
        onnx.save(onnx_model, os.fspath(path))
    return onnx_model
