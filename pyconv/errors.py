"""Exceptions raised by pyconv.

Every error pyconv raises on bad input derives from :class:`PyconvError`, and
also from the built-in exception a Python user would expect (``ValueError`` or
``TypeError``), so ``except ValueError`` keeps working.
"""


class PyconvError(Exception):
    """Base class of every exception raised by pyconv."""


class InvalidArgument(PyconvError, ValueError):
    """An argument has a wrong value or shape (names the argument and values)."""


class InvalidDType(PyconvError, TypeError):
    """An array has a dtype pyconv does not accept here."""


class ShapeError(InvalidArgument):
    """Shapes do not fit together (names the shapes involved)."""


class UnsupportedISA(PyconvError, RuntimeError):
    """A SIMD path was requested that this CPU or build cannot run."""


class InvalidModel(PyconvError, ValueError):
    """A model file is unreadable, malformed or inconsistent."""


class UnsupportedOperator(InvalidModel):
    """A model uses operators pyconv does not implement."""


class MemoryLimitExceeded(PyconvError, MemoryError):
    """A run would need more activation memory than ``SessionOptions.memory_limit_bytes``."""


class RunFailed(PyconvError, RuntimeError):
    """A run that did not execute: ``RunOptions.terminate`` was set, or an I/O binding
    does not fit the model (where onnxruntime raises ``Fail`` or ``RuntimeError``)."""


class MissingDependency(PyconvError, ImportError):
    """An optional package that a feature needs is not installed (names the package and
    the pyconv extra that brings it)."""
