"""Graph-level shapes: long chains, huge fan-in and fan-out load and run (no pass, sort or
memory plan quadratic in the node count, no recursion per node), with the answers of
onnxruntime or NumPy. Not timed (timings are not asserted in tests); the
benchmark benchmarks/graph_size.py shows creation time against length."""
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyconv

F = TensorProto.FLOAT


def _model(nodes, x_shape, out, inits=None):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, x_shape)],
                              [helper.make_tensor_value_info(out, F, None)],
                              [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=8).SerializeToString()


def _chain(n, ops):
    nodes, prev = [], "x"
    for i in range(n):
        op, out = ops[i % len(ops)], f"v{i}"
        nodes.append(helper.make_node(op, [prev, "x"] if op == "Add" else [prev], [out]))
        prev = out
    return _model(nodes, [4], prev)


@pytest.mark.parametrize("level", [pyconv.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                   pyconv.GraphOptimizationLevel.ORT_ENABLE_ALL])
def test_a_20000_node_chain_loads_and_runs_without_recursion(level):
    """Relu / Add x / Identity, 20,000 nodes (far deeper than Python's recursion limit,
    which is lowered here to catch any per-node recursion)."""
    n = 20_000
    model = _chain(n, ["Relu", "Add", "Identity"])
    x = np.array([-2.0, 0.5, 1.0, 3.0], np.float32)
    # Relu, then each (Relu, Add x, Identity) round adds x: float64 reference.
    want, v = None, x.astype(np.float64)
    for i in range(n):
        op = ("Relu", "Add", "Identity")[i % 3]
        v = np.maximum(v, 0) if op == "Relu" else v + x if op == "Add" else v
    want = v.astype(np.float32)
    opts = pyconv.SessionOptions()
    opts.graph_optimization_level = level
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(400)
    try:
        sess = pyconv.InferenceSession(model, opts)
        for _ in range(2):      # recording run, then the planned one
            np.testing.assert_array_equal(sess.run(None, {"x": x})[0], want)
    finally:
        sys.setrecursionlimit(limit)


def test_huge_fan_in_and_fan_out():
    """5,000 Relu nodes reading x, concatenated by one node; and a Sum of 2,000 values."""
    k = 5000
    nodes = [helper.make_node("Mul", ["x", f"c{i}"], [f"m{i}"]) for i in range(k)]
    nodes += [helper.make_node("Relu", [f"m{i}"], [f"r{i}"]) for i in range(k)]
    nodes.append(helper.make_node("Concat", [f"r{i}" for i in range(k)], ["cat"], axis=0))
    nodes.append(helper.make_node("Sum", [f"r{i}" for i in range(2000)], ["s"]))
    nodes.append(helper.make_node("ReduceSum", ["cat"], ["t"], keepdims=0))
    nodes.append(helper.make_node("Add", ["t", "s"], ["y"]))
    scale = np.linspace(-1, 1, k).astype(np.float32)
    inits = {f"c{i}": scale[i:i + 1] for i in range(k)}
    model = _model(nodes, [1, 8], "y", inits)
    x = np.arange(8, dtype=np.float32).reshape(1, 8) - 3
    parts = np.maximum(x.astype(np.float64) * scale.astype(np.float64)[:, None], 0)
    want = parts.sum() + parts[:2000].sum(axis=0, keepdims=True)
    sess = pyconv.InferenceSession(model)
    for _ in range(2):
        np.testing.assert_allclose(sess.run(None, {"x": x})[0], want, rtol=1e-5)


def test_long_foldable_chains_fold_completely_and_match_onnxruntime():
    """A Conv followed by 2,000 constant Mul / Add nodes and preceded by 2,000 more: the
    folds take whole chains (one pass each) and agree with onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    n = 2000
    inits = {"w": rng.standard_normal((4, 3, 1, 1)).astype(np.float32)}
    nodes, prev = [], "x"
    for i in range(n):
        inits[f"a{i}"] = (1 + 1e-4 * rng.standard_normal((1, 3, 1, 1))).astype(np.float32)
        nodes.append(helper.make_node("Mul", [prev, f"a{i}"], [f"p{i}"]))
        prev = f"p{i}"
    nodes.append(helper.make_node("Conv", [prev, "w"], ["c"]))
    prev = "c"
    for i in range(n):
        op = "Mul" if i % 2 else "Add"
        inits[f"k{i}"] = (1e-3 * rng.standard_normal((1, 4, 1, 1)) +
                          (1 if op == "Mul" else 0)).astype(np.float32)
        nodes.append(helper.make_node(op, [prev, f"k{i}"], [f"q{i}"]))
        prev = f"q{i}"
    model = _model(nodes, [1, 3, 5, 5], prev, inits)
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    sess = pyconv.InferenceSession(model)
    assert [n.op_type for n in sess._graph.nodes] == ["Conv"]
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    want = ref.run(None, {"x": x})[0]
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_both_arena_placements_never_overlap_live_buffers(seed):
    """The greedy placement and its first-fit-by-time fallback: buffers alive at the same
    step never share bytes, and the fallback is taken when the work budget is passed."""
    from pyconv.graph import _executor as ex
    rng = np.random.default_rng(seed)
    cands = []
    for k in range(300):
        start = int(rng.integers(0, 200))
        stop = start + int(rng.integers(0, 30 if k % 5 else 200))
        cands.append((int(rng.integers(1, 5000)), start, stop, k, None))
    sizes = [(c[0] + ex.ALIGN - 1) // ex.ALIGN * ex.ALIGN for c in cands]
    for placed in (ex._place(cands), ex._place_by_time(cands, sizes)):
        for i, (oi, si) in enumerate(placed):
            assert si == sizes[i] and oi % ex.ALIGN == 0
            for j in range(i):
                oj, sj = placed[j]
                live_together = not (cands[i][2] < cands[j][1] or cands[j][2] < cands[i][1])
                if live_together:
                    assert oi + si <= oj or oj + sj <= oi, (i, j)
    budget = ex.PLACEMENT_WORK
    try:
        ex.PLACEMENT_WORK = 10
        assert ex._place(cands) == ex._place_by_time(cands, sizes)
    finally:
        ex.PLACEMENT_WORK = budget


@pytest.mark.parametrize("enabled", [True, False])
def test_garbage_collection_is_restored_after_creation_and_planning(enabled):
    """Session creation and the first run's plan pause Python's cyclic collector (it
    walked every object again and again on big graphs); afterwards, on success or error,
    and with several sessions made at once, it is exactly as the caller had it."""
    import gc
    import threading
    model = _chain(300, ["Relu", "Add"])
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        sess = pyconv.InferenceSession(model)
        assert gc.isenabled() is enabled
        sess.run(None, {"x": np.ones(4, np.float32)})
        sess.run(None, {"x": np.ones(4, np.float32)})
        assert gc.isenabled() is enabled
        with pytest.raises(pyconv.errors.InvalidModel):
            pyconv.InferenceSession(model[: len(model) // 2])
        assert gc.isenabled() is enabled
        errors = []

        def create():
            try:
                pyconv.InferenceSession(model).run(None, {"x": np.ones(4, np.float32)})
            except Exception as exc:     # noqa: BLE001 - reported below
                errors.append(exc)
        threads = [threading.Thread(target=create) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
