"""Type stubs for pyconv._ext.pool (compiled from pool.pyx): max / average / Lp, global,
adaptive pooling and unpooling on validated problems (pyconv.functional checks them)."""
from typing import Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

from pyconv._ext.gemm import ExecutionContext

_F32 = npt.NDArray[np.float32]
_I64 = npt.NDArray[np.int64]
_Ints = Tuple[int, ...]

#: Pooling modes: name -> code.
MODES: dict[str, int]
#: Max-pool index conventions: 'none', 'torch' (per plane), 'onnx' (whole tensor).
INDEX_MODES: Tuple[str, ...]

def pool(mode: str, x: _F32, out_shape: _Ints, kernel: _Ints, stride: _Ints,
         pads_begin: _Ints, pads_end: _Ints, dilation: _Ints, *,
         count_include_pad: bool = True, divisor: float = 0.0, p: float = 2.0,
         indices: str = "none", out: Optional[_F32] = None,
         out_indices: Optional[_I64] = None,
         context: Optional[ExecutionContext] = None) -> Union[_F32, Tuple[_F32, _I64]]: ...

class PoolCall:
    """pool() bound to an input shape and an output buffer; None when x does not fit."""
    out: _F32
    def __call__(self, x: _F32) -> Optional[_F32]: ...

def bind_pool(mode: str, x_shape: _Ints, out_shape: _Ints, kernel: _Ints, stride: _Ints,
              pads_begin: _Ints, pads_end: _Ints, dilation: _Ints, out: _F32, *,
              count_include_pad: bool = True, divisor: float = 0.0, p: float = 2.0,
              context: Optional[ExecutionContext] = None) -> PoolCall: ...
def global_pool(x: _F32, is_max: bool,
                context: Optional[ExecutionContext] = None) -> _F32: ...

def global_pool_threads(values: int, context: Optional[ExecutionContext] = None) -> int: ...
def pool_work(mode: str, x_shape: _Ints, out_shape: _Ints, kernel: _Ints, stride: _Ints,
              pads_begin: _Ints, pads_end: _Ints, dilation: _Ints, indices: str = "none",
              context: Optional[ExecutionContext] = None) -> Tuple[str, int, int]: ...
def set_pool_lanes_max_width(width: int) -> int: ...
def scale_planes(x: _F32, scale: _F32, out: _F32,
                 context: Optional[ExecutionContext] = None) -> _F32: ...

class GlobalPoolCall:
    """global_pool() bound to an input shape; None when x does not fit."""
    def __call__(self, x: _F32) -> Optional[_F32]: ...

def bind_global_pool(x_shape: _Ints, is_max: bool,
                     context: Optional[ExecutionContext] = None) -> GlobalPoolCall: ...
def adaptive_pool(x: _F32, out_shape: _Ints, is_max: bool, return_indices: bool = False,
                  context: Optional[ExecutionContext] = None
                  ) -> Union[_F32, Tuple[_F32, _I64]]: ...
def max_unpool(x: _F32, indices: _I64, out_plane: int, whole_tensor: bool,
               context: Optional[ExecutionContext] = None) -> Tuple[_F32, int]: ...
