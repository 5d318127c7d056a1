"""Python's cyclic garbage collector paused while pyconv builds a large structure.

Building a session for an n-node graph allocates several objects per node (nodes,
operators, steps, their lists); each full collection that these allocations trigger
walks every object alive, so a 100,000-node graph spent about half of its creation
time in the collector, walking the same objects again and again. None of these
objects form garbage cycles that need collecting during the build, so collection is
paused for it and restored afterwards.
"""
from __future__ import annotations

import contextlib
import gc
import threading

_lock = threading.Lock()
_depth = 0              # builds in progress (several threads may create sessions at once)
_was_enabled = False    # whether collection was on when the first of them began


@contextlib.contextmanager
def collection_paused():
    """Automatic collection off inside the block; when the last of the blocks running
    at once (in several threads) ends, on success or error, it is back on if it was on
    when the first began."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
