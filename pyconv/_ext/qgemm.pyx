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


# ---------------------------------------------------------------------------------------
# QuantizeLinear / DequantizeLinear on float32, per tensor or per channel: one pass each
# (NumPy needs five), split over the pool by blocks of a channel's run.
from libc.math cimport nearbyintf

cdef struct _qtask:
    const float *x
    void *q
    const float *scale
    const float *zero
    int64_t channels, inner, blocks_per_channel, block
    float lo, hi
    int kind        # 0 uint8, 1 int8, 2 uint16, 3 int16
    int dequantize


DEF QBLOCK = 16384


cdef inline void _quantize_run(const _qtask *t, int64_t c, int64_t i0, int64_t i1) noexcept nogil:
    cdef float s = t.scale[c], z = t.zero[c], v
    cdef int64_t base = c * t.inner, i
    for i in range(base + i0, base + i1):
        v = nearbyintf(t.x[i] / s) + z
        v = t.lo if v < t.lo else (t.hi if v > t.hi else v)
        if t.kind == 0:
            (<uint8_t *>t.q)[i] = <uint8_t>v
        elif t.kind == 1:
            (<int8_t *>t.q)[i] = <int8_t>v
        elif t.kind == 2:
            (<unsigned short *>t.q)[i] = <unsigned short>v
        else:
            (<short *>t.q)[i] = <short>v


cdef inline void _dequantize_run(const _qtask *t, int64_t c, int64_t i0, int64_t i1) noexcept nogil:
    cdef float s = t.scale[c], z = t.zero[c]
    cdef int64_t base = c * t.inner, i
    cdef float *y = <float *>t.x
    for i in range(base + i0, base + i1):
        if t.kind == 0:
            y[i] = (<float>(<const uint8_t *>t.q)[i] - z) * s
        elif t.kind == 1:
            y[i] = (<float>(<const int8_t *>t.q)[i] - z) * s
        elif t.kind == 2:
            y[i] = (<float>(<const unsigned short *>t.q)[i] - z) * s
        else:
            y[i] = (<float>(<const short *>t.q)[i] - z) * s


cdef void _blocks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef _qtask *t = <_qtask *>arg
    cdef int64_t b, c, i0
    for b in range(lo, hi):
        c = b // t.blocks_per_channel
        i0 = (b % t.blocks_per_channel) * t.block
        if t.dequantize:
            _dequantize_run(t, c, i0, min(i0 + t.block, t.inner))
        else:
            _quantize_run(t, c, i0, min(i0 + t.block, t.inner))


_KINDS = {np.dtype(np.uint8): 0, np.dtype(np.int8): 1, np.dtype(np.uint16): 2,
          np.dtype(np.int16): 3}


cdef _qtask _task_for(cnp.ndarray flt, cnp.ndarray q, scale, zero, int axis):
    """Runs of ``inner`` elements sharing one scale and zero point: the whole array, or
    (per channel) each index of ``axis`` repeated over the leading dims."""
    cdef _qtask t
    shape = (<object>flt).shape
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64)) if scale.size > 1 else flt.size
    runs = flt.size // inner if inner else 0
    t.x = <const float *>cnp.PyArray_DATA(flt)
    t.q = cnp.PyArray_DATA(q)
    t.inner = inner
    t.channels = runs
    t.block = QBLOCK
    t.blocks_per_channel = max((inner + QBLOCK - 1) // QBLOCK, 1)
    t.kind = _KINDS[q.dtype]
    info = np.iinfo(q.dtype)
    t.lo, t.hi = info.min, info.max
    return t


def _per_run(values, runs, channels):
    """A scale or zero point as float32, one value per run (runs cycle over channels)."""
    v = np.ascontiguousarray(values, np.float32).reshape(-1)
    return np.ascontiguousarray(np.tile(v, runs // channels) if v.size > 1 else v)


def quantize(x, scale, zero_point, int axis, dtype, context=None):
    """``saturate(round_half_even(x / scale) + zero_point)`` of float32 ``x`` as ``dtype``
    (uint8, int8, uint16, int16); ``scale`` and ``zero_point`` scalars or one value per
    index of ``axis``."""
    cdef cnp.ndarray flt = np.ascontiguousarray(x, np.float32)
    cdef cnp.ndarray q = np.empty((<object>flt).shape, dtype)
    cdef _qtask t = _task_for(flt, q, scale, zero_point, axis)
    _run(&t, scale, zero_point, context, 0)
    return q


def dequantize(q, scale, zero_point, int axis, context=None):
    """``(q - zero_point) * scale`` as float32; as :func:`quantize`."""
    cdef cnp.ndarray qa = np.ascontiguousarray(q)
    cdef cnp.ndarray y = np.empty((<object>qa).shape, np.float32)
    cdef _qtask t = _task_for(y, qa, scale, zero_point, axis)
    _run(&t, scale, zero_point, context, 1)
    return y


cdef _run(_qtask *t, scale, zero_point, context, int dequant):
    if t.channels == 0 or t.inner == 0:
        return
    cdef cnp.ndarray s = _per_run(scale, t.channels, scale.size)
    cdef cnp.ndarray z = _per_run(zero_point, t.channels, scale.size)
    t.scale = <const float *>cnp.PyArray_DATA(s)
    t.zero = <const float *>cnp.PyArray_DATA(z)
    cdef exec_ctx c = context_of(context)
    cdef int64_t blocks = t.channels * t.blocks_per_channel
    cdef int nthreads = threads_for(blocks * t.block // 4, c.nthreads)
    t.dequantize = dequant
    with nogil:
        if nthreads <= 1:
            _blocks(t, 0, blocks, 0)
        else:
            parallel_for(nthreads, blocks, grain_for(blocks, nthreads), _blocks, t)
