"""Interleaved pyconv / onnxruntime latency on the light zoo and the bundled models.

    python benchmarks/compare_models.py --threads 1 2 --repeats 9

Runs the two engines alternately in one process (so machine noise hits both alike) and
prints the median latency of each, their ratio (pyconv / onnxruntime, < 1: pyconv faster)
and the geometric mean per thread count. The pytest-benchmark version is test_models.py.
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))      # this checkout: pyconv, benchmarks
import pyconv  # noqa: E402
from benchmarks.test_models import MODELS, make_session, model_bytes  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("models", nargs="*", default=MODELS)
    args = ap.parse_args()
    for threads in args.threads:
        pyconv.set_num_threads(threads)
        ratios = []
        for name in args.models:
            data, feeds = model_bytes(name)
            p, o = make_session("pyconv", data, threads), make_session("onnxruntime", data,
                                                                         threads)
            for _ in range(2):
                p.run(None, feeds)
                o.run(None, feeds)
            tp, to = [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                p.run(None, feeds)
                tp.append(time.perf_counter() - t)
                t = time.perf_counter()
                o.run(None, feeds)
                to.append(time.perf_counter() - t)
            r = float(np.median(tp) / np.median(to))
            ratios.append(r)
            print(f"{name:24s} {threads}thr  pyconv {np.median(tp) * 1e3:8.2f} ms  "
                  f"onnxruntime {np.median(to) * 1e3:8.2f} ms  ratio {r:5.2f}", flush=True)
        g = float(np.exp(np.mean(np.log(ratios))))
        print(f"{threads} thread(s): geometric mean {g:.2f}, worst {max(ratios):.2f}",
              flush=True)


if __name__ == "__main__":
    main()
