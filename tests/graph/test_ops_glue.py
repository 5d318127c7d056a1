"""Normalisation and glue operators, one node each, against onnxruntime and the ONNX
reference evaluator (neither written here), over parametrised shapes and attributes;
and their errors, which name the node."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
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
