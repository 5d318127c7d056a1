"""Resize kernels: separable two-tap (linear) interpolation of the last two axes of
float32 planes, split over output rows. The taps and weights come from
:func:`pyconv.functional._resize` (one home for the coordinate arithmetic); the float32
operations are those of its NumPy passes, in the same order (H, then W), so both give
the same numbers."""
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.string cimport memcpy

cnp.import_array()

from pyconv._ext.gemm cimport context_of, grain_for, parallel_for, slot_floats, threads_for


cdef bint _inside(const int64_t[::1] v, int64_t n) noexcept:
    """Every index of v lies in [0, n) (a C loop: NumPy's min and max cost more than a
    small resize)."""
    cdef Py_ssize_t i
    for i in range(v.shape[0]):
        if v[i] < 0 or v[i] >= n:
            return False
    return True


def _checked_output(name, what, const int64_t[::1] iy, const int64_t[::1] ix,
                    int64_t planes, int64_t h, int64_t w, int64_t oh, int64_t ow, out=None):
    """The (planes, oh, ow) float32 output (``out`` when given: a C-contiguous float32
    array of that shape), once every source row in ``iy`` and column in ``ix`` (flat) is
    known to lie inside the (h, w) input (the kernels read without bounds)."""
    if not _inside(iy, h) or not _inside(ix, w):
        raise ValueError(f"{name}: source {what} outside the ({h}, {w}) input")
    if out is None:
        return np.empty((planes, oh, ow), np.float32)
    if (type(out) is not np.ndarray or out.dtype != np.float32 or out.shape != (planes, oh, ow)
            or not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError(f"{name}: out must be a writeable C-contiguous float32 array of "
                         f"shape {(planes, oh, ow)}, got {getattr(out, 'dtype', type(out))} "
                         f"{getattr(out, 'shape', '')}")
    return out


cdef struct _linear_job:
    const float *x
    float *y
    float *tmp              # per thread slot: w floats, slot_floats(w) apart
    int64_t h, w, oh, ow, tmp_stride
    const int64_t *iy       # (oh, 2) source rows
    const float *wy         # (oh, 2) their weights
    const int64_t *ix       # (ow, 2) source columns
    const float *wx


cdef void _linear_rows(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Output rows [lo, hi): the two source rows blended once into a row of w floats (a
    loop the compiler vectorises), then each output column blends two of its floats. The
    same operations in the same order as blending per output column: the same bits."""
    cdef const _linear_job *j = <const _linear_job *>arg
    cdef int64_t t, p, oy, ox, c
    cdef const float *r0
    cdef const float *r1
    cdef float *out
    cdef float *row = j.tmp + slot * j.tmp_stride
    cdef float a0, a1
    for t in range(lo, hi):             # t = plane * oh + output row
        p = t // j.oh
        oy = t - p * j.oh
        r0 = j.x + (p * j.h + j.iy[2 * oy]) * j.w
        r1 = j.x + (p * j.h + j.iy[2 * oy + 1]) * j.w
        a0 = j.wy[2 * oy]
        a1 = j.wy[2 * oy + 1]
        for c in range(j.w):
            row[c] = r0[c] * a0 + r1[c] * a1
        out = j.y + t * j.ow
        for ox in range(j.ow):
            out[ox] = row[j.ix[2 * ox]] * j.wx[2 * ox] + row[j.ix[2 * ox + 1]] * j.wx[2 * ox + 1]


def linear_2d(x, iy, wy, ix, wx, context=None, out=None):
    """Two-tap interpolation of (P, H, W) float32 C-contiguous ``x`` to (P, OH, OW):
    ``iy`` / ``ix`` (OH, 2) / (OW, 2) int64 source rows / columns inside the input,
    ``wy`` / ``wx`` their float32 weights. ``out``: the output array to write (see
    :func:`_checked_output`), else a new one."""
    cdef const float[:, :, ::1] xv = x
    cdef const int64_t[:, ::1] iyv = np.ascontiguousarray(iy, np.int64)
    cdef const int64_t[:, ::1] ixv = np.ascontiguousarray(ix, np.int64)
    cdef const float[:, ::1] wyv = np.ascontiguousarray(wy, np.float32)
    cdef const float[:, ::1] wxv = np.ascontiguousarray(wx, np.float32)
    cdef int64_t planes = xv.shape[0], h = xv.shape[1], w = xv.shape[2]
    cdef int64_t oh = iyv.shape[0], ow = ixv.shape[0]
    if iyv.shape[1] != 2 or ixv.shape[1] != 2 or wyv.shape[0] != oh or wxv.shape[0] != ow \
            or wyv.shape[1] != 2 or wxv.shape[1] != 2:
        raise ValueError("linear_2d: taps must be (OH, 2) / (OW, 2) with matching weights")
    y = _checked_output("linear_2d", "taps", np.asarray(iyv).reshape(-1),
                        np.asarray(ixv).reshape(-1), planes, h, w, oh, ow, out)
    if planes == 0 or oh == 0 or ow == 0:
        return y
    cdef float[:, :, ::1] yv = y
    cdef int64_t rows = planes * oh
    cdef int nthreads = threads_for(rows * ow, context_of(context).nthreads)
    cdef int64_t tmp_stride = slot_floats(w)
    cdef float[::1] tmp = np.empty(nthreads * tmp_stride, np.float32)
    cdef _linear_job j
    j.x = &xv[0, 0, 0]
    j.y = &yv[0, 0, 0]
    j.tmp = &tmp[0]
    j.h, j.w, j.oh, j.ow = h, w, oh, ow
    j.tmp_stride = tmp_stride
    j.iy, j.wy, j.ix, j.wx = &iyv[0, 0], &wyv[0, 0], &ixv[0, 0], &wxv[0, 0]
    with nogil:
        parallel_for(nthreads, rows, grain_for(rows, nthreads), _linear_rows, &j)
    return y


cdef struct _nearest_job:
    const float *x
    float *y
    int64_t h, w, oh, ow
    const int64_t *iy       # (oh,) source rows
    const int64_t *ix       # (ow,) source columns
    int64_t repeat          # k when ix is [0] * k + [1] * k + ... (ow = k * w), else 0


cdef void _nearest_2x_rows(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Input rows lo..hi (plane * h + row) of an exact 2x upsampling in both dims: each
    value written four times, the two output rows of an input row in one loop (tiny planes
    made a row a call: 1280 planes of 4x4 took 99 us, onnxruntime 17)."""
    cdef const _nearest_job *j = <const _nearest_job *>arg
    cdef int64_t t, i, w = j.w
    cdef const float *row
    cdef float *o0
    cdef float *o1
    cdef float v
    for t in range(lo, hi):
        row = j.x + t * w
        o0 = j.y + t * 4 * w
        o1 = o0 + 2 * w
        if w >= 16:                     # pairs (vectorised), then the row copied
            for i in range(w):
                o0[2 * i] = row[i]
                o0[2 * i + 1] = row[i]
            memcpy(o1, o0, 2 * w * sizeof(float))
            continue
        for i in range(w):
            v = row[i]
            o0[2 * i] = v
            o0[2 * i + 1] = v
            o1[2 * i] = v
            o1[2 * i + 1] = v


cdef void _nearest_rows(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef const _nearest_job *j = <const _nearest_job *>arg
    cdef int64_t t, p, oy, ox, i, r
    cdef const float *row
    cdef float *out
    cdef float v
    for t in range(lo, hi):             # t = plane * oh + output row
        p = t // j.oh
        oy = t - p * j.oh
        out = j.y + t * j.ow
        if t > lo and oy > 0 and j.iy[oy] == j.iy[oy - 1]:
            memcpy(out, out - j.ow, j.ow * sizeof(float))   # upsampling: the row again
            continue
        row = j.x + (p * j.h + j.iy[oy]) * j.w
        if j.repeat == 2:               # the usual 2x upsampling: pairs (vectorised)
            for i in range(j.w):
                out[2 * i] = row[i]
                out[2 * i + 1] = row[i]
        elif j.repeat:                  # column ox reads ox // repeat: no index loads
            for i in range(j.w):
                v = row[i]
                for r in range(j.repeat):
                    out[i * j.repeat + r] = v
        else:
            for ox in range(j.ow):
                out[ox] = row[j.ix[ox]]


cdef int64_t _repeat_factor(const int64_t[::1] ix, int64_t w) noexcept:
    """k when ix is [0] * k + [1] * k + ... + [w - 1] * k (an integer upsampling), else 0."""
    cdef int64_t ow = ix.shape[0], k, i
    if w <= 0 or ow % w != 0:
        return 0
    k = ow // w
    for i in range(ow):
        if ix[i] != i // k:
            return 0
    return k


def nearest_2d(x, iy, ix, context=None, out=None):
    """Nearest resizing of (P, H, W) float32 C-contiguous ``x`` to (P, OH, OW): output
    pixel (oy, ox) of each plane copies (iy[oy], ix[ox]) (int64 indices inside the
    input). ``out``: the output array to write (see :func:`_checked_output`), else a new
    one."""
    cdef const float[:, :, ::1] xv = x
    cdef const int64_t[::1] iyv = np.ascontiguousarray(iy, np.int64).reshape(-1)
    cdef const int64_t[::1] ixv = np.ascontiguousarray(ix, np.int64).reshape(-1)
    cdef int64_t planes = xv.shape[0], h = xv.shape[1], w = xv.shape[2]
    cdef int64_t oh = iyv.shape[0], ow = ixv.shape[0]
    y = _checked_output("nearest_2d", "indices", iyv, ixv, planes, h, w, oh, ow, out)
    if planes == 0 or oh == 0 or ow == 0:
        return y
    cdef float[:, :, ::1] yv = y
    cdef _nearest_job j
    j.x = &xv[0, 0, 0]
    j.y = &yv[0, 0, 0]
    j.h, j.w, j.oh, j.ow = h, w, oh, ow
    j.iy, j.ix = &iyv[0], &ixv[0]
    j.repeat = _repeat_factor(ixv, w)
    cdef int64_t rows = planes * oh
    cdef int nthreads = threads_for(rows * ow, context_of(context).nthreads)
    if j.repeat == 2 and _repeat_factor(iyv, h) == 2:
        rows = planes * h               # input rows, each making two output rows
        with nogil:
            parallel_for(nthreads, rows, grain_for(rows, nthreads), _nearest_2x_rows, &j)
        return y
    with nogil:
        parallel_for(nthreads, rows, grain_for(rows, nthreads), _nearest_rows, &j)
    return y
