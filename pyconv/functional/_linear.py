"""Linear layers and matrix products (torch.nn.functional / torch signatures).

``LinearPlan`` is the create -> reshape -> run plan of a linear layer, as
:class:`~pyconv.functional.ConvPlan` is a convolution's; :func:`linear`, ``nn.Linear`` and
the ONNX ``Gemm`` / ``MatMul`` (constant right operand) operators all run one.
"""
from __future__ import annotations

import math

import numpy as np

from pyconv._activations import epilogue_params
from pyconv._arrays import as_float32, check_out
from pyconv._ext import gemm
from pyconv._ext.gemm import LinearKernel, empty_aligned
from pyconv.arithmetic import MAX_TENSOR_ELEMENTS, check_tensor_size
from pyconv.errors import InvalidArgument, ShapeError

__all__ = ["linear", "matmul", "LinearPlan"]


class LinearPlan:
    """A linear layer prepared once and run on many inputs:
    ``y = act(alpha * x @ weight.T + bias)`` over the last axis of x.

    Create -> reshape -> run: the constructor takes the weight (packed for the GEMM
    engine once, by the first reshape with more than one row) and fixes the epilogue
    (bias, alpha, activation); :meth:`reshape` resolves an input shape into a frozen
    :class:`~pyconv._ext.gemm.LinearReshape` (output shape, algorithm, the GEMM's thread
    grid, workspace), once per shape; :meth:`run` and :meth:`bind` only compute.

    Parameters
    ----------
    weight : ndarray float32 (out_features, in_features)
        PyTorch layout (ONNX Gemm's B with transB=1; MatMul's B is its transpose).
    bias : ndarray float32 (out_features,), optional
        Added after ``alpha`` scales the product (ONNX Gemm's ``beta * C`` for a C of one
        value per output column).
    activation : str, optional
        Fused activation, a name of :data:`pyconv._activations.ACTIVATIONS`;
        ``act_alpha``/``act_beta`` are its parameters.
    alpha : float
        Scale of the product (ONNX Gemm's ``alpha``).
    op : str
        Name used in error messages.
    context : pyconv.ExecutionContext, optional
        Threads and ISA of every run (None: the process defaults now).
    prepack : bool
        True (a layer run many times): the packed weight is kept. False (a one-shot call):
        each multi-row run packs it into the workspace instead of allocating a copy.
    """

    def __init__(self, weight, bias=None, activation=None, act_alpha=0.0, act_beta=0.0,
                 alpha=1.0, op="linear", context=None, prepack=True):
        self.op = op
        weight = as_float32(weight, "weight", op)
        if weight.ndim != 2:
            raise ShapeError(f"{op}: weight must be 2-D (out_features, in_features), "
                             f"got shape {weight.shape}")
        if bias is not None:
            bias = as_float32(bias, "bias", op)
            if bias.shape != (weight.shape[0],):
                raise ShapeError(f"{op}: bias has shape {bias.shape}, expected "
                                 f"({weight.shape[0]},) for a weight of shape {weight.shape}")
        self.out_features, self.in_features = weight.shape
        self.alpha = float(alpha)
        self.kernel = LinearKernel(weight, bias, prepack, context)
        # LinearReshape per input shape; shared with the plans of with_activation.
        self._reshapes = {}
        self.activation, self.act_alpha, self.act_beta = epilogue_params(
            self.op, activation, act_alpha, act_beta)

    def with_activation(self, activation=None, act_alpha=0.0, act_beta=0.0):
        """This layer with another fused activation (None: bias only).

        Returns a new plan sharing this one's weight (and its packed copy), bias, alpha,
        context and reshapes."""
        plan = LinearPlan.__new__(LinearPlan)
        for name in ("op", "out_features", "in_features", "alpha", "kernel", "_reshapes"):
            setattr(plan, name, getattr(self, name))
        plan.activation, plan.act_alpha, plan.act_beta = epilogue_params(
            self.op, activation, act_alpha, act_beta)
        return plan

    @property
    def context(self):
        return self.kernel.context

    def reshape(self, input_shape):
        """The plan resolved for one input shape (the reshape step; cached per shape).

        Parameters
        ----------
        input_shape : sequence of int
            (*, in_features): any number of leading dims, including none.

        Returns
        -------
        pyconv._ext.gemm.LinearReshape
            Frozen: ``input_shape``, ``output_shape`` (*, out_features), ``rows``,
            ``algorithm`` ('gemv', 'gemm' or 'none'), ``num_threads``,
            ``workspace_bytes``; what :meth:`run` and :meth:`bind` use as is.

        Raises
        ------
        ShapeError, InvalidArgument
            When the shape does not fit the weight or is not a sequence of non-negative
            ints; the message names the argument and the shapes.
        """
        try:
            key = tuple(input_shape)
            resolved = self._reshapes.get(key)
        except TypeError:
            raise InvalidArgument(f"{self.op}: input_shape must be a sequence of ints, got "
                                  f"{input_shape!r}") from None
        if resolved is None:
            resolved = self._reshape(key)
            if len(self._reshapes) < 64:
                self._reshapes[key] = resolved
        return resolved

    def _reshape(self, input_shape):
        # An ndarray's shape (plain non-negative ints) passes the first test: the one-shot
        # plans of functional.linear feel every microsecond here.
        if not all(type(s) is int and s >= 0 for s in input_shape):
            for dim, size in enumerate(input_shape):
                if (isinstance(size, bool) or not isinstance(size, (int, np.integer))
                        or size < 0):
                    raise InvalidArgument(f"{self.op}: input_shape must be non-negative ints, "
                                          f"got {input_shape} (dim {dim})")
            input_shape = tuple(int(s) for s in input_shape)
        if not input_shape or input_shape[-1] != self.in_features:
            raise ShapeError(f"{self.op}: input has shape {input_shape}, expected "
                             f"(*, {self.in_features}) for a weight of shape "
                             f"{(self.out_features, self.in_features)}")
        out_shape = input_shape[:-1] + (self.out_features,)
        if not 0 < math.prod(out_shape) <= MAX_TENSOR_ELEMENTS:
            check_tensor_size(out_shape, self.op)      # the limit, with empty dims too
        return self.kernel.reshape(input_shape, out_shape)

    def output_shape(self, input_shape):
        """Output shape (*, out_features) of an input shape; validates it."""
        return self.reshape(input_shape).output_shape

    def __call__(self, x, out=None):
        return self.run(x, out)

    def run(self, x, out=None):
        """``act(alpha * x @ weight.T + bias)`` for x (*, in_features) float32 (any
        strides: a transposed view is read in place); returns a new float32 array, or
        ``out`` (a preallocated writeable aligned C-contiguous float32 array of the output
        shape that does not overlap x), written."""
        x = as_float32(x, "input", self.op)
        shape = self.reshape(x.shape)
        if not x.flags.aligned:
            x = np.require(x, requirements="CA")
        if out is None:
            out = empty_aligned(shape.output_shape, check=False)
        else:
            check_out(self.op, "out", out, shape.output_shape, np.float32, aligned=True)
        return self.kernel.run(shape, x, out, self.activation, self.act_alpha,
                               self.act_beta, self.alpha)

    def bind(self, input_shape, out=None):
        """The plan bound to one input shape and, optionally, a preallocated output (a
        memory planner's step): :meth:`reshape` and the epilogue resolved once.

        Returns a :class:`~pyconv._ext.gemm.LinearCall`: ``call(x)`` writes and returns
        ``out`` (a new array per call when ``out`` is None), or returns None without
        computing anything when x is not a float32 aligned C-contiguous array of the bound
        shape, or overlaps ``out`` (the caller then takes :meth:`run`).

        Raises
        ------
        ShapeError, InvalidArgument
            As :meth:`reshape`, or when ``out`` is not a writeable aligned C-contiguous
            float32 array of the output shape.
        """
        shape = self.reshape(input_shape)
        if out is not None:
            check_out(self.op, "out", out, shape.output_shape, np.float32, aligned=True)
        return self.kernel.bind(shape, out, self.activation, self.act_alpha, self.act_beta,
                                self.alpha)

    def __repr__(self):
        return (f"LinearPlan(in_features={self.in_features}, "
                f"out_features={self.out_features}, op={self.op!r}, "
                f"activation={self.activation!r})")


def linear(x, weight, bias=None):
    """Affine map ``y = x @ weight.T + bias`` over the last axis.

    Parameters
    ----------
    x : ndarray, shape (*, in_features), float32
        Any number of leading (batch) dims, including none.
    weight : ndarray, shape (out_features, in_features), float32
        PyTorch layout.
    bias : ndarray, shape (out_features,), float32, optional

    Returns
    -------
    ndarray, shape (*, out_features), float32

    Raises
    ------
    InvalidDType
        If an array is not float32.
    ShapeError
        If the shapes do not fit together (the message names both).
    """
    # A one-shot plan: the weight is packed into the workspace, not into a kept copy.
    return LinearPlan(weight, bias, prepack=False).run(x)


def matmul(input, other, *, out=None, context=None):
    """Matrix product with ``torch.matmul`` / ``numpy.matmul`` semantics, float32.

    Batch dims broadcast; every matrix pair runs on the packed GEMM engine, the batch
    looped in C and split over threads (attention's ``Q @ K.T`` and ``scores @ V``).

    Parameters
    ----------
    input : ndarray, shape (..., M, K) or (K,), float32
    other : ndarray, shape (..., K, N) or (K,), float32
    out : ndarray, optional
        Writeable aligned C-contiguous float32 array of the result's shape, not
        overlapping the operands; written and returned.
    context : pyconv.ExecutionContext, optional
        Threads and ISA (None: the process defaults).

    Returns
    -------
    ndarray, float32, C-contiguous
        ``broadcast(input.shape[:-2], other.shape[:-2]) + (M, N)``, without the dims of
        1-D operands.

    Raises
    ------
    InvalidDType
        If an operand is not float32.
    ShapeError
        If an operand is 0-D, the inner dims differ, the batch dims do not broadcast or
        the result would be too large.
    """
    return gemm.matmul(input, other, out, context=context, names=("input", "other"))
