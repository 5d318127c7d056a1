"""ONNX Gemm and MatMul on LinearPlan (constant right operand) and on the batched packed
GEMM (two dynamic operands), against onnxruntime and the ONNX reference evaluator: every
transA / transB / alpha / beta / C form, constant and dynamic operands, planned (bound)
and plain runs, and the errors."""
import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import pyconv
from pyconv._ext import gemm
from pyconv.errors import PyconvError
from tests.graph import _build as B
from tests.graph.test_fusions import session
from tests.graph.test_session import bound_steps

mk = helper.make_node


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def check(m, feeds, runs=3):
    """pyconv against onnxruntime and the reference evaluator, several runs (the later
    ones on the bound steps)."""
    want = B.ort_run(m, feeds)[0]
    ref = ReferenceEvaluator(m).run(None, feeds)[0]
    np.testing.assert_allclose(ref, want, rtol=1e-4, atol=1e-4)
    s = session(m)
    for _ in range(runs):
        got = s.run(None, feeds)[0]
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    return s


C_SHAPES = [None, (), (1,), (7,), (1, 7), (1, 1), (5, 1), (5, 7)]


@pytest.mark.parametrize("c_shape", C_SHAPES, ids=str)
@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("const", ["b_c", "b", "none"])
def test_gemm_matches_onnxruntime(rng, c_shape, trans_a, trans_b, const):
    m_, k, n = 5, 9, 7
    a_shape = (k, m_) if trans_a else (m_, k)
    b_shape = (n, k) if trans_b else (k, n)
    inputs = [("a", a_shape)]
    inits = {}
    feeds = {"a": B.rand(rng, *a_shape)}
    names = ["a", "b"]
    b = B.rand(rng, *b_shape)
    if const == "none":
        inputs.append(("b", b_shape))
        feeds["b"] = b
    else:
        inits["b"] = b
    if c_shape is not None:
        names.append("c")
        c = np.asarray(B.rand(rng, *c_shape), np.float32)
        if const == "b_c":
            inits["c"] = c
        else:
            inputs.append(("c", c_shape))
            feeds["c"] = c
    node = mk("Gemm", names, ["y"], alpha=0.75, beta=-1.5, transA=trans_a, transB=trans_b)
    m = B.model([node], inputs, [("y", None)], inits, opset=13)
    check(m, feeds)


@pytest.mark.parametrize("rows", [1, 2, 64])
def test_gemm_default_attributes_and_bound_steps(rng, rows):
    w, bias = B.rand(rng, 30, 40), B.rand(rng, 30)
    m = B.model([mk("Gemm", ["x", "w", "bias"], ["y"], transB=1)], [("x", (rows, 40))],
                [("y", None)], {"w": w, "bias": bias}, opset=13)
    s = check(m, {"x": B.rand(rng, rows, 40)})
    # The planned runs call the bound plan (no per-call Python checks).
    assert bound_steps(s) == ["Gemm"]


@pytest.mark.parametrize("a_shape", [(2, 3, 40), (40,), (1, 40), (6, 40), (2, 1, 2, 40)],
                         ids=str)
def test_matmul_constant_right_operand_any_leading_dims(rng, a_shape):
    w = B.rand(rng, 40, 23)
    m = B.model([mk("MatMul", ["a", "w"], ["y"])], [("a", a_shape)], [("y", None)],
                {"w": w})
    s = check(m, {"a": B.rand(rng, *a_shape)})
    assert bound_steps(s) == ["MatMul"]


@pytest.mark.parametrize("a_shape,b_shape", [
    ((1, 8, 64, 32), (1, 8, 32, 64)), ((4, 4, 26, 64), (4, 4, 64, 26)),
    ((1, 1, 130, 70), (1, 1, 70, 90)), ((2, 1, 5, 6), (3, 6, 2)), ((6,), (2, 6, 3)),
    ((2, 5, 6), (6,)), ((5, 6), (6, 4)), ((1, 6), (6, 1))], ids=str)
def test_matmul_dynamic_operands_match_onnxruntime(rng, a_shape, b_shape):
    m = B.model([mk("MatMul", ["a", "b"], ["y"])], [("a", a_shape), ("b", b_shape)],
                [("y", None)])
    s = check(m, {"a": B.rand(rng, *a_shape), "b": B.rand(rng, *b_shape)})
    assert bound_steps(s) == ["MatMul"]


def test_attention_block_matches_onnxruntime(rng):
    """Q @ K.T -> Softmax -> @ V, the attention of OCR recognisers, with the planned
    buffers of the memory planner between the products."""
    nodes = [mk("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             mk("MatMul", ["q", "kt"], ["s"]),
             mk("Softmax", ["s"], ["p"], axis=-1),
             mk("MatMul", ["p", "v"], ["y"])]
    shape = (2, 4, 26, 16)
    m = B.model(nodes, [("q", shape), ("k", shape), ("v", shape)], [("y", None)])
    s = check(m, {n: B.rand(rng, *shape) for n in "qkv"})
    assert bound_steps(s) == ["Transpose", "MatMul", "MatMul"]


def test_bound_matmul_reads_views_and_falls_back(rng):
    """The bound product of two dynamic operands takes strided views (a transposed K) as
    they are; other shapes or dtypes, and an output buffer overlapping an operand, go to
    the op's run."""
    runs = []

    def run(inputs, out):
        runs.append(out)
        return [np.matmul(inputs[0], inputs[1])]

    out = np.empty((3, 5, 7), np.float32)
    call = gemm.MatmulCall((3, 5, 4), (3, 4, 7), out, run)
    a, k = B.rand(rng, 3, 5, 4), B.rand(rng, 3, 7, 4)
    y = call([a, k.transpose(0, 2, 1)])[0]
    assert y is out and not runs
    np.testing.assert_allclose(y, a @ k.transpose(0, 2, 1), rtol=1e-5, atol=1e-6)
    call([B.rand(rng, 3, 5, 5), B.rand(rng, 3, 5, 7)])          # another shape
    call([a.astype(np.float64), k.transpose(0, 2, 1)])          # another dtype
    assert runs == [out, out]
    buf = B.rand(rng, 3 * 5 * 7 + 3 * 5 * 4)
    overlapping = gemm.MatmulCall((3, 5, 4), (3, 4, 7), buf[:105].reshape(3, 5, 7), run)
    np.testing.assert_allclose(overlapping([buf[90:150].reshape(3, 5, 4),
                                            k.transpose(0, 2, 1)])[0],
                               buf[90:150].reshape(3, 5, 4) @ k.transpose(0, 2, 1))
    assert runs[-1] is None
    vec = gemm.MatmulCall((4,), (3, 4, 7), None, run)           # a vector on the left
    np.testing.assert_allclose(vec([a[0, 0], k.transpose(0, 2, 1)])[0],
                               a[0, 0] @ k.transpose(0, 2, 1), rtol=1e-5, atol=1e-6)


def test_gemm_and_matmul_errors_name_the_node(rng):
    w = B.rand(rng, 8, 6)
    m = B.model([mk("Gemm", ["x", "w", "c"], ["y"], name="fc")], [("x", (3, 8))],
                [("y", None)], {"w": w, "c": B.rand(rng, 4, 6)}, opset=13)
    with pytest.raises(PyconvError, match=r"Gemm node 'fc'.*C 'c' has shape \(4, 6\), not "
                                          r"broadcastable to the output \(3, 6\)"):
        pyconv.InferenceSession(m.SerializeToString()).run(None, {"x": B.rand(rng, 3, 8)})
    m = B.model([mk("Gemm", ["x", "w"], ["y"], name="fc")], [("x", (3, 8))],
                [("y", None)], {"w": B.rand(rng, 7, 6)}, opset=13)
    with pytest.raises(PyconvError, match=r"Gemm node 'fc'.*inner dims differ"):
        pyconv.InferenceSession(m.SerializeToString()).run(None, {"x": B.rand(rng, 3, 8)})
    m = B.model([mk("MatMul", ["a", "b"], ["y"], name="mm")], [("a", (2, 3, 4)),
                                                              ("b", (3, 5, 6))],
                [("y", None)])
    with pytest.raises(PyconvError, match=r"MatMul node 'mm'.*inner dimensions differ"):
        pyconv.InferenceSession(m.SerializeToString()).run(
            None, {"a": B.rand(rng, 2, 3, 4), "b": B.rand(rng, 3, 5, 6)})
