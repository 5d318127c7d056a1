"""Compiled extensions (Cython + C kernels). Private: use the public pyconv API."""
