"""InferenceSession: API parity with onnxruntime, dynamic shapes, errors, profiling,
threads, external data safety, and the onnx backend's run_node."""
import json
import os
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyconv
import pyconv.backend
from pyconv.errors import InvalidArgument, InvalidModel, ShapeError, UnsupportedOperator
from tests.graph import _build as B


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def conv_model(rng, batch="N", h="H", w="W"):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1],
                              name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2],
                              strides=[2, 2], name="pool")]
    return B.model(nodes, [("x", [batch, 3, h, w])], [("y", [batch, 4, None, None])],
                   {"w": B.rand(rng, 4, 3, 3, 3), "b": B.rand(rng, 4)})


def test_inputs_outputs_metadata(rng):
    s = pyconv.InferenceSession(conv_model(rng).SerializeToString())
    (i,), (o,) = s.get_inputs(), s.get_outputs()
    assert (i.name, i.shape, i.type) == ("x", ["N", 3, "H", "W"], "tensor(float)")
    assert o.name == "y" and o.type == "tensor(float)" and o.shape[:2] == ["N", 4]
    assert s.get_providers() == ["CPUExecutionProvider"]


def test_unknown_element_type_is_named_not_raised():
    """A type this onnx release has no name for (a corrupt or newer model) is described,
    not a ValueError from get_inputs (found by the model fuzzer)."""
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 250, [1, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert pyconv.InferenceSession(m.SerializeToString()).get_inputs()[0].type == \
        "tensor(unknown type 250)"


def test_matches_onnxruntime_with_dynamic_dims_and_caches_plans(rng):
    m = conv_model(rng)
    s = pyconv.InferenceSession(m)
    for shape in [(1, 3, 8, 8), (3, 3, 9, 7), (1, 3, 8, 8), (2, 3, 16, 10)]:
        x = B.rand(rng, *shape)
        want = B.ort_run(m, {"x": x})[0]
        for _ in range(2):
            np.testing.assert_allclose(s.run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s.run(["y"], {"x": x})[0], want, rtol=1e-5, atol=1e-5)
    assert len(s._program.plans) == 3


def test_loads_path_bytes_and_proto(rng, tmp_path):
    m = conv_model(rng)
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    x = B.rand(rng, 1, 3, 6, 6)
    outs = [pyconv.InferenceSession(src).run(None, {"x": x})[0]
            for src in (str(p), p, m.SerializeToString(), m)]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


@pytest.mark.parametrize("feed,match", [
    ({}, r"missing input 'x'.*tensor\(float\)"),
    ({"x": np.zeros((1, 3, 4, 4), np.float32), "z": np.zeros(1)}, r"unknown input.*'z'"),
    ({"x": np.zeros((1, 3, 4, 4), np.float64)}, r"input 'x'.*tensor\(float\).*float64"),
    ({"x": np.zeros((3, 4, 4), np.float32)}, r"input 'x'.*rank 4.*\(3, 4, 4\)"),
    ({"x": np.zeros((1, 5, 4, 4), np.float32)}, r"input 'x'.*dim 1 must be 3.*\(1, 5, 4, 4\)"),
])
def test_bad_feeds(rng, feed, match):
    s = pyconv.InferenceSession(conv_model(rng))
    with pytest.raises(InvalidArgument, match=match):
        s.run(None, feed)


def _ort_session(m):
    import onnxruntime as ort
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("declared", [
    [-1, 3, -1, -1],                    # Paddle / tf2onnx
    ["?", 3, "?", "?"],                 # one name used for every unknown dim
    [None, 3, None, None],              # no value, no name
    ["", 3, "", ""],                    # an empty name
    ["batch", 3, -1, "?"],              # mixed
    [-7, 3, "", "w"],
])
def test_free_dims_take_any_size_as_in_onnxruntime(rng, declared):
    """Negative, '?', unnamed and empty dims are free and reported as onnxruntime
    reports them; a name shared by dims is not enforced (onnxruntime does not)."""
    m = conv_model(rng)
    m.graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                            declared))
    s, ref = pyconv.InferenceSession(m), _ort_session(m)
    assert s.get_inputs()[0].shape == ref.get_inputs()[0].shape
    for shape in [(1, 3, 8, 8), (2, 3, 9, 5), (3, 3, 4, 12)]:
        x = B.rand(rng, *shape)
        np.testing.assert_allclose(s.run(None, {"x": x})[0],
                                   ref.run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(InvalidArgument, match=r"input 'x'.*dim 1 must be 3"):
        s.run(None, {"x": B.rand(rng, 1, 4, 8, 8)})
    with pytest.raises(InvalidArgument, match=r"input 'x'.*rank 4"):
        s.run(None, {"x": B.rand(rng, 3, 8, 8)})


def test_named_dims_are_not_enforced_across_inputs(rng):
    """onnxruntime runs inputs whose 'N' differ (and dims named alike in one input);
    a node that needs them equal fails, naming itself."""
    nodes = [helper.make_node("ReduceSum", ["a"], ["ya"], keepdims=0),
             helper.make_node("ReduceSum", ["b"], ["yb"], keepdims=0)]
    m = B.model(nodes, [("a", ["N", "N"]), ("b", ["N", 3])], [("ya", []), ("yb", [])])
    s, ref = pyconv.InferenceSession(m), _ort_session(m)
    assert [i.shape for i in s.get_inputs()] == [i.shape for i in ref.get_inputs()]
    feeds = {"a": B.rand(rng, 2, 5), "b": B.rand(rng, 4, 3)}
    for got, want in zip(s.run(None, feeds), ref.run(None, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    m = B.model([helper.make_node("Add", ["a", "b"], ["y"], name="add")],
                [("a", ["N", 3]), ("b", ["N", 3])], [("y", ["N", 3])])
    with pytest.raises(pyconv.errors.ShapeError, match=r"Add node 'add'.*\(2, 3\).*\(4, 3\)"):
        pyconv.InferenceSession(m).run(None, {"a": np.zeros((2, 3), np.float32),
                                              "b": np.zeros((4, 3), np.float32)})


def test_unknown_output_name(rng):
    s = pyconv.InferenceSession(conv_model(rng))
    with pytest.raises(InvalidArgument, match="unknown output 'nope'"):
        s.run(["nope"], {"x": np.zeros((1, 3, 4, 4), np.float32)})


def test_shape_error_names_the_node(rng):
    s = pyconv.InferenceSession(conv_model(rng))
    with pytest.raises(pyconv.errors.PyconvError, match="pool"):
        s.run(None, {"x": np.zeros((1, 3, 1, 1), np.float32)})


@pytest.mark.parametrize("data", [b"", b"not an onnx model at all \x00\x01\x02",
                                  b"\x08\x07\x12\x04ab"])
def test_garbage_bytes_are_invalid_model(data):
    with pytest.raises(InvalidModel):
        pyconv.InferenceSession(data)


def test_truncated_and_missing_files(rng, tmp_path):
    data = conv_model(rng).SerializeToString()
    p = tmp_path / "t.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidModel):
        pyconv.InferenceSession(str(p))
    with pytest.raises(InvalidModel, match="cannot read"):
        pyconv.InferenceSession(str(tmp_path / "missing.onnx"))


def test_unsupported_operators_listed_at_creation():
    # Op types no release will register, so the test does not move as ops are added.
    nodes = [helper.make_node("NoSuchOpA", ["x"], ["a"], name="e1"),
             helper.make_node("NoSuchOpB", ["a"], ["b"], name="f1"),
             helper.make_node("NoSuchOpA", ["b"], ["c"], name="e2"),
             helper.make_node("Relu", ["c"], ["y"], name="r")]
    m = B.model(nodes, [("x", [2])], [("y", [2])])
    with pytest.raises(UnsupportedOperator) as e:
        pyconv.InferenceSession(m)
    msg = str(e.value)
    assert "NoSuchOpA" in msg and "'e1'" in msg and "'e2'" in msg and "NoSuchOpB" in msg \
        and "'f1'" in msg
    assert "Relu" not in msg


def test_bad_attribute_names_the_node(rng):
    m = B.model([helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SIDEWAYS",
                                  name="weird")],
                [("x", [1, 3, 4, 4])], [("y", None)], {"w": B.rand(rng, 2, 3, 3, 3)})
    with pytest.raises(pyconv.errors.PyconvError, match="Conv node 'weird'.*auto_pad"):
        pyconv.InferenceSession(m)


def test_dangling_input_and_cycle_are_invalid():
    m = B.model([helper.make_node("Relu", ["ghost"], ["y"])], [("x", [1])], [("y", [1])])
    with pytest.raises(InvalidModel, match="ghost"):
        pyconv.InferenceSession(m)
    m = B.model([helper.make_node("Add", ["x", "b"], ["a"]),
                 helper.make_node("Relu", ["a"], ["b"]),
                 helper.make_node("Identity", ["a"], ["y"])], [("x", [1])], [("y", [1])])
    with pytest.raises(InvalidModel, match="cycle"):
        pyconv.InferenceSession(m)


def _external_model(tmp_path, location, data=None):
    w = np.arange(6, dtype=np.float32)
    t = numpy_helper.from_array(w, "w")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(w.nbytes))):
        e = t.external_data.add()
        e.key, e.value = k, v
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])], [t])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    (d / "m.onnx").write_bytes(m.SerializeToString())
    return d / "m.onnx", w


def test_external_data_inside_the_directory(tmp_path):
    path, w = _external_model(tmp_path, "weights.bin")
    (path.parent / "weights.bin").write_bytes(w.tobytes())
    y = pyconv.InferenceSession(str(path)).run(None, {"x": np.ones(6, np.float32)})[0]
    np.testing.assert_array_equal(y, w + 1)


@pytest.mark.parametrize("location", ["/etc/passwd", "../secret.bin", "sub/../../secret.bin",
                                      "link.bin"])
def test_external_data_outside_the_directory_is_refused(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(np.zeros(6, np.float32).tobytes())
    path, _ = _external_model(tmp_path, location)
    if location == "link.bin":
        os.symlink(tmp_path / "secret.bin", path.parent / "link.bin")
    with pytest.raises(InvalidModel, match="external data"):
        pyconv.InferenceSession(str(path))


def test_external_data_too_short(tmp_path):
    path, w = _external_model(tmp_path, "weights.bin")
    (path.parent / "weights.bin").write_bytes(w.tobytes()[:10])
    with pytest.raises(InvalidModel, match="needs 24"):
        pyconv.InferenceSession(str(path))


def test_profiling(rng, tmp_path):
    opts = pyconv.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / "prof")
    s = pyconv.InferenceSession(conv_model(rng), opts)
    x = B.rand(rng, 1, 3, 8, 8)
    s.run(None, {"x": x})
    s.run(None, {"x": x})
    names = {r["node"] for r in s.profile}
    assert names == {"conv", "pool"}              # relu is fused into conv
    assert all(r["duration_us"] >= 0 for r in s.profile) and {r["run"] for r in s.profile} \
        == {0, 1}
    path = s.end_profiling()
    events = json.load(open(path))
    assert len(events) == 4 and events[0]["cat"] == "Node" and "dur" in events[0]


def test_concurrent_runs_match_serial(rng):
    m = conv_model(rng)
    s = pyconv.InferenceSession(m)
    xs = [B.rand(rng, 1 + i % 3, 3, 12, 10) for i in range(8)]
    serial = [s.run(None, {"x": x})[0] for x in xs]
    results = [None] * 8

    def work(i):
        for _ in range(5):
            results[i] = s.run(None, {"x": xs[i]})[0]
            np.testing.assert_array_equal(results[i], serial[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r, w in zip(results, serial):
        np.testing.assert_array_equal(r, w)


def test_intra_op_threads_are_restored(rng):
    previous = pyconv.get_num_threads()
    opts = pyconv.SessionOptions()
    opts.intra_op_num_threads = 1
    s = pyconv.InferenceSession(conv_model(rng), opts)
    s.run(None, {"x": B.rand(rng, 1, 3, 4, 4)})
    assert pyconv.get_num_threads() == previous


def test_outputs_are_never_constants():
    m = B.model([helper.make_node("Identity", ["c"], ["y"])], [], [("y", [2])],
                {"c": np.ones(2, np.float32)})
    s = pyconv.InferenceSession(m)
    y = s.run(None, {})[0]
    y[0] = 5
    assert s.run(None, {})[0][0] == 1


def test_backend_run_node_and_device():
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    x = np.random.default_rng(0).random((1, 2, 5, 5), np.float32)
    w = np.random.default_rng(1).random((3, 2, 3, 3), np.float32)
    y = pyconv.backend.run_node(node, [x, w])[0]
    np.testing.assert_allclose(y, pyconv.functional.conv2d(x, w, padding=1), rtol=1e-6)
    assert pyconv.backend.supports_device("CPU") and not pyconv.backend.supports_device("CUDA")


def bound_steps(session):
    """Op types of the steps the planned runs of the session's only plan call bound."""
    import functools
    (plan,) = session._program.plans.values()
    arena = plan._pool[-1]
    return [step.node.op_type for call, *_, step in arena.steps
            if not isinstance(call, functools.partial)]


def test_bound_steps_match_onnxruntime(rng):
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=8),
             helper.make_node("Add", ["c2", "p1"], ["a2"]),          # residual, fused
             helper.make_node("AveragePool", ["a2"], ["p2"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("ConvTranspose", ["p2", "w3"], ["c3"], strides=[2, 2]),
             helper.make_node("Sigmoid", ["c3"], ["s3"]),            # fused
             helper.make_node("GlobalAveragePool", ["s3"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1)]
    m = B.model(nodes, [("x", [1, 3, 10, 12])], [("y", None)],
                {"w1": B.rand(rng, 8, 3, 3, 3), "b1": B.rand(rng, 8),
                 "w2": B.rand(rng, 8, 1, 3, 3), "w3": B.rand(rng, 8, 4, 2, 2),
                 "wg": B.rand(rng, 5, 4), "bg": B.rand(rng, 5)})
    s = pyconv.InferenceSession(m)
    for _ in range(3):
        x = B.rand(rng, 1, 3, 10, 12)
        want = B.ort_run(m, {"x": x})[0]
        for _ in range(2):
            np.testing.assert_allclose(s.run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-5)
    assert bound_steps(s) == ["FusedConv", "MaxPool", "FusedConv", "AveragePool",
                              "FusedConvTranspose", "GlobalAveragePool", "Flatten", "Gemm"]


def test_shape_ops_are_bound_steps_matching_onnxruntime(rng):
    """Reshape (constant shape, with 0 and -1), Flatten, Squeeze, Unsqueeze (axes as an
    input) and Transpose run as bound views; their results match onnxruntime, also when a
    view op meets an input of another shape (the general path)."""
    i64 = lambda *v: np.array(v, np.int64)
    nodes = [helper.make_node("Reshape", ["x", "s1"], ["r1"]),             # (2, 12, 5)
             helper.make_node("Transpose", ["r1"], ["t1"], perm=[0, 2, 1]),
             helper.make_node("Relu", ["t1"], ["a1"]),
             helper.make_node("Unsqueeze", ["a1", "ax"], ["u1"]),           # (2, 1, 5, 12)
             helper.make_node("Flatten", ["u1"], ["f1"], axis=2),          # (2, 60)
             helper.make_node("Reshape", ["f1", "s2"], ["r2"]),            # (2, 60, 1)
             helper.make_node("Squeeze", ["r2", "ax2"], ["y"])]
    m = B.model(nodes, [("x", [2, 3, 4, 5])], [("y", None)],
                {"s1": i64(0, -1, 5), "ax": i64(1), "s2": i64(2, 60, 1), "ax2": i64(-1)})
    s = pyconv.InferenceSession(m)
    for _ in range(3):
        x = B.rand(rng, 2, 3, 4, 5)
        np.testing.assert_array_equal(s.run(None, {"x": x})[0], B.ort_run(m, {"x": x})[0])
    assert bound_steps(s) == ["Reshape", "Transpose", "Relu", "Unsqueeze", "Flatten",
                              "Reshape", "Squeeze"]
    # a bound view given another shape takes the op's run (which also reports errors)
    (plan,) = s._program.plans.values()
    calls = {step.node.op_type: call for call, *_, step in plan._pool[-1].steps}
    other = B.rand(rng, 4, 12, 5)
    np.testing.assert_array_equal(calls["Transpose"]([other])[0], other.transpose(0, 2, 1))
    np.testing.assert_array_equal(calls["Flatten"]([other])[0], other.reshape(48, 5))
    with pytest.raises(ShapeError, match="cannot squeeze axis"):
        calls["Squeeze"]([other, i64(-1)])


@pytest.mark.parametrize("attrs,consts", [
    ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
      "nearest_mode": "floor"}, {"scales": np.array([1, 1, 2, 2], np.float32)}),
    ({"mode": "linear"}, {"sizes": np.array([1, 3, 13, 7], np.int64)}),
    ({"mode": "nearest", "axes": [2, 3]}, {"scales": np.array([3, 0.5], np.float32)}),
], ids=["nearest-2x", "bilinear-sizes", "nearest-axes"])
def test_resize_with_constant_scales_is_a_bound_step(rng, attrs, consts):
    """Resize with constant scales or sizes binds the C kernel to the planned shape (its
    taps computed once); results match onnxruntime; another shape takes the op's run."""
    names = ["x", "roi", "scales", "sizes"]
    inputs = ["x", ""] + [n if n in consts else "" for n in names[2:]]
    while inputs[-1] == "":
        inputs.pop()
    nodes = [helper.make_node("Resize", inputs, ["r"], **attrs),
             helper.make_node("Relu", ["r"], ["y"])]
    m = B.model(nodes, [("x", [1, 3, "h", "w"])], [("y", None)], consts, opset=18)
    s = pyconv.InferenceSession(m)
    for _ in range(3):
        x = B.rand(rng, 1, 3, 6, 10) - 0.5
        np.testing.assert_allclose(s.run(None, {"x": x})[0], B.ort_run(m, {"x": x})[0],
                                   rtol=1e-6, atol=1e-6)
    assert bound_steps(s) == ["Resize", "Relu"]
    (plan,) = s._program.plans.values()
    calls = {step.node.op_type: call for call, *_, step in plan._pool[-1].steps}
    other = B.rand(rng, 1, 3, 4, 4)
    args = [other, None] + [consts.get(n) for n in names[2:len(inputs)]]
    np.testing.assert_allclose(np.maximum(calls["Resize"](args)[0], 0),
                               B.ort_run(m, {"x": other})[0], rtol=1e-6, atol=1e-6)


def test_bound_steps_take_the_general_path_when_shapes_depend_on_data(rng):
    # The conv's input shape comes from the values of an input: every feed has the same
    # signature (one plan), but the planned shapes only hold for the first.
    i64 = TensorProto.INT64
    g = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["r"]),
         helper.make_node("Conv", ["r", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [96]),
              helper.make_tensor_value_info("s", i64, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(B.rand(rng, 4, 3, 3, 3), "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    s = pyconv.InferenceSession(m)
    x = B.rand(rng, 96)
    for shape in ([1, 3, 4, 8], [2, 3, 4, 4], [1, 3, 8, 4], [1, 3, 4, 8]):
        feed = {"x": x, "s": np.array(shape, np.int64)}
        want = B.ort_run(m, feed)[0]
        for _ in range(2):
            np.testing.assert_allclose(s.run(None, feed)[0], want, rtol=1e-5, atol=1e-5)
    assert len(s._program.plans) == 1 and bound_steps(s) == ["Conv"]


def test_bound_steps_at_every_thread_count(rng):
    m = conv_model(rng)
    x = B.rand(rng, 1, 3, 40, 36)
    want = B.ort_run(m, {"x": x})[0]
    for n in (1, 2, 3):
        opts = pyconv.SessionOptions()
        opts.intra_op_num_threads = n
        s = pyconv.InferenceSession(m, opts)
        for _ in range(3):
            np.testing.assert_allclose(s.run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-5)
        assert bound_steps(s) == ["FusedConv"]


def test_a_checked_feed_signature_does_not_admit_other_feeds(rng):
    s = pyconv.InferenceSession(conv_model(rng))
    x = B.rand(rng, 1, 3, 8, 8)
    s.run(None, {"x": x})
    for feed, match in [({"x": x.astype(np.float64)}, "received dtype float64"),
                        ({"x": x, "z": x}, "unknown input"), ({}, "missing input"),
                        ({"x": x[0]}, "expected rank 4")]:
        with pytest.raises(InvalidArgument, match=match):
            s.run(None, feed)
    np.testing.assert_array_equal(s.run(None, {"x": x.tolist()})[0], s.run(None, {"x": x})[0])


def test_unknown_session_keywords_are_refused_not_ignored():
    """A SessionOptions field given as a keyword (intra_op_num_threads=1) would silently
    run on every core: a TypeError naming it; onnxruntime's disabled_optimizers warns."""
    import warnings
    from pyconv import models
    path = str(models.path("shapes_classifier.onnx"))
    with pytest.raises(TypeError, match="'intra_op_num_threads'.*SessionOptions"):
        pyconv.InferenceSession(path, intra_op_num_threads=1)
    with pytest.raises(TypeError, match="'bogus'"):
        pyconv.InferenceSession(path, bogus=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pyconv.InferenceSession(path, disabled_optimizers=["ConstantFolding"])
    assert any("disabled_optimizers" in str(w.message) for w in caught)


@pytest.mark.parametrize("opset", [11, 18])
def test_slice_and_split_are_bound_views(rng, opset):
    """Slice and Split with constant arguments resolve their index tuples once per plan:
    views of the input, as their runs give; results match onnxruntime and the reference
    evaluator, also for another input shape (same rank: the plan of a new signature)."""
    from onnx.reference import ReferenceEvaluator
    split_kw = ({"split": [2, 3, 1]} if opset < 13 else {})
    split_in = ["r"] + ([] if opset < 13 else ["sizes"])
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Split", split_in, ["a", "b", "c"], axis=1, **split_kw),
             helper.make_node("Slice", ["b", "st", "en", "ax", "sp"], ["s"]),
             helper.make_node("Mul", ["a", "c"], ["m"]),
             helper.make_node("Add", ["s", "s"], ["y"])]
    consts = {"st": np.array([-1, 1], np.int64), "en": np.array([-100, 100], np.int64),
              "ax": np.array([3, 2], np.int64), "sp": np.array([-2, 2], np.int64)}
    if opset >= 13:
        consts["sizes"] = np.array([2, 3, 1], np.int64)
    m = B.model(nodes, [("x", ["N", 6, "H", "W"])], [("y", None), ("m", None)], consts,
                opset=opset)
    s = pyconv.InferenceSession(m)
    for shape in [(1, 6, 5, 7), (1, 6, 5, 7), (2, 6, 4, 9), (2, 6, 4, 9)]:
        x = B.rand(rng, *shape)
        want = ReferenceEvaluator(m).run(None, {"x": x})
        for g, w, o in zip(s.run(None, {"x": x}), want, B.ort_run(m, {"x": x})):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(g, o, rtol=1e-6, atol=1e-6)
    plan = s._program.plans[next(iter(s._program.plans))]
    import functools
    steps = {step.node.op_type: call for call, *_, step in plan._pool[-1].steps}
    assert not isinstance(steps["Slice"], functools.partial)
    assert not isinstance(steps["Split"], functools.partial)
