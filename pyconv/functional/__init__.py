"""Layer operations on float32 NumPy arrays with torch.nn.functional signatures.

Layout NC(D)HW; weights in PyTorch layout: convolution (C_out, C_in/groups, *k),
transposed convolution (C_in, C_out/groups, *k). The ONNX operators run the same code.
"""
from pyconv.functional._activation import *  # noqa: F401,F403
from pyconv.functional._conv import *  # noqa: F401,F403
from pyconv.functional._fold import *  # noqa: F401,F403
from pyconv.functional._linear import *  # noqa: F401,F403
from pyconv.functional._misc import *  # noqa: F401,F403
from pyconv.functional._norm import *  # noqa: F401,F403
from pyconv.functional._pool import *  # noqa: F401,F403
from pyconv.functional._resize import *  # noqa: F401,F403
from pyconv.functional._shuffle import *  # noqa: F401,F403
from pyconv.functional import (_activation, _conv, _fold, _linear, _misc, _norm, _pool,
                               _resize, _shuffle)

__all__ = sorted(_activation.__all__ + _conv.__all__ + _fold.__all__ + _linear.__all__
                 + _misc.__all__ + _norm.__all__ + _pool.__all__ + _resize.__all__
                 + _shuffle.__all__)
