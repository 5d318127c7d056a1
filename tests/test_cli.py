"""The `pyconv` command line, run as a subprocess: output, exit codes and error lines."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyconv
from pyconv import models as bundled

REPO = Path(pyconv.__file__).resolve().parent.parent


def pyconv_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "pyconv", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory):
    """image (batch, 3, 16, 16) -> Conv 3x3 (8) -> Relu -> GlobalAveragePool -> Flatten
    -> Gemm (4 classes): a small classifier with a known MAC count."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((4, 8)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(
        nodes, "cli", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                     ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              ir_version=8)
    path = tmp_path_factory.mktemp("cli") / "small.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_help_lists_every_command():
    r = pyconv_cli("--help")
    assert r.returncode == 0
    for cmd in ("info", "run", "profile", "bench", "demo"):
        assert cmd in r.stdout


def test_info_counts_parameters_and_macs(conv_model):
    r = pyconv_cli("info", conv_model, "--shape", "image=2x3x16x16")
    assert r.returncode == 0, r.stderr
    conv_macs = 2 * 8 * 16 * 16 * 3 * 3 * 3
    gemm_macs = 2 * 4 * 8
    assert f"{8 * 3 * 3 * 3 + 4 * 8:,} parameters" in r.stdout
    assert f"{conv_macs + gemm_macs:,} MACs" in r.stdout
    row = next(line for line in r.stdout.splitlines() if line.startswith("conv "))
    assert "2x8x16x16" in row


def test_run_npy_input_matches_onnxruntime(conv_model, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the reference here")
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    r = pyconv_cli("run", conv_model, "--input", f"image={tmp_path / 'x.npy'}",
                   "--output", out, "--top", "2")
    assert r.returncode == 0, r.stderr
    assert "logits: shape 2x4 float32" in r.stdout
    assert "sample 1: top-2" in r.stdout
    expected = ort.InferenceSession(str(conv_model), providers=["CPUExecutionProvider"]).run(
        None, {"image": x})[0]
    np.testing.assert_allclose(np.load(out)["logits"], expected, rtol=1e-4, atol=1e-5)


def test_run_image_input_is_resized_and_normalised(conv_model, tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(2).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "picture.png")
    out = tmp_path / "out.npz"
    r = pyconv_cli("run", conv_model, "--input", f"image={tmp_path / 'picture.png'}",
                   "--mean", "0.5", "--std", "0.25", "--output", out)
    assert r.returncode == 0, r.stderr
    img = Image.fromarray(pixels).resize((16, 16), Image.BILINEAR)
    x = ((np.asarray(img, np.float32) / 255 - 0.5) / 0.25).transpose(2, 0, 1)[None]
    sess = pyconv.InferenceSession(str(conv_model))
    np.testing.assert_allclose(np.load(out)["logits"], sess.run(None, {"image": x})[0],
                               rtol=1e-5, atol=1e-5)


def test_profile_lists_nodes_by_cost(conv_model):
    r = pyconv_cli("profile", conv_model, "--runs", "3")
    assert r.returncode == 0, r.stderr
    assert "share %" in r.stdout and "% peak" in r.stdout
    assert "node total" in r.stdout


def test_bench_compares_with_onnxruntime_and_plots(conv_model, tmp_path):
    pytest.importorskip("onnxruntime", reason="--compare onnxruntime needs it")
    plot = tmp_path / "bench.png"
    r = pyconv_cli("bench", conv_model, "--compare", "onnxruntime", "--threads", "1,2",
                   "--runs", "3", "--plot", plot)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()
            if line.startswith(("pyconv ", "onnxruntime "))]
    assert sorted((row[0], row[1]) for row in rows) == [
        ("onnxruntime", "1"), ("onnxruntime", "2"), ("pyconv", "1"), ("pyconv", "2")]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args,fragments", [
    (["info", "missing.onnx"], ["no such model file", "missing.onnx"]),
    (["run", "{model}", "--input", "nope=x.npy"], ["no input 'nope'", "image"]),
    (["run", "{model}"], ["missing --input for image"]),
    (["run", "{model}", "--input", "image=absent.npy"], ["no such file"]),
    (["info", "{model}", "--shape", "image=2by3"], ["--shape", "NAME=DIMxDIM"]),
    (["info", "{model}", "--shape", "image=1x3x15x16"], ["fixed at 16"]),
    (["info", "{garbage}"], ["not a readable ONNX model"]),
    (["bench", "{model}", "--threads", "0"], ["thread counts must be >= 1"]),
    (["frobnicate"], ["invalid choice"]),
])
def test_errors_are_one_line_and_nonzero(conv_model, tmp_path, args, fragments):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07 this is not a protobuf \xff\xff")
    args = [a.format(model=conv_model, garbage=garbage) for a in args]
    assert_one_line_error(pyconv_cli(*args, cwd=tmp_path), *fragments)


def test_demo_meets_the_accuracy_thresholds(tmp_path):
    for name in bundled.BUNDLED:
        if not Path(bundled.path(name)).is_file():
            pytest.fail(f"pyconv/models/{name} is missing: the bundled models are part of "
                        f"the package")
    picture = tmp_path / "demo.png"
    r = pyconv_cli("demo", "--samples", "100", "--seed", "7", "--picture", picture)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(l for l in r.stdout.splitlines() if l.split()[:1] == ["pyconv"]
                and "demo" not in l)
    accuracy, miou = map(float, line.split()[1:3])
    assert accuracy >= 0.95 and miou >= 0.90, line
    assert "PASSED" in r.stdout
    assert picture.read_bytes()[:4] == b"\x89PNG"
