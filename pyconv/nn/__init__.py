"""Layers with ``torch.nn`` names, constructors and state_dict keys, on NumPy arrays.

Build a model as in torch, load a torch ``state_dict`` converted to NumPy, and run it::

    import pyconv.nn as nn
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    model.load_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()})
    y = model(x)                      # x: float32 ndarray (N, 3, H, W)
    model.to_onnx("model.onnx", input_shape=(1, 3, 32, 32))

Inference only: modules start in evaluation mode. Parameters are float32 arrays held as
read-only copies; assign new arrays (or load a state dict) to change them.
"""
from pyconv.nn import functional
from pyconv.nn._conv import *  # noqa: F401,F403
from pyconv.nn._layers import *  # noqa: F401,F403
from pyconv.nn._module import *  # noqa: F401,F403
from pyconv.nn._pool import *  # noqa: F401,F403
from pyconv.nn import _conv, _layers, _module, _pool

__all__ = sorted(_module.__all__ + _conv.__all__ + _pool.__all__ + _layers.__all__
                 + ["functional"])
