"""Sessions under threads: concurrent runs, several sessions, interrupts, thread counts."""
import _thread
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import pyconv
from _models import residual_cnn


@pytest.fixture(scope="module")
def model():
    return residual_cnn().SerializeToString()


def inputs(count, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, 3, 32, 32)).astype(np.float32) for _ in range(count)]


def test_one_session_from_eight_threads_matches_serial_runs(model):
    sess = pyconv.InferenceSession(model)
    feeds = inputs(16)
    serial = [sess.run(None, {"x": x}) for x in feeds]
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait()   # all eight threads enter run() together
        return [sess.run(None, {"x": feeds[j]}) for j in range(i, 16, 8)] + \
               [sess.run(None, {"x": feeds[j]}) for j in range(i, 16, 8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    for i, outs in enumerate(results):
        for k, out in enumerate(outs):
            j = list(range(i, 16, 8))[k % 2]
            for got, want in zip(out, serial[j]):
                np.testing.assert_array_equal(got, want)


def test_several_sessions_in_threads_match_their_serial_runs():
    models = [residual_cnn(channels=c, seed=c).SerializeToString() for c in (8, 12, 16)]
    sessions = [pyconv.InferenceSession(m) for m in models]
    x = inputs(1)[0]
    serial = [s.run(None, {"x": x}) for s in sessions]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: sessions[i % 3].run(None, {"x": x}), range(12)))
    for i, out in enumerate(results):
        for got, want in zip(out, serial[i % 3]):
            np.testing.assert_array_equal(got, want)


def test_keyboard_interrupt_leaves_the_session_usable(model):
    sess = pyconv.InferenceSession(model)
    x = inputs(1, batch=8)[0]
    expected = sess.run(None, {"x": x})
    timer = threading.Timer(0.05, _thread.interrupt_main)
    interrupted = False
    timer.start()
    try:
        for _ in range(10_000):   # interrupted long before this finishes
            sess.run(None, {"x": x})
    except KeyboardInterrupt:
        interrupted = True
    finally:
        timer.cancel()
    assert interrupted
    for got, want in zip(sess.run(None, {"x": x}), expected):
        np.testing.assert_array_equal(got, want)


def test_thread_count_changes_between_runs_are_honoured(model):
    """set_num_threads between runs takes effect, and the answer does not depend on it:
    GEMM threads split rows and columns of the output, never the reduction, so every
    output element is summed in the same order at any thread count (bitwise equal)."""
    previous = pyconv.get_num_threads()
    sess = pyconv.InferenceSession(model)
    x = inputs(1)[0]
    try:
        outs = {}
        for n in (1, 2, 3, 1):
            pyconv.set_num_threads(n)
            assert pyconv.get_num_threads() == n
            outs[n] = sess.run(None, {"x": x})
            assert pyconv.get_num_threads() == n   # a run does not change the setting
        for n in (2, 3):
            for got, want in zip(outs[n], outs[1]):
                np.testing.assert_array_equal(got, want)
    finally:
        pyconv.set_num_threads(previous)


def test_session_option_threads_apply_to_its_runs_only(model):
    previous = pyconv.get_num_threads()
    opts = pyconv.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = pyconv.InferenceSession(model, opts)
    try:
        pyconv.set_num_threads(1)
        out2 = sess.run(None, {"x": inputs(1)[0]})
        assert pyconv.get_num_threads() == 1
        out1 = pyconv.InferenceSession(model).run(None, {"x": inputs(1)[0]})
        for a, b in zip(out1, out2):
            np.testing.assert_array_equal(a, b)
    finally:
        pyconv.set_num_threads(previous)
