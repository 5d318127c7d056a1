"""Concat inputs written straight into their blocks of the output (the memory planner's
``_blocks``): the producers write into the concat's buffer and the concat copies only
what lies elsewhere. Checked against onnxruntime and the ONNX reference evaluator on
graphs where an input is a feed, an initializer, a view, a graph output, used twice, fed
to two concats, read again long after the concat, and concats nest or are runs of each
other (DenseNet); with dynamic dims, batch > 1, profiling and a memory limit."""
import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import pyconv
from pyconv import GraphOptimizationLevel as L
from tests.graph import _build as B


def conv(x, w, y, pad=1):
    """A Conv node (no bias) with equal ``pad`` on every side."""
    return helper.make_node("Conv", [x, w], [y], pads=[pad] * 4)


def model(rng, dims, outputs):
    """x -> a -> b -> d as in a dense block: c1 = [x, a, b] and c2 = [x, a, b, d] (c1 a
    run of it), c3 = [a, a, b[:, :2] + k, x] (a twice, the feed), c4 = [c2[:, 1:4] (a
    view), a], c5 = [c4, e] (a concat of a concat); ``late`` reads ``a`` long after every
    concat. ``outputs``: the graph outputs."""
    nodes = [
        conv("x", "w1", "a"),
        helper.make_node("Relu", ["a"], ["ra"]),
        conv("ra", "w2", "b"),
        helper.make_node("Concat", ["x", "a", "b"], ["c1"], axis=1),
        helper.make_node("Relu", ["c1"], ["rc1"]),
        conv("rc1", "w3", "d", pad=0),
        helper.make_node("Concat", ["x", "a", "b", "d"], ["c2"], axis=1),
        helper.make_node("Sigmoid", ["c2"], ["t"]),
        helper.make_node("Slice", ["b", "s0", "s2", "s_axes"], ["b2"]),
        helper.make_node("Add", ["b2", "k"], ["bk"]),
        helper.make_node("Concat", ["a", "a", "bk", "x"], ["c3"], axis=1),
        helper.make_node("Relu", ["c3"], ["c3r"]),
        helper.make_node("Slice", ["c2", "s1", "s3", "s_axes"], ["s"]),
        helper.make_node("Concat", ["s", "a"], ["c4"], axis=1),
        conv("c4", "w4", "e"),
        helper.make_node("Concat", ["c4", "e"], ["c5"], axis=1),
        helper.make_node("Tanh", ["c5"], ["c5r"]),
        conv("c5r", "w5", "y"),
        helper.make_node("Add", ["a", "a"], ["late"]),
    ]
    inits = {"w1": B.rand(rng, 4, 3, 3, 3, scale=0.3), "w2": B.rand(rng, 5, 4, 3, 3, scale=0.3),
             "w3": B.rand(rng, 2, 12, 1, 1, scale=0.3), "w4": B.rand(rng, 3, 7, 3, 3, scale=0.3),
             "w5": B.rand(rng, 2, 10, 3, 3, scale=0.3), "k": B.rand(rng, 1, 2, 1, 1),
             "s0": np.array([0], np.int64), "s2": np.array([2], np.int64),
             "s1": np.array([1], np.int64), "s3": np.array([4], np.int64),
             "s_axes": np.array([1], np.int64)}
    return B.model(nodes, [("x", dims)], [(o, None) for o in outputs], inits)


ALL_OUTPUTS = ("y", "t", "c3r", "late")


def check(m, shapes, rng, level=L.ORT_ENABLE_ALL, **options):
    ref = ReferenceEvaluator(m)
    opts = pyconv.SessionOptions()
    opts.graph_optimization_level = level
    for key, value in options.items():
        setattr(opts, key, value)
    s = pyconv.InferenceSession(m, opts)
    names = [o.name for o in m.graph.output]
    for shape in shapes:
        x = B.rand(rng, *shape)
        want = ref.run(None, {"x": x})
        ort = B.ort_run(m, {"x": x})
        for _ in range(3):          # the first run records, the others are planned
            got = s.run(None, {"x": x})
            for name, g, w, o in zip(names, got, want, ort):
                assert g.shape == w.shape, name
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=name)
                np.testing.assert_allclose(g, o, rtol=1e-5, atol=1e-5, err_msg=name)
    return s


def concat_flags(session):
    """{concat output name: per input, placed in its block} of the session's last plan."""
    prog = session._program
    plan = next(reversed(prog.plans.values()))
    return {prog.steps[t].node.outputs[0]: flags for t, flags in plan.in_place.items()}


@pytest.mark.parametrize("level", [L.ORT_DISABLE_ALL, L.ORT_ENABLE_ALL])
def test_producers_write_into_the_concat(level, monkeypatch):
    rng = np.random.default_rng(0)
    m = model(rng, [1, 3, 9, 7], ALL_OUTPUTS)
    s = check(m, [(1, 3, 9, 7)], rng, level)
    flags = concat_flags(s)
    copies = []
    copyto = np.copyto
    monkeypatch.setattr(np, "copyto", lambda *a, **k: copies.append(a[1].shape) or
                        copyto(*a, **k))
    s.run(None, {"x": B.rand(rng, 1, 3, 9, 7)})
    if level == L.ORT_DISABLE_ALL:
        # c2 holds x (a feed: copied), a, b and d; c1 is the run [x, a, b] of it; c3 gets
        # a twice (placed in c2, so copied both times), bk and x; c5 holds c4 and e, c4's
        # slice is a view and its a lies in c2: c4 copies both into its block of c5.
        assert flags["c2"] == [False, True, True, True]
        assert flags["c1"] == [False, True, True]
        assert flags["c3"] == [False, False, True, False]
        assert flags["c5"] == [True, True]
        assert "c4" not in flags
        # what a planned run copies: x into c1 and c2 (the same block, each its own
        # input), a twice and x into c3, the slice and a into c4
        assert sorted(copies) == sorted([(1, 3, 9, 7)] * 3 + [(1, 4, 9, 7)] * 3
                                        + [(1, 3, 9, 7)])
    else:
        assert flags                        # fusions rename values; something is placed


@pytest.mark.parametrize("outputs", [("y", "c2", "a"), ("y", "c1", "b", "late"),
                                     ("c5r", "d", "c4")])
def test_graph_outputs_stay_outside(outputs):
    """A concat output or input that is a graph output gets its own array."""
    rng = np.random.default_rng(1)
    m = model(rng, [1, 3, 8, 8], outputs)
    s = check(m, [(1, 3, 8, 8)], rng, L.ORT_DISABLE_ALL)
    got = s.run(None, {"x": B.rand(rng, 1, 3, 8, 8)})
    (plan,) = s._program.plans.values()
    for g in got:
        assert not any(np.shares_memory(g, arena.buf) for arena in plan._pool)


def test_dynamic_dims_and_batch():
    """Each signature has its plan; at batch 2 an input is two strided pieces of the
    output (nothing placed on axis 1), and the results agree all the same."""
    rng = np.random.default_rng(2)
    m = model(rng, ["N", 3, "H", "W"], ALL_OUTPUTS)
    s = check(m, [(1, 3, 9, 7), (2, 3, 6, 5), (1, 3, 4, 11), (1, 3, 9, 7)], rng)
    assert len(s._program.plans) == 3


def test_batch_axis_concat():
    """On axis 0 every input is a block whatever the batch."""
    rng = np.random.default_rng(3)
    nodes = [conv("x", "w", "a"), helper.make_node("Relu", ["x"], ["r"]),
             conv("r", "w", "b"),
             helper.make_node("Concat", ["a", "b", "a"], ["c"], axis=0),
             helper.make_node("Sigmoid", ["c"], ["y"])]
    m = B.model(nodes, [("x", [2, 3, 5, 6])], [("y", None)],
                {"w": B.rand(rng, 4, 3, 3, 3)})
    s = check(m, [(2, 3, 5, 6)], rng, L.ORT_DISABLE_ALL)
    assert concat_flags(s)["c"] == [True, True, False]


@pytest.mark.parametrize("options", [{"enable_profiling": True},
                                     {"memory_limit_bytes": 1 << 26}])
def test_unbound_runs(options, tmp_path, monkeypatch):
    """Profiled runs and runs under a memory limit call ``run`` with the planned buffers:
    the inputs already in place are left there."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(4)
    m = model(rng, [1, 3, 9, 7], ALL_OUTPUTS)
    s = check(m, [(1, 3, 9, 7)], rng, L.ORT_DISABLE_ALL, **options)
    assert concat_flags(s)


def test_concat_bound_step_meets_other_inputs():
    """The bound concat copies an input that is not where the plan put it (a producer
    that fell back to its own array) and reruns for inputs of other shapes."""
    from pyconv.ops import lookup
    from pyconv.ops._base import Node
    op = lookup("Concat")(Node("Concat", ["p", "q"], ["c"], {"axis": 1}), 17)
    rng = np.random.default_rng(5)
    p, q = B.rand(rng, 1, 2, 3, 4), B.rand(rng, 1, 3, 3, 4)
    out = np.empty((1, 5, 3, 4), np.float32)
    placed_p = out[:, :2]
    call = op.bind_placed([(p.shape, p.dtype), (q.shape, q.dtype)], out, [placed_p, None])
    placed_p[...] = p
    np.testing.assert_array_equal(call([placed_p, q])[0], np.concatenate([p, q], 1))
    out[...] = 0
    np.testing.assert_array_equal(call([p, q])[0], np.concatenate([p, q], 1))
    q2 = B.rand(rng, 1, 1, 3, 4)
    np.testing.assert_array_equal(call([p, q2])[0], np.concatenate([p, q2], 1))


@pytest.mark.parametrize("attrs", [
    {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
    {"mode": "linear"}], ids=["nearest", "bilinear"])
def test_decoder_upsampling_writes_into_the_concat(attrs, monkeypatch):
    """A U-Net decoder: the bound Resize writes its upsampled map straight into its block
    of the concat with the skip connection, and the concat copies nothing."""
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             conv("p", "w1", "deep"),
             helper.make_node("Resize", ["deep", "", "scales"], ["up"], **attrs),
             conv("x", "w2", "skip"),
             helper.make_node("Concat", ["up", "skip"], ["c"], axis=1),
             conv("c", "w3", "y")]
    m = B.model(nodes, [("x", [1, 3, "H", "W"])], [("y", None)],
                {"w1": B.rand(rng, 4, 3, 3, 3), "w2": B.rand(rng, 2, 3, 3, 3),
                 "w3": B.rand(rng, 2, 6, 3, 3),
                 "scales": np.array([1, 1, 2, 2], np.float32)})
    s = check(m, [(1, 3, 8, 10), (1, 3, 6, 6)], rng, L.ORT_DISABLE_ALL)
    assert concat_flags(s)["c"] == [True, True]
    copies = []
    copyto = np.copyto
    monkeypatch.setattr(np, "copyto", lambda *a, **k: copies.append(a) or copyto(*a, **k))
    x = B.rand(rng, 1, 3, 6, 6)
    np.testing.assert_allclose(s.run(None, {"x": x})[0], B.ort_run(m, {"x": x})[0],
                               rtol=1e-5, atol=1e-5)
    assert copies == []
