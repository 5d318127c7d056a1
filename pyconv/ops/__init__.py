"""ONNX operators: one module per family, registered by ONNX type.

``lookup("Conv")`` gives the operator class; an instance is built once per node
(attributes validated, constant inputs prepared: weights packed) and run many times.
The convolution, pooling, resize and normalisation operators run the same code as
:mod:`pyconv.functional`.
"""
from pyconv.ops._base import REQUIRED, Node, Op, lookup, register, registered_ops
from pyconv.ops import (activation, conv, elementwise, fused, linalg, logic, norm,  # noqa: F401
                        pool, quant, recurrent, reduce, resize, tensor)

__all__ = ["Node", "Op", "REQUIRED", "lookup", "register", "registered_ops"]
