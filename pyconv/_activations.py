"""The activations of the fused epilogue: one registry for the kernels' enum mirror, the
fusion pass, the ONNX operators and the functional layer.

The C enum ``pyconv_act`` (``src/kernels/sgemm.h``) is the list of what the kernels
compute; :mod:`pyconv._ext.gemm` mirrors it by name (``PYCONV_ACT_RELU`` is
``"relu"``). Each entry here adds what Python needs: the ONNX operator computing the
activation and how that operator's attributes, with their ONNX defaults, become the
epilogue's two parameters ``(alpha, beta)``.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from pyconv._ext import gemm

__all__ = ["Activation", "ACTIVATIONS", "ONNX_ACTIVATIONS", "onnx_activation",
           "epilogue_params"]


class Activation(NamedTuple):
    """One activation of the fused epilogue.

    Attributes
    ----------
    name : str
        The epilogue's name, as the kernels take it (``activation="leaky_relu"``).
    onnx_type : str or None
        The ONNX operator computing it (None: none does).
    alpha, beta : (str, float) or None
        The ONNX attribute giving the epilogue's ``alpha`` / ``beta`` and its ONNX
        default; None where the parameter is unused (0).
    inputs_since : int or None
        From this opset on, ``alpha`` and ``beta`` are the node's optional inputs 1
        and 2 instead of attributes (Clip from opset 11).
    variant : (str, str) or None
        For an ONNX operator that computes several entries: the string attribute and
        the value selecting this one (Gelu's ``approximate``: ``"none"`` is ``gelu``,
        ``"tanh"`` is ``gelu_tanh``); the first entry of a type holds the default.
    """

    name: str
    onnx_type: str | None = None
    alpha: tuple[str, float] | None = None
    beta: tuple[str, float] | None = None
    inputs_since: int | None = None
    variant: tuple[str, str] | None = None

    @property
    def code(self) -> int:
        """The value of ``PYCONV_ACT_<NAME>`` in the C enum."""
        return gemm.ACTIVATIONS[self.name]

    @property
    def onnx_attributes(self) -> dict:
        """ONNX attribute name -> ONNX default, as an operator declares its attributes."""
        attrs = dict(p for p in (self.alpha, self.beta) if p is not None)
        if self.variant is not None:
            attrs[self.variant[0]] = ONNX_ACTIVATIONS[self.onnx_type].variant[1]
        return attrs

    def takes_inputs(self, opset: int) -> bool:
        """Whether ``alpha`` / ``beta`` are the node's inputs 1 and 2 at this opset."""
        return self.inputs_since is not None and opset >= self.inputs_since

    def params(self, values=None) -> tuple[float, float]:
        """The epilogue's ``(alpha, beta)`` from ONNX values by name.

        Parameters
        ----------
        values : mapping, optional
            ONNX attribute (or, see :meth:`takes_inputs`, input) name -> number; absent
            or None values take the ONNX defaults.

        Returns
        -------
        (float, float)
        """
        values = values or {}
        result = []
        for param in (self.alpha, self.beta):
            if param is None:
                result.append(0.0)
            else:
                value = values.get(param[0])
                result.append(float(param[1] if value is None else value))
        return result[0], result[1]


#: Every activation of the epilogue by name; the C enum has exactly these (tested).
ACTIVATIONS = {a.name: a for a in (
    Activation("none"),
    Activation("relu", "Relu"),
    Activation("clip", "Clip", ("min", -math.inf), ("max", math.inf), inputs_since=11),
    Activation("leaky_relu", "LeakyRelu", ("alpha", 0.01)),
    Activation("sigmoid", "Sigmoid"),
    Activation("hardsigmoid", "HardSigmoid", ("alpha", 0.2), ("beta", 0.5)),
    Activation("hardswish", "HardSwish"),
    Activation("tanh", "Tanh"),
    Activation("silu"),
    Activation("elu", "Elu", ("alpha", 1.0)),
    # GELU: one C function per ONNX form (the exact erf form and the tanh approximation),
    # one ONNX operator (Gelu, opset 20) with the form as its `approximate` attribute.
    Activation("gelu", "Gelu", variant=("approximate", "none")),
    Activation("gelu_tanh", "Gelu", variant=("approximate", "tanh")),
    Activation("mish", "Mish"),
    Activation("softplus", "Softplus"),
    Activation("selu", "Selu", ("alpha", 1.67326319217681884765625),
               ("gamma", 1.05070102214813232421875)),
)}

#: The default activation of each ONNX operator, by ONNX type (its first entry).
ONNX_ACTIVATIONS = {}
for _a in ACTIVATIONS.values():
    if _a.onnx_type:
        ONNX_ACTIVATIONS.setdefault(_a.onnx_type, _a)
del _a


def onnx_activation(op_type, attrs=None):
    """The entry an ONNX node computes (its type, and for Gelu the ``approximate``
    attribute), or None: not an activation, or an attribute value no entry has.

    Parameters
    ----------
    op_type : str
    attrs : mapping, optional
        The node's attributes by name (absent ones take the ONNX default).
    """
    default = ONNX_ACTIVATIONS.get(op_type)
    if default is None or default.variant is None:
        return default
    key, _ = default.variant
    value = (attrs or {}).get(key)
    value = default.variant[1] if value is None else value
    if isinstance(value, bytes):
        value = value.decode()
    for a in ACTIVATIONS.values():
        if a.onnx_type == op_type and a.variant == (key, value):
            return a
    return None


def epilogue_params(op, activation, act_alpha=0.0, act_beta=0.0):
    """``(activation, alpha, beta)`` of a plan's fused epilogue, checked: ``activation``
    an entry of :data:`ACTIVATIONS` or None (bias only).

    Raises
    ------
    InvalidArgument
        On an unknown activation, naming ``op``.
    """
    if activation is not None and activation not in ACTIVATIONS:
        from pyconv.errors import InvalidArgument
        raise InvalidArgument(f"{op}: activation must be one of {sorted(ACTIVATIONS)}, got "
                              f"{activation!r}")
    return activation, float(act_alpha), float(act_beta)
