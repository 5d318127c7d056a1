"""pyconv: a CPU inference engine for convolutional networks.

Packed SIMD GEMM kernels (AVX-512 / AVX2 / portable, chosen at run time) with OpenMP,
under a NumPy API.
"""
__version__ = "0.1.0"

import os as _os

# OpenMP threads that spin at barriers (libgomp's default) lose whole time slices when the
# CPU is shared or oversubscribed: measured on the 2-core CI VM under load, whole-model runs
# at 2 threads were 3-10x slower than with sleeping waits, at no cost at 1 thread. Set
# before the extensions load libgomp; export OMP_WAIT_POLICY=ACTIVE to spin instead.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
