"""The int8 GEMM (pyconv._ext.qgemm) on every kernel this CPU runs, against int64 NumPy:
exact sums for every shape class (edges of the 16-column blocks and 4-deep k groups, the
6-row tiles, one row, long k) and value extremes, and its argument checks."""
import numpy as np
import pytest

from pyconv._ext import gemm, qgemm
from pyconv.errors import InvalidArgument, InvalidDType

ISAS = [isa for isa in ("avx512", "avx2", "generic") if isa in gemm.supported_isas()]
SHAPES = [(1, 1, 1), (7, 5, 3), (6, 4, 64), (13, 33, 70), (100, 27, 16), (49, 4608, 130),
          (601, 300, 200), (5, 1, 17)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_exact_against_int64(isa, threads, m, k, n):
    rng = np.random.default_rng(m * 1000 + k + n)
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    context = gemm.ExecutionContext(num_threads=threads, isa=isa)
    got = qgemm.matmul_u8s8(a, qgemm.PackedInt8(b), context)
    assert got.dtype == np.int32 and got.shape == (m, n)
    np.testing.assert_array_equal(got, a.astype(np.int64) @ b.astype(np.int64))


@pytest.mark.parametrize("kernel", qgemm.kernel_names())
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_every_kernel_exact(kernel, m, k, n):
    # Each kernel this CPU runs, also those no context selects here (the plain AVX2 one
    # on a CPU with AVX-VNNI).
    rng = np.random.default_rng(m + 7 * k + 11 * n)
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    got = qgemm.matmul_u8s8(a, qgemm.PackedInt8(b), gemm.ExecutionContext(num_threads=2),
                            kernel=kernel)
    np.testing.assert_array_equal(got, a.astype(np.int64) @ b.astype(np.int64))
    full = np.full((7, 1000), 255, np.uint8)
    low = np.full((1000, 20), -128, np.int8)
    assert (qgemm.matmul_u8s8(full, qgemm.PackedInt8(low), kernel=kernel)
            == 255 * -128 * 1000).all()


def test_kernel_selection():
    names = qgemm.kernel_names()
    assert "generic" in names
    for isa in ISAS:
        assert qgemm.kernel_isa(gemm.ExecutionContext(isa=isa)) in names
    with pytest.raises(InvalidArgument, match="does not run here"):
        qgemm.matmul_u8s8(np.ones((2, 3), np.uint8), qgemm.PackedInt8(np.ones((3, 5), np.int8)),
                          kernel="avx9000")


@pytest.mark.parametrize("isa", ISAS)
def test_extremes_do_not_saturate(isa):
    # 255 * -128 in every product: vpmaddubsw would saturate its int16 pair sums here.
    a = np.full((7, 1000), 255, np.uint8)
    b = np.full((1000, 20), -128, np.int8)
    got = qgemm.matmul_u8s8(a, qgemm.PackedInt8(b), gemm.ExecutionContext(isa=isa))
    assert (got == 255 * -128 * 1000).all()


def test_kernel_names_and_checks():
    assert qgemm.kernel_isa(gemm.ExecutionContext(isa="generic")) == "generic"
    packed = qgemm.PackedInt8(np.ones((3, 5), np.int8))
    assert (packed.k, packed.n, packed.kp, packed.np) == (3, 5, 4, 16)
    np.testing.assert_array_equal(packed.column_sums, [3] * 5)
    with pytest.raises(InvalidDType, match="int8"):
        qgemm.PackedInt8(np.ones((3, 5), np.uint8))
    with pytest.raises(InvalidDType, match="uint8"):
        qgemm.matmul_u8s8(np.ones((2, 3), np.int8), packed)
    with pytest.raises(InvalidArgument, match=r"\(2, 4\).*\(3, 5\)"):
        qgemm.matmul_u8s8(np.ones((2, 4), np.uint8), packed)
    assert qgemm.matmul_u8s8(np.ones((0, 3), np.uint8), packed).shape == (0, 5)


def _qconv_reference(x, w, bias, mult, xz, yz, lo, hi, stride, pad, groups):
    """A quantized conv of NCHW ``x`` in int64 sums and onnxruntime's float32
    requantization (float(sum + bias) * multiplier, clamped, rounded half to even, + yz)."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.int64) - xz, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    acc = np.zeros((n, m, oh, ow), np.int64)
    mg = m // groups
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                win = xs[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
                acc[:, g * mg:(g + 1) * mg] += np.einsum(
                    "nchw,mc->nmhw", win, w[g * mg:(g + 1) * mg, :, i, j].astype(np.int64))
    v = (acc + bias.reshape(1, -1, 1, 1)).astype(np.float32) * mult.reshape(1, -1, 1, 1)
    v = np.rint(np.clip(v, np.float32(lo - yz), np.float32(hi - yz)))
    return (v.astype(np.int32) + yz).astype(np.uint8)


QCONVS = [  # (c, m, k, stride, pad, groups)
    (16, 20, 3, 1, 1, 1), (3, 70, 7, 2, 3, 1), (64, 36, 1, 1, 0, 1), (24, 48, 3, 2, 1, 4),
    (40, 40, 3, 1, 1, 40), (72, 72, 5, 2, 2, 72)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("c,m,k,stride,pad,groups", QCONVS)
def test_qconv_every_isa_and_layout(isa, threads, c, m, k, stride, pad, groups):
    """QConv2d (the GEMM path with its requantizing epilogue where the kernel has one,
    the depthwise kernels) NCHW and NHWC against the int64 reference: output rows that
    leave 1-5 rows of a 6-row tile, channel counts off the 16-column blocks."""
    rng = np.random.default_rng(c * 7 + m + k)
    w = rng.integers(-128, 128, (m, c // groups, k, k)).astype(np.int8)
    bias = rng.integers(-30000, 30000, m).astype(np.int32)
    mult = rng.uniform(2e-5, 4e-4, m).astype(np.float32)
    xz, yz, lo, hi = 13, 120, 5, 250
    conv = qgemm.QConv2d(w, bias, mult, xz, yz, lo, hi, groups)
    context = gemm.ExecutionContext(num_threads=threads, isa=isa)
    for shape in [(1, 9, 11), (2, 13, 7)]:
        x = rng.integers(0, 256, (shape[0], c) + shape[1:]).astype(np.uint8)
        want = _qconv_reference(x, w, bias, mult, xz, yz, lo, hi, stride, pad, groups)
        out = want.shape[2:]
        got = conv.run(x, out, (stride, stride), (pad, pad), (1, 1), context)
        np.testing.assert_array_equal(got, want)
        got = conv.run(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), out, (stride, stride),
                       (pad, pad), (1, 1), context, channels_last=True)
        np.testing.assert_array_equal(got, want.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("channels", [37, 96, 130])    # blocks of 64, 32 and single ones
@pytest.mark.parametrize("k", [3, 9])                  # 81 taps: tap by tap through dst
def test_max_pool_nhwc_every_isa(isa, dtype, channels, k):
    rng = np.random.default_rng(3 + channels + k)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (2, 9, 10, channels)).astype(dtype)
    p = k // 2
    got = qgemm.max_pool_nhwc(x, (k, k), (2, 2), (p, p), (1, 1), (5, 5),
                              gemm.ExecutionContext(isa=isa))
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=info.min)
    want = np.max([padded[:, i:i + 10:2, j:j + 10:2] for i in range(k) for j in range(k)],
                  axis=0)[:, :5, :5]
    np.testing.assert_array_equal(got, want)
    with pytest.raises(InvalidDType, match="uint8 or int8"):
        qgemm.max_pool_nhwc(x.astype(np.int16), (3, 3), (2, 2), (1, 1), (1, 1), (5, 5))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_channel_sums_both_layouts(dtype):
    rng = np.random.default_rng(8)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (3, 5, 7, 33)).astype(dtype)
    np.testing.assert_array_equal(qgemm.channel_sums(x, True),
                                  x.astype(np.int64).sum(axis=(1, 2)))
    np.testing.assert_array_equal(qgemm.channel_sums(x, False),
                                  x.astype(np.int64).sum(axis=(2, 3)))
    with pytest.raises(InvalidDType, match="uint8 or int8"):
        qgemm.channel_sums(x.astype(np.int32), True)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", [(2, 5, 7, 19), (1, 4, 4, 2048), (3, 17, 33, 3), (1, 1, 1, 8)])
def test_contiguous_bytes_copies_the_channel_swaps_by_tiles(isa, shape):
    """NHWC <-> NCHW views of 8-bit images come back C-contiguous with NumPy's values
    (16 x 16 tiles and their edges); other arrays as np.ascontiguousarray."""
    rng = np.random.default_rng(sum(shape))
    ctx = gemm.ExecutionContext(isa=isa)
    base = rng.integers(0, 256, shape).astype(np.uint8)
    views = [base.transpose(0, 3, 1, 2), base.transpose(0, 2, 3, 1),
             base.view(np.int8).transpose(0, 3, 1, 2), base[:, ::-1].transpose(0, 3, 1, 2),
             base.transpose(0, 1, 3, 2), base[..., :1]]
    for v in views:
        got = qgemm.contiguous_bytes(v, ctx)
        assert got.flags.c_contiguous and got.dtype == v.dtype and got.shape == v.shape
        np.testing.assert_array_equal(got, v)
    y = qgemm.dequantize(views[0], np.float32(0.25), np.uint8(3), 0, ctx)
    np.testing.assert_array_equal(y, (views[0].astype(np.float32) - 3) * np.float32(0.25))
