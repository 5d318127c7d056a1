"""The parallel runtime (src/runtime/parallel.c) and the execution context: correctness
under concurrency, fork, thread-count limits, and no process-wide side effects."""
import multiprocessing
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import pyconv
import pyconv.functional as F
from pyconv._ext import gemm
from pyconv.errors import InvalidArgument

THREADED = gemm.parallel_backend() != "serial"


def run_python(code, env=None):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env if env is not None else dict(os.environ), timeout=120)


def test_import_leaves_the_environment_untouched():
    code = ("import os, json; before = dict(os.environ); import pyconv; "
            "pyconv.matmul(__import__('numpy').ones((64, 64), 'float32'), "
            "__import__('numpy').ones((64, 64), 'float32')); "
            "print(json.dumps(before == dict(os.environ)))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    r = run_python(code, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "true"


def test_user_omp_settings_are_honoured_and_capped():
    code = "import pyconv; print(pyconv.get_num_threads())"
    r = run_python(code, {**os.environ, "OMP_NUM_THREADS": "3,2"})
    assert r.stdout.strip() == ("3" if THREADED else "1"), r.stderr
    r = run_python(code + "; from pyconv._ext import gemm; print(gemm.max_threads())",
                   {**os.environ, "OMP_NUM_THREADS": "100000"})
    got, cap = r.stdout.split()
    assert int(got) == (int(cap) if THREADED else 1), r.stderr


def test_execution_context_snapshots_the_defaults():
    previous = pyconv.get_num_threads()
    try:
        pyconv.set_num_threads(1)
        one = pyconv.ExecutionContext()
        pyconv.set_num_threads(2)
        assert one.num_threads == 1
        assert pyconv.ExecutionContext().num_threads == (2 if THREADED else 1)
        assert pyconv.ExecutionContext(num_threads=3).num_threads == (3 if THREADED else 1)
        assert pyconv.ExecutionContext(isa="generic").isa == "generic"
        assert one == pyconv.ExecutionContext(num_threads=1)
    finally:
        pyconv.set_num_threads(previous)
    with pytest.raises(InvalidArgument, match="unknown ISA 'sse9'"):
        pyconv.ExecutionContext(isa="sse9")
    with pytest.raises(InvalidArgument, match="context: expected a pyconv ExecutionContext"):
        gemm.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), context=2)


@pytest.mark.parametrize("isa", pyconv.supported_isas())
def test_a_plan_runs_its_own_isa_whatever_the_default(isa, rng=np.random.default_rng(5)):
    """The kernel table is part of the context: depthwise, pooling and the transposed
    epilogue follow the plan's ISA, not the process default at run time."""
    x = rng.standard_normal((1, 8, 13, 11)).astype(np.float32)
    dw = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    ctx = pyconv.ExecutionContext(num_threads=2, isa=isa)
    plan = F.ConvPlan(dw, None, 1, 1, groups=8, activation="hardswish", context=ctx)
    want = plan.run(x).copy()
    pooled = F.max_pool(x, 3, 2, 1, 1, context=ctx)
    previous = pyconv.get_isa()
    try:
        for other in pyconv.supported_isas():
            pyconv.set_isa(other)
            np.testing.assert_array_equal(plan.run(x), want)
            np.testing.assert_array_equal(F.max_pool(x, 3, 2, 1, 1, context=ctx), pooled)
    finally:
        pyconv.set_isa(previous)
    assert plan.kernel.context.isa == isa


def test_more_concurrent_callers_than_job_slots():
    """64 Python threads (more than the pool's 32 job slots) each run threaded products:
    a caller that finds no free slot runs its loop alone; every answer is right."""
    rng = np.random.default_rng(1)
    mats = [rng.standard_normal((96, 200)).astype(np.float32) for _ in range(8)]
    want = [m @ m.T for m in mats]
    ctx = pyconv.ExecutionContext(num_threads=min(4, gemm.max_threads()))
    barrier = threading.Barrier(64)

    def work(i):
        barrier.wait()
        return [(j, gemm.matmul(mats[j], mats[j].T, context=ctx))
                for j in range(i % 8, 8, 3)]
    with ThreadPoolExecutor(64) as pool:
        results = [r for rs in pool.map(work, range(64)) for r in rs]
    assert len(results) > 64
    for j, got in results:
        np.testing.assert_allclose(got, want[j], rtol=1e-4, atol=1e-3)


def _child_matmul(queue):
    a = np.arange(300 * 64, dtype=np.float32).reshape(300, 64) / 1000
    got = gemm.matmul(a, a.T, context=pyconv.ExecutionContext(num_threads=2))
    queue.put(float(np.abs(got - a @ a.T).max()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
@pytest.mark.skipif(gemm.parallel_backend() == "openmp",
                    reason="GNU OpenMP hangs in a forked child that its parent's team served "
                           "(a libgomp limitation; the default pool handles fork)")
def test_a_forked_child_gets_a_working_pool():
    """The parent's workers do not exist in a forked child: it starts its own."""
    a = np.ones((300, 64), np.float32)
    gemm.matmul(a, a.T, context=pyconv.ExecutionContext(num_threads=2))   # workers up
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_matmul, args=(queue,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert queue.get(timeout=5) < 1e-2


@pytest.mark.skipif(gemm.parallel_backend() != "pool",
                    reason="the pool's workers (the serial build has none, OpenMP its team)")
def test_workers_start_on_demand_up_to_the_largest_request():
    code = ("import numpy as np, pyconv; from pyconv._ext import gemm; "
            "print(gemm.pool_workers()); a = np.ones((512, 512), np.float32); "
            "gemm.matmul(a, a, context=pyconv.ExecutionContext(num_threads=3)); "
            "print(gemm.pool_workers())")
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "2"]


@pytest.mark.skipif(gemm.parallel_backend() != "pool",
                    reason="the pool's workers (libgomp exits the process when it cannot "
                           "start a thread: why the pool is the default)")
@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="Linux's RLIMIT_AS accounting")
def test_refused_threads_leave_the_work_to_the_caller():
    """When the system refuses new threads (here: an address-space limit a few stacks
    above what the process maps), the pool starts what it can, the caller does the rest,
    and the answer is exact: no exit, no error."""
    code = ("import resource, numpy as np, pyconv; from pyconv._ext import gemm\n"
            "a = np.ones((256, 256), np.float32); want = a @ a\n"
            "mapped = [int(l.split()[1]) for l in open('/proc/self/status')\n"
            "          if l.startswith('VmSize:')][0] * 1024\n"
            "limit = mapped + (16 << 20)\n"
            "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
            "got = gemm.matmul(a, a, context=pyconv.ExecutionContext(gemm.max_threads()))\n"
            "print(float(np.abs(got - want).max()), gemm.pool_workers())")
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    err, workers = r.stdout.split()
    assert float(err) == 0.0
    assert int(workers) < gemm.max_threads() - 1     # some thread creation was refused
