"""Conv, ConvTranspose and the optimizer's FusedConv: all run :class:`ConvPlan`."""
from __future__ import annotations

import numpy as np

from pyconv._ext import gemm
from pyconv.arithmetic import ConvAttributes
from pyconv.functional import ConvPlan
from pyconv.errors import PyconvError
from pyconv.ops._base import Op, bound_step, register, take_out, wrap_errors


class _ConvBase(Op):
    required_inputs = 2
    kind = "conv"
    supports_out = True

    def _make_plan(self, weight, bias, activation=None, alpha=0.0, beta=0.0):
        self.float32(weight, 1)
        if weight.ndim < 3:
            self.fail(f"weight '{self.input_name(1)}' has shape {weight.shape}; expected "
                      f"(C, C, *kernel) with at least one spatial dim")
        attributes = ConvAttributes.from_onnx(self.kind, self.attrs, weight.shape[2:],
                                              op=self.node.label)
        return wrap_errors(self, ConvPlan, weight, bias, groups=int(self.attrs["group"]),
                           activation=activation, act_alpha=alpha, act_beta=beta,
                           attributes=attributes, context=self.context)

    def setup(self, consts):
        self.activation = self.attrs.get("_pyconv_activation")
        self.alpha = float(self.attrs.get("_pyconv_alpha", 0.0))
        self.beta = float(self.attrs.get("_pyconv_beta", 0.0))
        self.plan = None
        self._plain_plan = None     # self.plan without the activation (broadcast residual)
        if 1 in consts and (len(self.node.inputs) < 3 or not self.node.inputs[2]
                            or 2 in consts):
            self.plan = self._make_plan(consts[1], consts.get(2), self.activation,
                                        self.alpha, self.beta)

    def _plan_for(self, inputs):
        if self.plan is not None:
            return self.plan
        w = inputs[1]
        b = inputs[2] if len(inputs) > 2 else None
        return self._make_plan(w, b, self.activation, self.alpha, self.beta)

    def run(self, inputs, out=None):
        x = self.float32(inputs[0])
        plan = self._plan_for(inputs)
        residual = inputs[3] if len(inputs) > 3 else None
        shape = wrap_errors(self, plan.reshape, x.shape).output_shape
        if residual is not None and (residual.shape != shape or residual.dtype != np.float32):
            # A broadcast residual: no fused epilogue; convolve, add, then activate.
            y = wrap_errors(self, self._without_activation(plan).run, x)
            y = np.add(y, residual, out=y if y.shape == np.broadcast_shapes(
                y.shape, residual.shape) else None)
            if self.activation:
                y = gemm.apply_activation(y.astype(np.float32, copy=False), self.activation,
                                          self.alpha, self.beta, self.context)
            return [y]
        out = take_out(out, shape)
        if out is not None and (np.may_share_memory(out, x) or (
                residual is not None and np.may_share_memory(out, residual))):
            out = gemm.empty_aligned(shape, check=False)   # take_out checked it
        return [wrap_errors(self, plan.run, x, residual, None, out)]

    def bind(self, specs, out):
        """The plan bound to the planned input shape and ``out``, or to a new output
        per call when ``out`` is None (:meth:`pyconv.functional.ConvPlan.bind`): no
        per-call geometry or checks in Python. Constant weights only."""
        plan = self.plan
        if plan is None or specs[0] is None:
            return None
        x_shape, dtype = specs[0]
        residual = len(specs) > 3 and specs[3] is not None
        if dtype != np.float32:
            return None
        try:
            # out None (a graph output, handed to the caller): a new array per call
            kernel = plan.bind(x_shape, out)
        except PyconvError:
            return None
        if residual and specs[3] != (kernel.output_shape, np.float32):
            return None
        return bound_step(kernel, self, out, 3 if residual else None)

    def _without_activation(self, plan):
        """plan with a bias-only epilogue (same packed weights); kept for the constant
        plan."""
        if not plan.activation:
            return plan
        if plan is not self.plan:
            return plan.with_activation(None)
        if self._plain_plan is None:
            self._plain_plan = plan.with_activation(None)
        return self._plain_plan


@register("Conv")
class Conv(_ConvBase):
    """ONNX Conv (opsets 1-22): N-d, groups, dilations, auto_pad; float32."""
    attributes = {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None,
                  "pads": None, "strides": None}


@register("FusedConv", domain="pyconv")
class FusedConv(Conv):
    """Conv with an epilogue fused by the optimizer: input 3 is a residual added before
    the activation ``_pyconv_activation`` (parameters ``_pyconv_alpha/_beta``)."""


@register("ConvTranspose")
class ConvTranspose(_ConvBase):
    """ONNX ConvTranspose: pads and output_padding, or output_shape / auto_pad resolved per
    input size (:class:`pyconv.arithmetic.ConvAttributes`)."""
    kind = "conv_transpose"
    attributes = {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None,
                  "output_padding": None, "output_shape": None, "pads": None,
                  "strides": None}


@register("FusedConvTranspose", domain="pyconv")
class FusedConvTranspose(ConvTranspose):
    """ConvTranspose with an activation fused by the optimizer (``_pyconv_activation``,
    parameters ``_pyconv_alpha/_beta``), applied as each output plane is finished."""
