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

Rates are steady-state, what a long job sees: each configuration runs over one batch per
worker, then over all the images, and the images beyond the first run's are divided by
the difference of the two times, so that starting up cancels out; the end-to-end column is the run over all
from the call (for Ray: planning, starting the actors, each loading the model). CPU
seconds per image (same difference) add up this process and every Ray process (sampled
from /proc): they depend little on the machine's load, and N cores over them bound what
N quiet cores can give. The per-batch overhead of a Ray worker is its time per batch beyond
the local 1T time of the same images. The load average is printed beside each repeat: on
a shared machine the figures are indicative only. Nothing is asserted.
"""
import argparse
import os
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import onnx  # noqa: E402

from pyconv.batch import Predictor  # noqa: E402
from pyconv.cli import _batch  # noqa: E402

MODEL = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                     "light_resnet50.onnx")


class Rows:
    """A `rows` sink for pyconv.cli._batch that counts rows."""

    def __init__(self):
        self.count = 0

    def write(self, batch):
        self.count += len(batch["path"])


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


class CpuMeter(threading.Thread):
    """CPU seconds used by this process and every Ray process (raylet, GCS, workers,
    readers), sampled from /proc every 0.2 s; a process that exits keeps its last sample.
    Unlike wall time, this does not depend on what else the machine runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.last, self.stop = {}, threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")
        self.start_values = self.sample()

    def sample(self):
        seen = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
                if int(pid) != os.getpid() and b"ray" not in cmd:
                    continue
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                seen[pid] = (int(fields[11]) + int(fields[12])) / self.tick
            except (OSError, ValueError, IndexError):
                continue
        self.last.update(seen)
        return dict(seen)

    def run(self):
        while not self.stop.wait(0.2):
            self.sample()

    def total(self):
        return sum(v - self.start_values.get(pid, 0.0) for pid, v in self.last.items())

    def seconds(self):
        self.stop.set()
        self.join()
        self.sample()
        return self.total()


def measure(run, paths):
    """(seconds, CPU seconds) of one run over `paths`."""
    cpu = CpuMeter()
    cpu.start()
    sink = Rows()
    start = time.perf_counter()
    run(sink, paths)
    seconds = time.perf_counter() - start
    assert sink.count == len(paths)
    return seconds, cpu.seconds()


def rates(run, paths, first):
    """Images/s and CPU s per image beyond the first `first` images: a run over those
    subtracted from a run over all, so that starting up (Ray's actors, each loading the
    model) cancels out; and images/s end to end of the run over all."""
    half = first
    t1, c1 = measure(run, paths[:half])
    t2, c2 = measure(run, paths)
    extra = len(paths) - half
    return {"steady": extra / (t2 - t1), "cpu_per_image": (c2 - c1) / extra,
            "end_to_end": len(paths) / t2, "seconds": t2, "cpu_total": c2}


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
            ("local 1T", lambda sink, some: _batch.run_local(
                Predictor(MODEL, threads=1), some, "image", args.batch_size, sink, NoBar())),
            (f"local {args.cpus}T", lambda sink, some: _batch.run_local(
                Predictor(MODEL, threads=args.cpus), some, "image", args.batch_size, sink,
                NoBar())),
            (f"ray {args.workers}x{per_worker}T", lambda sink, some: _batch.run_ray(
                MODEL, Predictor(MODEL, threads=1), some, "image", args.batch_size, sink,
                NoBar(), None, args.workers)),
        ]
        Predictor(MODEL, threads=1).session        # the file read once before timing
        results = []
        for repeat in range(args.repeats):
            for name, run in configs:
                load = os.getloadavg()[0]
                r = rates(run, paths, args.batch_size * args.workers)
                r.update(name=name, repeat=repeat + 1, load=load)
                results.append(r)
                print(f"  repeat {repeat + 1} {name:12s} {r['steady']:6.2f} images/s steady, "
                      f"{r['end_to_end']:6.2f} end to end ({r['seconds']:.1f} s), "
                      f"{r['cpu_per_image']:.3f} CPU s/image steady ({r['cpu_total']:.1f} s in all), "
                      f"load {load:.2f}", flush=True)
        ray.shutdown()

    print(f"\nResNet-50 (onnx wheel, light_resnet50.onnx), {args.images} 224x224 PNGs, "
          f"batch size {args.batch_size}, {args.cpus} CPUs\n")
    print("| repeat | load avg (1 min) | config | images/s steady | images/s end to end "
          "| steady vs local 1T | CPU s / image |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        base = next(b for b in results if b["repeat"] == r["repeat"] and b["name"] == "local 1T")
        print(f"| {r['repeat']} | {r['load']:.2f} | {r['name']} | {r['steady']:.2f} | "
              f"{r['end_to_end']:.2f} | {r['steady'] / base['steady']:.2f}x | "
              f"{r['cpu_per_image']:.3f} |")
    ray_name = configs[2][0]
    for r in results:
        if r["name"] != ray_name:
            continue
        base = next(b for b in results if b["repeat"] == r["repeat"] and b["name"] == "local 1T")
        per_batch = args.workers * args.batch_size / r["steady"]   # one worker's batch time
        local = args.batch_size / base["steady"]
        cpu_batch = (r["cpu_per_image"] - base["cpu_per_image"]) * args.batch_size
        print(f"repeat {r['repeat']}: a Ray worker's batch of {args.batch_size}: "
              f"{per_batch * 1e3:.0f} ms against {local * 1e3:.0f} ms in one process at 1T: "
              f"{(per_batch - local) * 1e3:+.0f} ms per batch; CPU beyond the local run "
              f"{cpu_batch * 1e3:+.0f} ms per batch (bound on {args.cpus} quiet cores: "
              f"{args.cpus * base['cpu_per_image'] / r['cpu_per_image']:.2f}x local 1T)")


if __name__ == "__main__":
    main()
