"""Small ONNX models built in memory for the session tests (no files, no reference code)."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper


def _model(nodes, inputs, outputs, inits, opset=17):
    graph = helper.make_graph(nodes, "test", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8)


def residual_cnn(channels=16, blocks=3, size=32, seed=0, pool="MaxPool"):
    """x (N, 3, size, size) -> stem conv -> `blocks` x [conv-BN-relu-conv + skip, relu]
    -> maxpool -> convT upsample -> concat with the skip -> sigmoid head, plus a pooled
    classifier output: exercises conv, BN folding, fusion, pooling, resize-free decoding."""
    rng = np.random.default_rng(seed)
    c = channels

    def w(*shape):
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)
    inits = {"stem_w": w(c, 3, 3, 3), "stem_b": w(c)}
    nodes = [helper.make_node("Conv", ["x", "stem_w", "stem_b"], ["h0"], name="stem",
                              pads=[1, 1, 1, 1])]
    h = "h0"
    for i in range(blocks):
        inits.update({f"b{i}_w1": w(c, c, 3, 3), f"b{i}_w2": w(c, c, 3, 3),
                      f"b{i}_s": (1 + 0.1 * rng.standard_normal(c)).astype(np.float32),
                      f"b{i}_t": w(c), f"b{i}_m": w(c),
                      f"b{i}_v": (1 + rng.random(c)).astype(np.float32)})
        nodes += [
            helper.make_node("Conv", [h, f"b{i}_w1"], [f"b{i}_c1"], pads=[1, 1, 1, 1],
                             name=f"b{i}_conv1"),
            helper.make_node("BatchNormalization", [f"b{i}_c1", f"b{i}_s", f"b{i}_t",
                                                    f"b{i}_m", f"b{i}_v"], [f"b{i}_bn"],
                             name=f"b{i}_bn"),
            helper.make_node("Relu", [f"b{i}_bn"], [f"b{i}_r"], name=f"b{i}_relu1"),
            helper.make_node("Conv", [f"b{i}_r", f"b{i}_w2"], [f"b{i}_c2"],
                             pads=[2, 2, 2, 2], dilations=[2, 2], name=f"b{i}_conv2"),
            helper.make_node("Add", [f"b{i}_c2", h], [f"b{i}_sum"], name=f"b{i}_add"),
            helper.make_node("Relu", [f"b{i}_sum"], [f"b{i}_out"], name=f"b{i}_relu2")]
        h = f"b{i}_out"
    inits.update({"up_w": w(c, c, 2, 2), "head_w": w(1, 2 * c, 1, 1), "fc_w": w(5, c)})
    nodes += [
        helper.make_node(pool, [h], ["pooled"], kernel_shape=[2, 2], strides=[2, 2],
                         name="pool"),
        helper.make_node("ConvTranspose", ["pooled", "up_w"], ["up"], strides=[2, 2],
                         name="up"),
        helper.make_node("Concat", ["up", h], ["cat"], axis=1, name="concat"),
        helper.make_node("Conv", ["cat", "head_w"], ["logit_map"], name="head"),
        helper.make_node("Sigmoid", ["logit_map"], ["mask"], name="sigmoid"),
        helper.make_node("GlobalAveragePool", ["pooled"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w"], ["logits"], transB=1, name="fc"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax")]
    return _model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("probs", TensorProto.FLOAT, None)], inits)


def glue_model(seed=0):
    """The shape/glue ops exporters emit around CNNs: Shape, Gather, Concat, Reshape,
    Transpose, Slice, Pad, Resize, Split, Unsqueeze, ReduceMean, Cast, Equal, Where, Expand."""
    rng = np.random.default_rng(seed)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
    i64 = lambda *v: np.array(v, np.int64)
    inits = {"w": f32(4, 3, 3, 3), "idx0": np.array(0, np.int64), "zero": i64(0), "minus1": i64(-1),
             "starts": i64(1, 1), "ends": i64(7, 7), "axes": i64(2, 3),
             "pads": i64(0, 0, 1, 1, 0, 0, 1, 1), "scales": np.array([1, 1, 2, 2], np.float32),
             "split": i64(2, 2), "shape4": i64(1, 2, 3, 1), "one": np.array(1.0, np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Shape", ["c"], ["shp"]),
        helper.make_node("Gather", ["shp", "idx0"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "zero"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["flat_shape"], axis=0),
        helper.make_node("Slice", ["c", "starts", "ends", "axes"], ["sl"]),
        helper.make_node("Pad", ["sl", "pads"], ["pd"], mode="reflect"),
        helper.make_node("Resize", ["pd", "", "scales"], ["rs"], mode="nearest"),
        helper.make_node("Split", ["rs", "split"], ["s0", "s1"], axis=1),
        helper.make_node("Transpose", ["s1"], ["tr"], perm=[0, 1, 3, 2]),
        helper.make_node("Add", ["s0", "tr"], ["sum"]),
        helper.make_node("ReduceMean", ["sum"], ["rm"], axes=[2, 3], keepdims=1),
        helper.make_node("Expand", ["rm", "shape4"], ["ex"]),
        helper.make_node("Equal", ["ex", "one"], ["gt"]),
        helper.make_node("Where", ["gt", "ex", "one"], ["wh"]),
        helper.make_node("Reshape", ["wh", "flat_shape"], ["y"]),
        helper.make_node("Cast", ["shp"], ["shape_f"], to=TensorProto.FLOAT),
    ]
    return _model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("shape_f", TensorProto.FLOAT, None)], inits, opset=13)
