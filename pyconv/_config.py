"""Runtime configuration: ISA path, thread count, and the show_config() report."""
import os
import sys

from pyconv._ext import gemm as _gemm
from pyconv.errors import UnsupportedISA

set_num_threads = _gemm.set_num_threads
get_num_threads = _gemm.get_num_threads
set_isa = _gemm.set_isa
get_isa = _gemm.get_isa
supported_isas = _gemm.supported_isas


def _importing_for_command_line():
    """True while this import is the start of the `pyconv` command (its console script,
    or ``python -m pyconv``, when ``sys.argv[0]`` is still ``-m``)."""
    orig = getattr(sys, "orig_argv", [])          # Python >= 3.10
    if "-m" in orig[:-1]:
        return orig[orig.index("-m") + 1].split(".")[0] == "pyconv"
    return sys.argv[:1] == ["-m"] or os.path.basename(sys.argv[0] if sys.argv else "") in (
        "pyconv", "pyconv.exe")


def _init_from_environment():
    """Apply PYCONV_ISA and OMP_NUM_THREADS at import time.

    A bad PYCONV_ISA fails the import with UnsupportedISA; for the command line it is one
    line on stderr and exit status 2 (a bad setting), like its other usage errors."""
    _gemm.set_num_threads(_gemm.default_num_threads())
    requested = os.environ.get("PYCONV_ISA", "").strip().lower()
    if requested and requested != "auto":
        try:
            _gemm.set_isa(requested)
        except (UnsupportedISA, ValueError) as exc:
            message = f"PYCONV_ISA={requested!r}: {exc}"
            if _importing_for_command_line():
                print(f"pyconv: error: {message}", file=sys.stderr)
                raise SystemExit(2) from None
            raise UnsupportedISA(message) from None


_THREADING = {
    "pool": "pool (pyconv's thread pool: the caller runs what no worker has taken)",
    "openmp": "openmp (OpenMP regions: a PYCONV_THREADING=openmp build)",
    "serial": "serial (no threads: a PYCONV_THREADING=serial build, or no OpenMP)",
}


def config():
    """The configuration show_config() prints, as a dict."""
    info = _gemm.kernel_info()
    return {
        "isa": info["isa"],
        "supported_isas": list(_gemm.supported_isas()),
        "micro_kernel": info["ukernel"],
        "register_tile": f"{info['mr']}x{info['nr']}",
        "blocking": {"MR": info["mr"], "NR": info["nr"], "KC": info["kc"], "NC": info["nc"]},
        "caches": {"L1d": info["l1_bytes"], "L2": info["l2_bytes"], "L3": info["l3_bytes"]},
        "threading": _gemm.parallel_backend(),
        "num_threads": _gemm.get_num_threads(),
        "max_threads": _gemm.max_threads(),
    }


def show_config(file=None):
    """Print the ISA path, threading backend, thread count and blocking sizes in use."""
    from pyconv import __version__

    c = config()
    kib = lambda b: f"{b // 1024} KiB" if b else "unknown"
    lines = [
        f"pyconv {__version__}",
        f"  ISA path      : {c['isa']} (supported here: {', '.join(c['supported_isas'])}; "
        f"force with PYCONV_ISA)",
        f"  micro-kernel  : {c['micro_kernel']} (MR x NR = {c['register_tile']})",
        "  blocking      : " + ", ".join(f"{k}={v}" for k, v in c["blocking"].items()),
        "  caches        : " + ", ".join(f"{k} {kib(v)}" for k, v in c["caches"].items()),
        f"  threading     : {_THREADING[c['threading']]}",
        f"  threads       : {c['num_threads']} (set_num_threads / OMP_NUM_THREADS; at most "
        f"{c['max_threads']})",
    ]
    print("\n".join(lines), file=file or sys.stdout)
