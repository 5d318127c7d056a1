"""pyconv.batch.Predictor (plain calls, pickling, a multiprocessing pool, DataFrames) and
`pyconv batch` with the local engine; the Ray engine is in test_batch_ray.py."""
import io
import multiprocessing
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import pyconv
from pyconv import models as bundled
from pyconv.batch import Predictor, Preprocess, pixels_to_tensor, worker_cpus
from pyconv.errors import InvalidArgument
from pyconv.models import shapes

REPO = Path(pyconv.__file__).resolve().parent.parent
CLASSIFIER = bundled.path(bundled.CLASSIFIER)
SEGMENTER = bundled.path(bundled.SEGMENTER)
HALF = Preprocess(mean=(0.5,), std=(0.5,))        # the bundled models' normalisation


def pixels(n, seed, size=32, segmentation=False):
    """uint8 (n, size, size, 3) images of the shapes dataset, as a reader gives them."""
    make = shapes.make_segmentation if segmentation else shapes.make_classification
    x, _ = make(n, seed=seed, size=size, normalize=False)
    return (x.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)


def onnxruntime_session(path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the reference here")
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def model_input(images, size=64):
    """The reference preprocessing, written out: Pillow bilinear resize, [0, 1], then
    (x - 0.5) / 0.5, NCHW."""
    from PIL import Image
    out = []
    for img in images:
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR), np.float32)
        out.append(((img / 255 - 0.5) / 0.5).transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


def test_classifier_rows_match_onnxruntime():
    images = pixels(12, seed=5)
    out = Predictor(CLASSIFIER, HALF, top_k=3)({"image": images, "id": np.arange(12)})
    assert list(out) == ["id", "logits", "logits_top_k", "logits_top_k_scores"]
    np.testing.assert_array_equal(out["id"], np.arange(12))
    ref = onnxruntime_session(CLASSIFIER).run(None, {"input": model_input(images)})[0]
    np.testing.assert_allclose(out["logits"], ref, rtol=1e-4, atol=1e-4)
    ref64 = ref.astype(np.float64)
    probs = np.exp(ref64 - ref64.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_array_equal(out["logits_top_k"], np.argsort(-probs, 1)[:, :3])
    np.testing.assert_allclose(out["logits_top_k_scores"],
                               np.take_along_axis(probs, out["logits_top_k"], 1), atol=1e-5)
    assert out["logits_top_k"].dtype == np.int64 and out["logits"].dtype == np.float32


def test_segmenter_mask_is_the_argmax_of_onnxruntime():
    images = pixels(4, seed=6, size=64, segmentation=True)
    out = Predictor(SEGMENTER, HALF)({"image": images})
    ref = onnxruntime_session(SEGMENTER).run(None, {"input": model_input(images)})[0]
    np.testing.assert_allclose(out["logits"], ref, rtol=1e-4, atol=1e-4)
    assert out["logits_mask"].shape == (4, 64, 64) and out["logits_mask"].dtype == np.uint8
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-3          # pixels whose argmax rounding cannot flip
    np.testing.assert_array_equal(out["logits_mask"][clear], ref.argmax(1)[clear])


def test_rows_do_not_depend_on_how_they_are_batched():
    images = pixels(10, seed=7)
    predictor = Predictor(CLASSIFIER, HALF)
    whole = predictor({"image": images})
    for size in (1, 3, 7):
        parts = [predictor({"image": images[i:i + size]}) for i in range(0, 10, size)]
        for name in whole:
            np.testing.assert_array_equal(np.concatenate([p[name] for p in parts]),
                                          whole[name])


def test_images_of_other_sizes_and_ragged_batches():
    """Each image is resized to the model's 64x64 as `pyconv run` does (the same code)."""
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in
              [(32, 32), (64, 64), (80, 50)]]
    out = Predictor(CLASSIFIER, HALF)({"image": images})
    session = pyconv.InferenceSession(CLASSIFIER)
    for img, logits in zip(images, out["logits"]):
        x = pixels_to_tensor(img, 3, (0.5,), (0.5,), (64, 64))[None]
        np.testing.assert_array_equal(logits, session.run(None, {"input": x})[0][0])


def test_npy_npz_bytes_and_float_arrays():
    x = model_input(pixels(3, seed=8))
    predictor = Predictor(CLASSIFIER, HALF)
    expected = predictor({"data": x})["logits"]
    encoded = []
    for i, sample in enumerate(x):
        buf = io.BytesIO()
        if i == 0:
            np.save(buf, sample)
        elif i == 1:
            np.savez(buf, input=sample[None], other=np.zeros(2))
        else:
            np.savez(buf, sample)
        encoded.append(buf.getvalue())
    np.testing.assert_array_equal(predictor({"bytes": encoded})["logits"], expected)


def test_pickled_predictor_carries_no_session_and_gives_the_same_rows():
    images = pixels(4, seed=9)
    predictor = Predictor(CLASSIFIER, HALF)
    first = predictor({"image": images})
    copy = pickle.loads(pickle.dumps(predictor))
    assert copy.threads is None                      # opened on the first call, not before
    for name, value in copy({"image": images}).items():
        np.testing.assert_array_equal(value, first[name])


def _pool_call(args):
    predictor, batch = args
    out = predictor(batch)
    return out, predictor.threads, os.getpid(), id(predictor.session)


def test_multiprocessing_pool_gives_the_same_rows():
    images = pixels(12, seed=10)
    predictor = Predictor(CLASSIFIER, HALF)
    batches = [{"image": images[i:i + 3]} for i in range(0, 12, 3)]
    ctx = multiprocessing.get_context("spawn")       # nothing inherited: all by pickling
    with ctx.Pool(2) as pool:
        results = pool.map(_pool_call, [(predictor, b) for b in batches], chunksize=1)
    expected = predictor({"image": images})
    for name in expected:
        np.testing.assert_array_equal(np.concatenate([r[0][name] for r in results]),
                                      expected[name])
    assert {r[1] for r in results} == {len(os.sched_getaffinity(0))}
    sessions = {}
    for _, _, pid, session in results:                # one session per worker process
        sessions.setdefault(pid, set()).add(session)
    assert all(len(s) == 1 for s in sessions.values())


def test_pandas_dataframe_in_dataframe_out():
    pd = pytest.importorskip("pandas", reason="the DataFrame form (Dask's partitions)")
    images = pixels(5, seed=11)
    predictor = Predictor(CLASSIFIER, HALF)
    frame = pd.DataFrame({"image": list(images), "name": list("abcde")}, index=range(10, 15))
    out = predictor(frame)
    assert isinstance(out, pd.DataFrame) and list(out.index) == list(range(10, 15))
    expected = predictor({"image": images})
    np.testing.assert_array_equal(np.stack(out["logits"]), expected["logits"])
    assert list(out["name"]) == list("abcde")


def test_dask_map_partitions():
    dd = pytest.importorskip("dask.dataframe", reason="Dask is optional (not a test extra)")
    import pandas as pd
    images = pixels(6, seed=12)
    predictor = Predictor(CLASSIFIER, HALF)
    frame = dd.from_pandas(pd.DataFrame({"image": list(images)}), npartitions=3)
    meta = predictor(frame.head(1))
    out = frame.map_partitions(predictor, meta=meta.iloc[:0]).compute()
    np.testing.assert_array_equal(np.stack(out["logits"]),
                                  predictor({"image": images})["logits"])


def test_threads_follow_the_affinity_and_never_exceed_it(monkeypatch):
    assert worker_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert worker_cpus() == 1
    assert Predictor(SEGMENTER).session.get_session_options().intra_op_num_threads == 1
    predictor = Predictor(SEGMENTER, threads=2)
    with pytest.warns(RuntimeWarning, match="threads=2: this worker was given 1 CPU"):
        predictor.session
    assert predictor.threads == 1


@pytest.mark.parametrize("build, message", [
    (lambda: Predictor("no/such.onnx"), "no such model file"),
    (lambda: Predictor(CLASSIFIER, top_k=0), "top_k: expected a positive integer"),
    (lambda: Predictor(CLASSIFIER, threads=1.5), "threads: expected a positive integer"),
    (lambda: Preprocess(layout="HWC"), "layout 'HWC'"),
    (lambda: Preprocess(std=(0.5, 0.0, 0.5)), "a standard deviation is 0"),
    (lambda: Preprocess(size=(0, 4)), "size (0, 4)"),
])
def test_bad_settings(build, message):
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        build()


@pytest.mark.parametrize("batch, message", [
    ({"pixels": np.zeros((1, 8, 8, 3), np.uint8)}, "none of the input columns"),
    ({"image": np.zeros((1, 8, 8, 4), np.uint8)}, "4 channel(s), the model input wants 3"),
    ({"data": np.zeros((1, 3, 32, 32), np.float32)}, "takes samples of shape (3, 64, 64)"),
    ({"bytes": [b"not numpy"]}, "not an .npy or .npz file"),
    ({"image": np.array(["text"])}, "expected uint8 pixels, a numeric array"),
    ([1, 2], "expected a batch as a dict of columns"),
])
def test_bad_batches_name_the_row_and_the_problem(batch, message):
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        Predictor(CLASSIFIER, HALF)(batch)


def test_npz_with_several_arrays_none_named_like_the_input():
    buf = io.BytesIO()
    np.savez(buf, a=np.zeros((3, 64, 64)), b=np.zeros((3, 64, 64)))
    with pytest.raises(InvalidArgument, match=r"holds \['a', 'b'\]; name one array 'input'"):
        Predictor(CLASSIFIER)({"bytes": [buf.getvalue()]})


# ------------------------------------------------------------------ pyconv batch, local

def pyconv_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pyconv", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


def write_pngs(directory, images):
    from PIL import Image
    directory.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(directory / f"{i:04d}.png")
    return sorted(str(p) for p in directory.glob("*.png"))


needs_pyarrow = pytest.mark.skipif(
    __import__("importlib").util.find_spec("pyarrow") is None,
    reason="Parquet output needs pyarrow (the pyconv[ray] extra)")


@needs_pyarrow
def test_cli_batch_local_writes_a_row_per_image_sorted_by_path(tmp_path):
    import pyarrow.parquet as pq
    images = pixels(7, seed=13)
    paths = write_pngs(tmp_path / "imgs", images)
    out = tmp_path / "out.parquet"
    r = pyconv_cli("batch", CLASSIFIER, "--inputs", tmp_path / "imgs", "--output", out,
                   "--mean", "0.5", "--std", "0.5", "--batch-size", "3", "--top", "2")
    assert r.returncode == 0, r.stderr
    assert "wrote 7 rows" in r.stdout
    table = pq.read_table(out)
    assert table.column_names == ["path", "logits", "logits_top_k", "logits_top_k_scores"]
    assert table["path"].to_pylist() == paths
    expected = Predictor(CLASSIFIER, HALF, top_k=2)({"image": images})
    for name in ("logits", "logits_top_k", "logits_top_k_scores"):
        np.testing.assert_array_equal(table[name].combine_chunks().to_numpy_ndarray(),
                                      expected[name])


@needs_pyarrow
def test_cli_batch_reads_npy_and_npz_by_glob(tmp_path):
    import pyarrow.parquet as pq
    x = model_input(pixels(3, seed=14))
    np.save(tmp_path / "a.npy", x[0])
    np.savez(tmp_path / "b.npz", input=x[1][None])
    np.save(tmp_path / "c.npy", x[2])
    out = tmp_path / "out.parquet"
    r = pyconv_cli("batch", SEGMENTER, "--inputs", tmp_path / "*.np?", "--output", out)
    assert r.returncode == 0, r.stderr
    table = pq.read_table(out)
    assert [os.path.basename(p) for p in table["path"].to_pylist()] == ["a.npy", "b.npz",
                                                                       "c.npy"]
    expected = Predictor(SEGMENTER)({"data": x})
    np.testing.assert_array_equal(table["logits_mask"].combine_chunks().to_numpy_ndarray(),
                                  expected["logits_mask"])


@needs_pyarrow
@pytest.mark.parametrize("make, args, message", [
    (lambda d: None, ["--inputs", "{d}/nothing"], "no such file or directory"),
    (lambda d: (d / "x.txt").write_text("x"), ["--inputs", "{d}"], "no image"),
    (lambda d: (np.save(d / "x.npy", np.zeros(3)), write_pngs(d, pixels(1, 1))),
     ["--inputs", "{d}"], "1 images and 1 .npy/.npz files"),
    (lambda d: write_pngs(d, pixels(1, 1)), ["--inputs", "{d}", "--workers", "2"],
     "--address and --workers go with --engine ray"),
    (lambda d: (d / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n"), ["--inputs", "{d}"],
     "0.png: not a readable image"),
])
def test_cli_batch_errors_are_one_line(tmp_path, make, args, message):
    make(tmp_path)
    r = pyconv_cli("batch", CLASSIFIER, "--output", tmp_path / "o.parquet",
                   *[a.format(d=tmp_path) for a in args])
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert message in lines[0], lines[0]


@pytest.mark.parametrize("module, args, message", [
    ("ray", ["--engine", "ray"], "--engine ray needs ray[data], which is not installed: "
                                 "pip install 'pyconv[ray]'"),
    ("pyarrow", [], "writing Parquet needs pyarrow, which is not installed: "
                    "pip install 'pyconv[ray]'"),
])
def test_missing_extra_is_named(tmp_path, module, args, message):
    """Without Ray (or pyarrow) the command says which extra to install; `import pyconv`
    and the predictor never import either."""
    fake = tmp_path / "hide" / module
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named "
                                      f"'{module}'\", name='{module}')\n")
    write_pngs(tmp_path / "imgs", pixels(1, seed=1))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "hide"), str(REPO)]),
           "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "pyconv", "batch", CLASSIFIER, "--inputs",
                        tmp_path / "imgs", "--output", tmp_path / "o.parquet", *args],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert message in lines[0], lines[0]
    code = ("import sys, pyconv.batch, pyconv.models as m; "
            "p = pyconv.batch.Predictor(m.path(m.CLASSIFIER)); p.session; "
            "print(sorted(k for k in ('ray', 'pyarrow', 'pandas') if k in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
