"""Quantized layers channels last (NHWC), the form the integer chains of QDQ models run in
(pyconv/graph/_qdq.py's to_channels_last): ``com.microsoft.QLinearConv`` with
``channels_last`` and ``com.microsoft.NhwcMaxPool`` against onnxruntime's own contrib
kernels (integer outputs identical), and QDQ networks whose chains run NHWC (depthwise,
strides, padding, odd shapes, batch > 1) against onnxruntime's optimised run."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyconv
from pyconv.errors import PyconvError
from tests.graph import _build as B

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the quantization oracle")
onnx = pytest.importorskip("onnx")

MS = "com.microsoft"


def _model(nodes, inits, inputs, outputs):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(k, dt, None) for k, dt in inputs],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(MS, 1)],
                             ir_version=8).SerializeToString()


def _both(model, feeds, threads=1):
    opts = pyconv.SessionOptions()
    opts.intra_op_num_threads = threads
    got = pyconv.InferenceSession(model, opts).run(None, feeds)
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    want = ort.InferenceSession(model, o, providers=["CPUExecutionProvider"]).run(None,
                                                                                  feeds)
    return got, want


def _conv_model(rng, c, m, k, group=1, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                y_dtype=np.uint8, bias=True, per_channel=True, channels_last=1):
    w = rng.integers(-128, 128, (m, c // group) + tuple(k)).astype(np.int8)
    ws = rng.uniform(2e-4, 2e-3, m if per_channel else 1).astype(np.float32)
    inits = {"xs": np.float32(0.02), "xz": np.uint8(rng.integers(0, 256)), "w": w,
             "ws": ws if per_channel else ws.reshape(()), "wz": np.zeros(
                 m if per_channel else (), np.int8), "ys": np.float32(0.05),
             "yz": np.array(rng.integers(0, 256) if y_dtype == np.uint8 else
                            rng.integers(-128, 128), y_dtype)}
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    if bias:
        inits["b"] = rng.integers(-20000, 20000, m).astype(np.int32)
        names.append("b")
    node = helper.make_node("QLinearConv", names, ["y"], domain=MS,
                            channels_last=channels_last, group=group, strides=list(strides),
                            pads=list(pads), dilations=list(dilations))
    return _model([node], inits, [("x", TensorProto.UINT8)], ["y"])


CONVS = {
    "3x3": dict(c=16, m=24, k=(3, 3), pads=(1, 1, 1, 1)),
    "1x1": dict(c=32, m=48, k=(1, 1)),
    "1x1_stride2": dict(c=32, m=16, k=(1, 1), strides=(2, 2)),
    "stem_3ch_7x7_s2": dict(c=3, m=16, k=(7, 7), strides=(2, 2), pads=(3, 3, 3, 3)),
    "asymmetric_pads": dict(c=8, m=20, k=(3, 2), pads=(0, 1, 2, 0)),
    "dilated": dict(c=8, m=8, k=(3, 3), dilations=(2, 3), pads=(2, 3, 2, 3)),
    "grouped": dict(c=16, m=32, k=(3, 3), group=4, pads=(1, 1, 1, 1)),
    "depthwise_3x3": dict(c=40, m=40, k=(3, 3), group=40, pads=(1, 1, 1, 1)),
    "depthwise_3x3_s2": dict(c=24, m=24, k=(3, 3), group=24, strides=(2, 2),
                             pads=(1, 1, 1, 1)),
    "depthwise_5x5_odd_channels": dict(c=19, m=19, k=(5, 5), group=19, pads=(2, 2, 2, 2)),
    "depthwise_dilated_no_pad": dict(c=16, m=16, k=(3, 3), group=16, dilations=(2, 2)),
    # Channel blocks of 64, 32, 16, 8 and single channels; a kernel beyond the batched taps.
    "depthwise_138_channels": dict(c=138, m=138, k=(3, 3), group=138, pads=(1, 1, 1, 1)),
    "depthwise_9x9": dict(c=20, m=20, k=(9, 9), group=20, pads=(4, 4, 4, 4)),
    "int8_output": dict(c=16, m=16, k=(3, 3), pads=(1, 1, 1, 1), y_dtype=np.int8),
    "int8_output_depthwise": dict(c=16, m=16, k=(3, 3), group=16, y_dtype=np.int8),
    "per_tensor_no_bias": dict(c=16, m=24, k=(3, 3), per_channel=False, bias=False),
}


def _onnx_reference(model, x):
    """The ONNX reference evaluator's QLinearConv on the NCHW image, back to NHWC: the
    oracle for int8 outputs of a uint8 input, which onnxruntime does not implement."""
    from onnx.reference import ReferenceEvaluator
    m = onnx.load_from_string(model)
    node = m.graph.node[0]
    node.domain = ""
    kept = [a for a in node.attribute if a.name != "channels_last"]
    del node.attribute[:]
    node.attribute.extend(kept)
    y, = ReferenceEvaluator(m).run(None, {"x": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})
    return np.ascontiguousarray(y.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", sorted(CONVS))
def test_channels_last_qlinearconv_matches_onnxruntime(case, threads):
    rng = np.random.default_rng(sorted(CONVS).index(case))
    params = CONVS[case]
    model = _conv_model(rng, **params)
    for shape in [(1, 11, 13), (2, 9, 8), (3, 17, 10)]:
        x = rng.integers(0, 256, (shape[0], shape[1], shape[2], params["c"])).astype(np.uint8)
        if params.get("y_dtype") == np.int8:
            opts = pyconv.SessionOptions()
            opts.intra_op_num_threads = threads
            got, = pyconv.InferenceSession(model, opts).run(None, {"x": x})
            want = _onnx_reference(model, x)
            assert got.dtype == want.dtype and got.shape == want.shape
            # The reference requantizes in float64, onnxruntime (and pyconv) in float32:
            # a product next to a rounding tie may round the other way.
            diff = np.abs(got.astype(np.int32) - want)
            assert diff.max() <= 1 and np.count_nonzero(diff) <= max(2, diff.size // 500)
            continue
        (got,), (want,) = _both(model, {"x": x}, threads)
        assert got.dtype == want.dtype and got.shape == want.shape, (got.shape, want.shape)
        np.testing.assert_array_equal(got, want)


def test_channels_first_microsoft_qlinearconv_is_the_onnx_one():
    rng = np.random.default_rng(1)
    model = _conv_model(rng, c=8, m=8, k=(3, 3), group=8, pads=(1, 1, 1, 1), channels_last=0)
    x = rng.integers(0, 256, (2, 8, 7, 9)).astype(np.uint8)
    (got,), (want,) = _both(model, {"x": x})
    np.testing.assert_array_equal(got, want)


def test_channels_last_qlinearconv_bad_input_is_a_clear_error():
    rng = np.random.default_rng(2)
    sess = pyconv.InferenceSession(_conv_model(rng, c=8, m=8, k=(3, 3)))
    with pytest.raises(PyconvError, match="channels|shape"):
        sess.run(None, {"x": np.zeros((1, 8, 9, 9), np.uint8)})     # NCHW, not NHWC
    with pytest.raises(PyconvError, match="4-D"):
        sess.run(None, {"x": np.zeros((9, 9, 8), np.uint8)})


POOLS = {
    "3x3_s2_p1": dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    "2x2_s2": dict(kernel_shape=[2, 2], strides=[2, 2]),
    "3x2_asymmetric": dict(kernel_shape=[3, 2], strides=[1, 2], pads=[0, 1, 2, 0]),
    "dilated": dict(kernel_shape=[2, 3], dilations=[2, 2], pads=[1, 1, 1, 1]),
    "ceil_mode": dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    "same_upper": dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("case", sorted(POOLS))
def test_nhwc_max_pool_matches_onnxruntime(case, dtype, threads):
    rng = np.random.default_rng(7)
    node = helper.make_node("NhwcMaxPool", ["x"], ["y"], domain=MS, **POOLS[case])
    model = _model([node], {}, [("x", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))],
                   ["y"])
    info = np.iinfo(dtype)
    for shape in [(1, 9, 11, 16), (2, 8, 7, 3), (3, 12, 12, 67)]:
        x = rng.integers(info.min, info.max + 1, shape).astype(dtype)
        (got,), (want,) = _both(model, {"x": x}, threads)
        assert got.dtype == want.dtype and got.shape == want.shape, (got.shape, want.shape)
        np.testing.assert_array_equal(got, want)


def test_nhwc_max_pool_bad_input_is_a_clear_error():
    node = helper.make_node("NhwcMaxPool", ["x"], ["y"], domain=MS, kernel_shape=[2, 2])
    for x, match in [(np.zeros((2, 4, 4), np.uint8), "4-D"),
                     (np.zeros((1, 4, 4, 2), np.float32), "float32|type|dtype")]:
        model = _model([node], {}, [("x", helper.np_dtype_to_tensor_dtype(x.dtype))], ["y"])
        with pytest.raises(PyconvError, match=match):
            pyconv.InferenceSession(model).run(None, {"x": x})


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_same_shape_qlinear_add_is_onnxruntime_bit_for_bit(dtype, threads):
    """The residual adds of the chains: same-shape inputs on the one-pass kernel (16-wide
    vectors and a scalar tail) give onnxruntime's bytes."""
    rng = np.random.default_rng(6)
    info = np.iinfo(dtype)
    inits = {"as": np.float32(0.05), "az": np.array(rng.integers(info.min, info.max), dtype),
             "bs": np.float32(0.031), "bz": np.array(rng.integers(info.min, info.max), dtype),
             "ys": np.float32(0.07), "yz": np.array(rng.integers(info.min, info.max), dtype)}
    node = helper.make_node("QLinearAdd", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"],
                            ["y"], domain=MS)
    code = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    model = _model([node], inits, [("a", code), ("b", code)], ["y"])
    for shape in [(1, 7, 9, 33), (2, 3, 5, 16), (1, 1, 1, 5), (1, 32, 32, 256)]:
        a = rng.integers(info.min, info.max + 1, shape).astype(dtype)
        b = rng.integers(info.min, info.max + 1, shape).astype(dtype)
        (got,), (want,) = _both(model, {"a": a, "b": b}, threads)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("channels_last", [0, 1])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_global_average_pool_matches_onnxruntime(channels_last, dtype):
    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    inits = {"xs": np.float32(0.03), "xz": np.array(rng.integers(info.min, info.max), dtype),
             "ys": np.float32(0.021), "yz": np.array(rng.integers(info.min, info.max), dtype)}
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"],
                            domain=MS, channels_last=channels_last)
    model = _model([node], inits, [("x", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))],
                   ["y"])
    for shape in [(1, 7, 7, 64), (2, 5, 3, 1280), (3, 1, 1, 17), (2, 16, 16, 3)]:
        if not channels_last:
            shape = (shape[0], shape[3], shape[1], shape[2])
        x = rng.integers(info.min, info.max + 1, shape).astype(dtype)
        (got,), (want,) = _both(model, {"x": x})
        assert got.dtype == want.dtype and got.shape == want.shape, (got.shape, want.shape)
        np.testing.assert_array_equal(got, want)


def _mobile_net(rng):
    """A float net with the layers of MobileNet-style and ResNet-style int8 chains:
    stride-2 stem, MaxPool, expand 1x1 -> depthwise 3x3 (stride 1 and 2, ReLU6) ->
    project 1x1 with a residual Add, a grouped conv, GlobalAveragePool; dynamic batch and
    spatial size."""
    inits = {"lo": np.float32(0), "hi": np.float32(6)}

    def conv(name, x, c_in, c_out, k, group=1, stride=1, act="relu"):
        inits[f"{name}_w"] = (rng.standard_normal((c_out, c_in // group, k, k))
                              * (1.5 / np.sqrt(c_in // group * k * k))).astype(np.float32)
        inits[f"{name}_b"] = (rng.standard_normal(c_out) * 0.1).astype(np.float32)
        out = [helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name + "_c"],
                                group=group, strides=[stride] * 2, pads=[k // 2] * 4)]
        if act == "relu":
            out.append(helper.make_node("Relu", [name + "_c"], [name]))
        elif act == "relu6":
            out.append(helper.make_node("Clip", [name + "_c", "lo", "hi"], [name]))
        else:
            out[0].output[0] = name
        return out
    nodes = (conv("stem", "x", 3, 16, 3, stride=2)
             + [helper.make_node("MaxPool", ["stem"], ["p"], kernel_shape=[3, 3],
                                 strides=[2, 2], pads=[1, 1, 1, 1])]
             + conv("e1", "p", 16, 48, 1, act="relu6")
             + conv("d1", "e1", 48, 48, 3, group=48, act="relu6")
             + conv("p1", "d1", 48, 16, 1, act=None)
             + [helper.make_node("Add", ["p1", "p"], ["r1"])]
             + conv("e2", "r1", 16, 64, 1, act="relu6")
             + conv("d2", "e2", 64, 64, 3, group=64, stride=2, act="relu6")
             + conv("g2", "d2", 64, 32, 3, group=4)
             + [helper.make_node("GlobalAveragePool", ["g2"], ["y"])])
    return B.model(nodes, [("x", ["n", 3, "h", "w"])], [("y", None)], inits)


@pytest.fixture(scope="module")
def mobile_qdq(tmp_path_factory):
    rng = np.random.default_rng(18)
    net = _mobile_net(rng)
    calib = [{"x": rng.standard_normal((2, 3, 37, 29)).astype(np.float32)} for _ in range(4)]
    return B.quantize_static_qdq(net, calib, tmp_path_factory.mktemp("qdq_nhwc"))


@pytest.mark.parametrize("threads", [1, 2])
def test_qdq_chain_runs_channels_last_and_matches_onnxruntime(mobile_qdq, threads):
    opts = pyconv.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = pyconv.InferenceSession(mobile_qdq, opts)
    ops = [(n.domain + "::" if n.domain else "") + n.op_type for n in sess._graph.nodes]
    assert ops.count("com.microsoft::QLinearConv") == 6 and "Conv" not in ops, ops
    # The conv whose output only the residual add reads runs with it as one node.
    assert ops.count("pyconv::QLinearConvAdd") == 1 and "QLinearAdd" not in str(ops), ops
    assert "com.microsoft::NhwcMaxPool" in ops and "MaxPool" not in ops, ops
    # One Transpose into the chain (the quantized image), one out (the pooled features).
    assert ops.count("Transpose") == 2, ops
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    ref = ort.InferenceSession(mobile_qdq, o, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(4)
    for shape in [(1, 3, 32, 32), (2, 3, 37, 29), (3, 3, 21, 40)]:
        x = rng.standard_normal(shape).astype(np.float32)
        got, = sess.run(None, {"x": x})
        want, = ref.run(None, {"x": x})
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_planned_runs_bind_the_integer_convs(mobile_qdq):
    """The later runs of a planned shape call each packed QLinearConv bound to it
    (qgemm.QConv2d.bind: geometry, threads and tasks decided once), with the same bits."""
    from tests.graph.test_session import bound_steps
    sess = pyconv.InferenceSession(mobile_qdq)
    ref = ort.InferenceSession(mobile_qdq, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    for _ in range(3):
        x = rng.standard_normal((2, 3, 37, 29)).astype(np.float32)
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0],
                                      ref.run(None, {"x": x})[0])
    steps = bound_steps(sess)
    assert steps.count("QLinearConv") == 6 and steps.count("QLinearConvAdd") == 1, steps


def _residual_net(rng):
    """Residual adds whose conv operand comes second, and one whose conv output another
    conv reads too (that conv stays separate)."""
    inits = {}

    def conv(name, x, c_in, c_out, k, stride=1, relu=True):
        inits[f"{name}_w"] = (rng.standard_normal((c_out, c_in, k, k))
                              * (1.5 / np.sqrt(c_in * k * k))).astype(np.float32)
        inits[f"{name}_b"] = (rng.standard_normal(c_out) * 0.1).astype(np.float32)
        out = [helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"],
                                [name + "_c" if relu else name], strides=[stride] * 2,
                                pads=[k // 2] * 4)]
        return out + ([helper.make_node("Relu", [name + "_c"], [name])] if relu else [])
    nodes = (conv("stem", "x", 3, 32, 3, stride=2)
             + conv("c1", "stem", 32, 32, 3)
             + [helper.make_node("Add", ["stem", "c1"], ["r1"])]
             + conv("c2", "r1", 32, 32, 1, relu=False)
             + conv("c3", "c2", 32, 32, 3)
             + [helper.make_node("Add", ["c2", "c3"], ["r2"]),
                helper.make_node("GlobalAveragePool", ["r2"], ["y"])])
    return B.model(nodes, [("x", ["n", 3, "h", "w"])], [("y", None)], inits)


@pytest.mark.parametrize("threads", [1, 2])
def test_residual_adds_fuse_into_their_convs_and_match_onnxruntime(tmp_path, threads):
    rng = np.random.default_rng(21)
    calib = [{"x": rng.standard_normal((2, 3, 30, 26)).astype(np.float32)} for _ in range(4)]
    model = B.quantize_static_qdq(_residual_net(rng), calib, tmp_path)
    opts = pyconv.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = pyconv.InferenceSession(model, opts)
    ops = [(n.domain + "::" if n.domain else "") + n.op_type for n in sess._graph.nodes]
    assert ops.count("pyconv::QLinearConvAdd") == 2 and ops.count(
        "com.microsoft::QLinearAdd") == 0 and ops.count("com.microsoft::QLinearConv") == 2, ops
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    ref = ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 32, 32), (2, 3, 37, 29), (1, 3, 32, 32), (1, 3, 32, 32)]:
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], ref.run(None, {"x": x})[0])


def test_fused_conv_add_falls_back_for_a_broadcast_residual():
    """pyconv.QLinearConvAdd with a residual the bound add cannot take runs the conv and
    then QLinearAdd as the two nodes run unfused (a broadcast residual: QLinearAdd's
    general path), and a non-contiguous one as a contiguous one (onnxruntime's bits)."""
    rng = np.random.default_rng(8)
    conv = onnx.load_from_string(_conv_model(rng, c=16, m=24, k=(3, 3), pads=(1, 1, 1, 1)))
    node = conv.graph.node[0]
    inits = {i.name: numpy_helper.to_array(i) for i in conv.graph.initializer}
    inits.update({"as": np.float32(0.05), "az": np.uint8(100), "bs": np.float32(0.03),
                  "bz": np.uint8(7), "cs": np.float32(0.06), "cz": np.uint8(120)})
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    feeds = [("x", TensorProto.UINT8), ("r", TensorProto.UINT8)]
    unfused = pyconv.SessionOptions()
    unfused.graph_optimization_level = pyconv.GraphOptimizationLevel.ORT_ENABLE_BASIC
    for side in (0, 1):
        pair = ["y", "r"] if side == 0 else ["r", "y"]
        two = _model([helper.make_node("QLinearConv", list(node.input), ["y"], domain=MS,
                                       **attrs),
                      helper.make_node("QLinearAdd", [pair[0], "as", "az", pair[1], "bs", "bz",
                                                      "cs", "cz"], ["z"], domain=MS)],
                     inits, feeds, ["z"])
        fused = _model([helper.make_node(
            "QLinearConvAdd", list(node.input) + ["r", "as", "az", "bs", "bz", "cs", "cz"],
            ["z"], domain="pyconv", _pyconv_conv_operand=side, **attrs)], inits, feeds, ["z"])
        ref = ort.InferenceSession(two, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in pyconv.InferenceSession(two)._graph.nodes]
        assert ops == ["QLinearConvAdd"], ops       # the optimizer fuses the pair itself
        two_nodes = pyconv.InferenceSession(two, unfused)
        sess = pyconv.InferenceSession(fused)
        x = rng.integers(0, 256, (2, 7, 9, 16)).astype(np.uint8)
        full = rng.integers(0, 256, (2, 7, 9, 24)).astype(np.uint8)
        for r in [full, np.asfortranarray(full), full]:
            np.testing.assert_array_equal(sess.run(None, {"x": x, "r": r})[0],
                                          ref.run(None, {"x": x, "r": full})[0])
        for r in [full[:, :, :, :1], full[:1, :1, :1]]:
            np.testing.assert_array_equal(sess.run(None, {"x": x, "r": r})[0],
                                          two_nodes.run(None, {"x": x, "r": r})[0])
