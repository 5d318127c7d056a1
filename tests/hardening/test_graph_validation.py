"""Model-level validation: operator-set imports, node arity against the onnx schemas,
external data read from regular files only, and failures inside nodes and graph passes
reported as pyconv errors naming the node, its operator and the problem."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import pyconv
from pyconv.errors import InvalidArgument, InvalidModel

F = TensorProto.FLOAT


def _model(nodes, inputs=None, outputs=None, inits=None, opsets=(("", 17),), ir_version=8):
    inputs = inputs if inputs is not None else [helper.make_tensor_value_info("x", F, [2, 3])]
    outputs = outputs if outputs is not None else [helper.make_tensor_value_info("y", F, None)]
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v)
                                                    for d, v in opsets],
                              ir_version=ir_version)
    return model


RELU = [helper.make_node("Relu", ["x"], ["y"])]


# -- operator-set imports ----------------------------------------------------------------------

@pytest.mark.parametrize("version", [0, -1, 999, 2**62, -(2**63)])
def test_opset_versions_onnx_does_not_define_are_refused(version):
    model = _model(RELU, opsets=[("", version)])
    with pytest.raises(InvalidModel, match=f"version {version} does not exist: the installed "
                                           f"onnx defines versions 1 to"):
        pyconv.InferenceSession(model.SerializeToString())


def test_a_model_without_a_default_opset_import_is_refused():
    for opsets in ([], [("com.microsoft", 1)]):
        model = _model(RELU, opsets=opsets)
        with pytest.raises(InvalidModel, match="imports no version of the default ONNX domain"):
            pyconv.InferenceSession(model.SerializeToString())


def test_duplicate_and_bad_custom_domain_imports_are_refused():
    with pytest.raises(InvalidModel, match="imports operator set .* twice"):
        pyconv.InferenceSession(_model(RELU, opsets=[("", 17), ("ai.onnx", 13)])
                                .SerializeToString())
    with pytest.raises(InvalidModel, match="com.example version 0 does not exist: a custom "
                                           "domain takes versions 1 to"):
        pyconv.InferenceSession(_model(RELU, opsets=[("", 17), ("com.example", 0)])
                                .SerializeToString())


def test_every_defined_default_opset_loads():
    import onnx.defs
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    for version in (1, 6, 13, onnx.defs.onnx_opset_version()):
        sess = pyconv.InferenceSession(_model(RELU, opsets=[("", version)]).SerializeToString())
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], np.maximum(x, 0))


# -- node arity against the onnx schema ------------------------------------------------------

@pytest.mark.parametrize("node, pattern", [
    (helper.make_node("Identity", [], ["y"], name="idn"),
     r"Identity node 'idn' has 0 inputs \[\]; Identity-16 \(opset 17\) takes 1"),
    (helper.make_node("Dropout", [], ["y"], name="drop"),
     r"Dropout node 'drop' has 0 inputs \[\]; Dropout-13 \(opset 17\) takes 1 to 3"),
    (helper.make_node("Relu", ["x", "x"], ["y"], name="r"),
     r"Relu node 'r' has 2 inputs \['x', 'x'\]; Relu-14 \(opset 17\) takes 1"),
    (helper.make_node("Relu", ["x"], ["y", "z"], name="r"),
     r"Relu node 'r' has 2 outputs"),
    (helper.make_node("Identity", [""], ["y"], name="idn"),
     r"Identity node 'idn': required input 0 \('input' of Identity-16\) is missing"),
    (helper.make_node("Add", ["x", ""], ["y"], name="add"),
     r"Add node 'add': required input 1 \('B' of Add-14\) is missing"),
    (helper.make_node("Concat", [], ["y"], axis=0, name="cat"),
     r"Concat node 'cat' has 0 inputs \[\]; Concat-13 \(opset 17\) takes at least 1"),
])
def test_nodes_with_the_wrong_number_of_inputs_or_outputs_are_refused(node, pattern):
    with pytest.raises(InvalidModel, match=pattern):
        pyconv.InferenceSession(_model([node]).SerializeToString())


def test_optional_inputs_may_be_empty_or_omitted():
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    for inputs in (["x"], ["x", ""], ["x", "", ""]):
        sess = pyconv.InferenceSession(_model([helper.make_node("Clip", inputs, ["y"])])
                                       .SerializeToString())
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x)


@pytest.mark.parametrize("key, value", [("keepdims", 7), ("keepdims", -1),
                                        ("keepdims", 2**40), ("select_last_index", 2)])
def test_flag_attributes_other_than_0_or_1_are_refused(key, value):
    """onnxruntime read keepdims=7 as 0 where pyconv read it as 1 (the attribute fuzzer's
    finding): a flag is 0 or 1, anything else is InvalidModel."""
    op = "ReduceMean" if key == "keepdims" else "ArgMax"
    node = helper.make_node(op, ["x"], ["y"], name="n", **{key: value})
    out = helper.make_tensor_value_info("y", TensorProto.INT64 if op == "ArgMax" else F, None)
    with pytest.raises(InvalidModel, match=f"{op} node 'n': attribute '{key}' is a flag, 0 or "
                                           f"1; got {value}"):
        pyconv.InferenceSession(_model([node], outputs=[out]).SerializeToString())
    for flag in (0, 1):     # the two meanings load and run
        node = helper.make_node(op, ["x"], ["y"], **{key: flag})
        pyconv.InferenceSession(_model([node], outputs=[out]).SerializeToString()).run(
            None, {"x": np.ones((2, 3), np.float32)})


# -- failures inside a node or a pass ----------------------------------------------------------

def test_a_node_failing_on_its_inputs_names_the_node_the_operator_and_the_problem():
    model = _model([helper.make_node("LRN", ["x"], ["y"], size=3, name="lrn")],
                   inputs=[helper.make_tensor_value_info("x", F, [5])])
    sess = pyconv.InferenceSession(model.SerializeToString())
    with pytest.raises(pyconv.errors.ShapeError) as info:
        sess.run(None, {"x": np.ones(5, np.float32)})
    assert "LRN node 'lrn'" in str(info.value) and "rank 2 or more" in str(info.value)


def test_unexpected_python_errors_in_an_operator_are_reported_in_words(monkeypatch):
    """The executor's one wrapper: any non-pyconv exception an operator raises becomes an
    InvalidArgument naming the node, the operator and what went wrong."""
    sess = pyconv.InferenceSession(_model([helper.make_node("Relu", ["x"], ["y"], name="r")])
                                   .SerializeToString())
    op = sess._program.steps[0].op

    def broken(inputs, out=None):
        return [inputs[0].shape[7]]
    monkeypatch.setattr(op, "run", broken)
    monkeypatch.setattr(op, "bind", lambda specs, out: None)
    for _ in range(2):      # the recording run and a planned one
        with pytest.raises(InvalidArgument) as info:
            sess.run(None, {"x": np.ones((2, 3), np.float32)})
        msg = str(info.value)
        assert msg.startswith("Relu node 'r' cannot run on its inputs (x: (2, 3) float32): "
                              "the Relu operator met an axis or index its inputs do not have")
        assert "(Python's IndexError: tuple index out of range)" in msg


def test_a_pass_failing_on_a_malformed_node_names_the_pass_and_the_node():
    """BatchNormalization after a Conv whose parameters have inconsistent lengths: the
    fold meets them first and must say where."""
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((4, 3, 1, 1)).astype(np.float32),
             "s": np.ones(4, np.float32), "b": np.zeros(3, np.float32),
             "m": np.zeros(4, np.float32), "v": np.ones(4, np.float32)}
    model = _model([helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
                    helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"],
                                     name="bn")],
                   inputs=[helper.make_tensor_value_info("x", F, [1, 3, 4, 4])], inits=inits)
    with pytest.raises(InvalidModel) as info:
        pyconv.InferenceSession(model.SerializeToString())
    msg = str(info.value)
    assert "pass 'fold_batchnorm'" in msg and "BatchNormalization node 'bn'" in msg, msg


# -- external data from regular files only ----------------------------------------------------

def _external_model(tmp_path, location):
    model = _model([helper.make_node("Add", ["x", "w"], ["y"])],
                   inits={"w": np.ones((2, 3), np.float32)})
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    entry = w.external_data.add()
    entry.key, entry.value = "location", location
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo (POSIX)")
def test_external_data_in_a_fifo_is_refused_without_blocking(tmp_path):
    """A FIFO nobody writes to would block open() and read() forever; the session is made
    in a child process with a timeout so that a regression fails instead of hanging."""
    os.mkfifo(tmp_path / "weights.bin")
    path = _external_model(tmp_path, "weights.bin")
    code = textwrap.dedent(f"""
        import pyconv
        try:
            pyconv.InferenceSession({str(path)!r})
        except pyconv.errors.InvalidModel as exc:
            print("refused:", exc)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert "refused:" in r.stdout and "is not a regular file" in r.stdout, r.stdout


def test_external_data_that_is_a_directory_is_refused(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(InvalidModel, match="is not a regular file"):
        pyconv.InferenceSession(str(_external_model(tmp_path, "weights")))


def test_external_data_from_a_regular_file_still_loads(tmp_path):
    (tmp_path / "weights.bin").write_bytes(np.full((2, 3), 2, np.float32).tobytes())
    sess = pyconv.InferenceSession(str(_external_model(tmp_path, "weights.bin")))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x + 2)


def test_external_data_in_a_model_given_as_bytes_or_a_proto_is_refused(tmp_path):
    """Without a file there is no directory to confine the read to: refused, even when the
    file it names exists next to the process's working directory."""
    import onnx
    (tmp_path / "weights.bin").write_bytes(np.full((2, 3), 2, np.float32).tobytes())
    path = _external_model(tmp_path, "weights.bin")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for model in (path.read_bytes(), onnx.load_model(str(path), load_external_data=False)):
            with pytest.raises(InvalidModel, match="external data 'weights.bin'"):
                pyconv.InferenceSession(model)
    finally:
        os.chdir(cwd)


def test_a_value_produced_twice_is_refused():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["y"])]
    with pytest.raises(InvalidModel, match="output 'y' is produced more than once"):
        pyconv.InferenceSession(_model(nodes).SerializeToString())
    with pytest.raises(InvalidModel, match="output 'x' is produced more than once"):
        pyconv.InferenceSession(_model([helper.make_node("Relu", ["x"], ["x"])] + RELU)
                                .SerializeToString())


def test_loading_and_running_write_no_file(tmp_path):
    """Nothing appears next to the model or in the working directory (pyconv writes files
    only when asked: a profile, an optimised model)."""
    (tmp_path / "weights.bin").write_bytes(np.full((2, 3), 2, np.float32).tobytes())
    path = _external_model(tmp_path, "weights.bin")
    before = sorted(os.listdir(tmp_path))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        sess = pyconv.InferenceSession(str(path))
        for _ in range(2):
            sess.run(None, {"x": np.ones((2, 3), np.float32)})
    finally:
        os.chdir(cwd)
    assert sorted(os.listdir(tmp_path)) == before


# -- thread counts (validated before the pool, issue 13; checked again here) ---------------

def test_absurd_thread_counts_are_invalid_arguments():
    opts = pyconv.SessionOptions()
    opts.intra_op_num_threads = 1500
    with pytest.raises(InvalidArgument, match="intra_op_num_threads: expected an integer"):
        pyconv.InferenceSession(_model(RELU).SerializeToString(), opts)
    for n in (2**31, 1500, 0, -1):
        with pytest.raises(InvalidArgument, match="set_num_threads: expected an integer"):
            pyconv.set_num_threads(n)


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="Linux's RLIMIT_AS accounting")
def test_the_most_threads_under_an_address_space_limit_never_exit_the_process():
    """A session with max_threads() threads made and run after the address space is
    limited to a little above what the process maps: the pool starts the workers it can
    and the answer is exact (libgomp used to exit the process here)."""
    code = textwrap.dedent("""
        import resource, numpy as np, pyconv
        from onnx import helper, TensorProto, numpy_helper
        w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
        g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", 1, [256, 64])],
                              [helper.make_tensor_value_info("y", 1, None)],
                              [numpy_helper.from_array(w, "w")])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        x = np.ones((256, 64), np.float32)
        want = x.astype(np.float64) @ w     # before the limit: OpenBLAS needs its buffers
        mapped = [int(l.split()[1]) for l in open("/proc/self/status")
                  if l.startswith("VmSize:")][0] * 1024
        limit = mapped + (64 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        opts = pyconv.SessionOptions()
        from pyconv._ext.gemm import max_threads
        opts.intra_op_num_threads = max_threads()
        y, = pyconv.InferenceSession(model.SerializeToString(), opts).run(None, {"x": x})
        print(float(np.abs(y - want).max()) < 1e-3)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == "True", r.stdout


def test_an_operator_refusing_its_attributes_at_creation_is_reported_in_words(monkeypatch):
    """The session's one wrapper around operator construction: a Python exception from
    an operator's setup becomes InvalidModel naming the node and its operator."""
    from pyconv.ops import lookup
    relu = lookup("Relu")

    def broken(self, consts):
        raise KeyError("alpha")
    monkeypatch.setattr(relu, "setup", broken)
    with pytest.raises(InvalidModel, match=r"Relu node 'r': its attributes or constant inputs "
                                           r"do not fit the Relu operator .*KeyError"):
        pyconv.InferenceSession(_model([helper.make_node("Relu", ["x"], ["y"], name="r")])
                                .SerializeToString())
