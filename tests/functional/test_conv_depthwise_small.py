"""Depthwise convolutions on small maps, which run several channels per call
(dwconv_channels: channels interleaved across vector lanes, tiles of up to 8 output
pixels of the flattened grid with only the taps that read the input), against the
float64 reference on every ISA path, with the path forced on and off."""
import numpy as np
import pytest

from _helpers import assert_close, rand
import reference as R
import pyconv.functional as F
from pyconv import arithmetic
from pyconv._ext import conv as conv_ext

# (batch, channels, spatial, kernel, stride, padding, dilation)
CASES = [
    (1, 37, (7, 7), (5, 5), 1, 2, 1),        # MobileNetV3's 5x5 on 7x7, a partial lane block
    (2, 16, (7, 7), (3, 3), 1, 1, 1),
    (1, 20, (14, 14), (5, 5), 2, 2, 1),      # stride 2: 7x7 out
    (1, 9, (14, 13), (3, 3), 2, 1, 1),
    (1, 5, (7, 7), (7, 7), 1, 3, 1),
    (1, 3, (1, 1), (3, 3), 1, 1, 1),         # 1x1 map
    (1, 17, (5, 6), (3, 3), 1, 2, 2),        # dilated
    (1, 4, (6, 5), (3, 5), (1, 2), (0, 2, 1, 1), (2, 1)),   # asymmetric everything
    (1, 8, (9, 9), (3, 3), 3, 0, 1),         # stride 3, no padding
    (1, 6, (4, 8), (5, 5), 1, 8, 3),         # taps cropped: negative window padding
    (1, 7, (6, 6), (3, 3), 1, 1, 1),         # tiles of 7 pixels wrapping rows
    (2, 33, (10, 10), (9, 9), 1, 4, 1),      # MixNet's 9x9: tiles of 5, 3 lane blocks
    (1, 20, (10, 10), (5, 5), 1, 4, 2),      # LR-ASPP's dilated 5x5
    (1, 18, (20, 20), (7, 7), 2, 3, 1),      # 7x7 stride 2
    (1, 17, (11, 13), (7, 7), 1, 3, 1),      # odd sizes: 13-wide rows, tiles of 7 and 6
    (1, 6, (2, 2), (3, 3), 1, 3, 1),         # outputs on padding only: tiles of no taps
    (1, 19, (13, 12), (3, 3), (3, 2), 2, 2),  # strides 3 and 2, dilation 2, tiles wrapping
    (1, 16, (32, 32), (7, 7), 1, 3, 1),      # ConvNeXt's 7x7 on the widest channels map
]


def case_id(c):
    return f"n{c[0]}-c{c[1]}-sp{'x'.join(map(str, c[2]))}-k{'x'.join(map(str, c[3]))}-s{c[4]}"


@pytest.fixture(params=["channels", "rows"])
def path(request):
    previous = conv_ext.set_depthwise_channels_max_width(1000 if request.param == "channels"
                                                         else 0)
    yield request.param
    conv_ext.set_depthwise_channels_max_width(previous)


ACTIVATIONS = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0),
               "clip": lambda v: np.clip(v, -0.5, 0.75),       # relu and clip: in-kernel
               "hardswish": lambda v: v * np.clip(v / 6 + 0.5, 0, 1)}


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_small_depthwise_matches_reference(isa, threads, path, rng, case, activation):
    n, c, sp, k, s, p, d = case
    x, w, b = rand(rng, n, c, *sp), rand(rng, c, 1, *k), rand(rng, c)
    pb, pe = arithmetic.resolve_padding(p, 2)
    ref = R.conv_nd(x, w, b, s, pb, pe, d, c)
    residual = rand(rng, *ref.shape)
    bounds = (-0.5, 0.75) if activation == "clip" else (0.0, 0.0)
    plan = F.ConvPlan(w, b, stride=s, padding=p, dilation=d, groups=c, activation=activation,
                      act_alpha=bounds[0], act_beta=bounds[1])
    act = ACTIVATIONS[activation]
    assert_close(plan.run(x, residual=residual), act(ref + residual), np.prod(k))
    assert_close(plan.run(x), act(ref), np.prod(k))
    assert plan.kernel.last_algorithm == "depthwise"


def test_channels_setting_returns_previous():
    previous = conv_ext.set_depthwise_channels_max_width(3)
    try:
        assert conv_ext.set_depthwise_channels_max_width(5) == 3
    finally:
        conv_ext.set_depthwise_channels_max_width(previous)


@pytest.mark.parametrize("stride", [(2, 1, 1), (3, 2, 1), (1, 1, 1)])
@pytest.mark.parametrize("depth_pads", [(1, 0), (0, 1), (2, 2)])
def test_depth_padding_of_a_one_plane_input_is_read_as_padding(stride, depth_pads):
    """A 3-D depthwise conv of a one-plane input whose depth padding puts the output
    plane on padding (found by the adjoint property test): the channels path reads
    plane 0 whatever the padding, so it is taken only without depth padding."""
    rng = np.random.default_rng(5)
    x = rand(rng, 2, 8, 1, 3, 3)
    w = rand(rng, 8, 1, 1, 3, 3)
    b = rand(rng, 8)
    pads = (depth_pads[0], 1, 1, depth_pads[1], 1, 1)
    y = F.conv3d(x, w, b, stride=stride, padding=pads, groups=8)
    assert_close(y, R.conv_nd(x, w, b, stride, pads[:3], pads[3:], 1, 8), 9)
