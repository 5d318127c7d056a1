"""busy_host's idle wait: a block starts only once the previous worker stopped using the
CPU (behaviour, not speed)."""
import os
import subprocess
import sys
import time

import pytest

from benchmarks.busy_host import cpu_ns, wait_idle

pytestmark = pytest.mark.skipif(cpu_ns(os.getpid()) is None,
                                reason="per-thread CPU times come from Linux /proc schedstat")

# Spins for 0.3 s of its own CPU time, says so, then sleeps (as a pool's poller does after
# its caller returns).
_POLLER = ("import time, sys\n"
           "end = time.process_time() + 0.3\n"
           "while time.process_time() < end:\n"
           "    pass\n"
           "print('done', flush=True)\n"
           "time.sleep(30)\n")


def test_wait_idle_returns_once_the_process_stops_polling():
    child = subprocess.Popen([sys.executable, "-c", _POLLER], stdout=subprocess.PIPE,
                             text=True)
    try:
        while cpu_ns(child.pid) < 50_000_000:      # started polling (interpreter loaded)
            time.sleep(0.005)
        wait_idle(child.pid, timeout_s=30)
        used = cpu_ns(child.pid)
        assert used >= 300_000_000, f"returned while the child polled ({used} ns of CPU)"
        assert child.stdout.readline().strip() == "done"
        time.sleep(0.05)
        assert cpu_ns(child.pid) - used < 25_000_000, "the child was still busy"
    finally:
        child.kill()
        child.wait()


def test_cpu_ns_of_a_gone_process_is_none_and_wait_idle_returns():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert cpu_ns(child.pid) is None
    wait_idle(child.pid)                            # nothing to wait for
