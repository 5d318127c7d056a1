"""Module base class, Sequential and the parameter store.

Parameters and buffers are NumPy arrays held by the module as private, C-contiguous,
**read-only** copies. Layers that prepare their weights (packed GEMM panels) key the
prepared form on the identity of the arrays they were built from, so re-assigning an
attribute (``conv.weight = w``) or :meth:`Module.load_state_dict` re-packs on the next
call, and in-place edits (``conv.weight[0] = 1``), which could leave a stale packed copy,
fail loudly instead of silently giving a wrong answer.
"""
from __future__ import annotations

import copy
import math
import operator
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from itertools import chain
from typing import NamedTuple

import numpy as np

from pyconv._arrays import as_float32
from pyconv.errors import InvalidArgument, InvalidDType, ShapeError

__all__ = ["Module", "Sequential", "ModuleList", "ModuleDict", "manual_seed",
           "IncompatibleKeys", "to_onnx"]


# ---------------------------------------------------------------------------------------
# Random initialisation

#: Per thread: the tracer recording ``Module.__call__`` while ``to_onnx`` runs a forward.
_tracing = threading.local()

_DEFAULT_SEED = 0
_rng = np.random.default_rng(_DEFAULT_SEED)


def manual_seed(seed):
    """Seed the generator that initialises new layers' parameters.

    Parameters
    ----------
    seed : int
        Layers created after the call get the same initial weights for the same seed.
        (The values differ from torch's: they come from NumPy's generator.)

    Returns
    -------
    numpy.random.Generator
        The new generator.
    """
    global _rng
    _rng = np.random.default_rng(operator.index(seed))
    return _rng


def _uniform(shape, bound):
    """float32 samples from U(-bound, bound) drawn from the module generator."""
    return _rng.uniform(-bound, bound, size=shape).astype(np.float32)


def _kaiming_uniform_bound(fan_in):
    """Bound of ``kaiming_uniform_(a=sqrt(5))`` and of the default bias init: 1/sqrt(fan_in).

    gain = sqrt(2 / (1 + a^2)) = sqrt(1/3); bound = gain * sqrt(3 / fan_in).
    """
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0


def to_onnx(module, path, input_shape, opset=17, dynamic_batch=True):
    """Export ``module`` as an ONNX model: the function form of :meth:`Module.to_onnx`
    (see there for the arguments)."""
    from pyconv.nn._onnx import export
    return export(module, path, input_shape, opset, dynamic_batch)


# ---------------------------------------------------------------------------------------
# Array conversion

def _to_numpy(value):
    """torch tensors (duck-typed, no torch import) become NumPy arrays; others unchanged."""
    if not isinstance(value, np.ndarray) and hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach().cpu()
        if str(getattr(value, "dtype", "")) == "torch.bfloat16":
            value = value.float()         # NumPy has no bfloat16; float32 holds it exactly
        return value.numpy()
    return value


def _cast_for_load(value, where, dtype):
    """``value`` as a read-only array of the slot's ``dtype``, cast as torch's
    ``load_state_dict`` (``param.copy_(value)``) casts: float32 slots take any float or
    integer array (float64 checkpoints), integer slots take integers and floats that
    hold integers (``num_batches_tracked`` saved as float64). Refuses bool, complex and
    non-numeric values, and floats with a fraction for an integer slot (torch would
    truncate them silently)."""
    value = _to_numpy(value)
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{where}: expected an array, got "
                              f"{type(value).__name__}") from None
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        if arr.dtype.kind not in "fiu":
            raise InvalidDType(f"{where}: expected a float or integer array for a {dtype} "
                               f"parameter, got {type(value).__name__} of dtype {arr.dtype}")
    elif arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.trunc(arr)):
            raise InvalidDType(f"{where}: expected integers, got {type(value).__name__} of "
                               f"dtype {arr.dtype} with non-integer values")
    elif arr.dtype.kind not in "iu":
        raise InvalidDType(f"{where}: expected integers, got {type(value).__name__} of "
                           f"dtype {arr.dtype}")
    out = np.array(arr, dtype=dtype, order="C", copy=True)
    out.flags.writeable = False
    return out


def _check_dtype(value, op):
    """``value`` names float32 (NumPy dtype or type, its name, ``torch.float32``); other
    dtypes raise: pyconv modules hold float32 only."""
    name = str(value)
    if name.startswith("torch."):
        name = name[len("torch."):]
        ok = name in ("float32", "float")
    else:
        try:
            ok = np.dtype(value) == np.float32
        except TypeError:
            ok = False
    if not ok:
        raise InvalidDType(f"{op}: pyconv modules are float32 only; cannot convert to "
                           f"{value!r}")


def _check_device(value, op):
    """``value`` names the CPU (``'cpu'``, ``'cpu:0'``, ``torch.device('cpu')``)."""
    if str(value) not in ("cpu", "cpu:0"):
        raise InvalidArgument(f"{op}: pyconv runs on the CPU only; cannot move to "
                              f"device {value!r}")


def _is_dtype(value):
    """Whether a positional argument of :meth:`Module.to` is a dtype (else a device)."""
    if isinstance(value, str):
        return False                       # torch's .to() takes device strings only
    if str(value).startswith("torch.") or isinstance(value, (np.dtype, type)):
        return True
    return not hasattr(value, "type")      # a torch.device has .type


def _frozen(value, where, dtype=np.float32):
    """A private read-only C-contiguous copy of ``value`` with ``dtype``.

    float32 slots take float32 arrays (and lists of floats); integer slots (e.g.
    ``num_batches_tracked``) take any integer array. ``where`` names the slot in errors.
    """
    value = _to_numpy(value)
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        value = as_float32(value, where)
    else:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):
            raise InvalidArgument(f"{where}: expected an array, got "
                                  f"{type(value).__name__}") from None
        if arr.dtype.kind not in "iu":
            raise InvalidDType(f"{where}: expected integers, got {type(value).__name__} of "
                               f"dtype {arr.dtype}")
        value = arr
    out = np.array(value, dtype=dtype, order="C", copy=True)
    out.flags.writeable = False
    return out


def _check_name(name, what):
    if not isinstance(name, str):
        raise InvalidArgument(f"{what} name must be a string, got {type(name).__name__}")
    if not name or "." in name:
        raise InvalidArgument(f"{what} name must be a non-empty string without '.', "
                              f"got {name!r}")


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` with ``strict=False`` did not match."""

    missing_keys: list
    unexpected_keys: list


def _addindent(text, spaces):
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


# ---------------------------------------------------------------------------------------
# Module

class Module:
    """Base class of every pyconv layer, modelled on ``torch.nn.Module``.

    Subclasses call ``super().__init__()`` first, then assign parameters with
    :meth:`register_parameter` (buffers with :meth:`register_buffer`) and sub-layers by
    plain attribute assignment, and implement :meth:`forward`. Calling the module calls
    ``forward``.

    Parameters are float32 NumPy arrays stored as private read-only copies (see the
    module docstring): change them by assigning a new array or with
    :meth:`load_state_dict`; both take effect at the next call. Parameter names in
    :meth:`state_dict` are PyTorch's (``features.0.weight``), so a torch model's
    ``{k: v.numpy() for k, v in model.state_dict().items()}`` loads as is.

    Modules start in evaluation mode (``training`` is False), unlike torch: pyconv is an
    inference engine. :meth:`train` only sets the flag, and layers whose training
    behaviour differs (batch norm, dropout) then refuse to run.
    """

    def __init__(self):
        d = self.__dict__
        d["_parameters"] = OrderedDict()
        d["_buffers"] = OrderedDict()
        d["_modules"] = OrderedDict()
        d["training"] = False

    # -- registration --------------------------------------------------------------

    def register_parameter(self, name, value):
        """Add a float32 parameter (``value`` an array, or None for an absent one)."""
        self._require_init()
        _check_name(name, "parameter")
        if name in self.__dict__ or name in self._modules or name in self._buffers:
            raise InvalidArgument(f"{self._get_name()}: attribute {name!r} already exists")
        self._parameters[name] = None if value is None else _frozen(
            value, f"{self._get_name()}.{name}")

    def register_buffer(self, name, value, dtype=np.float32):
        """Add a buffer: state that is not a parameter (running statistics).

        ``dtype`` is float32, or an integer type for counters (``num_batches_tracked``).
        """
        self._require_init()
        _check_name(name, "buffer")
        if name in self.__dict__ or name in self._modules or name in self._parameters:
            raise InvalidArgument(f"{self._get_name()}: attribute {name!r} already exists")
        self._buffers[name] = None if value is None else _frozen(
            value, f"{self._get_name()}.{name}", dtype)

    def add_module(self, name, module):
        """Add a sub-layer under ``name`` (what attribute assignment does)."""
        self._require_init()
        _check_name(name, "module")
        if module is not None and not isinstance(module, Module):
            raise InvalidArgument(f"{self._get_name()}: {name!r} must be a pyconv.nn.Module, "
                                  f"got {type(module).__name__}")
        if name in self._parameters or name in self._buffers or (
                name in self.__dict__ and name not in self._modules):
            raise InvalidArgument(f"{self._get_name()}: attribute {name!r} already exists")
        self._modules[name] = module

    def _require_init(self):
        if "_parameters" not in self.__dict__:
            raise InvalidArgument(f"{type(self).__name__}: call Module.__init__() before "
                                  f"assigning parameters or sub-modules")

    def __setattr__(self, name, value):
        d = self.__dict__
        if "_parameters" not in d:
            if isinstance(value, (Module, np.ndarray)):
                self._require_init()
            object.__setattr__(self, name, value)
            return
        params, buffers, modules = d["_parameters"], d["_buffers"], d["_modules"]
        if isinstance(value, Module):
            params.pop(name, None)
            buffers.pop(name, None)
            d.pop(name, None)
            modules[name] = value
        elif name in params:
            params[name] = None if value is None else _frozen(
                value, f"{self._get_name()}.{name}")
        elif name in buffers:
            old = buffers[name]
            dtype = old.dtype if old is not None else np.float32
            buffers[name] = None if value is None else _frozen(
                value, f"{self._get_name()}.{name}", dtype)
        elif name in modules:
            if value is not None:
                raise InvalidArgument(f"{self._get_name()}: cannot assign "
                                      f"{type(value).__name__} to sub-module {name!r} "
                                      f"(a Module or None expected)")
            modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Only called when normal lookup fails: parameters, buffers and sub-modules.
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    # -- running -------------------------------------------------------------------

    def forward(self, *args, **kwargs):
        """The computation; subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def __call__(self, *args, **kwargs):
        tracer = getattr(_tracing, "tracer", None)
        if tracer is not None:        # to_onnx is recording this thread's forward
            return tracer.call_module(self, args, kwargs)
        return self.forward(*args, **kwargs)

    def refresh(self):
        """Drop every prepared (packed) form of the parameters, here and in sub-modules.

        Needed only after changing a parameter array's contents behind the module's back
        (it is read-only, so that takes ``flags.writeable = True`` first); assignment and
        :meth:`load_state_dict` re-prepare by themselves. Returns ``self``.
        """
        for module in self.modules():
            for key in [k for k in module.__dict__ if k.startswith("_cache")]:
                del module.__dict__[key]
        return self

    def train(self, mode=True):
        """Set the training flag here and in every sub-module; returns ``self``.

        pyconv runs inference only: batch norm and dropout refuse to run in training mode.
        """
        if not isinstance(mode, bool):
            raise InvalidArgument(f"train: mode must be a bool, got {mode!r}")
        for module in self.modules():
            module.__dict__["training"] = mode
        return self

    def eval(self):
        """Evaluation mode (the default in pyconv); returns ``self``."""
        return self.train(False)

    def apply(self, fn):
        """Call ``fn(module)`` on every sub-module (children first), then on ``self``, as
        ``torch.nn.Module.apply``; returns ``self``."""
        if not callable(fn):
            raise InvalidArgument(f"apply: fn must be callable, got {type(fn).__name__}")
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    def to(self, *args, **kwargs):
        """torch's ``.to(device)`` / ``.to(dtype)`` / ``.to(device, dtype)``: pyconv modules
        are float32 on the CPU, so ``'cpu'`` and float32 return ``self`` unchanged.

        Raises
        ------
        InvalidDType
            For any other dtype (``np.float64``, ``torch.float16``, ...).
        InvalidArgument
            For any other device (``'cuda'``), or unknown arguments.
        """
        unknown = set(kwargs) - {"device", "dtype", "non_blocking", "copy", "memory_format"}
        if unknown or len(args) > 2:
            raise InvalidArgument(f"to: expected (device, dtype) arguments, got "
                                  f"{len(args)} positional and {sorted(kwargs)} keywords")
        for value in args:
            if _is_dtype(value):
                _check_dtype(value, "to")
            else:
                _check_device(value, "to")
        if kwargs.get("device") is not None:
            _check_device(kwargs["device"], "to")
        if kwargs.get("dtype") is not None:
            _check_dtype(kwargs["dtype"], "to")
        return self

    def float(self):
        """float32, which pyconv modules are already: returns ``self``."""
        return self

    def double(self):
        """Refused: pyconv modules are float32 only (raises InvalidDType)."""
        _check_dtype(np.float64, "double")

    def half(self):
        """Refused: pyconv modules are float32 only (raises InvalidDType)."""
        _check_dtype(np.float16, "half")

    def cpu(self):
        """pyconv runs on the CPU: returns ``self``."""
        return self

    def cuda(self, device=None):
        """Refused: pyconv runs on the CPU only (raises InvalidArgument)."""
        _check_device("cuda" if device is None else device, "cuda")

    def to_onnx(self, path, input_shape, opset=17, dynamic_batch=True):
        """Export the module as an ONNX model, tracing its forward once.

        ``forward`` may combine pyconv.nn layers (containers included), calls through
        :mod:`pyconv.functional` looked up at call time (``F.relu(x)``), arithmetic and
        NumPy ufuncs (``x + y``, ``x * 0.5``, ``np.maximum``), ``np.concatenate``,
        ``mean`` / ``sum`` / ``max``, ``reshape`` (``x.reshape(x.shape[0], -1)`` keeps
        the batch free) and ``transpose`` on the values it is given.

        Parameters
        ----------
        path : str or os.PathLike or None
            Where to save the model (``None``: do not save, just return it).
        input_shape : sequence of int
            Shape of the one input (e.g. ``(1, 3, 224, 224)``); the module is run on
            zeros of this shape to record its operations and resolve the shapes some
            ONNX operators need.
        opset : int
            ONNX opset, at least 13.
        dynamic_batch : bool
            Export dim 0 of the input (and of the outputs that follow it) as the free
            dim ``"batch"``, so the model runs at any batch size; the forward is traced
            at two batch sizes to check that nothing else depends on it. False exports
            ``input_shape`` as fixed.

        Returns
        -------
        onnx.ModelProto
            Checked with ``onnx.checker.check_model``; one float32 input ``"input"``
            and one output ``"output"`` (``"output_0"``, ... for a tuple of results);
            initializers carry the state_dict names.

        Raises
        ------
        InvalidArgument
            If the forward uses something with no ONNX export here (a layer, a
            functional call, a NumPy function), naming it and the module path; or, with
            ``dynamic_batch``, if the recorded graph depends on the batch size.
        """
        from pyconv.nn._onnx import export
        return export(self, path, input_shape, opset, dynamic_batch)

    # -- traversal -----------------------------------------------------------------

    def named_modules(self, memo=None, prefix=""):
        """Yield ``(name, module)`` for this module and all below it, depth first."""
        if memo is None:
            memo = set()
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            yield from module.named_modules(memo, f"{prefix}.{name}" if prefix else name)

    def modules(self):
        """Iterate over this module and all below it."""
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        """Yield ``(name, module)`` for the direct sub-modules."""
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self):
        """Iterate over the direct sub-modules."""
        for _, module in self.named_children():
            yield module

    def _named_members(self, store, prefix, recurse):
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for mod_prefix, module in modules:
            for name, value in module.__dict__[store].items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), value

    def named_parameters(self, prefix="", recurse=True):
        """Yield ``(name, array)`` for every parameter, with dotted torch names."""
        yield from self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        """Iterate over the parameter arrays (float32, read-only)."""
        for _, value in self.named_parameters(recurse=recurse):
            yield value

    def named_buffers(self, prefix="", recurse=True):
        """Yield ``(name, array)`` for every buffer."""
        yield from self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        """Iterate over the buffer arrays."""
        for _, value in self.named_buffers(recurse=recurse):
            yield value

    # -- state dict ----------------------------------------------------------------

    def _state_slots(self, prefix=""):
        """``(key, module, store, name)`` for every non-None parameter and buffer, in
        torch's state_dict order (a module's parameters, its buffers, then children)."""
        for mod_prefix, module in self.named_modules(prefix=prefix):
            for store in ("_parameters", "_buffers"):
                for name, value in module.__dict__[store].items():
                    if value is not None:
                        key = f"{mod_prefix}.{name}" if mod_prefix else name
                        yield key, module, store, name

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """Parameters and buffers by dotted name, as an OrderedDict of NumPy arrays.

        The arrays are the module's own (read-only, not copies). Keys and order match
        torch's ``state_dict()`` for the same architecture.
        """
        out = OrderedDict() if destination is None else destination
        for key, module, store, name in self._state_slots(prefix):
            out[key] = module.__dict__[store][name]
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy parameters and buffers from ``state_dict`` (a mapping of name -> array).

        Values may be NumPy arrays, lists, torch tensors or other array-likes. As torch
        copies into its existing tensors, values are cast to the slot's dtype: float32
        parameters and buffers take any float or integer array (a float64 checkpoint
        loads as float32); ``num_batches_tracked`` takes integers (and floats holding
        integers). Everything is checked before anything is assigned, so a failed load
        leaves the module unchanged. Prepared (packed) weights are rebuilt at the next
        call.

        Parameters
        ----------
        state_dict : mapping of str to array
        strict : bool
            Missing or unexpected keys are errors (else they are reported).

        Returns
        -------
        IncompatibleKeys
            ``(missing_keys, unexpected_keys)``.

        Raises
        ------
        InvalidArgument
            On missing or unexpected keys (``strict``); the message lists them.
        ShapeError
            If a value's shape differs from the parameter's (names the key and both
            shapes); checked even when not ``strict``.
        InvalidDType
            If a value cannot be cast (bool, complex, non-numeric, a fraction for an
            integer slot); names the key.
        """
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise InvalidArgument(f"load_state_dict: expected a mapping of names to arrays, "
                                  f"got {type(state_dict).__name__}")
        slots = list(self._state_slots())
        expected = {key for key, *_ in slots}
        missing = [key for key, *_ in slots if key not in state_dict]
        unexpected = [key for key in state_dict.keys() if key not in expected]
        mismatched, updates = [], []
        for key, module, store, name in slots:
            if key not in state_dict:
                continue
            current = module.__dict__[store][name]
            value = _to_numpy(state_dict[key])
            shape = getattr(value, "shape", None)
            if shape is None:
                value = _cast_for_load(value, f"load_state_dict: {key!r}", current.dtype)
                shape = value.shape
            if tuple(shape) != current.shape:   # before casting (no copy of a wrong value)
                mismatched.append(f"size mismatch for {key}: copying a param with shape "
                                  f"{tuple(shape)} from checkpoint, the shape in current "
                                  f"model is {current.shape}")
                continue
            value = _cast_for_load(value, f"load_state_dict: {key!r}", current.dtype)
            updates.append((module, store, name, value))
        problems = []
        if strict and missing:
            problems.append("Missing key(s) in state_dict: "
                            + ", ".join(f'"{k}"' for k in missing) + ".")
        if strict and unexpected:
            problems.append("Unexpected key(s) in state_dict: "
                            + ", ".join(f'"{k}"' for k in unexpected) + ".")
        problems += mismatched
        if problems:
            message = (f"Error(s) in loading state_dict for {self._get_name()}:\n\t"
                       + "\n\t".join(problems))
            only_shapes = len(problems) == len(mismatched)
            raise (ShapeError if only_shapes else InvalidArgument)(message)
        for module, store, name, value in updates:
            module.__dict__[store][name] = value
        return IncompatibleKeys(missing, unexpected)

    # -- copying and pickling -------------------------------------------------------

    def __getstate__(self):
        # Prepared (packed) weights are rebuilt after unpickling.
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_cache")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        for store in ("_parameters", "_buffers"):
            for name, value in list(self.__dict__[store].items()):
                if value is not None and value.flags.writeable:
                    # Unpickled arrays come back writeable: make private read-only copies.
                    self.__dict__[store][name] = _frozen(value, name, value.dtype)

    def __deepcopy__(self, memo):
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return new

    # -- printing --------------------------------------------------------------------

    def _get_name(self):
        return type(self).__name__

    def extra_repr(self):
        """The layer's settings as shown inside its ``repr`` (torch's format)."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): {_addindent(repr(module), 2)}"
                       for name, module in self._modules.items()]
        lines = extra_lines + child_lines
        text = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:
                text += extra_lines[0]
            else:
                text += "\n  " + "\n  ".join(lines) + "\n"
        return text + ")"


# ---------------------------------------------------------------------------------------
# Sequential

class Sequential(Module):
    """Layers run one after the other: ``Sequential(conv, relu, ...)``.

    Takes modules as positional arguments (named ``"0"``, ``"1"``, ...) or one
    ``OrderedDict`` of name -> module. Supports ``len``, iteration, indexing (an int
    gives the layer, a slice a new ``Sequential`` sharing the layers), ``append`` and
    item assignment / deletion, like ``torch.nn.Sequential``.
    """

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, module in args[0].items():
                self._check_module(module, name)
                self.add_module(name, module)
        else:
            for index, module in enumerate(args):
                self._check_module(module, index)
                self.add_module(str(index), module)

    @staticmethod
    def _check_module(module, where):
        if not isinstance(module, Module):
            raise InvalidArgument(f"Sequential: item {where!r} must be a pyconv.nn.Module, "
                                  f"got {type(module).__name__}")

    def _index(self, idx):
        try:
            i = operator.index(idx)
        except TypeError:
            raise InvalidArgument(f"Sequential indices must be ints or slices, "
                                  f"got {type(idx).__name__}") from None
        n = len(self._modules)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for a Sequential of length {n}")
        return i % n

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(OrderedDict(list(self._modules.items())[idx]))
        return list(self._modules.values())[self._index(idx)]

    def __setitem__(self, idx, module):
        self._check_module(module, idx)
        key = list(self._modules.keys())[self._index(idx)]
        self._modules[key] = module

    def __delitem__(self, idx):
        if isinstance(idx, slice):
            keys = list(self._modules.keys())[idx]
        else:
            keys = [list(self._modules.keys())[self._index(idx)]]
        for key in keys:
            del self._modules[key]
        # Renumber like torch so that keys stay "0", "1", ...
        self.__dict__["_modules"] = OrderedDict(
            (str(i), m) for i, m in enumerate(self._modules.values()))

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        """Add ``module`` at the end; returns ``self``."""
        self._check_module(module, len(self))
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        """Run every layer in order on ``x``."""
        for module in self._modules.values():
            x = module(x)
        return x


# ---------------------------------------------------------------------------------------
# ModuleList and ModuleDict

def _check_item(container, module, where):
    if not isinstance(module, Module):
        raise InvalidArgument(f"{container}: item {where!r} must be a pyconv.nn.Module, "
                              f"got {type(module).__name__}")


class ModuleList(Module):
    """A list of sub-modules, registered under ``"0"``, ``"1"``, ... (``torch.nn.ModuleList``).

    ``state_dict``, ``parameters`` and ``named_modules`` see the modules with torch's
    names (``layers.0.weight``). Supports ``len``, iteration, indexing by int (negative
    too) and slice (a new ``ModuleList`` sharing the modules, renumbered from 0), item
    assignment and deletion (renumbering), ``append``, ``extend``, ``insert``, ``pop``,
    ``+=`` and ``+``. It has no forward: the owning module iterates over it.
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self += modules

    def _abs_index(self, idx):
        try:
            i = operator.index(idx)
        except TypeError:
            raise InvalidArgument(f"{self._get_name()} indices must be ints or slices, "
                                  f"got {type(idx).__name__}") from None
        n = len(self._modules)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for a {self._get_name()} of "
                             f"length {n}")
        return str(i % n)

    def _renumber(self):
        self.__dict__["_modules"] = OrderedDict(
            (str(i), m) for i, m in enumerate(self._modules.values()))

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(list(self._modules.values())[idx])
        return self._modules[self._abs_index(idx)]

    def __setitem__(self, idx, module):
        _check_item(self._get_name(), module, idx)
        self._modules[self._abs_index(idx)] = module

    def __delitem__(self, idx):
        if isinstance(idx, slice):
            for k in range(len(self._modules))[idx]:
                del self._modules[str(k)]
        else:
            del self._modules[self._abs_index(idx)]
        self._renumber()

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        if not isinstance(other, Iterable):
            return NotImplemented
        return ModuleList(chain(self, other))

    def __dir__(self):
        return [key for key in super().__dir__() if not key.isdigit()]

    def append(self, module):
        """Add ``module`` at the end; returns ``self``."""
        _check_item(self._get_name(), module, len(self))
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        """Append the modules of an iterable; returns ``self``."""
        if not isinstance(modules, Iterable):
            raise InvalidArgument(f"{self._get_name()}.extend should be called with an "
                                  f"iterable of modules, but got {type(modules).__name__}")
        modules = list(modules)
        for i, module in enumerate(modules):
            _check_item(self._get_name(), module, len(self) + i)
        for module in modules:
            self.add_module(str(len(self)), module)
        return self

    def insert(self, index, module):
        """Insert ``module`` before position ``index`` (list semantics, negative too)."""
        _check_item(self._get_name(), module, index)
        try:
            index = operator.index(index)
        except TypeError:
            raise InvalidArgument(f"{self._get_name()}.insert: index must be an int, got "
                                  f"{type(index).__name__}") from None
        items = list(self._modules.values())
        items.insert(index, module)
        self.__dict__["_modules"] = OrderedDict((str(i), m) for i, m in enumerate(items))

    def pop(self, key=-1):
        """Remove and return the module at ``key`` (renumbering the rest)."""
        value = self[key]
        del self[key]
        return value

    def __repr__(self):
        # torch's format: runs of identical modules are shown once, as "(0-2): 3 x ...".
        reprs = [repr(m) for m in self]
        if not reprs:
            return self._get_name() + "()"
        runs = []
        for i, text in enumerate(reprs):
            if runs and runs[-1][2] == text:
                runs[-1][1] = i
            else:
                runs.append([i, i, text])
        lines = [_addindent(f"({start}): {text}" if start == end
                            else f"({start}-{end}): {end - start + 1} x {text}", 2)
                 for start, end, text in runs]
        return self._get_name() + "(\n  " + "\n  ".join(lines) + "\n)"


class ModuleDict(Module):
    """An ordered dict of named sub-modules (``torch.nn.ModuleDict``).

    Keys are strings (without '.'), kept in insertion order; ``state_dict`` and
    ``named_modules`` name the modules by key (``blocks.conv.weight``). Supports
    ``d[key]``, assignment, ``del``, ``in``, ``len``, iteration over keys, ``keys``,
    ``values``, ``items``, ``update`` (a mapping or key/module pairs), ``pop`` and
    ``clear``. It has no forward.
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        try:
            return self._modules[key]
        except (KeyError, TypeError):
            raise KeyError(key) from None

    def __setitem__(self, key, module):
        _check_item(self._get_name(), module, key)
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def clear(self):
        """Remove every module."""
        self._modules.clear()

    def pop(self, key):
        """Remove ``key`` and return its module."""
        value = self[key]
        del self[key]
        return value

    def keys(self):
        """The keys, in order."""
        return self._modules.keys()

    def items(self):
        """``(key, module)`` pairs, in order."""
        return self._modules.items()

    def values(self):
        """The modules, in order."""
        return self._modules.values()

    def update(self, modules):
        """Add (or replace) modules from a mapping or an iterable of ``(key, module)``
        pairs, keeping their order."""
        if isinstance(modules, (Mapping, ModuleDict)):
            pairs = list(modules.items())
        elif isinstance(modules, Iterable) and not isinstance(modules, (str, Module)):
            pairs = []
            for j, item in enumerate(modules):
                if isinstance(item, (str, bytes)) or not isinstance(item, Iterable):
                    raise InvalidArgument(f"{self._get_name()}.update: sequence element #{j} "
                                          f"must be a (key, module) pair, got "
                                          f"{type(item).__name__}")
                item = tuple(item)
                if len(item) != 2:
                    raise InvalidArgument(f"{self._get_name()}.update: sequence element #{j} "
                                          f"has length {len(item)}; 2 is required")
                pairs.append(item)
        else:
            raise InvalidArgument(f"{self._get_name()}.update should be called with a "
                                  f"mapping or an iterable of (key, module) pairs, but got "
                                  f"{type(modules).__name__}")
        for key, module in pairs:
            _check_item(self._get_name(), module, key)
            _check_name(key, "module")
        for key, module in pairs:
            self[key] = module
