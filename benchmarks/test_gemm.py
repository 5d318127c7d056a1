"""SGEMM: pyconv beside numpy.matmul (OpenBLAS) and torch when installed, same run.

    pytest benchmarks/test_gemm.py --benchmark-columns=median,ops

The summary at the end gives GFLOP/s, % of the measured peak and pyconv/NumPy ratios."""
import numpy as np
import pytest

import pyconv

from benchmarks._bench import limit_threads, record

SQUARE = [(s, s, s) for s in (128, 256, 512, 1024, 2048)]
# (M, K, N) of convolutions as GEMMs: ResNet 3x3 64ch @56^2, 3x3 256ch @14^2, 1x1 64ch @56^2,
# a 3x3 stem 3->32 @224^2, and a 512 -> 1000 classifier head at batch 1.
CONV_SHAPED = [(64, 576, 3136), (256, 2304, 196), (64, 64, 3136), (32, 27, 50176),
               (1000, 512, 1)]


def implementations():
    impls = {"pyconv": pyconv.matmul, "numpy": np.matmul}
    try:
        import torch

        impls["torch"] = lambda a, b: torch.from_numpy(a) @ torch.from_numpy(b)
    except ImportError:
        pass
    return impls


IMPLS = implementations()


@pytest.mark.parametrize("threads", [1, 2], ids=lambda t: f"{t}thr")
@pytest.mark.parametrize("mkn", SQUARE + CONV_SHAPED, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("impl", list(IMPLS))
def test_gemm(benchmark, impl, mkn, threads):
    m, k, n = mkn
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    benchmark.group = f"gemm {m}x{k}x{n} {threads}thr"
    record(benchmark, impl=impl, flops=2.0 * m * n * k, threads=threads)
    with limit_threads(threads):
        c = benchmark(IMPLS[impl], a, b)
    c = np.asarray(c)
    ref = a.astype(np.float64) @ b
    np.testing.assert_allclose(c, ref, rtol=1e-3, atol=1e-3 * np.sqrt(k))
