"""The thread pool (src/runtime/parallel.c) under the sanitizers: a C driver
(parallel_stress.c) calls it from 40 threads at once, with random sizes and thread
counts, built with ThreadSanitizer (races) and with AddressSanitizer + UBSan (memory);
and the OpenMP build of the same claiming loop under AddressSanitizer + UBSan (libgomp
is not built for ThreadSanitizer, which would report its own barriers)."""
import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RUNTIME = os.path.join(ROOT, "src", "runtime")
CC = shutil.which("gcc") or shutil.which("cc")

pytestmark = pytest.mark.skipif(CC is None or not os.path.isdir(RUNTIME),
                                reason="needs a C compiler and the source tree's src/runtime")


def _build(tmp_path, sanitizers, backend="POOL"):
    exe = str(tmp_path / f"stress_{backend}_{sanitizers.replace(',', '_')}")
    cmd = [CC, "-O1", "-g", f"-fsanitize={sanitizers}", "-fno-omit-frame-pointer",
           f"-DPYCONV_THREADS_{backend}", "-I", RUNTIME,
           os.path.join(HERE, "parallel_stress.c"), os.path.join(RUNTIME, "parallel.c"),
           "-o", exe, "-pthread"] + (["-fopenmp"] if backend == "OPENMP" else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0 and "sanitize" in r.stderr:
        pytest.skip(f"{CC} cannot build with -fsanitize={sanitizers}: {r.stderr[-200:]}")
    if r.returncode != 0 and backend == "OPENMP" and "omp" in r.stderr:
        pytest.skip(f"{CC} cannot build with -fopenmp: {r.stderr[-200:]}")
    assert r.returncode == 0, r.stderr
    return exe


@pytest.mark.parametrize("sanitizers,options", [
    ("thread", {"TSAN_OPTIONS": "halt_on_error=1"}),
    ("address,undefined", {"ASAN_OPTIONS": "detect_leaks=1",
                           "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}),
])
def test_pool_is_clean_under_sanitizers(tmp_path, sanitizers, options):
    exe = _build(tmp_path, sanitizers)
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    r = subprocess.run([exe, "40", "60"], capture_output=True, text=True, timeout=300,
                       env={**env, **options})
    if r.returncode != 0 and "FATAL: ThreadSanitizer" in r.stderr and "memory" in r.stderr:
        pytest.skip(f"TSan cannot map its shadow memory here: {r.stderr[-200:]}")
    assert r.returncode == 0 and r.stdout.startswith("ok pool"), r.stdout + r.stderr[-4000:]


def test_openmp_build_is_clean_under_sanitizers(tmp_path):
    exe = _build(tmp_path, "address,undefined", backend="OPENMP")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    r = subprocess.run([exe, "8", "60"], capture_output=True, text=True, timeout=300,
                       env={**env, "ASAN_OPTIONS": "detect_leaks=1",
                            "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"})
    assert r.returncode == 0 and r.stdout.startswith("ok openmp"), (
        r.stdout + r.stderr[-4000:])
