"""Type stubs for pyconv._ext.gemm (compiled from gemm.pyx): the SGEMM engine, the
execution context and the process defaults (threads, ISA)."""
import enum
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from pyconv.errors import InvalidArgument as InvalidArgument
from pyconv.errors import InvalidDType as InvalidDType
from pyconv.errors import ShapeError as ShapeError
from pyconv.errors import UnsupportedISA as UnsupportedISA

_F32 = npt.NDArray[np.float32]

#: ISA paths, best first.
ISAS: Tuple[str, ...]
#: Fused epilogue activations: name -> C enum code (pyconv/_activations.py).
ACTIVATIONS: dict[str, int]

class pyconv_act(enum.IntEnum):
    PYCONV_ACT_NONE = 0
    PYCONV_ACT_RELU = 1
    PYCONV_ACT_CLIP = 2
    PYCONV_ACT_LEAKY_RELU = 3
    PYCONV_ACT_SIGMOID = 4
    PYCONV_ACT_HARDSIGMOID = 5
    PYCONV_ACT_HARDSWISH = 6
    PYCONV_ACT_TANH = 7
    PYCONV_ACT_SILU = 8
    PYCONV_ACT_ELU = 9
    PYCONV_ACT_COUNT = 10

def empty_aligned(shape: Tuple[int, ...], dtype: npt.DTypeLike = ...,
                  check: bool = ...) -> npt.NDArray[Any]: ...
def parallel_backend() -> str: ...
def pool_workers() -> int: ...
def supported_isas() -> Tuple[str, ...]: ...
def set_isa(name: str) -> str: ...
def get_isa() -> str: ...
def kernel_info() -> dict[str, Any]: ...
def available_cores() -> int: ...
def max_threads() -> int: ...
def default_num_threads() -> int: ...
def check_num_threads(n: int, what: str = ...) -> int: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def set_default_conv_algorithm(code: int) -> None: ...
def get_default_conv_algorithm() -> int: ...

class ExecutionContext:
    """Thread count, micro-kernel table (ISA) and dense-conv algorithm of a plan."""
    def __init__(self, num_threads: Optional[int] = None, isa: Optional[str] = None) -> None: ...
    @property
    def num_threads(self) -> int: ...
    @property
    def isa(self) -> str: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class PackedMatrix:
    """A float32 (M, K) matrix packed once into micro-kernel panels."""
    def __init__(self, a: npt.ArrayLike, context: Optional[ExecutionContext] = None) -> None: ...
    @property
    def shape(self) -> Tuple[int, int]: ...
    @property
    def isa(self) -> str: ...

def sgemm(a: Union[_F32, PackedMatrix], b: _F32, out: Optional[_F32] = None, *,
          alpha: float = 1.0, beta: float = 0.0, bias: Optional[_F32] = None,
          activation: Optional[str] = None, act_alpha: float = 0.0, act_beta: float = 0.0,
          residual: Optional[_F32] = None,
          context: Optional[ExecutionContext] = None) -> _F32: ...
def matmul_shape(a_shape: Tuple[int, ...], b_shape: Tuple[int, ...],
                 names: Tuple[str, str] = ("a", "b")) -> Tuple[int, ...]: ...
def matmul(a: npt.ArrayLike, b: npt.ArrayLike, out: Optional[_F32] = None, *,
           context: Optional[ExecutionContext] = None,
           names: Tuple[str, str] = ("a", "b")) -> _F32: ...

class MatmulCall:
    """matmul of two dynamic operands bound to planned shapes and an output buffer."""
    def __init__(self, a_shape: Sequence[int], b_shape: Sequence[int], out: Optional[_F32],
                 run: Callable, context: Optional[ExecutionContext] = None) -> None: ...
    def __call__(self, inputs: Sequence[object]) -> list: ...

class LinearReshape:
    """One input shape of a LinearKernel resolved once (frozen): output shape, rows,
    algorithm ('gemv', 'gemm', 'none'), threads and workspace."""
    input_shape: Tuple[int, ...]
    output_shape: Tuple[int, ...]
    rows: int
    algorithm: str
    num_threads: int
    workspace_bytes: int

class LinearCall:
    """A linear layer bound to an input shape (and an output buffer, or None: a new array
    per call); None when x does not fit it."""
    out: Optional[_F32]
    def __call__(self, x: _F32) -> Optional[_F32]: ...

class LinearKernel:
    """A linear layer's weight prepared once: y = act(alpha * x @ weight.T + bias)."""
    weight: _F32
    bias: Optional[_F32]
    in_features: int
    out_features: int
    prepack: bool
    context: ExecutionContext
    def __init__(self, weight: _F32, bias: Optional[_F32] = None, prepack: bool = True,
                 context: Optional[ExecutionContext] = None) -> None: ...
    @property
    def packed(self) -> Optional[PackedMatrix]: ...
    def reshape(self, x_shape: Tuple[int, ...],
                out_shape: Tuple[int, ...]) -> LinearReshape: ...
    def run(self, shape: LinearReshape, x: _F32, out: _F32, activation: Optional[str] = None,
            act_alpha: float = 0.0, act_beta: float = 0.0, alpha: float = 1.0) -> _F32: ...
    def bind(self, shape: LinearReshape, out: Optional[_F32] = None,
             activation: Optional[str] = None, act_alpha: float = 0.0,
             act_beta: float = 0.0, alpha: float = 1.0) -> LinearCall: ...

def measure_peak_gflops(threads: int = 1, isa: Optional[str] = None,
                        seconds: float = 0.2) -> float: ...
def channel_affine(x: _F32, scale: _F32, shift: _F32, activation: Optional[str] = None,
                   act_alpha: float = 0.0, act_beta: float = 0.0,
                   out: Optional[_F32] = None,
                   context: Optional[ExecutionContext] = None) -> _F32: ...

class ChannelAffineCall:
    """channel_affine() bound to an input shape; None when x does not fit."""
    def __call__(self, x: _F32) -> Optional[_F32]: ...

def bind_channel_affine(x_shape: Tuple[int, ...], scale: _F32, shift: _F32,
                        activation: Optional[str] = None, act_alpha: float = 0.0,
                        act_beta: float = 0.0, out: Optional[_F32] = None,
                        context: Optional[ExecutionContext] = None) -> ChannelAffineCall: ...
def apply_activation(x: _F32, activation: Optional[str], act_alpha: float = 0.0,
                     act_beta: float = 0.0,
                     context: Optional[ExecutionContext] = None) -> _F32: ...
