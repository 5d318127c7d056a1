"""Latency on a quiet and on a busy host: pyconv and onnxruntime at 1 and 2 threads.

    python benchmarks/busy_host.py                     # K = the cores available
    python benchmarks/busy_host.py --spinners 2 --rounds 6 --models shapes_classifier

Every (engine, threads) pair runs in its own worker process (two thread pools in one
process fight for the cores), each holding one session. The parent interleaves them:
round after round, each worker times a block of runs in turn, so slow phases of a shared
machine fall on every engine alike. A block starts once the previous worker's threads
have gone idle (a thread pool polls on after its caller returns, and that polling would
load the next block). Then the same rounds run again beside K spinning processes (busy
loops, started anew each round so that the figures cover many placements of them by the
scheduler, each ending by itself after --max-seconds and killed at the end of its round
or on exit in any case). Per model and phase the script prints the median latency of
each worker, the ratios pyconv 2T / pyconv 1T and pyconv 2T / onnxruntime 2T, and
onnxruntime's own 2T / 1T (how much of a busy figure the machine makes for any engine).

Models: the bundled models (pyconv.models), the onnx wheel's ResNet-50 (light zoo, random
weights) and MobileNetV2 (benchmarks/_nets.py). Timings only: nothing is asserted.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import subprocess
import sys
import tempfile
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


def open_session(engine, data, threads):
    """A session of `engine` ("pyconv" or "onnxruntime") on `threads` intra-op threads."""
    if engine == "pyconv":
        import pyconv
        opts = pyconv.SessionOptions()
        opts.intra_op_num_threads = threads
        return pyconv.InferenceSession(data, opts)
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def serve(sess, feeds, warmup=3):
    """The worker side of Workers: warms up, prints READY, then answers each stdin line.
    'RUN n' -> a JSON list of n latencies (seconds); 'SAVE path' -> the outputs of one
    run saved to path (.npz, output_0, output_1, ...), then 'SAVED'."""
    for _ in range(warmup):
        sess.run(None, feeds)
    print("READY", flush=True)
    for line in sys.stdin:
        cmd, arg = line.split(maxsplit=1)
        if cmd == "SAVE":
            outs = sess.run(None, feeds)
            np.savez(arg.strip(), **{f"output_{i}": np.asarray(o) for i, o in enumerate(outs)})
            print("SAVED", flush=True)
            continue
        times = []
        for _ in range(int(arg)):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times.append(time.perf_counter() - t0)
        print(json.dumps(times), flush=True)


def worker(engine, threads, name):
    data, feeds = model_and_feeds(name)
    serve(open_session(engine, data, threads), feeds)


class Workers:
    """One worker process per (engine, threads) pair, each holding one session.

    `argv(engine, threads)` is the worker's command line (default: this script's
    --worker for a benchmark model `name`). A worker that does not print READY is left out
    of `procs`; `failed` maps its pair to the last line it wrote on stderr."""

    def __init__(self, name, pairs=PAIRS, argv=None):
        if argv is None:
            def argv(engine, threads):
                return [sys.executable, __file__, "--worker", engine, str(threads), name]
        self.procs, self.failed = {}, {}
        started = {}
        for engine, threads in pairs:
            err = tempfile.TemporaryFile("w+")     # read on failure; a file never fills
            started[(engine, threads)] = (subprocess.Popen(
                argv(engine, threads), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=err, text=True, cwd=ROOT), err)
        for pair, (p, err) in started.items():
            if p.stdout.readline().strip() == "READY":
                self.procs[pair] = p
                err.close()
                continue
            p.stdin.close()
            p.kill()
            p.wait()
            err.seek(0)
            lines = [ln for ln in err.read().splitlines() if ln.strip()]
            err.close()
            self.failed[pair] = lines[-1] if lines else f"worker exited with {p.returncode}"

    def block(self, pair, n):
        """n latencies of `pair`'s worker; returns once its threads have gone idle."""
        p = self.procs[pair]
        p.stdin.write(f"RUN {n}\n")
        p.stdin.flush()
        times = json.loads(p.stdout.readline())
        wait_idle(p.pid)
        return times

    def save_outputs(self, pair, path):
        """Has the worker of `pair` run once and save its outputs to `path` (.npz)."""
        p = self.procs[pair]
        p.stdin.write(f"SAVE {path}\n")
        p.stdin.flush()
        if p.stdout.readline().strip() != "SAVED":
            raise RuntimeError(f"the {pair[0]} worker died while running")

    def close(self):
        for p in self.procs.values():
            p.stdin.close()
            p.wait(timeout=30)


def cpu_ns(pid):
    """CPU time (ns) used so far by all threads of process `pid`; None where /proc has no
    schedstat (not Linux)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def wait_idle(pid, window_s=0.02, timeout_s=1.0):
    """Waits until process `pid` uses under a tenth of a core over a window of a few
    scheduler slices (a poller that lost its core for one is not idle), at most timeout_s.
    A pool's workers go on polling for a while after a block, onnxruntime's for about 60
    ms of CPU (2**20 pauses): the next worker's block ran beside that third busy thread."""
    last, end = cpu_ns(pid), time.perf_counter() + timeout_s
    while last is not None and time.perf_counter() < end:
        time.sleep(window_s)
        now = cpu_ns(pid)
        if now is None or now - last < window_s * 1e8:
            return
        last = now


class Spinners:
    """K busy processes, each ending by itself after max_seconds; killed on stop/exit (or
    at the end of a with block)."""

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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def block_size(workers, budget_s=0.15):
    """Runs per block: about budget_s of the slowest worker's quiet latency."""
    slowest = max(np.median(workers.block(pair, 3)) for pair in workers.procs)
    return int(np.clip(budget_s / slowest, 3, 200))


def samples(workers, rounds, n, load=None):
    """Latencies per pair: `rounds` rounds, each worker timing a block of n runs in turn,
    in alternating order; `load()` (if given) makes the context each round runs in."""
    pairs = list(workers.procs)
    out = {pair: [] for pair in pairs}
    for r in range(rounds):
        with load() if load is not None else contextlib.nullcontext():
            for pair in (pairs if r % 2 == 0 else pairs[::-1]):
                out[pair] += workers.block(pair, n)
    return out


def measure(workers, rounds, n, load=None):
    return {pair: float(np.median(v))
            for pair, v in samples(workers, rounds, n, load).items()}


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
            f"{'ort 1T':>9} {'ort 2T':>9} {'pc2/pc1':>8} {'pc2/ort2':>9} {'ort2/ort1':>10}")
    print(head)
    results = []
    for name in args.models:
        workers = Workers(name)
        try:
            if workers.failed:
                raise RuntimeError(f"workers for {name} failed to start: {workers.failed}")
            n = block_size(workers)
            for phase in ("quiet", "busy"):
                # New spinners every round: where the scheduler puts them against the
                # workers' threads (both on one core, leaving a 1-thread worker a whole
                # core, or one per core) decides a round's figures, and one placement
                # for a whole phase once made MobileNetV2's pyconv 2T / 1T 0.81 in one
                # run and 1.47 in the next. Many placements per phase: their median.
                med = measure(workers, args.rounds, n,
                              (lambda: Spinners(args.spinners, args.max_seconds))
                              if phase == "busy" else None)
                p1, p2 = med[("pyconv", 1)], med[("pyconv", 2)]
                o1, o2 = med[("onnxruntime", 1)], med[("onnxruntime", 2)]
                print(f"{name:<18} {phase:<6} {p1 * 1e3:>10.3f} {p2 * 1e3:>10.3f} "
                      f"{o1 * 1e3:>9.3f} {o2 * 1e3:>9.3f} {p2 / p1:>8.2f} {p2 / o2:>9.2f} "
                      f"{o2 / o1:>10.2f}",
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
