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
