"""Generate tests/reference/torch_nn.npz: torch.nn modules, their state_dicts, inputs and
outputs, for tests/test_nn_torch.py (which runs without torch).

Run from the repository root with torch installed (a generation tool, never a test or
runtime requirement)::

    python tests/reference/make_torch_nn.py

For each model the archive holds ``<model>/keys`` (torch's state_dict key order),
``<model>/sd32/<key>`` (the state_dict as float32, ``num_batches_tracked`` int64),
``<model>/sd64/<key>`` (every entry as float64, to test load_state_dict's casting),
``<model>/input`` and ``<model>/output`` (float32, computed by torch in eval mode), and
``<model>/repr`` (torch's repr of the module).
"""
import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_nn.npz")


class ListNet(nn.Module):
    """ModuleList of convs and of activations (GELU both forms, per-channel PReLU)."""

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
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class DictNet(nn.Module):
    """ModuleDict layers run in order, then two ModuleDict branches concatenated."""

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
        return torch.cat([branch(x) for branch in self.branches.values()], 1)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock with a strided 1x1 downsample."""

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


def _models():
    return {
        "listnet": (ListNet(), (2, 3, 7, 6)),
        "dictnet": (DictNet(), (2, 4, 6, 7)),
        "block": (BasicBlock(), (2, 4, 9, 8)),
        "gelu": (nn.GELU(), (3, 5, 4)),
        "gelu_tanh": (nn.GELU(approximate="tanh"), (3, 5, 4)),
        "prelu1": (nn.PReLU(init=0.1), (2, 3, 4)),
        "prelu_channels": (nn.PReLU(5), (2, 5, 3, 2)),
        "zeropad2d": (nn.ZeroPad2d((1, 2, 3, 0)), (2, 3, 4, 5)),
        "zeropad2d_crop": (nn.ZeroPad2d((-1, 2, 0, -2)), (1, 2, 4, 5)),
        "constantpad1d": (nn.ConstantPad1d((2, 1), 1.5), (2, 3, 4)),
        "reflectionpad2d": (nn.ReflectionPad2d((1, 2, 2, 0)), (1, 2, 4, 5)),
        "replicationpad2d": (nn.ReplicationPad2d(2), (1, 2, 3, 4)),
    }


def _randomize(model, gen):
    """Non-trivial batch-norm statistics and PReLU slopes (torch's init has neither)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                m.weight.copy_(torch.randn(c, generator=gen))
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.5)


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    arrays = {}
    for name, (model, shape) in _models().items():
        _randomize(model, gen)
        model.eval()
        x = (torch.randn(shape, generator=gen) * 2).float()
        with torch.no_grad():
            y = model(x.clone())
        sd = model.state_dict()
        arrays[f"{name}/keys"] = np.array(list(sd), dtype=str)
        arrays[f"{name}/repr"] = np.array(repr(model))
        for key, value in sd.items():
            arrays[f"{name}/sd32/{key}"] = value.numpy()
            arrays[f"{name}/sd64/{key}"] = value.numpy().astype(np.float64)
        arrays[f"{name}/input"] = x.numpy()
        arrays[f"{name}/output"] = y.numpy()
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT}: {os.path.getsize(OUT)} bytes, {len(arrays)} arrays")


if __name__ == "__main__":
    main()
