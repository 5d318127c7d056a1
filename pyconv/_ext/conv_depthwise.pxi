# Depthwise (included by conv.pyx): one input channel per group, by the direct SIMD
# kernel of src/kernels/dwconv_* over blocks of output rows of each channel.

cdef enum:
    DW_BLOCK_FLOATS = 16384     # packed input rows per depthwise task: 64 KiB, L2-resident


cdef int64_t _depthwise_blocking(conv_args *p, int nthreads) noexcept:
    """Splits each output slice into blocks of rows (a multiple of 4, the register tile)
    small enough for the packed-row buffer to stay in L2, and into enough blocks that
    every thread has work; returns the per-thread workspace in floats."""
    cdef const pyconv_conv_geom *g = &p.geom
    cdef int64_t oh = g.out_size[1]
    cdef int64_t per_row = pyconv_dwconv_workspace_floats(g, 2) - pyconv_dwconv_workspace_floats(g, 1)
    cdef int64_t rows = max(<int64_t>1, DW_BLOCK_FLOATS // max(per_row, <int64_t>1))
    cdef int64_t slices = p.batch * p.cout * g.out_size[0]
    cdef int64_t want = (4 * nthreads + slices - 1) // slices    # blocks per slice
    if want > 1:
        rows = min(rows, (oh + want - 1) // want)
    if rows >= 4:
        rows = rows // 4 * 4
    rows = min(rows, oh)
    p.dw_rows = max(rows, <int64_t>1)
    p.dw_blocks = (oh + p.dw_rows - 1) // p.dw_rows
    return (pyconv_dwconv_workspace_floats(g, p.dw_rows) + 15) // 16 * 16


cdef void _depthwise_task(const conv_args *p, const pyconv_dwconv_kernel *dk,
                          pyconv_epilogue_fn epilogue, int64_t task, float *ws) noexcept nogil:
    """Rows [y0, y1) of one output depth slice of one channel whose group has a single
    input channel; task = ((n * C_out + oc) * OD + zd) * dw_blocks + block."""
    cdef const pyconv_conv_geom *g = &p.geom
    cdef int64_t blk = task % p.dw_blocks, t = task // p.dw_blocks
    cdef int64_t zd = t % g.out_size[0], plane_index = t // g.out_size[0]
    cdef int64_t n = plane_index // p.cout, oc = plane_index - n * p.cout
    cdef int64_t grp = oc // (p.cout // p.groups), plane = _volume(g.out_size)
    cdef int64_t y0 = blk * p.dw_rows, y1 = min(g.out_size[1], y0 + p.dw_rows)
    cdef pyconv_dw_channel c
    c.x = p.x + (n * p.cin + grp) * _volume(g.in_size)
    c.taps = p.weight + oc * _volume(g.k)
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
    cdef int64_t t
    for t in range(lo, hi):
        _depthwise_task(p, p.dw_kernel, p.kernel.epilogue, t, p.ws + slot * p.ws_stride)


cdef void _depthwise_forward(const conv_args *p, int nthreads) noexcept nogil:
    parallel_for(nthreads, p.batch * p.cout * p.geom.out_size[0] * p.dw_blocks, 1,
                 _depthwise_tasks, <void *>p)
