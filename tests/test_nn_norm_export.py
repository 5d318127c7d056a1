"""nn.to_onnx of the layers of issue 15 (LayerNorm, GroupNorm, InstanceNorm*, PixelShuffle,
PixelUnshuffle, bicubic / area Upsample): the exported model run by onnxruntime and by
pyconv's session gives the layers' own outputs."""
import numpy as np
import pytest

import pyconv
import pyconv.nn as nn
from pyconv.errors import InvalidArgument

pytest.importorskip("onnx")


def _ort_run(model_path, x):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": x})[0]


def _randomize(model, rng):
    for m in model.modules():
        for name in ("weight", "bias"):
            if m._parameters.get(name) is not None:
                setattr(m, name, rng.standard_normal(m._parameters[name].shape)
                        .astype(np.float32))
        if m._buffers.get("running_mean") is not None:
            c = m.running_mean.shape[0]
            m.running_mean = rng.standard_normal(c).astype(np.float32)
            m.running_var = rng.uniform(0.5, 2.0, c).astype(np.float32)


def _model():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
        nn.PixelShuffle(2), nn.InstanceNorm2d(2, affine=True), nn.PixelUnshuffle(2),
        nn.InstanceNorm2d(8, track_running_stats=True),
        nn.Upsample(scale_factor=1.5, mode="bicubic"),
        nn.Upsample(size=(5, 7), mode="bicubic", align_corners=True),
        nn.LayerNorm((5, 7)), nn.Upsample(size=(5, 1), mode="area"),
        nn.LayerNorm(1, elementwise_affine=False), nn.GroupNorm(4, 8, affine=False))


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_to_onnx_norm_and_shuffle_layers_match_onnxruntime_and_pyconv(opset, tmp_path, rng):
    model = _model()
    _randomize(model, rng)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    path = tmp_path / f"norms{opset}.onnx"
    onnx_model = model.to_onnx(path, x.shape, opset=opset)
    ops = {n.op_type for n in onnx_model.graph.node}
    assert {"DepthToSpace", "InstanceNormalization", "BatchNormalization", "Resize",
            "AveragePool"} <= ops
    assert ("LayerNormalization" in ops) == (opset >= 17)
    assert ("GroupNormalization" in ops) == (opset >= 21)
    expected = model(x)
    np.testing.assert_allclose(_ort_run(path, x), expected, rtol=1e-4, atol=1e-4)
    session = pyconv.InferenceSession(str(path))
    np.testing.assert_allclose(session.run(["output"], {"input": x})[0], expected,
                               rtol=1e-4, atol=1e-4)


def test_to_onnx_refuses_what_onnx_cannot_say(tmp_path):
    with pytest.raises(InvalidArgument, match=r"to_onnx: layer '0' \(InstanceNorm1d\) has an "
                                              r"unbatched input of shape \(3, 5\)"):
        nn.Sequential(nn.InstanceNorm1d(3)).to_onnx(None, (3, 5))
    with pytest.raises(InvalidArgument, match=r"to_onnx: layer '0' \(PixelShuffle\) has an "
                                              r"input of shape \(8, 2, 2\)"):
        nn.Sequential(nn.PixelShuffle(2)).to_onnx(None, (8, 2, 2))
    with pytest.raises(InvalidArgument, match=r"averages \(5, 5\) into \(2, 2\), which is "
                                              r"not a fixed pooling window"):
        nn.Sequential(nn.Upsample(size=2, mode="area")).to_onnx(None, (1, 1, 5, 5))
    with pytest.raises(InvalidArgument, match=r"Fold has no ONNX export"):
        nn.Sequential(nn.Fold(4, 2)).to_onnx(None, (1, 4, 9))


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_to_onnx_align_corners_with_a_fractional_scale(mode, tmp_path, rng):
    """5 * 1.7 = 8.5: torch maps corners onto the 8 output pixels. With a scale, ONNX's
    align_corners divides by the length 8.5 (the reference evaluator and pyconv) or by 8
    (onnxruntime); the export writes the sizes, which every runtime reads as torch."""
    model = nn.Sequential(nn.Upsample(scale_factor=1.7, mode=mode, align_corners=True))
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    path = tmp_path / "ac.onnx"
    model.to_onnx(path, x.shape)
    np.testing.assert_allclose(_ort_run(path, x), model(x), rtol=1e-5, atol=1e-5)
    session = pyconv.InferenceSession(str(path))
    np.testing.assert_allclose(session.run(["output"], {"input": x})[0], model(x),
                               rtol=1e-5, atol=1e-5)


class _FunctionalNorms(nn.Module):
    """The same layers reached through pyconv.functional inside a custom forward."""

    def __init__(self, rng):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.ln_w, self.ln_b = (rng.standard_normal((8, 8, 8)).astype(np.float32)
                                for _ in range(2))
        self.gn_w, self.gn_b = (rng.standard_normal(8).astype(np.float32) for _ in range(2))

    def forward(self, x):
        import pyconv.functional as F
        y = F.layer_norm(self.conv(x), (8, 8, 8), self.ln_w, self.ln_b)
        y = F.group_norm(y, 2, self.gn_w, self.gn_b)
        y = F.group_norm(y, 4)
        return F.pixel_shuffle(F.pixel_unshuffle(y, 2), 2) + y


def test_functional_norms_and_shuffles_export_with_a_free_batch(tmp_path):
    rng = np.random.default_rng(3)
    model = _FunctionalNorms(rng)
    path = tmp_path / "functional_norms.onnx"
    nn.to_onnx(model, path, (1, 4, 8, 8))
    for batch in (1, 3):
        x = rng.standard_normal((batch, 4, 8, 8)).astype(np.float32)
        want = model(x)
        np.testing.assert_allclose(_ort_run(path, x), want, rtol=1e-4, atol=1e-4)
        got, = pyconv.InferenceSession(str(path)).run(None, {"input": x})
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
