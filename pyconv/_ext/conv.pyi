"""Type stubs for pyconv._ext.conv (compiled from conv.pyx and its .pxi files): the
convolution plan's kernel (weights packed once, the algorithm chosen per shape)."""
from typing import Optional, Tuple

import numpy as np
import numpy.typing as npt

from pyconv._ext.gemm import ExecutionContext
from pyconv.errors import InvalidArgument as InvalidArgument
from pyconv.errors import InvalidDType as InvalidDType
from pyconv.errors import ShapeError as ShapeError

_F32 = npt.NDArray[np.float32]
_Ints = Tuple[int, ...]

def set_algorithm(name: str) -> str: ...
def get_algorithm() -> str: ...

class ConvKernel:
    """Convolution weights prepared once (packed per group) and run many times."""
    weight: _F32
    bias: Optional[_F32]
    groups: int
    cin: int
    cout: int
    nspatial: int
    transposed: bool
    direct: bool
    kernel_shape: _Ints
    context: ExecutionContext
    def __init__(self, weight: _F32, bias: Optional[_F32], groups: int,
                 transposed: bool = False,
                 context: Optional[ExecutionContext] = None) -> None: ...
    @property
    def last_algorithm(self) -> Optional[str]: ...
    def run(self, x: _F32, out: _F32, stride: _Ints, pads_begin: _Ints, dilation: _Ints,
            residual: Optional[_F32] = None, activation: Optional[str] = None,
            act_alpha: float = 0.0, act_beta: float = 0.0) -> _F32: ...
    def bind(self, x_shape: _Ints, out: _F32, stride: _Ints, pads_begin: _Ints,
             dilation: _Ints, activation: Optional[str] = None, act_alpha: float = 0.0,
             act_beta: float = 0.0) -> "ConvCall": ...

class ConvCall:
    """One convolution bound to an input shape and an output buffer; None when the
    arguments are not what it was bound for."""
    out: _F32
    def __call__(self, x: _F32, residual: Optional[_F32] = None) -> Optional[_F32]: ...
