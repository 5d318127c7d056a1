"""pyconv.nn: Module machinery, layers vs the reference and torch, ONNX export."""
import copy
import math
import pickle
import threading
from collections import OrderedDict

import numpy as np
import pytest

import pyconv.functional as F
import pyconv.nn as nn
from _helpers import rand
import reference as R
from pyconv.errors import InvalidArgument, InvalidDType, ShapeError


class Net(nn.Module):
    """A custom module: nested names like torch's ('features.0.weight')."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                      nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2, bias=False))
        self.head = nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        return self.head(F.flatten(self.features(x), 1))


# ---------------------------------------------------------------------------------------
# Module machinery

def test_state_dict_names_order_and_parameters():
    net = Net()
    keys = list(net.state_dict())
    assert keys == ["features.0.weight", "features.0.bias", "features.1.weight",
                    "features.1.bias", "features.1.running_mean", "features.1.running_var",
                    "features.1.num_batches_tracked", "features.3.weight", "head.weight",
                    "head.bias"]
    assert isinstance(net.state_dict(), OrderedDict)
    names = [n for n, _ in net.named_parameters()]
    assert names == [k for k in keys if "running" not in k and "num_batches" not in k]
    assert sum(p.size for p in net.parameters()) == 8 * 27 + 8 + 8 + 8 + 4 * 72 + 5 * 36 + 5
    assert all(p.dtype == np.float32 for p in net.parameters())
    assert net.state_dict()["features.1.num_batches_tracked"].dtype == np.int64
    assert [n for n, _ in net.named_modules()][:3] == ["", "features", "features.0"]
    assert [type(m).__name__ for m in net.children()] == ["Sequential", "Linear"]


def test_modules_start_in_eval_mode_and_train_is_a_flag(rng):
    net = Net()
    assert not any(m.training for m in net.modules())
    assert net.train() is net and all(m.training for m in net.modules())
    with pytest.raises(InvalidArgument, match="BatchNorm2d: training mode .* call .eval()"):
        net(rand(rng, 1, 3, 7, 7))
    with pytest.raises(InvalidArgument, match="Dropout: training mode"):
        nn.Dropout().train()(rand(rng, 3))
    assert net.eval() is net and not net.features[1].training
    assert net(rand(rng, 1, 3, 7, 7)).shape == (1, 5)


def test_parameters_are_read_only_copies():
    conv = nn.Conv2d(2, 3, 1)
    w = np.ones((3, 2, 1, 1), np.float32)
    conv.weight = w
    assert conv.weight is not w and not conv.weight.flags.writeable
    w[...] = 5                                # the caller's array is not shared
    assert (conv.weight == 1).all()
    with pytest.raises(ValueError, match="read-only"):
        conv.weight[0] = 2.0
    with pytest.raises(InvalidDType, match=r"Conv2d.weight must be float32, got dtype float64"):
        conv.weight = np.ones((3, 2, 1, 1))
    conv.bias = None
    assert "bias" not in conv.state_dict() and conv.bias is None
    conv.weight = [[[[1.0]], [[2.0]]]] * 3    # lists of floats are converted
    assert conv.weight.dtype == np.float32 and conv.weight.shape == (3, 2, 1, 1)


def test_load_state_dict_roundtrip_and_repack(rng):
    a, b = Net(), Net()
    x = rand(rng, 2, 3, 7, 7)
    assert not np.allclose(a(x), b(x))
    sd = {k: np.array(v) for k, v in a.state_dict().items()}
    sd["features.1.num_batches_tracked"] = np.array(17)          # any integer dtype
    assert b.load_state_dict(sd) == ([], [])
    np.testing.assert_array_equal(a(x), b(x))                   # b re-packed its convs
    assert b.state_dict()["features.1.num_batches_tracked"] == 17
    # Assigning one weight re-packs that layer only.
    new = rand(rng, *b.features[0].weight.shape)
    b.features[0].weight = new
    a.features[0].weight = new
    np.testing.assert_array_equal(a(x), b(x))


def test_refresh_after_forcing_an_in_place_edit(rng):
    conv = nn.Conv1d(2, 2, 3)
    x = rand(rng, 1, 2, 8)
    before = conv(x)
    w = conv.weight
    w.flags.writeable = True      # deliberately bypass the read-only guard
    w *= 2
    w.flags.writeable = False
    assert conv.refresh() is conv
    expected = R.conv_nd(x, conv.weight, conv.bias)
    np.testing.assert_allclose(conv(x), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(conv(x), before)


def test_load_state_dict_errors_name_keys_and_shapes():
    net = Net()
    good = {k: np.array(v) for k, v in net.state_dict().items()}
    snapshot = {k: v.copy() for k, v in good.items()}

    bad = dict(good)
    del bad["head.bias"]
    bad["head.extra"] = np.zeros(1, np.float32)
    with pytest.raises(InvalidArgument) as err:
        net.load_state_dict(bad)
    msg = str(err.value)
    assert 'Missing key(s) in state_dict: "head.bias"' in msg
    assert 'Unexpected key(s) in state_dict: "head.extra"' in msg
    result = net.load_state_dict(bad, strict=False)
    assert result.missing_keys == ["head.bias"] and result.unexpected_keys == ["head.extra"]

    bad = dict(good)
    bad["features.0.weight"] = np.zeros((8, 3, 5, 5), np.float32)
    bad["head.bias"] = np.zeros(9, np.float32) + 3
    with pytest.raises(ShapeError) as err:
        net.load_state_dict(bad)
    msg = str(err.value)
    assert ("size mismatch for features.0.weight: copying a param with shape (8, 3, 5, 5) "
            "from checkpoint, the shape in current model is (8, 3, 3, 3)") in msg
    assert "head.bias" in msg and "(9,)" in msg and "(5,)" in msg
    with pytest.raises(ShapeError, match="size mismatch"):
        net.load_state_dict(bad, strict=False)     # shapes are checked even then

    bad = dict(good)
    bad["features.1.running_var"] = np.ones(8, np.complex64)   # float64 is cast, as torch
    with pytest.raises(InvalidDType, match=r"'features.1.running_var': expected a float or "
                                           r"integer array .* dtype complex64"):
        net.load_state_dict(bad)
    bad["features.1.running_var"] = np.ones(8, np.float32)
    bad["features.1.num_batches_tracked"] = np.array(1.5)
    with pytest.raises(InvalidDType, match="num_batches_tracked.*integer"):
        net.load_state_dict(bad)
    with pytest.raises(InvalidArgument, match="expected a mapping"):
        net.load_state_dict([1, 2])
    # Nothing was assigned by the failed loads.
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, snapshot[k], err_msg=k)


def test_module_attribute_rules():
    m = nn.Module()
    with pytest.raises(NotImplementedError, match="does not implement forward"):
        m(1)
    m.register_buffer("stat", np.zeros(2, np.float32))
    m.sub = nn.ReLU()
    assert list(m.state_dict()) == ["stat"] and m.sub is m._modules["sub"]
    with pytest.raises(InvalidArgument, match="cannot assign int to sub-module 'sub'"):
        m.sub = 3
    with pytest.raises(InvalidArgument, match="already exists"):
        m.register_parameter("stat", np.zeros(1, np.float32))
    with pytest.raises(InvalidArgument, match="without '.'"):
        m.register_parameter("a.b", np.zeros(1, np.float32))
    with pytest.raises(AttributeError, match="has no attribute 'missing'"):
        m.missing  # noqa: B018
    del m.sub
    assert list(m.children()) == []

    class Broken(nn.Module):
        def __init__(self):
            self.w = np.zeros(3, np.float32)

    with pytest.raises(InvalidArgument, match=r"call Module.__init__\(\)"):
        Broken()


def test_sequential_container():
    layers = [nn.ReLU(), nn.Tanh(), nn.Sigmoid()]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and list(seq) == layers
    assert seq[0] is layers[0] and seq[-1] is layers[2]
    sub = seq[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == layers[1:]
    assert list(sub._modules) == ["1", "2"]               # torch keeps the names
    seq.append(nn.Identity())
    assert len(seq) == 4 and list(seq.state_dict()) == []
    seq[1] = nn.ELU()
    assert isinstance(seq[1], nn.ELU)
    del seq[0]
    assert [type(m).__name__ for m in seq] == ["ELU", "Sigmoid", "Identity"]
    assert list(seq._modules) == ["0", "1", "2"]
    with pytest.raises(IndexError, match="out of range"):
        seq[3]  # noqa: B018
    with pytest.raises(InvalidArgument, match="must be a pyconv.nn.Module"):
        nn.Sequential(nn.ReLU(), lambda x: x)
    named = nn.Sequential(OrderedDict([("conv", nn.Conv1d(1, 1, 1)), ("act", nn.ReLU())]))
    assert list(named.state_dict()) == ["conv.weight", "conv.bias"]
    nested = nn.Sequential(nn.Sequential(nn.Linear(2, 2)), nn.Linear(2, 1))
    assert list(nested.state_dict()) == ["0.0.weight", "0.0.bias", "1.weight", "1.bias"]


def test_repr_like_torch():
    seq = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                        nn.Sequential(nn.MaxPool2d(2), nn.Dropout(0.2)))
    assert repr(seq) == (
        "Sequential(\n"
        "  (0): Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)\n"
        "  (1): ReLU(inplace=True)\n"
        "  (2): Sequential(\n"
        "    (0): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)\n"
        "    (1): Dropout(p=0.2, inplace=False)\n"
        "  )\n"
        ")")


def test_pickle_and_deepcopy_keep_outputs_and_read_only_state(rng):
    net = Net()
    x = rand(rng, 1, 3, 7, 7)
    y = net(x)                                   # builds the packed caches
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        np.testing.assert_array_equal(clone(x), y)
        assert not clone.features[0].weight.flags.writeable
        assert clone.features[0].weight is not net.features[0].weight


# ---------------------------------------------------------------------------------------
# Initialisation

def test_init_is_torch_like_and_seeded():
    nn.manual_seed(7)
    a = nn.Conv2d(4, 6, 3, groups=2)
    nn.manual_seed(7)
    b = nn.Conv2d(4, 6, 3, groups=2)
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)
    assert not np.array_equal(nn.Conv2d(4, 6, 3, groups=2).weight, a.weight)
    for layer, fan_in in [(nn.Conv2d(16, 32, 3), 16 * 9),
                          (nn.ConvTranspose2d(16, 32, 3, groups=4), 8 * 9),
                          (nn.Conv3d(4, 8, (1, 2, 3)), 4 * 6), (nn.Linear(300, 200), 300)]:
        bound = 1 / math.sqrt(fan_in)
        w = layer.weight
        assert np.abs(w).max() <= bound and np.abs(layer.bias).max() <= bound
        # U(-b, b) has standard deviation b / sqrt(3).
        assert abs(w.std() - bound / math.sqrt(3)) < 0.1 * bound


# ---------------------------------------------------------------------------------------
# Layers vs the NumPy reference (no torch needed)

@pytest.mark.parametrize("n", [1, 2, 3])
def test_conv_layers_match_reference(n, rng):
    cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[n]
    spatial = {1: (11,), 2: (9, 7), 3: (5, 6, 7)}[n]
    for kwargs in [dict(), dict(stride=2, padding=1), dict(dilation=2, groups=2, bias=False),
                   dict(padding="same"), dict(padding="valid", stride=(1,) * (n - 1) + (2,))]:
        layer = cls(4, 6, 3, **kwargs)
        x = rand(rng, 2, 4, *spatial)
        y = layer(x)
        pad = layer.padding
        if pad == "same":
            pb, pe = (1,) * n, (1,) * n
        elif pad == "valid":
            pb = pe = (0,) * n
        else:
            pb = pe = pad
        ref = R.conv_nd(x, layer.weight, layer.bias, layer.stride, pb, pe, layer.dilation,
                        layer.groups)
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4, err_msg=str(kwargs))
    # Unbatched input, as torch accepts.
    x = rand(rng, 4, *spatial)
    np.testing.assert_allclose(layer(x), layer(x[None])[0], rtol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_conv_transpose_layers_match_reference(n, rng):
    cls = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[n]
    spatial = {1: (7,), 2: (5, 4), 3: (3, 4, 2)}[n]
    layer = cls(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=1)
    x = rand(rng, 2, 4, *spatial)
    y = layer(x)
    assert y.shape == (2, 6) + tuple(2 * s for s in spatial)
    ref = R.conv_transpose_nd(x, layer.weight, layer.bias, 2, 1, 1, 1, groups=2,
                              output_padding=1)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    # output_size picks the output padding per call (spatial or full shape).
    plain = cls(4, 6, 3, stride=2, padding=1, groups=2)
    plain.load_state_dict(layer.state_dict())
    smaller = plain(x)
    assert smaller.shape[2:] == tuple(2 * s - 1 for s in spatial)
    np.testing.assert_allclose(plain(x, output_size=y.shape[2:]), y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(plain(x, output_size=y.shape), y, rtol=1e-5, atol=1e-5)
    with pytest.raises(ShapeError, match="not reachable"):
        plain(x, output_size=tuple(2 * s + 3 for s in spatial))


def test_linear_layer_matches_reference_and_repacks(rng):
    layer = nn.Linear(20, 7)
    for shape in [(20,), (1, 20), (9, 20), (2, 3, 20)]:
        x = rand(rng, *shape)
        y = layer(x)
        assert y.shape == shape[:-1] + (7,)
        np.testing.assert_allclose(y, R.linear(x, layer.weight, layer.bias), rtol=1e-5,
                                   atol=1e-5)
    layer.weight = rand(rng, 7, 20)
    layer.bias = None
    x = rand(rng, 5, 20)
    np.testing.assert_allclose(layer(x), R.linear(x, layer.weight), rtol=1e-5, atol=1e-5)
    layer.weight = rand(rng, 7, 21)
    with pytest.raises(ShapeError, match=r"weight has shape \(7, 21\), expected \(7, 20\)"):
        layer(x)


def test_batch_norm_layers_match_reference(rng):
    for cls, shape in [(nn.BatchNorm1d, (4, 5)), (nn.BatchNorm1d, (2, 5, 6)),
                       (nn.BatchNorm2d, (2, 5, 4, 3)), (nn.BatchNorm3d, (1, 5, 2, 3, 4))]:
        bn = cls(5, eps=1e-3)
        bn.running_mean = rand(rng, 5)
        bn.running_var = rng.uniform(0.5, 2, 5).astype(np.float32)
        bn.weight, bn.bias = rand(rng, 5), rand(rng, 5)
        x = rand(rng, *shape)
        np.testing.assert_allclose(
            bn(x), R.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, 1e-3),
            rtol=1e-5, atol=1e-5)
        # The folded statistics follow re-assignment.
        bn.running_var, bn.eps = rng.uniform(0.5, 2, 5).astype(np.float32), 0.1
        np.testing.assert_allclose(
            bn(x), R.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, 0.1),
            rtol=1e-5, atol=1e-5)
    with pytest.raises(ShapeError, match=r"BatchNorm2d: expected 4D input, got 3D input"):
        nn.BatchNorm2d(5)(rand(rng, 2, 5, 3))
    with pytest.raises(ShapeError, match=r"input has 4 channels, the layer has num_features=5"):
        nn.BatchNorm1d(5)(rand(rng, 2, 4))
    assert nn.BatchNorm2d(3, affine=False).state_dict().keys() == {
        "running_mean", "running_var", "num_batches_tracked"}
    with pytest.raises(InvalidArgument, match="track_running_stats=False"):
        nn.BatchNorm2d(3, track_running_stats=False)


def test_activation_and_shape_layers(rng):
    x = rand(rng, 2, 3, 4) * 4
    cases = [(nn.ReLU(), F.relu(x)), (nn.ReLU6(), F.relu6(x)),
             (nn.Hardtanh(-2.0, 3.0), np.clip(x, -2, 3)),
             (nn.LeakyReLU(0.3), F.leaky_relu(x, 0.3)), (nn.Sigmoid(), F.sigmoid(x)),
             (nn.Hardsigmoid(), F.hardsigmoid(x)), (nn.Hardswish(), F.hardswish(x)),
             (nn.Tanh(), F.tanh(x)), (nn.SiLU(), F.silu(x)), (nn.ELU(0.5), F.elu(x, 0.5)),
             (nn.Softmax(1), F.softmax(x, 1)), (nn.LogSoftmax(-1), F.log_softmax(x, -1)),
             (nn.Flatten(), x.reshape(2, 12)), (nn.Flatten(0, 1), x.reshape(6, 4)),
             (nn.Identity(54, unused=1), x), (nn.Dropout(0.5), x),
             (nn.Upsample(scale_factor=2), x.repeat(2, axis=2)),
             (nn.Upsample(size=8, mode="linear", align_corners=True),
              R.interpolate_linear(x, 8, align_corners=True))]
    for layer, expected in cases:
        np.testing.assert_allclose(layer(x), expected, rtol=1e-6, atol=1e-6,
                                   err_msg=repr(layer))
    y = x.copy()
    assert nn.ReLU(inplace=True)(y) is y and (y >= 0).all()
    assert nn.Identity()(x) is x


def test_pool_layers_call_the_functional_ops(rng):
    x = rand(rng, 2, 3, 8, 6)
    np.testing.assert_array_equal(nn.MaxPool2d(2)(x), R.max_pool_nd(x, 2, 2)[0])
    np.testing.assert_allclose(nn.AvgPool2d(3, 2, 1)(x), R.avg_pool_nd(x, 3, 2, 1, 1),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(nn.AdaptiveAvgPool2d((3, 2))(x),
                               R.adaptive_avg_pool_nd(x, (3, 2)), rtol=1e-6, atol=1e-6)
    y, idx = nn.MaxPool2d(2, return_indices=True)(x)
    np.testing.assert_array_equal(nn.AdaptiveMaxPool2d(1)(x), R.global_max_pool(x))
    up = nn.MaxUnpool2d(2)(y, idx)
    assert up.shape == x.shape
    np.testing.assert_array_equal(np.sort(up[up != 0]), np.sort(y.ravel()[y.ravel() != 0]))
    np.testing.assert_allclose(nn.AvgPool1d(2)(x[:, :, 0]),
                               R.avg_pool_nd(x[:, :, 0], 2, 2), rtol=1e-6)
    np.testing.assert_array_equal(nn.MaxPool3d(2)(x[None]), R.max_pool_nd(x[None], 2, 2)[0])


def test_layer_input_errors(rng):
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ShapeError, match=r"Conv2d: input has 2 channels, the layer expects 3 "
                                         r"\(input shape \(1, 2, 5, 5\)\)"):
        conv(rand(rng, 1, 2, 5, 5))
    with pytest.raises(ShapeError, match=r"expected a 4-D input .* got shape \(5, 5\)"):
        conv(rand(rng, 5, 5))
    with pytest.raises(InvalidDType, match="Conv2d: input must be float32, got dtype float64"):
        conv(np.zeros((1, 3, 5, 5)))
    with pytest.raises(ShapeError, match="kernel size 3 is larger than the padded input 2"):
        conv(rand(rng, 1, 3, 2, 5))
    with pytest.raises(ShapeError, match=r"Linear: input has shape \(2, 3\), expected \(\*, 4\)"):
        nn.Linear(4, 2)(rand(rng, 2, 3))


def test_constructor_errors():
    with pytest.raises(InvalidArgument, match="groups 2 does not divide in_channels 3"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(InvalidArgument, match="padding='same' is not supported for strided"):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(InvalidArgument, match="padding_mode='zeros'"):
        nn.Conv2d(3, 4, 3, padding_mode="reflect")
    with pytest.raises(InvalidArgument, match="padding must be an int or a tuple"):
        nn.ConvTranspose2d(3, 4, 3, padding="same")
    with pytest.raises(InvalidArgument, match="output_padding .* must be smaller"):
        nn.ConvTranspose1d(3, 4, 3, stride=2, output_padding=2)
    with pytest.raises(InvalidArgument, match="kernel_size must have 2 elements"):
        nn.Conv2d(3, 4, (3, 3, 3))
    with pytest.raises(InvalidArgument, match="dtype must be None or float32"):
        nn.Linear(3, 4, dtype="float64")
    with pytest.raises(InvalidArgument, match="between 0 and 1"):
        nn.Dropout(2.0)
    with pytest.raises(InvalidArgument, match="max_val"):
        nn.Hardtanh(1.0, 0.0)


def test_conv_layer_is_thread_safe(rng):
    conv = nn.Conv2d(8, 16, 3, padding=1)
    xs = [rand(rng, 1, 8, 12, 12) for _ in range(4)]
    expected = [conv(x) for x in xs]
    conv.weight = conv.weight.copy()             # force a fresh plan, built concurrently
    results = [None] * 4

    def work(i):
        for _ in range(5):
            results[i] = conv(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------
# ONNX export (onnx is a dependency; onnxruntime is a test extra)

def _ort_run(model_path, x):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": x})[0]


def _randomize_bn(model, rng):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            c = m.num_features
            m.running_mean = rand(rng, c)
            m.running_var = rng.uniform(0.5, 2.0, c).astype(np.float32)
            m.weight, m.bias = rand(rng, c), rand(rng, c)


def test_to_onnx_classifier_matches_onnxruntime(tmp_path, rng):
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding="same"), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.MaxPool2d(2, ceil_mode=True), nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.Hardswish(), nn.AvgPool2d(2, 1, 1, count_include_pad=False),
        nn.Sequential(nn.Conv2d(8, 6, 1, bias=False), nn.SiLU(), nn.LeakyReLU(0.1)),
        nn.ELU(0.8), nn.Hardsigmoid(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(),
        nn.Linear(6, 5), nn.Tanh(), nn.Identity(), nn.Softmax(dim=1))
    _randomize_bn(model, rng)
    x = rand(rng, 2, 3, 9, 11)
    path = tmp_path / "classifier.onnx"
    onnx_model = model.to_onnx(path, x.shape)
    ops = [node.op_type for node in onnx_model.graph.node]
    for op in ["Conv", "BatchNormalization", "Clip", "MaxPool", "HardSwish", "AveragePool",
               "Sigmoid", "Mul", "LeakyRelu", "Elu", "HardSigmoid", "GlobalAveragePool",
               "Flatten", "Identity", "Gemm", "Tanh", "Softmax"]:
        assert op in ops, op
    assert [i.name for i in onnx_model.graph.input] == ["input"]
    assert [o.name for o in onnx_model.graph.output] == ["output"]
    assert "7.0.weight" in {t.name for t in onnx_model.graph.initializer}
    np.testing.assert_allclose(_ort_run(path, x), model(x), rtol=1e-4, atol=1e-5)


def test_to_onnx_decoder_and_other_ranks_match_onnxruntime(tmp_path, rng):
    decoder = nn.Sequential(
        nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
        nn.ReLU(), nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(6, 4, 3, padding=1),
        nn.Upsample(size=(25, 33), mode="bilinear"), nn.Sigmoid(),
        nn.Upsample(scale_factor=(0.5, 1.5), mode="bilinear", align_corners=True),
        nn.Upsample(size=(9, 7), mode="nearest-exact"), nn.AdaptiveMaxPool2d((3, 7)),
        nn.Flatten(2), nn.Linear(21, 4), nn.LogSoftmax(dim=-1))
    seq1d = nn.Sequential(nn.Conv1d(2, 4, 3, dilation=2), nn.BatchNorm1d(4), nn.ReLU(),
                          nn.MaxPool1d(2), nn.AvgPool1d(2), nn.Upsample(scale_factor=3),
                          nn.Flatten(0, 1))
    seq3d = nn.Sequential(nn.Conv3d(2, 3, (1, 3, 3), stride=(1, 2, 2)), nn.Hardtanh(-0.5, 0.5),
                          nn.ConvTranspose3d(3, 2, 2, stride=2), nn.BatchNorm3d(2),
                          nn.AdaptiveAvgPool3d((2, 1, 1)))
    for name, model, shape in [("decoder", decoder, (1, 4, 5, 6)),
                               ("seq1d", seq1d, (3, 2, 16)), ("seq3d", seq3d, (1, 2, 4, 9, 9))]:
        _randomize_bn(model, rng)
        x = rand(rng, *shape)
        path = tmp_path / f"{name}.onnx"
        model.to_onnx(path, shape, opset=17)
        np.testing.assert_allclose(_ort_run(path, x), model(x), rtol=1e-4, atol=1e-5,
                                   err_msg=name)


def test_to_onnx_mlp_and_resize_edge_cases(tmp_path, rng):
    mlp = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Hardswish(),
                        nn.Linear(6, 3, bias=False))
    _randomize_bn(mlp, rng)
    x = rand(rng, 4, 5)
    for opset in (13, 17):                  # opset 13 has no HardSwish: HardSigmoid * x
        path = tmp_path / f"mlp{opset}.onnx"
        ops = [n.op_type for n in mlp.to_onnx(path, x.shape, opset=opset).graph.node]
        assert ("HardSwish" in ops) == (opset >= 14)
        np.testing.assert_allclose(_ort_run(path, x), mlp(x), rtol=1e-5, atol=1e-5)
    # Linear on a 3-D input: MatMul (+ Add), which broadcast over the leading dims.
    seq = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2, bias=False))
    x3 = rand(rng, 2, 3, 5)
    ops = [n.op_type for n in seq.to_onnx(tmp_path / "mm.onnx", x3.shape).graph.node]
    assert ops == ["MatMul", "Add", "Relu", "MatMul"]
    np.testing.assert_allclose(_ort_run(tmp_path / "mm.onnx", x3), seq(x3), rtol=1e-5,
                               atol=1e-5)
    # Scale factors whose output size equals the input (or twice it) on some axes,
    # where torch's kernels skip the scale: the export gives ONNX the exact ratio.
    x4 = rand(rng, 1, 2, 3, 5)
    for up in [nn.Upsample(scale_factor=(1.3, 2.1)), nn.Upsample(scale_factor=(1.3, 1.7)),
               nn.Upsample(scale_factor=(1.2, 1.9), mode="bilinear")]:
        seq = nn.Sequential(up)
        path = tmp_path / "resize.onnx"
        seq.to_onnx(path, x4.shape)
        np.testing.assert_allclose(_ort_run(path, x4), seq(x4), rtol=1e-5, atol=1e-6,
                                   err_msg=repr(up))


def test_to_onnx_errors(tmp_path):
    class Custom(nn.Module):
        def forward(self, x):
            return np.sort(x)

    with pytest.raises(InvalidArgument, match=r"numpy.sort \(in module '1'\) has no ONNX export"):
        nn.Sequential(nn.ReLU(), Custom()).to_onnx(None, (1, 2))
    with pytest.raises(InvalidArgument, match="opset must be between 13"):
        nn.Sequential(nn.ReLU()).to_onnx(None, (1, 2), opset=11)
    with pytest.raises(InvalidArgument, match="returns indices"):
        nn.Sequential(nn.MaxPool2d(2, return_indices=True)).to_onnx(None, (1, 1, 4, 4))
    with pytest.raises(InvalidArgument, match="not a fixed pooling window"):
        nn.Sequential(nn.AdaptiveAvgPool2d(3)).to_onnx(None, (1, 1, 4, 4))
    with pytest.raises(InvalidArgument, match="input_shape must be non-empty"):
        nn.Sequential(nn.ReLU()).to_onnx(None, ())
    # An empty stack is the identity.
    onnx_model = nn.Sequential().to_onnx(tmp_path / "empty.onnx", (2, 3))
    assert [n.op_type for n in onnx_model.graph.node] == ["Identity"]


# ---------------------------------------------------------------------------------------
# torch cross-checks (optional)

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="torch not installed: optional cross-check")


def _copy_from_torch(ours, theirs, rng, torch, same_repr=True):
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.from_numpy(rand(rng, m.num_features)))
                m.running_var.copy_(torch.from_numpy(
                    rng.uniform(0.5, 2.0, m.num_features).astype(np.float32)))
                m.weight.copy_(torch.from_numpy(rand(rng, m.num_features)))
                m.num_batches_tracked.fill_(3)
    theirs.eval()
    result = ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert result == ([], [])
    assert list(ours.state_dict()) == list(theirs.state_dict())
    if same_repr:
        assert repr(ours) == repr(theirs)


def _build(lib, spec):
    """The same architecture in torch.nn and pyconv.nn from one description."""
    return lib.Sequential(*[getattr(lib, name)(*args, **kwargs) for name, args, kwargs in spec])


TORCH_MODELS = {
    "cnn2d": ([("Conv2d", (3, 8, 3), dict(padding=1)), ("BatchNorm2d", (8,), {}),
               ("ReLU", (), dict(inplace=True)), ("MaxPool2d", (2,), {}),
               ("Conv2d", (8, 16, 3), dict(stride=2, groups=2, bias=False)),
               ("Hardswish", (), {}), ("Conv2d", (16, 16, 3), dict(padding="same", dilation=2)),
               ("SiLU", (), {}), ("AdaptiveAvgPool2d", ((1, 1),), {}), ("Flatten", (), {}),
               ("Dropout", (0.3,), {}), ("Linear", (16, 10), {}), ("Softmax", (), dict(dim=1))],
              (2, 3, 17, 15)),
    "decoder2d": ([("ConvTranspose2d", (6, 4, 4), dict(stride=2, padding=1)),
                   ("LeakyReLU", (0.2,), {}), ("Upsample", (), dict(scale_factor=2)),
                   ("Conv2d", (4, 4, 3), dict(padding=1)), ("ELU", (), {}),
                   ("Upsample", (), dict(size=(13, 9), mode="bilinear", align_corners=False)),
                   ("ConvTranspose2d", (4, 2, 3), dict(output_padding=1, stride=2, dilation=2)),
                   ("Hardsigmoid", (), {}), ("AvgPool2d", (3,), dict(stride=2, padding=1)),
                   ("Tanh", (), {})],
                  (1, 6, 4, 3)),
    "net1d": ([("Conv1d", (2, 4, 5), dict(stride=2)), ("BatchNorm1d", (4,), {}),
               ("ReLU6", (), {}), ("AvgPool1d", (2,), {}), ("ConvTranspose1d", (4, 3, 3), {}),
               ("Upsample", (), dict(scale_factor=1.5, mode="linear")),
               ("AdaptiveAvgPool1d", (4,), {}), ("Flatten", (), {}), ("Linear", (12, 3), {}),
               ("Sigmoid", (), {})],
              (3, 2, 29)),
    "net3d": ([("Conv3d", (2, 4, 3), dict(padding=(0, 1, 1))), ("BatchNorm3d", (4,), {}),
               ("Hardtanh", (-0.5, 0.8), {}), ("MaxPool3d", (2,), dict(ceil_mode=True)),
               ("ConvTranspose3d", (4, 2, 2), dict(stride=2)),
               ("Upsample", (), dict(scale_factor=(1, 2, 1), mode="trilinear",
                                     align_corners=True)),
               ("AdaptiveMaxPool3d", ((1, 2, 2),), {}), ("Flatten", (), {}),
               ("LogSoftmax", (), dict(dim=1))],
              (1, 2, 5, 6, 7)),
}


@pytest.mark.parametrize("name", sorted(TORCH_MODELS))
def test_sequential_matches_torch(name, torch, rng, tmp_path):
    spec, shape = TORCH_MODELS[name]
    theirs = _build(torch.nn, spec)
    ours = _build(nn, spec)
    _copy_from_torch(ours, theirs, rng, torch)
    x = rand(rng, *shape)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x.copy())).numpy()
    got = ours(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    path = tmp_path / f"{name}.onnx"
    ours.to_onnx(path, shape)
    np.testing.assert_allclose(_ort_run(path, x), expected, rtol=1e-4, atol=1e-5)


def test_custom_module_loads_torch_state_dict(torch, rng):
    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                torch.nn.Conv2d(8, 4, 3, stride=2, bias=False))
            self.head = torch.nn.Linear(36, 5)

        def forward(self, x):
            return self.head(torch.flatten(self.features(x), 1))

    theirs = TorchNet()
    ours = Net()
    _copy_from_torch(ours, theirs, rng, torch, same_repr=False)
    assert repr(ours).replace("Net(", "TorchNet(", 1) == repr(theirs)
    assert ours.state_dict()["features.1.num_batches_tracked"] == 3
    x = rand(rng, 2, 3, 7, 7)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours(x), expected, rtol=1e-4, atol=1e-5)
    # torch tensors themselves are accepted too.
    ours.load_state_dict(theirs.state_dict())
    np.testing.assert_allclose(ours(x), expected, rtol=1e-4, atol=1e-5)


def test_layer_reprs_match_torch(torch):
    specs = [("MaxPool2d", (3,), dict(stride=1, padding=1)), ("AvgPool1d", (3,), {}),
             ("AvgPool2d", (2,), {}), ("AdaptiveMaxPool2d", (1,), {}),
             ("MaxUnpool2d", (2,), {}), ("BatchNorm1d", (3,), dict(eps=1e-3)),
             ("Upsample", (), dict(scale_factor=2)), ("Upsample", (), dict(size=(3, 4))),
             ("UpsamplingBilinear2d", (), dict(scale_factor=2)), ("Flatten", (0, 2), {}),
             ("ReLU6", (), dict(inplace=True)), ("Hardtanh", (), {}), ("ELU", (), {}),
             ("LeakyReLU", (), {}), ("SiLU", (), {}), ("Hardswish", (), {}),
             ("Softmax", (), dict(dim=-1)), ("Identity", (), {}), ("Dropout2d", (), {}),
             ("ConvTranspose2d", (4, 2, 3), dict(stride=2, output_padding=1, dilation=2)),
             ("Conv1d", (2, 4, 3), dict(groups=2, padding="valid")),
             ("Conv3d", (2, 4, 3), dict(bias=False)), ("Linear", (3, 4), dict(bias=False))]
    for name, args, kwargs in specs:
        assert repr(getattr(nn, name)(*args, **kwargs)) == \
            repr(getattr(torch.nn, name)(*args, **kwargs)), name
