"""Measure the bundled models on fresh synthetic images: accuracy / mean IoU and latency.

Usage::

    python -m pyconv.models.evaluate [--engine onnxruntime|pyconv] [--threads 1]
                                     [--n-cls 2000] [--n-seg 500]

Loads the bundled ``shapes_classifier.onnx`` and ``shapes_unet.onnx`` (:mod:`pyconv.models`)
with the chosen engine (``pyconv.InferenceSession`` mirrors onnxruntime's
``InferenceSession``), runs them on images generated from seeds the training scripts never
use (:data:`CLS_SEED`, :data:`SEG_SEED`), and prints the classifier accuracy, the segmenter
mean IoU (with IoU per class) and latency: median over runs of one batch-1 image, and
batched throughput.

The helper functions are importable (``tests/test_models.py``, ``pyconv demo``).
Imports only NumPy plus the engine.
"""
import argparse
import os
import time

import numpy as np

from pyconv import models
from pyconv.models import shapes

CLASSIFIER = models.path(models.CLASSIFIER)
SEGMENTER = models.path(models.SEGMENTER)

#: Evaluation seeds; training uses 999..1099 (classifier) and 1999..2099 (segmenter).
CLS_SEED = 123456
SEG_SEED = 654321

ENGINES = ("onnxruntime", "pyconv")

#: The op set pyconv's ONNX executor supports; the bundled models use nothing else.
SUPPORTED_OPS = frozenset("""
    Conv ConvTranspose MaxPool AveragePool GlobalAveragePool GlobalMaxPool Resize
    BatchNormalization Relu LeakyRelu Clip Sigmoid HardSwish Tanh Softmax Add Mul Concat
    Reshape Flatten Gemm MatMul Transpose Squeeze Unsqueeze Pad Shape Gather Constant
    Identity Dropout ReduceMean Slice Cast""".split())


def open_session(path, engine="onnxruntime", threads=None):
    """An inference session for ``path`` under ``engine``.

    Parameters
    ----------
    path : str
        ONNX file.
    engine : {'onnxruntime', 'pyconv'}
        Which runtime. Both expose ``run(None, {name: x})`` and ``get_inputs()``.
    threads : int, optional
        Intra-op threads; None keeps the engine's default.

    Returns
    -------
    session
    """
    if engine == "onnxruntime":
        import onnxruntime as ort
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    if engine == "pyconv":
        import pyconv
        opts = pyconv.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        return pyconv.InferenceSession(path, opts)
    raise ValueError(f"unknown engine {engine!r}; choose from {ENGINES}")


def _input_name(session):
    return session.get_inputs()[0].name


def predict(session, images, batch=100):
    """Argmax over axis 1 of the model's first output, run in batches: int64 array."""
    name = _input_name(session)
    out = [np.asarray(session.run(None, {name: images[i:i + batch]})[0]).argmax(1)
           for i in range(0, len(images), batch)]
    return np.concatenate(out).astype(np.int64)


def classifier_accuracy(session, n=2000, seed=CLS_SEED, size=64):
    """Top-1 accuracy on ``n`` fresh ``shapes.make_classification`` images.

    Returns
    -------
    accuracy : float
    confusion : ndarray, int64, shape (NUM_CLASSES, NUM_CLASSES)
        Rows: true class, columns: predicted class.
    """
    x, y = shapes.make_classification(n, seed, size=size)
    pred = predict(session, x)
    k = shapes.NUM_CLASSES
    confusion = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    return float((pred == y).mean()), confusion


def segmenter_miou(session, n=500, seed=SEG_SEED, size=64):
    """Dataset-level mean IoU (``shapes.mean_iou``) on ``n`` fresh segmentation images.

    Returns
    -------
    miou : float
    per_class : ndarray, float64, shape (NUM_CLASSES + 1,)
    """
    x, m = shapes.make_segmentation(n, seed, size=size)
    return shapes.mean_iou(predict(session, x, batch=50), m)


def latency_ms(session, x, runs=50, min_time=0.5):
    """Median wall time of ``session.run`` on ``x``, in ms, after one warm-up run."""
    name = _input_name(session)
    session.run(None, {name: x})
    times, start = [], time.perf_counter()
    while len(times) < runs and (time.perf_counter() - start < min_time or len(times) < 5):
        t0 = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", choices=ENGINES, default="onnxruntime")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    ap.add_argument("--n-cls", type=int, default=2000, help="classifier images")
    ap.add_argument("--n-seg", type=int, default=500, help="segmenter images")
    args = ap.parse_args(argv)

    print(f"engine {args.engine}, {args.threads} thread(s)")
    cls = open_session(CLASSIFIER, args.engine, args.threads)
    acc, confusion = classifier_accuracy(cls, args.n_cls)
    x1, _ = shapes.make_classification(64, CLS_SEED + 1)
    print(f"\nclassifier  {os.path.basename(CLASSIFIER)}: accuracy {acc:.4f} "
          f"on {args.n_cls} fresh images (seed {CLS_SEED})")
    print("  confusion (rows true, cols predicted; " + " ".join(shapes.CLASSES) + "):")
    for row in confusion:
        print("   " + " ".join(f"{v:5d}" for v in row))
    print(f"  latency batch 1: {latency_ms(cls, x1[:1]):.3f} ms, "
          f"batch 64: {latency_ms(cls, x1) / 64:.3f} ms/image")

    seg = open_session(SEGMENTER, args.engine, args.threads)
    miou, per_class = segmenter_miou(seg, args.n_seg)
    x2, _ = shapes.make_segmentation(16, SEG_SEED + 1)
    print(f"\nsegmenter   {os.path.basename(SEGMENTER)}: mean IoU {miou:.4f} "
          f"on {args.n_seg} fresh images (seed {SEG_SEED})")
    names = ("background",) + shapes.CLASSES
    print("  IoU per class: " + ", ".join(f"{n} {v:.3f}" for n, v in zip(names, per_class)))
    print(f"  latency batch 1: {latency_ms(seg, x2[:1]):.3f} ms, "
          f"batch 16: {latency_ms(seg, x2) / 16:.3f} ms/image")


if __name__ == "__main__":
    main()
