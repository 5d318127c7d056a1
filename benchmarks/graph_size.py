"""Indicative: session creation and first-run time against graph length, pyconv and
onnxruntime, for chains of 1k / 10k / 100k nodes (Identity only, and Relu / Add /
Identity mixed). Each engine in its own fresh session; min of a few repeats.

    PYTHONPATH=$PWD python benchmarks/graph_size.py [--sizes 1000,10000,100000] [--repeats 2]

Both should grow linearly with the length (10x nodes: about 10x time).
"""
import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper


def chain(n, ops):
    """x (4,) float -> n nodes cycling through ``ops`` (Add adds x back) -> y."""
    nodes, prev = [], "x"
    for i in range(n):
        op, out = ops[i % len(ops)], f"v{i}"
        nodes.append(helper.make_node(op, [prev, "x"] if op == "Add" else [prev], [out]))
        prev = out
    f = TensorProto.FLOAT
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", f, [4])],
                          [helper.make_tensor_value_info(prev, f, [4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=8).SerializeToString()


def timed(make, feeds):
    """Creation (wall and this process's CPU seconds: on a busy machine the CPU time says
    more), first run and second run seconds, and the output."""
    t0, c0 = time.perf_counter(), time.process_time()
    s = make()
    t1, c1 = time.perf_counter(), time.process_time()
    y = s.run(None, feeds)[0]
    t2 = time.perf_counter()
    s.run(None, feeds)
    return [t1 - t0, c1 - c0, t2 - t1, time.perf_counter() - t2], y


def main():
    import pyconv
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    x = np.arange(4, dtype=np.float32)
    engines = {"pyconv": lambda m: pyconv.InferenceSession(m),
               "onnxruntime": lambda m: ort.InferenceSession(
                   m, providers=["CPUExecutionProvider"])}
    print(f"{'chain':28s} {'engine':12s} {'create s':>9s} {'create cpu s':>13s} "
          f"{'first run s':>12s} {'next run s':>11s}")
    for ops in (["Identity"], ["Relu", "Add", "Identity"]):
        for n in [int(v) for v in args.sizes.split(",")]:
            m = chain(n, ops)
            ys = {}
            for name, make in engines.items():
                best = [np.inf] * 4
                for _ in range(args.repeats):
                    times, ys[name] = timed(lambda: make(m), {"x": x})
                    best = [min(b, t) for b, t in zip(best, times)]
                print(f"{'/'.join(ops) + f' x {n}':28s} {name:12s} {best[0]:9.3f} "
                      f"{best[1]:13.3f} {best[2]:12.4f} {best[3]:11.4f}")
            np.testing.assert_array_equal(ys["pyconv"], ys["onnxruntime"])


if __name__ == "__main__":
    main()
