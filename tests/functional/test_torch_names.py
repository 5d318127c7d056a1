"""torch-named functions and layers of issue 15: unfold / fold, pixel (un)shuffle,
layer / group / instance norm, bicubic and area interpolation, unbatched convolutions.

Three kinds of reference, none written here: torch's outputs stored by
``tests/reference/make_torch_functional.py`` (torch is not needed to run these tests),
the ONNX reference evaluator (the ONNX operators these functions share their code with),
and float64 NumPy loops.
"""
import json
import os

import numpy as np
import pytest

import pyconv.functional as F
import pyconv.nn as nn
from pyconv.errors import InvalidArgument, InvalidDType, ShapeError

onnx = pytest.importorskip("onnx")  # a pyconv dependency; the reference evaluator is in it
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

NPZ = os.path.join(os.path.dirname(__file__), os.pardir, "reference", "torch_functional.npz")


def _load():
    with np.load(NPZ) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads(str(arrays.pop("spec")))


ARRAYS, SPEC = _load()

# float32 against torch's float32: element-wise ops and short sums agree to a few ulp of
# values of order 1; the norms (standardised outputs times weights of order 1) and the
# cubic weights to a few more.
RTOL, ATOL = 1e-5, 2e-5


def _value(v, case):
    if isinstance(v, str) and v.startswith("@"):
        return ARRAYS[f"{case}/{v[1:]}"]
    return tuple(v) if isinstance(v, list) else v


@pytest.mark.parametrize("entry", SPEC, ids=[e["case"] for e in SPEC])
def test_matches_torch(entry):
    case = entry["case"]
    expected = ARRAYS[f"{case}/y"]
    if "fn" in entry:
        y = getattr(F, entry["fn"])(*[_value(a, case) for a in entry["args"]],
                                    **{k: _value(v, case) for k, v in entry["kwargs"].items()})
    else:
        layer = getattr(nn, entry["module"])(*[_value(a, case) for a in entry["init"]],
                                             **entry["init_kwargs"])
        state = {k: ARRAYS[f"{case}/state/{k}"] for k in entry["state"]}
        assert list(layer.state_dict()) == entry["state"]      # torch's keys, torch's order
        layer.load_state_dict(state)
        y = layer(ARRAYS[f"{case}/x"])
    assert y.dtype == np.float32 and y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=RTOL, atol=ATOL)


def test_reference_file_is_small_and_complete():
    assert os.path.getsize(NPZ) < 300_000
    covered = {e.get("fn") or e.get("module") for e in SPEC}
    assert {"unfold", "fold", "pixel_shuffle", "pixel_unshuffle", "layer_norm", "group_norm",
            "instance_norm", "interpolate", "conv2d", "conv_transpose2d", "LayerNorm",
            "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
            "PixelShuffle", "PixelUnshuffle", "Unfold", "Fold"} <= covered


# ---------------------------------------------------------------------------------------
# unfold / fold against float64 loops and each other


def _unfold64(x, k, d, p, s):
    """im2col by loops in float64: (N, C*kh*kw, L)."""
    n, c, h, w = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    bh = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    bw = (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    out = np.zeros((n, c, k[0], k[1], bh, bw))
    for i in range(k[0]):
        for j in range(k[1]):
            for a in range(bh):
                for b in range(bw):
                    out[:, :, i, j, a, b] = xp[:, :, a * s[0] + i * d[0], b * s[1] + j * d[1]]
    return out.reshape(n, c * k[0] * k[1], bh * bw)


GEOMETRIES = [((3, 3), (1, 1), (0, 0), (1, 1)), ((2, 3), (2, 1), (1, 2), (2, 1)),
              ((1, 1), (1, 1), (0, 0), (3, 2)), ((3, 2), (1, 3), (2, 0), (1, 2))]


@pytest.mark.parametrize("k, d, p, s", GEOMETRIES)
def test_unfold_matches_loops_and_fold_is_its_adjoint(k, d, p, s, rng):
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    cols = F.unfold(x, k, d, p, s)
    np.testing.assert_array_equal(cols, _unfold64(x, k, d, p, s))    # copies: exact
    # <unfold(x), y> == <x, fold(y)> for every y: fold is unfold's transpose.
    y = rng.standard_normal(cols.shape).astype(np.float32)
    folded = F.fold(y, (9, 8), k, d, p, s)
    assert folded.shape == x.shape
    np.testing.assert_allclose(np.vdot(cols.astype(np.float64), y),
                               np.vdot(x.astype(np.float64), folded), rtol=1e-5)
    # fold(unfold(x)) counts each pixel once per block that covers it.
    divisor = F.fold(F.unfold(np.ones_like(x), k, d, p, s), (9, 8), k, d, p, s)
    np.testing.assert_allclose(F.fold(cols, (9, 8), k, d, p, s), x * divisor, rtol=1e-6)


def test_unfold_then_matmul_is_conv2d(rng):
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    w = rng.standard_normal((5, 4, 3, 2)).astype(np.float32)
    cols = F.unfold(x, (3, 2), dilation=(1, 2), padding=1, stride=(2, 1))
    y = np.einsum("ok,nkl->nol", w.reshape(5, -1).astype(np.float64), cols)
    conv = F.conv2d(x, w, stride=(2, 1), padding=1, dilation=(1, 2))
    np.testing.assert_allclose(y.reshape(conv.shape), conv, rtol=1e-4, atol=1e-4)


def test_unfold_fold_unbatched_and_empty_batch(rng):
    x = rng.standard_normal((3, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(F.unfold(x, 2), F.unfold(x[None], 2)[0])
    cols = F.unfold(x, 2)
    np.testing.assert_array_equal(F.fold(cols, 5, 2), F.fold(cols[None], 5, 2)[0])
    assert F.unfold(np.zeros((0, 3, 5, 5), np.float32), 2).shape == (0, 12, 16)


def test_unfold_fold_bad_arguments():
    x = np.zeros((1, 2, 5, 4), np.float32)
    with pytest.raises(ShapeError, match=r"unfold: input must be 4-D .* got shape \(5, 4\)"):
        F.unfold(x[0, 0], 2)
    with pytest.raises(ShapeError, match=r"unfold: kernel size 5 is larger than the padded "
                                         r"input 4 along dim 1"):
        F.unfold(x, 5)
    with pytest.raises(InvalidArgument, match=r"unfold: padding must have 2 elements"):
        F.unfold(x, 2, padding=(1, 2, 3, 4))
    with pytest.raises(InvalidArgument, match=r"unfold: stride must be positive, got 0"):
        F.unfold(x, 2, stride=0)
    with pytest.raises(InvalidArgument, match=r"unfold: padding must be >= 0, got -1"):
        F.unfold(x, 2, padding=-1)
    with pytest.raises(ShapeError, match=r"unfold: padded input shape \(1, 2, 2000005, "
                                         r"2000004\) has .* elements, above pyconv's limit"):
        F.unfold(x, 2, padding=10**6, stride=10**6)       # refused before allocating
    with pytest.raises(ShapeError, match=r"unfold: output shape .* above pyconv's limit"):
        F.unfold(np.zeros((1, 1, 2, 2), np.float32), 1, padding=10**5)
    with pytest.raises(InvalidDType, match=r"unfold: input must be float32"):
        F.unfold(x.astype(np.float64), 2)
    cols = np.zeros((1, 8, 12), np.float32)
    with pytest.raises(ShapeError, match=r"fold: input has 12 columns \(shape \(1, 8, 12\)\), "
                                         r"but output_size=\(4, 4\) .* holds 3 \* 3 = 9"):
        F.fold(cols, 4, 2)
    with pytest.raises(ShapeError, match=r"fold: input has 7 rows .* multiple of the "
                                         r"kernel's 2 \* 2 = 4 taps"):
        F.fold(np.zeros((1, 7, 9), np.float32), 4, 2)
    with pytest.raises(ShapeError, match=r"fold: input must be 3-D .* got shape \(9,\)"):
        F.fold(np.zeros(9, np.float32), 4, 2)
    with pytest.raises(InvalidArgument, match=r"fold: output_size must have 2 elements"):
        F.fold(cols, (4, 4, 4), 2)


# ---------------------------------------------------------------------------------------
# pixel (un)shuffle: the ONNX DepthToSpace / SpaceToDepth code


def _run_onnx(op_type, inputs, opset, **attrs):
    """One node through the ONNX reference evaluator (float32 inputs x, s, b, ...)."""
    names = [f"i{k}" for k in range(len(inputs))]
    node = helper.make_node(op_type, names, ["y"], **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape))
                      for n, a in zip(names, inputs)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, dict(zip(names, inputs)))[0]


@pytest.mark.parametrize("shape, r", [((2, 8, 3, 4), 2), ((1, 18, 2, 3), 3), ((1, 5, 2, 2), 1)])
def test_pixel_shuffle_is_depth_to_space_crd(shape, r, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    y = F.pixel_shuffle(x, r)
    np.testing.assert_array_equal(y, _run_onnx("DepthToSpace", [x], 13, blocksize=r,
                                               mode="CRD"))
    np.testing.assert_array_equal(F.pixel_unshuffle(y, r), x)
    # Leading dims are batch dims: pixel_shuffle of (2, 3, C, H, W) is that of each.
    xs = np.stack([x, 2 * x])
    np.testing.assert_array_equal(F.pixel_shuffle(xs, r), np.stack([y, 2 * y]))
    np.testing.assert_array_equal(F.pixel_shuffle(x[0], r), y[0])


def test_pixel_unshuffle_matches_reshape_reference(rng):
    x = rng.standard_normal((2, 3, 6, 4)).astype(np.float32)
    ref = x.reshape(2, 3, 3, 2, 2, 2).transpose(0, 1, 3, 5, 2, 4).reshape(2, 12, 3, 2)
    np.testing.assert_array_equal(F.pixel_unshuffle(x, 2), ref)
    # DCR (ONNX SpaceToDepth's order) through the reference evaluator
    np.testing.assert_array_equal(F.space_to_depth(x, 2),
                                  _run_onnx("SpaceToDepth", [x], 13, blocksize=2))


def test_pixel_shuffle_bad_arguments():
    x = np.zeros((1, 7, 2, 2), np.float32)
    with pytest.raises(ShapeError, match=r"pixel_shuffle: input has 7 channels \(shape "
                                         r"\(1, 7, 2, 2\)\), not divisible by blocksize\^2 = 4"):
        F.pixel_shuffle(x, 2)
    with pytest.raises(ShapeError, match=r"pixel_shuffle: input must have shape \(\*, C, H, W\)"
                                         r".* got \(7, 2\)"):
        F.pixel_shuffle(x[0, :, :, 0], 2)
    with pytest.raises(InvalidArgument, match=r"pixel_shuffle: upscale_factor must be "
                                              r"positive, got 0"):
        F.pixel_shuffle(x, 0)
    with pytest.raises(ShapeError, match=r"pixel_unshuffle: spatial size \(2, 2\) .* not "
                                         r"divisible by blocksize 3"):
        F.pixel_unshuffle(x, 3)
    with pytest.raises(InvalidDType, match=r"pixel_unshuffle: input must be float32"):
        F.pixel_unshuffle(x.astype(np.float16), 2)


# ---------------------------------------------------------------------------------------
# normalisation: float64 references and the ONNX operators


def _standardize64(x, axes, eps):
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


@pytest.mark.parametrize("shape, k", [((2, 3, 5), 1), ((4, 6, 7), 2), ((3, 8), 2)])
def test_layer_norm_matches_float64_and_onnx(shape, k, rng):
    x = (rng.standard_normal(shape) * 3 + 5).astype(np.float32)
    ns = shape[-k:]
    w = rng.standard_normal(ns).astype(np.float32)
    b = rng.standard_normal(ns).astype(np.float32)
    axes = tuple(range(len(shape) - k, len(shape)))
    ref = _standardize64(x, axes, 1e-5) * w + b
    y = F.layer_norm(x, ns, w, b)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    onnx_y = _run_onnx("LayerNormalization", [x, w, b], 17, axis=len(shape) - k)
    np.testing.assert_allclose(y, onnx_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(F.layer_norm(x, ns[-1] if k == 1 else ns),
                               _standardize64(x, axes, 1e-5), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, groups", [((2, 6, 4, 5), 3), ((3, 4, 7), 4), ((2, 6), 1),
                                           ((1, 4, 2, 2, 3), 2)])
def test_group_norm_matches_float64_and_onnx(shape, groups, rng):
    x = (rng.standard_normal(shape) + 2).astype(np.float32)
    c = shape[1]
    w = rng.standard_normal(c).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    grouped = x.reshape(shape[0], groups, -1)
    ref = _standardize64(grouped, (2,), 1e-5).reshape(shape)
    view = (1, c) + (1,) * (len(shape) - 2)
    ref = ref * w.reshape(view) + b.reshape(view)
    y = F.group_norm(x, groups, w, b)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    # opset 21: one scale / bias per channel, as torch
    onnx_y = _run_onnx("GroupNormalization", [x, w, b], 21, num_groups=groups)
    np.testing.assert_allclose(y, onnx_y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 2, 7), (2, 2, 2, 3, 2)])
def test_instance_norm_matches_float64_and_onnx(shape, rng):
    x = (rng.standard_normal(shape) * 2 - 1).astype(np.float32)
    c = shape[1]
    w = rng.standard_normal(c).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    view = (1, c) + (1,) * (len(shape) - 2)
    ref = _standardize64(x, tuple(range(2, len(shape))), 1e-5) * w.reshape(view) \
        + b.reshape(view)
    y = F.instance_norm(x, weight=w, bias=b)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    onnx_y = _run_onnx("InstanceNormalization", [x, w, b], 6)
    np.testing.assert_allclose(y, onnx_y, rtol=1e-5, atol=1e-5)
    # Without the input's statistics: batch norm with the running ones.
    m = rng.standard_normal(c).astype(np.float32)
    v = rng.uniform(0.5, 2, c).astype(np.float32)
    np.testing.assert_allclose(F.instance_norm(x, m, v, w, b, use_input_stats=False),
                               F.batch_norm(x, m, v, w, b), rtol=1e-6, atol=1e-6)


def test_onnx_norm_ops_run_the_functional_code(rng):
    """The ONNX operators and the functions are one implementation: same bits."""
    import pyconv
    x = rng.standard_normal((2, 8, 3, 4)).astype(np.float32)
    w = rng.standard_normal(8).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    cases = [("InstanceNormalization", {}, 17, F.instance_norm(x, weight=w, bias=b)),
             ("GroupNormalization", {"num_groups": 2}, 21, F.group_norm(x, 2, w, b)),
             ("DepthToSpace", {"blocksize": 2, "mode": "CRD"}, 17, F.pixel_shuffle(x, 2))]
    for op_type, attrs, opset, expected in cases:
        inputs = ["x", "w", "b"] if "Norm" in op_type else ["x"]
        node = helper.make_node(op_type, inputs, ["y"], **attrs)
        graph = helper.make_graph(
            [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            initializer=[onnx.numpy_helper.from_array(w, "w"),
                         onnx.numpy_helper.from_array(b, "b")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        y = pyconv.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
        np.testing.assert_array_equal(y, expected, err_msg=op_type)


def test_norm_bad_arguments():
    x = np.zeros((2, 6, 3), np.float32)
    with pytest.raises(ShapeError, match=r"layer_norm: normalized_shape=\(4,\) expects an "
                                         r"input of shape \(\*, 4\), got \(2, 6, 3\)"):
        F.layer_norm(x, 4)
    with pytest.raises(InvalidArgument, match=r"layer_norm: normalized_shape must have at "
                                              r"least one dim"):
        F.layer_norm(x, ())
    with pytest.raises(ShapeError, match=r"layer_norm: weight has shape \(6,\), expected "
                                         r"\(6, 3\)"):
        F.layer_norm(x, (6, 3), np.ones(6, np.float32))
    with pytest.raises(ShapeError, match=r"group_norm: the input's 6 channels \(shape "
                                         r"\(2, 6, 3\)\) are not divisible by num_groups=4"):
        F.group_norm(x, 4)
    with pytest.raises(InvalidArgument, match=r"group_norm: num_groups must be positive"):
        F.group_norm(x, 0)
    with pytest.raises(ShapeError, match=r"group_norm: input must have shape \(N, C, \*\), "
                                         r"got \(6,\)"):
        F.group_norm(x[0, :, 0], 2)
    with pytest.raises(ShapeError, match=r"group_norm: bias has shape \(3,\), expected \(6,\)"):
        F.group_norm(x, 2, None, np.ones(3, np.float32))
    with pytest.raises(ShapeError, match=r"instance_norm: expected more than 1 spatial "
                                         r"element .* \(2, 6, 1\)"):
        F.instance_norm(x[:, :, :1])
    with pytest.raises(ShapeError, match=r"instance_norm: input must have shape"):
        F.instance_norm(x[:, :, 0])
    with pytest.raises(InvalidArgument, match=r"instance_norm: running_mean and running_var "
                                              r"are required with use_input_stats=False"):
        F.instance_norm(x, use_input_stats=False)
    with pytest.raises(InvalidArgument, match=r"instance_norm: running_mean / running_var "
                                              r"with use_input_stats=True"):
        F.instance_norm(x, np.zeros(6, np.float32), np.ones(6, np.float32))
    with pytest.raises(InvalidDType, match=r"instance_norm: input must be float32"):
        F.instance_norm(x.astype(np.float64))


# ---------------------------------------------------------------------------------------
# bicubic and area interpolation


@pytest.mark.parametrize("size, ac", [((9, 4), False), ((9, 4), True), ((3, 11), False),
                                      ((5, 6), True), ((1, 2), True)])
def test_bicubic_is_onnx_cubic_resize(size, ac, rng):
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    y = F.interpolate(x, size=size, mode="bicubic", align_corners=ac)
    sizes = np.array((2, 3) + size, np.int64)
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="cubic",
                            cubic_coeff_a=-0.75,
                            coordinate_transformation_mode="align_corners" if ac
                            else "half_pixel")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[onnx.numpy_helper.from_array(sizes, "sizes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_bicubic_keeps_integer_grid_values_and_constants(rng):
    x = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    # Same size without align_corners: every source coordinate is a pixel centre.
    np.testing.assert_allclose(F.interpolate(x, size=(4, 5), mode="bicubic"), x, atol=1e-6)
    # The cubic weights sum to 1: constants stay constant.
    c = np.full((1, 1, 4, 5), 3.5, np.float32)
    np.testing.assert_allclose(F.interpolate(c, scale_factor=2.3, mode="bicubic"), 3.5,
                               rtol=1e-6)


@pytest.mark.parametrize("shape, size", [((1, 2, 10), (4,)), ((2, 1, 7, 9), (3, 4)),
                                         ((1, 2, 4, 4, 6), (2, 3, 4)), ((1, 1, 3, 5), (6, 7))])
def test_area_is_adaptive_average(shape, size, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    y = F.interpolate(x, size=size, mode="area")
    ref = np.zeros(shape[:2] + size)
    for o in np.ndindex(*size):    # torch's windows [floor(o*L/O), ceil((o+1)*L/O))
        window = tuple(slice(i * L // O, -(-(i + 1) * L // O))
                       for i, L, O in zip(o, shape[2:], size))
        ref[(Ellipsis,) + o] = x[(Ellipsis,) + window].astype(np.float64).mean(
            axis=tuple(range(2, len(shape))))
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_interpolate_new_modes_bad_arguments():
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(InvalidArgument, match=r"interpolate: align_corners can only be set "
                                              r"with the interpolating modes linear \| "
                                              r"bilinear \| bicubic \| trilinear, got "
                                              r"mode='area'"):
        F.interpolate(x, size=2, mode="area", align_corners=False)
    with pytest.raises(InvalidArgument, match=r"interpolate: mode='bicubic' needs 2 spatial "
                                              r"dims \(a 4-D input\), got input shape "
                                              r"\(1, 2, 4\)"):
        F.interpolate(x[..., 0], size=2, mode="bicubic")
    with pytest.raises(InvalidArgument, match=r"mode must be one of .*'area'.* got str 'cubic'"):
        F.interpolate(x, size=2, mode="cubic")


# ---------------------------------------------------------------------------------------
# unbatched convolutions


@pytest.mark.parametrize("n", [1, 2, 3])
def test_unbatched_conv_is_batch_of_one(n, rng):
    x = rng.standard_normal((3,) + (5,) * n).astype(np.float32)
    w = rng.standard_normal((4, 3) + (3,) * n).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    conv = getattr(F, f"conv{n}d")
    y = conv(x, w, b, padding=1)
    assert y.shape == (4,) + (5,) * n
    np.testing.assert_array_equal(y, conv(x[None], w, b, padding=1)[0])
    wt = rng.standard_normal((3, 2) + (3,) * n).astype(np.float32)
    convt = getattr(F, f"conv_transpose{n}d")
    yt = convt(x, wt, stride=2, output_padding=1)
    assert yt.shape == (2,) + (12,) * n
    np.testing.assert_array_equal(yt, convt(x[None], wt, stride=2, output_padding=1)[0])
    # output_size as torch takes it: spatial only, or with the leading dims
    np.testing.assert_array_equal(convt(x, wt, stride=2, output_size=(2,) + (12,) * n), yt)
    with pytest.raises(ShapeError, match=rf"conv{n}d: input must be {n + 2}-D .* or "
                                         rf"unbatched {n + 1}-D .* got shape"):
        conv(x[0], w)
    with pytest.raises(ShapeError, match=r"input has 2 channels, the weight expects 3"):
        conv(x[:2], w)


# ---------------------------------------------------------------------------------------
# layers


def test_layers_state_dicts_and_reprs():
    assert list(nn.LayerNorm((4, 5)).state_dict()) == ["weight", "bias"]
    assert list(nn.LayerNorm(4, bias=False).state_dict()) == ["weight"]
    assert not nn.LayerNorm(4, elementwise_affine=False).state_dict()
    assert repr(nn.LayerNorm((4, 5))) == "LayerNorm((4, 5), eps=1e-05, elementwise_affine=True)"
    assert repr(nn.GroupNorm(2, 6)) == "GroupNorm(2, 6, eps=1e-05, affine=True)"
    assert not nn.InstanceNorm2d(3).state_dict()
    tracked = nn.InstanceNorm2d(3, affine=True, track_running_stats=True)
    assert list(tracked.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                          "num_batches_tracked"]
    assert repr(tracked) == ("InstanceNorm2d(3, eps=1e-05, momentum=0.1, affine=True, "
                             "track_running_stats=True)")
    assert repr(nn.PixelShuffle(2)) == "PixelShuffle(upscale_factor=2)"
    assert repr(nn.Unfold(3, padding=1)) == \
        "Unfold(kernel_size=3, dilation=1, padding=1, stride=1)"
    assert {"LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
            "PixelShuffle", "PixelUnshuffle", "Unfold", "Fold"} <= set(nn.__all__)
    import pyconv.nn.functional as NF     # torch's import path, the same functions
    assert {"unfold", "fold", "pixel_shuffle", "pixel_unshuffle", "layer_norm", "group_norm",
            "instance_norm"} <= set(NF.__all__)


def test_layers_bad_arguments(rng):
    with pytest.raises(InvalidArgument, match=r"GroupNorm: num_channels \(6\) must be "
                                              r"divisible by num_groups \(4\)"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ShapeError, match=r"GroupNorm: input has 4 channels, the layer has "
                                         r"num_channels=6"):
        nn.GroupNorm(2, 6)(np.zeros((1, 4, 3), np.float32))
    with pytest.raises(ShapeError, match=r"InstanceNorm2d: expected 3D \(unbatched\) or 4D "
                                         r"\(batched\) input, got 2D"):
        nn.InstanceNorm2d(3)(np.zeros((3, 4), np.float32))
    with pytest.raises(ShapeError, match=r"InstanceNorm1d: expected input's size at dim 1 "
                                         r"to match num_features \(3\), but got 4"):
        nn.InstanceNorm1d(3, affine=True)(np.zeros((1, 4, 5), np.float32))
    tracked = nn.InstanceNorm1d(3, track_running_stats=True).train()
    with pytest.raises(InvalidArgument, match=r"InstanceNorm1d: training mode with "
                                              r"track_running_stats"):
        tracked(np.zeros((1, 3, 5), np.float32))
    # training mode without running statistics is what evaluation does
    x = rng.standard_normal((1, 3, 5)).astype(np.float32)
    np.testing.assert_array_equal(nn.InstanceNorm1d(3).train()(x), F.instance_norm(x))
    with pytest.raises(InvalidArgument, match=r"PixelUnshuffle: downscale_factor must be "
                                              r"positive"):
        nn.PixelUnshuffle(0)
