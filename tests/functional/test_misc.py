"""pyconv.functional linear, batch_norm, interpolate, pad, flatten, dropout."""
import numpy as np
import pytest

import pyconv.functional as F
from pyconv.errors import InvalidArgument, InvalidDType, ShapeError
import reference as R

# ---------------------------------------------------------------------------------------
# linear


@pytest.mark.parametrize("lead", [(), (1,), (5,), (2, 3), (4, 1, 3)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_matches_reference(lead, with_bias, rng, threads):
    w = rng.standard_normal((13, 24)).astype(np.float32)
    b = rng.standard_normal(13).astype(np.float32) if with_bias else None
    x = rng.standard_normal(lead + (24,)).astype(np.float32)
    y = F.linear(x, w, b)
    assert y.shape == lead + (13,) and y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_allclose(y, R.linear(x, w, b), rtol=1e-5, atol=1e-5)


def test_linear_reads_views_and_edge_sizes(rng):
    w = rng.standard_normal((40, 7)).astype(np.float32)
    x = rng.standard_normal((9, 14)).astype(np.float32)[:, ::2]      # strided input
    np.testing.assert_allclose(F.linear(x, w), R.linear(x, w), rtol=1e-5, atol=1e-5)
    wt = rng.standard_normal((7, 40)).astype(np.float32).T            # transposed weight
    np.testing.assert_allclose(F.linear(x, wt), R.linear(x, wt), rtol=1e-5, atol=1e-5)
    b = np.arange(3, dtype=np.float32)
    # No input features: the output is the bias.
    np.testing.assert_array_equal(F.linear(np.zeros((2, 0), np.float32),
                                           np.zeros((3, 0), np.float32), b), [b, b])
    assert F.linear(np.zeros((0, 7), np.float32), w).shape == (0, 40)


def test_linear_errors_name_argument_and_shapes():
    w = np.zeros((3, 4), np.float32)
    with pytest.raises(ShapeError, match=r"input has shape \(2, 5\).*\(3, 4\)"):
        F.linear(np.zeros((2, 5), np.float32), w)
    with pytest.raises(ShapeError, match=r"bias has shape \(4,\), expected \(3,\)"):
        F.linear(np.zeros((2, 4), np.float32), w, np.zeros(4, np.float32))
    with pytest.raises(ShapeError, match="weight must be 2-D"):
        F.linear(np.zeros((2, 4), np.float32), np.zeros(4, np.float32))
    with pytest.raises(InvalidDType, match="weight must be float32, got dtype float64"):
        F.linear(np.zeros((2, 4), np.float32), np.zeros((3, 4)))
    with pytest.raises(InvalidDType, match="input must be float32, got dtype int32"):
        F.linear(np.zeros((2, 4), np.int32), w)


# ---------------------------------------------------------------------------------------
# batch_norm


@pytest.mark.parametrize("shape", [(4, 5), (2, 5, 7), (2, 5, 9, 7), (1, 5, 3, 4, 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_matches_reference(shape, affine, rng):
    c = shape[1]
    x = rng.standard_normal(shape).astype(np.float32)
    mean = rng.standard_normal(c).astype(np.float32)
    var = rng.uniform(0.1, 2.0, c).astype(np.float32)
    w = rng.standard_normal(c).astype(np.float32) if affine else None
    b = rng.standard_normal(c).astype(np.float32) if affine else None
    y = F.batch_norm(x, mean, var, w, b, eps=1e-3)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, R.batch_norm(x, mean, var, w, b, eps=1e-3),
                               rtol=1e-5, atol=1e-5)


def test_batch_norm_errors():
    x = np.zeros((2, 3, 4, 4), np.float32)
    m, v = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(InvalidArgument, match="training=True .* inference-only"):
        F.batch_norm(x, m, v, training=True)
    with pytest.raises(InvalidArgument, match="running_mean and running_var are required"):
        F.batch_norm(x, None, v)
    with pytest.raises(ShapeError, match=r"running_var has shape \(4,\), expected \(3,\)"):
        F.batch_norm(x, m, np.ones(4, np.float32))
    with pytest.raises(ShapeError, match=r"\(N, C, \*\), got \(3,\)"):
        F.batch_norm(np.zeros(3, np.float32), m, v)
    with pytest.raises(InvalidDType, match="weight must be float32, got dtype float64"):
        F.batch_norm(x, m, v, np.ones(3))


# ---------------------------------------------------------------------------------------
# interpolate

NEAREST_PAIRS = [(9, 7), (7, 9), (25, 33), (33, 25), (5, 10), (5, 15), (10, 5), (8, 3),
                 (3, 8), (1, 4), (4, 1), (6, 6)]


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
def test_interpolate_nearest_matches_reference(mode, rng):
    for n in (1, 2, 3):
        for i, o in NEAREST_PAIRS:
            spatial_in = (i,) + (3,) * (n - 1)
            size = (o,) + (2,) * (n - 1)
            x = rng.standard_normal((2, 3) + spatial_in).astype(np.float32)
            y = F.interpolate(x, size=size, mode=mode)
            assert y.shape == (2, 3) + size and y.dtype == np.float32
            np.testing.assert_array_equal(y, R.interpolate_nearest(x, size, mode),
                                          err_msg=f"{mode} {n}-D {i}->{o}")


@pytest.mark.parametrize("hw", [(1, 1), (4, 4), (3, 15), (5, 16), (2, 40)])
def test_interpolate_nearest_2x_matches_reference(threads, rng, hw):
    """Exact 2x upsampling in both dims (each input row making two output rows, tiny
    rows in one loop, wide ones paired then copied) against the reference and np.repeat;
    a 2x in one dim only takes the general path."""
    x = rng.standard_normal((2, 7) + hw).astype(np.float32)
    size = (2 * hw[0], 2 * hw[1])
    y = F.interpolate(x, size=size, mode="nearest")
    np.testing.assert_array_equal(y, R.interpolate_nearest(x, size, "nearest"))
    np.testing.assert_array_equal(y, x.repeat(2, axis=2).repeat(2, axis=3))
    y = F.interpolate(x, size=(hw[0], 2 * hw[1]), mode="nearest")
    np.testing.assert_array_equal(y, x.repeat(2, axis=3))


def test_interpolate_nearest_index_uses_torch_float32_arithmetic():
    # floor(37 * 6 / 74) is 3 in exact arithmetic; torch computes 37 * float32(6 / 74)
    # = 2.9999998 and takes 2. pyconv follows torch (the reference, exact, says 3).
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 6)
    assert F.interpolate(x, size=74)[0, 0, 37] == 2.0
    # torch's 2-D nearest kernel shortcuts out == in and out == 2 * in, its 1-D and 3-D
    # kernels do not: scale_factor 1.3 on size 3 gives 3 outputs either way.
    x1 = np.arange(3, dtype=np.float32).reshape(1, 1, 3)
    np.testing.assert_array_equal(F.interpolate(x1, scale_factor=1.3)[0, 0], [0, 0, 1])
    x2 = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(F.interpolate(x2, scale_factor=1.3)[0, 0], x2[0, 0])


@pytest.mark.parametrize("align_corners", [False, True])
def test_interpolate_linear_matches_reference(align_corners, rng):
    modes = {1: "linear", 2: "bilinear", 3: "trilinear"}
    for n, mode in modes.items():
        for i, o in NEAREST_PAIRS + [(2, 1), (1, 1)]:
            spatial_in = (i,) + (4,) * (n - 1)
            size = (o,) + (3,) * (n - 1)
            x = rng.standard_normal((2, 3) + spatial_in).astype(np.float32)
            y = F.interpolate(x, size=size, mode=mode, align_corners=align_corners)
            assert y.shape == (2, 3) + size and y.dtype == np.float32
            np.testing.assert_allclose(y, R.interpolate_linear(x, size, align_corners),
                                       rtol=1e-5, atol=1e-5, err_msg=f"{mode} {i}->{o}")


def test_interpolate_scale_factor_sizes(rng):
    x = rng.standard_normal((1, 2, 5, 7)).astype(np.float32)
    assert F.interpolate(x, scale_factor=2).shape == (1, 2, 10, 14)
    assert F.interpolate(x, scale_factor=(0.5, 1.5)).shape == (1, 2, 2, 10)
    assert F.interpolate(x, scale_factor=1.7, mode="bilinear").shape == (1, 2, 8, 11)
    # Integer factors are the same as the matching size.
    np.testing.assert_array_equal(F.interpolate(x, scale_factor=3),
                                  F.interpolate(x, size=(15, 21)))
    np.testing.assert_allclose(
        F.interpolate(x, scale_factor=2, mode="bilinear"),
        F.interpolate(x, size=(10, 14), mode="bilinear"), rtol=1e-6, atol=1e-6)
    # A non-contiguous input gives the same result.
    xt = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    np.testing.assert_array_equal(F.interpolate(xt, size=(4, 9), mode="bilinear"),
                                  F.interpolate(x, size=(4, 9), mode="bilinear"))


def test_interpolate_errors():
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(InvalidArgument, match="exactly one of size or scale_factor"):
        F.interpolate(x)
    with pytest.raises(InvalidArgument, match="exactly one of size or scale_factor"):
        F.interpolate(x, size=2, scale_factor=2)
    with pytest.raises(InvalidArgument, match="align_corners can only be set"):
        F.interpolate(x, size=2, align_corners=True)
    with pytest.raises(InvalidArgument, match=r"'trilinear' needs 3 spatial dims .*\(1, 2, 4, 4\)"):
        F.interpolate(x, size=2, mode="trilinear")
    with pytest.raises(InvalidArgument, match="mode must be one of"):
        F.interpolate(x, size=2, mode="bicubicc")
    with pytest.raises(InvalidArgument, match=r"size \(2, 2, 2\) has 3 elements .* 2 spatial"):
        F.interpolate(x, size=(2, 2, 2))
    with pytest.raises(InvalidArgument, match="output size .* must be positive"):
        F.interpolate(x, scale_factor=0.1)
    with pytest.raises(InvalidArgument, match="scale_factor must be positive"):
        F.interpolate(x, scale_factor=-2)
    with pytest.raises(ShapeError, match=r"1 to 3 spatial dims, got \(4, 4\)"):
        F.interpolate(np.zeros((4, 4), np.float32), size=2)
    with pytest.raises(InvalidArgument, match="antialias"):
        F.interpolate(x, size=2, mode="bilinear", antialias=True)
    with pytest.raises(InvalidDType, match="float64"):
        F.interpolate(np.zeros((1, 2, 4, 4)), size=2)


# ---------------------------------------------------------------------------------------
# pad

@pytest.mark.parametrize("mode,np_mode", [("constant", "constant"), ("reflect", "reflect"),
                                          ("replicate", "edge"), ("circular", "wrap")])
def test_pad_modes_match_numpy(mode, np_mode, rng):
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    y = F.pad(x, (1, 2, 3, 0), mode=mode)                    # W by (1, 2), H by (3, 0)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_array_equal(y, np.pad(x, [(0, 0), (0, 0), (3, 0), (1, 2)], np_mode))
    y1 = F.pad(x[0, 0], (2, 1), mode=mode)                   # one dim of a 2-D array
    np.testing.assert_array_equal(y1, np.pad(x[0, 0], [(0, 0), (2, 1)], np_mode))


def test_pad_constant_value_and_negative_crop(rng):
    x = rng.standard_normal((2, 4, 5)).astype(np.float32)
    y = F.pad(x, (1, 1, 0, 2, 1, 0), value=-7.5)
    assert y.shape == (3, 6, 7)
    np.testing.assert_array_equal(y[1:, :4, 1:6], x)
    assert (y[0] == -7.5).all() and (y[:, 4:] == -7.5).all()
    y = F.pad(x, (-1, 2, 0, -3))                             # crop W left, H bottom
    np.testing.assert_array_equal(y[:, :, :4], x[:, :1, 1:])
    assert y.shape == (2, 1, 6) and (y[:, :, 4:] == 0).all()
    np.testing.assert_array_equal(F.pad(x, ()), x)


def test_pad_errors():
    x = np.zeros((1, 2, 3), np.float32)
    with pytest.raises(InvalidArgument, match="even length, got 3"):
        F.pad(x, (1, 1, 1))
    with pytest.raises(InvalidArgument, match=r"pads 4 dims but the input has only 3"):
        F.pad(x, (1,) * 8)
    with pytest.raises(ShapeError, match=r"reflect padding \(3, 0\) of dim 2 must be smaller than the 3 "):
        F.pad(x, (3, 0), mode="reflect")
    with pytest.raises(ShapeError, match="circular padding"):
        F.pad(x, (0, 4), mode="circular")
    with pytest.raises(InvalidArgument, match="only supported in constant mode"):
        F.pad(x, (-1, 0), mode="replicate")
    with pytest.raises(ShapeError, match="negative size"):
        F.pad(x, (-2, -2))
    with pytest.raises(InvalidArgument, match="mode must be one of"):
        F.pad(x, (1, 1), mode="symmetric")
    with pytest.raises(InvalidArgument, match=r"pad\[1\] must be an int"):
        F.pad(x, (1, 1.5))


# ---------------------------------------------------------------------------------------
# flatten / dropout

def test_flatten(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    assert F.flatten(x).shape == (120,)
    assert F.flatten(x, 1).shape == (2, 60)
    assert F.flatten(x, 1, 2).shape == (2, 12, 5)
    assert F.flatten(x, -2).shape == (2, 3, 20)
    assert F.flatten(x, 2, 2).shape == x.shape
    assert np.shares_memory(F.flatten(x, 1), x)              # a view, as in torch
    np.testing.assert_array_equal(F.flatten(x, 1), x.reshape(2, -1))
    assert F.flatten(np.ones((), np.float32)).shape == (1,)
    with pytest.raises(InvalidArgument, match="start_dim 3 comes after end_dim 1"):
        F.flatten(x, 3, 1)
    with pytest.raises(InvalidArgument, match="end_dim 4 is out of range"):
        F.flatten(x, 0, 4)


def test_dropout_is_identity_at_inference(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    y = F.dropout(x, 0.3)
    np.testing.assert_array_equal(y, x)
    assert y is not x and F.dropout(x, inplace=True) is x
    with pytest.raises(InvalidArgument, match="training=True is not supported"):
        F.dropout(x, training=True)
    with pytest.raises(InvalidArgument, match="between 0 and 1"):
        F.dropout(x, 1.5)


# ---------------------------------------------------------------------------------------
# torch cross-checks (optional)

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="torch not installed: optional cross-check")


@pytest.mark.parametrize("mode,n", [("nearest", 1), ("nearest", 2), ("nearest", 3),
                                    ("nearest-exact", 1), ("nearest-exact", 2),
                                    ("nearest-exact", 3), ("linear", 1), ("bilinear", 2),
                                    ("trilinear", 3)])
def test_interpolate_matches_torch(torch, mode, n, rng):
    tf = torch.nn.functional
    acs = [None] if mode.startswith("nearest") else [False, True]
    checked = 0
    for trial in range(24):
        spatial = tuple(int(v) for v in rng.integers(1, 9, n))
        x = rng.standard_normal((2, 3) + spatial).astype(np.float32)
        if trial % 3 == 0:
            kw = {"size": tuple(int(v) for v in rng.integers(1, 13, n))}
        else:
            factors = tuple(float(v) for v in rng.choice([0.5, 0.7, 1.3, 1.5, 2.0, 2.5, 3.0], n))
            kw = {"scale_factor": factors, "recompute_scale_factor": trial % 3 == 2}
        if "scale_factor" in kw and min(int(s * f) for s, f in zip(spatial, kw["scale_factor"])) < 1:
            continue
        for ac in acs:
            y = F.interpolate(x, mode=mode, align_corners=ac, **kw)
            t = tf.interpolate(torch.from_numpy(x), mode=mode, align_corners=ac, **kw).numpy()
            assert y.shape == t.shape, (spatial, kw)
            if mode.startswith("nearest"):
                np.testing.assert_array_equal(y, t, err_msg=f"{spatial} {kw}")
            else:
                np.testing.assert_allclose(y, t, rtol=1e-5, atol=1e-5, err_msg=f"{spatial} {kw}")
            checked += 1
    assert checked >= 20


def test_linear_batch_norm_pad_match_torch(torch, rng):
    tf = torch.nn.functional
    t = torch.from_numpy
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    np.testing.assert_allclose(F.linear(x, w, b), tf.linear(t(x), t(w), t(b)).numpy(),
                               rtol=1e-5, atol=1e-5)
    m, v = rng.standard_normal(3).astype(np.float32), rng.uniform(0.5, 2, 3).astype(np.float32)
    g, beta = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    np.testing.assert_allclose(
        F.batch_norm(x, m, v, g, beta, eps=1e-4),
        tf.batch_norm(t(x), t(m), t(v), t(g), t(beta), eps=1e-4).numpy(), rtol=1e-5, atol=1e-5)
    for mode in ["constant", "reflect", "replicate", "circular"]:
        # torch pads the last dim of 3-D inputs and the last two of 4-D ones in every mode.
        for arr, p in [(x[0], (1, 2)), (x, (2, 1, 0, 3))] + (
                [(x, (-1, 2, 1, -2)), (x, (1, 2))] if mode == "constant" else []):
            np.testing.assert_array_equal(F.pad(arr, p, mode=mode),
                                          tf.pad(t(arr), p, mode=mode).numpy(),
                                          err_msg=f"{mode} {p}")
    np.testing.assert_array_equal(F.pad(x, (1, 1), value=2.5),
                                  tf.pad(t(x), (1, 1), value=2.5).numpy())
    np.testing.assert_array_equal(F.flatten(x, 1, 2), torch.flatten(t(x), 1, 2).numpy())
