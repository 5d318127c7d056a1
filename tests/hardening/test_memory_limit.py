"""SessionOptions.memory_limit_bytes refuses runs that need more activation memory."""
import numpy as np
import pytest

import pyconv
from pyconv.errors import MemoryLimitExceeded
from _models import residual_cnn


def session(limit):
    opts = pyconv.SessionOptions()
    opts.memory_limit_bytes = limit
    return pyconv.InferenceSession(residual_cnn().SerializeToString(), opts)


def test_a_tight_limit_stops_the_run_with_a_clear_error():
    x = np.zeros((4, 3, 32, 32), np.float32)
    with pytest.raises(MemoryLimitExceeded, match="memory_limit_bytes=100,000"):
        session(100_000).run(None, {"x": x})
    assert issubclass(MemoryLimitExceeded, MemoryError)


def test_a_generous_limit_changes_nothing_and_plans_are_checked_too():
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    expected = pyconv.InferenceSession(residual_cnn().SerializeToString()).run(None, {"x": x})
    sess = session(64 << 20)
    for _ in range(3):   # the first run builds the plan, the next ones check it
        for got, want in zip(sess.run(None, {"x": x}), expected):
            np.testing.assert_array_equal(got, want)
    stats = sess.memory_stats() if callable(sess.memory_stats) else sess.memory_stats
    assert stats    # the plan exists and reports its sizes
    # A bigger batch needs a new plan: 64 images of 16 x 32 x 32 floats per value are over
    # a 2 MB limit, refused before the arena is allocated or at the first large node.
    small = session(2 << 20)
    small.run(None, {"x": x[:1]})
    with pytest.raises(MemoryLimitExceeded):
        small.run(None, {"x": np.zeros((64, 3, 32, 32), np.float32)})
