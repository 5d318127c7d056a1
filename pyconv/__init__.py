"""pyconv: a CPU inference engine for convolutional networks.

Packed SIMD GEMM kernels (AVX-512 / AVX2 / portable, chosen at run time) on pyconv's own
thread pool, under a NumPy API.
"""
__version__ = "0.1.0"

from pyconv import errors
from pyconv._config import (config, get_isa, get_num_threads, set_isa, set_num_threads,
                            show_config, supported_isas, _init_from_environment)
from pyconv._ext.gemm import ExecutionContext, matmul
from pyconv import arithmetic, functional, nn, ops
from pyconv.session import (ExecutionMode, GraphOptimizationLevel, InferenceSession,
                            IOBinding, ModelMetadata, NodeArg, OrtValue, RunOptions,
                            SessionOptions, get_all_providers, get_available_providers,
                            get_device)

_init_from_environment()
del _init_from_environment

__all__ = ["InferenceSession", "SessionOptions", "RunOptions", "GraphOptimizationLevel",
           "ExecutionMode", "NodeArg", "ModelMetadata", "OrtValue", "IOBinding",
           "get_available_providers", "get_all_providers", "get_device", "ops",
           "ExecutionContext",
           "matmul", "functional", "nn", "arithmetic", "set_num_threads", "get_num_threads", "set_isa", "get_isa",
           "supported_isas", "show_config", "config", "errors", "__version__"]
