"""Structured attribute mutation per op family, with onnxruntime as the oracle.

Each case is one node of a family (convolution, transposed convolution, pooling, Gemm,
resize, layout and reduction ops, activations) with valid attributes, one to three of
which are then replaced by a structured bad value (0, negative, huge, a wrong-length
list, a neighbouring value). Every case must end in success or a pyconv error, never a
crash, hang or another exception (under an address-space limit and a watchdog, as the
model fuzzer); where onnxruntime and pyconv both run it, their outputs must agree.
Where only one of them accepts the case, nothing is asserted (each refuses some
attribute combinations the other runs), nor where onnxruntime's output overflows (inf,
NaN or above 1e6: the order of float operations decides it); the counts are printed.

Default: 400 cases (seconds). A long campaign:
    PYCONV_FUZZ_ATTRS=20000 python -m pytest tests/hardening/test_fuzz_attributes.py -s
"""
import faulthandler
import os
import zlib

import numpy as np
import pytest
from onnx import TensorProto, helper

import pyconv
from pyconv.errors import PyconvError
from test_fuzz_models import EXTRA_ADDRESS_SPACE, HANG_SECONDS, address_space_limit

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the oracle")

CASES = int(os.environ.get("PYCONV_FUZZ_ATTRS", "400"))
F = TensorProto.FLOAT
HOSTILE_INTS = [-(2**62), -(2**31), -3, -1, 0, 1, 2, 3, 4, 7, 2**31, 2**40]


def _conv(rng):
    nd = int(rng.integers(1, 4))
    g = int(rng.choice([1, 2]))
    cin, cout, k = 2 * g, 2 * g, int(rng.integers(1, 4))
    x = rng.standard_normal((1, cin) + (6,) * nd).astype(np.float32)
    w = rng.standard_normal((cout, cin // g) + (k,) * nd).astype(np.float32)
    attrs = {"kernel_shape": [k] * nd, "strides": [int(rng.integers(1, 3))] * nd,
             "pads": [int(rng.integers(0, 2))] * (2 * nd), "dilations": [1] * nd, "group": g}
    return "Conv", {"x": x, "w": w, "b": rng.standard_normal(cout).astype(np.float32)}, attrs


def _conv_transpose(rng):
    nd = int(rng.integers(1, 3))
    g = int(rng.choice([1, 2]))
    cin, cout, k = 2 * g, 2 * g, int(rng.integers(1, 4))
    x = rng.standard_normal((1, cin) + (5,) * nd).astype(np.float32)
    w = rng.standard_normal((cin, cout // g) + (k,) * nd).astype(np.float32)
    attrs = {"kernel_shape": [k] * nd, "strides": [int(rng.integers(1, 3))] * nd,
             "pads": [0] * (2 * nd), "dilations": [1] * nd, "group": g,
             "output_padding": [0] * nd}
    return "ConvTranspose", {"x": x, "w": w}, attrs


def _pool(rng):
    op = str(rng.choice(["MaxPool", "AveragePool", "LpPool"]))
    nd = int(rng.integers(1, 4))
    x = rng.standard_normal((1, 3) + (7,) * nd).astype(np.float32)
    attrs = {"kernel_shape": [int(rng.integers(1, 4))] * nd,
             "strides": [int(rng.integers(1, 3))] * nd, "pads": [0] * (2 * nd)}
    if op == "MaxPool":
        attrs.update(ceil_mode=0, dilations=[1] * nd, storage_order=0)
    elif op == "AveragePool":
        attrs.update(ceil_mode=0, count_include_pad=0)
    else:
        attrs.update(p=2)
    return op, {"x": x}, attrs


def _gemm(rng):
    ta, tb = int(rng.integers(2)), int(rng.integers(2))
    m, k, n = (int(v) for v in rng.integers(1, 5, size=3))
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    c = rng.standard_normal((n,)).astype(np.float32)
    return "Gemm", {"a": a, "b": b, "c": c}, {"alpha": 0.5, "beta": 2.0, "transA": ta,
                                              "transB": tb}


def _layout(rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    op = str(rng.choice(["Transpose", "Flatten", "Softmax", "Concat", "DepthToSpace",
                         "SpaceToDepth", "LRN", "ReduceMean", "ArgMax", "Split"]))
    attrs = {"Transpose": {"perm": [int(v) for v in rng.permutation(4)]},
             "Flatten": {"axis": 1}, "Softmax": {"axis": -1}, "Concat": {"axis": 1},
             "DepthToSpace": {"blocksize": 1, "mode": "DCR"},
             "SpaceToDepth": {"blocksize": 2}, "LRN": {"size": 3, "alpha": 1e-4,
                                                        "beta": 0.75, "bias": 1.0},
             "ReduceMean": {"axes": [2, 3], "keepdims": 1},
             "ArgMax": {"axis": 1, "keepdims": 1, "select_last_index": 0},
             "Split": {"axis": 2}}[op]
    return op, {"x": x}, attrs


def _activation(rng):
    x = (rng.standard_normal((2, 5)) * 3).astype(np.float32)
    op = str(rng.choice(["LeakyRelu", "Elu", "Selu", "HardSigmoid", "ThresholdedRelu",
                         "Celu", "HardSwish", "Softplus"]))
    attrs = {"LeakyRelu": {"alpha": 0.1}, "Elu": {"alpha": 1.0},
             "Selu": {"alpha": 1.67, "gamma": 1.05}, "HardSigmoid": {"alpha": 0.2, "beta": 0.5},
             "ThresholdedRelu": {"alpha": 1.0}, "Celu": {"alpha": 1.0}, "HardSwish": {},
             "Softplus": {}}[op]
    return op, {"x": x}, attrs


def _resize(rng):
    x = rng.standard_normal((1, 2, 3, 4)).astype(np.float32)
    scales = np.array([1, 1, 2, 1.5], np.float32)
    attrs = {"mode": str(rng.choice(["nearest", "linear", "cubic"])),
             "coordinate_transformation_mode": str(rng.choice(
                 ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"])),
             "nearest_mode": "round_prefer_floor", "cubic_coeff_a": -0.75,
             "exclude_outside": 0}
    return "Resize", {"x": x, "": None, "scales": scales}, attrs


FAMILIES = {"conv": _conv, "conv_transpose": _conv_transpose, "pool": _pool, "gemm": _gemm,
            "layout": _layout, "activation": _activation, "resize": _resize}
STRINGS = ["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "bogus", "", "nearest", "linear",
           "cubic", "CRD", "DCR", "half_pixel", "tf_crop_and_resize", "floor", "ceil"]


def _mutate(value, rng):
    """A structured bad (or merely different) value of the same kind as ``value``."""
    if isinstance(value, list):
        r = rng.random()
        if r < 0.25 and value:
            return value[:-1] if len(value) > 1 and rng.random() < 0.5 else \
                value + [value[-1]]                 # a wrong length
        out = list(value)
        if out:
            out[int(rng.integers(len(out)))] = int(rng.choice(HOSTILE_INTS))
        return out
    if isinstance(value, float):
        return float(rng.choice([0.0, -1.0, 1e-30, 1e30, np.inf, -np.inf, np.nan, 2.5]))
    if isinstance(value, str):
        return str(rng.choice(STRINGS))
    return int(rng.choice(HOSTILE_INTS))


def make_case(rng):
    """(model bytes, feeds, whether the outputs are comparable) of one mutated case: not
    when a float attribute is infinite or huge (LRN's beta = 1e30 turns a last-bit
    difference in the base into 1 or inf)."""
    family = FAMILIES[list(FAMILIES)[int(rng.integers(len(FAMILIES)))]]
    op, inputs, attrs = family(rng)
    if rng.random() < 0.9 and attrs:
        for key in rng.choice(list(attrs), size=int(rng.integers(1, min(3, len(attrs)) + 1)),
                              replace=False):
            attrs[str(key)] = _mutate(attrs[str(key)], rng)
    elif rng.random() < 0.5:       # an attribute the op may not have, or auto_pad
        attrs[str(rng.choice(["auto_pad", "axis", "group", "ceil_mode"]))] = \
            str(rng.choice(STRINGS)) if rng.random() < 0.5 else int(rng.choice(HOSTILE_INTS))
    names = list(inputs)
    feeds = {k: v for k, v in inputs.items() if k and k != "scales"}
    inits = [helper.make_tensor(k, F, v.shape, v.reshape(-1).tolist())
             for k, v in inputs.items() if k == "scales"]
    if op == "Concat":
        names = ["x", "x"]
    node = helper.make_node(op, names, ["y"], **attrs)
    graph = helper.make_graph(
        [node], "fuzz", [helper.make_tensor_value_info(k, F, v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info("y", TensorProto.INT64 if op == "ArgMax" else F, None)],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=8)
    comparable = all(abs(v) < 1e6 for v in attrs.values()
                     if isinstance(v, float) and not np.isnan(v))
    return model.SerializeToString(), feeds, comparable


def _moderate(y):
    """Finite and below 1e6: an output whose value does not depend on where two engines
    overflow (a cubic coefficient of 1e30 gives inf - inf in one order, a large finite
    value in another). Others are checked for failing cleanly only."""
    return y.dtype.kind != "f" or (np.isfinite(y).all() and np.abs(y).max(initial=0) < 1e6)


def _describe(model, feeds):
    import onnx
    node = onnx.load_model_from_string(model).graph.node[0]
    return (f"{helper.printable_node(node)} on " +
            ", ".join(f"{k} {v.shape}" for k, v in feeds.items()))


def run_pyconv(model, feeds):
    try:
        return pyconv.InferenceSession(model).run(None, feeds)
    except PyconvError:
        return None


def run_onnxruntime(model, feeds):
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"]).run(
            None, feeds)
    except Exception:       # noqa: BLE001 - any refusal of the oracle's: not compared
        return None


def test_mutated_attributes_fail_cleanly_or_match_onnxruntime():
    rng = np.random.default_rng(zlib.crc32(b"attributes"))
    counts = {"both": 0, "both, overflowing": 0, "neither": 0, "only onnxruntime": 0,
              "only pyconv": 0}
    faulthandler.dump_traceback_later(HANG_SECONDS, repeat=True, exit=True)
    try:
        with address_space_limit(EXTRA_ADDRESS_SPACE):
            for i in range(CASES):
                model, feeds, comparable = make_case(rng)
                try:
                    got = run_pyconv(model, feeds)
                except Exception as exc:
                    raise AssertionError(f"attribute case {i}: {type(exc).__name__}: {exc}") \
                        from exc
                want = run_onnxruntime(model, feeds)
                if got is not None and want is not None and not (
                        comparable and all(_moderate(w) for w in want)):
                    counts["both, overflowing"] += 1    # float overflow orders differ
                elif got is not None and want is not None:
                    counts["both"] += 1
                    where = f"attribute case {i}: {_describe(model, feeds)}"
                    for g, w in zip(got, want):
                        assert g.shape == w.shape, f"{where}: {g.shape} != {w.shape}"
                        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=where)
                else:
                    counts["neither" if got is None and want is None else
                           "only pyconv" if got is not None else "only onnxruntime"] += 1
                faulthandler.cancel_dump_traceback_later()
                faulthandler.dump_traceback_later(HANG_SECONDS, repeat=True, exit=True)
    finally:
        faulthandler.cancel_dump_traceback_later()
    print(counts)
    # The mutations both leave runnable cases (compared) and make refused ones.
    assert counts["both"] > 0 and counts["neither"] > 0, counts
