# The packed SGEMM engine: BLIS-style blocking and OpenMP partitioning around the SIMD
# micro-kernels of src/kernels, chosen at run time.
#
# Loop nest for one thread's block of C (rows m0:m1, columns n0:n1):
#   for jc in NC blocks of columns:        B block (KC x NC) packed here, lives in L2
#     for pc in KC blocks of the k range:  A was packed once into MR x KC panels (L1)
#       for ir in MR panels:               one A panel stays in L1 ...
#         for jr in NR panels:             ... while B panels stream from L2
#           micro-kernel (MR x NR tile in registers), epilogue on the last pc block
import math
import os
import threading

import numpy as np

cimport cython
cimport numpy as cnp
from libc.stdint cimport int64_t, uintptr_t
from libc.string cimport memcpy, memset

from pyconv._arrays import as_float32, check_out
from pyconv.arithmetic import MAX_TENSOR_ELEMENTS as _MAX_TENSOR_ELEMENTS, check_tensor_size
from pyconv.errors import InvalidArgument, InvalidDType, ShapeError, UnsupportedISA

cnp.import_array()

cdef extern from "pack_transpose.h" nogil:
    void pyconv_transpose_rows(const float *src, int64_t ss, int64_t k, float *dst, int64_t ld,
                               int64_t rows)

cdef extern from "sgemm.h" nogil:
    int pyconv_cpu_has_avx2_fma()
    int pyconv_cpu_has_avx512f()
    const pyconv_sgemm_kernel *pyconv_sgemm_kernel_for(const char *isa)
    const pyconv_sgemm_kernel *pyconv_sgemm_kernel_best()
    int64_t pyconv_cache_size(int level)

ISAS = ("avx512", "avx2", "generic")
# The C enum by name: PYCONV_ACT_LEAKY_RELU is "leaky_relu" (see gemm.pxd).
ACTIVATIONS = {name[len("PYCONV_ACT_"):].lower(): int(code)
               for name, code in pyconv_act.__members__.items() if code != PYCONV_ACT_COUNT}

cdef enum:
    # K-block depth: an MR x KC A panel (8 KiB for 8 x 256 floats) stays in L1.
    KC_DEFAULT = 256
    # Up to this many columns (or rows) a GEMM tile would be mostly padding: use GEMV.
    GEMV_MAX_N = 1
    # Up to this many input rows a linear layer runs as matrix-vector products.
    _GEMV_MAX_ROWS = 1
    # Work units per thread below which fewer threads are used (see threads_for): 1 << 17
    # kept MobileNets' 86K-multiply-add depthwise convs on one thread, 4-8% slower at 2
    # threads than 1 << 15 or 1 << 13 (their outputs then written by one core, read by
    # two); 1 << 20 was 12-25% slower.
    WORK_PER_THREAD = 1 << 15
    # Tiles per thread of a GEMM's thread grid (see _thread_grid).
    TASKS_PER_THREAD = 4
    # Grains per thread of a parallel loop (see grain_for); the pool claims several at
    # a time while a thread's range is long.
    GRAINS_PER_THREAD = 16

# Process defaults, read only when an execution context is made (a session, a layer
# plan, a functional call); the kernels read their context, never these.
cdef const pyconv_sgemm_kernel *_kernel = pyconv_sgemm_kernel_best()
cdef int _num_threads = 1
cdef int _conv_algorithm = 0
cdef int64_t _l2_bytes = pyconv_cache_size(2) or 512 * 1024
cdef int _threaded = pyconv_parallel_backend() != b"serial"


def parallel_backend():
    """How the kernels run in parallel: 'pool' (pyconv's thread pool, the default build),
    'openmp' (built with PYCONV_THREADING=openmp) or 'serial'."""
    return pyconv_parallel_backend().decode()


def pool_workers():
    """Worker threads the pool has started so far (they start on first use)."""
    return pyconv_parallel_workers()


def supported_isas():
    """The ISA paths this CPU can run, best first."""
    return tuple(name for name in ISAS if pyconv_sgemm_kernel_for(name.encode()) != NULL)


cdef const pyconv_sgemm_kernel *_kernel_named(name) except NULL:
    if name is None or name == "auto":
        return pyconv_sgemm_kernel_best()
    if not isinstance(name, str) or name not in ISAS:
        raise InvalidArgument(f"unknown ISA {name!r}; expected one of {ISAS} or 'auto'")
    cdef const pyconv_sgemm_kernel *k = pyconv_sgemm_kernel_for(name.encode())
    if k == NULL:
        raise UnsupportedISA(
            f"ISA {name!r} was requested but this CPU (or build) cannot run it; "
            f"supported here: {', '.join(supported_isas())}")
    return k


def set_isa(name):
    """Select the default micro-kernel path: 'avx512', 'avx2', 'generic' or 'auto' (best
    available). Plans and sessions made afterwards use it; existing ones keep theirs."""
    global _kernel
    _kernel = _kernel_named(name)
    return get_isa()


def get_isa():
    """Name of the default micro-kernel path."""
    return _kernel.isa.decode()


def kernel_info():
    """Name, register tile and blocking of the default micro-kernel."""
    return {"isa": _kernel.isa.decode(), "ukernel": _kernel.ukernel_name.decode(),
            "mr": _kernel.mr, "nr": _kernel.nr, "kc": KC_DEFAULT,
            "nc": _nc_for(_kernel.nr, KC_DEFAULT), "l1_bytes": pyconv_cache_size(1),
            "l2_bytes": pyconv_cache_size(2), "l3_bytes": pyconv_cache_size(3)}


def available_cores():
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def max_threads():
    """The largest thread count accepted: 4x the cores (at least 8), at most 256.
    More threads than that only oversubscribe the machine."""
    return min(256, max(8, 4 * available_cores()))


def default_num_threads():
    """OMP_NUM_THREADS when set (its first level, capped at max_threads()), else the
    cores this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n >= 1:
            return min(n, max_threads())
    return available_cores()


def check_num_threads(n, what="num_threads"):
    """n as an int in [1, max_threads()], else InvalidArgument naming `what`."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= max_threads():
        raise InvalidArgument(f"{what}: expected an integer from 1 to {max_threads()} "
                              f"(4x the {available_cores()} cores here), got {n!r}")
    return int(n)


cdef int _usable_threads(n, what) except 0:
    """A checked thread count, or 1 in a serial build (where the count is still checked)."""
    n = check_num_threads(n, what)
    return n if _threaded else 1


def set_num_threads(n):
    """Set the default number of threads: plans and sessions made afterwards use it."""
    global _num_threads
    _num_threads = _usable_threads(n, "set_num_threads")


def get_num_threads():
    """The default number of threads of new plans and sessions."""
    return _num_threads


def set_default_conv_algorithm(int code):
    """Used by pyconv._ext.conv.set_algorithm (the default of new contexts)."""
    global _conv_algorithm
    _conv_algorithm = code


def get_default_conv_algorithm():
    return _conv_algorithm


cdef class ExecutionContext:
    """What a plan runs with, fixed when it is made: thread count, micro-kernel table
    (ISA) and dense-convolution algorithm.

    ``ExecutionContext()`` snapshots the process defaults (``set_num_threads``,
    ``set_isa``); arguments override them. Sessions and layer plans keep theirs, so
    changing a default, or running plans with other contexts from other threads, never
    affects them.
    """

    def __init__(self, num_threads=None, isa=None):
        self.c.nthreads = (_num_threads if num_threads is None
                           else _usable_threads(num_threads, "num_threads"))
        self.c.kernel = _kernel if isa is None else _kernel_named(isa)
        self.c.conv_algorithm = _conv_algorithm

    @property
    def num_threads(self):
        return self.c.nthreads

    @property
    def isa(self):
        return self.c.kernel.isa.decode()

    def __repr__(self):
        return f"ExecutionContext(num_threads={self.c.nthreads}, isa={self.isa!r})"

    def __eq__(self, other):
        return (isinstance(other, ExecutionContext)
                and self.c.nthreads == (<ExecutionContext>other).c.nthreads
                and self.c.kernel == (<ExecutionContext>other).c.kernel
                and self.c.conv_algorithm == (<ExecutionContext>other).c.conv_algorithm)

    def __hash__(self):
        # the table's address, as __eq__ compares it (no ISA string built: contexts key
        # the functional plan caches, once per call)
        return hash((self.c.nthreads, <uintptr_t>self.c.kernel, self.c.conv_algorithm))


cdef exec_ctx context_of(object context) except *:
    """The C context of an ExecutionContext, or of the process defaults for None."""
    cdef exec_ctx c
    if context is None:
        c.nthreads = _num_threads
        c.kernel = _kernel
        c.conv_algorithm = _conv_algorithm
        return c
    if not isinstance(context, ExecutionContext):
        raise InvalidArgument(f"context: expected a pyconv ExecutionContext or None, got "
                              f"{type(context).__name__}")
    return (<ExecutionContext>context).c


cdef void parallel_for(int nthreads, int64_t n, int64_t grain, pyconv_range_fn fn,
                       void *ctx) noexcept nogil:
    pyconv_parallel_for(nthreads, n, grain, fn, ctx)


cdef unsigned fp_flush_denormals() noexcept nogil:
    return pyconv_fp_flush_denormals()


cdef void fp_restore(unsigned saved) noexcept nogil:
    pyconv_fp_restore(saved)


cdef int64_t grain_for(int64_t n, int nthreads) noexcept nogil:
    """Items per grain so that each thread's range holds about GRAINS_PER_THREAD: the
    pool claims a quarter of a range's grains left at a time, down to single grains at its
    end, so threads finish within about a grain of each other and a late thread's share
    is picked up by the others, in few claims (one atomic operation each)."""
    cdef int64_t tasks = <int64_t>nthreads * GRAINS_PER_THREAD
    return max(<int64_t>1, (n + tasks - 1) // tasks)


# ---------------------------------------------------------------------------------------
cdef object empty_lines(int ndim, const cnp.npy_intp *dims, int typenum):
    """A new C-contiguous array of typenum whose data starts on a 64-byte cache line (its
    memory held by a byte array one line longer). NumPy's buffers start 16 bytes into a
    line (malloc's alignment); threads writing neighbouring column ranges of every row
    then share a line at each row's boundary: a 32 -> 64 1x1 conv on 16x16 split by
    columns over 2 threads ran 16.4 us into such an output, 10.9 into an aligned one."""
    cdef cnp.npy_intp nbytes = cnp.PyArray_DescrFromType(typenum).itemsize, i
    for i in range(ndim):
        nbytes *= dims[i]
    cdef cnp.npy_intp raw_len = nbytes + 64
    cdef cnp.ndarray raw = cnp.PyArray_EMPTY(1, &raw_len, cnp.NPY_UINT8, 0)
    cdef uintptr_t data = (<uintptr_t>cnp.PyArray_DATA(raw) + 63) & ~(<uintptr_t>63)
    cdef cnp.ndarray arr = cnp.PyArray_SimpleNewFromData(ndim, <cnp.npy_intp *>dims, typenum,
                                                         <void *>data)
    cnp.set_array_base(arr, raw)
    return arr


cdef object empty_of(tuple shape, int typenum=cnp.NPY_FLOAT32):
    """empty_lines for a shape already checked (a plan's output, an input's)."""
    cdef cnp.npy_intp dims[32]
    cdef Py_ssize_t i, n = len(shape)
    if n > 32:
        raise InvalidArgument(f"empty_aligned: rank {n} exceeds 32")
    for i in range(n):
        dims[i] = shape[i]
    return empty_lines(<int>n, dims, typenum)


def empty_aligned(shape, dtype=np.float32, check=True):
    """A new C-contiguous array (like ``np.empty``) whose data starts on a 64-byte cache
    line, as the parallel kernels write their outputs best. The size is checked first
    (``check_tensor_size``: some microseconds) unless the caller has (check=False)."""
    dt = np.dtype(dtype)
    shape = check_tensor_size(shape, itemsize=dt.itemsize) if check else tuple(shape)
    return empty_of(shape, dt.num)


# Workspaces: 64-byte aligned, one per Python thread, grown on demand and reused.
_tls = threading.local()


cdef float *workspace_floats(int64_t count) except NULL:
    """An aligned scratch buffer of at least `count` floats, private to this Python thread.

    Valid until the next call from the same thread."""
    buf = getattr(_tls, "buf", None)
    cdef int64_t nbytes = count * 4 + 64
    if buf is None or buf.nbytes < nbytes:
        buf = np.empty(max(nbytes, 1 << 16), dtype=np.uint8)
        _tls.buf = buf
    # PyArray_DATA, not buf.ctypes.data: that builds a ctypes object, microseconds a call.
    cdef uintptr_t addr = <uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>buf)
    return <float *>((addr + 63) & ~(<uintptr_t>63))


cdef int64_t l2_bytes() noexcept nogil:
    """A core's L2 in bytes (512 KiB where the system does not say)."""
    return _l2_bytes


cdef int threads_for(int64_t work, int nthreads) noexcept nogil:
    """Threads worth using for `work` units (multiply-adds or floats moved): at most
    nthreads, at least 1. Below WORK_PER_THREAD units per thread a parallel loop's hand-off
    costs more than it saves."""
    cdef int64_t useful = work // WORK_PER_THREAD
    if useful < 1:
        return 1
    return <int>min(<int64_t>nthreads, useful)


cdef inline int64_t _round_up(int64_t x, int64_t m) noexcept nogil:
    return (x + m - 1) // m * m


cdef int64_t slot_floats(int64_t used) noexcept nogil:
    """The stride of per-thread scratch slots (slot * stride floats into one workspace) of
    `used` floats: whole 128-byte line pairs and 1 KiB between the slots' used parts, out
    of the prefetchers' reach (the adjacent line's pair, the streamer's next lines), so
    that a thread running through its slot never pulls lines its neighbour is writing.
    Slots of 112 floats (a 77-wide row's) put two threads' rows in one line pair:
    Inception's 3x3 / 2 max pool on 77x77 maps ran slower on 2 threads than on 1 (86
    against 68 us; 34 us with the gap). Depthwise 3x3 on 384 channels of 12x12, 448-float
    slots: 29.9 us at 2 threads against 32.6 at 1, 18.8 with the gap (the second thread
    ran its channels 3x slower)."""
    return _round_up(used, 32) + 256


cdef int64_t sgemm_nc(const packed_a *a, int64_t n) noexcept nogil:
    """Columns per packed B block for this A (what sgemm_block's nc argument expects)."""
    cdef int64_t kc = min(a.kc, a.k) if a.k > 0 else 1
    return min(_nc_for(a.kernel.nr, kc), _round_up(n, a.kernel.nr))


cdef inline int64_t _nc_for(int64_t nr, int64_t kc) noexcept nogil:
    # A KC x NC packed B block takes about half of L2, leaving room for A panels and C.
    cdef int64_t nc = (_l2_bytes // 2) // (kc * 4) // nr * nr
    return nr if nc < nr else nc


# ---------------------------------------------------------------------------------------
# Packing.

cdef void _pack_a_panel(const float *src, int64_t sm, int64_t sk, int64_t m, int64_t rows,
                        int64_t kcb, int64_t mr, float *dst) noexcept nogil:
    """Rows [0, rows) of src (rows <= mr) into dst[k * mr + i], zero rows up to mr."""
    cdef int64_t i, kk
    if rows < mr:
        memset(dst, 0, kcb * mr * sizeof(float))
    if sk == 1:
        # Rows contiguous in k (a row-major A: the batched products pack it on every
        # call, where an element-wise gather cost half as much as the micro-kernel).
        pyconv_transpose_rows(src, sm, kcb, dst, mr, rows)
        return
    # k outer: MR read streams advance together and the writes are contiguous.
    for kk in range(kcb):
        for i in range(rows):
            dst[kk * mr + i] = src[i * sm + kk * sk]


cdef struct _pack_a_job:
    const float *src
    int64_t sm, sk, m, k, kc, mr, npanels
    float *dst


cdef void _pack_a_tasks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Panels lo..hi of the (k block, M panel) sequence."""
    cdef const _pack_a_job *j = <const _pack_a_job *>arg
    cdef int64_t mpad = j.npanels * j.mr, t, p, b, k0, kcb, rows
    for t in range(lo, hi):
        b = t // j.npanels
        p = t - b * j.npanels
        k0 = b * j.kc
        kcb = min(j.kc, j.k - k0)
        rows = min(j.mr, j.m - p * j.mr)
        _pack_a_panel(j.src + p * j.mr * j.sm + k0 * j.sk, j.sm, j.sk, j.m, rows, kcb, j.mr,
                      j.dst + k0 * mpad + p * j.mr * kcb)


cdef void _pack_a(const float *src, int64_t sm, int64_t sk, int64_t m, int64_t k,
                  int64_t kc, int64_t mr, float *dst, int nthreads) noexcept nogil:
    """Packs an m x k matrix (strides sm, sk) into KC-deep blocks of MR-row panels."""
    cdef _pack_a_job j = _pack_a_job(src=src, sm=sm, sk=sk, m=m, k=k, kc=kc, mr=mr,
                                     npanels=(m + mr - 1) // mr, dst=dst)
    cdef int64_t tasks = j.npanels * ((k + kc - 1) // kc)
    nthreads = threads_for(m * k, nthreads)
    parallel_for(nthreads, tasks, grain_for(tasks, nthreads), _pack_a_tasks, &j)


cdef void pack_b_strided(const void *ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                          int64_t nr, float *dst) noexcept nogil:
    cdef const strided_b *b = <const strided_b *>ctx
    cdef int64_t p, jr, j, kk, cols, width
    cdef const float *src
    cdef float *out
    cdef float *row
    for p in range((nc + nr - 1) // nr):
        jr = p * nr
        cols = min(nr, nc - jr)
        out = dst + jr * kc
        src = b.data + k0 * b.sk + (n0 + jr) * b.sn
        width = partial_panel_width(cols, nr) if cols < nr else nr
        if width > cols:                # a partial panel's zeros, as far as read
            for kk in range(kc):
                row = out + kk * nr
                for j in range(cols, width):
                    row[j] = 0.0
        if b.sn == 1:
            for kk in range(kc):
                row = out + kk * nr
                if cols >= 8:
                    memcpy(row, src + kk * b.sk, cols * sizeof(float))
                else:                   # a few columns: no library call per k step
                    for j in range(cols):
                        row[j] = src[kk * b.sk + j]
        elif b.sk == 1:         # columns contiguous in k: a transposed B (Q @ K.T, X.T)
            pyconv_transpose_rows(src, b.sn, kc, out, nr, cols)
        else:
            for j in range(cols):
                for kk in range(kc):
                    out[kk * nr + j] = src[kk * b.sk + j * b.sn]


cdef inline int64_t _packed_a_floats(const pyconv_sgemm_kernel *kern, int64_t m,
                                     int64_t k) noexcept nogil:
    return _round_up(m, kern.mr) * k


cdef packed_a _pack_into(object a, const pyconv_sgemm_kernel *kern, float *dst,
                         int nthreads):
    """Packs the float32 matrix `a` for `kern` into dst (_packed_a_floats floats)."""
    cdef packed_a view
    cdef const float[:, :] av = a
    view.data = dst
    view.m = av.shape[0]
    view.k = av.shape[1]
    view.kc = KC_DEFAULT
    view.kernel = kern
    if view.m > 0 and view.k > 0:
        with nogil:
            _pack_a(&av[0, 0], av.strides[0] // 4, av.strides[1] // 4, view.m, view.k,
                    view.kc, kern.mr, dst, nthreads)
    return view


cdef class PackedMatrix:
    """A float32 matrix packed once into micro-kernel panels, reused by many products.

    Holds the left operand (e.g. convolution weights, shape (M, K)) in the layout of the
    micro-kernel of ``context`` (an :class:`ExecutionContext`; None: the defaults).
    """

    def __init__(self, a, context=None):
        a = _as_float32_2d(a, "a")
        cdef exec_ctx ctx = context_of(context)
        cdef int64_t size = _packed_a_floats(ctx.kernel, a.shape[0], a.shape[1])
        self.buffer = empty_aligned((size,))
        self.view = _pack_into(a, ctx.kernel,
                               <float *>cnp.PyArray_DATA(<cnp.ndarray>self.buffer),
                               ctx.nthreads)
        self.shape = a.shape

    @property
    def isa(self):
        """The ISA path this matrix was packed for."""
        return self.view.kernel.isa.decode()

    def __repr__(self):
        return f"PackedMatrix(shape={self.shape}, isa={self.isa!r})"


# ---------------------------------------------------------------------------------------
# The driver.

cdef inline int64_t _split(int64_t total, int64_t parts, int64_t idx) noexcept nogil:
    """Start of part idx when [0, total) is cut into `parts` near-equal parts."""
    return total * idx // parts


# A column split costs each row of C about this many multiply-adds where two threads' tiles
# meet (the cache lines about the boundary travel between the cores): measured on 1x1
# convs with K = 32 (192 rows x 400 columns split in two: 6 us slower than split by rows).
DEF COLUMN_SPLIT_ROW_MACS = 3200
# What a tile's reads cost in a model, in multiply-adds per float per unit of k: its rows
# of A (the weights, streamed in order from beyond L2: each layer's are used once a run)
# and its columns of B (the layer's input, which the previous layer's threads wrote: each
# row block reads the other core's share of it again). Alone, with both hot, a 1x1 conv
# splits best as the multiply-adds say; in MobileNetV4 its 1x1 convs on 20x20 and 10x10
# maps ran 20-40% slower at 2 threads than alone, split by rows (64 x 400 x 96: 31.7 us,
# 16.6 alone; 23.5 split by columns). Fitted on 54 models at 2 threads.
DEF READ_A_MACS = 8
DEF READ_B_MACS = 64


cdef void _thread_grid(int64_t mpanels, int64_t n, int64_t k, int64_t mr, int64_t nr,
                       int nthreads, int64_t max_tiles, int64_t pack_cost, int64_t *tm,
                       int64_t *tn) noexcept nogil:
    """Splits the (M panels x N panels) tile grid of an (mpanels * mr) x n x k product
    into tm x tn tiles (at most max_tiles) for nthreads threads that take tiles one at a
    time. Costs are in multiply-adds per unit of k.

    Every tile packs the B panels of its columns itself, pack_cost multiply-add rows per
    packed value: splitting M makes each row block pack the same B again. Splitting N
    costs every row COLUMN_SPLIT_ROW_MACS per boundary. Reading a float of A or B costs
    READ_A_MACS / READ_B_MACS (cache lines coming from the other core or beyond L2).
    Columns count in 16-float vectors (the edge kernel computes no more), so a last panel
    of 1 column is a small tile. The time is the larger of the largest tile and the
    busiest thread's turns (3 equal tiles on 2 threads take 2 tiles' time); of the splits
    that minimise it, the one with fewest tiles (measured: more tiles than threads only
    added boundaries and repacking)."""
    cdef int64_t npanels = (n + nr - 1) // nr, a, b, j, cols, widest, rows, total, cost
    cdef int64_t best = -1
    cdef int64_t boundary = COLUMN_SPLIT_ROW_MACS // max(k, <int64_t>1)
    tm[0] = 1
    tn[0] = 1
    for b in range(1, min(npanels, max_tiles) + 1):
        widest = 0
        for j in range(b):
            cols = min(_split(npanels, b, j + 1) * nr, n) - _split(npanels, b, j) * nr
            widest = max(widest, _round_up(cols, 16))
        for a in range(1, min(mpanels, max_tiles // b) + 1):
            total = (_round_up(n, 16) * (mpanels * mr + a * pack_cost)
                     + (b - 1) * mpanels * mr * boundary
                     + b * mpanels * mr * READ_A_MACS + a * _round_up(n, 16) * READ_B_MACS)
            rows = (mpanels + a - 1) // a * mr          # the tallest tile's rows
            # near-equal tiles taken in turns: the busiest thread runs ceil(T/threads)
            cost = max(widest * (rows + pack_cost) + (rows * boundary if b > 1 else 0)
                       + rows * READ_A_MACS + widest * READ_B_MACS,
                       (a * b + nthreads - 1) // nthreads * total // (a * b))
            if best < 0 or cost < best:
                best = cost
                tm[0] = a
                tn[0] = b


cdef int64_t sgemm_row_blocks(int64_t m, int64_t n, int64_t k, const pyconv_sgemm_kernel *kern,
                              int nthreads, int64_t b_pack_cost) noexcept nogil:
    """Row blocks the split of an m x n product over nthreads threads makes (each packs
    all of its columns' B): what a cost model counts B packing by."""
    cdef int64_t tm = 1, tn = 1
    if nthreads > 1 and m > 0 and n > 0:
        _thread_grid((m + kern.mr - 1) // kern.mr, n, k, kern.mr, kern.nr, nthreads,
                     nthreads * TASKS_PER_THREAD, b_pack_cost, &tm, &tn)
    return tm


cdef int64_t sgemm_workspace_floats(const packed_a *a, int64_t n, int nthreads) noexcept nogil:
    """Scratch floats sgemm_packed needs: per thread one B block and one edge tile (with
    nthreads = 1: a slot's stride, see slot_floats)."""
    cdef int64_t kc = min(a.kc, a.k) if a.k > 0 else 1
    return nthreads * slot_floats(kc * sgemm_nc(a, n) + a.kernel.mr * a.kernel.nr) + 16


cdef void sgemm_block(const packed_a *a, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                 int64_t nc, pack_b_fn pack_b, const void *bctx, float *c, int64_t ldc,
                 float alpha, float beta, const pyconv_epilogue *ep, float *bbuf,
                 float *tile) noexcept nogil:
    """C[m0:m1, n0:n1] (m0 a multiple of MR) on one thread."""
    cdef const pyconv_sgemm_kernel *kern = a.kernel
    cdef int64_t mr = kern.mr, nr = kern.nr, m = a.m, k = a.k, kc = a.kc
    cdef int64_t mpad = _round_up(m, mr)
    cdef int64_t jb, kb, ib, pb, jc, ncb, k0, kcb, ir, jr, rows, cols, i, j
    cdef float beta_k
    cdef bint last
    cdef const float *ablock
    cdef const float *ap
    cdef float *cp
    cdef pyconv_epilogue tile_ep
    if ep != NULL:
        tile_ep = ep[0]
    for jb in range((n1 - n0 + nc - 1) // nc):
        jc = n0 + jb * nc
        ncb = min(nc, n1 - jc)
        for kb in range((k + kc - 1) // kc):
            k0 = kb * kc
            kcb = min(kc, k - k0)
            pack_b(bctx, k0, kcb, jc, ncb, nr, bbuf)
            beta_k = beta if k0 == 0 else 1.0
            last = k0 + kcb >= k
            ablock = a.data + k0 * mpad
            for ib in range((m1 - m0 + mr - 1) // mr):
                ir = m0 + ib * mr
                rows = min(mr, m - ir)
                ap = ablock + ir * kcb
                for pb in range((ncb + nr - 1) // nr):
                    jr = pb * nr
                    cols = min(nr, ncb - jr)
                    cp = c + ir * ldc + jc + jr
                    if (rows == mr and cols == nr and last and ep != NULL and alpha == 1.0
                            and kern.ukernel_ep != NULL):
                        # bias, residual and activation in registers: done with the tile
                        tile_ep.bias = ep.bias + ir if ep.bias != NULL else NULL
                        tile_ep.residual = (ep.residual + ir * ep.ldr + jc + jr
                                            if ep.residual != NULL else NULL)
                        kern.ukernel_ep(kcb, ap, bbuf + jr * kcb, cp, ldc, beta_k, &tile_ep)
                        continue
                    if rows == mr and cols == nr:
                        kern.ukernel(kcb, ap, bbuf + jr * kcb, cp, ldc, alpha, beta_k)
                    elif kern.ukernel_edge != NULL:
                        kern.ukernel_edge(kcb, ap, bbuf + jr * kcb, cp, ldc, alpha, beta_k,
                                          rows, cols)
                    else:
                        kern.ukernel(kcb, ap, bbuf + jr * kcb, tile, nr, alpha, 0.0)
                        for i in range(rows):
                            if beta_k == 0.0:
                                for j in range(cols):
                                    cp[i * ldc + j] = tile[i * nr + j]
                            else:
                                for j in range(cols):
                                    cp[i * ldc + j] = tile[i * nr + j] + beta_k * cp[i * ldc + j]
                    if last and ep != NULL:
                        # The tile is still in L1: bias, residual and activation now.
                        tile_ep.bias = ep.bias + ir if ep.bias != NULL else NULL
                        tile_ep.residual = (ep.residual + ir * ep.ldr + jc + jr
                                            if ep.residual != NULL else NULL)
                        kern.epilogue(cp, ldc, rows, cols, &tile_ep)


cdef void _scale_rows(float *c, int64_t ldc, int64_t m, int64_t n, float beta) noexcept nogil:
    cdef int64_t i, j
    for i in range(m):
        for j in range(n):
            c[i * ldc + j] = 0.0 if beta == 0.0 else beta * c[i * ldc + j]


cdef struct _tiles_job:
    const packed_a *a
    int64_t n, mpanels, npanels, tm, tn, nc, kc, stride, ldc
    pack_b_fn pack_b
    const void *bctx
    float *c
    float alpha, beta
    const pyconv_epilogue *ep
    float *workspace


cdef void _tiles_task(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Tiles lo..hi of the (tm x tn) grid of C; scratch of thread `slot`."""
    cdef const _tiles_job *j = <const _tiles_job *>arg
    cdef int64_t mr = j.a.kernel.mr, nr = j.a.kernel.nr, t, ti, tj, plo, phi, qlo, qhi
    cdef float *bbuf = j.workspace + slot * j.stride
    for t in range(lo, hi):
        ti = t // j.tn
        tj = t - ti * j.tn
        plo = _split(j.mpanels, j.tm, ti)
        phi = _split(j.mpanels, j.tm, ti + 1)
        qlo = _split(j.npanels, j.tn, tj)
        qhi = _split(j.npanels, j.tn, tj + 1)
        if plo < phi and qlo < qhi:
            sgemm_block(j.a, plo * mr, min(phi * mr, j.a.m), qlo * nr, min(qhi * nr, j.n),
                        j.nc, j.pack_b, j.bctx, j.c, j.ldc, j.alpha, j.beta, j.ep, bbuf,
                        bbuf + j.kc * j.nc)


cdef void sgemm_plan_for(const packed_a *a, int64_t n, int nthreads, int64_t b_pack_cost,
                         sgemm_plan *p) noexcept nogil:
    """Decides how an (a.m x n) product with this A runs on at most nthreads threads: the
    threads worth using, the B block, the thread grid and the workspace (made once by a
    plan's reshape, or per call by sgemm_packed). Needs a's shape and kernel, not its
    data, and what packing one value of B costs (B_PACK_COPY, B_PACK_IM2COL)."""
    cdef const pyconv_sgemm_kernel *kern = a.kernel
    cdef int64_t mr = kern.mr, nr = kern.nr
    p.n = n
    p.mpanels = (a.m + mr - 1) // mr
    p.npanels = (n + nr - 1) // nr
    p.kc = min(a.kc, a.k) if a.k > 0 else 1
    p.nc = sgemm_nc(a, n) if n > 0 else nr
    p.stride = slot_floats(p.kc * p.nc + mr * nr)
    p.tm = 1
    p.tn = 1
    if a.m <= 0 or n <= 0 or a.k <= 0:
        p.nthreads = 1
        p.workspace_floats = 0
        return
    p.nthreads = threads_for(a.m * n * a.k, nthreads)
    if p.nthreads > 1:
        # Up to TASKS_PER_THREAD tiles per thread (tm x tn), taken one at a time.
        _thread_grid(p.mpanels, n, a.k, mr, nr, p.nthreads, p.nthreads * TASKS_PER_THREAD,
                     b_pack_cost, &p.tm, &p.tn)
    p.workspace_floats = p.nthreads * p.stride + 16


cdef void sgemm_planned(const packed_a *a, const sgemm_plan *p, pack_b_fn pack_b,
                        const void *bctx, float *c, int64_t ldc, float alpha, float beta,
                        const pyconv_epilogue *ep, float *workspace) noexcept nogil:
    """C (a.m x p.n, row stride ldc) = epilogue(alpha * A @ B + beta * C) as p decided
    (sgemm_plan_for with this A's shape and kernel); workspace holds p.workspace_floats."""
    cdef const pyconv_sgemm_kernel *kern = a.kernel
    cdef int64_t m = a.m, n = p.n
    if m <= 0 or n <= 0:
        return
    if a.k == 0:
        _scale_rows(c, ldc, m, n, beta)
        if ep != NULL:
            kern.epilogue(c, ldc, m, n, ep)
        return
    if p.nthreads == 1:
        sgemm_block(a, 0, m, 0, n, p.nc, pack_b, bctx, c, ldc, alpha, beta, ep, workspace,
                    workspace + p.kc * p.nc)
        return
    cdef _tiles_job j = _tiles_job(a=a, n=n, mpanels=p.mpanels, npanels=p.npanels, tm=p.tm,
                                   tn=p.tn, nc=p.nc, kc=p.kc, stride=p.stride, ldc=ldc,
                                   pack_b=pack_b, bctx=bctx, c=c, alpha=alpha, beta=beta,
                                   ep=ep, workspace=workspace)
    parallel_for(p.nthreads, p.tm * p.tn, 1, _tiles_task, &j)


cdef void sgemm_packed(const packed_a *a, int64_t n, pack_b_fn pack_b, int64_t b_pack_cost,
                       const void *bctx, float *c, int64_t ldc, float alpha, float beta,
                       const pyconv_epilogue *ep, int nthreads,
                       float *workspace) noexcept nogil:
    """C (m x n, row stride ldc) = epilogue(alpha * A @ B + beta * C), planned per call.

    A is packed; B is produced panel by panel by pack_b(bctx, ...), which lets convolutions
    pack straight from the image (implicit im2col). workspace holds
    sgemm_workspace_floats(a, n, nthreads) floats."""
    cdef sgemm_plan p
    sgemm_plan_for(a, n, nthreads, b_pack_cost, &p)
    sgemm_planned(a, &p, pack_b, bctx, c, ldc, alpha, beta, ep, workspace)


# ---------------------------------------------------------------------------------------
# Python entry points.

cdef object _as_float32_2d(object x, str name):
    """x as an aligned float32 matrix: the one float32 coercion (pyconv._arrays) plus the
    rank and the alignment the kernels need."""
    x = as_float32(x, name)
    if x.ndim != 2:
        raise ShapeError(f"{name}: expected a 2-D matrix, got shape {x.shape}")
    if not x.flags.aligned:
        # Kernels load whole floats: a view at an odd byte offset is copied, not misread.
        x = np.require(x, requirements="CA")
    return x


cdef object _as_float32_vector(object x, int64_t length, str name):
    if x is None:
        return None
    if (cnp.PyArray_Check(x) and cnp.PyArray_TYPE(<cnp.ndarray>x) == cnp.NPY_FLOAT32
            and cnp.PyArray_NDIM(<cnp.ndarray>x) == 1
            and cnp.PyArray_DIMS(<cnp.ndarray>x)[0] == length
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x)
            and cnp.PyArray_ISALIGNED(<cnp.ndarray>x)):
        return x            # as the kernels take it (np.require costs a microsecond)
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise InvalidDType(f"{name}: expected float32, got dtype {x.dtype}")
    if x.shape != (length,):
        raise ShapeError(f"{name}: expected shape ({length},), got {x.shape}")
    return np.require(x, requirements="CA")


cdef inline pyconv_epilogue _activation_epilogue(int act, float a, float b) noexcept nogil:
    """An epilogue with only an activation (bias and residual are added by the caller)."""
    cdef pyconv_epilogue ep
    ep.bias = NULL
    ep.residual = NULL
    ep.ldr = 0
    ep.act = act
    ep.act_a = a
    ep.act_b = b
    return ep


# Checks of the bound calls (ConvCall, PoolCall): a few C tests instead of Python ones.

cdef bint _float32_of_shape(object a, int ndim, const cnp.npy_intp *dims,
                            bint contiguous) noexcept:
    """a is a float32, aligned ndarray of exactly this shape (C-contiguous if asked)."""
    if not cnp.PyArray_Check(a):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if (cnp.PyArray_TYPE(arr) != cnp.NPY_FLOAT32 or cnp.PyArray_NDIM(arr) != ndim
            or (contiguous and not cnp.PyArray_IS_C_CONTIGUOUS(arr))
            or not cnp.PyArray_ISALIGNED(arr)):
        return False
    cdef cnp.npy_intp *shape = cnp.PyArray_DIMS(arr)
    for i in range(ndim):
        if shape[i] != dims[i]:
            return False
    return True


cdef bint planned_array(object a, int ndim, const cnp.npy_intp *dims) noexcept:
    """a is a float32, aligned, C-contiguous ndarray of exactly this shape."""
    return _float32_of_shape(a, ndim, dims, True)


cdef int check_bound_out(str owner, object out, int ndim, const cnp.npy_intp *dims,
                         object output_shape) except -1:
    """``out`` of a bind: None (a new array per call) or a memory planner's buffer, a
    writeable float32 aligned C-contiguous array of the output shape."""
    if out is not None and (not planned_array(out, ndim, dims) or not out.flags.writeable):
        raise ValueError(f"{owner}: out must be a writeable float32 aligned C-contiguous "
                         f"array of shape {output_shape}, got "
                         f"{getattr(out, 'dtype', type(out).__name__)} "
                         f"{getattr(out, 'shape', '')}")
    return 0


cdef bint arrays_overlap(object a, object b) noexcept:
    """The byte ranges of two C-contiguous arrays intersect."""
    cdef char *pa = <char *>cnp.PyArray_DATA(<cnp.ndarray>a)
    cdef char *pb = <char *>cnp.PyArray_DATA(<cnp.ndarray>b)
    return (pa < pb + cnp.PyArray_NBYTES(<cnp.ndarray>b)
            and pb < pa + cnp.PyArray_NBYTES(<cnp.ndarray>a))


cdef int activation_code(object activation) except -1:
    if activation is None:
        return 0
    if activation not in ACTIVATIONS:
        raise InvalidArgument(
            f"activation: unknown {activation!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[activation]


cdef struct _gemv_job:
    const pyconv_sgemm_kernel *kern
    int64_t m, k, sxi, sxk, sv, sy
    float alpha, beta
    const float *x
    const float *v
    float *y


cdef void _gemv_rows(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef const _gemv_job *j = <const _gemv_job *>arg
    j.kern.gemv(hi - lo, j.k, j.alpha, j.x + lo * j.sxi, j.sxi, j.sxk, j.v, j.sv, j.beta,
                j.y + lo * j.sy, j.sy)


cdef int _gemv_threads(int64_t m, int64_t k, int nthreads) noexcept nogil:
    """Threads a GEMV of m rows of k takes: blocks of at least 64 rows."""
    return <int>max(<int64_t>1, min(<int64_t>threads_for(m * k, nthreads), (m + 63) // 64))


cdef void _gemv_run(const pyconv_sgemm_kernel *kern, int64_t m, int64_t k, float alpha,
                    const float *x, int64_t sxi, int64_t sxk, const float *v, int64_t sv,
                    float beta, float *y, int64_t sy, int nthreads) noexcept nogil:
    """y = alpha * x @ v + beta * y on nthreads (from _gemv_threads)."""
    if nthreads <= 1:
        kern.gemv(m, k, alpha, x, sxi, sxk, v, sv, beta, y, sy)
        return
    cdef _gemv_job j = _gemv_job(kern=kern, m=m, k=k, sxi=sxi, sxk=sxk, sv=sv, sy=sy,
                                 alpha=alpha, beta=beta, x=x, v=v, y=y)
    parallel_for(nthreads, m, max(grain_for(m, nthreads), <int64_t>16), _gemv_rows, &j)


cdef void _gemv_parallel(const pyconv_sgemm_kernel *kern, int64_t m, int64_t k, float alpha,
                         const float *x, int64_t sxi, int64_t sxk, const float *v,
                         int64_t sv, float beta, float *y, int64_t sy,
                         int nthreads) noexcept nogil:
    """y = alpha * x @ v + beta * y over blocks of at least 16 rows."""
    _gemv_run(kern, m, k, alpha, x, sxi, sxk, v, sv, beta, y, sy,
              _gemv_threads(m, k, nthreads))


def sgemm(a, b, out=None, *, float alpha=1.0, float beta=0.0, bias=None, activation=None,
          float act_alpha=0.0, float act_beta=0.0, residual=None, context=None):
    """C = act(alpha * A @ B + beta * C + bias[:, None] + residual), float32.

    The engine's internal entry point, with the epilogue convolutions use.

    Parameters
    ----------
    a : ndarray (M, K) float32 or PackedMatrix
        Left operand; a PackedMatrix is reused without repacking.
    b : ndarray (K, N) float32, any strides.
    out : ndarray (M, N) float32, C-contiguous, optional
        Written in place; read only when ``beta != 0``.
    bias : ndarray (M,) float32, optional
        Added to every column (one value per output row / channel).
    activation : str, optional
        One of ``ACTIVATIONS``; ``act_alpha``/``act_beta`` are its parameters
        (clip: min/max, leaky_relu and elu: alpha, hardsigmoid: alpha/beta).
    residual : ndarray (M, N) float32, optional
        Added before the activation (a fused residual connection).
    context : ExecutionContext, optional
        Threads and ISA (None: the process defaults; a PackedMatrix keeps its ISA).

    Returns
    -------
    ndarray (M, N) float32
    """
    cdef exec_ctx ctx = context_of(context)
    cdef packed_a view
    cdef int64_t pack_floats = 0
    cdef bint needs_pack = not isinstance(a, PackedMatrix)
    if not needs_pack:
        view = (<PackedMatrix>a).view
        a_shape = (<PackedMatrix>a).shape
    else:
        a = _as_float32_2d(a, "a")
        a_shape = a.shape
        pack_floats = _round_up(_packed_a_floats(ctx.kernel, a.shape[0], a.shape[1]), 16)
    b = _as_float32_2d(b, "b")
    cdef int64_t m = a_shape[0], k = a_shape[1], n = b.shape[1]
    if b.shape[0] != k:
        raise ShapeError(f"sgemm: inner dimensions differ: a is {a_shape}, b is {b.shape}")
    if out is None:
        if beta != 0.0:
            raise InvalidArgument("sgemm: beta != 0 needs an `out` array to accumulate into")
        out = empty_aligned((m, n))
    elif (not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != (m, n)
          or not out.flags.c_contiguous or not out.flags.writeable):
        raise InvalidArgument(
            f"sgemm: out must be a writeable C-contiguous float32 array of shape {(m, n)}")
    bias = _as_float32_vector(bias, m, "bias")
    if residual is not None:
        residual = _as_float32_2d(residual, "residual")
        if residual.shape != (m, n):
            raise ShapeError(f"sgemm: residual has shape {residual.shape}, expected {(m, n)}")
        if residual.strides[1] != 4:
            residual = np.require(residual, requirements="CA")
    cdef pyconv_epilogue ep
    cdef pyconv_epilogue *epp = NULL
    cdef int act = activation_code(activation)
    cdef const float[::1] biasv
    cdef const float[:, ::1] resv
    if bias is not None or residual is not None or act != 0:
        ep = _activation_epilogue(act, act_alpha, act_beta)
        if bias is not None and m > 0:
            biasv = bias
            ep.bias = &biasv[0]
        if residual is not None and m > 0 and n > 0:
            resv = np.require(residual, requirements="CA")
            ep.residual = &resv[0, 0]
            ep.ldr = n
        epp = &ep
    cdef float[:, ::1] cv = out
    cdef const float[:, :] bv = b
    if m == 0 or n == 0:
        return out
    cdef strided_b bdesc
    bdesc.data = &bv[0, 0] if k > 0 else NULL
    bdesc.sk = bv.strides[0] // 4
    bdesc.sn = bv.strides[1] // 4
    cdef int nthreads = ctx.nthreads
    # An unpacked A is packed into the reused workspace, ahead of the engine's scratch.
    cdef float *ws
    if needs_pack:
        view.m = m
        view.k = k
        view.kc = KC_DEFAULT
        view.kernel = ctx.kernel
    ws = workspace_floats(pack_floats + sgemm_workspace_floats(&view, n, nthreads))
    if needs_pack:
        view = _pack_into(a, ctx.kernel, ws, nthreads)
    with nogil:
        sgemm_packed(&view, n, pack_b_strided, B_PACK_COPY, &bdesc, &cv[0, 0], n, alpha, beta, epp,
                     nthreads, ws + pack_floats)
    return out


cdef object _checked_out(object out, tuple shape, str op):
    """A new float32 array of shape, or out when it is a writeable aligned C-contiguous
    float32 array of that shape (else InvalidArgument naming op)."""
    if out is None:
        return empty_aligned(shape)
    if (not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape
            or not out.flags.c_contiguous or not out.flags.aligned or not out.flags.writeable):
        raise InvalidArgument(f"{op}: out must be a writeable aligned C-contiguous float32 "
                              f"array of shape {shape}, got "
                              f"{getattr(out, 'dtype', type(out).__name__)} "
                              f"{getattr(out, 'shape', '')}")
    return out


@cython.wraparound(True)     # shape[-1] and friends
def matmul_shape(tuple a_shape, tuple b_shape, names=("a", "b")):
    """The shape of ``matmul(a, b)`` (``numpy.matmul`` rules) for operands of these shapes,
    checked: ShapeError naming the operands (``names``) when they do not fit or the
    result would exceed pyconv's tensor size limit."""
    cdef Py_ssize_t na = len(a_shape), nb = len(b_shape), n, i
    if na == 0 or nb == 0:
        raise ShapeError(f"matmul: {names[0]} and {names[1]} must have at least one dim, got "
                         f"shapes {a_shape} and {b_shape}")
    if a_shape[-1] != (b_shape[-2] if nb > 1 else b_shape[0]):
        raise ShapeError(f"matmul: inner dimensions differ: {names[0]} has shape {a_shape}, "
                         f"{names[1]} has shape {b_shape}")
    # The batch dims broadcast as in NumPy (np.broadcast_shapes costs ~8 us a call).
    ba = a_shape[:-2] if na > 2 else ()
    bb = b_shape[:-2] if nb > 2 else ()
    n = max(len(ba), len(bb))
    ba = (1,) * (n - len(ba)) + ba
    bb = (1,) * (n - len(bb)) + bb
    batch = []
    for i in range(n):
        x, y = ba[i], bb[i]
        if x != y and x != 1 and y != 1:
            raise ShapeError(f"matmul: the batch dims of {names[0]} {a_shape} and "
                             f"{names[1]} {b_shape} do not broadcast")
        batch.append(y if x == 1 else x)
    shape = tuple(batch) + (a_shape[-2:-1] if na > 1 else ()) + (
        b_shape[-1:] if nb > 1 else ())
    cdef int64_t count = 1
    for i in range(len(shape)):
        count *= max(<int64_t>shape[i], 1)
        if count > _MAX_TENSOR_ELEMENTS:
            check_tensor_size(shape, "matmul")     # raises, with the message of the others
    return shape


@cython.wraparound(True)     # shape[-1] and friends
def matmul(a, b, out=None, *, context=None, names=("a", "b")):
    """Matrix product of float32 arrays with ``numpy.matmul`` semantics.

    2-D operands are one product; with more dims the leading (batch) dims broadcast as
    in NumPy and every matrix pair runs on the packed GEMM, the batch looped in C (split
    over threads by items when there are enough of them, else within each product); a
    1-D operand is a vector (a row on the left, a column on the right).

    Parameters
    ----------
    a : ndarray, shape (..., M, K) or (K,), float32
    b : ndarray, shape (..., K, N) or (K,), float32
        Any strides (transposed or sliced views are read in place by the packing
        routines, not copied).
    out : ndarray, optional
        A writeable aligned C-contiguous float32 array of the result's shape, written and
        returned; it must not overlap ``a`` or ``b``.
    context : ExecutionContext, optional
        Threads and ISA (None: the process defaults).
    names : (str, str)
        What error messages call the operands.

    Returns
    -------
    ndarray, shape broadcast(a.shape[:-2], b.shape[:-2]) + (M, N) (dims of 1-D operands
    dropped), float32, C-contiguous

    Raises
    ------
    InvalidDType
        If an input is not float32. pyconv computes in float32 only and never narrows
        silently: convert with ``.astype(np.float32)``. (Python lists of floats are
        accepted and converted.)
    ShapeError
        If an input is 0-D, the inner dimensions differ, the batch dims do not broadcast
        or the result would be too large.
    """
    a = as_float32(a, names[0], "matmul")
    b = as_float32(b, names[1], "matmul")
    shape = matmul_shape(a.shape, b.shape, names)
    if a.ndim == 2 and b.ndim == 2:
        return _matmul_2d(_as_float32_2d(a, names[0]), _as_float32_2d(b, names[1]), out,
                          context)
    y = _checked_out(out, shape, "matmul")
    if y.size:
        _matmul_nd(a if a.flags.aligned else np.require(a, requirements="A"),
                   b if b.flags.aligned else np.require(b, requirements="A"), y, context)
    return y


@cython.wraparound(True)     # shape[-1] and friends
cdef _matmul_nd(object a, object b, object y, object context):
    """y (C-contiguous, not empty) = a @ b, aligned float32 operands of 1 dim or more
    (not both 2-D: _matmul_2d), on the batched products."""
    a2 = a if a.ndim > 1 else a[None]
    b2 = b if b.ndim > 1 else b[:, None]
    y2 = y
    if a.ndim == 1 or b.ndim == 1:      # the vectors' dims back, as 1
        y2 = y.reshape(y.shape[:y.ndim - (a.ndim > 1) - (b.ndim > 1)]
                       + (a2.shape[-2], b2.shape[-1]))
    _batched(a2, b2, y2, context)


cdef object _matmul_2d(object a, object b, object out, object context):
    if a.shape[1] != b.shape[0]:
        raise ShapeError(
            f"matmul: inner dimensions differ: a has shape {a.shape}, b has shape {b.shape}")
    cdef int64_t m = a.shape[0], k = a.shape[1], n = b.shape[1]
    out = _checked_out(out, (m, n), "matmul")
    if m == 0 or n == 0 or k == 0 or (n > GEMV_MAX_N and m > GEMV_MAX_N):
        return sgemm(a, b, out, context=context)
    cdef exec_ctx ctx = context_of(context)
    # Matrix-vector shapes: a GEMM tile would be mostly padding, and packing would cost
    # as much as the product itself.
    cdef const float[:, :] av = a
    cdef const float[:, :] bv = b
    cdef float[:, ::1] cv = out
    cdef int64_t sa0 = av.strides[0] // 4, sa1 = av.strides[1] // 4
    cdef int64_t sb0 = bv.strides[0] // 4, sb1 = bv.strides[1] // 4
    cdef int64_t j
    cdef const pyconv_sgemm_kernel *kern = ctx.kernel
    cdef int nthreads = ctx.nthreads
    with nogil:
        if n <= GEMV_MAX_N:      # each column: c[:, j] = a @ b[:, j]
            for j in range(n):
                _gemv_parallel(kern, m, k, 1.0, &av[0, 0], sa0, sa1, &bv[0, j], sb0, 0.0,
                               &cv[0, j], n, nthreads)
        else:                    # each row: c[i, :] = b.T @ a[i, :]
            for j in range(m):
                _gemv_parallel(kern, n, k, 1.0, &bv[0, 0], sb1, sb0, &av[j, 0], sa1, 0.0,
                               &cv[j, 0], 1, nthreads)
    return out


# ---------------------------------------------------------------------------------------
# Batched products (matmul of two dynamic operands: attention's Q @ K.T, scores @ V).

cdef enum:
    MAX_BATCH_DIMS = 64     # NumPy's NPY_MAXDIMS

cdef struct _batched_job:
    const pyconv_sgemm_kernel *kern
    const float *a
    const float *b
    float *c
    int64_t m, k, n
    int64_t sam, sak, sbk, sbn      # matrix strides (floats)
    int nbatch
    int64_t dims[MAX_BATCH_DIMS]    # the broadcast batch shape
    int64_t sa[MAX_BATCH_DIMS]      # each operand's batch strides, 0 where broadcast
    int64_t sb[MAX_BATCH_DIMS]
    int64_t apack                   # floats of one packed A (rounded to 16)
    int64_t kc, nc, stride          # B block; scratch floats per thread
    float *workspace


cdef inline void _batch_offsets(const _batched_job *j, int64_t item, int64_t *oa,
                                int64_t *ob) noexcept nogil:
    """Offsets (floats) of item's A and B matrices."""
    cdef int64_t ia = 0, ib = 0, r = item, idx
    cdef int d
    for d in range(j.nbatch - 1, -1, -1):
        idx = r % j.dims[d]
        r = r // j.dims[d]
        ia += idx * j.sa[d]
        ib += idx * j.sb[d]
    oa[0] = ia
    ob[0] = ib


cdef void _batched_items(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Products lo..hi, each whole on this thread: its A packed into the thread's scratch,
    then one block (B packed per KC x NC block as usual)."""
    cdef const _batched_job *j = <const _batched_job *>arg
    cdef float *scratch = j.workspace + slot * j.stride
    cdef int64_t mr = j.kern.mr, t, oa, ob
    cdef packed_a view
    cdef strided_b bdesc
    cdef _pack_a_job pj = _pack_a_job(src=NULL, sm=j.sam, sk=j.sak, m=j.m, k=j.k,
                                      kc=KC_DEFAULT, mr=mr, npanels=(j.m + mr - 1) // mr,
                                      dst=scratch)
    cdef int64_t pack_tasks = pj.npanels * ((j.k + KC_DEFAULT - 1) // KC_DEFAULT)
    view.data = scratch
    view.m = j.m
    view.k = j.k
    view.kc = KC_DEFAULT
    view.kernel = j.kern
    bdesc.sk = j.sbk
    bdesc.sn = j.sbn
    for t in range(lo, hi):
        _batch_offsets(j, t, &oa, &ob)
        pj.src = j.a + oa
        _pack_a_tasks(<void *>&pj, 0, pack_tasks, 0)
        bdesc.data = j.b + ob
        sgemm_block(&view, 0, j.m, 0, j.n, j.nc, pack_b_strided, &bdesc,
                    j.c + t * j.m * j.n, j.n, 1.0, 0.0, NULL, scratch + j.apack,
                    scratch + j.apack + j.kc * j.nc)


@cython.wraparound(True)     # shape[-1] and friends
cdef _batched(object a, object b, object y, object context):
    """y (batch + (M, N), C-contiguous, not empty) = a @ b, a (..., M, K) and b (..., K, N)
    aligned float32 whose batch dims broadcast to batch."""
    cdef exec_ctx ctx = context_of(context)
    cdef tuple batch = y.shape[:-2]
    cdef _batched_job j
    cdef int nb = len(batch), d
    cdef int pa = nb - (a.ndim - 2)
    cdef int pb = nb - (b.ndim - 2)
    if nb > MAX_BATCH_DIMS:
        raise ShapeError(f"matmul: at most {MAX_BATCH_DIMS} batch dims, got {nb}")
    cdef int64_t items = 1
    j.kern = ctx.kernel
    j.m = a.shape[-2]
    j.k = a.shape[-1]
    j.n = b.shape[-1]
    j.sam = a.strides[-2] // 4
    j.sak = a.strides[-1] // 4
    j.sbk = b.strides[-2] // 4
    j.sbn = b.strides[-1] // 4
    j.nbatch = nb
    for d in range(nb):
        j.dims[d] = batch[d]
        items *= batch[d]
        j.sa[d] = a.strides[d - pa] // 4 if d >= pa and a.shape[d - pa] > 1 else 0
        j.sb[d] = b.strides[d - pb] // 4 if d >= pb and b.shape[d - pb] > 1 else 0
    j.a = <const float *>cnp.PyArray_DATA(<cnp.ndarray>a)
    j.b = <const float *>cnp.PyArray_DATA(<cnp.ndarray>b)
    j.c = <float *>cnp.PyArray_DATA(<cnp.ndarray>y)
    if j.k == 0:
        y[...] = 0
        return
    cdef int64_t mr = j.kern.mr
    j.apack = _round_up(_packed_a_floats(j.kern, j.m, j.k), 16)
    cdef packed_a view
    view.m = j.m
    view.k = j.k
    view.kc = KC_DEFAULT
    view.kernel = j.kern
    j.kc = min(<int64_t>KC_DEFAULT, j.k)
    j.nc = sgemm_nc(&view, j.n)
    j.stride = slot_floats(j.apack + j.kc * j.nc + mr * j.kern.nr)
    cdef int nthreads = threads_for(items * j.m * j.n * j.k, ctx.nthreads)
    cdef sgemm_plan plan
    cdef float *ws
    cdef int64_t t, oa, ob
    cdef strided_b bdesc
    if nthreads == 1 or items >= TASKS_PER_THREAD * nthreads or items % nthreads == 0:
        # Enough products to share out whole: one per task, no split inside them.
        j.workspace = workspace_floats(nthreads * j.stride + 16)
        with nogil:
            parallel_for(nthreads, items, grain_for(items, nthreads), _batched_items, &j)
        return
    # A few large products: each packed and split over the threads in turn.
    sgemm_plan_for(&view, j.n, nthreads, B_PACK_COPY, &plan)
    ws = workspace_floats(j.apack + plan.workspace_floats)
    view.data = ws
    bdesc.sk = j.sbk
    bdesc.sn = j.sbn
    with nogil:
        for t in range(items):
            _batch_offsets(&j, t, &oa, &ob)
            _pack_a(j.a + oa, j.sam, j.sak, j.m, j.k, KC_DEFAULT, mr, ws, nthreads)
            bdesc.data = j.b + ob
            sgemm_planned(&view, &plan, pack_b_strided, &bdesc, j.c + t * j.m * j.n, j.n,
                          1.0, 0.0, NULL, ws + j.apack)


cdef bint _float32_matrices(object x, int ndim, const cnp.npy_intp *dims) noexcept:
    """x is an aligned float32 ndarray of exactly this shape (any strides)."""
    return _float32_of_shape(x, ndim, dims, False)


cdef bint _reaches(object y, object x) noexcept:
    """The bytes of C-contiguous y meet the span of the (any strides, not empty) x, as
    numpy.may_share_memory's bounds check."""
    cdef cnp.ndarray arr = <cnp.ndarray>x
    cdef char *lo = <char *>cnp.PyArray_DATA(arr)
    cdef char *hi = lo + cnp.PyArray_ITEMSIZE(arr)
    cdef cnp.npy_intp ext
    for d in range(cnp.PyArray_NDIM(arr)):
        ext = (cnp.PyArray_DIMS(arr)[d] - 1) * cnp.PyArray_STRIDES(arr)[d]
        if ext < 0:
            lo += ext
        else:
            hi += ext
    cdef char *ylo = <char *>cnp.PyArray_DATA(<cnp.ndarray>y)
    return lo < ylo + cnp.PyArray_NBYTES(<cnp.ndarray>y) and ylo < hi


cdef class MatmulCall:
    """:func:`matmul` of two dynamic operands bound to their planned shapes (a non-empty
    result) and an output buffer: ``call(inputs)`` is
    ``[inputs[0] @ inputs[1]]`` in that buffer, the operands read with any strides (a
    transposed K in attention) and checked in C, or ``run(inputs, out)`` when they are
    not aligned float32 arrays of the planned shapes or the buffer overlaps them."""
    cdef int nd[2]
    cdef cnp.npy_intp dims[2][MAX_BATCH_DIMS]
    cdef tuple out_shape
    cdef bint two_d
    cdef object out, run, context

    def __init__(self, a_shape, b_shape, out, run, context=None):
        shapes = (tuple(int(d) for d in a_shape), tuple(int(d) for d in b_shape))
        self.out_shape = matmul_shape(shapes[0], shapes[1])
        if math.prod(self.out_shape) == 0:
            raise InvalidArgument(f"MatmulCall: shapes {shapes[0]} and {shapes[1]}: an empty "
                                  f"product is not bound")
        if max(len(shapes[0]), len(shapes[1])) > MAX_BATCH_DIMS:
            raise ShapeError(f"matmul: at most {MAX_BATCH_DIMS} dims, got shapes "
                             f"{shapes[0]} and {shapes[1]}")
        for k in range(2):
            self.nd[k] = len(shapes[k])
            for i, d in enumerate(shapes[k]):
                self.dims[k][i] = d
        self.two_d = len(shapes[0]) == 2 and len(shapes[1]) == 2
        if out is not None and (not isinstance(out, np.ndarray) or out.dtype != np.float32
                                or out.shape != self.out_shape or not out.flags.c_contiguous
                                or not out.flags.aligned or not out.flags.writeable):
            out = None
        self.out = out
        self.run = run
        self.context = context

    def __call__(self, inputs):
        a, b = inputs[0], inputs[1]
        if not (_float32_matrices(a, self.nd[0], self.dims[0])
                and _float32_matrices(b, self.nd[1], self.dims[1])):
            return self.run(inputs, self.out)
        y = self.out
        if y is None:
            y = empty_of(self.out_shape)
        elif _reaches(y, a) or _reaches(y, b):
            return self.run(inputs, None)
        if self.two_d:
            return [_matmul_2d(a, b, y, self.context)]
        _matmul_nd(a, b, y, self.context)
        return [y]


# ---------------------------------------------------------------------------------------
# Linear layers: y = act(alpha * x @ weight.T + bias), create -> reshape -> run.

cdef enum:
    LINEAR_NONE = 0     # an empty output: nothing to compute
    LINEAR_GEMV = 1     # one row: the GEMV kernel reads the weight in place
    LINEAR_GEMM = 2     # rows: Y.T = W_packed @ X.T, bias per row of Y.T, then transposed

_LINEAR_ALGORITHMS = {LINEAR_NONE: "none", LINEAR_GEMV: "gemv", LINEAR_GEMM: "gemm"}


cdef void _transpose(const float *src, int64_t m, int64_t n, float *dst) noexcept nogil:
    """dst (n x m) = src (m x n).T, both C-contiguous, in 32 x 32 blocks."""
    cdef int64_t i0, j0, i, j, i1, j1
    for i0 in range(0, m, 32):
        i1 = min(i0 + 32, m)
        for j0 in range(0, n, 32):
            j1 = min(j0 + 32, n)
            for i in range(i0, i1):
                for j in range(j0, j1):
                    dst[j * m + i] = src[i * n + j]


cdef class LinearReshape:
    """One input shape of a :class:`LinearKernel` resolved once (the reshape step of
    create -> reshape -> run): the output shape, the algorithm, the GEMM's thread grid and
    blocking for the kernel's threads, and the workspace a run needs. Immutable; made by
    :meth:`LinearKernel.reshape` (through :meth:`pyconv.functional.LinearPlan.reshape`)
    and used as is by every run and bound call.

    Attributes
    ----------
    input_shape, output_shape : tuple of int
        (*, in_features) and (*, out_features).
    rows : int
        The product of the leading dims: the rows of the matrix product.
    algorithm : str
        'gemv' (one row: matrix-vector products on the weight as given), 'gemm' (the
        packed weight times the rows, transposed into the output) or 'none' (an empty
        output).
    num_threads : int
        Threads a run uses (the context's, fewer for a small problem).
    workspace_bytes : int
        Scratch memory a run takes (per calling Python thread, reused between runs).
    """
    cdef LinearKernel kernel
    cdef int algo
    cdef int64_t nrows
    cdef sgemm_plan plan        # LINEAR_GEMM: the engine's grid and blocking
    cdef int nthreads
    cdef int64_t pack_floats    # the weight packed per run (a kernel without prepacking)
    cdef int64_t yt_floats      # Y.T before the transpose (0: one output feature, none)
    cdef int64_t ws_floats
    cdef int ndim
    cdef cnp.npy_intp x_dims[MAX_BATCH_DIMS]
    cdef cnp.npy_intp y_dims[MAX_BATCH_DIMS]
    cdef readonly tuple input_shape, output_shape
    cdef readonly str algorithm

    @property
    def rows(self):
        return self.nrows

    @property
    def num_threads(self):
        return self.nthreads

    @property
    def workspace_bytes(self):
        return int(self.ws_floats * sizeof(float))

    def __repr__(self):
        return (f"LinearReshape(input_shape={self.input_shape}, "
                f"output_shape={self.output_shape}, algorithm={self.algorithm!r}, "
                f"num_threads={self.nthreads}, workspace_bytes={self.workspace_bytes})")


cdef class LinearKernel:
    """A linear layer's weight prepared once: ``y = act(alpha * x @ weight.T + bias)``.

    Parameters
    ----------
    weight : ndarray float32 (out_features, in_features)
        Kept C-contiguous (copied if it is not): the GEMV reads it in place.
    bias : ndarray float32 (out_features,) or None
    prepack : bool
        Pack the weight for the GEMM once, when a reshape first needs it (a layer run
        many times); False packs it into the workspace on each GEMM run (a one-shot
        functional call). One-row inputs never need it.
    context : ExecutionContext, optional
        Threads and ISA of every run (None: the process defaults now).
    """
    cdef readonly object weight
    cdef readonly object bias
    cdef readonly int64_t in_features, out_features
    cdef readonly bint prepack
    cdef readonly object context
    cdef object _packed         # PackedMatrix, made by the first GEMM reshape (prepack)
    cdef object _lock
    cdef exec_ctx ctx

    def __init__(self, weight, bias=None, bint prepack=True, context=None):
        if context is None:
            context = ExecutionContext()
        self.ctx = context_of(context)
        self.context = context
        weight = _as_float32_2d(weight, "weight")
        self.weight = weight if weight.flags.c_contiguous else np.ascontiguousarray(weight)
        self.out_features = self.weight.shape[0]
        self.in_features = self.weight.shape[1]
        self.bias = _as_float32_vector(bias, self.out_features, "bias")
        self.prepack = prepack
        self._packed = None
        self._lock = threading.Lock()

    @property
    def packed(self):
        """The :class:`PackedMatrix` of the weight, or None while no reshape needed it
        (or without prepacking)."""
        return self._packed

    @cython.wraparound(True)     # shape[-1] and friends
    def reshape(self, tuple x_shape, tuple out_shape):
        """A :class:`LinearReshape` for inputs of ``x_shape`` (*, in_features) giving
        ``out_shape`` (*, out_features), both validated by pyconv.functional: the
        algorithm, the GEMM's plan for this kernel's threads (the weight packed now if
        this is the first reshape that needs it) and the workspace."""
        cdef LinearReshape r = LinearReshape.__new__(LinearReshape)
        cdef int64_t rows = 1, k = self.in_features, n = self.out_features
        cdef int i
        cdef packed_a view
        if (not 1 <= len(x_shape) <= MAX_BATCH_DIMS or len(out_shape) != len(x_shape)
                or x_shape[-1] != k or out_shape[-1] != n):
            raise ValueError(f"LinearKernel.reshape: shapes {x_shape} -> {out_shape} do not "
                             f"fit a ({n}, {k}) weight")
        r.kernel = self
        r.input_shape = x_shape
        r.output_shape = out_shape
        r.ndim = len(x_shape)
        for i in range(r.ndim):
            r.x_dims[i] = x_shape[i]
            r.y_dims[i] = out_shape[i]
            if i < r.ndim - 1:
                rows *= x_shape[i]
        r.nrows = rows
        r.nthreads = 1
        r.pack_floats = 0
        r.yt_floats = 0
        r.ws_floats = 0
        if rows == 0 or n == 0:
            r.algo = LINEAR_NONE
        elif rows <= _GEMV_MAX_ROWS and k > 0:
            r.algo = LINEAR_GEMV
            r.nthreads = _gemv_threads(n, k, self.ctx.nthreads)
        else:
            r.algo = LINEAR_GEMM
            view.m = n
            view.k = k
            view.kc = KC_DEFAULT
            view.kernel = self.ctx.kernel
            sgemm_plan_for(&view, rows, self.ctx.nthreads, B_PACK_COPY, &r.plan)
            r.nthreads = r.plan.nthreads
            if self.prepack:
                self._pack()
            else:
                r.pack_floats = _round_up(_packed_a_floats(self.ctx.kernel, n, k), 16)
            # With one output feature Y.T and Y are the same memory: no transpose.
            r.yt_floats = _round_up(rows * n, 16) if n > 1 else 0
            r.ws_floats = r.pack_floats + r.yt_floats + r.plan.workspace_floats
        r.algorithm = _LINEAR_ALGORITHMS[r.algo]
        return r

    cdef _pack(self):
        if self._packed is None:
            with self._lock:
                if self._packed is None:
                    self._packed = PackedMatrix(self.weight, self.context)

    def run(self, LinearReshape shape not None, x, out, activation=None,
            float act_alpha=0.0, float act_beta=0.0, float alpha=1.0):
        """Runs ``shape`` (a reshape of this kernel) on x, an aligned float32 array of its
        input shape (any strides), into out, an aligned C-contiguous float32 array of its
        output shape; returns out."""
        if shape.kernel is not self:
            raise ValueError("LinearKernel.run: the reshape belongs to another kernel")
        if (not isinstance(x, np.ndarray) or x.dtype != np.float32 or not x.flags.aligned
                or x.shape != shape.input_shape
                or not planned_array(out, shape.ndim, shape.y_dims)):
            raise ValueError(f"LinearKernel.run: x and out must be aligned float32 arrays of "
                             f"shapes {shape.input_shape} and {shape.output_shape} (out "
                             f"C-contiguous)")
        if shape.algo == LINEAR_NONE:
            return out
        cdef int act = activation_code(activation)
        if cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x):
            return self._execute(shape, <const float *>cnp.PyArray_DATA(<cnp.ndarray>x),
                                 self.in_features, 1, out, act, act_alpha, act_beta, alpha)
        # Any strides: the rows as a 2-D view (a copy only where NumPy cannot view them).
        x2 = x.reshape(shape.nrows, self.in_features)
        if not x2.flags.aligned:
            x2 = np.require(x2, requirements="CA")
        cdef cnp.npy_intp *strides = cnp.PyArray_STRIDES(<cnp.ndarray>x2)
        return self._execute(shape, <const float *>cnp.PyArray_DATA(<cnp.ndarray>x2),
                             strides[0] // 4, strides[1] // 4, out, act, act_alpha, act_beta,
                             alpha)

    def bind(self, LinearReshape shape not None, out=None, activation=None,
             float act_alpha=0.0, float act_beta=0.0, float alpha=1.0):
        """A :class:`LinearCall`: ``run`` of ``shape`` with the epilogue fixed, writing into
        ``out`` (a memory planner's buffer: a writeable aligned C-contiguous float32 array
        of the output shape), or into a new array per call when out is None."""
        if shape.kernel is not self:
            raise ValueError("LinearKernel.bind: the reshape belongs to another kernel")
        check_bound_out("LinearKernel.bind", out, shape.ndim, shape.y_dims,
                        shape.output_shape)
        cdef LinearCall call = LinearCall.__new__(LinearCall)
        call.kernel = self
        call.shape = shape
        call.act = activation_code(activation)
        call.act_a = act_alpha
        call.act_b = act_beta
        call.alpha = alpha
        call.out = out
        return call

    cdef object _execute(self, LinearReshape r, const float *xp, int64_t sx0, int64_t sx1,
                         object out, int act, float act_a, float act_b, float alpha):
        """out = act(alpha * x @ weight.T + bias) for x (rows, in_features) at xp with
        strides sx0, sx1 (floats)."""
        cdef const pyconv_sgemm_kernel *kern = self.ctx.kernel
        cdef int64_t rows = r.nrows, k = self.in_features, n = self.out_features
        cdef float *y = <float *>cnp.PyArray_DATA(<cnp.ndarray>out)
        cdef const float *w = <const float *>cnp.PyArray_DATA(<cnp.ndarray>self.weight)
        cdef const float *bias = NULL
        if self.bias is not None:
            bias = <const float *>cnp.PyArray_DATA(<cnp.ndarray>self.bias)
        cdef pyconv_epilogue ep = _activation_epilogue(act, act_a, act_b)
        cdef packed_a view
        cdef strided_b bdesc
        cdef float *ws
        cdef float *yt
        if r.algo == LINEAR_GEMV:
            with nogil:
                if bias != NULL:
                    memcpy(y, bias, n * sizeof(float))
                _gemv_run(kern, n, k, alpha, w, k, 1, xp, sx1, 1.0 if bias != NULL else 0.0,
                          y, 1, r.nthreads)
                if act != 0:
                    kern.epilogue(y, n, 1, n, &ep)
            return out
        if r.algo != LINEAR_GEMM:
            return out
        ws = workspace_floats(r.ws_floats)
        if self.prepack:
            view = (<PackedMatrix>self._packed).view
        else:
            view = _pack_into(self.weight, kern, ws, self.ctx.nthreads)
        yt = ws + r.pack_floats if r.yt_floats else y
        ep.bias = bias
        # B = x.T (k x rows), read in place.
        bdesc.data = xp
        bdesc.sk = sx1
        bdesc.sn = sx0
        with nogil:
            sgemm_planned(&view, &r.plan, pack_b_strided, &bdesc, yt, rows, alpha, 0.0, &ep,
                          ws + r.pack_floats + r.yt_floats)
            if r.yt_floats:
                _transpose(yt, n, rows, y)
        return out


cdef class LinearCall:
    """A linear layer bound to one input shape and an output buffer (see
    :meth:`LinearKernel.bind`). ``call(x)`` writes and returns ``out`` (a new array when
    bound without one), or returns None, computing nothing, when x is not a float32
    aligned C-contiguous array of the bound shape or overlaps ``out``: the caller then
    takes the general path."""
    cdef LinearKernel kernel
    cdef LinearReshape shape
    cdef int act
    cdef float act_a, act_b, alpha
    cdef readonly object out

    def __call__(self, x):
        cdef LinearReshape r = self.shape
        if not planned_array(x, r.ndim, r.x_dims):
            return None
        out = self.out
        if out is None:
            out = empty_of(r.output_shape)
        elif arrays_overlap(x, out):
            return None
        return self.kernel._execute(r, <const float *>cnp.PyArray_DATA(<cnp.ndarray>x),
                                    self.kernel.in_features, 1, out, self.act, self.act_a,
                                    self.act_b, self.alpha)


# ---------------------------------------------------------------------------------------
# Machine peak.

cdef struct _fma_job:
    const pyconv_sgemm_kernel *kern
    int64_t iterations
    double *flops               # one per task


cdef void _fma_task(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef const _fma_job *j = <const _fma_job *>arg
    cdef int64_t t
    for t in range(lo, hi):
        j.flops[t] = j.kern.fma_peak(j.iterations)


cdef double _fma_flops_parallel(const pyconv_sgemm_kernel *kern, int64_t iterations,
                                int nthreads) noexcept nogil:
    """FMA flops of nthreads loops of `iterations`, one per thread when the threads are
    free (a busy thread's loop runs on another afterwards, lowering the measured rate)."""
    cdef double flops[256]
    cdef double total = 0.0
    cdef _fma_job j
    cdef int t
    nthreads = min(nthreads, 256)
    if nthreads <= 1:
        return kern.fma_peak(iterations)
    j.kern = kern
    j.iterations = iterations
    j.flops = flops
    parallel_for(nthreads, nthreads, 1, _fma_task, &j)
    for t in range(nthreads):
        total += flops[t]
    return total


def measure_peak_gflops(threads=1, isa=None, seconds=0.2):
    """Measured FP32 peak of this machine in GFLOP/s: FMA-only loops on `threads` threads.

    Uses the micro-kernel ISA in use (or `isa`); reports the best of several timed runs.
    """
    import time
    cdef const pyconv_sgemm_kernel *kern = _kernel
    if isa is not None:
        kern = pyconv_sgemm_kernel_for(isa.encode())
        if kern == NULL:
            raise UnsupportedISA(f"measure_peak_gflops: ISA {isa!r} is not available here")
    cdef int nthreads = check_num_threads(threads, "measure_peak_gflops: threads")
    cdef int64_t iters = 1 << 16
    cdef double flops
    while True:
        t0 = time.perf_counter()
        with nogil:
            flops = _fma_flops_parallel(kern, iters, nthreads)
        dt = time.perf_counter() - t0
        if dt > seconds / 5 or iters > (1 << 34):
            break
        iters *= 2
    best = flops / dt
    for _ in range(4):
        t0 = time.perf_counter()
        with nogil:
            flops = _fma_flops_parallel(kern, iters, nthreads)
        best = max(best, flops / (time.perf_counter() - t0))
    return best / 1e9


cdef struct _activation_job:
    const pyconv_sgemm_kernel *kern
    float *data
    pyconv_epilogue ep


cdef void _activation_range(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef const _activation_job *j = <const _activation_job *>arg
    j.kern.epilogue(j.data + lo, hi - lo, 1, hi - lo, &j.ep)


def apply_activation(x, activation, float act_alpha=0.0, float act_beta=0.0, context=None):
    """Applies a fused-epilogue activation to a float32 array in place and returns it.

    The same C code the GEMM epilogue runs, so layers and fused convolutions agree exactly.
    Non-contiguous arrays are processed through a contiguous copy written back."""
    cdef int act = activation_code(activation)
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise InvalidDType(f"{activation}: expected a float32 ndarray, got "
                           f"{getattr(x, 'dtype', type(x).__name__)}")
    cdef exec_ctx ctx = context_of(context)
    if act == 0 or x.size == 0:
        return x
    work = x if x.flags.c_contiguous and x.flags.writeable and x.flags.aligned else np.require(x, requirements="CAW")
    cdef float[::1] flat = work.reshape(-1)
    cdef int64_t total = flat.shape[0], chunk = 16384
    cdef _activation_job j
    j.kern = ctx.kernel
    j.data = &flat[0]
    j.ep = _activation_epilogue(act, act_alpha, act_beta)
    cdef int nthreads = ctx.nthreads if total > chunk else 1
    with nogil:
        parallel_for(nthreads, total, max(chunk, grain_for(total, nthreads)),
                     _activation_range, &j)
    if work is not x:
        x[...] = work
    return x


cdef struct _affine_job:
    const pyconv_sgemm_kernel *kern
    const float *x
    float *y
    const float *scale
    const float *shift
    int64_t n, channels
    int act
    float a, b


cdef void _affine_rows(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef const _affine_job *j = <const _affine_job *>arg
    j.kern.channel_affine(j.x + lo * j.n, j.y + lo * j.n, hi - lo, j.n, j.scale, j.shift, lo,
                          j.channels, j.act, j.a, j.b)


def channel_affine(x, scale, shift, activation=None, float act_alpha=0.0,
                   float act_beta=0.0, out=None, context=None):
    """``act(x * scale + shift)`` with per-channel (axis 1) scale and shift, in one pass
    over x (inference BatchNormalization, the optimizer's ChannelAffine).

    x: float32 (N, C, ...) C-contiguous; scale, shift: float32 (C,); out: None or a
    writeable float32 C-contiguous array of x's shape (x itself for in place). The
    product is rounded before the shift is added (the bits of Mul then Add); the
    activation is one of the fused epilogue's (pyconv._activations), computed by the
    same vector code."""
    cdef int act = activation_code(activation)
    cdef object xa = np.require(as_float32(x, "x", "channel_affine"), requirements="CA")
    if xa.ndim < 2:
        raise ShapeError(f"channel_affine: x must be (N, C, ...), got shape {xa.shape}")
    cdef int64_t channels = xa.shape[1]
    cdef object sv = _as_float32_vector(scale, channels, "channel_affine: scale")
    cdef object tv = _as_float32_vector(shift, channels, "channel_affine: shift")
    if out is None:
        out = empty_of(xa.shape)
    else:
        check_out("channel_affine", "out", out, xa.shape, np.float32, aligned=True)
    cdef exec_ctx ctx = context_of(context)
    cdef int64_t rows = xa.shape[0] * channels, size = xa.size
    if rows == 0 or size == 0:
        return out
    cdef _affine_job j
    j.kern = ctx.kernel
    j.x = <const float *>cnp.PyArray_DATA(<cnp.ndarray>xa)
    j.y = <float *>cnp.PyArray_DATA(<cnp.ndarray>out)
    j.scale = <const float *>cnp.PyArray_DATA(<cnp.ndarray>sv)
    j.shift = <const float *>cnp.PyArray_DATA(<cnp.ndarray>tv)
    j.n = size // rows
    j.channels = channels
    j.act = act
    j.a = act_alpha
    j.b = act_beta
    cdef int nthreads = threads_for(size * 4, ctx.nthreads)
    with nogil:
        parallel_for(nthreads, rows, grain_for(rows, nthreads), _affine_rows, &j)
    return out


cdef class ChannelAffineCall:
    """channel_affine() bound to an input shape, its scale, shift and activation (see
    :func:`bind_channel_affine`). ``call(x)`` returns the result (in the planned buffer
    when the bind had one, else a new array), or None, computing nothing, when x is not a
    float32 aligned C-contiguous array of the bound shape."""
    cdef int ndim
    cdef cnp.npy_intp x_dims[8]
    cdef object scale, shift, out
    cdef _affine_job job
    cdef int64_t rows
    cdef int nthreads

    def __call__(self, x):
        if not planned_array(x, self.ndim, self.x_dims):
            return None
        y = self.out
        if y is None or (y is not x and arrays_overlap(y, x)):
            y = empty_of(x.shape)   # x itself or a separate buffer
        cdef _affine_job j = self.job
        j.x = <const float *>cnp.PyArray_DATA(<cnp.ndarray>x)
        j.y = <float *>cnp.PyArray_DATA(<cnp.ndarray>y)
        if self.rows:
            with nogil:
                parallel_for(self.nthreads, self.rows, grain_for(self.rows, self.nthreads),
                             _affine_rows, &j)
        return y


def bind_channel_affine(tuple x_shape, scale, shift, activation=None, float act_alpha=0.0,
                        float act_beta=0.0, out=None, context=None):
    """A :class:`ChannelAffineCall`: channel_affine() on inputs of ``x_shape`` (N, C, ...),
    the checks and conversions done once; ``out``: None or the planned output buffer."""
    if not 2 <= len(x_shape) <= 8 or min(x_shape) < 0:
        raise ShapeError(f"bind_channel_affine: x_shape must be (N, C, ...) with at most 8 "
                         f"dims, got {x_shape}")
    cdef ChannelAffineCall call = ChannelAffineCall.__new__(ChannelAffineCall)
    call.ndim = len(x_shape)
    cdef int64_t size = 1
    for i in range(call.ndim):
        call.x_dims[i] = x_shape[i]
        size *= x_shape[i]
    check_bound_out("bind_channel_affine", out, call.ndim, call.x_dims, x_shape)
    cdef int64_t channels = x_shape[1]
    if scale is None or shift is None:
        raise ValueError("bind_channel_affine: scale and shift are required")
    call.scale = _as_float32_vector(scale, channels, "channel_affine: scale")
    call.shift = _as_float32_vector(shift, channels, "channel_affine: shift")
    call.out = out
    cdef exec_ctx ctx = context_of(context)
    call.rows = x_shape[0] * channels if size else 0
    call.job.kern = ctx.kernel
    call.job.scale = <const float *>cnp.PyArray_DATA(<cnp.ndarray>call.scale)
    call.job.shift = <const float *>cnp.PyArray_DATA(<cnp.ndarray>call.shift)
    call.job.n = size // call.rows if call.rows else 0
    call.job.channels = channels
    call.job.act = activation_code(activation)
    call.job.a = act_alpha
    call.job.b = act_beta
    call.nthreads = threads_for(size * 4, ctx.nthreads)
    return call
