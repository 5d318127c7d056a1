"""The bundled models and what measures them, shipped inside the package.

- ``shapes_classifier.onnx`` and ``shapes_unet.onnx``: two small CNNs trained on a
  synthetic shapes dataset (model cards: ``models/README.md`` in the repository);
- :mod:`pyconv.models.shapes`: that dataset's generator (NumPy only);
- :mod:`pyconv.models.evaluate`: sessions, accuracy / mean IoU and latency for them
  (``python -m pyconv.models.evaluate``; ``pyconv demo`` runs on it).

The ``.onnx`` files are package data, found with :mod:`importlib.resources`; the training
scripts stay in the repository's ``models/`` directory. Importing ``pyconv`` does not
import this package.
"""
from importlib import resources

from pyconv.errors import InvalidArgument

__all__ = ["CLASSIFIER", "SEGMENTER", "BUNDLED", "path"]

#: File names of the bundled models.
CLASSIFIER = "shapes_classifier.onnx"
SEGMENTER = "shapes_unet.onnx"
BUNDLED = (CLASSIFIER, SEGMENTER)


def path(name):
    """Filesystem path (str) of the bundled model file ``name``, e.g. ``path(CLASSIFIER)``.

    The package holds compiled extensions, so it is always installed as files on disk
    (never imported from a zip archive): the resource is a real file.
    """
    if name not in BUNDLED:
        raise InvalidArgument(f"no bundled model {name!r}; the bundled models are {BUNDLED}")
    return str(resources.files(__name__) / name)
