"""Arrays at odd byte offsets (legal NumPy views) must give the same answers as aligned
copies: the kernels load whole floats, so such views are copied, never misread."""
import numpy as np
import pytest

import pyconv.functional as F


def misaligned(a):
    """The same values in a float32 array whose data starts one byte past alignment."""
    raw = np.zeros(a.nbytes + 1, dtype=np.uint8)[1:].view(a.dtype).reshape(a.shape)
    raw[...] = a
    assert not raw.flags.aligned
    return raw


CASES = {
    "conv2d": lambda x, w: F.conv2d(x, w, padding=1),
    "conv2d_depthwise": lambda x, w: F.conv2d(x, np.ascontiguousarray(w[:, :1]), groups=4),
    "conv_transpose2d": lambda x, w: F.conv_transpose2d(x, w, stride=2),
    "max_pool2d": lambda x, w: F.max_pool2d(x, 3, stride=2, padding=1),
    "avg_pool2d": lambda x, w: F.avg_pool2d(x, 2),
    "adaptive_avg_pool2d": lambda x, w: F.adaptive_avg_pool2d(x, 3),
    "relu": lambda x, w: F.relu(x),
    "sigmoid": lambda x, w: F.sigmoid(x),
    "interpolate": lambda x, w: F.interpolate(x, scale_factor=2, mode="bilinear"),
    "linear": lambda x, w: F.linear(x, w.reshape(4, -1)[:, :9]),
}


@pytest.mark.parametrize("op", sorted(CASES))
def test_misaligned_inputs_match_aligned(op, rng):
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    expected = CASES[op](x.copy(), w.copy())
    got = CASES[op](misaligned(x), misaligned(w))
    np.testing.assert_array_equal(got, expected)
