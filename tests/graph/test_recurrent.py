"""RNN, GRU and LSTM against onnxruntime: every attribute and optional input the spec has
(directions, layouts, sequence lengths, initial states, biases, peepholes, clip,
input_forget, linear_before_reset, activations with their alpha/beta, absent outputs).
The conformance suite's cases run in test_onnx_backend.py; the ONNX reference evaluator
is the second oracle where it implements the case (layout 0, no sequence_lens)."""
import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import pyconv
from pyconv.errors import InvalidArgument, InvalidModel

pytest.importorskip("onnxruntime", reason="onnxruntime is the reference for recurrent layers")

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
STATES = {"RNN": 1, "GRU": 1, "LSTM": 2}


def _model(op, steps, batch, size, hidden, rng, *, direction="forward",
           lens=None, bias=True, initial=True, peepholes=False, outputs=(0, 1, 2),
           **attrs):
    nd = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    x_shape = (steps, batch, size)
    state_shape = (nd, batch, hidden)
    inits = {"W": rng.standard_normal((nd, g * hidden, size)).astype(np.float32) * 0.5,
             "R": rng.standard_normal((nd, g * hidden, hidden)).astype(np.float32) * 0.5}
    names = ["X", "W", "R"]
    optional = [("B", bias, lambda: rng.standard_normal((nd, 2 * g * hidden)) * 0.3),
                ("sequence_lens", lens is not None, lambda: np.asarray(lens, np.int32)),
                ("initial_h", initial, lambda: rng.standard_normal(state_shape))]
    if op == "LSTM":
        optional += [("initial_c", initial, lambda: rng.standard_normal(state_shape)),
                     ("P", peepholes, lambda: rng.standard_normal((nd, 3 * hidden)) * 0.3)]
    for name, present, make in optional:
        if present:
            value = make()
            inits[name] = value if value.dtype == np.int32 else value.astype(np.float32)
        names.append(name if present else "")
    while names[-1] == "":
        names.pop()
    out_names = ["Y", "Y_h", "Y_c"][:STATES[op] + 1]
    node_outputs = [n if i in outputs else "" for i, n in enumerate(out_names)]
    while node_outputs[-1] == "":
        node_outputs.pop()
    node = helper.make_node(op, names, node_outputs, hidden_size=hidden,
                            direction=direction, layout=0, **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
         for n in node_outputs if n],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)],
                              ir_version=8)
    x = rng.standard_normal(x_shape).astype(np.float32)
    return model, {"X": x}


def _batchwise(model, feeds):
    """The layout-1 twin of a layout-0 model: X and the initial states batch-major (what
    onnxruntime, the oracle, does not implement), and how to map its outputs back."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    node = model.graph.node[0]
    for a in node.attribute:
        if a.name == "layout":
            a.i = 1
    for init in model.graph.initializer:
        if init.name in ("initial_h", "initial_c"):
            init.CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(init).transpose(1, 0, 2).copy(), init.name))
    x = model.graph.input[0].type.tensor_type.shape.dim
    x[0].dim_value, x[1].dim_value = x[1].dim_value, x[0].dim_value
    outputs = [n for n in node.output]
    back = [(lambda y: y.transpose(1, 2, 0, 3)) if name == "Y" else
            (lambda s: s.transpose(1, 0, 2)) for name in outputs if name]
    return model, {"X": feeds["X"].transpose(1, 0, 2).copy()}, back


def _check(model, feeds, rtol=1e-4, atol=1e-5, layout=0):
    import onnxruntime as ort
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)
    if layout:
        model, feeds, back = _batchwise(model, feeds)
        got = [f(y) for f, y in zip(back, pyconv.InferenceSession(
            model.SerializeToString()).run(None, feeds))]
    else:
        got = pyconv.InferenceSession(model.SerializeToString()).run(None, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return got


@pytest.mark.parametrize("op", sorted(GATES))
@pytest.mark.parametrize("direction,layout", itertools.product(
    ["forward", "reverse", "bidirectional"], [0, 1]))
@pytest.mark.parametrize("lens", [None, [5, 0, 3]])
def test_directions_layouts_lengths(op, direction, layout, lens):
    rng = np.random.default_rng(hash((op, direction, layout, lens is None)) % 2**32)
    _check(*_model(op, 5, 3, 4, 6, rng, direction=direction, lens=lens), layout=layout)


@pytest.mark.parametrize("op", sorted(GATES))
def test_no_bias_no_initial_state_and_the_reference_evaluator(op):
    rng = np.random.default_rng(1)
    model, feeds = _model(op, 7, 2, 5, 3, rng, bias=False, initial=False,
                          direction="bidirectional")
    got = _check(model, feeds)
    ref = ReferenceEvaluator(model).run(None, feeds)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("outputs", [(1,), (0,), (1, 2), (2,)])
def test_absent_outputs(outputs):
    rng = np.random.default_rng(2)
    _check(*_model("LSTM", 4, 2, 3, 5, rng, outputs=outputs))


def test_lstm_peepholes_clip_input_forget():
    rng = np.random.default_rng(3)
    for peep, clip, forget in itertools.product([False, True], [None, 0.7], [0, 1]):
        attrs = {"input_forget": forget}
        if clip is not None:
            attrs["clip"] = clip
        _check(*_model("LSTM", 6, 3, 4, 5, rng, peepholes=peep,
                       direction="bidirectional", lens=[6, 2, 4], **attrs))


@pytest.mark.parametrize("linear_before_reset", [0, 1])
@pytest.mark.parametrize("clip", [None, 0.5])
def test_gru_reset_placement_and_clip(linear_before_reset, clip):
    rng = np.random.default_rng(4)
    attrs = {"linear_before_reset": linear_before_reset}
    if clip is not None:
        attrs["clip"] = clip
    _check(*_model("GRU", 5, 2, 3, 4, rng, **attrs))


@pytest.mark.parametrize("op,activations,alpha,beta", [
    ("RNN", ["Relu"], None, None),
    ("RNN", ["LeakyRelu", "Elu"], [0.2, 0.7], None),
    ("GRU", ["HardSigmoid", "Softsign"], [0.3], [0.4]),
    ("GRU", ["Sigmoid", "ScaledTanh"], [1.5], [0.5]),
    ("LSTM", ["HardSigmoid", "Affine", "ThresholdedRelu"], [0.25, 0.5, 0.1], [0.4, 0.2]),
    ("LSTM", ["Sigmoid", "Softplus", "Tanh"], None, None),
])
def test_activations_with_parameters(op, activations, alpha, beta):
    rng = np.random.default_rng(5)
    direction = "bidirectional" if op == "RNN" and len(activations) == 2 else "forward"
    attrs = {"activations": activations}
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    _check(*_model(op, 4, 2, 3, 4, rng, direction=direction, **attrs))


def test_bad_models_and_inputs_name_the_node():
    rng = np.random.default_rng(6)
    model, feeds = _model("LSTM", 4, 2, 3, 5, rng, direction="sideways")
    with pytest.raises(InvalidModel, match="direction 'sideways'"):
        pyconv.InferenceSession(model.SerializeToString())
    model, feeds = _model("GRU", 4, 2, 3, 5, rng, activations=["Sigmoid", "Cosh"])
    with pytest.raises(InvalidModel, match="activation 'Cosh'"):
        pyconv.InferenceSession(model.SerializeToString())
    model, feeds = _model("RNN", 4, 2, 3, 5, rng, lens=[4, 9])
    with pytest.raises(InvalidArgument, match=r"sequence_lens \[4, 9\].*\[0, 4\]"):
        pyconv.InferenceSession(model.SerializeToString()).run(None, feeds)
    model, _ = _model("RNN", 4, 2, 3, 5, rng)
    for dim in model.graph.input[0].type.tensor_type.shape.dim:
        dim.dim_param = "free"
    sess = pyconv.InferenceSession(model.SerializeToString())
    with pytest.raises(InvalidArgument, match=r"RNN node .*input W has shape"):
        sess.run(None, {"X": np.zeros((4, 2, 7), np.float32)})


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_dynamic_quantize_lstm_from_onnxruntime_quantizer(per_channel, direction, tmp_path):
    """quantize_dynamic turns LSTM into com.microsoft DynamicQuantizeLSTM; onnxruntime
    also quantizes X and H at run time, pyconv runs the dequantized weights in float32."""
    from onnxruntime import quantization as q
    import onnxruntime as ort
    rng = np.random.default_rng(7)
    model, feeds = _model("LSTM", 12, 2, 16, 24, rng, direction=direction)
    src, dst = tmp_path / "lstm.onnx", tmp_path / "lstm_q.onnx"
    onnx.save(model, src)
    q.quantize_dynamic(str(src), str(dst), op_types_to_quantize=["LSTM"],
                       per_channel=per_channel)
    quantized = onnx.load(dst)
    assert "DynamicQuantizeLSTM" in {n.op_type for n in quantized.graph.node}
    session = pyconv.InferenceSession(str(dst))
    # the second run takes the weights dequantized by the first
    for run_feeds in (feeds, {k: np.ascontiguousarray(v[::-1]) for k, v in feeds.items()}):
        got = session.run(None, run_feeds)
        want = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(
            None, run_feeds)
        exact = pyconv.InferenceSession(model.SerializeToString()).run(None, run_feeds)
        for g, w, e in zip(got, want, exact):
            assert g.shape == w.shape
            # Both runs are within the quantization's error of the float layer, and of
            # each other; the gates saturate in [-1, 1].
            err = np.abs(w - e).max()
            assert np.abs(g - w).max() <= max(2 * err, 0.02), (np.abs(g - w).max(), err)
