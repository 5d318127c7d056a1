"""Conv, ConvTranspose and the optimizer's FusedConv: all run :class:`ConvPlan`."""
from __future__ import annotations

import copy

import numpy as np

from pyconv import arithmetic
from pyconv.functional import ConvPlan
from pyconv.functional._activation import _elementwise
from pyconv.errors import PyconvError
from pyconv.ops._base import Op, bound_step, register, take_out, wrap_errors

_AUTO_PAD = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


class _ConvBase(Op):
    required_inputs = 2
    transposed = False
    supports_out = True

    def _geometry(self, weight):
        """Checks attributes against the weight; sets strides, dilations, padding spec."""
        n = weight.ndim - 2
        if n < 1:
            self.fail(f"weight '{self.input_name(1)}' has shape {weight.shape}; expected "
                      f"(C, C, *kernel) with at least one spatial dim")
        ks = self.ints("kernel_shape")
        if ks is not None and tuple(ks) != tuple(weight.shape[2:]):
            self.fail(f"kernel_shape {ks} does not match the weight shape {weight.shape}")
        self.n = n
        self.strides = tuple(self.ints("strides", n) or (1,) * n)
        self.dilations = tuple(self.ints("dilations", n) or (1,) * n)
        if min(self.strides + self.dilations) < 1:
            self.fail(f"strides {self.strides} and dilations {self.dilations} must be "
                      f"positive")
        auto_pad = str(self.attrs["auto_pad"]).upper()
        if auto_pad not in _AUTO_PAD:
            self.fail(f"auto_pad must be one of {_AUTO_PAD}, got {auto_pad!r}")
        self.auto_pad = auto_pad
        pads = self.ints("pads", 2 * n)
        if pads is not None and min(pads) < 0:
            self.fail(f"pads {pads} must be non-negative")
        if auto_pad == "NOTSET":
            self.padding = tuple(pads) if pads is not None else 0
        else:
            self.padding = auto_pad.lower()
        group = int(self.attrs["group"])
        if group < 1:
            self.fail(f"group must be positive, got {group}")
        self.group = group

    def _make_plan(self, weight, bias, activation=None, alpha=0.0, beta=0.0):
        if weight.dtype != np.float32:
            self.fail(f"weight '{self.input_name(1)}' has dtype {weight.dtype}; convolutions "
                      f"run on float32 only")
        self._geometry(weight)
        return wrap_errors(self, ConvPlan, weight, bias, self.strides, self._plan_padding(),
                           self.dilations, self.group, transposed=self.transposed,
                           output_padding=self._output_padding(), activation=activation,
                           act_alpha=alpha, act_beta=beta, op=self.node.label,
                           context=self.context)

    def _plan_padding(self):
        return self.padding

    def _output_padding(self):
        return 0

    def setup(self, consts):
        self.activation = self.attrs.get("_pyconv_activation")
        self.alpha = float(self.attrs.get("_pyconv_alpha", 0.0))
        self.beta = float(self.attrs.get("_pyconv_beta", 0.0))
        self.plan = None
        self.plain = None
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

    def _variant(self, plan, x):
        return plan

    def run(self, inputs, out=None):
        x = self.float32(inputs[0])
        plan = self._variant(self._plan_for(inputs), x)
        residual = inputs[3] if len(inputs) > 3 else None
        shape = wrap_errors(self, plan.output_shape, x.shape)
        if residual is not None and (residual.shape != shape or residual.dtype != np.float32):
            # A broadcast residual: no fused epilogue; convolve, add, then activate.
            y = wrap_errors(self, self._without_activation(plan).run, x)
            y = np.add(y, residual, out=y if y.shape == np.broadcast_shapes(
                y.shape, residual.shape) else None)
            if self.activation:
                y = _elementwise(y.astype(np.float32, copy=False), True, self.activation,
                                 self.node.label, self.alpha, self.beta, self.context)
            return [y]
        out = take_out(out, shape)
        if out is not None and (np.may_share_memory(out, x) or (
                residual is not None and np.may_share_memory(out, residual))):
            out = np.empty(shape, np.float32)
        return [wrap_errors(self, plan.run, x, residual, None, out)]

    def bind(self, specs, out):
        """The packed kernel bound to the planned input shape and ``out``
        (:meth:`pyconv._ext.conv.ConvKernel.bind`): no per-call geometry or checks in
        Python. Constant weights and fixed pads only."""
        plan = self.plan
        if (plan is None or out is None or getattr(self, "dynamic", False)
                or specs[0] is None):
            return None
        x_shape, dtype = specs[0]
        residual = len(specs) > 3 and specs[3] is not None
        if dtype != np.float32 or (residual and specs[3] != (out.shape, np.float32)):
            return None
        try:
            shape, pads_begin = plan._geometry_for(tuple(x_shape), None)
        except PyconvError:
            return None
        if shape != out.shape:
            return None
        kernel = plan.kernel.bind(x_shape, out, plan.stride, pads_begin, plan.dilation,
                                  plan.activation, plan.act_alpha, plan.act_beta)
        return bound_step(kernel, self, out, 3 if residual else None)

    def _without_activation(self, plan):
        if not plan.activation:
            return plan
        p = copy.copy(plan)
        p.activation = None
        return p


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
    """ONNX ConvTranspose: pads, output_padding, or output_shape / auto_pad resolved per
    input size with :func:`pyconv.arithmetic.conv_transpose_pads_for_output_shape`."""
    transposed = True
    attributes = {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None,
                  "output_padding": None, "output_shape": None, "pads": None,
                  "strides": None}

    def setup(self, consts):
        self._variants = {}
        super().setup(consts)

    def _geometry(self, weight):
        super()._geometry(weight)
        n = self.n
        self.out_pad = tuple(self.ints("output_padding", n) or (0,) * n)
        shape = self.ints("output_shape")
        if shape is not None and len(shape) == n + 2:
            shape = shape[2:]
        if shape is not None and len(shape) != n:
            self.fail(f"output_shape {shape} must have {n} spatial values")
        self.out_shape = shape
        # Pads that depend on the input size: resolved per size in _variant.
        self.dynamic = shape is not None or self.auto_pad in ("SAME_UPPER", "SAME_LOWER")

    def _plan_padding(self):
        return 0 if self.dynamic else self.padding

    def _output_padding(self):
        return 0 if self.dynamic else self.out_pad

    def _variant(self, plan, x):
        if not self.dynamic:
            return plan
        spatial = tuple(x.shape[2:])
        key = (id(plan), spatial)
        v = self._variants.get(key) if plan is self.plan else None
        if v is None:
            tp = wrap_errors(self, arithmetic.conv_transpose_pads_for_output_shape, spatial,
                             plan.kernel_shape, self.strides, self.dilations, self.out_pad,
                             self.out_shape, self.auto_pad, op=self.node.label)
            # Same packed weights, other pads: a shallow copy shares the kernel.
            v = copy.copy(plan)
            v.padding = tuple(tp.pads_begin) + tuple(tp.pads_end)
            v.output_padding = tuple(tp.output_padding)
            if plan is self.plan:
                self._variants[key] = v
        return v


@register("FusedConvTranspose", domain="pyconv")
class FusedConvTranspose(ConvTranspose):
    """ConvTranspose with an activation fused by the optimizer (``_pyconv_activation``,
    parameters ``_pyconv_alpha/_beta``), applied as each output plane is finished."""
