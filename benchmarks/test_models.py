"""Whole models: pyconv.InferenceSession beside onnxruntime, batch 1, 1 and 2 threads.

    pytest benchmarks/test_models.py --benchmark-columns=median,ops

Models: the nine `light` models of the onnx wheel (their ConstantOfShape weights replaced
by random ones so the outputs can be compared; the compute is the same) and the models
bundled with pyconv (`pyconv.models`; symbolic dims take 1 for a batch-like name and 224
otherwise). Groups:

* ``model <name> <n>thr``: one ``run`` at batch 1 (pyconv vs onnxruntime; outputs checked
  against onnxruntime);
* ``session <name>``: session creation (load, optimise, pack weights);
* ``test_peak_memory``: peak resident memory of a fresh process that creates a session and
  runs it once, per engine (reported in the summary, never asserted).

The summary prints pyconv/onnxruntime latency ratios and their geometric mean per thread
count (the issue-4 target: <= 1.5, no model above 2.5).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pyconv
from pyconv import models as bundled

from benchmarks._bench import limit_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tests.graph import _zoo  # noqa: E402

THREADS = [1, 2]
IMPLS = ["pyconv", "onnxruntime"]
#: The models bundled with pyconv (package data of pyconv.models), by name without ".onnx".
BUNDLED_MODELS = {name[:-len(".onnx")]: bundled.path(name) for name in bundled.BUNDLED}
MODELS = list(_zoo.LIGHT_MODELS) + list(BUNDLED_MODELS)


def _dim(d, name):
    if isinstance(d, int) and d > 0:
        return d
    return 1 if (isinstance(d, str) and d.lower() in ("n", "batch", "batch_size", "b")) \
        or name == 0 else 224


_CACHE = {}


def model_bytes(name):
    """(serialized model, feeds) for a zoo or repository model (cached)."""
    if name not in _CACHE:
        if name in _zoo.LIGHT_MODELS:
            m = _zoo.randomized(name)
            data = m.SerializeToString()
        else:
            with open(BUNDLED_MODELS[name], "rb") as f:
                data = f.read()
        sess = pyconv.InferenceSession(data)
        rng = np.random.default_rng(0)
        feeds = {}
        for arg in sess.get_inputs():
            shape = [_dim(d, i) for i, d in enumerate(arg.shape or [])]
            feeds[arg.name] = rng.random(shape, np.float32)
        _CACHE[name] = (data, feeds)
    return _CACHE[name]


def make_session(impl, data, threads):
    if impl == "pyconv":
        opts = pyconv.SessionOptions()
        opts.intra_op_num_threads = threads
        return pyconv.InferenceSession(data, opts)
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _tag(benchmark, impl, threads, name, kind):
    benchmark.extra_info.update(impl=impl, threads=threads, model=name, kind=kind,
                                flops=None, reference="onnxruntime")


# The engines of one (model, threads) pair run back to back: timings on a shared machine
# drift by tens of percent over minutes, so a ratio is only fair within one phase.
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("threads", THREADS, ids=lambda t: f"{t}thr")
@pytest.mark.parametrize("name", MODELS)
def test_model_latency(benchmark, impl, name, threads):
    data, feeds = model_bytes(name)
    sess = make_session(impl, data, threads)
    benchmark.group = f"model {name} {threads}thr"
    _tag(benchmark, impl, threads, name, "latency")
    with limit_threads(threads):
        sess.run(None, feeds)                       # plans / arenas made outside timing
        outs = benchmark(sess.run, None, feeds)
    if impl == "pyconv":     # make_session skips when onnxruntime is missing
        want = make_session("onnxruntime", data, threads).run(None, feeds)
        for g, w in zip(outs, want):
            np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-3 * float(np.abs(w).max()))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("impl", IMPLS)
def test_session_creation(benchmark, impl, name):
    data, _ = model_bytes(name)
    benchmark.group = f"session {name}"
    _tag(benchmark, impl, pyconv.get_num_threads(), name, "creation")
    sess = benchmark.pedantic(make_session, args=(impl, data, 1), rounds=3, iterations=1)
    assert sess.get_inputs()


_MEMORY_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    impl, path = sys.argv[1], sys.argv[2]
    data = open(path, "rb").read()
    if impl == "pyconv":
        import pyconv
        sess = pyconv.InferenceSession(data)
    else:
        import onnxruntime as ort
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    feeds = dict(np.load(sys.argv[3]))
    sess.run(None, feeds)
    # VmHWM: this process's peak RSS (ru_maxrss would include the parent's, kept
    # across exec).
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
    print(int(hwm.split()[1]))
""")


@pytest.mark.parametrize("name", MODELS)
def test_peak_memory(name, tmp_path, record_property):
    """Peak RSS (MiB) of create + one run, each engine in a fresh process."""
    pytest.importorskip("onnxruntime")
    data, feeds = model_bytes(name)
    model = tmp_path / "m.onnx"
    model.write_bytes(data)
    np.savez(tmp_path / "feeds.npz", **feeds)
    peaks = {}
    for impl in IMPLS:
        out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, impl, str(model),
                              str(tmp_path / "feeds.npz")], capture_output=True, text=True,
                             cwd=ROOT, check=True)
        peaks[impl] = int(out.stdout.split()[-1]) / 1024
    record_property("peak_rss_mib", peaks)
    print(f"\n{name}: peak RSS pyconv {peaks['pyconv']:.0f} MiB, onnxruntime "
          f"{peaks['onnxruntime']:.0f} MiB ({peaks['pyconv'] / peaks['onnxruntime']:.2f}x)")
    assert peaks["pyconv"] > 0 and peaks["onnxruntime"] > 0
