"""``pyconv.InferenceSession``: the onnxruntime-like entry point.

Switching from onnxruntime is one import::

    import pyconv as ort
    sess = ort.InferenceSession("model.onnx")
    y, = sess.run(None, {"input": x})
"""
from __future__ import annotations

import enum
import json
import operator
import os
import threading
import time
import warnings

import numpy as np

from pyconv._ext.gemm import ExecutionContext, check_num_threads
from pyconv._gc import collection_paused
from pyconv.errors import InvalidArgument, InvalidModel, PyconvError, RunFailed
from pyconv.graph import _passes
from pyconv.graph._executor import Program, signature
from pyconv.graph._load import ValueInfo, load
from pyconv.ops import lookup

__all__ = ["InferenceSession", "SessionOptions", "RunOptions", "GraphOptimizationLevel",
           "ExecutionMode", "NodeArg", "ModelMetadata", "OrtValue", "IOBinding",
           "get_available_providers", "get_all_providers", "get_device"]


def _is_one_of(v, arrays):
    """Whether v is one of arrays (the object itself; no generator: this runs per output
    of every run)."""
    for a in arrays:
        if v is a:
            return True
    return False


class GraphOptimizationLevel(enum.IntEnum):
    """Graph optimisation levels, with onnxruntime's names and values.

    ``ORT_DISABLE_ALL`` runs the graph as written (validation and ordering only);
    ``ORT_ENABLE_BASIC`` adds constant folding and removal of Identity / Dropout / dead
    nodes; ``ORT_ENABLE_EXTENDED``, ``ORT_ENABLE_LAYOUT`` and ``ORT_ENABLE_ALL`` add the
    fusions (BatchNormalization into Conv weights, residual Add and activations into the
    Conv epilogue, per-channel affine chains).
    """
    ORT_DISABLE_ALL = 0
    ORT_ENABLE_BASIC = 1
    ORT_ENABLE_EXTENDED = 2
    ORT_ENABLE_LAYOUT = 3
    ORT_ENABLE_ALL = 99


class ExecutionMode(enum.IntEnum):
    """onnxruntime's execution modes. pyconv runs the nodes one after another and each
    node on ``intra_op_num_threads`` threads, so ``ORT_PARALLEL`` (and
    ``inter_op_num_threads``) is accepted and runs as ``ORT_SEQUENTIAL``."""
    ORT_SEQUENTIAL = 0
    ORT_PARALLEL = 1


CPU_PROVIDER = "CPUExecutionProvider"


def get_available_providers():
    """The execution providers of this build: pyconv has one, the CPU."""
    return [CPU_PROVIDER]


def get_all_providers():
    """Every provider pyconv knows (onnxruntime lists those any of its builds may have;
    pyconv has only the CPU one)."""
    return [CPU_PROVIDER]


def get_device():
    """The device pyconv runs on: ``'CPU'``, as onnxruntime's CPU package says."""
    return "CPU"


# -- option objects ---------------------------------------------------------------------------
# onnxruntime's SessionOptions and RunOptions are pybind objects: an unknown attribute is
# an AttributeError and a value of the wrong type a TypeError, at assignment. These
# converters do the same checks; each returns the stored value or raises TypeError.

def _int_option(owner, name):
    def convert(value):
        if isinstance(value, (bool, np.bool_)) or not hasattr(value, "__index__"):
            raise TypeError(f"{owner}.{name} must be an int, got {type(value).__name__} "
                            f"{value!r}")
        return operator.index(value)
    return convert


def _bool_option(owner, name):
    def convert(value):
        if not isinstance(value, (bool, int, np.bool_, np.integer)):
            raise TypeError(f"{owner}.{name} must be a bool, got {type(value).__name__} "
                            f"{value!r}")
        return bool(value)
    return convert


def _str_option(owner, name):
    def convert(value):
        if not isinstance(value, str):
            raise TypeError(f"{owner}.{name} must be a str, got {type(value).__name__} "
                            f"{value!r}")
        return value
    return convert


def _enum_option(owner, name, enum_type):
    def convert(value):
        # A member, or its int value (onnxruntime accepts only members: plain ints are a
        # pyconv convenience); anything else, level 5 included, is a TypeError as there.
        if isinstance(value, enum_type):
            return value
        if not isinstance(value, (bool, str, float)) and hasattr(value, "__index__"):
            try:
                return enum_type(operator.index(value))
            except ValueError:
                pass
        raise TypeError(f"{owner}.{name} must be a {enum_type.__name__} (one of "
                        f"{', '.join(f'{m.name} = {m.value}' for m in enum_type)}), got "
                        f"{type(value).__name__} {value!r}")
    return convert


class _Options:
    """Attributes declared in ``_fields`` (name -> (default, converter)), checked at
    assignment; config entries (``add_*_config_entry``) as string pairs."""

    __slots__ = ("_values", "_config")
    _fields = {}
    _config_name = "config"

    def __init__(self):
        object.__setattr__(self, "_values", {k: d for k, (d, _) in self._fields.items()})
        object.__setattr__(self, "_config", {})

    def __getattr__(self, name):
        try:
            return object.__getattribute__(self, "_values")[name]
        except KeyError:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute "
                                 f"'{name}'") from None

    def __setattr__(self, name, value):
        field = self._fields.get(name)
        if field is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}' "
                                 f"(options: {', '.join(sorted(self._fields))})")
        self._values[name] = field[1](value)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._fields))

    # copy / deepcopy / pickle: the checked values and config entries.
    def __getstate__(self):
        return dict(self._values), dict(self._config)

    def __setstate__(self, state):
        object.__setattr__(self, "_values", dict(state[0]))
        object.__setattr__(self, "_config", dict(state[1]))

    def _add_config(self, key, value):
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"{type(self).__name__} config entries are str -> str, got "
                            f"{type(key).__name__} -> {type(value).__name__}")
        self._config[key] = value

    def _get_config(self, key):
        if not isinstance(key, str):
            raise TypeError(f"config keys are str, got {type(key).__name__}")
        if key not in self._config:
            raise RuntimeError(f"{type(self).__name__} does not have configuration with key: "
                               f"{key}")
        return self._config[key]


class SessionOptions(_Options):
    """Options of an :class:`InferenceSession` (onnxruntime's names, types and defaults).

    Assigning an unknown name raises AttributeError, a value of the wrong type
    TypeError (as onnxruntime's options object does).

    Attributes
    ----------
    intra_op_num_threads : int
        Threads for the kernels (0: ``pyconv.get_num_threads()`` when the session is
        made). Fixed at creation, in the session's execution context: sessions with
        different thread counts run side by side, from any Python threads, without
        affecting each other or the process default.
    inter_op_num_threads : int, execution_mode : ExecutionMode
        Accepted; pyconv runs nodes one after another (see :class:`ExecutionMode`).
    graph_optimization_level : GraphOptimizationLevel
        Default ``ORT_ENABLE_ALL``.
    optimized_model_filepath : str
        When set, the session writes the graph after its passes there as an ONNX model
        (nodes of the ``pyconv`` domain declared in an opset import); a ``.ort`` path or
        a model that cannot be written raises InvalidArgument.
    enable_profiling : bool
        Record per-node timings (``session.profile``, ``session.end_profiling()``).
    profile_file_prefix : str
        Prefix of the JSON file written by ``end_profiling``.
    memory_limit_bytes : int
        pyconv's own: refuse runs whose activations would take more than this many bytes
        at once (0, the default: no limit; negative: InvalidArgument at session creation).
        A planned run is checked before its arena is allocated, and every run counts the
        bytes its live values hold (a view counts the whole array it views, for as long
        as it lives) and stops at the first node that takes the total over the limit.
        Raises :class:`pyconv.errors.MemoryLimitExceeded`.
    enable_mem_pattern : bool
        Plan activation memory per input shape (buffers reused by liveness). Default True.
    mem_pattern_cache_size : int
        pyconv's own: how many memory plans (one per input signature, each with its
        buffers) the session keeps; the least recently used is dropped when another
        signature needs room (and made again if it comes back). From 1 to 4096, default
        8; anything else is InvalidArgument at session creation.
    enable_cpu_mem_arena, enable_mem_reuse, use_deterministic_compute,
    use_per_session_threads, log_severity_level, log_verbosity_level, logid
        Accepted and checked as in onnxruntime; pyconv's arenas are always on, its kernels
        deterministic for a given thread count, its threads per session, and it logs
        nothing at creation.
    """

    __slots__ = ()
    _fields = {name: (default, make("SessionOptions", name, *extra)) for name, default, make,
               *extra in [
                   ("intra_op_num_threads", 0, _int_option),
                   ("inter_op_num_threads", 0, _int_option),
                   ("execution_mode", ExecutionMode.ORT_SEQUENTIAL, _enum_option,
                    ExecutionMode),
                   ("graph_optimization_level", GraphOptimizationLevel.ORT_ENABLE_ALL,
                    _enum_option, GraphOptimizationLevel),
                   ("optimized_model_filepath", "", _str_option),
                   ("enable_profiling", False, _bool_option),
                   ("profile_file_prefix", "pyconv_profile", _str_option),
                   ("enable_mem_pattern", True, _bool_option),
                   ("enable_mem_reuse", True, _bool_option),
                   ("enable_cpu_mem_arena", True, _bool_option),
                   ("use_deterministic_compute", False, _bool_option),
                   ("use_per_session_threads", True, _bool_option),
                   ("memory_limit_bytes", 0, _int_option),
                   ("mem_pattern_cache_size", 8, _int_option),
                   ("log_severity_level", -1, _int_option),
                   ("log_verbosity_level", 0, _int_option),
                   ("logid", "", _str_option),
               ]}

    def add_session_config_entry(self, key, value):
        """Sets a session config entry (str -> str; recorded, returned by
        :meth:`get_session_config_entry`)."""
        self._add_config(key, value)

    def get_session_config_entry(self, key):
        """The value of a config entry; RuntimeError when it was never set."""
        return self._get_config(key)


class RunOptions(_Options):
    """Options of one :meth:`InferenceSession.run` (onnxruntime's names and types).

    Attributes
    ----------
    terminate : bool
        When true, ``run`` raises :class:`pyconv.errors.RunFailed` (onnxruntime raises
        its ``Fail``): checked as the run starts and before each node, so setting it from
        another thread ends the runs using these options.
    log_severity_level, log_verbosity_level, logid, only_execute_path_to_fetches
        Accepted and checked; pyconv logs nothing per run and runs every node whatever
        outputs are fetched.
    """

    __slots__ = ()
    _fields = {name: (default, make("RunOptions", name)) for name, default, make in [
        ("log_severity_level", -1, _int_option),
        ("log_verbosity_level", 0, _int_option),
        ("logid", "", _str_option),
        ("terminate", False, _bool_option),
        ("only_execute_path_to_fetches", False, _bool_option),
    ]}

    def add_run_config_entry(self, key, value):
        """Sets a run config entry (str -> str)."""
        self._add_config(key, value)

    def get_run_config_entry(self, key):
        """The value of a config entry; RuntimeError when it was never set."""
        return self._get_config(key)


class ModelMetadata:
    """What :meth:`InferenceSession.get_modelmeta` returns (onnxruntime's fields)."""

    def __init__(self, proto):
        self.producer_name = proto.producer_name
        self.graph_name = proto.graph.name
        self.domain = proto.domain
        self.description = proto.doc_string
        self.graph_description = proto.graph.doc_string
        self.version = int(proto.model_version)
        self.custom_metadata_map = {p.key: p.value for p in proto.metadata_props}

    def __repr__(self):
        return (f"ModelMetadata(producer_name={self.producer_name!r}, "
                f"graph_name={self.graph_name!r}, domain={self.domain!r}, "
                f"version={self.version})")


class NodeArg:
    """An input or output of a session: ``name``, ``shape`` (ints, symbolic dims as
    strings, None when unknown) and ``type`` (e.g. ``'tensor(float)'``)."""

    def __init__(self, name, shape, type):
        self.name, self.shape, self.type = name, shape, type

    def __repr__(self):
        return f"NodeArg(name={self.name!r}, type={self.type!r}, shape={self.shape!r})"


def _shape_only_model(proto):
    """A copy of the model whose large initializers are declared inputs (shape and type
    only): shape inference then does not serialise the weights."""
    from onnx import ModelProto, helper
    m = ModelProto()
    m.ir_version = proto.ir_version
    m.opset_import.extend(proto.opset_import)
    g = m.graph
    g.node.extend(proto.graph.node)
    g.output.extend(proto.graph.output)
    g.value_info.extend(proto.graph.value_info)
    declared = {v.name for v in proto.graph.input}
    g.input.extend(proto.graph.input)
    for t in proto.graph.initializer:
        n = 1
        for d in t.dims:
            n *= d
        if n <= 64:
            g.initializer.append(t)
        elif t.name not in declared:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    if m.ir_version < 4:
        m.ir_version = 4     # initializers need not be listed as inputs from IR 4
    return m


def _infer_value_info(proto, graph):
    """onnx's shape inference (symbolic dims kept) merged into graph.value_info."""
    try:
        from onnx import shape_inference
        inferred = shape_inference.infer_shapes(_shape_only_model(proto), strict_mode=False)
    except Exception:
        return
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        v = ValueInfo.from_proto(vi)
        old = graph.value_info.get(v.name)
        if old is None or old.shape is None or (v.shape is not None and
                                                len(v.shape) == len(old.shape) and
                                                None in old.shape):
            graph.value_info[v.name] = v


def _check_session_kwargs(kwargs):
    """onnxruntime's keyword ``disabled_optimizers`` (names of its own optimizers: nothing
    to disable here, so a warning); anything else, e.g. ``intra_op_num_threads=1`` that
    belongs in SessionOptions, is a TypeError rather than silently ignored."""
    for key, value in kwargs.items():
        if key == "disabled_optimizers":
            if value:
                warnings.warn("InferenceSession(disabled_optimizers=...): onnxruntime's "
                              "optimizer names do not apply to pyconv and are ignored; "
                              "set SessionOptions.graph_optimization_level instead",
                              RuntimeWarning, stacklevel=3)
            continue
        hint = (f"; set it on pyconv.SessionOptions and pass that as sess_options"
                if hasattr(SessionOptions(), key) else "")
        raise TypeError(f"InferenceSession() got an unexpected keyword argument {key!r}"
                        f"{hint}")


class InferenceSession:
    """Runs an ONNX model on the pyconv kernels.

    Parameters
    ----------
    path_or_bytes : str, os.PathLike, bytes or onnx.ModelProto
        The model. External tensor data is read from the model file's directory only.
    sess_options : SessionOptions, optional
    providers : list, optional
        Provider names or (name, options) pairs, as in onnxruntime. pyconv runs on the
        CPU: other names warn (onnxruntime's UserWarning) and fall back to
        ``CPUExecutionProvider``.
    provider_options : list of dict, optional
        One dict per provider (onnxruntime's rules); the CPU provider takes none.

    Raises
    ------
    InvalidModel
        Unreadable, truncated or malformed model (dangling inputs, cycles, duplicated
        outputs, bad tensors, unsafe external data paths).
    UnsupportedOperator
        The model uses operators pyconv lacks; the message lists every missing type and
        the nodes using it.

    Notes
    -----
    Weights are prepared (packed) once here. ``run`` may be called from several threads
    at once: each run has its own buffers.
    """

    def __init__(self, path_or_bytes, sess_options=None, providers=None,
                 provider_options=None, **kwargs):
        t0 = time.perf_counter()
        self._profiling_start_ns = time.time_ns()
        _check_session_kwargs(kwargs)
        if sess_options is not None and not isinstance(sess_options, SessionOptions):
            raise TypeError(f"sess_options must be a pyconv.SessionOptions, got "
                            f"{type(sess_options).__module__}.{type(sess_options).__name__}")
        self._options = sess_options or SessionOptions()
        _check_option_ranges(self._options)
        self._providers = _check_providers(providers, provider_options)
        with collection_paused():       # a big graph makes objects per node: see _gc
            self._create(path_or_bytes)
        self.creation_seconds = time.perf_counter() - t0

    def _create(self, path_or_bytes):
        """Loads, optimises and prepares the model (the operators, the program)."""
        graph, proto = load(path_or_bytes)
        self._inputs_info = list(graph.inputs)
        self._outputs_info = list(graph.outputs)
        # Initializers also declared as graph inputs: onnxruntime lets a run override them.
        self._overridable = [ValueInfo.from_proto(v) for v in proto.graph.input
                             if v.name in graph.constants]
        self._modelmeta = ModelMetadata(proto)
        _infer_value_info(proto, graph)
        self._value_info = graph.value_info
        opset_imports = [(o.domain, int(o.version)) for o in proto.opset_import]
        ir_version = proto.ir_version
        del proto
        shapes = {k: v.shape for k, v in graph.value_info.items()}
        level = int(self._options.graph_optimization_level)
        _passes.optimize(graph, level, shapes)
        if self._options.optimized_model_filepath:
            _save_optimized(graph, self._options.optimized_model_filepath, opset_imports,
                            ir_version)
        self._graph = graph
        threads = self._options.intra_op_num_threads
        self.context = ExecutionContext(
            check_num_threads(threads, "SessionOptions.intra_op_num_threads")
            if threads != 0 else None)
        ops = []
        for n in graph.nodes:
            cls = lookup(n.op_type, n.domain)
            consts = {i: graph.constants[x] for i, x in enumerate(n.inputs)
                      if x and x in graph.constants}
            try:
                ops.append(cls(n, graph.opset, consts, self.context))
            except PyconvError:
                raise
            except (ValueError, TypeError, KeyError, IndexError, AttributeError,
                    ArithmeticError, MemoryError, RecursionError) as exc:
                raise InvalidModel(f"{n.label}: its attributes or constant inputs do not "
                                   f"fit the {n.op_type} operator (attributes "
                                   f"{sorted(n.attrs)}; Python's {type(exc).__name__}: "
                                   f"{exc})") from exc
        self._program = Program(graph, ops, plan_memory=self._options.enable_mem_pattern,
                                memory_limit=self._options.memory_limit_bytes,
                                max_plans=self._options.mem_pattern_cache_size)
        self._known = set(self._program.slots)
        # Feed signatures ((shape, dtype) per input) that passed _check_feed: a repeated
        # signature is accepted on a dict lookup.
        self._feed_signatures = set()
        self._all_output_slots = [self._program.output_slot[o.name]
                                  for o in self._outputs_info]
        self.profile = []
        self._profile_lock = threading.Lock()
        self._profile_start = time.perf_counter()
        self.weights_bytes = sum(v.nbytes for v in graph.constants.values())

    # -- metadata ---------------------------------------------------------------------------
    def _arg(self, vi):
        shape = vi.shape
        if shape is None:
            inferred = self._value_info.get(vi.name)
            shape = inferred.shape if inferred is not None else None
        return NodeArg(vi.name, list(shape) if shape is not None else None, vi.type_str)

    def get_inputs(self):
        """The graph inputs (initializers excluded) as :class:`NodeArg`."""
        return [self._arg(v) for v in self._inputs_info]

    def get_outputs(self):
        """The graph outputs as :class:`NodeArg`."""
        return [self._arg(v) for v in self._outputs_info]

    def get_overridable_initializers(self):
        """Initializers the model also declares as graph inputs, as :class:`NodeArg`.
        pyconv folds every initializer into the prepared graph, so a run that feeds one
        raises InvalidArgument saying so."""
        return [self._arg(v) for v in self._overridable]

    def get_modelmeta(self):
        """The model's metadata (:class:`ModelMetadata`)."""
        return self._modelmeta

    def get_providers(self):
        """``['CPUExecutionProvider']``: the providers in use."""
        return list(self._providers)

    def get_provider_options(self):
        """Options of each provider in use: the CPU provider has none."""
        return {p: {} for p in self._providers}

    def set_providers(self, providers=None, provider_options=None):
        """Checked like the constructor's arguments (unknown names warn); pyconv stays on
        the CPU."""
        self._providers = _check_providers(providers, provider_options)

    def get_session_options(self):
        return self._options

    def get_profiling_start_time_ns(self):
        """When the session was created (``time.time_ns()``): the profile's origin."""
        return self._profiling_start_ns

    @property
    def memory_stats(self):
        """Activation memory of the plans kept (``plans``: how many, at most
        ``SessionOptions.mem_pattern_cache_size``; one per input signature).

        A dict with ``arena_bytes`` (planned buffers of the largest plan),
        ``unplanned_bytes`` (other intermediate values), ``naive_bytes`` (every
        intermediate value without reuse), ``peak_activation_bytes`` (the arena and
        the unplanned values alive at once at the peak, as a run under
        ``memory_limit_bytes`` counts them) and
        ``weights_bytes`` (constants after optimisation, before packing)."""
        with self._program._plan_lock:
            plans = list(self._program.plans.values())
        if not plans:
            return {"arena_bytes": 0, "unplanned_bytes": 0, "naive_bytes": 0,
                    "peak_activation_bytes": 0, "weights_bytes": self.weights_bytes,
                    "plans": 0}
        p = max(plans, key=lambda p: p.peak_bytes)
        return {"arena_bytes": p.arena_bytes, "unplanned_bytes": p.unplanned_bytes,
                "naive_bytes": p.naive_bytes, "peak_activation_bytes": p.peak_bytes,
                "weights_bytes": self.weights_bytes, "plans": len(plans)}

    # -- running ------------------------------------------------------------------------------
    def _check_feed(self, input_feed):
        """The feeds in input order, and their signature when a repeated one let the checks
        be skipped (else None)."""
        if type(input_feed) is dict and len(input_feed) == len(self._inputs_info):
            try:
                feeds = [input_feed[vi.name] for vi in self._inputs_info]
            except KeyError:
                feeds = None
            if feeds is not None:
                for v in feeds:
                    if type(v) is not np.ndarray:
                        break
                else:
                    key = signature(feeds)
                    if key in self._feed_signatures:
                        return feeds, key
        feeds = self._check_feed_fully(input_feed)
        if len(self._feed_signatures) < 64 and all(
                type(v) is np.ndarray and v is input_feed[vi.name]
                for v, vi in zip(feeds, self._inputs_info)):
            self._feed_signatures.add(signature(feeds))
        return feeds, None

    def _check_feed_fully(self, input_feed):
        if not hasattr(input_feed, "keys"):
            raise InvalidArgument(f"input_feed must be a dict name -> array, got "
                                  f"{type(input_feed).__name__}")
        names = [v.name for v in self._inputs_info]
        extra = [k for k in input_feed if k not in names]
        if extra:
            raise InvalidArgument(f"unknown input(s) {extra}; the model's inputs are {names}")
        feeds = []
        for vi in self._inputs_info:
            if vi.name not in input_feed:
                raise InvalidArgument(
                    f"missing input '{vi.name}' (expected {vi.type_str} with shape "
                    f"{vi.shape}); got inputs {sorted(input_feed)}")
            v = input_feed[vi.name]
            if isinstance(v, np.ndarray) and type(v) is not np.ndarray:
                v = v.view(np.ndarray)      # np.matrix & co: their rules stay outside
            elif not isinstance(v, np.ndarray):
                try:
                    v = np.asarray(v, dtype=vi.dtype)
                except (TypeError, ValueError) as exc:
                    raise InvalidArgument(f"input '{vi.name}': cannot convert "
                                          f"{type(v).__name__} to {vi.type_str}: {exc}") \
                        from None
            if vi.dtype is not None and v.dtype != vi.dtype:
                raise InvalidArgument(f"input '{vi.name}': expected {vi.type_str} "
                                      f"({vi.dtype}), received dtype {v.dtype}")
            if vi.shape is not None:
                if v.ndim != len(vi.shape):
                    raise InvalidArgument(
                        f"input '{vi.name}': expected rank {len(vi.shape)} with shape "
                        f"{vi.shape}, received shape {v.shape}")
                for axis, (want, got) in enumerate(zip(vi.shape, v.shape)):
                    if isinstance(want, int) and want != got:
                        raise InvalidArgument(
                            f"input '{vi.name}': dim {axis} must be {want} (expected shape "
                            f"{vi.shape}), received shape {v.shape}")
                    # Named dims are free, as in onnxruntime: it does not check that
                    # inputs sharing a name ('batch') agree; the nodes check what matters.
            feeds.append(v)
        return feeds

    def run(self, output_names, input_feed, run_options=None):
        """Runs the model.

        Parameters
        ----------
        output_names : list of str or None
            Outputs to return (None or empty: all, in graph order).
        input_feed : dict str -> ndarray or OrtValue
            One array per graph input, of the declared dtype, rank and fixed dims
            (named, negative and unknown dims take any size, as in onnxruntime).
        run_options : RunOptions, optional

        Returns
        -------
        list of ndarray

        Raises
        ------
        InvalidArgument
            Missing or extra input, wrong dtype, rank or fixed dim (names the input,
            what was expected and what was received), unknown output name, or an
            operator failing on the given shapes (names the node).
        TypeError
            ``output_names`` is a string, ``run_options`` not a :class:`RunOptions`.
        RunFailed
            ``run_options.terminate`` is set.
        """
        if run_options is not None:
            if not isinstance(run_options, RunOptions):
                raise TypeError(f"run_options must be a pyconv.RunOptions, got "
                                f"{type(run_options).__module__}."
                                f"{type(run_options).__name__}")
            if run_options.terminate:
                raise RunFailed("Exiting due to terminate flag being set to true "
                                "(RunOptions.terminate)")
        if output_names is not None and (isinstance(output_names, (str, bytes)) or
                                         not hasattr(output_names, "__iter__")):
            raise TypeError(f"output_names must be a list of output names or None, got "
                            f"{type(output_names).__name__} {output_names!r}")
        try:
            feeds, key = self._check_feed(input_feed)
        except InvalidArgument:
            # Off the fast path: OrtValue feeds (unwrapped to their arrays), or initializers
            # fed as inputs (a clearer error).
            if not (hasattr(input_feed, "values") and
                    any(isinstance(v, OrtValue) for v in input_feed.values())):
                self._refuse_overrides(input_feed)
                raise
            feeds, key = self._check_feed({k: v.numpy() if isinstance(v, OrtValue) else v
                                           for k, v in input_feed.items()})
        if not output_names:              # None or [], as in onnxruntime: every output
            wanted = self._all_output_slots
        else:
            all_outs = [o.name for o in self._outputs_info]
            for n in output_names:
                if n not in all_outs:
                    raise InvalidArgument(f"unknown output '{n}'; the model's outputs are "
                                          f"{all_outs}")
            wanted = [self._program.output_slot[n] for n in output_names]
        profile = [] if self._options.enable_profiling else None
        outs = self._program.run(feeds, wanted, profile, run_options, key)
        if profile is not None:
            self._add_profile(profile)
        result = []
        for v in outs:
            if type(v) is not np.ndarray:
                v = np.asarray(v)
            # Never hand out an initializer, a feed or a read-only view of one.
            if not v.flags.writeable or _is_one_of(v, feeds):
                v = v.copy()
            result.append(v)
        return result

    def _refuse_overrides(self, input_feed):
        if not hasattr(input_feed, "keys"):
            return
        fed = [v.name for v in self._overridable if v.name in input_feed]
        if fed:
            raise InvalidArgument(
                f"input(s) {fed} are initializers: pyconv folds initializers into the "
                f"prepared graph at creation, so a run cannot override them (make a session "
                f"from a model holding the new values)")

    def run_with_ort_values(self, output_names, input_dict_ort_values, run_options=None):
        """:meth:`run` with :class:`OrtValue` inputs and outputs."""
        if not hasattr(input_dict_ort_values, "items"):
            raise TypeError(f"input_dict_ort_values must be a dict name -> OrtValue, got "
                            f"{type(input_dict_ort_values).__name__}")
        for name, v in input_dict_ort_values.items():
            if not isinstance(v, OrtValue):
                raise TypeError(f"input '{name}': expected an OrtValue, got "
                                f"{type(v).__name__}")
        return [OrtValue(v) for v in self.run(output_names, dict(input_dict_ort_values),
                                             run_options)]

    def io_binding(self):
        """A new :class:`IOBinding` of this session."""
        return IOBinding(self)

    def run_with_iobinding(self, iobinding, run_options=None):
        """Runs with the inputs and outputs bound to ``iobinding``.

        Outputs bound to a buffer (an OrtValue or a pointer) are written there; the others
        are read with ``iobinding.get_outputs()`` / ``copy_outputs_to_cpu()``. Errors of
        the run are :class:`pyconv.errors.RunFailed` (a RuntimeError, as onnxruntime
        raises here), with the cause attached.
        """
        if not isinstance(iobinding, IOBinding):
            raise TypeError(f"iobinding must be a pyconv.IOBinding, got "
                            f"{type(iobinding).__name__}")
        if iobinding._session is not self:
            raise ValueError("IOBinding must be used with the session that created it.")
        iobinding._run(run_options)

    # -- profiling -----------------------------------------------------------------------------
    def _add_profile(self, records):
        with self._profile_lock:
            run = (self.profile[-1]["run"] + 1) if self.profile else 0
            for node, t0, t1, shapes in records:
                self.profile.append({
                    "run": run, "node": node.name, "op_type": node.op_type,
                    "start_us": (t0 - self._profile_start) * 1e6,
                    "duration_us": (t1 - t0) * 1e6,
                    "output_shapes": [list(s) if s is not None else None for s in shapes]})

    def end_profiling(self):
        """Writes the per-node timings as a Chrome trace JSON (like onnxruntime) and
        returns its path; ``session.profile`` keeps the records as dicts."""
        if not self._options.enable_profiling:
            return ""
        path = f"{self._options.profile_file_prefix}_" \
               f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{os.getpid()}_{id(self):x}.json"
        events = [{"cat": "Node", "name": r["node"], "ph": "X", "pid": os.getpid(),
                   "tid": 0, "ts": r["start_us"], "dur": r["duration_us"],
                   "args": {"op_name": r["op_type"], "output_shapes": r["output_shapes"],
                            "run": r["run"]}} for r in self.profile]
        with open(path, "w") as f:
            json.dump(events, f)
        return path


#: Largest SessionOptions.mem_pattern_cache_size (each plan may keep buffers).
MAX_MEM_PATTERN_CACHE_SIZE = 4096


def _check_option_ranges(options):
    """Option values of the right type but outside their range: InvalidArgument naming
    the option, before anything is loaded (types are checked at assignment)."""
    if options.memory_limit_bytes < 0:
        raise InvalidArgument(f"SessionOptions.memory_limit_bytes: expected 0 (no limit) or "
                              f"a positive number of bytes, got {options.memory_limit_bytes}")
    size = options.mem_pattern_cache_size
    if not 1 <= size <= MAX_MEM_PATTERN_CACHE_SIZE:
        raise InvalidArgument(f"SessionOptions.mem_pattern_cache_size: expected an integer "
                              f"from 1 to {MAX_MEM_PATTERN_CACHE_SIZE}, got {size}")
    threads = options.intra_op_num_threads
    if threads != 0:
        check_num_threads(threads, "SessionOptions.intra_op_num_threads")


def _check_providers(providers, provider_options):
    """onnxruntime's provider arguments, checked by its rules: a sequence of names or
    (name, options) pairs, optionally with ``provider_options``. Names pyconv lacks warn
    with onnxruntime's message; malformed arguments warn too (onnxruntime reports them
    and falls back to the CPU provider). Returns the providers in use."""
    def fallback(problem):
        warnings.warn(f"{problem}; falling back to ['{CPU_PROVIDER}']", UserWarning,
                      stacklevel=3)
        return [CPU_PROVIDER]

    if providers is None:
        return [CPU_PROVIDER]
    if isinstance(providers, str) or not isinstance(providers, (list, tuple)):
        return fallback("'providers' should be a sequence")
    if provider_options is not None:
        if not isinstance(provider_options, (list, tuple)):
            return fallback("'provider_options' should be a sequence")
        if len(providers) != len(provider_options):
            return fallback("'providers' and 'provider_options' should be the same length "
                            "if both are given")
        if not all(isinstance(p, str) for p in providers):
            return fallback("Only string values for 'providers' are supported if "
                            "'provider_options' is given")
        if not all(isinstance(o, dict) for o in provider_options):
            return fallback("'provider_options' values must be dicts")
        names = list(providers)
    else:
        names = []
        for p in providers:
            if isinstance(p, str):
                names.append(p)
            elif isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) and \
                    isinstance(p[1], dict):
                names.append(p[0])
            else:
                return fallback("'providers' values must be either strings or (string, dict) "
                                "tuples")
    for name in names:
        if name not in get_available_providers():
            warnings.warn(f"Specified provider '{name}' is not in available provider names."
                          f"Available providers: '{', '.join(get_available_providers())}'",
                          UserWarning, stacklevel=3)
    return [CPU_PROVIDER]


def _save_optimized(graph, path, opset_imports, ir_version):
    """Writes the optimised graph (SessionOptions.optimized_model_filepath) as ONNX."""
    from pyconv.graph._save import to_model
    where = f"SessionOptions.optimized_model_filepath={path!r}"
    if str(path).lower().endswith(".ort"):
        raise InvalidArgument(f"{where}: pyconv writes ONNX models only, not the ORT format")
    model = to_model(graph, opset_imports, ir_version)
    try:
        data = model.SerializeToString()
    except ValueError as exc:      # protobuf's 2 GiB limit
        raise InvalidArgument(f"{where}: the optimised model cannot be serialised: {exc}") \
            from None
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise InvalidArgument(f"{where}: cannot write the optimised model: {exc}") from None


# -- OrtValue and IOBinding (CPU only) ---------------------------------------------------------

def _cpu_only(device_type, what):
    if str(device_type).lower() != "cpu":
        raise RunFailed(f"{what}: device '{device_type}' is not available: pyconv runs on "
                        f"the CPU only")


class OrtValue:
    """onnxruntime's OrtValue for CPU tensors: a NumPy array behind its API.

    ``ortvalue_from_numpy`` keeps the array (no copy when it is C-contiguous, so both
    see the same memory, as in onnxruntime)."""

    __slots__ = ("_array",)

    def __init__(self, array):
        self._array = array

    @staticmethod
    def ortvalue_from_numpy(numpy_obj, device_type="cpu", device_id=0, vendor_id=-1):
        _cpu_only(device_type, "OrtValue.ortvalue_from_numpy")
        if not isinstance(numpy_obj, np.ndarray) or numpy_obj.dtype.kind in "OUSV":
            raise RunFailed(f"OrtValue.ortvalue_from_numpy needs a numeric or bool ndarray, "
                            f"got {type(numpy_obj).__name__}"
                            f"{' of dtype ' + str(numpy_obj.dtype) if isinstance(numpy_obj, np.ndarray) else ''}")
        return OrtValue(np.ascontiguousarray(numpy_obj))

    @staticmethod
    def ortvalue_from_shape_and_type(shape, element_type, device_type="cpu", device_id=0,
                                     vendor_id=-1):
        _cpu_only(device_type, "OrtValue.ortvalue_from_shape_and_type")
        return OrtValue(np.empty(tuple(shape), np.dtype(element_type)))

    def numpy(self):
        """The tensor as an ndarray (the same memory, not a copy)."""
        return self._array

    def shape(self):
        return list(self._array.shape)

    def element_type(self):
        """The ONNX TensorProto element type (1: float)."""
        from onnx import helper
        return int(helper.np_dtype_to_tensor_dtype(self._array.dtype))

    def data_type(self):
        """``'tensor(float)'`` and the like."""
        return ValueInfo("", self.element_type()).type_str

    def device_name(self):
        return "cpu"

    def data_ptr(self):
        return self._array.ctypes.data

    def tensor_size_in_bytes(self):
        return self._array.nbytes

    def has_value(self):
        return True

    def is_tensor(self):
        return True

    def is_sparse_tensor(self):
        return False

    def is_tensor_sequence(self):
        return False

    def update_inplace(self, np_arr):
        """Copies ``np_arr`` (same shape and dtype) into the tensor."""
        np_arr = np.asarray(np_arr)
        if np_arr.shape != self._array.shape or np_arr.dtype != self._array.dtype:
            raise RunFailed(f"OrtValue.update_inplace: got {np_arr.dtype} {np_arr.shape}, the "
                            f"value holds {self._array.dtype} {self._array.shape}")
        np.copyto(self._array, np_arr)

    def __repr__(self):
        return f"OrtValue({self.data_type()}, shape={self.shape()})"


def _array_at(ptr, element_type, shape, what):
    """A NumPy view of CPU memory at address ``ptr`` (onnxruntime's raw-pointer binding)."""
    import ctypes
    import math
    if not ptr or shape is None or element_type is None:
        raise RunFailed(f"{what}: a buffer binding needs element_type, shape and "
                        f"buffer_ptr")
    dtype = np.dtype(element_type)
    shape = tuple(int(d) for d in shape)
    nbytes = math.prod(shape) * dtype.itemsize
    return np.frombuffer((ctypes.c_char * nbytes).from_address(int(ptr)), dtype).reshape(shape)


class IOBinding:
    """onnxruntime's IOBinding on the CPU: inputs bound to arrays, outputs to buffers
    (filled in place) or left for the session to allocate."""

    def __init__(self, session):
        self._session = session
        self._inputs = {}
        self._outputs = {}          # name -> bound ndarray, or None: allocated by the run
        self._results = []

    def _input_name(self, name):
        if name not in {v.name for v in self._session._inputs_info}:
            raise RunFailed(f"Failed to find NodeArg with name: {name} in the def list "
                            f"(inputs: {[v.name for v in self._session._inputs_info]})")
        return name

    def bind_cpu_input(self, name, arr_on_cpu):
        """Binds an ndarray (used as is: a wrong dtype fails when the session runs)."""
        self._inputs[self._input_name(name)] = np.asarray(arr_on_cpu)

    def bind_input(self, name, device_type, device_id, element_type, shape, buffer_ptr):
        """Binds ``shape`` elements of ``element_type`` at address ``buffer_ptr``."""
        _cpu_only(device_type, f"bind_input '{name}'")
        self._inputs[self._input_name(name)] = _array_at(buffer_ptr, element_type, shape,
                                                         f"bind_input '{name}'")

    def bind_ortvalue_input(self, name, ortvalue):
        if not isinstance(ortvalue, OrtValue):
            raise TypeError(f"bind_ortvalue_input '{name}': expected an OrtValue, got "
                            f"{type(ortvalue).__name__}")
        self._inputs[self._input_name(name)] = ortvalue.numpy()

    def bind_output(self, name, device_type="cpu", device_id=0, element_type=None,
                    shape=None, buffer_ptr=None):
        """Binds an output: to the buffer at ``buffer_ptr`` when given, else to memory
        the run allocates."""
        _cpu_only(device_type, f"bind_output '{name}'")
        self._outputs[name] = None if buffer_ptr is None else _array_at(
            buffer_ptr, element_type, shape, f"bind_output '{name}'")

    def bind_ortvalue_output(self, name, ortvalue):
        if not isinstance(ortvalue, OrtValue):
            raise TypeError(f"bind_ortvalue_output '{name}': expected an OrtValue, got "
                            f"{type(ortvalue).__name__}")
        self._outputs[name] = ortvalue.numpy()

    def clear_binding_inputs(self):
        self._inputs.clear()

    def clear_binding_outputs(self):
        self._outputs.clear()
        self._results = []

    def synchronize_inputs(self):
        """Nothing to do on the CPU."""

    def synchronize_outputs(self):
        """Nothing to do on the CPU."""

    def get_outputs(self):
        """The outputs of the last run, as :class:`OrtValue` (bound buffers included)."""
        return list(self._results)

    def copy_outputs_to_cpu(self):
        """The outputs of the last run as new ndarrays."""
        return [v.numpy().copy() for v in self._results]

    def _run(self, run_options):
        if not self._outputs:
            raise RunFailed("Error in execution: At least one output should be requested.")
        names = list(self._outputs)
        try:
            values = self._session.run(names, dict(self._inputs), run_options)
        except (RunFailed, TypeError):
            raise
        except PyconvError as exc:
            raise RunFailed(f"Error in execution: {exc}") from exc
        results = []
        for name, value in zip(names, values):
            buffer = self._outputs[name]
            if buffer is not None:
                if buffer.shape != value.shape or buffer.dtype != value.dtype:
                    raise RunFailed(f"Error in execution: output '{name}' is {value.dtype} "
                                    f"{value.shape}, its bound buffer {buffer.dtype} "
                                    f"{buffer.shape}")
                np.copyto(buffer, value)
                value = buffer
            results.append(OrtValue(value))
        self._results = results
