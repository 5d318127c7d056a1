"""Sessions of pyconv or onnxruntime behind one call, and timing helpers."""
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

    def step(self):
        self.done += 1
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

