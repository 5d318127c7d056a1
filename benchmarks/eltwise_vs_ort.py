"""Indicative: single element-wise ops (unary on a 1M-float map, binary with broadcasts),
the normalisation ops and a conv fused with tanh, pyconv vs onnxruntime at 1 and 2 threads,
interleaved (min of repeats), plus the Python cost of a bound element-wise step and of a
bound Reshape, and small batched MatMuls of two dynamic operands (attention shapes).

    PYTHONPATH=$PWD python benchmarks/eltwise_vs_ort.py [threads...]
"""
import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import pyconv


def model(nodes, x_shape, y_shape, inits=(), opset=21, inputs=("x",), in_shapes=None):
    f = TensorProto.FLOAT
    in_shapes = in_shapes or {}
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(k, f,
                                                                     in_shapes.get(k, x_shape))
                                       for k in inputs],
                          [helper.make_tensor_value_info("y", f, y_shape)],
                          [numpy_helper.from_array(v, k) for k, v in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=9).SerializeToString()


def sessions(m, threads=1):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    o = ort.InferenceSession(m, so, providers=["CPUExecutionProvider"])
    po = pyconv.SessionOptions()     # (an intra_op_num_threads keyword would be ignored)
    po.intra_op_num_threads = threads
    p = pyconv.InferenceSession(m, po)
    return p, o


def interleaved(p, o, feeds, repeats=15, inner=5, threads=1):
    """Min over repeats of the mean of `inner` runs, per engine, alternating. At one thread
    the clock is the process CPU time (user + system: page faults count), which time
    slices taken by other processes do not inflate; at more, wall time."""
    clock = time.process_time if threads == 1 else time.perf_counter
    best = {"pyconv": np.inf, "ort": np.inf}
    for _ in range(repeats):
        for name, s in (("pyconv", p), ("ort", o)):
            t = clock()
            for _ in range(inner):
                s.run(None, feeds)
            best[name] = min(best[name], (clock() - t) / inner)
    return best


def row(name, b):
    print(f"{name:36s} {b['pyconv']*1e3:10.3f} {b['ort']*1e3:10.3f} "
          f"{b['pyconv']/b['ort']:7.2f}")


def main():
    rng = np.random.default_rng(0)
    shape = [1, 64, 128, 128]          # 1M floats
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    unary = [("Sigmoid", {}), ("Tanh", {}), ("Exp", {}), ("Gelu", {}),
             ("Gelu", {"approximate": "tanh"}), ("Erf", {}), ("Elu", {}), ("Mish", {}),
             ("Softplus", {})]
    threads = [int(t) for t in sys.argv[1:]] or [1, 2]
    print(f"{'case':36s} {'pyconv ms':>10s} {'ort ms':>10s} {'ratio':>7s}")
    for t in threads:
        for op, attrs in unary:
            m = model([helper.make_node(op, ["x"], ["y"], **attrs)], shape, shape,
                      opset=20)
            row(f"{op}{'(tanh)' if attrs else ''} 1M, {t}t",
                interleaved(*sessions(m, t), {"x": x}, threads=t))
        # SiLU as exported: x * Sigmoid(x) (pyconv fuses it into one op)
        m = model([helper.make_node("Sigmoid", ["x"], ["s"]),
                   helper.make_node("Mul", ["x", "s"], ["y"])], shape, shape)
        row(f"x*Sigmoid(x) 1M, {t}t", interleaved(*sessions(m, t), {"x": x}, threads=t))
        for op in ("Add", "Mul", "Div"):
            for what, k in (("full", x[:, ::-1].copy()), ("per-channel", rng.random(
                    (1, 64, 1, 1), np.float32) + 0.5), ("scalar", np.float32([2.0]))):
                full = what == "full"       # k a second graph input
                m = model([helper.make_node(op, ["x", "k"], ["y"])], shape, shape,
                          () if full else [("k", k)], inputs=("x", "k") if full else ("x",))
                feeds = {"x": x, "k": k} if full else {"x": x}
                row(f"{op} {what} 1M, {t}t", interleaved(*sessions(m, t), feeds, threads=t))
        norms = [("LayerNormalization", (1, 196, 768), {"axis": -1}, 768),
                 ("LayerNormalization", (8, 3136, 96), {"axis": -1}, 96),
                 ("GroupNormalization", (1, 256, 64, 64), {"num_groups": 32}, 256),
                 ("InstanceNormalization", (1, 64, 128, 128), {}, 64)]
        for op, nshape, attrs, per in norms:
            xs = rng.standard_normal(nshape).astype(np.float32)
            inits = [("s", rng.standard_normal(per).astype(np.float32)),
                     ("b", rng.standard_normal(per).astype(np.float32))]
            m = model([helper.make_node(op, ["x", "s", "b"], ["y"], **attrs)], nshape,
                      nshape, inits)
            row(f"{op.replace('Normalization', 'Norm')} {nshape}, {t}t",
                interleaved(*sessions(m, t), {"x": xs}, repeats=10, inner=3, threads=t))
    c = 32
    w = (rng.standard_normal((c, c, 3, 3)) * 0.1).astype(np.float32)
    m = model([helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
               helper.make_node("Tanh", ["h"], ["y"])], [1, c, 56, 56], [1, c, 56, 56],
              [("w", w)])
    p, o = sessions(m)
    b = interleaved(p, o, {"x": rng.standard_normal((1, c, 56, 56)).astype(np.float32)})
    row("Conv3x3 32ch 56x56 + Tanh, 1t", b)
    # Per-node cost: a chain of 20 small element-wise nodes (64 floats), per node.
    nodes, prev = [], "x"
    for i in range(20):
        op = ["Sigmoid", "Add", "Mul", "Tanh"][i % 4]
        ins = [prev, "k"] if op in ("Add", "Mul") else [prev]
        nodes.append(helper.make_node(op, ins, [f"t{i}" if i < 19 else "y"]))
        prev = f"t{i}"
    m = model(nodes, [1, 64], [1, 64], [("k", np.float32([[0.5]]))])
    p, o = sessions(m)
    b = interleaved(p, o, {"x": np.ones((1, 64), np.float32)}, repeats=20, inner=200)
    print(f"{'per element-wise node (us), 1t':36s} {b['pyconv']/20*1e6:10.2f} "
          f"{b['ort']/20*1e6:10.2f}")
    # Per shape node: Reshape (to (64,) and back) between Relus, less the Relus' cost.
    nodes, prev = [], "x"
    for i in range(40):
        ins = [prev] if i % 2 else [prev, "s64" if i % 4 == 0 else "s1_64"]
        nodes.append(helper.make_node("Relu" if i % 2 else "Reshape", ins,
                                      [f"t{i}" if i < 39 else "y"]))
        prev = f"t{i}"
    m = model(nodes, [1, 64], [1, 64], [("s64", np.int64([64])), ("s1_64", np.int64([1, 64]))])
    p, o = sessions(m)
    r = interleaved(p, o, {"x": np.ones((1, 64), np.float32)}, repeats=20, inner=200)
    nodes = [helper.make_node("Relu", ["x" if i == 0 else f"t{i - 1}"],
                              [f"t{i}" if i < 19 else "y"]) for i in range(20)]
    p, o = sessions(model(nodes, [1, 64], [1, 64]))
    b = interleaved(p, o, {"x": np.ones((1, 64), np.float32)}, repeats=20, inner=200)
    print(f"{'per Reshape node (us), 1t':36s} {(r['pyconv'] - b['pyconv'])/20*1e6:10.2f} "
          f"{(r['ort'] - b['ort'])/20*1e6:10.2f}")
    # Small batched products of two dynamic operands (OCR recognisers' attention).
    for a_shape, b_shape in [((8, 64, 32), (8, 32, 64)), ((8, 64, 64), (8, 64, 32)),
                             ((1, 8, 80, 32), (1, 8, 32, 80)), ((8, 25, 32), (8, 32, 25))]:
        y_shape = list(np.matmul(np.zeros(a_shape), np.zeros(b_shape)).shape)
        m = model([helper.make_node("MatMul", ["a", "b"], ["y"])], None, y_shape,
                  inputs=("a", "b"), in_shapes={"a": a_shape, "b": b_shape})
        feeds = {"a": rng.standard_normal(a_shape).astype(np.float32),
                 "b": rng.standard_normal(b_shape).astype(np.float32)}
        row(f"MatMul {a_shape}@{b_shape[-2:]}, 1t",
            interleaved(*sessions(m), feeds, repeats=15, inner=100))


if __name__ == "__main__":
    main()
