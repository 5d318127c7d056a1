"""The `pyconv` command line (also `python -m pyconv`)."""
import argparse
import sys
import time

import numpy as np

import pyconv
from pyconv.errors import PyconvError


def _median_seconds(fn, min_time=0.2):
    fn()
    times, start = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def cmd_demo(args):
    """Engine self-check: every ISA path against NumPy, then throughput against peak.

    (The bundled trained models replace this as the main job once they land.)"""
    from pyconv._ext import gemm

    pyconv.show_config()
    rng = np.random.default_rng(0)
    shapes = [(1, 1, 1), (7, 300, 49), (64, 576, 3136), (256, 2304, 196), (1000, 512, 1)]
    start_isa = pyconv.get_isa()
    print("\ncorrectness (max relative error vs float64 NumPy):")
    worst = 0.0
    try:
        for isa in pyconv.supported_isas():
            pyconv.set_isa(isa)
            errs = []
            for m, k, n in shapes:
                a = rng.standard_normal((m, k), dtype=np.float32)
                b = rng.standard_normal((k, n), dtype=np.float32)
                ref = a.astype(np.float64) @ b
                err = np.abs(pyconv.matmul(a, b) - ref).max() / (np.abs(ref).max() + 1e-30)
                errs.append(err)
            worst = max(worst, max(errs))
            print(f"  {isa:8s} {max(errs):.2e}  ({len(shapes)} shapes)")
    finally:
        pyconv.set_isa(start_isa)
    threads = pyconv.get_num_threads()
    peak = gemm.measure_peak_gflops(threads=threads, seconds=0.2)
    print(f"\nthroughput on {threads} thread(s), measured FP32 peak {peak:.1f} GFLOP/s:")
    for m, k, n in [(1024, 1024, 1024), (64, 576, 3136), (256, 2304, 196)]:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        tp = _median_seconds(lambda: pyconv.matmul(a, b))
        tn = _median_seconds(lambda: a @ b)
        g = 2.0 * m * n * k / 1e9
        print(f"  gemm {m}x{k}x{n}: pyconv {g / tp:6.1f} GFLOP/s ({100 * g / tp / peak:4.1f}% "
              f"of peak), numpy {g / tn:6.1f} GFLOP/s, ratio {tn / tp:.2f}")
    ok = worst < 1e-4
    print("\nself-check", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


def cmd_config(args):
    """Print the ISA path, OpenMP status, threads and blocking sizes."""
    pyconv.show_config()
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="pyconv",
        description="pyconv: a CPU inference engine for convolutional networks.")
    parser.add_argument("--threads", type=int, default=None,
                        help="number of kernel threads (default: OMP_NUM_THREADS or all cores)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("demo", help="run the main job: engine self-check against NumPy")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("config", help="show the ISA path, OpenMP, threads and blocking")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.threads is not None:
            pyconv.set_num_threads(args.threads)
        return args.func(args)
    except PyconvError as exc:
        print(f"pyconv: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
