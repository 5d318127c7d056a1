"""pyconv as a drop-in for onnxruntime: one script, run against both modules call by call.

``script(rt, ...)`` uses only onnxruntime's public API through the module ``rt``; each
step is a label and a call. The test runs it once with ``rt = onnxruntime`` and once
with ``rt = pyconv`` and compares, step by step, the returned values (arrays to float32
tolerance) or the kind of exception raised. Kinds: onnxruntime's own pybind exceptions
(``InvalidArgument``, ``Fail``) or the built-in class; a pyconv error matches when that
name is among its classes (pyconv's InvalidArgument is also a ValueError, RunFailed a
RuntimeError and onnxruntime's ``Fail``).
"""
import os
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyconv
from pyconv.errors import RunFailed

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the reference of this test")


def _model(initializer_as_input=False):
    """x (N, 3, 8, 8) -> Conv 3x3 (4) -> BatchNormalization -> Relu = y;
    GlobalAveragePool(y) -> Flatten -> Gemm (2) = logits. With metadata."""
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
             "b": rng.standard_normal(4).astype(np.float32),
             "scale": rng.uniform(0.5, 1.5, 4).astype(np.float32),
             "shift": rng.standard_normal(4).astype(np.float32),
             "mean": rng.standard_normal(4).astype(np.float32),
             "var": rng.uniform(0.5, 1.5, 4).astype(np.float32),
             "fc": rng.standard_normal((2, 4)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1] * 4),
             helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"],
                              ["n"], name="bn"),
             helper.make_node("Relu", ["n"], ["y"], name="relu"),
             helper.make_node("GlobalAveragePool", ["y"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc"], ["logits"], name="fc", transB=1)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])]
    if initializer_as_input:
        inputs.append(helper.make_tensor_value_info("fc", TensorProto.FLOAT, [2, 4]))
    graph = helper.make_graph(
        nodes, "compat_graph", inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()], doc_string="a graph")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              ir_version=8, producer_name="compat-test", domain="org.test",
                              model_version=3, doc_string="a model for the comparison")
    helper.set_model_props(model, {"author": "tests", "licence": "MIT"})
    return model.SerializeToString()


MODEL = _model()


def _feed(n=2, seed=1):
    return {"x": np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)}


def _node_args(args):
    return [(a.name, list(a.shape), a.type) for a in args]


def _arrays(values):
    return [np.asarray(v) for v in values]


def _warned(call):
    """(result of call, [(category, message)]) with every warning recorded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [(w.category.__name__, str(w.message)) for w in caught]


def script(rt, tmp):
    """The steps: (label, call). Values are made comparable inside the calls."""
    steps = []

    def step(label):
        def deco(fn):
            steps.append((label, fn))
            return fn
        return deco

    step("get_device")(lambda: rt.get_device())
    step("CPU provider available")(lambda: "CPUExecutionProvider" in rt.get_available_providers())
    step("CPU provider in all")(lambda: "CPUExecutionProvider" in rt.get_all_providers())

    # -- SessionOptions: defaults, checked assignment, config entries
    def options(**values):
        o = rt.SessionOptions()
        for k, v in values.items():
            setattr(o, k, v)
        return o

    for name in ("intra_op_num_threads", "inter_op_num_threads", "execution_mode",
                 "graph_optimization_level", "enable_profiling", "enable_mem_pattern",
                 "enable_cpu_mem_arena", "enable_mem_reuse", "use_deterministic_compute",
                 "log_severity_level", "log_verbosity_level", "optimized_model_filepath",
                 "logid"):
        step(f"SessionOptions().{name} default")(
            lambda name=name: _plain(getattr(rt.SessionOptions(), name)))
    bad_assignments = [("intra_op_num_thread", 1), ("intra_op_num_threads", "two"),
                       ("intra_op_num_threads", 2.0), ("graph_optimization_level", 5),
                       ("graph_optimization_level", "all"), ("execution_mode", "parallel"),
                       ("log_severity_level", "x"), ("enable_profiling", "yes"),
                       ("optimized_model_filepath", 3), ("profile_file_prefix", None)]
    for name, value in bad_assignments:
        step(f"SessionOptions.{name} = {value!r}")(lambda n=name, v=value: options(**{n: v}))
    step("SessionOptions valid assignments")(lambda: [_plain(getattr(options(
        intra_op_num_threads=2, inter_op_num_threads=1, enable_profiling=True,
        execution_mode=rt.ExecutionMode.ORT_PARALLEL,
        graph_optimization_level=rt.GraphOptimizationLevel.ORT_ENABLE_BASIC), k)) for k in (
        "intra_op_num_threads", "inter_op_num_threads", "enable_profiling", "execution_mode",
        "graph_optimization_level")])
    step("GraphOptimizationLevel values")(lambda: [int(getattr(rt.GraphOptimizationLevel, n))
                                                   for n in ("ORT_DISABLE_ALL",
                                                             "ORT_ENABLE_BASIC",
                                                             "ORT_ENABLE_EXTENDED",
                                                             "ORT_ENABLE_ALL")])
    step("ExecutionMode values")(lambda: [int(rt.ExecutionMode.ORT_SEQUENTIAL),
                                          int(rt.ExecutionMode.ORT_PARALLEL)])

    def config_roundtrip():
        o = rt.SessionOptions()
        o.add_session_config_entry("session.set_denormal_as_zero", "1")
        return o.get_session_config_entry("session.set_denormal_as_zero")
    step("session config entry")(config_roundtrip)
    step("session config entry missing")(
        lambda: rt.SessionOptions().get_session_config_entry("no.such.key"))
    step("session config entry not str")(
        lambda: rt.SessionOptions().add_session_config_entry("key", 1))

    # -- RunOptions
    for name in ("log_severity_level", "log_verbosity_level", "logid", "terminate",
                 "only_execute_path_to_fetches"):
        step(f"RunOptions().{name} default")(lambda n=name: getattr(rt.RunOptions(), n))
    for name, value in [("terminat", True), ("log_severity_level", "x"), ("logid", 5)]:
        def assign(n=name, v=value):
            r = rt.RunOptions()
            setattr(r, n, v)
        step(f"RunOptions.{name} = {value!r}")(assign)

    def run_config():
        r = rt.RunOptions()
        r.add_run_config_entry("run.key", "value")
        return r.get_run_config_entry("run.key")
    step("run config entry")(run_config)
    step("run config entry missing")(lambda: rt.RunOptions().get_run_config_entry("nope"))

    # -- a session: metadata, providers
    sess = rt.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    step("get_inputs")(lambda: _node_args(sess.get_inputs()))
    step("get_outputs")(lambda: _node_args(sess.get_outputs()))
    step("get_providers")(lambda: sess.get_providers())
    step("get_provider_options")(lambda: sess.get_provider_options())
    step("get_modelmeta")(lambda: {k: getattr(sess.get_modelmeta(), k) for k in (
        "producer_name", "graph_name", "domain", "description", "graph_description",
        "version", "custom_metadata_map")})
    step("get_overridable_initializers (none)")(
        lambda: _node_args(sess.get_overridable_initializers()))
    step("get_overridable_initializers")(lambda: _node_args(rt.InferenceSession(
        _model(initializer_as_input=True),
        providers=["CPUExecutionProvider"]).get_overridable_initializers()))

    def provider_warning(providers):
        def call():
            s, caught = _warned(lambda: rt.InferenceSession(MODEL, providers=providers))
            # onnxruntime's message lists its own available providers: compare the start.
            return s.get_providers(), [(c, m.split(".Available")[0]) for c, m in caught]
        return call
    step("unknown provider warns, falls back to CPU")(
        provider_warning(["CUDAExecutionProvider"]))
    step("unknown then CPU provider")(
        provider_warning(["NoSuchExecutionProvider", "CPUExecutionProvider"]))
    step("provider with options")(
        lambda: rt.InferenceSession(MODEL, providers=[("CPUExecutionProvider", {})])
        .get_providers())

    # -- run
    feed = _feed()
    step("run(None)")(lambda: _arrays(sess.run(None, feed)))
    step("run([])")(lambda: _arrays(sess.run([], feed)))
    step("run(['logits'])")(lambda: _arrays(sess.run(["logits"], feed)))
    step("run(['logits', 'y'])")(lambda: _arrays(sess.run(["logits", "y"], feed)))
    step("run('logits')")(lambda: sess.run("logits", feed))
    step("run unknown output")(lambda: sess.run(["nope"], feed))
    step("run batch 0")(lambda: [v.shape for v in sess.run(None, _feed(0))])
    step("run wrong input name")(lambda: sess.run(None, {"image": feed["x"]}))
    step("run missing input")(lambda: sess.run(None, {}))
    step("run wrong dtype")(lambda: sess.run(None, {"x": feed["x"].astype(np.float64)}))
    step("run wrong rank")(lambda: sess.run(None, {"x": feed["x"][0]}))
    step("run wrong fixed dim")(lambda: sess.run(None, {"x": np.zeros((2, 4, 8, 8),
                                                                      np.float32)}))
    step("run with RunOptions")(lambda: _arrays(sess.run(None, feed, rt.RunOptions())))

    def terminated():
        r = rt.RunOptions()
        r.terminate = True
        return sess.run(None, feed, r)
    step("run with terminate set")(terminated)
    step("run with run_options of another type")(lambda: sess.run(None, feed, "fast"))

    def parallel_mode():
        o = options(execution_mode=rt.ExecutionMode.ORT_PARALLEL, inter_op_num_threads=2)
        return _arrays(rt.InferenceSession(MODEL, o, providers=["CPUExecutionProvider"])
                       .run(None, feed))
    step("ORT_PARALLEL session")(parallel_mode)

    # -- OrtValue
    value = rt.OrtValue.ortvalue_from_numpy(feed["x"])
    step("OrtValue.shape")(lambda: value.shape())
    step("OrtValue.data_type")(lambda: value.data_type())
    step("OrtValue.element_type")(lambda: value.element_type())
    step("OrtValue.device_name")(lambda: value.device_name())
    step("OrtValue.numpy")(lambda: value.numpy())
    step("OrtValue shares the array's memory")(
        lambda: bool(np.shares_memory(value.numpy(), feed["x"])))
    step("OrtValue int64 data_type")(
        lambda: rt.OrtValue.ortvalue_from_numpy(np.zeros(3, np.int64)).data_type())
    step("OrtValue from a list")(lambda: rt.OrtValue.ortvalue_from_numpy([1.0, 2.0]))
    step("OrtValue on cuda")(lambda: rt.OrtValue.ortvalue_from_numpy(feed["x"], "cuda", 0))
    step("OrtValue from shape and type")(lambda: (lambda v: (v.shape(), v.data_type()))(
        rt.OrtValue.ortvalue_from_shape_and_type([2, 3], np.float32)))
    step("run with an OrtValue feed")(lambda: _arrays(sess.run(None, {"x": value})))
    step("run_with_ort_values")(lambda: [v.numpy() for v in sess.run_with_ort_values(
        ["logits"], {"x": value})])

    # -- IOBinding
    def bound(bind):
        b = sess.io_binding()
        bind(b)
        sess.run_with_iobinding(b)
        return b

    step("iobinding cpu input, allocated outputs")(lambda: (lambda b: (
        b.copy_outputs_to_cpu(), [v.numpy() for v in b.get_outputs()]))(bound(
            lambda b: (b.bind_cpu_input("x", feed["x"]), b.bind_output("logits"),
                       b.bind_output("y", "cpu")))))

    def preallocated():
        out = rt.OrtValue.ortvalue_from_numpy(np.zeros((2, 2), np.float32))
        b = bound(lambda b: (b.bind_ortvalue_input("x", value),
                             b.bind_ortvalue_output("logits", out)))
        return out.numpy(), b.copy_outputs_to_cpu()
    step("iobinding OrtValue input and preallocated output")(preallocated)

    def pointers():
        x = np.ascontiguousarray(feed["x"])
        y = np.zeros((2, 2), np.float32)
        bound(lambda b: (b.bind_input("x", "cpu", 0, np.float32, list(x.shape), x.ctypes.data),
                         b.bind_output("logits", "cpu", 0, np.float32, [2, 2], y.ctypes.data)))
        return y
    step("iobinding raw buffers")(pointers)
    step("iobinding unknown input")(lambda: sess.io_binding().bind_cpu_input("nope", feed["x"]))
    step("iobinding no output bound")(lambda: bound(lambda b: b.bind_cpu_input("x", feed["x"])))
    step("iobinding wrong dtype")(lambda: bound(lambda b: (
        b.bind_cpu_input("x", feed["x"].astype(np.float64)), b.bind_output("logits"))))
    step("iobinding of another session")(lambda: rt.InferenceSession(
        MODEL, providers=["CPUExecutionProvider"]).run_with_iobinding(sess.io_binding()))

    # -- optimized_model_filepath: a basic-level file holds only standard ops
    def optimized_file():
        path = os.path.join(tmp, f"{rt.__name__}_basic.onnx")
        o = options(optimized_model_filepath=path,
                    graph_optimization_level=rt.GraphOptimizationLevel.ORT_ENABLE_BASIC)
        rt.InferenceSession(MODEL, o, providers=["CPUExecutionProvider"])
        # read back by the other engine's reference: onnxruntime runs it
        return _arrays(ort.InferenceSession(path, providers=["CPUExecutionProvider"])
                       .run(None, feed))
    step("optimized_model_filepath written and runnable")(optimized_file)
    return steps


def _plain(v):
    """Enum members of either library as ints, everything else unchanged."""
    if type(v).__name__ in ("GraphOptimizationLevel", "ExecutionMode"):
        return int(v)
    return v


def _outcome(call):
    try:
        return "value", call()
    except Exception as exc:  # the kind is what is compared
        return "error", exc


def _ort_kind(exc):
    """onnxruntime's pybind exception name, else the first built-in class."""
    cls = type(exc)
    if cls.__module__.startswith("onnxruntime"):
        return cls.__name__
    return next(c.__name__ for c in cls.__mro__ if c.__module__ == "builtins")


def _pyconv_kinds(exc):
    kinds = {c.__name__ for c in type(exc).__mro__}
    if isinstance(exc, RunFailed):
        kinds.add("Fail")
    return kinds


def _same(a, b, label):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, (label, a.shape, b.shape)
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=label)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), (label, a, b)
        for x, y in zip(a, b):
            _same(x, y, label)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (label, a, b)
        for k in a:
            _same(a[k], b[k], f"{label}[{k}]")
    else:
        assert a == b, (label, a, b)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    results = {}
    for rt in (ort, pyconv):
        tmp = str(tmp_path_factory.mktemp(rt.__name__))
        with warnings.catch_warnings():
            # onnxruntime's native log lines (stderr) are its own; Python warnings asserted
            # in the steps that expect them.
            warnings.simplefilter("ignore")
            results[rt.__name__] = [(label, _outcome(call)) for label, call in script(rt, tmp)]
    return results


def _labels():
    return [label for label, _ in script(pyconv, "/nonexistent")]


@pytest.mark.parametrize("label", _labels())
def test_same_behaviour_as_onnxruntime(outcomes, label):
    want = dict(outcomes["onnxruntime"])[label]
    got = dict(outcomes["pyconv"])[label]
    if want[0] == "error":
        assert got[0] == "error", f"{label}: onnxruntime raised {_ort_kind(want[1])} " \
                                  f"({want[1]}), pyconv returned {got[1]!r}"
        assert _ort_kind(want[1]) in _pyconv_kinds(got[1]), \
            f"{label}: onnxruntime raised {_ort_kind(want[1])} ({want[1]}), pyconv " \
            f"{type(got[1]).__name__} ({got[1]})"
    else:
        assert got[0] == "value", f"{label}: onnxruntime returned, pyconv raised " \
                                  f"{type(got[1]).__name__}: {got[1]}"
        _same(want[1], got[1], label)


# -- pyconv's side only: what the comparison cannot show ------------------------------------

def test_errors_say_what_was_wrong():
    with pytest.raises(AttributeError, match="intra_op_num_thread'.*intra_op_num_threads"):
        pyconv.SessionOptions().intra_op_num_thread = 1
    with pytest.raises(TypeError, match="graph_optimization_level.*ORT_ENABLE_ALL = 99.*5"):
        pyconv.SessionOptions().graph_optimization_level = 5
    sess = pyconv.InferenceSession(_model(initializer_as_input=True))
    with pytest.raises(pyconv.errors.InvalidArgument, match=r"\['fc'\] are initializers"):
        sess.run(None, dict(_feed(), fc=np.zeros((2, 4), np.float32)))


def test_options_copy_and_pickle():
    import copy
    import pickle

    o = pyconv.SessionOptions()
    o.intra_op_num_threads = 2
    o.add_session_config_entry("k", "v")
    for c in (copy.copy(o), copy.deepcopy(o), pickle.loads(pickle.dumps(o))):
        assert c.intra_op_num_threads == 2 and c.get_session_config_entry("k") == "v"
        with pytest.raises(AttributeError):
            c.intra_op_num_thread = 1
    c.intra_op_num_threads = 3
    assert o.intra_op_num_threads == 2


class _TerminateAfter(pyconv.RunOptions):
    """RunOptions whose ``terminate`` turns true at its n-th read: what another thread
    setting it in the middle of a run looks like to the executor."""

    def __init__(self, reads):
        super().__init__()
        object.__setattr__(self, "_reads", [reads])

    @property
    def terminate(self):
        self._reads[0] -= 1
        return self._reads[0] < 0


@pytest.mark.parametrize("planned", [False, True], ids=["first run", "planned run"])
def test_terminate_stops_a_run_between_nodes(planned):
    sess = pyconv.InferenceSession(MODEL, _no_fusion())
    feed = _feed()
    want = sess.run(None, feed)
    if not planned:
        sess = pyconv.InferenceSession(MODEL, _no_fusion())
    options = _TerminateAfter(3)     # false at the start of run(), before conv and bn
    with pytest.raises(RunFailed, match="terminate flag.*before Relu node 'relu'"):
        sess.run(None, feed, options)
    assert options._reads[0] == -1                # stopped at once
    for got, w in zip(sess.run(None, feed), want):   # the session is still usable
        np.testing.assert_array_equal(got, w)


def _no_fusion():
    o = pyconv.SessionOptions()
    o.graph_optimization_level = pyconv.GraphOptimizationLevel.ORT_DISABLE_ALL
    return o


def test_plain_int_levels_are_accepted():
    # A pyconv convenience (onnxruntime takes only members): the valid values as ints.
    o = pyconv.SessionOptions()
    o.graph_optimization_level = 1
    assert o.graph_optimization_level is pyconv.GraphOptimizationLevel.ORT_ENABLE_BASIC


def test_optimized_model_declares_the_pyconv_domain_and_reloads(tmp_path):
    import onnx

    path = tmp_path / "all.onnx"
    o = pyconv.SessionOptions()
    o.optimized_model_filepath = str(path)
    want = pyconv.InferenceSession(MODEL, o).run(None, _feed())
    saved = onnx.load(str(path))
    ops = {(n.domain, n.op_type) for n in saved.graph.node}
    assert ("pyconv", "FusedConv") in ops and ("", "BatchNormalization") not in ops, ops
    assert {(i.domain, i.version) for i in saved.opset_import} == {("", 13), ("pyconv", 1)}
    got = pyconv.InferenceSession(str(path)).run(None, _feed())
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    # the basic level keeps only standard ops, so no pyconv import
    o.graph_optimization_level = pyconv.GraphOptimizationLevel.ORT_ENABLE_BASIC
    pyconv.InferenceSession(MODEL, o)
    assert [i.domain for i in onnx.load(str(path)).opset_import] == [""]


def test_optimized_model_path_that_cannot_be_written(tmp_path):
    o = pyconv.SessionOptions()
    o.optimized_model_filepath = str(tmp_path / "model.ort")
    with pytest.raises(pyconv.errors.InvalidArgument, match="ONNX models only"):
        pyconv.InferenceSession(MODEL, o)
    o.optimized_model_filepath = str(tmp_path / "no" / "such" / "dir.onnx")
    with pytest.raises(pyconv.errors.InvalidArgument, match="cannot write"):
        pyconv.InferenceSession(MODEL, o)


def test_options_of_the_other_library_are_refused():
    with pytest.raises(TypeError, match="pyconv.SessionOptions"):
        pyconv.InferenceSession(MODEL, ort.SessionOptions())
    sess = pyconv.InferenceSession(MODEL)
    with pytest.raises(TypeError, match="pyconv.RunOptions"):
        sess.run(None, _feed(), ort.RunOptions())
