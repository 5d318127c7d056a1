"""pyconv._arrays.as_float32: the one float32 coercion of every Python layer, with one
message format."""
import re

import numpy as np
import pytest

import pyconv.functional as F
from pyconv import nn
from pyconv._arrays import as_float32
from pyconv.errors import InvalidArgument, InvalidDType
from pyconv.ops import lookup
from pyconv.ops._base import Node

W = np.ones((2, 2, 3, 3), np.float32)


def _op(op_type, name):
    return lookup(op_type)(Node(op_type, ["x", "w"][:2 if op_type == "Conv" else 1], ["y"],
                                name=name), 17, {1: W} if op_type == "Conv" else {})


@pytest.mark.parametrize("call,where", [
    (lambda x: F.conv2d(x, W), "conv2d: input"),
    (lambda x: F.ConvPlan(W).run(x), "conv: input"),
    (lambda x: F.max_pool2d(x, 2), "max_pool2d: x"),
    (lambda x: F.global_avg_pool(x), "global_avg_pool: x"),
    (lambda x: F.relu(x), "relu: input"),
    (lambda x: F.batch_norm(x, W[0, 0, 0, :2], W[0, 0, 0, :2]), "batch_norm: input"),
    (lambda x: nn.Conv2d(2, 2, 3)(x), "Conv2d: input"),
    (lambda x: _op("Sigmoid", "s").run([x]), "Sigmoid node 's': input 'x'"),
    (lambda x: _op("Conv", "c").run([x, W]), "Conv node 'c': input 'x'"),
    # (load_state_dict casts, as torch's does; assigning a parameter does not)
    (lambda x: setattr(nn.Conv2d(2, 2, 3), "weight", W.astype(x.dtype)), "Conv2d.weight"),
])
def test_every_layer_reports_a_wrong_dtype_alike(call, where):
    x = np.ones((1, 2, 4, 4))
    with pytest.raises(InvalidDType, match="^" + re.escape(where) + r" must be float32, got "
                                           r"dtype float64 \(convert explicitly with "
                                           r"\.astype\(np\.float32\)\)$"):
        call(x)


def test_as_float32():
    x = np.ones(3, np.float32)
    assert as_float32(x) is x
    y = as_float32([[1.0, 2.5]], "weight", "conv2d")
    assert y.dtype == np.float32 and y.tolist() == [[1.0, 2.5]]
    with pytest.raises(InvalidDType, match=r"^conv2d: weight must be a float32 array \(or a "
                                           r"list of floats\), got list of dtype int64$"):
        as_float32([1, 2], "weight", "conv2d")
    with pytest.raises(InvalidArgument, match=r"^x must be a float32 array, got list"):
        as_float32([[1.0], [2.0, 3.0]], "x")


def test_lists_of_floats_are_converted_by_the_functional_layer():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(F.max_pool2d(x.tolist(), 2), F.max_pool2d(x, 2))
    w = np.ones((1, 1, 2, 2), np.float32)
    np.testing.assert_array_equal(F.conv2d(x.tolist(), w.tolist()), F.conv2d(x, w))


@pytest.mark.parametrize("shape,dtype", [((3,), np.float32), ((1, 64, 16, 16), np.float32),
                                         ((0, 5), np.float32), ((), np.float32),
                                         ((2, 3), np.int64)])
def test_empty_aligned_starts_on_a_cache_line(shape, dtype):
    from pyconv._ext.gemm import empty_aligned
    a = empty_aligned(shape, dtype)
    assert a.shape == shape and a.dtype == dtype
    assert a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % 64 == 0
    a[...] = 1                                 # the memory is there and is its own
    assert a.sum() == a.size


def test_empty_aligned_checks_the_size_first():
    from pyconv._ext.gemm import empty_aligned
    from pyconv.errors import ShapeError
    with pytest.raises(ShapeError, match="elements"):
        empty_aligned((1 << 40, 1 << 40))


def test_new_outputs_start_on_a_cache_line():
    # Threads split an output's rows by columns: NumPy's 16-byte alignment would put each
    # row's boundary in a line both threads write.
    x = np.random.default_rng(0).random((1, 2, 9, 9), dtype=np.float32)
    for _ in range(4):          # NumPy's buffers fall at varying offsets
        assert F.conv2d(x, W).ctypes.data % 64 == 0
        assert F.ConvPlan(W).run(x).ctypes.data % 64 == 0
        assert F.linear(x.reshape(2, -1)[:, :18], np.ones((5, 18), np.float32)
                        ).ctypes.data % 64 == 0
