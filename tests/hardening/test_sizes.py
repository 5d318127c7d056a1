"""Output sizes are checked before anything is allocated (arithmetic.check_tensor_size,
the one gate), and workspaces are sized by the work, not by attribute values."""
import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyconv
import pyconv.functional as F
from pyconv.arithmetic import MAX_TENSOR_ELEMENTS
from pyconv.errors import ShapeError


def _session(nodes, inputs, outputs, inits=(), opset=19):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=9)
    return model.SerializeToString()


def _pad_model(elem):
    return _session(
        [helper.make_node("Pad", ["x", "pads"], ["y"], name="pad")],
        [helper.make_tensor_value_info("x", elem, None),
         helper.make_tensor_value_info("pads", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("y", elem, None)])


@pytest.mark.parametrize("dtype,elem", [(np.uint8, TensorProto.UINT8),
                                        (np.int64, TensorProto.INT64),
                                        (np.float32, TensorProto.FLOAT)])
@pytest.mark.parametrize("extra", [MAX_TENSOR_ELEMENTS - 2 + 1, 1 << 40])
def test_onnx_pad_output_size_is_checked_before_allocation(dtype, elem, extra):
    # 2 elements padded by `extra`: 2^31 + 1 elements (just over) and 2^40 (4 TiB float32)
    sess = pyconv.InferenceSession(_pad_model(elem))
    with pytest.raises(ShapeError, match="pad.*elements"):
        sess.run(None, {"x": np.ones(2, dtype), "pads": np.array([0, extra], np.int64)})


@pytest.mark.parametrize("pad", [(0, MAX_TENSOR_ELEMENTS), (1 << 40, 0), (2**31, 2**31)])
def test_functional_pad_output_size_is_checked(pad):
    with pytest.raises(ShapeError, match=r"pad: output shape .* elements"):
        F.pad(np.ones((1, 1), np.float32), pad)


def test_max_unpool_output_shape_input_is_checked():
    """ONNX MaxUnpool's output_shape input: a 37 GiB request is refused by the gate."""
    model = _session(
        [helper.make_node("MaxUnpool", ["x", "i", "shape"], ["y"], kernel_shape=[2, 2],
                          strides=[2, 2], name="unpool")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2]),
         helper.make_tensor_value_info("i", TensorProto.INT64, [1, 1, 2, 2]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], opset=11)
    sess = pyconv.InferenceSession(model)
    feed = {"x": np.ones((1, 1, 2, 2), np.float32),
            "i": np.array([0, 3, 8, 15], np.int64).reshape(1, 1, 2, 2)}
    with pytest.raises(ShapeError, match="unpool.*output_shape"):
        sess.run(None, dict(feed, shape=np.array([1, 1, 100_000, 100_000], np.int64)))
    with pytest.raises(ShapeError, match="unpool.*negative"):
        sess.run(None, dict(feed, shape=np.array([1, 1, -5, 4], np.int64)))


@pytest.mark.parametrize("fn", [F.adaptive_avg_pool2d, F.adaptive_max_pool2d])
def test_adaptive_pool_output_size_is_checked(fn):
    x = np.ones((1, 2, 3, 3), np.float32)
    with pytest.raises(ShapeError, match="adaptive_.*elements"):
        fn(x, (2**20, 2**20))


@pytest.mark.parametrize("strides", [(1, 1 << 24), (1 << 24, 1), (2**31 - 1, 2**31 - 1)])
def test_depthwise_workspace_is_not_sized_by_the_stride(strides):
    """A stride (1, 2^24) took 46 s and 6.2 GB, 2^31 - 1 asked for 768 GiB: a dim with one
    output never steps, so no stride phase is held; results match onnxruntime."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the reference here")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    model = _session(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=3, strides=list(strides),
                          pads=[1, 1, 1, 1], name="dw")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 11, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")], opset=17)
    x = rng.standard_normal((2, 3, 11, 5)).astype(np.float32)
    start = time.perf_counter()
    got = pyconv.InferenceSession(model).run(None, {"x": x})[0]
    elapsed = time.perf_counter() - start
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert elapsed < 30, f"a 2x3x11x5 depthwise conv took {elapsed:.1f} s"


def test_depthwise_functional_workspace_is_not_sized_by_the_stride():
    from pyconv._ext.conv import ConvKernel  # noqa: F401  (the plan below reports it)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 11, 5)).astype(np.float32)
    w = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    plan = F.ConvPlan(w, None, stride=(1, 2**31 - 1), padding=1, groups=3)
    shape = plan.reshape(x.shape)
    assert shape.algorithm == "depthwise"
    assert shape.workspace_bytes < 1 << 20, shape.workspace_bytes
    want = F.conv2d(x, w, None, stride=(1, 1), padding=1, groups=3)[:, :, :, :1]
    np.testing.assert_allclose(plan.run(x), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("pads,strides", [([0, 2**29, 0, 2**29], [1, 2**29]),
                                          ([2**29, 1, 2**29, 1], [2**29, 2]),
                                          ([3, 2**30, 3, 2**30], [1, 2**30 - 1])])
def test_depthwise_workspace_is_not_sized_by_padding_and_stride(pads, strides):
    """Several outputs, far apart in a huge padding: the depthwise rows would hold the
    padded span (tens of GiB); such a conv runs implicit im2col, sized by its taps."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the reference here")
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    model = _session(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], group=3, strides=strides,
                          pads=pads, name="dw")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 11, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")], opset=17)
    x = rng.standard_normal((2, 3, 11, 5)).astype(np.float32)
    got = pyconv.InferenceSession(model).run(None, {"x": x})[0]
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    plan = F.ConvPlan(w, b, stride=tuple(strides), padding=(pads[0], pads[1]), groups=3)
    shape = plan.reshape(x.shape)
    assert shape.workspace_bytes < 1 << 24, (shape.algorithm, shape.workspace_bytes)


@pytest.mark.parametrize("op,dtype,elem", [("Add", np.float32, TensorProto.FLOAT),
                                           ("Add", np.int64, TensorProto.INT64),
                                           ("Max", np.float32, TensorProto.FLOAT),
                                           ("Where", np.float32, TensorProto.FLOAT),
                                           ("Equal", np.int64, TensorProto.INT64),
                                           ("MatMul", np.float32, TensorProto.FLOAT)])
def test_broadcast_outputs_are_checked(op, dtype, elem):
    """Inputs of 2^17 elements broadcast (or batch) to 2^34: refused by the gate."""
    a = np.ones((1 << 17, 1, 1, 1), dtype)
    b = np.ones((1, 1 << 17, 1, 1), dtype)
    names = ["c", "a", "b"] if op == "Where" else ["a", "b"]
    inputs = [helper.make_tensor_value_info(n, elem, None) for n in ("a", "b")]
    feed = {"a": a, "b": b}
    if op == "Where":
        inputs.append(helper.make_tensor_value_info("c", TensorProto.BOOL, None))
        feed["c"] = np.ones((1, 1, 1, 1), bool)
    out = TensorProto.BOOL if op == "Equal" else elem
    model = _session([helper.make_node(op, names, ["y"], name="big")], inputs,
                     [helper.make_tensor_value_info("y", out, None)], opset=17)
    with pytest.raises(ShapeError, match="big.*elements"):
        pyconv.InferenceSession(model).run(None, feed)
