"""Benchmark helpers: thread control for every library, the measured machine peak, and the
tags the summary table in conftest.py reads."""
import contextlib

import pyconv
from pyconv._ext import gemm

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # the [test] extra installs it; without it BLAS picks its own count
    threadpool_limits = None

_PEAK = {}


def peak_gflops(threads):
    """Measured FP32 peak (FMA-only loop) for `threads` threads, cached per run: the best
    of five 0.1 s windows, since one window can land where a shared machine has lent a
    core elsewhere (a single 0.3 s window once gave 2 threads the peak of 1)."""
    if threads not in _PEAK:
        _PEAK[threads] = max(gemm.measure_peak_gflops(threads=threads, seconds=0.1)
                             for _ in range(5))
    return _PEAK[threads]


@contextlib.contextmanager
def limit_threads(n):
    """Runs pyconv, NumPy's BLAS (and torch when present) on n threads."""
    previous = pyconv.get_num_threads()
    pyconv.set_num_threads(n)
    torch_prev = None
    try:
        import torch
        torch_prev = torch.get_num_threads()
        torch.set_num_threads(n)
    except ImportError:
        torch = None
    try:
        if threadpool_limits is not None:
            with threadpool_limits(limits=n):
                yield
        else:
            yield
    finally:
        pyconv.set_num_threads(previous)
        if torch is not None:
            torch.set_num_threads(torch_prev)


def record(benchmark, *, impl, flops, threads, reference="numpy"):
    """Tags a benchmark so the summary can compute GFLOP/s, % of peak and ratios."""
    benchmark.extra_info.update(impl=impl, flops=flops, threads=threads, reference=reference)
