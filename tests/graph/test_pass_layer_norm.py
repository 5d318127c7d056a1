"""The decomposed layer norm exporters write (ReduceMean / Sub / Pow / ReduceMean / Add /
Sqrt / Div, then Mul / Add) becomes one LayerNormalization exactly when it computes the
same thing; outputs match onnxruntime on the original graph at every level."""
import numpy as np
import pytest
from onnx import helper, numpy_helper

from pyconv.graph import _passes
from pyconv.graph._load import load
from pyconv.ops import lookup
from tests.graph import _build as B
from tests.graph.test_passes import L, check_unchanged, ort, session


@pytest.fixture
def rng():
    return np.random.default_rng(5)


def decomposed(rng, shape=(2, 5, 8), axes=(-1,), opset=13, square="pow", inv="div",
               scale=True, bias=True, exponent=2.0, eps_input=False, extra_output=None):
    """torch's TorchScript export of nn.LayerNorm (opset < 17), with variants."""
    nodes, inits = [], {}

    def mean(src, dst):
        if opset >= 18:
            inits["axes"] = np.array(axes, np.int64)
            return helper.make_node("ReduceMean", [src, "axes"], [dst])
        return helper.make_node("ReduceMean", [src], [dst], axes=list(axes))

    nodes += [mean("x", "mu"), helper.make_node("Sub", ["x", "mu"], ["d"])]
    if square == "pow":
        inits["p"] = np.array(exponent, np.float32)
        nodes.append(helper.make_node("Pow", ["d", "p"], ["sq"]))
    else:
        nodes.append(helper.make_node("Mul", ["d", "d"], ["sq"]))
    nodes += [mean("sq", "var"), helper.make_node("Add", ["var", "eps"], ["ve"]),
              helper.make_node("Sqrt", ["ve"], ["sd"])]
    inputs = [("x", ["N"] + list(shape[1:]))]
    if eps_input:
        inputs.append(("eps", []))
    else:
        inits["eps"] = np.array(1e-5, np.float32)
    if inv == "div":
        nodes.append(helper.make_node("Div", ["d", "sd"], ["n"]))
    else:
        nodes += [helper.make_node("Reciprocal", ["sd"], ["r"]),
                  helper.make_node("Mul", ["d", "r"], ["n"])]
    last = "n"
    k = len(axes)
    if scale:
        inits["g"] = B.rand(rng, *shape[-k:])
        nodes.append(helper.make_node("Mul", ["g", last], ["m"]))
        last = "m"
    if bias:
        inits["b"] = B.rand(rng, *shape[-k:])
        nodes.append(helper.make_node("Add", [last, "b"], ["a"]))
        last = "a"
    nodes.append(helper.make_node("Relu", [last], ["y"]))
    outputs = [("y", None)] + ([(extra_output, None)] if extra_output else [])
    return B.model(nodes, inputs, outputs, inits, opset=opset)


def feeds_for(rng, m, shape, eps=False):
    f = {"x": B.rand(rng, *shape, scale=3.0) + 1.0}
    if eps:
        f["eps"] = np.array(1e-5, np.float32)
    return f


@pytest.mark.parametrize("kw", [
    {}, {"square": "mul"}, {"opset": 18}, {"scale": False, "bias": False},
    {"bias": False}, {"axes": (-2, -1)}, {"axes": (1, 2)}, {"shape": (2, 3, 4, 6)},
])
def test_fused_into_layer_norm(rng, kw):
    shape = kw.pop("shape", (2, 5, 8))
    m = decomposed(rng, shape=shape, **kw)
    s = check_unchanged(m, feeds_for(rng, m, (3,) + shape[1:]))
    assert B.op_types(s) == ["LayerNormalization", "Relu"]


@pytest.mark.parametrize("kw", [
    {"exponent": 4.0},                  # not a square
    {"axes": (1,)},                     # not the trailing axes (channels-first norm)
    {"eps_input": True},                # eps known only at run time
    {"extra_output": "d"},              # an intermediate value is also used elsewhere
    {"extra_output": "var"},
])
def test_not_fused_unless_equivalent(rng, kw):
    """Checked against onnxruntime without its optimizer: onnxruntime 1.32's own layer
    norm fusion ignores the exponent (it turns Pow(d, 4) into a layer norm)."""
    shape = (2, 5, 8)
    m = decomposed(rng, shape=shape, **kw)
    feeds = feeds_for(rng, m, (3,) + shape[1:], kw.get("eps_input", False))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(m.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"]).run(None, feeds)
    s = session(m, L.ORT_ENABLE_ALL)
    for got, ref in zip(s.run(None, feeds), want):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert "LayerNormalization" not in B.op_types(s)


def test_scale_that_would_broadcast_the_input_up_stays_a_mul(rng):
    """A 'scale' of shape (4, 1, 8) on x (N, 5, 8) enlarges the result: not LN's Scale."""
    m = decomposed(rng, scale=False)
    m.graph.initializer.append(numpy_helper.from_array(B.rand(rng, 4, 1, 8), "g"))
    relu = m.graph.node[-1]
    m.graph.node.insert(len(m.graph.node) - 1, helper.make_node("Mul", ["a", "g"], ["ag"]))
    relu.input[0] = "ag"
    s = check_unchanged(m, feeds_for(rng, m, (4, 5, 8)))
    assert B.op_types(s) == ["LayerNormalization", "Mul", "Relu"]


def test_reciprocal_variant_rewritten(rng):
    """Sqrt -> Reciprocal -> Mul: the pass alone (Reciprocal may not be registered)."""
    m = decomposed(rng, inv="reciprocal")
    graph, _ = load(m)
    _passes.toposort(graph)
    _passes.fold_constants(graph)
    _passes.fuse_layer_norm(graph, {"x": ["N", 5, 8]})
    assert [n.op_type for n in graph.nodes] == ["LayerNormalization", "Relu"]
    ln = graph.nodes[0]
    assert ln.inputs == ["x", "g", "b"] and ln.attrs == {"axis": -1,
                                                         "epsilon": pytest.approx(1e-5)}


@pytest.mark.skipif(lookup("Reciprocal") is None,
                    reason="Reciprocal is not registered yet (element-wise work of issue 14)")
def test_reciprocal_variant_matches_onnxruntime(rng):
    m = decomposed(rng, inv="reciprocal")
    s = check_unchanged(m, feeds_for(rng, m, (3, 5, 8)))
    assert B.op_types(s) == ["LayerNormalization", "Relu"]
