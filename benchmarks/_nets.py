"""Reference networks written with onnx.helper, for benchmarks that must run without torch.

``mobilenet_v2()`` is torchvision's MobileNetV2 (width 1.0) as its ONNX export looks once
BatchNormalization is folded into the convolutions: Conv (+bias) -> Clip(0, 6), inverted
residual blocks (1x1 expand, 3x3 depthwise, 1x1 project, Add when the shapes match),
GlobalAveragePool -> Flatten -> Gemm. Weights are seeded random, fan-in scaled.
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# torchvision.models.mobilenet_v2: (expansion t, channels c, repeats n, first stride s)
_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1)]


class _Graph:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []

    def name(self, prefix):
        return f"{prefix}{len(self.nodes)}"

    def const(self, prefix, array):
        n = self.name(prefix)
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), n))
        return n

    def conv(self, x, cin, cout, k, stride=1, groups=1, relu6=True):
        fan_in = cin // groups * k * k
        w = self.const("w", self.rng.standard_normal((cout, cin // groups, k, k))
                       * np.sqrt(2.0 / fan_in))
        b = self.const("b", self.rng.standard_normal(cout) * 0.1)
        y = self.name("conv")
        self.nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k],
                                           strides=[stride, stride], group=groups,
                                           pads=[k // 2] * 4))
        if not relu6:
            return y
        lo, hi = self.const("lo", np.array(0.0)), self.const("hi", np.array(6.0))
        r = self.name("clip")
        self.nodes.append(helper.make_node("Clip", [y, lo, hi], [r]))
        return r


def mobilenet_v2(batch=1, size=224, classes=1000, seed=0):
    """The model (onnx.ModelProto, opset 13) with input 'input' (batch, 3, size, size)."""
    g = _Graph(seed)
    x = g.conv("input", 3, 32, 3, stride=2)
    cin = 32
    for t, c, n, s in _SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = g.conv(x, cin, hidden, 1) if t != 1 else x
            y = g.conv(y, hidden, hidden, 3, stride=stride, groups=hidden)
            y = g.conv(y, hidden, c, 1, relu6=False)
            if stride == 1 and cin == c:
                out = g.name("add")
                g.nodes.append(helper.make_node("Add", [x, y], [out]))
                y = out
            x, cin = y, c
    x = g.conv(x, cin, 1280, 1)
    pooled, flat = g.name("gap"), g.name("flat")
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], [pooled]))
    g.nodes.append(helper.make_node("Flatten", [pooled], [flat], axis=1))
    w = g.const("fc_w", g.rng.standard_normal((classes, 1280)) * np.sqrt(1.0 / 1280))
    b = g.const("fc_b", np.zeros(classes))
    g.nodes.append(helper.make_node("Gemm", [flat, w, b], ["logits"], transB=1))
    graph = helper.make_graph(
        g.nodes, "mobilenet_v2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
