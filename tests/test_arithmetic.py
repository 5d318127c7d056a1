"""Tests of pyconv.arithmetic: literature values, error paths, and cross-checks.

Known values come from Dumoulin & Visin, "A guide to convolution arithmetic
for deep learning" (relationships 1-15), the ONNX operator specification and
torch.nn. Where onnx / onnxruntime / torch are importable, shapes and pads
are also checked against them (each such test skips with a reason otherwise).
"""

import itertools
import math

import numpy as np
import pytest

from pyconv import arithmetic as A
from pyconv.errors import InvalidArgument, ShapeError

import reference as R


# ---------------------------------------------------------------------------
# normalize_tuple / effective_kernel_size / check_groups
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, n, expected", [
    (3, 2, (3, 3)),
    ((1, 2), 2, (1, 2)),
    ([4], 1, (4,)),
    (np.int64(5), 3, (5, 5, 5)),
    (np.array([1, 2, 3]), 3, (1, 2, 3)),
    (np.array(7), 1, (7,)),
])
def test_normalize_tuple_accepts_ints_and_sequences(value, n, expected):
    result = A.normalize_tuple(value, n, "kernel_size")
    assert result == expected
    assert all(type(v) is int for v in result)


def test_normalize_tuple_minimum_zero_allows_zero():
    assert A.normalize_tuple((0, 2), 2, "padding", minimum=0) == (0, 2)


@pytest.mark.parametrize("value, n, match", [
    ((1, 2, 3), 2, r"stride must have 2 elements \(one per spatial dim\), got 3"),
    (1.5, 2, r"stride must be an int, got float 1.5"),
    (True, 2, r"stride must be an int, got bool True"),
    ("2", 2, r"stride must be an int or a sequence of ints, got '2'"),
    (0, 2, r"stride must be positive, got 0"),
    ((1, -1), 2, r"stride\[1\] must be positive, got -1"),
    ((1, None), 2, r"stride\[1\] must be an int, got NoneType None"),
])
def test_normalize_tuple_errors(value, n, match):
    with pytest.raises(InvalidArgument, match=match):
        A.normalize_tuple(value, n, "stride")


def test_normalize_tuple_negative_padding_message():
    with pytest.raises(InvalidArgument, match=r"padding must be >= 0, got -1"):
        A.normalize_tuple(-1, 2, "padding", minimum=0)


def test_errors_are_value_errors():
    # InvalidArgument and ShapeError are ValueErrors: plain `except ValueError` works.
    with pytest.raises(ValueError):
        A.conv_output_size(2, 5)
    assert issubclass(ShapeError, InvalidArgument)


@pytest.mark.parametrize("k, d, expected", [(1, 1, 1), (3, 1, 3), (3, 2, 5), (7, 2, 13), (1, 5, 1)])
def test_effective_kernel_size(k, d, expected):
    assert A.effective_kernel_size(k, d) == expected


def test_check_groups_accepts_divisors():
    assert A.check_groups(32, 64, 32) == 32   # depthwise with multiplier 2
    assert A.check_groups(6, 4, 2) == 2
    assert A.check_groups(3, 5, 1) == 1


@pytest.mark.parametrize("cin, cout, groups, match", [
    (6, 4, 3, r"conv: groups 3 does not divide out_channels 4"),
    (5, 10, 2, r"conv: groups 2 does not divide in_channels 5"),
    (4, 4, 0, r"conv: groups must be positive, got 0"),
    (4, 4, 2.0, r"conv: groups must be an int, got float 2.0"),
])
def test_check_groups_errors(cin, cout, groups, match):
    with pytest.raises(InvalidArgument, match=match):
        A.check_groups(cin, cout, groups)


# ---------------------------------------------------------------------------
# convolution output size: Dumoulin & Visin
# ---------------------------------------------------------------------------

# (relationship, i, k, s, p, d, o)
DUMOULIN_CONV = [
    ("1: no padding, unit stride", 4, 3, 1, 0, 1, 2),
    ("2: padding, unit stride", 5, 4, 1, 2, 1, 6),
    ("3: half padding", 5, 3, 1, 1, 1, 5),
    ("4: full padding", 5, 3, 1, 2, 1, 7),
    ("5: no padding, strided", 5, 3, 2, 0, 1, 2),
    ("6: padding, strided", 5, 3, 2, 1, 1, 3),
    ("6: padding, strided, odd", 6, 3, 2, 1, 1, 3),
    ("15: dilated", 7, 3, 1, 0, 2, 3),
]


@pytest.mark.parametrize("rel, i, k, s, p, d, o", DUMOULIN_CONV, ids=[r[0] for r in DUMOULIN_CONV])
def test_conv_output_size_dumoulin(rel, i, k, s, p, d, o):
    assert A.conv_output_size(i, k, s, p, p, d) == o


# (relationship, i' (transposed input), k, s, p, d, a (output_padding), o')
DUMOULIN_TRANSPOSED = [
    ("8: no padding, unit stride", 2, 3, 1, 0, 1, 0, 4),
    ("9: padding, unit stride", 6, 4, 1, 2, 1, 0, 5),
    ("10: half padding", 5, 3, 1, 1, 1, 0, 5),
    ("11: full padding", 7, 3, 1, 2, 1, 0, 5),
    ("12: no padding, strided", 2, 3, 2, 0, 1, 0, 5),
    ("13: padding, strided", 3, 3, 2, 1, 1, 0, 5),
    ("14: padding, strided, odd", 3, 3, 2, 1, 1, 1, 6),
    ("dilated transpose of 15", 3, 3, 1, 0, 2, 0, 7),
]


@pytest.mark.parametrize("rel, i, k, s, p, d, a, o", DUMOULIN_TRANSPOSED,
                         ids=[r[0] for r in DUMOULIN_TRANSPOSED])
def test_conv_transpose_output_size_dumoulin(rel, i, k, s, p, d, a, o):
    assert A.conv_transpose_output_size(i, k, s, p, p, d, a) == o


def test_transpose_inverts_conv_shape_on_a_grid():
    """Relationship 14: with a = (i + 2p - k_eff) mod s, the transpose maps o back to i."""
    for i, k, s, pb, pe, d in itertools.product(range(1, 12), range(1, 5), range(1, 4),
                                                range(3), range(3), range(1, 3)):
        eff = (k - 1) * d + 1
        if eff > i + pb + pe:
            continue
        o = A.conv_output_size(i, k, s, pb, pe, d)
        assert o == (i + pb + pe - eff) // s + 1
        a = (i + pb + pe - eff) % s
        assert A.conv_transpose_output_size(o, k, s, pb, pe, d, a) == i
        assert A.conv_transpose_output_padding(o, k, i, s, pb, pe, d) == a


def test_asymmetric_padding_and_nd_shape():
    assert A.conv_output_size(9, 3, 2, 0, 1) == 4
    assert A.conv_output_shape((9, 7), 3, 2, 1, 1) == (5, 4)
    assert A.conv_output_shape((9, 7, 5), (3, 1, 2), (1, 2, 3), (0, 0, 1), (2, 0, 0), (2, 1, 1)) \
        == (7, 4, 2)


def test_conv_output_size_kernel_too_large_message():
    with pytest.raises(ShapeError, match=r"^conv2d: kernel size 7 \(dilated 13\) is larger than "
                                         r"the padded input 9 along dim 0$"):
        A.conv_output_shape((7, 20), 7, 1, 1, 1, 2, op="conv2d")
    with pytest.raises(ShapeError, match=r"^conv: kernel size 5 is larger than the padded input 4$"):
        A.conv_output_size(2, 5, pad_begin=1, pad_end=1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_size=0, kernel_size=1), r"conv: input size must be positive, got 0"),
    (dict(input_size=5, kernel_size=0), r"conv: kernel size must be positive, got 0"),
    (dict(input_size=5, kernel_size=3, stride=0), r"conv: stride must be positive, got 0"),
    (dict(input_size=5, kernel_size=3, dilation=0), r"conv: dilation must be positive, got 0"),
    (dict(input_size=5, kernel_size=3, pad_begin=-1), r"conv: pad_begin must be >= 0, got -1"),
    (dict(input_size=5, kernel_size=3, pad_end=-2), r"conv: pad_end must be >= 0, got -2"),
])
def test_conv_output_size_argument_errors(kwargs, match):
    with pytest.raises(InvalidArgument, match=match):
        A.conv_output_size(**kwargs)


@pytest.mark.parametrize("call, match", [
    (lambda: A.conv_output_shape((9,), (3, 3)),
     r"kernel_shape must have 1 element \(one per spatial dim\), got 2"),
    (lambda: A.conv_output_shape(9, 3), r"input_shape must be a non-empty sequence"),
    (lambda: A.conv_output_shape((), 3), r"input_shape must be a non-empty sequence"),
    (lambda: A.conv_output_shape((9, 9), 3, pads_begin=(1, 1, 1)),
     r"pads_begin must have 2 elements"),
    (lambda: A.pool_output_shape((9, 9), 3, dilation=(1, 0)), r"dilation\[1\] must be positive"),
])
def test_nd_shape_argument_errors(call, match):
    with pytest.raises(InvalidArgument, match=match):
        call()


# ---------------------------------------------------------------------------
# padding
# ---------------------------------------------------------------------------

def test_resolve_padding_explicit_forms():
    assert A.resolve_padding(1, 2) == ((1, 1), (1, 1))
    assert A.resolve_padding((1, 2), 2) == ((1, 2), (1, 2))
    assert A.resolve_padding((0, 1, 2, 3), 2) == ((0, 1), (2, 3))     # ONNX order
    assert A.resolve_padding([1, 2], 1) == ((1,), (2,))               # 2n == 2: per side
    assert A.resolve_padding(np.array([1, 2, 3, 4, 5, 6]), 3) == ((1, 2, 3), (4, 5, 6))
    assert A.resolve_padding("valid", 3) == ((0, 0, 0), (0, 0, 0))
    assert A.resolve_padding("VALID", 1) == ((0,), (0,))


# (input, kernel, stride, dilation, SAME_UPPER pads, SAME_LOWER pads)
SAME_CASES = [
    (7, 3, 2, 1, (1, 1), (1, 1)),   # out 4, total 2
    (7, 4, 2, 1, (1, 2), (2, 1)),   # out 4, total 3
    (5, 2, 2, 1, (0, 1), (1, 0)),   # out 3, total 1
    (9, 3, 2, 1, (1, 1), (1, 1)),   # out 5, total 2
    (9, 2, 3, 1, (0, 0), (0, 0)),   # out 3, total max(0, -1)
    (6, 3, 2, 1, (0, 1), (1, 0)),   # out 3, total 1
    (5, 3, 1, 2, (2, 2), (2, 2)),   # dilated: total 4
    (4, 2, 1, 1, (0, 1), (1, 0)),   # even kernel, stride 1
]


@pytest.mark.parametrize("i, k, s, d, upper, lower", SAME_CASES)
def test_same_upper_and_lower(i, k, s, d, upper, lower):
    got_upper = A.resolve_padding("same_upper", 1, i, k, s, d)
    assert got_upper == ((upper[0],), (upper[1],))
    assert A.resolve_padding("same", 1, i, k, s, d) == got_upper
    assert A.resolve_padding("SAME_UPPER", 1, i, k, s, d) == got_upper
    assert A.resolve_padding("same_lower", 1, i, k, s, d) == ((lower[0],), (lower[1],))
    assert A.same_padding(i, k, s, d) == sum(upper)
    assert A.conv_output_size(i, k, s, *upper, d) == math.ceil(i / s)


def test_same_padding_output_is_ceil_on_a_grid():
    for i, k, s, d in itertools.product(range(1, 14), range(1, 6), range(1, 4), range(1, 3)):
        for mode in ("same_upper", "same_lower"):
            (pb,), (pe,) = A.resolve_padding(mode, 1, i, k, s, d)
            assert abs(pb - pe) <= 1
            assert (pe >= pb) if mode == "same_upper" else (pb >= pe)
            assert A.conv_output_size(i, k, s, pb, pe, d) == -(-i // s)


def test_resolve_padding_same_nd():
    assert A.resolve_padding("same_lower", 2, (7, 5), (4, 2), (2, 2)) == ((2, 1), (1, 0))


def test_split_padding():
    assert A.split_padding(0) == (0, 0)
    assert A.split_padding(5, "same_upper") == (2, 3)
    assert A.split_padding(5, "same_lower") == (3, 2)
    with pytest.raises(InvalidArgument, match=r"'same_upper' or 'same_lower', got 'middle'"):
        A.split_padding(2, "middle")


@pytest.mark.parametrize("call, match", [
    (lambda: A.resolve_padding("full", 2),
     r"padding must be an int, a sequence of 2 or 4 ints, or one of 'valid', 'same', "
     r"'same_upper', 'same_lower'; got 'full'"),
    (lambda: A.resolve_padding((1, 2, 3), 2),
     r"padding must have 2 \(per dim\) or 4 \(per side, ONNX order\) elements, got 3"),
    (lambda: A.resolve_padding(-1, 2), r"padding must be >= 0, got -1"),
    (lambda: A.resolve_padding((0, 0, 0, -1), 2), r"padding\[3\] must be >= 0, got -1"),
    (lambda: A.resolve_padding("same", 2),
     r"padding='same' needs input_size and kernel_size to compute the pads"),
    (lambda: A.resolve_padding(1.0, 2), r"padding must be an int, got float 1.0"),
    (lambda: A.resolve_padding(b"same", 2), r"padding must be an int or a sequence of ints"),
])
def test_resolve_padding_errors(call, match):
    with pytest.raises(InvalidArgument, match=match):
        call()


# ---------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------

# (i, k, s, pb, pe, d, floor, ceil)
POOL_CASES = [
    (5, 2, 2, 0, 0, 1, 2, 3),    # ceil adds a partial last window
    (6, 2, 2, 0, 0, 1, 3, 3),    # exact fit: ceil changes nothing
    (5, 2, 2, 1, 1, 1, 3, 3),    # ceil would give 4, but window 4 starts at 6 >= 5 + 1: dropped
    (7, 3, 2, 1, 1, 1, 4, 4),
    (8, 3, 2, 1, 1, 1, 4, 5),
    (10, 3, 3, 0, 0, 1, 3, 4),
    (7, 3, 2, 0, 0, 2, 2, 2),    # dilated window of 5 on 7: span 2, stride 2
    (8, 3, 2, 0, 0, 2, 2, 3),
    (2, 1, 2, 0, 0, 1, 1, 1),    # ONNX test_maxpool_2d_ceil_output_size_reduce_by_one
    (2, 3, 3, 1, 1, 1, 1, 1),
]


@pytest.mark.parametrize("i, k, s, pb, pe, d, floor, ceil", POOL_CASES)
def test_pool_output_size_known_values(i, k, s, pb, pe, d, floor, ceil):
    assert A.pool_output_size(i, k, s, pb, pe, d, ceil_mode=False) == floor
    assert A.pool_output_size(i, k, s, pb, pe, d, ceil_mode=True) == ceil
    assert A.pool_output_size(i, k, s, pb, pe, d) == A.conv_output_size(i, k, s, pb, pe, d)


def test_pool_ceil_mode_last_window_starts_inside():
    for i, k, s, pb, pe, d in itertools.product(range(1, 12), range(1, 5), range(1, 5),
                                                range(3), range(3), range(1, 3)):
        if (k - 1) * d + 1 > i + pb + pe or max(pb, pe) >= k:
            continue
        floor = A.pool_output_size(i, k, s, pb, pe, d, False)
        ceil = A.pool_output_size(i, k, s, pb, pe, d, True)
        assert floor <= ceil <= floor + 1
        if ceil > floor:  # the extra window starts inside the input or the left padding
            assert (ceil - 1) * s < i + pb


def test_pool_output_shape_defaults_stride_to_kernel():
    assert A.pool_output_shape((5, 6), 2) == (2, 3)
    assert A.pool_output_shape((5, 6), 2, ceil_mode=True) == (3, 3)
    assert A.pool_output_shape((5, 6), (2, 3), stride=1) == (4, 4)


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pool_pad_must_be_smaller_than_kernel(ceil_mode):
    # onnxruntime's rule ("Pad should be smaller than kernel"); without it ceil mode could
    # give fewer windows than floor mode.
    with pytest.raises(InvalidArgument, match=r"^pool: pad_end 2 must be smaller than the "
                                              r"kernel size 2$"):
        A.pool_output_size(4, 2, 1, 0, 2, ceil_mode=ceil_mode)
    with pytest.raises(InvalidArgument, match=r"^avg_pool2d: pad_begin 3 must be smaller than the "
                                              r"kernel size 3 along dim 1$"):
        A.pool_output_shape((9, 9), 3, 1, (0, 3), 0, ceil_mode=ceil_mode, op="avg_pool2d")
    assert A.pool_output_size(4, 3, 1, 2, 2, ceil_mode=ceil_mode) == 6


def test_pool_output_size_error_message():
    with pytest.raises(ShapeError, match=r"^max_pool2d: kernel size 4 is larger than the padded "
                                         r"input 3 along dim 1$"):
        A.pool_output_shape((5, 3), 4, stride=1, op="max_pool2d")


# ---------------------------------------------------------------------------
# transposed convolution
# ---------------------------------------------------------------------------

def test_conv_transpose_output_padding_rule():
    # output_padding must be < max(stride, dilation) (torch rule)
    assert A.conv_transpose_output_size(3, 3, 2, 1, 1, 1, 1) == 6
    assert A.conv_transpose_output_size(3, 3, 1, 0, 0, 2, 1) == 8    # < dilation is enough
    with pytest.raises(InvalidArgument, match=r"^conv_transpose: output_padding 2 must be smaller "
                                              r"than either stride 2 or dilation 1$"):
        A.conv_transpose_output_size(3, 3, 2, output_padding=2)
    with pytest.raises(InvalidArgument, match=r"output_padding 1 must be smaller than either "
                                              r"stride 1 or dilation 1 along dim 1"):
        A.conv_transpose_output_shape((3, 3), 3, 1, output_padding=(0, 1))


def test_conv_transpose_output_shape_nd():
    assert A.conv_transpose_output_shape((4, 5), 3, 2, 1, 1, 1, (1, 0)) == (8, 9)
    assert A.conv_transpose_output_shape((3,), 3, 3, 1, 2) == (6,)


def test_conv_transpose_crop_error():
    with pytest.raises(ShapeError, match=r"^conv_transpose: padding 2\+1 crops the whole "
                                         r"transposed-convolution output of size 3$"):
        A.conv_transpose_output_size(1, 3, 1, 2, 1)


def test_conv_transpose_output_padding_for_size():
    assert A.conv_transpose_output_padding(3, 3, 5, 2, 1, 1) == 0
    assert A.conv_transpose_output_padding(3, 3, 6, 2, 1, 1) == 1
    with pytest.raises(ShapeError, match=r"requested output size 7 is not reachable: "
                                         r"valid sizes are 5 to 6"):
        A.conv_transpose_output_padding(3, 3, 7, 2, 1, 1)


# (input, kernel, stride, dilation, output_padding, output_shape, auto_pad,
#  pads_begin, pads_end, effective output_padding)
TRANSPOSE_PADS = [
    # ONNX test_convtranspose_autopad_same: 3x3 input, stride 2, SAME_UPPER -> 6x6, total 1
    ((3, 3), 3, 2, 1, 0, None, "SAME_UPPER", (0, 0), (1, 1), (0, 0)),
    ((3, 3), 3, 2, 1, 0, None, "SAME_LOWER", (1, 1), (0, 0), (0, 0)),
    ((3,), 3, 2, 1, 0, (6,), "NOTSET", (1,), (0,), (0,)),
    ((3,), 3, 2, 1, 0, (6,), "VALID", (1,), (0,), (0,)),
    ((3,), 3, 2, 1, 0, None, "VALID", (0,), (0,), (0,)),
    ((4,), 5, 1, 1, 0, (4,), "NOTSET", (2,), (2,), (0,)),              # total 4: even split
    ((4,), 4, 2, 1, 1, (8,), "SAME_UPPER", (1,), (2,), (1,)),         # output_padding counts
    ((3, 4), 3, 2, 2, 0, (4, 9), "same_upper", (2, 1), (3, 1), (0, 0)),  # dilation 2
    # ONNX test_convtranspose_output_shape: output larger than unpadded 9x7 -> extend the end
    ((3, 3), 3, (3, 2), 1, 0, (10, 8), "NOTSET", (0, 0), (0, 0), (1, 1)),
    ((3,), 1, 2, 1, 0, None, "SAME_UPPER", (0,), (0,), (1,)),         # k=1, s=2: 5 -> 6
]


@pytest.mark.parametrize("i, k, s, d, op, out, auto_pad, pb, pe, op_eff", TRANSPOSE_PADS)
def test_conv_transpose_pads_for_output_shape(i, k, s, d, op, out, auto_pad, pb, pe, op_eff):
    got = A.conv_transpose_pads_for_output_shape(i, k, s, d, op, out, auto_pad)
    assert got == (pb, pe, op_eff)
    assert (got.pads_begin, got.pads_end, got.output_padding) == (pb, pe, op_eff)
    expected_shape = out if out is not None else (
        tuple(x * st for x, st in zip(i, A.normalize_tuple(s, len(i), "s")))
        if auto_pad.upper().startswith("SAME") else None)
    if expected_shape is not None:
        assert A.conv_transpose_output_shape(i, k, s, pb, pe, d, op_eff) == tuple(expected_shape)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: A.conv_transpose_pads_for_output_shape((3,), 3, 2, auto_pad="SAME"),
     InvalidArgument, r"ConvTranspose: auto_pad must be NOTSET, SAME_UPPER, SAME_LOWER or VALID, "
                      r"got 'SAME'"),
    (lambda: A.conv_transpose_pads_for_output_shape((3,), 3, 2),
     InvalidArgument, r"ConvTranspose: auto_pad NOTSET needs output_shape"),
    (lambda: A.conv_transpose_pads_for_output_shape((3, 3), 3, 2, output_shape=(6,)),
     ShapeError, r"output_shape \(6,\) has 1 dims, input has 2 spatial dims \(3, 3\)"),
    (lambda: A.conv_transpose_pads_for_output_shape((3,), 3, 2, output_shape=(9,)),
     ShapeError, r"^ConvTranspose: output_shape 9 is out of reach along dim 0: the unpadded "
                 r"output is 7 and output_padding 2 would have to be smaller than either "
                 r"stride 2 or dilation 1$"),
    (lambda: A.conv_transpose_pads_for_output_shape((3,), 3, 2, output_padding=3,
                                                    output_shape=(6,)),
     InvalidArgument, r"output_padding 3 must be smaller than either stride 2 or dilation 1"),
])
def test_conv_transpose_pads_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------
# cross-checks: ONNX shape inference, onnx.reference / onnxruntime, torch
# ---------------------------------------------------------------------------

def _onnx_model(op_type, x_shape, w_shape=None, opset=22, **attrs):
    pytest.importorskip("onnx", reason="onnx not installed: ONNX cross-checks are optional")
    from onnx import TensorProto, helper
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))]
    names = ["x"]
    if w_shape is not None:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, list(w_shape)))
        names.append("w")
    node = helper.make_node(op_type, names, ["y"], **attrs)
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=10)


def _inferred_spatial_shape(model):
    onnx = pytest.importorskip("onnx", reason="onnx not installed: ONNX cross-checks are optional")
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    return tuple(d.dim_value for d in dims)[2:]


def test_pool_shapes_match_onnx_shape_inference():
    pytest.importorskip("onnx", reason="onnx not installed: ONNX cross-checks are optional")
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(60):
        i, k, s = int(rng.integers(1, 12)), int(rng.integers(1, 5)), int(rng.integers(1, 4))
        pb, pe, d = int(rng.integers(0, k)), int(rng.integers(0, k)), int(rng.integers(1, 3))
        if (k - 1) * d + 1 > i + pb + pe:
            continue
        for ceil in (0, 1):
            model = _onnx_model("MaxPool", (1, 1, i), kernel_shape=[k], strides=[s],
                                pads=[pb, pe], dilations=[d], ceil_mode=ceil)
            assert _inferred_spatial_shape(model) == A.pool_output_shape((i,), k, s, pb, pe, d,
                                                                         bool(ceil))
            checked += 1
    assert checked > 40


def test_conv_shapes_match_onnx_shape_inference():
    pytest.importorskip("onnx", reason="onnx not installed: ONNX cross-checks are optional")
    for i, k, s, d in itertools.product((5, 7, 8), (1, 2, 3), (1, 2, 3), (1, 2)):
        for auto_pad in ("SAME_UPPER", "SAME_LOWER", "VALID"):
            if auto_pad == "VALID" and (k - 1) * d + 1 > i:
                continue
            model = _onnx_model("Conv", (1, 1, i), (1, 1, k), strides=[s], dilations=[d],
                                auto_pad=auto_pad)
            pb, pe = A.resolve_padding(auto_pad, 1, i, k, s, d)
            assert _inferred_spatial_shape(model) == A.conv_output_shape((i,), k, s, pb, pe, d)
        for op_pad in range(max(s, d)):
            model = _onnx_model("ConvTranspose", (1, 1, i), (1, 1, k), strides=[s],
                                dilations=[d], pads=[1, 0], output_padding=[op_pad])
            assert _inferred_spatial_shape(model) == A.conv_transpose_output_shape(
                (i,), k, s, 1, 0, d, op_pad)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("x_shape, k, s", [((7, 5), 4, 2), ((5, 6), 3, 2), ((9, 8), 2, 3)])
def test_same_pads_split_matches_onnx_reference_conv(auto_pad, x_shape, k, s):
    """The odd extra pad lands on the right side: check values, not just shapes."""
    pytest.importorskip("onnx", reason="onnx not installed: ONNX cross-checks are optional")
    from onnx.reference import ReferenceEvaluator
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2) + x_shape).astype(np.float32)
    w = rng.standard_normal((3, 2, k, k)).astype(np.float32)
    model = _onnx_model("Conv", x.shape, w.shape, strides=[s, s], auto_pad=auto_pad)
    got = ReferenceEvaluator(model).run(None, {"x": x, "w": w})[0]
    pb, pe = A.resolve_padding(auto_pad, 2, x_shape, k, s)
    expected = R.conv_nd(x, w, None, s, pb, pe)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# ConvTranspose output_shape / auto_pad (x spatial shape, kernel, stride, dilation,
# output_shape). onnx.reference is used for SAME_UPPER / SAME_LOWER with a non-negative
# total padding only: its NOTSET + output_shape path ignores output_shape when computing
# pads, and for a negative total it pads with negative begin pads (shifting the output),
# unlike onnxruntime and the conformance test test_convtranspose_output_shape, which put
# the extra elements at the end. Every case is checked against onnxruntime below.
CONV_TRANSPOSE_ONNX = [
    ((3, 4), (3, 3), (2, 2), (1, 1), None),
    ((3, 4), (3, 3), (2, 2), (1, 1), (5, 6)),
    ((3, 3), (3, 3), (2, 1), (2, 2), (6, 4)),
    ((4, 3), (4, 2), (2, 3), (1, 1), (7, 9)),      # negative total along dim 1
    ((3, 3), (2, 2), (3, 3), (1, 1), (10, 10)),    # negative total (-2) along both dims
]


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("x_shape, k, s, d, out", CONV_TRANSPOSE_ONNX[:3])
def test_conv_transpose_pads_match_onnx_reference(auto_pad, x_shape, k, s, d, out):
    pytest.importorskip("onnx", reason="onnx not installed: ONNX cross-checks are optional")
    from onnx.reference import ReferenceEvaluator
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2) + x_shape).astype(np.float32)
    w = rng.standard_normal((2, 3) + k).astype(np.float32)
    attrs = dict(strides=list(s), dilations=list(d), auto_pad=auto_pad)
    if out is not None:
        attrs["output_shape"] = list(out)
    got = ReferenceEvaluator(_onnx_model("ConvTranspose", x.shape, w.shape, **attrs)).run(
        None, {"x": x, "w": w})[0]
    pb, pe, op = A.conv_transpose_pads_for_output_shape(x_shape, k, s, d, 0, out, auto_pad)
    expected = R.conv_transpose_nd(x, w, None, s, pb, pe, d, 1, op)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("auto_pad", ["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("x_shape, k, s, d, out", [c for c in CONV_TRANSPOSE_ONNX if c[-1]])
def test_conv_transpose_pads_match_onnxruntime(auto_pad, x_shape, k, s, d, out):
    ort = pytest.importorskip("onnxruntime",
                              reason="onnxruntime not installed: ORT cross-checks are optional")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2) + x_shape).astype(np.float32)
    w = rng.standard_normal((2, 3) + k).astype(np.float32)
    model = _onnx_model("ConvTranspose", x.shape, w.shape, strides=list(s), dilations=list(d),
                        auto_pad=auto_pad, output_shape=list(out))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x, "w": w})[0]
    pb, pe, op = A.conv_transpose_pads_for_output_shape(x_shape, k, s, d, 0, out, auto_pad)
    expected = R.conv_transpose_nd(x, w, None, s, pb, pe, d, 1, op)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_shapes_match_torch():
    torch = pytest.importorskip("torch", reason="torch not installed: torch cross-checks are optional")
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(80):
        i, k, s = int(rng.integers(1, 12)), int(rng.integers(1, 5)), int(rng.integers(1, 4))
        p, d = int(rng.integers(0, k // 2 + 1)), int(rng.integers(1, 3))
        if (k - 1) * d + 1 > i + 2 * p:
            continue
        x = torch.zeros(1, 1, i)
        w = torch.zeros(1, 1, k)
        assert F.conv1d(x, w, stride=s, padding=p, dilation=d).shape[2:] == \
            A.conv_output_shape((i,), k, s, p, p, d)
        for ceil in (False, True):
            assert F.max_pool1d(x, k, s, p, d, ceil_mode=ceil).shape[2:] == \
                A.pool_output_shape((i,), k, s, p, p, d, ceil)
            assert F.avg_pool1d(x, k, s, p, ceil_mode=ceil).shape[2:] == \
                A.pool_output_shape((i,), k, s, p, p, 1, ceil)
        for op in range(max(s, d)):
            if A.conv_transpose_output_size(i, k, s, 0, 0, d, op) - 2 * p < 1:
                continue
            assert F.conv_transpose1d(x, w, stride=s, padding=p, output_padding=op,
                                      dilation=d).shape[2:] == \
                A.conv_transpose_output_shape((i,), k, s, p, p, d, op)
        checked += 1
    assert checked > 40


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel lengths:UserWarning")
def test_same_padding_matches_torch_same():
    torch = pytest.importorskip("torch", reason="torch not installed: torch cross-checks are optional")
    rng = np.random.default_rng(6)
    for i, k, d in [(7, 4, 1), (6, 2, 1), (9, 3, 2), (5, 4, 2)]:
        x = rng.standard_normal((1, 1, i))
        w = rng.standard_normal((1, 1, k))
        got = torch.nn.functional.conv1d(torch.tensor(x), torch.tensor(w), padding="same",
                                         dilation=d).numpy()
        pb, pe = A.resolve_padding("same", 1, i, k, 1, d)
        np.testing.assert_allclose(got, R.conv_nd(x, w, None, 1, pb, pe, d), atol=1e-12)
