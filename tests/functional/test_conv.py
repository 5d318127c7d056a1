"""Convolution family vs the naive reference (tests/reference.py), onnxruntime and torch."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from _helpers import assert_close, avx512_context, flush_denormals, rand
import reference as R
import pyconv
import pyconv.functional as F
from pyconv import arithmetic
from pyconv._ext import conv as conv_ext, gemm
from pyconv.errors import InvalidArgument, InvalidDType, ShapeError

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


# (batch, C_in, C_out, spatial, kernel, stride, padding, dilation, groups)
CASES = [
    (2, 3, 5, (9, 7), (3, 3), 1, 1, 1, 1),
    (1, 1, 13, (25, 33), (3, 3), 2, 1, 1, 1),
    (1, 13, 16, (9, 7), (1, 1), 1, 0, 1, 1),                 # pointwise: image is the GEMM B
    (2, 16, 24, (9, 7), (1, 1), 2, 0, 1, 1),                 # strided 1x1 goes through im2col
    (1, 24, 24, (25, 33), (3, 3), 1, 1, 1, 24),              # depthwise
    (2, 16, 16, (9, 7), (3, 3), 2, 1, 1, 16),                # depthwise, stride 2
    (1, 8, 24, (9, 7), (3, 3), 1, 2, 2, 8),                  # depthwise multiplier 3, dilated
    (1, 24, 16, (9, 7), (3, 3), 1, 1, 1, 8),                 # grouped
    (1, 3, 16, (25, 33), (7, 7), 2, 3, 1, 1),                # stem
    (1, 4, 8, (25, 33), (3, 2), (2, 1), (1, 0, 2, 1), (2, 3), 2),   # asymmetric everything
    (2, 3, 13, (31,), (5,), 3, 2, 2, 1),                     # 1-D
    (1, 6, 12, (10,), (4,), 1, (0, 3), 1, 3),
    (1, 2, 4, (5, 6, 7), (2, 3, 2), (1, 2, 1), 1, (2, 1, 1), 2),   # 3-D
    (2, 3, 3, (4, 5, 6), (3, 3, 3), 1, 1, 1, 3),             # 3-D depthwise
    (2, 16, 40, (30, 29), (3, 3), 1, 1, 1, 2),               # many column chunks, row edge
    (3, 5, 9, (17, 50), (5, 3), (2, 3), (2, 1, 0, 3), (1, 2), 1),   # both strides, phases
    (1, 40, 20, (9, 7), (3, 3), 1, 2, 2, 1),                 # few columns: 16-wide chunks
    (1, 8, 16, (8, 8), (3, 3), 1, 1, 1, 1),      # shifted grid 8 x 10: last chunk 32 wide
    (2, 8, 12, (3, 3), (3, 3), 1, 1, 1, 1),      # shifted grid 3 x 5: one 15-wide chunk
    (1, 8, 20, (6, 32), (3, 3), 1, 1, 1, 1),     # shifted by vectors along the output rows
    (2, 6, 9, (3, 16), (3, 3), 1, 1, 1, 1),      # the same, one vector per row (AVX-512)
    (2, 40, 70, (1, 1), (1, 1), 1, 0, 1, 2),     # one output position: GEMV, grouped
    (2, 12, 100, (9, 11), (3, 3), 1, 1, 1, 2),   # channel tiles: partial panel, 2 per row
    (1, 5, 7, (10, 41), (3, 5), 2, (2, 0, 1, 4), 1, 1),  # stride 2, rows of 3 vectors:
    (2, 4, 6, (9, 36), (5, 3), 2, (0, 3, 2, 1), (1, 2), 1),  # both column phases per pass
    (1, 24, 112, (16, 15), (3, 3), 2, 1, 2, 1),  # channel tiles: 3 panels, stride 2, dilated
    (3, 7, 9, (1,), (1,), 1, 0, 1, 1),           # the same in 1-D
]

# Dense convs run through im2col packed from the image, the shifted path (GEMM reading B
# in place from a padded, stride-phase-split copy of the input) or im2col packed from
# that copy ('padded'), channel tiles on that copy ('channels': vectors across output
# channels, each output a broadcast) or im2col per band of output rows ('banded', where it
# skips taps); 'auto' picks per shape, so each test below forces each one.
ALGORITHMS = ["im2col", "shifted", "padded", "channels", "banded"]


@pytest.fixture(params=ALGORITHMS)
def algorithm(request):
    previous = conv_ext.set_algorithm(request.param)
    yield request.param
    conv_ext.set_algorithm(previous)


def case_id(c):
    return f"n{c[0]}-c{c[1]}-{c[2]}-sp{'x'.join(map(str, c[3]))}-k{'x'.join(map(str, c[4]))}-g{c[8]}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_conv_matches_reference(isa, threads, algorithm, rng, case):
    n, cin, cout, sp, k, s, p, d, g = case
    x, w, b = rand(rng, n, cin, *sp), rand(rng, cout, cin // g, *k), rand(rng, cout)
    pb, pe = arithmetic.resolve_padding(p, len(sp))
    got = CONV[len(sp)](x, w, b, stride=s, padding=p, dilation=d, groups=g)
    assert_close(got, R.conv_nd(x, w, b, s, pb, pe, d, g), cin * np.prod(k))


# An outer dim of one plane whose one output reads only padding: every output is the bias
# (the 2-D paths once read that plane at depth 0 anyway; found by the adjoint property).
@pytest.mark.parametrize("sp,k,s,p", [
    ((1, 1, 2), (1, 1, 2), (2, 1, 1), (1, 0, 0, 0, 0, 0)),
    ((1, 4, 5), (1, 3, 3), (3, 1, 1), (2, 1, 1, 0, 1, 1)),
    ((1, 6), (1, 3), (1, 1), (1, 1, 0, 1)),
], ids=["depth", "depth-3x3", "rows"])
def test_outer_dim_read_only_in_padding(algorithm, rng, sp, k, s, p):
    x, w, b = rand(rng, 2, 3, *sp), rand(rng, 4, 3, *k), rand(rng, 4)
    pb, pe = arithmetic.resolve_padding(p, len(sp))
    got = CONV[len(sp)](x, w, b, stride=s, padding=p)
    ref = R.conv_nd(x, w, b, s, pb, pe, (1,) * len(sp), 1)
    assert_close(got, ref, 3 * np.prod(k))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_conv_transpose_matches_reference(isa, threads, rng, case):
    n, cin, cout, sp, k, s, p, d, g = case
    x, w, b = rand(rng, n, cin, *sp), rand(rng, cin, cout // g, *k), rand(rng, cout)
    pb, pe = arithmetic.resolve_padding(p, len(sp))
    ss = arithmetic.normalize_tuple(s, len(sp), "s")
    ds = arithmetic.normalize_tuple(d, len(sp), "d")
    op = tuple(min(si, di) - 1 for si, di in zip(ss, ds))    # largest legal output_padding
    got = CONV_T[len(sp)](x, w, b, stride=s, padding=p, output_padding=op, groups=g,
                          dilation=d)
    assert_close(got, R.conv_transpose_nd(x, w, b, s, pb, pe, d, g, op), cin * np.prod(k))


@pytest.mark.parametrize("activation", [None, "relu", "hardswish"])
def test_pointwise_conv_on_one_position_matches_float64(isa, threads, rng, activation):
    """A 1x1 conv of a 1x1 map (squeeze-excite, heads after a global pool) is a GEMV on the
    unpacked weights, rows split over the threads: bias, residual and activation as
    everywhere else."""
    cin, cout = 300, 520
    # one image: a single GEMV, its rows split over the threads (a batch splits by image)
    x, w, b = rand(rng, 1, cin, 1, 1), rand(rng, cout, cin, 1, 1), rand(rng, cout)
    residual = rand(rng, 1, cout, 1, 1)
    plan = F.ConvPlan(w, b, activation=activation)
    acc = np.einsum("ok,nk->no", w[:, :, 0, 0].astype(np.float64),
                    x[:, :, 0, 0].astype(np.float64))[:, :, None, None] + b[:, None, None]
    act = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0),
           "hardswish": lambda v: v * np.clip(v / 6 + 0.5, 0, 1)}[activation]
    assert_close(plan.run(x), act(acc), cin)
    assert_close(plan.run(x, residual), act(acc + residual), cin)


@pytest.mark.parametrize("activation", [None, "relu", "clip", "hardswish"])
@pytest.mark.parametrize("n,cin,cout,groups,sp,expected", [
    (2, 32, 16, 1, (9, 13), "pointwise"),          # 117 columns: 5 past the last vector
    (1, 24, 40, 1, (7, 7), "pointwise"),           # 49: one past three vectors
    (2, 32, 48, 4, (6, 8), "pointwise"),           # groups, whole vectors
    (1, 64, 64, 1, (4, 4), "pointwise"),           # one chunk: rows split over threads
    (1, 16, 96, 1, (10, 10), "pointwise_packed"),  # K = 16 for 96 rows: B packed
])
def test_pointwise_in_place_and_packed(isa, rng, activation, n, cin, cout, groups, sp,
                                       expected):
    """1x1 convs read B (the image's rows) in place through the shifted tile where the
    packing would cost more than it saves; the columns past the last whole vector go
    through the packed GEMM. Bias, residual and activation on every part; 1 and 3
    threads (row blocks where the chunks are few) sum each output in the same order."""
    x, w = rand(rng, n, cin, *sp), rand(rng, cout, cin // groups, 1, 1)
    b, residual = rand(rng, cout), rand(rng, n, cout, *sp)
    lo, hi = -0.5, 1.5
    params = {"act_alpha": lo, "act_beta": hi} if activation == "clip" else {}
    act = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0),
           "clip": lambda v: np.clip(v, lo, hi),
           "hardswish": lambda v: v * np.clip(v / 6 + 0.5, 0, 1)}[activation]
    ref = R.conv_nd(x, w, b, 1, 0, 0, 1, groups)
    got = {}
    for nthreads in (1, 3):
        plan = F.ConvPlan(w, b, groups=groups, activation=activation,
                          context=pyconv.ExecutionContext(num_threads=nthreads), **params)
        assert plan.reshape(x.shape).algorithm == expected
        got[nthreads] = plan.run(x), plan.run(x, residual)
        assert_close(got[nthreads][0], act(ref), cin // groups)
        assert_close(got[nthreads][1], act(ref + residual), cin // groups)
    np.testing.assert_array_equal(got[1][0], got[3][0])
    np.testing.assert_array_equal(got[1][1], got[3][1])


@pytest.mark.parametrize("sp", [(6, 32), (3, 16), (4, 40), (6, 8)])
def test_shifted_row_vectors_with_residual_and_activation(isa, threads, rng, sp):
    """The shifted path by vectors along the output rows (where the map width is a
    multiple of the vector length: no padding column computed) or over the grid (40, and
    8 on AVX-512): bias, residual and activation on each vector's part of the output."""
    x, w, b = rand(rng, 2, 7, *sp), rand(rng, 19, 7, 3, 3), rand(rng, 19)
    residual = rand(rng, 2, 19, *sp)
    previous = conv_ext.set_algorithm("shifted")
    try:
        plan = F.ConvPlan(w, b, padding=1, activation="relu")
        got = plan.run(x, residual)
    finally:
        conv_ext.set_algorithm(previous)
    ref = R.conv_nd(x, w, b, 1, (1, 1), (1, 1), (1, 1), 1) + residual
    assert_close(got, np.maximum(ref, 0), 7 * 9)


@pytest.mark.parametrize("activation", [None, "relu", "clip", "hardswish"])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("sp, kernel, stride", [((6, 32), (3, 3), 1), ((5, 11), (3, 3), 1),
                                                ((7, 9), (2, 2), 2), ((9, 13), (3, 3), 2)])
def test_shifted_epilogue_in_the_kernel(isa, threads, rng, activation, with_bias, sp, kernel,
                                        stride):
    """Without a residual the shifted kernel applies the epilogue before its stores (bias,
    relu and clip in registers, other activations on the stored rows), into the output
    (whole row vectors, a grid as wide as the rows) or into scratch (grid columns
    dropped); 19 channels leave a partial last row panel."""
    x, w = rand(rng, 2, 7, *sp), rand(rng, 19, 7, *kernel)
    b = rand(rng, 19) if with_bias else None
    lo, hi = -0.5, 1.5
    params = {"act_alpha": lo, "act_beta": hi} if activation == "clip" else {}
    padding = 1 if kernel == (3, 3) else 0
    previous = conv_ext.set_algorithm("shifted")
    try:
        plan = F.ConvPlan(w, b, stride=stride, padding=padding, activation=activation,
                          **params)
        got = plan.run(x)
    finally:
        conv_ext.set_algorithm(previous)
    assert plan.kernel.last_algorithm == "shifted"
    ref = R.conv_nd(x, w, b, stride, padding, padding, 1, 1)
    act = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0),
           "clip": lambda v: np.clip(v, lo, hi),
           "hardswish": lambda v: v * np.clip(v / 6 + 0.5, 0, 1)}[activation]
    assert_close(got, act(ref), 7 * kernel[0] * kernel[1])


@pytest.mark.parametrize("sp", [(5, 16), (4, 17), (7, 9)])
@pytest.mark.parametrize("kernel, stride, padding", [((3, 1), 1, (1, 0)), ((2, 2), 2, 0)])
def test_shifted_grid_as_wide_as_the_output(isa, threads, rng, sp, kernel, stride, padding):
    """Kernels whose phase planes are as wide as the output rows (a column of taps, or
    2x2 at stride 2): no grid column is dropped, the tiles are stored straight into the
    output (the last chunk, when not whole vectors, through the scratch tile)."""
    x, w, b = rand(rng, 2, 7, *sp), rand(rng, 19, 7, *kernel), rand(rng, 19)
    ref = R.conv_nd(x, w, b, stride, padding, padding, 1, 1)
    residual = rand(rng, *ref.shape)
    previous = conv_ext.set_algorithm("shifted")
    try:
        plan = F.ConvPlan(w, b, stride=stride, padding=padding, activation="relu")
        got = plan.run(x, residual)
    finally:
        conv_ext.set_algorithm(previous)
    assert plan.kernel.last_algorithm == "shifted"
    assert_close(got, np.maximum(ref + residual, 0), 7 * kernel[0] * kernel[1])


def test_out_sharing_memory_with_an_operand_is_refused(rng):
    """The kernels write out while reading x and the residual (shifted tiles go straight
    into the output): an aliased out is refused, not computed wrong."""
    plan = F.ConvPlan(rand(rng, 8, 8, 3, 3), None, padding=1)
    x, residual = rand(rng, 1, 8, 4, 16), rand(rng, 1, 8, 4, 16)
    with pytest.raises(InvalidArgument, match="out shares memory with residual"):
        plan.run(x, residual, out=residual)
    with pytest.raises(InvalidArgument, match="out shares memory with input"):
        plan.run(x, out=x)
    out = np.empty_like(residual)
    assert plan.run(x, residual, out=out) is out


@pytest.mark.parametrize("nthreads", [3, 7])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("algorithm", ["shifted", "padded"])
@pytest.mark.parametrize("sp", [(9, 5), (30, 22), (4, 40), (5, 1100)])
def test_phase_copy_bands_of_many_threads(rng, nthreads, stride, algorithm, sp):
    """The phase copy filled in a band of rows per thread, each band edge moved up to a
    cache line: narrow planes (bands of a row or two, edges past the next band's rows,
    empty bands) and wide ones, every stride phase (1100 columns: past the stride-2
    masks made once per call)."""
    # 16 -> 24 channels: enough multiply-adds for several threads even on the 9 x 5 map
    x, w, b = rand(rng, 1, 16, *sp), rand(rng, 24, 16, 3, 3), rand(rng, 24)
    previous = conv_ext.set_algorithm(algorithm)
    try:
        plan = F.ConvPlan(w, b, stride=stride, padding=1,
                          context=pyconv.ExecutionContext(num_threads=nthreads))
        got = plan.run(x)
    finally:
        conv_ext.set_algorithm(previous)
    ref = R.conv_nd(x, w, b, (stride, stride), (1, 1), (1, 1), (1, 1), 1)
    assert_close(got, ref, 16 * 9)


@pytest.mark.parametrize("algorithm", ["shifted", "padded", "channels"])
@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("h,w", [(10, 2), (14, 1), (6, 5), (14, 7), (2, 14), (5, 15), (3, 31)])
def test_phase_copy_whole_planes_of_narrow_rows(isa, rng, algorithm, s, h, w):
    """One thread fills whole phase planes in one pass, each row's vectors stored whole
    and spilling into the next row: rows narrower than a vector (several rows' spills
    reach the plane's end), planes whose end is a cache line (no gap after the last row),
    both column phases stored per pass; a spill past a plane would change the next
    plane, channel or image."""
    x, w_, b = rand(rng, 2, 5, h, w), rand(rng, 7, 5, 3, 3), rand(rng, 7)
    previous = conv_ext.set_algorithm(algorithm)
    try:
        got = F.ConvPlan(w_, b, stride=s, padding=1,
                         context=pyconv.ExecutionContext(num_threads=1)).run(x)
    finally:
        conv_ext.set_algorithm(previous)
    assert_close(got, R.conv_nd(x, w_, b, (s, s), (1, 1), (1, 1), (1, 1), 1), 5 * 9)


@pytest.mark.parametrize("nthreads", [2, 3])
@pytest.mark.parametrize("algorithm", ["shifted", "padded", "channels"])
@pytest.mark.parametrize("n,sp,s,d", [(1, (8, 8), 1, 2), (1, (9, 7), 2, 1), (2, (6, 10), 1, 1)])
def test_phase_copy_per_thread_matches_reference(rng, nthreads, algorithm, n, sp, s, d):
    """Small maps with many channels: each thread fills a whole copy of its own (the
    workspace holds one per thread) and its tiles read that one, whichever thread
    filled it. The shifted and channel tiles sum each output in one fixed order, so they
    match one thread bit for bit; padded im2col's column chunks depend on the threads
    (a narrow chunk's kernel sums in several chains), so it is compared within rounding."""
    x, w, b = rand(rng, n, 64, *sp), rand(rng, 96, 64, 3, 3), rand(rng, 96)
    previous = conv_ext.set_algorithm(algorithm)
    try:
        plan = F.ConvPlan(w, b, stride=s, padding=d, dilation=d,
                          context=pyconv.ExecutionContext(num_threads=nthreads))
        got = plan.run(x)
        one = F.ConvPlan(w, b, stride=s, padding=d, dilation=d,
                         context=pyconv.ExecutionContext(num_threads=1)).run(x)
    finally:
        conv_ext.set_algorithm(previous)
    assert_close(got, R.conv_nd(x, w, b, (s, s), (d, d), (d, d), (d, d), 1), 64 * 9)
    if algorithm == "padded":
        assert_close(got, one, 64 * 9)
    else:
        np.testing.assert_array_equal(got, one)


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("cin,cout,sp,k,s,pads,d,g", [
    (64, 96, (8, 8), (3, 3), 1, (2, 2, 2, 2), 2, 1),      # the classifier's last conv
    (16, 32, (4, 6), (3, 3), 1, (3, 1, 3, 1), 1, 1),      # rows 0 and 7 read padding only
    (8, 20, (7, 9), (5, 3), 2, (2, 1, 0, 1), (2, 1), 1),  # stride 2, asymmetric pads
    (32, 32, (9, 9), (3, 3), 2, (1, 1, 1, 1), 1, 4),      # groups of 8
    (12, 24, (1, 20), (1, 5), 1, (0, 2, 0, 2), 1, 1),     # one row: 1-D as 2-D
])
def test_channel_tiles_skip_the_padding_rows(rng, nthreads, cin, cout, sp, k, s, pads, d, g):
    """The channel tiles run each output row on the kernel rows that read inside the input
    (K ordered kernel row first, one run of it per row): an output row whose taps all fall
    in the padding is its bias alone, and every other row matches the reference."""
    x, w, b = rand(rng, 2, cin, *sp), rand(rng, cout, cin // g, *k), rand(rng, cout)
    previous = conv_ext.set_algorithm("channels")
    try:
        plan = F.ConvPlan(w, b, stride=s, padding=pads, dilation=d, groups=g,
                          context=pyconv.ExecutionContext(num_threads=nthreads))
        assert plan.reshape(x.shape).algorithm == "channels"
        got = plan.run(x)
    finally:
        conv_ext.set_algorithm(previous)
    ss, dd = (s, s) if isinstance(s, int) else s, (d, d) if isinstance(d, int) else d
    ref = R.conv_nd(x, w, b, ss, pads[:2], pads[2:], dd, g)
    assert_close(got, ref, cin // g * k[0] * k[1])
    if pads[0] >= k[0]:             # the first output row reads only padding
        first_row = got[:, :, 0]
        np.testing.assert_array_equal(first_row, np.broadcast_to(b[:, None], first_row.shape))


def test_batch_and_threads_give_identical_results(rng):
    x, w = rand(rng, 4, 16, 13, 11), rand(rng, 32, 16, 3, 3)
    outs = []
    previous = pyconv.get_num_threads()
    try:
        for t in (1, 2, 3):
            pyconv.set_num_threads(t)
            outs.append(F.conv2d(x, w, padding=1))
    finally:
        pyconv.set_num_threads(previous)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    # each sample alone equals its slice of the batch
    np.testing.assert_array_equal(F.conv2d(x[2:3], w, padding=1), outs[0][2:3])


@pytest.mark.parametrize("threads_", [3, 5])
@pytest.mark.parametrize("n,sp,s,d", [(1, (13, 11), 1, 1), (1, (17, 9), 2, 1),
                                      (2, (7, 12), 1, 2), (1, (3, 30), 3, 1)])
def test_phase_copy_bands_match_reference(algorithm, rng, threads_, n, sp, s, d):
    """The phase copy is filled in row bands, one per thread (ragged with 3 or 5 threads
    on these heights), before the tiles read it, rows of other bands included."""
    x, w, b = rand(rng, n, 6, *sp), rand(rng, 10, 6, 3, 3), rand(rng, 10)
    previous = pyconv.get_num_threads()
    try:
        pyconv.set_num_threads(threads_)
        got = F.conv2d(x, w, b, stride=s, padding=1, dilation=d)
    finally:
        pyconv.set_num_threads(previous)
    pb, pe = arithmetic.resolve_padding(1, 2)
    assert_close(got, R.conv_nd(x, w, b, (s, s), pb, pe, (d, d), 1), 6 * 9)


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("mode", ["same", "same_upper", "same_lower", "valid"])
def test_string_padding_modes(rng, stride, mode):
    x, w = rand(rng, 1, 3, 9, 8), rand(rng, 4, 3, 4, 3)
    got = F.conv2d(x, w, stride=stride, padding=mode)
    if mode != "valid":
        assert got.shape[2:] == (-(-9 // stride), -(-8 // stride))
    pb, pe = arithmetic.resolve_padding(mode, 2, (9, 8), (4, 3), stride)
    assert_close(got, R.conv_nd(x, w, None, stride, pb, pe, 1, 1), 36)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_same_padding_matches_onnxruntime(rng, auto_pad):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the reference here")
    from onnx import TensorProto, helper

    x, w = rand(rng, 1, 3, 10, 7), rand(rng, 5, 3, 4, 3)
    node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=auto_pad, strides=[2, 2])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": x})[0]
    got = F.conv2d(x, w, stride=2, padding=auto_pad.lower())
    assert_close(got, ref, 36)


@pytest.mark.parametrize("activation,params,fn", [
    ("relu", (0, 0), lambda v: np.maximum(v, 0)),
    ("clip", (0, 6), lambda v: np.clip(v, 0, 6)),
    ("hardswish", (0, 0), lambda v: v * np.clip(v / 6 + 0.5, 0, 1)),
    ("sigmoid", (0, 0), lambda v: 1 / (1 + np.exp(-v))),
])
@pytest.mark.parametrize("transposed,groups", [(False, 1), (False, 8), (True, 1), (True, 8)])
def test_fused_bias_residual_activation(rng, algorithm, activation, params, fn, transposed,
                                        groups):
    x, b = rand(rng, 2, 8, 9, 7), rand(rng, 16)
    if transposed:
        w = rand(rng, 8, 16 // groups, 3, 3)
        ref = R.conv_transpose_nd(x, w, b, 2, 1, 1, 1, groups, 1)
    else:
        w = rand(rng, 16, 8 // groups, 3, 3)
        ref = R.conv_nd(x, w, b, 2, 1, 1, 1, groups)
    residual = rand(rng, *ref.shape)
    plan = F.ConvPlan(w, b, stride=2, padding=1, groups=groups, transposed=transposed,
                      output_padding=1 if transposed else 0, activation=activation,
                      act_alpha=params[0], act_beta=params[1])
    got = plan.run(x, residual=residual)
    assert_close(got, fn(ref + residual), 72)
    np.testing.assert_array_equal(plan.run(x, residual=residual), got)   # plan reused


def test_algorithm_setting_is_checked():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        conv_ext.set_algorithm("winograd")
    assert conv_ext.get_algorithm() == "auto"


@pytest.mark.parametrize("shape,expected", [
    ((1, 64, 56, 56, 64, 3, 1, 1, 1), "shifted"),    # wide rows: 2 of 58 grid columns dropped
    ((1, 64, 8, 8, 96, 3, 1, 2, 2), "channels"),     # 8-wide rows: one tile each, no packing
    ((1, 64, 8, 8, 16, 3, 1, 2, 2), "channels"),     # one vector of channels, the grid 1.5x
    ((1, 32, 16, 16, 16, 3, 1, 1, 1), "shifted"),    # one vector, a grid as wide as the rows
    ((1, 2048, 7, 7, 96, 3, 1, 1, 1), "padded"),     # panels of 18K x NR weights: past L2
    ((1, 32, 16, 16, 64, 1, 1, 0, 1), "pointwise"),  # the image is the GEMM's B already
    ((1, 16, 32, 32, 16, 1, 2, 0, 1), "im2col"),     # strided 1x1: a copy of 4 phases to use 1
])
def test_auto_algorithm_choice(rng, shape, expected):
    n, cin, h, w, cout, k, s, p, d = shape
    plan = F.ConvPlan(rand(rng, cout, cin, k, k), None, stride=s, padding=p, dilation=d,
                      context=avx512_context())
    x = rand(rng, n, cin, h, w)
    assert_close(plan.run(x), R.conv_nd(x, plan.kernel.weight, None, s, p, p, d, 1), cin * k * k)
    assert plan.kernel.last_algorithm == expected


@pytest.mark.parametrize("cin,cout,size", [
    (256, 256, 14),     # ResNet-50's stage 3: a panel of 442 KiB on AVX-512
    (512, 512, 7),      # stage 4: 885 KiB
    (128, 32, 7),       # DenseNet-121's growth conv, one panel of two vectors
    (4096, 64, 7),      # 7 MiB on AVX-512 (2.4 on AVX2): past any L2
])
def test_channel_tiles_where_the_weight_panel_stays_in_l2(rng, cin, cout, size):
    """Every channel tile streams its panel of weights (K x NR floats): with AVX-512's
    48-channel panels, 3x3 convs on small maps take them where the panel fits 7/8 of a
    core's L2 (1.07-1.6x faster than the padded im2col or shifted tiles they took before
    at 1 thread), and not where it would come from beyond L2; AVX2's narrower tiles only
    for groups of at most 16 channels."""
    info = gemm.kernel_info()
    l2 = info["l2_bytes"] or 512 * 1024
    panel = cin * 9 * info["nr"] * 4
    plan = F.ConvPlan(rand(rng, cout, cin, 3, 3), None, padding=1,
                      context=pyconv.ExecutionContext(num_threads=1))
    algorithm = plan.reshape((1, cin, size, size)).algorithm
    expected = info["nr"] >= 48 and panel <= l2 // 8 * 7
    assert (algorithm == "channels") == expected, (algorithm, panel, l2, info["isa"])


@pytest.mark.parametrize("padding,expected", [(0, "padded"), (1, "shifted")])
def test_shifted_tiles_copied_out_weigh_on_small_k(rng, padding, expected):
    """At one thread a 3 -> 64 3x3 / 2 conv on 224x224 (K = 27) takes the shifted tiles
    where their rows are whole vectors of the output (112 wide: stored in place), and
    padded im2col where each tile goes through scratch (111 wide: a copy per row run
    costs about what its 27 multiply-adds do)."""
    w, x = rand(rng, 64, 3, 3, 3), rand(rng, 1, 3, 224, 224)
    plan = F.ConvPlan(w, None, stride=2, padding=padding,
                      context=pyconv.ExecutionContext(num_threads=1))
    assert plan.reshape(x.shape).algorithm == expected
    assert_close(plan.run(x), R.conv_nd(x, w, None, 2, padding, padding, 1, 1), 27)


# (batch, C_in, spatial, C_out, kernel, stride, pads, groups, whole window)
WHOLE_WINDOW_CASES = [
    (1, 64, (7, 7), 96, (7, 7), 1, 0, 1, True),       # VGG's head: a linear layer
    (3, 12, (5, 5), 10, (5, 5), 2, 0, 2, True),       # batch, groups, a stride
    (2, 8, (3, 4), 6, (3, 4), 1, 0, 1, True),         # rectangular
    (1, 6, (3, 3), 5, (5, 5), 1, 1, 1, True),         # the taps kept (the crop) cover it
    (2, 5, (9,), 7, (9,), 1, 0, 1, True),             # 1-D
    (1, 4, (2, 3, 3), 3, (2, 3, 3), 1, 0, 1, True),   # 3-D
    (1, 6, (3, 3), 5, (3, 3), 3, 1, 1, False),        # one position reading padding
    (1, 6, (7, 7), 5, (7, 7), 1, 1, 1, False),        # 3x3 positions
]


@pytest.mark.parametrize("case", WHOLE_WINDOW_CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_whole_window_conv_is_a_gemv(rng, case, threads):
    """A conv with one output position whose kept taps cover the input exactly is a GEMV
    on the unpacked weights ('gemv'), bias, residual and activation as the GEMM's
    epilogue applies them; other geometries keep the GEMM."""
    n, cin, sp, cout, k, s, p, groups, whole = case
    nd = len(sp)
    x = rand(rng, n, cin, *sp)
    w = rand(rng, cout, cin // groups, *k)
    b = rand(rng, cout)
    plan = F.ConvPlan(w, b, stride=s, padding=p, groups=groups, activation="relu",
                      context=pyconv.ExecutionContext(num_threads=threads))
    ref = R.conv_nd(x, w, b, (s,) * nd, (p,) * nd, (p,) * nd, (1,) * nd, groups)
    residual = rand(rng, *ref.shape)
    assert_close(plan.run(x), np.maximum(ref, 0), cin * np.prod(k))
    assert_close(plan.run(x, residual=residual), np.maximum(ref + residual, 0),
                 cin * np.prod(k))
    assert (plan.reshape(x.shape).algorithm == "gemv") == whole


def test_whole_window_conv_packs_no_weights(rng):
    """The GEMV reads the weights as given: no packed copy of them is made (VGG's head:
    411 MB), as the GEMM paths' packing would."""
    import tracemalloc
    x, w = rand(rng, 1, 128, 7, 7), rand(rng, 256, 128, 7, 7)        # 6.4 MB of weights
    tracemalloc.start()
    try:
        plan = F.ConvPlan(w, None)
        y = plan.run(x)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert plan.reshape(x.shape).algorithm == "gemv"
    assert held < w.nbytes // 4, held
    assert_close(y, R.conv_nd(x, w, None, (1, 1), (0, 0), (0, 0), (1, 1), 1), 128 * 49)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_adjoint_identity_random_geometry(data):
    """<conv(x), y> == <x, conv_transpose(y)>: the transposed conv is the adjoint."""
    nd = data.draw(st.integers(1, 3), label="dims")
    groups = data.draw(st.sampled_from([1, 2, 3]), label="groups")
    cin = groups * data.draw(st.integers(1, 3))
    cout = groups * data.draw(st.integers(1, 3))
    k = tuple(data.draw(st.integers(1, 3)) for _ in range(nd))
    s = tuple(data.draw(st.integers(1, 3)) for _ in range(nd))
    d = tuple(data.draw(st.integers(1, 2)) for _ in range(nd))
    pb = tuple(data.draw(st.integers(0, 2)) for _ in range(nd))
    pe = tuple(data.draw(st.integers(0, 2)) for _ in range(nd))
    sp = tuple(data.draw(st.integers((ki - 1) * di + 1, 8)) for ki, di in zip(k, d))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x, w = rand(rng, 2, cin, *sp), rand(rng, cout, cin // groups, *k)
    y = CONV[nd](x, w, stride=s, padding=pb + pe, dilation=d, groups=groups)
    assert y.shape == (2, cout) + arithmetic.conv_output_shape(sp, k, s, pb, pe, d)
    assert_close(y, R.conv_nd(x, w, None, s, pb, pe, d, groups), cin * np.prod(k))
    g = rand(rng, *y.shape)
    xt = CONV_T[nd](g, w, stride=s, padding=pb + pe, groups=groups, dilation=d,
                    output_size=sp)
    assert xt.shape == x.shape
    lhs = np.vdot(y.astype(np.float64), g)
    rhs = np.vdot(x.astype(np.float64), xt)
    assert abs(lhs - rhs) <= 1e-4 * (1 + np.abs(y).sum() * np.abs(g).max())


@pytest.mark.parametrize("sp,k,s,p,d,g", [((5, 4), (3, 3), 1, 1, 1, 1), ((7, 6), (3, 2), 2, 1, 1, 2),
                                          ((9,), (3,), 2, 0, 2, 1), ((3, 4, 3), (2, 2, 2), 1, 0, 1, 2)])
def test_conv_matrix(rng, sp, k, s, p, d, g):
    cin, cout = 2 * g, 3 * g
    w = rand(rng, cout, cin // g, *k)
    C = F.conv_matrix(w, (cin,) + sp, stride=s, padding=p, dilation=d, groups=g)
    x = rand(rng, 1, cin, *sp)
    y = CONV[len(sp)](x, w, stride=s, padding=p, dilation=d, groups=g)
    assert C.shape == (y.size, x.size)
    assert_close((C.astype(np.float64) @ x.ravel()).astype(np.float32), y.ravel(), 100)
    # Dumoulin & Visin: the transposed convolution is multiplication by C^T.
    gy = rand(rng, *y.shape)
    xt = CONV_T[len(sp)](gy, w, stride=s, padding=p, dilation=d, groups=g, output_size=sp)
    assert_close(xt.ravel(), C.T.astype(np.float64) @ gy.ravel(), 100)
    # and the matrix itself matches the naive reference column by column
    pb, pe = arithmetic.resolve_padding(p, len(sp))
    basis = np.eye(x.size, dtype=np.float32).reshape((x.size, cin) + sp)
    np.testing.assert_allclose(C, R.conv_nd(basis, w, None, s, pb, pe, d, g)
                               .reshape(x.size, -1).T, atol=1e-6)


def test_conv_matrix_size_limit():
    w = np.ones((64, 64, 3, 3), np.float32)
    with pytest.raises(InvalidArgument, match=r"conv_matrix: the matrix would be .* limit"):
        F.conv_matrix(w, (64, 64, 64), padding=1)


# --- torch cross-check (optional) ----------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_against_torch(rng, case):
    torch = pytest.importorskip("torch", reason="torch not installed: optional cross-check")
    n, cin, cout, sp, k, s, p, d, g = case
    if isinstance(p, tuple) and len(p) == 2 * len(sp):
        pytest.skip("torch conv has no per-side padding argument")
    nd = len(sp)
    x, w, b = rand(rng, n, cin, *sp), rand(rng, cout, cin // g, *k), rand(rng, cout)
    tconv = getattr(torch.nn.functional, f"conv{nd}d")
    ref = tconv(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), s, p, d, g)
    assert_close(CONV[nd](x, w, b, s, p, d, g), ref.double().numpy(), cin * np.prod(k))
    wt = rand(rng, cin, cout // g, *k)
    ss, ds = (arithmetic.normalize_tuple(v, nd, "v") for v in (s, d))
    op = tuple(min(a, c) - 1 for a, c in zip(ss, ds))
    tconvt = getattr(torch.nn.functional, f"conv_transpose{nd}d")
    ref = tconvt(torch.from_numpy(x), torch.from_numpy(wt), torch.from_numpy(b), s, p, op, g, d)
    assert_close(CONV_T[nd](x, wt, b, s, p, op, g, d), ref.double().numpy(), cin * np.prod(k))


# --- bad input ---------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors(rng):
    x, w = rand(rng, 1, 4, 9, 7), rand(rng, 8, 4, 3, 3)
    with pytest.raises(ShapeError, match=r"conv2d: input has 3 channels, the weight expects 4"):
        F.conv2d(x[:, :3], w)
    with pytest.raises(ShapeError, match=r"conv2d: input must be 4-D \(N, C_in, \*, \*\) or "
                                         r"unbatched 3-D .* got shape \(9, 7\)"):
        F.conv2d(x[0, 0], w)
    with pytest.raises(ShapeError, match=r"conv2d: weight must be 4-D"):
        F.conv2d(x, w[0])
    with pytest.raises(ShapeError, match=r"8 output channels, not divisible by groups=3"):
        F.conv2d(x, w, groups=3)
    with pytest.raises(InvalidDType, match=r"conv2d: input must be float32, got dtype float64"):
        F.conv2d(x.astype(np.float64), w)
    with pytest.raises(InvalidDType, match=r"conv2d: weight must be float32, got dtype int32"):
        F.conv2d(x, w.astype(np.int32))
    with pytest.raises(ShapeError, match=r"bias must have shape \(8,\), got \(4,\)"):
        F.conv2d(x, w, np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"larger than the padded input"):
        F.conv2d(x, rand(rng, 8, 4, 11, 3))
    with pytest.raises(InvalidArgument, match=r"stride"):
        F.conv2d(x, w, stride=0)
    with pytest.raises(InvalidArgument, match=r"padding"):
        F.conv2d(x, w, padding="full")
    with pytest.raises(InvalidArgument, match=r"padding"):
        F.conv2d(x, w, padding=-1)
    with pytest.raises(InvalidArgument, match=r"output_padding"):
        F.conv_transpose2d(x, rand(rng, 4, 2, 3, 3), stride=2, output_padding=2)
    with pytest.raises(InvalidArgument, match=r"output_padding is only for transposed"):
        F.ConvPlan(w, output_padding=1)


@pytest.mark.parametrize("threads_", [1, 2])
@pytest.mark.parametrize("kernel", [1, 3])
def test_conv_reads_denormals_as_zero_and_restores_the_callers_mode(rng, threads_, kernel):
    """Convolutions run with denormals as zero on every thread (a denormal operand costs a
    microcode assist per multiply-add); the caller's floating-point mode comes back."""
    x = np.zeros((1, 8, 12, 12), np.float32)
    x[0, ::2, 3:9, 2:10] = np.float32(1e-40)        # denormal: read as zero
    x[0, 1, 5, 5] = 1.0                             # normal values still count
    w = np.full((16, 8, kernel, kernel), 1e30, np.float32)
    previous = pyconv.get_num_threads()
    try:
        pyconv.set_num_threads(threads_)
        got = F.conv2d(x, w, padding=kernel // 2)
    finally:
        pyconv.set_num_threads(previous)
    pb, pe = arithmetic.resolve_padding(kernel // 2, 2)
    ref = R.conv_nd(flush_denormals(x), w, None, (1, 1), pb, pe, (1, 1), 1)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    # NumPy on this thread still produces denormals (flush-to-zero was not left on)
    assert np.float32(1e-38) * np.float32(0.01) != 0


# Channel tiles apply the bias and a relu / clip in registers (without a residual), the
# rest after the transposed store: either way the bits of the conv's plain sums followed
# by the activation (x < a ? a : x, as the element-wise engine computes it).
@pytest.mark.parametrize("activation,params", [("relu", (0.0, 0.0)), ("clip", (-0.5, 0.7))])
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
def test_channel_tiles_activation_bits(isa, rng, activation, params, with_residual):
    x, w, b = rand(rng, 1, 12, 6, 11), rand(rng, 40, 12, 3, 3), rand(rng, 40)
    residual = rand(rng, 1, 40, 6, 11) if with_residual else None
    previous = conv_ext.set_algorithm("channels")
    try:
        fused = F.ConvPlan(w, b, padding=1, activation=activation, act_alpha=params[0],
                           act_beta=params[1])
        plain = F.ConvPlan(w, b, padding=1)
        assert fused.reshape(x.shape).algorithm == "channels"
        got, sums = fused.run(x, residual=residual), plain.run(x, residual=residual)
    finally:
        conv_ext.set_algorithm(previous)
    lo, hi = (0.0, np.inf) if activation == "relu" else params
    want = np.where(sums < lo, np.float32(lo), sums)
    want = np.where(want > hi, np.float32(hi), want)
    np.testing.assert_array_equal(got, want)
