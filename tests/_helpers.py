"""Small helpers shared by the test modules (tests/ is on sys.path via tests/conftest.py)."""
import numpy as np
import pytest

import pyconv


def flush_denormals(a):
    """a with its denormals as (signed) zeros: what a convolution writes (it runs with
    flush-to-zero and denormals-are-zero) where the element-wise engine keeps them."""
    a = np.asarray(a)
    return np.where(np.abs(a) < np.finfo(a.dtype).tiny, a * 0, a).astype(a.dtype)


def rand(rng, *shape):
    """Standard-normal float32 array of the given shape."""
    return rng.standard_normal(shape).astype(np.float32)


def assert_close(got, ref, k):
    """float32 accumulation over k terms against a float64 reference."""
    ref = np.asarray(ref)
    assert got.dtype == np.float32 and got.shape == ref.shape
    tol = 4e-6 * np.sqrt(k) * max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=tol)


def avx512_context(num_threads=1):
    """An execution context on AVX-512, the kernels the conv cost model's thresholds were
    measured on; the test skips where the CPU has none (its choices differ there)."""
    if "avx512" not in pyconv.supported_isas():
        pytest.skip("algorithm choices fitted to AVX-512's 8x48 tiles; this CPU has no AVX-512")
    return pyconv.ExecutionContext(num_threads=num_threads, isa="avx512")
