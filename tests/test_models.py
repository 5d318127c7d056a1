"""The bundled models (pyconv.models): files, graphs, and quality on fresh synthetic images.

Quality is measured per engine: onnxruntime (the reference) and pyconv. Timing is not
asserted here (``python -m pyconv.models.evaluate`` prints it).
"""
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime", reason="onnxruntime not installed: the bundled models "
                                          "are checked against it")

from pyconv.models import evaluate, shapes  # noqa: E402

# (file, output channels / classes, output is per-pixel)
BUNDLED = {
    "classifier": (evaluate.CLASSIFIER, shapes.NUM_CLASSES, False),
    "segmenter": (evaluate.SEGMENTER, shapes.NUM_CLASSES + 1, True),
}

# Small fresh sets keep the whole module at a few seconds on 2 cores; the evaluation seeds
# are never used in training.
N_CLS, N_SEG = 600, 150
MIN_ACCURACY, MIN_MIOU = 0.95, 0.90


@pytest.fixture(params=["onnxruntime", "pyconv"], scope="module")
def engine(request):
    """Name of an engine ``evaluate.open_session`` can open."""
    return request.param


@pytest.fixture(scope="module")
def candidate():
    """The engine under test against onnxruntime."""
    return "pyconv"


@pytest.fixture(scope="module")
def cls_data():
    return shapes.make_classification(N_CLS, evaluate.CLS_SEED)


@pytest.fixture(scope="module")
def seg_data():
    return shapes.make_segmentation(N_SEG, evaluate.SEG_SEED)


# --------------------------------------------------------------------- files and graphs

@pytest.mark.parametrize("which", BUNDLED)
def test_model_file_is_valid_small_and_uses_supported_ops(which):
    path, _, _ = BUNDLED[which]
    assert os.path.getsize(path) < 1.5 * 2**20, "bundled models must stay small"
    onnx.checker.check_model(path, full_check=True)
    model = onnx.load(path)
    assert model.ir_version <= 10 and 13 <= model.opset_import[0].version <= 17
    ops = {node.op_type for node in model.graph.node}
    assert ops <= evaluate.SUPPORTED_OPS, f"unsupported ops: {ops - evaluate.SUPPORTED_OPS}"
    # What the models are meant to exercise in the executor.
    assert {"Conv", "BatchNormalization", "Relu", "MaxPool"} <= ops
    if which == "segmenter":
        assert {"ConvTranspose", "Concat"} <= ops
    else:
        assert {"GlobalAveragePool", "Gemm"} <= ops


@pytest.mark.parametrize("which", BUNDLED)
def test_model_io_names_and_symbolic_batch(which):
    path, classes, per_pixel = BUNDLED[which]
    sess = evaluate.open_session(path, "onnxruntime")
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.shape, inp.type) == ("input", ["batch", 3, 64, 64], "tensor(float)")
    want = ["batch", classes, 64, 64] if per_pixel else ["batch", classes]
    assert (out.name, out.shape) == ("logits", want)


def test_conv_variants_in_classifier():
    """The classifier covers strided, dilated, depthwise and grouped convolutions."""
    model = onnx.load(evaluate.CLASSIFIER)
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
             for n in model.graph.node if n.op_type == "Conv"]
    assert any(a.get("strides", [1, 1]) != [1, 1] for a in attrs)
    assert any(a.get("dilations", [1, 1]) != [1, 1] for a in attrs)
    assert any(a.get("group", 1) > 1 for a in attrs)


# --------------------------------------------------------------------- quality per engine

def test_classifier_accuracy(engine, cls_data):
    sess = evaluate.open_session(evaluate.CLASSIFIER, engine)
    x, y = cls_data
    acc = float((evaluate.predict(sess, x) == y).mean())
    assert acc >= MIN_ACCURACY, f"{engine}: accuracy {acc:.4f} on {N_CLS} fresh images"


def test_segmenter_mean_iou(engine, seg_data):
    sess = evaluate.open_session(evaluate.SEGMENTER, engine)
    x, m = seg_data
    miou, per_class = shapes.mean_iou(evaluate.predict(sess, x, batch=50), m)
    assert miou >= MIN_MIOU, f"{engine}: mean IoU {miou:.4f}, per class {per_class}"


@pytest.mark.parametrize("which", BUNDLED)
def test_batch_rows_are_independent(engine, which, seg_data):
    """Batch N gives the same logits as N runs of batch 1 (dynamic batch axis)."""
    sess = evaluate.open_session(BUNDLED[which][0], engine)
    x = seg_data[0][:4]
    batched = sess.run(None, {"input": x})[0]
    single = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(4)])
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("which", BUNDLED)
def test_matches_onnxruntime(candidate, which, seg_data):
    path = BUNDLED[which][0]
    x = seg_data[0][:8]
    want = evaluate.open_session(path, "onnxruntime").run(None, {"input": x})[0]
    got = evaluate.open_session(path, candidate).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------- the dataset

def test_dataset_is_deterministic_typed_and_seed_dependent():
    a, la = shapes.make_classification(12, seed=7, size=32)
    b, lb = shapes.make_classification(12, seed=7, size=32)
    c, _ = shapes.make_classification(12, seed=8, size=32)
    assert a.shape == (12, 3, 32, 32) and a.dtype == np.float32 and la.dtype == np.int64
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert -1.0 <= a.min() and a.max() <= 1.0            # normalised from [0, 1] pixels
    assert np.bincount(la, minlength=shapes.NUM_CLASSES).min() == 2   # balanced


def test_segmentation_masks_match_the_painted_shapes():
    raw, masks = shapes.make_segmentation(20, seed=3, normalize=False)
    assert masks.shape == (20, 64, 64) and masks.dtype == np.int64
    assert masks.min() == 0 and masks.max() <= shapes.NUM_CLASSES
    assert (masks > 0).any(axis=(1, 2)).all(), "every image has at least one shape"
    # Shapes are flat-coloured under noise of sigma <= 0.08: the colour spread inside one
    # image's mask for one class is small compared with the shape/background contrast.
    img = raw[0].transpose(1, 2, 0)
    for k in np.unique(masks[0])[1:]:
        assert img[masks[0] == k].std(axis=0).max() < 0.12
    np.testing.assert_array_equal(shapes.normalize(raw), shapes.make_segmentation(20, 3)[0])


def test_mean_iou():
    t = np.array([[0, 0, 1, 1]])
    assert shapes.mean_iou(t, t, num_classes=3)[0] == 1.0     # class 2 absent: ignored
    miou, per = shapes.mean_iou(np.array([[0, 1, 1, 1]]), t, num_classes=2)
    np.testing.assert_allclose(per, [0.5, 2 / 3])
    assert miou == pytest.approx((0.5 + 2 / 3) / 2)
