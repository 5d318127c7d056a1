"""Type stubs for pyconv._ext.qgemm: the exact 8-bit integer GEMM (uint8 x int8 ->
int32) behind the quantized operators."""
from typing import Optional

import numpy as np
import numpy.typing as npt

from pyconv._ext.gemm import ExecutionContext

def kernel_isa(context: Optional[ExecutionContext] = None) -> str: ...

class PackedInt8:
    data: npt.NDArray[np.int8]
    k: int
    n: int
    kp: int
    np: int
    column_sums: npt.NDArray[np.int64]
    def __init__(self, b: npt.NDArray[np.int8]) -> None: ...

def matmul_u8s8(a: npt.NDArray[np.uint8], b: PackedInt8,
                context: Optional[ExecutionContext] = None) -> npt.NDArray[np.int32]: ...

def quantize(x: npt.NDArray[np.float32], scale: npt.NDArray[np.float32],
             zero_point: npt.NDArray, axis: int, dtype: object,
             context: Optional[ExecutionContext] = None) -> npt.NDArray: ...
def dequantize(q: npt.NDArray, scale: npt.NDArray[np.float32], zero_point: npt.NDArray,
               axis: int, context: Optional[ExecutionContext] = None
               ) -> npt.NDArray[np.float32]: ...
