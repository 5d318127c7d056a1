"""Indicative: single element-wise ops and a conv fused with tanh, pyconv vs onnxruntime at
one thread, interleaved (min of repeats), plus the Python cost of a bound element-wise step.

    PYTHONPATH=$PWD python benchmarks/eltwise_vs_ort.py
"""
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import pyconv


def model(nodes, x_shape, y_shape, inits=(), opset=20):
    f = TensorProto.FLOAT
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", f, x_shape)],
                          [helper.make_tensor_value_info("y", f, y_shape)],
                          [numpy_helper.from_array(v, k) for k, v in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=9).SerializeToString()


def sessions(m):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    o = ort.InferenceSession(m, so, providers=["CPUExecutionProvider"])
    p = pyconv.InferenceSession(m, intra_op_num_threads=1)
    return p, o


def interleaved(p, o, feeds, repeats=15, inner=5):
    best = {"pyconv": np.inf, "ort": np.inf}
    for _ in range(repeats):
        for name, s in (("pyconv", p), ("ort", o)):
            t = time.perf_counter()
            for _ in range(inner):
                s.run(None, feeds)
            best[name] = min(best[name], (time.perf_counter() - t) / inner)
    return best


def main():
    rng = np.random.default_rng(0)
    shape = [1, 64, 128, 128]          # 1M floats
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    cases = [("Sigmoid", {}), ("Tanh", {}), ("Gelu", {}), ("Gelu", {"approximate": "tanh"}),
             ("Erf", {}), ("Elu", {}), ("Mish", {}), ("Softplus", {})]
    print(f"{'case':28s} {'pyconv ms':>10s} {'ort ms':>10s} {'ratio':>7s}")
    for op, attrs in cases:
        m = model([helper.make_node(op, ["x"], ["y"], **attrs)], shape, shape)
        p, o = sessions(m)
        b = interleaved(p, o, {"x": x})
        name = op + ("(tanh)" if attrs else "") + " 1M"
        print(f"{name:28s} {b['pyconv']*1e3:10.3f} {b['ort']*1e3:10.3f} "
              f"{b['pyconv']/b['ort']:7.2f}")
    c = 32
    w = (rng.standard_normal((c, c, 3, 3)) * 0.1).astype(np.float32)
    m = model([helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
               helper.make_node("Tanh", ["h"], ["y"])], [1, c, 56, 56], [1, c, 56, 56],
              [("w", w)])
    p, o = sessions(m)
    b = interleaved(p, o, {"x": rng.standard_normal((1, c, 56, 56)).astype(np.float32)})
    print(f"{'Conv3x3 32ch 56x56 + Tanh':28s} {b['pyconv']*1e3:10.3f} {b['ort']*1e3:10.3f} "
          f"{b['pyconv']/b['ort']:7.2f}")
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
    print(f"{'per element-wise node (us)':28s} {b['pyconv']/20*1e6:10.2f} "
          f"{b['ort']/20*1e6:10.2f}")


if __name__ == "__main__":
    main()
