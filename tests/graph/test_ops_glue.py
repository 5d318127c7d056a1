"""Normalisation and glue operators, one node each, against onnxruntime and the ONNX
reference evaluator (neither written here), over parametrised shapes and attributes;
and their errors, which name the node."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import pyconv
from pyconv.errors import PyconvError

ort = pytest.importorskip("onnxruntime")


@pytest.fixture
def rng():
    return np.random.default_rng(23)


def node_model(op, inputs, n_outputs=1, opset=17, consts=None, **attrs):
    """One ``op`` node. ``inputs``: name -> array (graph inputs) in order; ``consts``:
    name -> array (initializers, after the inputs); None for an absent optional input."""
    consts = consts or {}
    names = []
    for k, v in list(inputs.items()) + list(consts.items()):
        names.append("" if v is None else k)
    while names and not names[-1]:
        names.pop()
    outs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, names, outs, name="the_node", **attrs)
    g = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in inputs.items() if v is not None],
        [onnx.ValueInfoProto(name=o) for o in outs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()
         if v is not None])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8 if opset <= 18 else 10)


def check(m, feeds, rtol=1e-5, atol=1e-6, reference=True, reference_dtypes=True):
    """pyconv's outputs (dtype, shape, values) against onnxruntime's and the reference
    evaluator's (its dtypes too unless ``reference_dtypes`` is false: where onnxruntime
    departs from the spec, pyconv follows onnxruntime). Returns pyconv's outputs."""
    got = pyconv.InferenceSession(m).run(None, feeds)
    refs = [ort.InferenceSession(m.SerializeToString(),
                                 providers=["CPUExecutionProvider"]).run(None, feeds)]
    if reference:
        refs.append(ReferenceEvaluator(m).run(None, feeds))
    for k, want in enumerate(refs):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            w = np.asarray(w)
            if k and not reference_dtypes:
                w = w.astype(g.dtype)
            assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, g.shape, w.dtype,
                                                                w.shape)
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return got


def rand(rng, *shape, dtype=np.float32, scale=1.0, shift=0.0):
    return (rng.standard_normal(shape) * scale + shift).astype(dtype)


# ---------------------------------------------------------------------------------------
# Normalisation.

@pytest.mark.parametrize("shape,axis", [((2, 3, 4, 5), -1), ((2, 3, 4, 5), 1),
                                        ((2, 3, 4, 5), 0), ((6, 7), -2), ((4, 9), 1),
                                        ((3, 1, 16), -1)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("stats", [1, 3])
def test_layer_normalization(rng, shape, axis, bias, stats):
    x = rand(rng, *shape, scale=4.0, shift=2.0)
    norm = shape[axis:]
    m = node_model("LayerNormalization", {"x": x}, stats, epsilon=1e-3, axis=axis,
                   consts={"s": rand(rng, *norm), "b": rand(rng, *norm) if bias else None})
    check(m, {"x": x}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale_shape", [(1,), (5,), (1, 5), (4, 5)])
def test_layer_normalization_broadcast_scale_and_dtypes(rng, scale_shape):
    for dtype in (np.float32, np.float64, np.float16):
        x = rand(rng, 3, 4, 5, dtype=dtype, scale=2.0)
        m = node_model("LayerNormalization", {"x": x}, 3, axis=-1,
                       consts={"s": rand(rng, *scale_shape, dtype=dtype),
                               "b": rand(rng, *scale_shape, dtype=dtype)})
        tol = 2e-3 if dtype == np.float16 else 1e-5
        # float32 Mean / InvStdDev for stash_type 1 (the spec, onnxruntime); the reference
        # evaluator gives them the input's dtype.
        check(m, {"x": x}, rtol=tol, atol=tol, reference_dtypes=dtype == np.float32)


def test_layer_normalization_large_offset_is_accurate(rng):
    """Mean 1e4, spread 1: float64 sums and the two-pass variance keep ~1e-4 accuracy
    against a float64 NumPy reference."""
    x = rand(rng, 4, 256, scale=1.0, shift=1e4)
    m = node_model("LayerNormalization", {"x": x}, consts={"s": np.ones(256, np.float32)})
    y, = pyconv.InferenceSession(m).run(None, {"x": x})
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, want, atol=2e-3)


@pytest.mark.parametrize("opset", [18, 21])
@pytest.mark.parametrize("shape,groups", [((2, 6, 4, 5), 3), ((1, 8, 7), 8),
                                          ((3, 4, 2, 2, 2), 1), ((2, 6), 2)])
def test_group_normalization(rng, opset, shape, groups):
    x = rand(rng, *shape, scale=3.0, shift=-1.0)
    per = groups if opset == 18 else shape[1]
    m = node_model("GroupNormalization", {"x": x}, opset=opset, num_groups=groups,
                   epsilon=1e-4, consts={"s": rand(rng, per), "b": rand(rng, per)})
    check(m, {"x": x}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 4, 7), (2, 3, 2, 2, 3)])
def test_instance_normalization(rng, shape):
    x = rand(rng, *shape, scale=3.0, shift=2.0)
    m = node_model("InstanceNormalization", {"x": x}, epsilon=1e-4,
                   consts={"s": rand(rng, shape[1]), "b": rand(rng, shape[1])})
    check(m, {"x": x}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op,shape,attrs,per", [
    ("LayerNormalization", (8, 313, 96), {"axis": -1}, (96,)),
    ("LayerNormalization", (1, 196, 768), {"axis": -1}, (768,)),
    ("GroupNormalization", (1, 64, 32, 32), {"num_groups": 32}, (64,)),
    ("InstanceNormalization", (2, 32, 40, 40), {}, (32,)),
])
def test_norm_large_inputs_split_over_threads(rng, op, shape, attrs, per):
    """The row kernel split over 2 threads against onnxruntime and the reference."""
    x = rand(rng, *shape, scale=2.0, shift=1.0)
    m = node_model(op, {"x": x}, opset=21, consts={"s": rand(rng, *per), "b": rand(rng, *per)},
                   **attrs)
    opts = pyconv.SessionOptions()
    opts.intra_op_num_threads = 2
    got = pyconv.InferenceSession(m, opts).run(None, {"x": x})[0]
    want = ort.InferenceSession(m.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got, check(m, {"x": x}, rtol=1e-5, atol=1e-5)[0])


@pytest.mark.parametrize("op,inputs,consts,attrs,match", [
    ("LayerNormalization", {"x": np.zeros((2, 3), np.float32)},
     {"s": np.ones(4, np.float32)}, {}, r"'s' of shape \(4,\) does not broadcast"),
    ("LayerNormalization", {"x": np.zeros((2, 3), np.float32)},
     {"s": np.ones(3, np.float32)}, {"axis": 2}, r"axis 2 is out of range"),
    ("LayerNormalization", {"x": np.zeros((2, 3), np.int32)},
     {"s": np.ones(3, np.int32)}, {}, r"must be float16/32/64"),
    ("GroupNormalization", {"x": np.zeros((2, 6, 3), np.float32)},
     {"s": np.ones(6, np.float32), "b": np.ones(6, np.float32)}, {"num_groups": 4},
     r"C divisible by num_groups 4"),
    ("GroupNormalization", {"x": np.zeros((2, 6, 3), np.float32)},
     {"s": np.ones(3, np.float32), "b": np.ones(3, np.float32)}, {"num_groups": 3},
     r"'s' must have shape \(6,\) \(one value per channel"),
])
def test_norm_errors_name_the_node(op, inputs, consts, attrs, match):
    m = node_model(op, inputs, opset=21, consts=consts, **attrs)
    with pytest.raises(PyconvError, match=r"node 'the_node'.*" + match):
        pyconv.InferenceSession(m).run(None, {k: v for k, v in inputs.items()})


# ---------------------------------------------------------------------------------------
# Reductions.

REDUCE_OPS = ["ReduceMin", "ReduceMax", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "ReduceMean",
              "ReduceSum"]


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("axes,keepdims", [((1,), 1), ((0, 2), 0), ((-1,), 1), (None, 0)])
def test_reduce(rng, op, opset, axes, keepdims):
    x = rand(rng, 3, 4, 5, scale=0.5)
    if op == "ReduceLogSum":
        x = np.abs(x) + 0.1
    attrs, consts = {"keepdims": keepdims}, {}
    if axes is not None:
        if opset >= 18 or (op == "ReduceSum" and opset >= 13):
            consts["axes"] = np.array(axes, np.int64)
        else:
            attrs["axes"] = list(axes)
    m = node_model(op, {"x": x}, opset=opset, consts=consts, **attrs)
    check(m, {"x": x}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,axes,keepdims", [
    ((1, 64, 7, 7), (2, 3), 1),        # global pooling as the dynamo exporter writes it
    ((2, 3, 4, 5), (3, 1, 2), 0),      # trailing axes in any order, not kept
    ((2, 3, 5), (-1,), 1),
    ((2, 3, 4, 5), (0, 1), 1),         # leading axes: NumPy's mean
])
def test_reduce_mean_over_trailing_axes(rng, shape, axes, keepdims):
    """float32 ReduceMean over trailing axes runs on the global pool's kernel, bound to
    the planned shape (the later runs) when the axes are known."""
    from tests.graph.test_session import bound_steps
    x = rand(rng, *shape, shift=3.0)
    x[(0,) * len(shape)] = np.inf
    m = node_model("ReduceMean", {"x": x}, opset=13, axes=list(axes), keepdims=keepdims)
    check(m, {"x": x}, rtol=1e-6, atol=1e-6)
    x[(0,) * len(shape)] = np.nan
    m2 = node_model("ReduceMean", {"x": x}, opset=18, consts={"axes": np.array(axes)},
                    keepdims=keepdims)
    check(m2, {"x": x}, rtol=1e-6, atol=1e-6)
    trailing = sorted(a % len(shape) for a in axes) == list(range(len(shape) - len(axes),
                                                                  len(shape)))
    for model in (m, m2):
        s = pyconv.InferenceSession(model)
        for k in range(3):
            xk = rand(rng, *shape, shift=float(k))
            np.testing.assert_allclose(s.run(None, {"x": xk})[0],
                                       ReferenceEvaluator(model).run(None, {"x": xk})[0],
                                       rtol=1e-6, atol=1e-6)
        assert bound_steps(s) == (["ReduceMean"] if trailing else [])


@pytest.mark.parametrize("op", ["ReduceMin", "ReduceMax", "ReduceProd", "ReduceSumSquare",
                                "ReduceL1"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_reduce_integers(rng, op, dtype):
    x = rng.integers(-4, 5, (3, 4, 2)).astype(dtype)
    m = node_model(op, {"x": x}, opset=18, consts={"axes": np.array([1], np.int64)})
    # The reference evaluator widens ReduceSumSquare of int32 to int64.
    check(m, {"x": x}, reference_dtypes=False)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_noop_with_empty_axes(rng, op):
    x = np.abs(rand(rng, 2, 3)) + 0.1
    check(node_model(op, {"x": x}, opset=18, noop_with_empty_axes=1), {"x": x}, rtol=1e-6)
    m = node_model(op, {"x": x}, opset=18, noop_with_empty_axes=1,
                   consts={"axes": np.zeros(0, np.int64)})
    check(m, {"x": x}, rtol=1e-6)


def test_reduce_log_sum_exp_large_values(rng):
    x = rand(rng, 2, 3, scale=300.0)      # exp(x) overflows float32 beyond ~88
    m = node_model("ReduceLogSumExp", {"x": x}, opset=18,
                   consts={"axes": np.array([1], np.int64)})
    # The max-shifted sum is finite where the naive log(sum(exp)) of the reference
    # evaluator overflows; onnxruntime shifts too.
    y = check(m, {"x": x}, rtol=1e-6, reference=False)[0]
    assert np.isfinite(y).all()


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("last", [0, 1])
def test_arg_reduce_with_ties(rng, op, axis, keepdims, last):
    x = rng.integers(0, 3, (4, 5, 6)).astype(np.float32)    # many ties
    m = node_model(op, {"x": x}, axis=axis, keepdims=keepdims, select_last_index=last)
    check(m, {"x": x})


@pytest.mark.parametrize("shape,axis,k", [((4, 10), -1, 3), ((4, 10), 0, 4),
                                          ((2, 3, 7), 1, 3), ((9,), 0, 9), ((5, 6), 1, 0)])
@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_topk_ties_lower_index_first(rng, shape, axis, k, largest, dtype):
    x = rng.integers(0, 4, shape).astype(dtype)            # many ties
    m = node_model("TopK", {"x": x}, 2, opset=11, consts={"k": np.array([k], np.int64)},
                   axis=axis, largest=largest)
    check(m, {"x": x})


def test_topk_opset1_attribute_and_distinct_values(rng):
    x = rand(rng, 3, 50)
    check(node_model("TopK", {"x": x}, 2, opset=1, k=5), {"x": x})
    m = node_model("TopK", {"x": x}, 2, opset=11, consts={"k": np.array([7], np.int64)},
                   sorted=1)
    check(m, {"x": x})


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis,dtype", [(0, np.float32), (-1, np.float32), (1, np.int32),
                                        (2, np.float64)])
def test_cumsum(rng, exclusive, reverse, axis, dtype):
    x = (rng.standard_normal((3, 4, 5)) * 10).astype(dtype)
    m = node_model("CumSum", {"x": x}, opset=14, consts={"axis": np.array(axis, np.int64)},
                   exclusive=exclusive, reverse=reverse)
    check(m, {"x": x}, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# Comparison, logic, rounding, Mod.

@pytest.mark.parametrize("op", ["Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8])
@pytest.mark.parametrize("bshape", [(3, 4), (4,), (3, 1), ()])
def test_compare(rng, op, dtype, bshape):
    a = rng.integers(0, 4, (3, 4)).astype(dtype)
    b = rng.integers(0, 4, bshape).astype(dtype)
    check(node_model(op, {"a": a, "b": b}, opset=16), {"a": a, "b": b})


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
@pytest.mark.parametrize("bshape", [(2, 3, 4), (3, 1), ()])
def test_logic(rng, op, bshape):
    a = rng.random((2, 3, 4)) < 0.5
    b = np.asarray(rng.random(bshape) < 0.5)
    check(node_model(op, {"a": a, "b": b}), {"a": a, "b": b})
    check(node_model("Not", {"a": a}), {"a": a})


SPECIAL = np.array([0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 1e30, np.inf, -np.inf, np.nan,
                    3.7, -3.7], np.float32)


@pytest.mark.parametrize("op", ["Floor", "Ceil", "Round", "Sign", "IsNaN", "IsInf"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unary_special_values(rng, op, dtype):
    x = np.concatenate([SPECIAL, rand(rng, 20, scale=5.0)]).astype(dtype).reshape(3, 11)
    check(node_model(op, {"x": x}, opset=20), {"x": x})


@pytest.mark.parametrize("neg,pos", [(0, 1), (1, 0), (0, 0)])
def test_isinf_directions(neg, pos):
    x = SPECIAL.copy()
    check(node_model("IsInf", {"x": x}, detect_negative=neg, detect_positive=pos), {"x": x})


def test_sign_integers(rng):
    x = rng.integers(-5, 6, (4, 5)).astype(np.int32)
    check(node_model("Sign", {"x": x}), {"x": x})


@pytest.mark.parametrize("fmod", [0, 1])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64])
def test_mod_signs(rng, fmod, dtype):
    a = rng.integers(-20, 21, (4, 6)).astype(dtype)
    b = rng.choice([-7, -3, -1, 2, 5], (6,)).astype(dtype)
    if dtype in (np.float32, np.float64):
        a = a + rand(rng, 4, 6).astype(dtype)
        if not fmod:
            # onnxruntime implements fmod=0 for integers only: the reference evaluator
            # (Python's %, the divisor's sign) is the reference.
            got, = pyconv.InferenceSession(node_model("Mod", {"a": a, "b": b}, fmod=0)) \
                .run(None, {"a": a, "b": b})
            want, = ReferenceEvaluator(node_model("Mod", {"a": a, "b": b}, fmod=0)) \
                .run(None, {"a": a, "b": b})
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
            return
    check(node_model("Mod", {"a": a, "b": b}, fmod=fmod), {"a": a, "b": b})


# ---------------------------------------------------------------------------------------
# Tile, Range, NonZero, Einsum, gathers, OneHot.

@pytest.mark.parametrize("shape,reps", [((2, 3), (1, 2)), ((2, 1, 3), (3, 2, 1)),
                                        ((4,), (0,)), ((2, 2), (1, 1))])
def test_tile(rng, shape, reps):
    x = rand(rng, *shape)
    m = node_model("Tile", {"x": x}, consts={"r": np.array(reps, np.int64)})
    check(m, {"x": x})


@pytest.mark.parametrize("start,limit,delta,dtype", [
    (0, 10, 3, np.int64), (10, 4, -2, np.int32), (5, 5, 1, np.int64), (3, 1, 1, np.int64),
    (0.0, 1.0, 0.1, np.float32), (1.0, -2.5, -0.7, np.float64), (-3.0, 3.0, 0.5,
                                                                   np.float32)])
def test_range(start, limit, delta, dtype):
    feeds = {k: np.array(v, dtype) for k, v in zip("sld", (start, limit, delta))}
    check(node_model("Range", feeds, opset=11), feeds, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
def test_nonzero(rng, dtype):
    x = (rng.random((3, 4, 5)) < 0.3).astype(dtype)
    check(node_model("NonZero", {"x": x}, opset=13), {"x": x})


@pytest.mark.parametrize("value", [0.0, 2.0])
def test_nonzero_of_a_scalar_as_onnxruntime(value):
    x = np.array(value, np.float32)
    m = node_model("NonZero", {"x": x}, opset=13)
    got, = pyconv.InferenceSession(m).run(None, {"x": x})
    want, = ort.InferenceSession(m.SerializeToString(),
                                 providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert got.dtype == want.dtype and got.shape == want.shape == (1, int(value != 0))


@pytest.mark.parametrize("eq,shapes", [
    ("ij,jk->ik", [(3, 4), (4, 5)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("ij->ji", [(3, 4)]), ("ii->i", [(4, 4)]), ("i,i", [(5,), (5,)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 2)]), ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]), ("ij", [(3, 4)]), ("ij->", [(3, 4)]),
])
def test_einsum(rng, eq, shapes):
    feeds = {f"x{i}": rand(rng, *s) for i, s in enumerate(shapes)}
    check(node_model("Einsum", feeds, opset=12, equation=eq), feeds, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("smaller", [False, True])
def test_gather_elements(rng, axis, smaller):
    data = rand(rng, 4, 5, 3)
    ishape = [3, 4, 2] if smaller else list(data.shape)
    ishape[axis] = 6
    dim = data.shape[axis]
    idx = rng.integers(-dim, dim, ishape).astype(np.int64)
    feeds = {"d": data, "i": idx}
    # Indices smaller than the data outside the axis, or a negative axis: onnxruntime
    # runs them, the reference evaluator refuses them.
    check(node_model("GatherElements", feeds, axis=axis), feeds,
          reference=not smaller and axis >= 0)


@pytest.mark.parametrize("shape,axis,index", [
    ((3, 4, 5), 1, 2), ((3, 4, 5), -1, -1), ((6,), 0, -6), ((2, 3), 0, 1), ((1, 5, 1), 2, 0),
])
@pytest.mark.parametrize("constant", [True, False])
def test_gather_one_index(rng, shape, axis, index, constant):
    """A 0-d index (torch's x[:, i]) selects a view, bound once for a constant index; a
    1-D input gives a 0-d array. Read from a transposed layout (PSPNet's windows) and
    summed after, as the model does; run twice: the recording run, then the bound one."""
    data = rand(rng, *shape)
    perm = list(range(len(shape)))[::-1]
    idx = np.array(index, np.int64)
    feeds = {"d": np.ascontiguousarray(data.transpose(perm))}
    if not constant:
        feeds["i"] = idx
    nodes = [helper.make_node("Transpose", ["d"], ["t"], perm=perm),
             helper.make_node("Gather", ["t", "i"], ["g"], axis=axis),
             helper.make_node("Add", ["g", "g"], ["y0"]),
             helper.make_node("Gather", ["t", "i"], ["y1"], axis=axis)]
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in feeds.items()],
        [onnx.ValueInfoProto(name="y0"), onnx.ValueInfoProto(name="y1")],
        [numpy_helper.from_array(idx, "i")] if constant else [])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    want = np.take(data, index, axis=axis)
    sess = pyconv.InferenceSession(m)
    for _ in range(2):
        y0, y1 = sess.run(None, feeds)
        assert y1.shape == want.shape and y1.dtype == np.float32
        np.testing.assert_array_equal(y1, want)
        np.testing.assert_array_equal(y0, want + want)
    check(m, feeds)


@pytest.mark.parametrize("index", [4, -5])
def test_gather_one_index_out_of_range(index):
    feeds = {"d": np.zeros((3, 4), np.float32)}
    m = node_model("Gather", feeds, consts={"i": np.array(index, np.int64)}, axis=1)
    with pytest.raises(PyconvError, match=r"the_node.*indices out of range \[-4, 3\] for "
                                          r"axis 1 of input shape \(3, 4\)"):
        pyconv.InferenceSession(m).run(None, feeds)


@pytest.mark.parametrize("dshape,ishape,batch_dims", [
    ((4, 5), (3, 2), 0), ((4, 5, 6), (2, 3, 1), 0), ((2, 5, 6), (2, 3, 1), 1),
    ((2, 3, 4, 5), (2, 3, 2), 2), ((3, 4), (2,), 0), ((2, 4, 5), (2, 4, 1), 2),
])
def test_gather_nd(rng, dshape, ishape, batch_dims):
    data = rand(rng, *dshape)
    k = ishape[-1]
    dims = np.array(dshape[batch_dims:batch_dims + k])
    idx = (rng.integers(0, 1 << 20, ishape) % dims - (rng.random(ishape) < 0.3) * dims)
    feeds = {"d": data, "i": idx.astype(np.int64)}
    check(node_model("GatherND", feeds, opset=13, batch_dims=batch_dims), feeds)


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("idtype", [np.int64, np.float32])
def test_one_hot(rng, axis, idtype):
    depth = 6
    idx = rng.integers(-depth - 1, depth + 2, (3, 4)).astype(idtype)    # some out of range
    feeds = {"i": idx}
    m = node_model("OneHot", feeds, opset=11, axis=axis,
                   # onnxruntime's kernels: int64 depth for int64 indices, float for float.
                   consts={"depth": np.array(depth, np.int64 if idtype == np.int64
                                             else np.float32),
                           "values": np.array([-1.5, 2.0], np.float32)})
    check(m, feeds)


# ---------------------------------------------------------------------------------------
# Errors name the node, the argument and the values.

def _errors():
    f = np.zeros((2, 3), np.float32)
    i64 = np.array
    return [
        ("TopK", {"x": f}, {"k": i64([4], np.int64)}, {}, 11, r"k = 4 is out of range \[0, 3\]"),
        ("TopK", {"x": f}, {"k": i64([1, 2], np.int64)}, {}, 11, r"K must hold one value"),
        ("ArgMax", {"x": f}, {}, {"axis": 2}, 13, r"axis 2 is out of range"),
        ("ReduceMin", {"x": f}, {"axes": i64([3], np.int64)}, {}, 18, r"axis 3 is out of"),
        ("Tile", {"x": f}, {"r": i64([2], np.int64)}, {}, 13, r"repeats \[2\] must be 2"),
        ("Range", {"s": i64(0, np.int64), "l": i64(3, np.int64)},
         {"d": i64(0, np.int64)}, {}, 11, r"delta must not be 0"),
        ("Range", {"s": i64(0, np.int64), "l": i64(3, np.int32)},
         {"d": i64(1, np.int64)}, {}, 11, r"one dtype"),
        ("GatherElements", {"d": f}, {"i": i64([[0, 3]], np.int64)}, {"axis": 1}, 13,
         r"indices out of range"),
        ("GatherND", {"d": f}, {"i": i64([[0, 5]], np.int64)}, {}, 13,
         r"indices out of range"),
        ("GatherND", {"d": f}, {"i": i64([[0, 1, 0]], np.int64)}, {}, 13,
         r"last dim of indices must be from 1 to 2"),
        ("Einsum", {"a": np.zeros(1 << 18, np.float32)}, {"b": np.zeros(1 << 18, np.float32)},
         {"equation": "i,j->ij"}, 12, r"elements|too large|limit"),
        ("Einsum", {"a": f}, {"b": f}, {"equation": "ij,jk->ik"}, 12,
         r"does not fit the input shapes"),
        ("Mod", {"a": i64([3], np.int32)}, {"b": i64([0], np.int32)}, {}, 13,
         r"integer modulo by zero"),
        ("And", {"a": f}, {"b": f}, {}, 13, r"dtype float32 are not supported"),
        ("Less", {"a": f}, {"b": i64([1], np.int64)}, {}, 13, r"same type"),
        ("OneHot", {"i": i64([1], np.int64)}, {"d": i64(0, np.int64),
                                               "v": i64([0, 1], np.float32)}, {}, 11,
         r"depth must be positive"),
        ("CumSum", {"x": f}, {"a": i64([0, 1], np.int64)}, {}, 14, r"axis must be a scalar"),
    ]


@pytest.mark.parametrize("op,inputs,consts,attrs,opset,match", _errors())
def test_errors_name_the_node(op, inputs, consts, attrs, opset, match):
    m = node_model(op, inputs, 2 if op == "TopK" else 1, opset=opset, consts=consts,
                   **attrs)
    with pytest.raises(PyconvError, match=r"node 'the_node'.*" + match):
        pyconv.InferenceSession(m).run(None, inputs)


@pytest.mark.parametrize("bounds", [(0.0, 6.0), (-0.5, None), (None, 0.25), (None, None)],
                         ids=["relu6", "min", "max", "none"])
@pytest.mark.parametrize("opset", [6, 13])
def test_clip_with_constant_bounds_is_bound(rng, bounds, opset):
    """Clip's bounds, attributes (opset 6) or constant inputs (as exporters write ReLU6),
    are resolved once for the planned runs; a fed bound is read at each run."""
    from tests.graph.test_session import bound_steps
    lo, hi = bounds
    x = rand(rng, 2, 3, 5, scale=4.0)
    if opset < 11:
        attrs = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
        m = node_model("Clip", {"x": x}, opset=opset, **attrs)
    else:
        consts = {"lo": None if lo is None else np.float32(lo),
                  "hi": None if hi is None else np.float32(hi)}
        m = node_model("Clip", {"x": x}, opset=opset, consts=consts)
    s = pyconv.InferenceSession(m)
    for k in range(3):
        xk = rand(rng, 2, 3, 5, scale=4.0)
        np.testing.assert_array_equal(s.run(None, {"x": xk})[0],
                                      ReferenceEvaluator(m).run(None, {"x": xk})[0])
    assert bound_steps(s) == ["Clip"]
    fed = node_model("Clip", {"x": x, "lo": np.float32(-1.0)}, opset=13,
                     consts={"hi": np.float32(1.0)})
    s = pyconv.InferenceSession(fed)
    for lo_value in (-1.0, 0.5, -0.25):
        feeds = {"x": x, "lo": np.float32(lo_value)}
        np.testing.assert_array_equal(s.run(None, feeds)[0],
                                      ReferenceEvaluator(fed).run(None, feeds)[0])
    assert bound_steps(s) == []
