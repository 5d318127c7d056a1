# Pooling kernels: max / average / Lp pooling over sliding windows, adaptive and global
# pooling, max unpooling. float32, NCHW, OpenMP, GIL released.
#
# Every problem is handled as 3-D: a C-contiguous input (P, D, H, W) with P = N * C planes
# (1-D and 2-D get leading size-1 spatial dims and a 1-tap kernel on them), an output
# (P, OD, OH, OW). The work unit is one output row (plane, od, oh); a static prange over
# all rows gives each thread a contiguous block of planes when there are many of them, and
# of rows inside a plane when there are fewer planes than threads. Each output element is
# computed by the same code whatever the thread count, so results do not depend on it.
#
# Sliding-window max and average pooling without indices run in the per-ISA C kernel of
# src/kernels/pool_* (same dispatch as the GEMM; generic included), for any stride, window
# and padding: separable passes (the window's input rows combined into one row, then each
# output column's taps of that row), a plain max checked for NaN, and torch's NaN rule on
# the rows that hold one (see pool.h). Small 2-D planes of many channels run a vector's
# width of planes at a time, one plane a lane (pool_lanes: transposed into a padded
# pixel-major window, every output pixel one vector per tap, transposed back; the row
# kernel's values bit for bit); a few planes of rows of at most one vector in and out
# compute each output row in registers, the column taps moved into place by permutes
# (pool_small_rows).
# Lp pooling is separable the same way and stays here: the vertical pass sums |x| ** p
# over the window's rows (contiguous, vectorised), the horizontal pass sums each column's
# taps (fused taps with constant stride for kw <= 3, stride <= 2 on the interior columns,
# whose taps are all inside the input; clipped one by one at the borders), then the root.
# Max pooling with indices runs the taps directly (tap outer, output column inner), in the
# C order of the window so that ties keep the first tap; positions are tracked as int32
# within the plane (planes of 2**31 elements or more take a scalar int64 path).
#
# NaN: max pooling takes a tap when it is larger than the running max OR is NaN (torch's
# rule), so NaN propagates. Windows with no input element (possible with dilation) give
# -inf (max, index -1), and 0 / count for the average (NaN when count_include_pad is off:
# nothing to count). The plane reductions stay here, auto-vectorised for the baseline ISA.
import numpy as np

cimport numpy as cnp
from libc.math cimport INFINITY, NAN, fabsf, powf, sqrtf
from libc.stdint cimport int64_t

cdef extern from "math.h" nogil:
    bint isunordered(float x, float y)    # x or y is NaN (one compare instruction)

cnp.import_array()

from pyconv._ext.conv_geom cimport pyconv_conv_geom, pyconv_inside_range
from pyconv._ext.gemm cimport (arrays_overlap, context_of, exec_ctx, grain_for, parallel_for,
                               planned_array, slot_floats, threads_for, workspace_floats)

cdef extern from "pool.h" nogil:
    ctypedef struct pyconv_pool_geom:
        pyconv_conv_geom win
        int64_t planes
        int64_t ow_lo, ow_hi         # interior output columns: every w tap inside the input
        int is_max
        int count_include_pad        # average: divide by the taps inside the padded input
        float divisor                # average: divisor_override; 0: none
    void pyconv_pool_taps(const pyconv_conv_geom *g, int i, int64_t o, int64_t *lo,
                          int64_t *hi)
    ctypedef void (*pyconv_pool_rows_fn)(const pyconv_pool_geom *g, const float *x, float *y,
                                         int64_t r0, int64_t r1, float *tmp) noexcept nogil
    ctypedef void (*pyconv_pool_lanes_fn)(const pyconv_pool_geom *g, const float *x, float *y,
                                          int64_t b0, int64_t b1, float *ws) noexcept nogil
    ctypedef struct pyconv_pool_kernel:
        const char *isa
        const char *name
        pyconv_pool_rows_fn rows
        pyconv_pool_lanes_fn channels
        int lanes
    const pyconv_pool_kernel *pyconv_pool_kernel_for(const char *isa)
    int64_t pyconv_pool_lanes_workspace_floats(const pyconv_conv_geom *g, int64_t lanes)

cdef enum:
    LANES_MAX_WIDTH = 64            # widest output rows run lanes planes at a time (_by_lanes)

cdef enum:
    MODE_MAX = 0
    MODE_AVG = 1
    MODE_LP = 2

MODES = {"max": MODE_MAX, "avg": MODE_AVG, "lp": MODE_LP}
INDEX_MODES = ("none", "torch", "onnx")


cdef struct params:
    int mode
    float p                          # Lp norm
    int index_mode                   # 0 none, 1 torch (per plane), 2 onnx (whole tensor)


# ---------------------------------------------------------------------------------------
# Element-wise row operations (plain loops over contiguous rows for GCC's vectoriser).

cdef inline float _nanmax(float v, float m) noexcept nogil:
    """max with torch's NaN rule: take v if it is larger or NaN (a NaN m stays)."""
    return v if ((v > m) | (v != v)) else m


cdef inline void _fill(float *dst, int64_t n, float v) noexcept nogil:
    cdef int64_t i
    for i in range(n):
        dst[i] = v


cdef inline void _copy(float *dst, const float *src, int64_t n) noexcept nogil:
    cdef int64_t i
    for i in range(n):
        dst[i] = src[i]


cdef inline int _max2(float *dst, const float *a, const float *b, int64_t n,
                      bint nan_aware) noexcept nogil:
    """dst = max(a, b). Plain (fast) max unless nan_aware; returns whether the plain pass
    met a NaN (its result must then be recomputed nan_aware)."""
    cdef int64_t i
    cdef int bad = 0
    cdef float u, v
    if nan_aware:
        for i in range(n):
            dst[i] = _nanmax(b[i], a[i])
        return 0
    for i in range(n):
        u = a[i]
        v = b[i]
        dst[i] = v if v > u else u
        bad = bad | isunordered(u, v)
    return bad


cdef inline int _has_nan(const float *a, int64_t n) noexcept nogil:
    cdef int64_t i
    cdef int bad = 0
    cdef float u
    for i in range(n):
        u = a[i]
        bad = bad | (u != u)
    return bad


cdef inline void _add2(float *dst, const float *a, const float *b, int64_t n) noexcept nogil:
    cdef int64_t i
    for i in range(n):
        dst[i] = a[i] + b[i]


cdef inline void _pow_add_into(float *dst, const float *src, int64_t n, float p,
                               bint first) noexcept nogil:
    """dst (+)= |src| ** p."""
    cdef int64_t i
    cdef float v
    if p == 2.0:
        if first:
            for i in range(n):
                v = src[i]
                dst[i] = v * v
        else:
            for i in range(n):
                v = src[i]
                dst[i] = dst[i] + v * v
    elif p == 1.0:
        if first:
            for i in range(n):
                dst[i] = fabsf(src[i])
        else:
            for i in range(n):
                dst[i] = dst[i] + fabsf(src[i])
    else:
        if first:
            for i in range(n):
                dst[i] = powf(fabsf(src[i]), p)
        else:
            for i in range(n):
                dst[i] = dst[i] + powf(fabsf(src[i]), p)


# Lp horizontal pass, interior columns: out[ow] = sum over c < k of src[ow * s + off + c * dl].
# Called with constant s, k, dl for the common windows so that GCC unrolls the taps and
# sees constant-stride loads; other windows run one loop per tap.

cdef inline void _h_sum_fused(float *out, const float *src, int64_t lo, int64_t hi,
                              int64_t s, int64_t off, int64_t k, int64_t dl) noexcept nogil:
    cdef int64_t ow, c
    cdef const float *p
    cdef float m
    for ow in range(lo, hi):
        p = src + ow * s + off
        m = p[0]
        for c in range(1, k):
            m = m + p[c * dl]
        out[ow] = m


cdef void _h_sum(float *out, const float *src, int64_t lo, int64_t hi, int64_t s,
                 int64_t off, int64_t k, int64_t dl) noexcept nogil:
    cdef int64_t c, ow
    if dl == 1 and (s == 1 or s == 2) and 1 <= k <= 3:
        if s == 1:
            if k == 1:
                _h_sum_fused(out, src, lo, hi, 1, off, 1, 1)
            elif k == 2:
                _h_sum_fused(out, src, lo, hi, 1, off, 2, 1)
            else:
                _h_sum_fused(out, src, lo, hi, 1, off, 3, 1)
        else:
            if k == 1:
                _h_sum_fused(out, src, lo, hi, 2, off, 1, 1)
            elif k == 2:
                _h_sum_fused(out, src, lo, hi, 2, off, 2, 1)
            else:
                _h_sum_fused(out, src, lo, hi, 2, off, 3, 1)
        return
    for ow in range(lo, hi):
        out[ow] = src[ow * s + off]
    for c in range(1, k):
        for ow in range(lo, hi):
            out[ow] = out[ow] + src[ow * s + off + c * dl]


# ---------------------------------------------------------------------------------------
# One output row of Lp pooling (max and average rows: the ISA kernel).

cdef void _pool_borders(float *out, const float *src,
                        const pyconv_pool_geom *pg) noexcept nogil:
    """Border columns [0, ow_lo) and [ow_hi, OW) of a row: clip the taps to src's W."""
    cdef const pyconv_conv_geom *g = &pg.win
    cdef int64_t OW = g.out_size[2], lo = pg.ow_lo, hi = pg.ow_hi
    cdef int64_t sw = g.s[2], pw = g.pb[2], dw = g.dl[2]
    cdef int64_t ow, c, c0, c1
    cdef float acc
    ow = 0
    while ow < OW:
        if ow == lo and hi > lo:
            ow = hi
            if ow >= OW:
                break
        pyconv_pool_taps(g, 2, ow, &c0, &c1)
        acc = 0.0
        for c in range(c0, c1):
            acc = acc + src[ow * sw - pw + c * dw]
        out[ow] = acc
        ow = ow + 1


cdef void _pool_row(const float *x, float *y, const pyconv_pool_geom *pg, const params *prm,
                    int64_t r,
                    float *tmp) noexcept nogil:
    """Output row r = (plane, od, oh) of Lp pooling; tmp holds W floats."""
    cdef const pyconv_conv_geom *g = &pg.win
    cdef int64_t D = g.in_size[0], H = g.in_size[1], W = g.in_size[2], OW = g.out_size[2]
    cdef int64_t kw = g.k[2], sw = g.s[2], pw = g.pb[2], dw = g.dl[2]
    cdef int64_t plane = r // (g.out_size[0] * g.out_size[1])
    cdef int64_t q = r - plane * (g.out_size[0] * g.out_size[1])
    cdef int64_t od = q // g.out_size[1]
    cdef int64_t oh = q - od * g.out_size[1]
    cdef const float *xp = x + plane * D * H * W
    cdef float *out = y + r * OW
    cdef int64_t a0, a1, b0, b1, a, b, ow
    cdef int64_t lo = pg.ow_lo, hi = pg.ow_hi
    cdef float v
    cdef bint started = False

    # Vertical pass: tmp = sum of |x| ** p over the window's input rows.
    pyconv_pool_taps(g, 0, od, &a0, &a1)
    pyconv_pool_taps(g, 1, oh, &b0, &b1)
    if (a1 - a0) * (b1 - b0) == 0:
        _fill(tmp, W, 0.0)
    for a in range(a0, a1):
        for b in range(b0, b1):
            _pow_add_into(tmp, xp + ((od * g.s[0] - g.pb[0] + a * g.dl[0]) * H
                                     + oh * g.s[1] - g.pb[1] + b * g.dl[1]) * W,
                          W, prm.p, not started)
            started = True

    # Horizontal pass: the interior columns, then the border columns.
    if hi > lo:
        _h_sum(out, tmp, lo, hi, sw, -pw, kw, dw)
    _pool_borders(out, tmp, pg)

    # The root.
    if prm.p == 2.0:
        for ow in range(OW):
            out[ow] = sqrtf(out[ow])
    elif prm.p != 1.0:
        v = 1.0 / prm.p
        for ow in range(OW):
            out[ow] = powf(out[ow], v)


cdef inline void _idx_tap(float *out, int *bt, const float *row, int64_t lo, int64_t hi,
                         int64_t s, int64_t off, int rowbase) noexcept nogil:
    """One tap of max pooling with indices over the interior columns [lo, hi):
    out / bt hold the running max and its position in the plane (-1: none yet)."""
    cdef int64_t ow, j
    cdef int t
    cdef float v, o
    cdef bint better
    for ow in range(lo, hi):
        j = ow * s + off
        v = row[j]
        o = out[ow]
        t = bt[ow]
        better = (v > o) | isunordered(v, v) | (t < 0)
        out[ow] = v if better else o
        bt[ow] = rowbase + <int>j if better else t


cdef void _max_row_indices(const float *x, float *y, int64_t *ind,
                           const pyconv_pool_geom *pg, const params *prm, int64_t r,
                           int *bt) noexcept nogil:
    """Output row r of max pooling with indices (per-plane, or whole-tensor for ONNX).

    Positions are tracked as int32 within the plane (bt: OW ints of scratch), which needs
    planes of fewer than 2**31 elements (see _max_row_indices_wide)."""
    cdef const pyconv_conv_geom *g = &pg.win
    cdef int64_t D = g.in_size[0], H = g.in_size[1], W = g.in_size[2], OW = g.out_size[2]
    cdef int64_t kw = g.k[2], sw = g.s[2], pw = g.pb[2], dw = g.dl[2]
    cdef int64_t plane = r // (g.out_size[0] * g.out_size[1])
    cdef int64_t q = r - plane * (g.out_size[0] * g.out_size[1])
    cdef int64_t od = q // g.out_size[1]
    cdef int64_t oh = q - od * g.out_size[1]
    cdef const float *xp = x + plane * D * H * W
    cdef float *out = y + r * OW
    cdef int64_t *oi = ind + r * OW
    cdef int64_t base = plane * D * H * W if prm.index_mode == 2 else 0
    cdef int64_t a0, a1, b0, b1, c0, c1, a, b, c, ow, lo = pg.ow_lo, hi = pg.ow_hi
    cdef int rowbase, j
    cdef int64_t off
    cdef const float *row
    cdef float v

    pyconv_pool_taps(g, 0, od, &a0, &a1)
    pyconv_pool_taps(g, 1, oh, &b0, &b1)
    for ow in range(OW):
        out[ow] = -INFINITY
        bt[ow] = -1
    # Taps in the C order of the window (d, h, w): strict '>' keeps the first of equal
    # values; the first tap inside the input is taken even if it is -inf; NaN wins.
    for a in range(a0, a1):
        for b in range(b0, b1):
            rowbase = <int>(((od * g.s[0] - g.pb[0] + a * g.dl[0]) * H
                             + oh * g.s[1] - g.pb[1] + b * g.dl[1]) * W)
            row = xp + rowbase
            if hi > lo:
                for c in range(kw):
                    off = c * dw - pw
                    if sw == 1:
                        _idx_tap(out, bt, row, lo, hi, 1, off, rowbase)
                    elif sw == 2:
                        _idx_tap(out, bt, row, lo, hi, 2, off, rowbase)
                    else:
                        _idx_tap(out, bt, row, lo, hi, sw, off, rowbase)
            ow = 0
            while ow < OW:
                if ow == lo and hi > lo:
                    ow = hi
                    if ow >= OW:
                        break
                pyconv_pool_taps(g, 2, ow, &c0, &c1)
                for c in range(c0, c1):
                    j = <int>(ow * sw - pw + c * dw)
                    v = row[j]
                    if (v > out[ow]) | isunordered(v, v) | (bt[ow] < 0):
                        out[ow] = v
                        bt[ow] = rowbase + j
                ow = ow + 1
    for ow in range(OW):
        oi[ow] = base + bt[ow] if bt[ow] >= 0 else -1


cdef void _max_row_indices_wide(const float *x, float *y, int64_t *ind,
                                const pyconv_pool_geom *pg, const params *prm,
                                int64_t r) noexcept nogil:
    """_max_row_indices for planes of 2**31 elements or more (int64 positions, scalar)."""
    cdef const pyconv_conv_geom *g = &pg.win
    cdef int64_t D = g.in_size[0], H = g.in_size[1], W = g.in_size[2], OW = g.out_size[2]
    cdef int64_t kw = g.k[2], sw = g.s[2], pw = g.pb[2], dw = g.dl[2]
    cdef int64_t plane = r // (g.out_size[0] * g.out_size[1])
    cdef int64_t q = r - plane * (g.out_size[0] * g.out_size[1])
    cdef int64_t od = q // g.out_size[1]
    cdef int64_t oh = q - od * g.out_size[1]
    cdef const float *xp = x + plane * D * H * W
    cdef float *out = y + r * OW
    cdef int64_t *oi = ind + r * OW
    cdef int64_t base = plane * D * H * W if prm.index_mode == 2 else 0
    cdef int64_t a0, a1, b0, b1, c0, c1, a, b, c, ow, lo = pg.ow_lo, hi = pg.ow_hi
    cdef int64_t rowbase, off, j
    cdef const float *row
    cdef float v, o
    cdef bint better

    pyconv_pool_taps(g, 0, od, &a0, &a1)
    pyconv_pool_taps(g, 1, oh, &b0, &b1)
    for ow in range(OW):
        out[ow] = -INFINITY
        oi[ow] = -1
    # Taps in the C order of the window (d, h, w): strict '>' keeps the first of equal
    # values; the first tap inside the input is taken even if it is -inf; NaN wins.
    for a in range(a0, a1):
        for b in range(b0, b1):
            rowbase = ((od * g.s[0] - g.pb[0] + a * g.dl[0]) * H
                       + oh * g.s[1] - g.pb[1] + b * g.dl[1]) * W
            row = xp + rowbase
            rowbase = rowbase + base
            for c in range(kw):
                off = c * dw - pw
                for ow in range(lo, hi):
                    j = ow * sw + off
                    v = row[j]
                    o = out[ow]
                    better = (v > o) | (v != v) | (oi[ow] < 0)
                    out[ow] = v if better else o
                    oi[ow] = rowbase + j if better else oi[ow]
            for ow in range(OW):
                if lo <= ow < hi:
                    continue
                pyconv_pool_taps(g, 2, ow, &c0, &c1)
                for c in range(c0, c1):
                    j = ow * sw - pw + c * dw
                    v = row[j]
                    if (v > out[ow]) | (v != v) | (oi[ow] < 0):
                        out[ow] = v
                        oi[ow] = rowbase + j


cdef struct _rows_job:
    const float *x
    float *y
    int64_t *ind
    const pyconv_pool_geom *pg
    const params *prm
    const pyconv_pool_kernel *kern  # NULL: the rows below (Lp, indices), else the ISA kernel
    bint by_lanes                   # the kernel's blocks of planes across the lanes
    float *ws
    int64_t ws_stride


cdef void _row_tasks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Output rows lo..hi (a contiguous block: whole planes when there are many), or
    blocks of planes lo..hi by lanes."""
    cdef const _rows_job *j = <const _rows_job *>arg
    cdef float *tmp = j.ws + slot * j.ws_stride
    cdef int64_t r
    cdef const pyconv_conv_geom *g = &j.pg.win
    cdef bint wide = g.in_size[0] * g.in_size[1] * g.in_size[2] >= 2147483647
    if j.by_lanes:
        j.kern.channels(j.pg, j.x, j.y, lo, hi, tmp)
        return
    if j.kern != NULL:
        j.kern.rows(j.pg, j.x, j.y, lo, hi, tmp)
        return
    for r in range(lo, hi):
        if j.prm.index_mode == 0:
            _pool_row(j.x, j.y, j.pg, j.prm, r, tmp)
        elif wide:
            _max_row_indices_wide(j.x, j.y, j.ind, j.pg, j.prm, r)
        else:
            _max_row_indices(j.x, j.y, j.ind, j.pg, j.prm, r, <int *>tmp)


cdef void _pool_rows(const float *x, float *y, int64_t *ind, const pyconv_pool_geom *pg,
                     const params *prm, const pyconv_pool_kernel *kern, bint by_lanes,
                     float *ws, int64_t ws_stride, int nthreads) noexcept nogil:
    cdef int64_t rows = pg.planes * pg.win.out_size[0] * pg.win.out_size[1]
    if by_lanes:
        rows = (pg.planes + kern.lanes - 1) // kern.lanes
    # the ISA kernels take max and average without indices, NaN rows included
    cdef const pyconv_pool_kernel *rows_kernel = (
        kern if prm.index_mode == 0 and prm.mode != MODE_LP else NULL)
    cdef _rows_job j = _rows_job(x=x, y=y, ind=ind, pg=pg, prm=prm, kern=rows_kernel,
                                 by_lanes=by_lanes, ws=ws, ws_stride=ws_stride)
    parallel_for(nthreads, rows, grain_for(rows, nthreads), _row_tasks, &j)


cdef object _checked_out(object arr, tuple shape, str name):
    if arr.shape != shape or not arr.flags.c_contiguous:
        raise ValueError(f"pool: {name} must be C-contiguous of shape {shape}, got "
                         f"{arr.shape}")
    return arr          # dtype and writeability: the typed memoryview checks


cdef object _contiguous(object x, str op):
    """The kernels index planes and rows of x as one C-contiguous block."""
    if not x.flags.c_contiguous:
        raise ValueError(f"{op}: x must be C-contiguous")
    return x


cdef inline int64_t _round_up(int64_t x, int64_t m) noexcept nogil:
    return (x + m - 1) // m * m


def pool(str mode, x, tuple out_shape, tuple kernel, tuple stride, tuple pads_begin,
         tuple pads_end, tuple dilation, *, bint count_include_pad=True, double divisor=0.0,
         double p=2.0, str indices="none", out=None, out_indices=None, context=None):
    """Sliding-window pooling on a validated problem (internal: pyconv.functional checks).

    Parameters
    ----------
    mode : {'max', 'avg', 'lp'}
    x : ndarray (P, D, H, W) float32, C-contiguous
        P = N * C planes; 1-D / 2-D problems have size-1 leading spatial dims.
    out_shape : (OD, OH, OW)
    kernel, stride, pads_begin, pads_end, dilation : 3-tuples of int
        Size-1 leading dims take kernel 1, stride 1, pads 0, dilation 1.
    count_include_pad : bool
        Average: divide by the taps inside the padded input (else inside the input).
    divisor : float
        Average: fixed divisor (divisor_override); 0 means none.
    p : float
        Lp norm (> 0).
    indices : {'none', 'torch', 'onnx'}
        Max pooling: also return int64 indices, flattened per (n, c) plane ('torch') or
        over the whole input tensor ('onnx' MaxPool ``Indices``, storage_order 0).
    out, out_indices : ndarray (P, OD, OH, OW), C-contiguous float32 / int64, optional
        Written instead of new arrays (checked by the caller; shape and dtype checked here).
    context : ExecutionContext, optional
        Threads and ISA (None: the process defaults).

    Returns
    -------
    ndarray (P, OD, OH, OW) float32, or (values, indices int64) when indices != 'none'.
    """
    cdef pyconv_pool_geom pg
    cdef params prm
    cdef exec_ctx ctx = context_of(context)
    cdef const float[:, :, :, ::1] xv = _contiguous(x, "pool")
    _pool_setup(&pg, &prm, mode, xv.shape[0], xv.shape[1], xv.shape[2], xv.shape[3],
                out_shape, kernel, stride, pads_begin, pads_end, dilation,
                count_include_pad, divisor, p, indices)
    shape = (pg.planes,) + out_shape
    y = np.empty(shape, dtype=np.float32) if out is None else _checked_out(out, shape, "out")
    ind = None
    if prm.index_mode:
        ind = (np.empty(shape, dtype=np.int64) if out_indices is None
               else _checked_out(out_indices, shape, "out_indices"))
    if y.size == 0:
        return y if ind is None else (y, ind)
    if xv.shape[1] * xv.shape[2] * xv.shape[3] == 0:
        raise ValueError("pool: empty input plane")
    cdef float[:, :, :, ::1] yv = y
    cdef int64_t[:, :, :, ::1] iv
    cdef int64_t *indp = NULL
    if ind is not None:
        iv = ind
        indp = &iv[0, 0, 0, 0]
    _pool_run(&xv[0, 0, 0, 0], &yv[0, 0, 0, 0], indp, &pg, &prm,
              pyconv_pool_kernel_for(ctx.kernel.isa), ctx.nthreads)
    return y if ind is None else (y, ind)


cdef int _pool_setup(pyconv_pool_geom *pg, params *prm, str mode, int64_t planes, int64_t D,
                     int64_t H, int64_t W, tuple out_shape, tuple kernel, tuple stride,
                     tuple pads_begin, tuple pads_end, tuple dilation, bint count_include_pad,
                     double divisor, double p, str indices) except -1:
    """Fills pg and prm from pool()'s arguments, refusing what the kernels cannot run."""
    cdef pyconv_conv_geom *g = &pg.win
    cdef int i
    if mode not in MODES:
        raise ValueError(f"pool: unknown mode {mode!r}")
    if indices not in INDEX_MODES:
        raise ValueError(f"pool: indices must be one of {INDEX_MODES}, got {indices!r}")
    prm.mode = MODES[mode]
    prm.p = <float>p
    prm.index_mode = INDEX_MODES.index(indices)
    if prm.index_mode and prm.mode != MODE_MAX:
        raise ValueError("pool: indices are only computed by max pooling")
    pg.planes = planes
    pg.is_max = prm.mode == MODE_MAX
    pg.count_include_pad = count_include_pad
    pg.divisor = <float>divisor
    g.in_size[0], g.in_size[1], g.in_size[2] = D, H, W
    g.out_size[0], g.out_size[1], g.out_size[2] = out_shape
    for i in range(3):
        g.k[i] = kernel[i]
        g.s[i] = stride[i]
        g.pb[i] = pads_begin[i]
        g.pe[i] = pads_end[i]
        g.dl[i] = dilation[i]
        # Taps are clipped to the input whatever the output size; these keep the clipping
        # arithmetic valid (pyconv.functional has already checked the geometry).
        if g.k[i] < 1 or g.s[i] < 1 or g.dl[i] < 1 or g.pb[i] < 0 or g.pe[i] < 0:
            raise ValueError(f"pool: invalid geometry kernel={kernel} stride={stride} "
                             f"pads={pads_begin}/{pads_end} dilation={dilation}")
    if g.out_size[0] < 0 or g.out_size[1] < 0 or g.out_size[2] < 0:
        raise ValueError(f"pool: invalid output shape {out_shape}")
    # the interior output columns: every w tap inside the input
    pyconv_inside_range(-g.pb[2], g.s[2], (g.k[2] - 1) * g.dl[2] + 1, W, g.out_size[2],
                        &pg.ow_lo, &pg.ow_hi)
    return 0


cdef enum:
    LANES_MAX_FLOATS = 65536        # the lanes path's scratch per task: 256 KiB, L2-resident
    LANES_MAX_SIZE = 65536          # larger sizes, pads, strides, windows: the rows


cdef int64_t _lanes_max_width = -1   # tests: 0 never, large always; -1 the default


def set_pool_lanes_max_width(int64_t width):
    """The widest output rows that pooling runs `lanes` planes at a time on (-1: the
    default, 0: never); for tests and benchmarks. Returns the previous value."""
    global _lanes_max_width
    previous = _lanes_max_width
    _lanes_max_width = width
    return previous


cdef bint _by_lanes(const pyconv_pool_geom *pg, const params *prm,
                    const pyconv_pool_kernel *kern) noexcept nogil:
    """Small 2-D planes of at least half a vector's width of planes run lanes planes at a
    time (pyconv_pool_lanes_fn): the row kernel pays its setup, clipped border columns and
    a reload of the combined row it has just stored (which cannot be forwarded) once per
    output row, some 100 cycles, against a few outputs a row. Measured on AVX-512 (1
    thread, against the rows): Inception's 3x3 / 1 averages on 17x17, 8x8 and 3x3 maps
    3.3x, 2x and 5x faster, its 3x3 / 2 max pools on 36x36 to 8x8 1.5x to 3.6x; the
    direct 2x2 / 2 max rows (no combined row) stay faster from 16 outputs a row (VGG's
    32x32: 25 against 48 us)."""
    cdef const pyconv_conv_geom *g = &pg.win
    cdef int64_t width = _lanes_max_width if _lanes_max_width >= 0 else LANES_MAX_WIDTH
    cdef bint direct_2x2 = (prm.mode == MODE_MAX and g.k[1] == 2 and g.k[2] == 2
                            and g.s[1] == 2 and g.s[2] == 2 and g.pb[1] == 0 and g.pb[2] == 0
                            and g.dl[1] == 1 and g.dl[2] == 1)
    cdef int i
    if _lanes_max_width < 0 and direct_2x2 and g.out_size[2] >= 16:
        return False
    for i in range(1, 3):       # sizes whose window arithmetic stays far inside int64
        if (g.in_size[i] > LANES_MAX_SIZE or g.out_size[i] > LANES_MAX_SIZE
                or g.pb[i] > LANES_MAX_SIZE or g.s[i] > LANES_MAX_SIZE
                or g.k[i] * g.dl[i] > LANES_MAX_SIZE):
            return False
    return (kern.lanes > 1 and kern.channels != NULL and prm.index_mode == 0
            and prm.mode != MODE_LP and g.in_size[0] == 1 and g.out_size[0] == 1
            and g.k[0] == 1 and g.pb[0] == 0 and g.out_size[2] <= width
            and pg.planes * 2 >= kern.lanes
            and pyconv_pool_lanes_workspace_floats(g, kern.lanes) <= LANES_MAX_FLOATS)


cdef int _pool_work(const pyconv_pool_geom *pg, const params *prm,
                    const pyconv_pool_kernel *kern, int threads, int64_t *ws_stride,
                    bint *by_lanes) noexcept nogil:
    """The algorithm (by_lanes, else rows), the threads of a pooling (fewer for small maps,
    at most one per task) and the per-thread workspace in floats (the lanes window, or
    W + 32 for the SIMD row kernel, or OW int32)."""
    cdef const pyconv_conv_geom *g = &pg.win
    # Each input value costs a row kernel about 8 multiply-adds' time (vertical and
    # horizontal passes, clipped border taps): counted as values alone, Inception's 3x3
    # average pools on 8x8 maps (768 channels, 0.16 ms) stayed on one thread.
    cdef int nthreads = threads_for(8 * pg.planes * g.in_size[0] * g.in_size[1] * g.in_size[2],
                                    threads)
    cdef int64_t tasks = pg.planes * g.out_size[0] * g.out_size[1]
    by_lanes[0] = _by_lanes(pg, prm, kern)
    if by_lanes[0]:
        # each input value also goes through two transposes: twice the row kernel's cost
        # (Inception's 3x3 averages on 2048 3x3 planes, 15 us, were left on one thread)
        nthreads = threads_for(16 * pg.planes * g.in_size[1] * g.in_size[2], threads)
        tasks = (pg.planes + kern.lanes - 1) // kern.lanes
        ws_stride[0] = slot_floats(pyconv_pool_lanes_workspace_floats(g, kern.lanes))
    else:
        ws_stride[0] = slot_floats(max(g.in_size[2] + 32, g.out_size[2]))
    if nthreads > tasks:
        nthreads = <int>tasks
    return max(nthreads, 1)


def pool_work(str mode, tuple x_shape, tuple out_shape, tuple kernel, tuple stride,
              tuple pads_begin, tuple pads_end, tuple dilation, str indices="none",
              context=None):
    """(algorithm, threads, workspace bytes) of a :func:`pool` run on inputs of
    ``x_shape`` (P, D, H, W) with this window (as pool() takes it) under ``context``:
    algorithm ``'lanes'`` (small planes, lanes at a time), ``'rows'`` (the SIMD row
    kernel) or ``'generic'`` (Lp pooling, indices)."""
    cdef pyconv_pool_geom pg
    cdef params prm
    cdef exec_ctx ctx = context_of(context)
    cdef const pyconv_pool_kernel *kern = pyconv_pool_kernel_for(ctx.kernel.isa)
    cdef int64_t ws_stride
    cdef bint by_lanes
    _pool_setup(&pg, &prm, mode, x_shape[0], x_shape[1], x_shape[2], x_shape[3], out_shape,
                kernel, stride, pads_begin, pads_end, dilation, True, 0.0, 2.0, indices)
    cdef int nthreads = _pool_work(&pg, &prm, kern, ctx.nthreads, &ws_stride, &by_lanes)
    algorithm = ("lanes" if by_lanes else
                 "rows" if prm.mode != MODE_LP and prm.index_mode == 0 else "generic")
    return algorithm, nthreads, int(ws_stride * nthreads * sizeof(float))


cdef int _pool_run(const float *x, float *y, int64_t *ind, const pyconv_pool_geom *pg,
                   const params *prm, const pyconv_pool_kernel *kern,
                   int threads) except -1:
    """The rows of a set-up problem (non-empty input and output) on the threads."""
    cdef int64_t ws_stride
    cdef bint by_lanes
    cdef int nthreads = _pool_work(pg, prm, kern, threads, &ws_stride, &by_lanes)
    cdef float *ws = workspace_floats(ws_stride * nthreads)
    with nogil:
        _pool_rows(x, y, ind, pg, prm, kern, by_lanes, ws, ws_stride, nthreads)
    return 0


cdef class PoolCall:
    """pool() bound to an input shape and an output buffer (see :func:`bind_pool`).
    ``call(x)`` writes and returns ``out``, or returns None, computing nothing, when x is
    not a float32 aligned C-contiguous array of the bound shape or overlaps ``out``."""
    cdef pyconv_pool_geom pg
    cdef params prm
    cdef readonly object out
    cdef int ndim
    cdef cnp.npy_intp x_dims[5]
    cdef const pyconv_pool_kernel *kern
    cdef int nthreads

    def __call__(self, x):
        if not planned_array(x, self.ndim, self.x_dims) or arrays_overlap(x, self.out):
            return None
        _pool_run(<const float *>cnp.PyArray_DATA(<cnp.ndarray>x),
                  <float *>cnp.PyArray_DATA(<cnp.ndarray>self.out), NULL, &self.pg, &self.prm,
                  self.kern, self.nthreads)
        return self.out


def bind_pool(str mode, tuple x_shape, tuple out_shape, tuple kernel, tuple stride,
              tuple pads_begin, tuple pads_end, tuple dilation, out, *,
              bint count_include_pad=True, double divisor=0.0, double p=2.0, context=None):
    """A :class:`PoolCall`: :func:`pool` without indices, for inputs of ``x_shape``
    (N, C, *spatial; seen as P = N * C planes of (D, H, W)) written into ``out``, a
    float32 C-contiguous array of N * C * OD * OH * OW values. Geometry as in pool()."""
    cdef PoolCall call = PoolCall.__new__(PoolCall)
    cdef exec_ctx ctx = context_of(context)
    call.kern = pyconv_pool_kernel_for(ctx.kernel.isa)
    call.nthreads = ctx.nthreads
    if not 3 <= len(x_shape) <= 5:
        raise ValueError(f"bind_pool: x_shape must be (N, C, *spatial), got {x_shape}")
    spatial = (1,) * (5 - len(x_shape)) + x_shape[2:]
    _pool_setup(&call.pg, &call.prm, mode, x_shape[0] * x_shape[1], spatial[0], spatial[1],
                spatial[2], out_shape, kernel, stride, pads_begin, pads_end, dilation,
                count_include_pad, divisor, p, "none")
    cdef const int64_t *osz = call.pg.win.out_size
    cdef int64_t size = call.pg.planes * osz[0] * osz[1] * osz[2]
    if (not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.size != size
            or size == 0 or spatial[0] * spatial[1] * spatial[2] == 0
            or not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError(f"bind_pool: out must be a writeable C-contiguous float32 array of "
                         f"{size} values (a non-empty problem), got "
                         f"{getattr(out, 'dtype', type(out).__name__)} "
                         f"{getattr(out, 'shape', '')}")
    call.out = out
    call.ndim = len(x_shape)
    for i in range(call.ndim):
        call.x_dims[i] = x_shape[i]
    return call


# ---------------------------------------------------------------------------------------
# Plane reductions (global pooling, adaptive windows).

cdef enum:
    CHUNK = 64        # lanes of the plane reductions (vectorised element-wise steps)


cdef double _sum_f64(const float *x, int64_t n) noexcept nogil:
    """Sum of n floats: CHUNK float lanes add at most 16 values each, then go to 8 double
    partial sums (8 independent chains: one double chain costs an add latency per value,
    which made a 96 x 8 x 8 global average pool 9 us). Planes of at most 16 * 16 floats
    (squeeze-and-excitation pools on 7x7 to 16x16 maps) take 16 float lanes instead, so
    that only 16 values go to double, not CHUNK: a 960 x 10 x 10 pool 41 -> 14 us."""
    cdef float acc[CHUNK]
    cdef float lane[16]
    cdef float rest
    cdef double part[8]
    cdef int64_t i = 0, j, q, block_end
    if n <= 256:
        for q in range(16):
            lane[q] = 0.0
        while n - i >= 16:
            for q in range(16):
                lane[q] += x[i + q]
            i = i + 16
        rest = 0.0                      # the tail apart: lane stays in registers
        for j in range(i, n):
            rest += x[j]
        for q in range(8):
            part[q] = <double>lane[q] + <double>lane[q + 8]
        part[0] += <double>rest
        return (((part[0] + part[1]) + (part[2] + part[3]))
                + ((part[4] + part[5]) + (part[6] + part[7])))
    for q in range(8):
        part[q] = 0.0
    while n - i >= CHUNK:
        _copy(acc, x + i, CHUNK)
        i = i + CHUNK
        block_end = i + 15 * CHUNK
        while n - i >= CHUNK and i < block_end:
            _add2(acc, acc, x + i, CHUNK)
            i = i + CHUNK
        for j in range(0, CHUNK, 8):
            for q in range(8):
                part[q] += acc[j + q]
    while n - i >= 8:
        for q in range(8):
            part[q] += x[i + q]
        i = i + 8
    for j in range(i, n):
        part[j - i] += x[j]
    return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]))


cdef float _max_nan(const float *x, int64_t n) noexcept nogil:
    """Max of n floats (-inf when n == 0); NaN when any element is NaN."""
    cdef float acc[CHUNK]
    cdef float m = -INFINITY, v
    cdef int bad = 0
    cdef int64_t i = 0, j
    if n >= CHUNK:
        _copy(acc, x, CHUNK)
        bad = _has_nan(x, CHUNK)
        i = CHUNK
        while n - i >= CHUNK:
            bad = bad | _max2(acc, acc, x + i, CHUNK, False)
            i = i + CHUNK
        for j in range(CHUNK):
            m = acc[j] if acc[j] > m else m
    for j in range(i, n):
        v = x[j]
        m = v if v > m else m
        bad = bad | isunordered(v, v)
    return NAN if bad else m


cdef struct _planes_job:
    const float *x
    float *y
    int64_t size
    bint is_max


cdef void _plane_tasks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef const _planes_job *j = <const _planes_job *>arg
    cdef int64_t p
    for p in range(lo, hi):
        if j.is_max:
            j.y[p] = _max_nan(j.x + p * j.size, j.size)
        else:
            j.y[p] = <float>(_sum_f64(j.x + p * j.size, j.size) / j.size)


cdef void _global_planes(const float *x, float *y, int64_t planes, int64_t size, bint is_max,
                         int nthreads) noexcept nogil:
    cdef _planes_job j
    j.x = x
    j.y = y
    j.size = size
    j.is_max = is_max
    parallel_for(nthreads, planes, grain_for(planes, nthreads), _plane_tasks, &j)


def global_pool(x, bint is_max, context=None):
    """Mean (or max) of each plane of a validated (P, S) float32 C-contiguous array: (P,)."""
    cdef const float[:, ::1] xv = _contiguous(x, "global_pool")
    cdef int64_t planes = xv.shape[0], size = xv.shape[1]
    y = np.empty(planes, dtype=np.float32)
    if planes == 0:
        return y
    if size == 0:
        raise ValueError("global_pool: empty input plane")
    cdef float[::1] yv = y
    cdef int nthreads = threads_for(x.size, context_of(context).nthreads)  # small maps: fewer
    with nogil:
        _global_planes(&xv[0, 0], &yv[0], planes, size, is_max, nthreads)
    return y


def global_pool_threads(int64_t values, context=None):
    """Threads of a global pooling over ``values`` input values under ``context`` (as
    :func:`global_pool` and :func:`bind_global_pool` take them)."""
    return threads_for(values, context_of(context).nthreads)


cdef class GlobalPoolCall:
    """global_pool() bound to an input shape (see :func:`bind_global_pool`). ``call(x)``
    returns a new (N, C, 1, ...) array, or None, computing nothing, when x is not a float32
    aligned C-contiguous array of the bound shape."""
    cdef bint is_max
    cdef int ndim
    cdef cnp.npy_intp x_dims[8]
    cdef int64_t planes, size
    cdef tuple out_shape
    cdef int nthreads

    def __call__(self, x):
        if not planned_array(x, self.ndim, self.x_dims):
            return None
        y = np.empty(self.out_shape, dtype=np.float32)
        cdef const float *xp = <const float *>cnp.PyArray_DATA(<cnp.ndarray>x)
        cdef float *yp = <float *>cnp.PyArray_DATA(<cnp.ndarray>y)
        with nogil:
            _global_planes(xp, yp, self.planes, self.size, self.is_max, self.nthreads)
        return y


def bind_global_pool(tuple x_shape, bint is_max, context=None):
    """A :class:`GlobalPoolCall`: the mean (or max) of each (n, c) plane of inputs of
    ``x_shape`` (N, C, *spatial, 1 to 6 spatial dims, none empty), as (N, C, 1, ...)."""
    if not 3 <= len(x_shape) <= 8 or any(s <= 0 for s in x_shape[2:]) or min(x_shape) < 0:
        raise ValueError(f"bind_global_pool: x_shape must be (N, C, *spatial) with 1 to 6 "
                         f"non-empty spatial dims, got {x_shape}")
    cdef GlobalPoolCall call = GlobalPoolCall.__new__(GlobalPoolCall)
    call.is_max = is_max
    call.ndim = len(x_shape)
    for i in range(call.ndim):
        call.x_dims[i] = x_shape[i]
    call.planes = x_shape[0] * x_shape[1]
    call.size = 1
    for s in x_shape[2:]:
        call.size *= s
    call.out_shape = x_shape[:2] + (1,) * (len(x_shape) - 2)
    call.nthreads = threads_for(call.planes * call.size, context_of(context).nthreads)
    return call


cdef inline void _adaptive_bounds(int64_t o, int64_t size, int64_t out, int64_t *lo,
                                  int64_t *hi) noexcept nogil:
    """torch: [floor(o * size / out), ceil((o + 1) * size / out))."""
    lo[0] = (o * size) // out
    hi[0] = ((o + 1) * size + out - 1) // out


cdef void _adaptive_row(const float *x, float *y, int64_t *ind, const pyconv_conv_geom *g,
                        int mode, int64_t r, float *tmp) noexcept nogil:
    """Output row r = (plane, od, oh) of adaptive average / max pooling; tmp: W floats.
    Only g's sizes are read: adaptive windows are torch's floor / ceil bounds
    (_adaptive_bounds), not strided taps, so kernel, stride and pads do not describe them."""
    cdef int64_t D = g.in_size[0], H = g.in_size[1], W = g.in_size[2]
    cdef int64_t OD = g.out_size[0], OH = g.out_size[1], OW = g.out_size[2]
    cdef int64_t plane = r // (OD * OH)
    cdef int64_t q = r - plane * (OD * OH)
    cdef int64_t od = q // OH
    cdef int64_t oh = q - od * OH
    cdef const float *xp = x + plane * D * H * W
    cdef float *out = y + r * OW
    cdef int64_t d0, d1, h0, h1, w0, w1, d, h, w, ow, best, off, cnt_dh
    cdef double s
    cdef float m, v
    cdef const float *row
    cdef bint first = True
    _adaptive_bounds(od, D, OD, &d0, &d1)
    _adaptive_bounds(oh, H, OH, &h0, &h1)
    if ind == NULL:
        # Separable: combine the window's rows (vectorised), then each column range.
        for d in range(d0, d1):
            for h in range(h0, h1):
                row = xp + (d * H + h) * W
                if first:
                    _copy(tmp, row, W)
                    first = False
                elif mode == MODE_AVG:
                    _add2(tmp, tmp, row, W)
                else:
                    _max2(tmp, tmp, row, W, True)
        cnt_dh = (d1 - d0) * (h1 - h0)
        for ow in range(OW):
            _adaptive_bounds(ow, W, OW, &w0, &w1)
            if mode == MODE_AVG:
                s = 0.0
                for w in range(w0, w1):
                    s += tmp[w]
                out[ow] = <float>(s / (cnt_dh * (w1 - w0)))
            else:
                m = -INFINITY
                for w in range(w0, w1):
                    m = _nanmax(tmp[w], m)
                out[ow] = m
        return
    # Max with indices: torch's rule, first max wins, NaN propagates (the last NaN wins).
    for ow in range(OW):
        _adaptive_bounds(ow, W, OW, &w0, &w1)
        m = -INFINITY
        best = (d0 * H + h0) * W + w0
        for d in range(d0, d1):
            for h in range(h0, h1):
                off = (d * H + h) * W
                row = xp + off
                for w in range(w0, w1):
                    v = row[w]
                    if (v > m) | isunordered(v, v):
                        m = v
                        best = off + w
        out[ow] = m
        ind[r * OW + ow] = best


cdef struct _adaptive_job:
    const float *x
    float *y
    int64_t *ind
    const pyconv_conv_geom *g
    int mode
    float *ws
    int64_t ws_stride


cdef void _adaptive_tasks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef const _adaptive_job *j = <const _adaptive_job *>arg
    cdef int64_t r
    for r in range(lo, hi):
        _adaptive_row(j.x, j.y, j.ind, j.g, j.mode, r, j.ws + slot * j.ws_stride)


def adaptive_pool(x, tuple out_shape, bint is_max, bint return_indices=False, context=None):
    """Adaptive average / max pooling of a validated (P, D, H, W) float32 C-contiguous
    array to (P, *out_shape); max also returns int64 per-plane indices when asked."""
    cdef pyconv_conv_geom g          # sizes only (see _adaptive_row)
    cdef const float[:, :, :, ::1] xv = _contiguous(x, "adaptive_pool")
    cdef int64_t planes = xv.shape[0]
    g.in_size[0], g.in_size[1], g.in_size[2] = xv.shape[1], xv.shape[2], xv.shape[3]
    g.out_size[0], g.out_size[1], g.out_size[2] = out_shape
    if g.out_size[0] < 0 or g.out_size[1] < 0 or g.out_size[2] < 0:
        raise ValueError(f"adaptive_pool: invalid output shape {out_shape}")
    shape = (planes,) + out_shape
    y = np.empty(shape, dtype=np.float32)
    with_ind = is_max and return_indices
    ind = np.empty(shape, dtype=np.int64) if with_ind else None
    if y.size == 0:
        return (y, ind) if with_ind else y
    if g.in_size[0] * g.in_size[1] * g.in_size[2] == 0:
        raise ValueError("adaptive_pool: empty input plane")
    cdef float[:, :, :, ::1] yv = y
    cdef int64_t[:, :, :, ::1] iv
    cdef int64_t *indp = NULL
    if with_ind:
        iv = ind
        indp = &iv[0, 0, 0, 0]
    cdef int nthreads = threads_for(x.size, context_of(context).nthreads)  # small maps: fewer
    cdef int64_t rows = planes * g.out_size[0] * g.out_size[1]
    if nthreads > rows:
        nthreads = <int>rows
    cdef _adaptive_job j
    j.x = &xv[0, 0, 0, 0]
    j.y = &yv[0, 0, 0, 0]
    j.ind = indp
    j.g = &g
    j.mode = MODE_MAX if is_max else MODE_AVG
    j.ws_stride = slot_floats(g.in_size[2])
    j.ws = workspace_floats(j.ws_stride * max(nthreads, 1))
    with nogil:
        parallel_for(nthreads, rows, grain_for(rows, nthreads), _adaptive_tasks, &j)
    return (y, ind) if with_ind else y


# ---------------------------------------------------------------------------------------
# Max unpooling.

cdef int64_t _unpool_plane(const float *x, const int64_t *idx, float *y, int64_t n_in,
                           int64_t n_out, int64_t base) noexcept nogil:
    cdef int64_t i, j
    for i in range(n_in):
        j = idx[i] - base
        if j < 0 or j >= n_out:
            return i
        y[j] = x[i]
    return -1


cdef struct _unpool_job:
    const float *x
    const int64_t *idx
    float *y
    int64_t n_in, n_out
    bint whole_tensor
    int64_t *first_bad


cdef void _unpool_tasks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Scatters each plane's values to its indices (per plane, or whole-tensor indices
    that must stay in their own plane); an index outside the plane stops that plane and
    records its position in first_bad[plane] (-1 when the plane is fine). Never writes
    outside y."""
    cdef const _unpool_job *j = <const _unpool_job *>arg
    cdef int64_t p
    for p in range(lo, hi):
        j.first_bad[p] = _unpool_plane(j.x + p * j.n_in, j.idx + p * j.n_in,
                                       j.y + p * j.n_out, j.n_in, j.n_out,
                                       p * j.n_out if j.whole_tensor else 0)


cdef int64_t _unpool_global(const float *x, const int64_t *idx, float *y, int64_t n,
                            int64_t total) noexcept nogil:
    """Serial whole-tensor scatter (indices crossing planes); returns the first bad
    position or -1 (nothing is written past a bad index)."""
    cdef int64_t i, j
    for i in range(n):
        j = idx[i]
        if j < 0 or j >= total:
            return i
    for i in range(n):
        y[idx[i]] = x[i]
    return -1


def max_unpool(x, indices, int64_t out_plane, bint whole_tensor, context=None):
    """Scatters a validated (P, S) float32 array to (P, out_plane) zeros at `indices`.

    indices : (P, S) int64, C-contiguous; per-plane positions (torch), or positions in the
    whole (P * out_plane) output when whole_tensor (ONNX MaxUnpool). When several values
    share an index, the last one in C order wins.

    Returns (y, bad): bad is -1, or the flat position in `indices` of the first index out of
    range (y must then be discarded).
    """
    cdef const float[:, ::1] xv = _contiguous(x, "max_unpool")
    cdef const int64_t[:, ::1] iv = _contiguous(indices, "max_unpool")
    cdef int64_t planes = xv.shape[0], n_in = xv.shape[1]
    if iv.shape[0] != planes or iv.shape[1] != n_in or out_plane < 0:
        raise ValueError(f"max_unpool: indices {indices.shape} must match x {x.shape}, "
                         f"out_plane {out_plane} must be >= 0")
    y = np.zeros((planes, out_plane), dtype=np.float32)
    if planes == 0 or n_in == 0:
        return y, -1
    if out_plane == 0:
        return y, 0
    cdef float[:, ::1] yv = y
    first_bad = np.empty(planes, dtype=np.int64)
    cdef int64_t[::1] fb = first_bad
    cdef int nthreads = threads_for(y.size, context_of(context).nthreads)  # small maps: fewer
    cdef int64_t bad
    cdef _unpool_job j
    j.x = &xv[0, 0]
    j.idx = &iv[0, 0]
    j.y = &yv[0, 0]
    j.n_in = n_in
    j.n_out = out_plane
    j.whole_tensor = whole_tensor
    j.first_bad = &fb[0]
    with nogil:
        parallel_for(nthreads, planes, grain_for(planes, nthreads), _unpool_tasks, &j)
    hits = np.flatnonzero(first_bad >= 0)
    if hits.size == 0:
        return y, -1
    p0 = int(hits[0])
    if not whole_tensor:
        return y, p0 * n_in + int(first_bad[p0])
    # ONNX indices may point into another plane: redo the whole scatter serially, in C order
    # (every position written before is written again, so the last writer still wins).
    with nogil:
        bad = _unpool_global(&xv[0, 0], &iv[0, 0], &yv[0, 0], planes * n_in,
                             planes * out_plane)
    return y, bad


cdef struct _scale_job:
    const float *x
    const float *scale
    float *y
    int64_t size


cdef void _scale_tasks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef const _scale_job *j = <const _scale_job *>arg
    cdef int64_t p, i
    cdef const float *xp
    cdef float *yp
    cdef float s
    for p in range(lo, hi):
        xp = j.x + p * j.size
        yp = j.y + p * j.size
        s = j.scale[p]
        for i in range(j.size):
            yp[i] = xp[i] * s


def scale_planes(x, scale, out, context=None):
    """``out[p, :] = x[p, :] * scale[p]`` for (P, S) float32 C-contiguous ``x`` and
    ``out`` and (P,) ``scale`` (the channel scaling of squeeze-and-excitation); returns
    ``out``, which may be ``x``."""
    cdef const float[:, ::1] xv = _contiguous(x, "scale_planes")
    cdef const float[::1] sv = np.ascontiguousarray(scale, np.float32).reshape(-1)
    cdef float[:, ::1] yv = out
    cdef int64_t planes = xv.shape[0], size = xv.shape[1]
    if sv.shape[0] != planes or yv.shape[0] != planes or yv.shape[1] != size:
        raise ValueError(f"scale_planes: x {tuple(x.shape)}, scale {tuple(scale.shape)} and "
                         f"out {tuple(out.shape)} do not match")
    if planes == 0 or size == 0:
        return out
    cdef _scale_job j
    j.x = &xv[0, 0]
    j.scale = &sv[0]
    j.y = &yv[0, 0]
    j.size = size
    cdef int nthreads = threads_for(planes * size, context_of(context).nthreads)
    with nogil:
        parallel_for(nthreads, planes, grain_for(planes, nthreads), _scale_tasks, &j)
    return out
