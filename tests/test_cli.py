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


def pyconv_cli(*args, cwd=None, env=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pyconv", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def pyconv_cli_without_matplotlib(*args, cwd=None):
    """The command line in a process where ``import matplotlib`` fails."""
    code = ("import sys; sys.modules['matplotlib'] = None; from pyconv.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def has_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


needs_matplotlib = pytest.mark.skipif(not has_matplotlib(),
                                      reason="charts need matplotlib (the pyconv[plot] extra)")


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


@needs_matplotlib
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
    (["info", "{empty}"], ["empty.onnx: not an ONNX model (an empty file)"]),
    (["profile", "{empty}"], ["not an ONNX model (an empty file)"]),
    (["run", "{model}", "--input", "image={picture}", "--mean", "0.5,0.5"],
     ["--mean 0.5,0.5: 2 values", "3 channel(s): give 1 value or 3"]),
    (["run", "{model}", "--input", "image={picture}", "--std", "0.2,0.3,0.4,0.5"],
     ["--std 0.2,0.3,0.4,0.5: 4 values", "give 1 value or 3"]),
    (["run", "{model}", "--input", "image={picture}", "--std", "0"],
     ["--std 0: a standard deviation is 0"]),
    (["bench", "{model}", "--threads", "0"], ["thread counts must be >= 1"]),
    (["frobnicate"], ["invalid choice"]),
])
def test_errors_are_one_line_and_nonzero(conv_model, tmp_path, args, fragments):
    from PIL import Image

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07 this is not a protobuf \xff\xff")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    picture = tmp_path / "picture.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(picture)
    args = [a.format(model=conv_model, garbage=garbage, empty=empty, picture=picture)
            for a in args]
    assert_one_line_error(pyconv_cli(*args, cwd=tmp_path), *fragments)


def test_demo_meets_the_accuracy_thresholds(tmp_path):
    for name in bundled.BUNDLED:
        if not Path(bundled.path(name)).is_file():
            pytest.fail(f"pyconv/models/{name} is missing: the bundled models are part of "
                        f"the package")
    picture = tmp_path / "demo.png"
    r = pyconv_cli("demo", "--samples", "100", "--seed", "7",
                   *(["--picture", picture] if has_matplotlib() else []), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(l for l in r.stdout.splitlines() if l.split()[:1] == ["pyconv"]
                and "demo" not in l)
    accuracy, miou = map(float, line.split()[1:3])
    assert accuracy >= 0.95 and miou >= 0.90, line
    assert "PASSED" in r.stdout
    if has_matplotlib():
        assert picture.read_bytes()[:4] == b"\x89PNG"
    else:
        assert "no picture: matplotlib is not installed" in r.stdout


# -- faults of issue 15, one test each ------------------------------------------------------

def test_selfcheck_honours_threads():
    r = pyconv_cli("selfcheck", "--threads", "1", env={"OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "threads       : 1 " in r.stdout
    assert "throughput on 1 thread(s)" in r.stdout
    assert "best of 6 windows" in r.stdout
    # Not clamped: a figure above the measured peak is printed as measured, with why.
    for line in r.stdout.splitlines():
        if "% of peak" in line:
            share = float(line.split("(")[1].split("%")[0])
            assert share <= 100 or "above the measured peak" in line, line


def test_bad_isa_environment_variable_is_one_line_exit_2():
    r = pyconv_cli("config", env={"PYCONV_ISA": "bogus"})
    assert r.returncode == 2
    assert_one_line_error(r, "PYCONV_ISA='bogus'", "unknown ISA")


def test_help_examples_use_the_bundled_models_input_names():
    from pyconv.cli import EPILOG
    from pyconv.cli._demo import models_dir

    directory = models_dir()
    checked = 0
    for line in EPILOG.splitlines():
        words = line.split()
        models = [w for w in words if w.startswith("pyconv/models/") and w.endswith(".onnx")]
        if not models:
            continue
        inputs = {a.name for a in pyconv.InferenceSession(
            str(directory / Path(models[0]).name)).get_inputs()}
        for option, value in zip(words, words[1:]):
            if option in ("--shape", "--input"):
                assert value.split("=")[0] in inputs, (line, inputs)
                checked += 1
    assert checked >= 2


def test_info_lists_operators_pyconv_lacks(tmp_path):
    from pyconv.ops import lookup

    op = next(o for o in ("Det", "Einsum", "NonMaxSuppression") if lookup(o) is None)
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node(op, ["r"], ["y"], name="mystery"),
             helper.make_node("Fancy", ["y"], ["z"], name="custom", domain="org.example")]
    graph = helper.make_graph(nodes, "unsupported",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("org.example", 1)])
    path = tmp_path / "unsupported.onnx"
    path.write_bytes(model.SerializeToString())
    r = pyconv_cli("info", path)
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith("pyconv cannot run"))
    assert "2 operator type(s)" in line
    assert f"{op} (nodes: 'mystery')" in line and "org.example::Fancy (nodes: 'custom')" in line


def test_bench_without_compare_has_no_ratio_column(conv_model):
    r = pyconv_cli("bench", conv_model, "--runs", "3")
    assert r.returncode == 0, r.stderr
    header = next(l for l in r.stdout.splitlines() if l.startswith("engine"))
    assert header.split() == ["engine", "threads", "median", "ms", "p90", "ms", "min", "ms"]
    row = next(l for l in r.stdout.splitlines() if l.startswith("pyconv "))
    assert len(row.split()) == 5


def test_plot_without_matplotlib_is_a_clear_error(conv_model, tmp_path):
    r = pyconv_cli_without_matplotlib("bench", conv_model, "--runs", "2", "--plot",
                                      tmp_path / "b.png")
    assert_one_line_error(r, "--plot draws with matplotlib", "pip install 'pyconv[plot]'")
    assert "runs after" not in r.stdout       # refused before timing anything
    r = pyconv_cli_without_matplotlib("demo", "--picture", tmp_path / "d.png")
    assert_one_line_error(r, "--picture draws with matplotlib", "pyconv[plot]")


@needs_matplotlib
def test_bench_chart_has_spread_legend_threads_and_caption(tmp_path):
    from pyconv.cli import _engines, _plot

    rng = np.random.default_rng(0)
    results = {(e, t): rng.uniform(1e-3, 2e-3, 20) for e in ("pyconv", "onnxruntime")
               for t in (1, 2)}
    peaks = {t: _engines.PeakMeter(t) for t in (1, 2)}
    for p in peaks.values():
        p.sample()
    fig = _plot.bench_chart(tmp_path / "b.png", results, peaks, "model.onnx", 20, 2)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["pyconv", "onnxruntime"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1 thread", "2 threads"]
    assert len(ax.patches) == 4                   # one box per engine and thread count
    caption = fig.get_supxlabel()
    assert _engines.machine_description() in caption
    assert f"{peaks[2].gflops:.0f} GFLOP/s on 2 threads" in caption
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


@needs_matplotlib
def test_demo_picture_has_class_legend_and_metrics_per_engine(tmp_path):
    from pyconv.cli import _demo, _plot

    ev = _demo.ev
    cls_x, cls_y = ev.shapes.make_classification(6, 0)
    seg_x, seg_y = ev.shapes.make_segmentation(6, 1)
    preds = {"pyconv": (cls_y, seg_y), "onnxruntime": ((cls_y + 1) % 6, seg_y)}
    figures = {e: dict(accuracy=a, miou=0.9, cls_ms=1.0, seg_ms=2.0)
               for e, a in (("pyconv", 1.0), ("onnxruntime", 0.0))}
    fig = _plot.demo_picture(tmp_path / "d.png", ev.shapes, _demo.PALETTE,
                             (cls_x, cls_y, seg_x, seg_y), preds, figures)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["background"] + list(ev.shapes.CLASSES)
    title = fig.get_suptitle()
    assert "pyconv: accuracy 1.000, mean IoU 0.900" in title
    assert "onnxruntime: accuracy 0.000" in title and "segment 2.00 ms" in title
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["input", "ground truth", "pyconv\nmask", "onnxruntime\nmask",
                      "classifier"]
