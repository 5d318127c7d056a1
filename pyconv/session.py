"""``pyconv.InferenceSession``: the onnxruntime-like entry point.

Switching from onnxruntime is one import::

    import pyconv as ort
    sess = ort.InferenceSession("model.onnx")
    y, = sess.run(None, {"input": x})
"""
from __future__ import annotations

import enum
import json
import os
import threading
import time

import numpy as np

from pyconv._ext.gemm import ExecutionContext, check_num_threads
from pyconv.errors import InvalidArgument, InvalidModel, PyconvError
from pyconv.graph import _passes
from pyconv.graph._executor import Program
from pyconv.graph._load import ValueInfo, load
from pyconv.ops import lookup

__all__ = ["InferenceSession", "SessionOptions", "GraphOptimizationLevel", "NodeArg"]


class GraphOptimizationLevel(enum.IntEnum):
    """Graph optimisation levels, with onnxruntime's names and values.

    ``ORT_DISABLE_ALL`` runs the graph as written (validation and ordering only);
    ``ORT_ENABLE_BASIC`` adds constant folding and removal of Identity / Dropout / dead
    nodes; ``ORT_ENABLE_EXTENDED`` and ``ORT_ENABLE_ALL`` add the fusions
    (BatchNormalization into Conv weights, residual Add and activations into the Conv
    epilogue, per-channel affine chains).
    """
    ORT_DISABLE_ALL = 0
    ORT_ENABLE_BASIC = 1
    ORT_ENABLE_EXTENDED = 2
    ORT_ENABLE_ALL = 99


class SessionOptions:
    """Options of an :class:`InferenceSession` (a subset of onnxruntime's).

    Attributes
    ----------
    intra_op_num_threads : int
        Threads for the kernels (0: ``pyconv.get_num_threads()`` when the session is
        made). Fixed at creation, in the session's execution context: sessions with
        different thread counts run side by side, from any Python threads, without
        affecting each other or the process default.
    graph_optimization_level : GraphOptimizationLevel
        Default ``ORT_ENABLE_ALL``.
    enable_profiling : bool
        Record per-node timings (``session.profile``, ``session.end_profiling()``).
    profile_file_prefix : str
        Prefix of the JSON file written by ``end_profiling``.
    memory_limit_bytes : int
        Refuse runs whose activations would take more than this many bytes at once
        (0, the default: no limit). A planned run is checked before its arena is
        allocated; the first run of a new input shape, which builds the plan, stops at the
        first node that takes the live total over the limit. Raises
        :class:`pyconv.errors.MemoryLimitExceeded`.
    enable_mem_pattern : bool
        Plan activation memory per input shape (buffers reused by liveness). Default True.
    """

    def __init__(self):
        self.intra_op_num_threads = 0
        self.inter_op_num_threads = 0
        self.graph_optimization_level = GraphOptimizationLevel.ORT_ENABLE_ALL
        self.enable_profiling = False
        self.profile_file_prefix = "pyconv_profile"
        self.enable_mem_pattern = True
        self.memory_limit_bytes = 0
        self.log_severity_level = 2


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


class InferenceSession:
    """Runs an ONNX model on the pyconv kernels.

    Parameters
    ----------
    path_or_bytes : str, os.PathLike, bytes or onnx.ModelProto
        The model. External tensor data is read from the model file's directory only.
    sess_options : SessionOptions, optional
    providers : list, optional
        Accepted for onnxruntime compatibility; pyconv always runs on the CPU.

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

    def __init__(self, path_or_bytes, sess_options=None, providers=None, **kwargs):
        t0 = time.perf_counter()
        self._options = sess_options or SessionOptions()
        graph, proto = load(path_or_bytes)
        self._inputs_info = list(graph.inputs)
        self._outputs_info = list(graph.outputs)
        _infer_value_info(proto, graph)
        self._value_info = graph.value_info
        del proto
        shapes = {k: v.shape for k, v in graph.value_info.items()}
        level = int(self._options.graph_optimization_level)
        _passes.optimize(graph, level, shapes)
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
                    ArithmeticError, MemoryError) as exc:
                raise InvalidModel(f"{n.label}: invalid attributes or constant inputs: "
                                   f"{type(exc).__name__}: {exc}") from exc
        self._program = Program(graph, ops, plan_memory=self._options.enable_mem_pattern,
                                memory_limit=self._options.memory_limit_bytes)
        self._known = set(self._program.slots)
        # Feed signatures ((shape, dtype) per input) that passed _check_feed: a repeated
        # signature is accepted on a dict lookup.
        self._feed_signatures = set()
        self._all_output_slots = [self._program.output_slot[o.name]
                                  for o in self._outputs_info]
        self.profile = []
        self._profile_lock = threading.Lock()
        self._profile_start = time.perf_counter()
        self.creation_seconds = time.perf_counter() - t0
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

    def get_providers(self):
        return ["CPUExecutionProvider"]

    def get_session_options(self):
        return self._options

    @property
    def memory_stats(self):
        """Activation memory of the plans made so far, per input signature.

        A dict with ``arena_bytes`` (planned buffers of the largest plan),
        ``unplanned_bytes`` (other intermediate values), ``naive_bytes`` (every
        intermediate value without reuse), ``peak_activation_bytes`` (arena +
        unplanned: an upper bound of the activations alive at once) and
        ``weights_bytes`` (constants after optimisation, before packing)."""
        plans = list(self._program.plans.values())
        if not plans:
            return {"arena_bytes": 0, "unplanned_bytes": 0, "naive_bytes": 0,
                    "peak_activation_bytes": 0, "weights_bytes": self.weights_bytes,
                    "plans": 0}
        p = max(plans, key=lambda p: p.arena_bytes + p.unplanned_bytes)
        return {"arena_bytes": p.arena_bytes, "unplanned_bytes": p.unplanned_bytes,
                "naive_bytes": p.naive_bytes,
                "peak_activation_bytes": p.arena_bytes + p.unplanned_bytes,
                "weights_bytes": self.weights_bytes, "plans": len(plans)}

    # -- running ------------------------------------------------------------------------------
    def _check_feed(self, input_feed):
        if type(input_feed) is dict and len(input_feed) == len(self._inputs_info):
            try:
                feeds = [input_feed[vi.name] for vi in self._inputs_info]
            except KeyError:
                feeds = None
            if feeds is not None and all(type(v) is np.ndarray for v in feeds):
                if tuple([(v.shape, v.dtype) for v in feeds]) in self._feed_signatures:
                    return feeds
        feeds = self._check_feed_fully(input_feed)
        if len(self._feed_signatures) < 64 and all(
                type(v) is np.ndarray and v is input_feed[vi.name]
                for v, vi in zip(feeds, self._inputs_info)):
            self._feed_signatures.add(tuple([(v.shape, v.dtype) for v in feeds]))
        return feeds

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
            if not isinstance(v, np.ndarray):
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
            Outputs to return (None: all, in graph order).
        input_feed : dict str -> ndarray
            One array per graph input, of the declared dtype, rank and fixed dims
            (named, negative and unknown dims take any size, as in onnxruntime).

        Returns
        -------
        list of ndarray

        Raises
        ------
        InvalidArgument
            Missing or extra input, wrong dtype, rank or fixed dim (names the input,
            what was expected and what was received), unknown output name, or an
            operator failing on the given shapes (names the node).
        """
        feeds = self._check_feed(input_feed)
        if output_names is None:
            wanted = self._all_output_slots
        else:
            all_outs = [o.name for o in self._outputs_info]
            for n in output_names:
                if n not in all_outs:
                    raise InvalidArgument(f"unknown output '{n}'; the model's outputs are "
                                          f"{all_outs}")
            wanted = [self._program.output_slot[n] for n in output_names]
        profile = [] if self._options.enable_profiling else None
        outs = self._program.run(feeds, wanted, profile)
        if profile is not None:
            self._add_profile(profile)
        result = []
        for v in outs:
            if type(v) is not np.ndarray:
                v = np.asarray(v)
            # Never hand out an initializer, a feed or a read-only view of one.
            if not v.flags.writeable or any(v is f for f in feeds):
                v = v.copy()
            result.append(v)
        return result

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
