"""Convolution layers: Conv1d/2d/3d and ConvTranspose1d/2d/3d (torch.nn constructors)."""
from __future__ import annotations

import math

import numpy as np

from pyconv import arithmetic
from pyconv._arrays import as_float32
from pyconv._ext.gemm import ExecutionContext
from pyconv.errors import InvalidArgument, ShapeError
from pyconv.functional import _conv as _fconv
from pyconv.nn._module import Module, _kaiming_uniform_bound, _uniform

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
           "ConvTranspose3d"]


def _check_factory(name, device, dtype):
    """torch's ``device``/``dtype`` factory arguments: only CPU float32 exists here."""
    if device is not None and str(device) != "cpu":
        raise InvalidArgument(f"{name}: device must be None or 'cpu', got {device!r}")
    if dtype is not None and str(dtype).rsplit(".", 1)[-1] not in ("float32", "float"):
        raise InvalidArgument(f"{name}: pyconv layers are float32; dtype must be None or "
                              f"float32, got {dtype!r}")


class _ConvNd(Module):
    _n = 0
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 output_padding, groups, bias, padding_mode, device, dtype):
        super().__init__()
        name, n = type(self).__name__, self._n
        _check_factory(name, device, dtype)
        in_channels = arithmetic._as_int(in_channels, "in_channels", 1, name)
        out_channels = arithmetic._as_int(out_channels, "out_channels", 1, name)
        groups = arithmetic.check_groups(in_channels, out_channels, groups, op=name)
        if isinstance(padding, str):
            # torch's layers: 'same' and 'valid' only, not for a strided or transposed one.
            if self._transposed or padding not in ("same", "valid"):
                allowed = "an int or a tuple" + ("" if self._transposed
                                                 else ", 'same' or 'valid'")
                raise InvalidArgument(f"{name}: padding must be {allowed}, got {padding!r}")
        else:
            padding = arithmetic.normalize_tuple(padding, n, "padding", minimum=0)
        geometry = arithmetic.ConvAttributes.from_torch(
            "conv_transpose" if self._transposed else "conv", n, kernel_size, stride, padding,
            dilation, output_padding, op=name)
        kernel_size, stride = geometry.kernel_shape, geometry.strides
        dilation, output_padding = geometry.dilations, geometry.output_padding
        if padding == "same" and any(s != 1 for s in stride):
            raise InvalidArgument(f"{name}: padding='same' is not supported for strided "
                                  f"convolutions (stride={stride})")
        if padding_mode != "zeros":
            raise InvalidArgument(f"{name}: only padding_mode='zeros' is supported, "
                                  f"got {padding_mode!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.output_padding = dilation, output_padding
        self.transposed, self.groups, self.padding_mode = self._transposed, groups, padding_mode
        if self._transposed:
            shape = (in_channels, out_channels // groups) + kernel_size
        else:
            shape = (out_channels, in_channels // groups) + kernel_size
        # torch's reset_parameters: kaiming_uniform_(a=sqrt(5)) and U(+-1/sqrt(fan_in)),
        # fan_in = weight.shape[1] * prod(kernel_size) (also for the transposed layout).
        bound = _kaiming_uniform_bound(shape[1] * math.prod(kernel_size))
        self.register_parameter("weight", _uniform(shape, bound))
        self.register_parameter("bias", _uniform((out_channels,), bound) if bias else None)

    def _plan(self):
        """The prepared convolution, rebuilt when ``weight`` or ``bias`` was replaced or
        the process defaults (``pyconv.set_num_threads``, ``set_isa``) changed, as torch's
        layers follow ``torch.set_num_threads``."""
        weight, bias = self._parameters["weight"], self._parameters["bias"]
        cache = self.__dict__.get("_cache_plan")
        context = ExecutionContext()
        if (cache is None or cache[0] is not weight or cache[1] is not bias
                or cache[2].kernel.context != context):
            expected = ((self.in_channels, self.out_channels // self.groups)
                        if self.transposed else
                        (self.out_channels, self.in_channels // self.groups)) + self.kernel_size
            if weight is None or weight.shape != expected:
                raise ShapeError(f"{self._get_name()}: weight has shape "
                                 f"{None if weight is None else weight.shape}, expected "
                                 f"{expected}")
            plan = _fconv.ConvPlan(weight, bias, self.stride, self.padding, self.dilation,
                                   self.groups, transposed=self.transposed,
                                   output_padding=self.output_padding, op=self._get_name(),
                                   context=context)
            # One tuple, replaced at once: safe when several threads call the layer.
            cache = (weight, bias, plan)
            self.__dict__["_cache_plan"] = cache
        return cache[2]

    def _run(self, x, output_size=None):
        name, n = self._get_name(), self._n
        x = as_float32(x, "input", name)
        if x.ndim == n + 1:          # unbatched (C, *spatial), as torch accepts
            return self._run(x[None], output_size)[0]
        if x.ndim != n + 2:
            raise ShapeError(f"{name}: expected a {n + 2}-D input (N, C, *spatial) or a "
                             f"{n + 1}-D unbatched one, got shape {x.shape}")
        if x.shape[1] != self.in_channels:
            raise ShapeError(f"{name}: input has {x.shape[1]} channels, the layer expects "
                             f"{self.in_channels} (input shape {x.shape})")
        plan = self._plan()
        if output_size is None:
            return plan.run(x)
        return plan.run(x, output_size=output_size)

    def extra_repr(self):
        n = self._n
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * n:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * n:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * n:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


_CONV_DOC = """{n}-D convolution layer (``torch.nn.Conv{n}d``).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or tuple of {n} ints
    padding : int, tuple of {n} ints, 'same' or 'valid'
        Zero padding on both sides of each spatial dim; 'same' (stride 1 only) keeps the
        spatial size, the odd extra element going at the end.
    groups : int
        Divides both channel counts.
    bias : bool
    padding_mode : 'zeros'
        The only mode supported.
    device, dtype : None, 'cpu', float32
        Accepted for torch compatibility.

    Attributes
    ----------
    weight : ndarray (out_channels, in_channels // groups, *kernel_size), float32
    bias : ndarray (out_channels,), float32, or None
        Initialised as torch does (kaiming-uniform, ``a = sqrt(5)``) from the generator
        seeded by :func:`pyconv.nn.manual_seed`.

    The weights are packed once, at the first call, and reused; assigning ``weight`` or
    ``bias`` or loading a state dict re-packs them at the next call.

    Call with ``x`` of shape (N, in_channels, *spatial) float32 (or unbatched,
    (in_channels, *spatial)); returns (N, out_channels, *out_spatial) float32.
    """

_CONV_T_DOC = """{n}-D transposed convolution layer (``torch.nn.ConvTranspose{n}d``).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or tuple of {n} ints
    padding : int or tuple of {n} ints
        Padding of the matching forward convolution: crops the output.
    output_padding : int or tuple of {n} ints
        Extra size at the end of each output dim, smaller than ``max(stride, dilation)``.
    groups : int
    bias : bool
    padding_mode : 'zeros'
    device, dtype : None, 'cpu', float32

    Attributes
    ----------
    weight : ndarray (in_channels, out_channels // groups, *kernel_size), float32
    bias : ndarray (out_channels,), float32, or None

    Weights are packed once and re-packed after assignment or ``load_state_dict``.

    Call with ``x`` of shape (N, in_channels, *spatial) float32 and optionally
    ``output_size`` (the spatial output size, or the full shape), which picks the
    output padding as torch does; returns (N, out_channels, *out_spatial) float32.
    """


class Conv1d(_ConvNd):
    __doc__ = _CONV_DOC.format(n=1)
    _n = 1

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", device=None,
                 dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         0, groups, bias, padding_mode, device, dtype)

    def forward(self, x):
        """Convolve ``x`` (N, C_in, L) float32 -> (N, C_out, L_out) float32."""
        return self._run(x)


class Conv2d(Conv1d):
    __doc__ = _CONV_DOC.format(n=2)
    _n = 2

    def forward(self, x):
        """Convolve ``x`` (N, C_in, H, W) float32 -> (N, C_out, H_out, W_out) float32."""
        return self._run(x)


class Conv3d(Conv1d):
    __doc__ = _CONV_DOC.format(n=3)
    _n = 3

    def forward(self, x):
        """Convolve ``x`` (N, C_in, D, H, W) float32 -> (N, C_out, *out) float32."""
        return self._run(x)


class ConvTranspose1d(_ConvNd):
    __doc__ = _CONV_T_DOC.format(n=1)
    _n = 1
    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         output_padding, groups, bias, padding_mode, device, dtype)

    def forward(self, x, output_size=None):
        """Transposed convolution of ``x`` (N, C_in, *spatial) float32.

        ``output_size``: optional spatial output size (or full shape) to reach."""
        if output_size is not None:
            output_size = tuple(int(s) for s in output_size)
            n = self._n
            if len(output_size) == n + 2 or (len(output_size) == n + 1
                                             and np.ndim(x) == n + 1):
                output_size = output_size[-n:]
            if len(output_size) != n:
                raise InvalidArgument(f"{self._get_name()}: output_size must have {n}, or "
                                      f"{n + 2} elements, got {output_size}")
        return self._run(x, output_size)


class ConvTranspose2d(ConvTranspose1d):
    __doc__ = _CONV_T_DOC.format(n=2)
    _n = 2


class ConvTranspose3d(ConvTranspose1d):
    __doc__ = _CONV_T_DOC.format(n=3)
    _n = 3
