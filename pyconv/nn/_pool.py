"""Pooling layers (torch.nn constructors); they call the pyconv.functional pooling ops."""
from __future__ import annotations

from pyconv import functional as F
from pyconv.arithmetic import ConvAttributes, normalize_tuple
from pyconv.errors import InvalidArgument
from pyconv.nn._module import Module

__all__ = ["MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
           "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
           "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d",
           "MaxUnpool1d", "MaxUnpool2d", "MaxUnpool3d"]


def _validate(layer, kernel_size, stride, padding, dilation, ceil_mode):
    """Checks a pooling layer's geometry (padding: an int or one per spatial dim)."""
    n = layer._n
    ConvAttributes.from_torch("pool", n, kernel_size, stride,
                              normalize_tuple(padding, n, "padding", minimum=0), dilation,
                              ceil_mode=ceil_mode, op=type(layer).__name__)


class _MaxPoolNd(Module):
    _n = 0

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        # Stored as given (like torch), validated now so that errors come early.
        _validate(self, kernel_size, stride, padding, dilation, ceil_mode)
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = bool(return_indices), bool(ceil_mode)

    def forward(self, x):
        """Max over each window of ``x`` (N, C, *spatial) float32.

        Returns (N, C, *out) float32, plus the int64 flat indices when
        ``return_indices``."""
        return getattr(F, f"max_pool{self._n}d")(
            x, self.kernel_size, stride=self.stride, padding=self.padding,
            dilation=self.dilation, ceil_mode=self.ceil_mode,
            return_indices=self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, "
                f"ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    """1-D max pooling (``torch.nn.MaxPool1d``); stride defaults to kernel_size."""
    _n = 1


class MaxPool2d(_MaxPoolNd):
    """2-D max pooling (``torch.nn.MaxPool2d``); stride defaults to kernel_size."""
    _n = 2


class MaxPool3d(_MaxPoolNd):
    """3-D max pooling (``torch.nn.MaxPool3d``); stride defaults to kernel_size."""
    _n = 3


class _AvgPoolNd(Module):
    _n = 0

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        _validate(self, kernel_size, stride, padding, 1, ceil_mode)
        if divisor_override is not None and (isinstance(divisor_override, bool)
                                             or int(divisor_override) != divisor_override
                                             or divisor_override < 1):
            raise InvalidArgument(f"{type(self).__name__}: divisor_override must be a "
                                  f"positive int, got {divisor_override!r}")
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode, self.count_include_pad = bool(ceil_mode), bool(count_include_pad)
        self.divisor_override = divisor_override

    def forward(self, x):
        """Mean over each window of ``x`` (N, C, *spatial) float32 -> (N, C, *out)."""
        kwargs = {}
        if self.divisor_override is not None:
            kwargs["divisor_override"] = self.divisor_override
        return getattr(F, f"avg_pool{self._n}d")(
            x, self.kernel_size, stride=self.stride, padding=self.padding,
            ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad, **kwargs)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool1d(_AvgPoolNd):
    """1-D average pooling (``torch.nn.AvgPool1d``)."""
    _n = 1

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        # torch stores AvgPool1d's geometry as 1-tuples.
        super().__init__(normalize_tuple(kernel_size, 1, "kernel_size"),
                         None if stride is None else normalize_tuple(stride, 1, "stride"),
                         normalize_tuple(padding, 1, "padding", minimum=0), ceil_mode,
                         count_include_pad)


class AvgPool2d(_AvgPoolNd):
    """2-D average pooling (``torch.nn.AvgPool2d``)."""
    _n = 2


class AvgPool3d(_AvgPoolNd):
    """3-D average pooling (``torch.nn.AvgPool3d``)."""
    _n = 3


class _AdaptivePoolNd(Module):
    _n = 0
    _kind = ""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        """Pool ``x`` (N, C, *spatial) float32 to (N, C, *output_size) float32."""
        return getattr(F, f"adaptive_{self._kind}_pool{self._n}d")(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(_AdaptivePoolNd):
    """Adaptive 1-D average pooling to ``output_size`` (``torch.nn.AdaptiveAvgPool1d``)."""
    _n, _kind = 1, "avg"


class AdaptiveAvgPool2d(_AdaptivePoolNd):
    """Adaptive 2-D average pooling to ``output_size`` (``torch.nn.AdaptiveAvgPool2d``).

    ``output_size`` is an int or a pair; ``None`` entries keep the input size."""
    _n, _kind = 2, "avg"


class AdaptiveAvgPool3d(_AdaptivePoolNd):
    """Adaptive 3-D average pooling to ``output_size`` (``torch.nn.AdaptiveAvgPool3d``)."""
    _n, _kind = 3, "avg"


class _AdaptiveMaxPoolNd(_AdaptivePoolNd):
    _kind = "max"

    def __init__(self, output_size, return_indices=False):
        super().__init__(output_size)
        self.return_indices = bool(return_indices)

    def forward(self, x):
        """Pool ``x`` (N, C, *spatial) float32 to (N, C, *output_size) float32
        (and int64 indices when ``return_indices``)."""
        return getattr(F, f"adaptive_max_pool{self._n}d")(
            x, self.output_size, return_indices=self.return_indices)


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    """Adaptive 1-D max pooling (``torch.nn.AdaptiveMaxPool1d``)."""
    _n = 1


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    """Adaptive 2-D max pooling (``torch.nn.AdaptiveMaxPool2d``)."""
    _n = 2


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    """Adaptive 3-D max pooling (``torch.nn.AdaptiveMaxPool3d``)."""
    _n = 3


class _MaxUnpoolNd(Module):
    _n = 0

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        n = self._n
        self.kernel_size = normalize_tuple(kernel_size, n, "kernel_size")
        self.stride = (normalize_tuple(stride, n, "stride") if stride is not None
                       else self.kernel_size)
        self.padding = normalize_tuple(padding, n, "padding", minimum=0)

    def forward(self, x, indices, output_size=None):
        """Scatter ``x`` (N, C, *spatial) float32 to the positions ``indices`` (int64, as
        returned by max pooling with ``return_indices=True``); zeros elsewhere."""
        return getattr(F, f"max_unpool{self._n}d")(
            x, indices, self.kernel_size, stride=self.stride, padding=self.padding,
            output_size=output_size)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxUnpool1d(_MaxUnpoolNd):
    """Partial inverse of MaxPool1d (``torch.nn.MaxUnpool1d``)."""
    _n = 1


class MaxUnpool2d(_MaxUnpoolNd):
    """Partial inverse of MaxPool2d (``torch.nn.MaxUnpool2d``)."""
    _n = 2


class MaxUnpool3d(_MaxUnpoolNd):
    """Partial inverse of MaxPool3d (``torch.nn.MaxUnpool3d``)."""
    _n = 3
