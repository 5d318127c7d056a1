# The element-wise engine: unary math and broadcast binary ops on float32 arrays, run by the
# SIMD kernels of src/kernels/eltwise_*.c (the ISA of the execution context) and split over
# the thread pool on large tensors; small ones run inline, with no threading cost.
#
# `standardize` standardises the rows of a matrix (the normalisation ops), `softmax` takes
# them through (log_)softmax; both split over threads by rows.
#
# Broadcasts the kernels take: a scalar, the same shape, and an operand whose non-1 dims
# are one block of the output's (a per-channel NCHW vector (C, 1, 1), a bias over the
# last axis, ...), on either side. `binary` returns None for anything else (the caller
# uses NumPy).
import math

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t

from pyconv._ext.gemm cimport (arrays_overlap, context_of, empty_of, empty_lines, exec_ctx,
                               grain_for, parallel_for, planned_array, pyconv_range_fn,
                               pyconv_sgemm_kernel)
from pyconv._ext.gemm import ACTIVATIONS, empty_aligned
from pyconv.arithmetic import check_tensor_size
from pyconv.errors import InvalidArgument, InvalidDType

cnp.import_array()

cdef extern from "eltwise.h" nogil:
    ctypedef void (*pyconv_unary_fn)(int op, const float *x, float *y, int64_t n, float a,
                                     float b) noexcept nogil
    ctypedef void (*pyconv_binary_fn)(int op, const float *a, int64_t sa, const float *b,
                                      int64_t sb, float *y, int64_t n) noexcept nogil
    ctypedef void (*pyconv_standardize_fn)(const float *x, float *y, int64_t n, double eps,
                                           const float *s, const float *b, int64_t k,
                                           double *mean, double *inv_std) noexcept nogil
    ctypedef void (*pyconv_standardize_cols_fn)(const float *x, float *y, int64_t c,
                                                int64_t p, int64_t j0, int64_t j1, double eps,
                                                const float *s, const float *b, double *mean,
                                                double *inv_std) noexcept nogil
    ctypedef void (*pyconv_softmax_fn)(const float *x, float *y, int64_t n,
                                       int log) noexcept nogil
    ctypedef struct pyconv_eltwise_kernel:
        const char *isa
        pyconv_unary_fn unary
        pyconv_binary_fn binary
        pyconv_standardize_fn standardize
        pyconv_standardize_cols_fn standardize_cols
        pyconv_softmax_fn softmax
    const pyconv_eltwise_kernel *pyconv_eltwise_kernel_for(const char *isa)

    cpdef enum pyconv_unary:
        PYCONV_UNARY_EXP
        PYCONV_UNARY_ERF
        PYCONV_UNARY_RECIPROCAL
        PYCONV_UNARY_SQRT
        PYCONV_UNARY_NEG
        PYCONV_UNARY_ABS
        PYCONV_UNARY_LOG
        PYCONV_UNARY_COUNT

    cpdef enum pyconv_binary:
        PYCONV_BINARY_ADD
        PYCONV_BINARY_SUB
        PYCONV_BINARY_MUL
        PYCONV_BINARY_DIV
        PYCONV_BINARY_MAX
        PYCONV_BINARY_MIN
        PYCONV_BINARY_POW
        PYCONV_BINARY_COUNT

#: Unary functions by name: the fused activations (their pyconv_act codes, see
#: pyconv._activations) and the standalone functions (PYCONV_UNARY_EXP is "exp").
UNARY = dict(ACTIVATIONS)
UNARY.update({name[len("PYCONV_UNARY_"):].lower(): int(code)
              for name, code in pyconv_unary.__members__.items()
              if code != PYCONV_UNARY_COUNT})
#: Binary operations by name (PYCONV_BINARY_ADD is "add").
BINARY = {name[len("PYCONV_BINARY_"):].lower(): int(code)
          for name, code in pyconv_binary.__members__.items() if code != PYCONV_BINARY_COUNT}

cdef enum:
    # Below this many floats per thread a task costs more to hand out than to run.
    CHUNK = 16384

# How a binary operand is read at output index i (see _binary_range).
cdef enum:
    FULL = 0        # p[i]
    SCALAR = 1      # p[0]
    TILED = 2       # p[i % L]: its dims are the output's last ones
    CHANNEL = 3     # p[(i / L) % M]: one value per run of L outputs


cdef inline const pyconv_eltwise_kernel *_kernel_of(const exec_ctx *ctx) noexcept nogil:
    return pyconv_eltwise_kernel_for(ctx.kernel.isa)


def unary_code(op):
    """The C code of a unary function name (see :data:`UNARY`)."""
    code = UNARY.get(op)
    if code is None:
        raise InvalidArgument(f"element-wise function: unknown {op!r}; expected one of "
                              f"{sorted(UNARY)}")
    return code


def binary_code(op):
    code = BINARY.get(op)
    if code is None:
        raise InvalidArgument(f"element-wise operation: unknown {op!r}; expected one of "
                              f"{sorted(BINARY)}")
    return code


# ---------------------------------------------------------------------------------------
# Unary

cdef struct _unary_job:
    pyconv_unary_fn fn
    int op
    float a, b
    const float *x
    float *y


cdef void _unary_range(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef const _unary_job *j = <const _unary_job *>arg
    j.fn(j.op, j.x + lo, j.y + lo, hi - lo, j.a, j.b)


cdef void _run_unary(const exec_ctx *ctx, int op, float a, float b, const float *x, float *y,
                     int64_t n) noexcept nogil:
    cdef _unary_job j
    j.fn = _kernel_of(ctx).unary
    if n < 2 * CHUNK or ctx.nthreads <= 1:
        j.fn(op, x, y, n, a, b)
        return
    j.op = op
    j.a = a
    j.b = b
    j.x = x
    j.y = y
    parallel_for(ctx.nthreads, n, max(<int64_t>CHUNK, grain_for(n, ctx.nthreads)),
                 _unary_range, &j)


cdef inline object _contiguous(object x):
    """x, or a C-contiguous copy (np.ascontiguousarray would make a 0-d array 1-d)."""
    return x if x.flags.c_contiguous else np.array(x, order="C")


cdef object _out_for(object out, object x):
    """`out` when it is a float32 C-contiguous writable array of x's shape that is x itself
    or does not overlap it; a new (aligned) array when out is None; else an error."""
    if out is None:
        return empty_of(x.shape)
    if (not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != x.shape
            or not out.flags.c_contiguous or not out.flags.writeable):
        raise InvalidArgument(
            f"out: expected a writable C-contiguous float32 array of shape {x.shape}, got "
            f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
    if out is not x and cnp.PyArray_DATA(<cnp.ndarray>out) != cnp.PyArray_DATA(<cnp.ndarray>x) \
            and arrays_overlap(out, x):
        raise InvalidArgument("out: overlaps the input without being the same memory")
    return out


def unary(x, op, float a=0.0, float b=0.0, out=None, context=None):
    """``y = f(x)`` element by element on float32 (``op`` a name of :data:`UNARY`, ``a``
    and ``b`` its parameters as in the conv epilogue).

    Parameters
    ----------
    x : ndarray, float32, any shape
    out : ndarray, float32, x's shape, optional
        Written and returned; may be ``x`` itself (in place).
    context : ExecutionContext, optional

    Returns
    -------
    ndarray, float32, x's shape
    """
    cdef int code = unary_code(op) if not isinstance(op, int) else op
    if isinstance(x, np.float32):
        x = np.asarray(x)                   # a NumPy scalar (a 0-d result of a ufunc)
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise InvalidDType(f"{op}: expected a float32 ndarray, got "
                           f"{getattr(x, 'dtype', type(x).__name__)}")
    cdef exec_ctx ctx = context_of(context)
    x = _contiguous(x)
    y = _out_for(out, x)
    cdef int64_t n = x.size
    cdef const float *px = <const float *>cnp.PyArray_DATA(<cnp.ndarray>x)
    cdef float *py = <float *>cnp.PyArray_DATA(<cnp.ndarray>y)
    if n > 0:
        with nogil:
            _run_unary(&ctx, code, a, b, px, py, n)
    return y


cdef class UnaryCall:
    """A unary op bound to a planned input shape and output buffer: ``call(inputs)`` is
    ``[f(inputs[0])]`` in that buffer, or the op's ``run`` when the input is not the planned
    float32 C-contiguous array."""
    cdef exec_ctx ctx
    cdef int code
    cdef float a, b
    cdef int ndim
    cdef cnp.npy_intp dims[32]
    cdef int64_t n
    cdef object out, shape, run

    def __init__(self, op, shape, out, run, float a=0.0, float b=0.0, context=None):
        self.code = unary_code(op)
        self.a = a
        self.b = b
        self.ctx = context_of(context)
        self.shape = tuple(int(d) for d in shape)
        if len(self.shape) > 32:
            raise InvalidArgument(f"UnaryCall: rank {len(self.shape)} above 32")
        self.ndim = len(self.shape)
        for i, d in enumerate(self.shape):
            self.dims[i] = d
        self.n = math.prod(check_tensor_size(self.shape))
        if out is not None and (out.shape != self.shape or out.dtype != np.float32
                                or not out.flags.c_contiguous):
            out = None
        self.out = out
        self.run = run

    def __call__(self, inputs):
        x = inputs[0]
        if not planned_array(x, self.ndim, self.dims):
            return self.run(inputs, self.out)
        y = self.out
        if y is None:
            y = empty_lines(self.ndim, self.dims, cnp.NPY_FLOAT32)
        elif (cnp.PyArray_DATA(<cnp.ndarray>y) != cnp.PyArray_DATA(<cnp.ndarray>x)
              and arrays_overlap(y, x)):
            return self.run(inputs, None)
        cdef const float *px = <const float *>cnp.PyArray_DATA(<cnp.ndarray>x)
        cdef float *py = <float *>cnp.PyArray_DATA(<cnp.ndarray>y)
        if self.n > 0:
            with nogil:
                _run_unary(&self.ctx, self.code, self.a, self.b, px, py, self.n)
        return [y]


# ---------------------------------------------------------------------------------------
# Binary

cdef struct _operand:
    const float *p
    int kind


cdef struct _binary_job:
    pyconv_binary_fn fn
    int op
    _operand a, b
    float *y
    int64_t L, M        # TILED / CHANNEL geometry (see the enum)


cdef inline const float *_at(const _operand *o, int64_t i, int64_t L, int64_t M,
                             int64_t *stride) noexcept nogil:
    if o.kind == FULL:
        stride[0] = 1
        return o.p + i
    if o.kind == SCALAR:
        stride[0] = 0
        return o.p
    if o.kind == TILED:
        stride[0] = 1
        return o.p + i % L
    stride[0] = 0
    return o.p + (i // L) % M


cdef void _binary_range(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Outputs [lo, hi), cut where a TILED or CHANNEL operand wraps (every L outputs)."""
    cdef const _binary_job *j = <const _binary_job *>arg
    cdef int64_t i = lo, end, sa, sb
    cdef bint cut = j.a.kind >= TILED or j.b.kind >= TILED
    cdef const float *pa
    cdef const float *pb
    while i < hi:
        end = min(hi, (i // j.L + 1) * j.L) if cut else hi
        pa = _at(&j.a, i, j.L, j.M, &sa)
        pb = _at(&j.b, i, j.L, j.M, &sb)
        j.fn(j.op, pa, sa, pb, sb, j.y + i, end - i)
        i = end


cdef void _run_binary(const exec_ctx *ctx, _binary_job *j, int64_t n) noexcept nogil:
    j.fn = _kernel_of(ctx).binary
    if n < 2 * CHUNK or ctx.nthreads <= 1:
        _binary_range(j, 0, n, 0)
    else:
        parallel_for(ctx.nthreads, n, max(<int64_t>CHUNK, grain_for(n, ctx.nthreads)),
                     _binary_range, j)


def binary_layout(a_shape, b_shape):
    """How the kernels read two operands broadcast together, or None when they cannot.

    Returns
    -------
    (out_shape, a_kind, b_kind, L, M) or None
        The kinds are FULL, SCALAR, TILED or CHANNEL (see the module comment); one of
        the two is FULL, or both are SCALAR.
    """
    try:
        out_shape = np.broadcast_shapes(tuple(a_shape), tuple(b_shape))
    except ValueError:
        return None
    cdef int64_t L = 1, M = 1
    kinds = []
    for shape in (tuple(a_shape), tuple(b_shape)):
        kind, l, m = _operand_kind(shape, out_shape)
        if kind < 0:
            return None
        if kind >= TILED:
            L, M = l, m
        kinds.append(kind)
    if not (kinds[0] == FULL or kinds[1] == FULL or kinds == [SCALAR, SCALAR]):
        return None
    return out_shape, kinds[0], kinds[1], L, M


cdef tuple _operand_kind(tuple shape, tuple out_shape):
    """(kind, L, M) of one operand; kind -1 when its broadcast is not one block of dims."""
    cdef int64_t size = 1, total = 1
    for d in shape:
        size *= d
    for d in out_shape:
        total *= d
    if size == total:
        return FULL, 1, 1
    if size == 1:
        return SCALAR, 1, 1
    padded = (1,) * (len(out_shape) - len(shape)) + shape
    # Dims where the output is 1 do not matter; the rest where the operand is not 1 must
    # be one contiguous block.
    axes = [k for k, d in enumerate(out_shape) if d != 1]
    own = [k for k in axes if padded[k] != 1]
    if not own:
        return -1, 1, 1
    first, last = own[0], own[len(own) - 1]     # (no negative indices: wraparound is off)
    if any(k not in own for k in axes if first <= k <= last):
        return -1, 1, 1
    cdef int64_t m = 1, l = 1
    for k in range(first, last + 1):
        m *= out_shape[k]
    for k in range(last + 1, len(out_shape)):
        l *= out_shape[k]
    if l == 1:
        return TILED, m, 1
    return CHANNEL, l, m


cdef void _fill_job(_binary_job *j, int op, object layout):
    """The job's operation and geometry (the pointers are set per call)."""
    _, ka, kb, L, M = layout
    j.op = op
    j.a.kind = ka
    j.b.kind = kb
    j.L = L
    j.M = M


cdef inline void _set_data(_binary_job *j, object a, object b, object y) noexcept:
    j.a.p = <const float *>cnp.PyArray_DATA(<cnp.ndarray>a)
    j.b.p = <const float *>cnp.PyArray_DATA(<cnp.ndarray>b)
    j.y = <float *>cnp.PyArray_DATA(<cnp.ndarray>y)


cdef bint _may_write(object y, object a, object a_full) noexcept:
    """y may be written while a is read: same memory when a is read element for element
    (FULL), else no overlap at all."""
    if a_full and cnp.PyArray_DATA(<cnp.ndarray>y) == cnp.PyArray_DATA(<cnp.ndarray>a):
        return True
    return not arrays_overlap(y, a)


def binary(a, b, op, out=None, context=None):
    """``a op b`` with broadcasting, on float32 arrays, or None when the kernels do not
    cover the case (other dtypes or broadcasts: the caller uses NumPy).

    Parameters
    ----------
    a, b : ndarray, float32
    op : str
        A name of :data:`BINARY`.
    out : ndarray, optional
        The result buffer (a planned one): used when it is a C-contiguous float32 array of
        the broadcast shape that overlaps neither input (or is a same-shape input itself).
    context : ExecutionContext, optional

    Returns
    -------
    ndarray or None
    """
    cdef int code = binary_code(op)
    if isinstance(a, np.float32):
        a = np.asarray(a)
    if isinstance(b, np.float32):
        b = np.asarray(b)
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
            and a.dtype == np.float32 and b.dtype == np.float32):
        return None
    layout = binary_layout(a.shape, b.shape)
    if layout is None:
        return None
    cdef exec_ctx ctx = context_of(context)
    a = _contiguous(a)
    b = _contiguous(b)
    out_shape = layout[0]
    if (out is None or not isinstance(out, np.ndarray) or out.dtype != np.float32
            or out.shape != out_shape or not out.flags.c_contiguous
            or not out.flags.writeable or not _may_write(out, a, layout[1] == FULL)
            or not _may_write(out, b, layout[2] == FULL)):
        out = empty_aligned(out_shape)
    cdef _binary_job j
    _fill_job(&j, code, layout)
    _set_data(&j, a, b, out)
    cdef int64_t n = out.size
    if n > 0:
        with nogil:
            _run_binary(&ctx, &j, n)
    return out


cdef class BinaryCall:
    """A binary op bound to planned input shapes and an output buffer: ``call(inputs)`` is
    ``[inputs[0] op inputs[1]]``, or the op's ``run`` when the inputs are not the planned
    float32 C-contiguous arrays."""
    cdef exec_ctx ctx
    cdef int code
    cdef int nd[2]
    cdef cnp.npy_intp dims[2][32]
    cdef int odim
    cdef cnp.npy_intp odims[32]
    cdef int64_t n
    cdef _binary_job job         # operation and geometry, fixed; pointers set per call
    cdef bint a_full, b_full
    cdef object out, run, layout

    def __init__(self, op, a_shape, b_shape, out, run, context=None):
        self.code = binary_code(op)
        self.ctx = context_of(context)
        self.layout = binary_layout(a_shape, b_shape)
        if self.layout is None:
            raise InvalidArgument(f"BinaryCall: shapes {a_shape} and {b_shape} are not a "
                                  f"broadcast the kernels take")
        _fill_job(&self.job, self.code, self.layout)
        self.a_full = self.layout[1] == FULL
        self.b_full = self.layout[2] == FULL
        shapes = (tuple(a_shape), tuple(b_shape), tuple(self.layout[0]))
        if max(len(s) for s in shapes) > 32:
            raise InvalidArgument("BinaryCall: rank above 32")
        for k in range(2):
            self.nd[k] = len(shapes[k])
            for i, d in enumerate(shapes[k]):
                self.dims[k][i] = d
        self.odim = len(shapes[2])
        for i, d in enumerate(shapes[2]):
            self.odims[i] = d
        self.n = math.prod(check_tensor_size(shapes[2]))
        if out is not None and (out.shape != shapes[2] or out.dtype != np.float32
                                or not out.flags.c_contiguous):
            out = None
        self.out = out
        self.run = run

    def __call__(self, inputs):
        a, b = inputs[0], inputs[1]
        if not (planned_array(a, self.nd[0], self.dims[0])
                and planned_array(b, self.nd[1], self.dims[1])):
            return self.run(inputs, self.out)
        y = self.out
        if y is None:
            y = empty_lines(self.odim, self.odims, cnp.NPY_FLOAT32)
        elif not (_may_write(y, a, self.a_full) and _may_write(y, b, self.b_full)):
            return self.run(inputs, None)
        cdef _binary_job j = self.job
        _set_data(&j, a, b, y)
        if self.n > 0:
            with nogil:
                _run_binary(&self.ctx, &j, self.n)
        return [y]


# ---------------------------------------------------------------------------------------
# Row standardisation

cdef object _row_matrix(object x, str op):
    """x as a C-contiguous 2-D float32 matrix, or InvalidDType naming op."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2:
        raise InvalidDType(f"{op}: expected a 2-D float32 ndarray, got "
                           f"{getattr(x, 'dtype', type(x).__name__)} "
                           f"{getattr(x, 'shape', '')}")
    return _contiguous(x)


cdef void _over_rows(const exec_ctx *ctx, int64_t rows, int64_t cols, pyconv_range_fn fn,
                     void *job) noexcept nogil:
    """fn over the rows, split over the threads where there are at least 2 CHUNKs."""
    if rows * cols < 2 * CHUNK or ctx.nthreads <= 1 or rows < 2:
        fn(job, 0, rows, 0)
    else:
        parallel_for(ctx.nthreads, rows,
                     max((CHUNK + cols - 1) // cols, grain_for(rows, ctx.nthreads)), fn, job)


cdef struct _std_job:
    pyconv_standardize_fn fn
    const float *x
    float *y
    int64_t n               # columns
    double eps
    const float *s          # (p, k) or NULL
    const float *b
    int64_t p, k
    double *mean
    double *inv


cdef void _std_range(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef const _std_job *j = <const _std_job *>arg
    cdef int64_t r, q
    for r in range(lo, hi):
        q = (r % j.p) * j.k
        j.fn(j.x + r * j.n, j.y + r * j.n, j.n, j.eps, j.s + q if j.s != NULL else NULL,
             j.b + q if j.b != NULL else NULL, j.k, j.mean + r, j.inv + r)


cdef object _row_params(object p, str name, int64_t rows, int64_t cols):
    """`p` as a C-contiguous float32 (P, K) array whose P divides rows and K cols."""
    if p is None:
        return None
    p = np.asarray(p)
    if (p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 1 or rows % p.shape[0]
            or cols % p.shape[1]):
        raise InvalidArgument(f"standardize: {name} of shape {p.shape}: expected (P, K) with "
                              f"P dividing the {rows} rows and K the {cols} columns")
    return np.ascontiguousarray(p, np.float32)


def standardize(x, double eps, scale=None, bias=None, out=None, context=None):
    """The rows of a float32 matrix standardised: ``(x - mean) / sqrt(var + eps) * scale +
    bias`` per row, mean and variance accumulated in double (two passes).

    Parameters
    ----------
    x : ndarray, float32, (rows, cols), cols >= 1
    scale, bias : array (P, K), optional
        Row ``r`` takes row ``r % P``, its ``K`` values each for a run of ``cols / K``
        consecutive columns ((1, cols): per column, as LayerNormalization; (C, 1): per row,
        as InstanceNormalization). Missing: 1 and 0.
    out : ndarray, float32, x's shape, optional
        Written and returned; may be ``x`` itself.
    context : ExecutionContext, optional

    Returns
    -------
    (y, mean, inv_std)
        ``mean`` and ``inv_std = 1 / sqrt(var + eps)`` as (rows, 1) float64 columns.
    """
    x = _row_matrix(x, "standardize")
    cdef int64_t rows = x.shape[0], cols = x.shape[1]
    if cols < 1:
        raise InvalidArgument(f"standardize: rows of {cols} values have no mean")
    s = _row_params(scale, "scale", rows, cols)
    b = _row_params(bias, "bias", rows, cols)
    if s is not None and b is not None and s.shape != b.shape:
        raise InvalidArgument(f"standardize: scale {s.shape} and bias {b.shape} differ")
    cdef exec_ctx ctx = context_of(context)
    y = _out_for(out, x)
    mean = np.empty((rows, 1), np.float64)
    inv = np.empty((rows, 1), np.float64)
    cdef _std_job j
    j.fn = _kernel_of(&ctx).standardize
    j.x = <const float *>cnp.PyArray_DATA(<cnp.ndarray>x)
    j.y = <float *>cnp.PyArray_DATA(<cnp.ndarray>y)
    j.n = cols
    j.eps = eps
    j.s = <const float *>cnp.PyArray_DATA(<cnp.ndarray>s) if s is not None else NULL
    j.b = <const float *>cnp.PyArray_DATA(<cnp.ndarray>b) if b is not None else NULL
    j.p = (s if s is not None else b).shape[0] if (s is not None or b is not None) else 1
    j.k = (s if s is not None else b).shape[1] if (s is not None or b is not None) else 1
    j.mean = <double *>cnp.PyArray_DATA(<cnp.ndarray>mean)
    j.inv = <double *>cnp.PyArray_DATA(<cnp.ndarray>inv)
    with nogil:
        _over_rows(&ctx, rows, cols, _std_range, &j)
    return y, mean, inv


# ---------------------------------------------------------------------------------------
# Row softmax

cdef struct _softmax_job:
    pyconv_softmax_fn fn
    const float *x
    float *y
    int64_t n               # columns
    int log


cdef void _softmax_range(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef const _softmax_job *j = <const _softmax_job *>arg
    cdef int64_t r
    for r in range(lo, hi):
        j.fn(j.x + r * j.n, j.y + r * j.n, j.n, j.log)


def softmax(x, bint log=False, out=None, context=None):
    """Softmax (``log``: log_softmax) of each row of a float32 matrix: ``exp(x - max) /
    sum``, or ``(x - max) - log(sum)``, the sum accumulated in double; a NaN in a row makes
    the row NaN.

    Parameters
    ----------
    x : ndarray, float32, (rows, cols), cols >= 1
    out : ndarray, float32, x's shape, optional
        Written and returned; may be ``x`` itself.
    context : ExecutionContext, optional
    """
    x = _row_matrix(x, "softmax")
    cdef int64_t rows = x.shape[0], cols = x.shape[1]
    if cols < 1:
        raise InvalidArgument(f"softmax: rows of {cols} values")
    cdef exec_ctx ctx = context_of(context)
    y = _out_for(out, x)
    cdef _softmax_job j
    j.fn = _kernel_of(&ctx).softmax
    j.x = <const float *>cnp.PyArray_DATA(<cnp.ndarray>x)
    j.y = <float *>cnp.PyArray_DATA(<cnp.ndarray>y)
    j.n = cols
    j.log = log
    with nogil:
        _over_rows(&ctx, rows, cols, _softmax_range, &j)
    return y


# ---------------------------------------------------------------------------------------
# Column standardisation (channels-first layer norm)

cdef enum:
    STDC_COLUMNS = 64       # columns (pixels) of one task


cdef struct _stdc_job:
    pyconv_standardize_cols_fn fn
    const float *x
    float *y
    int64_t c, p            # channels, pixels of one image
    int64_t blocks          # tasks per image
    double eps
    const float *s          # (c,) or NULL
    const float *b
    double *mean            # (images, p)
    double *inv


cdef void _stdc_range(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef const _stdc_job *j = <const _stdc_job *>arg
    cdef int64_t t, n, j0, j1
    for t in range(lo, hi):
        n = t // j.blocks
        j0 = (t - n * j.blocks) * STDC_COLUMNS
        j1 = min(j0 + STDC_COLUMNS, j.p)
        j.fn(j.x + n * j.c * j.p, j.y + n * j.c * j.p, j.c, j.p, j0, j1, j.eps, j.s, j.b,
             j.mean + n * j.p, j.inv + n * j.p)


def standardize_columns(x, double eps, scale=None, bias=None, context=None):
    """Each column of the (C, P) matrices of a float32 (N, C, P) array standardised over
    its C values, ``(x - mean) / sqrt(var + eps) * scale + bias`` with ``scale`` and
    ``bias`` (C,) (missing: 1 and 0): a layer norm over the channels of each pixel of NCHW
    images. The arithmetic of :func:`standardize` (two passes, sums in float blocks then
    double), split over threads by blocks of columns.

    Returns
    -------
    (y, mean, inv_std)
        ``y`` (N, C, P) float32; ``mean`` and ``inv_std = 1 / sqrt(var + eps)`` (N, P)
        float64.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 3:
        raise InvalidDType(f"standardize_columns: expected a 3-D float32 ndarray, got "
                           f"{getattr(x, 'dtype', type(x).__name__)} "
                           f"{getattr(x, 'shape', '')}")
    cdef int64_t n = x.shape[0], c = x.shape[1], p = x.shape[2]
    if c < 1:
        raise InvalidArgument(f"standardize_columns: columns of {c} values have no mean")
    params = []
    for name, v in (("scale", scale), ("bias", bias)):
        if v is not None:
            v = np.ascontiguousarray(v, np.float32)
            if v.shape != (c,):
                raise InvalidArgument(f"standardize_columns: {name} of shape {v.shape}: "
                                      f"expected ({c},)")
        params.append(v)
    s, b = params
    cdef exec_ctx ctx = context_of(context)
    x = _contiguous(x)
    y = empty_of((n, c, p))
    mean = np.empty((n, p), np.float64)
    inv = np.empty((n, p), np.float64)
    if n * p == 0:
        return y, mean, inv
    cdef _stdc_job j
    j.fn = _kernel_of(&ctx).standardize_cols
    j.x = <const float *>cnp.PyArray_DATA(<cnp.ndarray>x)
    j.y = <float *>cnp.PyArray_DATA(<cnp.ndarray>y)
    j.c, j.p = c, p
    j.blocks = (p + STDC_COLUMNS - 1) // STDC_COLUMNS
    j.eps = eps
    j.s = <const float *>cnp.PyArray_DATA(<cnp.ndarray>s) if s is not None else NULL
    j.b = <const float *>cnp.PyArray_DATA(<cnp.ndarray>b) if b is not None else NULL
    j.mean = <double *>cnp.PyArray_DATA(<cnp.ndarray>mean)
    j.inv = <double *>cnp.PyArray_DATA(<cnp.ndarray>inv)
    cdef int64_t tasks = n * j.blocks
    with nogil:
        if n * c * p < 2 * CHUNK or ctx.nthreads <= 1 or tasks < 2:
            _stdc_range(&j, 0, tasks, 0)
        else:
            parallel_for(ctx.nthreads, tasks, grain_for(tasks, ctx.nthreads), _stdc_range, &j)
    return y, mean, inv
