# Phase copy (included by conv.pyx): 1-D / 2-D dense convolution from a zero-padded,
# stride-phase-split copy of the input (see phase_copy in conv.pyx), read in place by
# the shifted micro-kernel or packed from it with plain copies (padded im2col).

# Phase copies of at most this many floats are made at once (then the next images').
DEF PHASE_COPY_WAVE_FLOATS = 1 << 21
# One copy per thread only for images of at most this many floats (256 KiB), and for at
# most this many threads.
DEF PRIVATE_COPY_MAX_FLOATS = 1 << 16
DEF MAX_COPIES = 64
# A float of a phase copy costs about this many multiply-adds of the tiles (at 1 thread
# a 64 -> 96 dilated 3x3 on 8x8 spent 706 samples copying 9.2K floats, 7560 on 3.5M
# multiply-adds).
DEF COPY_FLOAT_MACS = 35
# A float of a band of a shared copy costs its thread about this many private copy floats
# at 2 threads: its line was last read (the tiles' rows beyond their band) or written by
# another core. 3 -> 16 3x3 / 2 on 64x64 at 2 threads: 4.1 us of CPU per thread for half
# the copy, 2.6 for the whole at 1 thread (the masked stores waiting for their lines).
DEF SHARED_COPY_FLOAT_COST = 3


cdef object _phase_copy_setup(conv_args *p, const pyconv_sgemm_kernel *kern):
    """Fills the shape part of p.pc and returns the B-row offsets (int64 ndarray)."""
    cdef const pyconv_conv_geom *g = &p.geom
    cdef phase_copy *pc = &p.pc
    cdef int64_t sh = g.s[1], sw = g.s[2], dh = g.dl[1], dw = g.dl[2]
    cdef int64_t cin_g = p.cin // p.groups, kvol = g.k[1] * g.k[2], c, b, e, k
    pc.wq = g.out_size[2] + ((g.k[2] - 1) * dw) // sw
    pc.hq = g.out_size[1] + ((g.k[1] - 1) * dh) // sh
    # Planes start on cache lines, as band edges inside a plane do: the threads filling
    # the last rows of one plane and the first of the next never write the same line.
    pc.plane = (pc.hq * pc.wq + 15) // 16 * 16
    pc.nplanes = cin_g * sh * sw
    # Shifted grid columns past ow (and past the last row) read up to wq + NR floats
    # beyond the last plane: they are dropped, but must be readable.
    pc.image = (pc.nplanes * pc.plane + pc.wq + kern.nr + 15) // 16 * 16
    pc.wave = max(<int64_t>1, min(p.batch * p.groups, PHASE_COPY_WAVE_FLOATS // pc.image))
    off = np.empty(cin_g * kvol, dtype=np.int64)
    cdef int64_t[::1] ov = off
    for c in range(cin_g):
        for b in range(g.k[1]):
            for e in range(g.k[2]):
                # K in the GEMM's order (channel, row, column), or kernel row first for
                # the channel tiles (see channel_panels)
                k = ((b * cin_g + c) * g.k[2] + e if p.algo == ALGO_CHANNELS
                     else (c * g.k[1] + b) * g.k[2] + e)
                ov[k] = (((c * sh + (b * dh) % sh) * sw + (e * dw) % sw) * pc.plane
                         + (b * dh) // sh * pc.wq + (e * dw) // sw)
    return off


cdef int64_t _phase_copy_blocking(conv_args *p, int nthreads) noexcept:
    """Splits the work into tasks for nthreads (p.pc columns, chunks, row blocks and
    per-thread scratch); returns the workspace in floats."""
    cdef phase_copy *pc = &p.pc
    cdef const pyconv_sgemm_kernel *kern = p.packed[0].kernel
    cdef int64_t mpanels = (p.cout // p.groups + kern.mr - 1) // kern.mr, want
    cdef int64_t bands = min(pc.hq, (nthreads + pc.wave - 1) // pc.wave)
    cdef int64_t macs = (p.cout // p.groups * p.packed[0].k * p.geom.out_size[1]
                         * p.geom.out_size[2] * pc.wave)
    # One copy per thread, each filled whole by its thread, where filling the rest of the
    # image costs each thread under a quarter of its tiles (one band per thread when
    # the images do not feed the threads: the rows a band's tiles read beyond it moved
    # between the cores' caches every call, read by one and rewritten by the other).
    # 2 threads, interleaved: a 64 -> 96 dilated 3x3 on 8x8 55.7 -> 40.2 us, 16 -> 32
    # on 32x32 (dilation 2) 58.6 -> 52.4. Below SHARED_COPY_FLOAT_COST threads a band
    # costs more than the whole private copy: 3 -> 16 3x3 / 2 on 64x64 11.7-12.7 ->
    # 9.1-9.8 us at 2 threads.
    pc.copies = 1
    if (1 < nthreads <= MAX_COPIES and pc.wave < nthreads
            and pc.image <= PRIVATE_COPY_MAX_FLOATS
            and (nthreads < SHARED_COPY_FLOAT_COST
                 or 4 * COPY_FLOAT_MACS * pc.wave * pc.image * (bands - 1) // bands
                 <= macs // nthreads)):
        pc.copies = nthreads
    if p.algo == ALGO_CHANNELS:
        # Tasks: chunks of channel_cols outputs of one output row x NR-channel panels.
        pc.ncols = p.geom.out_size[1] * p.geom.out_size[2]
        pc.chunk = kern.channel_cols
        pc.nchunks = p.geom.out_size[1] * ((p.geom.out_size[2] + pc.chunk - 1) // pc.chunk)
        pc.mblocks = (p.cout // p.groups + kern.nr - 1) // kern.nr
        pc.ws_stride = slot_floats(kern.channel_cols * kern.nr)
        return pc.copies * pc.wave * pc.image + nthreads * pc.ws_stride
    if p.algo == ALGO_SHIFTED:
        pc.ncols = _shifted_columns(&p.geom, kern, pc.wq, &pc.row_vectors)
        if pc.row_vectors == 0:
            pc.ncols = p.geom.out_size[1] * pc.wq
        else:
            pc.ncols = p.geom.out_size[1] * pc.row_vectors * kern.vl
        pc.chunk = kern.nr
        pc.ws_stride = slot_floats(kern.mr * kern.nr)
    else:
        pc.ncols = p.geom.out_size[1] * p.geom.out_size[2]
        _padded_split(p, kern, mpanels, nthreads)
        pc.ws_stride = sgemm_workspace_floats(&p.packed[0], pc.chunk, 1)
        return pc.copies * pc.wave * pc.image + nthreads * pc.ws_stride
    pc.nchunks = (pc.ncols + pc.chunk - 1) // pc.chunk
    # Enough tasks for every thread: split the rows when the chunks alone are too few
    # (free here: B is read in place, not packed per task).
    want = pc.wave * pc.nchunks
    pc.mblocks = min(mpanels, max(<int64_t>1, (4 * nthreads + want - 1) // want)
                     if nthreads > 1 else 1)
    return pc.copies * pc.wave * pc.image + nthreads * pc.ws_stride


cdef void _padded_split(conv_args *p, const pyconv_sgemm_kernel *kern, int64_t mpanels,
                        int nthreads) noexcept:
    """Padded im2col tasks: column chunks x row blocks per (image, group). Each task packs
    its own B, so rows are split only when the columns cannot feed the threads: among
    the splits into at least nthreads tasks, the one whose largest task (multiply-adds plus
    packing, as in _choose_algorithm, plus one per weight it reads) is cheapest. The
    weights' term: in a model they come from memory, and every column chunk streams all of
    them, so few columns split by rows (512 -> 512 3x3 on 7x7 at 2 threads: 32 + 17
    columns 1.60 ms, 2 x 256 rows 1.34)."""
    cdef phase_copy *pc = &p.pc
    cdef int64_t panels = (pc.ncols + kern.nr - 1) // kern.nr
    cdef int64_t k = p.cin // p.groups * p.geom.k[1] * p.geom.k[2]
    cdef int64_t nch, mb, cols, rows, cost, best = -1, per_image, units
    pc.chunk = pc.ncols
    pc.unit = pc.ncols
    pc.nchunks = 1
    pc.mblocks = 1
    per_image = (nthreads + pc.wave - 1) // pc.wave      # tasks each image must provide
    if nthreads == 1 or per_image <= 1:
        return
    if panels >= 4 * per_image:                            # plenty of columns
        # The panels dealt evenly over the chunks (whole panels of one width left the
        # last chunk short: 784 columns in 6 chunks of 144 ran 432 + 352 at 2 threads).
        pc.unit = kern.nr
        pc.nchunks = 4 * per_image
        pc.chunk = (panels + pc.nchunks - 1) // pc.nchunks * kern.nr
        return
    # Few columns: chunks of whole 16-float vectors (the edge micro-kernel computes only
    # those), so that 64 columns split 32 + 32 rather than 48 + 16.
    units = (pc.ncols + 15) // 16
    pc.unit = 16
    for nch in range(1, min(units, per_image) + 1):
        mb = min(mpanels, (per_image + nch - 1) // nch)
        cols = min((units + nch - 1) // nch * 16, pc.ncols)   # the widest chunk
        rows = (mpanels + mb - 1) // mb * kern.mr
        cost = rows * k * ((cols + 15) // 16 * 16) + 8 * k * cols + rows * k
        if best < 0 or cost < best:
            best = cost
            pc.chunk = cols
            pc.nchunks = nch
            pc.mblocks = mb


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
    cdef int64_t units = (pc.ncols + pc.unit - 1) // pc.unit, nc
    cdef int64_t n0 = chunk * units // pc.nchunks * pc.unit
    cdef int64_t n1 = min((chunk + 1) * units // pc.nchunks * pc.unit, pc.ncols)
    cdef padded_b ctx
    cdef pyconv_epilogue ep
    if m0 >= m1:
        return
    ctx.x = xp + img * pc.image
    ctx.off = pc.off
    ctx.wq = pc.wq
    ctx.oh = p.geom.out_size[1]
    ctx.ow = p.geom.out_size[2]
    ctx.kernel = a.kernel
    _fill_epilogue(p, grp * cout_g, n, &ep)
    nc = sgemm_nc(a, n1 - n0)
    sgemm_block(a, m0, m1, n0, n1, nc, pack_b_padded, &ctx,
                p.y + (n * p.cout + grp * cout_g) * pc.ncols, pc.ncols, 1.0, 0.0, &ep, ws,
                ws + min(a.kc, a.k) * nc)


cdef void _phase_copy_fill(const conv_args *p, int64_t ng, int64_t i0, int64_t i1,
                           float *dst) noexcept nogil:
    """Rows [i0, i1) of every phase plane of (image, group) ng: plane (c, py, px) holds
    dst[i, j] = x[c, i*sh + py - ph, j*sw + px - pw], zero outside the input (the per-ISA
    phase_split of src/kernels/sgemm_common.inc)."""
    cdef const pyconv_conv_geom *g = &p.geom
    cdef int64_t n = ng // p.groups, grp = ng - n * p.groups, cin_g = p.cin // p.groups
    cdef int64_t hw = g.in_size[1] * g.in_size[2]
    p.packed[0].kernel.phase_split(p.x + (n * p.cin + grp * cin_g) * hw, hw, cin_g,
                                   g.in_size[1], g.in_size[2], g.s[1], g.s[2], g.pb[1],
                                   g.pb[2], p.pc.wq, p.pc.hq, p.pc.plane, i0, i1, dst)


cdef void _shifted_task(const conv_args *p, int64_t wave0, int64_t task, const float *xp,
                        float *tile) noexcept nogil:
    """Row block of one NR-wide chunk of grid columns (or of row vectors) of one (image,
    group) of the wave: tiles by the shifted micro-kernel, then bias, residual and
    activation on the tile and the kept columns copied out run by run."""
    cdef const pyconv_conv_geom *g = &p.geom
    cdef const phase_copy *pc = &p.pc
    cdef int64_t mb = task % pc.mblocks, t = task // pc.mblocks
    cdef int64_t chunk = t % pc.nchunks, img = t // pc.nchunks, ng = wave0 + img
    cdef int64_t n = ng // p.groups, grp = ng - n * p.groups
    cdef const packed_a *a = &p.packed[grp]
    cdef const pyconv_sgemm_kernel *kern = a.kernel
    cdef int64_t mr = kern.mr, nr = kern.nr, vl = kern.vl, cout_g = p.cout // p.groups
    cdef int64_t mpad = (a.m + mr - 1) // mr * mr, npan = mpad // mr
    cdef int64_t per = (npan + pc.mblocks - 1) // pc.mblocks
    cdef int64_t pan, ir, rows, n0 = chunk * nr, n1 = min(n0 + nr, pc.ncols), j, oy, ox, run, ldc
    cdef int64_t i, v, q, r, plane = g.out_size[1] * g.out_size[2], rv = pc.row_vectors
    cdef int64_t voff[PYCONV_MAX_TILE_VECTORS]
    # The tile's kept runs, each within one output row: its column in the tile, its
    # output offset and length (at most one run per column: NR)
    cdef int64_t run_col[PYCONV_MAX_NR]
    cdef int64_t run_out[PYCONV_MAX_NR]
    cdef int64_t run_len[PYCONV_MAX_NR]
    cdef int64_t nruns = 0
    cdef float *y = p.y + (n * p.cout + grp * cout_g) * plane
    cdef const float *src = xp + img * pc.image
    cdef float *dst
    cdef pyconv_epilogue ep, seg
    cdef bint has_ep = p.bias != NULL or p.residual != NULL or p.act != PYCONV_ACT_NONE
    # Without a residual the epilogue does not depend on the position: the kernel applies
    # it to the whole tile (dropped columns included), mostly in registers; with one, each
    # row run gets its part of the residual.
    cdef bint whole_tile = has_ep and p.residual == NULL
    if rv:                  # vectors along the output rows, each its own run
        for v in range(nr // vl):
            q = n0 // vl + v
            oy = q // rv
            ox = (q - oy * rv) * vl
            voff[v] = oy * pc.wq + ox
            if v * vl < n1 - n0:
                run_col[nruns] = v * vl
                run_out[nruns] = oy * g.out_size[2] + ox
                run_len[nruns] = min(vl, g.out_size[2] - ox)
                nruns += 1
    else:                   # consecutive grid columns: the runs inside each grid row
        for v in range(nr // vl):
            voff[v] = n0 + v * vl
        j = n0
        while j < n1:
            oy = j // pc.wq
            ox = j - oy * pc.wq
            run = min(pc.wq - ox, n1 - j)
            if ox < g.out_size[2]:
                run_col[nruns] = j - n0
                run_out[nruns] = oy * g.out_size[2] + ox
                run_len[nruns] = min(run, g.out_size[2] - ox)
                nruns += 1
            j += run
    _fill_epilogue(p, grp * cout_g, n, &ep)
    # Where the tile's columns are outputs one for one (no column dropped: row vectors
    # that fill the output rows, or a grid as wide as them) and whole vectors, the kernel
    # stores straight into y: no copy out of a tile.
    cdef bint direct = ((rv * vl == g.out_size[2]) if rv else (pc.wq == g.out_size[2])) and (
        (n1 - n0) % vl == 0)
    cdef int64_t coff[PYCONV_MAX_TILE_VECTORS]
    cdef const pyconv_epilogue *in_kernel = &seg if whole_tile else NULL
    for v in range(nr // vl):
        coff[v] = v * vl
    for pan in range(mb * per, min(npan, (mb + 1) * per)):
        ir = pan * mr
        rows = min(mr, a.m - ir)
        seg = ep
        seg.bias = ep.bias + ir if ep.bias != NULL else NULL
        # the output's rows of this panel, or the whole scratch tile
        dst = y + ir * plane + n0 if direct else tile
        ldc = plane if direct else nr
        if n1 - n0 < nr:                    # a partial last chunk
            kern.shifted_edge(a.k, a.kc, mpad, ir, a.data, src, pc.off, voff, dst, ldc, coff,
                              rows, n1 - n0, in_kernel)
        else:
            kern.shifted(a.k, a.kc, mpad, ir, a.data, src, pc.off, voff, dst, ldc, coff, rows,
                         in_kernel)
        if direct:
            if has_ep and not whole_tile:
                seg.residual = ep.residual + ir * plane + n0
                kern.epilogue(dst, plane, rows, n1 - n0, &seg)
            continue
        for r in range(nruns):
            if has_ep and not whole_tile:      # with a residual: this run's part of it
                seg.residual = ep.residual + ir * plane + run_out[r]
                kern.epilogue(tile + run_col[r], nr, rows, run_len[r], &seg)
            dst = y + ir * plane + run_out[r]
            for i in range(rows):
                memcpy(dst + i * plane, tile + i * nr + run_col[r], run_len[r] * sizeof(float))


cdef void _channels_task(const conv_args *p, int64_t wave0, int64_t task, const float *xp,
                         float *tile) noexcept nogil:
    """One NR-channel panel x one chunk of outputs of one output row of one (image,
    group) of the wave, by the channel tile (stored transposed into y, its epilogue
    applied)."""
    cdef const pyconv_conv_geom *g = &p.geom
    cdef const phase_copy *pc = &p.pc
    cdef const pyconv_sgemm_kernel *kern = p.packed[0].kernel
    # Panel-major: a thread's range of tasks streams one or two weight panels, not all of
    # them (64 -> 96 dilated on 8x8 at 2 threads 35 -> 27 us; 34 at 1)
    cdef int64_t ntiles = pc.nchunks * min(pc.wave, p.batch * p.groups - wave0)
    cdef int64_t mb = task // ntiles, t = task - mb * ntiles
    cdef int64_t chunk = t % pc.nchunks, img = t // pc.nchunks, ng = wave0 + img
    cdef int64_t n = ng // p.groups, grp = ng - n * p.groups, cout_g = p.cout // p.groups
    cdef int64_t ow = g.out_size[2], per_row = (ow + pc.chunk - 1) // pc.chunk
    cdef int64_t oy = chunk // per_row, ox = (chunk - oy * per_row) * pc.chunk
    cdef int64_t cnt = min(pc.chunk, ow - ox), m0 = mb * kern.nr
    cdef int64_t rows = min(kern.nr, cout_g - m0), plane = g.out_size[1] * ow
    cdef int64_t k = p.packed[0].k, k_row = k // g.k[1], kh0, kh1
    cdef float *y = p.y + (n * p.cout + grp * cout_g + m0) * plane + oy * ow + ox
    cdef pyconv_epilogue ep
    _fill_epilogue(p, grp * cout_g + m0, n, &ep)
    if ep.residual != NULL:
        ep.residual += oy * ow + ox
    # Only the kernel rows that read inside the input for this output row: K is kernel
    # row first, so they are one run of it (the others would add zeros from the padding)
    pyconv_inside_range(oy * g.s[1] - g.pb[1], g.dl[1], 1, g.in_size[1], g.k[1], &kh0, &kh1)
    kern.channel_tile((kh1 - kh0) * k_row,
                      p.panels + ((grp * pc.mblocks + mb) * k + kh0 * k_row) * kern.nr, rows,
                      xp + img * pc.image + oy * pc.wq + ox, pc.off + kh0 * k_row, cnt, y,
                      plane, tile, &ep)


cdef struct _wave_job:
    const conv_args *p
    float *copies            # the wave's phase copies, pc.image floats per (image, group)
    int64_t wave0            # first (image, group) of the wave
    int64_t bands            # bands of phase-plane rows per image
    int64_t band_rows        # rows per band
    int64_t count            # (image, group) pairs in the wave
    bint filled[MAX_COPIES]  # per-thread copies: slot s has filled its own


cdef void _fill_tasks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Bands lo..hi of the wave's phase copies: rows of every phase plane of one image,
    so that with the tiles split alike a thread mostly fills what it will read (the
    tiles of one thread are neighbours: see parallel.h)."""
    cdef const _wave_job *j = <const _wave_job *>arg
    cdef const conv_args *p = j.p
    cdef int64_t t, img, i0, i1
    for t in range(lo, hi):
        img = t // j.bands
        i0 = (t % j.bands) * j.band_rows
        i1 = min(i0 + j.band_rows, p.pc.hq)
        if i0 < i1:
            _phase_copy_fill(p, j.wave0 + img, i0, i1, j.copies + img * p.pc.image)


cdef void _tile_tasks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Tiles lo..hi of the wave: a contiguous run (neighbouring chunks share the cache
    lines at their edges in every output row; one thread writing both avoids false
    sharing)."""
    cdef _wave_job *j = <_wave_job *>arg
    cdef const conv_args *p = j.p
    cdef float *scratch = p.ws + slot * p.pc.ws_stride
    cdef float *copies = j.copies
    cdef int64_t t
    if p.pc.copies > 1:
        # This thread's copy, filled by its first task: a thread that never joins fills
        # none (filled in a loop of their own, a late thread's was filled by another,
        # for nothing: one more whole copy per conv on a busy machine). Only this
        # thread touches its flag.
        copies += slot * p.pc.wave * p.pc.image
        if not j.filled[slot]:
            for t in range(j.count):
                _phase_copy_fill(p, j.wave0 + t, 0, p.pc.hq, copies + t * p.pc.image)
            j.filled[slot] = True
    for t in range(lo, hi):
        if p.algo == ALGO_SHIFTED:
            _shifted_task(p, j.wave0, t, copies, scratch)
        elif p.algo == ALGO_CHANNELS:
            _channels_task(p, j.wave0, t, copies, scratch)
        else:
            _padded_task(p, j.wave0, t, copies, scratch)


cdef void _phase_copy_forward(const conv_args *p, int nthreads, float *ws) noexcept nogil:
    """ws: copies * wave * image floats for the phase copies, then per-thread scratch
    (p.ws)."""
    cdef const phase_copy *pc = &p.pc
    cdef int64_t total = p.batch * p.groups, count, t, tasks, w
    cdef _wave_job j
    j.p = p
    j.copies = ws
    # One band per image when the images alone feed the threads, else one per thread
    # (more, when each band cost a kernel call per channel: 2-row bands of 8x8 maps made
    # a 192-channel conv 10% slower).
    j.bands = 1 if nthreads == 1 or pc.wave >= nthreads else min(
        pc.hq, (nthreads + pc.wave - 1) // pc.wave)
    j.band_rows = (pc.hq + j.bands - 1) // j.bands
    for w in range((total + pc.wave - 1) // pc.wave):
        j.wave0 = w * pc.wave
        count = min(pc.wave, total - j.wave0)
        j.count = count
        for t in range(pc.copies * pc.wave):    # the slack past the last plane: read,
            _zero(ws + t * pc.image + pc.nplanes * pc.plane,    # never used
                  pc.image - pc.nplanes * pc.plane)
        if pc.copies > 1:
            memset(j.filled, 0, sizeof(j.filled))
        else:
            parallel_for(nthreads, count * j.bands, grain_for(count * j.bands, nthreads),
                         _fill_tasks, &j)
        tasks = count * pc.nchunks * pc.mblocks
        parallel_for(nthreads, tasks, grain_for(tasks, nthreads), _tile_tasks, &j)
