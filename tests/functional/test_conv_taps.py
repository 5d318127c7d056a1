"""Convolutions whose kernel taps read only padding (dilation past the map, wide padding):
those taps are dropped for the whole output (a smaller kernel) or per band of output rows
('banded'). Checked against the float64 reference of tests/reference.py and onnxruntime
on every ISA path and every algorithm setting."""
import math

import numpy as np
import pytest

from _helpers import assert_close, rand
import reference as R
import pyconv.functional as F
from pyconv import arithmetic
from pyconv._ext import conv as conv_ext

# (batch, C_in, C_out, spatial, kernel, stride, padding, dilation, groups)
CASES = [
    (1, 8, 6, (20, 20), (3, 3), 1, 12, 12, 1),       # ASPP: bands of 2, 1, 2 kernel rows
    (1, 8, 6, (20, 20), (3, 3), 1, 24, 24, 1),       # only the centre tap: a 1x1 conv
    (1, 8, 6, (20, 20), (3, 3), 1, 36, 36, 1),
    (2, 6, 4, (9, 13), (3, 3), 1, 6, 6, 2),          # grouped, rows and columns partly out
    (1, 5, 7, (7, 11), (3, 5), 2, (4, 6), (3, 4), 1),  # strided, some taps never in
    (1, 4, 4, (1, 1), (3, 3), 1, 1, 1, 1),           # 1x1 map: the centre tap only
    (1, 4, 4, (1, 1), (3, 3), 1, 1, 1, 4),           # same, depthwise
    (1, 4, 4, (2, 3), (3, 3), 1, 2, 2, 1),           # tiny map, d2
    (1, 3, 5, (40, 40), (3, 3), 1, 36, 36, 1),       # 40x40 at d36: every tap somewhere
    (1, 3, 5, (40, 40), (3, 3), 2, 18, 18, 1),
    (1, 6, 6, (7, 7), (5, 5), 1, 8, 4, 6),           # depthwise 5x5 past the map
    (1, 4, 6, (5, 8), (3, 3), 1, (5, 1, 0, 1), (3, 1), 1),  # asymmetric padding
    (1, 8, 8, (33,), (3,), 1, (16, 0), 8, 1),        # 1-D causal TCN, d8
    (2, 8, 8, (10,), (3,), 1, (16, 0), 8, 1),        # 1-D, left taps never in
    (1, 6, 6, (12,), (3,), 1, 11, 11, 2),            # 1-D, grouped, past the map
    (1, 3, 4, (4, 9, 8), (3, 3, 3), 1, 4, 4, 1),     # 3-D: depth taps out, rows in bands
    (1, 3, 4, (1, 9, 8), (3, 3, 3), 1, (1, 3, 3), (1, 3, 3), 1),   # 3-D, one depth tap
    (2, 4, 4, (5, 6, 7), (3, 3, 3), (1, 2, 1), 3, 3, 4),          # 3-D depthwise
]

ALGORITHMS = ["auto", "im2col", "shifted", "padded", "banded"]


def case_id(c):
    return (f"n{c[0]}-c{c[1]}-{c[2]}-sp{'x'.join(map(str, c[3]))}-k{'x'.join(map(str, c[4]))}"
            f"-s{c[5]}-p{c[6]}-d{c[7]}-g{c[8]}").replace(" ", "")


@pytest.fixture(params=ALGORITHMS)
def algorithm(request):
    previous = conv_ext.set_algorithm(request.param)
    yield request.param
    conv_ext.set_algorithm(previous)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_padding_taps_skipped_matches_reference(isa, threads, algorithm, rng, case):
    n, cin, cout, sp, k, s, p, d, g = case
    x, w, b = rand(rng, n, cin, *sp), rand(rng, cout, cin // g, *k), rand(rng, cout)
    pb, pe = arithmetic.resolve_padding(p, len(sp))
    ref = R.conv_nd(x, w, b, s, pb, pe, d, g)
    residual = rand(rng, *ref.shape)
    plan = F.ConvPlan(w, b, stride=s, padding=p, dilation=d, groups=g, activation="clip",
                      act_alpha=-0.5, act_beta=1.5)
    got = plan.run(x, residual=residual)
    assert_close(got, np.clip(ref + residual, -0.5, 1.5), cin * np.prod(k))
    np.testing.assert_array_equal(plan.run(x, residual=residual), got)    # plan reused
    # the one-shot functional call (a fresh plan) agrees
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(sp)]
    assert_close(conv(x, w, b, stride=s, padding=p, dilation=d, groups=g), ref,
                 cin * np.prod(k))


def test_every_dilation_and_map_size(rng):
    """Dilations 1..36 on maps 1..40 with 'same' padding (the ASPP pattern), dense and
    grouped, against the reference."""
    for size in (1, 2, 5, 8, 13, 20, 40):
        for d in (1, 2, 3, 5, 8, 12, 19, 24, 36):
            for g in (1, 2):
                x, w = rand(rng, 1, 4, size, size + 1), rand(rng, 6, 4 // g, 3, 3)
                got = F.conv2d(x, w, padding=d, dilation=d, groups=g)
                assert_close(got, R.conv_nd(x, w, None, 1, d, d, d, g), 36)


@pytest.mark.parametrize("dilation,expected", [(24, "pointwise"), (36, "pointwise"),
                                                (12, "banded")])
def test_aspp_plans_skip_padding_taps(rng, dilation, expected):
    x, w = rand(rng, 1, 32, 20, 20), rand(rng, 16, 32, 3, 3)
    plan = F.ConvPlan(w, None, padding=dilation, dilation=dilation)
    assert_close(plan.run(x), R.conv_nd(x, w, None, 1, dilation, dilation, dilation, 1), 288)
    assert plan.kernel.last_algorithm == expected
    if expected == "banded":      # rows and columns: interior, 4 edges, 4 corners
        assert plan.kernel.last_bands == tuple((r, c) for r in ((0, 8), (8, 12), (12, 20))
                                               for c in ((0, 8), (8, 12), (12, 20)))


def test_tcn_1d_takes_phase_copy_path(rng):
    """Causal 1-D convs (left padding (k-1)*d) run on the phase-copy or banded paths."""
    x, w = rand(rng, 1, 64, 400), rand(rng, 64, 64, 3)
    for d in (1, 2, 4, 8):
        plan = F.ConvPlan(w, None, padding=(2 * d, 0), dilation=d)
        assert_close(plan.run(x), R.conv_nd(x, w, None, 1, 2 * d, 0, d, 1), 192)
        assert plan.kernel.last_algorithm in ("shifted", "padded", "banded")


@pytest.mark.parametrize("dilation", [6, 12, 24, 36])
def test_aspp_matches_onnxruntime(rng, dilation):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the reference here")
    from onnx import TensorProto, helper

    import pyconv

    x, w, b = rand(rng, 1, 16, 20, 20), rand(rng, 8, 16, 3, 3), rand(rng, 8)
    node = helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[dilation] * 4,
                            dilations=[dilation] * 2)
    relu = helper.make_node("Relu", ["c"], ["y"])
    graph = helper.make_graph(
        [node, relu], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel()),
         helper.make_tensor("b", TensorProto.FLOAT, b.shape, b.ravel())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    data = model.SerializeToString()
    ref = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = pyconv.InferenceSession(data).run(None, {"x": x})[0]
    assert_close(got, ref, 144)


def test_crop_and_bands_are_frozen_in_the_reshape(rng):
    """The tap crop and the bands are decided by ConvPlan.reshape and kept by the
    ConvReshape: reshapes of other shapes (other crops, other paths) made and run in
    between change neither its algorithm, its bands nor its results; last_algorithm and
    last_bands follow the reshape last run."""
    w, b = rand(rng, 16, 32, 3, 3), rand(rng, 16)
    plan = F.ConvPlan(w, b, padding=12, dilation=12)
    edges = ((0, 8), (8, 12), (12, 20))
    boxes = tuple((r, c) for r in edges for c in edges)
    banded = plan.reshape((1, 32, 20, 20))
    assert banded.algorithm == "banded" and banded.bands == boxes
    assert plan.kernel.last_algorithm is None and plan.kernel.last_bands == ()
    x20, x8, x12 = rand(rng, 1, 32, 20, 20), rand(rng, 2, 32, 8, 8), rand(rng, 1, 32, 12, 12)
    ref20 = R.conv_nd(x20, w, b, 1, 12, 12, 12, 1)
    got = plan.run(x20)
    assert_close(got, ref20, 288)
    assert plan.kernel.last_algorithm == "banded" and plan.kernel.last_bands == boxes
    # 8x8 at d12: only the centre tap reads the map (a pointwise crop); 12x12: other crops
    for x in (x8, x12):
        r = plan.reshape(x.shape)
        assert r.bands == () or r.algorithm == "banded"
        assert_close(plan.run(x), R.conv_nd(x, w, b, 1, 12, 12, 12, 1), 288)
        assert plan.kernel.last_algorithm == r.algorithm
        assert plan.kernel.last_bands == r.bands
    assert plan.reshape(x8.shape).algorithm == "pointwise"
    assert plan.reshape(x20.shape) is banded and banded.bands == boxes
    np.testing.assert_array_equal(plan.run(x20), got)       # the same frozen plan, same bits
    assert plan.kernel.last_bands == boxes
    # a bound call uses the reshape as is, and is not a run (last_* unchanged)
    out = np.empty(banded.output_shape, np.float32)
    plan.run(x8)
    call = plan.bind(x20.shape, out)
    assert call(x20) is out
    np.testing.assert_array_equal(out, got)
    assert plan.kernel.last_algorithm == "pointwise" and plan.kernel.last_bands == ()


@pytest.mark.parametrize("activation", ["gelu", "mish", "tanh", "sigmoid", "silu", "elu"])
@pytest.mark.parametrize("path", ["channels", "rows"])
def test_depthwise_fused_activation_is_the_engines(isa, rng, path, activation):
    """Small-map depthwise, by channels or rows: a fused activation gives the bits of the
    element-wise engine's standalone op on the unfused result (both run the shared vector
    functions), and agrees with the float64 reference."""
    from pyconv._ext import eltwise

    previous = conv_ext.set_depthwise_channels_max_width(1000 if path == "channels" else 0)
    try:
        x, w, b = rand(rng, 1, 37, 7, 7), rand(rng, 37, 1, 5, 5), rand(rng, 37)
        residual = rand(rng, 1, 37, 7, 7)
        alpha = 0.7 if activation == "elu" else 0.0
        fused = F.ConvPlan(w, b, padding=2, groups=37, activation=activation, act_alpha=alpha)
        plain = fused.with_activation(None)
        assert fused.reshape(x.shape).algorithm == "depthwise"
        got = fused.run(x, residual=residual)
        want = eltwise.unary(plain.run(x, residual=residual), activation, alpha)
        np.testing.assert_array_equal(got, want)
        ref = R.conv_nd(x, w, b, 1, 2, 2, 1, 37).astype(np.float64) + residual
        ref = {"gelu": lambda v: np.array([0.5 * t * (1 + math.erf(t / math.sqrt(2)))
                                           for t in v.ravel()]).reshape(v.shape),
               "mish": lambda v: v * np.tanh(np.log1p(np.exp(v))),
               "tanh": np.tanh, "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
               "silu": lambda v: v / (1 + np.exp(-v)),
               "elu": lambda v: np.where(v < 0, alpha * np.expm1(v), v)}[activation](ref)
        assert_close(got, ref, 25)
    finally:
        conv_ext.set_depthwise_channels_max_width(previous)
