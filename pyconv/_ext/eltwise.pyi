"""Type stubs for pyconv._ext.eltwise: the element-wise engine (vector activations and
math, broadcast binary ops, the normalisations' row standardisation) and its bound
calls."""
import enum
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

from pyconv._ext.gemm import ExecutionContext

_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]
_Ints = Tuple[int, ...]

ACTIVATIONS: Dict[str, int]
UNARY: Dict[str, int]
BINARY: Dict[str, int]

class pyconv_unary(enum.IntEnum): ...
class pyconv_binary(enum.IntEnum): ...

def unary_code(op: str) -> int: ...
def binary_code(op: str) -> int: ...
def binary_layout(a_shape: _Ints, b_shape: _Ints) -> Optional[tuple]: ...
def unary(x: _F32, op: str, a: float = 0.0, b: float = 0.0, out: Optional[_F32] = None,
          context: Optional[ExecutionContext] = None) -> _F32: ...
def binary(a: _F32, b: _F32, op: str, out: Optional[_F32] = None,
           context: Optional[ExecutionContext] = None) -> Optional[_F32]: ...
def standardize(x: _F32, eps: float, scale: Optional[_F32] = None,
                bias: Optional[_F32] = None, out: Optional[_F32] = None,
                context: Optional[ExecutionContext] = None) -> Tuple[_F32, _F64, _F64]: ...
def softmax(x: _F32, log: bool = False, out: Optional[_F32] = None,
            context: Optional[ExecutionContext] = None) -> _F32: ...
def standardize_columns(x: _F32, eps: float, scale: Optional[_F32] = None,
                        bias: Optional[_F32] = None,
                        context: Optional[ExecutionContext] = None
                        ) -> Tuple[_F32, _F64, _F64]: ...

class UnaryCall:
    """A unary op bound to a planned input shape and output buffer."""
    def __init__(self, op: str, shape: _Ints, out: _F32, run: Callable, a: float = 0.0,
                 b: float = 0.0, context: Optional[ExecutionContext] = None) -> None: ...
    def __call__(self, inputs: Sequence[object]) -> list: ...

class BinaryCall:
    """A binary op bound to planned input shapes and an output buffer."""
    def __init__(self, op: str, a_shape: _Ints, b_shape: _Ints, out: _F32, run: Callable,
                 context: Optional[ExecutionContext] = None) -> None: ...
    def __call__(self, inputs: Sequence[object]) -> list: ...
