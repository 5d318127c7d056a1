"""The operator registry, the node record and the base class of every ONNX operator.

An operator class is registered under its ONNX type (``@register("Conv")``), declares
its attributes with their ONNX names and defaults (``attributes = {"group": 1}``), is
constructed once per node (``__init__`` validates the attributes and, through
:meth:`Op.setup`, prepares whatever depends only on constant inputs: packed weights,
resolved pads), and is then run many times (:meth:`Op.run`). ``run`` must not mutate
the operator: one session may run from several threads at once. ``context`` (an
:class:`pyconv.ExecutionContext`) is what its kernels run with.
"""
from __future__ import annotations

import numpy as np

from pyconv._arrays import as_float32
from pyconv._ext.gemm import ExecutionContext, empty_aligned
from pyconv.arithmetic import check_tensor_size
from pyconv.errors import InvalidArgument, InvalidModel, PyconvError

__all__ = ["Node", "Op", "register", "lookup", "registered_ops", "REQUIRED"]

#: Marks an attribute without a default (the node must set it).
REQUIRED = object()

#: ONNX attributes that are flags: 0 or 1 and nothing else. onnxruntime reads other values
#: inconsistently (keepdims=7 as 0, for instance), so a node setting one is InvalidModel.
FLAG_ATTRIBUTES = frozenset({
    "allowzero", "ceil_mode", "count_include_pad", "detect_negative", "detect_positive",
    "exclude_outside", "exclusive", "fmod", "input_forget", "keepdims", "largest", "layout",
    "linear_before_reset", "noop_with_empty_axes", "reverse", "select_last_index", "sorted",
    "storage_order", "training_mode", "transA", "transB"})

_REGISTRY: dict[tuple[str, str], type] = {}


class Node:
    """One graph node: the ONNX fields pyconv needs, attributes as Python values.

    Attributes are converted from the protobuf once (ints, floats, strings as ``str``,
    tensors as ndarrays, lists as lists). Optional inputs that are absent are ``""``.
    """

    __slots__ = ("name", "op_type", "domain", "inputs", "outputs", "attrs")

    def __init__(self, op_type, inputs, outputs, attrs=None, name="", domain=""):
        self.op_type = op_type
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attrs = dict(attrs or {})
        self.name = name
        self.domain = domain

    @property
    def label(self):
        """``Type 'name'`` for error messages."""
        return f"{self.op_type} node '{self.name}'"

    def __repr__(self):
        return f"Node({self.op_type!r}, {self.inputs}, {self.outputs}, name={self.name!r})"


def register(*op_types, domain=""):
    """Class decorator: registers an :class:`Op` subclass for ONNX types ``op_types``."""
    def deco(cls):
        for t in op_types:
            _REGISTRY[(domain, t)] = cls
        return cls
    return deco


def lookup(op_type, domain=""):
    """The operator class for ``(domain, op_type)``, or None. ``ai.onnx`` is ``""``."""
    if domain == "ai.onnx":
        domain = ""
    return _REGISTRY.get((domain, op_type))


def registered_ops(domain=""):
    """Sorted ONNX op types registered in ``domain``."""
    return sorted(t for d, t in _REGISTRY if d == domain)


class Op:
    """Base class: attribute parsing, error helpers, the run contract.

    Subclasses set ``attributes`` (ONNX name -> default or :data:`REQUIRED`) and
    implement :meth:`run`. ``supports_out`` says that ``run`` accepts a preallocated
    ``out`` for output 0 (the memory planner's buffers); ``deterministic`` false keeps
    a node out of constant folding.
    """

    attributes: dict = {}
    supports_out = False
    deterministic = True
    #: Number of leading inputs that must be present (an int, or a callable of opset).
    required_inputs = 1
    #: Whether output 0 may be absent (recurrent layers: only Y_h wanted); one must exist.
    first_output_optional = False

    def __init__(self, node: Node, opset: int, consts: dict | None = None, context=None):
        self.node = node
        # What the kernels run with (threads, ISA): the session's, fixed at creation.
        self.context = context if context is not None else ExecutionContext()
        self.opset = opset
        self.name = node.name
        need = self.required_inputs
        need = need(opset) if callable(need) else need
        if len(node.inputs) < need or not all(node.inputs[:need]):
            raise InvalidModel(f"{node.label}: needs {need} input(s), got "
                               f"{[x or '<empty>' for x in node.inputs]}")
        if not (any(node.outputs) if self.first_output_optional else
                node.outputs and node.outputs[0]):
            raise InvalidModel(f"{node.label}: has no output")
        attrs = {}
        for key, default in self.attributes.items():
            if key in node.attrs:
                attrs[key] = node.attrs[key]
                if key in FLAG_ATTRIBUTES and not (isinstance(attrs[key], int)
                                                   and attrs[key] in (0, 1)):
                    raise InvalidModel(f"{node.label}: attribute '{key}' is a flag, 0 or 1; "
                                       f"got {attrs[key]!r}")
            elif default is REQUIRED:
                raise InvalidModel(f"{node.label}: required attribute '{key}' is missing")
            else:
                attrs[key] = default
        # Private attributes set by the optimizer (fusions) pass through.
        for key, value in node.attrs.items():
            if key.startswith("_pyconv_"):
                attrs[key] = value
        self.attrs = attrs
        self.setup(consts or {})

    # -- hooks -------------------------------------------------------------------------
    def setup(self, consts):
        """Prepares what depends on attributes and constant inputs only.

        ``consts`` maps an input index to its constant ndarray (initializers and folded
        values); it is empty when nothing is known."""

    def run(self, inputs, out=None):
        """Computes the outputs from a list of ndarrays (None for absent optional
        inputs); returns a list of ndarrays, one per node output."""
        raise NotImplementedError

    def bind(self, specs, out):
        """A faster ``run`` for one memory plan, or None (the default: ``run`` is used).

        ``specs`` holds the ``(shape, dtype)`` each input had when the plan was recorded
        (None for an absent optional input) and ``out`` is the planned buffer of output 0
        (None when output 0 has no place in the arena).
        The returned ``call(inputs) -> outputs`` must give what ``run(inputs, out)``
        gives; since shapes can depend on data, it checks that its inputs still match
        ``specs`` and falls back to ``run`` when they do not."""
        return None

    def input_blocks(self, specs):
        """Where each input lies in output 0 when every input is one contiguous block of
        it (Concat with the dims before its axis all 1): their element offsets, in input
        order; else None (the default). The memory planner then places inputs whose
        producers can write there at those offsets (:meth:`bind_placed`)."""
        return None

    def bind_placed(self, specs, out, placed):
        """:meth:`bind` for a plan that placed some inputs in ``out`` (an op whose
        :meth:`input_blocks` gave offsets): ``placed[i]`` is the planned buffer input ``i``
        was written to (its block of ``out``), or None for an input found elsewhere."""
        return self.bind(specs, out)

    # -- helpers -------------------------------------------------------------------------
    def fail(self, message, cls=InvalidArgument):
        """Raises ``cls`` with a message naming this node."""
        raise cls(f"{self.node.label}: {message}")

    def input_name(self, i):
        return self.node.inputs[i] if i < len(self.node.inputs) else f"#{i}"

    def float32(self, x, i=0):
        """Input ``i`` must be float32 (the dtype of the compute kernels)."""
        if not isinstance(x, np.ndarray):
            self.fail(f"input '{self.input_name(i)}' is missing")
        return as_float32(x, f"input '{self.input_name(i)}'", self.node.label)

    def ints(self, key, n=None):
        v = self.attrs[key]
        if v is None:
            return None
        v = [int(a) for a in v]
        if n is not None and len(v) != n:
            self.fail(f"attribute '{key}' has {len(v)} values {v}, expected {n}")
        return v

    def check_axis(self, axis, rank, what="axis"):
        axis = int(axis)
        if not -rank <= axis < max(rank, 1):
            self.fail(f"{what} {axis} is out of range for a tensor of rank {rank}")
        return axis % max(rank, 1)


def take_out(out, shape, dtype=np.float32):
    """``out`` when it fits ``shape``/``dtype`` (a planned buffer), else a new array
    starting on a cache line, as the planned ones do."""
    if out is not None and out.shape == tuple(shape) and out.dtype == dtype:
        return out
    return empty_aligned(shape, dtype)


def bound_step(kernel, op, out, second=None):
    """The ``call(inputs)`` an :meth:`Op.bind` returns for a bound kernel: ``kernel(x)``
    (or ``kernel(x, inputs[second])``) as the one output, or ``op.run(inputs, out)`` when
    the kernel declines the inputs (returns None)."""
    run = op.run
    if second is None:
        def call(inputs):
            y = kernel(inputs[0])
            return [y] if y is not None else run(inputs, out)
    else:
        def call(inputs):
            y = kernel(inputs[0], inputs[second])
            return [y] if y is not None else run(inputs, out)
    return call


def wrap_errors(owner, fn, /, *args, **kwargs):
    """Calls fn, prefixing pyconv errors with the node when they do not name it."""
    try:
        return fn(*args, **kwargs)
    except PyconvError as exc:
        if owner.node.label in str(exc):
            raise
        raise type(exc)(f"{owner.node.label}: {exc}") from None
