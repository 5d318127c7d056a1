# Convolution and transposed convolution on the packed GEMM engine: the plan.
#
# Every problem is handled as 3-D (1-D and 2-D get leading size-1 spatial dims). This file
# is the planning module: ConvKernel packs the weights (create); ConvKernel.reshape
# resolves an input shape into a frozen ConvReshape (the conv_args geometry, the algorithm
# and its task split, the workspace size); ConvKernel.run only computes; ConvCall is a
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

from pyconv._ext.gemm cimport (PackedMatrix, activation_code, threads_for, pack_b_fn,
                               pack_b_strided, packed_a, pyconv_epilogue,
                               pyconv_sgemm_kernel, sgemm_block, sgemm_nc, sgemm_packed,
                               sgemm_workspace_floats, strided_b, workspace_floats,
                               planned_array, arrays_overlap, exec_ctx, context_of,
                               parallel_for, grain_for)
from pyconv._ext import gemm as _gemm
from pyconv._ext.gemm cimport (PYCONV_ACT_NONE, PYCONV_MAX_PHASE_STRIDE, pyconv_epilogue_fn,
                               pyconv_run)
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
    ctypedef struct pyconv_dwconv_kernel:
        const char *isa
        const char *name
        pyconv_dwconv_rows_fn rows
    const pyconv_dwconv_kernel *pyconv_dwconv_kernel_for(const char *isa)
    int64_t pyconv_dwconv_workspace_floats(const pyconv_conv_geom *g, int64_t rows)


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
    pyconv_conv_geom geom    # spatial geometry, read in place by the im2col packing and the
                             # depthwise kernels
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


cdef inline void _fill_epilogue(const conv_args *p, int64_t first_channel, int64_t n,
                                pyconv_epilogue *ep) noexcept nogil:
    cdef int64_t plane = _volume(p.geom.out_size)
    ep.bias = p.bias + first_channel if p.bias != NULL else NULL
    ep.residual = (p.residual + (n * p.cout + first_channel) * plane
                   if p.residual != NULL else NULL)
    ep.ldr = plane
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
               "padded": ALGO_PADDED}


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
    cdef const pyconv_conv_geom *g = &p.geom
    cdef int64_t wq, hq, m, k, n, computed, copy, gemm, shifted, padded, im2col, packers
    if (forced == ALGO_IM2COL or g.k[0] != 1 or g.in_size[0] != 1 or g.out_size[0] != 1
            or g.s[0] != 1 or g.s[1] > PYCONV_MAX_PHASE_STRIDE
            or g.s[2] > PYCONV_MAX_PHASE_STRIDE):
        return ALGO_IM2COL
    if forced != ALGO_AUTO:
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
    computed = (g.out_size[1] * wq + kern.nr - 1) // kern.nr * kern.nr
    copy = 2 * (p.cin // p.groups) * g.s[1] * g.s[2] * hq * wq
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


_ALGORITHM_NAMES = {ALGO_IM2COL: "im2col", ALGO_SHIFTED: "shifted", ALGO_PADDED: "padded"}


cdef class ConvReshape:
    """One input shape of a :class:`ConvKernel` resolved once (the reshape step of
    create -> reshape -> run): the output shape, the geometry, the algorithm and its task
    split for the kernel's threads, and the workspace a run needs. Immutable; made by
    :meth:`ConvKernel.reshape` (through :meth:`pyconv.functional.ConvPlan.reshape`) and
    used as is by every run and bound call.

    Attributes
    ----------
    input_shape, output_shape : tuple of int
        (N, C_in, *spatial) and (N, C_out, *out_spatial).
    strides, dilations, pads_begin, pads_end, output_padding : tuple of int
        The resolved geometry, one value per spatial dim (``auto_pad`` / ``output_shape``
        applied; ``output_padding`` zeros for a convolution).
    geometry : pyconv.arithmetic.ConvGeometry
        The same as the arithmetic helper returned it.
    algorithm : str
        'depthwise', 'pointwise', 'im2col', 'shifted' or 'padded'; 'col2im' or
        'depthwise' for a transposed convolution.
    num_threads : int
        Threads a run uses (the context's, fewer for a small problem).
    workspace_bytes : int
        Scratch memory a run takes (per calling Python thread, reused between runs).
    """
    cdef ConvKernel kernel
    cdef conv_args p            # geometry part of the arguments; data pointers set per run
    cdef object offsets         # phase-copy B-row offsets (int64 ndarray), or None
    cdef int nthreads
    cdef int64_t ws_floats      # workspace floats a run asks for
    cdef int64_t cols_floats    # transposed GEMM: the columns' part of it
    cdef int ndim
    cdef cnp.npy_intp x_dims[5]
    cdef cnp.npy_intp y_dims[5]
    cdef readonly tuple input_shape, output_shape, strides, dilations
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
    cdef list _packed_mats
    cdef object _views          # bytearray holding one packed_a per group
    cdef packed_a *_pviews      # its data (never resized, so the pointer stays valid)
    cdef const float *_wptr     # self.weight / self.bias data (owned, never reassigned)
    cdef const float *_bptr
    cdef object _last           # the ConvReshape of the last run (last_algorithm)
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
        self._last = None
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
        """The algorithm of the last run (see :attr:`ConvReshape.algorithm`); None before
        the first run."""
        return None if self._last is None else (<ConvReshape>self._last).algorithm

    def reshape(self, tuple x_shape, tuple out_shape, strides, dilations, geometry):
        """A :class:`ConvReshape` for inputs of ``x_shape`` giving ``out_shape``: the
        geometry (``strides``, ``dilations``, ``geometry.pads_begin``) validated by
        pyconv.functional, resolved here into the kernels' struct, the algorithm chosen,
        the work split for this kernel's threads and the workspace sized."""
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
        r.offsets = self._geometry(&r.p, x_shape, out_shape, r.strides,
                                   tuple(geometry.pads_begin), r.dilations)
        self._plan_work(r)
        if self.direct:
            r.algorithm = "depthwise"
        elif self.transposed:
            r.algorithm = "col2im"
        elif r.p.pointwise:
            r.algorithm = "pointwise"
        else:
            r.algorithm = _ALGORITHM_NAMES[r.p.algo]
        return r

    def run(self, ConvReshape shape not None, x, out, residual=None, activation=None,
            float act_alpha=0.0, float act_beta=0.0):
        """Runs ``shape`` (a reshape of this kernel) on x into out, both float32 aligned
        C-contiguous arrays of its input and output shapes (residual too, of the output
        shape, or None)."""
        if shape.kernel is not self:
            raise ValueError("ConvKernel.run: the reshape belongs to another kernel")
        if not planned_array(x, shape.ndim, shape.x_dims) or not planned_array(
                out, shape.ndim, shape.y_dims) or (residual is not None and not planned_array(
                    residual, shape.ndim, shape.y_dims)):
            raise ValueError(f"ConvKernel.run: x, out (and residual) must be float32 aligned "
                             f"C-contiguous arrays of shapes {shape.input_shape} and "
                             f"{shape.output_shape}")
        self._last = shape
        return self._execute(shape, activation_code(activation), act_alpha, act_beta, x, out,
                             residual)

    def bind(self, ConvReshape shape not None, out, activation=None, float act_alpha=0.0,
             float act_beta=0.0):
        """A :class:`ConvCall`: ``run`` of ``shape`` with the epilogue fixed, writing into
        ``out`` (a memory planner's buffer, a writeable float32 aligned C-contiguous array
        of the output shape)."""
        if shape.kernel is not self:
            raise ValueError("ConvKernel.bind: the reshape belongs to another kernel")
        if not planned_array(out, shape.ndim, shape.y_dims) or not out.flags.writeable:
            raise ValueError(f"ConvKernel.bind: out must be a writeable float32 aligned "
                             f"C-contiguous array of shape {shape.output_shape}, got "
                             f"{getattr(out, 'dtype', type(out).__name__)} "
                             f"{getattr(out, 'shape', '')}")
        cdef ConvCall call = ConvCall.__new__(ConvCall)
        call.kernel = self
        call.shape = shape
        call.act = activation_code(activation)
        call.act_a = act_alpha
        call.act_b = act_beta
        call.out = out
        return call

    cdef object _geometry(self, conv_args *p, tuple x_shape, tuple out_shape, tuple stride,
                          tuple pads_begin, tuple dilation):
        """Fills the shape part of p (and the algorithm); returns the phase-copy B-row
        offsets, or None on the other paths."""
        cdef pyconv_conv_geom *g = &p.geom
        xs = _as3(x_shape[2:], 1)
        ys = _as3(out_shape[2:], 1)
        ks = _as3(self.kernel_shape, 1)
        ss = _as3(stride, 1)
        ps = _as3(pads_begin, 0)
        ds = _as3(dilation, 1)
        memset(p, 0, sizeof(conv_args))
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
        p.pointwise = (not self.transposed and ks == (1, 1, 1) and ss == (1, 1, 1)
                       and ps == (0, 0, 0) and xs == ys)
        p.groups = self.groups
        p.cin = self.cin
        p.cout = self.cout
        p.packed = self._pviews
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

    cdef int _plan_work(self, ConvReshape r) except -1:
        """The threads, the task split (in r.p) and the workspace of a run of r."""
        cdef conv_args *p = &r.p
        cdef int64_t ncols
        r.nthreads = threads_for(_conv_macs(p, self.transposed), self.ctx.nthreads)
        r.ws_floats = 0
        r.cols_floats = 0
        if p.batch == 0 or _volume(p.geom.out_size) * p.cout == 0:
            return 0                                 # nothing to compute
        if not self.transposed:
            if self.direct:
                p.ws_stride = _depthwise_blocking(p, r.nthreads)
                r.ws_floats = p.ws_stride * r.nthreads
            elif p.algo != ALGO_IM2COL:
                r.ws_floats = _phase_copy_blocking(p, r.nthreads)
            else:
                ncols = _volume(p.geom.out_size)
                p.ws_stride = sgemm_workspace_floats(&p.packed[0], ncols, 1)
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
        x, out and residual are float32 C-contiguous arrays of r's shapes."""
        cdef conv_args p = r.p
        p.act = act
        p.act_a = act_a
        p.act_b = act_b
        p.x = _float_data(x, "x", False)
        p.y = _float_data(out, "out", True)
        p.weight = self._wptr
        p.bias = self._bptr
        p.residual = NULL if residual is None else _float_data(residual, "residual", False)
        if p.algo != ALGO_IM2COL:
            p.pc.off = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>r.offsets)
        if p.batch == 0 or cnp.PyArray_SIZE(<cnp.ndarray>out) == 0:
            return out
        cdef int nthreads = r.nthreads
        cdef float *ws = workspace_floats(r.ws_floats)
        if not self.transposed:
            p.ws = ws
            with nogil:
                if self.direct:
                    _depthwise_forward(&p, nthreads)
                elif p.algo != ALGO_IM2COL:
                    p.ws = ws + p.pc.wave * p.pc.image      # after the phase copies
                    _phase_copy_forward(&p, nthreads, ws)
                else:
                    _im2col_forward(&p, nthreads)
        else:
            with nogil:
                _conv_transpose_forward(&p, self.direct, nthreads, ws, ws + r.cols_floats)
        return out


cdef class ConvCall:
    """One convolution bound to an input shape and an output buffer (see
    :meth:`ConvKernel.bind`). ``call(x, residual=None)`` writes and returns ``out``, or
    returns None, computing nothing, when the arguments are not what it was bound for
    (another shape or dtype, a non-contiguous array, an overlap with ``out``): the
    caller then takes the general path."""
    cdef ConvKernel kernel
    cdef ConvReshape shape
    cdef int act
    cdef float act_a, act_b
    cdef readonly object out

    def __call__(self, x, residual=None):
        cdef ConvReshape r = self.shape
        if not planned_array(x, r.ndim, r.x_dims) or arrays_overlap(x, self.out):
            return None
        if residual is not None and (not planned_array(residual, r.ndim, r.y_dims)
                                     or arrays_overlap(residual, self.out)):
            return None
        return self.kernel._execute(r, self.act, self.act_a, self.act_b, x, self.out,
                                    residual)
