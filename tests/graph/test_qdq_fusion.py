"""Static QDQ models run in integers (pyconv/graph/_qdq.py): the QDQ patterns that
onnxruntime.quantization writes become QLinearConv / QLinearAdd / ... nodes, and the
outputs match onnxruntime's own integer run (which fuses the same patterns), within one
output quantum; patterns the fusion must not touch keep the float semantics."""
import numpy as np
import pytest
from onnx import helper, numpy_helper

import pyconv
from tests.graph import _build as B

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the quantization oracle")
onnx = pytest.importorskip("onnx")


def _ort(model_bytes, feeds):
    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"]).run(
        None, feeds)


def _op_types(session):
    return [(n.domain + "::" if n.domain else "") + n.op_type for n in session._graph.nodes]


def _float_net(rng):
    """A float CNN with every pattern: 7x7 stride-2 stem, Relu, MaxPool, 3x3 and 1x1 convs,
    a residual Add, a grouped conv, a depthwise conv with Clip (ReLU6), a dilated conv,
    GlobalAveragePool, Flatten and Gemm."""
    inits = {}

    def conv(name, x, y, c_in, c_out, k, group=1, **kw):
        inits[f"{name}_w"] = (rng.standard_normal((c_out, c_in // group, k, k))
                              * (1.5 / np.sqrt(c_in // group * k * k))).astype(np.float32)
        inits[f"{name}_b"] = (rng.standard_normal(c_out) * 0.1).astype(np.float32)
        return helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [y], group=group,
                                pads=[k // 2 * kw.pop("dilation", 1)] * 4, **kw)
    inits.update(fc_w=(rng.standard_normal((10, 16)) * 0.3).astype(np.float32),
                 fc_b=(rng.standard_normal(10) * 0.1).astype(np.float32),
                 lo=np.float32(0), hi=np.float32(6))
    nodes = [
        conv("stem", "x", "s", 3, 16, 7, strides=[2, 2]), helper.make_node("Relu", ["s"], ["s1"]),
        helper.make_node("MaxPool", ["s1"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        conv("a", "p", "a0", 16, 16, 3), helper.make_node("Relu", ["a0"], ["a1"]),
        conv("b", "a1", "b0", 16, 16, 1), helper.make_node("Add", ["b0", "p"], ["r"]),
        helper.make_node("Relu", ["r"], ["r1"]),
        conv("g", "r1", "g0", 16, 16, 3, group=4), helper.make_node("Relu", ["g0"], ["g1"]),
        conv("dw", "g1", "d0", 16, 16, 3, group=16, strides=[2, 2]),
        helper.make_node("Clip", ["d0", "lo", "hi"], ["d1"]),
        conv("dil", "d1", "e0", 16, 16, 3, dilation=2, dilations=[2, 2]),
        helper.make_node("GlobalAveragePool", ["e0"], ["f"]),
        helper.make_node("Flatten", ["f"], ["f1"]),
        helper.make_node("Gemm", ["f1", "fc_w", "fc_b"], ["logits"], transB=1)]
    return B.model(nodes, [("x", [1, 3, 32, 32])], [("logits", [1, 10])], inits)


@pytest.fixture(scope="module")
def qdq_model(tmp_path_factory):
    rng = np.random.default_rng(18)
    net = _float_net(rng)
    inputs = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(6)]
    return (B.quantize_static_qdq(net, [{"x": x} for x in inputs],
                                  tmp_path_factory.mktemp("qdq")), inputs)


def _output_step(model_bytes):
    """The scale of the model's last DequantizeLinear (one output quantum)."""
    m = onnx.load_from_string(model_bytes)
    consts = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    last = [n for n in m.graph.node if n.op_type == "DequantizeLinear"][-1]
    return float(consts[last.input[1]])


@pytest.mark.parametrize("threads", [1, 2])
def test_quantized_net_matches_onnxruntime_in_integers(qdq_model, threads):
    data, inputs = qdq_model
    opts = pyconv.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = pyconv.InferenceSession(data, opts)
    ops = _op_types(sess)
    # Every conv, the Gemm, the Add and the pools run in integers, channels last; no float
    # conv is left; the conv that only the residual Add reads runs with it as one node.
    assert ops.count("com.microsoft::QLinearConv") == 6 and "Conv" not in ops \
        and "Gemm" not in ops, ops
    assert "pyconv::QLinearConvAdd" in ops and "com.microsoft::NhwcMaxPool" in ops and \
        "com.microsoft::QLinearGlobalAveragePool" in ops, ops
    # Transposes only where the chain meets NCHW values: the quantized input, the pooled
    # features to the Flatten, and both sides of the Gemm's 1x1 conv.
    assert ops.count("Transpose") == 4, ops
    assert ops.count("DequantizeLinear") == 1 and ops.count("QuantizeLinear") == 1, ops
    step = _output_step(data)
    for x in inputs[:3] + [np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(
            np.float32) * 3]:
        got, = sess.run(None, {"x": x})
        want, = _ort(data, {"x": x})
        assert np.abs(got - want).max() <= step * 1.001, np.abs(got - want).max() / step


def test_fusion_only_at_the_full_level(qdq_model):
    data, inputs = qdq_model
    opts = pyconv.SessionOptions()
    opts.graph_optimization_level = pyconv.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = pyconv.InferenceSession(data, opts)
    assert "QLinearConv" not in _op_types(sess)
    got, = sess.run(None, {"x": inputs[0]})
    want, = _ort(data, {"x": inputs[0]})
    # Q/DQ as written around float ops: within the quantization's rounding steps.
    np.testing.assert_allclose(got, want, atol=4 * _output_step(data))


def _hand_qdq(act=None, w_zero=0, bias_scale_factor=1.0):
    """x -> Q -> DQ -> Conv(DQ(w), DQ(b)) -> [act] -> Q -> DQ, written by hand in the
    form onnxruntime's quantizer emits (per-channel int8 weights, int32 bias at scale
    x_scale * w_scale)."""
    rng = np.random.default_rng(3)
    w = rng.integers(-127, 128, (6, 4, 3, 3)).astype(np.int8)
    ws = rng.uniform(0.002, 0.01, 6).astype(np.float32)
    xs, ys = np.float32(0.02), np.float32(0.03)
    inits = {"xs": xs, "xz": np.uint8(120), "w": w, "ws": ws,
             "wz": np.full(6, w_zero, np.int8), "b": rng.integers(-500, 500, 6).astype(
                 np.int32), "bs": (xs * ws * np.float32(bias_scale_factor)).astype(
                     np.float32), "bz": np.zeros(6, np.int32), "ys": ys,
             "yz": np.uint8(128), "lo": np.float32(-0.5), "hi": np.float32(1.0)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], pads=[1, 1, 1, 1])]
    last = "c"
    if act == "Relu":
        nodes.append(helper.make_node("Relu", ["c"], ["a"]))
        last = "a"
    elif act == "Clip":
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["a"]))
        last = "a"
    nodes += [helper.make_node("QuantizeLinear", [last, "ys", "yz"], ["yq"]),
              helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    model = B.model(nodes, [("x", [1, 4, 9, 8])], [("y", None)], inits)
    return model.SerializeToString(), float(ys)


@pytest.mark.parametrize("act", [None, "Relu", "Clip"])
def test_conv_with_activation_becomes_a_clamp(act):
    data, step = _hand_qdq(act)
    sess = pyconv.InferenceSession(data)
    fused = [n for n in sess._graph.nodes if n.op_type == "QLinearConv"]
    assert len(fused) == 1 and "Conv" not in _op_types(sess)
    if act is not None:
        # Relu: the output zero point (128) is the lowest value; Clip(-0.5, 1): 111 .. 161.
        want_lo, want_hi = (128, 255) if act == "Relu" else (111, 161)
        assert fused[0].attrs["_pyconv_qmin"] == want_lo
        assert fused[0].attrs.get("_pyconv_qmax", 255) == want_hi
    x = np.random.default_rng(4).standard_normal((1, 4, 9, 8)).astype(np.float32) * 2
    got, = sess.run(None, {"x": x})
    want, = _ort(data, {"x": x})
    assert np.abs(got - want).max() <= step * 1.001
    if act is not None:     # the clamp is reached (the input is wide enough) and held
        lo = np.float32(want_lo - 128) * np.float32(step)
        assert got.min() == lo and (got == lo).sum() > 1


@pytest.mark.parametrize("case", ["weight_zero_point", "bias_scale"])
def test_patterns_outside_the_integer_form_stay_float(case):
    # A nonzero weight zero point, or a bias at another scale than x_scale * w_scale:
    # not onnxruntime's integer form; the graph keeps its float conv and its meaning.
    data, step = _hand_qdq(**({"w_zero": 3} if case == "weight_zero_point"
                              else {"bias_scale_factor": 2.0}))
    sess = pyconv.InferenceSession(data)
    assert "QLinearConv" not in _op_types(sess) and "Conv" in _op_types(sess)
    x = np.random.default_rng(4).standard_normal((1, 4, 9, 8)).astype(np.float32)
    got, = sess.run(None, {"x": x})
    ref_opts = ort.SessionOptions()
    ref_opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want, = ort.InferenceSession(data, ref_opts, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})
    assert np.abs(got - want).max() <= step * 1.001
