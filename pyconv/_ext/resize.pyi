"""Type stubs for pyconv._ext.resize: nearest and bilinear resize over the last two
axes, from precomputed source indices (and weights)."""
from typing import Optional

import numpy as np
import numpy.typing as npt

from pyconv._ext.gemm import ExecutionContext

_F32 = npt.NDArray[np.float32]
_I64 = npt.NDArray[np.int64]

def nearest_2d(x: _F32, iy: _I64, ix: _I64,
               context: Optional[ExecutionContext] = None,
               out: Optional[_F32] = None) -> _F32: ...
def linear_2d(x: _F32, iy: _I64, wy: _F32, ix: _I64, wx: _F32,
              context: Optional[ExecutionContext] = None,
              out: Optional[_F32] = None) -> _F32: ...
