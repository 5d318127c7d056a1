"""The quantized 2-D convolution of pyconv._ext.qgemm (im2col of uint8 pixels or row
pointers to them, int8 GEMM, requantize epilogue; the direct depthwise kernel) against an
int64 NumPy convolution and onnxruntime's requantization written out in NumPy, over
strides, pads, dilations, groups, zero points and saturation, on every kernel this CPU
runs."""
import numpy as np
import pytest

from pyconv._ext import gemm, qgemm
from pyconv.errors import InvalidArgument, InvalidDType

ISAS = [isa for isa in ("avx512", "avx2", "generic") if isa in gemm.supported_isas()]


def integer_sums(x, xz, w, strides, pads, dilations, groups):
    """int64 sums of (x - xz) * w (w any integers) over the zero-point-padded image."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = strides, pads, dilations
    xp = np.full((n, c, h + 2 * ph, wd + 2 * pw), xz, np.int64)
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    xp -= xz
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    acc = np.zeros((n, m, oh, ow), np.int64)
    mg = m // groups
    for co in range(m):
        g = co // mg
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cg:(g + 1) * cg, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                           j * dw:j * dw + sw * (ow - 1) + 1:sw]
                acc[:, co] += np.einsum("nchw,c->nhw", patch, w[co, :, i, j].astype(np.int64))
    return acc, (oh, ow)


def reference(x, xz, w, bias, mult, yz, qmin, qmax, strides, pads, dilations, groups):
    """int64 sums of (x - xz) * w over the zero-point-padded image, plus the bias; then
    float32 acc * mult, clamped to [qmin - yz, qmax - yz], rounded half to even, + yz."""
    acc, (oh, ow) = integer_sums(x, xz, w, strides, pads, dilations, groups)
    acc += bias.reshape(1, -1, 1, 1)
    v = acc.astype(np.int32).astype(np.float32) * mult.astype(np.float32).reshape(1, -1, 1, 1)
    v = np.clip(v, np.float32(qmin - yz), np.float32(qmax - yz))
    return (np.rint(v) + yz).astype(np.int64), (oh, ow)


CASES = [  # (n, c, h, w, m, k, stride, pad, dilation, groups)
    (1, 3, 17, 19, 16, 7, 2, 3, 1, 1),
    (2, 16, 9, 7, 24, 3, 1, 1, 1, 1),
    (1, 32, 8, 8, 64, 1, 1, 0, 1, 1),      # 1x1: GEMM straight on the transposed image
    (1, 13, 8, 8, 5, 1, 1, 0, 1, 1),       # 1x1 with channels not a multiple of 4
    (1, 24, 9, 11, 40, 1, 2, 0, 1, 1),
    (1, 8, 12, 10, 16, 3, 1, 2, 2, 1),     # dilation
    (1, 16, 10, 9, 32, 3, 2, 1, 1, 4),     # groups
    (2, 24, 11, 13, 24, 3, 1, 1, 1, 24),   # depthwise
    (1, 16, 14, 15, 16, 5, 2, 2, 1, 16),   # depthwise, stride 2
    (1, 8, 9, 9, 8, 3, 1, 2, 2, 8),        # depthwise, dilation
    (1, 4, 3, 3, 4, 5, 1, 2, 1, 1),        # taps mostly in the padding
    # channels of each group a multiple of 4 and >= 16: the GEMM reads the pixels in place
    # through row pointers (AVX-512 VNNI; im2col elsewhere)
    (1, 16, 21, 20, 32, 3, 1, 1, 1, 1),    # several row blocks, padding on every side
    (1, 32, 10, 9, 48, 3, 2, 1, 1, 2),     # groups, stride 2
    (1, 16, 12, 10, 16, 3, 1, 2, 2, 1),    # dilation
    (2, 20, 5, 5, 24, 5, 1, 2, 1, 1),      # taps mostly in the padding
    (1, 64, 6, 7, 80, 3, 2, 0, 1, 1),      # no padding, odd output width
    (1, 64, 13, 11, 48, 3, 1, 1, 1, 1),    # K 576, 143 rows: full tiles and rows left
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES)
def test_qconv_against_int64_reference(isa, threads, case):
    n, c, h, wd, m, k, s, p, d, groups = case
    rng = np.random.default_rng(sum(case))
    x = rng.integers(0, 256, (n, c, h, wd)).astype(np.uint8)
    w = rng.integers(-128, 128, (m, c // groups, k, k)).astype(np.int8)
    bias = rng.integers(-5000, 5000, m).astype(np.int32)
    xz, yz = int(rng.integers(0, 256)), int(rng.integers(0, 256))
    # Multipliers that put the outputs across the whole range and past it (saturation).
    mult = (rng.uniform(0.5, 2.0, m) * 128 / (np.sqrt(c // groups * k * k) * 128 * 74)
            ).astype(np.float32)
    want, (oh, ow) = reference(x, xz, w, bias, mult, yz, 0, 255, (s, s), (p, p), (d, d),
                               groups)
    conv = qgemm.QConv2d(w, bias, mult, xz, yz, 0, 255, groups)
    got = conv.run(x, (oh, ow), (s, s), (p, p), (d, d),
                   gemm.ExecutionContext(num_threads=threads, isa=isa))
    assert got.dtype == np.uint8 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) > min(want.size // 4, 50)     # not all saturated


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("w_zero_point", ["none", "tensor", "channel"])
@pytest.mark.parametrize("case", CASES)
def test_int32_output_against_int64_reference(isa, threads, w_zero_point, case):
    """ConvInteger's form: the exact sums of (x - xz) * (w - wz), the weights' zero point
    per tensor or per output channel (a column of ones gives each window's sum of x),
    the input's given with each call."""
    n, c, h, wd, m, k, s, p, d, groups = case
    rng = np.random.default_rng(sum(case) + len(w_zero_point))
    x = rng.integers(0, 256, (n, c, h, wd)).astype(np.uint8)
    w = rng.integers(-128, 128, (m, c // groups, k, k)).astype(np.int8)
    wz = {"none": None, "tensor": np.int8(rng.integers(-128, 128)),
          "channel": rng.integers(-128, 128, m).astype(np.int8)}[w_zero_point]
    conv = qgemm.QConv2d(w, None, 1, 0, 0, 0, 0, groups, np.int32, w_zero_point=wz)
    assert conv.integer and not conv.depthwise
    w_shifted = w.astype(np.int64) - (0 if wz is None else np.int64(wz).reshape(-1, 1, 1, 1))
    context = gemm.ExecutionContext(num_threads=threads, isa=isa)
    for xz in (int(rng.integers(1, 255)), 0, 255):    # one bound call, any zero point
        want, (oh, ow) = integer_sums(x, xz, w_shifted, (s, s), (p, p), (d, d), groups)
        call = conv.bind(x.shape, (oh, ow), (s, s), (p, p), (d, d), context)
        got = call.integer(x, xz)
        assert got.dtype == np.int32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert call.integer(x[:, :, :, ::-1], xz) is None         # not C-contiguous
    assert call.integer(x.astype(np.int8), xz) is None
    with pytest.raises(ValueError, match="integer"):
        call(x)
    with pytest.raises(ValueError, match="zero point"):
        conv.run(x, (oh, ow), (s, s), (p, p), (d, d))
    with pytest.raises(InvalidArgument, match="x_zero_point 256"):
        call.integer(x, 256)


def test_int32_output_argument_checks():
    w = np.ones((4, 2, 3, 3), np.int8)
    with pytest.raises(InvalidArgument, match="weight zero point"):
        qgemm.QConv2d(w, None, 1, 0, 0, 0, 0, 1, np.int32, w_zero_point=np.ones(3, np.int8))
    with pytest.raises(InvalidArgument, match="weight zero point"):    # requantizing
        qgemm.QConv2d(w, None, 1, 0, 0, 0, 255, 1, np.uint8, w_zero_point=np.int8(3))
    conv = qgemm.QConv2d(w, None, 1, 0, 0, 0, 0, 2, np.int32)
    with pytest.raises(InvalidArgument, match="NCHW only"):
        conv.bind((1, 5, 5, 4), (3, 3), (1, 1), (0, 0), (1, 1), channels_last=True)
    with pytest.raises(ValueError, match="requantizes"):
        qgemm.QConv2d(w, None, 1, 0, 0, 0, 255, 1).bind(
            (1, 2, 5, 5), (3, 3), (1, 1), (0, 0), (1, 1)).integer(np.zeros((1, 2, 5, 5),
                                                                           np.uint8), 0)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("depthwise", [False, True])
def test_bound_call_is_run_for_its_shape_only(channels_last, depthwise):
    """QConv2d.bind decides the geometry once: the call gives run's output for C-contiguous
    uint8 inputs of the bound shape and None for anything else."""
    rng = np.random.default_rng(3 + 2 * channels_last + depthwise)
    c = m = 32
    groups = 32 if depthwise else 1
    w = rng.integers(-128, 128, (m, c // groups, 3, 3)).astype(np.int8)
    bias = rng.integers(-500, 500, m).astype(np.int32)
    mult = np.full(m, 2e-4, np.float32)
    conv = qgemm.QConv2d(w, bias, mult, 7, 130, 0, 255, groups)
    shape = (2, 9, 10, c) if channels_last else (2, c, 9, 10)
    call = conv.bind(shape, (5, 5), (2, 2), (1, 1), (1, 1), channels_last=channels_last)
    for _ in range(2):
        x = rng.integers(0, 256, shape).astype(np.uint8)
        want = conv.run(x, (5, 5), (2, 2), (1, 1), (1, 1), channels_last=channels_last)
        nchw = x.transpose(0, 3, 1, 2) if channels_last else x
        ref, _ = reference(nchw, 7, w, bias, mult, 130, 0, 255, (2, 2), (1, 1), (1, 1),
                           groups)
        np.testing.assert_array_equal(want.transpose(0, 3, 1, 2) if channels_last else want,
                                      ref)
        np.testing.assert_array_equal(call(x), want)
    assert call.x_shape == shape and call(x.astype(np.int8)) is None
    assert call(np.zeros((1,) + shape[1:], np.uint8)) is None
    assert call(np.asfortranarray(x)) is None and call(list(x)) is None


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("conv_is_a", [True, False])
@pytest.mark.parametrize("k,c", [(1, 32), (3, 16), (3, 3)])   # direct, indirect, im2col
def test_bound_add_is_conv_then_qlinear_add(isa, threads, conv_is_a, k, c):
    """QConvCall.with_add: the conv's uint8 output and a residual through qlinear_add's
    arithmetic (in the AVX-512 VNNI GEMM's epilogue, else per block), equal to the two
    calls one after the other."""
    rng = np.random.default_rng(k + c + 2 * conv_is_a)
    m = 40      # a last block of 8 columns
    w = rng.integers(-128, 128, (m, c, k, k)).astype(np.int8)
    mult = (rng.uniform(0.5, 2.0, m) * 128 / (np.sqrt(c * k * k) * 128 * 74)).astype(
        np.float32)
    conv = qgemm.QConv2d(w, rng.integers(-5000, 5000, m).astype(np.int32), mult, 9, 120, 0,
                         255, 1)
    ctx = gemm.ExecutionContext(num_threads=threads, isa=isa)
    shape, out = (2, 17, 15, c), (17, 15)
    add = (np.float32(0.031), 7, np.float32(0.05), 130, np.float32(0.06), 11)
    call = conv.bind(shape, out, (1, 1), (k // 2, k // 2), (1, 1), ctx,
                     channels_last=True).with_add(*add, conv_is_a)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    res = rng.integers(0, 256, (2,) + out + (m,)).astype(np.uint8)
    y = conv.run(x, out, (1, 1), (k // 2, k // 2), (1, 1), ctx, channels_last=True)
    a, b = (y, res) if conv_is_a else (res, y)
    want = qgemm.qlinear_add(a, add[0], add[1], b, add[2], add[3], add[4], add[5], ctx)
    got = call(x, res)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(want)) > 100 and not np.array_equal(want, y)
    assert call(x) is None and call(x, res[:1]) is None and call(x, res.view(np.int8)) is None


def test_bound_add_needs_an_nhwc_uint8_conv_of_one_group():
    w = np.ones((16, 8, 3, 3), np.int8)
    add = (0.1, 0, 0.1, 0, 0.1, 0, True)
    for conv, channels_last in [(qgemm.QConv2d(w, None, 0.01, 0, 0, -128, 127, 1,
                                               out_dtype=np.int8), True),
                                (qgemm.QConv2d(w, None, 0.01, 0, 0, 0, 255, 1), False),
                                (qgemm.QConv2d(w[:, :4], None, 0.01, 0, 0, 0, 255, 2), True)]:
        shape = (1, 5, 5, 8) if channels_last else (1, 8, 5, 5)
        with pytest.raises(ValueError, match="NHWC uint8"):
            conv.bind(shape, (5, 5), (1, 1), (1, 1), (1, 1),
                      channels_last=channels_last).with_add(*add)


@pytest.mark.parametrize("xz,yz", [(0, 0), (255, 255), (0, 255), (255, 0), (128, 3)])
@pytest.mark.parametrize("depthwise", [False, True])
def test_zero_point_extremes_and_saturation(xz, yz, depthwise):
    rng = np.random.default_rng(xz + 7 * yz + depthwise)
    c = m = 8
    groups = 8 if depthwise else 1
    x = rng.integers(0, 256, (1, c, 7, 6)).astype(np.uint8)
    w = rng.integers(-128, 128, (m, c // groups, 3, 3)).astype(np.int8)
    bias = rng.integers(-100000, 100000, m).astype(np.int32)
    mult = np.full(m, 0.01, np.float32)        # far past the range both ways
    want, shape = reference(x, xz, w, bias, mult, yz, 0, 255, (1, 1), (1, 1), (1, 1), groups)
    got = qgemm.QConv2d(w, bias, mult, xz, yz, 0, 255, groups).run(
        x, shape, (1, 1), (1, 1), (1, 1))
    np.testing.assert_array_equal(got, want)
    assert (got == 0).any() and (got == 255).any()


def test_int8_output_per_tensor_multiplier_and_relu_clamp():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (1, 6, 8, 8)).astype(np.uint8)
    w = rng.integers(-128, 128, (10, 6, 3, 3)).astype(np.int8)
    bias = rng.integers(-3000, 3000, 10).astype(np.int32)
    mult = np.float32(3e-4)
    for qmin, qmax, yz in ((-128, 127, 5), (5, 127, 5), (-10, 20, 0)):
        want, shape = reference(x, 100, w, bias, np.full(10, mult), yz, qmin, qmax,
                                (1, 1), (0, 0), (1, 1), 1)
        got = qgemm.QConv2d(w, bias, mult, 100, yz, qmin, qmax, 1, np.int8).run(
            x, shape, (1, 1), (0, 0), (1, 1))
        assert got.dtype == np.int8
        np.testing.assert_array_equal(got, want)
        assert got.min() >= qmin and got.max() <= qmax


def test_round_half_to_even():
    # acc * mult lands exactly on .5: ties go to the even neighbour, as onnxruntime's
    # rounding by the float magic number does.
    x = np.full((1, 1, 1, 6), 1, np.uint8)
    w = np.ones((1, 1, 1, 1), np.int8)
    bias = np.zeros(1, np.int32)
    got = qgemm.QConv2d(w, bias, np.float32(0.5), 0, 0, 0, 255, 1).run(
        np.arange(1, 7, dtype=np.uint8).reshape(1, 1, 1, 6), (1, 6), (1, 1), (0, 0), (1, 1))
    np.testing.assert_array_equal(got.ravel(), [0, 1, 2, 2, 2, 3])  # rint of 0.5 .. 3
    del x


def test_argument_checks():
    w = np.ones((4, 2, 3, 3), np.int8)
    with pytest.raises(InvalidDType, match="int8"):
        qgemm.QConv2d(w.astype(np.uint8), None, 1.0, 0, 0, 0, 255, 1)
    with pytest.raises(InvalidArgument, match="groups"):
        qgemm.QConv2d(w, None, 1.0, 0, 0, 0, 255, 3)
    with pytest.raises(InvalidArgument, match="x_zero_point"):
        qgemm.QConv2d(w, None, 1.0, 300, 0, 0, 255, 1)
    conv = qgemm.QConv2d(w, None, 1.0, 0, 0, 0, 255, 1)
    with pytest.raises(InvalidDType, match="uint8"):
        conv.run(np.ones((1, 2, 5, 5), np.int8), (3, 3), (1, 1), (0, 0), (1, 1))
    with pytest.raises(InvalidArgument, match="channels"):
        conv.run(np.ones((1, 3, 5, 5), np.uint8), (3, 3), (1, 1), (0, 0), (1, 1))
    with pytest.raises(InvalidArgument, match="pads"):
        conv.run(np.ones((1, 2, 5, 5), np.uint8), (3, 3), (1, 1), (-1, 0), (1, 1))


def _mlas_add(a, sa, za, b, sb, zb, sc, zc, lo, hi):
    """MLAS's AVX2 QLinearAdd in float64: each fused multiply-add is exact in float64 and
    rounded once to float32; then round half to even and saturate."""
    ra, rb = np.float32(sa) / np.float32(sc), np.float32(sb) / np.float32(sc)
    fixed = np.float32(np.float32(zc) - (ra * np.float32(za) + rb * np.float32(zb)))
    v = (b.astype(np.float64) * np.float64(rb) + np.float64(fixed)).astype(np.float32)
    v = (a.astype(np.float64) * np.float64(ra) + v.astype(np.float64)).astype(np.float32)
    return np.clip(np.rint(v), lo, hi).astype(np.int64)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("zero_points", [(0, 0, 0), (255, 255, 255), (17, 240, 128)])
def test_qlinear_add_against_mlas_formula(isa, dtype, zero_points):
    rng = np.random.default_rng(sum(zero_points))
    info = np.iinfo(dtype)
    za, zb, zc = (int(np.clip(z, info.min, info.max)) for z in zero_points)
    a = rng.integers(info.min, info.max + 1, (3, 5, 7, 11)).astype(dtype)
    b = rng.integers(info.min, info.max + 1, a.shape).astype(dtype)
    for sa, sb, sc in ((0.02, 0.03, 0.04), (0.1, 0.1, 0.01), (0.001, 0.5, 0.25)):
        got = qgemm.qlinear_add(a, sa, za, b, sb, zb, sc, zc,
                                gemm.ExecutionContext(num_threads=2, isa=isa))
        assert got.dtype == dtype and got.shape == a.shape
        np.testing.assert_array_equal(got, _mlas_add(a, sa, za, b, sb, zb, sc, zc, info.min,
                                                     info.max))
    with pytest.raises(InvalidArgument, match="one shape"):
        qgemm.qlinear_add(a, 1.0, 0, b[:1], 1.0, 0, 1.0, 0)


def test_float_sums_ends():
    # shift_to_float is exact; requantize_float is the int32 requantization of exact sums.
    rng = np.random.default_rng(9)
    x = rng.integers(0, 256, (2, 3, 5, 4)).astype(np.uint8)
    np.testing.assert_array_equal(qgemm.shift_to_float(x, 200), x.astype(np.float32) - 200)
    acc = rng.integers(-3_000_000, 3_000_000, (2, 3, 5, 4)).astype(np.float32)
    mult = np.float32([1e-4, 3e-5, 2e-3])
    for qmin, qmax, yz, dtype in ((0, 255, 7, np.uint8), (-128, 127, -3, np.int8),
                                  (50, 60, 7, np.uint8)):
        got = qgemm.requantize_float(acc, mult, yz, qmin, qmax, dtype)
        v = np.clip(acc * mult.reshape(1, 3, 1, 1), np.float32(qmin - yz),
                    np.float32(qmax - yz))
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, np.rint(v).astype(np.int64) + yz)
    with pytest.raises(InvalidDType, match="float32"):
        qgemm.requantize_float(acc.astype(np.float64), mult, 0, 0, 255)
    with pytest.raises(InvalidDType, match="uint8"):
        qgemm.shift_to_float(x.astype(np.int8), 0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype,zp", [(np.uint8, 0), (np.uint8, 255), (np.uint8, 77),
                                      (np.int8, -128), (np.int8, 5)])
def test_quantize_8bit_on_every_kernel(isa, dtype, zp):
    # round(x / scale) half to even, + zero point, saturated; ties and both saturations
    # present; a NaN goes to the lowest value (MLAS's MAXPS clamp), infinities saturate.
    rng = np.random.default_rng(abs(zp))
    scale = np.float32(0.5)
    x = np.concatenate([np.arange(-300, 300, dtype=np.float32) * np.float32(0.25),
                        rng.standard_normal(5000).astype(np.float32) * 40,
                        np.float32([np.inf, -np.inf])])
    got = qgemm.quantize(x, np.float32([scale]), np.asarray([zp], dtype), 0, dtype,
                         gemm.ExecutionContext(num_threads=2, isa=isa))
    info = np.iinfo(dtype)
    want = np.clip(np.rint(x / scale) + zp, info.min, info.max).astype(dtype)
    np.testing.assert_array_equal(got, want)
    assert (got == info.min).any() and (got == info.max).any()
    nan = qgemm.quantize(np.float32([np.nan]), np.float32([scale]), np.asarray([zp], dtype),
                         0, dtype, gemm.ExecutionContext(isa=isa))
    assert nan[0] == info.min
