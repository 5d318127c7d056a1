"""The nine `light` models of the installed onnx wheel and how onnx's BackendTest feeds them."""
import functools
import os

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
LIGHT_MODELS = sorted(f[:-5] for f in os.listdir(LIGHT_DIR) if f.endswith(".onnx")) \
    if os.path.isdir(LIGHT_DIR) else []


def model_path(name):
    return os.path.join(LIGHT_DIR, name + ".onnx")


@functools.lru_cache(maxsize=None)
def load(name):
    return onnx.load(model_path(name))


def dummy_inputs(model):
    """BackendTest.generate_dummy_data(random=False): arange / n per input."""
    inits = {i.name for i in model.graph.initializer}
    feeds = {}
    for x in model.graph.input:
        if x.name in inits:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1
                      for d in x.type.tensor_type.shape.dim)
        n = int(np.prod(shape))
        feeds[x.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    return feeds


def expected_outputs(name):
    out = []
    i = 0
    while os.path.exists(p := os.path.join(LIGHT_DIR, f"{name}_output_{i}.pb")):
        out.append(numpy_helper.to_array(onnx.load_tensor(p)))
        i += 1
    return out


def randomized(name, seed=0):
    """The model with every ConstantOfShape weight replaced by a random initializer.

    The light models build their weights from ConstantOfShape (all equal), which makes
    every class score equal; random weights make a comparison with onnxruntime mean
    something. Fan-in scaling keeps activations O(1); 1-D tensors (biases, batch-norm
    statistics) are positive so variances stay valid."""
    m = onnx.ModelProto()
    m.CopyFrom(load(name))
    rng = np.random.default_rng(seed)
    consts = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    keep = []
    for node in m.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in consts:
            shape = tuple(int(s) for s in consts[node.input[0]])
            if len(shape) >= 2:
                fan_in = int(np.prod(shape[1:]))
                v = rng.standard_normal(shape).astype(np.float32) * np.float32(
                    1.0 / np.sqrt(fan_in))
            else:
                v = rng.uniform(0.5, 1.5, shape).astype(np.float32)
            m.graph.initializer.append(numpy_helper.from_array(v, node.output[0]))
        else:
            keep.append(node)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    return m
