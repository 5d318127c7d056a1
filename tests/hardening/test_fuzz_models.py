"""Mutated models through session creation and one run: every case must end in success
or a pyconv exception, never a crash, a hang or another exception.

Default: 2,400 cases (a few seconds). A longer campaign:
    PYCONV_FUZZ_MODELS=50000 python -m pytest tests/hardening/test_fuzz_models.py
"""
import contextlib
import faulthandler
import os
import zlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto

import pyconv
from pyconv.errors import PyconvError
from _models import glue_model, residual_cnn

CASES = int(os.environ.get("PYCONV_FUZZ_MODELS", "2400"))
HANG_SECONDS = 120   # a single case taking this long is a hang: dump stacks and fail
# Address space granted beyond what the process already maps: a mutated dim that makes
# pyconv allocate more than this is a bug (MemoryError here, not the OOM killer).
EXTRA_ADDRESS_SPACE = 4 << 30


@contextlib.contextmanager
def address_space_limit(extra):
    try:
        import resource
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, OSError, ValueError):   # not Linux: no limit, the test still runs
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (mapped + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

_NP = {TensorProto.FLOAT: np.float32, TensorProto.INT64: np.int64,
       TensorProto.INT32: np.int32, TensorProto.BOOL: np.bool_,
       TensorProto.DOUBLE: np.float64, TensorProto.UINT8: np.uint8}
_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
          "tensor(bool)": np.bool_, "tensor(double)": np.float64, "tensor(uint8)": np.uint8}
ODD_INTS = [-(2**62), -(2**31), -7, -1, 0, 1, 2, 3, 5, 64, 2**31, 2**40]


def _odd(rng):
    return int(ODD_INTS[rng.integers(len(ODD_INTS))])


def mutate_proto(model, rng):
    """One structural mutation of a copy of `model` (a ModelProto)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    kind = rng.integers(10)
    if kind == 0 and g.initializer:                       # initializer dims
        t = g.initializer[rng.integers(len(g.initializer))]
        if t.dims:
            t.dims[rng.integers(len(t.dims))] = _odd(rng)
        else:
            t.dims.append(_odd(rng))
    elif kind == 1 and g.initializer:                     # initializer data type
        t = g.initializer[rng.integers(len(g.initializer))]
        t.data_type = int(rng.choice([0, 1, 2, 3, 6, 7, 9, 10, 11, 16, 99]))
    elif kind == 2:                                       # graph input dims / type
        vi = g.input[0].type.tensor_type
        if rng.random() < 0.3:
            vi.elem_type = int(rng.choice([0, 2, 7, 10, 11, 13]))
        elif vi.shape.dim:
            d = vi.shape.dim[rng.integers(len(vi.shape.dim))]
            d.Clear()
            if rng.random() < 0.7:
                d.dim_value = max(_odd(rng), 0)
            else:
                d.dim_param = "sym"
    elif kind == 3:                                       # an attribute's value
        nodes = [n for n in g.node if n.attribute]
        if nodes:
            a = nodes[rng.integers(len(nodes))].attribute
            attr = a[rng.integers(len(a))]
            if attr.ints:
                attr.ints[rng.integers(len(attr.ints))] = _odd(rng)
            elif attr.type == onnx.AttributeProto.INT:
                attr.i = _odd(rng)
            elif attr.type == onnx.AttributeProto.FLOAT:
                attr.f = float(rng.choice([np.nan, np.inf, -1.0, 0.0, 1e30]))
            elif attr.type == onnx.AttributeProto.STRING:
                attr.s = b"bogus"
            else:
                attr.type = int(rng.integers(0, 15))
    elif kind == 4:                                       # drop or add an attribute
        n = g.node[rng.integers(len(g.node))]
        if n.attribute and rng.random() < 0.5:
            del n.attribute[rng.integers(len(n.attribute))]
        else:
            n.attribute.append(onnx.helper.make_attribute(
                str(rng.choice(["axis", "group", "pads", "strides", "kernel_shape", "perm",
                                "mode", "auto_pad"])),
                [_odd(rng), _odd(rng)] if rng.random() < 0.5 else _odd(rng)))
    elif kind == 5:                                       # rewire an input
        n = g.node[rng.integers(len(g.node))]
        names = [o for k in g.node for o in k.output] + [t.name for t in g.initializer] + \
            ["x", "dangling", ""]
        if n.input:
            n.input[rng.integers(len(n.input))] = str(rng.choice(names))
    elif kind == 6:                                       # duplicate / rename an output
        n = g.node[rng.integers(len(g.node))]
        other = g.node[rng.integers(len(g.node))]
        n.output[0] = other.output[0] if rng.random() < 0.5 else g.input[0].name
    elif kind == 7:                                       # op type / domain / opset
        n = g.node[rng.integers(len(g.node))]
        r = rng.random()
        if r < 0.4:
            n.op_type = str(rng.choice(["Conv", "MaxPool", "Relu", "Gemm", "Reshape",
                                        "NoSuchOp", "Concat", "ConvTranspose"]))
        elif r < 0.7:
            n.domain = "com.example"
        else:
            m.opset_import[0].version = int(rng.choice([1, 5, 6, 26, 1000]))
    elif kind == 8:                                       # remove or swap nodes
        if len(g.node) > 1:
            i, j = rng.integers(len(g.node), size=2)
            if rng.random() < 0.5:
                del g.node[int(i)]
            else:
                a, b = onnx.NodeProto(), onnx.NodeProto()
                a.CopyFrom(g.node[int(i)])
                b.CopyFrom(g.node[int(j)])
                g.node[int(i)].CopyFrom(b)
                g.node[int(j)].CopyFrom(a)
    else:                                                 # raw data length
        if g.initializer:
            t = g.initializer[rng.integers(len(g.initializer))]
            if t.raw_data:
                t.raw_data = t.raw_data[:int(rng.integers(len(t.raw_data) + 1))]
            else:
                del t.float_data[int(rng.integers(len(t.float_data) + 1)):]
    return m.SerializeToString()


def mutate_bytes(data, rng):
    b = bytearray(data)
    if rng.random() < 0.3:
        return bytes(b[:rng.integers(len(b))])            # truncated
    for _ in range(int(rng.integers(1, 8))):              # byte flips
        b[rng.integers(len(b))] = int(rng.integers(256))
    return bytes(b)


def feed_for(session, rng):
    feed = {}
    for arg in session.get_inputs():
        dtype = _TYPES.get(arg.type, np.float32)
        shape = tuple(d if isinstance(d, int) and 0 <= d <= 64 else int(rng.integers(1, 3))
                      for d in (arg.shape or ()))
        feed[arg.name] = rng.standard_normal(shape).astype(dtype)
    return feed


def run_case(data, rng):
    try:
        sess = pyconv.InferenceSession(data)
        sess.run(None, feed_for(sess, rng))
        return "ok"
    except PyconvError:
        return "rejected"


@pytest.mark.parametrize("name,build", [("residual_cnn", lambda: residual_cnn(4, 1, 8)),
                                        ("glue", glue_model)])
def test_mutated_models_fail_cleanly(name, build):
    base = build()
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    data = base.SerializeToString()
    assert run_case(data, rng) == "ok"          # the unmutated model is valid
    outcomes = {"ok": 0, "rejected": 0}
    faulthandler.dump_traceback_later(HANG_SECONDS, repeat=True, exit=True)
    try:
        with address_space_limit(EXTRA_ADDRESS_SPACE):
            for i in range(CASES // 2):
                mutated = mutate_bytes(data, rng) if i % 3 == 0 else mutate_proto(base, rng)
                try:
                    outcomes[run_case(mutated, rng)] += 1
                except Exception as exc:
                    raise AssertionError(f"case {i}: {type(exc).__name__}: {exc}") from exc
                faulthandler.cancel_dump_traceback_later()
                faulthandler.dump_traceback_later(HANG_SECONDS, repeat=True, exit=True)
    finally:
        faulthandler.cancel_dump_traceback_later()
    # Both outcomes occur: the mutations are neither all harmless nor all fatal.
    assert outcomes["ok"] > 0 and outcomes["rejected"] > 0, outcomes


# -- graph-level shapes ------------------------------------------------------------------------
# Whole-graph mutations: deep chains, huge fan-in and fan-out, nodes missing inputs or
# outputs, cycles, bogus or missing operator-set imports. Each case must again end in
# success or a pyconv error, within the watchdog and the address-space limit (a pass,
# sort or plan quadratic in the node count shows up as a hang here).
GRAPH_CASES = int(os.environ.get("PYCONV_FUZZ_GRAPHS", "120"))
MAX_NODES_ADDED = 3000
BOGUS_OPSETS = [0, -1, 999, 2**62, -(2**63), 2**63 - 1]


def _some(rng, high=MAX_NODES_ADDED):
    """A count from 1 to ``high``, log-uniform (mostly small, sometimes huge)."""
    return int(np.exp(rng.uniform(0, np.log(high))))


def mutate_graph(model, rng):
    """One graph-level mutation of a copy of ``model`` (a ModelProto)."""
    from onnx import helper
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    values = [o for n in g.node for o in n.output if o]
    kind = int(rng.integers(8))
    if kind == 0:                                   # a deep chain before a graph output
        out = g.output[int(rng.integers(len(g.output)))]
        prev = out.name
        for n in g.node:
            n.output[:] = [o + "_pre" if o == prev else o for o in n.output]
            n.input[:] = [x + "_pre" if x == prev else x for x in n.input]
        prev += "_pre"
        ops = [str(o) for o in rng.choice(["Relu", "Identity", "Dropout", "Neg", "Abs",
                                           "Sigmoid"], size=3)]
        k = _some(rng)
        for i in range(k):
            nxt = out.name if i == k - 1 else f"chain{i}"
            g.node.append(helper.make_node(ops[i % 3], [prev], [nxt]))
            prev = nxt
    elif kind == 1:                                 # huge fan-in, one value or many
        k = _some(rng)
        src = str(rng.choice(values))
        op = str(rng.choice(["Concat", "Sum", "Max", "Mean", "Min"]))
        inputs = [src] * k if rng.random() < 0.5 else \
            [str(rng.choice(values + ["x"])) for _ in range(k)]
        g.node.append(helper.make_node(op, inputs, ["fan_in"], **(
            {"axis": int(rng.integers(-2, 2))} if op == "Concat" else {})))
        g.output.append(helper.make_tensor_value_info("fan_in", TensorProto.FLOAT, None))
    elif kind == 2:                                 # huge fan-out into a Sum
        k = _some(rng)
        src = str(rng.choice(values + ["x"]))
        for i in range(k):
            g.node.append(helper.make_node(str(rng.choice(["Relu", "Neg", "Identity"])),
                                           [src], [f"fan{i}"]))
        g.node.append(helper.make_node("Sum", [f"fan{i}" for i in range(k)], ["fan_out"]))
        g.output.append(helper.make_tensor_value_info("fan_out", TensorProto.FLOAT, None))
    elif kind == 3:                                 # a node loses inputs or outputs
        n = g.node[int(rng.integers(len(g.node)))]
        r = rng.random()
        if r < 0.4:
            del n.input[:]
        elif r < 0.7 and n.input:
            n.input[int(rng.integers(len(n.input)))] = ""
        elif r < 0.85:
            del n.output[:]
        else:
            n.input.extend(["x"] * _some(rng, 8))
    elif kind == 4:                                 # bogus, missing or duplicated opsets
        r = rng.random()
        if r < 0.5:
            m.opset_import[0].version = int(rng.choice(BOGUS_OPSETS))
        elif r < 0.7:
            del m.opset_import[:]
        elif r < 0.85:
            m.opset_import.append(helper.make_opsetid("ai.onnx", 13))
        else:
            m.opset_import.append(helper.make_opsetid("com.example",
                                                      int(rng.choice(BOGUS_OPSETS))))
    elif kind == 5:                                 # a cycle through a later node
        if len(g.node) > 1:
            i, j = sorted(int(v) for v in rng.choice(len(g.node), 2, replace=False))
            if g.node[i].input and g.node[j].output:
                g.node[i].input[0] = g.node[j].output[0]
    elif kind == 6:                                 # graph outputs: none, duplicated, an input
        r = rng.random()
        if r < 0.3:
            del g.output[:]
        elif r < 0.6:
            g.output.append(g.output[0])
        else:
            g.output.append(helper.make_tensor_value_info(g.input[0].name,
                                                          TensorProto.FLOAT, None))
    else:                                           # a long chain of independent branches
        k = _some(rng, 1000)
        for i in range(k):
            g.node.append(helper.make_node("Relu", ["x" if i == 0 else f"br{i - 1}"],
                                           [f"br{i}"]))
            g.node.append(helper.make_node("Identity", [f"br{i}"], [f"side{i}"]))
        g.output.append(helper.make_tensor_value_info(f"br{k - 1}", TensorProto.FLOAT, None))
    return m.SerializeToString()


@pytest.mark.parametrize("name,build", [("residual_cnn", lambda: residual_cnn(4, 1, 8)),
                                        ("glue", glue_model)])
def test_graph_shaped_mutations_fail_cleanly(name, build):
    base = build()
    rng = np.random.default_rng(zlib.crc32(b"graph " + name.encode()))
    outcomes = {"ok": 0, "rejected": 0}
    faulthandler.dump_traceback_later(HANG_SECONDS, repeat=True, exit=True)
    try:
        with address_space_limit(EXTRA_ADDRESS_SPACE):
            for i in range(GRAPH_CASES // 2):
                mutated = mutate_graph(base, rng)
                try:
                    outcomes[run_case(mutated, rng)] += 1
                except Exception as exc:
                    raise AssertionError(f"graph case {i}: {type(exc).__name__}: {exc}") \
                        from exc
                faulthandler.cancel_dump_traceback_later()
                faulthandler.dump_traceback_later(HANG_SECONDS, repeat=True, exit=True)
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert outcomes["ok"] > 0 and outcomes["rejected"] > 0, outcomes
