"""``onnx.backend.base.Backend`` over :class:`pyconv.InferenceSession`.

Lets the ONNX conformance suite (``onnx.backend.test.BackendTest``) and other tools
written against the backend API run pyconv::

    import pyconv.backend as backend
    rep = backend.prepare(model, "CPU")
    outputs = rep.run([x])
"""
from __future__ import annotations

import numpy as np
from onnx import helper
from onnx.backend.base import Backend, BackendRep

from pyconv.errors import InvalidArgument
from pyconv.session import InferenceSession, SessionOptions

__all__ = ["PyconvBackend", "PyconvRep", "prepare", "run_model", "run_node",
           "supports_device", "is_compatible"]


class PyconvRep(BackendRep):
    """A prepared model: ``run(inputs)`` with a list (graph input order), a dict or one
    array; returns a list of arrays in graph output order."""

    def __init__(self, session):
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            feed = dict(inputs)
        elif isinstance(inputs, np.ndarray):
            feed = {self.input_names[0]: inputs} if self.input_names else {}
        else:
            inputs = list(inputs)
            if len(inputs) > len(self.input_names):
                raise InvalidArgument(f"got {len(inputs)} inputs, the model has "
                                      f"{len(self.input_names)}: {self.input_names}")
            feed = dict(zip(self.input_names, inputs))
        return self.session.run(None, feed)


class PyconvBackend(Backend):
    """The pyconv backend: CPU only."""

    @classmethod
    def is_compatible(cls, model, device="CPU", **kwargs):
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        """Creates an :class:`InferenceSession` for ``model`` (ModelProto, bytes or path).

        Keyword arguments naming :class:`SessionOptions` attributes are applied."""
        if not cls.supports_device(device):
            raise InvalidArgument(f"pyconv runs on the CPU only, got device {device!r}")
        opts = SessionOptions()
        for k, v in kwargs.items():
            if hasattr(opts, k):
                setattr(opts, k, v)
        return PyconvRep(InferenceSession(model, opts))

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device="CPU", outputs_info=None, **kwargs):
        """Runs one NodeProto on ``inputs`` (arrays in the node's input order)."""
        from onnx import defs, numpy_helper
        names = [n for n in node.input if n]
        inputs = [np.asarray(x) for x in inputs]
        graph_inputs = [helper.make_tensor_value_info(
            n, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
            for n, x in zip(names, inputs)]
        outs = [helper.make_tensor_value_info(o, 0, None) for o in node.output if o]
        graph = helper.make_graph([node], "run_node", graph_inputs, outs)
        opset = kwargs.pop("opset_version", defs.onnx_opset_version())
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  ir_version=8)
        del numpy_helper
        return cls.run_model(model, inputs, device, **kwargs)

    @classmethod
    def supports_device(cls, device):
        return str(device).upper().startswith("CPU")


prepare = PyconvBackend.prepare
run_model = PyconvBackend.run_model
run_node = PyconvBackend.run_node
supports_device = PyconvBackend.supports_device
is_compatible = PyconvBackend.is_compatible
