"""pyconv beside onnxruntime, timed in one process in alternating blocks of calls: min and
median of many repeats and their ratio (pyconv time / onnxruntime time, < 1: faster).

    python benchmarks/interleaved_vs_ort.py [name filter] [repeats]

A shared VM makes separate pytest-benchmark runs drift; alternating blocks see the same
machine state. Layers: depthwise 3x3 144 @56 (stride 1, 2), grouped g=8 128 @28, MaxPool
3x3/2 and AvgPool 2x2/2 on 64 @112, batch 1, float32, 1 and 2 threads."""
import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

import pyconv
import pyconv.functional as F


def ort_runner(op, attrs, x, inits, threads):
    """A single-node onnxruntime session on x; inits: [(name, array)] constant inputs."""
    node = helper.make_node(op, ["x"] + [n for n, _ in inits], ["y"], **attrs)
    graph = helper.make_graph(
        [node], "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor(n, TensorProto.FLOAT, v.shape, v.ravel()) for n, v in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"x": x})[0]


def bench(fa, fb, reps=300, block=10):
    """Blocks of `block` calls of each, alternating (the spinning worker threads of one
    library slow the other down just after a switch, so single calls are not interleaved).
    Returns (min a, median a, min b, median b) in seconds."""
    ta, tb = [], []
    for _ in range(20):
        fa()
        fb()
    for _ in range(max(1, reps // block)):
        for f, t in ((fa, ta), (fb, tb)):
            f()
            for _ in range(block):
                t0 = time.perf_counter()
                f()
                t.append(time.perf_counter() - t0)
    return np.min(ta), np.median(ta), np.min(tb), np.median(tb)


def cases():
    """(name, pyconv callable, (onnx op, attributes, x, constant inputs))."""
    rng = np.random.default_rng(0)
    out = []
    for name, c, size, k, s, p, g in [("dw3x3 144@56 s1", 144, 56, 3, 1, 1, 144),
                                      ("dw3x3 144@56 s2", 144, 56, 3, 2, 1, 144),
                                      ("gconv g8 128@28", 128, 28, 3, 1, 1, 8)]:
        x = rng.standard_normal((1, c, size, size), dtype=np.float32)
        w = (rng.standard_normal((c, c // g, k, k)) / 3).astype(np.float32)
        b = rng.standard_normal(c, dtype=np.float32)
        plan = F.ConvPlan(w, b, s, p, 1, g)
        attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, group=g)
        out.append((name, (lambda plan=plan, x=x: plan.run(x)),
                    ("Conv", attrs, x, [("w", w), ("b", b)])))
    x = rng.standard_normal((1, 64, 112, 112), dtype=np.float32)
    out.append(("maxpool3x3/2 64@112", lambda x=x: F.max_pool2d(x, 3, 2, 1),
                ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4), x, [])))
    out.append(("avgpool2x2/2 64@112", lambda x=x: F.avg_pool2d(x, 2, 2),
                ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2]), x, [])))
    return out


def main(argv):
    name_filter = argv[1] if len(argv) > 1 else ""
    reps = int(argv[2]) if len(argv) > 2 else 300
    print(f"isa={pyconv.get_isa()}")
    print(f"{'layer':24s} thr  pyconv ms (min/med)   ORT ms (min/med)   ratio min / med")
    for name, run, (op, attrs, x, inits) in cases():
        if name_filter not in name:
            continue
        for threads in (1, 2):
            pyconv.set_num_threads(threads)
            run_ort = ort_runner(op, attrs, x, inits, threads)
            np.testing.assert_allclose(run(), run_ort(), rtol=1e-4, atol=1e-4)
            a, am, b, bm = bench(run, run_ort, reps)
            print(f"{name:24s} {threads}   {a * 1e3:7.3f} / {am * 1e3:7.3f}   "
                  f"{b * 1e3:7.3f} / {bm * 1e3:7.3f}   {a / b:5.2f} / {am / bm:5.2f}")


if __name__ == "__main__":
    main(sys.argv)
