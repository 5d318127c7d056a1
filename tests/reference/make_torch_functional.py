"""Generate ``torch_functional.npz``: torch's outputs for the torch-named functions and
layers of pyconv (issue 15), read by ``tests/functional/test_torch_names.py``.

torch is a generation tool only, never a test requirement: the tests read the stored
arrays. Each case stores its float32 inputs (seeded ``numpy.random.default_rng``), the
torch output and, for layers, the torch ``state_dict``; ``spec`` (a JSON string) says
how to call each case: ``fn`` (a ``torch.nn.functional`` name, the same in
``pyconv.functional``) or ``module`` (a ``torch.nn`` class, the same in ``pyconv.nn``),
positional ``args`` and ``kwargs``, where a string ``"@name"`` stands for the stored
array ``<case>/name``.

Regenerate (from the repository root, torch installed; the file must stay < 300 KB)::

    python tests/reference/make_torch_functional.py

and commit ``tests/reference/torch_functional.npz`` with the change that needed it.
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as TF

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "torch_functional.npz")

rng = np.random.default_rng(15)
arrays = {}
spec = []


def rand(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def positive(*shape):
    return rng.uniform(0.5, 2.0, shape).astype(np.float32)


def _torch_value(v, case):
    if isinstance(v, str) and v.startswith("@"):
        return torch.from_numpy(arrays[f"{case}/{v[1:]}"])
    if isinstance(v, list):
        return tuple(v)
    return v


def functional(case, fn, inputs, args=(), kwargs=None):
    """Store ``inputs`` (name -> array) and torch's ``fn(*args, **kwargs)``."""
    kwargs = kwargs or {}
    for name, a in inputs.items():
        arrays[f"{case}/{name}"] = a
    y = getattr(TF, fn)(*[_torch_value(a, case) for a in args],
                        **{k: _torch_value(v, case) for k, v in kwargs.items()})
    arrays[f"{case}/y"] = y.detach().numpy().astype(np.float32)
    spec.append({"case": case, "fn": fn, "args": list(args), "kwargs": kwargs})


def module(case, cls, init, x, state=None, init_kwargs=None):
    """Store ``x``, the module's state_dict (after loading ``state``) and its output."""
    init_kwargs = init_kwargs or {}
    m = getattr(torch.nn, cls)(*init, **init_kwargs).eval()
    if state:
        m.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    keys = []
    for k, v in m.state_dict().items():
        arrays[f"{case}/state/{k}"] = v.numpy()
        keys.append(k)
    arrays[f"{case}/x"] = x
    with torch.no_grad():
        arrays[f"{case}/y"] = m(torch.from_numpy(x)).numpy().astype(np.float32)
    spec.append({"case": case, "module": cls, "init": list(init), "init_kwargs": init_kwargs,
                 "state": keys})


# --- unfold / fold -----------------------------------------------------------------------
functional("unfold_pad_stride", "unfold", {"x": rand(2, 3, 7, 6)}, ["@x", 3],
           {"padding": 1, "stride": 2})
functional("unfold_tuples", "unfold", {"x": rand(1, 2, 8, 7)}, ["@x", [2, 3]],
           {"dilation": [2, 1], "padding": [1, 0], "stride": [1, 2]})
functional("unfold_unbatched", "unfold", {"x": rand(3, 5, 5)}, ["@x", 2])
functional("fold_pad_stride", "fold", {"x": rand(2, 27, 12)}, ["@x", [7, 6], 3],
           {"padding": 1, "stride": 2})
functional("fold_dilation", "fold", {"x": rand(1, 12, 12)}, ["@x", 6, [2, 3]],
           {"dilation": [2, 1], "stride": [1, 2], "padding": [0, 1]})
functional("fold_unbatched", "fold", {"x": rand(8, 9)}, ["@x", [4, 4], 2])

# --- pixel (un)shuffle ---------------------------------------------------------------------
functional("pixel_shuffle_4d", "pixel_shuffle", {"x": rand(2, 8, 3, 4)}, ["@x", 2])
functional("pixel_shuffle_5d", "pixel_shuffle", {"x": rand(2, 2, 9, 2, 3)}, ["@x", 3])
functional("pixel_shuffle_unbatched", "pixel_shuffle", {"x": rand(8, 3, 3)}, ["@x", 2])
functional("pixel_unshuffle_4d", "pixel_unshuffle", {"x": rand(2, 3, 4, 6)}, ["@x", 2])
functional("pixel_unshuffle_unbatched", "pixel_unshuffle", {"x": rand(2, 6, 3)}, ["@x", 3])

# --- normalisation -------------------------------------------------------------------------
functional("layer_norm_affine", "layer_norm",
           {"x": rand(2, 3, 5) * 3 + 1, "w": rand(5), "b": rand(5)}, ["@x", [5], "@w", "@b"])
functional("layer_norm_2d_eps", "layer_norm", {"x": rand(2, 3, 4, 5)}, ["@x", [4, 5]],
           {"eps": 1e-3})
functional("group_norm_affine", "group_norm",
           {"x": rand(2, 6, 4, 5) + 2, "w": rand(6), "b": rand(6)}, ["@x", 3, "@w", "@b"])
functional("group_norm_plain", "group_norm", {"x": rand(3, 4, 7)}, ["@x", 4], {"eps": 1e-2})
functional("group_norm_2d", "group_norm", {"x": rand(5, 6)}, ["@x", 2])
functional("instance_norm_affine", "instance_norm",
           {"x": rand(2, 3, 5, 4) * 2 - 1, "w": rand(3), "b": rand(3)}, ["@x"],
           {"weight": "@w", "bias": "@b"})
functional("instance_norm_1d", "instance_norm", {"x": rand(2, 3, 7)}, ["@x"], {"eps": 1e-3})
functional("instance_norm_running", "instance_norm",
           {"x": rand(2, 3, 4, 3), "m": rand(3), "v": positive(3), "w": rand(3),
            "b": rand(3)}, ["@x", "@m", "@v", "@w", "@b"], {"use_input_stats": False})

# --- interpolate: bicubic and area ---------------------------------------------------------
x_bc = rand(1, 2, 5, 6)
for case, kw in [("bicubic_size", {"size": [9, 4]}),
                 ("bicubic_size_ac", {"size": [9, 4], "align_corners": True}),
                 ("bicubic_scale", {"scale_factor": 1.7}),
                 ("bicubic_scale_ac", {"scale_factor": [2.0, 1.5], "align_corners": True}),
                 ("bicubic_down", {"scale_factor": 0.6}),
                 ("bicubic_recompute", {"scale_factor": 1.7, "recompute_scale_factor": True}),
                 ("bicubic_one", {"size": [1, 1]}),
                 ("area_2d", {"size": [3, 4]}),
                 ("area_2d_up", {"scale_factor": 1.5})]:
    functional(case, "interpolate", {"x": x_bc}, ["@x"],
               {"mode": "area" if case.startswith("area") else "bicubic", **kw})
functional("area_1d", "interpolate", {"x": rand(1, 2, 10)}, ["@x"],
           {"size": 4, "mode": "area"})
functional("area_3d", "interpolate", {"x": rand(1, 1, 5, 6, 7)}, ["@x"],
           {"scale_factor": 0.5, "mode": "area"})

# --- unbatched convolutions ----------------------------------------------------------------
functional("conv1d_unbatched", "conv1d", {"x": rand(3, 9), "w": rand(4, 3, 3), "b": rand(4)},
           ["@x", "@w", "@b"], {"padding": 1})
functional("conv2d_unbatched", "conv2d", {"x": rand(3, 7, 6), "w": rand(5, 3, 3, 3)},
           ["@x", "@w"], {"stride": 2, "padding": 1})
functional("conv3d_unbatched", "conv3d", {"x": rand(2, 4, 5, 6), "w": rand(4, 1, 2, 2, 2)},
           ["@x", "@w"], {"groups": 2})
functional("conv_transpose1d_unbatched", "conv_transpose1d",
           {"x": rand(3, 6), "w": rand(3, 2, 3)}, ["@x", "@w"], {"stride": 2})
functional("conv_transpose2d_unbatched", "conv_transpose2d",
           {"x": rand(3, 5, 5), "w": rand(3, 2, 3, 3), "b": rand(2)}, ["@x", "@w", "@b"],
           {"stride": 2, "padding": 1, "output_padding": 1})
functional("conv_transpose3d_unbatched", "conv_transpose3d",
           {"x": rand(2, 3, 3, 4), "w": rand(2, 2, 2, 2, 2)}, ["@x", "@w"], {"dilation": 2})

# --- layers (state_dicts as torch writes them) ---------------------------------------------
module("LayerNorm", "LayerNorm", [[4, 5]], rand(2, 3, 4, 5),
       {"weight": rand(4, 5), "bias": rand(4, 5)})
module("LayerNorm_no_bias", "LayerNorm", [6], rand(3, 6), {"weight": rand(6)},
       {"bias": False})
module("GroupNorm", "GroupNorm", [2, 6], rand(2, 6, 3, 3),
       {"weight": rand(6), "bias": rand(6)})
module("InstanceNorm1d", "InstanceNorm1d", [3], rand(2, 3, 8))
module("InstanceNorm2d_affine", "InstanceNorm2d", [3], rand(2, 3, 4, 5),
       {"weight": rand(3), "bias": rand(3)}, {"affine": True})
module("InstanceNorm2d_unbatched", "InstanceNorm2d", [3], rand(3, 4, 5))
module("InstanceNorm3d_running", "InstanceNorm3d", [2], rand(2, 2, 3, 3, 4),
       {"running_mean": rand(2), "running_var": positive(2), "weight": rand(2),
        "bias": rand(2)}, {"affine": True, "track_running_stats": True})
module("PixelShuffle", "PixelShuffle", [2], rand(1, 8, 3, 2))
module("PixelUnshuffle", "PixelUnshuffle", [2], rand(1, 2, 4, 6))
module("Unfold", "Unfold", [[2, 3]], rand(2, 2, 5, 6), init_kwargs={"padding": 1})
module("Fold", "Fold", [[5, 6], 2], rand(2, 8, 20))
module("Upsample_bicubic", "Upsample", [], rand(1, 2, 4, 5),
       init_kwargs={"scale_factor": 2.0, "mode": "bicubic"})

arrays["spec"] = np.array(json.dumps(spec))
np.savez_compressed(OUT, **arrays)
print(f"{OUT}: {len(spec)} cases, {os.path.getsize(OUT)} bytes")
