"""The onnx wheel's `light` model zoo: shipped expected outputs, and onnxruntime on
randomised weights (the shipped weights are constant, so every class scores the same)."""
import os

import numpy as np
import pytest

import pyconv
from pyconv import models as bundled
from tests.graph import _zoo

pytestmark = pytest.mark.skipif(not _zoo.LIGHT_MODELS, reason="onnx wheel ships no light models")


def test_all_nine_models_present():
    assert len(_zoo.LIGHT_MODELS) == 9, _zoo.LIGHT_MODELS


@pytest.mark.parametrize("name", _zoo.LIGHT_MODELS)
def test_light_model_matches_shipped_output(name):
    model = _zoo.load(name)
    expected = _zoo.expected_outputs(name)
    assert expected, f"no expected output shipped for {name}"
    sess = pyconv.InferenceSession(_zoo.model_path(name))
    outs = sess.run(None, _zoo.dummy_inputs(model))
    assert len(outs) == len(expected)
    for got, want in zip(outs, expected):
        # BackendTest's tolerances for the light models.
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("name", _zoo.LIGHT_MODELS)
def test_light_model_random_weights_matches_onnxruntime(name):
    ort = pytest.importorskip("onnxruntime")
    model = _zoo.randomized(name)
    feeds = {k: np.random.default_rng(1).random(v.shape, np.float32)
             for k, v in _zoo.dummy_inputs(model).items()}
    data = model.SerializeToString()
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = pyconv.InferenceSession(data).run(None, feeds)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        # Softmax outputs of 1000 classes: compare at the scale of the scores.
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-3 * float(np.abs(w).max()))
        assert np.argmax(g) == np.argmax(w)


BUNDLED_MODELS = [bundled.path(name) for name in bundled.BUNDLED]


@pytest.mark.parametrize("path", BUNDLED_MODELS, ids=os.path.basename)
def test_bundled_model_matches_onnxruntime(path):
    """Every bundled model (package data of pyconv.models) against onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    sess = pyconv.InferenceSession(path)
    rng = np.random.default_rng(0)
    feeds = {a.name: rng.random([d if isinstance(d, int) else (1 if i == 0 else 64)
                                 for i, d in enumerate(a.shape)], np.float32)
             for a in sess.get_inputs()}
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    for g, w in zip(sess.run(None, feeds), want):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(w).max())))
