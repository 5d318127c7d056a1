"""Shape and data-movement operators (any dtype, NumPy): the glue around convolutions.

Reshape-like operators return views of their input where NumPy can (the memory planner
tracks aliases); nothing here writes into an input."""
from __future__ import annotations

import functools
import math

import numpy as np

from pyconv import functional as F
from pyconv.arithmetic import check_tensor_size
from pyconv.errors import InvalidArgument, InvalidDType, InvalidModel, PyconvError, ShapeError
from pyconv.functional._misc import pad_widths
from pyconv.ops._base import REQUIRED, Op, register, take_out, wrap_errors


def np_dtype(op, elem_type):
    """The NumPy dtype of an ONNX TensorProto data type (numeric and bool only)."""
    from onnx import TensorProto, helper
    if elem_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        op.fail(f"data type {TensorProto.DataType.Name(elem_type)} is not supported",
                InvalidDType)
    try:
        dt = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        op.fail(f"data type {elem_type} is not supported", InvalidDType)
    if dt.kind not in "biuf":
        op.fail(f"data type {TensorProto.DataType.Name(elem_type)} is not supported",
                InvalidDType)
    if elem_type not in _native_types():
        op.fail(f"data type {TensorProto.DataType.Name(elem_type)} (stored as {dt}) is not "
                f"supported", InvalidDType)
    return dt


@functools.lru_cache(maxsize=None)
def _native_types():
    """The ONNX data types NumPy stores natively (built on first use: importing onnx
    costs most of a second, so ``import pyconv`` does not)."""
    from onnx import TensorProto as T
    return frozenset({T.FLOAT, T.DOUBLE, T.FLOAT16, T.INT8, T.INT16, T.INT32, T.INT64,
                      T.UINT8, T.UINT16, T.UINT32, T.UINT64, T.BOOL})


def _int_list(op, arr, name):
    if arr is None:
        return None
    a = np.asarray(arr)
    if a.dtype.kind not in "iu":
        op.fail(f"{name} must be an integer tensor, got dtype {a.dtype}")
    return [int(v) for v in a.reshape(-1)]


def _axes_from(op, inputs, index, attr="axes", since=13):
    """``axes`` as an attribute before opset ``since``, an optional input from it."""
    if op.opset < since:
        v = op.attrs.get(attr)
        return None if v is None else [int(a) for a in v]
    if len(inputs) > index and inputs[index] is not None:
        return _int_list(op, inputs[index], attr)
    return None


def _view_step(shape, view, run):
    """A bound step returning ``view(x)`` for a plain ndarray of the planned ``shape``,
    ``run(inputs)`` (which converts or reports) for anything else."""
    def call(inputs):
        x = inputs[0]
        if type(x) is np.ndarray and x.shape == shape:
            return [view(x)]
        return run(inputs)
    return call


class _View(Op):
    """An operator whose one output is its input's data under another shape (a NumPy view
    where the strides allow): Reshape, Flatten, Squeeze, Unsqueeze. Bound to a planned
    input shape, a step is that reshape alone, the target shape resolved once by ``run``
    on a zero-stride stand-in of the input (no data) with the constant inputs."""

    def setup(self, consts):
        self.consts = consts

    def bind(self, specs, out):
        if specs[0] is None:
            return None
        shape, dtype = tuple(specs[0][0]), specs[0][1]
        stand_in = [np.broadcast_to(np.zeros((), dtype), shape)]
        for i in range(1, len(self.node.inputs)):
            if specs[i] is None:
                stand_in.append(None)
            elif i in self.consts:
                stand_in.append(self.consts[i])
            else:
                return None             # a shape computed at run time
        try:
            target = self.run(stand_in)[0].shape
        except PyconvError:
            return None                 # the run reports it
        return _view_step(shape, lambda x: x.reshape(target), self.run)


@register("Identity")
class Identity(Op):
    def run(self, inputs, out=None):
        return [inputs[0]]


@register("Dropout")
class Dropout(Op):
    """Inference: the identity (mask all true). ``training_mode`` with a non-zero ratio
    is refused (pyconv is inference-only)."""
    attributes = {"ratio": 0.5, "seed": None, "is_test": 0}

    def run(self, inputs, out=None):
        x = inputs[0]
        if self.opset >= 12:
            training = len(inputs) > 2 and inputs[2] is not None and bool(inputs[2])
            ratio = float(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else 0.5
            if training and ratio != 0.0:
                self.fail("training_mode=True with a non-zero ratio is not supported "
                          "(pyconv is inference-only)")
        outs = [x]
        if len(self.node.outputs) > 1 and self.node.outputs[1]:
            outs.append(np.ones(x.shape, np.bool_))
        return outs


@register("Constant")
class Constant(Op):
    """The value of one of value / value_float(s) / value_int(s) (opset 1-22)."""
    required_inputs = 0
    attributes = {"value": None, "value_float": None, "value_floats": None,
                  "value_int": None, "value_ints": None, "value_string": None,
                  "value_strings": None, "sparse_value": None}

    def setup(self, consts):
        a = self.attrs
        given = [k for k, v in a.items() if v is not None and not k.startswith("_")]
        if len(given) != 1:
            self.fail(f"exactly one value attribute must be set, got {given}", InvalidModel)
        k = given[0]
        if k in ("value_string", "value_strings", "sparse_value"):
            self.fail(f"attribute {k} is not supported", InvalidDType)
        conv = {"value": lambda v: np.asarray(v),
                "value_float": lambda v: np.asarray(v, np.float32),
                "value_floats": lambda v: np.asarray(v, np.float32).reshape(-1),
                "value_int": lambda v: np.asarray(v, np.int64),
                "value_ints": lambda v: np.asarray(v, np.int64).reshape(-1)}[k]
        self.value = conv(a[k])
        self.value.flags.writeable = False

    def run(self, inputs, out=None):
        return [self.value]


@register("ConstantOfShape")
class ConstantOfShape(Op):
    attributes = {"value": None}

    def run(self, inputs, out=None):
        shape = _int_list(self, inputs[0], "shape")
        if any(s < 0 for s in shape):
            self.fail(f"shape {shape} has a negative dim", ShapeError)
        v = self.attrs["value"]
        v = np.zeros(1, np.float32) if v is None else np.asarray(v).reshape(-1)
        if v.size != 1:
            self.fail(f"value must have one element, got {v.size}")
        return [np.full(check_tensor_size(shape, self.node.label, itemsize=v.dtype.itemsize),
                        v[0], v.dtype)]


@register("Shape")
class Shape(Op):
    attributes = {"start": 0, "end": None}

    def run(self, inputs, out=None):
        shape = inputs[0].shape
        end = self.attrs["end"]
        return [np.array(shape[int(self.attrs["start"]):None if end is None else int(end)],
                         np.int64)]


@register("Cast")
class Cast(Op):
    attributes = {"to": REQUIRED, "saturate": 1}

    def setup(self, consts):
        self.dtype = np_dtype(self, int(self.attrs["to"]))

    def run(self, inputs, out=None):
        x = inputs[0]
        if x.dtype.kind not in "biuf":
            self.fail(f"input dtype {x.dtype} is not supported", InvalidDType)
        return [x.astype(self.dtype)]


@register("Reshape")
class Reshape(_View):
    required_inputs = staticmethod(lambda opset: 2 if opset >= 5 else 1)
    attributes = {"allowzero": 0, "shape": None}

    def run(self, inputs, out=None):
        x = inputs[0]
        if self.opset < 5:
            shape = list(self.attrs["shape"] or [])
        else:
            shape = _int_list(self, inputs[1], "shape")
        allowzero = bool(self.attrs["allowzero"])
        target = []
        for i, s in enumerate(shape):
            if s == 0 and not allowzero:
                if i >= x.ndim:
                    self.fail(f"shape {shape}: dim {i} copies an input dim, but the input "
                              f"{x.shape} has only {x.ndim}", ShapeError)
                s = x.shape[i]
            target.append(s)
        if target.count(-1) > 1 or any(s < -1 for s in target):
            self.fail(f"invalid shape {shape}", ShapeError)
        try:
            return [x.reshape(target)]
        except ValueError:
            self.fail(f"cannot reshape input '{self.input_name(0)}' of shape {x.shape} to "
                      f"{shape}", ShapeError)


@register("Flatten")
class Flatten(_View):
    attributes = {"axis": 1}

    def run(self, inputs, out=None):
        x = inputs[0]
        axis = int(self.attrs["axis"])
        if not -x.ndim <= axis <= x.ndim:
            self.fail(f"axis {axis} is out of range for rank {x.ndim}")
        if axis < 0:
            axis += x.ndim
        return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


@register("Transpose")
class Transpose(Op):
    attributes = {"perm": None}

    def _perm(self, ndim):
        perm = self.attrs["perm"]
        if perm is None:
            perm = list(range(ndim))[::-1]
        if sorted(int(p) for p in perm) != list(range(ndim)):
            self.fail(f"perm {list(perm)} is not a permutation of the {ndim} input axes")
        return [int(p) for p in perm]

    def run(self, inputs, out=None):
        x = inputs[0]
        return [np.transpose(x, self._perm(x.ndim))]

    def bind(self, specs, out):
        """A view with the permutation checked once for the planned rank."""
        if specs[0] is None:
            return None
        shape = tuple(specs[0][0])
        try:
            perm = self._perm(len(shape))
        except PyconvError:
            return None                 # the run reports it
        return _view_step(shape, lambda x: x.transpose(perm), self.run)


@register("Squeeze")
class Squeeze(_View):
    attributes = {"axes": None}

    def run(self, inputs, out=None):
        x = inputs[0]
        axes = _axes_from(self, inputs, 1)
        if axes is None:
            return [x.reshape([s for s in x.shape if s != 1])]
        axes = sorted({self.check_axis(a, x.ndim) for a in axes})
        for a in axes:
            if x.shape[a] != 1:
                self.fail(f"cannot squeeze axis {a} of size {x.shape[a]} (input shape "
                          f"{x.shape})", ShapeError)
        return [x.reshape([s for i, s in enumerate(x.shape) if i not in axes])]


@register("Unsqueeze")
class Unsqueeze(_View):
    attributes = {"axes": None}

    def run(self, inputs, out=None):
        x = inputs[0]
        axes = _axes_from(self, inputs, 1)
        if axes is None:
            self.fail("axes is required")
        rank = x.ndim + len(axes)
        axes = sorted(self.check_axis(a, rank) for a in axes)
        if len(set(axes)) != len(axes):
            self.fail(f"axes {axes} has duplicates")
        shape = list(x.shape)
        for a in axes:
            shape.insert(a, 1)
        return [x.reshape(shape)]


@register("Concat")
class Concat(Op):
    """Inputs joined along ``axis``. When the dims before the axis are all 1 every input
    is one contiguous block of the output: the memory planner then has the producers write
    straight into their blocks (:meth:`input_blocks`), and a run copies only the inputs
    found elsewhere (initializers, feeds, views, graph outputs, a value another concat
    holds)."""
    attributes = {"axis": REQUIRED}
    supports_out = True

    def _out_shape(self, shapes):
        """The output shape for input ``shapes`` and the axis, checked."""
        rank = len(shapes[0])
        axis = self.check_axis(self.attrs["axis"], rank)
        for i, sh in enumerate(shapes):
            if len(sh) != rank or sh[:axis] + sh[axis + 1:] != \
                    shapes[0][:axis] + shapes[0][axis + 1:]:
                self.fail(f"input '{self.input_name(i)}' has shape {sh}, incompatible "
                          f"with '{self.input_name(0)}' {shapes[0]} along axis "
                          f"{axis}", ShapeError)
        shape = list(shapes[0])
        shape[axis] = sum(sh[axis] for sh in shapes)
        return axis, shape

    def run(self, inputs, out=None):
        arrays = [a for a in inputs if a is not None]
        axis, shape = self._out_shape([a.shape for a in arrays])
        dtype = np.result_type(*arrays)
        if out is not None and list(out.shape) == shape and out.dtype == dtype:
            # Inputs a plan placed in their blocks of ``out`` are there already.
            start = 0
            for a in arrays:
                block = out[(slice(None),) * axis + (slice(start, start + a.shape[axis]),)]
                start += a.shape[axis]
                if not _same_memory(a, block):
                    np.copyto(block, a)
            return [out]
        return [np.concatenate(arrays, axis=axis)]

    def input_blocks(self, specs):
        if not specs or any(sp is None or sp[1] != np.float32 for sp in specs):
            return None
        shapes = [tuple(sp[0]) for sp in specs]
        try:
            axis, _ = self._out_shape(shapes)
        except PyconvError:
            return None                 # the run reports it
        if math.prod(shapes[0][:axis]) != 1:
            return None                 # each input is several strided pieces
        offsets, start = [], 0
        for sh in shapes:
            offsets.append(start)
            start += math.prod(sh)
        return offsets

    def bind(self, specs, out):
        return self.bind_placed(specs, out, [None] * len(specs))

    def bind_placed(self, specs, out, placed):
        """Copies each input into its block of ``out``, but for those the plan placed
        there (``inputs[i] is placed[i]``: the producer wrote its planned buffer)."""
        offsets = self.input_blocks(specs)
        if out is None or offsets is None or not out.flags.c_contiguous:
            return None
        shapes = [tuple(sp[0]) for sp in specs]
        flat = out.reshape(-1)
        blocks = [flat[o:o + math.prod(sh)].reshape(sh) for o, sh in zip(offsets, shapes)]
        work = list(zip(shapes, blocks, placed))
        run = self.run

        def call(inputs):
            for x, (shape, block, here) in zip(inputs, work):
                if x is not here:
                    if type(x) is not np.ndarray or x.shape != shape or \
                            x.dtype != np.float32:
                        return run(inputs, out)
                    np.copyto(block, x)
            return [out]
        return call


def _same_memory(a, b):
    """Whether ``a`` and ``b`` are the same elements of the same memory."""
    return (a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def _constant_inputs(op, specs):
    """The inputs after the first as a bind sees them: constants (``op.consts``) or None
    for absent ones; None when one is computed at run time."""
    values = [None]
    for i in range(1, len(op.node.inputs)):
        if not op.node.inputs[i]:
            values.append(None)
        elif i in op.consts:
            values.append(op.consts[i])
        else:
            return None
    return values


def _resolved_for_plan(op, specs, resolve):
    """(planned input shape, resolve(shape, constant inputs)) for a bind whose other
    inputs are constants; None where the run must decide (a computed input, an unknown
    shape, or arguments the run reports)."""
    inputs = _constant_inputs(op, specs)
    if specs[0] is None or inputs is None:
        return None
    shape = tuple(specs[0][0])
    try:
        return shape, resolve(shape, inputs)
    except PyconvError:
        return None                     # the run reports it


@register("Split")
class Split(Op):
    attributes = {"axis": 0, "split": None, "num_outputs": None}

    def setup(self, consts):
        self.consts = consts

    def _pieces(self, shape, inputs):
        """(axis, per output the index tuple of its piece) for an input of ``shape``."""
        axis = self.check_axis(self.attrs["axis"], len(shape))
        n = len(self.node.outputs)
        if self.opset < 13:
            split = self.attrs["split"]
        else:
            split = _int_list(self, inputs[1], "split") if len(inputs) > 1 else None
        dim = shape[axis]
        if split is None:
            if self.opset >= 18 and self.attrs["num_outputs"] is not None:
                n = int(self.attrs["num_outputs"])
                chunk = -(-dim // n)
                split = [min(chunk, max(dim - i * chunk, 0)) for i in range(n)]
            else:
                if dim % n:
                    self.fail(f"cannot split axis {axis} of size {dim} into {n} equal parts")
                split = [dim // n] * n
        split = [int(s) for s in split]
        if sum(split) != dim or len(split) != n or min(split) < 0:
            self.fail(f"split {split} does not fit axis {axis} of size {dim} into {n} "
                      f"outputs", ShapeError)
        pieces, start = [], 0
        for size in split:
            pieces.append((slice(None),) * axis + (slice(start, start + size),))
            start += size
        return pieces

    def run(self, inputs, out=None):
        x = inputs[0]
        return [x[index] for index in self._pieces(x.shape, inputs)]

    def bind(self, specs, out):
        """The pieces' index tuples resolved once for the planned input shape."""
        resolved = _resolved_for_plan(self, specs, self._pieces)
        if resolved is None:
            return None
        shape, pieces = resolved
        run = self.run

        def call(inputs):
            x = inputs[0]
            if type(x) is np.ndarray and x.shape == shape:
                return [x[index] for index in pieces]
            return run(inputs)
        return call


@register("Slice")
class Slice(Op):
    required_inputs = staticmethod(lambda opset: 3 if opset >= 10 else 1)
    attributes = {"starts": None, "ends": None, "axes": None}

    def setup(self, consts):
        self.consts = consts

    def _index(self, ndim, inputs):
        """The NumPy index tuple of the slice for an input of rank ``ndim``."""
        if self.opset < 10:
            starts, ends, axes = self.attrs["starts"], self.attrs["ends"], self.attrs["axes"]
            steps = None
        else:
            starts = _int_list(self, inputs[1], "starts")
            ends = _int_list(self, inputs[2], "ends")
            axes = _int_list(self, inputs[3], "axes") if len(inputs) > 3 else None
            steps = _int_list(self, inputs[4], "steps") if len(inputs) > 4 else None
        if axes is None:
            axes = list(range(len(starts)))
        if steps is None:
            steps = [1] * len(starts)
        if not len(starts) == len(ends) == len(axes) == len(steps):
            self.fail(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} must "
                      f"have the same length")
        index = [slice(None)] * ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            if st == 0:
                self.fail("steps must not be 0")
            index[self.check_axis(a, ndim)] = slice(int(s), int(e), int(st))
        return tuple(index)

    def run(self, inputs, out=None):
        x = inputs[0]
        return [x[self._index(x.ndim, inputs)]]

    def bind(self, specs, out):
        """The index tuple resolved once, with constant starts / ends / axes / steps."""
        resolved = _resolved_for_plan(self, specs,
                                      lambda shape, inputs: self._index(len(shape), inputs))
        if resolved is None:
            return None
        shape, index = resolved
        return _view_step(shape, lambda x: x[index], self.run)


@register("Gather")
class Gather(Op):
    """Gather; one index (a 0-d ``indices``) selects a view, as NumPy's basic indexing
    does: torch's ``x[:, :, i]`` (PSPNet's adaptive pooling as dynamo exports it reads
    its windows so from a transposed layout, where a copying take cost 80 us)."""
    required_inputs = 2
    attributes = {"axis": 0}

    def setup(self, consts):
        self.consts = consts

    def _checked(self, shape, idx):
        """(axis, dim) after checking ``idx`` against an input of ``shape``."""
        axis = self.check_axis(self.attrs["axis"], len(shape))
        if idx.dtype.kind not in "iu":
            self.fail(f"indices must be int32/int64, got {idx.dtype}", InvalidDType)
        dim = shape[axis]
        if idx.size and (idx.min() < -dim or idx.max() >= dim):
            self.fail(f"indices out of range [{-dim}, {dim - 1}] for axis {axis} of input "
                      f"shape {tuple(shape)}")
        return axis, dim

    def _view_index(self, shape, inputs):
        """The basic index tuple of a 0-d ``indices`` for an input of ``shape``; None for
        an index array."""
        idx = inputs[1]
        if idx.ndim:
            return None
        axis, dim = self._checked(shape, idx)
        i = int(idx)
        # the Ellipsis keeps a 0-d result an array (a 1-D input's element)
        return (slice(None),) * axis + (i + dim if i < 0 else i, Ellipsis)

    def run(self, inputs, out=None):
        x, idx = inputs
        if idx.ndim == 0:
            return [x[self._view_index(x.shape, inputs)]]
        axis, dim = self._checked(x.shape, idx)
        # A few indices can select rows of a large input many times over.
        check_tensor_size(x.shape[:axis] + idx.shape + x.shape[axis + 1:], self.node.label,
                          itemsize=x.itemsize)
        return [np.take(x, np.where(idx < 0, idx + dim, idx), axis=axis)]

    def bind(self, specs, out):
        """A constant 0-d index: the view's index tuple resolved once."""
        resolved = _resolved_for_plan(self, specs, self._view_index)
        if resolved is None or resolved[1] is None:
            return None
        shape, index = resolved
        return _view_step(shape, lambda x: x[index], self.run)


@register("Expand")
class Expand(Op):
    required_inputs = 2
    def run(self, inputs, out=None):
        x = inputs[0]
        shape = _int_list(self, inputs[1], "shape")
        try:
            full = np.broadcast_shapes(x.shape, tuple(shape))
        except ValueError:
            self.fail(f"cannot expand input of shape {x.shape} to {shape}", ShapeError)
        check_tensor_size(full, self.node.label, itemsize=x.itemsize)
        return [np.array(np.broadcast_to(x, full))]


@register("Pad")
class Pad(Op):
    """Pad: pads/value attributes up to opset 10, inputs from 11 (axes from 18); every
    dtype through the padding of :func:`pyconv.functional.pad` (``pad_widths``)."""
    required_inputs = staticmethod(lambda opset: 2 if opset >= 11 else 1)
    attributes = {"mode": "constant", "pads": None, "value": 0.0}
    _MODES = ("constant", "reflect", "edge", "wrap")

    def run(self, inputs, out=None):
        x = inputs[0]
        mode = str(self.attrs["mode"])
        if mode not in self._MODES:
            self.fail(f"mode must be one of {list(self._MODES)}, got {mode!r}")
        if self.opset < 11:
            pads, value, axes = list(self.attrs["pads"] or []), self.attrs["value"], None
        else:
            pads = _int_list(self, inputs[1], "pads")
            value = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
            value = 0 if value is None or value.size == 0 else value.reshape(-1)[0]
            axes = _int_list(self, inputs[3], "axes") if len(inputs) > 3 else None
        if axes is None:
            axes = list(range(x.ndim))
        axes = [self.check_axis(a, x.ndim) for a in axes]
        if len(set(axes)) != len(axes):
            self.fail(f"axes {axes} name a dim twice (the result would be undefined)")
        if len(pads) != 2 * len(axes):
            self.fail(f"pads {pads} must have 2 * {len(axes)} values")
        widths = [(0, 0)] * x.ndim
        for i, a in enumerate(axes):
            widths[a] = (pads[i], pads[i + len(axes)])
        return [wrap_errors(self, pad_widths, x, widths, mode, value, self.node.label)]


class _BlockOp(Op):
    """DepthToSpace / SpaceToDepth: :func:`pyconv.functional.depth_to_space` /
    :func:`~pyconv.functional.space_to_depth`, which also run torch's pixel (un)shuffle."""
    attributes = {"blocksize": REQUIRED, "mode": "DCR"}
    supports_out = True
    function = None

    def run(self, inputs, out=None):
        x = inputs[0]
        if x.ndim != 4:
            self.fail(f"input must be 4-D (N, C, H, W), got shape {x.shape}", ShapeError)
        return [wrap_errors(self, self.function, x, self.attrs["blocksize"],
                            self.attrs["mode"], out, op=self.node.label)]


@register("DepthToSpace")
class DepthToSpace(_BlockOp):
    function = staticmethod(F.depth_to_space)


@register("SpaceToDepth")
class SpaceToDepth(_BlockOp):
    function = staticmethod(F.space_to_depth)


@register("ScatterND")
class ScatterND(Op):
    """Vectorised: the index tuples become flat row numbers of data seen as
    (prod(data.shape[:k]), rest), written (or reduced with ``ufunc.at``) in one call.
    Duplicate indices without a reduction are undefined in ONNX; here the last wins."""
    required_inputs = 3
    attributes = {"reduction": "none"}
    _REDUCE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}

    def run(self, inputs, out=None):
        data, idx, upd = inputs
        red = str(self.attrs["reduction"])
        if red != "none" and red not in self._REDUCE:
            self.fail(f"reduction must be none/add/mul/max/min, got {red!r}")
        if idx.dtype.kind not in "iu":
            self.fail(f"indices must be int64, got {idx.dtype}", InvalidDType)
        if idx.ndim == 0:
            self.fail("indices must have at least one dim", ShapeError)
        k = idx.shape[-1]
        if k > data.ndim:
            self.fail(f"indices last dim {k} exceeds the data rank {data.ndim}", ShapeError)
        if upd.shape != idx.shape[:-1] + data.shape[k:]:
            self.fail(f"updates shape {upd.shape} must be {idx.shape[:-1] + data.shape[k:]}",
                      ShapeError)
        dims = data.shape[:k]
        flat_idx = idx.reshape(-1, k).astype(np.int64, copy=False)
        flat_idx = np.where(flat_idx < 0, flat_idx + np.array(dims, np.int64), flat_idx)
        if flat_idx.size and ((flat_idx < 0) | (flat_idx >= np.array(dims, np.int64))).any():
            self.fail(f"indices out of range for data shape {data.shape}")
        rows = np.ravel_multi_index(tuple(flat_idx.T), dims) if k else \
            np.zeros(flat_idx.shape[0], np.int64)
        y = data.copy()
        y2 = y.reshape(math.prod(dims), -1)
        upd2 = upd.reshape(rows.shape[0], y2.shape[1])
        if red == "none":
            y2[rows] = upd2
        else:
            self._REDUCE[red].at(y2, rows, upd2)
        return [y]


def _scalar(op, v, i, kinds="iuf"):
    """Input ``i`` as a one-element tensor's value (ONNX scalars may arrive as (1,))."""
    a = np.asarray(v)
    if a.size != 1 or a.ndim > 1 or a.dtype.kind not in kinds:
        op.fail(f"input '{op.input_name(i)}' must be a scalar, got shape {a.shape} dtype "
                f"{a.dtype}")
    return a.reshape(())[()]


def _check_indices(op, idx, dims, what):
    """Integer ``idx`` within ``[-dims, dims)`` (broadcast); returns them made
    non-negative."""
    if idx.dtype.kind not in "iu":
        op.fail(f"{what} must be int32/int64, got {idx.dtype}", InvalidDType)
    idx = idx.astype(np.int64, copy=False)
    dims = np.asarray(dims, np.int64)
    if idx.size and ((idx < -dims) | (idx >= dims)).any():
        op.fail(f"{what} out of range for dims {dims.tolist()}")
    return np.where(idx < 0, idx + dims, idx)


@register("Tile")
class Tile(Op):
    """Repeats the input ``repeats[i]`` times along each axis (opset 6+: repeats input)."""
    required_inputs = 2

    def run(self, inputs, out=None):
        x = inputs[0]
        reps = _int_list(self, inputs[1], "repeats")
        if len(reps) != x.ndim or any(r < 0 for r in reps):
            self.fail(f"repeats {reps} must be {x.ndim} non-negative values (input shape "
                      f"{x.shape})", ShapeError)
        check_tensor_size([d * r for d, r in zip(x.shape, reps)], self.node.label,
                          itemsize=x.itemsize)
        return [np.tile(x, reps)]


@register("Range")
class Range(Op):
    """``start + i * delta`` for ``i < max(ceil((limit - start) / delta), 0)``, in the
    dtype of the (scalar) inputs."""
    required_inputs = 3
    attributes = {"stash_type": 1}

    def run(self, inputs, out=None):
        dtypes = {np.asarray(v).dtype for v in inputs[:3]}
        if len(dtypes) != 1:
            self.fail(f"start, limit and delta must have one dtype, got "
                      f"{sorted(map(str, dtypes))}", InvalidDType)
        dtype = dtypes.pop()
        start, limit, delta = (_scalar(self, v, i) for i, v in enumerate(inputs[:3]))
        if delta == 0:
            self.fail("delta must not be 0")
        work = np.float32 if dtype == np.float16 else dtype.type   # stash_type 1: float32
        if dtype.kind == "f":
            count = np.ceil((float(limit) - float(start)) / float(delta))
        else:
            count = -((int(start) - int(limit)) // int(delta))   # exact integer ceil
        n = int(max(count, 0))
        check_tensor_size([n], self.node.label, itemsize=max(dtype.itemsize, 4))
        y = np.arange(n, dtype=work) * work(delta) + work(start)
        return [y.astype(dtype, copy=False)]


@register("NonZero")
class NonZero(Op):
    """int64 indices (rank, count) of the non-zero elements, in row-major order."""

    def run(self, inputs, out=None):
        x = inputs[0]
        if x.dtype.kind not in "biuf":
            self.fail(f"input dtype {x.dtype} is not supported", InvalidDType)
        if x.ndim == 0:     # as onnxruntime: a (1, count) index into a 1-element view
            return [np.zeros((1, int(x != 0)), np.int64)]
        return [np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)]


@register("Einsum")
class Einsum(Op):
    """``numpy.einsum`` of the equation (explicit ``->`` or implicit output, ``...``
    broadcasting); inputs of one numeric dtype."""
    required_inputs = 1
    attributes = {"equation": REQUIRED}

    def setup(self, consts):
        eq = str(self.attrs["equation"]).replace(" ", "")
        terms = eq.split("->")[0].split(",")
        if len(terms) != len(self.node.inputs) or eq.count("->") > 1:
            self.fail(f"equation {eq!r} has {len(terms)} operand(s), the node has "
                      f"{len(self.node.inputs)} input(s)", InvalidModel)
        self.equation = eq

    def run(self, inputs, out=None):
        if inputs[0].dtype.kind not in "iuf":
            self.fail(f"input dtype {inputs[0].dtype} is not supported", InvalidDType)
        for i, a in enumerate(inputs[1:], 1):
            if a.dtype != inputs[0].dtype:
                self.fail(f"input '{self.input_name(i)}' has dtype {a.dtype}, input "
                          f"'{self.input_name(0)}' has {inputs[0].dtype}", InvalidDType)
        self.check_output_size(inputs)
        try:
            y = np.einsum(self.equation, *inputs, optimize=len(inputs) > 2)
        except ValueError as exc:
            self.fail(f"equation {self.equation!r} does not fit the input shapes "
                      f"{[a.shape for a in inputs]}: {exc}", ShapeError)
        return [np.asarray(y, dtype=inputs[0].dtype)]

    def check_output_size(self, inputs):
        """Refuses an explicit output (``->``, no ``...``) too large to allocate before
        NumPy tries."""
        if "->" not in self.equation or "..." in self.equation:
            return
        terms, result = self.equation.split("->")
        sizes = {}
        for term, a in zip(terms.split(","), inputs):
            if len(term) == a.ndim:
                sizes.update({c: max(sizes.get(c, 1), d) for c, d in zip(term, a.shape)})
        if all(c in sizes for c in result):
            check_tensor_size([sizes[c] for c in result], self.node.label)


@register("GatherElements")
class GatherElements(Op):
    """``y[i][j] = data[indices[i][j]][j]`` (for axis 0): indices of the data's rank,
    each dim at most the data's outside ``axis``."""
    required_inputs = 2
    attributes = {"axis": 0}

    def run(self, inputs, out=None):
        data, idx = inputs
        if idx.ndim != data.ndim or data.ndim == 0:
            self.fail(f"indices of shape {idx.shape} must have the rank of data "
                      f"{data.shape}", ShapeError)
        axis = self.check_axis(self.attrs["axis"], data.ndim)
        if any(i > d for a, (i, d) in enumerate(zip(idx.shape, data.shape)) if a != axis):
            self.fail(f"indices of shape {idx.shape} exceed data {data.shape} outside axis "
                      f"{axis}", ShapeError)
        idx = _check_indices(self, idx, data.shape[axis], "indices")
        part = data[tuple(slice(0, n) if a != axis else slice(None)
                          for a, n in enumerate(idx.shape))]
        return [np.take_along_axis(part, idx, axis=axis)]


@register("GatherND")
class GatherND(Op):
    """Slices of ``data`` at the index tuples of ``indices``' last dim, the first
    ``batch_dims`` dims shared (opset 12+)."""
    required_inputs = 2
    attributes = {"batch_dims": 0}

    def run(self, inputs, out=None):
        data, idx = inputs
        b = int(self.attrs["batch_dims"])
        if idx.ndim < 1 or not 0 <= b < min(data.ndim, idx.ndim):
            self.fail(f"batch_dims {b} does not fit data {data.shape} and indices "
                      f"{idx.shape}", ShapeError)
        k = idx.shape[-1]
        if data.shape[:b] != idx.shape[:b] or not 1 <= k <= data.ndim - b:
            self.fail(f"indices {idx.shape} do not fit data {data.shape} with batch_dims "
                      f"{b} (the leading {b} dims must match and the last dim of indices "
                      f"must be from 1 to {data.ndim - b})", ShapeError)
        idx = _check_indices(self, idx, data.shape[b:b + k], "indices")
        batch = int(np.prod(data.shape[:b], dtype=np.int64))
        rows = data.reshape((batch,) + data.shape[b:])
        tuples = idx.reshape(batch, -1, k)
        picked = rows[(np.arange(batch)[:, None],) + tuple(np.moveaxis(tuples, 2, 0))]
        return [picked.reshape(idx.shape[:-1] + data.shape[b + k:])]


@register("OneHot")
class OneHot(Op):
    """``values[1]`` where ``indices`` (made non-negative by adding ``depth``) equals the
    position along the new ``axis``, ``values[0]`` elsewhere (indices out of range: all
    off)."""
    required_inputs = 3
    attributes = {"axis": -1}

    def run(self, inputs, out=None):
        indices, depth, values = inputs
        if indices.dtype.kind not in "iuf":
            self.fail(f"indices dtype {indices.dtype} is not supported", InvalidDType)
        depth = _scalar(self, depth, 1)
        if values.shape not in ((2,), (1, 2)) and values.size != 2:
            self.fail(f"values must hold [off, on], got shape {values.shape}", ShapeError)
        depth = int(depth)
        if depth < 1:
            self.fail(f"depth must be positive, got {depth}")
        axis = self.check_axis(self.attrs["axis"], indices.ndim + 1)
        shape = list(indices.shape)
        shape.insert(axis, depth)
        check_tensor_size(shape, self.node.label,
                          itemsize=values.itemsize + 1)     # the bool mask, then y
        idx = indices.astype(np.int64)
        idx = np.where(idx < 0, idx + depth, idx)
        positions = np.arange(depth).reshape((-1,) + (1,) * (indices.ndim - axis))
        hot = np.expand_dims(idx, axis) == positions
        off, on = values.reshape(-1)
        return [np.where(hot, on, off).astype(values.dtype, copy=False)]


__all__ = ["np_dtype", "InvalidArgument"]
