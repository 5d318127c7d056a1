"""Pooling operators: MaxPool, AveragePool, LpPool, the global pools and MaxUnpool.

The sliding-window pools run a :class:`pyconv.functional.PoolPlan` made once in setup,
the global pools a :class:`pyconv.functional.GlobalPoolPlan`; MaxUnpool the N-d entry
point of :mod:`pyconv.functional` (one implementation)."""
from __future__ import annotations

import math

import numpy as np

from pyconv import functional as F
from pyconv.arithmetic import ConvAttributes, check_tensor_size, max_unpool_output_shape
from pyconv.errors import PyconvError
from pyconv.ops._base import REQUIRED, Op, bound_step, register, wrap_errors


class _Pool(Op):
    supports_out = True
    mode = None

    def setup(self, consts):
        attributes = ConvAttributes.from_onnx("pool", self.attrs, op=self.node.label)
        self.plan = F.PoolPlan(self.mode, attributes, context=self.context,
                               **self.options())

    def options(self):
        """The plan's options beyond the window (PoolPlan's keyword arguments)."""
        return {}

    def run(self, inputs, out=None):
        return [self._run(self.float32(inputs[0]), out)]

    def _run(self, x, out):
        try:
            return wrap_errors(self, self.plan.run, x, out)
        except Exception:
            if out is None:
                raise
            return self._run(x, None)

    def bind(self, specs, out):
        """The plan bound to the planned input shape and ``out``; None where ``run`` must
        decide."""
        if (out is None or specs[0] is None or specs[0][1] != np.float32
                or self.mode == "lp" or self.plan.indices != "none"):
            return None
        try:
            kernel = self.plan.bind(specs[0][0], out)
        except (PyconvError, ValueError):
            return None
        return bound_step(kernel, self, out)


@register("MaxPool")
class MaxPool(_Pool):
    """ONNX MaxPool (1-22) with the optional Indices output (``storage_order`` 0/1)."""
    attributes = {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None,
                  "kernel_shape": REQUIRED, "pads": None, "storage_order": 0,
                  "strides": None}
    mode = "max"

    def options(self):
        want = len(self.node.outputs) > 1 and bool(self.node.outputs[1])
        return {"indices": "onnx" if want else "none"}

    def run(self, inputs, out=None):
        x = inputs[0]
        if x.dtype.kind in "iu" and x.dtype.itemsize <= 2:
            # 8/16-bit integers are exact in float32: the same kernel, cast around it.
            res = self.run([x.astype(np.float32)] + list(inputs[1:]))
            return [res[0].astype(x.dtype)] + res[1:]
        x = self.float32(x)
        res = self._run(x, out)
        if self.plan.indices == "none":
            return [res]
        y, idx = res
        if int(self.attrs["storage_order"]) == 1:
            # Column-major positions within each (n, c) plane: the first spatial dim
            # varies fastest (onnxruntime's order for 1-D, 2-D and 3-D pooling).
            spatial = x.shape[2:]
            plane = math.prod(spatial)
            if plane:
                base, r = np.divmod(idx, plane)
                r = np.ravel_multi_index(np.unravel_index(r, spatial), spatial, order="F")
                idx = base * plane + r
        return [y, idx]


@register("AveragePool")
class AveragePool(_Pool):
    """ONNX AveragePool (1-22): count_include_pad, ceil_mode, dilations (19)."""
    attributes = {"auto_pad": "NOTSET", "ceil_mode": 0, "count_include_pad": 0,
                  "dilations": None, "kernel_shape": REQUIRED, "pads": None,
                  "strides": None}
    mode = "avg"

    def options(self):
        return {"count_include_pad": bool(self.attrs["count_include_pad"])}


@register("LpPool")
class LpPool(_Pool):
    """ONNX LpPool (1-22)."""
    attributes = {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None,
                  "kernel_shape": REQUIRED, "p": 2, "pads": None, "strides": None}
    mode = "lp"

    def options(self):
        return {"p": float(self.attrs["p"])}


class _GlobalPool(Op):
    is_max = False

    def setup(self, consts):
        self.plan = F.GlobalPoolPlan(self.is_max, op=self.node.label, context=self.context)

    def run(self, inputs, out=None):
        return [wrap_errors(self, self.plan.run, self.float32(inputs[0]))]

    def bind(self, specs, out):
        if specs[0] is None or specs[0][1] != np.float32:
            return None
        try:
            kernel = self.plan.bind(specs[0][0])
        except (PyconvError, ValueError):
            return None
        return bound_step(kernel, self, out)


@register("GlobalAveragePool")
class GlobalAveragePool(_GlobalPool):
    """ONNX GlobalAveragePool: mean over all spatial dims (kept as 1s)."""


@register("GlobalMaxPool")
class GlobalMaxPool(_GlobalPool):
    """ONNX GlobalMaxPool: max over all spatial dims (kept as 1s)."""
    is_max = True


@register("MaxUnpool")
class MaxUnpool(Op):
    """ONNX MaxUnpool (9-22): indices into the whole output tensor (MaxPool's Indices)."""
    required_inputs = 2
    attributes = {"kernel_shape": REQUIRED, "pads": None, "strides": None}

    def setup(self, consts):
        self.window = ConvAttributes.from_onnx("pool", self.attrs, op=self.node.label)

    def run(self, inputs, out=None):
        x = self.float32(inputs[0])
        idx = inputs[1]
        requested = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
        w = self.window
        shape = max_unpool_output_shape(x.shape[2:], w.kernel_shape, w.strides, w.pads_begin,
                                        w.pads_end, op=self.node.label)
        y = wrap_errors(self, F.max_unpool, x, idx, shape, convention="onnx",
                        op=self.node.label, context=self.context)
        if requested is not None:
            # Indices address the default output; output_shape adds (or removes) room at
            # the end of each spatial dim, as onnxruntime does.
            want = tuple(int(s) for s in requested)
            if len(want) == x.ndim:
                want = want[2:]
            if len(want) != x.ndim - 2:
                self.fail(f"output_shape {list(requested)} does not fit input {x.shape}")
            if want != shape:
                full = np.zeros(check_tensor_size(x.shape[:2] + want, self.node.label,
                                                  "output_shape"), np.float32)
                region = tuple(slice(0, min(a, b)) for a, b in zip(shape, want))
                full[(slice(None), slice(None)) + region] = y[(slice(None), slice(None))
                                                              + region]
                y = full
        return [y]
