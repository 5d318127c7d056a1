"""pytest-benchmark comparisons of pyconv with onnxruntime, NumPy and torch (a package, so
that its test module names never clash with those in tests/)."""
