# Transposed convolution (included by conv.pyx): cols = W_g^T @ x_ng by GEMM, then
# col2im scatter-adds into the output (no zero insertion); one input channel per group
# goes through a direct scatter kernel.

cdef void _col2im_plane(const conv_args *p, const float *cols, int64_t oc_in_group,
                        float *y) noexcept nogil:
    """Scatter-adds the kvol rows of cols that belong to one output channel into y.

    cols rows: (oc_in_group, a, b, e); columns: input positions (p.geom.in_size is the
    transposed convolution's input, out_size its output)."""
    cdef const pyconv_conv_geom *g = &p.geom
    cdef int64_t kvol = _volume(g.k), in_plane = _volume(g.in_size)
    cdef int64_t a, b, e, iz, iy, zo, yo, off, lo, hi, lo1, hi1, i, row
    cdef const float *src
    cdef const float *src1 = NULL
    cdef float *dst
    # Stride 2, dilation 1: taps e and e + 1 fill the even and odd output columns of the
    # same pairs, so one loop adds both (contiguous stores instead of two strided passes).
    cdef bint pairs = g.s[2] == 2 and g.dl[2] == 1
    for a in range(g.k[0]):
        for b in range(g.k[1]):
            e = 0
            while e < g.k[2]:
                src = cols + (oc_in_group * kvol + (a * g.k[1] + b) * g.k[2] + e) * in_plane
                off = e * g.dl[2] - g.pb[2]
                # Input columns i whose output column i * sw + off is inside [0, ow).
                pyconv_inside_range(off, g.s[2], 1, g.out_size[2], g.in_size[2], &lo, &hi)
                lo1 = hi1 = 0
                if pairs and e + 1 < g.k[2]:
                    src1 = src + in_plane
                    pyconv_inside_range(off + 1, 2, 1, g.out_size[2], g.in_size[2], &lo1, &hi1)
                for iz in range(g.in_size[0]):
                    zo = iz * g.s[0] - g.pb[0] + a * g.dl[0]
                    if zo < 0 or zo >= g.out_size[0]:
                        continue
                    for iy in range(g.in_size[1]):
                        yo = iy * g.s[1] - g.pb[1] + b * g.dl[1]
                        if yo < 0 or yo >= g.out_size[1]:
                            continue
                        dst = y + (zo * g.out_size[1] + yo) * g.out_size[2] + off
                        row = (iz * g.in_size[1] + iy) * g.in_size[2]
                        if hi1 <= lo1:       # a single tap (or any other stride)
                            for i in range(lo, hi):
                                dst[i * g.s[2]] += src[row + i]
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
    cdef int64_t plane = _volume(p.geom.out_size)
    _fill_epilogue(p, oc, n, &ep)
    p.kernel.epilogue(y, plane, 1, plane, &ep)


cdef void _transposed_direct_plane(const conv_args *p, int64_t plane_index) noexcept nogil:
    """Transposed convolution of one output plane whose group has one input channel."""
    cdef const pyconv_conv_geom *g = &p.geom
    cdef int64_t n = plane_index // p.cout, oc = plane_index - n * p.cout
    cdef int64_t cout_g = p.cout // p.groups, grp = oc // cout_g
    cdef int64_t kvol = _volume(g.k), plane = _volume(g.out_size)
    cdef const float *x = p.x + (n * p.cin + grp) * _volume(g.in_size)
    # weight layout (Cin, Cout_g, kvol): input channel grp, output channel oc % cout_g
    cdef const float *wk = p.weight + (grp * cout_g + (oc - grp * cout_g)) * kvol
    cdef float *y = p.y + plane_index * plane
    cdef int64_t a, b, e, iz, iy, zo, yo, off, lo, hi, i
    cdef float wv
    cdef const float *src
    cdef float *dst
    memset(y, 0, plane * sizeof(float))
    for iz in range(g.in_size[0]):
        for a in range(g.k[0]):
            zo = iz * g.s[0] - g.pb[0] + a * g.dl[0]
            if zo < 0 or zo >= g.out_size[0]:
                continue
            for iy in range(g.in_size[1]):
                src = x + (iz * g.in_size[1] + iy) * g.in_size[2]
                for b in range(g.k[1]):
                    yo = iy * g.s[1] - g.pb[1] + b * g.dl[1]
                    if yo < 0 or yo >= g.out_size[1]:
                        continue
                    for e in range(g.k[2]):
                        wv = wk[(a * g.k[1] + b) * g.k[2] + e]
                        off = e * g.dl[2] - g.pb[2]
                        pyconv_inside_range(off, g.s[2], 1, g.out_size[2], g.in_size[2],
                                            &lo, &hi)
                        dst = y + (zo * g.out_size[1] + yo) * g.out_size[2] + off
                        for i in range(lo, hi):
                            dst[i * g.s[2]] += wv * src[i]
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
    cdef int64_t plane = _volume(j.p.geom.out_size), oc
    for oc in range(lo, hi):
        memset(j.y + oc * plane, 0, plane * sizeof(float))
        _col2im_plane(j.p, j.cols, oc, j.y + oc * plane)
        _finish_plane(j.p, j.n, j.first_oc + oc, j.y + oc * plane)


cdef void _conv_transpose_forward(const conv_args *p, bint direct, int nthreads, float *cols,
                                  float *ws) noexcept nogil:
    cdef const pyconv_conv_geom *g = &p.geom
    cdef int64_t t, grp, in_plane = _volume(g.in_size), plane = _volume(g.out_size)
    cdef int64_t cin_g = p.cin // p.groups, cout_g = p.cout // p.groups
    cdef strided_b sb
    cdef _col2im_job j
    if direct:
        parallel_for(nthreads, p.batch * p.cout, grain_for(p.batch * p.cout, nthreads),
                     _direct_planes, <void *>p)
        return
    j.p = p
    j.cols = cols
    for t in range(p.batch * p.groups):
        j.n = t // p.groups
        grp = t - j.n * p.groups
        sb.data = p.x + (j.n * p.cin + grp * cin_g) * in_plane
        sb.sk = in_plane
        sb.sn = 1
        sgemm_packed(&p.packed[grp], in_plane, pack_b_strided, B_PACK_COPY, &sb, cols,
                     in_plane, 1.0, 0.0, NULL, nthreads, ws)
        j.first_oc = grp * cout_g
        j.y = p.y + (j.n * p.cout + j.first_oc) * plane
        parallel_for(nthreads, cout_g, grain_for(cout_g, nthreads), _col2im_planes, &j)
