"""pyconv.nn as a torch.nn drop-in: ModuleList / ModuleDict, GELU, PReLU, padding layers,
Module.apply / to, load_state_dict casting, and to_onnx of any module.

The torch references come from tests/reference/torch_nn.npz, written by
tests/reference/make_torch_nn.py (torch is not needed here); the exports are checked
with onnx.checker and onnxruntime, and against the module's own forward.
"""
import os
from collections import OrderedDict

import numpy as np
import onnx
import pytest

import pyconv
import pyconv.functional as F
import pyconv.nn as nn
from _helpers import rand
from pyconv.errors import InvalidArgument, InvalidDType, ShapeError

REFERENCE = os.path.join(os.path.dirname(__file__), "reference", "torch_nn.npz")


# ---------------------------------------------------------------------------------------
# The reference models, written with pyconv.nn as in make_torch_nn.py

class ListNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1) for _ in range(3)])
        self.acts = nn.ModuleList([nn.GELU(), nn.PReLU(8), nn.GELU(approximate="tanh")])
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        for conv, act in zip(self.blocks, self.acts):
            x = act(conv(x)) + x
        return self.head(F.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class DictNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleDict({"pad": nn.ZeroPad2d((1, 2, 0, 1)),
                                     "conv": nn.Conv2d(4, 6, 3), "bn": nn.BatchNorm2d(6),
                                     "act": nn.PReLU()})
        self.branches = nn.ModuleDict([
            ("a", nn.Conv2d(6, 3, 1)),
            ("b", nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(6, 3, 3, bias=False))),
            ("c", nn.Sequential(nn.ReplicationPad2d((2, 0, 1, 0)), nn.Conv2d(6, 2, (2, 3)))),
        ])

    def forward(self, x):
        for layer in self.layers.values():
            x = layer(x)
        return np.concatenate([branch(x) for branch in self.branches.values()], 1)


class BasicBlock(nn.Module):
    def __init__(self, cin=4, cout=8, stride=2):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                        nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


MODELS = {
    "listnet": ListNet,
    "dictnet": DictNet,
    "block": BasicBlock,
    "gelu": lambda: nn.GELU(),
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "prelu1": lambda: nn.PReLU(init=0.1),
    "prelu_channels": lambda: nn.PReLU(5),
    "zeropad2d": lambda: nn.ZeroPad2d((1, 2, 3, 0)),
    "zeropad2d_crop": lambda: nn.ZeroPad2d((-1, 2, 0, -2)),
    "constantpad1d": lambda: nn.ConstantPad1d((2, 1), 1.5),
    "reflectionpad2d": lambda: nn.ReflectionPad2d((1, 2, 2, 0)),
    "replicationpad2d": lambda: nn.ReplicationPad2d(2),
}


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


def _state_dict(reference, name, kind):
    keys = list(reference[f"{name}/keys"])
    return OrderedDict((k, reference[f"{name}/{kind}/{k}"]) for k in keys)


def _loaded(reference, name, kind="sd32"):
    model = MODELS[name]()
    assert model.load_state_dict(_state_dict(reference, name, kind)) == ([], [])
    return model


def test_reference_archive_covers_every_model(reference):
    assert sorted({k.split("/")[0] for k in reference}) == sorted(MODELS)
    assert os.path.getsize(REFERENCE) < 300_000


@pytest.mark.parametrize("name", sorted(MODELS))
def test_matches_torch_outputs_keys_and_repr(name, reference):
    model = _loaded(reference, name)
    assert list(model.state_dict()) == list(reference[f"{name}/keys"])
    assert repr(model) == str(reference[f"{name}/repr"])
    x = reference[f"{name}/input"]
    np.testing.assert_allclose(model(x.copy()), reference[f"{name}/output"], rtol=1e-4,
                               atol=2e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_float64_state_dict_is_cast_like_torch(name, reference):
    """torch's load_state_dict copies into the existing float32 tensors, casting."""
    ours32, ours64 = _loaded(reference, name, "sd32"), _loaded(reference, name, "sd64")
    for key, value in ours64.state_dict().items():
        ref = reference[f"{name}/sd32/{key}"]
        assert value.dtype == ref.dtype and not value.flags.writeable, key
        np.testing.assert_array_equal(value, ref, err_msg=key)
    x = reference[f"{name}/input"]
    np.testing.assert_array_equal(ours64(x.copy()), ours32(x.copy()))


def _ort(model_proto, x, name="output"):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    session = ort.InferenceSession(model_proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run([name], {"input": x})[0]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_to_onnx_runs_at_any_batch(name, reference, tmp_path, rng):
    model = _loaded(reference, name)
    x = reference[f"{name}/input"]
    path = tmp_path / f"{name}.onnx"
    proto = model.to_onnx(path, (1,) + x.shape[1:])
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # The torch reference through onnxruntime and pyconv's own session.
    np.testing.assert_allclose(_ort(proto, x), reference[f"{name}/output"], rtol=1e-4,
                               atol=2e-5)
    session = pyconv.InferenceSession(str(path))
    for batch in (1, 3):
        xb = rand(rng, batch, *x.shape[1:])
        expected = model(xb.copy())
        np.testing.assert_allclose(_ort(proto, xb), expected, rtol=1e-4, atol=2e-5,
                                   err_msg=f"batch {batch}")
        np.testing.assert_allclose(session.run(None, {"input": xb})[0], expected, rtol=1e-4,
                                   atol=2e-5, err_msg=f"batch {batch}")


def test_to_onnx_residual_block_graph(reference):
    model = _loaded(reference, "block")
    proto = nn.to_onnx(model, None, (2, 4, 9, 8))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Conv") == 3 and ops.count("BatchNormalization") == 3
    assert ops.count("Add") == 1 and ops.count("Relu") == 2
    assert {t.name for t in proto.graph.initializer} >= {
        "conv1.weight", "bn1.running_mean", "downsample.0.weight", "downsample.1.bias"}
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    assert out_dims[0].dim_param == "batch" and [d.dim_value for d in out_dims[1:]] == \
        [8, 5, 4]
    fixed = model.to_onnx(None, (2, 4, 9, 8), dynamic_batch=False)
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_export_formula_and_opset20_operator(approximate, rng):
    model = nn.Sequential(nn.Linear(4, 6), nn.GELU(approximate))
    x = rand(rng, 5, 4) * 3
    for opset, has_gelu in ((17, False), (20, True)):
        proto = model.to_onnx(None, x.shape, opset=opset)
        ops = [n.op_type for n in proto.graph.node]
        assert ("Gelu" in ops) == has_gelu
        np.testing.assert_allclose(_ort(proto, x), model(x), rtol=1e-5, atol=1e-6,
                                   err_msg=f"opset {opset}")


# ---------------------------------------------------------------------------------------
# Tracing: functional calls, arithmetic, containers

class Mixed(nn.Module):
    """Functional calls, arithmetic with constants, concatenation, a reshape that keeps the
    batch free, a ModuleList loop, a shared layer and a module called twice."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1)])
        self.register_parameter("weight", rand(np.random.default_rng(5), 4, 8, 1, 1))
        self.register_buffer("shift", np.linspace(-1, 1, 4, dtype=np.float32)
                             .reshape(1, 4, 1, 1))
        self.act = nn.Hardswish()
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        for conv in self.convs:
            x = self.act(conv(x))
        y = F.relu(x) * 0.5 - self.shift
        y = np.concatenate([y, np.maximum(x, 0.1) / 2.0], axis=1)
        y = F.conv2d(y, self.weight, padding="same")
        y = F.max_pool2d(F.pad(y, (0, 1, 0, 1)), 2, ceil_mode=True)
        y = F.interpolate(y, size=(2, 2), mode="bilinear")
        y = np.exp(-np.abs(y)) + F.gelu(y, "tanh")
        channels_last = y.transpose(0, 2, 3, 1)
        return (F.softmax(self.fc(F.flatten(y, 1)), dim=1),
                channels_last.reshape(channels_last.shape[0], -1))    # keeps the batch free


def test_traced_functional_and_numpy_ops_match_forward(rng):
    model = Mixed()
    proto = model.to_onnx(None, (2, 3, 5, 6))
    names = {t.name for t in proto.graph.initializer}
    assert {"convs.0.weight", "convs.1.bias", "shift", "weight", "fc.weight"} <= names
    assert [o.name for o in proto.graph.output] == ["output_0", "output_1"]
    for out in proto.graph.output:
        assert out.type.tensor_type.shape.dim[0].dim_param == "batch"
    for batch in (1, 2, 4):
        x = rand(rng, batch, 3, 5, 6)
        expected = model(x)
        for i, e in enumerate(expected):
            np.testing.assert_allclose(_ort(proto, x, f"output_{i}"), e, rtol=1e-4,
                                       atol=1e-5, err_msg=f"batch {batch} output {i}")


class SqueezeExcite(nn.Module):
    """Reductions written with NumPy: a squeeze-and-excitation gate and a global max."""

    def __init__(self, c=6, r=2):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = x.mean(axis=(2, 3), keepdims=True)
        x = x * F.sigmoid(self.fc2(F.relu(self.fc1(s))))
        m = np.mean(x, axis=(1, 3))
        return np.max(x, axis=-1) + np.sum(x, axis=3) * 0.1 - m.reshape(m.shape[0], 1, -1)


@pytest.mark.parametrize("opset", [13, 18])
def test_numpy_reductions_export_before_and_after_opset18(opset, rng):
    model = SqueezeExcite()
    proto = model.to_onnx(None, (2, 6, 5, 4), opset=opset)
    ops = [n.op_type for n in proto.graph.node]
    assert {"ReduceMean", "ReduceSum", "ReduceMax"} <= set(ops)
    for batch in (1, 3):
        x = rand(rng, batch, 6, 5, 4)
        np.testing.assert_allclose(_ort(proto, x), model(x), rtol=1e-5, atol=1e-5)


class FunctionalOnly(nn.Module):
    """Weights held as parameters and buffers, used through pyconv.functional only."""

    def __init__(self):
        super().__init__()
        r = np.random.default_rng(7)
        self.register_parameter("up", rand(r, 3, 2, 2, 2))            # (C_in, C_out, k, k)
        self.register_buffer("mean", rand(r, 2))
        self.register_buffer("var", r.uniform(0.5, 2, 2).astype(np.float32))
        self.register_parameter("w", rand(r, 4, 2))
        self.register_parameter("b", rand(r, 4))

    def forward(self, x):
        y = F.conv_transpose2d(x, self.up, stride=2, padding=1, output_padding=1)
        y = F.batch_norm(y, self.mean, self.var, eps=1e-3)
        y = F.avg_pool2d(F.leaky_relu(y, 0.2), 3, stride=1, padding=1,
                         count_include_pad=False)
        y = F.dropout(F.elu(F.hardswish(y)), 0.5, training=False)
        y = F.flatten(F.adaptive_max_pool2d(y, 1), 1)
        return F.log_softmax(F.linear(y, self.w, self.b), dim=-1)


def test_functional_calls_export_with_parameter_names(rng):
    model = FunctionalOnly()
    proto = model.to_onnx(None, (2, 3, 4, 5))
    assert {"up", "mean", "var", "w", "b"} <= {t.name for t in proto.graph.initializer}
    for batch in (1, 3):
        x = rand(rng, batch, 3, 4, 5)
        np.testing.assert_allclose(_ort(proto, x), model(x), rtol=1e-5, atol=1e-5)


def test_inplace_layers_and_operators_follow_numpy_semantics(rng):
    class Inplace(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            x = x * 1.0
            y = x
            self.relu(x)        # also changes y, as with NumPy arrays
            y += 1.0
            return x + y

    model = Inplace()
    x = rand(rng, 3, 4)
    expected = model(x.copy())
    np.testing.assert_allclose(_ort(model.to_onnx(None, x.shape), x), expected, rtol=1e-6)


def test_sequential_export_unchanged_and_identity(rng):
    seq = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(0, 1))
    x = rand(rng, 4, 2, 7)
    proto = seq.to_onnx(None, x.shape)
    assert [n.op_type for n in proto.graph.node] == ["Conv", "Relu", "Reshape"]
    # Flatten(0, 1) merges the batch in: that output dim is free but not "batch".
    dim0 = proto.graph.output[0].type.tensor_type.shape.dim[0]
    assert not dim0.dim_param and not dim0.HasField("dim_value")
    for batch in (1, 4):
        xb = rand(rng, batch, 2, 7)
        np.testing.assert_allclose(_ort(proto, xb), seq(xb), rtol=1e-5, atol=1e-6)
    proto = nn.Sequential(nn.Identity()).to_onnx(None, (2, 3))
    assert [n.op_type for n in proto.graph.node] == ["Identity"]


def test_to_onnx_errors_name_the_construct():
    class Sine(nn.Module):
        def forward(self, x):
            return np.sin(x)

    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() else -x

    class Compare(nn.Module):
        def forward(self, x):
            return x * (x > 0)

    class ArgMax(nn.Module):
        def forward(self, x):
            return x.argmax(1)

    class FixedBatch(nn.Module):
        def forward(self, x):
            return x.reshape(len(x), -1)        # len() is a plain int: the batch is fixed

    class Softplus(nn.Module):
        def forward(self, x):
            return F.softplus(x)

    class SamePads(nn.Module):
        def forward(self, x):
            return F.conv2d(x, np.ones((1, 1, 3, 3), np.float32), padding="same_lower")

    class Constant(nn.Module):
        def forward(self, x):
            return np.zeros(3, np.float32)

    class Double(nn.Module):
        def forward(self, x):
            return x * np.ones(2)

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.sub = Sine()

        def forward(self, x):
            return self.sub(x)

    with pytest.raises(InvalidArgument, match=r"numpy.sin \(in module 'sub'\) has no ONNX"):
        Inner().to_onnx(None, (1, 2))
    with pytest.raises(InvalidArgument, match="control flow on a traced value"):
        Branchy().to_onnx(None, (1, 2))
    with pytest.raises(InvalidArgument, match=r"numpy.greater \(in module 'Compare'\)"):
        Compare().to_onnx(None, (1, 2))
    with pytest.raises(InvalidArgument, match="ndarray attribute 'argmax'"):
        ArgMax().to_onnx(None, (1, 2))
    with pytest.raises(InvalidArgument, match="depends on the batch size.*Reshape"):
        FixedBatch().to_onnx(None, (2, 3, 4))
    assert FixedBatch().to_onnx(None, (2, 3, 4), dynamic_batch=False) is not None
    with pytest.raises(InvalidArgument, match="pyconv.functional.softplus"):
        Softplus().to_onnx(None, (1, 2))
    with pytest.raises(InvalidArgument, match="functional.conv2d .* has no ONNX export "
                                              "here: Conv2d: padding must be"):
        SamePads().to_onnx(None, (1, 1, 4, 4))
    with pytest.raises(InvalidArgument, match="output 0 .* is ndarray"):
        Constant().to_onnx(None, (1, 2))
    with pytest.raises(InvalidArgument, match="dtype float64"):
        Double().to_onnx(None, (1, 2))
    with pytest.raises(InvalidArgument, match=r"layer '1' of type MaxUnpool2d has no ONNX"):
        nn.Sequential(nn.ReLU(), nn.MaxUnpool2d(2)).to_onnx(None, (1, 1, 2, 2))
    with pytest.raises(InvalidArgument, match="returns indices"):
        nn.MaxPool2d(2, return_indices=True).to_onnx(None, (1, 1, 4, 4))
    with pytest.raises(InvalidArgument, match="dynamic_batch must be a bool"):
        nn.ReLU().to_onnx(None, (1, 2), dynamic_batch=1)
    with pytest.raises(InvalidArgument, match="expected a pyconv.nn.Module"):
        nn.to_onnx(lambda x: x, None, (1, 2))
    # After a failed export the functional API is itself again.
    assert F.relu(np.array([-1.0], np.float32))[0] == 0
    assert not hasattr(F.relu, "__wrapped__")


# ---------------------------------------------------------------------------------------
# Containers

def test_module_list_behaves_like_torch():
    a, b, c, d = nn.ReLU(), nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)
    layers = nn.ModuleList([a, b])
    layers.append(c)
    assert layers.extend([d]) is layers
    assert len(layers) == 4 and list(layers) == [a, b, c, d]
    assert layers[-1] is d and layers[1] is b
    sub = layers[1:3]
    assert isinstance(sub, nn.ModuleList) and list(sub) == [b, c]
    assert list(sub._modules) == ["0", "1"]                 # renumbered, as torch
    assert list(layers[::-2]) == [d, b]
    with pytest.raises(IndexError, match="out of range"):
        layers[4]  # noqa: B018
    layers.insert(1, nn.Sigmoid())
    layers.insert(-1, nn.Identity())
    assert [type(m).__name__ for m in layers] == ["ReLU", "Sigmoid", "Linear", "Tanh",
                                                   "Identity", "Linear"]
    del layers[1]
    assert layers.pop(-2).__class__ is nn.Identity
    assert list(layers) == [a, b, c, d] and list(layers._modules) == ["0", "1", "2", "3"]
    layers += [nn.ReLU()]
    assert len(layers) == 5
    both = layers + nn.ModuleList([nn.Tanh()])
    assert isinstance(both, nn.ModuleList) and len(both) == 6 and len(layers) == 5
    layers[0] = nn.ELU()
    del layers[2:]
    assert [type(m).__name__ for m in layers] == ["ELU", "Linear"]
    with pytest.raises(InvalidArgument, match="must be a pyconv.nn.Module"):
        layers.append(lambda x: x)
    with pytest.raises(InvalidArgument, match="iterable"):
        layers.extend(3)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)])

    net = Net()
    assert list(net.state_dict()) == ["layers.0.weight", "layers.0.bias", "layers.2.weight",
                                      "layers.2.bias"]
    assert [n for n, _ in net.named_modules()] == ["", "layers", "layers.0", "layers.1",
                                                   "layers.2"]
    assert len(list(net.parameters())) == 4
    assert repr(nn.ModuleList([nn.ReLU(), nn.ReLU(), nn.Tanh()])) == (
        "ModuleList(\n  (0-1): 2 x ReLU()\n  (2): Tanh()\n)")
    assert repr(nn.ModuleList()) == "ModuleList()"


def test_module_dict_behaves_like_torch():
    d = nn.ModuleDict({"conv": nn.Conv1d(1, 2, 1), "act": nn.ReLU()})
    d.update([("head", nn.Linear(2, 1)), ("act", nn.Tanh())])     # replaces in place
    assert list(d) == ["conv", "act", "head"] and isinstance(d["act"], nn.Tanh)
    assert "head" in d and "x" not in d and len(d) == 3
    assert list(d.keys()) == ["conv", "act", "head"]
    assert [type(m).__name__ for m in d.values()] == ["Conv1d", "Tanh", "Linear"]
    d["extra"] = nn.Identity()
    assert isinstance(d.pop("extra"), nn.Identity) and len(d) == 3
    del d["act"]
    assert list(d.state_dict()) == ["conv.weight", "conv.bias", "head.weight", "head.bias"]
    with pytest.raises(KeyError):
        d["missing"]  # noqa: B018
    with pytest.raises(InvalidArgument, match="without '.'"):
        d["a.b"] = nn.ReLU()
    with pytest.raises(InvalidArgument, match="must be a pyconv.nn.Module"):
        d.update({"bad": 3})
    with pytest.raises(InvalidArgument, match="length 3; 2 is required"):
        d.update([("a", nn.ReLU(), 1)])
    assert list(d) == ["conv", "head"]                 # nothing added by failed updates
    d.clear()
    assert len(d) == 0 and repr(d) == "ModuleDict()"


def test_apply_to_float_and_children():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Sequential(nn.ReLU(), nn.Linear(2, 2)))
    order = []
    assert net.apply(lambda m: order.append(type(m).__name__)) is net
    assert order == ["Conv2d", "ReLU", "Linear", "Sequential", "Sequential"]  # children first
    assert [n for n, _ in net.named_children()] == ["0", "1"]
    assert len(list(net.children())) == 2 and len(list(net.modules())) == 5
    for same in (net.to(np.float32), net.to("cpu"), net.to("cpu", np.float32),
                 net.to(device="cpu", dtype=np.dtype("float32")), net.float(), net.cpu()):
        assert same is net
    with pytest.raises(InvalidDType, match="float32 only.*float64"):
        net.to(np.float64)
    with pytest.raises(InvalidDType, match="float32 only"):
        net.double()
    with pytest.raises(InvalidDType, match="float32 only"):
        net.half()
    with pytest.raises(InvalidArgument, match="CPU only.*'cuda'"):
        net.to("cuda")
    with pytest.raises(InvalidArgument, match="CPU only"):
        net.cuda()
    assert net.eval() is net and net.train() is net and net[1][0].training
    net.eval()


# ---------------------------------------------------------------------------------------
# load_state_dict: casting and array-likes

class _FakeTensor:
    """Duck-typed like a torch tensor: detach().cpu().numpy()."""

    def __init__(self, array):
        self.array, self.dtype = array, f"torch.{array.dtype}"

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.array


class _ArrayLike:
    def __init__(self, array):
        self.array = array

    def __array__(self, dtype=None, copy=None):
        return self.array


def test_load_state_dict_casts_and_accepts_array_likes():
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    sd = {"0.weight": _FakeTensor(np.arange(6, dtype=np.float64).reshape(2, 3)),
          "0.bias": _ArrayLike(np.array([1, 2], np.int32)),
          "1.weight": np.ones(2, np.float16), "1.bias": [0.5, 0.25],
          "1.running_mean": np.zeros(2, np.float64), "1.running_var": np.ones(2),
          "1.num_batches_tracked": np.array(5.0)}
    assert net.load_state_dict(sd) == ([], [])
    out = net.state_dict()
    assert all(v.dtype == np.float32 for k, v in out.items() if "num_batches" not in k)
    assert out["1.num_batches_tracked"].dtype == np.int64
    assert out["1.num_batches_tracked"] == 5
    np.testing.assert_array_equal(out["0.weight"], np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(out["0.bias"], [1, 2])
    snapshot = {k: v.copy() for k, v in out.items()}
    for key, bad, match in [("0.bias", np.array([1 + 1j, 2]), "complex"),
                            ("0.bias", np.array([True, False]), "bool"),
                            ("1.num_batches_tracked", np.array(1.5), "non-integer"),
                            ("0.bias", np.array(["a", "b"]), "<U1")]:
        with pytest.raises(InvalidDType, match=match):
            net.load_state_dict(dict(sd, **{key: bad}))
    with pytest.raises(ShapeError, match=r"0.weight: copying a param with shape \(3, 2\)"):
        net.load_state_dict(dict(sd, **{"0.weight": np.zeros((3, 2))}))
    partial = {k: v for k, v in sd.items() if k != "0.bias"}
    partial["extra"] = np.zeros(1)
    with pytest.raises(InvalidArgument, match='(?s)Missing key.*"0.bias".*Unexpected key.*"extra"'):
        net.load_state_dict(partial)
    for k, v in net.state_dict().items():         # failed loads changed nothing
        np.testing.assert_array_equal(v, snapshot[k], err_msg=k)
    assert net.load_state_dict(partial, strict=False) == (["0.bias"], ["extra"])


# ---------------------------------------------------------------------------------------
# New layers: arguments and errors (numbers: the torch reference tests above)

def test_new_layers_arguments_and_errors(rng):
    with pytest.raises(InvalidArgument, match="approximate must be 'none' or 'tanh'"):
        nn.GELU("fast")
    with pytest.raises(ShapeError, match="num_parameters=3 does not match the 4 channels"):
        nn.PReLU(3)(rand(rng, 2, 4))
    with pytest.raises(ShapeError, match="num_parameters=3 does not match the 1 channels"):
        nn.PReLU(3)(rand(rng, 3))
    assert list(nn.PReLU(3).state_dict()) == ["weight"]
    assert nn.PReLU(1)(np.array(-2.0, np.float32)) == np.float32(-0.5)
    with pytest.raises(InvalidArgument, match="padding must be an int or a tuple of 4"):
        nn.ZeroPad2d((1, 2))
    with pytest.raises(ShapeError, match="expected 3D or 4D input"):
        nn.ReflectionPad2d(1)(rand(rng, 4, 4))
    with pytest.raises(ShapeError, match="reflect padding"):
        nn.ReflectionPad1d(3)(rand(rng, 1, 1, 3))
    x = rand(rng, 2, 3, 4, 5)
    np.testing.assert_array_equal(nn.ZeroPad3d(1)(x)[:, 1:-1, 1:-1, 1:-1], x)
    np.testing.assert_array_equal(nn.ConstantPad2d(1, 2.0)(x)[..., 0, :], 2.0)
    np.testing.assert_array_equal(nn.ReplicationPad1d((1, 0))(x[0])[..., 0], x[0][..., 0])
    assert nn.ReplicationPad3d(1)(x).shape == (2, 5, 6, 7)
    assert nn.ReflectionPad3d(1)(x).shape == (2, 5, 6, 7)
    assert nn.ZeroPad1d(2)(x).shape == (2, 3, 4, 9)


def test_torch_dtypes_devices_and_tensors_when_torch_is_installed():
    torch = pytest.importorskip("torch", reason="torch not installed: optional cross-check")
    net = nn.Sequential(nn.Linear(3, 2), nn.PReLU(), nn.BatchNorm1d(2))
    assert net.to(torch.float32) is net and net.to(torch.device("cpu"), torch.float) is net
    with pytest.raises(InvalidDType, match="torch.float64"):
        net.to(torch.float64)
    with pytest.raises(InvalidArgument, match="CPU only"):
        net.to(torch.device("meta"))
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.PReLU(),
                                 torch.nn.BatchNorm1d(2)).double().eval()
    assert net.load_state_dict(theirs.state_dict()) == ([], [])     # float64 tensors
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    with torch.no_grad():
        expected = theirs.float()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net(x), expected, rtol=1e-5, atol=1e-6)
    net.load_state_dict(theirs.to(torch.bfloat16).state_dict())   # NumPy has no bfloat16
    assert net[0].weight.dtype == np.float32
