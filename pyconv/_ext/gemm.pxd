# C-level interface of the SGEMM engine, cimported by the convolution modules.
cimport numpy as cnp
from libc.stdint cimport int64_t

cdef extern from "sgemm.h" nogil:
    ctypedef struct pyconv_epilogue:
        const float *bias
        const float *residual
        int64_t ldr
        int act
        float act_a
        float act_b

    ctypedef void (*pyconv_sgemm_ukernel)(int64_t kc, const float *a, const float *b,
                                          float *c, int64_t ldc, float alpha,
                                          float beta) noexcept nogil
    ctypedef void (*pyconv_sgemm_ukernel_edge)(int64_t kc, const float *a, const float *b,
                                               float *c, int64_t ldc, float alpha, float beta,
                                               int64_t m, int64_t n) noexcept nogil
    ctypedef void (*pyconv_epilogue_fn)(float *c, int64_t ldc, int64_t m, int64_t n,
                                        const pyconv_epilogue *ep) noexcept nogil
    ctypedef void (*pyconv_sgemv_fn)(int64_t m, int64_t k, float alpha, const float *x,
                                     int64_t sxi, int64_t sxk, const float *v, int64_t sv,
                                     float beta, float *y, int64_t sy) noexcept nogil
    ctypedef double (*pyconv_fma_peak_fn)(int64_t iterations) noexcept nogil
    ctypedef void (*pyconv_channel_affine_fn)(const float *x, float *y, int64_t m, int64_t n,
                                              const float *scale, const float *shift,
                                              int64_t c0, int64_t channels, int act, float a,
                                              float b) noexcept nogil
    ctypedef void (*pyconv_shifted_ukernel)(int64_t k, int64_t kc, int64_t mpad, int64_t ir,
                                            const float *a, const float *src,
                                            const int64_t *off, const int64_t *voff,
                                            float *c, int64_t ldc, const int64_t *coff,
                                            int64_t m, const pyconv_epilogue *ep) noexcept nogil

    ctypedef void (*pyconv_phase_split_fn)(const float *x, int64_t xs, int64_t channels,
                                           int64_t h, int64_t w, int64_t sh, int64_t sw,
                                           int64_t ph, int64_t pw, int64_t wq, int64_t hq,
                                           int64_t plane, int64_t i0, int64_t i1,
                                           float *dst) noexcept nogil

    ctypedef struct pyconv_run:
        int64_t src
        int64_t n
        int64_t dst
    ctypedef void (*pyconv_pack_runs_fn)(const float *src, const int64_t *off, int64_t kc,
                                         const pyconv_run *runs, int64_t nruns, int64_t nr,
                                         float *dst) noexcept nogil

    ctypedef void (*pyconv_shifted_edge_ukernel)(int64_t k, int64_t kc, int64_t mpad,
                                                 int64_t ir, const float *a, const float *src,
                                                 const int64_t *off, const int64_t *voff,
                                                 float *c, int64_t ldc, const int64_t *coff,
                                                 int64_t m, int64_t n,
                                                 const pyconv_epilogue *ep) noexcept nogil

    ctypedef void (*pyconv_channel_tile_fn)(int64_t k, const float *w, int64_t m,
                                            const float *src, const int64_t *off, int64_t n,
                                            float *y, int64_t ldy, float *tile,
                                            const pyconv_epilogue *ep) noexcept nogil

    ctypedef void (*pyconv_sgemm_ukernel_ep)(int64_t kc, const float *a, const float *b,
                                             float *c, int64_t ldc, float beta,
                                             const pyconv_epilogue *ep) noexcept nogil
    ctypedef struct pyconv_sgemm_kernel:
        const char *isa
        const char *ukernel_name
        int mr
        int nr
        int vl
        pyconv_sgemm_ukernel ukernel
        pyconv_sgemm_ukernel_edge ukernel_edge
        pyconv_epilogue_fn epilogue
        pyconv_sgemv_fn gemv
        pyconv_fma_peak_fn fma_peak
        pyconv_shifted_ukernel shifted
        pyconv_shifted_edge_ukernel shifted_edge
        pyconv_phase_split_fn phase_split
        pyconv_pack_runs_fn pack_runs
        pyconv_sgemm_ukernel_ep ukernel_ep
        pyconv_channel_affine_fn channel_affine
        pyconv_channel_tile_fn channel_tile
        int channel_cols

    # The fused activations, by name (values from sgemm.h; pyconv._activations is the
    # Python registry over them).
    cpdef enum pyconv_act:
        PYCONV_ACT_NONE
        PYCONV_ACT_RELU
        PYCONV_ACT_CLIP
        PYCONV_ACT_LEAKY_RELU
        PYCONV_ACT_SIGMOID
        PYCONV_ACT_HARDSIGMOID
        PYCONV_ACT_HARDSWISH
        PYCONV_ACT_TANH
        PYCONV_ACT_SILU
        PYCONV_ACT_ELU
        PYCONV_ACT_GELU
        PYCONV_ACT_GELU_TANH
        PYCONV_ACT_MISH
        PYCONV_ACT_SOFTPLUS
        PYCONV_ACT_SELU
        PYCONV_ACT_COUNT

    enum:
        PYCONV_MAX_PHASE_STRIDE
        PYCONV_MAX_TILE_VECTORS
        PYCONV_MAX_NR

cdef extern from "parallel.h" nogil:
    unsigned pyconv_fp_flush_denormals()
    void pyconv_fp_restore(unsigned saved)
    ctypedef void (*pyconv_range_fn)(void *ctx, int64_t begin, int64_t end,
                                     int slot) noexcept nogil
    void pyconv_parallel_for(int nthreads, int64_t n, int64_t grain, pyconv_range_fn fn,
                             void *ctx)
    const char *pyconv_parallel_backend()
    int pyconv_parallel_workers()

# An execution context: what a plan runs with, captured when it is made and passed down
# to every kernel call (nothing on the run path reads process-wide settings).
cdef struct exec_ctx:
    int nthreads
    const pyconv_sgemm_kernel *kernel
    int conv_algorithm          # 0 auto, else forced (pyconv._ext.conv.set_algorithm)

cdef class ExecutionContext:
    cdef exec_ctx c

# Packs columns [n0, n0 + nc) of rows [k0, k0 + kc) of the B operand into NR-wide panels
# (dst[p * kc * nr + k * nr + j]), zero-filling the last panel's missing columns.
ctypedef void (*pack_b_fn)(const void *ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                           int64_t nr, float *dst) noexcept nogil

# A matrix packed once into MR-row panels, KC-deep blocks (the weights of a layer).
cdef struct packed_a:
    const float *data
    int64_t m
    int64_t k
    int64_t kc
    const pyconv_sgemm_kernel *kernel

# A row-major or strided matrix as the B operand (strides in floats).
cdef struct strided_b:
    const float *data
    int64_t sk
    int64_t sn

cdef class PackedMatrix:
    cdef packed_a view
    cdef object buffer            # NumPy array that owns view.data
    cdef readonly tuple shape

cdef exec_ctx context_of(object context) except *
# fn over [0, n) in tasks of `grain` items on the caller and up to nthreads - 1 workers
# (src/runtime/parallel.h); slot indexes per-thread scratch.
cdef void parallel_for(int nthreads, int64_t n, int64_t grain, pyconv_range_fn fn,
                       void *ctx) noexcept nogil
# Denormals as zero on the calling thread (and its parallel loops' workers); the
# previous control word back (src/runtime/parallel.h).
cdef unsigned fp_flush_denormals() noexcept nogil
cdef void fp_restore(unsigned saved) noexcept nogil
cdef int64_t grain_for(int64_t n, int nthreads) noexcept nogil
cdef int threads_for(int64_t work, int nthreads) noexcept nogil
cdef int64_t l2_bytes() noexcept nogil
cdef int64_t slot_floats(int64_t used) noexcept nogil
cdef void pack_b_strided(const void *ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                         int64_t nr, float *dst) noexcept nogil
cdef int64_t sgemm_nc(const packed_a *a, int64_t n) noexcept nogil
# One thread's part of C: rows [m0, m1) (m0 a multiple of MR), columns [n0, n1).
# bbuf holds KC x nc floats, tile MR x NR floats.
cdef void sgemm_block(const packed_a *a, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                      int64_t nc, pack_b_fn pack_b, const void *bctx, float *c, int64_t ldc,
                      float alpha, float beta, const pyconv_epilogue *ep, float *bbuf,
                      float *tile) noexcept nogil
cdef int64_t sgemm_workspace_floats(const packed_a *a, int64_t n, int nthreads) noexcept nogil


cdef inline int64_t partial_panel_width(int64_t cols, int64_t nr) noexcept nogil:
    """Columns of a packed B panel holding cols < nr columns that the kernels read: the
    edge kernels compute whole 16-float vectors (fewer for AVX2 / generic, whose panels
    are 16 wide), so the zero fill stops there: 1 column of a 48-wide AVX-512 panel
    (7x7 maps) zeroed 47 floats per k step."""
    return min(nr, (cols + 15) // 16 * 16)
# How one (a.m x n) product runs: threads, B block, thread grid, workspace; decided once.
cdef struct sgemm_plan:
    int64_t n, mpanels, npanels, kc, nc, stride, tm, tn, workspace_floats
    int nthreads

# What packing one value of B costs, in multiply-add rows (sgemm_plan_for's split):
# a copy from a strided matrix or image, or implicit im2col's bounds and zero fill.
cdef enum:
    B_PACK_COPY = 10
    B_PACK_IM2COL = 32

cdef int64_t sgemm_row_blocks(int64_t m, int64_t n, int64_t k, const pyconv_sgemm_kernel *kern,
                              int nthreads, int64_t b_pack_cost) noexcept nogil
cdef void sgemm_plan_for(const packed_a *a, int64_t n, int nthreads, int64_t b_pack_cost,
                         sgemm_plan *p) noexcept nogil
cdef void sgemm_planned(const packed_a *a, const sgemm_plan *p, pack_b_fn pack_b,
                        const void *bctx, float *c, int64_t ldc, float alpha, float beta,
                        const pyconv_epilogue *ep, float *workspace) noexcept nogil
cdef void sgemm_packed(const packed_a *a, int64_t n, pack_b_fn pack_b, int64_t b_pack_cost,
                       const void *bctx, float *c, int64_t ldc, float alpha, float beta,
                       const pyconv_epilogue *ep, int nthreads,
                       float *workspace) noexcept nogil
cdef float *workspace_floats(int64_t count) except NULL
# A new C-contiguous array whose data starts on a cache line (see empty_aligned).
cdef object empty_lines(int ndim, const cnp.npy_intp *dims, int typenum)
cdef object empty_of(tuple shape, int typenum=*)
cdef int activation_code(object activation) except -1
# float32, aligned, C-contiguous, of exactly this shape (a bound call's planned input).
cdef bint planned_array(object a, int ndim, const cnp.npy_intp *dims) noexcept
# A bound call's output buffer: None, or a writeable planned array of the output shape
# (ValueError naming the owner, e.g. "ConvKernel.bind", otherwise).
cdef int check_bound_out(str owner, object out, int ndim, const cnp.npy_intp *dims,
                         object output_shape) except -1
# The byte ranges of two C-contiguous ndarrays intersect.
cdef bint arrays_overlap(object a, object b) noexcept
