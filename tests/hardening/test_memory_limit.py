"""SessionOptions.memory_limit_bytes refuses runs that need more activation memory."""
import numpy as np
import pytest

import pyconv
from pyconv.errors import MemoryLimitExceeded
from _models import residual_cnn


def session(limit):
    opts = pyconv.SessionOptions()
    opts.memory_limit_bytes = limit
    return pyconv.InferenceSession(residual_cnn().SerializeToString(), opts)


def test_a_tight_limit_stops_the_run_with_a_clear_error():
    x = np.zeros((4, 3, 32, 32), np.float32)
    with pytest.raises(MemoryLimitExceeded, match="memory_limit_bytes=100,000"):
        session(100_000).run(None, {"x": x})
    assert issubclass(MemoryLimitExceeded, MemoryError)


def test_a_generous_limit_changes_nothing_and_plans_are_checked_too():
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    expected = pyconv.InferenceSession(residual_cnn().SerializeToString()).run(None, {"x": x})
    sess = session(64 << 20)
    for _ in range(3):   # the first run builds the plan, the next ones check it
        for got, want in zip(sess.run(None, {"x": x}), expected):
            np.testing.assert_array_equal(got, want)
    stats = sess.memory_stats() if callable(sess.memory_stats) else sess.memory_stats
    assert stats    # the plan exists and reports its sizes
    # A bigger batch needs a new plan: 64 images of 16 x 32 x 32 floats per value are over
    # a 2 MB limit, refused before the arena is allocated or at the first large node.
    small = session(2 << 20)
    small.run(None, {"x": x[:1]})
    with pytest.raises(MemoryLimitExceeded):
        small.run(None, {"x": np.zeros((64, 3, 32, 32), np.float32)})


# -- every run is accounted, views included -------------------------------------------------

MB = 1 << 20


def _model(nodes, inputs, outputs, inits=None):
    from onnx import helper, numpy_helper
    graph = helper.make_graph(nodes, "m", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=8).SerializeToString()


def _views_model(blocks):
    """``blocks`` times: Tile x (1, 1024) to a 4 MiB (1024, 1024) array, then Slice one row
    of it (a view that keeps the whole 4 MiB alive); the rows are concatenated at the end,
    so every 4 MiB array lives to the end of the run."""
    from onnx import TensorProto, helper
    inits = {"reps": np.array([1024, 1], np.int64), "s": np.array([0], np.int64),
             "e": np.array([1], np.int64), "ax": np.array([0], np.int64)}
    nodes, rows = [], []
    for i in range(blocks):
        nodes += [helper.make_node("Tile", ["x", "reps"], [f"big{i}"]),
                  helper.make_node("Slice", [f"big{i}", "s", "e", "ax"], [f"row{i}"])]
        rows.append(f"row{i}")
    nodes.append(helper.make_node("Concat", rows, ["y"], axis=0))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)


def _peak_bytes(run):
    """Peak bytes NumPy allocated while ``run()`` ran (tracemalloc), and its result or
    exception."""
    import tracemalloc
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        try:
            result = run()
        except Exception as exc:    # noqa: BLE001 - returned to the test
            result = exc
        return tracemalloc.get_traced_memory()[1] - base, result
    finally:
        tracemalloc.stop()


def test_views_count_the_whole_array_they_keep_alive():
    """Each one-row slice keeps its 4 MiB array alive: 8 of them hold 32 MiB. At a 10 MiB
    limit the run must stop (it used to count only the rows and run to the end), and the
    memory it held stays within the limit plus one node's output."""
    model = _views_model(8)
    x = np.arange(1024, dtype=np.float32).reshape(1, 1024)
    want = np.repeat(x, 8, axis=0)
    np.testing.assert_array_equal(pyconv.InferenceSession(model).run(None, {"x": x})[0], want)
    opts = pyconv.SessionOptions()
    opts.memory_limit_bytes = 10 * MB
    sess = pyconv.InferenceSession(model, opts)
    for _ in range(2):      # the first run (which plans) and a planned one
        peak, result = _peak_bytes(lambda: sess.run(None, {"x": x}))
        assert isinstance(result, MemoryLimitExceeded), result
        assert "Tile" in str(result)
        assert peak <= 10 * MB + 4 * MB + MB, peak
    # The same model fits a limit above what it holds.
    opts.memory_limit_bytes = 40 * MB
    out, = pyconv.InferenceSession(model, opts).run(None, {"x": x})
    np.testing.assert_array_equal(out, want)


def test_a_run_that_fits_keeps_fitting_once_planned():
    """A chain of 4 MiB Tiles, each read (through a one-row view) by the next only: two
    are alive at once. The plan's check counts that peak (8 MiB), not the sum of every
    value the run made (40 MiB), so the planned runs after the first are not refused."""
    from onnx import TensorProto, helper
    nodes, prev = [], "x"
    for i in range(10):
        nodes += [helper.make_node("Tile", [prev, "reps"], [f"big{i}"]),
                  helper.make_node("Slice", [f"big{i}", "s", "e", "ax"], [f"row{i}"])]
        prev = f"row{i}"
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                   [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)],
                   {"reps": np.array([1024, 1], np.int64), "s": np.array([0], np.int64),
                    "e": np.array([1], np.int64), "ax": np.array([0], np.int64)})
    x = np.arange(1024, dtype=np.float32).reshape(1, 1024)
    opts = pyconv.SessionOptions()
    opts.memory_limit_bytes = 10 * MB
    sess = pyconv.InferenceSession(model, opts)
    for _ in range(3):
        peak, result = _peak_bytes(lambda: sess.run(None, {"x": x}))
        np.testing.assert_array_equal(result[0], x)
        assert 8 * MB <= peak <= 10 * MB, peak
    assert sess.memory_stats["peak_activation_bytes"] == 8 * MB
    assert sess.memory_stats["unplanned_bytes"] == 40 * MB


def test_shapes_that_depend_on_values_are_checked_on_every_run():
    """ConstantOfShape sized by the input's values: the plan made for a small value must
    not let a later run of the same input shape allocate past the limit."""
    from onnx import TensorProto, helper
    model = _model([helper.make_node("ConstantOfShape", ["n"], ["z"]),
                    helper.make_node("Relu", ["z"], ["y"])],
                   [helper.make_tensor_value_info("n", TensorProto.INT64, [1])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    opts = pyconv.SessionOptions()
    opts.memory_limit_bytes = 4 * MB
    sess = pyconv.InferenceSession(model, opts)
    for _ in range(2):
        y, = sess.run(None, {"n": np.array([1000], np.int64)})
        assert y.shape == (1000,)
    peak, result = _peak_bytes(lambda: sess.run(None, {"n": np.array([4 << 20], np.int64)}))
    assert isinstance(result, MemoryLimitExceeded), result
    assert "ConstantOfShape" in str(result)
    assert peak <= 4 * MB + 16 * MB + MB, peak      # the limit plus that node's output


def test_feeds_and_constants_are_not_activations():
    """A graph whose output is a view of its input holds no activation memory."""
    from onnx import TensorProto, helper
    model = _model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1024, 1024])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                   {"shape": np.array([-1], np.int64)})
    opts = pyconv.SessionOptions()
    opts.memory_limit_bytes = 1024
    x = np.ones((1024, 1024), np.float32)
    sess = pyconv.InferenceSession(model, opts)
    for _ in range(2):
        assert sess.run(None, {"x": x})[0].shape == (1 << 20,)


# -- the plan cache is bounded ---------------------------------------------------------------

def test_memory_plans_are_kept_for_the_most_recent_shapes_only():
    model = residual_cnn(size=8).SerializeToString()
    opts = pyconv.SessionOptions()
    assert opts.mem_pattern_cache_size == 8
    opts.mem_pattern_cache_size = 2
    sess = pyconv.InferenceSession(model, opts)
    ref = pyconv.InferenceSession(model)
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal((n, 3, 8, 8)).astype(np.float32) for n in (1, 2, 3, 4)]
    for x in feeds + feeds[::-1]:
        for got, want in zip(sess.run(None, {"x": x}), ref.run(None, {"x": x})):
            np.testing.assert_array_equal(got, want)
        assert sess.memory_stats["plans"] <= 2
    plans = sess._program.plans
    # The two most recently used batch sizes are the ones kept (feeds[::-1] ends with
    # 2 and 1); the others were dropped and made again when they came back.
    assert sorted(key[0][0][0] for key in plans) == [1, 2]
    # Using a kept plan makes it the most recent: 2 survives the next new shape.
    sess.run(None, {"x": feeds[1]})
    sess.run(None, {"x": feeds[3]})
    assert sorted(key[0][0][0] for key in plans) == [2, 4]


def test_the_default_cache_holds_eight_plans():
    sess = pyconv.InferenceSession(residual_cnn(size=8).SerializeToString())
    for n in range(1, 13):
        sess.run(None, {"x": np.zeros((n, 3, 8, 8), np.float32)})
    assert sess.memory_stats["plans"] == 8


@pytest.mark.parametrize("name, bad, exc", [
    ("mem_pattern_cache_size", 0, pyconv.errors.InvalidArgument),
    ("mem_pattern_cache_size", -3, pyconv.errors.InvalidArgument),
    ("mem_pattern_cache_size", 1 << 40, pyconv.errors.InvalidArgument),
    ("mem_pattern_cache_size", 2.0, TypeError),
    ("mem_pattern_cache_size", "8", TypeError),
    ("mem_pattern_cache_size", True, TypeError),
    ("memory_limit_bytes", -1, pyconv.errors.InvalidArgument),
])
def test_cache_size_and_limit_are_validated(name, bad, exc):
    opts = pyconv.SessionOptions()
    if exc is TypeError:
        with pytest.raises(TypeError, match=f"SessionOptions.{name} must be an int"):
            setattr(opts, name, bad)
        return
    setattr(opts, name, bad)
    with pytest.raises(exc, match=f"SessionOptions.{name}: expected"):
        pyconv.InferenceSession(residual_cnn().SerializeToString(), opts)


# -- a node is refused before it allocates past the limit ------------------------------------

def _value_sized(op):
    """A one-node graph (plus a Relu reading its output) whose node's output size is set
    by the values of the feed ``n``; (model, feeds for a small output, feeds for a
    2^28-element output: 1 GiB of float32, under MAX_TENSOR_ELEMENTS)."""
    from onnx import TensorProto, helper
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    big = 1 << 28
    x = np.ones((1, 4), np.float32)
    if op == "ConstantOfShape":
        node = helper.make_node(op, ["n"], ["z"])
        ins = [helper.make_tensor_value_info("n", i64, [1])]
        small, huge = {"n": np.array([16])}, {"n": np.array([big])}
    elif op == "Expand":
        node = helper.make_node(op, ["x", "n"], ["z"])
        ins = [helper.make_tensor_value_info("x", f, [1, 4]),
               helper.make_tensor_value_info("n", i64, [2])]
        small, huge = {"x": x, "n": np.array([4, 4])}, {"x": x, "n": np.array([big // 4, 4])}
    elif op == "Tile":
        node = helper.make_node(op, ["x", "n"], ["z"])
        ins = [helper.make_tensor_value_info("x", f, [1, 4]),
               helper.make_tensor_value_info("n", i64, [2])]
        small, huge = {"x": x, "n": np.array([4, 1])}, {"x": x, "n": np.array([big // 4, 1])}
    elif op == "Pad":
        node = helper.make_node(op, ["x", "n"], ["z"])
        ins = [helper.make_tensor_value_info("x", f, [1, 4]),
               helper.make_tensor_value_info("n", i64, [4])]
        small = {"x": x, "n": np.array([0, 0, 3, 0])}
        huge = {"x": x, "n": np.array([0, 0, big // 4 - 1, 0])}
    elif op == "Resize":
        node = helper.make_node(op, ["x", "", "", "n"], ["z"], mode="nearest")
        ins = [helper.make_tensor_value_info("x", f, [1, 1, 2, 2]),
               helper.make_tensor_value_info("n", i64, [4])]
        x4 = np.ones((1, 1, 2, 2), np.float32)
        small = {"x": x4, "n": np.array([1, 1, 4, 4])}
        huge = {"x": x4, "n": np.array([1, 1, 1 << 14, 1 << 14])}
    else:   # Gather: a few int64 indices pick rows of a 4 KiB input many times over
        node = helper.make_node(op, ["x", "n"], ["z"])
        ins = [helper.make_tensor_value_info("x", f, [1, 1024]),
               helper.make_tensor_value_info("n", i64, [None])]
        xr = np.ones((1, 1024), np.float32)
        small = {"x": xr, "n": np.zeros(4, np.int64)}
        huge = {"x": xr, "n": np.zeros(big // 1024, np.int64)}
    model = _model([node, helper.make_node("Relu", ["z"], ["y"])], ins,
                   [helper.make_tensor_value_info("y", f, None)])
    return model, small, huge


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand", "Tile", "Pad", "Resize",
                                "Gather"])
def test_a_node_past_the_limit_is_refused_before_it_allocates(op):
    """The node's output (1 GiB) is sized from the feed's values, so no plan knows it:
    it is computed and checked against the limit before the buffer exists, on the first
    run and on a planned one (tracemalloc sees NumPy's allocations)."""
    model, small, huge = _value_sized(op)
    want = pyconv.InferenceSession(model).run(None, small)[0]
    assert want.size > 4        # the small case runs (checked against onnxruntime below)
    try:
        import onnxruntime as ort
        np.testing.assert_array_equal(
            want, ort.InferenceSession(model, providers=["CPUExecutionProvider"])
            .run(None, small)[0])
    except ImportError:         # onnxruntime is a reference tool, not a requirement
        pass
    opts = pyconv.SessionOptions()
    opts.memory_limit_bytes = 16 * MB
    for planned in (False, True):
        sess = pyconv.InferenceSession(model, opts)
        if planned:             # a plan made for the small values, then the huge ones
            np.testing.assert_array_equal(sess.run(None, small)[0], want)
        peak, result = _peak_bytes(lambda: sess.run(None, huge))
        assert isinstance(result, MemoryLimitExceeded), result
        assert peak < 4 * MB, peak      # the 1 GiB buffer was never allocated
        assert f"{op} node" in str(result) and "before allocating" in str(result), result
        assert "memory_limit_bytes=16,777,216" in str(result)
        np.testing.assert_array_equal(sess.run(None, small)[0], want)   # still usable
