"""Sessions of pyconv or onnxruntime behind one call, and timing helpers."""
import os
import platform
import sys
import time

import numpy as np

import pyconv
from pyconv.errors import InvalidArgument

ENGINES = ("pyconv", "onnxruntime")


def open_session(engine, model_path, threads, profiling=False):
    """An onnxruntime-style session (``run``, ``get_inputs``) of the named engine."""
    if engine == "pyconv":
        opts = pyconv.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.enable_profiling = profiling
        return pyconv.InferenceSession(model_path, opts)
    if engine == "onnxruntime":
        try:
            import onnxruntime as ort
        except ImportError:
            raise InvalidArgument("--compare onnxruntime: onnxruntime is not installed "
                                  "(pip install onnxruntime)") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.enable_profiling = profiling
        opts.log_severity_level = 3
        try:
            return ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types
            raise InvalidArgument(f"onnxruntime cannot load {model_path}: {exc}") from None
    raise InvalidArgument(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")


class Progress:
    """A one-line progress bar on stderr (redrawn only on a terminal)."""

    def __init__(self, total, label):
        self.total, self.label, self.done = total, label, 0
        self.tty = sys.stderr.isatty()

    def step(self, count=1):
        self.done += count
        if self.tty or self.done == self.total:
            width = 30
            filled = width * self.done // self.total
            end = "\n" if self.done == self.total else ""
            sys.stderr.write(f"\r{self.label:32s} [{'#' * filled}{'.' * (width - filled)}] "
                             f"{self.done}/{self.total}{end}")
            sys.stderr.flush()


def time_runs(session, feed, runs, warmup, label):
    """Seconds per run for `runs` timed runs after `warmup` untimed ones."""
    for _ in range(warmup):
        session.run(None, feed)
    bar = Progress(runs, label)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
        bar.step()
    return np.asarray(times)



class PeakMeter:
    """The machine's measured FP32 peak on ``threads`` threads (FMA-only loops,
    ``gemm.measure_peak_gflops``), as the best of several short windows.

    Commands take windows before, between and after their own measurements: one window
    can land where a shared machine lent a core elsewhere (which once put "% of peak" at
    150-188 %), the best of several spread over the run does not."""

    def __init__(self, threads, seconds=0.1):
        self.threads, self.seconds = threads, seconds
        self.windows = 0
        self.gflops = 0.0

    def sample(self, windows=1):
        from pyconv._ext import gemm
        for _ in range(windows):
            self.gflops = max(self.gflops, gemm.measure_peak_gflops(threads=self.threads,
                                                                    seconds=self.seconds))
            self.windows += 1
        return self.gflops

    def describe(self):
        return (f"measured FP32 peak {self.gflops:.1f} GFLOP/s on {self.threads} thread(s) "
                f"(best of {self.windows} windows)")

    def percent(self, gflops):
        """``gflops`` as a percentage of the peak, not clamped: a figure above 100 % is
        reported as measured, with the reason."""
        share = 100.0 * gflops / self.gflops
        note = " (above the measured peak: the machine was busier while the peak was " \
               "measured)" if share > 100.0 else ""
        return share, note


def machine_description():
    """'CPU model, N cores, ISA path' for captions."""
    import pyconv
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores, pyconv ISA path {pyconv.get_isa()}"
