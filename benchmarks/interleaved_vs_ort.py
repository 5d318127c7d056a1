"""Every layer of test_layers.py, pyconv beside onnxruntime, timed in one process in
alternating blocks of calls: min and median of many repeats, GFLOP/s, % of the machine's
peak and the ratio pyconv time / onnxruntime time (< 1: pyconv faster).

    python benchmarks/interleaved_vs_ort.py [name filter] [repeats] [--threads 1 2]

A shared VM makes separate pytest-benchmark runs drift; alternating blocks see the same
machine state (this is how the README's layer table is measured)."""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))      # this checkout: pyconv, benchmarks
import pyconv  # noqa: E402
from benchmarks._bench import peak_gflops  # noqa: E402
from benchmarks.test_layers import (CASES, CONV_CASES, make_case, onnxruntime_runner,  # noqa: E402
                                     ort_session, pyconv_runner)


def bench(fa, fb, reps=300, block=10):
    """Blocks of `block` calls of each, alternating. After a switch the other library's
    worker threads keep spinning for a while (onnxruntime's do by default) and take the
    core a waking OpenMP thread needs, so each block starts after a short pause and an
    untimed call. Returns (min a, median a, min b, median b) in seconds."""
    ta, tb = [], []
    for _ in range(20):
        fa()
        fb()
    for _ in range(max(1, reps // block)):
        for f, t in ((fa, ta), (fb, tb)):
            time.sleep(0.02)
            f()
            for _ in range(block):
                t0 = time.perf_counter()
                f()
                t.append(time.perf_counter() - t0)
    return np.min(ta), np.median(ta), np.min(tb), np.median(tb)


def layers(threads):
    """(name, flops, pyconv callable, onnxruntime callable) for every benchmarked layer."""
    for name in CONV_CASES:
        c = make_case(name)
        run, ort = pyconv_runner(c), onnxruntime_runner(c, threads)
        yield name, c["flops"], (lambda run=run, x=c["x"]: run(x)), \
            (lambda ort=ort, x=c["x"]: ort(x))
    rng = np.random.default_rng(0)
    for case in CASES:
        x = rng.standard_normal(case.input_shape, dtype=np.float32)
        params = case.make_params(rng)
        sess = ort_session(case, params, threads)
        yield case.name, case.flops, (lambda case=case, x=x, p=params: case.pyconv(x, p)), \
            (lambda sess=sess, x=x: sess.run(None, {"x": x})[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("filter", nargs="?", default="")
    ap.add_argument("repeats", nargs="?", type=int, default=300)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    print(f"isa={pyconv.get_isa()}; ratio = pyconv time / onnxruntime time (min of "
          f"{args.repeats} calls)")
    print(f"{'layer':30s} thr  pyconv ms  GFLOP/s  %peak    ORT ms  ratio (min / median)")
    for threads in args.threads:
        pyconv.set_num_threads(threads)
        peak = peak_gflops(threads)
        # Measured now, so a slow phase of a shared machine lowers it (and raises %peak).
        print(f"# peak at {threads} thread(s), measured FMA loop: {peak:.1f} GFLOP/s")
        for name, flops, run, run_ort in layers(threads):
            if args.filter not in name:
                continue
            np.testing.assert_allclose(run(), run_ort(), rtol=1e-3, atol=1e-3)
            a, am, b, bm = bench(run, run_ort, args.repeats)
            g = flops / a / 1e9
            print(f"{name:30s} {threads}   {a * 1e3:9.3f}  {g:7.1f}  {100 * g / peak:5.1f}  "
                  f"{b * 1e3:8.3f}  {a / b:5.2f} / {am / bm:5.2f}")


if __name__ == "__main__":
    main()
