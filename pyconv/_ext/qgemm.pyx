# Exact 8-bit integer GEMM (uint8 x int8 -> int32) on the kernels of src/kernels/qgemm_*.c
# (AVX-512 VNNI, AVX2, portable; picked from the execution context's ISA), split over the
# thread pool by rows. The quantized operators (pyconv.ops.quant) build on it: they map
# int8 activations and uint8 weights onto uint8 x int8 by moving the zero points, and apply
# the zero points as row and column sums.
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t

from pyconv._ext.gemm cimport context_of, exec_ctx, grain_for, parallel_for, threads_for
from pyconv.arithmetic import check_tensor_size
from pyconv.errors import InvalidArgument, InvalidDType

cnp.import_array()

cdef extern from "qgemm.h" nogil:
    enum:
        PYCONV_QGEMM_NB
        PYCONV_QGEMM_KB
    ctypedef void (*pyconv_qgemm_fn)(int64_t m, int64_t np, int64_t kp, const uint8_t *a,
                                     int64_t lda, const int8_t *bp, int32_t *c,
                                     int64_t ldc) noexcept nogil
    ctypedef struct pyconv_qgemm_kernel:
        const char *isa
        pyconv_qgemm_fn gemm
    const pyconv_qgemm_kernel *pyconv_qgemm_kernel_for(const char *isa)
    void pyconv_qgemm_pack_b(int64_t k, int64_t n, const int8_t *b, int64_t ldb, int8_t *dst)

#: Rows per task at least (a multiple of every kernel's row tile).
DEF MIN_ROWS = 48


cdef inline int64_t _round_up(int64_t x, int64_t m) noexcept nogil:
    return (x + m - 1) // m * m


def kernel_isa(context=None):
    """The integer kernel the context's ISA selects ("avx512vnni", "avx2", "generic")."""
    cdef exec_ctx c = context_of(context)
    return pyconv_qgemm_kernel_for(c.kernel.isa).isa.decode()


cdef class PackedInt8:
    """An int8 (k, n) right operand packed once (the weights of a layer), with its column
    sums (for the left operand's zero point)."""

    cdef readonly object data           # uint8 buffer, np * kp bytes
    cdef readonly int64_t k, n, kp, np
    cdef readonly object column_sums    # int64 (n,)

    def __init__(self, b):
        if not isinstance(b, np.ndarray) or b.dtype != np.int8 or b.ndim != 2:
            raise InvalidDType(f"packed int8 operand: expected a 2-D int8 array, got "
                               f"{getattr(b, 'dtype', type(b).__name__)} "
                               f"{getattr(b, 'shape', '')}")
        cdef cnp.ndarray[int8_t, ndim=2, mode="c"] src = np.ascontiguousarray(b)
        self.k, self.n = src.shape[0], src.shape[1]
        self.kp = _round_up(max(self.k, 1), PYCONV_QGEMM_KB)
        self.np = _round_up(max(self.n, 1), PYCONV_QGEMM_NB)
        check_tensor_size((self.kp, self.np))
        cdef cnp.ndarray[int8_t, ndim=1, mode="c"] dst = np.empty(self.kp * self.np, np.int8)
        with nogil:
            pyconv_qgemm_pack_b(self.k, self.n, &src[0, 0] if src.size else NULL, self.n,
                                &dst[0])
        self.data = dst
        self.column_sums = src.sum(axis=0, dtype=np.int64)


cdef struct _task:
    const pyconv_qgemm_kernel *kernel
    const uint8_t *a
    int64_t lda, np, kp, ldc
    const int8_t *bp
    int32_t *c


cdef void _rows(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef _task *t = <_task *>arg
    t.kernel.gemm(hi - lo, t.np, t.kp, t.a + lo * t.lda, t.lda, t.bp, t.c + lo * t.ldc, t.ldc)


def matmul_u8s8(a, PackedInt8 b, context=None):
    """``a @ b`` exactly, as int32 of shape (m, b.n): ``a`` uint8 (m, b.k)."""
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 2:
        raise InvalidDType(f"int8 GEMM: the left operand must be a 2-D uint8 array, got "
                           f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
    if a.shape[1] != b.k:
        raise InvalidArgument(f"int8 GEMM: left operand of shape {a.shape} does not match "
                              f"the packed ({b.k}, {b.n}) operand")
    cdef int64_t m = a.shape[0]
    check_tensor_size((m, b.np))
    cdef cnp.ndarray[uint8_t, ndim=2, mode="c"] left
    if b.kp == b.k and a.flags.c_contiguous:
        left = a
    else:                                   # pad k to the kernel's groups of 4 with zeros
        left = np.zeros((m, b.kp), np.uint8)
        left[:, :b.k] = a
    cdef cnp.ndarray[int32_t, ndim=2, mode="c"] out = np.empty((m, b.np), np.int32)
    if m == 0:
        return out[:, :b.n]
    cdef exec_ctx c = context_of(context)
    cdef cnp.ndarray[int8_t, ndim=1, mode="c"] packed = b.data
    cdef _task t
    t.kernel = pyconv_qgemm_kernel_for(c.kernel.isa)
    t.a = &left[0, 0]
    t.lda = b.kp
    t.np = b.np
    t.kp = b.kp
    t.ldc = b.np
    t.bp = &packed[0]
    t.c = &out[0, 0]
    cdef int nthreads = threads_for(m * b.kp * b.np // 4, c.nthreads)
    cdef int64_t grain = _round_up(max(grain_for(m, nthreads), <int64_t>MIN_ROWS), 6)
    with nogil:
        if nthreads <= 1 or m <= grain:
            _rows(&t, 0, m, 0)
        else:
            parallel_for(nthreads, m, grain, _rows, &t)
    return out[:, :b.n] if b.np != b.n else out
