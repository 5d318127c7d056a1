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
def set_depthwise_channels_max_width(width: int) -> int: ...

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
    @property
    def last_bands(self) -> Tuple[Tuple[Tuple[int, int], Tuple[int, int]], ...]: ...
    def reshape(self, x_shape: _Ints, out_shape: _Ints, strides: _Ints, dilations: _Ints,
                geometry: object) -> "ConvReshape": ...
    def run(self, shape: "ConvReshape", x: _F32, out: _F32, residual: Optional[_F32] = None,
            activation: Optional[str] = None, act_alpha: float = 0.0,
            act_beta: float = 0.0) -> _F32: ...
    def bind(self, shape: "ConvReshape", out: Optional[_F32], activation: Optional[str] = None,
             act_alpha: float = 0.0, act_beta: float = 0.0) -> "ConvCall": ...

class ConvReshape:
    """One input shape of a ConvKernel resolved once (frozen): output shape, geometry,
    algorithm, tap crop and bands, threads and workspace."""
    input_shape: _Ints
    output_shape: _Ints
    strides: _Ints
    dilations: _Ints
    pads_begin: _Ints
    pads_end: _Ints
    output_padding: _Ints
    geometry: object
    algorithm: str
    bands: Tuple[Tuple[Tuple[int, int], Tuple[int, int]], ...]
    num_threads: int
    workspace_bytes: int

class ConvCall:
    """One convolution bound to an input shape and an output buffer; None when the
    arguments are not what it was bound for."""
    out: Optional[_F32]
    @property
    def output_shape(self) -> Tuple[int, ...]: ...
    def __call__(self, x: _F32, residual: Optional[_F32] = None) -> Optional[_F32]: ...
