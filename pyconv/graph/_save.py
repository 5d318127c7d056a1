"""Saving: a :class:`Graph` (after the passes) back to an ONNX ``ModelProto``.

What ``SessionOptions.optimized_model_filepath`` writes. Nodes the passes made in the
``pyconv`` domain (FusedConv, ChannelAffine, ...) keep their domain, declared by an
opset import, so the file loads back into pyconv; a graph with only standard ops (levels
``ORT_DISABLE_ALL`` / ``ORT_ENABLE_BASIC``) also loads into onnxruntime.
"""
from __future__ import annotations

import numpy as np

from pyconv.errors import InvalidArgument

#: Version of the ``pyconv`` operator domain declared in saved models.
PYCONV_DOMAIN_VERSION = 1


def _attribute(name, value, where):
    from onnx import AttributeProto, helper, numpy_helper
    if isinstance(value, AttributeProto):          # subgraphs are kept as loaded
        return value
    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, numpy_helper.from_array(value))
    if isinstance(value, (list, tuple)):
        if not value:                              # the loader cannot tell the type: ints
            return helper.make_attribute(name, [], attr_type=AttributeProto.INTS)
        if isinstance(value[0], np.ndarray):
            return helper.make_attribute(name, [numpy_helper.from_array(v) for v in value])
    if isinstance(value, np.generic):
        value = value.item()
    try:
        return helper.make_attribute(name, value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{where}: attribute '{name}' ({type(value).__name__}) cannot "
                              f"be written to ONNX: {exc}") from None


def _value_info(v):
    from onnx import helper
    shape = None if v.shape is None else [d if isinstance(d, (int, str)) else None
                                          for d in v.shape]
    return helper.make_tensor_value_info(v.name, v.elem_type, shape)


def to_model(graph, opset_imports, ir_version, producer="pyconv"):
    """The graph as a ``ModelProto``.

    Parameters
    ----------
    graph : Graph
    opset_imports : list of (domain, version)
        The source model's imports; ``("pyconv", 1)`` is added when a node needs it.
    ir_version : int
    """
    from onnx import helper, numpy_helper
    nodes = []
    for n in graph.nodes:
        node = helper.make_node(n.op_type, n.inputs, n.outputs, name=n.name,
                                domain=n.domain or None)
        node.attribute.extend(_attribute(k, v, n.label) for k, v in n.attrs.items())
        nodes.append(node)
    initializers = []
    for name, value in graph.constants.items():
        try:
            initializers.append(numpy_helper.from_array(np.asarray(value), name))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InvalidArgument(f"constant '{name}' ({type(value).__name__}) cannot be "
                                  f"written to ONNX: {exc}") from None
    proto_graph = helper.make_graph(nodes, graph.name or "pyconv_optimized",
                                    [_value_info(v) for v in graph.inputs],
                                    [_value_info(v) for v in graph.outputs], initializers)
    imports = {d if d != "ai.onnx" else "": v for d, v in opset_imports}
    if any(n.domain == "pyconv" for n in graph.nodes):
        imports.setdefault("pyconv", PYCONV_DOMAIN_VERSION)
    model = helper.make_model(proto_graph, producer_name=producer, opset_imports=[
        helper.make_opsetid(d, v) for d, v in imports.items()])
    model.ir_version = ir_version
    return model
