"""LinearPlan's create -> reshape -> run (the frozen LinearReshape of one input shape, its
checks and errors, bind and with_activation) and pyconv.functional.matmul (batched
products on the packed GEMM), against float64 NumPy."""
import numpy as np
import pytest

from _helpers import rand
import pyconv
import pyconv.functional as F
from pyconv.errors import InvalidArgument, InvalidDType, ShapeError

ACTIVATIONS_F64 = {
    None: lambda y: y,
    "relu": lambda y: np.maximum(y, 0),
    "sigmoid": lambda y: 1 / (1 + np.exp(-y)),
    "clip": lambda y: np.clip(y, -0.5, 0.5),
}


def linear_f64(x, w, b=None, alpha=1.0, activation=None):
    y = alpha * (x.astype(np.float64) @ w.astype(np.float64).T)
    if b is not None:
        y = y + b
    return ACTIVATIONS_F64[activation](y)


def assert_close_f64(got, want, k):
    """float32 products of k terms against float64: the error grows with k."""
    assert got.dtype == np.float32
    tol = 1e-5 * max(1, k) ** 0.5 * 4
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("lead,k,n", [((), 5, 3), ((1,), 64, 17), ((2,), 1, 1),
                                      ((7,), 300, 100), ((33,), 64, 1), ((3, 5), 17, 40),
                                      ((130,), 257, 33), ((2, 1, 3), 9, 2)], ids=str)
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_plan_sweep_matches_float64(threads, rng, lead, k, n, with_bias):
    w = rand(rng, n, k)
    b = rand(rng, n) if with_bias else None
    x = rand(rng, *lead, k)
    for prepack in (True, False):
        plan = F.LinearPlan(w, b, prepack=prepack)
        y = plan.run(x)
        assert y.shape == lead + (n,) and y.flags.c_contiguous
        assert_close_f64(y, linear_f64(x, w, b), k)
    np.testing.assert_array_equal(F.linear(x, w, b), y)


@pytest.mark.parametrize("activation,act_alpha,act_beta", [
    ("relu", 0.0, 0.0), ("sigmoid", 0.0, 0.0), ("clip", -0.5, 0.5)])
@pytest.mark.parametrize("rows", [1, 6])
def test_linear_plan_epilogue_alpha_and_activation(rng, activation, act_alpha, act_beta,
                                                   rows):
    w, b, x = rand(rng, 19, 40), rand(rng, 19), rand(rng, rows, 40)
    plan = F.LinearPlan(w, b, activation, act_alpha, act_beta, alpha=0.375)
    assert_close_f64(plan.run(x), linear_f64(x, w, b, 0.375, activation), 40)
    plain = plan.with_activation(None)
    assert plain.kernel is plan.kernel and plain._reshapes is plan._reshapes
    assert plain.alpha == 0.375 and plain.activation is None
    assert_close_f64(plain.run(x), linear_f64(x, w, b, 0.375), 40)
    with pytest.raises(InvalidArgument, match=r"lin: activation must be one of .* 'swish'"):
        F.LinearPlan(w, activation="swish", op="lin")


def test_linear_plan_reads_views(rng):
    w = rand(rng, 30, 7)
    x = rand(rng, 9, 14)[:, ::2]                    # strided rows
    assert_close_f64(F.LinearPlan(w).run(x), linear_f64(x, w), 7)
    xt = rand(rng, 7, 12).T                          # a transposed matrix (Gemm transA)
    assert_close_f64(F.LinearPlan(w).run(xt), linear_f64(xt, w), 7)
    wt = rand(rng, 7, 30).T                          # transposed weight: copied once
    assert_close_f64(F.LinearPlan(wt).run(xt), linear_f64(xt, wt), 7)
    raw = np.frombuffer(bytearray(4 * 7 * 5 + 1)[1:], np.float32).reshape(5, 7)
    raw[...] = rand(rng, 5, 7)                       # a misaligned view: copied
    assert_close_f64(F.LinearPlan(w).run(raw), linear_f64(raw, w), 7)


def test_linear_plan_empty_sizes(rng):
    b = np.arange(3, dtype=np.float32)
    plan = F.LinearPlan(np.zeros((3, 0), np.float32), b, "relu")
    # No input features: the output is act(bias), for one row and for several.
    np.testing.assert_array_equal(plan.run(np.zeros((1, 0), np.float32)), [b])
    np.testing.assert_array_equal(plan.run(np.zeros((2, 0), np.float32)), [b, b])
    r = plan.reshape((0, 4, 0))
    assert r.algorithm == "none" and r.output_shape == (0, 4, 3) and r.workspace_bytes == 0
    w = rand(rng, 40, 7)
    assert F.LinearPlan(w).run(np.zeros((0, 7), np.float32)).shape == (0, 40)
    assert F.LinearPlan(w[:0]).run(rand(rng, 3, 7)).shape == (3, 0)


def test_reshape_is_frozen_cached_and_decides_once(rng):
    ctx = pyconv.ExecutionContext(num_threads=2)
    plan = F.LinearPlan(rand(rng, 64, 300), rand(rng, 64), context=ctx)
    assert plan.kernel.packed is None                 # nothing packed before a GEMM needs it
    one = plan.reshape((1, 300))
    assert (one.algorithm, one.rows, one.output_shape) == ("gemv", 1, (1, 64))
    assert one.workspace_bytes == 0 and 1 <= one.num_threads <= 2
    assert plan.kernel.packed is None                 # the GEMV reads the weight in place
    r = plan.reshape([4, 25, 300])
    assert plan.reshape((4, 25, 300)) is r and plan.output_shape((4, 25, 300)) == (4, 25, 64)
    assert (r.algorithm, r.rows, r.input_shape) == ("gemm", 100, (4, 25, 300))
    assert 1 <= r.num_threads <= 2 and r.workspace_bytes > 0 and r.workspace_bytes % 4 == 0
    packed = plan.kernel.packed
    assert packed is not None and packed.shape == (64, 300) and packed.isa == ctx.isa
    plan.reshape((7, 300))
    assert plan.kernel.packed is packed               # packed once
    for name, value in (("output_shape", (1, 1)), ("algorithm", "gemv"), ("rows", 3),
                        ("workspace_bytes", 0), ("num_threads", 8)):
        with pytest.raises(AttributeError):
            setattr(r, name, value)
    with pytest.raises(AttributeError):
        r.anything_new = 1
    # Without prepacking the weight is packed into the workspace on each run.
    transient = F.LinearPlan(rand(rng, 64, 300), prepack=False, context=ctx)
    rt = transient.reshape((4, 25, 300))
    assert transient.kernel.packed is None and rt.workspace_bytes > r.workspace_bytes
    # One thread: the small GEMM runs on one.
    assert F.LinearPlan(rand(rng, 8, 8), context=pyconv.ExecutionContext(1)).reshape(
        (3, 8)).num_threads == 1


def test_run_and_kernel_check_shapes_against_the_reshape(rng):
    plan = F.LinearPlan(rand(rng, 6, 5), op="fc")
    r = plan.reshape((3, 5))
    x, out = rand(rng, 3, 5), np.empty((3, 6), np.float32)
    assert plan.kernel.run(r, x, out) is out
    with pytest.raises(ValueError, match=r"x and out must be aligned float32 arrays of shapes "
                                         r"\(3, 5\) and \(3, 6\)"):
        plan.kernel.run(r, rand(rng, 2, 5), out)
    with pytest.raises(ValueError, match="must be aligned float32"):
        plan.kernel.run(r, x, np.empty((3, 7), np.float32))
    other = F.LinearPlan(rand(rng, 6, 5))
    with pytest.raises(ValueError, match="the reshape belongs to another kernel"):
        other.kernel.run(r, x, out)
    with pytest.raises(ValueError, match="the reshape belongs to another kernel"):
        other.kernel.bind(r)


def test_errors_name_the_argument_and_shapes(rng):
    plan = F.LinearPlan(rand(rng, 3, 4), op="fc1")
    with pytest.raises(ShapeError, match=r"fc1: input has shape \(2, 5\), expected \(\*, 4\) "
                                         r"for a weight of shape \(3, 4\)"):
        plan.run(np.zeros((2, 5), np.float32))
    with pytest.raises(ShapeError, match=r"fc1: input has shape \(\)"):
        plan.reshape(())
    with pytest.raises(InvalidArgument, match=r"fc1: input_shape must be non-negative ints, "
                                              r"got \(2, -4\) \(dim 1\)"):
        plan.reshape((2, -4))
    with pytest.raises(InvalidArgument, match=r"fc1: input_shape must be non-negative ints"):
        plan.reshape((2.0, 4))
    with pytest.raises(InvalidArgument, match=r"fc1: input_shape must be a sequence of ints"):
        plan.reshape(4)
    with pytest.raises(ShapeError, match=r"fc1: output shape \(2000000, 2000000, 3\) has"):
        plan.reshape((2000000, 2000000, 4))
    with pytest.raises(InvalidDType, match=r"fc1: input must be float32, got dtype float64"):
        plan.run(np.zeros((2, 4)))
    with pytest.raises(InvalidArgument, match=r"fc1: out must be a writeable aligned "
                                              r"C-contiguous float32 array of shape \(2, 3\)"):
        plan.run(np.zeros((2, 4), np.float32), out=np.empty((3, 2), np.float32))
    with pytest.raises(InvalidArgument, match=r"fc1: out must be"):
        plan.bind((2, 4), np.empty((2, 3)))
    with pytest.raises(ShapeError, match=r"fc1: weight must be 2-D"):
        F.LinearPlan(np.zeros(4, np.float32), op="fc1")
    with pytest.raises(ShapeError, match=r"fc1: bias has shape \(4,\), expected \(3,\)"):
        F.LinearPlan(np.zeros((3, 4), np.float32), np.zeros(4, np.float32), op="fc1")
    with pytest.raises(InvalidDType, match=r"fc1: weight must be float32"):
        F.LinearPlan(np.zeros((3, 4)), op="fc1")


@pytest.mark.parametrize("shape", [(1, 96), (1, 300), (5, 96), (2, 3, 96), (96,)], ids=str)
@pytest.mark.parametrize("with_bias", [False, True])
def test_bound_call_matches_run(threads, rng, shape, with_bias):
    w, b = rand(rng, 37, 96), rand(rng, 37) if with_bias else None
    if shape[-1] != 96:
        w = rand(rng, 37, shape[-1])
    plan = F.LinearPlan(w, b, "relu")
    x = rand(rng, *shape)
    out = np.empty(shape[:-1] + (37,), np.float32)
    call = plan.bind(x.shape, out)
    assert call(x) is out
    np.testing.assert_array_equal(out, plan.run(x))
    assert_close_f64(out, linear_f64(x, w, b, activation="relu"), shape[-1])
    fresh = plan.bind(x.shape)                       # no buffer: a new array per call
    y1, y2 = fresh(x), fresh(x)
    assert y1 is not y2 and y1 is not out
    np.testing.assert_array_equal(y1, out)
    for bad in (x[..., :-1], x.astype(np.float64), rand(rng, 2, *shape),
                np.asfortranarray(rand(rng, 3, shape[-1])), x.tolist()):
        assert call(bad) is None
    shared = np.empty(max(x.size, out.size), np.float32)
    bound = plan.bind(x.shape, shared[:out.size].reshape(out.shape))
    assert bound(shared[:x.size].reshape(x.shape)) is None     # x overlaps out: declined


def test_linear_plan_context_and_isa(rng):
    w, x = rand(rng, 50, 70), rand(rng, 9, 70)
    want = linear_f64(x, w)
    for isa in pyconv.supported_isas():
        ctx = pyconv.ExecutionContext(num_threads=2, isa=isa)
        plan = F.LinearPlan(w, context=ctx)
        assert plan.context is ctx
        assert_close_f64(plan.run(x), want, 70)
        assert plan.kernel.packed.isa == isa


# ---------------------------------------------------------------------------------------
# matmul: two dynamic operands

MATMUL_SHAPES = [
    ((1, 8, 64, 32), (1, 8, 32, 64)),         # attention scores
    ((4, 4, 26, 64), (4, 4, 64, 26)),         # OCR recogniser attention
    ((4, 4, 26, 26), (4, 4, 26, 64)),
    ((1, 1, 130, 70), (1, 1, 70, 90)),        # one larger product: split inside it
    ((3, 40, 300), (3, 300, 50)),             # K above one KC block
    ((2, 1, 5, 6), (3, 6, 2)),                # broadcast both ways
    ((5, 6), (4, 6, 7)),                      # 2-D left, batched right
    ((2, 3, 1, 9), (9, 1)),                   # M = N = 1
    ((6,), (2, 6, 3)), ((2, 5, 6), (6,)), ((6,), (6,)), ((7, 6), (6,)), ((6,), (6, 4)),
    ((2, 0, 4, 5), (1, 5, 3)), ((2, 4, 0), (2, 0, 3)), ((3, 4), (4, 5)), ((1, 5), (5, 1)),
]


@pytest.mark.parametrize("a_shape,b_shape", MATMUL_SHAPES, ids=str)
def test_matmul_matches_numpy_float64(threads, rng, a_shape, b_shape):
    a, b = rand(rng, *a_shape), rand(rng, *b_shape)
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    y = F.matmul(a, b)
    assert y.shape == want.shape and y.flags.c_contiguous
    assert_close_f64(y, want, a_shape[-1])
    np.testing.assert_array_equal(pyconv.matmul(a, b), y)


def test_matmul_reads_views_and_writes_out(rng):
    q = rand(rng, 2, 4, 26, 64)
    k = rand(rng, 2, 26, 4, 64).transpose(0, 2, 3, 1)      # K.T as a view: (2, 4, 64, 26)
    want = np.matmul(q.astype(np.float64), k.astype(np.float64))
    assert_close_f64(F.matmul(q, k), want, 64)
    assert_close_f64(F.matmul(q[:, ::2], k[:, ::2]), want[:, ::2], 64)
    out = np.empty((2, 4, 26, 26), np.float32)
    assert F.matmul(q, k, out=out) is out
    assert_close_f64(out, want, 64)
    big = rand(rng, 1, 1, 200, 150)
    ctx = pyconv.ExecutionContext(num_threads=2)
    assert_close_f64(F.matmul(big, big.transpose(0, 1, 3, 2), context=ctx),
                     np.matmul(big.astype(np.float64), big.transpose(0, 1, 3, 2)), 150)
    with pytest.raises(InvalidArgument, match=r"out must be a writeable aligned "
                                              r"C-contiguous float32 array of shape"):
        F.matmul(q, k, out=np.empty((2, 4, 26, 25), np.float32))


def test_matmul_errors_name_the_operands(rng):
    with pytest.raises(ShapeError, match=r"matmul: inner dimensions differ: input has shape "
                                         r"\(2, 3, 4\), other has shape \(2, 5, 6\)"):
        F.matmul(rand(rng, 2, 3, 4), rand(rng, 2, 5, 6))
    with pytest.raises(ShapeError, match=r"batch dims of input \(2, 3, 4\) and other "
                                         r"\(3, 4, 6\) do not broadcast"):
        F.matmul(rand(rng, 2, 3, 4), rand(rng, 3, 4, 6))
    with pytest.raises(ShapeError, match=r"at least one dim"):
        F.matmul(np.float32(2), rand(rng, 2))
    with pytest.raises(InvalidDType, match=r"matmul: other must be float32"):
        F.matmul(rand(rng, 2, 3), np.ones((3, 2)))
    with pytest.raises(ShapeError, match=r"matmul: output shape .* above pyconv's limit"):
        F.matmul(np.zeros((1, 70000, 0), np.float32), np.zeros((70000, 0, 70000), np.float32))
