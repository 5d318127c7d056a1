"""The activation registry (pyconv._activations) agrees with the C enum of the kernels,
and the ONNX operators and the ConvPlan take their names and defaults from it. (Every
entry fused vs unfused: tests/graph/test_passes.py.) The element-wise ops on the engine
against onnxruntime and the ONNX reference evaluator, and convolutions fused with the
new activations against unfused onnxruntime."""
import os
import re

import numpy as np
import pytest
from onnx import helper

import pyconv
import pyconv.functional as F
from pyconv._activations import ACTIVATIONS, ONNX_ACTIVATIONS, onnx_activation
from pyconv._ext import gemm
from pyconv.errors import InvalidArgument, InvalidModel
from pyconv.ops import lookup
from tests.graph import _build as B
import reference as R

SGEMM_H = os.path.join(os.path.dirname(__file__), "..", "src", "kernels", "sgemm.h")


def c_enum():
    """``enum pyconv_act`` as written in sgemm.h: {'relu': 1, ...}, without the count."""
    with open(SGEMM_H) as f:
        body = re.search(r"enum pyconv_act\s*\{(.*?)\};", f.read(), re.S).group(1)
    members = dict(re.findall(r"PYCONV_ACT_(\w+)\s*=\s*(\d+)", body))
    count = int(members.pop("COUNT"))
    enum = {name.lower(): int(value) for name, value in members.items()}
    assert sorted(enum.values()) == list(range(count))
    return enum


def test_registry_and_c_enum_agree():
    enum = c_enum()
    assert {a.name: a.code for a in ACTIVATIONS.values()} == enum
    assert gemm.ACTIVATIONS == enum        # the Cython mirror, by name from the extern enum


@pytest.mark.parametrize("act", ONNX_ACTIVATIONS.values(), ids=lambda a: a.onnx_type)
def test_onnx_operators_take_the_registry_defaults(rng, act):
    op = lookup(act.onnx_type)
    if not act.takes_inputs(99):
        assert op.attributes == act.onnx_attributes
    x = B.rand(rng, 2, 3, 4)
    m = B.model([helper.make_node(act.onnx_type, ["x"], ["y"])], [("x", [2, 3, 4])],
                [("y", [2, 3, 4])])
    got = pyconv.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    want = gemm.apply_activation(x.copy(), act.name, *act.params())
    np.testing.assert_array_equal(got, want)


def test_params_take_onnx_defaults_for_absent_or_none_values():
    act = ACTIVATIONS["hardsigmoid"]
    assert act.params() == (0.2, 0.5)
    assert act.params({"alpha": 0.3, "beta": None}) == (0.3, 0.5)
    assert ACTIVATIONS["clip"].params({"max": 6}) == (-np.inf, 6.0)
    assert ACTIVATIONS["relu"].params({"alpha": 3.0}) == (0.0, 0.0)


def test_conv_plan_checks_the_activation_name(rng):
    with pytest.raises(InvalidArgument, match=r"conv: activation must be one of .*'gelu'"):
        F.ConvPlan(B.rand(rng, 2, 2, 1, 1), activation="swish2")


def test_gelu_variants_follow_the_approximate_attribute():
    assert onnx_activation("Gelu", {}) is ACTIVATIONS["gelu"]
    assert onnx_activation("Gelu", {"approximate": "none"}) is ACTIVATIONS["gelu"]
    assert onnx_activation("Gelu", {"approximate": b"tanh"}) is ACTIVATIONS["gelu_tanh"]
    assert onnx_activation("Gelu", {"approximate": "erf"}) is None
    assert onnx_activation("Relu", {}) is ACTIVATIONS["relu"]
    assert onnx_activation("Conv", {}) is None
    m = B.model([helper.make_node("Gelu", ["x"], ["y"], approximate="sigmoid")],
                [("x", [2, 3])], [("y", [2, 3])], opset=20)
    with pytest.raises(InvalidModel, match="approximate.*'sigmoid'"):
        pyconv.InferenceSession(m.SerializeToString())


# (op type, attributes, opset, input transform): the element-wise ops on the engine.
UNARY_OPS = [
    ("Erf", {}, 13, None), ("Gelu", {}, 20, None), ("Gelu", {"approximate": "tanh"}, 20, None),
    ("Mish", {}, 18, None), ("Softplus", {}, 17, None), ("Selu", {}, 17, None),
    ("Selu", {"alpha": 1.5, "gamma": 2.0}, 17, None), ("Elu", {"alpha": 0.7}, 17, None),
    ("Sigmoid", {}, 17, None), ("Tanh", {}, 17, None), ("HardSwish", {}, 17, None),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, 17, None), ("LeakyRelu", {}, 17, None),
    ("Relu", {}, 17, None), ("Exp", {}, 17, None), ("Neg", {}, 17, None),
    ("Abs", {}, 17, None), ("Reciprocal", {}, 17, None), ("Log", {}, 17, np.abs),
    ("Sqrt", {}, 17, np.abs),
]


@pytest.mark.parametrize("op_type,attrs,opset,transform", UNARY_OPS,
                         ids=lambda v: v if isinstance(v, str) else "")
def test_unary_ops_match_onnxruntime_and_the_reference_evaluator(rng, op_type, attrs, opset,
                                                                 transform):
    from onnx.reference import ReferenceEvaluator
    shape = [2, 5, 37, 29]          # rows that are not a multiple of any vector width
    x = B.rand(rng, *shape, scale=4.0)
    if transform is not None:
        x = transform(x).astype(np.float32)
    m = B.model([helper.make_node(op_type, ["x"], ["y"], **attrs)], [("x", shape)],
                [("y", shape)], opset=opset)
    sess = pyconv.InferenceSession(m.SerializeToString())
    got = sess.run(None, {"x": x})[0]
    again = sess.run(None, {"x": x})[0]       # the planned run, through the bound step
    np.testing.assert_array_equal(got, again)
    ort = B.ort_run(m, {"x": x})[0]
    ref = ReferenceEvaluator(m).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ort, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


BINARY_CASES = [
    ("Add", [2, 8, 9, 11], [8, 1, 1]), ("Mul", [2, 8, 9, 11], [1, 8, 1, 1]),
    ("Sub", [2, 8, 9, 11], [2, 8, 9, 11]), ("Div", [2, 8, 9, 11], []),
    ("Add", [], [2, 8, 9, 11]), ("Mul", [2, 8, 9, 11], [11]), ("Sub", [8, 1, 1], [2, 8, 9, 11]),
    ("Max", [2, 8, 9, 11], [8, 1, 1]), ("Min", [2, 8, 9, 11], []),
    ("Pow", [2, 8, 9, 11], []), ("Add", [2, 8, 1, 11], [1, 1, 9, 1]),   # NumPy fallback
]


@pytest.mark.parametrize("op_type,sa,sb", BINARY_CASES, ids=str)
@pytest.mark.parametrize("const", [False, True], ids=["input", "initializer"])
def test_binary_ops_match_onnxruntime(rng, op_type, sa, sb, const):
    from onnx.reference import ReferenceEvaluator
    a = np.asarray(B.rand(rng, *sa))
    b = np.asarray(B.rand(rng, *sb))
    if op_type == "Pow":
        a = np.abs(a) + np.float32(0.5)
    out = list(np.broadcast_shapes(tuple(sa), tuple(sb)))
    inputs, inits, feeds = [("a", sa)], {}, {"a": a}
    if const:
        inits["b"] = b
    else:
        inputs.append(("b", sb))
        feeds["b"] = b
    m = B.model([helper.make_node(op_type, ["a", "b"], ["y"])], inputs, [("y", out)], inits)
    sess = pyconv.InferenceSession(m.SerializeToString())
    got = sess.run(None, feeds)[0]
    np.testing.assert_array_equal(got, sess.run(None, feeds)[0])
    np.testing.assert_allclose(got, B.ort_run(m, feeds)[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got, ReferenceEvaluator(m).run(None, feeds)[0], rtol=1e-6,
                               atol=1e-6)


def test_pow_fast_exponents_match_numpy(rng):
    x = B.rand(rng, 3, 50)
    for e in (2.0, 0.5):
        m = B.model([helper.make_node("Pow", ["x", "e"], ["y"])], [("x", [3, 50])],
                    [("y", [3, 50])], {"e": np.array(e, np.float32)})
        got = pyconv.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
        with np.errstate(invalid="ignore"):
            np.testing.assert_array_equal(got, np.power(x, np.float32(e)))


@pytest.mark.parametrize("op_type,attrs,opset", [
    ("Gelu", {}, 20), ("Gelu", {"approximate": "tanh"}, 20), ("Mish", {}, 18),
    ("Tanh", {}, 17), ("Softplus", {}, 17), ("Selu", {}, 17), ("Sigmoid", {}, 17)],
    ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("depthwise", [False, True], ids=["dense", "depthwise"])
def test_conv_fused_with_activation_matches_unfused_onnxruntime(rng, op_type, attrs, opset,
                                                                depthwise):
    import onnxruntime as ort
    c = 8
    w = B.rand(rng, c, 1 if depthwise else c, 3, 3, scale=0.5)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["h"], pads=[1, 1, 1, 1],
                              group=c if depthwise else 1),
             helper.make_node(op_type, ["h"], ["y"], **attrs)]
    m = B.model(nodes, [("x", [1, c, 13, 17])], [("y", [1, c, 13, 17])],
                {"w": w, "b": B.rand(rng, c)}, opset=opset)
    x = B.rand(rng, 1, c, 13, 17, scale=2.0)
    sess = pyconv.InferenceSession(m.SerializeToString())
    assert B.op_types(sess) == ["FusedConv"]    # the activation is in the epilogue
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(m.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = sess.run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,call,torch_like", [
    ("gelu", lambda x: F.gelu(x), lambda x: R.unary("gelu", x)),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), lambda x: R.unary("gelu_tanh", x)),
    ("mish", lambda x: F.mish(x), lambda x: R.unary("mish", x)),
    ("softplus", lambda x: F.softplus(x), lambda x: R.unary("softplus", x)),
    ("softplus_beta", lambda x: F.softplus(x, beta=2.0, threshold=5.0),
     lambda x: np.where(2 * x > 5, x, R.unary("softplus", 2 * x) / 2)),
    ("selu", lambda x: F.selu(x), lambda x: R.unary("selu", x, 1.6732632423543772,
                                                      1.0507009873554805)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_functional_activations(rng, name, call, torch_like):
    x = B.rand(rng, 3, 4, 5, scale=4.0)
    np.testing.assert_allclose(call(x), torch_like(x.astype(np.float64)), rtol=2e-6,
                               atol=1e-7)


def test_functional_gelu_checks_the_form(rng):
    with pytest.raises(InvalidArgument, match="approximate must be 'none' or 'tanh'"):
        F.gelu(B.rand(rng, 3), approximate="sigmoid")
    with pytest.raises(InvalidArgument, match="beta must not be 0"):
        F.softplus(B.rand(rng, 3), beta=0)


def test_inplace_activation_on_strided_view(rng):
    x = B.rand(rng, 6, 8)
    want = R.unary("mish", x.astype(np.float64))[:, ::2]
    view = x[:, ::2]
    assert F.mish(view, inplace=True) is view
    np.testing.assert_allclose(x[:, ::2], want, rtol=2e-6, atol=1e-7)
