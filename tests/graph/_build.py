"""Small ONNX models for the graph tests (onnx.helper, IR 8)."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


def model(nodes, inputs, outputs, inits=(), opset=17):
    """inputs/outputs: (name, shape) float32 value infos; inits: name -> ndarray."""
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, F, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def bn_params(rng, c, prefix="bn"):
    return {f"{prefix}_s": rng.uniform(0.5, 1.5, c).astype(np.float32),
            f"{prefix}_b": rand(rng, c),
            f"{prefix}_m": rand(rng, c),
            f"{prefix}_v": rng.uniform(0.5, 1.5, c).astype(np.float32)}


def bn_node(x, y, prefix="bn", **kw):
    return helper.make_node("BatchNormalization",
                            [x, f"{prefix}_s", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"],
                            [y], **kw)


def ort_run(m, feeds):
    import onnxruntime as ort
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def op_types(session):
    return [n.op_type for n in session._graph.nodes]


def quantize_static_qdq(float_model, calibration, folder):
    """The bytes of onnxruntime.quantization's static QDQ model of float_model (uint8
    activations, per-channel int8 weights), calibrated on the feeds dicts given."""
    import onnx
    from onnxruntime import quantization as q
    src, dst = folder / "float.onnx", folder / "qdq.onnx"
    onnx.save(float_model, src)

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            return next(self.items, None)
    q.quantize_static(str(src), str(dst), Reader(), quant_format=q.QuantFormat.QDQ,
                      per_channel=True, activation_type=q.QuantType.QUInt8,
                      weight_type=q.QuantType.QInt8)
    return dst.read_bytes()
