"""Quantized versions of zoo models, made the way users make them: onnxruntime.quantization.

    python benchmarks/zoo/quantize.py                      # the default CNNs, both modes
    python benchmarks/zoo/quantize.py --models resnet18 --modes qdq
    python benchmarks/zoo/run.py --manifest ~/.cache/pyconv/zoo/quantized/manifest.json

For each float model of the zoo manifest (benchmarks/zoo/export.py) it writes
``<name>_qdq.onnx`` (``quantize_static``, QDQ format, per-channel int8 weights, uint8
activations, calibrated by MinMax on seeded standard-normal inputs of the declared shape)
and ``<name>_dynamic.onnx`` (``quantize_dynamic``: ConvInteger / MatMulInteger with
DynamicQuantizeLinear) into ``<zoo>/quantized/``, with a manifest that run.py reads.

Each entry carries the tolerance its quantization implies: pyconv runs Q/DQ pairs as
written (float kernels between exact quantize / dequantize steps) while onnxruntime fuses
them into integer kernels, so a value on a rounding tie may land one quantum away and
carry on through the layers. The tolerance is relative to max|ref| like run.py's: a few
output quanta (2 ** -6 of the range, the step of a 7-bit signal), or, where onnxruntime's
optimised and unoptimised runs of the model already differ by more, twice that spread
(run.py measures it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from benchmarks.zoo.run import (DEFAULT_DIR, QUANTIZED_TOLERANCE, load_entries,  # noqa: E402
                                make_feeds)

DEFAULT_MODELS = ("resnet18", "resnet50", "mobilenetv2_100", "mobilenetv3_large_100",
                  "efficientnet_b0", "regnetx_002", "densenet121", "repvgg_a0")
MODES = ("qdq", "dynamic")
TOLERANCE = QUANTIZED_TOLERANCE
CALIBRATION_INPUTS = 8


def quantize(entry, mode, out_dir):
    """Writes one quantized model; returns its manifest record."""
    from onnxruntime import quantization as q
    name = f"{entry['name']}_{mode}"
    dst = os.path.join(out_dir, name + ".onnx")
    if mode == "dynamic":
        q.quantize_dynamic(entry["path"], dst, weight_type=q.QuantType.QInt8)
    else:
        class Calibration(q.CalibrationDataReader):
            def __init__(self):
                self.feeds = iter(make_feeds(entry, seed=1 + i)
                                  for i in range(CALIBRATION_INPUTS))

            def get_next(self):
                return next(self.feeds, None)
        q.quantize_static(entry["path"], dst, Calibration(), quant_format=q.QuantFormat.QDQ,
                          per_channel=True, activation_type=q.QuantType.QUInt8,
                          weight_type=q.QuantType.QInt8)
    record = {k: v for k, v in entry.items() if k not in ("path", "manifest", "file")}
    record.update(name=name, file=name + ".onnx", quantization=mode,
                  float_model=entry["name"], tolerance=TOLERANCE)
    return record


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=DEFAULT_DIR, help=f"zoo folder (default {DEFAULT_DIR})")
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = ap.parse_args(argv)
    entries = {e["name"]: e for e in load_entries([os.path.join(args.dir, "manifest.json")])}
    unknown = sorted(set(args.models) - set(entries))
    if unknown:
        ap.error(f"not in {args.dir}/manifest.json: {unknown}")
    out_dir = os.path.join(args.dir, "quantized")
    os.makedirs(out_dir, exist_ok=True)
    manifest_path = os.path.join(out_dir, "manifest.json")
    records = {}
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            records = {r["name"]: r for r in json.load(f)["models"]}
    for name in args.models:
        for mode in args.modes:
            print(f"{name} {mode} ...", flush=True)
            record = quantize(entries[name], mode, out_dir)
            records[record["name"]] = record
            with open(manifest_path, "w") as f:
                json.dump({"models": list(records.values())}, f, indent=1)
    print(f"{len(records)} models in {manifest_path}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
