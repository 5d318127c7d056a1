# Convolution and transposed convolution on the packed GEMM engine.
#
# Every problem is handled as 3-D (1-D and 2-D get leading size-1 spatial dims).
#  - general conv: per (batch, group) GEMM  W_g (Cout_g x Cin_g*kvol) @ im2col(x_ng), where
#    the im2col matrix is never built: pack_b_im2col packs the GEMM's B panels straight from
#    the image, resolving stride, padding and dilation;
#  - 1-D / 2-D conv (most of them, by a cost model): the same product on a zero-padded,
#    stride-phase-split copy of the input (phase_copy), either read in place by the
#    shifted micro-kernel or packed from it with plain copies (padded im2col);
#  - 1x1, stride 1, no padding: the image itself is the B matrix;
#  - depthwise (one input channel per group): the direct SIMD kernel of src/kernels/dwconv_*
#    (per ISA, same dispatch as the GEMM) over blocks of output rows of each channel;
#  - transposed conv: cols = W_g^T @ x_ng by GEMM, then col2im scatter-adds into the output
#    (no zero insertion); one input channel per group goes through a direct scatter kernel.
# Bias, residual and activation are applied by the GEMM epilogue, or per plane right after
# the plane is finished.
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from pyconv._ext.gemm cimport (PackedMatrix, activation_code, threads_for, pack_b_fn,
                               pack_b_strided, packed_a, pyconv_epilogue,
                               pyconv_sgemm_kernel, sgemm_block, sgemm_nc, sgemm_packed,
                               sgemm_workspace_floats, strided_b, workspace_floats,
                               planned_array, arrays_overlap, exec_ctx, context_of,
                               parallel_for, grain_for)
from pyconv._ext import gemm as _gemm
from pyconv._ext.gemm cimport (PYCONV_ACT_NONE, PYCONV_MAX_PHASE_STRIDE, pyconv_epilogue_fn,
                               pyconv_run)
from pyconv.errors import InvalidArgument, InvalidDType, ShapeError

cnp.import_array()

cdef extern from "dwconv.h" nogil:
    ctypedef struct pyconv_dw_geom:
        int64_t d, h, w, od, oh, ow
        int64_t kd, kh, kw, sd, sh, sw, pd, ph, pw, dd, dh, dw
    ctypedef struct pyconv_dw_channel:
        const float *x
        const float *taps
        float bias
        float *y
        const float *residual
        int act
        float act_a, act_b
        pyconv_epilogue_fn epilogue
    ctypedef void (*pyconv_dwconv_rows_fn)(const pyconv_dw_geom *g, const pyconv_dw_channel *c,
                                           int64_t zd, int64_t y0, int64_t y1,
                                           float *ws) noexcept nogil
    ctypedef struct pyconv_dwconv_kernel:
        const char *isa
        const char *name
        pyconv_dwconv_rows_fn rows
    const pyconv_dwconv_kernel *pyconv_dwconv_kernel_for(const char *isa)
    int64_t pyconv_dwconv_workspace_floats(const pyconv_dw_geom *g, int64_t rows)


cdef struct geom3:
    const float *x          # first input channel of this (batch, group)
    int64_t c               # input channels in the group
    int64_t d, h, w         # input spatial size
    int64_t kd, kh, kw
    int64_t sd, sh, sw
    int64_t pd, ph, pw      # padding at the beginning
    int64_t dd, dh, dw
    int64_t od, oh, ow      # output spatial size


cdef inline int64_t _floor_div(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a // b
    return q - 1 if (a % b != 0) and ((a < 0) != (b < 0)) else q


cdef inline int64_t _ceil_div(int64_t a, int64_t b) noexcept nogil:
    return -_floor_div(-a, b)


cdef inline void _valid_range(int64_t off, int64_t s, int64_t size, int64_t count,
                              int64_t *lo, int64_t *hi) noexcept nogil:
    """Outputs o in [lo, hi) with 0 <= o * s + off < size, clipped to [0, count)."""
    lo[0] = max(<int64_t>0, _ceil_div(-off, s))
    hi[0] = min(count, _floor_div(size - 1 - off, s) + 1)
    if hi[0] < lo[0]:
        hi[0] = lo[0]


cdef struct im2col_segment:
    int64_t zd, yh           # output depth/row of the run
    int64_t x0, n            # first output column of the run and its length
    int64_t dst              # offset of its first value in the packed block (row kk = 0)


cdef inline void _zero(float *d, int64_t n) noexcept nogil:
    cdef int64_t q
    for q in range(n):
        d[q] = 0.0


cdef im2col_segment *_column_runs(int64_t n0, int64_t nc, int64_t kc, int64_t nr,
                                  int64_t oh, int64_t ow, int64_t *nseg) noexcept nogil:
    """Columns [n0, n0+nc) of an (od, oh, ow) output cut into runs that stay inside one
    output row and one NR panel of a kc-deep packed block (malloc'd; NULL on failure)."""
    cdef int64_t ohw = oh * ow, j = 0, run, count = 0
    cdef int64_t zd = n0 // ohw, t = n0 - zd * ohw, yh = t // ow, xw = t - yh * ow
    cdef im2col_segment *seg = <im2col_segment *>malloc((nc + nc // nr + 2) * sizeof(im2col_segment))
    if seg == NULL:
        return NULL
    while j < nc:
        run = min(min(ow - xw, nc - j), nr - j % nr)
        seg[count].zd = zd
        seg[count].yh = yh
        seg[count].x0 = xw
        seg[count].n = run
        seg[count].dst = (j // nr) * kc * nr + j % nr
        count += 1
        j += run
        xw += run
        if xw == ow:
            xw = 0
            yh += 1
            if yh == oh:
                yh = 0
                zd += 1
    nseg[0] = count
    return seg


cdef inline void _zero_last_panel(float *dst, int64_t kc, int64_t nc, int64_t nr) noexcept nogil:
    """Zeroes the columns past nc of the last, partial NR panel of a kc-deep block."""
    cdef int64_t p = nc // nr, tail = (nc + nr - 1) // nr * nr - nc, kk
    if tail:
        for kk in range(kc):
            _zero(dst + p * kc * nr + kk * nr + (nc - p * nr), tail)


cdef void pack_b_im2col(const void *ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                        int64_t nr, float *dst) noexcept nogil:
    """Packs rows [k0, k0+kc) x columns [n0, n0+nc) of the virtual im2col matrix.

    Row r = (c, a, b, e) is an input channel and kernel tap; column = (zd, yh, xw) an output
    position. The columns are cut once into segments that stay inside one output row and
    one NR panel; every row then fills each segment with one strided copy between zero
    fills (plain loops the compiler vectorises, no per-piece library calls)."""
    cdef const geom3 *g = <const geom3 *>ctx
    cdef int64_t kvol = g.kd * g.kh * g.kw, khw = g.kh * g.kw
    cdef int64_t kk, r, c, t, a, b, e, off_w, ow_lo, ow_hi, iz, iy
    cdef int64_t lo, hi, p, q, nseg = 0, sw = g.sw, x1
    cdef const float *xc
    cdef const float *src
    cdef float *d
    cdef im2col_segment *seg = _column_runs(n0, nc, kc, nr, g.oh, g.ow, &nseg)
    if seg == NULL:
        return
    for kk in range(kc):
        r = k0 + kk
        c = r // kvol
        t = r - c * kvol
        a = t // khw
        t = t - a * khw
        b = t // g.kw
        e = t - b * g.kw
        xc = g.x + c * g.d * g.h * g.w
        off_w = e * g.dw - g.pw
        _valid_range(off_w, sw, g.w, g.ow, &ow_lo, &ow_hi)
        for p in range(nseg):
            d = dst + seg[p].dst + kk * nr
            iz = seg[p].zd * g.sd - g.pd + a * g.dd
            iy = seg[p].yh * g.sh - g.ph + b * g.dh
            x1 = seg[p].x0 + seg[p].n
            lo = max(seg[p].x0, ow_lo)
            hi = min(x1, ow_hi)
            if iz < 0 or iz >= g.d or iy < 0 or iy >= g.h or hi <= lo:
                _zero(d, seg[p].n)
                continue
            _zero(d, lo - seg[p].x0)
            d += lo - seg[p].x0
            src = xc + (iz * g.h + iy) * g.w + lo * sw + off_w
            if sw == 1:
                for q in range(hi - lo):
                    d[q] = src[q]
            else:
                for q in range(hi - lo):
                    d[q] = src[q * sw]
            _zero(d + hi - lo, x1 - hi)
    free(seg)
    _zero_last_panel(dst, kc, nc, nr)


cdef struct phase_copy:
    # Each input channel of an (image, group) is zero-padded and split into sh x sw stride
    # phases, each a plane of hq rows of wq floats. Output (oy, ox) under kernel tap k
    # then reads the plane value at off[k] + oy * wq + ox: no bounds, no stride.
    #  - shifted: the output is computed on an oh x wq grid (columns ow..wq-1 dropped), so
    #    the B row of every tap is one contiguous run, read in place by the micro-kernel;
    #  - padded im2col: B panels are packed from the copy (plain row copies) for a GEMM
    #    on the oh*ow real columns.
    int64_t hq, wq, plane    # phase plane: rows, row length, floats (hq * wq)
    int64_t nplanes          # C_in_g * sh * sw planes per (image, group)
    int64_t image            # floats per (image, group), slack included
    int64_t ncols            # shifted: oh * wq grid columns; padded im2col: oh * ow
    int64_t nchunks          # column chunks (tasks): NR wide (shifted) or `chunk` wide
    int64_t chunk            # padded im2col: columns per task (a multiple of NR)
    int64_t mblocks          # row blocks each chunk is split into (tasks for the threads)
    int64_t ws_stride        # per-thread scratch: a tile, or a packed B block + tile
    int64_t wave             # (image, group) pairs padded at a time (workspace bound)
    const int64_t *off       # C_in_g * kvol B-row offsets


cdef struct conv_args:
    const float *x
    float *y
    const float *weight      # unpacked, (Cout, Cin_g, kvol): the depthwise kernels read it
    const float *bias
    const float *residual    # same layout as y, or NULL
    const packed_a *packed   # one per group (GEMM paths)
    int64_t batch, groups, cin, cout
    int64_t d, h, w, od, oh, ow
    int64_t kd, kh, kw, sd, sh, sw, pd, ph, pw, dd, dh, dw
    int act
    float act_a, act_b
    bint pointwise           # 1x1, stride 1, no padding: B is the image itself
    int64_t dw_rows, dw_blocks   # depthwise: output rows per task, tasks per output slice
    int algo                 # dense convs: ALGO_IM2COL, ALGO_SHIFTED or ALGO_PADDED
    phase_copy pc
    const pyconv_sgemm_kernel *kernel    # the plan's: epilogues of the direct paths
    const pyconv_dwconv_kernel *dw_kernel    # its depthwise rows
    float *ws                # per-thread scratch: slot * ws_stride floats in
    int64_t ws_stride


cdef inline void _fill_geom(const conv_args *p, const float *x, geom3 *g) noexcept nogil:
    g.x = x
    g.c = p.cin // p.groups
    g.d = p.d
    g.h = p.h
    g.w = p.w
    g.kd = p.kd
    g.kh = p.kh
    g.kw = p.kw
    g.sd = p.sd
    g.sh = p.sh
    g.sw = p.sw
    g.pd = p.pd
    g.ph = p.ph
    g.pw = p.pw
    g.dd = p.dd
    g.dh = p.dh
    g.dw = p.dw
    g.od = p.od
    g.oh = p.oh
    g.ow = p.ow


cdef inline void _fill_epilogue(const conv_args *p, int64_t first_channel, int64_t n,
                                pyconv_epilogue *ep) noexcept nogil:
    cdef int64_t plane = p.od * p.oh * p.ow
    ep.bias = p.bias + first_channel if p.bias != NULL else NULL
    ep.residual = (p.residual + (n * p.cout + first_channel) * plane
                   if p.residual != NULL else NULL)
    ep.ldr = plane
    ep.act = p.act
    ep.act_a = p.act_a
    ep.act_b = p.act_b


cdef void _conv_gemm_task(const conv_args *p, int64_t task, int nthreads, float *ws,
                          int64_t ws_stride) noexcept nogil:
    """One (batch, group) GEMM; nthreads == 1 runs it on the calling thread only."""
    cdef int64_t n = task // p.groups, grp = task - n * p.groups
    cdef int64_t cin_g = p.cin // p.groups, cout_g = p.cout // p.groups
    cdef int64_t ncols = p.od * p.oh * p.ow, in_plane = p.d * p.h * p.w
    cdef const float *x = p.x + (n * p.cin + grp * cin_g) * in_plane
    cdef float *y = p.y + (n * p.cout + grp * cout_g) * ncols
    cdef const packed_a *a = &p.packed[grp]
    cdef geom3 g
    cdef strided_b sb
    cdef const void *ctx
    cdef pack_b_fn pack
    cdef pyconv_epilogue ep
    _fill_epilogue(p, grp * cout_g, n, &ep)
    if p.pointwise:
        sb.data = x
        sb.sk = in_plane
        sb.sn = 1
        ctx = &sb
        pack = pack_b_strided
    else:
        _fill_geom(p, x, &g)
        ctx = &g
        pack = pack_b_im2col
    if nthreads > 1:
        sgemm_packed(a, ncols, pack, ctx, y, ncols, 1.0, 0.0, &ep, nthreads, ws)
    else:
        sgemm_block(a, 0, a.m, 0, ncols, sgemm_nc(a, ncols), pack, ctx, y, ncols, 1.0, 0.0,
                    &ep, ws, ws + min(a.kc, a.k) * sgemm_nc(a, ncols))


cdef inline void _dw_geom(const conv_args *p, pyconv_dw_geom *g) noexcept nogil:
    g.d = p.d
    g.h = p.h
    g.w = p.w
    g.od = p.od
    g.oh = p.oh
    g.ow = p.ow
    g.kd = p.kd
    g.kh = p.kh
    g.kw = p.kw
    g.sd = p.sd
    g.sh = p.sh
    g.sw = p.sw
    g.pd = p.pd
    g.ph = p.ph
    g.pw = p.pw
    g.dd = p.dd
    g.dh = p.dh
    g.dw = p.dw


cdef void _depthwise_task(const conv_args *p, const pyconv_dw_geom *g,
                          const pyconv_dwconv_kernel *dk, pyconv_epilogue_fn epilogue,
                          int64_t task, float *ws) noexcept nogil:
    """Rows [y0, y1) of one output depth slice of one channel whose group has a single
    input channel; task = ((n * C_out + oc) * OD + zd) * dw_blocks + block."""
    cdef int64_t blk = task % p.dw_blocks, t = task // p.dw_blocks
    cdef int64_t zd = t % p.od, plane_index = t // p.od
    cdef int64_t n = plane_index // p.cout, oc = plane_index - n * p.cout
    cdef int64_t grp = oc // (p.cout // p.groups), plane = p.od * p.oh * p.ow
    cdef int64_t y0 = blk * p.dw_rows, y1 = min(p.oh, y0 + p.dw_rows)
    cdef pyconv_dw_channel c
    c.x = p.x + (n * p.cin + grp) * p.d * p.h * p.w
    c.taps = p.weight + oc * p.kd * p.kh * p.kw
    c.bias = p.bias[oc] if p.bias != NULL else 0.0
    c.y = p.y + plane_index * plane
    c.residual = p.residual + plane_index * plane if p.residual != NULL else NULL
    c.act = p.act
    c.act_a = p.act_a
    c.act_b = p.act_b
    c.epilogue = epilogue
    dk.rows(g, &c, zd, y0, y1, ws)


cdef void _depthwise_tasks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef const conv_args *p = <const conv_args *>arg
    cdef pyconv_dw_geom g
    cdef int64_t t
    _dw_geom(p, &g)
    for t in range(lo, hi):
        _depthwise_task(p, &g, p.dw_kernel, p.kernel.epilogue, t, p.ws + slot * p.ws_stride)


cdef void _gemm_tasks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """(batch, group) GEMMs lo..hi, each on this thread alone."""
    cdef const conv_args *p = <const conv_args *>arg
    cdef int64_t t
    for t in range(lo, hi):
        _conv_gemm_task(p, t, 1, p.ws + slot * p.ws_stride, p.ws_stride)


cdef void _conv_forward(const conv_args *p, bint depthwise, int nthreads) noexcept nogil:
    cdef int64_t tasks, t
    if depthwise:
        tasks = p.batch * p.cout * p.od * p.dw_blocks
        parallel_for(nthreads, tasks, 1, _depthwise_tasks, <void *>p)
        return
    tasks = p.batch * p.groups
    if nthreads > 1 and tasks >= nthreads:
        # Enough independent GEMMs: whole ones per task, each single-threaded.
        parallel_for(nthreads, tasks, 1, _gemm_tasks, <void *>p)
    else:
        for t in range(tasks):
            _conv_gemm_task(p, t, nthreads, p.ws, p.ws_stride)


# ---------------------------------------------------------------------------------------
# 2-D convolution from a padded, stride-phase-split copy of the input (see phase_copy).

cdef enum:
    ALGO_AUTO = 0
    ALGO_IM2COL = 1          # implicit im2col packed straight from the image (any rank)
    ALGO_SHIFTED = 2         # shifted-B micro-kernel on the phase copy (1-D / 2-D)
    ALGO_PADDED = 3          # im2col packed from the phase copy (1-D / 2-D)

_ALGORITHMS = {"auto": ALGO_AUTO, "im2col": ALGO_IM2COL, "shifted": ALGO_SHIFTED,
               "padded": ALGO_PADDED}

# Phase copies of at most this many floats are made at once (then the next images').
DEF PHASE_COPY_WAVE_FLOATS = 1 << 21


def set_algorithm(name):
    """Forces the dense-convolution algorithm of plans made afterwards (their execution
    context keeps it): 'auto' (the default: per shape), 'im2col' (implicit im2col packed
    from the image), 'shifted' (GEMM reading B in place from a padded copy of the input)
    or 'padded' (im2col packed from that copy); the last two are 1-D / 2-D only, other
    shapes keep their usual path. For tests and benchmarks; returns the previous
    setting."""
    if name not in _ALGORITHMS:
        raise ValueError(f"algorithm must be one of {sorted(_ALGORITHMS)}, got {name!r}")
    previous = get_algorithm()
    _gemm.set_default_conv_algorithm(_ALGORITHMS[name])
    return previous


def get_algorithm():
    return {v: k for k, v in _ALGORITHMS.items()}[_gemm.get_default_conv_algorithm()]


cdef int _choose_algorithm(const conv_args *p, const pyconv_sgemm_kernel *kern,
                           int nthreads, int forced) noexcept:
    """The cheapest path by a cost model in multiply-add equivalents per group, for
    2-D (and 1-D) dense convs: every path computes M x K x (its columns): the shifted
    one whole NR-wide chunks of the oh x wq grid (wq - ow extra columns per row), the
    others the oh*ow columns in vectors of 16. Packing costs about 12 multiply-adds per
    value from the image (bounds and zero fill per run) and 8 from the phase copy, which
    itself costs 2 per value it holds (fitted to 17 layer shapes on AVX-512). With more
    threads than NR-wide column panels, padded im2col splits the rows too and every row
    block packs the same B (see _padded_split); the shifted path reads B in place."""
    cdef int64_t wq, hq, m, k, n, computed, copy, gemm, shifted, padded, im2col, packers
    if (forced == ALGO_IM2COL or p.kd != 1 or p.d != 1 or p.od != 1 or p.sd != 1
            or p.sw > PYCONV_MAX_PHASE_STRIDE or p.sh > PYCONV_MAX_PHASE_STRIDE):
        return ALGO_IM2COL
    if forced != ALGO_AUTO:
        return forced
    if p.kh * p.kw == 1:
        return ALGO_IM2COL      # strided 1x1: the copy would hold sh*sw phases to use one
    wq = p.ow + ((p.kw - 1) * p.dw) // p.sw
    hq = p.oh + ((p.kh - 1) * p.dh) // p.sh
    m = p.cout // p.groups
    k = p.cin // p.groups * p.kh * p.kw
    n = p.oh * p.ow
    # Shifted grid columns, counted as whole NR-wide chunks even where the edge kernel
    # computes a partial last chunk in fewer vectors: the static split of the tiles gives
    # a thread whole chunks, so the full ones set the time (fewer columns chose the
    # shifted path for 7x7 maps, 34% slower than padded im2col there at 2 threads).
    computed = (p.oh * wq + kern.nr - 1) // kern.nr * kern.nr
    copy = 2 * (p.cin // p.groups) * p.sh * p.sw * hq * wq
    gemm = m * k * ((n + 15) // 16 * 16)
    shifted = m * k * computed + copy
    packers = max(<int64_t>1, min((m + kern.mr - 1) // kern.mr,
                                  nthreads // max(<int64_t>1, p.batch * p.groups
                                                  * ((n + kern.nr - 1) // kern.nr))))
    padded = gemm + 8 * k * n * packers + copy
    im2col = gemm + 12 * k * n
    if shifted <= padded and shifted <= im2col:
        return ALGO_SHIFTED
    return ALGO_PADDED if padded < im2col else ALGO_IM2COL


cdef object _phase_copy_setup(conv_args *p, const pyconv_sgemm_kernel *kern):
    """Fills the shape part of p.pc and returns the B-row offsets (int64 ndarray)."""
    cdef phase_copy *pc = &p.pc
    cdef int64_t cin_g = p.cin // p.groups, kvol = p.kh * p.kw, c, b, e, k
    pc.wq = p.ow + ((p.kw - 1) * p.dw) // p.sw
    pc.hq = p.oh + ((p.kh - 1) * p.dh) // p.sh
    pc.plane = pc.hq * pc.wq
    pc.nplanes = cin_g * p.sh * p.sw
    # Shifted grid columns past ow (and past the last row) read up to wq + NR floats
    # beyond the last plane: they are dropped, but must be readable.
    pc.image = (pc.nplanes * pc.plane + pc.wq + kern.nr + 15) // 16 * 16
    pc.wave = max(<int64_t>1, min(p.batch * p.groups, PHASE_COPY_WAVE_FLOATS // pc.image))
    off = np.empty(cin_g * kvol, dtype=np.int64)
    cdef int64_t[::1] ov = off
    for c in range(cin_g):
        for b in range(p.kh):
            for e in range(p.kw):
                k = (c * p.kh + b) * p.kw + e
                ov[k] = (((c * p.sh + (b * p.dh) % p.sh) * p.sw + (e * p.dw) % p.sw) * pc.plane
                         + (b * p.dh) // p.sh * pc.wq + (e * p.dw) // p.sw)
    return off


cdef int64_t _phase_copy_blocking(conv_args *p, int nthreads) noexcept:
    """Splits the work into tasks for nthreads (p.pc columns, chunks, row blocks and
    per-thread scratch); returns the workspace in floats."""
    cdef phase_copy *pc = &p.pc
    cdef const pyconv_sgemm_kernel *kern = p.packed[0].kernel
    cdef int64_t mpanels = (p.cout // p.groups + kern.mr - 1) // kern.mr, want
    if p.algo == ALGO_SHIFTED:
        pc.ncols = p.oh * pc.wq
        pc.chunk = kern.nr
        pc.ws_stride = (kern.mr * kern.nr + 15) // 16 * 16
    else:
        pc.ncols = p.oh * p.ow
        _padded_split(p, kern, mpanels, nthreads)
        pc.ws_stride = sgemm_workspace_floats(&p.packed[0], pc.chunk, 1)
        return pc.wave * pc.image + nthreads * pc.ws_stride
    pc.nchunks = (pc.ncols + pc.chunk - 1) // pc.chunk
    # Enough tasks for every thread: split the rows when the chunks alone are too few
    # (free here: B is read in place, not packed per task).
    want = pc.wave * pc.nchunks
    pc.mblocks = min(mpanels, max(<int64_t>1, (4 * nthreads + want - 1) // want)
                     if nthreads > 1 else 1)
    return pc.wave * pc.image + nthreads * pc.ws_stride


cdef void _padded_split(conv_args *p, const pyconv_sgemm_kernel *kern, int64_t mpanels,
                        int nthreads) noexcept:
    """Padded im2col tasks: column chunks x row blocks per (image, group). Each task packs
    its own B, so rows are split only when the columns cannot feed the threads: among
    the splits into at least nthreads tasks, the one whose largest task (multiply-adds plus
    packing, as in _choose_algorithm) is cheapest."""
    cdef phase_copy *pc = &p.pc
    cdef int64_t panels = (pc.ncols + kern.nr - 1) // kern.nr, k = p.cin // p.groups * p.kh * p.kw
    cdef int64_t nch, mb, cols, rows, cost, best = -1, per_image, units
    pc.chunk = pc.ncols
    pc.nchunks = 1
    pc.mblocks = 1
    per_image = (nthreads + pc.wave - 1) // pc.wave      # tasks each image must provide
    if nthreads == 1 or per_image <= 1:
        return
    if panels >= 4 * per_image:                            # plenty of columns
        pc.chunk = (panels + 4 * per_image - 1) // (4 * per_image) * kern.nr
        pc.nchunks = (pc.ncols + pc.chunk - 1) // pc.chunk
        return
    # Few columns: chunks of whole 16-float vectors (the edge micro-kernel computes only
    # those), so that 64 columns split 32 + 32 rather than 48 + 16.
    units = (pc.ncols + 15) // 16
    for nch in range(1, min(units, per_image) + 1):
        mb = min(mpanels, (per_image + nch - 1) // nch)
        cols = min((units + nch - 1) // nch * 16, pc.ncols)   # the widest chunk
        rows = (mpanels + mb - 1) // mb * kern.mr
        cost = rows * k * ((cols + 15) // 16 * 16) + 8 * k * cols
        if best < 0 or cost < best:
            best = cost
            pc.chunk = (units + nch - 1) // nch * 16
            pc.mblocks = mb
    pc.nchunks = (pc.ncols + pc.chunk - 1) // pc.chunk


cdef struct padded_b:
    const float *x          # the phase copy of one (image, group)
    const int64_t *off      # B row k starts at x + off[k]
    int64_t wq, oh, ow      # 2-D output (od == 1)
    const pyconv_sgemm_kernel *kernel   # its pack_runs copies the runs


cdef void pack_b_padded(const void *ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                        int64_t nr, float *dst) noexcept nogil:
    """pack_b_im2col's panels, copied from the phase copy: column n = (oy, ox) of row k
    is x[off[k] + oy * wq + ox], so every run inside one output row and one NR panel is a
    plain copy (no bounds, no zero fill)."""
    cdef const padded_b *b = <const padded_b *>ctx
    cdef int64_t p, nseg = 0
    cdef im2col_segment *seg = _column_runs(n0, nc, kc, nr, b.oh, b.ow, &nseg)
    if seg == NULL:
        return
    cdef pyconv_run *runs = <pyconv_run *>malloc(max(nseg, <int64_t>1) * sizeof(pyconv_run))
    if runs != NULL:
        for p in range(nseg):
            runs[p].src = seg[p].yh * b.wq + seg[p].x0      # the run's offset in a B row
            runs[p].n = seg[p].n
            runs[p].dst = seg[p].dst
        b.kernel.pack_runs(b.x, b.off + k0, kc, runs, nseg, nr, dst)
        free(runs)
    free(seg)
    _zero_last_panel(dst, kc, nc, nr)


cdef void _padded_task(const conv_args *p, int64_t wave0, int64_t task, const float *xp,
                       float *ws) noexcept nogil:
    """Rows [m0, m1) x columns [n0, n1) of one (image, group) of the wave, by the packed
    GEMM with B panels copied from the phase copy."""
    cdef const phase_copy *pc = &p.pc
    cdef int64_t mb = task % pc.mblocks, t = task // pc.mblocks
    cdef int64_t chunk = t % pc.nchunks, img = t // pc.nchunks, ng = wave0 + img
    cdef int64_t n = ng // p.groups, grp = ng - n * p.groups, cout_g = p.cout // p.groups
    cdef const packed_a *a = &p.packed[grp]
    cdef int64_t mr = a.kernel.mr, npan = (a.m + mr - 1) // mr
    cdef int64_t per = (npan + pc.mblocks - 1) // pc.mblocks
    cdef int64_t m0 = mb * per * mr, m1 = min(a.m, (mb + 1) * per * mr)
    cdef int64_t n0 = chunk * pc.chunk, n1 = min(n0 + pc.chunk, pc.ncols), nc
    cdef padded_b ctx
    cdef pyconv_epilogue ep
    if m0 >= m1:
        return
    ctx.x = xp + img * pc.image
    ctx.off = pc.off
    ctx.wq = pc.wq
    ctx.oh = p.oh
    ctx.ow = p.ow
    ctx.kernel = a.kernel
    _fill_epilogue(p, grp * cout_g, n, &ep)
    nc = sgemm_nc(a, n1 - n0)
    sgemm_block(a, m0, m1, n0, n1, nc, pack_b_padded, &ctx,
                p.y + (n * p.cout + grp * cout_g) * pc.ncols, pc.ncols, 1.0, 0.0, &ep, ws,
                ws + min(a.kc, a.k) * nc)


cdef void _phase_copy_fill(const conv_args *p, int64_t ng, int64_t cy, float *dst) noexcept nogil:
    """The sw phase planes (py, 0..sw-1) of channel c of (image, group) ng, cy = c*sh + py:
    plane px holds dst[i, j] = x[c, i*sh + py - ph, j*sw + px - pw], zero outside the input
    (the per-ISA phase_split of src/kernels/sgemm_common.inc)."""
    cdef int64_t c = cy // p.sh, py = cy - c * p.sh
    cdef int64_t n = ng // p.groups, grp = ng - n * p.groups
    cdef const float *xc = p.x + ((n * p.cin + grp * (p.cin // p.groups) + c) * p.h) * p.w
    p.packed[0].kernel.phase_split(xc, p.h, p.w, p.sh, p.sw, py, p.ph, p.pw, p.pc.hq,
                                   p.pc.wq, p.pc.plane, dst)


cdef void _shifted_task(const conv_args *p, int64_t wave0, int64_t task, const float *xp,
                        float *tile) noexcept nogil:
    """Row block of one NR-wide chunk of grid columns of one (image, group) of the wave:
    tiles by the shifted micro-kernel, then bias, residual and activation on the tile and
    the kept columns copied out row run by row run."""
    cdef const phase_copy *pc = &p.pc
    cdef int64_t mb = task % pc.mblocks, t = task // pc.mblocks
    cdef int64_t chunk = t % pc.nchunks, img = t // pc.nchunks, ng = wave0 + img
    cdef int64_t n = ng // p.groups, grp = ng - n * p.groups
    cdef const packed_a *a = &p.packed[grp]
    cdef const pyconv_sgemm_kernel *kern = a.kernel
    cdef int64_t mr = kern.mr, nr = kern.nr, cout_g = p.cout // p.groups
    cdef int64_t mpad = (a.m + mr - 1) // mr * mr, npan = mpad // mr
    cdef int64_t per = (npan + pc.mblocks - 1) // pc.mblocks
    cdef int64_t pan, ir, rows, n0 = chunk * nr, n1 = min(n0 + nr, pc.ncols), j, oy, ox, run
    cdef int64_t cnt, i, plane = p.oh * p.ow
    cdef float *y = p.y + (n * p.cout + grp * cout_g) * plane
    cdef float *dst
    cdef pyconv_epilogue ep, seg
    cdef bint has_ep = p.bias != NULL or p.residual != NULL or p.act != PYCONV_ACT_NONE
    # Without a residual the epilogue does not depend on the position: one call on the
    # whole tile (dropped columns included) instead of one per row run.
    cdef bint whole_tile = has_ep and p.residual == NULL
    _fill_epilogue(p, grp * cout_g, n, &ep)
    for pan in range(mb * per, min(npan, (mb + 1) * per)):
        ir = pan * mr
        rows = min(mr, a.m - ir)
        if n1 - n0 < nr and kern.shifted_edge != NULL:   # a partial last chunk
            kern.shifted_edge(a.k, a.kc, mpad, ir, a.data, xp + img * pc.image + n0, pc.off,
                              tile, n1 - n0)
        else:
            kern.shifted(a.k, a.kc, mpad, ir, a.data, xp + img * pc.image + n0, pc.off, tile)
        seg = ep
        seg.bias = ep.bias + ir if ep.bias != NULL else NULL
        if whole_tile:
            kern.epilogue(tile, nr, rows, n1 - n0, &seg)
        j = n0
        while j < n1:
            oy = j // pc.wq
            ox = j - oy * pc.wq
            run = min(pc.wq - ox, n1 - j)
            if ox < p.ow:
                cnt = min(run, p.ow - ox)
                if has_ep and not whole_tile:      # with a residual: this run's part of it
                    seg.residual = ep.residual + ir * plane + oy * p.ow + ox
                    kern.epilogue(tile + (j - n0), nr, rows, cnt, &seg)
                dst = y + ir * plane + oy * p.ow + ox
                for i in range(rows):
                    memcpy(dst + i * plane, tile + i * nr + (j - n0), cnt * sizeof(float))
            j += run


cdef struct _wave_job:
    const conv_args *p
    float *copies            # the wave's phase copies, pc.image floats per (image, group)
    int64_t wave0            # first (image, group) of the wave
    int64_t rows             # (channel, row phase) pairs per image


cdef void _fill_tasks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Phase planes of (image, channel row phase) pairs lo..hi of the wave."""
    cdef const _wave_job *j = <const _wave_job *>arg
    cdef const conv_args *p = j.p
    cdef int64_t t
    for t in range(lo, hi):
        _phase_copy_fill(p, j.wave0 + t // j.rows, t % j.rows,
                         j.copies + (t // j.rows) * p.pc.image + (t % j.rows) * p.sw * p.pc.plane)


cdef void _tile_tasks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Tiles lo..hi of the wave: a contiguous run (neighbouring chunks share the cache
    lines at their edges in every output row; one thread writing both avoids false
    sharing)."""
    cdef const _wave_job *j = <const _wave_job *>arg
    cdef const conv_args *p = j.p
    cdef float *scratch = p.ws + slot * p.pc.ws_stride
    cdef int64_t t
    for t in range(lo, hi):
        if p.algo == ALGO_SHIFTED:
            _shifted_task(p, j.wave0, t, j.copies, scratch)
        else:
            _padded_task(p, j.wave0, t, j.copies, scratch)


cdef void _phase_copy_forward(const conv_args *p, int nthreads, float *ws) noexcept nogil:
    """ws: wave * image floats for the phase copies, then per-thread scratch (p.ws)."""
    cdef const phase_copy *pc = &p.pc
    cdef int64_t total = p.batch * p.groups, count, t, tasks, w
    cdef _wave_job j
    j.p = p
    j.copies = ws
    j.rows = pc.nplanes // p.sw
    for w in range((total + pc.wave - 1) // pc.wave):
        j.wave0 = w * pc.wave
        count = min(pc.wave, total - j.wave0)
        for t in range(count):    # the slack past the last plane: read, never used
            _zero(ws + t * pc.image + pc.nplanes * pc.plane, pc.image - pc.nplanes * pc.plane)
        parallel_for(nthreads, count * j.rows, grain_for(count * j.rows, nthreads),
                     _fill_tasks, &j)
        tasks = count * pc.nchunks * pc.mblocks
        parallel_for(nthreads, tasks, grain_for(tasks, nthreads), _tile_tasks, &j)


# ---------------------------------------------------------------------------------------
# Transposed convolution.

cdef void _col2im_plane(const conv_args *p, const float *cols, int64_t oc_in_group,
                        float *y) noexcept nogil:
    """Scatter-adds the kvol rows of cols that belong to one output channel into y.

    cols rows: (oc_in_group, a, b, e); columns: input positions. Here (d, h, w) is the
    INPUT size and (od, oh, ow) the OUTPUT size of the transposed convolution."""
    cdef int64_t kvol = p.kd * p.kh * p.kw, in_plane = p.d * p.h * p.w
    cdef int64_t a, b, e, iz, iy, zo, yo, off, lo, hi, lo1, hi1, i, row
    cdef const float *src
    cdef const float *src1 = NULL
    cdef float *dst
    # Stride 2, dilation 1: taps e and e + 1 fill the even and odd output columns of the
    # same pairs, so one loop adds both (contiguous stores instead of two strided passes).
    cdef bint pairs = p.sw == 2 and p.dw == 1
    for a in range(p.kd):
        for b in range(p.kh):
            e = 0
            while e < p.kw:
                src = cols + (oc_in_group * kvol + (a * p.kh + b) * p.kw + e) * in_plane
                off = e * p.dw - p.pw
                # Input columns i whose output column i * sw + off is inside [0, ow).
                _valid_range(off, p.sw, p.ow, p.w, &lo, &hi)
                lo1 = hi1 = 0
                if pairs and e + 1 < p.kw:
                    src1 = src + in_plane
                    _valid_range(off + 1, 2, p.ow, p.w, &lo1, &hi1)
                for iz in range(p.d):
                    zo = iz * p.sd - p.pd + a * p.dd
                    if zo < 0 or zo >= p.od:
                        continue
                    for iy in range(p.h):
                        yo = iy * p.sh - p.ph + b * p.dh
                        if yo < 0 or yo >= p.oh:
                            continue
                        dst = y + (zo * p.oh + yo) * p.ow + off
                        row = (iz * p.h + iy) * p.w
                        if hi1 <= lo1:       # a single tap (or any other stride)
                            for i in range(lo, hi):
                                dst[i * p.sw] += src[row + i]
                            continue
                        for i in range(lo, min(hi, lo1)):
                            dst[2 * i] += src[row + i]
                        for i in range(lo1, min(hi1, lo)):
                            dst[2 * i + 1] += src1[row + i]
                        for i in range(max(lo, lo1), min(hi, hi1)):
                            dst[2 * i] += src[row + i]
                            dst[2 * i + 1] += src1[row + i]
                        for i in range(max(lo, hi1), hi):
                            dst[2 * i] += src[row + i]
                        for i in range(max(lo1, hi), hi1):
                            dst[2 * i + 1] += src1[row + i]
                e += 2 if hi1 > lo1 else 1


cdef void _finish_plane(const conv_args *p, int64_t n, int64_t oc, float *y) noexcept nogil:
    cdef pyconv_epilogue ep
    cdef int64_t plane = p.od * p.oh * p.ow
    _fill_epilogue(p, oc, n, &ep)
    p.kernel.epilogue(y, plane, 1, plane, &ep)


cdef void _transposed_direct_plane(const conv_args *p, int64_t plane_index) noexcept nogil:
    """Transposed convolution of one output plane whose group has one input channel."""
    cdef int64_t n = plane_index // p.cout, oc = plane_index - n * p.cout
    cdef int64_t cout_g = p.cout // p.groups, grp = oc // cout_g
    cdef int64_t kvol = p.kd * p.kh * p.kw, plane = p.od * p.oh * p.ow
    cdef const float *x = p.x + (n * p.cin + grp) * p.d * p.h * p.w
    # weight layout (Cin, Cout_g, kvol): input channel grp, output channel oc % cout_g
    cdef const float *wk = p.weight + (grp * cout_g + (oc - grp * cout_g)) * kvol
    cdef float *y = p.y + plane_index * plane
    cdef int64_t a, b, e, iz, iy, zo, yo, off, lo, hi, i
    cdef float wv
    cdef const float *src
    cdef float *dst
    memset(y, 0, plane * sizeof(float))
    for iz in range(p.d):
        for a in range(p.kd):
            zo = iz * p.sd - p.pd + a * p.dd
            if zo < 0 or zo >= p.od:
                continue
            for iy in range(p.h):
                src = x + (iz * p.h + iy) * p.w
                for b in range(p.kh):
                    yo = iy * p.sh - p.ph + b * p.dh
                    if yo < 0 or yo >= p.oh:
                        continue
                    for e in range(p.kw):
                        wv = wk[(a * p.kh + b) * p.kw + e]
                        off = e * p.dw - p.pw
                        _valid_range(off, p.sw, p.ow, p.w, &lo, &hi)
                        dst = y + (zo * p.oh + yo) * p.ow + off
                        for i in range(lo, hi):
                            dst[i * p.sw] += wv * src[i]
    _finish_plane(p, n, oc, y)


cdef void _direct_planes(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef int64_t t
    for t in range(lo, hi):
        _transposed_direct_plane(<const conv_args *>arg, t)


cdef struct _col2im_job:
    const conv_args *p
    const float *cols
    float *y                 # the group's first output plane
    int64_t n, first_oc


cdef void _col2im_planes(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef const _col2im_job *j = <const _col2im_job *>arg
    cdef int64_t plane = j.p.od * j.p.oh * j.p.ow, oc
    for oc in range(lo, hi):
        memset(j.y + oc * plane, 0, plane * sizeof(float))
        _col2im_plane(j.p, j.cols, oc, j.y + oc * plane)
        _finish_plane(j.p, j.n, j.first_oc + oc, j.y + oc * plane)


cdef void _conv_transpose_forward(const conv_args *p, bint direct, int nthreads, float *cols,
                                  float *ws) noexcept nogil:
    cdef int64_t t, grp, in_plane = p.d * p.h * p.w, plane = p.od * p.oh * p.ow
    cdef int64_t cin_g = p.cin // p.groups, cout_g = p.cout // p.groups
    cdef strided_b sb
    cdef _col2im_job j
    if direct:
        parallel_for(nthreads, p.batch * p.cout, 1, _direct_planes, <void *>p)
        return
    j.p = p
    j.cols = cols
    for t in range(p.batch * p.groups):
        j.n = t // p.groups
        grp = t - j.n * p.groups
        sb.data = p.x + (j.n * p.cin + grp * cin_g) * in_plane
        sb.sk = in_plane
        sb.sn = 1
        sgemm_packed(&p.packed[grp], in_plane, pack_b_strided, &sb, cols, in_plane, 1.0, 0.0,
                     NULL, nthreads, ws)
        j.first_oc = grp * cout_g
        j.y = p.y + (j.n * p.cout + j.first_oc) * plane
        parallel_for(nthreads, cout_g, grain_for(cout_g, nthreads), _col2im_planes, &j)


# ---------------------------------------------------------------------------------------
# Python side: packed weights + run.

cdef enum:
    DW_BLOCK_FLOATS = 16384     # packed input rows per depthwise task: 64 KiB, L2-resident


cdef int64_t _depthwise_blocking(conv_args *p, int nthreads) noexcept:
    """Splits each output slice into blocks of rows (a multiple of 4, the register tile)
    small enough for the packed-row buffer to stay in L2, and into enough blocks that
    every thread has work; returns the per-thread workspace in floats."""
    cdef pyconv_dw_geom g
    _dw_geom(p, &g)
    cdef int64_t per_row = pyconv_dwconv_workspace_floats(&g, 2) - pyconv_dwconv_workspace_floats(&g, 1)
    cdef int64_t rows = max(<int64_t>1, DW_BLOCK_FLOATS // max(per_row, <int64_t>1))
    cdef int64_t slices = p.batch * p.cout * p.od
    cdef int64_t want = (4 * nthreads + slices - 1) // slices    # blocks per slice
    if want > 1:
        rows = min(rows, (p.oh + want - 1) // want)
    if rows >= 4:
        rows = rows // 4 * 4
    rows = min(rows, p.oh)
    p.dw_rows = max(rows, <int64_t>1)
    p.dw_blocks = (p.oh + p.dw_rows - 1) // p.dw_rows
    return (pyconv_dwconv_workspace_floats(&g, p.dw_rows) + 15) // 16 * 16


cdef float *_float_data(object a, str name, bint write) except? NULL:
    """The data of a float32 C-contiguous ndarray (NULL when empty), without the cost of
    a memoryview; anything else is refused."""
    if (not isinstance(a, np.ndarray) or cnp.PyArray_TYPE(<cnp.ndarray>a) != cnp.NPY_FLOAT32
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a)
            or (write and not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>a))):
        raise ValueError(f"ConvKernel.run: {name} must be a{' writeable' if write else 'n'} "
                         f"float32 C-contiguous array, got {getattr(a, 'dtype', type(a))}")
    if cnp.PyArray_SIZE(<cnp.ndarray>a) == 0:
        return NULL
    return <float *>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef int64_t _conv_macs(const conv_args *p, bint transposed) noexcept:
    """Multiply-adds of a whole call: small layers (depthwise ones especially) run on
    fewer threads, since a fork/join costs more than their work."""
    cdef int64_t kvol = p.kd * p.kh * p.kw
    return (p.batch * (p.cin if transposed else p.cout) * kvol
            * (p.d * p.h * p.w if transposed else p.od * p.oh * p.ow)
            * ((p.cout if transposed else p.cin) // p.groups))


cdef class ConvCall


cdef tuple _as3(tuple t, int64_t fill):
    return (fill,) * (3 - len(t)) + t


cdef class ConvKernel:
    """Convolution weights prepared once (packed per group) and run many times.

    Parameters
    ----------
    weight : ndarray float32
        (C_out, C_in/groups, *k) for a convolution, (C_in, C_out/groups, *k) when
        ``transposed`` (PyTorch and ONNX layouts); 1 to 3 spatial dims.
    bias : ndarray float32 (C_out,) or None
    groups : int
    transposed : bool
    context : ExecutionContext, optional
        Threads, ISA and algorithm setting of every run (None: the process defaults now).
    """
    cdef readonly object weight
    cdef readonly object bias
    cdef readonly int64_t groups, cin, cout, nspatial
    cdef readonly bint transposed, direct
    cdef readonly tuple kernel_shape
    cdef list _packed_mats
    cdef object _views          # bytearray holding one packed_a per group
    cdef packed_a *_pviews      # its data (never resized, so the pointer stays valid)
    cdef const float *_wptr     # self.weight / self.bias data (owned, never reassigned)
    cdef const float *_bptr
    cdef object _gkey           # (shapes, stride, pads, dilation) that _g was built for
    cdef conv_args _g           # geometry part of the last run's arguments
    cdef object _goffsets       # its shifted-path B-row offsets (None: other paths)
    cdef exec_ctx ctx
    cdef readonly object context

    def __init__(self, weight, bias, int64_t groups, bint transposed=False, context=None):
        if context is None:
            context = _gemm.ExecutionContext()
        self.ctx = context_of(context)
        self.context = context
        self.weight = np.require(weight, requirements="CA")
        self.bias = None if bias is None else np.require(bias, requirements="CA")
        self.groups = groups
        self.transposed = transposed
        self.nspatial = self.weight.ndim - 2
        self.kernel_shape = tuple(self.weight.shape[2:])
        if transposed:
            self.cin = self.weight.shape[0]
            self.cout = self.weight.shape[1] * groups
        else:
            self.cout = self.weight.shape[0]
            self.cin = self.weight.shape[1] * groups
        cdef int64_t kvol = int(np.prod(self.kernel_shape))
        cdef int64_t cin_g = self.cin // groups, cout_g = self.cout // groups
        # One input channel per group: direct kernels beat a K = kvol GEMM per channel.
        self.direct = cin_g == 1
        self._packed_mats = []
        self._views = None
        self._pviews = NULL
        self._gkey = None
        self._goffsets = None
        cdef const float[::1] wflat = self.weight.reshape(-1)
        cdef const float[::1] bflat
        self._wptr = &wflat[0] if wflat.shape[0] else NULL
        self._bptr = NULL
        if self.bias is not None:
            bflat = self.bias
            self._bptr = &bflat[0] if bflat.shape[0] else NULL
        if self.direct:
            return
        for g in range(groups):
            if transposed:
                wg = self.weight[g * cin_g:(g + 1) * cin_g].reshape(cin_g, cout_g * kvol).T
            else:
                wg = self.weight[g * cout_g:(g + 1) * cout_g].reshape(cout_g, cin_g * kvol)
            self._packed_mats.append(PackedMatrix(wg, context))
        self._views = bytearray(groups * sizeof(packed_a))
        cdef unsigned char[::1] raw = self._views
        cdef packed_a *views = <packed_a *>&raw[0]
        for g in range(groups):
            views[g] = (<PackedMatrix>self._packed_mats[g]).view
        self._pviews = views

    @property
    def last_algorithm(self):
        """The path of the last run: 'depthwise', 'pointwise', 'im2col', 'shifted',
        'padded' or, for a transposed conv, 'col2im' / 'depthwise'; None before the first
        run."""
        if self._gkey is None:
            return None
        if self.direct:
            return "depthwise"
        if self.transposed:
            return "col2im"
        if self._g.pointwise:
            return "pointwise"
        return {ALGO_SHIFTED: "shifted", ALGO_PADDED: "padded"}.get(self._g.algo, "im2col")

    def run(self, x, out, stride, pads_begin, dilation, residual=None, activation=None,
            float act_alpha=0.0, float act_beta=0.0):
        """Runs on x (N, C_in, *spatial) into out (N, C_out, *out_spatial), both float32
        C-contiguous, with geometry already validated by pyconv.functional."""
        cdef conv_args p
        key = (x.shape, out.shape, stride, pads_begin, dilation)
        if key == self._gkey:
            p = self._g
            offsets = self._goffsets
        else:
            # Geometry from the shapes, once per new shape (tuple work costs microseconds,
            # as much as a small layer's kernel). Built in p, then stored whole: another
            # Python thread never sees a half-written cache.
            offsets = self._geometry(&p, x.shape, out.shape, stride, pads_begin, dilation)
            self._g = p
            self._goffsets = offsets
            self._gkey = key
        p.act = activation_code(activation)
        p.act_a = act_alpha
        p.act_b = act_beta
        return self._execute(&p, offsets, x, out, residual)

    def bind(self, x_shape, out, stride, pads_begin, dilation, activation=None,
             float act_alpha=0.0, float act_beta=0.0):
        """A :class:`ConvCall`: ``run`` with everything but the data resolved once, for
        inputs of shape ``x_shape`` written into ``out`` (a memory planner's buffer)."""
        cdef ConvCall call = ConvCall.__new__(ConvCall)
        if not isinstance(out, np.ndarray) or out.ndim != len(x_shape) or len(x_shape) > 5:
            raise ValueError(f"ConvKernel.bind: out must be an ndarray of the input's rank, "
                             f"got {type(out).__name__} for input shape {x_shape}")
        call.kernel = self
        call.offsets = self._geometry(&call.p, tuple(x_shape), out.shape, stride, pads_begin,
                                      dilation)
        call.p.act = activation_code(activation)
        call.p.act_a = act_alpha
        call.p.act_b = act_beta
        call.out = out
        call.ndim = len(x_shape)
        for i in range(call.ndim):
            call.x_dims[i] = x_shape[i]
        return call

    cdef object _geometry(self, conv_args *p, tuple x_shape, tuple out_shape, stride,
                          pads_begin, dilation):
        """Fills the shape part of p (and the algorithm); returns the phase-copy B-row
        offsets, or None on the other paths."""
        xs = _as3(x_shape[2:], 1)
        ys = _as3(out_shape[2:], 1)
        ks = _as3(self.kernel_shape, 1)
        ss = _as3(tuple(stride), 1)
        ps = _as3(tuple(pads_begin), 0)
        ds = _as3(tuple(dilation), 1)
        p.batch = x_shape[0]
        p.d, p.h, p.w = xs
        p.od, p.oh, p.ow = ys
        p.kd, p.kh, p.kw = ks
        p.sd, p.sh, p.sw = ss
        p.pd, p.ph, p.pw = ps
        p.dd, p.dh, p.dw = ds
        p.pointwise = (not self.transposed and ks == (1, 1, 1) and ss == (1, 1, 1)
                       and ps == (0, 0, 0) and xs == ys)
        p.groups = self.groups
        p.cin = self.cin
        p.cout = self.cout
        p.kernel = self.ctx.kernel
        p.dw_kernel = pyconv_dwconv_kernel_for(self.ctx.kernel.isa)
        p.algo = ALGO_IM2COL     # also the pointwise GEMM (see _conv_gemm_task)
        if not (self.direct or self.transposed or p.pointwise):
            p.algo = _choose_algorithm(p, self._pviews[0].kernel,
                                       threads_for(_conv_macs(p, False), self.ctx.nthreads),
                                       self.ctx.conv_algorithm)
        if p.algo != ALGO_IM2COL:
            return _phase_copy_setup(p, self._pviews[0].kernel)
        return None

    cdef object _execute(self, const conv_args *geometry, object offsets, x, out, residual):
        """The data part of the arguments, the workspace, then the kernels (GIL released)."""
        cdef conv_args p = geometry[0]
        p.x = _float_data(x, "x", False)
        p.y = _float_data(out, "out", True)
        p.weight = self._wptr
        p.bias = self._bptr
        p.residual = NULL if residual is None else _float_data(residual, "residual", False)
        p.packed = self._pviews
        if p.algo != ALGO_IM2COL:
            p.pc.off = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>offsets)
        cdef int64_t ysize = cnp.PyArray_SIZE(<cnp.ndarray>out)
        if p.batch == 0 or ysize == 0:
            return out
        cdef int nthreads = threads_for(_conv_macs(&p, self.transposed), self.ctx.nthreads)
        cdef int64_t ncols, ws_stride, cols_floats
        cdef float *ws
        cdef float *cols
        if not self.transposed:
            ws = NULL
            ws_stride = 0
            if self.direct:
                ws_stride = _depthwise_blocking(&p, nthreads)
                ws = workspace_floats(ws_stride * nthreads)
            elif p.algo != ALGO_IM2COL:
                ws = workspace_floats(_phase_copy_blocking(&p, nthreads))
            else:
                ncols = p.od * p.oh * p.ow
                ws_stride = sgemm_workspace_floats(&p.packed[0], ncols, 1)
                ws = workspace_floats(ws_stride * nthreads)
            p.ws = ws
            p.ws_stride = ws_stride
            with nogil:
                if p.algo != ALGO_IM2COL and not self.direct:
                    p.ws = ws + p.pc.wave * p.pc.image      # after the phase copies
                    _phase_copy_forward(&p, nthreads, ws)
                else:
                    _conv_forward(&p, self.direct, nthreads)
        else:
            ws = NULL
            cols = NULL
            if not self.direct:
                ncols = p.d * p.h * p.w
                cols_floats = (p.packed[0].m * ncols + 15) // 16 * 16
                ws = workspace_floats(cols_floats
                                      + sgemm_workspace_floats(&p.packed[0], ncols, nthreads))
                cols = ws
                ws = ws + cols_floats
            with nogil:
                _conv_transpose_forward(&p, self.direct, nthreads, cols, ws)
        return out


cdef class ConvCall:
    """One convolution bound to an input shape and an output buffer (see
    :meth:`ConvKernel.bind`). ``call(x, residual=None)`` writes and returns ``out``, or
    returns None, computing nothing, when the arguments are not what it was bound for
    (another shape or dtype, a non-contiguous array, an overlap with ``out``): the
    caller then takes the general path."""
    cdef ConvKernel kernel
    cdef conv_args p
    cdef object offsets
    cdef readonly object out
    cdef int ndim
    cdef cnp.npy_intp x_dims[5]

    def __call__(self, x, residual=None):
        if not planned_array(x, self.ndim, self.x_dims) or arrays_overlap(x, self.out):
            return None
        if residual is not None and (
                not planned_array(residual, self.ndim,
                                      cnp.PyArray_DIMS(<cnp.ndarray>self.out))
                or arrays_overlap(residual, self.out)):
            return None
        return self.kernel._execute(&self.p, self.offsets, x, self.out, residual)
