# Convolution and transposed convolution on the packed GEMM engine: the plan.
#
# Every problem is handled as 3-D (1-D and 2-D get leading size-1 spatial dims). This file
# is the planning module: ConvKernel packs the weights (create); ConvKernel.reshape
# resolves an input shape into a frozen ConvReshape (the conv_args geometry, the taps kept
# and the weights cropped to them, the algorithm, its bands or offsets and its task split,
# the workspace size); ConvKernel.run only computes; ConvCall is a
# reshape bound to an output buffer. The algorithms live in the included files:
#  - conv_im2col.pxi: general conv, per (batch, group) GEMM  W_g (Cout_g x Cin_g*kvol) @
#    im2col(x_ng), the im2col matrix never built (B panels packed straight from the image,
#    stride, padding and dilation resolved there); 1x1, stride 1, no padding: the image
#    itself is the B matrix (pointwise);
#  - conv_phase_copy.pxi: 1-D / 2-D conv (most of them, by the cost model below): the same
#    product on a zero-padded, stride-phase-split copy of the input, read in place by the
#    shifted micro-kernel or packed from it with plain copies (padded im2col);
#  - conv_depthwise.pxi: one input channel per group, the direct SIMD kernel of
#    src/kernels/dwconv_* (per ISA, same dispatch as the GEMM);
#  - conv_transposed.pxi: GEMM then col2im scatter-add; a direct scatter kernel for one
#    input channel per group.
# Bias, residual and activation are applied by the GEMM epilogue, or per plane right after
# the plane is finished.
#
# Why `include` rather than one module per algorithm: the algorithms share conv_args and
# small inline helpers, and their task functions are handed to parallel_for and sgemm as C
# function pointers. In one extension the helpers stay inline and nothing crosses a module
# boundary (cimported cdef functions are called through a capsule's pointer table and
# cannot be inlined), for the same speed with one build target.
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from pyconv._ext.gemm cimport (PackedMatrix, l2_bytes, activation_code, threads_for, pack_b_fn,
                               pack_b_strided, packed_a, pyconv_epilogue,
                               pyconv_sgemm_kernel, sgemm_block, sgemm_nc, sgemm_packed,
                               sgemm_workspace_floats, strided_b, workspace_floats,
                               planned_array, arrays_overlap, check_bound_out, exec_ctx,
                               context_of, parallel_for, grain_for, B_PACK_COPY,
                               B_PACK_IM2COL, sgemm_row_blocks, partial_panel_width,
                               fp_flush_denormals, fp_restore, slot_floats, empty_lines)
from pyconv._ext import gemm as _gemm
from pyconv._ext.gemm import empty_aligned
from pyconv._ext.gemm cimport (PYCONV_ACT_NONE, PYCONV_ACT_RELU, PYCONV_ACT_CLIP,
                               PYCONV_MAX_PHASE_STRIDE, PYCONV_MAX_TILE_VECTORS, PYCONV_MAX_NR,
                               pyconv_epilogue_fn, pyconv_run)
from pyconv._ext.conv_geom cimport pyconv_conv_geom, pyconv_inside_range
from pyconv.errors import InvalidArgument, InvalidDType, ShapeError

cnp.import_array()

cdef extern from "dwconv.h" nogil:
    ctypedef struct pyconv_dw_channel:
        const float *x
        const float *taps
        float bias
        float *y
        const float *residual
        int act
        float act_a, act_b
        pyconv_epilogue_fn epilogue
    ctypedef void (*pyconv_dwconv_rows_fn)(const pyconv_conv_geom *g,
                                           const pyconv_dw_channel *c, int64_t zd, int64_t y0,
                                           int64_t y1, float *ws) noexcept nogil
    ctypedef void (*pyconv_dwconv_channels_fn)(const pyconv_conv_geom *g, const float *x,
                                               const float *taps, const float *bias, float *y,
                                               int64_t nch, int act, float act_a,
                                               float act_b, float *ws) noexcept nogil
    ctypedef struct pyconv_dwconv_kernel:
        const char *isa
        const char *name
        pyconv_dwconv_rows_fn rows
        pyconv_dwconv_channels_fn channels
        int lanes
    const pyconv_dwconv_kernel *pyconv_dwconv_kernel_for(const char *isa)
    int64_t pyconv_dwconv_workspace_floats(const pyconv_conv_geom *g, int64_t rows)
    int64_t pyconv_dw_channels_workspace_floats(const pyconv_conv_geom *g, int64_t lanes)


cdef inline int64_t _volume(const int64_t *size) noexcept nogil:
    return size[0] * size[1] * size[2]


cdef inline void _zero(float *d, int64_t n) noexcept nogil:
    cdef int64_t q
    for q in range(n):
        d[q] = 0.0


cdef enum:
    ALGO_AUTO = 0
    ALGO_IM2COL = 1          # implicit im2col packed straight from the image (any rank)
    ALGO_SHIFTED = 2         # shifted-B micro-kernel on the phase copy (1-D / 2-D)
    ALGO_PADDED = 3          # im2col packed from the phase copy (1-D / 2-D)
    ALGO_BANDED = 4          # implicit im2col per band of outer output rows, each with only
                             # the kernel rows that read the input there (see conv_band)
    ALGO_CHANNELS = 5        # channel tiles on the phase copy (1-D / 2-D, small maps): vectors
                             # across output channels, outputs as broadcasts (channel_tile)


cdef struct phase_copy:
    # Each input channel of an (image, group) is zero-padded and split into sh x sw stride
    # phases, each a plane of hq rows of wq floats. Output (oy, ox) under kernel tap k
    # then reads the plane value at off[k] + oy * wq + ox: no bounds, no stride.
    #  - shifted: the output is computed on an oh x wq grid (columns ow..wq-1 dropped), so
    #    the B row of every tap is one contiguous run, read in place by the micro-kernel;
    #    or, where that computes fewer columns (ow a multiple of the vector length: no
    #    column of the grid's wq - ow per row is computed), by vectors along each output
    #    row (row_vectors of them), each tile's at their own offsets in the grid;
    #  - padded im2col: B panels are packed from the copy (plain row copies) for a GEMM
    #    on the oh*ow real columns;
    #  - channel tiles: the transposed product, the weights in NR-channel panels as vectors,
    #    each output a broadcast of the copy: chunks of `chunk` outputs of one output row.
    int64_t hq, wq, plane    # phase plane: rows, row length, floats (hq * wq)
    int64_t nplanes          # C_in_g * sh * sw planes per (image, group)
    int64_t image            # floats per (image, group), slack included
    int64_t ncols            # shifted: oh * wq grid columns (or oh * row_vectors * vl);
                             # padded im2col: oh * ow
    int64_t row_vectors      # shifted: vectors per output row; 0: runs over the grid
    int64_t nchunks          # column chunks (tasks): NR wide (shifted), `chunk` wide
                             # (channel tiles), or padded im2col's (see `unit`)
    int64_t chunk            # padded im2col: the widest chunk's columns (its workspace);
                             # channel tiles: outputs per tile (kernel.channel_cols)
    int64_t unit             # padded im2col: chunk c holds units [c*U/nchunks,
                             # (c+1)*U/nchunks) of the U = ceil(ncols / unit) units of
                             # `unit` columns (NR, or 16 where the columns are few)
    int64_t mblocks          # row blocks each chunk is split into (tasks for the threads);
                             # channel tiles: the NR-channel panels of a group
    int64_t ws_stride        # per-thread scratch: a tile, or a packed B block + tile
    int64_t wave             # (image, group) pairs padded at a time (workspace bound)
    int64_t copies           # sets of the wave's copies: 1, filled in row bands by the
                             # threads, or one per thread (see _phase_copy_blocking)
    const int64_t *off       # C_in_g * kvol B-row offsets


cdef struct conv_band:
    # Output rows [o0, o1) of the band dimension (the first spatial dim with more than one
    # output) and, for 2-D, columns [c0, c1), over which the same kernel taps read inside
    # the input: those taps only, as a conv of k rows (ck columns) at begin padding pb
    # (cpb), negative when the band starts inside the map (it never reaches padding). All
    # int64-sized: stored in an int64 ndarray.
    int64_t o0, o1, pb, k
    int64_t c0, c1, cpb, ck  # the whole row (0, ow, pb, kw) unless columns are split
    const packed_a *packed   # one per group: the weights of those taps
    const int64_t *off       # unit column stride and every tap inside: B row k of the band
                             # starts at x + off[k] (packed with plain copies), else NULL


cdef struct conv_args:
    const float *x
    float *y
    const float *weight      # unpacked, (Cout, Cin_g, kvol): the depthwise kernels read it
    const float *bias
    const float *residual    # same layout as y, or NULL
    const packed_a *packed   # one per group (GEMM paths), of the taps kept (see _tap_crop)
    const float *panels      # ALGO_CHANNELS: (groups, pc.mblocks, K, NR) transposed weights
    int64_t y_plane          # floats per output channel (a band computes part of it)
    int64_t y_first          # first output value of this band in each channel
    int64_t batch, groups, cin, cout
    pyconv_conv_geom geom    # spatial geometry, read in place by the im2col packing and the
                             # depthwise kernels
    int act
    float act_a, act_b
    bint pointwise           # 1x1, stride 1, no padding: B is the image itself
    bint pointwise_in_place  # pointwise: the shifted micro-kernel reads B's rows in the
                             # image (pc.off: k * plane; tasks pc.mblocks x pc.nchunks),
                             # else the packed GEMM
    bint whole_window        # one output position whose window (after the crop) is the
                             # whole input: its im2col column is the image (a GEMV)
    int64_t dw_rows, dw_blocks   # depthwise: output rows per task, tasks per output slice
    bint dw_channels         # depthwise on a small map: dw_kernel.lanes channels per task
    int algo                 # dense convs: ALGO_IM2COL, ALGO_SHIFTED, ALGO_PADDED,
                             # ALGO_BANDED or ALGO_CHANNELS
    phase_copy pc
    int band_dim             # ALGO_BANDED: the spatial dim split into bands, and the bands
    int64_t nbands
    const conv_band *bands
    const int64_t *band_off  # one band's (see conv_band.off)
    bint band_cols           # columns split too: each band computed into per-thread
    int64_t band_mblocks     # scratch, then copied out; its rows split in this many blocks
    const pyconv_sgemm_kernel *kernel    # the plan's: epilogues of the direct paths
    const pyconv_dwconv_kernel *dw_kernel    # its depthwise rows
    float *ws                # per-thread scratch: slot * ws_stride floats in
    int64_t ws_stride


cdef inline void _fill_epilogue(const conv_args *p, int64_t first_channel, int64_t n,
                                pyconv_epilogue *ep) noexcept nogil:
    ep.bias = p.bias + first_channel if p.bias != NULL else NULL
    ep.residual = (p.residual + (n * p.cout + first_channel) * p.y_plane + p.y_first
                   if p.residual != NULL else NULL)
    ep.ldr = p.y_plane
    ep.act = p.act
    ep.act_a = p.act_a
    ep.act_b = p.act_b


include "conv_im2col.pxi"
include "conv_phase_copy.pxi"
include "conv_depthwise.pxi"
include "conv_transposed.pxi"


# ---------------------------------------------------------------------------------------
# The plan: algorithm choice, packed weights, reshape and run.

_ALGORITHMS = {"auto": ALGO_AUTO, "im2col": ALGO_IM2COL, "shifted": ALGO_SHIFTED,
               "padded": ALGO_PADDED, "banded": ALGO_BANDED, "channels": ALGO_CHANNELS}


def set_algorithm(name):
    """Forces the dense-convolution algorithm of plans made afterwards (their execution
    context keeps it): 'auto' (the default: per shape), 'im2col' (implicit im2col packed
    from the image), 'shifted' (GEMM reading B in place from a padded copy of the input)
    or 'padded' (im2col packed from that copy) or 'channels' (channel tiles on that copy:
    vectors across output channels), the last three 1-D / 2-D only, or 'banded'
    (im2col per band of outer output rows, each with only the kernel rows that read the
    input there, wherever that skips any); other shapes keep their usual path. Taps that
    read only padding for every output are dropped under any setting. For tests and benchmarks; returns the previous
    setting."""
    if name not in _ALGORITHMS:
        raise ValueError(f"algorithm must be one of {sorted(_ALGORITHMS)}, got {name!r}")
    previous = get_algorithm()
    _gemm.set_default_conv_algorithm(_ALGORITHMS[name])
    return previous


def get_algorithm():
    return {v: k for k, v in _ALGORITHMS.items()}[_gemm.get_default_conv_algorithm()]


cdef int64_t _im2col_cost(const conv_args *p) noexcept nogil:
    """Implicit im2col per group in multiply-add equivalents (see _choose_algorithm)."""
    cdef int64_t k = p.cin // p.groups * _volume(p.geom.k), n = _volume(p.geom.out_size)
    return p.cout // p.groups * k * ((n + 15) // 16 * 16) + 12 * k * n


cdef int64_t _shifted_columns(const pyconv_conv_geom *g, const pyconv_sgemm_kernel *kern,
                              int64_t wq, int64_t *row_vectors) noexcept nogil:
    """Columns the shifted tiles compute (whole NR-wide chunks): over the oh x wq grid, or
    by vectors along the output rows where that is fewer (ow = 32: 32 x 34 -> 32 x 32
    columns; on a tie too, as no grid column is then dropped: the tiles go straight into
    the output where the rows are whole vectors); row_vectors (if not NULL) gets the
    vectors per row, 0 for the grid."""
    cdef int64_t oh = g.out_size[1], rv = (g.out_size[2] + kern.vl - 1) // kern.vl
    cdef int64_t grid = (oh * wq + kern.nr - 1) // kern.nr * kern.nr
    cdef int64_t rows = (oh * rv * kern.vl + kern.nr - 1) // kern.nr * kern.nr
    if row_vectors != NULL:
        row_vectors[0] = rv if rows <= grid and wq > g.out_size[2] else 0
    return min(grid, rows)


# Multiply-adds a value of a shifted tile costs when the tiles go through scratch.
DEF SHIFTED_COPY_OUT_MACS = 12

# Channel tiles stream a panel of weights (K x NR floats) per tile: it must stay in L2
# (7/8 of it, the rest for the input rows and the output), where the per-core size is known.
cdef int64_t _channel_panel_max = l2_bytes() // 8 * 7


cdef int _choose_algorithm(const conv_args *p, const pyconv_sgemm_kernel *kern,
                           int nthreads, int forced, int64_t *cost) noexcept:
    """The cheapest path by a cost model in multiply-add equivalents per group (returned in
    cost), for 2-D (and 1-D) dense convs: every path computes M x K x (its columns): the
    shifted one whole NR-wide chunks of the oh x wq grid (wq - ow extra columns per row),
    the others the oh*ow columns in vectors of 16. Packing costs about 12 multiply-adds per
    value from the image (bounds and zero fill per run) and 8 from the phase copy, which
    itself costs 2 per value it holds (fitted to 17 layer shapes on AVX-512). With more
    threads than NR-wide column panels, padded im2col splits the rows too and every row
    block packs the same B (see _padded_split); the shifted path reads B in place. K
    counts the taps kept (_tap_crop); the phase copies need padding >= 0, which a crop
    can make negative.

    Channel tiles compute M (in vectors of 16) x K x the outputs of each row (a row's
    last tile is compiled for its column count, so it computes no extra column; the
    narrower AVX2 and generic tiles count whole tiles of channel_cols, as fitted before),
    plus 16 per output for the transposed store and the epilogue, and read no packed B.
    A last panel of one vector of channels after others (64 -> 64: 48 + 16) counts
    twice: it loads a vector of weights and 8 inputs per 8 multiply-adds. A group of at
    most 16 channels (one panel) is weighed with its extra loads, an eighth more:
    the other paths waste as much on small maps (512 -> 512 in 32 groups on 7x7 101 us
    against 128 shifted and 185 padded at 1 thread, 64 -> 16 dilated on 8x8 18.6 against
    23.8, 256 -> 16 on 7x7 47 against 58 shifted and 88 padded). Each tile streams a
    panel of weights (K x NR), so they are taken only where it stays in L2
    (_channel_panel_max). Measured at 1 thread on AVX-512 (1 MiB L2) against the path
    chosen before (whole tiles costed, panels up to 256 KiB, no one-vector last panel,
    two-vector last panels only up to 64 KiB), 2 runs each: 256 -> 256 3x3 on 14x14
    2183-2309 us padded against 2035-2076, 512 -> 512 on 7x7 2376-2388 against
    1922-2219, 128 -> 128 on 28x28 2215-2254 against 2072-2083, 512 -> 96 on 7x7 559-609
    against 362-404, DenseNet's 128 -> 32 on 14x14 148-219 shifted against 126 and on
    7x7 60 padded against 32, 160 -> 320 on 7x7 462-464 against 363-365, 96 -> 96 on
    35x35 1917-1920 shifted against 1837. Whole models, sessions of both rules in one
    process run in alternating blocks (10 rounds, medians): 1 thread DenseNet-121 0.92x,
    AlexNet 0.92, Inception v1 / v2 0.97 / 0.96, ResNet-50 0.98, the U-Net 0.97, the
    light zoo, bundled models and MobileNetV2 0.970 (geometric mean), none slower than
    1.004; 2 threads 0.980 (ResNet-50 0.97-0.99, Inception v2 0.93, SqueezeNet
    0.998-1.02)."""
    cdef const pyconv_conv_geom *g = &p.geom
    cdef int64_t wq, hq, m, k, n, computed, copy, gemm, shifted, padded, im2col, packers
    cdef int64_t row_vectors = 0
    cdef int64_t channels = -1, panel, last, kept, oy, kh0, kh1, per_channel, one_thread
    cdef bint one_vector, wide
    im2col = _im2col_cost(p)
    cost[0] = im2col
    if (forced == ALGO_IM2COL or g.k[0] != 1 or g.in_size[0] != 1 or g.out_size[0] != 1
            or g.s[0] != 1 or g.pb[0] != 0 or g.s[1] > PYCONV_MAX_PHASE_STRIDE
            or g.s[2] > PYCONV_MAX_PHASE_STRIDE or g.pb[1] < 0 or g.pb[2] < 0):
        return ALGO_IM2COL
    if forced == ALGO_SHIFTED or forced == ALGO_PADDED or forced == ALGO_CHANNELS:
        return forced
    if g.k[1] * g.k[2] == 1:
        return ALGO_IM2COL      # strided 1x1: the copy would hold sh*sw phases to use one
    wq = g.out_size[2] + ((g.k[2] - 1) * g.dl[2]) // g.s[2]
    hq = g.out_size[1] + ((g.k[1] - 1) * g.dl[1]) // g.s[1]
    m = p.cout // p.groups
    k = p.cin // p.groups * g.k[1] * g.k[2]
    n = g.out_size[1] * g.out_size[2]
    # Shifted grid columns, counted as whole NR-wide chunks even where the edge kernel
    # computes a partial last chunk in fewer vectors: the static split of the tiles gives
    # a thread whole chunks, so the full ones set the time (fewer columns chose the
    # shifted path for 7x7 maps, 34% slower than padded im2col there at 2 threads).
    computed = _shifted_columns(g, kern, wq, &row_vectors)
    copy = 2 * (p.cin // p.groups) * g.s[1] * g.s[2] * hq * wq
    gemm = m * k * ((n + 15) // 16 * 16)
    shifted = m * k * computed + copy
    if (row_vectors * kern.vl if row_vectors else wq) != g.out_size[2]:
        # Tiles stored to scratch, their row runs copied out (see _shifted_task): a
        # memcpy per row run of each tile, as much as a K of 27 computes (3 -> 64 3x3 / 2
        # on 224x224, 111 wide: shifted 610-619 us against padded 481-522 at 1 thread).
        shifted += SHIFTED_COPY_OUT_MACS * m * n
    packers = max(<int64_t>1, min((m + kern.mr - 1) // kern.mr,
                                  nthreads // max(<int64_t>1, p.batch * p.groups
                                                  * ((n + kern.nr - 1) // kern.nr))))
    padded = gemm + 8 * k * n * packers + copy
    one_thread = min(shifted, gemm + 8 * k * n + copy, im2col)     # see the channel tiles
    # Implicit im2col's GEMM split (sgemm_plan_for) makes every row block pack B from the
    # image again (512 -> 512 3x3 on 4x4 once took 0.91 ms at 2 threads against 0.62 at 1).
    if p.batch * p.groups < nthreads:
        im2col += 12 * k * n * (sgemm_row_blocks(m, n, k, kern, nthreads, B_PACK_IM2COL) - 1)
    # A single panel of one vector: the tiles read 16 floats of each of its K rows, a
    # load per 8 multiply-adds more.
    one_vector = m <= 16
    panel = k * (16 if one_vector else kern.nr) * sizeof(float)
    last = m % kern.nr if m % kern.nr else kern.nr      # channels of the last panel
    # Panels of 48 channels (AVX-512: 3 vectors x 8 outputs a tile). AVX2's 16-channel
    # tiles of 6 outputs lost to padded im2col on deep layers (512 -> 512 3x3 on 7x7
    # 1.08-1.1x), so there (and on the generic path) only groups of one panel take them,
    # as before.
    wide = kern.nr >= 48
    if panel <= _channel_panel_max and (wide or one_vector):
        # each output row runs only its kernel rows inside the input (_channels_task)
        kept = 0
        for oy in range(g.out_size[1]):
            pyconv_inside_range(oy * g.s[1] - g.pb[1], g.dl[1], 1, g.in_size[1], g.k[1],
                                &kh0, &kh1)
            kept += kh1 - kh0
        per_channel = (k // g.k[1]) * kept * (g.out_size[2] if wide else
                                              (g.out_size[2] + kern.channel_cols - 1)
                                              // kern.channel_cols * kern.channel_cols)
        channels = (m + 15) // 16 * 16 * per_channel
        if one_vector:
            channels += channels // 8
        elif last <= 16:
            channels += 16 * per_channel
        channels += 16 * m * n + copy
    if nthreads > 1 and (g.s[1] > 1 or g.s[2] > 1) and copy // 2 > PRIVATE_COPY_MAX_FLOATS:
        # Measured, not modelled: at stride 2 the shifted tiles gain 1.17-1.3x from a
        # second thread where padded im2col gains 1.4-1.6x (3 -> 32, 32 -> 32, 32 -> 96 and
        # 128 -> 128 3x3 stride-2 convs on 160x160 to 28x28 maps); at stride 1 both ~1.7x.
        # Not where the copy stays in L2 (a copy per thread): at 2 threads 64 -> 64 in 4
        # groups on 16x16 17.5 us shifted against 19.4 padded, 3 -> 16 on 64x64 15.3
        # against 17.6.
        shifted += shifted // 4
    # Channel tiles add K up in another order (kernel row first) than the GEMM paths, which
    # all give the same bits: they are weighed against the others' one-thread costs, so
    # that a conv gives the same bits at any thread count (a 32 -> 40 3x3 / 2 on 9x9 took
    # them at 2 threads only, where padded im2col packs B once per row block).
    if channels >= 0 and channels < one_thread:
        cost[0] = channels
        return ALGO_CHANNELS
    if shifted <= padded and shifted <= im2col:
        cost[0] = shifted
        return ALGO_SHIFTED
    cost[0] = min(padded, im2col)
    return ALGO_PADDED if padded < im2col else ALGO_IM2COL


cdef tuple _tap_crop(const pyconv_conv_geom *g):
    """Per spatial dim, the taps [lo, hi) that read inside the input for at least one
    output position (a contiguous range: the positions a tap reads shift with it). Taps
    outside it read only padding everywhere and are dropped from the kernel (ASPP's
    dilation 36 on a 20x20 map keeps the centre tap: a 1x1 conv). None when some dim has
    no such tap (every output is the bias there): the kernel is kept whole."""
    cdef int64_t t, lo, hi, olo, ohi
    crop = []
    for i in range(3):
        lo = -1
        hi = -1
        for t in range(g.k[i]):
            pyconv_inside_range(t * g.dl[i] - g.pb[i], g.s[i], 1, g.in_size[i],
                                g.out_size[i], &olo, &ohi)
            if ohi > olo:
                if lo < 0:
                    lo = t
                hi = t + 1
        if lo < 0:
            return None
        crop.append((lo, hi))
    return tuple(crop)


cdef object _tap_offsets(const pyconv_conv_geom *g, int64_t cin_g, pb, k):
    """Start of B row (c, a, b, e) in the image of one (image, group), for taps k at
    padding pb that read inside the input at output (0, 0, 0)."""
    h, w = g.in_size[1], g.in_size[2]
    t = [np.arange(k[i], dtype=np.int64) * g.dl[i] - pb[i] for i in range(3)]
    off = (np.arange(cin_g, dtype=np.int64)[:, None, None, None] * (g.in_size[0] * h * w)
           + t[0][None, :, None, None] * (h * w) + t[1][None, None, :, None] * w
           + t[2][None, None, None, :])
    return off.reshape(-1)


cdef list _tap_bands(const pyconv_conv_geom *g, int d):
    """Runs of outputs along dim d over which the same taps read inside the input:
    [(o0, o1, a, b)] with taps [a, b) (contiguous, as in _tap_crop)."""
    cdef int64_t o, a, b
    bands = []
    last = None
    for o in range(g.out_size[d]):
        pyconv_inside_range(o * g.s[d] - g.pb[d], g.dl[d], 1, g.in_size[d], g.k[d], &a, &b)
        if bands and last[2] == a and last[3] == b:     # (no negative indexing here)
            last[1] = o + 1
        else:
            last = [o, o + 1, a, b]
            bands.append(last)
    return bands


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
    cdef const pyconv_conv_geom *g = &p.geom
    cdef int64_t kvol = _volume(g.k)
    return (p.batch * (p.cin if transposed else p.cout) * kvol
            * (_volume(g.in_size) if transposed else _volume(g.out_size))
            * ((p.cout if transposed else p.cin) // p.groups))


cdef class ConvCall
cdef class ConvKernel


cdef tuple _as3(tuple t, int64_t fill):
    return (fill,) * (3 - len(t)) + t


_ALGORITHM_NAMES = {ALGO_IM2COL: "im2col", ALGO_SHIFTED: "shifted", ALGO_PADDED: "padded",
                    ALGO_BANDED: "banded", ALGO_CHANNELS: "channels"}


cdef class _CroppedWeights:
    """A kernel's weights (all taps or a crop of them, see _tap_crop): unpacked for the
    direct kernels, packed per group for the GEMM paths. Packed once per crop (the
    ConvKernel's crop cache) and held by every ConvReshape that uses it, so the raw
    pointers in the reshape's conv_args and band descriptors stay valid."""
    cdef object weight          # (C_out, C_in_g, *k) or transposed layout, C-contiguous
    cdef list mats              # PackedMatrix per group (GEMM paths)
    cdef object panels          # channel tiles' weights (see channel_panels), made once
    cdef object raw             # bytearray holding one packed_a per group
    cdef const float *wptr
    cdef packed_a *views

    def __init__(self, ConvKernel owner, weight):
        self.weight = weight
        self.mats = []
        self.panels = None
        self.views = NULL
        cdef const float[::1] wflat = weight.reshape(-1)
        self.wptr = &wflat[0] if wflat.shape[0] else NULL

    cdef int pack(self, ConvKernel owner) except -1:
        """Packs the weights per group for the GEMM paths, once, when a reshape first
        takes one: the direct kernels and the GEMV of a whole-window conv (VGG's 7x7
        head, 411 MB) read the unpacked weights, and a packed copy would double them."""
        if self.views != NULL:
            return 0
        weight = self.weight
        cdef int64_t groups = owner.groups, g
        cdef int64_t cin_g = owner.cin // groups, cout_g = owner.cout // groups
        cdef int64_t kvol = int(np.prod(weight.shape[2:]))
        mats = []
        for g in range(groups):
            if owner.transposed:
                wg = weight[g * cin_g:(g + 1) * cin_g].reshape(cin_g, cout_g * kvol).T
            else:
                wg = weight[g * cout_g:(g + 1) * cout_g].reshape(cout_g, cin_g * kvol)
            mats.append(PackedMatrix(wg, owner.context))
        if self.views != NULL:
            return 0        # packed by another thread's reshape meanwhile: keep that one
        # no GIL release from here on: the fields change together for other threads
        raw = bytearray(groups * sizeof(packed_a))
        cdef unsigned char[::1] rv = raw
        cdef packed_a *views = <packed_a *>&rv[0]
        for g in range(groups):
            views[g] = (<PackedMatrix>mats[g]).view
        self.mats = mats
        self.raw = raw
        self.views = views
        return 0

    cdef const float *channel_panels(self, ConvKernel owner, int64_t nr,
                                     int64_t kw) except NULL:
        """The weights of the channel tiles (ALGO_CHANNELS), made on first use: per group,
        per panel of nr output channels, K x nr floats (the transposed weights, channels
        across, zeros past the group's last channel), K ordered (kernel row, input channel,
        kernel column): an output row's taps inside the input are one run of K."""
        cdef int64_t groups = owner.groups, cout_g = owner.cout // groups
        cdef int64_t npanels = (cout_g + nr - 1) // nr
        if self.panels is None:
            w = self.weight.reshape(groups, cout_g, owner.cin // groups, -1, kw)
            w = w.transpose(0, 1, 3, 2, 4).reshape(groups, cout_g, -1)
            k = w.shape[2]
            padded = np.zeros((groups, npanels * nr, k), dtype=np.float32)
            padded[:, :cout_g] = w
            # 64-byte aligned: a weight vector split over two cache lines costs a second
            # load (a 32 -> 32 3x3 conv on 32x32 ran 92 or 123 us by where the array fell).
            panels = empty_aligned((groups, npanels, k, nr))
            panels[...] = padded.reshape(groups, npanels, nr, k).transpose(0, 1, 3, 2)
            if self.panels is None:     # set once: reshapes point into it (one made by
                self.panels = panels    # another thread meanwhile is dropped)
        return <const float *>cnp.PyArray_DATA(<cnp.ndarray>self.panels)


cdef class ConvReshape:
    """One input shape of a :class:`ConvKernel` resolved once (the reshape step of
    create -> reshape -> run): the output shape, the geometry, the taps kept (_tap_crop)
    and, for 'banded', the bands, the algorithm and its task split for the kernel's
    threads, and the workspace a run needs. Immutable; made by :meth:`ConvKernel.reshape`
    (through :meth:`pyconv.functional.ConvPlan.reshape`) and used as is by every run and
    bound call.

    Attributes
    ----------
    input_shape, output_shape : tuple of int
        (N, C_in, *spatial) and (N, C_out, *out_spatial).
    strides, dilations, pads_begin, pads_end, output_padding : tuple of int
        The resolved geometry, one value per spatial dim (``auto_pad`` / ``output_shape``
        applied; ``output_padding`` zeros for a convolution), as given: before the taps
        that read only padding are dropped.
    geometry : pyconv.arithmetic.ConvGeometry
        The same as the arithmetic helper returned it.
    algorithm : str
        'depthwise', 'pointwise' (1x1: B is the image, read in place), 'pointwise_packed'
        (the same, B packed), 'gemv' (one output position whose window is the whole
        input), 'im2col', 'shifted', 'padded', 'channels' or 'banded'; 'col2im' or
        'depthwise' for a transposed convolution.
    bands : tuple
        'banded': the output boxes of its bands, ((o0, o1), (c0, c1)) each, along the
        band dim and the columns (see conv_band); () on the other paths.
    num_threads : int
        Threads a run uses (the context's, fewer for a small problem).
    workspace_bytes : int
        Scratch memory a run takes (per calling Python thread, reused between runs).
    """
    cdef ConvKernel kernel
    cdef conv_args p            # geometry part of the arguments; data pointers set per run
    cdef object offsets         # int64 ndarray: phase-copy or in-place pointwise B-row
                                # offsets, or the band descriptors (conv_band) and their
                                # B-row offsets; or None
    cdef _CroppedWeights weights    # the taps kept: p.weight / p.packed point into it
    cdef tuple band_weights     # each band's taps: its conv_band.packed points into them
    cdef int nthreads
    cdef bint direct            # runs the depthwise kernel (else a GEMM path)
    cdef int64_t ws_floats      # workspace floats a run asks for
    cdef int64_t cols_floats    # transposed GEMM: the columns' part of it
    cdef int ndim
    cdef cnp.npy_intp x_dims[5]
    cdef cnp.npy_intp y_dims[5]
    cdef readonly tuple input_shape, output_shape, strides, dilations, bands
    cdef readonly object geometry
    cdef readonly str algorithm

    @property
    def pads_begin(self):
        return self.geometry.pads_begin

    @property
    def pads_end(self):
        return self.geometry.pads_end

    @property
    def output_padding(self):
        return self.geometry.output_padding

    @property
    def num_threads(self):
        return self.nthreads

    @property
    def workspace_bytes(self):
        return int(self.ws_floats * sizeof(float))

    def __repr__(self):
        return (f"ConvReshape(input_shape={self.input_shape}, "
                f"output_shape={self.output_shape}, algorithm={self.algorithm!r}, "
                f"strides={self.strides}, pads_begin={self.pads_begin}, "
                f"pads_end={self.pads_end}, dilations={self.dilations}, "
                f"workspace_bytes={self.workspace_bytes})")


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
    cdef const float *_bptr     # self.bias data (owned, never reassigned)
    cdef object _crops          # tap crop (3 (lo, hi) pairs) -> _CroppedWeights
    cdef _CroppedWeights _whole # the full kernel's
    cdef object _last           # the ConvReshape of the last run (last_algorithm, last_bands)
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
        # One input channel per group: direct kernels beat a K = kvol GEMM per channel.
        self.direct = (self.cin // groups) == 1
        self._last = None
        self._crops = {}
        self._bptr = NULL
        cdef const float[::1] bflat
        if self.bias is not None:
            bflat = self.bias
            self._bptr = &bflat[0] if bflat.shape[0] else NULL
        self._whole = _CroppedWeights(self, self.weight)
        self._crops[tuple((0, k) for k in _as3(self.kernel_shape, 1))] = self._whole

    cdef _CroppedWeights _weights_for(self, tuple crop):
        """The weights of the taps in crop (per dim (lo, hi), 3-D), packed once per crop."""
        cw = self._crops.get(crop)
        if cw is None:
            w = self.weight.reshape(self.weight.shape[:2] + _as3(self.kernel_shape, 1))
            w = w[:, :, crop[0][0]:crop[0][1], crop[1][0]:crop[1][1], crop[2][0]:crop[2][1]]
            w = w.reshape(w.shape[:2] + w.shape[5 - self.nspatial:])
            cw = _CroppedWeights(self, np.ascontiguousarray(w))
            self._crops[crop] = cw
        return cw

    @property
    def last_algorithm(self):
        """The algorithm of the last run (see :attr:`ConvReshape.algorithm`); None before
        the first run."""
        return None if self._last is None else (<ConvReshape>self._last).algorithm

    @property
    def last_bands(self):
        """The bands of the last run (see :attr:`ConvReshape.bands`); () when it ran
        another path or before the first run."""
        return () if self._last is None else (<ConvReshape>self._last).bands

    def reshape(self, tuple x_shape, tuple out_shape, strides, dilations, geometry):
        """A :class:`ConvReshape` for inputs of ``x_shape`` giving ``out_shape``: the
        geometry (``strides``, ``dilations``, ``geometry.pads_begin``) validated by
        pyconv.functional, resolved here into the kernels' struct, the taps that read
        only padding dropped, the algorithm chosen (and its bands), the work split for
        this kernel's threads and the workspace sized."""
        cdef ConvReshape r = ConvReshape.__new__(ConvReshape)
        cdef int i
        if not 3 <= len(x_shape) <= 5 or len(out_shape) != len(x_shape):
            raise ValueError(f"ConvKernel.reshape: shapes {x_shape} -> {out_shape} are not "
                             f"(N, C, *spatial) of one rank")
        r.kernel = self
        r.input_shape = x_shape
        r.output_shape = out_shape
        r.strides = tuple(strides)
        r.dilations = tuple(dilations)
        r.geometry = geometry
        r.ndim = len(x_shape)
        for i in range(r.ndim):
            r.x_dims[i] = x_shape[i]
            r.y_dims[i] = out_shape[i]
        self._geometry(r, x_shape, out_shape, r.strides, tuple(geometry.pads_begin),
                       r.dilations)
        self._plan_work(r)
        r.bands = ()
        if r.direct:
            r.algorithm = "depthwise"
        elif self.transposed:
            r.algorithm = "col2im"
        elif r.p.pointwise:
            r.algorithm = "pointwise" if r.p.pointwise_in_place else "pointwise_packed"
        elif r.p.whole_window:
            r.algorithm = "gemv"
        else:
            r.algorithm = _ALGORITHM_NAMES[r.p.algo]
            if r.p.algo == ALGO_BANDED:
                r.bands = tuple(((r.p.bands[i].o0, r.p.bands[i].o1),
                                 (r.p.bands[i].c0, r.p.bands[i].c1))
                                for i in range(r.p.nbands))
        return r

    def run(self, ConvReshape shape not None, x, out, residual=None, activation=None,
            float act_alpha=0.0, float act_beta=0.0):
        """Runs ``shape`` (a reshape of this kernel) on x into out, both float32 aligned
        C-contiguous arrays of its input and output shapes (residual too, of the output
        shape, or None), out sharing no memory with them."""
        if shape.kernel is not self:
            raise ValueError("ConvKernel.run: the reshape belongs to another kernel")
        if not planned_array(x, shape.ndim, shape.x_dims) or not planned_array(
                out, shape.ndim, shape.y_dims) or (residual is not None and not planned_array(
                    residual, shape.ndim, shape.y_dims)):
            raise ValueError(f"ConvKernel.run: x, out (and residual) must be float32 aligned "
                             f"C-contiguous arrays of shapes {shape.input_shape} and "
                             f"{shape.output_shape}")
        if arrays_overlap(x, out) or (residual is not None and arrays_overlap(residual, out)):
            # out is written while x and residual are still read
            raise ValueError("ConvKernel.run: out shares memory with x or residual")
        self._last = shape
        return self._execute(shape, activation_code(activation), act_alpha, act_beta, x, out,
                             residual)

    def bind(self, ConvReshape shape not None, out, activation=None, float act_alpha=0.0,
             float act_beta=0.0):
        """A :class:`ConvCall`: ``run`` of ``shape`` with the epilogue fixed, writing into
        ``out`` (a memory planner's buffer, a writeable float32 aligned C-contiguous array
        of the output shape), or into a new array per call when ``out`` is None."""
        if shape.kernel is not self:
            raise ValueError("ConvKernel.bind: the reshape belongs to another kernel")
        check_bound_out("ConvKernel.bind", out, shape.ndim, shape.y_dims,
                        shape.output_shape)
        cdef ConvCall call = ConvCall.__new__(ConvCall)
        call.kernel = self
        call.shape = shape
        call.act = activation_code(activation)
        call.act_a = act_alpha
        call.act_b = act_beta
        call.out = out
        return call

    cdef int _geometry(self, ConvReshape r, tuple x_shape, tuple out_shape, tuple stride,
                       tuple pads_begin, tuple dilation) except -1:
        """Fills the shape part of r.p: the taps kept (r.weights), the algorithm and its
        offsets (r.offsets: phase-copy B-row offsets, or the bands, whose weights go in
        r.band_weights)."""
        cdef conv_args *p = &r.p
        cdef pyconv_conv_geom *g = &p.geom
        xs = _as3(x_shape[2:], 1)
        ys = _as3(out_shape[2:], 1)
        ks = _as3(self.kernel_shape, 1)
        ss = _as3(stride, 1)
        if not self.transposed:
            # A dim with one output never steps: stride 1 there, so that no workspace
            # (the depthwise rows hold stride phases) is sized by the attribute.
            ss = tuple(1 if ys[i] == 1 else ss[i] for i in range(3))
        ps = _as3(pads_begin, 0)
        ds = _as3(dilation, 1)
        memset(p, 0, sizeof(conv_args))
        r.offsets = None
        r.band_weights = ()
        p.batch = x_shape[0]
        g.in_size = xs
        g.out_size = ys
        g.k = ks
        g.s = ss
        g.pb = ps
        g.dl = ds
        for i in range(3):      # the padding the last window reaches (never read here)
            if self.transposed:
                g.pe[i] = (xs[i] - 1) * ss[i] + (ks[i] - 1) * ds[i] + 1 - ys[i] - ps[i]
            else:
                g.pe[i] = (ys[i] - 1) * ss[i] + (ks[i] - 1) * ds[i] + 1 - xs[i] - ps[i]
        p.groups = self.groups
        p.cin = self.cin
        p.cout = self.cout
        p.kernel = self.ctx.kernel
        p.dw_kernel = pyconv_dwconv_kernel_for(self.ctx.kernel.isa)
        p.y_plane = _volume(g.out_size)
        p.y_first = 0
        cw = self._whole
        crop = None if self.transposed else _tap_crop(g)
        if crop is not None:
            # Taps that read only padding for every output cost nothing: a smaller kernel.
            cw = self._weights_for(crop)
            for i in range(3):
                g.pb[i] -= crop[i][0] * ds[i]
                g.k[i] = crop[i][1] - crop[i][0]
                g.pe[i] = (ys[i] - 1) * ss[i] + (g.k[i] - 1) * ds[i] + 1 - xs[i] - g.pb[i]
            ks = (g.k[0], g.k[1], g.k[2])
            ps = (g.pb[0], g.pb[1], g.pb[2])
        r.direct = self.direct and (self.transposed or _depthwise_fits(g))
        # One output position whose kept taps cover the input exactly, no padding read
        # (a fully connected layer exported as a conv over its whole map: VGG's 7x7 head):
        # the column of the one position is the image itself, a GEMV on the unpacked
        # weights (_conv_gemm_task), where the padded im2col GEMM streamed them packed.
        p.whole_window = (not self.transposed and not r.direct and ys == (1, 1, 1)
                          and ks == xs and ps == (0, 0, 0)
                          and all(ks[i] == 1 or ds[i] == 1 for i in range(3)))
        if not r.direct and not p.whole_window:
            cw.pack(self)       # the GEMM paths (also a depthwise kernel's im2col
                                # fallback: hostile padding / strides, _depthwise_fits)
        r.weights = cw
        p.weight = cw.wptr
        p.packed = cw.views
        p.pointwise = (not self.transposed and ks == (1, 1, 1) and ss == (1, 1, 1)
                       and ps == (0, 0, 0) and xs == ys)
        p.algo = ALGO_IM2COL     # also the pointwise GEMM and the GEMV (_conv_gemm_task)
        p.pointwise_in_place = (p.pointwise and not r.direct and p.packed != NULL
                                and _pointwise_in_place_fits(p))
        if p.pointwise_in_place:
            r.offsets = np.arange(p.packed[0].k, dtype=np.int64) * _volume(p.geom.in_size)
            p.pc.off = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>r.offsets)
        if r.direct or self.transposed or p.pointwise or p.whole_window:
            return 0
        if self.direct:
            return 0            # the im2col fallback of a depthwise kernel: no bands
        cdef const pyconv_sgemm_kernel *kern = p.packed[0].kernel
        cdef int forced = self.ctx.conv_algorithm
        cdef int64_t cost = 0
        cdef int nthreads = threads_for(_conv_macs(p, False), self.ctx.nthreads)
        p.algo = _choose_algorithm(p, kern, nthreads,
                                   ALGO_AUTO if forced == ALGO_BANDED else forced, &cost)
        if forced == ALGO_AUTO or forced == ALGO_BANDED:
            band_weights = []
            bands = self._banded(p, crop, cost, forced == ALGO_BANDED, nthreads,
                                 band_weights)
            if bands is not None:
                # the band structs point into the array and into band_weights: both kept
                r.offsets = bands
                r.band_weights = tuple(band_weights)
                p.bands = <const conv_band *>cnp.PyArray_DATA(<cnp.ndarray>bands)
                return 0
        if p.algo != ALGO_IM2COL:
            r.offsets = _phase_copy_setup(p, kern)
            p.pc.off = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>r.offsets)
        if p.algo == ALGO_CHANNELS:
            p.panels = cw.channel_panels(self, kern.nr, p.geom.k[2])
        return 0

    cdef object _banded(self, conv_args *p, tuple crop, int64_t best, bint forced,
                        int nthreads, list band_weights):
        """Splits the outer output rows into bands of constant in-input kernel rows, for
        2-D also the columns (see conv_band), when the banded im2col costs less than
        `best` (or `forced`); returns the bands (int64 ndarray, the conv_band structs),
        appends the weights they point into to band_weights and sets p, or None."""
        cdef pyconv_conv_geom *g = &p.geom
        cdef int d = 0, i
        cdef int64_t rows_cost = 0, cols_cost = 0, inner = 1, kother, kb, n
        cdef int64_t m = p.cout // p.groups, cin_g = p.cin // p.groups, mpanels
        cdef _CroppedWeights bw
        while d < 2 and g.out_size[d] == 1:
            d += 1      # the first dim with several outputs: its bands are contiguous
        for i in range(d + 1, 3):
            inner *= g.out_size[i]
        runs = _tap_bands(g, d)
        cols = [[0, g.out_size[2], 0, g.k[2]]]
        if d == 1:
            cols = _tap_bands(g, 2)
        if any(r[2] == r[3] for r in runs + cols):
            return None         # a band of no taps: bias only (not worth a path)
        kother = cin_g * _volume(g.k) // g.k[d]
        for r in runs:      # _im2col_cost of each band, plus a pass over the GEMM per band
            kb = kother * (r[3] - r[2])
            n = (r[1] - r[0]) * inner
            rows_cost += m * kb * ((n + 15) // 16 * 16) + 12 * kb * n + m * kb * 16
        # Rows and columns: each band also copied out of scratch (2 per output value).
        for r in runs:
            for c in cols:
                kb = cin_g * (r[3] - r[2]) * (c[3] - c[2])
                n = (r[1] - r[0]) * (c[1] - c[0])
                cols_cost += (m * kb * ((n + 15) // 16 * 16) + 12 * kb * n + m * kb * 16
                              + 2 * m * n)
        p.band_cols = len(cols) > 1 and cols_cost < rows_cost
        if not p.band_cols:
            cols = [[0, g.out_size[2], 0, g.k[2]]]
            if len(runs) < 2:
                return None     # one band: nothing to skip
        if not forced and min(rows_cost, cols_cost) >= best:
            return None
        if crop is None:
            crop = tuple((0, g.k[i]) for i in range(3))
        # Bands whose taps all read inside the input (split both ways, or the 1-D ones)
        # at unit column stride are packed by plain copies from B-row offsets, stored
        # after the band structs.
        cdef bint inside = (p.band_cols or d == 2) and g.s[2] == 1
        cdef int64_t nb = len(runs) * len(cols), words = sizeof(conv_band) // 8
        cdef int64_t koff = nb * words
        if inside:       # every band's K: its taps along d (and the columns), all others
            koff += sum(kother * (r[3] - r[2]) // (g.k[2] if p.band_cols else 1)
                        * (c[3] - c[2] if p.band_cols else 1) for r in runs for c in cols)
        bands = np.zeros(koff, dtype=np.int64)
        cdef int64_t *words_p = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>bands)
        cdef conv_band *bv = <conv_band *>words_p
        koff = nb * words
        i = 0
        for r in runs:
            for c in cols:
                # taps [a, b) of the cropped kernel are taps crop[d][0] + a.. of the whole
                sub = list(crop)
                sub[d] = (crop[d][0] + r[2], crop[d][0] + r[3])
                if p.band_cols:
                    sub[2] = (crop[2][0] + c[2], crop[2][0] + c[3])
                bw = self._weights_for(tuple(sub))
                bw.pack(self)
                band_weights.append(bw)
                bv[i].o0 = r[0]
                bv[i].o1 = r[1]
                bv[i].pb = g.pb[d] - r[0] * g.s[d] - r[2] * g.dl[d]
                bv[i].k = r[3] - r[2]
                bv[i].c0 = c[0]
                bv[i].c1 = c[1]
                bv[i].cpb = g.pb[2] - c[0] * g.s[2] - c[2] * g.dl[2]
                bv[i].ck = c[3] - c[2]
                bv[i].packed = bw.views
                bv[i].off = NULL
                if inside:
                    pb = [g.pb[0], g.pb[1], g.pb[2]]
                    kk = [g.k[0], g.k[1], g.k[2]]
                    pb[d], kk[d] = bv[i].pb, bv[i].k
                    if p.band_cols:
                        pb[2], kk[2] = bv[i].cpb, bv[i].ck
                    off = _tap_offsets(g, cin_g, pb, kk)
                    bands[koff:koff + off.size] = off
                    bv[i].off = words_p + koff
                    koff += off.size
                i += 1
        p.algo = ALGO_BANDED
        p.band_dim = d
        p.nbands = i
        # column-split bands: enough tasks for the threads, rows split if need be
        mpanels = (m + p.packed[0].kernel.mr - 1) // p.packed[0].kernel.mr
        n = i * p.batch * p.groups
        p.band_mblocks = (1 if nthreads == 1 else
                          max(<int64_t>1, min(mpanels, (4 * nthreads + n - 1) // n)))
        return bands

    cdef int _plan_work(self, ConvReshape r) except -1:
        """The threads, the task split (in r.p) and the workspace of a run of r."""
        cdef conv_args *p = &r.p
        cdef int64_t ncols, b
        r.nthreads = threads_for(_conv_macs(p, self.transposed), self.ctx.nthreads)
        r.ws_floats = 0
        r.cols_floats = 0
        if p.batch == 0 or _volume(p.geom.out_size) * p.cout == 0:
            return 0                                 # nothing to compute
        if not self.transposed:
            if p.whole_window:
                return 0                             # a GEMV: no workspace
            if r.direct:
                p.ws_stride = slot_floats(_depthwise_blocking(p, r.nthreads))
                r.ws_floats = p.ws_stride * r.nthreads
            elif p.algo != ALGO_IM2COL and p.algo != ALGO_BANDED:
                r.ws_floats = _phase_copy_blocking(p, r.nthreads)
            else:
                ncols = _volume(p.geom.out_size)
                p.ws_stride = sgemm_workspace_floats(&p.packed[0], ncols, 1)
                if p.pointwise_in_place:
                    _pointwise_blocking(p, r.nthreads)
                for b in range(p.nbands):      # blocks are sized by K: take the largest
                    p.ws_stride = max(p.ws_stride, _band_workspace_floats(p, &p.bands[b]))
                r.ws_floats = p.ws_stride * r.nthreads
        elif not self.direct:
            ncols = _volume(p.geom.in_size)
            r.cols_floats = (p.packed[0].m * ncols + 15) // 16 * 16
            r.ws_floats = r.cols_floats + sgemm_workspace_floats(&p.packed[0], ncols,
                                                                 r.nthreads)
        return 0

    cdef object _execute(self, ConvReshape r, int act, float act_a, float act_b, x, out,
                         residual):
        """The data part of the arguments, the workspace, then the kernels (GIL released).
        x, out and residual are float32 C-contiguous arrays of r's shapes; everything else
        (weights, offsets, bands, split) is r's, as the reshape froze it."""
        cdef conv_args p = r.p
        p.act = act
        p.act_a = act_a
        p.act_b = act_b
        p.x = _float_data(x, "x", False)
        p.y = _float_data(out, "out", True)
        p.bias = self._bptr
        p.residual = NULL if residual is None else _float_data(residual, "residual", False)
        if p.batch == 0 or cnp.PyArray_SIZE(<cnp.ndarray>out) == 0:
            return out
        cdef int nthreads = r.nthreads
        cdef float *ws = workspace_floats(r.ws_floats)
        cdef unsigned fp_env
        # Denormals read and written as zero, on every thread of the call: a denormal
        # operand costs a microcode assist per multiply-add (SiLU of a very negative
        # value is one: mixnet_s's 1x1 convs after it ran 20-40x slower, the model 3x),
        # and changes a sum by under 1e-38 a term. The caller's setting is restored.
        p.ws = ws
        with nogil:
            fp_env = fp_flush_denormals()
            if self.transposed:
                _conv_transpose_forward(&p, self.direct, nthreads, ws, ws + r.cols_floats)
            elif r.direct:
                _depthwise_forward(&p, nthreads)
            elif p.pointwise_in_place:
                _pointwise_forward(&p, nthreads)
            elif p.algo == ALGO_BANDED:
                _banded_forward(&p, nthreads)
            elif p.algo != ALGO_IM2COL:
                p.ws = ws + p.pc.copies * p.pc.wave * p.pc.image   # after the copies
                _phase_copy_forward(&p, nthreads, ws)
            else:
                _im2col_forward(&p, nthreads)
            fp_restore(fp_env)
        return out


cdef class ConvCall:
    """One convolution bound to an input shape and an output buffer (see
    :meth:`ConvKernel.bind`). ``call(x, residual=None)`` writes and returns ``out`` (a
    new array when bound without one), or returns None, computing nothing, when the arguments are not what it was bound for
    (another shape or dtype, a non-contiguous array, an overlap with ``out``): the
    caller then takes the general path."""
    cdef ConvKernel kernel
    cdef ConvReshape shape
    cdef int act
    cdef float act_a, act_b
    cdef readonly object out

    @property
    def output_shape(self):
        return self.shape.output_shape

    def __call__(self, x, residual=None):
        cdef ConvReshape r = self.shape
        out = self.out
        if out is None:     # a new output per call: it overlaps nothing
            if not planned_array(x, r.ndim, r.x_dims) or (
                    residual is not None and not planned_array(residual, r.ndim, r.y_dims)):
                return None
            out = empty_lines(r.ndim, r.y_dims, cnp.NPY_FLOAT32)
        elif not planned_array(x, r.ndim, r.x_dims) or arrays_overlap(x, out) or (
                residual is not None and (not planned_array(residual, r.ndim, r.y_dims)
                                          or arrays_overlap(residual, out))):
            return None
        return self.kernel._execute(r, self.act, self.act_a, self.act_b, x, out, residual)
