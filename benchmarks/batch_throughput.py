"""Images/s of `pyconv batch`: one process against a local Ray cluster of N workers.

    python benchmarks/batch_throughput.py                    # 2-core machine defaults
    python benchmarks/batch_throughput.py --images 192 --repeats 3 --workers 2

The model is the onnx wheel's ResNet-50 (the `light` zoo model, 1x3x224x224 input, fixed
batch 1) on generated 224x224 PNGs (decoded with Pillow as Ray Data's reader does). Each
repeat times, in turn:

- local 1T: the local engine, one process at 1 thread (one worker);
- local NT: the local engine at as many threads as CPUs;
- ray Wx(N/W): a local Ray cluster (`ray.init(num_cpus=N)`, started once), W actor
  workers of N/W CPUs and as many threads each, reading with Ray Data's `read_images`.

Rates are steady-state: rows after the first batch divided by the time from the first
batch to the last, as the driver receives them (what a long job sees); the end-to-end
column counts everything from the call (for Ray: planning, starting the actors, each
loading the model). The per-batch overhead of a Ray worker is its time per batch beyond
the local 1T time of the same images. The load average is printed beside each repeat: on
a shared machine the figures are indicative only. Nothing is asserted.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import onnx  # noqa: E402

from pyconv.batch import Predictor  # noqa: E402
from pyconv.cli import _batch  # noqa: E402

MODEL = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                     "light_resnet50.onnx")


class Arrivals:
    """A `rows` sink for pyconv.cli._batch: when each batch reached the driver."""

    def __init__(self):
        self.times, self.counts = [], []

    def write(self, batch):
        self.times.append(time.perf_counter())
        self.counts.append(len(batch["path"]))


class NoBar:
    def step(self, count=1):
        pass


def write_images(directory, n, size=224, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            os.path.join(directory, f"{i:05d}.png"))
    return _batch.list_inputs(directory)[0]


def measure(run):
    sink = Arrivals()
    start = time.perf_counter()
    run(sink)
    end = time.perf_counter()
    rows = sum(sink.counts)
    steady_rows = rows - sink.counts[0]
    steady = steady_rows / (sink.times[-1] - sink.times[0]) if steady_rows else float("nan")
    return {"rows": rows, "batches": len(sink.counts), "end_to_end": rows / (end - start),
            "steady": steady, "seconds": end - start}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=len(os.sched_getaffinity(0)),
                        help="CPUs of the local cluster (default: this process's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import ray
    import logging
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(tmp, args.images)
        t0 = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        print(f"ray.init(num_cpus={args.cpus}): {time.perf_counter() - t0:.1f} s")
        per_worker = args.cpus // args.workers
        configs = [
            ("local 1T", lambda sink: _batch.run_local(
                Predictor(MODEL, threads=1), paths, "image", args.batch_size, sink, NoBar())),
            (f"local {args.cpus}T", lambda sink: _batch.run_local(
                Predictor(MODEL, threads=args.cpus), paths, "image", args.batch_size, sink,
                NoBar())),
            (f"ray {args.workers}x{per_worker}T", lambda sink: _batch.run_ray(
                MODEL, Predictor(MODEL, threads=1), paths, "image", args.batch_size, sink,
                NoBar(), None, args.workers)),
        ]
        Predictor(MODEL, threads=1).session        # the file read once before timing
        results = []
        for repeat in range(args.repeats):
            for name, run in configs:
                load = os.getloadavg()[0]
                r = measure(run)
                r.update(name=name, repeat=repeat + 1, load=load)
                results.append(r)
                print(f"  repeat {repeat + 1} {name:12s} {r['steady']:6.2f} images/s steady, "
                      f"{r['end_to_end']:6.2f} end to end ({r['seconds']:.1f} s), load "
                      f"{load:.2f}", flush=True)
        ray.shutdown()

    print(f"\nResNet-50 (onnx wheel, light_resnet50.onnx), {args.images} 224x224 PNGs, "
          f"batch size {args.batch_size}, {args.cpus} CPUs\n")
    print("| repeat | load avg (1 min) | config | images/s steady | images/s end to end "
          "| steady vs local 1T |")
    print("|---|---|---|---|---|---|")
    for r in results:
        base = next(b for b in results if b["repeat"] == r["repeat"] and b["name"] == "local 1T")
        print(f"| {r['repeat']} | {r['load']:.2f} | {r['name']} | {r['steady']:.2f} | "
              f"{r['end_to_end']:.2f} | {r['steady'] / base['steady']:.2f}x |")
    ray_name = configs[2][0]
    for r in results:
        if r["name"] != ray_name:
            continue
        base = next(b for b in results if b["repeat"] == r["repeat"] and b["name"] == "local 1T")
        per_batch = args.workers * args.batch_size / r["steady"]   # one worker's batch time
        local = args.batch_size / base["steady"]
        print(f"repeat {r['repeat']}: a Ray worker's batch of {args.batch_size}: "
              f"{per_batch * 1e3:.0f} ms against {local * 1e3:.0f} ms in one process at 1T: "
              f"{(per_batch - local) * 1e3:+.0f} ms per batch")


if __name__ == "__main__":
    main()
