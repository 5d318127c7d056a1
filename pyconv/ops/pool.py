"""Pooling operators: MaxPool, AveragePool, LpPool, the global pools and MaxUnpool.

All run the N-d ONNX entry points of :mod:`pyconv.functional` (one implementation)."""
from __future__ import annotations

import numpy as np

from pyconv import arithmetic
from pyconv import functional as F
from pyconv.errors import PyconvError
from pyconv.ops._base import REQUIRED, Op, bound_step, register, wrap_errors

_AUTO_PAD = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


class _Pool(Op):
    supports_out = True

    def setup(self, consts):
        ks = self.ints("kernel_shape")
        if not ks or min(ks) < 1:
            self.fail(f"kernel_shape must be a non-empty list of positive ints, got {ks}")
        n = len(ks)
        self.n = n
        self.kernel = tuple(ks)
        self.strides = tuple(self.ints("strides", n) or (1,) * n)
        dil = self.ints("dilations", n) if "dilations" in self.attrs else None
        self.dilations = tuple(dil or (1,) * n)
        if min(self.strides + self.dilations) < 1:
            self.fail(f"strides {self.strides} and dilations {self.dilations} must be "
                      f"positive")
        pads = self.ints("pads", 2 * n)
        if pads is not None and min(pads) < 0:
            self.fail(f"pads {pads} must be non-negative")
        self.pads = (tuple(pads[:n]), tuple(pads[n:])) if pads else ((0,) * n, (0,) * n)
        auto_pad = str(self.attrs.get("auto_pad", "NOTSET")).upper()
        if auto_pad not in _AUTO_PAD:
            self.fail(f"auto_pad must be one of {_AUTO_PAD}, got {auto_pad!r}")
        self.auto_pad = auto_pad
        self.ceil_mode = bool(self.attrs.get("ceil_mode", 0))

    def _pads(self, x):
        return self._pads_for(x.shape)

    def _pads_for(self, shape):
        if len(shape) != self.n + 2:
            self.fail(f"input '{self.input_name(0)}' has shape {shape}; kernel_shape "
                      f"{list(self.kernel)} needs a {self.n + 2}-D input (N, C, *spatial)")
        if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            return wrap_errors(self, arithmetic.resolve_padding, self.auto_pad.lower(),
                               self.n, shape[2:], self.kernel, self.strides,
                               self.dilations)
        if self.auto_pad == "VALID":
            return (0,) * self.n, (0,) * self.n
        return self.pads

    def _bind(self, mode, specs, out, count_include_pad=False):
        """The pooling kernel bound to the planned input shape and ``out``
        (:func:`pyconv.functional.bind_pool`); None where ``run`` must decide."""
        if out is None or specs[0] is None or specs[0][1] != np.float32:
            return None
        try:
            pb, pe = self._pads_for(specs[0][0])
            kernel = F.bind_pool(mode, specs[0][0], self.kernel, self.strides, pb, pe,
                                 self.dilations, self.ceil_mode, out,
                                 count_include_pad=count_include_pad, op=self.node.label,
                                 context=self.context)
        except (PyconvError, ValueError):
            return None
        return bound_step(kernel, self, out)


@register("MaxPool")
class MaxPool(_Pool):
    """ONNX MaxPool (1-22) with the optional Indices output (``storage_order`` 0/1)."""
    attributes = {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None,
                  "kernel_shape": REQUIRED, "pads": None, "storage_order": 0,
                  "strides": None}

    def run(self, inputs, out=None):
        x = inputs[0]
        if x.dtype.kind in "iu" and x.dtype.itemsize <= 2:
            # 8/16-bit integers are exact in float32: the same kernel, cast around it.
            res = self.run([x.astype(np.float32)] + list(inputs[1:]))
            return [res[0].astype(x.dtype)] + res[1:]
        x = self.float32(x)
        pb, pe = self._pads(x)
        want = len(self.node.outputs) > 1 and bool(self.node.outputs[1])
        res = self._call(x, pb, pe, "onnx" if want else "none", out)
        if not want:
            return [res]
        y, idx = res
        if int(self.attrs["storage_order"]) == 1:
            # Column-major positions within each (n, c) plane: swap the last two axes.
            shape = x.shape
            plane = int(np.prod(shape[2:]))
            base, r = np.divmod(idx, plane)
            if x.ndim >= 4:
                h, w = shape[-2], shape[-1]
                outer, rem = np.divmod(r, h * w)
                row, col = np.divmod(rem, w)
                r = outer * h * w + col * h + row
            idx = base * plane + r
        return [y, idx]

    def bind(self, specs, out):
        if len(self.node.outputs) > 1 and self.node.outputs[1]:
            return None     # Indices: the general path
        return self._bind("max", specs, out)

    def _call(self, x, pb, pe, indices, out):
        try:
            return wrap_errors(self, F.max_pool, x, self.kernel, self.strides, pb, pe,
                               self.dilations, self.ceil_mode, indices, op=self.node.label,
                               out=out, context=self.context)
        except Exception:
            if out is None:
                raise
            return self._call(x, pb, pe, indices, None)


@register("AveragePool")
class AveragePool(_Pool):
    """ONNX AveragePool (1-22): count_include_pad, ceil_mode, dilations (19)."""
    attributes = {"auto_pad": "NOTSET", "ceil_mode": 0, "count_include_pad": 0,
                  "dilations": None, "kernel_shape": REQUIRED, "pads": None,
                  "strides": None}

    def bind(self, specs, out):
        return self._bind("avg", specs, out, bool(self.attrs["count_include_pad"]))

    def run(self, inputs, out=None):
        x = self.float32(inputs[0])
        pb, pe = self._pads(x)
        cip = bool(self.attrs["count_include_pad"])
        try:
            return [wrap_errors(self, F.avg_pool, x, self.kernel, self.strides, pb, pe,
                                self.dilations, self.ceil_mode, cip, op=self.node.label,
                                out=out, context=self.context)]
        except Exception:
            if out is None:
                raise
            return [wrap_errors(self, F.avg_pool, x, self.kernel, self.strides, pb, pe,
                                self.dilations, self.ceil_mode, cip, op=self.node.label,
                                context=self.context)]


@register("LpPool")
class LpPool(_Pool):
    """ONNX LpPool (1-22)."""
    attributes = {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": None,
                  "kernel_shape": REQUIRED, "p": 2, "pads": None, "strides": None}

    def run(self, inputs, out=None):
        x = self.float32(inputs[0])
        pb, pe = self._pads(x)
        return [wrap_errors(self, F.lp_pool, x, self.kernel, float(self.attrs["p"]),
                            self.strides, pb, pe, self.dilations, self.ceil_mode,
                            op=self.node.label, context=self.context)]


class _GlobalPool(Op):
    is_max = False

    def bind(self, specs, out):
        if specs[0] is None or specs[0][1] != np.float32:
            return None
        try:
            kernel = F.bind_global_pool(specs[0][0], self.is_max, op=self.node.label,
                                        context=self.context)
        except (PyconvError, ValueError):
            return None
        return bound_step(kernel, self, out)


@register("GlobalAveragePool")
class GlobalAveragePool(_GlobalPool):
    """ONNX GlobalAveragePool: mean over all spatial dims (kept as 1s)."""

    def run(self, inputs, out=None):
        return [wrap_errors(self, F.global_avg_pool, self.float32(inputs[0]),
                            context=self.context)]


@register("GlobalMaxPool")
class GlobalMaxPool(_GlobalPool):
    """ONNX GlobalMaxPool: max over all spatial dims (kept as 1s)."""
    is_max = True

    def run(self, inputs, out=None):
        return [wrap_errors(self, F.global_max_pool, self.float32(inputs[0]),
                            context=self.context)]


@register("MaxUnpool")
class MaxUnpool(Op):
    """ONNX MaxUnpool (9-22): indices into the whole output tensor (MaxPool's Indices)."""
    required_inputs = 2
    attributes = {"kernel_shape": REQUIRED, "pads": None, "strides": None}

    def setup(self, consts):
        ks = self.ints("kernel_shape")
        n = len(ks)
        self.kernel = ks
        self.strides = self.ints("strides", n) or [1] * n
        pads = self.ints("pads", 2 * n) or [0] * (2 * n)
        self.pb, self.pe = pads[:n], pads[n:]

    def run(self, inputs, out=None):
        x = self.float32(inputs[0])
        idx = inputs[1]
        requested = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
        shape = tuple((i - 1) * s + k - b - e for i, s, k, b, e in zip(
            x.shape[2:], self.strides, self.kernel, self.pb, self.pe))
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
                full = np.zeros(x.shape[:2] + want, np.float32)
                region = tuple(slice(0, min(a, b)) for a, b in zip(shape, want))
                full[(slice(None), slice(None)) + region] = y[(slice(None), slice(None))
                                                              + region]
                y = full
        return [y]
