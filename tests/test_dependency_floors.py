"""The dependency floors that pyproject.toml declares, tested: the oldest supported numpy and
onnx are installed into a throwaway virtualenv layered over this environment (its pytest,
onnxruntime and hypothesis, and the extensions built here: NumPy 2 builds target the
NumPy 1.23 C API), and a representative part of the suite runs there in a subprocess.

This is the "oldest dependencies" CI job, run from the one test command that CI runs. It
installs two wheels from the package index (about 30 MB, under a minute).
"""
import os
import re
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import pytest

import pyconv

REPO = Path(pyconv.__file__).resolve().parent.parent
FLOORED = ("numpy", "onnx")
#: Run against the floors: model loading and the session, every conv path, the layer API,
#: the onnxruntime drop-in and the glue ops (the code that leans on NumPy's API the most).
SUBSET = ("tests/test_models.py", "tests/graph/test_session.py",
          "tests/graph/test_glue_ops.py", "tests/functional/test_conv.py",
          "tests/functional/test_pool.py", "tests/test_nn.py", "tests/test_ort_compat.py")


def _floors():
    """{'numpy': '1.23.5', 'onnx': '1.23'} from the installed distribution's requirements."""
    floors = {}
    for req in metadata.requires("pyconv") or ():
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)\s*", req)
        if m and m.group(1).lower() in FLOORED:
            floors[m.group(1).lower()] = m.group(2)
    return floors


def test_floors_are_declared():
    assert set(_floors()) == set(FLOORED), metadata.requires("pyconv")


@pytest.fixture(scope="module")
def floor_python(tmp_path_factory):
    """A python whose numpy and onnx are exactly the declared floors."""
    floors = _floors()
    env_dir = tmp_path_factory.mktemp("floors") / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    pins = [f"{name}=={version}" for name, version in sorted(floors.items())]
    r = subprocess.run([str(python), "-m", "pip", "install", "-q", "--only-binary=:all:",
                        "--disable-pip-version-check", *pins],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and re.search(r"(?i)connection|resolve host|network is unreachable"
                                       r"|temporary failure", r.stderr):
        pytest.skip("the package index is unreachable: the floors cannot be installed")
    assert r.returncode == 0, r.stdout + r.stderr
    return python, floors


def _release(version):
    """(1, 23, 0) for '1.23', '1.23.0' or '1.23.0rc1': releases compare as PEP 440 does."""
    parts = [int(re.match(r"\d+", p).group()) for p in version.split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def _run(python, *args, timeout=900):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([str(python), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_suite_subset_passes_on_the_floors(floor_python):
    python, floors = floor_python
    r = _run(python, "-c", "import numpy, onnx, pyconv; "
                           "print(numpy.__version__, onnx.__version__, pyconv.__file__)")
    assert r.returncode == 0, r.stderr
    numpy_version, onnx_version, where = r.stdout.split()
    # The subprocess really runs the floors and this checkout.
    assert _release(numpy_version) == _release(floors["numpy"])
    assert _release(onnx_version) == _release(floors["onnx"])
    assert Path(where).resolve().parent.parent == REPO
    r = _run(python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *SUBSET)
    assert r.returncode == 0, (r.stdout[-6000:] + r.stderr[-2000:])
    assert re.search(r"\d+ passed", r.stdout), r.stdout[-2000:]
