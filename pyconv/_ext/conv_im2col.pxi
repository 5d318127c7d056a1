# Implicit im2col (included by conv.pyx): the GEMM's B panels packed straight from the
# image, and the pointwise GEMM that reads the image itself as B.

cdef struct im2col_b:
    const float *x                  # first input channel of this (batch, group)
    const pyconv_conv_geom *geom


cdef struct im2col_segment:
    int64_t zd, yh           # output depth/row of the run
    int64_t x0, n            # first output column of the run and its length
    int64_t dst              # offset of its first value in the packed block (row kk = 0)


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
    cdef int64_t p = nc // nr, tail = partial_panel_width(nc - p * nr, nr) - (nc - p * nr), kk
    if nc % nr and tail:
        for kk in range(kc):
            _zero(dst + p * kc * nr + kk * nr + (nc - p * nr), tail)


cdef void pack_b_im2col(const void *ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc,
                        int64_t nr, float *dst) noexcept nogil:
    """Packs rows [k0, k0+kc) x columns [n0, n0+nc) of the virtual im2col matrix.

    Row r = (c, a, b, e) is an input channel and kernel tap; column = (zd, yh, xw) an output
    position. The columns are cut once into segments that stay inside one output row and
    one NR panel; every row then fills each segment with one strided copy between zero
    fills (plain loops the compiler vectorises, no per-piece library calls)."""
    cdef const im2col_b *ib = <const im2col_b *>ctx
    cdef const pyconv_conv_geom *g = ib.geom
    cdef int64_t kvol = _volume(g.k), khw = g.k[1] * g.k[2], in_plane = _volume(g.in_size)
    cdef int64_t kk, r, c, t, a, b, e, off_w, ow_lo, ow_hi, iz, iy
    cdef int64_t lo, hi, p, q, nseg = 0, sw = g.s[2], x1
    cdef const float *xc
    cdef const float *src
    cdef float *d
    cdef im2col_segment *seg = _column_runs(n0, nc, kc, nr, g.out_size[1], g.out_size[2],
                                            &nseg)
    if seg == NULL:
        return
    for kk in range(kc):
        r = k0 + kk
        c = r // kvol
        t = r - c * kvol
        a = t // khw
        t = t - a * khw
        b = t // g.k[2]
        e = t - b * g.k[2]
        xc = ib.x + c * in_plane
        off_w = e * g.dl[2] - g.pb[2]
        pyconv_inside_range(off_w, sw, 1, g.in_size[2], g.out_size[2], &ow_lo, &ow_hi)
        for p in range(nseg):
            d = dst + seg[p].dst + kk * nr
            iz = seg[p].zd * g.s[0] - g.pb[0] + a * g.dl[0]
            iy = seg[p].yh * g.s[1] - g.pb[1] + b * g.dl[1]
            x1 = seg[p].x0 + seg[p].n
            lo = max(seg[p].x0, ow_lo)
            hi = min(x1, ow_hi)
            if iz < 0 or iz >= g.in_size[0] or iy < 0 or iy >= g.in_size[1] or hi <= lo:
                _zero(d, seg[p].n)
                continue
            _zero(d, lo - seg[p].x0)
            d += lo - seg[p].x0
            src = xc + (iz * g.in_size[1] + iy) * g.in_size[2] + lo * sw + off_w
            if sw == 1:
                for q in range(hi - lo):
                    d[q] = src[q]
            else:
                for q in range(hi - lo):
                    d[q] = src[q * sw]
            _zero(d + hi - lo, x1 - hi)
    free(seg)
    _zero_last_panel(dst, kc, nc, nr)


cdef struct pointwise_gemv:
    # One (image, group) of a pointwise conv on a single output position: y = W x, then
    # the epilogue (bias, residual at row 0 of the group).
    const float *w          # C_out_g x C_in_g, row-major (the unpacked weights)
    const float *x          # C_in_g contiguous floats (the position's channels)
    float *y                # C_out_g contiguous floats
    int64_t k
    const pyconv_sgemm_kernel *kernel
    pyconv_epilogue ep


cdef void _pointwise_gemv_rows(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Rows lo..hi: dot products on the unpacked weights, then (acc + bias) + residual in
    that order and the activation on the run of rows (the epilogue's bits)."""
    cdef const pointwise_gemv *j = <const pointwise_gemv *>arg
    cdef float *y = j.y + lo
    cdef int64_t i, n = hi - lo
    cdef pyconv_epilogue act
    j.kernel.gemv(n, j.k, 1.0, j.w + lo * j.k, j.k, 1, j.x, 1, 0.0, y, 1)
    if j.ep.bias != NULL:
        for i in range(n):
            y[i] = y[i] + j.ep.bias[lo + i]
    if j.ep.residual != NULL:
        for i in range(n):
            y[i] = y[i] + j.ep.residual[lo + i]
    if j.ep.act != PYCONV_ACT_NONE:
        act = j.ep
        act.bias = NULL
        act.residual = NULL
        j.kernel.epilogue(y, n, 1, n, &act)


cdef void _conv_gemm_task(const conv_args *p, int64_t task, int nthreads, float *ws,
                          int64_t ws_stride) noexcept nogil:
    """One (batch, group) GEMM (of one band: y_first, y_plane); nthreads == 1 runs it on
    the calling thread only."""
    cdef int64_t n = task // p.groups, grp = task - n * p.groups
    cdef int64_t cin_g = p.cin // p.groups, cout_g = p.cout // p.groups
    cdef int64_t ncols = _volume(p.geom.out_size), in_plane = _volume(p.geom.in_size)
    cdef const float *x = p.x + (n * p.cin + grp * cin_g) * in_plane
    cdef float *y = p.y + (n * p.cout + grp * cout_g) * p.y_plane + p.y_first
    cdef const packed_a *a = &p.packed[grp]
    cdef im2col_b ib
    cdef strided_b sb
    cdef padded_b pb
    cdef const void *ctx
    cdef pack_b_fn pack
    cdef int64_t pack_cost = B_PACK_COPY
    cdef pyconv_epilogue ep
    cdef pointwise_gemv gv
    _fill_epilogue(p, grp * cout_g, n, &ep)
    if (p.pointwise or p.whole_window) and ncols == 1 and p.band_off == NULL:
        # One output position (squeeze-excite convs, heads after a global pool, a fully
        # connected layer as a conv over its whole map): a GEMV on the unpacked weights
        # reads each weight once with every lane busy, where the GEMM would run an MR x 1
        # edge tile per row panel (one lane in 16 useful). The position's column is the
        # image: K = C_in_g x the window, in the weights' (channel, taps) order.
        gv.k = cin_g * _volume(p.geom.k)
        gv.w = p.weight + grp * cout_g * gv.k
        gv.x = x
        gv.y = y
        gv.kernel = p.kernel
        gv.ep = ep
        if nthreads > 1:
            parallel_for(nthreads, cout_g, max(grain_for(cout_g, nthreads), <int64_t>16),
                         _pointwise_gemv_rows, &gv)
        else:
            _pointwise_gemv_rows(&gv, 0, cout_g, 0)
        return
    if p.band_off != NULL:
        _band_b(p, x, &pb)
        ctx = &pb
        pack = pack_b_padded
    elif p.pointwise:
        sb.data = x
        sb.sk = in_plane
        sb.sn = 1
        ctx = &sb
        pack = pack_b_strided
    else:
        ib.x = x
        ib.geom = &p.geom
        ctx = &ib
        pack = pack_b_im2col
        pack_cost = B_PACK_IM2COL
    if nthreads > 1:
        sgemm_packed(a, ncols, pack, pack_cost, ctx, y, p.y_plane, 1.0, 0.0, &ep, nthreads, ws)
    else:
        sgemm_block(a, 0, a.m, 0, ncols, sgemm_nc(a, ncols), pack, ctx, y, p.y_plane, 1.0,
                    0.0, &ep, ws, ws + min(a.kc, a.k) * sgemm_nc(a, ncols))


cdef void _gemm_tasks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """(batch, group) GEMMs lo..hi, each on this thread alone."""
    cdef const conv_args *p = <const conv_args *>arg
    cdef int64_t t
    for t in range(lo, hi):
        _conv_gemm_task(p, t, 1, p.ws + slot * p.ws_stride, p.ws_stride)


cdef void _im2col_forward(const conv_args *p, int nthreads) noexcept nogil:
    """The (batch, group) GEMMs, implicit im2col or pointwise."""
    cdef int64_t tasks = p.batch * p.groups, t
    if nthreads > 1 and tasks >= nthreads:
        # Enough independent GEMMs: whole ones per task, each single-threaded.
        parallel_for(nthreads, tasks, grain_for(tasks, nthreads), _gemm_tasks, <void *>p)
    else:
        for t in range(tasks):
            _conv_gemm_task(p, t, nthreads, p.ws, p.ws_stride)


cdef inline void _band_b(const conv_args *q, const float *x, padded_b *b) noexcept nogil:
    """B of a band whose taps all read inside the image x (band_off): pack_b_padded's
    plain copies, straight from the image (row pitch: sh input rows)."""
    b.x = x
    b.off = q.band_off
    b.wq = q.geom.s[1] * q.geom.in_size[2]
    b.oh = q.geom.out_size[1]
    b.ow = q.geom.out_size[2]
    b.kernel = q.packed[0].kernel


cdef inline void _band_args(const conv_args *p, const conv_band *band, conv_args *q) noexcept nogil:
    """q: p as the conv of this band alone (its output rows and columns, its taps)."""
    cdef int d = p.band_dim, i
    cdef int64_t inner = 1
    for i in range(d + 1, 3):
        inner *= p.geom.out_size[i]
    q[0] = p[0]
    q.algo = ALGO_IM2COL
    q.pointwise = False
    q.geom.out_size[d] = band.o1 - band.o0
    q.geom.pb[d] = band.pb
    q.geom.k[d] = band.k
    q.packed = band.packed
    q.band_off = band.off
    q.y_first = band.o0 * inner
    if p.band_cols:
        q.geom.out_size[2] = band.c1 - band.c0
        q.geom.pb[2] = band.cpb
        q.geom.k[2] = band.ck


cdef int64_t _band_workspace_floats(const conv_args *p, const conv_band *band) noexcept nogil:
    """Per-thread scratch of a band: a packed B block and tile, and for column-split
    bands the band's output (C_out_g x its columns)."""
    cdef conv_args q
    _band_args(p, band, &q)
    cdef int64_t n = _volume(q.geom.out_size)
    if not p.band_cols:
        return sgemm_workspace_floats(band.packed, n, 1)
    return sgemm_workspace_floats(band.packed, n, 1) + slot_floats(p.cout // p.groups * n)


cdef void _band_cols_task(const conv_args *p, int64_t task, float *ws) noexcept nogil:
    """Rows block of one (band, image, group) of a column-split band: the GEMM into
    scratch (C_out_g x the band's columns), then each output row run copied into place
    and finished there (bias, residual, activation)."""
    cdef int64_t mb = task % p.band_mblocks, t = task // p.band_mblocks
    cdef int64_t ng = t % (p.batch * p.groups), b = t // (p.batch * p.groups)
    cdef int64_t n = ng // p.groups, grp = ng - n * p.groups
    cdef int64_t cin_g = p.cin // p.groups, cout_g = p.cout // p.groups
    cdef conv_args q
    _band_args(p, &p.bands[b], &q)
    cdef const packed_a *a = &q.packed[grp]
    cdef int64_t mr = a.kernel.mr, npan = (a.m + mr - 1) // mr
    cdef int64_t per = (npan + p.band_mblocks - 1) // p.band_mblocks
    cdef int64_t m0 = mb * per * mr, m1 = min(a.m, (mb + 1) * per * mr)
    cdef int64_t rows = q.geom.out_size[1], cols = q.geom.out_size[2], ncols = rows * cols
    cdef int64_t ow = p.geom.out_size[2], nc, r, i
    cdef float *c = ws + sgemm_workspace_floats(a, ncols, 1)
    cdef float *y
    cdef im2col_b ib
    cdef pyconv_epilogue ep, seg
    cdef bint has_ep = p.bias != NULL or p.residual != NULL or p.act != PYCONV_ACT_NONE
    if m0 >= m1:
        return
    cdef padded_b pb
    ib.x = p.x + (n * p.cin + grp * cin_g) * _volume(p.geom.in_size)
    ib.geom = &q.geom
    nc = sgemm_nc(a, ncols)
    if q.band_off != NULL:
        _band_b(&q, ib.x, &pb)
        sgemm_block(a, m0, m1, 0, ncols, nc, pack_b_padded, &pb, c, ncols, 1.0, 0.0, NULL,
                    ws, ws + min(a.kc, a.k) * nc)
    else:
        sgemm_block(a, m0, m1, 0, ncols, nc, pack_b_im2col, &ib, c, ncols, 1.0, 0.0, NULL,
                    ws, ws + min(a.kc, a.k) * nc)
    _fill_epilogue(p, grp * cout_g + m0, n, &ep)
    for r in range(rows):
        y = (p.y + (n * p.cout + grp * cout_g + m0) * p.y_plane
             + (p.bands[b].o0 + r) * ow + p.bands[b].c0)
        for i in range(m1 - m0):
            memcpy(y + i * p.y_plane, c + (m0 + i) * ncols + r * cols, cols * sizeof(float))
        if has_ep:
            seg = ep
            if ep.residual != NULL:
                seg.residual = ep.residual + (p.bands[b].o0 + r) * ow + p.bands[b].c0
            p.kernel.epilogue(y, p.y_plane, m1 - m0, cols, &seg)


cdef void _band_cols_tasks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    cdef const conv_args *p = <const conv_args *>arg
    cdef int64_t t
    for t in range(lo, hi):
        _band_cols_task(p, t, p.ws + slot * p.ws_stride)


cdef void _banded_forward(const conv_args *p, int nthreads) noexcept nogil:
    """Implicit im2col band by band (see conv_band): each band a conv of its own taps over
    its outputs, written in place (whole rows) or through scratch (columns split)."""
    cdef conv_args q
    cdef int64_t b, tasks
    if p.band_cols:
        tasks = p.nbands * p.batch * p.groups * p.band_mblocks
        parallel_for(nthreads, tasks, grain_for(tasks, nthreads), _band_cols_tasks, <void *>p)
        return
    for b in range(p.nbands):
        _band_args(p, &p.bands[b], &q)
        _im2col_forward(&q, nthreads)


# Pointwise convs read B in place (the image's rows, plane floats apart) through the
# shifted micro-kernel: the packed GEMM copies all of B for what may be a few row panels
# (a 32 -> 16 1x1 conv on 112x112 packed for 2 panels: 166 us against 131 in place).
# Column blocks of at most this many floats of B (K x block) stay in L2 while every row
# panel passes over them, each writing its rows in order (in place with the panels
# innermost, 96 rows wrote 96 streams: 16 -> 96 on 112x112 17% slower than packed).
DEF POINTWISE_BLOCK_FLOATS = 8192


cdef bint _pointwise_in_place_fits(const conv_args *p) noexcept:
    """Whether the pointwise conv p reads B in place: at least one vector of columns, and
    the packing it saves (about 10 multiply-adds per value of B, B_PACK_COPY: a tenth of
    the GEMM at 100 rows) worth more than the tiles lose in place (a call, stores and
    epilogue per tile: small K; B rows from L2 per row panel: a 25th at large M). Fitted
    at 1 and 2 threads on AVX-512: 32 -> 16 on 112x112 0.64x, 256 -> 64 on 56x56 0.9x,
    512 -> 128 on 28x28 0.95x; 16 -> 96 on 112x112 1.04x, 128 -> 512 on 28x28 1.05x
    (2 threads) stay packed."""
    cdef int64_t m = p.cout // p.groups, k = p.packed[0].k
    return (_volume(p.geom.out_size) >= p.packed[0].kernel.vl
            and 250 * k > m * (k + 50))


cdef void _pointwise_blocking(conv_args *p, int nthreads) noexcept:
    """Tasks of the in-place pointwise conv: NR-column chunks of the whole vectors of
    columns, and one for the columns past them (fewer than a vector: packed GEMM), x row
    blocks (split only when the chunks cannot feed the threads)."""
    cdef phase_copy *pc = &p.pc
    cdef const pyconv_sgemm_kernel *kern = p.packed[0].kernel
    cdef int64_t n = _volume(p.geom.out_size), mpanels, want
    pc.ncols = n // kern.vl * kern.vl
    pc.nchunks = (pc.ncols + kern.nr - 1) // kern.nr + (1 if pc.ncols < n else 0)
    mpanels = (p.cout // p.groups + kern.mr - 1) // kern.mr
    want = p.batch * p.groups * pc.nchunks
    pc.mblocks = min(mpanels, max(<int64_t>1, (4 * nthreads + want - 1) // want)
                     if nthreads > 1 else 1)


cdef void _pointwise_span(const conv_args *p, int64_t ng, int64_t mb, int64_t c0,
                          int64_t c1, float *ws) noexcept nogil:
    """Chunks [c0, c1) of row block mb of (image, group) ng; ws: the thread's scratch."""
    cdef const phase_copy *pc = &p.pc
    cdef int64_t n = ng // p.groups, grp = ng - n * p.groups, cout_g = p.cout // p.groups
    cdef const packed_a *a = &p.packed[grp]
    cdef const pyconv_sgemm_kernel *kern = a.kernel
    cdef int64_t mr = kern.mr, nr = kern.nr, vl = kern.vl, plane = _volume(p.geom.in_size)
    cdef int64_t mpad = (a.m + mr - 1) // mr * mr, npan = mpad // mr
    cdef int64_t per = (npan + pc.mblocks - 1) // pc.mblocks
    cdef int64_t m0 = mb * per * mr, m1 = min(a.m, (mb + 1) * per * mr)
    cdef int64_t n0 = min(c0 * nr, pc.ncols), n1 = min(c1 * nr, pc.ncols)
    cdef int64_t blk = max(nr, POINTWISE_BLOCK_FLOATS // max(a.k, <int64_t>1) // nr * nr)
    cdef int64_t ncols = _volume(p.geom.out_size), jb, je, j, ir, cols, v, nc
    cdef const float *x = p.x + (n * p.cin + grp * (p.cin // p.groups)) * plane
    cdef float *y = p.y + (n * p.cout + grp * cout_g) * p.y_plane
    cdef int64_t voff[PYCONV_MAX_TILE_VECTORS]
    cdef pyconv_epilogue ep, seg
    cdef const pyconv_epilogue *tile_ep = NULL
    cdef strided_b sb
    if m0 >= m1:
        return
    _fill_epilogue(p, grp * cout_g, n, &ep)
    if p.bias != NULL or p.residual != NULL or p.act != PYCONV_ACT_NONE:
        tile_ep = &seg
    for v in range(nr // vl):
        voff[v] = v * vl
    jb = n0
    while jb < n1:
        je = min(n1, jb + blk)
        ir = m0
        while ir < m1:
            seg = ep
            if ep.bias != NULL:
                seg.bias = ep.bias + ir
            j = jb
            while j < je:
                cols = min(nr, je - j)
                if ep.residual != NULL:
                    seg.residual = ep.residual + ir * ep.ldr + j
                if cols == nr:
                    kern.shifted(a.k, a.kc, mpad, ir, a.data, x + j, pc.off, voff,
                                 y + ir * p.y_plane + j, p.y_plane, voff, min(mr, m1 - ir),
                                 tile_ep)
                else:
                    kern.shifted_edge(a.k, a.kc, mpad, ir, a.data, x + j, pc.off, voff,
                                      y + ir * p.y_plane + j, p.y_plane, voff,
                                      min(mr, m1 - ir), cols, tile_ep)
                j += cols
            ir += mr
        jb = je
    if c1 == pc.nchunks and pc.ncols < ncols:
        # The columns past the whole vectors: packed (the shifted tile would read past
        # the image's last row)
        sb.data = x
        sb.sk = plane
        sb.sn = 1
        nc = sgemm_nc(a, ncols - pc.ncols)
        sgemm_block(a, m0, m1, pc.ncols, ncols, nc, pack_b_strided, &sb, y, p.y_plane, 1.0,
                    0.0, &ep, ws, ws + min(a.kc, a.k) * nc)


cdef void _pointwise_tasks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Tasks lo..hi ((image, group), row block, chunk; chunks fastest): each run of
    chunks of one row block as one span."""
    cdef const conv_args *p = <const conv_args *>arg
    cdef int64_t nch = p.pc.nchunks, per_img = p.pc.mblocks * nch, t = lo, ng, mb, c, c1
    while t < hi:
        ng = t // per_img
        mb = (t - ng * per_img) // nch
        c = t - ng * per_img - mb * nch
        c1 = min(nch, c + hi - t)
        _pointwise_span(p, ng, mb, c, c1, p.ws + slot * p.ws_stride)
        t += c1 - c


cdef void _pointwise_forward(const conv_args *p, int nthreads) noexcept nogil:
    """The in-place pointwise conv (see _pointwise_in_place_fits)."""
    cdef int64_t tasks = p.batch * p.groups * p.pc.mblocks * p.pc.nchunks
    if nthreads > 1:
        parallel_for(nthreads, tasks, grain_for(tasks, nthreads), _pointwise_tasks,
                     <void *>p)
    else:
        _pointwise_tasks(<void *>p, 0, tasks, 0)
