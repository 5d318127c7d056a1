"""Type stubs for pyconv._ext.qgemm: the exact 8-bit integer GEMM (uint8 x int8 ->
int32) behind the quantized operators, the quantized 2-D convolution and add."""
from typing import Optional

import numpy as np
import numpy.typing as npt

from pyconv._ext.gemm import ExecutionContext

def kernel_isa(context: Optional[ExecutionContext] = None) -> str: ...
def kernel_names() -> list[str]: ...

class PackedInt8:
    data: npt.NDArray[np.int8]
    k: int
    n: int
    kp: int
    np: int
    column_sums: npt.NDArray[np.int64]
    def __init__(self, b: npt.NDArray[np.int8]) -> None: ...

def matmul_u8s8(a: npt.NDArray[np.uint8], b: PackedInt8,
                context: Optional[ExecutionContext] = None,
                kernel: Optional[str] = None) -> npt.NDArray[np.int32]: ...

def quantize(x: npt.NDArray[np.float32], scale: npt.NDArray[np.float32],
             zero_point: npt.NDArray, axis: int, dtype: object,
             context: Optional[ExecutionContext] = None) -> npt.NDArray: ...
def dequantize(q: npt.NDArray, scale: npt.NDArray[np.float32], zero_point: npt.NDArray,
               axis: int, context: Optional[ExecutionContext] = None
               ) -> npt.NDArray[np.float32]: ...

class QConv2d:
    m: int
    cg: int
    groups: int
    kh: int
    kw: int
    depthwise: bool
    integer: bool
    out_dtype: np.dtype
    def __init__(self, w: npt.NDArray[np.int8], bias: Optional[npt.NDArray[np.int32]],
                 multiplier: npt.ArrayLike, x_zero_point: int, y_zero_point: int, qmin: int,
                 qmax: int, groups: int, out_dtype: object = ...,
                 w_zero_point: Optional[npt.ArrayLike] = None) -> None: ...
    def run(self, x: npt.NDArray[np.uint8], output_shape: tuple[int, int],
            strides: tuple[int, int], pads_begin: tuple[int, int],
            dilations: tuple[int, int], context: Optional[ExecutionContext] = None,
            channels_last: bool = False) -> npt.NDArray: ...
    def bind(self, x_shape: tuple[int, ...], output_shape: tuple[int, int],
             strides: tuple[int, int], pads_begin: tuple[int, int],
             dilations: tuple[int, int], context: Optional[ExecutionContext] = None,
             channels_last: bool = False) -> QConvCall: ...

class QConvCall:
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    def __call__(self, x: object, residual: object = None) -> Optional[npt.NDArray]: ...
    def integer(self, x: object, x_zero_point: int) -> Optional[npt.NDArray[np.int32]]: ...
    def with_add(self, a_scale: float, a_zero_point: int, b_scale: float, b_zero_point: int,
                 c_scale: float, c_zero_point: int, conv_is_a: bool) -> QConvCall: ...

def contiguous_bytes(x: npt.NDArray, context: Optional[ExecutionContext] = None
                     ) -> npt.NDArray: ...
def qlinear_add(a: npt.NDArray, a_scale: float, a_zero_point: int, b: npt.NDArray,
                b_scale: float, b_zero_point: int, c_scale: float, c_zero_point: int,
                context: Optional[ExecutionContext] = None) -> npt.NDArray: ...
def shift_to_float(x: npt.NDArray[np.uint8], zero_point: int,
                   context: Optional[ExecutionContext] = None) -> npt.NDArray[np.float32]: ...
def requantize_float(acc: npt.NDArray[np.float32], multiplier: npt.ArrayLike,
                     zero_point: int, qmin: int, qmax: int, out_dtype: object = ...,
                     context: Optional[ExecutionContext] = None) -> npt.NDArray: ...
def max_pool_nhwc(x: npt.NDArray, kernel_shape: tuple[int, int], strides: tuple[int, int],
                  pads_begin: tuple[int, int], dilations: tuple[int, int],
                  output_shape: tuple[int, int],
                  context: Optional[ExecutionContext] = None) -> npt.NDArray: ...
def channel_sums(x: npt.NDArray, channels_last: bool,
                 context: Optional[ExecutionContext] = None) -> npt.NDArray[np.int32]: ...
