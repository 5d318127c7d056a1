"""Glue operators of real exports made fast (vectorised or single copies): DepthToSpace /
SpaceToDepth, ScatterND, batched MatMul and Resize, checked against the ONNX reference
evaluator and onnxruntime."""
import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from tests.graph import _build as B
from tests.graph.test_fusions import session

mk = helper.make_node


@pytest.fixture
def rng():
    return np.random.default_rng(5)


@pytest.mark.parametrize("op_type", ["DepthToSpace", "SpaceToDepth"])
@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("b", [1, 2, 3])
def test_block_ops_match_the_reference_evaluator(rng, op_type, mode, b):
    shape = [2, 2 * b * b, 3 * b, 2 * b]
    m = B.model([mk(op_type, ["x"], ["y"], blocksize=b, mode=mode)], [("x", shape)],
                [("y", None)], opset=13)
    if op_type == "SpaceToDepth" and mode == "CRD":
        # ONNX SpaceToDepth has no CRD mode before opset 28 (what the optimizer makes of
        # pixel_unshuffle): the reference is pixel_unshuffle in NumPy.
        x = B.rand(rng, *shape)
        y = session(m).run(None, {"x": x})[0]
        n, c, h, w = shape
        want = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 1, 3, 5, 2, 4)
        np.testing.assert_array_equal(y, want.reshape(n, c * b * b, h // b, w // b))
        return
    x = B.rand(rng, *shape)
    want = ReferenceEvaluator(m).run(None, {"x": x})[0]
    s = session(m)
    for _ in range(2):
        np.testing.assert_array_equal(s.run(None, {"x": x})[0], want)


def _scatter_model(data_shape, idx_shape, upd_shape, reduction):
    g = helper.make_graph(
        [mk("ScatterND", ["data", "idx", "upd"], ["y"], reduction=reduction)], "g",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, data_shape),
         helper.make_tensor_value_info("idx", TensorProto.INT64, idx_shape),
         helper.make_tensor_value_info("upd", TensorProto.FLOAT, upd_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, data_shape)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd_matches_the_reference_evaluator(rng, k, reduction):
    data_shape = [3, 4, 5, 6]
    count = 40
    dims = np.array(data_shape[:k])
    if reduction == "none":     # duplicates are undefined without a reduction
        flat = rng.choice(int(np.prod(dims)), size=min(count, int(np.prod(dims))) // 2 * 2,
                          replace=False)
        idx = np.stack(np.unravel_index(flat, dims), axis=-1)
    else:                       # duplicates on purpose: every one must be reduced
        idx = rng.integers(0, dims, size=(count, k))
    idx = np.where(rng.random(idx.shape) < 0.3, idx - dims, idx)    # negative indices
    idx = idx.reshape(2, -1, k).astype(np.int64)
    upd_shape = list(idx.shape[:-1]) + data_shape[k:]
    feeds = {"data": B.rand(rng, *data_shape), "idx": idx, "upd": B.rand(rng, *upd_shape)}
    m = _scatter_model(data_shape, list(idx.shape), upd_shape, reduction)
    want = ReferenceEvaluator(m).run(None, feeds)[0]
    np.testing.assert_allclose(session(m).run(None, feeds)[0], want, rtol=1e-6)


def test_scatter_nd_as_torch_exports_max_unpool2d(rng):
    # torch's max_unpool2d export: zeros of the output size, flattened per (n, c) plane,
    # ScatterND of the pooled values at MaxPool's indices (one index per row).
    n, c, h, w = 2, 3, 8, 6
    x = B.rand(rng, n, c, h, w)
    planes = x.reshape(n * c, h // 2, 2, w // 2, 2).transpose(0, 1, 3, 2, 4)
    planes = planes.reshape(n * c, (h // 2) * (w // 2), 4)
    arg = planes.argmax(-1)
    rows, cols = np.divmod(arg, 2)
    oh = np.arange(h // 2)[None, :, None] * 2 + rows.reshape(n * c, h // 2, w // 2)
    ow = np.arange(w // 2)[None, None, :] * 2 + cols.reshape(n * c, h // 2, w // 2)
    flat = (np.arange(n * c)[:, None, None] * h * w + oh * w + ow).reshape(-1, 1)
    upd = planes.max(-1).reshape(-1)
    feeds = {"data": np.zeros(n * c * h * w, np.float32), "idx": flat.astype(np.int64),
             "upd": upd}
    m = _scatter_model([n * c * h * w], list(flat.shape), [upd.size], "none")
    want = ReferenceEvaluator(m).run(None, feeds)[0]
    np.testing.assert_array_equal(session(m).run(None, feeds)[0], want)


def test_scatter_nd_rejects_out_of_range_indices(rng):
    import pyconv
    m = _scatter_model([4, 3], [2, 1], [2, 3], "none")
    feeds = {"data": B.rand(rng, 4, 3), "idx": np.array([[1], [4]], np.int64),
             "upd": B.rand(rng, 2, 3)}
    with pytest.raises(pyconv.errors.InvalidArgument, match="out of range"):
        session(m).run(None, feeds)


@pytest.mark.parametrize("a_shape,b_shape", [
    ([8, 26, 64], [8, 64, 26]),          # attention scores in an OCR recogniser
    ([8, 26, 26], [8, 26, 64]),          # attention-weighted values
    ([2, 3, 40, 70], [70, 90]),          # 2-D right operand: packed weight
    ([2, 1, 70, 80], [3, 80, 90]),       # large broadcast batch: packed GEMM per matrix
    ([4, 1, 5, 6], [3, 6, 2]),           # small broadcast batch
    ([6], [2, 6, 3]),                    # vector left operand
    ([2, 5, 6], [6]),                    # vector right operand
])
def test_matmul_batched_matches_onnxruntime(rng, a_shape, b_shape):
    g = helper.make_graph([mk("MatMul", ["a", "b"], ["y"])], "g",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, a_shape),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, b_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feeds = {"a": B.rand(rng, *a_shape), "b": B.rand(rng, *b_shape)}
    want = B.ort_run(m, feeds)[0]
    s = session(m)
    for _ in range(2):
        got = s.run(None, feeds)[0]
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ctm,nearest_mode", [
    ("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"),
    ("pytorch_half_pixel", "round_prefer_floor"), ("align_corners", "round_prefer_floor"),
    ("half_pixel", "round_prefer_ceil"), ("asymmetric", "ceil")])
@pytest.mark.parametrize("shape,scales", [
    ([1, 3, 5, 7], [1, 1, 2, 2]), ([2, 4, 3, 3], [1, 1, 3, 2]), ([2, 6, 9], [1, 2, 4]),
    ([1, 2, 4, 4], [1, 1, 2.5, 2]), ([1, 2, 3, 4, 5], [1, 1, 2, 2, 2]),  # 3-D volume
    ([2, 3, 4, 5], [1, 1, 1, 3])])                                        # one axis
def test_resize_nearest_matches_onnxruntime(rng, ctm, nearest_mode, shape, scales):
    g = helper.make_graph(
        [mk("Resize", ["x", "", "s"], ["y"], mode="nearest",
            coordinate_transformation_mode=ctm, nearest_mode=nearest_mode)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("s", TensorProto.FLOAT, [len(scales)], scales)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feeds = {"x": B.rand(rng, *shape)}
    want = B.ort_run(m, feeds)[0]
    s = session(m)
    for _ in range(2):
        np.testing.assert_array_equal(s.run(None, feeds)[0], want)


@pytest.mark.parametrize("ctm", ["half_pixel", "align_corners", "pytorch_half_pixel",
                                 "asymmetric", "half_pixel_symmetric"])
@pytest.mark.parametrize("shape,out", [
    ([1, 5, 7, 6], [1, 5, 28, 24]),      # 4x up (ASPP head)
    ([2, 3, 9, 8], [2, 3, 4, 5]),        # down
    ([1, 2, 1, 5], [1, 2, 3, 11]),       # a one-pixel axis
    ([2, 4, 6], [2, 4, 13]),             # 1-D signal: only the last axis (NumPy path)
    ([2, 5, 7], [2, 10, 14]),            # rank 3, both last axes resized
])
def test_resize_linear_matches_onnxruntime(rng, ctm, shape, out):
    g = helper.make_graph(
        [mk("Resize", ["x", "", "", "sizes"], ["y"], mode="linear",
            coordinate_transformation_mode=ctm)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("sizes", TensorProto.INT64, [len(out)], out)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    feeds = {"x": B.rand(rng, *shape)}
    want = ReferenceEvaluator(m).run(None, feeds)[0]
    if ctm != "half_pixel_symmetric":     # newer than this onnxruntime's Resize
        np.testing.assert_allclose(B.ort_run(m, feeds)[0], want, rtol=1e-5, atol=1e-5)
    s = session(m)
    for _ in range(2):
        got = s.run(None, feeds)[0]
        assert got.shape == tuple(out)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_kernels_write_into_out(rng, mode):
    """The C kernels write a given ``out`` (a planned buffer) with the bits of a new
    output, and refuse one of another shape, dtype or layout."""
    from pyconv._ext import resize as K
    from pyconv.functional._resize import _axis_taps
    x = B.rand(rng, 3, 5, 7)
    (iy, wy), (ix, wx) = [_axis_taps(mode, "half_pixel", o, i, o / i, "round_prefer_floor")
                          for o, i in ((11, 5), (14, 7))]
    run = (lambda **kw: K.nearest_2d(x, iy, ix, **kw)) if mode == "nearest" else \
        (lambda **kw: K.linear_2d(x, iy, wy, ix, wx, **kw))
    want = run()
    out = np.full((3, 11, 14), np.nan, np.float32)
    assert run(out=out) is out
    np.testing.assert_array_equal(out, want)
    for bad in (np.empty((3, 11, 13), np.float32), np.empty((3, 11, 14), np.float64),
                np.empty((3, 14, 11), np.float32).transpose(0, 2, 1)):
        with pytest.raises(ValueError, match="out must be a writeable C-contiguous float32"):
            run(out=bad)
