"""Array helpers shared by every layer: the one float32 coercion, kernel alignment and the
check of a preallocated output."""
import numpy as np

from pyconv.errors import InvalidArgument, InvalidDType


def as_float32(x, name="input", op=""):
    """``x`` as a plain float32 ndarray (subclasses such as ``np.matrix`` viewed as
    one), not copied when it already is one.

    NumPy arrays must be float32 (pyconv never narrows or widens an array silently);
    other values (lists, tuples, Python scalars, array-likes) of floating-point numbers
    are converted.

    Parameters
    ----------
    x : array_like
    name : str
        What ``x`` is, for error messages (``"weight"``, ``"input 'x'"``).
    op : str, optional
        The function, layer or node, prefixed to error messages.

    Returns
    -------
    ndarray, float32

    Raises
    ------
    InvalidDType
        If ``x`` is an array of another dtype, or holds something other than floats.
    InvalidArgument
        If ``x`` cannot be made an array at all.
    """
    if type(x) is np.ndarray and x.dtype == np.float32:
        return x
    if isinstance(x, np.ndarray):
        x = x.view(np.ndarray)      # np.matrix & co: plain arrays, their rules stay outside
        if x.dtype == np.float32:
            return x
    prefix = f"{op}: " if op else ""
    if isinstance(x, np.ndarray):
        raise InvalidDType(f"{prefix}{name} must be float32, got dtype {x.dtype} "
                           f"(convert explicitly with .astype(np.float32))")
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{prefix}{name} must be a float32 array, got "
                              f"{type(x).__name__}: {exc}") from None
    if arr.dtype == object:     # NumPy < 1.24 makes ragged lists object arrays, no error
        raise InvalidArgument(f"{prefix}{name} must be a float32 array, got "
                              f"{type(x).__name__} that is not a rectangular array of numbers")
    if arr.dtype.kind != "f" or arr.dtype.itemsize > 8:
        raise InvalidDType(f"{prefix}{name} must be a float32 array (or a list of floats), "
                           f"got {type(x).__name__} of dtype {arr.dtype}")
    return arr.astype(np.float32)


def c_aligned(x):
    """x in C order and aligned, as the kernels read it; a copy only when it is not (the
    flags test costs far less than ``np.require``, which small layers feel)."""
    flags = x.flags
    if flags.c_contiguous and flags.aligned:
        return x
    return np.require(x, requirements="CA")


def check_out(op, name, arr, shape, dtype, aligned=False):
    """A preallocated output: a writeable C-contiguous array of the result's shape and
    dtype (``aligned``: also aligned, as the GEMM kernels write it); returns it.

    Raises
    ------
    InvalidArgument
        Naming ``op``, ``name``, what was wanted and what was given.
    """
    if (not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.shape != shape
            or not arr.flags.c_contiguous or not arr.flags.writeable
            or (aligned and not arr.flags.aligned)):
        got = (f"{type(arr).__name__}" if not isinstance(arr, np.ndarray) else
               f"{arr.dtype} array of shape {arr.shape}"
               f"{'' if arr.flags.c_contiguous else ', not C-contiguous'}"
               f"{'' if arr.flags.writeable else ', read-only'}"
               f"{'' if arr.flags.aligned else ', misaligned'}")
        raise InvalidArgument(f"{op}: {name} must be a writeable "
                              f"{'aligned ' if aligned else ''}C-contiguous "
                              f"{np.dtype(dtype)} array of shape {shape}, got {got}")
    return arr
