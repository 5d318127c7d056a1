"""`pyconv demo`: the bundled classifier and segmenter on freshly generated images."""
import os
import secrets
import sys
import time
from pathlib import Path

import numpy as np

import pyconv
from pyconv import models as bundled
from pyconv._optional import require
from pyconv.errors import InvalidArgument, MissingDependency
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


def write_picture(path, shapes, data, preds, count=6):
    """Rows: input image, true mask, predicted mask; then classifier inputs with labels."""
    require("PIL", "the demo picture")
    from PIL import Image, ImageDraw

    cls_x, cls_y, seg_x, seg_y = data
    labels, masks = preds
    scale, pad = 2, 6
    size = seg_x.shape[-1] * scale
    count = min(count, len(seg_x))
    width = pad + count * (size + pad)
    height = 3 * (size + pad) + 2 * 14 + size + 40
    img = Image.new("RGB", (width + 90, height), "white")
    draw = ImageDraw.Draw(img)

    def rgb(x):
        pixels = (shapes.denormalize(x).transpose(1, 2, 0) * 255).astype(np.uint8)
        return Image.fromarray(pixels).resize((size, size), Image.NEAREST)

    def coloured(mask):
        return Image.fromarray(PALETTE[mask % len(PALETTE)]).resize((size, size),
                                                                     Image.NEAREST)
    for r, title in enumerate(("input", "ground truth", "pyconv")):
        draw.text((width + 4, pad + r * (size + pad) + size // 2 - 6), title, fill="black")
    for i in range(count):
        x0 = pad + i * (size + pad)
        img.paste(rgb(seg_x[i]), (x0, pad))
        img.paste(coloured(seg_y[i]), (x0, pad + size + pad))
        img.paste(coloured(masks[i]), (x0, pad + 2 * (size + pad)))
    y0 = 3 * (size + pad) + 14
    draw.text((pad, y0 - 12), "classifier: true / predicted", fill="black")
    for i in range(min(count, len(cls_x))):
        x0 = pad + i * (size + pad)
        img.paste(rgb(cls_x[i]), (x0, y0 + 4))
        ok = labels[i] == cls_y[i]
        draw.text((x0, y0 + size + 8),
                  f"{shapes.CLASSES[cls_y[i]]}/{shapes.CLASSES[labels[i]]}",
                  fill=(0, 120, 0) if ok else (200, 0, 0))
    img.save(path)


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
    print(f"pyconv {pyconv.__version__} demo: {args.samples} fresh images per model "
          f"(seed {seed}), {threads} thread(s), models from {directory}")
    figures, data, preds = evaluate(sessions, ev, args.samples, seed)
    print(f"{'engine':12s} {'accuracy':>9s} {'mean IoU':>9s} {'classify ms':>12s} "
          f"{'segment ms':>11s} {'images/s':>9s}")
    for engine, f in figures.items():
        print(f"{engine:12s} {f['accuracy']:9.3f} {f['miou']:9.3f} {f['cls_ms']:12.3f} "
              f"{f['seg_ms']:11.3f} {f['images_per_s']:9.1f}")
    try:
        write_picture(args.picture, ev.shapes, data, preds["pyconv"])
        print(f"wrote {args.picture} (inputs, ground truth and predicted masks)")
    except MissingDependency as exc:   # the figures above are the demo's verdict
        print(f"pyconv: no picture: {exc}", file=sys.stderr)
    f = figures["pyconv"]
    ok = f["accuracy"] >= MIN_ACCURACY and f["miou"] >= MIN_MEAN_IOU
    print(f"classifier accuracy {f['accuracy']:.3f} (>= {MIN_ACCURACY}), segmenter mean IoU "
          f"{f['miou']:.3f} (>= {MIN_MEAN_IOU}): {'PASSED' if ok else 'FAILED'}")
    return 0 if ok else 1
