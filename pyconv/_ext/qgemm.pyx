# Exact 8-bit integer GEMM (uint8 x int8 -> int32) on the kernels of src/kernels/qgemm_*.c
# (AVX-512 VNNI, AVX2, portable; picked from the execution context's ISA), split over the
# thread pool by rows. The quantized operators (pyconv.ops.quant) build on it: they map
# int8 activations and uint8 weights onto uint8 x int8 by moving the zero points, and apply
# the zero points as row and column sums.
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t

from pyconv._ext.gemm cimport (context_of, exec_ctx, grain_for, parallel_for, slot_floats,
                               threads_for, workspace_floats)
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
    ctypedef void (*pyconv_qgemm_requant_fn)(int64_t rows, int64_t n, const int32_t *acc,
                                             int64_t lda, const int32_t *bias,
                                             const float *mult, float lo, float hi,
                                             int32_t yz, uint8_t *dst,
                                             int64_t ldd) noexcept nogil
    ctypedef void (*pyconv_qgemm_add_u8_fn)(int64_t n, const uint8_t *a, const uint8_t *b,
                                            uint8_t *c, float ra, float rb, float fixed,
                                            float lo, float hi) noexcept nogil
    ctypedef void (*pyconv_qgemm_add_s8_fn)(int64_t n, const int8_t *a, const int8_t *b,
                                            int8_t *c, float ra, float rb, float fixed,
                                            float lo, float hi) noexcept nogil
    ctypedef void (*pyconv_qgemm_transpose_fn)(int64_t rows, int64_t cols,
                                               const uint8_t *src, int64_t lds, uint8_t *dst,
                                               int64_t ldd) noexcept nogil
    ctypedef void (*pyconv_qgemm_dw_plane_fn)(const uint8_t *x, int64_t h, int64_t w,
                                              int64_t oh, int64_t ow, int64_t kh, int64_t kw,
                                              int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                              int64_t dh, int64_t dw, const int8_t *wts,
                                              int32_t xz, int32_t bias, float mult, float lo,
                                              float hi, int32_t yz, void *acc, float *xf,
                                              uint8_t *dst) noexcept nogil
    ctypedef void (*pyconv_qgemm_shift_fn)(int64_t n, const uint8_t *x, int32_t xz,
                                           float *y) noexcept nogil
    ctypedef void (*pyconv_qgemm_requant_float_fn)(int64_t n, const float *acc, float mult,
                                                   float lo, float hi, int32_t yz,
                                                   uint8_t *dst) noexcept nogil
    ctypedef void (*pyconv_qgemm_quantize8_fn)(int64_t n, const float *x, float scale,
                                               float zp, float lo, float hi,
                                               uint8_t *dst) noexcept nogil
    ctypedef void (*pyconv_qgemm_dw_row_nhwc_fn)(const uint8_t *x, int64_t h, int64_t w,
                                                 int64_t c, int64_t oy, int64_t ow,
                                                 int64_t kh, int64_t kw, int64_t sh,
                                                 int64_t sw, int64_t ph, int64_t pw,
                                                 int64_t dh, int64_t dw, const float *wts,
                                                 int32_t xz, const int32_t *bias,
                                                 const float *mult, float lo, float hi,
                                                 int32_t yz, int32_t *acc,
                                                 uint8_t *dst) noexcept nogil
    ctypedef void (*pyconv_qgemm_maxpool_row_fn)(const uint8_t *x, int64_t h, int64_t w,
                                                 int64_t c, int64_t oy, int64_t ow,
                                                 int64_t kh, int64_t kw, int64_t sh,
                                                 int64_t sw, int64_t ph, int64_t pw,
                                                 int64_t dh, int64_t dw,
                                                 uint8_t *dst) noexcept nogil
    ctypedef struct pyconv_qgemm_add_args:
        const uint8_t *res
        int64_t ldr
        float ra, rb, fixed
        int conv_is_a
    ctypedef void (*pyconv_qgemm_gemm_requant_fn)(int64_t m, int64_t np, int64_t kp,
                                                  const uint8_t *a, int64_t lda,
                                                  const int8_t *bp, int64_t n,
                                                  const int32_t *bias, const float *mult,
                                                  float lo, float hi, int32_t yz,
                                                  uint8_t *dst, int64_t ldd,
                                                  const pyconv_qgemm_add_args *add
                                                  ) noexcept nogil
    ctypedef void (*pyconv_qgemm_gemm_requant_indirect_fn)(
        int64_t m, int64_t np, int64_t taps, int64_t kt, const uint8_t *const *rows,
        const int8_t *bp, int64_t n, const int32_t *bias, const float *mult, float lo,
        float hi, int32_t yz, uint8_t *dst, int64_t ldd,
        const pyconv_qgemm_add_args *add) noexcept nogil
    ctypedef struct pyconv_qgemm_kernel:
        const char *isa
        pyconv_qgemm_fn gemm
        pyconv_qgemm_requant_fn requant
        pyconv_qgemm_add_u8_fn add_u8
        pyconv_qgemm_add_s8_fn add_s8
        pyconv_qgemm_transpose_fn transpose
        pyconv_qgemm_dw_plane_fn dw_plane
        pyconv_qgemm_shift_fn shift_to_float
        pyconv_qgemm_requant_float_fn requant_float
        pyconv_qgemm_quantize8_fn quantize8
        pyconv_qgemm_dw_row_nhwc_fn dw_row_nhwc
        pyconv_qgemm_maxpool_row_fn maxpool_row_u8
        pyconv_qgemm_maxpool_row_fn maxpool_row_s8
        pyconv_qgemm_gemm_requant_fn gemm_requant
        pyconv_qgemm_gemm_requant_indirect_fn gemm_requant_indirect
    const pyconv_qgemm_kernel *pyconv_qgemm_kernel_for(const char *isa)
    const pyconv_qgemm_kernel *pyconv_qgemm_kernel_named(const char *name)
    void pyconv_qgemm_pack_b(int64_t k, int64_t n, const int8_t *b, int64_t ldb, int8_t *dst)

#: Rows per task at least (a multiple of every kernel's row tile).
DEF MIN_ROWS = 48


cdef inline int64_t _round_up(int64_t x, int64_t m) noexcept nogil:
    return (x + m - 1) // m * m


def kernel_isa(context=None):
    """The integer kernel the context's ISA selects ("avx512vnni", "avxvnni", "avx2",
    "generic")."""
    cdef exec_ctx c = context_of(context)
    return pyconv_qgemm_kernel_for(c.kernel.isa).isa.decode()


def kernel_names():
    """Every integer kernel this CPU runs: those the supported ISAs select, and the plain
    AVX2 one wherever AVX2 runs (selected only without AVX-VNNI)."""
    from pyconv._ext.gemm import ExecutionContext, supported_isas
    isas = supported_isas()
    names = {kernel_isa(ExecutionContext(isa=isa)) for isa in isas} | {"generic"}
    if "avx2" in isas:
        names.add("avx2")
    return sorted(names)


cdef const pyconv_qgemm_kernel *_kernel(context, kernel) except NULL:
    """The context's kernel, or (tests) the one named ``kernel`` if this CPU runs it."""
    cdef exec_ctx c
    if kernel is None:
        c = context_of(context)
        return pyconv_qgemm_kernel_for(c.kernel.isa)
    if kernel not in kernel_names():
        raise InvalidArgument(f"int8 kernel {kernel!r} does not run here; this CPU runs "
                              f"{kernel_names()}")
    return pyconv_qgemm_kernel_named(kernel.encode())


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


def matmul_u8s8(a, PackedInt8 b, context=None, kernel=None):
    """``a @ b`` exactly, as int32 of shape (m, b.n): ``a`` uint8 (m, b.k); ``kernel`` (for
    tests) names one of :func:`kernel_names` instead of the context's."""
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
    t.kernel = _kernel(context, kernel)
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
    const pyconv_qgemm_kernel *kernel
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
    if t.kind <= 1:         # 8-bit: the vectorized loop of the kernel table
        t.kernel.quantize8(i1 - i0, t.x + base + i0, s, z, t.lo, t.hi,
                           <uint8_t *>t.q + base + i0)
        return
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
    # One loop per type (no test inside: the compiler vectorizes each).
    cdef float s = t.scale[c], z = t.zero[c]
    cdef int64_t base = c * t.inner, i
    cdef float *y = <float *>t.x
    cdef const uint8_t *u8 = <const uint8_t *>t.q
    cdef const int8_t *s8 = <const int8_t *>t.q
    cdef const unsigned short *u16 = <const unsigned short *>t.q
    cdef const short *s16 = <const short *>t.q
    if t.kind == 0:
        for i in range(base + i0, base + i1):
            y[i] = (<float>u8[i] - z) * s
    elif t.kind == 1:
        for i in range(base + i0, base + i1):
            y[i] = (<float>s8[i] - z) * s
    elif t.kind == 2:
        for i in range(base + i0, base + i1):
            y[i] = (<float>u16[i] - z) * s
    else:
        for i in range(base + i0, base + i1):
            y[i] = (<float>s16[i] - z) * s


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
_BOUNDS = [(0, 255), (-128, 127), (0, 65535), (-32768, 32767)]


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
    t.lo, t.hi = _BOUNDS[t.kind]
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
    cdef cnp.ndarray qa = contiguous_bytes(q, context)
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
    t.kernel = pyconv_qgemm_kernel_for(c.kernel.isa)
    cdef int64_t blocks = t.channels * t.blocks_per_channel
    cdef int nthreads = threads_for(blocks * t.block // 4, c.nthreads)
    t.dequantize = dequant
    with nogil:
        if nthreads <= 1:
            _blocks(t, 0, blocks, 0)
        else:
            parallel_for(nthreads, blocks, grain_for(blocks, nthreads), _blocks, t)


# ---------------------------------------------------------------------------------------
# Quantized 2-D convolution, uint8 in -> uint8 (or int8) out: QLinearConv with the weight's
# zero point 0 (onnxruntime's symmetric int8 weights). The image is transposed once to
# (pixels, channels), so that an im2col row is runs of memcpy (one per kernel row when a
# whole kernel row reads inside the image); each task takes a block of output positions
# of one group through im2col -> int8 GEMM -> requantize into the NCHW output, in the
# scratch of its thread. Depthwise layers (one channel per group) run a direct kernel on
# the NCHW image. Requantization is onnxruntime's (MlasRequantizeOutput): the int32 sum
# plus the int32 bias, times the float32 per-channel multiplier, clamped, rounded half to
# even, plus the output zero point.
from libc.string cimport memcpy, memset

cdef struct _qconv:
    const pyconv_qgemm_kernel *kernel
    int64_t n, c, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw
    int64_t groups, cg, mg, m, kg, kp, npad, rows, row_blocks
    const uint8_t *x            # NCHW image batch (NHWC where channels_last)
    const uint8_t *x_hwc        # its (n, h * w, c) layout (GEMM and NHWC depthwise paths)
    const int8_t *packed        # per group, npad * kp bytes
    const int8_t *w_dw          # depthwise weights (c, kh * kw)
    const float *w_dwf          # the same as (kh * kw, c) float32 (NHWC depthwise path)
    const int32_t *bias         # per output channel; the GEMM path's has -xz * colsum in it
    const float *mult
    float lo, hi                # clamp bounds minus the output zero point
    int32_t yz, xz
    uint8_t *y
    uint8_t *scratch
    int64_t scratch_stride
    int direct
    int indirect                # the GEMM reads the pixels through a table of row pointers
    const uint8_t *pad_row      # cg bytes of the input zero point (the indirect padding)
    int channels_last           # x and y are NHWC (n, h, w, c)
    const uint8_t *residual     # NHWC uint8 like y: each block of y then has it added
    float add_ra, add_rb, add_fixed
    int conv_is_a               # y is the add's first operand (else its second)
    int int32_out               # y is the int32 NCHW sums, unrequantized (ConvInteger)
    int sums_column             # the packed weights of a group end with a column of ones
    const int32_t *wz           # per output channel, the weight zero point it serves


cdef void _to_hwc(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Images x (c, h * w) -> (h * w, c), blocks of 64 pixels."""
    cdef _qconv *q = <_qconv *>arg
    cdef int64_t hw = q.h * q.w, blocks = (hw + 63) // 64, t, img, p0, p1
    for t in range(lo, hi):
        img = t // blocks
        p0 = (t % blocks) * 64
        p1 = min(p0 + 64, hw)
        q.kernel.transpose(q.c, p1 - p0, q.x + img * q.c * hw + p0, hw,
                           <uint8_t *>q.x_hwc + (img * hw + p0) * q.c, q.c)


cdef inline void _copy(uint8_t *dst, const uint8_t *src, int64_t n) noexcept nogil:
    """memcpy for the short runs of an im2col row (a kernel row of a 3-channel image is
    21 bytes): 8 bytes at a time inline, where a call would cost more than the copy."""
    if n >= 64:
        memcpy(dst, src, n)
        return
    while n >= 8:
        memcpy(dst, src, 8)
        dst += 8
        src += 8
        n -= 8
    while n > 0:
        dst[0] = src[0]
        dst += 1
        src += 1
        n -= 1


cdef inline void _fill(uint8_t *dst, uint8_t value, int64_t n) noexcept nogil:
    if n >= 64:
        memset(dst, value, n)
        return
    while n > 0:
        dst[0] = value
        dst += 1
        n -= 1


cdef inline void _im2col_row(const _qconv *q, const uint8_t *x, int64_t p, int64_t g,
                             uint8_t *dst) noexcept nogil:
    cdef int64_t oh = p // q.ow, ow = p % q.ow, i, j, ih, iw, iw0 = ow * q.sw - q.pw
    cdef int64_t run = q.kw * q.cg
    cdef uint8_t zp = <uint8_t>q.xz
    for i in range(q.kh):
        ih = oh * q.sh - q.ph + i * q.dh
        if ih < 0 or ih >= q.h:
            _fill(dst, zp, run)
            dst += run
            continue
        if q.groups == 1 and q.dw == 1 and iw0 >= 0 and iw0 + q.kw <= q.w:
            _copy(dst, x + (ih * q.w + iw0) * q.c, run)
            dst += run
            continue
        for j in range(q.kw):
            iw = iw0 + j * q.dw
            if iw < 0 or iw >= q.w:
                _fill(dst, zp, q.cg)
            else:
                _copy(dst, x + (ih * q.w + iw) * q.c + g * q.cg, q.cg)
            dst += q.cg
    if q.kp > q.kg:
        _fill(dst, 0, q.kp - q.kg)


cdef inline void _pixel_pointers(const _qconv *q, const uint8_t *x, int64_t oh, int64_t ow,
                                 int64_t g, const uint8_t **dst) noexcept nogil:
    """Output pixel (oh, ow)'s taps for the indirect GEMM: per (kernel row, kernel column),
    its input pixel's channels of group g, or the zero-point row where it is padding."""
    cdef int64_t i, j, ih, iw, ih0 = oh * q.sh - q.ph, iw0 = ow * q.sw - q.pw
    cdef const uint8_t *row
    if ih0 >= 0 and ih0 + (q.kh - 1) * q.dh < q.h and iw0 >= 0 \
            and iw0 + (q.kw - 1) * q.dw < q.w:      # inside: steps of the geometry
        for i in range(q.kh):
            row = x + ((ih0 + i * q.dh) * q.w + iw0) * q.c + g * q.cg
            for j in range(q.kw):
                dst[0] = row + j * q.dw * q.c
                dst += 1
        return
    for i in range(q.kh):
        ih = ih0 + i * q.dh
        for j in range(q.kw):
            iw = iw0 + j * q.dw
            if ih < 0 or ih >= q.h or iw < 0 or iw >= q.w:
                dst[0] = q.pad_row
            else:
                dst[0] = x + (ih * q.w + iw) * q.c + g * q.cg
            dst += 1


cdef inline void _store_sums(const _qconv *q, const int32_t *acc, int64_t rows, int64_t g,
                             int32_t *y, int64_t P) noexcept nogil:
    """A block of int32 sums (rows, channels of group g) into the NCHW planes: plus the
    zero points' share, ``bias - wz * (the window's sum of x)`` (the ones column), wrapping
    as int32 sums do (-fwrapv)."""
    cdef int64_t co, r
    cdef int32_t b, z
    cdef const int32_t *s = acc + q.mg
    for co in range(q.mg):
        b = q.bias[g * q.mg + co]
        z = q.wz[g * q.mg + co] if q.sums_column else 0
        if z != 0:
            for r in range(rows):
                y[co * P + r] = acc[r * q.npad + co] + b - z * s[r * q.npad]
        else:
            for r in range(rows):
                y[co * P + r] = acc[r * q.npad + co] + b


cdef void _qconv_tasks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef _qconv *q = <_qconv *>arg
    cdef int64_t t, img, g, p0, p1, p, rows, r, co, taps = 0, oy, ox, P = q.oh * q.ow
    cdef uint8_t *a = q.scratch + slot * q.scratch_stride
    cdef int32_t *acc = <int32_t *>(a + _round_up(q.rows * q.kp, 64))
    cdef uint8_t *tile = <uint8_t *>acc + _round_up(q.rows * q.npad * 4, 64)
    cdef const uint8_t *x
    cdef const uint8_t *rows_a
    cdef pyconv_qgemm_add_args add_args
    cdef const pyconv_qgemm_add_args *add
    cdef uint8_t *dst
    cdef int64_t ldd
    for t in range(lo, hi):
        img = t // (q.groups * q.row_blocks)
        g = (t // q.row_blocks) % q.groups
        p0 = (t % q.row_blocks) * q.rows
        p1 = min(p0 + q.rows, P)
        rows = p1 - p0
        x = q.x_hwc + img * q.h * q.w * q.c
        if q.direct:
            rows_a = x + p0 * q.c
        elif q.indirect:
            taps = q.kh * q.kw
            oy, ox = p0 // q.ow, p0 % q.ow
            for p in range(p1 - p0):
                _pixel_pointers(q, x, oy, ox, g, <const uint8_t **>a + p * taps)
                ox += 1
                if ox == q.ow:
                    ox = 0
                    oy += 1
            rows_a = a
        else:
            for p in range(p0, p1):
                _im2col_row(q, x, p, g, a + (p - p0) * q.kp)
            rows_a = a
        if q.int32_out:
            q.kernel.gemm(rows, q.npad, q.kp, rows_a, q.kp, q.packed + g * q.npad * q.kp,
                          acc, q.npad)
            _store_sums(q, acc, rows, g, <int32_t *>q.y + (img * q.m + g * q.mg) * P + p0, P)
            continue
        # Requantized as (positions, channels): in place where that is the output's layout
        # (NHWC), else into the tile transposed into the NCHW planes.
        if q.channels_last:
            dst = q.y + (img * P + p0) * q.m + g * q.mg
            ldd = q.m
        else:
            dst = tile
            ldd = q.mg
        add = NULL
        if q.residual != NULL:      # the QLinearAdd reading y (NHWC, one group): fused
            add_args.res = q.residual + (img * P + p0) * q.m
            add_args.ldr = q.m
            add_args.ra, add_args.rb, add_args.fixed = q.add_ra, q.add_rb, q.add_fixed
            add_args.conv_is_a = q.conv_is_a
            add = &add_args
        if q.indirect:
            q.kernel.gemm_requant_indirect(rows, q.npad, taps, q.cg, <const uint8_t **>a,
                                           q.packed + g * q.npad * q.kp, q.mg,
                                           q.bias + g * q.mg, q.mult + g * q.mg, q.lo, q.hi,
                                           q.yz, dst, ldd, add)
        elif q.kernel.gemm_requant != NULL:
            q.kernel.gemm_requant(rows, q.npad, q.kp, rows_a, q.kp,
                                  q.packed + g * q.npad * q.kp, q.mg, q.bias + g * q.mg,
                                  q.mult + g * q.mg, q.lo, q.hi, q.yz, dst, ldd, add)
        else:
            q.kernel.gemm(rows, q.npad, q.kp, rows_a, q.kp, q.packed + g * q.npad * q.kp,
                          acc, q.npad)
            q.kernel.requant(rows, q.mg, acc, q.npad, q.bias + g * q.mg, q.mult + g * q.mg,
                             q.lo, q.hi, q.yz, dst, ldd)
            if add != NULL:         # the add on the block while it is in cache
                if q.conv_is_a:
                    q.kernel.add_u8(rows * q.m, dst, add.res, dst, add.ra, add.rb, add.fixed,
                                    0.0, 255.0)
                else:
                    q.kernel.add_u8(rows * q.m, add.res, dst, dst, add.ra, add.rb, add.fixed,
                                    0.0, 255.0)
        if q.channels_last:
            continue
        q.kernel.transpose(rows, q.mg, tile, q.mg, q.y + (img * q.m + g * q.mg) * P + p0, P)


cdef void _qconv_depthwise(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """One (image, channel) plane per task (the kernel table's dw_plane)."""
    cdef _qconv *q = <_qconv *>arg
    cdef int64_t t, ch, P = q.oh * q.ow
    cdef uint8_t *acc = q.scratch + slot * q.scratch_stride
    cdef float *xf = <float *>(acc + _round_up(P * 4, 64))
    for t in range(lo, hi):
        ch = t % q.c
        q.kernel.dw_plane(q.x + t * q.h * q.w, q.h, q.w, q.oh, q.ow, q.kh, q.kw, q.sh, q.sw,
                          q.ph, q.pw, q.dh, q.dw, q.w_dw + ch * q.kh * q.kw, q.xz,
                          q.bias[ch], q.mult[ch], q.lo, q.hi, q.yz, acc, xf, q.y + t * P)


cdef void _qconv_depthwise_nhwc(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """One (image, output row) of an NHWC image per task (the kernel table's
    dw_row_nhwc)."""
    cdef _qconv *q = <_qconv *>arg
    cdef int64_t t, img, oy
    cdef int32_t *acc = <int32_t *>(q.scratch + slot * q.scratch_stride)
    for t in range(lo, hi):
        img = t // q.oh
        oy = t % q.oh
        q.kernel.dw_row_nhwc(q.x + img * q.h * q.w * q.c, q.h, q.w, q.c, oy, q.ow, q.kh,
                             q.kw, q.sh, q.sw, q.ph, q.pw, q.dh, q.dw, q.w_dwf, q.xz,
                             q.bias, q.mult, q.lo, q.hi, q.yz, acc,
                             q.y + t * q.ow * q.m)


cdef class QConv2d:
    """A quantized 2-D convolution packed once: uint8 NCHW input with zero point
    ``x_zero_point``, int8 weights (m, c / groups, kh, kw) with zero point 0, int32 bias,
    per-channel float32 multipliers (``x_scale * w_scale / y_scale``), output uint8 or
    int8 with zero point ``y_zero_point``, clamped to ``[qmin, qmax]`` (the type's range,
    or narrower for a fused Relu / Clip).

    With ``out_dtype`` int32 (ConvInteger) the output is the exact int32 sums
    ``conv(x - x_zero_point, w - w_zero_point)``, unrequantized (bias, multiplier, y zero
    point and bounds unused): the weights' zero point ``w_zero_point`` (int8 values, per
    tensor or per output channel) is given here, the input's with each call
    (:meth:`QConvCall.integer`); NCHW, on the GEMM (depthwise layers too)."""

    cdef readonly int64_t m, cg, groups, kh, kw
    cdef readonly bint depthwise, integer
    cdef readonly object out_dtype
    cdef object packed, bias, mult, w_dw, w_dwf, pad_row, zero_point_sums, wz
    cdef bint sums_column
    cdef int32_t xz, yz
    cdef float lo, hi

    def __init__(self, w, bias, multiplier, int x_zero_point, int y_zero_point, int qmin,
                 int qmax, int groups, out_dtype=np.uint8, w_zero_point=None):
        if not isinstance(w, np.ndarray) or w.dtype != np.int8 or w.ndim != 4:
            raise InvalidDType(f"quantized conv: weights must be a 4-D int8 array, got "
                               f"{getattr(w, 'dtype', type(w).__name__)} "
                               f"{getattr(w, 'shape', '')}")
        m, cg, kh, kw = w.shape
        if groups < 1 or m % groups:
            raise InvalidArgument(f"quantized conv: {m} output channels in {groups} groups")
        if not 0 <= x_zero_point <= 255:
            raise InvalidArgument(f"quantized conv: x_zero_point {x_zero_point} is not a "
                                  f"uint8 value")
        self.m, self.cg, self.groups, self.kh, self.kw = m, cg, groups, kh, kw
        self.xz, self.yz = x_zero_point, y_zero_point
        self.lo, self.hi = qmin - y_zero_point, qmax - y_zero_point
        self.out_dtype = np.dtype(out_dtype)
        self.integer = self.out_dtype == np.int32
        wz = np.zeros(1, np.int64) if w_zero_point is None else \
            np.asarray(w_zero_point, np.int64).reshape(-1)
        if wz.size not in (1, m) or np.any(wz) and not self.integer \
                or np.any(wz < -128) or np.any(wz > 127):
            raise InvalidArgument(f"quantized conv: weight zero point of shape "
                                  f"{np.shape(w_zero_point)}: expected int8 values, one or one "
                                  f"per output channel ({m}), nonzero only with int32 output")
        self.wz = np.ascontiguousarray(np.broadcast_to(wz, (m,)), np.int32)
        bias = np.zeros(m, np.int64) if bias is None else np.asarray(bias, np.int64)
        self.mult = np.ascontiguousarray(np.broadcast_to(
            np.asarray(multiplier, np.float32).reshape(-1), (m,)))
        self.depthwise = cg == 1 and groups == m and not self.integer
        if self.depthwise:
            self.w_dw = np.ascontiguousarray(w.reshape(m, kh * kw))
            self.w_dwf = np.ascontiguousarray(self.w_dw.T, np.float32)
            self.bias = np.ascontiguousarray(bias.astype(np.int32))
            return
        mg = m // groups
        self.pad_row = np.full(cg, x_zero_point, np.uint8)
        # K in (kernel row, kernel column, channel) order: the order of the image's
        # (pixels, channels) copy, so that an im2col row is runs of memcpy.
        mats = w.reshape(groups, mg, cg, kh, kw).transpose(0, 3, 4, 2, 1).reshape(
            groups, kh * kw * cg, mg)
        # A weight zero point needs each window's sum of x: a column of ones gives it.
        self.sums_column = bool(np.any(wz))
        if self.sums_column:
            mats = np.concatenate([mats, np.ones((groups, kh * kw * cg, 1), np.int8)], axis=2)
        packs = [PackedInt8(np.ascontiguousarray(mats[g])) for g in range(groups)]
        self.packed = np.concatenate([p.data for p in packs])
        sums = np.concatenate([p.column_sums[:mg] for p in packs])
        # (x - xz) . w = x . w - xz * sum(w): the zero point's share enters with the bias
        # (int32 wraps as onnxruntime's int32 sums do).
        self.bias = (bias - x_zero_point * sums).astype(np.int32)
        # (x - xz) . (w - wz) = x . w - wz * sum(x) + xz * (k * wz - sum(w)), k taps: the
        # last term is xz times this, per call (QConvCall.integer).
        self.zero_point_sums = kh * kw * cg * self.wz.astype(np.int64) - sums

    def run(self, x, output_shape, strides, pads_begin, dilations, context=None,
            bint channels_last=False):
        """``y`` (n, m, oh, ow) of ``x`` (n, c, h, w) uint8, or NHWC ``y`` (n, oh, ow, m) of
        ``x`` (n, h, w, c) where ``channels_last``; pads at the end are implied by
        ``output_shape``; every pad must be >= 0."""
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
            raise InvalidDType(f"quantized conv: input must be a 4-D uint8 array, got "
                               f"{getattr(x, 'dtype', type(x).__name__)} "
                               f"{getattr(x, 'shape', '')}")
        if self.integer:
            raise ValueError("QConv2d.run: an int32-output conv takes the input zero point "
                             "with each call (bind(...).integer)")
        cdef QConvCall call = self.bind(x.shape, output_shape, strides, pads_begin, dilations,
                                        context, channels_last)
        return call._execute(contiguous_bytes(x, context))

    def bind(self, x_shape, output_shape, strides, pads_begin, dilations, context=None,
             bint channels_last=False):
        """A :class:`QConvCall`: ``run`` for inputs of ``x_shape`` with the geometry, the
        threads and the task split decided once (a bound step of a memory plan)."""
        if len(x_shape) != 4:
            raise InvalidArgument(f"quantized conv: input must be 4-D, got shape "
                                  f"{tuple(x_shape)}")
        if channels_last and self.integer:
            raise InvalidArgument("quantized conv: int32 output is NCHW only")
        cdef int cax = 3 if channels_last else 1
        if x_shape[cax] != self.cg * self.groups:
            raise InvalidArgument(f"quantized conv: input of shape {tuple(x_shape)} has "
                                  f"{x_shape[cax]} channels, the weights take "
                                  f"{self.cg * self.groups}")
        if min(pads_begin) < 0 or min(strides) < 1 or min(dilations) < 1:
            raise InvalidArgument(f"quantized conv: pads {pads_begin}, strides {strides}, "
                                  f"dilations {dilations}: pads must be >= 0, strides and "
                                  f"dilations >= 1")
        cdef int64_t n = x_shape[0], oh = output_shape[0], ow = output_shape[1]
        check_tensor_size((n, self.m, oh, ow))
        cdef QConvCall call = QConvCall.__new__(QConvCall)
        call.conv = self
        call.x_shape = tuple(int(d) for d in x_shape)
        call.y_shape = (n, oh, ow, self.m) if channels_last else (n, self.m, oh, ow)
        call.out_dtype = self.out_dtype
        cdef exec_ctx c = context_of(context)
        cdef _qconv *q = &call.q
        q.residual = NULL
        q.kernel = pyconv_qgemm_kernel_for(c.kernel.isa)
        q.int32_out, q.sums_column = self.integer, self.sums_column
        cdef cnp.ndarray wz = self.wz
        q.wz = <const int32_t *>cnp.PyArray_DATA(wz)
        q.channels_last = channels_last
        if channels_last:
            q.n, q.h, q.w, q.c = call.x_shape
        else:
            q.n, q.c, q.h, q.w = call.x_shape
        q.oh, q.ow, q.kh, q.kw = oh, ow, self.kh, self.kw
        q.sh, q.sw = strides
        q.ph, q.pw = pads_begin
        q.dh, q.dw = dilations
        q.groups, q.cg, q.m = self.groups, self.cg, self.m
        q.mg = self.m // self.groups
        q.xz, q.yz, q.lo, q.hi = self.xz, self.yz, self.lo, self.hi
        cdef cnp.ndarray bias = self.bias, mult = self.mult
        q.bias = <const int32_t *>cnp.PyArray_DATA(bias)
        q.mult = <const float *>cnp.PyArray_DATA(mult)
        cdef int64_t P = oh * ow, macs, rows
        cdef cnp.ndarray packed, wdw
        call.empty = n * self.m * P == 0
        if call.empty:
            return call
        if self.depthwise and channels_last:
            wdw = self.w_dwf
            q.w_dwf = <const float *>cnp.PyArray_DATA(wdw)
            call.mode = _DEPTHWISE_NHWC
            call.tasks = n * oh
            call.nthreads = threads_for(call.tasks * ow * self.m * self.kh * self.kw,
                                        c.nthreads)
            q.scratch_stride = 4 * slot_floats(ow * self.m)
            call.workspace_bytes = q.scratch_stride * call.nthreads
            return call
        if self.depthwise:
            wdw = self.w_dw
            q.w_dw = <const int8_t *>cnp.PyArray_DATA(wdw)
            call.mode = _DEPTHWISE
            call.tasks = n * self.m
            call.nthreads = threads_for(call.tasks * P * self.kh * self.kw, c.nthreads)
            # the int32 plane, then (from the next 64 bytes) the float input plane
            q.scratch_stride = 4 * slot_floats(_round_up(P, 16) + q.h * q.w)
            call.workspace_bytes = q.scratch_stride * call.nthreads
            return call
        call.mode = _GEMM
        q.kg = self.kh * self.kw * self.cg
        q.kp = _round_up(q.kg, PYCONV_QGEMM_KB)
        q.npad = _round_up(q.mg + self.sums_column, PYCONV_QGEMM_NB)
        packed = self.packed
        q.packed = <const int8_t *>cnp.PyArray_DATA(packed)
        q.direct = (self.kh == 1 and self.kw == 1 and q.sh == 1 and q.sw == 1 and q.ph == 0
                    and q.pw == 0 and self.groups == 1 and q.kp == q.c and oh == q.h
                    and ow == q.w)
        # Pixels read in place through row pointers where each tap's channels are whole
        # groups of 4 k and long enough to pay for the pointers; else im2col.
        q.indirect = (not q.direct and not self.integer
                      and q.kernel.gemm_requant_indirect != NULL
                      and self.cg % PYCONV_QGEMM_KB == 0 and self.cg >= 16)
        cdef cnp.ndarray pad_row = self.pad_row
        q.pad_row = <const uint8_t *>cnp.PyArray_DATA(pad_row)
        macs = n * P * q.kp * q.npad * self.groups
        call.nthreads = threads_for(macs // 4, c.nthreads)
        # Positions per task: the A block and the int32 sums about L2-sized, and about four
        # tasks per thread.
        rows = min(393216 // q.kp, 524288 // (q.npad * 4))
        rows = max(6, min(198, rows // 6 * 6))
        if call.nthreads > 1:
            rows = max(6, min(rows, _round_up(
                (n * P * self.groups + 4 * call.nthreads - 1) // (4 * call.nthreads), 6)))
        q.rows = rows
        q.row_blocks = (P + rows - 1) // rows
        # (the A block holds the im2col rows, or the indirect path's rows * taps pointers:
        # fewer bytes, as cg >= 16)
        q.scratch_stride = 4 * slot_floats((_round_up(rows * q.kp, 64)
                                            + _round_up(rows * q.npad * 4, 64)
                                            + _round_up(rows * q.mg, 64)) // 4)
        if not channels_last:
            check_tensor_size((n, q.h * q.w, q.c))
        # The thread's reused workspace (a fresh large array costs a page fault per 4 KiB):
        # per-thread scratch, then the (pixels, channels) image unless x is NHWC already.
        call.scratch_bytes = q.scratch_stride * max(call.nthreads, 1)
        call.workspace_bytes = call.scratch_bytes + (0 if channels_last
                                                     else n * q.h * q.w * q.c)
        call.tasks = n * self.groups * q.row_blocks
        call.tiles = 0 if channels_last else n * ((q.h * q.w + 63) // 64)
        return call


cdef bint _bytes_of_shape(object a, tuple shape):
    """a is a uint8 C-contiguous ndarray of exactly this shape."""
    return (cnp.PyArray_Check(a) and cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_UINT8
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a) and a.shape == shape)


cdef enum:
    _GEMM = 0
    _DEPTHWISE = 1
    _DEPTHWISE_NHWC = 2


cdef class QConvCall:
    """:meth:`QConv2d.run` bound to one input shape (:meth:`QConv2d.bind`): calling it
    with a uint8 C-contiguous array of that shape (and the residual where it has an add,
    :meth:`with_add`) gives the output (a new array per call), anything else gives None
    (the caller then runs the general path)."""

    cdef QConv2d conv
    cdef _qconv q
    cdef readonly tuple x_shape, y_shape
    cdef object out_dtype
    cdef int mode, nthreads
    cdef bint empty, adds       # adds: called with the residual of a fused QLinearAdd
    cdef int64_t tasks, tiles, scratch_bytes, workspace_bytes

    def __call__(self, x, residual=None):
        if self.conv.integer:
            raise ValueError("QConvCall: an int32-output conv is called with .integer(x, "
                             "x_zero_point)")
        if not (_bytes_of_shape(x, self.x_shape) and (
                residual is None and not self.adds
                or residual is not None and self.adds and _bytes_of_shape(residual,
                                                                          self.y_shape))):
            return None
        return self._execute(x, residual)

    def integer(self, x, int x_zero_point):
        """The int32 sums ``conv(x - x_zero_point, w - w_zero_point)`` of an int32-output
        conv, ``x`` uint8 C-contiguous of the bound shape; None for any other ``x``."""
        if not self.conv.integer:
            raise ValueError("QConvCall.integer: the conv requantizes (call it)")
        if not 0 <= x_zero_point <= 255:
            raise InvalidArgument(f"quantized conv: x_zero_point {x_zero_point} is not a "
                                  f"uint8 value")
        if not _bytes_of_shape(x, self.x_shape):
            return None
        # int64 products, wrapped to int32 as the sums are
        cdef cnp.ndarray bias = (x_zero_point * self.conv.zero_point_sums).astype(np.int32)
        return self._execute(x, None, bias, x_zero_point)

    def with_add(self, float a_scale, int a_zero_point, float b_scale, int b_zero_point,
                 float c_scale, int c_zero_point, bint conv_is_a):
        """This call followed by a QLinearAdd of uint8 y and a residual of y's shape
        (``call(x, residual)``), y the add's first operand where ``conv_is_a``: each block
        of output rows gets the add (qlinear_add's arithmetic) while it is in cache.
        NHWC convolutions of one group with uint8 output only (ValueError otherwise)."""
        if self.mode != _GEMM or not self.q.channels_last or self.q.groups != 1 \
                or self.out_dtype != np.uint8:
            raise ValueError("QConvCall.with_add: an NHWC uint8 convolution of one group "
                             "only")
        cdef QConvCall call = QConvCall.__new__(QConvCall)
        call.conv, call.q, call.x_shape, call.y_shape = self.conv, self.q, self.x_shape, \
            self.y_shape
        call.out_dtype, call.mode, call.nthreads, call.empty = self.out_dtype, self.mode, \
            self.nthreads, self.empty
        call.tasks, call.tiles, call.scratch_bytes, call.workspace_bytes = \
            self.tasks, self.tiles, self.scratch_bytes, self.workspace_bytes
        call.adds = True
        _add_factors(a_scale, a_zero_point, b_scale, b_zero_point, c_scale, c_zero_point,
                     &call.q.add_ra, &call.q.add_rb, &call.q.add_fixed)
        call.q.conv_is_a = conv_is_a
        return call

    cdef object _execute(self, cnp.ndarray x, object residual=None,
                         cnp.ndarray bias=None, int x_zero_point=0):
        """The convolution of x (uint8, C-contiguous, of the bound shape), plus the bound
        add of ``residual`` (uint8, C-contiguous, of the output shape) where it has one;
        an int32-output conv with its per-call ``bias`` and ``x_zero_point``."""
        cdef cnp.ndarray y = np.empty(self.y_shape, self.out_dtype)
        if self.empty:
            return y
        cdef _qconv q = self.q      # a copy: concurrent runs of one call share nothing
        if bias is not None:
            q.bias = <const int32_t *>cnp.PyArray_DATA(bias)
            q.xz = x_zero_point
        if self.adds:
            q.residual = <const uint8_t *>cnp.PyArray_DATA(<cnp.ndarray>residual)
        q.x = <const uint8_t *>cnp.PyArray_DATA(x)
        q.y = <uint8_t *>cnp.PyArray_DATA(y)
        q.scratch = <uint8_t *>workspace_floats((self.workspace_bytes + 3) // 4 + 16)
        cdef int nthreads = self.nthreads
        cdef int64_t tasks = self.tasks, tiles = self.tiles
        q.x_hwc = q.x
        if self.mode == _DEPTHWISE_NHWC:
            with nogil:
                if nthreads <= 1:
                    _qconv_depthwise_nhwc(&q, 0, tasks, 0)
                else:
                    parallel_for(nthreads, tasks, 1, _qconv_depthwise_nhwc, &q)
        elif self.mode == _DEPTHWISE:
            with nogil:
                if nthreads <= 1:
                    _qconv_depthwise(&q, 0, tasks, 0)
                else:
                    parallel_for(nthreads, tasks, 1, _qconv_depthwise, &q)
        else:
            q.x_hwc = q.x if q.channels_last else q.scratch + self.scratch_bytes
            with nogil:
                if nthreads <= 1:
                    _to_hwc(&q, 0, tiles, 0)
                    _qconv_tasks(&q, 0, tasks, 0)
                else:
                    if tiles:       # blocks of _to_hwc
                        parallel_for(nthreads, tiles, grain_for(tiles, nthreads), _to_hwc,
                                     &q)
                    parallel_for(nthreads, tasks, 1, _qconv_tasks, &q)
        return y


def contiguous_bytes(x, context=None):
    """``x`` as a C-contiguous array. A 4-D 8-bit view that swaps channels first and
    channels last (a Transpose (0, 3, 1, 2) or (0, 2, 3, 1) of a C-contiguous array: the
    NCHW / NHWC twins of an integer chain) is copied by the 16 x 16 byte-tile transpose,
    NumPy's strided copy took several times as long; anything else as
    ``np.ascontiguousarray``."""
    if not cnp.PyArray_Check(x):
        return np.ascontiguousarray(x)
    cdef cnp.ndarray a = <cnp.ndarray>x
    if cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_NDIM(a) != 4 \
            or cnp.PyArray_ITEMSIZE(a) != 1:
        return np.ascontiguousarray(x)
    cdef cnp.npy_intp *d = cnp.PyArray_DIMS(a)
    cdef cnp.npy_intp *st = cnp.PyArray_STRIDES(a)
    cdef int64_t n = d[0], image = d[1] * d[2] * d[3], rows, cols, i
    if (st[0] == image or n == 1) and st[1] == 1 and st[3] == d[1] and st[2] == d[3] * d[1]:
        rows, cols = d[2] * d[3], d[1]      # NCHW view of NHWC bytes: (pixels, channels)
    elif (st[0] == image or n == 1) and st[2] == 1 and st[1] == d[2] and st[3] == d[1] * d[2]:
        rows, cols = d[3], d[1] * d[2]      # NHWC view of NCHW bytes: (channels, pixels)
    else:
        return np.ascontiguousarray(x)
    cdef cnp.ndarray y = np.empty((<object>x).shape, (<object>x).dtype)
    cdef exec_ctx c = context_of(context)
    cdef const pyconv_qgemm_kernel *k = pyconv_qgemm_kernel_for(c.kernel.isa)
    cdef const uint8_t *src = <const uint8_t *>cnp.PyArray_DATA(a)
    cdef uint8_t *dst = <uint8_t *>cnp.PyArray_DATA(y)
    with nogil:
        for i in range(n):
            k.transpose(rows, cols, src + i * image, cols, dst + i * image, rows)
    return y


# ---------------------------------------------------------------------------------------
# QLinearAdd of two same-shape 8-bit tensors, with onnxruntime's arithmetic (MLAS's AVX2
# kernel): c = b * (b_scale / c_scale) + fixed, then + a * (a_scale / c_scale), each a fused
# multiply-add rounded to float32 (exact in double: 8-bit x 24-bit products), rounded half
# to even, saturated; fixed = c_zp - (a_zp * ratio_a + b_zp * ratio_b) in float32.
cdef struct _qadd:
    const pyconv_qgemm_kernel *kernel
    const uint8_t *a
    const uint8_t *b
    uint8_t *c
    float ra, rb, fixed
    int is_signed


cdef void _add_factors(float a_scale, int a_zero_point, float b_scale, int b_zero_point,
                       float c_scale, int c_zero_point, float *ra, float *rb,
                       float *fixed) noexcept:
    """The float32 factors of the add kernels (see above), one home for their rounding."""
    ra[0] = a_scale / c_scale
    rb[0] = b_scale / c_scale
    cdef float za = <float>a_zero_point, zb = <float>b_zero_point
    fixed[0] = <float>c_zero_point - (ra[0] * za + rb[0] * zb)


cdef void _qadd_range(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef _qadd *t = <_qadd *>arg
    if t.is_signed:
        t.kernel.add_s8(hi - lo, <const int8_t *>t.a + lo, <const int8_t *>t.b + lo,
                        <int8_t *>t.c + lo, t.ra, t.rb, t.fixed, -128.0, 127.0)
    else:
        t.kernel.add_u8(hi - lo, t.a + lo, t.b + lo, t.c + lo, t.ra, t.rb, t.fixed, 0.0,
                        255.0)


def qlinear_add(a, float a_scale, int a_zero_point, b, float b_scale, int b_zero_point,
                float c_scale, int c_zero_point, context=None):
    """``com.microsoft.QLinearAdd`` of same-shape uint8 (or int8) ``a`` and ``b`` as
    onnxruntime computes it (see above); per-tensor scales and zero points."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
            and a.dtype == b.dtype and a.dtype in (np.uint8, np.int8)):
        raise InvalidArgument(f"quantized add: expected two 8-bit arrays of one shape and "
                              f"type, got {getattr(a, 'dtype', None)} "
                              f"{getattr(a, 'shape', None)} and {getattr(b, 'dtype', None)} "
                              f"{getattr(b, 'shape', None)}")
    cdef cnp.ndarray ac = np.ascontiguousarray(a), bc = np.ascontiguousarray(b)
    cdef cnp.ndarray out = np.empty(a.shape, a.dtype)
    cdef _qadd t
    t.a = <const uint8_t *>cnp.PyArray_DATA(ac)
    t.b = <const uint8_t *>cnp.PyArray_DATA(bc)
    t.c = <uint8_t *>cnp.PyArray_DATA(out)
    _add_factors(a_scale, a_zero_point, b_scale, b_zero_point, c_scale, c_zero_point,
                 &t.ra, &t.rb, &t.fixed)
    t.is_signed = a.dtype == np.int8
    cdef int64_t n = out.size
    cdef exec_ctx c = context_of(context)
    t.kernel = pyconv_qgemm_kernel_for(c.kernel.isa)
    cdef int nthreads = threads_for(n // 4, c.nthreads)
    with nogil:
        if nthreads <= 1:
            _qadd_range(&t, 0, n, 0)
        else:
            parallel_for(nthreads, n, _round_up(grain_for(n, nthreads), 64), _qadd_range, &t)
    return out


# ---------------------------------------------------------------------------------------
# The two ends of a quantized convolution run on the float kernels with exact integer sums
# (pyconv.ops.quant: depthwise layers, whose float kernel is faster than an integer one).
cdef struct _ends:
    const pyconv_qgemm_kernel *kernel
    const uint8_t *q
    float *f
    const float *mult
    int64_t plane, channels
    int32_t zp
    float lo, hi


cdef void _shift_blocks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef _ends *t = <_ends *>arg
    t.kernel.shift_to_float((hi - lo) * t.plane, t.q + lo * t.plane, t.zp, t.f + lo * t.plane)


cdef void _requant_planes(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef _ends *t = <_ends *>arg
    cdef int64_t p
    for p in range(lo, hi):
        t.kernel.requant_float(t.plane, t.f + p * t.plane, t.mult[p % t.channels], t.lo, t.hi,
                               t.zp, <uint8_t *>t.q + p * t.plane)


cdef _run_planes(_ends *t, int64_t planes, int requant, context):
    cdef exec_ctx c = context_of(context)
    t.kernel = pyconv_qgemm_kernel_for(c.kernel.isa)
    cdef int nthreads = threads_for(planes * t.plane // 4, c.nthreads)
    with nogil:
        if nthreads <= 1:
            (_requant_planes if requant else _shift_blocks)(t, 0, planes, 0)
        else:
            parallel_for(nthreads, planes, grain_for(planes, nthreads),
                         _requant_planes if requant else _shift_blocks, t)


def shift_to_float(x, int zero_point, context=None):
    """``x - zero_point`` as float32 (exact) of a uint8 NC... array."""
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim < 2:
        raise InvalidDType(f"shift_to_float: expected a uint8 array of rank >= 2, got "
                           f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    cdef cnp.ndarray xc = np.ascontiguousarray(x)
    cdef cnp.ndarray y = np.empty(x.shape, np.float32)
    cdef _ends t
    t.q = <const uint8_t *>cnp.PyArray_DATA(xc)
    t.f = <float *>cnp.PyArray_DATA(y)
    t.plane = x.size // (x.shape[0] * x.shape[1]) if x.size else 0
    t.zp = zero_point
    if x.size:
        _run_planes(&t, x.shape[0] * x.shape[1], 0, context)
    return y


def requantize_float(acc, multiplier, int zero_point, int qmin, int qmax, out_dtype=np.uint8,
                     context=None):
    """Float32 NC... sums that are exact integers (bias included) requantized per channel:
    ``saturate(round_half_even(acc * multiplier[c]) + zero_point)`` clamped to
    ``[qmin, qmax]``, as ``out_dtype`` (uint8 or int8)."""
    if not isinstance(acc, np.ndarray) or acc.dtype != np.float32 or acc.ndim < 2:
        raise InvalidDType(f"requantize_float: expected a float32 array of rank >= 2, got "
                           f"{getattr(acc, 'dtype', type(acc).__name__)} "
                           f"{getattr(acc, 'shape', '')}")
    cdef cnp.ndarray mult = np.ascontiguousarray(np.broadcast_to(
        np.asarray(multiplier, np.float32).reshape(-1), (acc.shape[1],)))
    cdef cnp.ndarray ac = np.ascontiguousarray(acc)
    cdef cnp.ndarray y = np.empty(acc.shape, np.uint8)
    cdef _ends t
    t.q = <const uint8_t *>cnp.PyArray_DATA(y)
    t.f = <float *>cnp.PyArray_DATA(ac)
    t.mult = <const float *>cnp.PyArray_DATA(mult)
    t.channels = acc.shape[1]
    t.plane = acc.size // (acc.shape[0] * acc.shape[1]) if acc.size else 0
    t.zp = zero_point
    t.lo, t.hi = qmin - zero_point, qmax - zero_point
    if acc.size:
        _run_planes(&t, acc.shape[0] * acc.shape[1], 1, context)
    return y.view(out_dtype)


# ---------------------------------------------------------------------------------------
# 8-bit max pooling over NHWC images: exact on the integers (max commutes with the
# monotonic dequantization), a vector max over the channels per tap.
cdef struct _qpool:
    pyconv_qgemm_maxpool_row_fn row
    const uint8_t *x
    uint8_t *y
    int64_t h, w, c, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw


cdef void _qpool_rows(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef _qpool *t = <_qpool *>arg
    cdef int64_t r
    for r in range(lo, hi):
        t.row(t.x + (r // t.oh) * t.h * t.w * t.c, t.h, t.w, t.c, r % t.oh, t.ow, t.kh,
              t.kw, t.sh, t.sw, t.ph, t.pw, t.dh, t.dw, t.y + r * t.ow * t.c)


def max_pool_nhwc(x, kernel_shape, strides, pads_begin, dilations, output_shape,
                  context=None):
    """2-D max pooling of ``x`` (n, h, w, c) uint8 or int8 -> (n, oh, ow, c); pads at the
    end are implied by ``output_shape``; windows that read no pixel give the type's lowest
    value."""
    if not isinstance(x, np.ndarray) or x.dtype not in (np.uint8, np.int8) or x.ndim != 4:
        raise InvalidDType(f"8-bit max pool: input must be a 4-D uint8 or int8 array, got "
                           f"{getattr(x, 'dtype', type(x).__name__)} "
                           f"{getattr(x, 'shape', '')}")
    if min(pads_begin) < 0 or min(strides) < 1 or min(dilations) < 1 \
            or min(kernel_shape) < 1 or min(output_shape) < 0:
        raise InvalidArgument(f"8-bit max pool: kernel {kernel_shape}, pads {pads_begin}, "
                              f"strides {strides}, dilations {dilations}, output "
                              f"{output_shape}: kernel, strides and dilations must be >= 1, "
                              f"pads >= 0")
    cdef cnp.ndarray xc = np.ascontiguousarray(x)
    cdef int64_t n = x.shape[0]
    check_tensor_size((n, output_shape[0], output_shape[1], x.shape[3]))
    cdef cnp.ndarray y = np.empty((n, output_shape[0], output_shape[1], x.shape[3]), x.dtype)
    cdef exec_ctx c = context_of(context)
    cdef const pyconv_qgemm_kernel *k = pyconv_qgemm_kernel_for(c.kernel.isa)
    cdef _qpool t
    t.row = k.maxpool_row_u8 if x.dtype == np.uint8 else k.maxpool_row_s8
    t.x = <const uint8_t *>cnp.PyArray_DATA(xc)
    t.y = <uint8_t *>cnp.PyArray_DATA(y)
    t.h, t.w, t.c = x.shape[1], x.shape[2], x.shape[3]
    t.oh, t.ow = output_shape
    t.kh, t.kw = kernel_shape
    t.sh, t.sw = strides
    t.ph, t.pw = pads_begin
    t.dh, t.dw = dilations
    cdef int64_t rows = n * t.oh
    if y.size == 0:
        return y
    cdef int nthreads = threads_for(rows * t.ow * t.c * t.kh * t.kw // 8, c.nthreads)
    with nogil:
        if nthreads <= 1:
            _qpool_rows(&t, 0, rows, 0)
        else:
            parallel_for(nthreads, rows, grain_for(rows, nthreads), _qpool_rows, &t)
    return y


def channel_sums(x, bint channels_last, context=None):
    """int32 sums over the spatial dims of 8-bit ``x`` (n, c, *spatial), or (n, *spatial,
    c) where ``channels_last``: (n, c). Exact below 2 ** 23 pixels per plane."""
    if not isinstance(x, np.ndarray) or x.dtype not in (np.uint8, np.int8) or x.ndim < 3:
        raise InvalidDType(f"channel sums: input must be a uint8 or int8 array of rank >= 3, "
                           f"got {getattr(x, 'dtype', type(x).__name__)} "
                           f"{getattr(x, 'shape', '')}")
    cdef cnp.ndarray xc = np.ascontiguousarray(x)
    cdef int64_t n = x.shape[0], c = x.shape[x.ndim - 1] if channels_last else x.shape[1]
    cdef int64_t plane = x.size // max(n * c, 1), i, j, k
    if plane >= 1 << 23:
        raise InvalidArgument(f"channel sums: {plane} pixels per plane, at most {1 << 23}")
    cdef cnp.ndarray out = np.zeros((n, c), np.int32)
    cdef int32_t *o = <int32_t *>cnp.PyArray_DATA(out)
    cdef const uint8_t *u = <const uint8_t *>cnp.PyArray_DATA(xc)
    cdef const int8_t *s8 = <const int8_t *>cnp.PyArray_DATA(xc)
    cdef int32_t acc
    cdef bint signed = x.dtype == np.int8
    with nogil:
        for i in range(n):
            if channels_last:
                for j in range(plane):
                    if signed:
                        for k in range(c):
                            o[i * c + k] += s8[(i * plane + j) * c + k]
                    else:
                        for k in range(c):
                            o[i * c + k] += u[(i * plane + j) * c + k]
            else:
                for k in range(c):
                    acc = 0
                    if signed:
                        for j in range(plane):
                            acc += s8[(i * c + k) * plane + j]
                    else:
                        for j in range(plane):
                            acc += u[(i * c + k) * plane + j]
                    o[i * c + k] = acc
    return out
