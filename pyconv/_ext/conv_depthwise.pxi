# Depthwise (included by conv.pyx): one input channel per group, by the direct SIMD
# kernel of src/kernels/dwconv_* over blocks of output rows of each channel.

cdef enum:
    DW_BLOCK_FLOATS = 16384     # packed input rows per depthwise task: 64 KiB, L2-resident
    DW_CHANNELS_MAX_WIDTH = 10  # widest output rows run by channels (_depthwise_by_channels)
    DW_CHANNELS_MAX_WIDTH_K5 = 20       # the same for kernels 5 or 6 wide
    DW_CHANNELS_MAX_WIDTH_K7 = 24       # and 7 or more wide
    DW_CHANNELS_MAX_FLOATS = 65536      # its scratch per task: 256 KiB, L2-resident


cdef int64_t _dw_channels_max_width = -1    # tests: 0 never, large always; -1 the default


def set_depthwise_channels_max_width(int64_t width):
    """The widest output rows that depthwise convs run `lanes` channels at a time on
    (-1: the default, 0: never); for tests and benchmarks. Returns the previous value."""
    global _dw_channels_max_width
    previous = _dw_channels_max_width
    _dw_channels_max_width = width
    return previous


cdef bint _depthwise_fits(const pyconv_conv_geom *g) noexcept nogil:
    """Whether the depthwise row kernel's scratch stays of the order of the work: its
    packed rows span the padded input between the outputs (sw phases of every row the
    window steps over), so padding and strides far larger than the map (hostile or
    mistaken attributes) would size it. Those convs run implicit im2col instead, whose
    scratch holds only the taps of the outputs. Every real network fits."""
    cdef int64_t work = (g.in_size[0] * g.in_size[1] * g.in_size[2]
                         + _volume(g.out_size) * _volume(g.k))
    return pyconv_dwconv_workspace_floats(g, 1) <= max(<int64_t>DW_BLOCK_FLOATS, 4 * work)


cdef bint _depthwise_by_channels(const conv_args *p) noexcept nogil:
    """Small 2-D maps with one output per input channel run lanes channels at a time
    (pyconv_dwconv_channels_fn): rows shorter than a vector would leave lanes idle, and
    per-channel setup would cost more than the channel's few taps. Measured on AVX-512
    (1 thread, against the rows): 10x10 outputs 1.5x (3x3 taps) to 5x (9x9) faster, 5x5
    and smaller 4-9x; 12-16 wide outputs 5-25% slower with 3x3 taps; 5x5 and 7x7 taps
    faster up to 20 wide (7x7 on 20x20 1.7x), the rows' register tiles from 24 (7x7 on
    32x32 10% faster by rows)."""
    cdef const pyconv_conv_geom *g = &p.geom
    cdef int64_t width = (_dw_channels_max_width if _dw_channels_max_width >= 0
                          else DW_CHANNELS_MAX_WIDTH if g.k[2] < 5
                          else DW_CHANNELS_MAX_WIDTH_K5 if g.k[2] < 7
                          else DW_CHANNELS_MAX_WIDTH_K7)
    return (p.dw_kernel.lanes > 1 and p.cout == p.cin and g.out_size[0] == 1
            and g.in_size[0] == 1 and g.k[0] == 1 and g.pb[0] == 0   # the one plane read
            and g.out_size[2] <= width
            and pyconv_dw_channels_workspace_floats(g, p.dw_kernel.lanes)
            <= DW_CHANNELS_MAX_FLOATS)


cdef int64_t _depthwise_blocking(conv_args *p, int nthreads) noexcept:
    """Splits each output slice into blocks of rows (a multiple of 4, the register tile)
    small enough for the packed-row buffer to stay in L2, and into enough blocks that
    every thread has work; returns the per-thread workspace in floats. Small maps: see
    _depthwise_by_channels."""
    cdef const pyconv_conv_geom *g = &p.geom
    p.dw_channels = _depthwise_by_channels(p)
    if p.dw_channels:
        return (pyconv_dw_channels_workspace_floats(g, p.dw_kernel.lanes) + 15) // 16 * 16
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


cdef void _depthwise_channels_tasks(void *arg, int64_t lo, int64_t hi, int slot) noexcept nogil:
    """Blocks of lanes channels lo..hi ((image, block) pairs). The kernel adds the bias and
    applies relu / clip; a residual (added before the activation) and the other
    activations run after it on the block's planes."""
    cdef const conv_args *p = <const conv_args *>arg
    cdef const pyconv_conv_geom *g = &p.geom
    cdef int64_t lanes = p.dw_kernel.lanes, nblk = (p.cout + lanes - 1) // lanes
    cdef int64_t t, n, c0, nch, plane = _volume(g.out_size), in_plane = _volume(g.in_size)
    cdef bint in_kernel = p.residual == NULL and (p.act == PYCONV_ACT_NONE
                                                  or p.act == PYCONV_ACT_RELU
                                                  or p.act == PYCONV_ACT_CLIP)
    cdef pyconv_epilogue ep
    cdef float *ws = p.ws + slot * p.ws_stride
    for t in range(lo, hi):
        n = t // nblk
        c0 = (t - n * nblk) * lanes
        nch = min(lanes, p.cout - c0)
        p.dw_kernel.channels(g, p.x + (n * p.cin + c0) * in_plane, p.weight + c0 * _volume(g.k),
                             p.bias + c0 if p.bias != NULL else NULL,
                             p.y + (n * p.cout + c0) * plane, nch,
                             p.act if in_kernel else PYCONV_ACT_NONE, p.act_a, p.act_b, ws)
        if not in_kernel:
            _fill_epilogue(p, c0, n, &ep)
            ep.bias = NULL      # added by the kernel
            p.kernel.epilogue(p.y + (n * p.cout + c0) * plane, plane, nch, plane, &ep)


cdef void _depthwise_forward(const conv_args *p, int nthreads) noexcept nogil:
    # A task of one channel block or row block is short (a 16x16 map: well under a
    # microsecond): claimed one at a time, the threads mostly contend for the counter.
    cdef int64_t tasks
    if p.dw_channels:
        tasks = p.batch * ((p.cout + p.dw_kernel.lanes - 1) // p.dw_kernel.lanes)
        parallel_for(nthreads, tasks, grain_for(tasks, nthreads), _depthwise_channels_tasks,
                     <void *>p)
        return
    tasks = p.batch * p.cout * p.geom.out_size[0] * p.dw_blocks
    parallel_for(nthreads, tasks, grain_for(tasks, nthreads), _depthwise_tasks, <void *>p)
