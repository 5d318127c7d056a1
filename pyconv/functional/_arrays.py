"""Array helpers shared by the functional modules."""
import numpy as np


def c_aligned(x):
    """x in C order and aligned, as the kernels read it; a copy only when it is not (the
    flags test costs far less than ``np.require``, which small layers feel)."""
    flags = x.flags
    if flags.c_contiguous and flags.aligned:
        return x
    return np.require(x, requirements="CA")
