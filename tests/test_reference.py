"""Tests of tests/reference.py against independent facts.

The references are the ground truth for every pyconv op, so they are checked
here without them: algebraic identities (1x1 conv == einsum, delta kernels,
the adjoint identity between convolution and its transpose), NumPy's
sliding_window_view, hand-computed examples, the ONNX conformance cases that
ship with the onnx package, and torch.nn.functional when torch is installed.
"""

import functools
import importlib
import itertools

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from pyconv import arithmetic as A

import reference as R

TORCH_REASON = "torch not installed: torch cross-checks are optional"
ONNX_REASON = "onnx not installed: ONNX conformance cross-checks are optional"


def rand(rng, *shape):
    return rng.standard_normal(shape)


# ---------------------------------------------------------------------------
# convolution: identities and hand examples
# ---------------------------------------------------------------------------

def test_conv_hand_example_1d():
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    w = np.array([[[1.0, 0.0, -1.0]]])
    np.testing.assert_array_equal(R.conv_nd(x, w), [[[-2.0, -2.0]]])
    # zero padding on both sides, bias added
    np.testing.assert_array_equal(R.conv_nd(x, w, np.array([10.0]), 1, 1, 1),
                                  [[[8.0, 8.0, 8.0, 13.0]]])
    # asymmetric padding, stride 2: padded [0, 1, 2, 3, 4, 0, 0] -> 0-2, 2-4, 4-0
    np.testing.assert_array_equal(R.conv_nd(x, w, None, 2, 1, 2), [[[-2.0, -2.0, 4.0]]])


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_conv_1x1_is_einsum(ndim):
    rng = np.random.default_rng(ndim)
    x = rand(rng, 2, 6, *(5, 4, 3)[:ndim])
    w = rand(rng, 4, 6, *(1,) * ndim)
    b = rand(rng, 4)
    expected = np.einsum("nc...,oc->no...", x, w.reshape(4, 6)) + b.reshape((1, 4) + (1,) * ndim)
    np.testing.assert_allclose(R.conv_nd(x, w, b), expected, rtol=1e-12, atol=1e-12)
    # stride 2 subsamples the input first
    sub = x[(slice(None), slice(None)) + (slice(None, None, 2),) * ndim]
    np.testing.assert_allclose(R.conv_nd(x, w, None, stride=2),
                               np.einsum("nc...,oc->no...", sub, w.reshape(4, 6)), atol=1e-12)


def test_grouped_1x1_conv_is_block_diagonal_einsum():
    rng = np.random.default_rng(7)
    x = rand(rng, 2, 6, 5, 3)
    w = rand(rng, 9, 2, 1, 1)             # groups=3: 2 input, 3 output channels per group
    y = R.conv_nd(x, w, groups=3)
    for g in range(3):
        expected = np.einsum("nchw,oc->nohw", x[:, 2 * g:2 * g + 2], w[3 * g:3 * g + 3, :, 0, 0])
        np.testing.assert_allclose(y[:, 3 * g:3 * g + 3], expected, atol=1e-12)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_conv_delta_kernel_copies_shifted_input(ndim):
    rng = np.random.default_rng(10 + ndim)
    sp = (7, 6, 5)[:ndim]
    k = (3, 2, 3)[:ndim]
    d = (2, 1, 2)[:ndim]
    pb, pe = (1, 0, 2)[:ndim], (2, 1, 0)[:ndim]
    x = rand(rng, 2, 3, *sp)
    xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(pb, pe)))
    for tap in itertools.product(*(range(kk) for kk in k)):
        w = np.zeros((3, 3) + k)
        for c in range(3):
            w[(c, c) + tap] = 1.0                       # identity over channels at one tap
        for stride in (1, 2):
            y = R.conv_nd(x, w, None, stride, pb, pe, d)
            start = [t * dd for t, dd in zip(tap, d)]
            expected = xp[(slice(None), slice(None)) + tuple(
                slice(st, st + (o - 1) * stride + 1, stride) for st, o in zip(start, y.shape[2:]))]
            np.testing.assert_array_equal(y, expected)


def test_conv_transpose_hand_example_1d():
    x = np.array([[[1.0, 2.0]]])
    w = np.array([[[1.0, 1.0, 1.0]]])
    np.testing.assert_array_equal(R.conv_transpose_nd(x, w, stride=2), [[[1, 1, 3, 2, 2]]])
    # pads crop the full output; output_padding adds a (here empty) position at the end
    np.testing.assert_array_equal(R.conv_transpose_nd(x, w, None, 2, 1, 1), [[[1, 3, 2]]])
    np.testing.assert_array_equal(R.conv_transpose_nd(x, w, None, 2, 0, 0, 1, 1, 1),
                                  [[[1, 1, 3, 2, 2, 0]]])
    # dilation 2 spreads the taps: positions 0, 2, 4 and 1, 3, 5
    np.testing.assert_array_equal(R.conv_transpose_nd(x, w, None, 1, 0, 0, 2),
                                  [[[1, 2, 1, 2, 1, 2]]])


def _random_geometry(rng, ndim):
    groups = int(rng.choice([1, 2, 3]))
    cin, cout = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    k = tuple(int(v) for v in rng.integers(1, 4, ndim))
    s = tuple(int(v) for v in rng.integers(1, 4, ndim))
    d = tuple(int(v) for v in rng.integers(1, 3, ndim))
    pb = tuple(int(v) for v in rng.integers(0, 3, ndim))
    pe = tuple(int(v) for v in rng.integers(0, 3, ndim))
    sp = tuple(max((kk - 1) * dd + 1, int(v)) for kk, dd, v in zip(k, d, rng.integers(3, 8, ndim)))
    return groups, cin, cout, k, s, d, pb, pe, sp


@pytest.mark.parametrize("seed", range(12))
def test_adjoint_identity(seed):
    """<conv(x), y> == <x, conv_transpose(y)> with the same weights, for any geometry."""
    rng = np.random.default_rng(100 + seed)
    ndim = 1 + seed % 3
    groups, cin, cout, k, s, d, pb, pe, sp = _random_geometry(rng, ndim)
    x = rand(rng, 2, cin, *sp)
    w = rand(rng, cout, cin // groups, *k)
    cx = R.conv_nd(x, w, None, s, pb, pe, d, groups)
    # output_padding recovers the input size when the stride leaves a remainder
    op = tuple((i + b + e - ((kk - 1) * dd + 1)) % ss
               for i, b, e, kk, dd, ss in zip(sp, pb, pe, k, d, s))
    y = rand(rng, *cx.shape)
    ty = R.conv_transpose_nd(y, w, None, s, pb, pe, d, groups, op)
    assert ty.shape == x.shape
    np.testing.assert_allclose(np.vdot(cx, y), np.vdot(x, ty), rtol=1e-10)


@pytest.mark.parametrize("seed", range(6))
def test_reference_shapes_agree_with_arithmetic(seed):
    rng = np.random.default_rng(200 + seed)
    ndim = 1 + seed % 3
    groups, cin, cout, k, s, d, pb, pe, sp = _random_geometry(rng, ndim)
    x = rand(rng, 1, cin, *sp)
    y = R.conv_nd(x, rand(rng, cout, cin // groups, *k), None, s, pb, pe, d, groups)
    assert y.shape[2:] == A.conv_output_shape(sp, k, s, pb, pe, d)
    op = tuple(int(rng.integers(0, max(ss, dd))) for ss, dd in zip(s, d))
    t = R.conv_transpose_nd(x, rand(rng, cin, cout // groups, *k), None, s, 0, 0, d, groups, op)
    assert t.shape[2:] == A.conv_transpose_output_shape(sp, k, s, 0, 0, d, op)


# ---------------------------------------------------------------------------
# pooling: sliding_window_view, constants, unpooling
# ---------------------------------------------------------------------------

def _windows(x, k, s):
    """(N, C, *out, *k) view of unpadded windows with stride s (NumPy, independent)."""
    ndim = x.ndim - 2
    v = sliding_window_view(x, k, axis=tuple(range(2, 2 + ndim)))
    return v[(slice(None), slice(None)) + tuple(slice(None, None, ss) for ss in s)]


@pytest.mark.parametrize("ndim, k, s", [(1, (3,), (2,)), (2, (2, 3), (2, 1)), (3, (2, 2, 2), (1, 2, 2))])
def test_pools_without_padding_match_sliding_window_view(ndim, k, s):
    rng = np.random.default_rng(ndim)
    x = rand(rng, 2, 3, *(7, 6, 5)[:ndim])
    win = _windows(x, k, s)
    axes = tuple(range(-ndim, 0))
    values, indices = R.max_pool_nd(x, k, s)
    np.testing.assert_array_equal(values, win.max(axis=axes))
    np.testing.assert_allclose(R.avg_pool_nd(x, k, s), win.mean(axis=axes), atol=1e-12)
    np.testing.assert_allclose(R.lp_pool_nd(x, 2, k, s), np.sqrt((win ** 2).sum(axis=axes)),
                               atol=1e-12)
    np.testing.assert_allclose(R.lp_pool_nd(x, 1, k, s), np.abs(win).sum(axis=axes), atol=1e-12)
    # indices point at the maxima in the flattened plane
    flat = x.reshape(2, 3, -1)
    np.testing.assert_array_equal(
        np.take_along_axis(flat, indices.reshape(2, 3, -1), axis=2).reshape(values.shape), values)


def test_max_pool_hand_example_with_padding_and_ceil():
    x = np.array([[[3.0, 1.0, 4.0, 1.0, 5.0]]])
    values, indices = R.max_pool_nd(x, 2, 2, 1, 1)              # windows [pad,3] [1,4] [1,5]
    np.testing.assert_array_equal(values, [[[3.0, 4.0, 5.0]]])
    np.testing.assert_array_equal(indices, [[[0, 2, 4]]])
    values, _ = R.max_pool_nd(x, 2, 2, 0, 0, ceil_mode=True)    # [3,1] [4,1] [5]
    np.testing.assert_array_equal(values, [[[3.0, 4.0, 5.0]]])
    values, indices = R.max_pool_nd(x, 2, 1, 0, 0, dilation=3)  # [3,1] [1,5]
    np.testing.assert_array_equal(values, [[[3.0, 5.0]]])
    np.testing.assert_array_equal(indices, [[[0, 4]]])


def test_max_pool_all_minus_inf_window_points_at_first_input_tap():
    x = np.array([[[-np.inf, -np.inf, 1.0, -np.inf]]])
    values, indices = R.max_pool_nd(x, 2, 2, 1, 1)           # windows [pad,-inf] [-inf,1] [-inf,pad]
    np.testing.assert_array_equal(values, [[[-np.inf, 1.0, -np.inf]]])
    np.testing.assert_array_equal(indices, [[[0, 2, 3]]])


def test_max_pool_nan_propagates_like_torch():
    # torch 2.x: any NaN wins and the last NaN of the window gives the index
    x = np.array([[[1.0, np.nan, 3.0, np.nan, np.nan, 2.0, 0.0, 5.0, 4.0]]])
    values, indices = R.max_pool_nd(x, 3, 3)
    assert np.isnan(values[0, 0, :2]).all() and values[0, 0, 2] == 5.0
    np.testing.assert_array_equal(indices, [[[1, 4, 7]]])


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_avg_pool_of_constant_is_constant_without_pad_count(ndim, ceil_mode):
    x = np.full((1, 2) + (7, 6, 5)[:ndim], 2.5)
    y = R.avg_pool_nd(x, 3, 2, 1, (2, 1, 0)[:ndim], (1, 2, 1)[:ndim], ceil_mode,
                      count_include_pad=False)
    np.testing.assert_allclose(y, 2.5, rtol=1e-14)


def test_avg_pool_count_include_pad_divisor():
    x = np.full((1, 1, 4, 4), 9.0)
    y = R.avg_pool_nd(x, 3, 1, 1, 1, count_include_pad=True)
    assert y[0, 0, 0, 0] == 4.0           # corner: 4 inputs / 9 positions
    assert y[0, 0, 0, 1] == 6.0           # edge: 6 / 9
    assert y[0, 0, 1, 1] == 9.0
    # ceil mode: the last window runs past the padded input (5 + 1 = 6 < 3 + 4); only the
    # 2 positions inside the padded input count: (x[3] + x[4] + pad) / 3
    x1 = np.arange(5.0).reshape(1, 1, 5)
    y1 = R.avg_pool_nd(x1, 4, 3, 0, 1, ceil_mode=True, count_include_pad=True)
    np.testing.assert_allclose(y1, [[[1.5, 7.0 / 3.0]]])
    y0 = R.avg_pool_nd(x1, 4, 3, 0, 1, ceil_mode=True, count_include_pad=False)
    np.testing.assert_allclose(y0, [[[1.5, 3.5]]])


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_max_unpool_puts_maxima_back(ndim):
    rng = np.random.default_rng(30 + ndim)
    sp = (6, 4, 4)[:ndim]
    x = rng.permutation(np.arange(1.0, 1 + 2 * 3 * np.prod(sp))).reshape((2, 3) + sp)  # distinct
    values, indices = R.max_pool_nd(x, 2, 2)
    up = R.max_unpool_nd(values, indices, sp)
    assert up.shape == x.shape
    kept = up != 0
    np.testing.assert_array_equal(up[kept], x[kept])          # maxima at their own positions
    assert kept.sum() == values.size                          # one per window, rest zeros
    np.testing.assert_array_equal(R.max_pool_nd(up, 2, 2)[0], values)


def test_max_unpool_rejects_out_of_range_indices():
    with pytest.raises(ValueError, match="index out of range"):
        R.max_unpool_nd(np.ones((1, 1, 2)), np.array([[[0, 4]]]), (4,))


def test_global_and_adaptive_pools():
    rng = np.random.default_rng(40)
    x = rand(rng, 2, 3, 6, 9)
    np.testing.assert_allclose(R.global_avg_pool(x)[..., 0, 0], x.mean(axis=(2, 3)))
    np.testing.assert_array_equal(R.global_max_pool(x)[..., 0, 0], x.max(axis=(2, 3)))
    assert R.global_avg_pool(x).shape == (2, 3, 1, 1)
    np.testing.assert_allclose(R.adaptive_avg_pool_nd(x, 1), R.global_avg_pool(x))
    # output dividing the input: adaptive == regular pooling with kernel = stride = in / out
    np.testing.assert_allclose(R.adaptive_avg_pool_nd(x, (3, 3)), R.avg_pool_nd(x, (2, 3)))
    v, i = R.adaptive_max_pool_nd(x, (2, 3))
    pv, pi = R.max_pool_nd(x, (3, 3))
    np.testing.assert_array_equal(v, pv)
    np.testing.assert_array_equal(i, pi)
    # overlapping windows: in=5, out=3 -> [0,2) [1,4) [3,5)
    x1 = np.array([[[1.0, 5.0, 2.0, 4.0, 3.0]]])
    np.testing.assert_allclose(R.adaptive_avg_pool_nd(x1, 3), [[[3.0, 11.0 / 3.0, 3.5]]])
    np.testing.assert_array_equal(R.adaptive_max_pool_nd(x1, 3)[1], [[[1, 1, 3]]])


# ---------------------------------------------------------------------------
# other layers
# ---------------------------------------------------------------------------

def test_batch_norm_and_linear():
    rng = np.random.default_rng(50)
    x = rand(rng, 4, 3, 5, 5)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    y = R.batch_norm(x, mean, var, eps=0.0)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), 1, rtol=1e-12)
    wgt, bias = rand(rng, 3), rand(rng, 3)
    np.testing.assert_allclose(R.batch_norm(x, mean, var, wgt, bias, 0.0),
                               y * wgt[:, None, None] + bias[:, None, None], atol=1e-12)
    a, w, b = rand(rng, 2, 7, 5), rand(rng, 4, 5), rand(rng, 4)
    np.testing.assert_allclose(R.linear(a, w, b), a @ w.T + b, atol=1e-12)


def test_interpolate_identities():
    rng = np.random.default_rng(60)
    x = rand(rng, 1, 2, 3, 4)
    np.testing.assert_array_equal(R.interpolate_nearest(x, (6, 12)),
                                  x.repeat(2, axis=2).repeat(3, axis=3))
    np.testing.assert_array_equal(R.interpolate_nearest(x, (3, 4)), x)
    np.testing.assert_allclose(R.interpolate_linear(x, (3, 4)), x, atol=1e-15)
    # align_corners=True with out - 1 = 2 * (in - 1): every other output is an input sample
    up = R.interpolate_linear(x, (5, 7), align_corners=True)
    np.testing.assert_allclose(up[..., ::2, ::2], x, atol=1e-12)
    # a linear ramp stays exactly linear inside (align_corners=True samples evenly)
    ramp = np.arange(4.0).reshape(1, 1, 4)
    np.testing.assert_allclose(R.interpolate_linear(ramp, 7, align_corners=True),
                               [[np.linspace(0, 3, 7)]], atol=1e-12)


# ---------------------------------------------------------------------------
# ONNX conformance cases shipped with the onnx package
# ---------------------------------------------------------------------------

ONNX_CASE_MODULES = ("conv", "convtranspose", "maxpool", "averagepool", "lppool", "maxunpool",
                     "globalaveragepool", "globalmaxpool")

ONNX_CASES = [
    "test_basic_conv_with_padding", "test_basic_conv_without_padding",
    "test_conv_with_strides_padding", "test_conv_with_strides_no_padding",
    "test_conv_with_strides_and_asymmetric_padding", "test_conv_with_autopad_same",
    "test_convtranspose", "test_convtranspose_1d", "test_convtranspose_3d",
    "test_convtranspose_output_shape", "test_convtranspose_pad", "test_convtranspose_kernel_shape",
    "test_convtranspose_pads", "test_convtranspose_dilations", "test_convtranspose_autopad_same",
    "test_convtranspose_group_2", "test_convtranspose_group_2_image_3",
    "test_maxpool_2d_uint8", "test_maxpool_2d_precomputed_pads",
    "test_maxpool_with_argmax_2d_precomputed_pads", "test_maxpool_2d_precomputed_strides",
    "test_maxpool_with_argmax_2d_precomputed_strides", "test_maxpool_2d_precomputed_same_upper",
    "test_maxpool_1d_default", "test_maxpool_2d_default", "test_maxpool_3d_default",
    "test_maxpool_2d_same_upper", "test_maxpool_2d_same_lower", "test_maxpool_2d_pads",
    "test_maxpool_2d_strides", "test_maxpool_2d_ceil", "test_maxpool_2d_ceil_output_size_reduce_by_one",
    "test_maxpool_2d_dilations", "test_maxpool_3d_dilations", "test_maxpool_3d_dilations_use_ref_impl",
    "test_maxpool_3d_dilations_use_ref_impl_large",
    "test_averagepool_2d_precomputed_pads", "test_averagepool_2d_precomputed_pads_count_include_pad",
    "test_averagepool_2d_precomputed_strides", "test_averagepool_2d_precomputed_same_upper",
    "test_averagepool_1d_default", "test_averagepool_2d_default", "test_averagepool_3d_default",
    "test_averagepool_2d_same_upper", "test_averagepool_2d_same_lower", "test_averagepool_2d_pads",
    "test_averagepool_2d_pads_count_include_pad", "test_averagepool_2d_strides",
    "test_averagepool_2d_ceil", "test_averagepool_2d_ceil_last_window_starts_on_pad",
    "test_averagepool_2d_dilations", "test_averagepool_3d_dilations_small",
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True",
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_False",
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True",
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_False",
    "test_lppool_1d_default", "test_lppool_2d_default", "test_lppool_3d_default",
    "test_lppool_2d_same_upper", "test_lppool_2d_same_lower", "test_lppool_2d_pads",
    "test_lppool_2d_strides", "test_lppool_2d_dilations",
    "test_maxunpool_export_without_output_shape", "test_maxunpool_export_with_output_shape",
    "test_globalaveragepool", "test_globalaveragepool_precomputed",
    "test_globalmaxpool", "test_globalmaxpool_precomputed",
]


@functools.lru_cache(maxsize=None)
def _onnx_cases():
    """Name -> onnx TestCase for the conv/pool families (imports only those case modules)."""
    pytest.importorskip("onnx", reason=ONNX_REASON)
    node = importlib.import_module("onnx.backend.test.case.node")
    with np.errstate(all="ignore"):
        for mod in ONNX_CASE_MODULES:
            importlib.import_module(f"onnx.backend.test.case.node.{mod}")
    return {case.name: case for case in node._NodeTestCases}


def _attrs(node):
    from onnx import helper
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _pool_pads(attrs, sp, k, s, d):
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad != "NOTSET":
        return A.resolve_padding(auto_pad, len(sp), sp, k, s, d)
    return A.resolve_padding(attrs.get("pads", 0), len(sp))


def _run_onnx_case_with_reference(node, inputs):
    """Evaluate one ONNX node with the references, resolving attributes with pyconv.arithmetic."""
    attrs = _attrs(node)
    op = node.op_type
    x = inputs[0]
    N, C, *sp = x.shape
    n = len(sp)
    s = attrs.get("strides", 1)
    d = attrs.get("dilations", 1)
    if op in ("GlobalAveragePool", "GlobalMaxPool"):
        return [R.global_avg_pool(x) if op == "GlobalAveragePool" else R.global_max_pool(x)]
    if op == "Conv":
        w = inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        pb, pe = _pool_pads(attrs, sp, w.shape[2:], s, d)
        return [R.conv_nd(x, w, bias, s, pb, pe, d, attrs.get("group", 1))]
    if op == "ConvTranspose":
        w = inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        auto_pad = attrs.get("auto_pad", "NOTSET")
        op_pad = attrs.get("output_padding", 0)
        if "output_shape" in attrs or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pb, pe, op_pad = A.conv_transpose_pads_for_output_shape(
                sp, w.shape[2:], s, d, op_pad, attrs.get("output_shape"), auto_pad)
        else:
            pb, pe = A.resolve_padding(attrs.get("pads", 0), n)
        return [R.conv_transpose_nd(x, w, bias, s, pb, pe, d, attrs.get("group", 1), op_pad)]
    if op == "MaxUnpool":
        k = attrs["kernel_shape"]
        pb, pe = A.resolve_padding(attrs.get("pads", 0), n)
        if len(inputs) > 2:
            out_sp = tuple(int(v) for v in inputs[2][2:])
        else:
            out_sp = A.conv_transpose_output_shape(sp, k, s, pb, pe)
        plane = int(np.prod(out_sp))
        offsets = (np.arange(N * C).reshape(N, C) * plane).reshape((N, C) + (1,) * n)
        return [R.max_unpool_nd(x, inputs[1] - offsets, out_sp)]
    # MaxPool, AveragePool, LpPool
    k = attrs["kernel_shape"]
    pb, pe = _pool_pads(attrs, sp, k, s, d)
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    if op == "AveragePool":
        return [R.avg_pool_nd(x, k, s, pb, pe, d, ceil_mode,
                              bool(attrs.get("count_include_pad", 0)))]
    if op == "LpPool":
        return [R.lp_pool_nd(x, attrs.get("p", 2), k, s, pb, pe, d, ceil_mode)]
    values, indices = R.max_pool_nd(x, k, s, pb, pe, d, ceil_mode)
    # ONNX Indices flatten the whole tensor, in row- or column-major order per plane
    order = "F" if attrs.get("storage_order", 0) else "C"
    coords = np.unravel_index(indices, sp)
    per_plane = np.ravel_multi_index(coords, sp, order=order)
    offsets = (np.arange(N * C).reshape(N, C) * int(np.prod(sp))).reshape((N, C) + (1,) * n)
    return [values, per_plane + offsets]


# Expected values stored rounded to 4 decimals in the onnx package.
ONNX_ROUNDED = {"test_averagepool_2d_ceil_last_window_starts_on_pad"}

MAXUNPOOL_DIVERGENCE = (
    "onnx/onnx#2398: this case's indices refer to the default 4x4 unpool shape and keep their "
    "coordinates in the 5x5 output_shape; torch, MaxPool's own indices and onnxruntime "
    "(microsoft/onnxruntime#2193) place flat indices into the output plane, as the reference does "
    "(checked against onnxruntime in test_maxunpool_output_shape_matches_onnxruntime)")


def _onnx_param(name):
    if name == "test_maxunpool_export_with_output_shape":
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=MAXUNPOOL_DIVERGENCE))
    return name


@pytest.mark.parametrize("name", [_onnx_param(n) for n in ONNX_CASES])
def test_onnx_conformance_case(name):
    cases = _onnx_cases()
    if name not in cases:
        pytest.skip(f"{name} is not in this onnx version's conformance cases")
    case = cases[name]
    node = case.model.graph.node[0]
    for inputs, expected in case.data_sets:
        got = _run_onnx_case_with_reference(node, inputs)
        for g, e in zip(got, expected):
            assert g.shape == e.shape, f"{name}: shape {g.shape} != {e.shape}"
            if np.issubdtype(e.dtype, np.integer) and not np.issubdtype(g.dtype, np.integer):
                np.testing.assert_array_equal(g, e.astype(np.float64))
            else:
                atol = 1e-4 if name in ONNX_ROUNDED else 1e-5
                np.testing.assert_allclose(g, e, rtol=1e-5, atol=atol)


def test_maxunpool_output_shape_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime",
                              reason="onnxruntime not installed: ORT cross-checks are optional")
    case = _onnx_cases()["test_maxunpool_export_with_output_shape"]
    inputs = case.data_sets[0][0]
    feeds = {i.name: v for i, v in zip(case.model.graph.input, inputs)}
    sess = ort.InferenceSession(case.model.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)[0]
    expected = _run_onnx_case_with_reference(case.model.graph.node[0], inputs)[0]
    np.testing.assert_array_equal(got, expected)


def test_onnx_case_list_is_complete():
    cases = _onnx_cases()
    # Exact op types: other case modules may be imported by then (the conformance suite in
    # tests/graph loads them all), and DeformConv / QLinearConv / CausalConvWithState are
    # other operators.
    ops = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool",
           "GlobalMaxPool", "GlobalLpPool", "MaxUnpool"}
    shipped = {name for name, c in cases.items() if c.model.graph.node[0].op_type in ops}
    assert shipped <= set(ONNX_CASES), f"new conformance cases to list: {sorted(shipped - set(ONNX_CASES))}"


# ---------------------------------------------------------------------------
# torch.nn.functional cross-checks (optional)
# ---------------------------------------------------------------------------

CONV_GEOMETRIES = [
    # ndim, groups, cin, cout, kernel, stride, dilation, pads_begin, pads_end
    (1, 1, 3, 4, (3,), (1,), (1,), (1,), (1,)),
    (1, 3, 6, 3, (4,), (2,), (2,), (0,), (3,)),
    (2, 1, 3, 5, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1)),
    (2, 2, 4, 6, (3, 2), (1, 2), (2, 1), (2, 0), (1, 1)),
    (2, 6, 6, 6, (3, 3), (2, 1), (1, 1), (1, 1), (0, 2)),    # depthwise, asymmetric pads
    (3, 1, 2, 3, (2, 3, 1), (1, 2, 1), (1, 1, 2), (0, 1, 0), (1, 1, 0)),
    (3, 2, 4, 2, (3, 3, 3), (2, 1, 1), (1, 2, 1), (1, 2, 1), (1, 2, 1)),
]


def _torch_conv(torch, x, w, b, s, pb, pe, d, groups):
    F = torch.nn.functional
    n = x.ndim - 2
    pad = [p for b_, e_ in zip(pb[::-1], pe[::-1]) for p in (b_, e_)]   # F.pad: last dim first
    xt = F.pad(torch.tensor(x), pad)
    conv = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
    return conv(xt, torch.tensor(w), torch.tensor(b), stride=s, dilation=d, groups=groups).numpy()


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
def test_conv_matches_torch(geometry):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    ndim, groups, cin, cout, k, s, d, pb, pe = geometry
    rng = np.random.default_rng(70)
    x = rand(rng, 2, cin, *(9, 7, 6)[:ndim])
    w, b = rand(rng, cout, cin // groups, *k), rand(rng, cout)
    np.testing.assert_allclose(R.conv_nd(x, w, b, s, pb, pe, d, groups),
                               _torch_conv(torch, x, w, b, s, pb, pe, d, groups),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
def test_conv_transpose_matches_torch(geometry):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    F = torch.nn.functional
    ndim, groups, cin, cout, k, s, d, pb, _ = geometry
    rng = np.random.default_rng(80)
    x = rand(rng, 2, cin, *(4, 5, 3)[:ndim])
    w, b = rand(rng, cin, cout // groups, *k), rand(rng, cout)
    op = tuple(max(ss, dd) - 1 for ss, dd in zip(s, d))     # the largest valid output_padding
    conv_t = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[ndim - 1]
    expected = conv_t(torch.tensor(x), torch.tensor(w), torch.tensor(b), stride=s, padding=pb,
                      output_padding=op, groups=groups, dilation=d).numpy()
    np.testing.assert_allclose(R.conv_transpose_nd(x, w, b, s, pb, pb, d, groups, op), expected,
                               rtol=1e-10, atol=1e-10)


POOL_GEOMETRIES = [
    # ndim, kernel, stride, padding, dilation, ceil_mode
    (1, (3,), (2,), (1,), (1,), True),
    (1, (2,), (2,), (1,), (2,), False),
    (2, (3, 3), (2, 2), (1, 1), (1, 1), True),
    (2, (2, 3), (2, 1), (1, 0), (1, 1), False),
    (2, (3, 2), (3, 2), (1, 1), (1, 1), True),
    (3, (2, 2, 2), (2, 2, 2), (1, 0, 1), (1, 1, 1), True),
    (3, (3, 1, 2), (1, 2, 2), (1, 0, 0), (2, 1, 1), False),
]


@pytest.mark.parametrize("geometry", POOL_GEOMETRIES)
def test_pools_match_torch(geometry):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    F = torch.nn.functional
    ndim, k, s, p, d, ceil = geometry
    rng = np.random.default_rng(90)
    x = rand(rng, 2, 3, *(9, 7, 6)[:ndim])
    xt = torch.tensor(x)
    max_pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[ndim - 1]
    tv, ti = max_pool(xt, k, s, p, d, ceil_mode=ceil, return_indices=True)
    v, i = R.max_pool_nd(x, k, s, p, p, d, ceil)
    np.testing.assert_array_equal(v, tv.numpy())
    np.testing.assert_array_equal(i, ti.numpy())
    if all(dd == 1 for dd in d):          # torch unpool / avg / lp pooling have no dilation
        unpool = (F.max_unpool1d, F.max_unpool2d, F.max_unpool3d)[ndim - 1]
        np.testing.assert_array_equal(R.max_unpool_nd(v, i, x.shape[2:]),
                                      unpool(tv, ti, k, s, p, output_size=x.shape[2:]).numpy())
        avg_pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[ndim - 1]
        for cip in (False, True):
            np.testing.assert_allclose(
                R.avg_pool_nd(x, k, s, p, p, 1, ceil, cip),
                avg_pool(xt, k, s, p, ceil_mode=ceil, count_include_pad=cip).numpy(),
                rtol=1e-12, atol=1e-12)
        if ndim < 3 and not any(p):       # torch lp_pool: no padding, signed x ** p
            lp_pool = (F.lp_pool1d, F.lp_pool2d)[ndim - 1]
            ax = np.abs(x)
            np.testing.assert_allclose(R.lp_pool_nd(ax, 2, k, s, ceil_mode=ceil),
                                       lp_pool(torch.tensor(ax), 2, k, s, ceil_mode=ceil).numpy(),
                                       rtol=1e-10)


@pytest.mark.parametrize("ndim, out", [(1, (4,)), (2, (4, 3)), (2, (9, 2)), (3, (2, 3, 4))])
def test_adaptive_pools_match_torch(ndim, out):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    F = torch.nn.functional
    rng = np.random.default_rng(95)
    x = rand(rng, 2, 3, *(9, 7, 6)[:ndim])
    xt = torch.tensor(x)
    adaptive_avg = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[ndim - 1]
    adaptive_max = (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)[ndim - 1]
    np.testing.assert_allclose(R.adaptive_avg_pool_nd(x, out), adaptive_avg(xt, out).numpy(),
                               rtol=1e-12, atol=1e-12)
    tv, ti = adaptive_max(xt, out, return_indices=True)
    v, i = R.adaptive_max_pool_nd(x, out)
    np.testing.assert_array_equal(v, tv.numpy())
    np.testing.assert_array_equal(i, ti.numpy())


@pytest.mark.parametrize("size", [(13, 5), (3, 4), (2, 11)])
def test_interpolate_matches_torch(size):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    F = torch.nn.functional
    rng = np.random.default_rng(97)
    x = rand(rng, 2, 3, 6, 7)
    xt = torch.tensor(x)
    for mode in ("nearest", "nearest-exact"):
        np.testing.assert_array_equal(R.interpolate_nearest(x, size, mode),
                                      F.interpolate(xt, size, mode=mode).numpy())
    for ac in (False, True):
        np.testing.assert_allclose(
            R.interpolate_linear(x, size, ac),
            F.interpolate(xt, size, mode="bilinear", align_corners=ac).numpy(), atol=1e-12)


def test_batch_norm_and_linear_match_torch():
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    F = torch.nn.functional
    rng = np.random.default_rng(99)
    x = rand(rng, 2, 4, 5, 3)
    mean, var = rand(rng, 4), rng.uniform(0.5, 2, 4)
    w, b = rand(rng, 4), rand(rng, 4)
    t = lambda a: torch.tensor(a)  # noqa: E731
    np.testing.assert_allclose(R.batch_norm(x, mean, var, w, b, 1e-3),
                               F.batch_norm(t(x), t(mean), t(var), t(w), t(b), eps=1e-3).numpy(),
                               rtol=1e-12, atol=1e-12)
    a, lw, lb = rand(rng, 3, 6), rand(rng, 2, 6), rand(rng, 2)
    np.testing.assert_allclose(R.linear(a, lw, lb), F.linear(t(a), t(lw), t(lb)).numpy(),
                               rtol=1e-12, atol=1e-12)
