"""Exporter idioms recognised by the optimizer (pyconv.graph._idioms and the folding
passes), built as torch's TorchScript and dynamo exporters, tf2onnx and Paddle2ONNX
write them: the rewrite happens (node types after optimisation), the outputs match
onnxruntime on the original graph, and near misses are left alone."""
import math

import numpy as np
import pytest
from onnx import helper

import pyconv
from pyconv import GraphOptimizationLevel as L
from tests.graph import _build as B

ort = pytest.importorskip("onnxruntime")

SHAPE = [2, 8, 5, 7]


def session(m, level=L.ORT_ENABLE_ALL):
    opts = pyconv.SessionOptions()
    opts.graph_optimization_level = level
    return pyconv.InferenceSession(m, opts)


def check(m, feeds, rtol=1e-5, atol=1e-5):
    """Optimised and unoptimised pyconv agree with onnxruntime on the original graph;
    returns the optimised session."""
    want = B.ort_run(m, feeds)
    s = session(m)
    for level_session in (s, session(m, L.ORT_DISABLE_ALL)):
        for _ in range(2):            # recording run, then the planned (bound) run
            for g, w in zip(level_session.run(None, feeds), want):
                np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return s


def const(name, value):
    return name, np.float32(value)


def unary_model(nodes, consts=(), opset=17, shape=SHAPE):
    return B.model(nodes, [("x", shape)], [("y", shape)], dict(consts), opset=opset)


def feeds(rng, shape=SHAPE, scale=3.0):
    return {"x": B.rand(rng, *shape, scale=scale)}


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def mk(op, ins, outs, **kw):
    return helper.make_node(op, ins, outs, **kw)


# -- SiLU ------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["x_first", "sigmoid_first"])
def test_silu_standalone(rng, order):
    mul = ["x", "s"] if order == "x_first" else ["s", "x"]
    m = unary_model([mk("Sigmoid", ["x"], ["s"]), mk("Mul", mul, ["y"])])
    s = check(m, feeds(rng))
    assert B.op_types(s) == ["Activation"]
    assert s._graph.nodes[0].attrs["_pyconv_activation"] == "silu"


@pytest.mark.parametrize("order", ["x_first", "sigmoid_first"])
def test_silu_after_conv_and_bn_goes_into_the_epilogue(rng, order):
    # EfficientNet as the TorchScript exporter writes it (BN kept: training-mode export).
    mul = ["n", "s"] if order == "x_first" else ["s", "n"]
    nodes = [mk("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), B.bn_node("c", "n"),
             mk("Sigmoid", ["n"], ["s"]), mk("Mul", mul, ["y"])]
    m = B.model(nodes, [("x", [1, 3, 9, 8])], [("y", [1, 8, 9, 8])],
                {"w": B.rand(rng, 8, 3, 3, 3), **B.bn_params(rng, 8)})
    s = check(m, {"x": B.rand(rng, 1, 3, 9, 8)})
    assert B.op_types(s) == ["FusedConv"]
    assert s._graph.nodes[0].attrs["_pyconv_activation"] == "silu"


def test_silu_conv_output_with_another_consumer_is_not_fused_into_the_conv(rng):
    nodes = [mk("Conv", ["x", "w"], ["c"]), mk("Sigmoid", ["c"], ["s"]),
             mk("Mul", ["c", "s"], ["m"]), mk("Add", ["m", "c"], ["y"])]
    m = B.model(nodes, [("x", [1, 3, 6, 6])], [("y", [1, 4, 4, 4])],
                {"w": B.rand(rng, 4, 3, 3, 3)})
    s = check(m, {"x": B.rand(rng, 1, 3, 6, 6)})
    assert B.op_types(s) == ["Conv", "Activation", "Add"]


@pytest.mark.parametrize("case", ["sigmoid_is_an_output", "other_tensor", "swish_beta_2",
                                  "sigmoid_read_twice"])
def test_silu_near_misses_are_kept(rng, case):
    nodes = [mk("Sigmoid", ["x"], ["s"]), mk("Mul", ["x", "s"], ["y"])]
    outputs = [("y", SHAPE)]
    inputs = [("x", SHAPE)]
    consts = {}
    if case == "sigmoid_is_an_output":
        outputs.append(("s", SHAPE))
    elif case == "other_tensor":
        nodes[0] = mk("Sigmoid", ["z"], ["s"])
        inputs.append(("z", SHAPE))
    elif case == "swish_beta_2":             # x * sigmoid(2 x)
        nodes = [mk("Mul", ["x", "two"], ["d"]), mk("Sigmoid", ["d"], ["s"]),
                 mk("Mul", ["x", "s"], ["y"])]
        consts["two"] = np.float32(2)
    else:
        nodes[1] = mk("Mul", ["x", "s"], ["m"])
        nodes.append(mk("Add", ["m", "s"], ["y"]))
    m = B.model(nodes, inputs, outputs, consts)
    f = {name: B.rand(rng, *shape) for name, shape in inputs}
    s = check(m, f)
    assert "Sigmoid" in B.op_types(s) and "Activation" not in B.op_types(s)


# -- HardSwish -------------------------------------------------------------------------

def _hardswish_nodes(form):
    """(nodes, constants, opset) of x * relu6(x + 3) / 6 as exporters write it."""
    if form == "torch_hardsigmoid":          # torch < opset 14: x * HardSigmoid(x)
        return [mk("HardSigmoid", ["x"], ["h"], alpha=1 / 6),
                mk("Mul", ["x", "h"], ["y"])], {}, 13
    if form == "tf2onnx_div":                # x * relu6(x + 3) / 6
        return [mk("Add", ["x", "three"], ["a"]), mk("Clip", ["a", "zero", "six"], ["r"]),
                mk("Mul", ["x", "r"], ["m"]), mk("Div", ["m", "six"], ["y"])], \
            {"three": 3, "zero": 0, "six": 6}, 13
    if form == "paddle_mul_sixth":           # x * (relu6(x + 3) * (1/6))
        return [mk("Add", ["three", "x"], ["a"]), mk("Clip", ["a", "zero", "six"], ["r"]),
                mk("Mul", ["r", "sixth"], ["d"]), mk("Mul", ["d", "x"], ["y"])], \
            {"three": 3, "zero": 0, "six": 6, "sixth": np.float32(1 / 6)}, 11
    if form == "clip_attributes":            # opset 10: Clip bounds as attributes
        return [mk("Add", ["x", "three"], ["a"]), mk("Clip", ["a"], ["r"], min=0.0, max=6.0),
                mk("Div", ["r", "six"], ["d"]), mk("Mul", ["x", "d"], ["y"])], \
            {"three": 3, "six": 6}, 10
    raise ValueError(form)


@pytest.mark.parametrize("form", ["torch_hardsigmoid", "tf2onnx_div", "paddle_mul_sixth",
                                  "clip_attributes"])
def test_hardswish_forms(rng, form):
    nodes, consts, opset = _hardswish_nodes(form)
    m = unary_model(nodes, {k: np.float32(v) for k, v in consts.items()}, opset=opset)
    s = check(m, feeds(rng, scale=4.0))
    assert B.op_types(s) == ["HardSwish"]


@pytest.mark.parametrize("case", ["keras_hardsigmoid_alpha", "offset_2", "clip_to_5"])
def test_hardswish_near_misses_are_kept(rng, case):
    if case == "keras_hardsigmoid_alpha":    # HardSigmoid's default alpha 0.2 is not 1/6
        nodes, consts = [mk("HardSigmoid", ["x"], ["h"]), mk("Mul", ["x", "h"], ["y"])], {}
    else:
        nodes, consts, _ = _hardswish_nodes("tf2onnx_div")
        consts = dict(consts)
        if case == "offset_2":
            consts["three"] = 2
        else:
            nodes[1] = mk("Clip", ["a", "zero", "five"], ["r"])
            consts["five"] = 5
    m = unary_model(nodes, {k: np.float32(v) for k, v in consts.items()}, opset=13)
    s = check(m, feeds(rng, scale=4.0))
    assert "HardSwish" not in B.op_types(s)


# -- GELU ------------------------------------------------------------------------------

def _gelu_erf_nodes(form):
    if form == "torchscript":   # x * 0.5 * (1 + erf(x / sqrt(2))), Div by 1.4142135
        return [mk("Div", ["x", "sqrt2"], ["d"]), mk("Erf", ["d"], ["e"]),
                mk("Add", ["e", "one"], ["a"]), mk("Mul", ["x", "a"], ["m"]),
                mk("Mul", ["m", "half"], ["y"])]
    if form == "paddle":        # (0.5 * x) * (1 + erf(x * 0.70710677)), constants first
        return [mk("Mul", ["x", "rsqrt2"], ["d"]), mk("Erf", ["d"], ["e"]),
                mk("Add", ["one", "e"], ["a"]), mk("Mul", ["half", "x"], ["h"]),
                mk("Mul", ["h", "a"], ["y"])]
    if form == "tf2onnx":       # 0.5 * (x * (1 + erf(x * 0.70710677)))
        return [mk("Mul", ["rsqrt2", "x"], ["d"]), mk("Erf", ["d"], ["e"]),
                mk("Add", ["e", "one"], ["a"]), mk("Mul", ["a", "x"], ["m"]),
                mk("Mul", ["half", "m"], ["y"])]
    raise ValueError(form)


GELU_CONSTS = {"sqrt2": np.float32(math.sqrt(2)), "rsqrt2": np.float32(1 / math.sqrt(2)),
               "one": np.float32(1), "half": np.float32(0.5), "three": np.float32(3),
               "k": np.float32(0.044715), "c": np.float32(math.sqrt(2 / math.pi))}


def _used(nodes, consts):
    names = {x for n in nodes for x in n.input}
    return {k: v for k, v in consts.items() if k in names}


@pytest.mark.parametrize("form", ["torchscript", "paddle", "tf2onnx"])
def test_gelu_erf_forms(rng, form):
    nodes = _gelu_erf_nodes(form)
    m = unary_model(nodes, _used(nodes, GELU_CONSTS))
    s = check(m, feeds(rng))
    assert B.op_types(s) == ["Gelu"]
    assert s._graph.nodes[0].attrs.get("approximate", "none") == "none"


def _gelu_tanh_nodes(form):
    if form == "pow":        # torch: tanh(sqrt(2/pi) * (x + 0.044715 * x^3))
        cube = [mk("Pow", ["x", "three"], ["p"])]
    else:                    # x * x * x
        cube = [mk("Mul", ["x", "x"], ["sq"]), mk("Mul", ["sq", "x"], ["p"])]
    return cube + [mk("Mul", ["p", "k"], ["q"]), mk("Add", ["x", "q"], ["i"]),
                   mk("Mul", ["c", "i"], ["u"]), mk("Tanh", ["u"], ["t"]),
                   mk("Add", ["t", "one"], ["a"]), mk("Mul", ["x", "half"], ["h"]),
                   mk("Mul", ["h", "a"], ["y"])]


@pytest.mark.parametrize("form", ["pow", "mul"])
def test_gelu_tanh_forms(rng, form):
    nodes = _gelu_tanh_nodes(form)
    m = unary_model(nodes, _used(nodes, GELU_CONSTS))
    s = check(m, feeds(rng))
    assert B.op_types(s) == ["Gelu"]
    assert s._graph.nodes[0].attrs["approximate"] == "tanh"


@pytest.mark.parametrize("case", ["wrong_sqrt2", "wrong_cubic", "erf_read_twice"])
def test_gelu_near_misses_are_kept(rng, case):
    consts = dict(GELU_CONSTS)
    outputs = [("y", SHAPE)]
    if case == "wrong_sqrt2":
        nodes = _gelu_erf_nodes("torchscript")
        consts["sqrt2"] = np.float32(1.5)
    elif case == "wrong_cubic":
        nodes = _gelu_tanh_nodes("pow")
        consts["k"] = np.float32(0.05)
    else:
        nodes = _gelu_erf_nodes("torchscript")
        outputs.append(("e", SHAPE))
    m = B.model(nodes, [("x", SHAPE)], outputs, _used(nodes, consts))
    s = check(m, feeds(rng))
    assert "Gelu" not in B.op_types(s)


# -- Mish ------------------------------------------------------------------------------

def test_mish(rng):
    m = unary_model([mk("Softplus", ["x"], ["p"]), mk("Tanh", ["p"], ["t"]),
                     mk("Mul", ["t", "x"], ["y"])])
    s = check(m, feeds(rng))
    assert B.op_types(s) == ["Mish"]


def test_mish_near_miss_softplus_of_another_tensor(rng):
    m = B.model([mk("Softplus", ["z"], ["p"]), mk("Tanh", ["p"], ["t"]),
                 mk("Mul", ["t", "x"], ["y"])], [("x", SHAPE), ("z", SHAPE)], [("y", SHAPE)])
    s = check(m, {"x": B.rand(rng, *SHAPE), "z": B.rand(rng, *SHAPE)})
    assert "Mish" not in B.op_types(s)


# -- Squeeze-and-excitation ------------------------------------------------------------

def _se_model(rng, form, c=16, mid=4, opset=17):
    """An SE block over x = conv(input): (nodes, constants)."""
    nodes = [mk("Conv", ["inp", "w0"], ["x"], pads=[1, 1, 1, 1])]
    consts = {"w0": B.rand(rng, c, 3, 3, 3, scale=0.5), "w1": B.rand(rng, mid, c, 1, 1),
              "b1": B.rand(rng, mid), "w2": B.rand(rng, c, mid, 1, 1), "b2": B.rand(rng, c)}
    if form == "timm_efficientnet":      # x.mean((2, 3), keepdim=True), SiLU, Sigmoid
        if opset >= 18:
            nodes.append(mk("ReduceMean", ["x", "axes"], ["p"], keepdims=1))
            consts["axes"] = np.array([2, 3], np.int64)
        else:
            nodes.append(mk("ReduceMean", ["x"], ["p"], axes=[-2, -1], keepdims=1))
        nodes += [mk("Conv", ["p", "w1", "b1"], ["r"]), mk("Sigmoid", ["r"], ["rs"]),
                  mk("Mul", ["r", "rs"], ["h"]), mk("Conv", ["h", "w2", "b2"], ["e"]),
                  mk("Sigmoid", ["e"], ["s"]), mk("Mul", ["x", "s"], ["y"])]
    elif form == "torchvision_mobilenetv3":   # AdaptiveAvgPool, ReLU, Hardsigmoid
        nodes += [mk("GlobalAveragePool", ["x"], ["p"]), mk("Conv", ["p", "w1", "b1"], ["r"]),
                  mk("Relu", ["r"], ["h"]), mk("Conv", ["h", "w2", "b2"], ["e"]),
                  mk("HardSigmoid", ["e"], ["s"], alpha=1 / 6), mk("Mul", ["s", "x"], ["y"])]
    elif form == "rexnet_bn":                 # conv, BN, ReLU, conv (no bias), Sigmoid
        nodes += [mk("GlobalAveragePool", ["x"], ["p"]), mk("Conv", ["p", "w1", "b1"], ["r"]),
                  B.bn_node("r", "rb"), mk("Relu", ["rb"], ["h"]),
                  mk("Conv", ["h", "w2"], ["e"]), mk("Sigmoid", ["e"], ["s"]),
                  mk("Mul", ["x", "s"], ["y"])]
        consts.update(B.bn_params(rng, mid))
        del consts["b2"]
    elif form == "no_biases":                 # Keras-style convs without bias
        nodes += [mk("GlobalAveragePool", ["x"], ["p"]), mk("Conv", ["p", "w1"], ["r"]),
                  mk("Relu", ["r"], ["h"]), mk("Conv", ["h", "w2"], ["e"]),
                  mk("Sigmoid", ["e"], ["s"]), mk("Mul", ["x", "s"], ["y"])]
        del consts["b1"], consts["b2"]
    else:
        raise ValueError(form)
    return nodes, consts


@pytest.mark.parametrize("form,opset", [("timm_efficientnet", 17), ("timm_efficientnet", 18),
                                        ("torchvision_mobilenetv3", 17), ("rexnet_bn", 13),
                                        ("no_biases", 17)])
def test_squeeze_excite_is_one_step(rng, form, opset):
    nodes, consts = _se_model(rng, form, opset=opset)
    m = B.model(nodes, [("inp", [2, 3, 9, 7])], [("y", [2, 16, 9, 7])], consts, opset=opset)
    s = check(m, {"inp": B.rand(rng, 2, 3, 9, 7)})
    assert B.op_types(s) == ["Conv", "SqueezeExcite"]


@pytest.mark.parametrize("form", ["timm_efficientnet", "torchvision_mobilenetv3"])
@pytest.mark.parametrize("batch", [1, 3])
def test_squeeze_excite_bound_step_writes_its_planned_buffer(rng, form, batch):
    """Inside a graph (its output planned), at one sample (the products as GEMVs) and
    several: the bound step writes the planned buffer; results match onnxruntime."""
    import functools
    nodes, consts = _se_model(rng, form, c=40, mid=10)
    nodes.append(mk("Relu", ["y"], ["z"]))
    m = B.model(nodes, [("inp", ["N", 3, 6, 5])], [("z", None)], consts)
    s = check(m, {"inp": B.rand(rng, batch, 3, 6, 5)})
    (plan,) = s._program.plans.values()
    (call,) = [c for c, *_, step in plan._pool[-1].steps
               if step.node.op_type == "SqueezeExcite"]
    assert not isinstance(call, functools.partial)
    out = next(v for slot, v in plan._pool[-1].views.items()
               if s._program.steps[1].outs[0] == slot)
    feeds = {"inp": B.rand(rng, batch, 3, 6, 5)}
    np.testing.assert_allclose(s.run(None, feeds)[0], B.ort_run(m, feeds)[0], rtol=1e-5,
                               atol=1e-5)
    assert call([B.rand(rng, batch, 40, 6, 5)])[0] is out


@pytest.mark.parametrize("case", ["pooled_read_twice", "scales_another_tensor",
                                  "gate_is_an_output", "padded_conv"])
def test_squeeze_excite_near_misses_are_kept(rng, case):
    nodes, consts = _se_model(rng, "torchvision_mobilenetv3")
    inputs, outputs = [("inp", [2, 3, 9, 7])], [("y", [2, 16, 9, 7])]
    if case == "pooled_read_twice":
        nodes[-1] = mk("Mul", ["s", "x"], ["m"])
        nodes.append(mk("Add", ["m", "p"], ["y"]))
    elif case == "scales_another_tensor":
        nodes[-1] = mk("Mul", ["s", "z"], ["y"])
        inputs.append(("z", [2, 16, 9, 7]))
    elif case == "gate_is_an_output":
        outputs.append(("s", [2, 16, 1, 1]))
    else:
        nodes[2] = mk("Conv", ["p", "w1", "b1"], ["r"], pads=[1, 1, 1, 1])
        nodes[-1] = mk("Mul", ["s", "x"], ["y"])   # broadcast from (2, 16, 5, 5): wrong
        consts["w1"] = B.rand(rng, 4, 16, 3, 3)
        outputs = [("y", [2, 16, 9, 7])]
        nodes[3:] = [mk("Relu", ["r"], ["h"]), mk("GlobalAveragePool", ["h"], ["hp"]),
                     mk("Conv", ["hp", "w2", "b2"], ["e"]),
                     mk("HardSigmoid", ["e"], ["s"], alpha=1 / 6), mk("Mul", ["s", "x"], ["y"])]
    m = B.model(nodes, inputs, outputs, consts)
    f = {name: B.rand(rng, *shape) for name, shape in inputs}
    s = check(m, f)
    assert "SqueezeExcite" not in B.op_types(s)


# -- PixelShuffle / PixelUnshuffle ------------------------------------------------------

def _i64(*v):
    return np.array(v, np.int64)


@pytest.mark.parametrize("case", [
    # (input shape, first reshape, perm, last reshape, expected op, mode)
    ("pixel_shuffle", [1, 12, 5, 7], _i64(1, 3, 2, 2, 5, 7), [0, 1, 4, 2, 5, 3],
     _i64(1, 3, 10, 14), "DepthToSpace", "CRD"),
    ("pixel_shuffle_batch_minus1", [2, 18, 4, 3], _i64(-1, 2, 3, 3, 4, 3),
     [0, 1, 4, 2, 5, 3], _i64(-1, 2, 12, 9), "DepthToSpace", "CRD"),
    ("depth_to_space_dcr_tf", [2, 8, 3, 5], _i64(0, 2, 2, 2, 3, 5), [0, 3, 4, 1, 5, 2],
     _i64(0, 2, 6, 10), "DepthToSpace", "DCR"),
    ("pixel_unshuffle", [1, 3, 6, 8], _i64(1, 3, 3, 2, 4, 2), [0, 1, 3, 5, 2, 4],
     _i64(1, 12, 3, 4), "SpaceToDepth", "CRD"),
], ids=lambda c: c[0] if isinstance(c, tuple) else None)
def test_reshape_transpose_reshape_is_one_block_op(rng, case):
    _, shape, s1, perm, s2, op_type, mode = case
    out_shape = [int(v) for v in s2]
    out_shape[0] = shape[0]
    m = B.model([mk("Reshape", ["x", "s1"], ["a"]), mk("Transpose", ["a"], ["t"], perm=perm),
                 mk("Reshape", ["t", "s2"], ["y"])], [("x", shape)], [("y", out_shape)],
                {"s1": s1, "s2": s2})
    s = check(m, {"x": B.rand(rng, *shape)}, rtol=0, atol=0)
    assert B.op_types(s) == [op_type]
    assert s._graph.nodes[0].attrs["mode"] == mode


@pytest.mark.parametrize("case", ["wrong_perm", "fixed_batch_of_1_with_batch_2",
                                  "transposed_value_read_twice"])
def test_reshape_transpose_reshape_near_misses_are_kept(rng, case):
    shape, perm, outputs = [2, 12, 5, 7], [0, 1, 4, 2, 5, 3], [("y", [2, 3, 10, 14])]
    s1, s2 = _i64(-1, 3, 2, 2, 5, 7), _i64(-1, 3, 10, 14)
    if case == "wrong_perm":
        perm, outputs = [0, 1, 4, 3, 5, 2], outputs
    elif case == "fixed_batch_of_1_with_batch_2":
        s1, s2 = _i64(1, 6, 2, 2, 5, 7), _i64(1, 6, 10, 14)
        outputs = [("y", [1, 6, 10, 14])]
    else:
        outputs.append(("t", [2, 3, 5, 2, 7, 2]))
    m = B.model([mk("Reshape", ["x", "s1"], ["a"]), mk("Transpose", ["a"], ["t"], perm=perm),
                 mk("Reshape", ["t", "s2"], ["y"])], [("x", shape)], outputs,
                {"s1": s1, "s2": s2})
    s = check(m, {"x": B.rand(rng, *shape)}, rtol=0, atol=0)
    assert "DepthToSpace" not in B.op_types(s)


# -- Constant Mul / Add folded into convolutions ------------------------------------------

@pytest.mark.parametrize("op,const_first,shape", [
    ("Mul", False, [6, 1, 1]), ("Mul", True, [1, 6, 1, 1]), ("Mul", False, []),
    ("Add", True, [6, 1, 1]), ("Sub", False, [6, 1, 1]), ("Div", False, []),
])
def test_constant_after_conv_folded(rng, op, const_first, shape):
    c = (rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape)).astype(np.float32)
    ins = ["k", "c"] if const_first else ["c", "k"]
    nodes = [mk("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], group=2),
             mk(op, ins, ["y"])]
    m = B.model(nodes, [("x", [2, 4, 5, 6])], [("y", [2, 6, 5, 6])],
                {"w": B.rand(rng, 6, 2, 3, 3), "b": B.rand(rng, 6), "k": c})
    s = check(m, {"x": B.rand(rng, 2, 4, 5, 6)})
    assert B.op_types(s) == ["Conv"]


@pytest.mark.parametrize("op,pads,shape,folded", [
    ("Mul", [1, 1, 1, 1], [4, 1, 1], True),      # scaling commutes with zero padding
    ("Div", [1, 1, 1, 1], [1, 4, 1, 1], True),   # input normalisation: x / std
    ("Mul", [0, 0, 0, 0], [], True),
    ("Add", [0, 0, 0, 0], [4, 1, 1], True),      # no padding: sum(w * t) joins the bias
    ("Sub", [0, 0, 0, 0], [1, 4, 1, 1], True),   # x - mean
    ("Add", [1, 1, 1, 1], [4, 1, 1], False),     # padding would read 0, not t
    ("Sub", [1, 0, 1, 0], [], False),
])
@pytest.mark.parametrize("group", [1, 2])
def test_constant_before_conv_folded_only_where_exact(rng, op, pads, shape, folded, group):
    c = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    nodes = [mk(op, ["x", "k"], ["a"]),
             mk("Conv", ["a", "w", "b"], ["c"], pads=pads, group=group),
             mk("Relu", ["c"], ["y"])]
    h_out = 7 + pads[0] + pads[2] - 2
    w_out = 6 + pads[1] + pads[3] - 2
    m = B.model(nodes, [("x", [2, 4, 7, 6])], [("y", [2, 6, h_out, w_out])],
                {"w": B.rand(rng, 6, 4 // group, 3, 3), "b": B.rand(rng, 6), "k": c})
    s = check(m, {"x": B.rand(rng, 2, 4, 7, 6)}, rtol=1e-4, atol=1e-4)
    assert B.op_types(s) == (["FusedConv"] if folded else [op, "FusedConv"])


@pytest.mark.parametrize("case", ["scaled_value_read_twice", "broadcasts_channels",
                                  "conv_output_read_twice"])
def test_constant_folding_near_misses_are_kept(rng, case):
    inputs, consts = [("x", [1, 4, 5, 5])], {"w": B.rand(rng, 3, 4, 1, 1),
                                             "k": B.rand(rng, 4, 1, 1)}
    outputs = [("y", [1, 3, 5, 5])]
    if case == "scaled_value_read_twice":
        nodes = [mk("Mul", ["x", "k"], ["a"]), mk("Conv", ["a", "w"], ["y"])]
        outputs.append(("a", [1, 4, 5, 5]))
        expect = "Mul"
    elif case == "broadcasts_channels":       # (1, 1, H, W) * (4, 1, 1): 4 channels
        inputs = [("x", [1, 1, 5, 5])]
        nodes = [mk("Mul", ["x", "k"], ["a"]), mk("Conv", ["a", "w"], ["y"])]
        expect = "Mul"
    else:
        consts["k"] = B.rand(rng, 3, 1, 1)
        nodes = [mk("Conv", ["x", "w"], ["c"]), mk("Mul", ["c", "k"], ["m"]),
                 mk("Add", ["m", "c"], ["y"])]
        expect = "Mul"
    m = B.model(nodes, inputs, outputs, consts)
    s = check(m, {name: B.rand(rng, *shape) for name, shape in inputs})
    assert expect in B.op_types(s)


def test_gelu_with_a_five_digit_sqrt2_and_a_per_channel_scale_nearby(rng):
    # 1.41421 (within 1e-5 of sqrt(2)) is still GELU; a Mul by a (C, 1, 1) tensor in the
    # same graph stays an opaque value.
    nodes = _gelu_erf_nodes("torchscript")[:-1] + [mk("Mul", ["m", "half"], ["g"]),
                                                   mk("Mul", ["g", "scale"], ["y"])]
    consts = dict(GELU_CONSTS, sqrt2=np.float32(1.41421),
                  scale=B.rand(rng, SHAPE[1], 1, 1))
    m = unary_model(nodes, _used(nodes, consts))
    s = check(m, feeds(rng))
    assert B.op_types(s) == ["Gelu", "Mul"]
