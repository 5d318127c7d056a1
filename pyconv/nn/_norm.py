"""Layer, group and instance normalisation, pixel (un)shuffle and sliding-block layers
(torch.nn names, constructors and state_dict keys): thin wrappers of
:mod:`pyconv.functional`."""
from __future__ import annotations

import numpy as np

from pyconv import arithmetic
from pyconv._arrays import as_float32
from pyconv.errors import InvalidArgument, ShapeError
from pyconv.functional import _fold, _norm, _shuffle
from pyconv.nn._conv import _check_factory
from pyconv.nn._module import Module

__all__ = ["LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
           "PixelShuffle", "PixelUnshuffle", "Unfold", "Fold"]


class LayerNorm(Module):
    """Normalisation over the trailing dims (``torch.nn.LayerNorm``), see
    :func:`pyconv.functional.layer_norm`.

    Parameters
    ----------
    normalized_shape : int or sequence of int
        The trailing input dims normalised over.
    eps : float
    elementwise_affine : bool
        Learnable ``weight`` (ones) and ``bias`` (zeros) of shape ``normalized_shape``.
    bias : bool
        With ``elementwise_affine``, whether there is a ``bias``.
    device, dtype : None, 'cpu', float32
        Accepted for torch compatibility.

    Call with x (*, *normalized_shape) float32; returns float32 of the same shape.
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        name = self._get_name()
        _check_factory(name, device, dtype)
        if isinstance(normalized_shape, (str, bytes)):
            raise InvalidArgument(f"{name}: normalized_shape must be an int or a sequence "
                                  f"of ints, got {normalized_shape!r}")
        try:
            shape = tuple(normalized_shape)
        except TypeError:
            shape = (normalized_shape,)
        self.normalized_shape = tuple(
            arithmetic._as_int(s, f"normalized_shape[{i}]", 0, name)
            for i, s in enumerate(shape))
        self.eps = eps
        self.elementwise_affine = bool(elementwise_affine)
        affine = self.elementwise_affine
        self.register_parameter("weight", np.ones(self.normalized_shape, np.float32)
                                if affine else None)
        self.register_parameter("bias", np.zeros(self.normalized_shape, np.float32)
                                if affine and bias else None)

    def forward(self, x):
        """x: (*, *normalized_shape) float32 -> float32, same shape."""
        return _norm.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class GroupNorm(Module):
    """Normalisation over groups of channels (``torch.nn.GroupNorm``), see
    :func:`pyconv.functional.group_norm`.

    Parameters
    ----------
    num_groups : int
    num_channels : int
        C, divisible by ``num_groups``.
    eps : float
    affine : bool
        Learnable per-channel ``weight`` (ones) and ``bias`` (zeros), float32 (C,).
    device, dtype : None, 'cpu', float32

    Call with x (N, C, *) float32; returns float32 of the same shape.
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None,
                 dtype=None):
        super().__init__()
        name = self._get_name()
        _check_factory(name, device, dtype)
        self.num_groups = arithmetic._as_int(num_groups, "num_groups", 1, name)
        self.num_channels = arithmetic._as_int(num_channels, "num_channels", 1, name)
        if self.num_channels % self.num_groups:
            raise InvalidArgument(f"{name}: num_channels ({self.num_channels}) must be "
                                  f"divisible by num_groups ({self.num_groups})")
        self.eps, self.affine = eps, bool(affine)
        c = self.num_channels
        self.register_parameter("weight", np.ones(c, np.float32) if affine else None)
        self.register_parameter("bias", np.zeros(c, np.float32) if affine else None)

    def forward(self, x):
        """x: (N, C, *) float32 -> float32, same shape."""
        x = as_float32(x, "input", self._get_name())
        if x.ndim >= 2 and x.shape[1] != self.num_channels:
            raise ShapeError(f"{self._get_name()}: input has {x.shape[1]} channels, the layer "
                             f"has num_channels={self.num_channels} (input shape {x.shape})")
        return _norm.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class _InstanceNorm(Module):
    _n = 0

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, device=None, dtype=None):
        super().__init__()
        name = self._get_name()
        _check_factory(name, device, dtype)
        self.num_features = arithmetic._as_int(num_features, "num_features", 1, name)
        self.eps, self.momentum = eps, momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        c = self.num_features
        self.register_parameter("weight", np.ones(c, np.float32) if affine else None)
        self.register_parameter("bias", np.zeros(c, np.float32) if affine else None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, np.float32))
            self.register_buffer("running_var", np.ones(c, np.float32))
            self.register_buffer("num_batches_tracked", np.array(0, np.int64),
                                 dtype=np.int64)
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def forward(self, x):
        """Normalise x (N, C, *spatial) or unbatched (C, *spatial) float32: with each
        plane's statistics, or (``track_running_stats`` in evaluation mode) with the
        running ones."""
        name = self._get_name()
        n = self._n
        x = as_float32(x, "input", name)
        if x.ndim not in (n + 1, n + 2):
            raise ShapeError(f"{name}: expected {n + 1}D (unbatched) or {n + 2}D (batched) "
                             f"input, got {x.ndim}D input of shape {x.shape}")
        unbatched = x.ndim == n + 1
        if unbatched:
            x = x[None]
        if x.shape[1] != self.num_features and self.affine:
            # torch refuses this with affine parameters and only warns without them.
            raise ShapeError(f"{name}: expected input's size at dim {0 if unbatched else 1} "
                             f"to match num_features ({self.num_features}), but got "
                             f"{x.shape[1]} (input shape {x.shape[1:] if unbatched else x.shape})")
        if self.training and self.track_running_stats:
            raise InvalidArgument(f"{name}: training mode with track_running_stats updates "
                                  f"the running statistics, which pyconv (inference-only) "
                                  f"does not do; call .eval()")
        if not self.track_running_stats:
            y = _norm.instance_norm(x, None, None, self.weight, self.bias, True,
                                    self.momentum, self.eps)
        else:
            y = _norm.instance_norm(x, self.running_mean, self.running_var, self.weight,
                                    self.bias, False, self.momentum, self.eps)
        return y[0] if unbatched else y

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


_IN_DOC = """Instance normalisation (``torch.nn.{name}``), input {shapes}.

    Each (sample, channel) plane is standardised with its own mean and variance, unless
    ``track_running_stats`` is set: then (in evaluation mode, pyconv's default) with the
    running statistics. See :func:`pyconv.functional.instance_norm`.

    Parameters
    ----------
    num_features : int
        C, the channel count.
    eps : float
    momentum : float
        Kept for torch compatibility; unused (no training).
    affine : bool
        Learnable per-channel ``weight`` (ones) and ``bias`` (zeros), float32 (C,).
    track_running_stats : bool
        Buffers ``running_mean`` (zeros), ``running_var`` (ones), float32 (C,), and
        ``num_batches_tracked`` (int64 scalar), as in torch's state dicts.
    device, dtype : None, 'cpu', float32
    """


class InstanceNorm1d(_InstanceNorm):
    __doc__ = _IN_DOC.format(name="InstanceNorm1d", shapes="(N, C, L) or (C, L)")
    _n = 1


class InstanceNorm2d(_InstanceNorm):
    __doc__ = _IN_DOC.format(name="InstanceNorm2d", shapes="(N, C, H, W) or (C, H, W)")
    _n = 2


class InstanceNorm3d(_InstanceNorm):
    __doc__ = _IN_DOC.format(name="InstanceNorm3d",
                             shapes="(N, C, D, H, W) or (C, D, H, W)")
    _n = 3


class PixelShuffle(Module):
    """(*, C * r^2, H, W) -> (*, C, H * r, W * r) (``torch.nn.PixelShuffle``), see
    :func:`pyconv.functional.pixel_shuffle`."""

    def __init__(self, upscale_factor):
        super().__init__()
        self.upscale_factor = arithmetic._as_int(upscale_factor, "upscale_factor", 1,
                                                 self._get_name())

    def forward(self, x):
        """x: (*, C * r^2, H, W) float32 -> (*, C, H * r, W * r) float32."""
        return _shuffle.pixel_shuffle(x, self.upscale_factor)

    def extra_repr(self):
        return f"upscale_factor={self.upscale_factor}"


class PixelUnshuffle(Module):
    """(*, C, H * r, W * r) -> (*, C * r^2, H, W) (``torch.nn.PixelUnshuffle``), see
    :func:`pyconv.functional.pixel_unshuffle`."""

    def __init__(self, downscale_factor):
        super().__init__()
        self.downscale_factor = arithmetic._as_int(downscale_factor, "downscale_factor", 1,
                                                   self._get_name())

    def forward(self, x):
        """x: (*, C, H * r, W * r) float32 -> (*, C * r^2, H, W) float32."""
        return _shuffle.pixel_unshuffle(x, self.downscale_factor)

    def extra_repr(self):
        return f"downscale_factor={self.downscale_factor}"


class Unfold(Module):
    """Sliding blocks as columns (``torch.nn.Unfold``), see
    :func:`pyconv.functional.unfold`."""

    def __init__(self, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.padding, self.stride = padding, stride

    def forward(self, x):
        """x: (N, C, H, W) or (C, H, W) float32 -> (N, C * kH * kW, L) or
        (C * kH * kW, L) float32."""
        return _fold.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, dilation={self.dilation}, "
                f"padding={self.padding}, stride={self.stride}")


class Fold(Module):
    """Sum of sliding blocks into an image (``torch.nn.Fold``), see
    :func:`pyconv.functional.fold`."""

    def __init__(self, output_size, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.output_size, self.kernel_size = output_size, kernel_size
        self.dilation, self.padding, self.stride = dilation, padding, stride

    def forward(self, x):
        """x: (N, C * kH * kW, L) or (C * kH * kW, L) float32 -> (N, C, H, W) or
        (C, H, W) float32."""
        return _fold.fold(x, self.output_size, self.kernel_size, self.dilation,
                          self.padding, self.stride)

    def extra_repr(self):
        return (f"output_size={self.output_size}, kernel_size={self.kernel_size}, "
                f"dilation={self.dilation}, padding={self.padding}, stride={self.stride}")
