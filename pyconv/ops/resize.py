"""Resize (opsets 10-19) and Upsample (7-9): both run :func:`pyconv.functional.resize`."""
from __future__ import annotations

import numpy as np

from pyconv import functional as F
from pyconv.functional._resize import bind_resize
from pyconv.errors import PyconvError
from pyconv.ops._base import Op, register, wrap_errors


def _present(inputs, i):
    return len(inputs) > i and inputs[i] is not None and inputs[i].size > 0


@register("Resize")
class Resize(Op):
    supports_out = True        # the bound C kernels write into the planned buffer
    attributes = {"mode": "nearest", "coordinate_transformation_mode": "half_pixel",
                  "nearest_mode": "round_prefer_floor", "cubic_coeff_a": -0.75,
                  "exclude_outside": 0, "extrapolation_value": 0.0, "antialias": 0,
                  "axes": None, "keep_aspect_ratio_policy": "stretch"}

    def setup(self, consts):
        self.consts = consts

    def _arguments(self, shape, inputs):
        """(sizes, scales, roi) over every axis of an input of ``shape``, from the inputs
        and attributes (opset 10's scales input; 11+ roi, scales or sizes, axes and
        keep_aspect_ratio_policy)."""
        a = self.attrs
        r = len(shape)
        if self.opset < 11:
            # Opset 10: (X, scales); coordinates asymmetric, nearest rounds down.
            return None, [float(s) for s in inputs[1]], None
        roi = inputs[1] if _present(inputs, 1) else None
        scales = [float(s) for s in inputs[2]] if _present(inputs, 2) else None
        sizes = [int(s) for s in inputs[3]] if _present(inputs, 3) else None
        if (scales is None) == (sizes is None):
            self.fail("exactly one of scales and sizes must be given")
        axes = list(range(r)) if a["axes"] is None else [self.check_axis(v, r)
                                                          for v in a["axes"]]
        given = scales if scales is not None else sizes
        if len(given) != len(axes):
            self.fail(f"{'scales' if sizes is None else 'sizes'} {given} must have "
                      f"{len(axes)} values (input shape {tuple(shape)})")
        if roi is not None:
            roi = [float(v) for v in roi]
            if len(roi) == 2 * len(axes) and len(axes) != r:
                full = [0.0] * r + [1.0] * r
                for i, d in enumerate(axes):
                    full[d], full[r + d] = roi[i], roi[len(axes) + i]
                roi = full
        full_scales = None
        full_sizes = None
        if scales is not None:
            full_scales = [1.0] * r
            for i, d in enumerate(axes):
                full_scales[d] = scales[i]
        else:
            full_sizes = list(shape)
            for i, d in enumerate(axes):
                full_sizes[d] = sizes[i]
            policy = str(a["keep_aspect_ratio_policy"])
            if policy != "stretch":
                ratios = [full_sizes[d] / shape[d] for d in axes]
                if policy == "not_larger":
                    s = min(ratios)
                elif policy == "not_smaller":
                    s = max(ratios)
                else:
                    self.fail(f"keep_aspect_ratio_policy must be stretch, not_larger or "
                              f"not_smaller, got {policy!r}")
                full_scales = [s if d in axes else 1.0 for d in range(r)]
                full_sizes = [int(s * shape[d] + 0.5) if d in axes else shape[d]
                              for d in range(r)]
        return full_sizes, full_scales, roi

    def _modes(self):
        """(coordinate_transformation_mode, nearest_mode) as this opset reads them."""
        a = self.attrs
        if self.opset < 11:
            return "asymmetric", "floor"
        return a["coordinate_transformation_mode"], a["nearest_mode"]

    def run(self, inputs, out=None):
        x = inputs[0]
        a = self.attrs
        sizes, scales, roi = self._arguments(x.shape, inputs)
        ctm, nearest = self._modes()
        return [wrap_errors(self, F.resize, x, sizes, scales, a["mode"], ctm, nearest,
                            a["cubic_coeff_a"], bool(a["exclude_outside"]),
                            a["extrapolation_value"], bool(a["antialias"]), roi,
                            context=self.context)]

    def bind(self, specs, out):
        """The C kernels bound to the planned float32 input shape when every other input
        is a constant; None where ``run`` must decide."""
        if specs[0] is None or specs[0][1] != np.float32:
            return None
        if any(i not in self.consts for i in range(1, len(self.node.inputs))
               if self.node.inputs[i]):
            return None                 # scales or sizes computed at run time
        a = self.attrs
        shape = tuple(specs[0][0])
        inputs = [None] + [self.consts.get(i) for i in range(1, len(self.node.inputs))]
        try:
            sizes, scales, roi = self._arguments(shape, inputs)
            ctm, nearest = self._modes()
            call = bind_resize(shape, sizes, scales, a["mode"], ctm, nearest,
                               bool(a["antialias"]), bool(a["exclude_outside"]), roi,
                               context=self.context, out=out)
        except PyconvError:
            return None                 # the run reports it
        if call is None:
            return None
        run = self.run

        def step(inputs):
            y = call(inputs[0])
            return [y] if y is not None else run(inputs)
        return step


@register("Upsample")
class Upsample(Op):
    """Upsample: scales an attribute in opset 7, an input from 9; asymmetric coordinates,
    nearest rounds down ("bilinear" is accepted for "linear")."""
    required_inputs = staticmethod(lambda opset: 2 if opset >= 9 else 1)
    attributes = {"mode": "nearest", "scales": None}

    def run(self, inputs, out=None):
        x = inputs[0]
        scales = self.attrs["scales"] if self.opset < 9 else inputs[1]
        if scales is None:
            self.fail("scales is required")
        scales = [float(s) for s in np.asarray(scales).reshape(-1)]
        mode = str(self.attrs["mode"])
        mode = "linear" if mode == "bilinear" else mode
        return [wrap_errors(self, F.resize, x, None, scales, mode, "asymmetric", "floor",
                            context=self.context)]
