"""Model inputs for the command line: shape overrides, files, images, random feeds."""
import os
import re

import numpy as np

from pyconv._optional import require
from pyconv.batch import pixels_to_tensor
from pyconv.errors import InvalidArgument

# ONNX element types the CLI can feed or synthesise, as NumPy dtypes.
_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
           "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
           "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def parse_shape(text):
    """'NAME=1x3x224x224' -> ('NAME', (1, 3, 224, 224))."""
    name, sep, dims = text.rpartition("=")
    if not sep or not name or not re.fullmatch(r"\d+(x\d+)*", dims):
        raise InvalidArgument(f"--shape {text!r}: expected NAME=DIMxDIMx... "
                              f"(e.g. input=1x3x224x224)")
    return name, tuple(int(d) for d in dims.split("x"))


def parse_assignment(text, option):
    """'NAME=VALUE' -> (NAME, VALUE)."""
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise InvalidArgument(f"{option} {text!r}: expected NAME=FILE")
    return name, value


def concrete_shape(arg, overrides, default_dim=1):
    """The input's shape with symbolic dims resolved: --shape first, then `default_dim`
    for a leading (batch) dim. Other unknown dims are an error naming them."""
    if arg.name in overrides:
        shape = overrides[arg.name]
        if len(shape) != len(arg.shape):
            raise InvalidArgument(f"--shape {arg.name}: model input has rank {len(arg.shape)} "
                                  f"{_show(arg.shape)}, got {len(shape)} dims {shape}")
        for i, (want, got) in enumerate(zip(arg.shape, shape)):
            if isinstance(want, int) and want != got:
                raise InvalidArgument(f"--shape {arg.name}: dim {i} is fixed at {want} in the "
                                      f"model, got {got}")
        return shape
    shape, unknown = [], []
    for i, d in enumerate(arg.shape):
        if isinstance(d, int) and d > 0:
            shape.append(d)
        elif i == 0:
            shape.append(default_dim)
        else:
            unknown.append(str(d))
            shape.append(None)
    if unknown:
        example = "x".join("H" if s is None else str(s) for s in shape)
        raise InvalidArgument(f"input {arg.name!r} has symbolic dims {', '.join(unknown)}: "
                              f"give them with --shape {arg.name}={example}")
    return tuple(shape)


def _show(shape):
    return "(" + ", ".join(str(d) for d in shape) + ")"


def random_feed(inputs, overrides, seed=0):
    """Standard-normal float inputs (zeros for integer/bool ones) of concrete shapes."""
    rng = np.random.default_rng(seed)
    feed = {}
    for arg in inputs:
        shape = concrete_shape(arg, overrides)
        dtype = _DTYPES.get(arg.type)
        if dtype is None:
            raise InvalidArgument(f"input {arg.name!r}: cannot synthesise type {arg.type}; "
                                  f"pass it with --input")
        if np.issubdtype(dtype, np.floating):
            feed[arg.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[arg.name] = np.zeros(shape, dtype)
    return feed


def load_image(path, shape, normalize):
    """A PNG/JPEG as an (1, C, H, W) float32 array for an NCHW model input.

    The image is converted to the channel count the model wants (1: grey, 3: RGB), resized
    to its H x W when those are fixed (bilinear), scaled to [0, 1], then normalised per
    channel with ``(x - mean) / std``."""
    Image = require("PIL.Image", "reading images")
    if len(shape) != 4:
        raise InvalidArgument(f"{path}: an image feeds a 4-D NCHW input, the model's has "
                              f"shape {_show(shape)}")
    channels, height, width = shape[1], shape[2], shape[3]
    if channels not in (1, 3):
        raise InvalidArgument(f"{path}: images give 1 or 3 channels, the input wants "
                              f"{channels}")
    try:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    except OSError as exc:
        raise InvalidArgument(f"{path}: not a readable image ({exc})") from None
    # Checked here to name the command's options; the arithmetic is the batch predictor's.
    mean, std = (_per_channel(option, values, channels, path) for option, values in
                 zip(("--mean", "--std"), normalize))
    if not np.all(std != 0):
        raise InvalidArgument(f"--std {_csv(normalize[1])}: a standard deviation is 0")
    size = (height, width) if isinstance(height, int) and isinstance(width, int) else None
    return pixels_to_tensor(pixels, channels, normalize[0], normalize[1], size, path)[None]


def _csv(values):
    return ",".join(f"{v:g}" for v in values)


def _per_channel(option, values, channels, path):
    """--mean / --std values as a (C, 1, 1) array: one value for every channel, or one
    per channel."""
    if len(values) not in (1, channels):
        raise InvalidArgument(f"{option} {_csv(values)}: {len(values)} values, but {path} "
                              f"feeds an input with {channels} channel(s): give 1 value or "
                              f"{channels}")
    return np.asarray(values, np.float32).reshape(-1, 1, 1)


def load_feed(assignments, inputs, normalize=((0.0,), (1.0,))):
    """{name: array} from --input NAME=FILE options (.npy, .npz or an image)."""
    by_name = {arg.name: arg for arg in inputs}
    feed = {}
    for text in assignments:
        name, path = parse_assignment(text, "--input")
        if name not in by_name:
            raise InvalidArgument(f"--input {name}: the model has no input {name!r} "
                                  f"(inputs: {', '.join(by_name)})")
        if not os.path.isfile(path):
            raise InvalidArgument(f"--input {name}: no such file {path!r}")
        lower = path.lower()
        try:
            if lower.endswith(".npy"):
                feed[name] = np.load(path, allow_pickle=False)
            elif lower.endswith(".npz"):
                with np.load(path, allow_pickle=False) as z:
                    keys = list(z.keys())
                    key = name if name in keys else (keys[0] if len(keys) == 1 else None)
                    if key is None:
                        raise InvalidArgument(f"--input {name}: {path} holds {keys}; name "
                                              f"one array {name!r} or store only one")
                    feed[name] = z[key]
            elif lower.endswith(IMAGE_SUFFIXES):
                feed[name] = load_image(path, by_name[name].shape, normalize)
            else:
                raise InvalidArgument(f"--input {name}: {path} is not .npy, .npz or an "
                                      f"image ({', '.join(IMAGE_SUFFIXES)})")
        except (OSError, ValueError) as exc:
            if isinstance(exc, InvalidArgument):
                raise
            raise InvalidArgument(f"--input {name}: cannot read {path}: {exc}") from None
    missing = [n for n in by_name if n not in feed]
    if missing:
        raise InvalidArgument(f"missing --input for {', '.join(missing)}")
    return feed
