"""NaN/Inf propagation against onnxruntime, and run-to-run determinism."""
import numpy as np
import pytest

import pyconv
from _models import residual_cnn


@pytest.fixture(scope="module")
def model():
    return residual_cnn(blocks=2).SerializeToString()


def poisoned(seed):
    """An input with NaN, +Inf and -Inf planted in different places."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    x[0, 0, 3, 4] = np.nan
    x[0, 1, 20, 7] = np.inf
    x[1, 2, 10:12, 30] = -np.inf
    return x


@pytest.mark.parametrize("level", ["ORT_DISABLE_ALL", "ORT_ENABLE_ALL"])
@pytest.mark.parametrize("pool", ["AveragePool", "MaxPool"])
def test_nan_and_inf_propagate_like_onnxruntime(pool, level):
    """Same NaN and Inf positions as onnxruntime, except one documented difference: a
    MaxPool window holding a NaN gives NaN in pyconv (as torch and NumPy), while
    onnxruntime's SIMD max drops it unless it is the window's last tap. So with MaxPool
    pyconv's NaNs must cover onnxruntime's, and equal them everywhere else."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the reference here")
    model = residual_cnn(blocks=2, pool=pool).SerializeToString()
    opts = pyconv.SessionOptions()
    opts.graph_optimization_level = getattr(pyconv.GraphOptimizationLevel, level)
    sess = pyconv.InferenceSession(model, opts)
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = poisoned(0)
    outs = sess.run(None, {"x": x})
    for got, want in zip(outs, ref.run(None, {"x": x})):
        if pool == "MaxPool":
            assert not (np.isnan(want) & ~np.isnan(got)).any()
        else:
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        both = ~np.isnan(got) & ~np.isnan(want)
        np.testing.assert_array_equal(np.isposinf(got[both]), np.isposinf(want[both]))
        np.testing.assert_array_equal(np.isneginf(got[both]), np.isneginf(want[both]))
        finite = both & np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-5)
    assert np.isnan(outs[0]).any()   # the poison did reach an output


def test_all_nan_input_gives_nan_not_a_crash(model):
    sess = pyconv.InferenceSession(model)
    x = np.full((1, 3, 32, 32), np.nan, np.float32)
    mask, probs = sess.run(None, {"x": x})
    assert np.isnan(mask).all() and np.isnan(probs).all()


def test_outputs_are_bitwise_identical_run_to_run(model):
    sess = pyconv.InferenceSession(model)
    x = poisoned(1)
    x[~np.isfinite(x)] = 0
    first = sess.run(None, {"x": x})
    for _ in range(5):
        for got, want in zip(sess.run(None, {"x": x}), first):
            np.testing.assert_array_equal(got, want)
