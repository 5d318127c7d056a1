"""SGEMM engine against NumPy: tile edges, cache-block edges, strides, epilogues, ISAs."""
import os
import subprocess
import sys

import numpy as np
import pytest

import reference as R
from _helpers import flush_denormals
import pyconv
import pyconv.functional as F
from pyconv._ext import conv as conv_ext
from pyconv._ext import gemm
from pyconv.errors import InvalidArgument, InvalidDType, ShapeError, UnsupportedISA

EPS32 = np.finfo(np.float32).eps


def assert_gemm_close(c, a, b, extra=None):
    """Checks c against the float64 product with the standard bound |err| <= ~k*eps*|a||b|."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref = a64 @ b64 if extra is None else extra(a64 @ b64)
    k = a.shape[1]
    bound = (k + 4) * EPS32 * (np.abs(a64) @ np.abs(b64)) + 4 * EPS32 * np.abs(ref) + 1e-30
    err = np.abs(c.astype(np.float64) - ref)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else None
    assert c.dtype == np.float32 and c.shape == ref.shape
    assert np.all(err <= bound), f"worst at {worst}: got {c[worst]}, expected {ref[worst]}"


def edge_sizes():
    """Sizes around the register tile and the cache blocks of the kernel in use."""
    info = gemm.kernel_info()
    mr, nr, kc = info["mr"], info["nr"], info["kc"]
    return sorted({1, 2, mr - 1, mr, mr + 1, nr - 1, nr + 1, kc - 1, kc + 1, 97, 257})


def random(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("dim", ["m", "n", "k"])
def test_each_dimension_over_edge_sizes(isa, threads, rng, dim):
    for size in edge_sizes():
        m, n, k = (size if dim == d else 37 for d in "mnk")
        a, b = random(rng, (m, k)), random(rng, (k, n))
        assert_gemm_close(pyconv.matmul(a, b), a, b)


def test_mixed_edge_sizes(isa, threads, rng):
    sizes = edge_sizes()
    picks = rng.choice(len(sizes), size=(12, 3))
    for i, j, l in picks:
        m, n, k = sizes[i], sizes[j], sizes[l]
        a, b = random(rng, (m, k)), random(rng, (k, n))
        assert_gemm_close(pyconv.matmul(a, b), a, b)


@pytest.mark.parametrize("m,k,n", [(1031, 300, 77), (64, 1100, 515), (130, 2, 1200),
                                   (1000, 512, 1), (1, 512, 1000), (1, 1, 1)])
def test_large_and_skinny(isa, threads, rng, m, k, n):
    a, b = random(rng, (m, k)), random(rng, (k, n))
    assert_gemm_close(pyconv.matmul(a, b), a, b)


@pytest.mark.parametrize("k", [7, 263])
def test_partial_tiles_of_every_width(isa, rng, k):
    """Every column count of a partial tile (each vector count of the edge kernels, and
    the narrow AVX-512 tiles of 1-7 columns with their interleaved k chains and tails),
    with a full and a one-row panel, after a full tile and alone, over one and over two K
    blocks, accumulated onto C (beta) and not."""
    info = gemm.kernel_info()
    mr, nr = info["mr"], info["nr"]
    for n in [*range(1, nr + 1), nr + 1, nr + 5]:
        a, b, c0 = random(rng, (mr + 1, k)), random(rng, (k, n)), random(rng, (mr + 1, n))
        assert_gemm_close(pyconv.matmul(a, b), a, b)
        out = c0.copy()
        gemm.sgemm(a, b, out, beta=0.5)
        bound = (k + 4) * EPS32 * (np.abs(a).astype(np.float64) @ np.abs(b) + np.abs(c0))
        assert np.all(np.abs(out - (a.astype(np.float64) @ b + 0.5 * c0)) <= bound + 1e-6)


def test_shifted_tiles_of_every_width(isa, rng):
    """The convolution's shifted-B kernel on last column chunks of every width: a 1-D conv
    over w columns computes a grid of w + 2 (kernel 3, padding 1)."""
    nr = gemm.kernel_info()["nr"]
    previous = conv_ext.set_algorithm("shifted")
    try:
        for w in range(1, nr + 3):
            x, wt, bias = random(rng, (1, 5, w)), random(rng, (11, 5, 3)), random(rng, 11)
            got = F.conv1d(x, wt, bias, padding=1)
            np.testing.assert_allclose(got, R.conv_nd(x, wt, bias, 1, 1, 1), rtol=1e-4,
                                       atol=1e-4)
    finally:
        conv_ext.set_algorithm(previous)


def test_transposed_strided_and_negative_stride_views(isa, threads, rng):
    base_a = random(rng, (90, 140))
    base_b = random(rng, (150, 120))
    views = [
        (base_a[:50, :70], base_b[:70, :61]),             # row-major slices
        (base_a.T[:70, :50].T, base_b.T[:61, :70].T),     # column-major (transposed) views
        (base_a[::2, ::2][:40, :60], base_b[::2, 1::2][:60, :50]),  # non-unit strides
        (base_a[::-1, ::-1][:33, :20], base_b[::-3][:20, :99]),     # negative strides
        (np.broadcast_to(base_a[:1, :30], (17, 30)), base_b[:30, :9]),  # zero stride
    ]
    for a, b in views:
        assert_gemm_close(pyconv.matmul(a, b), a, b)
        assert_gemm_close(pyconv.matmul(b.T, a.T), b.T, a.T)


def test_unaligned_float32_view(rng):
    raw = np.zeros(4 * 6 * 5 + 1, dtype=np.uint8)[1:].view(np.float32).reshape(6, 5)
    raw[:] = random(rng, (6, 5))
    b = random(rng, (5, 3))
    assert_gemm_close(pyconv.matmul(raw, b), raw, b)


def numpy_activation(name, x, p0=0.0, p1=0.0):
    with np.errstate(over="ignore"):
        return {
            "relu": lambda: np.maximum(x, 0),
            "clip": lambda: np.clip(x, p0, p1),
            "leaky_relu": lambda: np.where(x >= 0, x, p0 * x),
            "sigmoid": lambda: 1 / (1 + np.exp(-x)),
            "hardsigmoid": lambda: np.clip(p0 * x + p1, 0, 1),
            "hardswish": lambda: x * np.clip(x / 6 + 0.5, 0, 1),
            "tanh": lambda: np.tanh(x),
            "silu": lambda: x / (1 + np.exp(-x)),
            "elu": lambda: np.where(x >= 0, x, p0 * np.expm1(x)),
        }.get(name, lambda: R.unary(name, x, p0, p1))()


ACT_PARAMS = {"clip": (0.0, 6.0), "leaky_relu": (0.1, 0.0), "hardsigmoid": (0.2, 0.5),
              "elu": (1.0, 0.0), "selu": (1.6732632, 1.0507010)}


@pytest.mark.parametrize("activation", sorted(set(gemm.ACTIVATIONS) - {"none"}))
@pytest.mark.parametrize("m,k,n", [(13, 300, 50), (64, 70, 97)])
def test_fused_epilogue(isa, threads, rng, activation, m, k, n):
    a, b = random(rng, (m, k)), random(rng, (k, n))
    bias, residual = random(rng, m), random(rng, (m, n))
    p0, p1 = ACT_PARAMS.get(activation, (0.0, 0.0))
    c = gemm.sgemm(a, b, bias=bias, residual=residual, activation=activation,
                   act_alpha=p0, act_beta=p1)
    ref = numpy_activation(activation, a.astype(np.float64) @ b + bias[:, None] + residual,
                           p0, p1)
    np.testing.assert_allclose(c, ref, rtol=2e-4, atol=2e-4 * np.sqrt(k))


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (2.5, 0.0), (1.0, 1.0), (-0.5, 0.75)])
@pytest.mark.parametrize("k", [5, 300, 600])
def test_alpha_beta_accumulate(isa, threads, rng, alpha, beta, k):
    m, n = 21, 53
    a, b, c0 = random(rng, (m, k)), random(rng, (k, n)), random(rng, (m, n))
    out = c0.copy()
    res = gemm.sgemm(a, b, out, alpha=alpha, beta=beta)
    assert res is out
    ref = alpha * (a.astype(np.float64) @ b) + beta * c0
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.sqrt(k))


def test_beta_zero_never_reads_output(isa, rng):
    a, b = random(rng, (9, 20)), random(rng, (20, 50))
    out = np.full((9, 50), np.nan, dtype=np.float32)
    gemm.sgemm(a, b, out, beta=0.0)
    assert_gemm_close(out, a, b)


def test_empty_inner_dimension_gives_zeros_and_epilogue(isa):
    a, b = np.zeros((4, 0), np.float32), np.zeros((0, 3), np.float32)
    np.testing.assert_array_equal(pyconv.matmul(a, b), np.zeros((4, 3)))
    bias = np.arange(4, dtype=np.float32) - 1
    np.testing.assert_array_equal(gemm.sgemm(a, b, bias=bias, activation="relu"),
                                  np.maximum(bias, 0)[:, None].repeat(3, axis=1))
    assert pyconv.matmul(np.zeros((0, 5), np.float32), np.zeros((5, 2), np.float32)).shape == (0, 2)


def test_packed_matrix_is_reused_and_keeps_its_isa(rng):
    a = random(rng, (40, 70))
    packed = gemm.PackedMatrix(a)
    for _ in range(2):
        b = random(rng, (70, 33))
        assert_gemm_close(gemm.sgemm(packed, b), a, b)
    previous = pyconv.get_isa()
    try:
        pyconv.set_isa("generic")
        b = random(rng, (70, 33))
        assert_gemm_close(gemm.sgemm(packed, b), a, b)   # still uses the kernel it was packed for
        assert packed.isa == previous
    finally:
        pyconv.set_isa(previous)


def test_nan_and_inf_propagate(isa):
    a = np.ones((9, 4), np.float32)
    b = np.ones((4, 50), np.float32)
    a[3, 2] = np.nan
    b[1, 7] = np.inf
    c = pyconv.matmul(a, b)
    ref = a.astype(np.float64) @ b
    np.testing.assert_array_equal(np.isnan(c), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(c), np.isinf(ref))


def test_results_do_not_depend_on_thread_count(rng):
    a, b = random(rng, (200, 300)), random(rng, (300, 150))
    previous = pyconv.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            pyconv.set_num_threads(n)
            outs.append(pyconv.matmul(a, b))
    finally:
        pyconv.set_num_threads(previous)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


# --- bad input ---------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    f32 = np.ones((3, 4), np.float32)
    with pytest.raises(ShapeError, match=r"inner dimensions differ.*\(3, 4\).*\(3, 4\)"):
        pyconv.matmul(f32, f32)
    # numpy.matmul semantics beyond 2-D: a 1-D a is a row, batch dims must broadcast.
    with pytest.raises(ShapeError, match=r"inner dimensions differ: a has shape \(4,\), b "
                                         r"has shape \(3, 4\)"):
        pyconv.matmul(np.ones(4, np.float32), f32)
    with pytest.raises(ShapeError, match=r"batch dims of a \(2, 3, 4\) and b \(3, 4, 3\)"):
        pyconv.matmul(np.ones((2, 3, 4), np.float32), np.ones((3, 4, 3), np.float32))
    with pytest.raises(ShapeError, match=r"at least one dim, got shapes \(\) and \(3, 4\)"):
        pyconv.matmul(np.float32(1), f32)
    with pytest.raises(InvalidDType, match=r"a must be float32, got dtype float64"):
        pyconv.matmul(np.ones((3, 4)), f32.T)
    with pytest.raises(InvalidDType, match=r"b must be float32, got dtype int64"):
        pyconv.matmul(f32, np.ones((4, 2), np.int64))
    with pytest.raises(TypeError):              # InvalidDType is a TypeError too
        pyconv.matmul(f32.astype(np.float16), f32.T)
    with pytest.raises(ValueError):             # ShapeError is a ValueError too
        pyconv.matmul(f32, f32)


def test_sgemm_bad_epilogue_arguments(rng):
    a, b = random(rng, (3, 4)), random(rng, (4, 5))
    with pytest.raises(ShapeError, match=r"bias: expected shape \(3,\), got \(5,\)"):
        gemm.sgemm(a, b, bias=np.ones(5, np.float32))
    with pytest.raises(ShapeError, match=r"residual has shape \(5, 3\), expected \(3, 5\)"):
        gemm.sgemm(a, b, residual=np.ones((5, 3), np.float32))
    with pytest.raises(InvalidArgument, match=r"activation: unknown 'swish2'"):
        gemm.sgemm(a, b, activation="swish2")
    with pytest.raises(InvalidArgument, match=r"out must be .* shape \(3, 5\)"):
        gemm.sgemm(a, b, np.empty((5, 3), np.float32))
    with pytest.raises(InvalidArgument, match=r"beta != 0 needs an `out`"):
        gemm.sgemm(a, b, beta=1.0)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None, 2**31, 10**30,
                                 "max_threads() + 1"])
def test_set_num_threads_rejects_bad_values(bad):
    if bad == "max_threads() + 1":
        bad = gemm.max_threads() + 1
    previous = pyconv.get_num_threads()
    with pytest.raises(InvalidArgument, match="set_num_threads: expected an integer from 1 to "
                                              f"{gemm.max_threads()}"):
        pyconv.set_num_threads(bad)
    assert pyconv.get_num_threads() == previous


def test_thread_cap_is_accepted_and_computes():
    previous = pyconv.get_num_threads()
    try:
        pyconv.set_num_threads(gemm.max_threads())
        a = np.random.default_rng(0).random((64, 300), dtype=np.float32)
        np.testing.assert_allclose(pyconv.matmul(a, a.T), a @ a.T, rtol=1e-4, atol=1e-4)
    finally:
        pyconv.set_num_threads(previous)


def test_set_isa_rejects_unknown_and_unsupported():
    with pytest.raises(InvalidArgument, match=r"unknown ISA 'sse9'"):
        pyconv.set_isa("sse9")
    missing = [i for i in ("avx512", "avx2") if i not in pyconv.supported_isas()]
    for name in missing:
        with pytest.raises(UnsupportedISA, match=f"ISA '{name}' was requested but this CPU"):
            pyconv.set_isa(name)


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


@pytest.mark.parametrize("name", pyconv.supported_isas())
def test_pyconv_isa_environment_variable_forces_a_path(name):
    r = run_python("import pyconv; print(pyconv.get_isa())", PYCONV_ISA=name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == name


def test_pyconv_isa_environment_variable_error_is_clear():
    r = run_python("import pyconv", PYCONV_ISA="sse9")
    assert r.returncode != 0
    assert "PYCONV_ISA='sse9'" in r.stderr and "unknown ISA" in r.stderr


def test_omp_num_threads_sets_the_default():
    r = run_python("import pyconv; print(pyconv.get_num_threads())", OMP_NUM_THREADS="3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("3" if gemm.parallel_backend() != "serial" else "1")


def test_show_config_reports_isa_threads_openmp_and_blocking(capsys):
    pyconv.show_config()
    out = capsys.readouterr().out
    info = gemm.kernel_info()
    assert f"ISA path      : {pyconv.get_isa()}" in out
    assert info["ukernel"] in out
    assert f"KC={info['kc']}" in out and f"NC={info['nc']}" in out
    assert f"threads       : {pyconv.get_num_threads()}" in out
    assert f"threading     : {gemm.parallel_backend()} (" in out


def test_measured_peak_is_plausible():
    peak = gemm.measure_peak_gflops(threads=1, seconds=0.05)
    # An FMA loop on any CPU this runs on: above 0.5 GFLOP/s, below 1 TFLOP/s per core.
    assert 0.5 < peak < 1000


@pytest.mark.parametrize("m,k,n", [(256, 70, 97), (600, 40, 30), (30, 40, 700)])
def test_threads_cover_every_tile_repeatedly(isa, rng, m, k, n):
    """Each OpenMP thread must compute its own block of C: a race on the block bounds once
    left tiles unwritten. NaN-filled outputs make any unwritten tile visible."""
    previous = pyconv.get_num_threads()
    pyconv.set_num_threads(2)
    try:
        a, b = random(rng, (m, k)), random(rng, (k, n))
        ref = a.astype(np.float64) @ b
        for _ in range(50):
            out = np.full((m, n), np.nan, dtype=np.float32)
            gemm.sgemm(a, b, out)
            np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.sqrt(k))
    finally:
        pyconv.set_num_threads(previous)


@pytest.mark.parametrize("name", sorted(gemm.ACTIVATIONS))
@pytest.mark.parametrize("width", [1, 7, 10, 35, 48, 53])
def test_epilogue_adds_in_order_then_activates_like_the_engine(isa, rng, name, width):
    """The GEMM epilogue's one pass gives the bits of (acc + bias) + residual followed by
    the standalone activation, tails included (rows narrower than a tile lie end to end and
    run as one run of floats, the bias changing inside a vector), denormals flushed (a
    conv's mode). A 1x1 conv with identity weights makes acc the input exactly."""
    from pyconv._ext import eltwise
    c = 11
    a, b = {"clip": (-1.5, 2.5), "leaky_relu": (0.1, 0.0), "hardsigmoid": (0.2, 0.5),
            "elu": (1.0, 0.0), "selu": (1.67, 1.05)}.get(name, (0.0, 0.0))
    x = (rng.standard_normal((1, c, 1, width)) * 4).astype(np.float32)
    eye = np.eye(c, dtype=np.float32).reshape(c, c, 1, 1)
    bias = (rng.standard_normal(c) * 2).astype(np.float32)
    residual = (rng.standard_normal(x.shape) * 2).astype(np.float32)
    act = None if name == "none" else name
    unary = (lambda v: v) if act is None else (lambda v: eltwise.unary(v, name, a, b))
    plan = F.ConvPlan(eye, bias, activation=act, act_alpha=a, act_beta=b)
    np.testing.assert_array_equal(plan.run(x, residual),
                                  flush_denormals(unary((x + bias[:, None, None]) + residual)))
    plain = F.ConvPlan(eye, None, activation=act, act_alpha=a, act_beta=b)
    np.testing.assert_array_equal(plain.run(x), flush_denormals(unary(x)))


@pytest.mark.parametrize("shape", [(2, 5, 3, 7), (1, 3), (1, 40, 4, 4), (2, 3, 130, 131)],
                         ids=str)
@pytest.mark.parametrize("name", ["none", "relu", "silu", "clip"])
def test_channel_affine_is_product_sum_then_activation(isa, threads, rng, shape, name):
    """BatchNormalization's and ChannelAffine's kernel: the bits of x * scale, + shift,
    then the standalone activation, per channel of axis 1; the large map splits over
    threads."""
    from pyconv._ext import eltwise
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    scale = rng.standard_normal(shape[1]).astype(np.float32)
    shift = rng.standard_normal(shape[1]).astype(np.float32)
    a, b = (-1.0, 2.0) if name == "clip" else (0.0, 0.0)
    bshape = (1, shape[1]) + (1,) * (len(shape) - 2)
    want = x * scale.reshape(bshape) + shift.reshape(bshape)
    if name != "none":
        want = eltwise.unary(want, name, a, b)
    out = np.empty_like(x)
    x.flags.writeable = False      # a session's feed or constant
    got = gemm.channel_affine(x, scale, shift, None if name == "none" else name, a, b,
                              out=out)
    assert got is out
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ShapeError, match="channel_affine"):
        gemm.channel_affine(x, scale[:-1], shift, out=out)
