"""`pyconv demo`: the bundled classifier and segmenter on freshly generated images."""
import os
import secrets
import sys
import time
from pathlib import Path

import numpy as np

import pyconv
from pyconv import models as bundled
from pyconv.cli import _plot
from pyconv.errors import InvalidArgument
from pyconv.models import evaluate as ev

CLASSIFIER = bundled.CLASSIFIER
SEGMENTER = bundled.SEGMENTER
#: The bundled models' promises (models/README.md); the demo fails below them.
MIN_ACCURACY = 0.95
MIN_MEAN_IOU = 0.90
# Mask colours: background, then one per shape class.
PALETTE = np.array([(20, 20, 20), (230, 25, 75), (60, 180, 75), (255, 225, 25),
                    (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)], np.uint8)


def models_dir(explicit=None):
    """--models, else $PYCONV_MODELS, else the models installed with pyconv (package data
    of pyconv.models)."""
    candidates = [explicit] if explicit else [
        os.environ.get("PYCONV_MODELS"), Path(bundled.path(CLASSIFIER)).parent]
    for c in candidates:
        if c and (Path(c) / CLASSIFIER).is_file() and (Path(c) / SEGMENTER).is_file():
            return Path(c)
    raise InvalidArgument(f"bundled models not found in {[str(c) for c in candidates if c]}: "
                          f"expected {CLASSIFIER} and {SEGMENTER} (use --models DIR)")


def evaluate(sessions, ev, n, seed):
    """{engine: figures} for every session pair (classifier, segmenter)."""
    shapes = ev.shapes
    cls_x, cls_y = shapes.make_classification(n, seed)
    seg_x, seg_y = shapes.make_segmentation(n, seed + 1)
    figures, preds = {}, {}
    for engine, (classifier, segmenter) in sessions.items():
        t0 = time.perf_counter()
        labels = ev.predict(classifier, cls_x, batch=50)
        masks = ev.predict(segmenter, seg_x, batch=50)
        elapsed = time.perf_counter() - t0
        miou, _ = shapes.mean_iou(masks, seg_y)
        figures[engine] = dict(accuracy=float((labels == cls_y).mean()), miou=float(miou),
                               cls_ms=ev.latency_ms(classifier, cls_x[:1], runs=20),
                               seg_ms=ev.latency_ms(segmenter, seg_x[:1], runs=20),
                               images_per_s=2 * n / elapsed)
        preds[engine] = (labels, masks)
    return figures, (cls_x, cls_y, seg_x, seg_y), preds


def run_demo(args):
    directory = models_dir(args.models)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    threads = pyconv.get_num_threads()
    models = [str(directory / m) for m in (CLASSIFIER, SEGMENTER)]
    sessions = {"pyconv": tuple(ev.open_session(m, "pyconv", threads) for m in models)}
    try:
        sessions["onnxruntime"] = tuple(ev.open_session(m, "onnxruntime", threads)
                                        for m in models)
    except ImportError:   # onnxruntime is optional: pyconv's figures alone
        pass
    picture = args.picture or "pyconv_demo.png"
    try:
        _plot.require_matplotlib("--picture")
        draw = True
    except InvalidArgument:
        if args.picture:                # asked for by name: an error before the work
            raise
        draw = False
    print(f"pyconv {pyconv.__version__} demo: {args.samples} fresh images per model "
          f"(seed {seed}), {threads} thread(s), models from {directory}")
    figures, data, preds = evaluate(sessions, ev, args.samples, seed)
    print(f"{'engine':12s} {'accuracy':>9s} {'mean IoU':>9s} {'classify ms':>12s} "
          f"{'segment ms':>11s} {'images/s':>9s}")
    for engine, f in figures.items():
        print(f"{engine:12s} {f['accuracy']:9.3f} {f['miou']:9.3f} {f['cls_ms']:12.3f} "
              f"{f['seg_ms']:11.3f} {f['images_per_s']:9.1f}")
    if draw:
        _plot.demo_picture(picture, ev.shapes, PALETTE, data, preds, figures)
        print(f"wrote {picture} (inputs, ground truth and each engine's masks and labels)")
    else:
        print("no picture: matplotlib is not installed (pip install 'pyconv[plot]')")
    f = figures["pyconv"]
    ok = f["accuracy"] >= MIN_ACCURACY and f["miou"] >= MIN_MEAN_IOU
    print(f"classifier accuracy {f['accuracy']:.3f} (>= {MIN_ACCURACY}), segmenter mean IoU "
          f"{f['miou']:.3f} (>= {MIN_MEAN_IOU}): {'PASSED' if ok else 'FAILED'}")
    return 0 if ok else 1
