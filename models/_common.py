"""Shared helpers for the training scripts: determinism, ONNX export and its checks.

Dev-only (imports torch); nothing in ``pyconv/`` imports this. The dataset and the
evaluation helpers are the package's (``pyconv.models.shapes`` / ``.evaluate``): the
repository root goes first on ``sys.path`` so the scripts use this checkout's pyconv
(built in place: ``python setup.py build_ext --inplace``).
"""
import collections
import os
import random
import sys
import time

import numpy as np
import onnx
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pyconv's supported op set; an export using anything else fails.
from pyconv.models.evaluate import SUPPORTED_OPS as ALLOWED_OPS  # noqa: E402

OPSET = 17
IR_VERSION = 8          # what opset 17 needs; onnxruntime 1.31 loads up to IR 13

#: Where the exported models go: the package data of pyconv.models.
BUNDLED_DIR = os.path.join(REPO, "pyconv", "models")


def seed_everything(seed, threads):
    """Fixed seeds, deterministic kernels and a fixed thread count.

    Thread count is part of the recipe: a different count changes the float
    summation order in some CPU kernels, hence the trained weights' last bits.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    torch.use_deterministic_algorithms(True)


def op_histogram(model):
    """``{op_type: count}`` of a ModelProto's main graph, most frequent first."""
    counts = collections.Counter(node.op_type for node in model.graph.node)
    return dict(counts.most_common())


def count_params(model):
    """Number of float parameters stored in the ONNX initializers."""
    return int(sum(np.prod(init.dims) for init in model.graph.initializer))


def export_onnx(net, path, example, input_name, output_name, script):
    """Export ``net`` (eval mode) to ONNX with a dynamic batch axis, then check it.

    Checks: ``onnx.checker`` (full), every op in :data:`ALLOWED_OPS`, and onnxruntime's
    output within 1e-4 of torch's on ``example``. ``script`` (the training script's file
    name) goes into the model's doc string. Returns the loaded ModelProto.
    """
    net.eval()
    # dynamo=False: the TorchScript exporter works offline and emits plain ONNX ops.
    # do_constant_folding=False keeps BatchNormalization nodes (folding would merge them
    # into the convs), so the graph exercises pyconv's own BN-folding pass.
    torch.onnx.export(
        net, (example,), path, dynamo=False, opset_version=OPSET,
        input_names=[input_name], output_names=[output_name],
        dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        do_constant_folding=False)
    model = onnx.load(path)
    model.ir_version = IR_VERSION
    model.doc_string = f"Trained and exported by models/{os.path.basename(script)}"
    onnx.save(model, path)
    onnx.checker.check_model(path, full_check=True)

    ops = op_histogram(model)
    bad = sorted(set(ops) - ALLOWED_OPS)
    if bad:
        raise RuntimeError(f"{path}: ops outside pyconv's supported set: {bad}")

    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {input_name: example.numpy()})[0]
    with torch.no_grad():
        want = net(example).numpy()
    err = float(np.max(np.abs(got - want)))
    if err > 1e-4:
        raise RuntimeError(f"{path}: onnxruntime differs from torch by {err:.2e}")
    print(f"exported {path}: {os.path.getsize(path) / 1024:.1f} KiB, "
          f"{count_params(model):,} params, opset {OPSET}, IR {IR_VERSION}, "
          f"max |ort - torch| = {err:.1e}")
    print("op histogram:", ", ".join(f"{k} {v}" for k, v in ops.items()))
    return model


class Timer:
    """Wall-clock seconds since construction (for the training log)."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self):
        return time.perf_counter() - self.start
