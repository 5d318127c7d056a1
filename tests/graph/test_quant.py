"""Quantization operators against onnxruntime (integer outputs must be identical) and the
ONNX reference evaluator, and whole models quantized by onnxruntime.quantization
(static QDQ and dynamic) against onnxruntime."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import pyconv
from pyconv.errors import InvalidArgument, InvalidDType
from tests.graph import _build as B

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the quantization oracle")

U8, I8 = np.uint8, np.int8


def _graph(node, feeds, inits, opset=21, domain_opsets=()):
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in feeds.items()],
        [helper.make_empty_tensor_value_info(o) for o in node.output if o],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v)
                                                 for d, v in domain_opsets]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def _compare(model, feeds, reference=True, exact=True, runtime=True):
    """pyconv against onnxruntime (unless ``runtime`` is false: a case onnxruntime does
    not implement) and the ONNX reference evaluator (integer outputs)."""
    got = pyconv.InferenceSession(model.SerializeToString()).run(None, feeds)
    want = ort.InferenceSession(model.SerializeToString(), providers=[
        "CPUExecutionProvider"]).run(None, feeds) if runtime else [None] * len(got)
    refs = ReferenceEvaluator(model).run(None, feeds) if reference else [None] * len(got)
    for g, w, r in zip(got, want, refs):
        if w is None:
            np.testing.assert_array_equal(g, r)
            continue
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, w.dtype, g.shape, w.shape)
        if exact:
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
        if r is not None and g.dtype.kind in "iu":
            np.testing.assert_array_equal(g, r)
    return got


def _ints(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


@pytest.mark.parametrize("dtype", [U8, I8, np.uint16, np.int16])
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_quantize_dequantize_per_tensor_and_axis(dtype, axis):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 5)) * 40).astype(np.float32)
    x.flat[:4] = [0.5, 1.5, -0.5, -2.5]      # ties round to even
    n = 1 if axis is None else x.shape[axis]
    scale = rng.uniform(0.05, 0.5, n).astype(np.float32)
    zp = _ints(rng, dtype, n) // 4
    if axis is None:
        scale, zp = scale[0], zp[0]
    attrs = {} if axis is None else {"axis": axis}
    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], **attrs)
    (y,) = _compare(_graph(q, {"x": x}, {"s": scale, "z": zp}), {"x": x})
    d = helper.make_node("DequantizeLinear", ["y", "s", "z"], ["x2"], **attrs)
    _compare(_graph(d, {"y": y}, {"s": scale, "z": zp}), {"y": y}, exact=False)


def test_quantize_blocked_and_without_zero_point():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((4, 10)) * 5).astype(np.float32)
    scale = rng.uniform(0.05, 0.5, (4, 3)).astype(np.float32)
    zp = _ints(rng, I8, (4, 3)) // 8
    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1, block_size=4)
    (y,) = _compare(_graph(q, {"x": x}, {"s": scale, "z": zp}), {"x": x})
    d = helper.make_node("DequantizeLinear", ["y", "s", "z"], ["x2"], axis=1, block_size=4)
    _compare(_graph(d, {"y": y}, {"s": scale, "z": zp}), {"y": y}, exact=False)
    q = helper.make_node("QuantizeLinear", ["x", "s"], ["y"])
    _compare(_graph(q, {"x": x}, {"s": np.float32(0.1)}), {"x": x})


@pytest.mark.parametrize("kind", ["mixed", "positive", "negative", "zeros", "tiny"])
def test_dynamic_quantize_linear(kind):
    rng = np.random.default_rng(2)
    x = {"mixed": rng.standard_normal((5, 7)) * 3,
         "positive": rng.uniform(0.5, 9, (5, 7)),
         "negative": -rng.uniform(0.5, 9, (5, 7)),
         "zeros": np.zeros((5, 7)),
         "tiny": rng.standard_normal((5, 7)) * 1e-30}[kind].astype(np.float32)
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    _compare(_graph(node, {"x": x}, {}), {"x": x}, reference=kind != "zeros")


@pytest.mark.parametrize("a_dtype,b_dtype", [(U8, U8), (U8, I8), (I8, I8)])
@pytest.mark.parametrize("zero_points", ["none", "scalar", "per_column", "per_row"])
def test_matmul_integer(a_dtype, b_dtype, zero_points):
    rng = np.random.default_rng(3)
    a, b = _ints(rng, a_dtype, (6, 9)), _ints(rng, b_dtype, (9, 5))
    inits, names = {}, ["a", "b"]
    az, bz = np.zeros((), a_dtype), np.zeros((), b_dtype)
    if zero_points != "none":
        az = _ints(rng, a_dtype, (6,) if zero_points == "per_row" else ())
        bz = _ints(rng, b_dtype, (5,) if zero_points == "per_column" else ())
        inits = {"az": az, "bz": bz}
        names += ["az", "bz"]
    model = _graph(helper.make_node("MatMulInteger", names, ["y"]), {"a": a, "b": b}, inits)
    if zero_points != "per_row":
        _compare(model, {"a": a, "b": b})
    # Per-row zero points of a are in the spec, but onnxruntime refuses them and the
    # reference evaluator broadcasts them wrongly: int64 NumPy is the oracle.
    want = (a.astype(np.int64) - az.reshape(-1, 1).astype(np.int64)) @ \
        (b.astype(np.int64) - bz.astype(np.int64))
    got, = pyconv.InferenceSession(model.SerializeToString()).run(None, {"a": a, "b": b})
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_matmul_integer_batched():
    rng = np.random.default_rng(4)
    a, b = _ints(rng, U8, (2, 3, 4, 8)), _ints(rng, I8, (8, 6))
    node = helper.make_node("MatMulInteger", ["a", "b", "az"], ["y"])
    _compare(_graph(node, {"a": a, "b": b}, {"az": np.uint8(131)}), {"a": a, "b": b})


@pytest.mark.parametrize("case", [
    dict(shape=(1, 4, 9, 9), w=(6, 4, 3, 3), pads=[1, 1, 1, 1]),
    dict(shape=(2, 6, 10, 7), w=(6, 2, 3, 3), group=3, strides=[2, 1], dilations=[1, 2]),
    dict(shape=(1, 4, 8, 8), w=(4, 1, 3, 3), group=4, auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(shape=(1, 3, 11), w=(5, 3, 4), pads=[2, 1]),
    dict(shape=(1, 2, 4, 5, 5), w=(3, 2, 2, 3, 3), pads=[0, 1, 1, 1, 1, 0]),
])
@pytest.mark.parametrize("w_dtype", [U8, I8])
def test_conv_integer(case, w_dtype):
    rng = np.random.default_rng(5)
    case = dict(case)
    x = _ints(rng, U8, case.pop("shape"))
    w = _ints(rng, w_dtype, case.pop("w"))
    inits = {"w": w, "xz": np.uint8(rng.integers(0, 256)),
             "wz": _ints(rng, w_dtype, ())}
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], **case)
    _compare(_graph(node, {"x": x}, inits), {"x": x})


@pytest.mark.parametrize("case", [
    dict(shape=(1, 1, 16, 21), w=(8, 1, 3, 3), pads=[1, 1, 1, 1], strides=[2, 2]),
    dict(shape=(2, 16, 9, 11), w=(24, 16, 3, 3), pads=[1, 0, 2, 1]),
    dict(shape=(1, 24, 7, 9), w=(40, 24, 1, 1)),
    dict(shape=(1, 12, 10, 9), w=(12, 4, 3, 3), group=3, strides=[2, 1], dilations=[1, 2]),
    dict(shape=(1, 8, 9, 9), w=(8, 1, 3, 3), group=8, auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(shape=(1, 4, 6, 6), w=(4, 4, 5, 5), pads=[3, 3, 3, 3]),
])
@pytest.mark.parametrize("x_dtype,w_dtype,per_channel", [
    (U8, U8, False), (U8, I8, False), (U8, U8, True), (I8, I8, True), (I8, U8, False)])
def test_conv_integer_on_the_int8_conv_kernels(case, x_dtype, w_dtype, per_channel):
    """2-D ConvInteger with constant weights runs on qgemm.QConv2d's int32 output, bound to
    the planned shape; the input's zero point is a graph input (DynamicQuantizeLinear's
    output in a dynamically quantized model) that changes from run to run."""
    rng = np.random.default_rng(11 + per_channel)
    case = dict(case)
    shape, w = case.pop("shape"), _ints(rng, w_dtype, case.pop("w"))
    wz = _ints(rng, w_dtype, (w.shape[0],) if per_channel else ())
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], **case)
    xz0 = np.asarray(0, x_dtype)
    model = _graph(node, {"x": _ints(rng, x_dtype, shape), "xz": xz0}, {"w": w, "wz": wz})
    session = pyconv.InferenceSession(model.SerializeToString())
    (op,) = [step.op for step in session._program.steps if step.node.op_type == "ConvInteger"]
    assert op.fast is not None
    # onnxruntime: uint8 x, per-tensor weight zero point only
    runtime = x_dtype == U8 and not per_channel
    ort_session = ort.InferenceSession(model.SerializeToString(), providers=[
        "CPUExecutionProvider"]) if runtime else None
    for run in range(3):
        feeds = {"x": _ints(rng, x_dtype, shape), "xz": _ints(rng, x_dtype, ())}
        got = session.run(None, feeds)[0]
        want = ReferenceEvaluator(model).run(None, feeds)[0] if not per_channel else None
        if want is None:        # the reference evaluator takes per-tensor zero points only
            want = _conv_integer_int64(feeds["x"], feeds["xz"], w, wz, model)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want)
        if runtime:
            np.testing.assert_array_equal(got, ort_session.run(None, feeds)[0])
    (plan,) = session._program.plans.values()
    (call,) = [c for c, *_, step in plan._pool[-1].steps
               if step.node.op_type == "ConvInteger"]
    assert call.__qualname__.startswith("ConvInteger.bind")     # the bound C conv


def _conv_integer_int64(x, xz, w, wz, model):
    """ConvInteger as a float64 Conv of the shifted integers (exact below 2 ** 53)."""
    node = model.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if isinstance(attrs.get("auto_pad"), bytes):
        attrs["auto_pad"] = attrs["auto_pad"].decode()
    conv = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    xs = x.astype(np.float64) - np.float64(xz)
    ws = w.astype(np.float64) - wz.astype(np.float64).reshape(-1, 1, 1, 1)
    g = _graph(conv, {"x": xs}, {"w": ws})
    y = ReferenceEvaluator(g).run(None, {"x": xs})[0]
    return np.rint(y).astype(np.int64).astype(np.int32)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("out_dtype", [U8, I8])
def test_qlinear_conv(per_channel, out_dtype):
    rng = np.random.default_rng(6)
    x = _ints(rng, out_dtype, (2, 4, 9, 9))     # onnxruntime: x and y of one type
    w = _ints(rng, I8, (6, 2, 3, 3))
    m = 6 if per_channel else 1
    inits = {"xs": np.float32(0.02), "xz": _ints(rng, out_dtype, ()), "w": w,
             "ws": rng.uniform(0.001, 0.01, m).astype(np.float32).reshape(
                 (m,) if per_channel else ()),
             "wz": np.zeros((m,) if per_channel else (), I8),
             "ys": np.float32(0.05), "yz": _ints(rng, out_dtype, ()),
             "b": rng.integers(-3000, 3000, 6).astype(np.int32)}
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz",
                                            "b"], ["y"], group=2, pads=[1, 0, 1, 2],
                            strides=[1, 2])
    _compare(_graph(node, {"x": x}, inits), {"x": x})


@pytest.mark.parametrize("bias_size", [3000, 30_000_000])
@pytest.mark.parametrize("stride", [1, 2])
def test_qlinear_conv_depthwise(bias_size, stride):
    # Depthwise: exact float32 sums on the float kernels (small bias), or the integer
    # kernel where a sum could pass 2 ** 24 (huge bias); both onnxruntime's integers.
    rng = np.random.default_rng(16)
    x = _ints(rng, U8, (2, 12, 11, 10))
    inits = {"xs": np.float32(0.02), "xz": np.uint8(131), "w": _ints(rng, I8, (12, 1, 3, 3)),
             "ws": rng.uniform(0.001, 0.01, 12).astype(np.float32),
             "wz": np.zeros(12, I8), "ys": np.float32(0.05 if bias_size < 1e6 else 25.0),
             "yz": np.uint8(100),
             "b": rng.integers(-bias_size, bias_size, 12).astype(np.int32)}
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz",
                                            "b"], ["y"], group=12, pads=[1, 1, 1, 1],
                            strides=[stride, stride])
    got = _compare(_graph(node, {"x": x}, inits), {"x": x})[0]
    assert len(np.unique(got)) > (20 if bias_size < 1e6 else 8)    # not all saturated


@pytest.mark.parametrize("dtypes", [(U8, U8, U8), (I8, I8, I8), (U8, I8, U8)])
def test_qlinear_matmul(dtypes):
    rng = np.random.default_rng(7)
    a_dtype, b_dtype, y_dtype = dtypes
    a, b = _ints(rng, a_dtype, (3, 5, 16)), _ints(rng, b_dtype, (16, 7))
    inits = {"as": np.float32(0.03), "az": _ints(rng, a_dtype, ()), "b": b,
             "bs": np.float32(0.02), "bz": _ints(rng, b_dtype, ()),
             "ys": np.float32(0.4), "yz": _ints(rng, y_dtype, ())}
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"],
                            ["y"])
    _compare(_graph(node, {"a": a}, inits), {"a": a})


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("dtype", [U8, I8])
def test_qlinear_binary_contrib_ops(op, dtype):
    rng = np.random.default_rng(9)
    a, b = _ints(rng, dtype, (2, 3, 4, 5)), _ints(rng, dtype, (3, 1, 5))
    inits = {"as": np.float32(0.05), "az": _ints(rng, dtype, ()), "b": b,
             "bs": np.float32(0.03), "bz": _ints(rng, dtype, ()),
             "ys": np.float32(0.08 if op == "QLinearAdd" else 0.2),
             "yz": _ints(rng, dtype, ())}
    node = helper.make_node(op, ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"],
                            domain="com.microsoft")
    model = _graph(node, {"a": a}, inits, domain_opsets=[("com.microsoft", 1)])
    got, = pyconv.InferenceSession(model.SerializeToString()).run(None, {"a": a})
    want, = ort.InferenceSession(model.SerializeToString(),
                                 providers=["CPUExecutionProvider"]).run(None, {"a": a})
    # Contrib ops without a spec of their rounding: onnxruntime's vector code may land
    # one step away on ties.
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


@pytest.mark.parametrize("channels_last", [0, 1])
def test_qlinear_global_average_pool(channels_last):
    rng = np.random.default_rng(10)
    x = _ints(rng, U8, (2, 5, 6, 3) if channels_last else (2, 3, 5, 6))
    inits = {"xs": np.float32(0.05), "xz": np.uint8(100), "ys": np.float32(0.04),
             "yz": np.uint8(90)}
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "xs", "xz", "ys", "yz"],
                            ["y"], domain="com.microsoft", channels_last=channels_last)
    model = _graph(node, {"x": x}, inits, domain_opsets=[("com.microsoft", 1)])
    got, = pyconv.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    want, = ort.InferenceSession(model.SerializeToString(),
                                 providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_bad_inputs_name_the_node():
    x = np.ones((2, 3), np.float32)
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], name="q", axis=1)
    model = _graph(node, {"x": x}, {"s": np.ones(4, np.float32), "z": np.zeros(4, U8)})
    with pytest.raises(InvalidArgument, match=r"QuantizeLinear node 'q'.*y_scale has shape"):
        pyconv.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"], name="mm")
    a = np.ones((2, 3), np.float32)
    model = _graph(node, {"a": a}, {"b": np.ones((3, 2), U8)})
    with pytest.raises(InvalidDType, match=r"MatMulInteger node 'mm'.*uint8"):
        pyconv.InferenceSession(model.SerializeToString()).run(None, {"a": a})
    # ConvInteger with constant weights (the C conv): the input's channels and its zero
    # point's type are checked as on the NumPy path
    node = helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"], name="ci")
    x = np.ones((1, 4, 5, 5), U8)
    model = _graph(node, {"x": x, "xz": np.uint8(3)}, {"w": np.ones((2, 3, 3, 3), U8)})
    session = pyconv.InferenceSession(model.SerializeToString())
    with pytest.raises(InvalidArgument, match=r"ConvInteger node 'ci'.*input channels 4"):
        session.run(None, {"x": x, "xz": np.uint8(3)})
    x = np.ones((1, 3, 5, 5), U8)
    model = _graph(node, {"x": x, "xz": np.int8(3)}, {"w": np.ones((2, 3, 3, 3), U8)})
    with pytest.raises(InvalidDType, match=r"ConvInteger node 'ci'.*x_zero_point is int8"):
        pyconv.InferenceSession(model.SerializeToString()).run(None, {"x": x,
                                                                      "xz": np.int8(3)})


def _float_cnn(rng):
    """A small float CNN (conv, relu, pool, conv, global pool, gemm) to quantize."""
    def conv(name, x, y, c_in, c_out, **kw):
        inits[f"{name}_w"] = (rng.standard_normal((c_out, c_in, 3, 3)) * 0.3).astype(
            np.float32)
        inits[f"{name}_b"] = (rng.standard_normal(c_out) * 0.1).astype(np.float32)
        return helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [y], pads=[1] * 4,
                                **kw)
    inits = {"fc_w": (rng.standard_normal((16, 10)) * 0.3).astype(np.float32),
             "fc_b": np.zeros(10, np.float32), "shape": np.array([1, 16], np.int64)}
    nodes = [conv("c1", "x", "a", 3, 8), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("MaxPool", ["b"], ["c"], kernel_shape=[2, 2], strides=[2, 2]),
             conv("c2", "c", "d", 8, 16, strides=[2, 2]),
             helper.make_node("Relu", ["d"], ["e"]),
             helper.make_node("GlobalAveragePool", ["e"], ["f"]),
             helper.make_node("Reshape", ["f", "shape"], ["g"]),
             helper.make_node("MatMul", ["g", "fc_w"], ["h"]),
             helper.make_node("Add", ["h", "fc_b"], ["logits"])]
    return B.model(nodes, [("x", [1, 3, 16, 16])], [("logits", [1, 10])], inits)


@pytest.mark.parametrize("mode", ["static_qdq", "static_qoperator", "dynamic"])
def test_models_quantized_by_onnxruntime(mode, tmp_path):
    import onnx
    from onnxruntime import quantization as q
    rng = np.random.default_rng(8)
    src = tmp_path / "float.onnx"
    onnx.save(_float_cnn(rng), src)
    dst = tmp_path / f"{mode}.onnx"
    inputs = [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(8)]
    if mode == "dynamic":
        q.quantize_dynamic(str(src), str(dst), weight_type=q.QuantType.QUInt8)
    else:
        class Reader(q.CalibrationDataReader):
            def __init__(self):
                self.items = iter({"x": x} for x in inputs)

            def get_next(self):
                return next(self.items, None)
        fmt = q.QuantFormat.QDQ if mode == "static_qdq" else q.QuantFormat.QOperator
        q.quantize_static(str(src), str(dst), Reader(), quant_format=fmt,
                          per_channel=True)
    model = onnx.load(dst)
    sess = pyconv.InferenceSession(str(dst))
    ref = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    for x in inputs[:3]:
        got, = sess.run(None, {"x": x})
        want, = ref.run(None, {"x": x})
        # Quantized: onnxruntime may fuse Q/DQ into integer kernels whose rounding of
        # intermediate values differs by one step; allow a few output quanta.
        step = float(np.abs(want).max()) / 64
        np.testing.assert_allclose(got, want, atol=step, err_msg=str(
            sorted({n.op_type for n in model.graph.node})))
