"""The phase copy's bands at the kernel level (phase_copy_bands.c): filled in any number
of bands the copy equals the one made in one call, and each band writes exactly its own
floats (neighbouring bands are filled by different threads at once, so a float written by
two would be a race the conv's result cannot show). Built against each ISA's kernel file
this CPU runs."""
import os
import shutil
import subprocess

import pytest

import pyconv

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "src", "kernels")
CC = shutil.which("gcc") or shutil.which("cc")
FLAGS = {"avx512": ["-mavx512f", "-mavx2", "-mfma"], "avx2": ["-mavx2", "-mfma"],
         "generic": []}

pytestmark = pytest.mark.skipif(CC is None or not os.path.isdir(KERNELS),
                                reason="needs a C compiler and the source tree's src/kernels")


@pytest.mark.parametrize("isa", [i for i in ("generic", "avx2", "avx512")
                                 if i in pyconv.supported_isas()])
def test_phase_copy_bands_write_exactly_their_floats(tmp_path, isa):
    exe = str(tmp_path / f"bands_{isa}")
    source = os.path.join(KERNELS, f"sgemm_{isa}.c")
    r = subprocess.run([CC, "-O2", *FLAGS[isa], f'-DKERNEL_FILE="{source}"', "-I", KERNELS,
                        os.path.join(HERE, "phase_copy_bands.c"), "-o", exe, "-lm"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-4000:]
    r = subprocess.run([exe, "20000"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("ok "), r.stdout + r.stderr[-2000:]
    assert int(r.stdout.split()[1]) > 10000      # most random geometries are valid
