"""Latency on a quiet and on a busy host: pyconv and onnxruntime at 1 and 2 threads.

    python benchmarks/busy_host.py                     # K = the cores available
    python benchmarks/busy_host.py --spinners 2 --rounds 6 --models shapes_classifier

Every (engine, threads) pair runs in its own worker process (two thread pools in one
process fight for the cores), each holding one session. The parent interleaves them:
round after round, each worker times a block of runs in turn, so slow phases of a shared
machine fall on every engine alike. Then K spinning processes start (busy loops, each
ending by itself after --max-seconds and killed on exit in any case) and the same rounds
run again. Per model and phase the script prints the median latency of each worker and
the ratios pyconv 2T / pyconv 1T and pyconv 2T / onnxruntime 2T.

Models: the bundled models (pyconv.models), the onnx wheel's ResNet-50 (light zoo, random
weights) and MobileNetV2 (benchmarks/_nets.py). Timings only: nothing is asserted.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PAIRS = [("pyconv", 1), ("pyconv", 2), ("onnxruntime", 1), ("onnxruntime", 2)]
DEFAULT_MODELS = ["shapes_classifier", "shapes_unet", "light_resnet50", "mobilenet_v2"]

_SPIN = "import time, sys\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end:\n    pass\n"


def model_and_feeds(name):
    """(serialized model, feeds) for a benchmark model name."""
    sys.path.insert(0, ROOT)
    if name == "mobilenet_v2":
        from benchmarks._nets import mobilenet_v2
        data = mobilenet_v2().SerializeToString()
        return data, {"input": np.random.default_rng(0).random((1, 3, 224, 224), np.float32)}
    from benchmarks.test_models import model_bytes
    return model_bytes(name)


def worker(engine, threads, name):
    """Serves 'RUN n' lines on stdin with a JSON list of n latencies (seconds)."""
    data, feeds = model_and_feeds(name)
    if engine == "pyconv":
        import pyconv
        opts = pyconv.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = pyconv.InferenceSession(data, opts)
    else:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess.run(None, feeds)
    print("READY", flush=True)
    for line in sys.stdin:
        n = int(line.split()[1])
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times.append(time.perf_counter() - t0)
        print(json.dumps(times), flush=True)


class Workers:
    def __init__(self, name):
        self.procs = {}
        for engine, threads in PAIRS:
            p = subprocess.Popen([sys.executable, __file__, "--worker", engine, str(threads),
                                  name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, cwd=ROOT)
            self.procs[(engine, threads)] = p
        for p in self.procs.values():
            if p.stdout.readline().strip() != "READY":
                raise RuntimeError(f"a worker for {name} failed to start")

    def block(self, pair, n):
        p = self.procs[pair]
        p.stdin.write(f"RUN {n}\n")
        p.stdin.flush()
        return json.loads(p.stdout.readline())

    def close(self):
        for p in self.procs.values():
            p.stdin.close()
            p.wait(timeout=30)


class Spinners:
    """K busy processes, each ending by itself after max_seconds; killed on stop/exit."""

    def __init__(self, k, max_seconds):
        self.procs = [subprocess.Popen([sys.executable, "-c", _SPIN, str(max_seconds)])
                      for _ in range(k)]
        atexit.register(self.stop)
        time.sleep(0.5)          # let the scheduler spread them

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        self.procs = []


def block_size(workers, budget_s=0.15):
    """Runs per block: about budget_s of the slowest worker's quiet latency."""
    slowest = max(np.median(workers.block(pair, 3)) for pair in PAIRS)
    return int(np.clip(budget_s / slowest, 3, 200))


def measure(workers, rounds, n):
    samples = {pair: [] for pair in PAIRS}
    for r in range(rounds):
        order = PAIRS if r % 2 == 0 else PAIRS[::-1]
        for pair in order:
            samples[pair] += workers.block(pair, n)
    return {pair: float(np.median(v)) for pair, v in samples.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--spinners", type=int, default=len(os.sched_getaffinity(0)),
                    help="busy processes for the busy phase (default: the cores)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--max-seconds", type=float, default=600.0,
                    help="each spinner ends by itself after this long")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.worker[2])
        return
    print(f"# {len(os.sched_getaffinity(0))} cores; busy = {args.spinners} spinning "
          f"processes; {args.rounds} interleaved rounds per phase; median latency (ms)")
    head = (f"{'model':<18} {'phase':<6} {'pyconv 1T':>10} {'pyconv 2T':>10} "
            f"{'ort 1T':>9} {'ort 2T':>9} {'pc2/pc1':>8} {'pc2/ort2':>9}")
    print(head)
    results = []
    for name in args.models:
        workers = Workers(name)
        try:
            n = block_size(workers)
            for phase in ("quiet", "busy"):
                spin = Spinners(args.spinners, args.max_seconds) if phase == "busy" else None
                try:
                    med = measure(workers, args.rounds, n)
                finally:
                    if spin is not None:
                        spin.stop()
                p1, p2 = med[("pyconv", 1)], med[("pyconv", 2)]
                o1, o2 = med[("onnxruntime", 1)], med[("onnxruntime", 2)]
                print(f"{name:<18} {phase:<6} {p1 * 1e3:>10.3f} {p2 * 1e3:>10.3f} "
                      f"{o1 * 1e3:>9.3f} {o2 * 1e3:>9.3f} {p2 / p1:>8.2f} {p2 / o2:>9.2f}",
                      flush=True)
                results.append({"model": name, "phase": phase, "block": n,
                                "pyconv_1": p1, "pyconv_2": p2, "ort_1": o1, "ort_2": o2})
        finally:
            workers.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
