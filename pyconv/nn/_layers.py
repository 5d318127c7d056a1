"""Activation, linear, normalisation, reshaping and resampling layers (torch.nn names)."""
from __future__ import annotations

import numpy as np

from pyconv import arithmetic
from pyconv._arrays import as_float32
from pyconv._ext.gemm import ExecutionContext
from pyconv.errors import InvalidArgument, ShapeError
from pyconv.functional import _activation as A
from pyconv.functional import _misc as M
from pyconv.functional._linear import LinearPlan
from pyconv.nn._conv import _check_factory
from pyconv.nn._module import Module, _kaiming_uniform_bound, _uniform

__all__ = ["ReLU", "ReLU6", "Hardtanh", "LeakyReLU", "Sigmoid", "Hardsigmoid", "Hardswish",
           "Tanh", "SiLU", "ELU", "GELU", "PReLU", "Softmax", "LogSoftmax", "Linear",
           "Flatten", "Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d",
           "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "Upsample", "UpsamplingNearest2d",
           "UpsamplingBilinear2d", "ConstantPad1d", "ConstantPad2d", "ConstantPad3d",
           "ZeroPad1d", "ZeroPad2d", "ZeroPad3d", "ReflectionPad1d", "ReflectionPad2d",
           "ReflectionPad3d", "ReplicationPad1d", "ReplicationPad2d", "ReplicationPad3d"]


# ---------------------------------------------------------------------------------------
# Activations. Each forward maps x (any shape, float32) to a float32 array of that shape.

def _inplace_suffix(inplace, first=False):
    if not inplace:
        return ""
    return "inplace=True" if first else ", inplace=True"


class ReLU(Module):
    """``max(x, 0)`` element-wise (``torch.nn.ReLU``); ``inplace`` overwrites the input."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x):
        """x: float32, any shape -> float32, same shape."""
        return A.relu(x, inplace=self.inplace)

    def extra_repr(self):
        return _inplace_suffix(self.inplace, first=True)


class Hardtanh(Module):
    """Clamp to ``[min_val, max_val]`` (``torch.nn.Hardtanh``)."""

    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False):
        super().__init__()
        self.min_val, self.max_val, self.inplace = min_val, max_val, bool(inplace)
        if max_val < min_val:
            raise InvalidArgument(f"Hardtanh: max_val ({max_val}) must not be lower than "
                                  f"min_val ({min_val})")

    def forward(self, x):
        """x: float32, any shape -> float32, same shape."""
        return A.hardtanh(x, self.min_val, self.max_val, inplace=self.inplace)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}{_inplace_suffix(self.inplace)}"


class ReLU6(Hardtanh):
    """``min(max(x, 0), 6)`` (``torch.nn.ReLU6``)."""

    def __init__(self, inplace=False):
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self):
        return _inplace_suffix(self.inplace, first=True)


class LeakyReLU(Module):
    """``x`` if ``x >= 0`` else ``negative_slope * x`` (``torch.nn.LeakyReLU``)."""

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, bool(inplace)

    def forward(self, x):
        """x: float32, any shape -> float32, same shape."""
        return A.leaky_relu(x, self.negative_slope, inplace=self.inplace)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}{_inplace_suffix(self.inplace)}"


class Sigmoid(Module):
    """``1 / (1 + exp(-x))`` (``torch.nn.Sigmoid``)."""

    def forward(self, x):
        """x: float32, any shape -> float32, same shape."""
        return A.sigmoid(x)


class Tanh(Module):
    """Hyperbolic tangent (``torch.nn.Tanh``)."""

    def forward(self, x):
        """x: float32, any shape -> float32, same shape."""
        return A.tanh(x)


class Hardsigmoid(Module):
    """``relu6(x + 3) / 6`` (``torch.nn.Hardsigmoid``)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x):
        """x: float32, any shape -> float32, same shape."""
        return A.hardsigmoid(x, inplace=self.inplace)


class Hardswish(Module):
    """``x * relu6(x + 3) / 6`` (``torch.nn.Hardswish``)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x):
        """x: float32, any shape -> float32, same shape."""
        return A.hardswish(x, inplace=self.inplace)


class SiLU(Module):
    """``x * sigmoid(x)`` (``torch.nn.SiLU``)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x):
        """x: float32, any shape -> float32, same shape."""
        return A.silu(x, inplace=self.inplace)

    def extra_repr(self):
        return _inplace_suffix(self.inplace, first=True)


class ELU(Module):
    """``x`` if ``x > 0`` else ``alpha * (exp(x) - 1)`` (``torch.nn.ELU``)."""

    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha, self.inplace = alpha, bool(inplace)

    def forward(self, x):
        """x: float32, any shape -> float32, same shape."""
        return A.elu(x, self.alpha, inplace=self.inplace)

    def extra_repr(self):
        return f"alpha={self.alpha}{_inplace_suffix(self.inplace)}"


class GELU(Module):
    """Gaussian error linear unit (``torch.nn.GELU``), see :func:`pyconv.functional.gelu`.

    Parameters
    ----------
    approximate : {'none', 'tanh'}
        ``'none'``: ``x * Phi(x)`` with the exact (erf) normal CDF; ``'tanh'``: torch's
        tanh approximation.
    """

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise InvalidArgument(f"GELU: approximate must be 'none' or 'tanh', "
                                  f"got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        """x: float32, any shape -> float32, same shape."""
        return A.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class PReLU(Module):
    """``x`` if ``x >= 0`` else ``weight * x``, with a learned slope (``torch.nn.PReLU``).

    Parameters
    ----------
    num_parameters : int
        1 (one slope shared by every channel) or C, the channel count: one slope per
        channel along dim 1 (inputs of rank < 2 have one channel).
    init : float
        Initial value of every slope.

    Attributes
    ----------
    weight : ndarray (num_parameters,), float32
    """

    def __init__(self, num_parameters=1, init=0.25, device=None, dtype=None):
        super().__init__()
        _check_factory("PReLU", device, dtype)
        self.num_parameters = arithmetic._as_int(num_parameters, "num_parameters", 1,
                                                 "PReLU")
        self.init = init
        self.register_parameter("weight", np.full(self.num_parameters, float(init),
                                                  np.float32))

    def forward(self, x):
        """x: float32 (N, C, *) or rank < 2 -> float32, same shape."""
        return A.prelu(x, self.weight, op="PReLU")

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"


class Softmax(Module):
    """Softmax along ``dim`` (``torch.nn.Softmax``)."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        """x: float32, any shape -> float32, same shape, summing to 1 along ``dim``."""
        return A.softmax(x, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """``log(softmax(x, dim))`` (``torch.nn.LogSoftmax``)."""

    def forward(self, x):
        """x: float32, any shape -> float32, same shape."""
        return A.log_softmax(x, self.dim)


# ---------------------------------------------------------------------------------------
# Linear and shape layers

class Linear(Module):
    """Affine layer ``y = x @ weight.T + bias`` (``torch.nn.Linear``).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    device, dtype : None, 'cpu', float32
        Accepted for torch compatibility.

    Attributes
    ----------
    weight : ndarray (out_features, in_features), float32
    bias : ndarray (out_features,), float32, or None
        Initialised as torch does (U(+-1/sqrt(in_features))).

    Runs a :class:`~pyconv.functional.LinearPlan` (the weight packed once for the GEMM
    engine), rebuilt after assignment or ``load_state_dict``. Call with ``x`` (*, in_features) float32; returns
    (*, out_features) float32.
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        _check_factory("Linear", device, dtype)
        self.in_features = arithmetic._as_int(in_features, "in_features", 0, "Linear")
        self.out_features = arithmetic._as_int(out_features, "out_features", 0, "Linear")
        bound = _kaiming_uniform_bound(self.in_features)
        self.register_parameter("weight", _uniform((self.out_features, self.in_features),
                                                   bound))
        self.register_parameter("bias", _uniform((self.out_features,), bound) if bias
                                else None)

    def _plan(self):
        """The layer's :class:`~pyconv.functional.LinearPlan`, rebuilt when ``weight`` or
        ``bias`` was replaced or the process defaults (``pyconv.set_num_threads``,
        ``set_isa``) changed, as torch's layers follow ``torch.set_num_threads``."""
        weight, bias = self._parameters["weight"], self._parameters["bias"]
        cache = self.__dict__.get("_cache_plan")
        context = ExecutionContext()      # the defaults now
        if (cache is None or cache[0] is not weight or cache[1] is not bias
                or cache[2].context != context):
            if weight is None or weight.shape != (self.out_features, self.in_features):
                raise ShapeError(f"Linear: weight has shape "
                                 f"{None if weight is None else weight.shape}, expected "
                                 f"{(self.out_features, self.in_features)}")
            plan = LinearPlan(weight, bias, op="Linear", context=context)
            # One tuple, replaced at once: safe when several threads call the layer.
            cache = (weight, bias, plan)
            self.__dict__["_cache_plan"] = cache
        return cache[2]

    def forward(self, x):
        """x: (*, in_features) float32 -> (*, out_features) float32."""
        return self._plan().run(x)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Module):
    """Merge dims ``start_dim`` .. ``end_dim`` (``torch.nn.Flatten``; keeps the batch dim
    by default)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        """x: float32 -> float32 with dims start_dim..end_dim merged (a view if possible)."""
        return M.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    """Returns its input unchanged (``torch.nn.Identity``); arguments are ignored."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        """Returns ``x`` itself."""
        return x


class Dropout(Module):
    """Dropout (``torch.nn.Dropout``): the identity at inference.

    Runs only in evaluation mode (the default); in training mode it raises, since pyconv
    does not train."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if isinstance(p, bool) or not 0.0 <= float(p) <= 1.0:
            raise InvalidArgument(f"{self._get_name()}: dropout probability has to be "
                                  f"between 0 and 1, but got {p}")
        self.p, self.inplace = p, bool(inplace)

    def forward(self, x):
        """x: float32, any shape -> x itself (no copy)."""
        if self.training:
            raise InvalidArgument(f"{self._get_name()}: training mode is not supported "
                                  f"(pyconv is inference-only); call .eval()")
        return x

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout1d(Dropout):
    """Channel dropout (``torch.nn.Dropout1d``): the identity at inference."""


class Dropout2d(Dropout):
    """Channel dropout (``torch.nn.Dropout2d``): the identity at inference."""


class Dropout3d(Dropout):
    """Channel dropout (``torch.nn.Dropout3d``): the identity at inference."""


# ---------------------------------------------------------------------------------------
# Batch norm

class _BatchNorm(Module):
    _ranks = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        name = self._get_name()
        _check_factory(name, device, dtype)
        self.num_features = arithmetic._as_int(num_features, "num_features", 1, name)
        if not track_running_stats:
            raise InvalidArgument(
                f"{name}: track_running_stats=False normalises with batch statistics, "
                f"which pyconv (inference-only) does not support")
        self.eps, self.momentum = eps, momentum
        self.affine, self.track_running_stats = bool(affine), True
        self.use_bias = bool(bias)
        c = self.num_features
        self.register_parameter("weight", np.ones(c, np.float32) if affine else None)
        self.register_parameter("bias", np.zeros(c, np.float32) if affine and bias else None)
        self.register_buffer("running_mean", np.zeros(c, np.float32))
        self.register_buffer("running_var", np.ones(c, np.float32))
        self.register_buffer("num_batches_tracked", np.array(0, np.int64), dtype=np.int64)

    def forward(self, x):
        """Normalise ``x`` (N, C, *spatial) float32 with the running statistics."""
        name = self._get_name()
        if self.training:
            raise InvalidArgument(f"{name}: training mode (batch statistics) is not "
                                  f"supported: pyconv is inference-only; call .eval()")
        x = as_float32(x, "input", name)
        if x.ndim not in self._ranks:
            want = " or ".join(f"{r}D" for r in self._ranks)
            raise ShapeError(f"{name}: expected {want} input, got {x.ndim}D input of shape "
                             f"{x.shape}")
        if x.shape[1] != self.num_features:
            raise ShapeError(f"{name}: input has {x.shape[1]} channels, the layer has "
                             f"num_features={self.num_features} (input shape {x.shape})")
        # The statistics are folded into one scale and shift per channel, kept until a
        # parameter or buffer is replaced (they are read-only, so that is the only way
        # they change).
        if self.running_mean is None or self.running_var is None:
            raise InvalidArgument(f"{name}: running_mean and running_var are required")
        key = (self.running_mean, self.running_var, self.weight, self.bias, self.eps)
        cache = self.__dict__.get("_cache_folded")
        if cache is None or any(a is not b for a, b in zip(cache[0], key)):
            scale, shift = M._bn_scale_shift(*key, self.num_features, name)
            cache = (key, scale, shift)
            self.__dict__["_cache_folded"] = cache
        shape = (1, self.num_features) + (1,) * (x.ndim - 2)
        y = np.multiply(x, cache[1].reshape(shape))
        y += cache[2].reshape(shape)
        return y

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.use_bias}, "
                f"track_running_stats={self.track_running_stats}")


_BN_DOC = """Batch normalisation at inference (``torch.nn.{name}``), input {shapes}.

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` per channel.

    Parameters
    ----------
    num_features : int
        C, the channel count.
    eps : float
    momentum : float or None
        Kept for torch compatibility; unused (no training).
    affine : bool
        Learnable ``weight`` / ``bias`` (float32 (C,)); else none.
    track_running_stats : True
        False (batch statistics) is not supported.
    bias : bool, keyword-only
        With ``affine``, whether there is a ``bias``.

    Buffers: ``running_mean``, ``running_var`` (float32 (C,)), ``num_batches_tracked``
    (int64 scalar, kept so torch state dicts round-trip).
    """


class BatchNorm1d(_BatchNorm):
    __doc__ = _BN_DOC.format(name="BatchNorm1d", shapes="(N, C) or (N, C, L)")
    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    __doc__ = _BN_DOC.format(name="BatchNorm2d", shapes="(N, C, H, W)")
    _ranks = (4,)


class BatchNorm3d(_BatchNorm):
    __doc__ = _BN_DOC.format(name="BatchNorm3d", shapes="(N, C, D, H, W)")
    _ranks = (5,)


# ---------------------------------------------------------------------------------------
# Upsampling

class Upsample(Module):
    """Resize the spatial dims (``torch.nn.Upsample``), see
    :func:`pyconv.functional.interpolate`.

    Parameters
    ----------
    size : int or tuple of int, optional
    scale_factor : float or tuple of float, optional
    mode : {'nearest', 'nearest-exact', 'linear', 'bilinear', 'bicubic', 'trilinear', \
'area'}
    align_corners : bool, optional
    recompute_scale_factor : bool, optional
    """

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.name = type(self).__name__
        self.size = size
        if isinstance(scale_factor, tuple):
            self.scale_factor = tuple(float(f) for f in scale_factor)
        else:
            self.scale_factor = float(scale_factor) if scale_factor else None
        self.mode, self.align_corners = mode, align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, x):
        """x: (N, C, *spatial) float32 -> (N, C, *out_spatial) float32."""
        return M.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners,
                             recompute_scale_factor=self.recompute_scale_factor)

    def extra_repr(self):
        if self.scale_factor is not None:
            info = f"scale_factor={self.scale_factor!r}"
        else:
            info = f"size={self.size!r}"
        return info + f", mode={self.mode!r}"


class UpsamplingNearest2d(Upsample):
    """Nearest 2-D upsampling (``torch.nn.UpsamplingNearest2d``)."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    """Bilinear 2-D upsampling with ``align_corners=True``
    (``torch.nn.UpsamplingBilinear2d``)."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)


# ---------------------------------------------------------------------------------------
# Padding layers: torch's ConstantPadNd / ZeroPadNd / ReflectionPadNd / ReplicationPadNd
# on :func:`pyconv.functional.pad`.

class _PadNd(Module):
    _n = 0
    _mode = "constant"

    def __init__(self, padding, value=0.0):
        super().__init__()
        name, n = self._get_name(), self._n
        low = -arithmetic.MAX_DIM          # negative amounts crop, as in torch
        if isinstance(padding, (tuple, list)):
            padding = tuple(arithmetic._as_int(p, "padding", low, name) for p in padding)
            if len(padding) != 2 * n:
                raise InvalidArgument(f"{name}: padding must be an int or a tuple of "
                                      f"{2 * n} ints, got {padding!r}")
        else:
            padding = (arithmetic._as_int(padding, "padding", low, name),) * (2 * n)
        self.padding = padding
        self.value = float(value)

    def forward(self, x):
        """x: float32 (*, spatial...) -> float32 with the last dims padded (negative
        amounts crop in constant mode)."""
        if self._mode != "constant":
            x = as_float32(x, "input", self._get_name())
            if x.ndim not in (self._n + 1, self._n + 2):
                raise ShapeError(f"{self._get_name()}: expected {self._n + 1}D or "
                                 f"{self._n + 2}D input, got {x.ndim}D input of shape "
                                 f"{x.shape}")
            return M.pad(x, self.padding, self._mode)
        return M.pad(x, self.padding, "constant", self.value)

    def extra_repr(self):
        return f"{self.padding}"


class _ConstantPadNd(_PadNd):
    def extra_repr(self):
        return f"padding={self.padding}, value={self.value}"


class _ZeroPadNd(_PadNd):
    def __init__(self, padding):
        super().__init__(padding, 0.0)


class _ReflectionPadNd(_PadNd):
    _mode = "reflect"

    def __init__(self, padding):
        super().__init__(padding)


class _ReplicationPadNd(_PadNd):
    _mode = "replicate"

    def __init__(self, padding):
        super().__init__(padding)


def _pad_class(base, name, n, what):
    doc = (f"{what} of the last {n} dim{'s' if n > 1 else ''} (``torch.nn.{name}``).\n\n"
           f"    ``padding``: an int, or {2 * n} ints in torch order (last dim first: left, "
           f"right{', top, bottom' if n > 1 else ''}{', front, back' if n > 2 else ''}).")
    return type(name, (base,), {"_n": n, "__doc__": doc, "__module__": __name__,
                                "__qualname__": name})


ConstantPad1d = _pad_class(_ConstantPadNd, "ConstantPad1d", 1, "Pad with ``value``")
ConstantPad2d = _pad_class(_ConstantPadNd, "ConstantPad2d", 2, "Pad with ``value``")
ConstantPad3d = _pad_class(_ConstantPadNd, "ConstantPad3d", 3, "Pad with ``value``")
ZeroPad1d = _pad_class(_ZeroPadNd, "ZeroPad1d", 1, "Pad with zeros")
ZeroPad2d = _pad_class(_ZeroPadNd, "ZeroPad2d", 2, "Pad with zeros")
ZeroPad3d = _pad_class(_ZeroPadNd, "ZeroPad3d", 3, "Pad with zeros")
ReflectionPad1d = _pad_class(_ReflectionPadNd, "ReflectionPad1d", 1,
                             "Mirror-pad (without repeating the edge)")
ReflectionPad2d = _pad_class(_ReflectionPadNd, "ReflectionPad2d", 2,
                             "Mirror-pad (without repeating the edge)")
ReflectionPad3d = _pad_class(_ReflectionPadNd, "ReflectionPad3d", 3,
                             "Mirror-pad (without repeating the edge)")
ReplicationPad1d = _pad_class(_ReplicationPadNd, "ReplicationPad1d", 1,
                              "Pad by repeating the edge")
ReplicationPad2d = _pad_class(_ReplicationPadNd, "ReplicationPad2d", 2,
                              "Pad by repeating the edge")
ReplicationPad3d = _pad_class(_ReplicationPadNd, "ReplicationPad3d", 3,
                              "Pad by repeating the edge")
