"""Each graph pass fires on a model built for it and leaves the outputs unchanged:
ORT_DISABLE_ALL, ORT_ENABLE_BASIC and ORT_ENABLE_ALL agree with each other and with
onnxruntime."""
import numpy as np
import pytest
from onnx import helper

import pyconv
from pyconv import GraphOptimizationLevel as L
from pyconv._activations import ACTIVATIONS, onnx_activation
from tests.graph import _build as B
from tests.graph import _zoo
from _helpers import flush_denormals

ort = pytest.importorskip("onnxruntime")


def session(m, level=L.ORT_ENABLE_ALL, **kw):
    opts = pyconv.SessionOptions()
    opts.graph_optimization_level = level
    for k, v in kw.items():
        setattr(opts, k, v)
    return pyconv.InferenceSession(m, opts)


def check_unchanged(m, feeds, rtol=1e-4, atol=1e-5):
    """Runs every level and onnxruntime; returns the ENABLE_ALL session."""
    want = B.ort_run(m, feeds)
    sessions = {}
    for level in (L.ORT_DISABLE_ALL, L.ORT_ENABLE_BASIC, L.ORT_ENABLE_ALL):
        sessions[level] = s = session(m, level)
        for _ in range(2):            # the first run records, the second uses the plan
            got = s.run(None, feeds)
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=rtol, atol=atol,
                                           err_msg=f"level {level!r}")
    return sessions[L.ORT_ENABLE_ALL]


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_toposort_orders_a_reversed_graph(rng):
    nodes = [helper.make_node("Relu", ["a"], ["y"]),
             helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1])]
    w = B.rand(rng, 4, 3, 3, 3)
    m = B.model(nodes, [("x", [1, 3, 8, 8])], [("y", [1, 4, 8, 8])], {"w": w})
    feeds = {"x": B.rand(rng, 1, 3, 8, 8)}
    sorted_m = B.model(nodes[::-1], [("x", [1, 3, 8, 8])], [("y", [1, 4, 8, 8])], {"w": w})
    want = B.ort_run(sorted_m, feeds)[0]
    for level in (L.ORT_DISABLE_ALL, L.ORT_ENABLE_ALL):
        s = session(m, level)
        np.testing.assert_allclose(s.run(None, feeds)[0], want, rtol=1e-4, atol=1e-5)


def test_constant_folding(rng):
    nodes = [helper.make_node("Transpose", ["wt"], ["w"], perm=[1, 0, 2, 3]),
             helper.make_node("Mul", ["w", "two"], ["w2"]),
             helper.make_node("Conv", ["x", "w2"], ["y"])]
    m = B.model(nodes, [("x", [1, 3, 6, 6])], [("y", [1, 5, 4, 4])],
                {"wt": B.rand(rng, 3, 5, 3, 3), "two": np.float32(2)})
    s = check_unchanged(m, {"x": B.rand(rng, 1, 3, 6, 6)})
    assert B.op_types(s) == ["FusedConv"] or B.op_types(s) == ["Conv"]
    assert B.op_types(session(m, L.ORT_DISABLE_ALL)) == ["Transpose", "Mul", "Conv"]


@pytest.mark.parametrize("transposed", [False, True])
def test_batchnorm_folded_into_conv(rng, transposed):
    if transposed:
        conv = helper.make_node("ConvTranspose", ["x", "w", "b"], ["c"], group=2,
                                strides=[2, 2], pads=[1, 1, 1, 1])
        w = B.rand(rng, 4, 3, 3, 3)
        shape_out = [1, 6, 9, 9]
    else:
        conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], group=2, pads=[1, 1, 1, 1])
        w = B.rand(rng, 6, 2, 3, 3)
        shape_out = [1, 6, 5, 5]
    nodes = [conv, B.bn_node("c", "y", epsilon=1e-3)]
    m = B.model(nodes, [("x", [1, 4, 5, 5])], [("y", shape_out)],
                {"w": w, "b": B.rand(rng, 6), **B.bn_params(rng, 6)})
    s = check_unchanged(m, {"x": B.rand(rng, 1, 4, 5, 5)})
    assert "BatchNormalization" not in B.op_types(s)
    assert len(s._graph.nodes) == 1


def test_channel_affine_chain_with_activation(rng):
    # Caffe2's BN-then-Scale after a Concat (DenseNet): BN, Mul, Add, Relu -> one node.
    nodes = [helper.make_node("Concat", ["x", "z"], ["c"], axis=1),
             B.bn_node("c", "n"),
             helper.make_node("Mul", ["n", "s"], ["m"]),
             helper.make_node("Add", ["m", "t"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    m = B.model(nodes, [("x", [2, 3, 4, 4]), ("z", [2, 2, 4, 4])], [("y", [2, 5, 4, 4])],
                {"s": B.rand(rng, 5, 1, 1), "t": B.rand(rng, 5, 1, 1), **B.bn_params(rng, 5)})
    s = check_unchanged(m, {"x": B.rand(rng, 2, 3, 4, 4), "z": B.rand(rng, 2, 2, 4, 4)})
    assert B.op_types(s) == ["Concat", "ChannelAffine"]
    # the planned runs call the kernel bound to the shape, scale and shift
    from tests.graph.test_session import bound_steps
    for _ in range(3):
        feeds = {"x": B.rand(rng, 2, 3, 4, 4), "z": B.rand(rng, 2, 2, 4, 4)}
        np.testing.assert_allclose(s.run(None, feeds)[0], B.ort_run(m, feeds)[0], rtol=1e-5,
                                   atol=1e-5)
    assert "ChannelAffine" in bound_steps(s)


def test_per_channel_mul_add_folded_into_conv(rng):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Mul", ["s", "c"], ["m"]),
             helper.make_node("Add", ["m", "t"], ["y"])]
    m = B.model(nodes, [("x", [1, 3, 5, 5])], [("y", [1, 4, 3, 3])],
                {"w": B.rand(rng, 4, 3, 3, 3), "s": B.rand(rng, 1, 4, 1, 1),
                 "t": B.rand(rng, 4, 1, 1)})
    s = check_unchanged(m, {"x": B.rand(rng, 1, 3, 5, 5)})
    assert B.op_types(s) == ["Conv"]


def _activation_cases():
    """(ONNX type, attributes, extra inputs, opset) of every activation of the registry
    that an ONNX operator computes: with its ONNX defaults and with other values."""
    cases = []
    for act in ACTIVATIONS.values():
        if not act.onnx_type:
            continue
        if act.inputs_since is not None:       # Clip: bounds as inputs, then attributes
            cases += [(act.onnx_type, {}, ["lo", "hi"], 17),
                      (act.onnx_type, {}, ["", "hi"], 17),
                      (act.onnx_type, {}, [], act.inputs_since - 1),
                      (act.onnx_type, {"min": -0.5, "max": 0.8}, [], act.inputs_since - 1)]
            continue
        opset = ACTIVATION_OPSETS.get(act.onnx_type, 17)
        variant = dict([act.variant]) if act.variant else {}     # Gelu's approximate
        cases.append((act.onnx_type, variant, [], opset))
        params = [p[0] for p in (act.alpha, act.beta) if p is not None]
        if params:
            cases.append((act.onnx_type, {**variant, **{name: 0.3 + 0.2 * i for i, name
                                                        in enumerate(params)}}, [], opset))
    return cases


# The first opset of the activations added after opset 17.
ACTIVATION_OPSETS = {"Mish": 18, "Gelu": 20}


ACTIVATION_CASES = _activation_cases()
CASE_IDS = [f"{t}-{attrs}-{extra}-opset{opset}" for t, attrs, extra, opset in ACTIVATION_CASES]


def check_fused(m, feeds, fused_type, act_type, attrs=None):
    """The activation ran in the producer's epilogue, with the very numbers of the
    unfused graph (the same C code), but for denormals: convolutions flush their
    results to (signed) zero, the element-wise engine keeps them."""
    s = check_unchanged(m, feeds)
    assert B.op_types(s) == [fused_type]
    assert (s._graph.nodes[0].attrs["_pyconv_activation"]
            == onnx_activation(act_type, attrs).name)
    plain = session(m, L.ORT_DISABLE_ALL).run(None, feeds)[0]
    np.testing.assert_array_equal(s.run(None, feeds)[0], flush_denormals(plain))


@pytest.mark.parametrize("act,attrs,extra,opset", ACTIVATION_CASES, ids=CASE_IDS)
def test_activation_fused_into_conv(rng, act, attrs, extra, opset):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node(act, ["c"] + extra, ["y"], **attrs)]
    m = B.model(nodes, [("x", [1, 3, 7, 6])], [("y", [1, 8, 7, 6])],
                {"w": B.rand(rng, 8, 3, 3, 3), "b": B.rand(rng, 8),
                 "lo": np.float32(-0.5), "hi": np.float32(0.8)}, opset=opset)
    check_fused(m, {"x": B.rand(rng, 1, 3, 7, 6)}, "FusedConv", act, attrs)


@pytest.mark.parametrize("act,attrs,extra,opset", ACTIVATION_CASES, ids=CASE_IDS)
def test_activation_fused_into_conv_transpose(rng, act, attrs, extra, opset):
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["c"], strides=[2, 2],
                              pads=[1, 1, 1, 1], group=2),
             helper.make_node(act, ["c"] + extra, ["y"], **attrs)]
    m = B.model(nodes, [("x", [1, 4, 5, 6])], [("y", [1, 6, 9, 11])],
                {"w": B.rand(rng, 4, 3, 3, 3), "b": B.rand(rng, 6),
                 "lo": np.float32(-0.5), "hi": np.float32(0.8)}, opset=opset)
    check_fused(m, {"x": B.rand(rng, 1, 4, 5, 6)}, "FusedConvTranspose", act, attrs)


def test_residual_add_and_relu_fused(rng):
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2", "b2"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "x"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    m = B.model(nodes, [("x", [2, 4, 6, 6])], [("y", [2, 4, 6, 6])],
                {"w1": B.rand(rng, 4, 4, 3, 3), "w2": B.rand(rng, 4, 4, 3, 3),
                 "b2": B.rand(rng, 4)})
    s = check_unchanged(m, {"x": B.rand(rng, 2, 4, 6, 6)})
    assert B.op_types(s) == ["FusedConv", "FusedConv"]
    last = s._graph.nodes[1]
    assert len(last.inputs) == 4 and last.attrs["_pyconv_activation"] == "relu"


def test_residual_with_broadcast_falls_back(rng):
    # The "residual" is a (1, C, 1, 1) input: broadcast, so no fused epilogue, same result.
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Add", ["c", "r"], ["s"]),
             helper.make_node("Sigmoid", ["s"], ["y"])]
    m = B.model(nodes, [("x", [1, 3, 5, 5]), ("r", [1, 4, 1, 1])], [("y", [1, 4, 3, 3])],
                {"w": B.rand(rng, 4, 3, 3, 3)})
    s = check_unchanged(m, {"x": B.rand(rng, 1, 3, 5, 5), "r": B.rand(rng, 1, 4, 1, 1)})
    assert B.op_types(s) == ["FusedConv"]


def test_dead_nodes_and_identity_removed(rng):
    nodes = [helper.make_node("Identity", ["x"], ["i"]),
             helper.make_node("Relu", ["i"], ["y"]),
             helper.make_node("Sigmoid", ["x"], ["unused"]),
             helper.make_node("Dropout", ["y"], ["d"])]
    m = B.model(nodes, [("x", [3, 4])], [("y", [3, 4])])
    s = check_unchanged(m, {"x": B.rand(rng, 3, 4)})
    assert B.op_types(s) == ["Relu"]
    assert len(session(m, L.ORT_DISABLE_ALL)._graph.nodes) == 4


def test_memory_plan_reuses_buffers(rng):
    nodes, inits, prev = [], {}, "x"
    for i in range(6):
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Tanh", [f"c{i}"], [f"t{i}"]))
        inits[f"w{i}"] = B.rand(rng, 8, 8, 3, 3, scale=0.3)
        prev = f"t{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    m = B.model(nodes, [("x", [1, 8, 16, 16])], [("y", [1, 8, 16, 16])], inits)
    feeds = {"x": B.rand(rng, 1, 8, 16, 16)}
    check_unchanged(m, feeds)
    s = session(m, L.ORT_DISABLE_ALL)     # unfused: 12 intermediate tensors
    first = s.run(None, feeds)[0]
    second = s.run(None, feeds)[0]
    np.testing.assert_array_equal(first, second)
    stats = s.memory_stats
    one = 8 * 16 * 16 * 4
    assert stats["naive_bytes"] >= 12 * one
    assert stats["arena_bytes"] <= 3 * one       # two live buffers at a time (+ alignment)
    assert stats["peak_activation_bytes"] < stats["naive_bytes"]


@pytest.mark.parametrize("name", ["light_resnet50", "light_densenet121",
                                  "light_inception_v2"])
def test_zoo_fusions_keep_outputs(name):
    m = _zoo.randomized(name)
    feeds = {k: np.random.default_rng(3).random(v.shape, np.float32)
             for k, v in _zoo.dummy_inputs(m).items()}
    fused = session(m, L.ORT_ENABLE_ALL)
    plain = session(m, L.ORT_DISABLE_ALL)
    types = B.op_types(fused)
    assert "BatchNormalization" not in types and "FusedConv" in types
    a = fused.run(None, feeds)[0]
    b = plain.run(None, feeds)[0]
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * float(np.abs(b).max()))
    assert np.argmax(a) == np.argmax(b)
