"""Median latency of every benchmarked model under ONE engine, in this process only.

    python benchmarks/models_one_engine.py pyconv 2 > pyconv-2.txt
    python benchmarks/models_one_engine.py onnxruntime 2 > ort-2.txt

Each engine in its own process: two thread pools in one process (compare_models.py) steal
the cores from each other at 2 threads, whichever spins. Same models and inputs as
test_models.py (the light zoo with random weights, the bundled models), batch 1."""
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))      # this checkout: pyconv, benchmarks
import pyconv  # noqa: E402
from benchmarks.test_models import MODELS, make_session, model_bytes  # noqa: E402


def main(engine, threads):
    pyconv.set_num_threads(threads)
    for name in MODELS:
        data, feeds = model_bytes(name)
        sess = make_session(engine, data, threads)
        for _ in range(3):
            sess.run(None, feeds)
        times = []
        deadline = time.perf_counter() + 2.0
        while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 30):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times.append(time.perf_counter() - t0)
        print(f"{name} {np.median(times) * 1e3:.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)
