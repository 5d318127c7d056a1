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
    import signal
    sess = pyconv.InferenceSession(model)
    x = inputs(1, batch=8)[0]
    expected = sess.run(None, {"x": x})
    timer = threading.Timer(0.05, _thread.interrupt_main)
    interrupted = False
    # interrupt_main does nothing while SIGINT is ignored, and a module imported by the
    # full suite's collection leaves it ignored: Python's own handler for this test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer.start()
    try:
        for _ in range(10_000):   # interrupted long before this finishes
            sess.run(None, {"x": x})
    except KeyboardInterrupt:
        interrupted = True
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert interrupted
    for got, want in zip(sess.run(None, {"x": x}), expected):
        np.testing.assert_array_equal(got, want)


def test_answers_do_not_depend_on_the_thread_count(model):
    """GEMM tasks split rows and columns of the output, never the reduction, so every
    output element is summed in the same order at any thread count (bitwise equal)."""
    x = inputs(1)[0]
    outs = {}
    for n in (1, 2, 3, 5):
        opts = pyconv.SessionOptions()
        opts.intra_op_num_threads = n
        outs[n] = pyconv.InferenceSession(model, opts).run(None, {"x": x})
    for n in (2, 3, 5):
        for got, want in zip(outs[n], outs[1]):
            np.testing.assert_array_equal(got, want)


def test_a_session_keeps_its_context_when_the_default_changes(model):
    """set_num_threads / set_isa are the defaults of sessions made afterwards; a session
    keeps the thread count and ISA it was made with, and running it changes no default."""
    previous = pyconv.get_num_threads()
    sess = pyconv.InferenceSession(model)
    made_with = sess.context.num_threads
    x = inputs(1)[0]
    want = sess.run(None, {"x": x})
    try:
        for n in (1, 3, 2):
            pyconv.set_num_threads(n)
            for got, ref in zip(sess.run(None, {"x": x}), want):
                np.testing.assert_array_equal(got, ref)
            assert pyconv.get_num_threads() == n
            assert sess.context.num_threads == made_with
            assert pyconv.InferenceSession(model).context.num_threads == n
    finally:
        pyconv.set_num_threads(previous)


def test_session_option_threads_apply_to_its_runs_only(model):
    previous = pyconv.get_num_threads()
    opts = pyconv.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = pyconv.InferenceSession(model, opts)
    assert sess.context.num_threads == (2 if pyconv.config()["threading"] != "serial" else 1)
    try:
        pyconv.set_num_threads(1)
        out2 = sess.run(None, {"x": inputs(1)[0]})
        assert pyconv.get_num_threads() == 1
        out1 = pyconv.InferenceSession(model).run(None, {"x": inputs(1)[0]})
        for a, b in zip(out1, out2):
            np.testing.assert_array_equal(a, b)
    finally:
        pyconv.set_num_threads(previous)


def test_sessions_with_different_thread_counts_run_concurrently(model):
    """Sessions at 1, 2 and 3 threads, each run from several Python threads at once,
    give their serial answers and leave the process default as it was."""
    previous = pyconv.get_num_threads()
    sessions = []
    for n in (1, 2, 3):
        opts = pyconv.SessionOptions()
        opts.intra_op_num_threads = n
        sessions.append(pyconv.InferenceSession(model, opts))
    feeds = inputs(4, batch=1, seed=3)
    serial = [[s.run(None, {"x": x}) for x in feeds] for s in sessions]
    barrier = threading.Barrier(9)

    def work(i):
        barrier.wait()
        s = i % 3
        return [(s, j, sessions[s].run(None, {"x": feeds[j]})) for j in range(4)
                for _ in range(3)]
    with ThreadPoolExecutor(9) as pool:
        results = [r for rs in pool.map(work, range(9)) for r in rs]
    assert len(results) == 9 * 12
    for s, j, out in results:
        for got, want in zip(out, serial[s][j]):
            np.testing.assert_array_equal(got, want)
    assert pyconv.get_num_threads() == previous
    assert [s.context.num_threads for s in sessions] == (
        [1, 2, 3] if pyconv.config()["threading"] != "serial" else [1, 1, 1])


@pytest.mark.parametrize("bad", [-1, 1500, 2**31, 2.5, "two", True])
def test_absurd_thread_counts_are_refused_before_any_thread_starts(model, bad):
    opts = pyconv.SessionOptions()
    if not isinstance(bad, int) or isinstance(bad, bool):
        # Not an int: refused at assignment, as onnxruntime's options object does.
        with pytest.raises(TypeError, match="intra_op_num_threads must be an int"):
            opts.intra_op_num_threads = bad
    else:
        opts.intra_op_num_threads = bad
        with pytest.raises(pyconv.errors.InvalidArgument, match="SessionOptions."
                           "intra_op_num_threads: expected an integer from 1"):
            pyconv.InferenceSession(model, opts)
    with pytest.raises(pyconv.errors.InvalidArgument, match="expected an integer from 1"):
        pyconv.ExecutionContext(num_threads=bad)
