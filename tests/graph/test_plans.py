"""The conv-family ops on their plans (create in setup -> reshape per input shape -> run
or a bound step): a session with dynamic spatial dims meets several shapes, with and
without the memory planner's bound steps, against the ONNX reference evaluator."""
import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import pyconv
from pyconv import GraphOptimizationLevel as L
from tests.graph import _build as B


def conv_family_model(rng, dims):
    """Conv (SAME_LOWER, stride 2) + Relu -> MaxPool (ceil_mode) -> ConvTranspose
    (auto_pad SAME_UPPER) -> AveragePool (count_include_pad) -> GlobalAveragePool, and a
    GlobalMaxPool and an LpPool on the side; input dims ``dims`` (names: dynamic)."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], strides=[2, 2],
                         auto_pad="SAME_LOWER"),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["m"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 0, 1, 1], ceil_mode=1),
        helper.make_node("ConvTranspose", ["m", "w2"], ["t"], strides=[2, 2],
                         auto_pad="SAME_UPPER"),
        helper.make_node("AveragePool", ["t"], ["a"], kernel_shape=[2, 3], pads=[1, 1, 0, 1],
                         count_include_pad=1),
        helper.make_node("GlobalAveragePool", ["a"], ["g"]),
        helper.make_node("GlobalMaxPool", ["t"], ["gm"]),
        helper.make_node("LpPool", ["m"], ["lp"], kernel_shape=[2, 2], p=3),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
         for name in ("a", "g", "gm", "lp")],
        [helper.make_tensor(k, TensorProto.FLOAT, v.shape, v.ravel()) for k, v in {
            "w1": B.rand(rng, 6, 3, 3, 3), "b1": B.rand(rng, 6),
            "w2": B.rand(rng, 6, 4, 3, 3)}.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("level", [L.ORT_DISABLE_ALL, L.ORT_ENABLE_ALL])
@pytest.mark.parametrize("dims", [[1, 3, "H", "W"], [1, 3, 17, 14]], ids=["dynamic", "static"])
def test_conv_family_plans_meet_several_shapes(level, dims):
    rng = np.random.default_rng(3)
    m = conv_family_model(rng, dims)
    ref = ReferenceEvaluator(m)
    opts = pyconv.SessionOptions()
    opts.graph_optimization_level = level
    s = pyconv.InferenceSession(m, opts)
    shapes = [(1, 3, 17, 14), (1, 3, 9, 9), (1, 3, 17, 14), (1, 3, 12, 21)]
    for shape in shapes if isinstance(dims[2], str) else [tuple(dims)]:
        x = B.rand(rng, *shape)
        want = ref.run(None, {"x": x})
        for _ in range(2):                  # the first run records, the second is planned
            got = s.run(None, {"x": x})
            for name, g, w in zip(("a", "g", "gm", "lp"), got, want):
                assert g.shape == w.shape, name
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=name)
