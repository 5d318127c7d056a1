"""Alias of :mod:`pyconv.functional`, so ``import pyconv.nn.functional as F`` works as in
torch."""
from pyconv.functional import *  # noqa: F401,F403
from pyconv.functional import __all__  # noqa: F401
