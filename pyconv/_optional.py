"""Optional dependencies: imported when a feature first needs them, never by
``import pyconv``, with one clear message when they are missing."""
import importlib

from pyconv.errors import MissingDependency

#: top-level module -> (distribution to install, the pyconv extra that brings it)
OPTIONAL = {"PIL": ("Pillow", "images"), "ray": ("ray[data]", "ray"),
            "pyarrow": ("pyarrow", "ray")}


def require(module, feature):
    """Import ``module`` (e.g. ``"PIL.Image"``) for ``feature`` (e.g. ``"reading images"``).

    Raises
    ------
    MissingDependency
        The package is not installed; the message names it and the extra to install.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        dist, extra = OPTIONAL[module.partition(".")[0]]
        raise MissingDependency(f"{feature} needs {dist}, which is not installed: "
                                f"pip install 'pyconv[{extra}]' (or pip install "
                                f"{repr(dist) if '[' in dist else dist})"
                                ) from exc
