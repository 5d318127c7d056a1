"""pyconv: a CPU inference engine for convolutional networks.

Packed SIMD GEMM kernels (AVX-512 / AVX2 / portable, chosen at run time) with OpenMP,
under a NumPy API.
"""
__version__ = "0.1.0"

import os as _os

# How idle OpenMP threads wait between parallel regions (read once, when the extensions
# load libgomp). Spinning forever (OMP_WAIT_POLICY=ACTIVE) starves other processes and
# other thread pools on a shared CPU; sleeping at once (PASSIVE) pays a wake-up on every
# region, which on the 2-core VM cost 1.5-3x at 2 threads. The default here spins briefly
# and then sleeps, like onnxruntime's pool: 100k spins (about 3 ms on the 2-core VM)
# bridge the gaps between the regions of one run. Either variable set by the user wins.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "100000")

from pyconv import errors
from pyconv._config import (config, get_isa, get_num_threads, set_isa, set_num_threads,
                            show_config, supported_isas, _init_from_environment)
from pyconv._ext.gemm import matmul
from pyconv import arithmetic, functional, nn, ops
from pyconv.session import (GraphOptimizationLevel, InferenceSession, NodeArg,
                            SessionOptions)

_init_from_environment()
del _init_from_environment

__all__ = ["InferenceSession", "SessionOptions", "GraphOptimizationLevel", "NodeArg", "ops",
           "matmul", "functional", "nn", "arithmetic", "set_num_threads", "get_num_threads", "set_isa", "get_isa",
           "supported_isas", "show_config", "config", "errors", "__version__"]
