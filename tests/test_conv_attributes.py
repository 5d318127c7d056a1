"""ConvAttributes, the one resolver of the conv family's geometry: every auto_pad mode,
ceil_mode, output_shape / output_padding, for Conv, ConvTranspose and the pools, through
the ONNX ops (checked against onnxruntime) and the functional layer alike."""
import itertools

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import pyconv
import pyconv.functional as F
from pyconv.arithmetic import ConvAttributes, ConvGeometry
from pyconv.errors import InvalidArgument, ShapeError
from tests.graph import _build as B

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
# (input spatial, kernel, strides, dilations, explicit pads): odd and even sizes, strides
# that do and do not divide them.
GEOMETRIES = [
    ((7, 8), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    ((7, 8), (3, 2), (2, 3), (1, 1), (0, 1, 2, 1)),
    ((9, 6), (2, 3), (3, 2), (2, 1), (1, 0, 1, 2)),
    ((5, 5), (4, 4), (2, 2), (1, 1), (1, 2, 2, 1)),
]


def _geometry_id(g):
    return "x".join(map(str, g[0])) + f"-k{g[1]}-s{g[2]}-d{g[3]}"


def _reference(m, feeds):
    """onnxruntime's outputs, or the ONNX reference evaluator's where onnxruntime has no
    kernel (e.g. dilated SAME convolutions)."""
    try:
        return B.ort_run(m, feeds)
    except Exception as exc:
        if "not supported" not in str(exc).lower():
            raise
    return ReferenceEvaluator(m).run(None, feeds)


def _run_both(node, x, inits=(), opset=19):
    """pyconv's and the reference's output of a one-node model."""
    m = B.model([node], [("x", list(x.shape))], [("y", None)], dict(inits), opset=opset)
    ours = pyconv.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    return ours, _reference(m, {"x": x})[0]


def _node_attrs(auto_pad, kernel, strides, dilations, pads):
    attrs = dict(kernel_shape=list(kernel), strides=list(strides), dilations=list(dilations),
                 auto_pad=auto_pad)
    if auto_pad == "NOTSET":
        attrs["pads"] = list(pads)
    return attrs


@pytest.mark.parametrize("auto_pad", AUTO_PADS)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=_geometry_id)
def test_conv_auto_pad_matches_onnxruntime(rng, auto_pad, geometry):
    spatial, kernel, strides, dilations, pads = geometry
    x = B.rand(rng, 1, 2, *spatial)
    w = B.rand(rng, 3, 2, *kernel)
    node = helper.make_node("Conv", ["x", "w"], ["y"],
                            **_node_attrs(auto_pad, kernel, strides, dilations, pads))
    ours, ref = _run_both(node, x, {"w": w})
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op_type", ["MaxPool", "AveragePool", "LpPool"])
@pytest.mark.parametrize("ceil_mode", [0, 1])
@pytest.mark.parametrize("auto_pad", AUTO_PADS)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=_geometry_id)
def test_pool_auto_pad_and_ceil_mode_match_onnxruntime(rng, op_type, ceil_mode, auto_pad,
                                                       geometry):
    spatial, kernel, strides, dilations, pads = geometry
    if op_type == "LpPool" and any(d != 1 for d in dilations):
        dilations = (1, 1)
    x = B.rand(rng, 2, 3, *spatial)
    attrs = _node_attrs(auto_pad, kernel, strides, dilations, pads)
    node = helper.make_node(op_type, ["x"], ["y"], ceil_mode=ceil_mode, **attrs)
    if auto_pad.startswith("SAME") and any(d != 1 for d in dilations):
        # onnxruntime sizes SAME pool pads with the undilated kernel (and the ONNX
        # reference evaluator splits dilated SAME_LOWER pads wrongly): the reference runs
        # the spec's pads, computed here, as explicit pads.
        ours = _run_both(node, x)[0]
        total = [max(0, (-(-i // s) - 1) * s + (k - 1) * d + 1 - i)
                 for i, k, s, d in zip(spatial, kernel, strides, dilations)]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        attrs.update(auto_pad="NOTSET",
                     pads=small + big if auto_pad == "SAME_UPPER" else big + small)
        ref = _run_both(helper.make_node(op_type, ["x"], ["y"], ceil_mode=ceil_mode,
                                         **attrs), x)[1]
    else:
        ours, ref = _run_both(node, x)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


CONV_TRANSPOSE_CASES = [
    # (input spatial, kernel, strides, dilations, attributes)
    ((3, 4), (3, 3), (2, 2), (1, 1), dict(pads=[1, 0, 1, 1], output_padding=[1, 0])),
    ((3, 4), (3, 2), (3, 2), (1, 2), dict(pads=[0, 1, 2, 0], output_padding=[2, 1])),
    ((3, 4), (3, 3), (2, 2), (1, 1), dict(auto_pad="SAME_UPPER")),
    ((3, 5), (3, 4), (2, 3), (1, 1), dict(auto_pad="SAME_LOWER")),
    ((3, 4), (3, 3), (2, 2), (2, 1), dict(auto_pad="VALID")),
    ((3, 4), (3, 3), (2, 2), (1, 1), dict(output_shape=[6, 8])),
    ((3, 4), (3, 3), (2, 2), (1, 1), dict(output_shape=[5, 9], auto_pad="SAME_UPPER")),
    ((3, 4), (3, 3), (3, 2), (1, 1), dict(output_shape=[8, 7], output_padding=[1, 0])),
    # output_shape past the unpadded output: the missing elements come as output_padding
    ((3, 4), (3, 3), (2, 2), (1, 1), dict(output_shape=[8, 10])),
]


@pytest.mark.parametrize("case", CONV_TRANSPOSE_CASES, ids=lambda c: str(c[4]))
def test_conv_transpose_output_shape_and_padding_match_onnxruntime(rng, case):
    spatial, kernel, strides, dilations, attrs = case
    x = B.rand(rng, 1, 4, *spatial)
    w = B.rand(rng, 4, 2, *kernel)
    b = B.rand(rng, 2)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], kernel_shape=list(kernel),
                            strides=list(strides), dilations=list(dilations), **attrs)
    ours, ref = _run_both(node, x, {"w": w, "b": b})
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_conv_transpose_with_output_shape_resolves_each_input_size(rng):
    """output_shape / SAME pads depend on the input size: one session, two sizes."""
    w = B.rand(rng, 2, 3, 3, 3)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2],
                            auto_pad="SAME_LOWER")
    m = B.model([node], [("x", [1, 2, "H", "W"])], [("y", None)], {"w": w})
    sess = pyconv.InferenceSession(m.SerializeToString())
    for shape in [(1, 2, 3, 4), (1, 2, 5, 2), (1, 2, 3, 4)]:
        x = B.rand(rng, *shape)
        got = sess.run(None, {"x": x})[0]
        ref = B.ort_run(m, {"x": x})[0]
        assert got.shape == (1, 3, shape[2] * 2, shape[3] * 2)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


# --- the functional layer uses the same resolution ---------------------------------------

@pytest.mark.parametrize("padding,auto_pad", [("same", "SAME_UPPER"),
                                              ("same_lower", "SAME_LOWER"),
                                              ("valid", "VALID")])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_functional_conv_transpose_padding_modes_are_onnx_auto_pad(rng, padding, auto_pad,
                                                                   stride):
    """A padding mode of a transposed convolution is ONNX ConvTranspose's auto_pad: SAME
    gives input * stride (it used to apply the forward convolution's pads)."""
    x = B.rand(rng, 1, 2, 5, 4)
    w = B.rand(rng, 2, 3, 3, 3)
    got = F.conv_transpose2d(x, w, stride=stride, padding=padding)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[stride, stride],
                            auto_pad=auto_pad)
    ref = B.ort_run(B.model([node], [("x", [1, 2, 5, 4])], [("y", None)], {"w": w}),
                    {"x": x})[0]
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("auto_pad", AUTO_PADS)
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_functional_pool_auto_pad_matches_the_op(rng, auto_pad, ceil_mode):
    x = B.rand(rng, 2, 3, 7, 8)
    got = F.max_pool(x, (3, 2), (2, 3), (1, 0), (0, 1), 1, ceil_mode, auto_pad=auto_pad)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 2], strides=[2, 3],
                            ceil_mode=int(ceil_mode), auto_pad=auto_pad,
                            **({"pads": [1, 0, 0, 1]} if auto_pad == "NOTSET" else {}))
    _, ref = _run_both(node, x)
    np.testing.assert_array_equal(got, ref)


# --- the helper itself ---------------------------------------------------------------------

def test_from_torch_and_from_onnx_agree():
    torch_style = ConvAttributes.from_torch("pool", 2, 3, None, (1, 0), 1, ceil_mode=True)
    onnx_style = ConvAttributes.from_onnx("pool", {"kernel_shape": [3, 3], "strides": [3, 3],
                                                   "pads": [1, 0, 1, 0], "ceil_mode": 1})
    assert torch_style == onnx_style
    assert hash(torch_style) == hash(onnx_style)
    assert torch_style.resolve((8, 7)) == ConvGeometry((3, 3), (1, 0), (1, 0), (0, 0))


@pytest.mark.parametrize("kind", ["conv", "pool"])
@pytest.mark.parametrize("size,kernel,stride,dilation", itertools.product(
    [1, 4, 7, 10], [1, 2, 3], [1, 2, 3], [1, 2]))
def test_same_modes_give_ceil_of_input_over_stride(kind, size, kernel, stride, dilation):
    if kind == "pool" and dilation > 1 and (kernel - 1) * dilation + 1 > size:
        return
    for mode in ("SAME_UPPER", "SAME_LOWER"):
        a = ConvAttributes(kind, (kernel,), stride, dilation, auto_pad=mode)
        g = a.resolve((size,))
        assert g.output_shape == (-(-size // stride),)
        begin, end = g.pads_begin[0], g.pads_end[0]
        assert abs(begin - end) <= 1
        if begin != end:   # the odd pad goes to the end with SAME_UPPER
            assert (begin < end) == (mode == "SAME_UPPER")


def test_attributes_are_frozen_and_normalised():
    a = ConvAttributes("conv", [3, 3], 2, pads=1, auto_pad="same_lower")
    assert (a.kernel_shape, a.strides, a.dilations) == ((3, 3), (2, 2), (1, 1))
    assert (a.pads, a.pads_begin, a.pads_end, a.auto_pad) == (
        (1, 1, 1, 1), (1, 1), (1, 1), "SAME_LOWER")
    with pytest.raises(AttributeError):
        a.strides = (1, 1)


@pytest.mark.parametrize("make,cls,message", [
    (lambda: ConvAttributes.from_onnx("conv", {"auto_pad": "SAME"}, (3, 3), op="Conv node 'c'"),
     InvalidArgument, r"^Conv node 'c': auto_pad must be one of .*got 'SAME'"),
    (lambda: ConvAttributes.from_onnx("conv", {"kernel_shape": [3, 3]}, (5, 5), op="Conv 'c'"),
     InvalidArgument, r"^Conv 'c': kernel_shape \[3, 3\] does not match the weight's kernel "
                      r"\[5, 5\]"),
    (lambda: ConvAttributes.from_onnx("pool", {"kernel_shape": [2, 2], "pads": [1, 1]},
                                      op="MaxPool 'p'"),
     InvalidArgument, r"^MaxPool 'p': pads \[1, 1\] must have 4 values"),
    (lambda: ConvAttributes.from_onnx("pool", {"kernel_shape": [2, 2], "strides": [1, 0]},
                                      op="MaxPool 'p'"),
     InvalidArgument, r"^MaxPool 'p': strides\[1\] must be positive, got 0"),
    (lambda: ConvAttributes.from_onnx("pool", {}, op="MaxPool 'p'"),
     InvalidArgument, r"^MaxPool 'p': kernel_shape must be a non-empty list"),
    (lambda: ConvAttributes.from_torch("conv_transpose", 2, 3, 2, 0, 1, (0, 2), op="ct"),
     InvalidArgument, r"^ct: output_padding 2 must be smaller than either stride 2 or "
                      r"dilation 1 along dim 1"),
    (lambda: ConvAttributes.from_torch("conv", 1, 3, output_padding=1, op="conv1d"),
     InvalidArgument, r"^conv1d: output_padding is only for transposed convolutions"),
    (lambda: ConvAttributes("conv", (3,), ceil_mode=True, op="c"),
     InvalidArgument, r"^c: ceil_mode is only for pooling"),
    (lambda: ConvAttributes("conv_transpose", (3, 3), output_shape=(4,), op="ct"),
     InvalidArgument, r"^ct: output_shape \[4\] must have 2 spatial values"),
    (lambda: ConvAttributes.from_torch("pool", 1, 3, padding=2, op="max_pool1d"),
     InvalidArgument, r"^max_pool1d: padding 2 must be at most half the kernel size 3"),
    (lambda: ConvAttributes("conv", (3, 3), op="c").resolve((5,)),
     ShapeError, r"^c: the input has 1 spatial dims \(5,\), kernel_shape \(3, 3\) has 2"),
    (lambda: ConvAttributes("conv", (3,), dilations=3, op="c").resolve((6,)),
     ShapeError, r"^c: kernel size 3 \(dilated 7\) is larger than the padded input 6"),
    (lambda: ConvAttributes("conv_transpose", (3,), 2, op="ct").resolve((3,), (9,)),
     ShapeError, r"^ct: requested output size 9 is not reachable along dim 0: valid sizes "
                 r"are 7 to 8"),
    (lambda: ConvAttributes("conv_transpose", (3,), 2, output_shape=(10,), op="ct")
     .resolve((3,)),
     ShapeError, r"^ct: output_shape 10 is out of reach along dim 0"),
])
def test_errors_name_the_layer_and_the_values(make, cls, message):
    with pytest.raises(cls, match=message):
        make()


def test_plan_geometry_is_public_and_cached(rng):
    plan = F.ConvPlan(B.rand(rng, 4, 2, 3, 3), stride=2, padding="same_lower")
    g = plan.geometry((1, 2, 7, 8))
    assert g == ConvGeometry((4, 4), (1, 1), (1, 0), (0, 0))
    assert plan.geometry((1, 2, 7, 8)) is g
    assert plan.output_shape((1, 2, 7, 8)) == (1, 4, 4, 4)
