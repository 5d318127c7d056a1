"""Convolution and transposed convolution (torch.nn.functional signatures)."""
import numpy as np

from pyconv import arithmetic
from pyconv._activations import epilogue_params
from pyconv._arrays import as_float32, c_aligned, check_out
from pyconv._ext.conv import ConvKernel
from pyconv._ext.gemm import empty_aligned
from pyconv.errors import InvalidArgument, ShapeError

__all__ = ["conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
           "conv_transpose3d", "conv_matrix", "ConvPlan"]

#: conv_matrix refuses matrices with more elements than this (256 MiB of float32).
CONV_MATRIX_MAX_ELEMENTS = 1 << 26


class ConvPlan:
    """A convolution prepared once (weights packed per group) and run on many inputs.

    Create -> reshape -> run: the constructor packs the weights and fixes the epilogue
    (bias, activation); :meth:`reshape` resolves an input shape into a frozen
    :class:`~pyconv._ext.conv.ConvReshape` (output shape, pads, algorithm, workspace),
    once per shape; :meth:`run` and :meth:`bind` only compute.

    Parameters
    ----------
    weight : ndarray float32
        (C_out, C_in/groups, *k), or (C_in, C_out/groups, *k) when ``transposed``.
    bias : ndarray float32 (C_out,), optional
    stride, dilation : int or tuple
    padding : int, tuple of n or 2n ints (ONNX per-side order), 'valid', 'same',
        'same_upper' or 'same_lower'
        The ``same`` modes follow ONNX ``auto_pad`` SAME_UPPER / SAME_LOWER, so they work
        with any stride (output ``ceil(input / stride)``, ``input * stride`` when
        transposed); pads are resolved for each input size.
    groups : int
    transposed : bool
    output_padding : int or tuple
        Extra size added at the end of each output dim (transposed only).
    activation : str, optional
        Fused activation, a name of :data:`pyconv._activations.ACTIVATIONS`;
        ``act_alpha``/``act_beta`` are its parameters.
    op : str
        Name used in error messages.
    context : pyconv.ExecutionContext, optional
        Threads, ISA and algorithm setting of every run (None: the process defaults now).
    attributes : pyconv.arithmetic.ConvAttributes, optional
        The geometry in ONNX terms (e.g. an ONNX node's ``auto_pad`` or ``output_shape``),
        given instead of ``stride``, ``padding``, ``dilation``, ``transposed``,
        ``output_padding`` and ``op``.
    """

    def __init__(self, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                 transposed=False, output_padding=0, activation=None, act_alpha=0.0,
                 act_beta=0.0, op=None, context=None, *, attributes=None):
        if attributes is not None:
            transposed = attributes.kind == "conv_transpose"
            op = attributes.op
        self.op = op or ("conv_transpose" if transposed else "conv")
        weight = as_float32(weight, "weight", self.op)
        if not 3 <= weight.ndim <= 5:
            raise ShapeError(f"{self.op}: weight must have 3 to 5 dims (C, C, *kernel), "
                             f"got shape {weight.shape}")
        n = weight.ndim - 2
        self.nspatial = n
        self.groups = arithmetic._as_int(groups, "groups", 1, self.op)
        if transposed:
            cin, cout = weight.shape[0], weight.shape[1] * self.groups
            if cin % self.groups:
                raise ShapeError(f"{self.op}: weight has {cin} input channels, not divisible "
                                 f"by groups={self.groups}")
        else:
            cout, cin = weight.shape[0], weight.shape[1] * self.groups
            if cout % self.groups:
                raise ShapeError(f"{self.op}: weight has {cout} output channels, not "
                                 f"divisible by groups={self.groups}")
        self.in_channels, self.out_channels = cin, cout
        if bias is not None:
            bias = as_float32(bias, "bias", self.op)
            if bias.shape != (cout,):
                raise ShapeError(f"{self.op}: bias must have shape ({cout},), got {bias.shape}")
        self.kernel_shape = tuple(weight.shape[2:])
        if min(self.kernel_shape) < 1:
            raise ShapeError(f"{self.op}: weight has an empty kernel, shape {weight.shape}")
        kind = "conv_transpose" if transposed else "conv"
        if attributes is None:
            attributes = arithmetic.torch_attributes(
                kind, n, self.kernel_shape, stride, padding, dilation, output_padding,
                op=self.op)
        elif attributes.kind != kind or attributes.kernel_shape != self.kernel_shape:
            raise ShapeError(f"{self.op}: the {attributes.kind} attributes with kernel_shape "
                             f"{attributes.kernel_shape} do not fit the weight of shape "
                             f"{weight.shape}")
        self.attributes = attributes
        self.stride, self.dilation = attributes.strides, attributes.dilations
        self.transposed = bool(transposed)
        self.kernel = ConvKernel(weight, bias, self.groups, self.transposed, context)
        # ConvReshape per (input shape, output_size): the arithmetic and the algorithm
        # choice cost more than a small layer's kernel, and a plan's attributes do not
        # change. Shared with the plans of with_activation (same weights and geometry).
        self._reshapes = {}
        self.activation, self.act_alpha, self.act_beta = epilogue_params(
            self.op, activation, act_alpha, act_beta)

    def with_activation(self, activation=None, act_alpha=0.0, act_beta=0.0):
        """This convolution with another fused activation (None: bias only).

        Returns a new plan sharing this one's packed weights, attributes, context and
        reshapes (nothing is repacked or resolved again)."""
        plan = ConvPlan.__new__(ConvPlan)
        for name in _SHARED_BY_EPILOGUES:
            setattr(plan, name, getattr(self, name))
        plan.activation, plan.act_alpha, plan.act_beta = epilogue_params(
            self.op, activation, act_alpha, act_beta)
        return plan

    def reshape(self, input_shape, output_size=None):
        """The plan resolved for one input shape (the reshape step; cached per shape).

        Parameters
        ----------
        input_shape : sequence of int
            (N, C_in, *spatial).
        output_size : sequence of int, optional
            Transposed only: the spatial output size (as in :meth:`run`).

        Returns
        -------
        pyconv._ext.conv.ConvReshape
            Frozen: ``output_shape``, ``strides``, ``pads_begin``, ``pads_end``,
            ``dilations``, ``output_padding``, ``algorithm`` (and ``bands`` for
            'banded'), ``num_threads``, ``workspace_bytes``; what :meth:`run` and
            :meth:`bind` use as is.

        Raises
        ------
        ShapeError, InvalidArgument
            When the input shape does not fit the weight or the geometry; the message
            names the argument and the shapes.
        """
        try:
            key = (tuple(input_shape), None if output_size is None else tuple(output_size))
            resolved = self._reshapes.get(key)
        except TypeError:
            raise InvalidArgument(f"{self.op}: input_shape and output_size must be sequences "
                                  f"of ints, got {input_shape!r} and {output_size!r}") from None
        if resolved is None:
            resolved = self._reshape(*key)
            if len(self._reshapes) < 64:
                self._reshapes[key] = resolved
        return resolved

    def _reshape(self, input_shape, output_size):
        n = self.nspatial
        if len(input_shape) != n + 2:
            raise ShapeError(f"{self.op}: expected a {n + 2}-D input (N, C, "
                             f"{', '.join('*' * n)}), got shape {input_shape}")
        for dim, size in enumerate(input_shape):
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
                raise InvalidArgument(f"{self.op}: input_shape must be non-negative ints, got "
                                      f"{input_shape} (dim {dim})")
        input_shape = tuple(int(s) for s in input_shape)
        if input_shape[1] != self.in_channels:
            raise ShapeError(f"{self.op}: input has {input_shape[1]} channels, the weight "
                             f"expects {self.in_channels} (input shape {input_shape})")
        geometry = self.attributes.resolve(input_shape[2:], output_size)
        out_shape = arithmetic.check_tensor_size(
            (input_shape[0], self.out_channels) + geometry.output_shape, self.op)
        return self.kernel.reshape(input_shape, tuple(out_shape), self.stride, self.dilation,
                                   geometry)

    def geometry(self, input_shape, output_size=None):
        """The :class:`~pyconv.arithmetic.ConvGeometry` (spatial output shape, pads) of an
        input shape (N, C_in, *spatial): ``reshape(input_shape).geometry``."""
        return self.reshape(input_shape, output_size).geometry

    def output_shape(self, input_shape, output_size=None):
        """Output shape (N, C_out, *spatial) for an input shape; validates the geometry."""
        return self.reshape(input_shape, output_size).output_shape

    def __call__(self, x, residual=None, output_size=None, out=None):
        return self.run(x, residual, output_size, out)

    def run(self, x, residual=None, output_size=None, out=None):
        """Convolves x (N, C_in, *spatial) float32; returns a new float32 array.

        ``residual`` (same shape as the output) is added before the activation;
        ``output_size`` (transposed only) picks the output spatial size like
        torch's ``ConvTranspose.forward(x, output_size)``; ``out`` (optional) is a
        preallocated C-contiguous float32 array of the output shape, written and
        returned (a memory planner's buffer; one that shares memory with ``x`` or
        ``residual`` raises InvalidArgument)."""
        x = as_float32(x, "input", self.op)
        shape = self.reshape(x.shape, output_size)
        out_shape = shape.output_shape
        x = c_aligned(x)
        if residual is not None:
            residual = c_aligned(as_float32(residual, "residual", self.op))
            if residual.shape != out_shape:
                raise ShapeError(f"{self.op}: residual has shape {residual.shape}, the output "
                                 f"has shape {out_shape}")
        if out is None:
            out = empty_aligned(out_shape, check=False)
        else:
            check_out(self.op, "out", out, out_shape, np.float32, aligned=True)
            # The kernels write out while still reading x and residual (tiles go straight
            # into the output): an overlap would be a wrong answer, not an in-place op.
            for name, arr in (("input", x), ("residual", residual)):
                if arr is not None and np.may_share_memory(out, arr):
                    raise InvalidArgument(f"{self.op}: out shares memory with {name}; pass "
                                          f"a separate output array")
        return self.kernel.run(shape, x, out, residual, self.activation, self.act_alpha,
                               self.act_beta)

    def bind(self, input_shape, out, output_size=None):
        """The plan bound to one input shape and a preallocated output (a memory
        planner's step), or None for a new output array per call (a graph output):
        :meth:`reshape` and the epilogue resolved once.

        Returns a :class:`~pyconv._ext.conv.ConvCall`: ``call(x, residual=None)`` writes
        and returns ``out`` (or the new array), or returns None without computing anything when x (or the
        residual) is not a float32 aligned C-contiguous array of the bound shape, or
        overlaps ``out`` (the caller then takes :meth:`run`).

        Raises
        ------
        ShapeError, InvalidArgument
            As :meth:`reshape`, or when ``out`` is not a writeable aligned C-contiguous
            float32 array of the output shape.
        """
        shape = self.reshape(input_shape, output_size)
        if out is not None:
            check_out(self.op, "out", out, shape.output_shape, np.float32, aligned=True)
        return self.kernel.bind(shape, out, self.activation, self.act_alpha, self.act_beta)


#: What the plans of :meth:`ConvPlan.with_activation` share: all but the epilogue.
_SHARED_BY_EPILOGUES = ("op", "nspatial", "groups", "in_channels", "out_channels",
                        "kernel_shape", "attributes", "stride", "dilation", "transposed",
                        "kernel", "_reshapes")


def _batched(x, n, op):
    """x (N, C, *spatial) float32, and whether it was unbatched (C, *spatial), which torch
    accepts and answers unbatched."""
    x = as_float32(x, "input", op)
    if x.ndim == n + 1:
        return x[None], True
    if x.ndim != n + 2:
        raise ShapeError(f"{op}: input must be {n + 2}-D (N, C_in, {', '.join('*' * n)}) or "
                         f"unbatched {n + 1}-D (C_in, {', '.join('*' * n)}), got shape "
                         f"{x.shape}")
    return x, False


def _conv(n, x, weight, bias, stride, padding, dilation, groups, op):
    x, unbatched = _batched(x, n, op)
    weight = as_float32(weight, "weight", op)
    if weight.ndim != n + 2:
        raise ShapeError(f"{op}: weight must be {n + 2}-D (C_out, C_in/groups, "
                         f"{', '.join('k' * n)}), got shape {weight.shape}")
    y = ConvPlan(weight, bias, stride, padding, dilation, groups, op=op).run(x)
    return y[0] if unbatched else y


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution, as ``torch.nn.functional.conv1d``.

    Parameters
    ----------
    input : ndarray float32 (N, C_in, L), or unbatched (C_in, L)
    weight : ndarray float32 (C_out, C_in/groups, kL)
    bias : ndarray float32 (C_out,), optional
    stride, dilation : int or (int,)
    padding : int, (int,), (begin, end), 'valid', 'same', 'same_upper' or 'same_lower'
        ``'same'`` is ONNX SAME_UPPER and also works with stride > 1.
    groups : int

    Returns
    -------
    ndarray float32 (N, C_out, L_out); (C_out, L_out) for an unbatched input
    """
    return _conv(1, input, weight, bias, stride, padding, dilation, groups, "conv1d")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution, as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    input : ndarray float32 (N, C_in, H, W), or unbatched (C_in, H, W)
    weight : ndarray float32 (C_out, C_in/groups, kH, kW)
    bias : ndarray float32 (C_out,), optional
    stride, dilation : int or (int, int)
    padding : int, (pH, pW), (top, left, bottom, right) in ONNX order, 'valid', 'same',
        'same_upper' or 'same_lower'
        ``'same'`` is ONNX SAME_UPPER (odd extra pad at the end) and also works with
        stride > 1, giving ``ceil(size / stride)``.
    groups : int
        ``groups == C_in`` is a depthwise convolution (direct kernel).

    Returns
    -------
    ndarray float32 (N, C_out, H_out, W_out); (C_out, H_out, W_out) for an unbatched input
    """
    return _conv(2, input, weight, bias, stride, padding, dilation, groups, "conv2d")


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """3-D convolution, as ``torch.nn.functional.conv3d``: input (N, C_in, D, H, W) (or
    unbatched (C_in, D, H, W), answered unbatched), weight
    (C_out, C_in/groups, kD, kH, kW); returns float32 (N, C_out, D_out, H_out, W_out).
    Arguments as in :func:`conv2d`."""
    return _conv(3, input, weight, bias, stride, padding, dilation, groups, "conv3d")


def _conv_transpose(n, x, weight, bias, stride, padding, output_padding, groups, dilation,
                    output_size, op):
    x, unbatched = _batched(x, n, op)
    weight = as_float32(weight, "weight", op)
    if weight.ndim != n + 2:
        raise ShapeError(f"{op}: weight must be {n + 2}-D (C_in, C_out/groups, "
                         f"{', '.join('k' * n)}), got shape {weight.shape}")
    if output_size is not None:
        # torch's ConvTranspose forward: n spatial sizes, or the input's non-spatial dims
        # too ((N, C, *spatial); (C, *spatial) for an unbatched input)
        full = n + (1 if unbatched else 2)
        with arithmetic.prefixed_errors(op):
            output_size = arithmetic.as_shape(output_size, "output_size")
        if len(output_size) not in (n, full):
            raise InvalidArgument(f"{op}: output_size must have {n} or {full} elements, "
                                  f"got {len(output_size)}: {output_size}")
        output_size = output_size[-n:]
    plan = ConvPlan(weight, bias, stride, padding, dilation, groups, transposed=True,
                    output_padding=output_padding, op=op)
    y = plan.run(x, output_size=output_size)
    return y[0] if unbatched else y


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, output_size=None):
    """1-D transposed convolution, as ``torch.nn.functional.conv_transpose1d``: input
    (N, C_in, L) or unbatched (C_in, L), weight (C_in, C_out/groups, kL); returns float32
    (N, C_out, L_out) (unbatched: (C_out, L_out)) with
    L_out = (L-1)*stride - pad_begin - pad_end + dilation*(kL-1) + output_padding + 1.
    Arguments as in :func:`conv_transpose2d`."""
    return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups,
                           dilation, output_size, "conv_transpose1d")


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, output_size=None):
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    The transpose (adjoint) of :func:`conv2d` with the same weight: for every x and y,
    ``<conv2d(x, w), y> == <x, conv_transpose2d(y, w)>`` when the geometry matches.

    Parameters
    ----------
    input : ndarray float32 (N, C_in, H, W), or unbatched (C_in, H, W)
    weight : ndarray float32 (C_in, C_out/groups, kH, kW)
    bias : ndarray float32 (C_out,), optional
    stride, dilation : int or (int, int)
    padding : int, (pH, pW) or per-side (top, left, bottom, right)
        Removed from the full output (ONNX ``pads``).
    output_padding : int or (int, int)
        Added at the end of each dim; must be smaller than stride or dilation.
    groups : int
    output_size : sequence of int, optional
        Target spatial size (like ONNX ``output_shape``); sets output_padding.

    Returns
    -------
    ndarray float32 (N, C_out, H_out, W_out); (C_out, H_out, W_out) for an unbatched input
    """
    return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups,
                           dilation, output_size, "conv_transpose2d")


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, output_size=None):
    """3-D transposed convolution, as ``torch.nn.functional.conv_transpose3d``: input
    (N, C_in, D, H, W) or unbatched (C_in, D, H, W), weight (C_in, C_out/groups, kD, kH,
    kW). Arguments as in
    :func:`conv_transpose2d`."""
    return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups,
                           dilation, output_size, "conv_transpose3d")


def conv_matrix(weight, input_shape, stride=1, padding=0, dilation=1, groups=1):
    """The dense matrix C of a convolution: ``conv(x).ravel() == C @ x.ravel()`` (no bias).

    The transposed convolution with the same weight is ``C.T``: for y of the output shape,
    ``conv_transpose(y).ravel() == C.T @ y.ravel()`` (Dumoulin & Visin, section 4).

    Parameters
    ----------
    weight : ndarray float32 (C_out, C_in/groups, *k)
    input_shape : tuple
        (C_in, *spatial) of one input sample.
    stride, padding, dilation, groups : as in :func:`conv2d`.

    Returns
    -------
    ndarray float32 (C_out * prod(out_spatial), C_in * prod(spatial))

    Raises
    ------
    InvalidArgument
        If the matrix would exceed ``CONV_MATRIX_MAX_ELEMENTS`` (2**26) elements.
    """
    weight = as_float32(weight, "weight", "conv_matrix")
    plan = ConvPlan(weight, None, stride, padding, dilation, groups, op="conv_matrix")
    with arithmetic.prefixed_errors("conv_matrix"):
        input_shape = arithmetic.as_shape(input_shape, "input_shape")
    out_shape = plan.output_shape((1,) + input_shape)
    rows, cols = int(np.prod(out_shape[1:])), int(np.prod(input_shape))
    if rows * cols > CONV_MATRIX_MAX_ELEMENTS:
        raise InvalidArgument(
            f"conv_matrix: the matrix would be {rows} x {cols} = {rows * cols} elements, "
            f"more than the limit of {CONV_MATRIX_MAX_ELEMENTS}; use a smaller input_shape")
    # Column j is the convolution of the j-th basis image: convolve all of them as a batch.
    basis = np.eye(cols, dtype=np.float32).reshape((cols,) + input_shape)
    return np.ascontiguousarray(plan.run(basis).reshape(cols, rows).T)
