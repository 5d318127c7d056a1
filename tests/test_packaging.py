"""The package as it ships: import cost and optional extras.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pyconv
from pyconv import models as bundled
from pyconv.errors import InvalidArgument

REPO = Path(pyconv.__file__).resolve().parent.parent


def test_bundled_models_are_package_data():
    for name in bundled.BUNDLED:
        path = Path(bundled.path(name))
        assert path.is_file() and path.parent == Path(bundled.__file__).parent
        assert path.read_bytes()[:1] == b"\x08"    # ONNX ModelProto: field 1, ir_version
    with pytest.raises(InvalidArgument, match="no bundled model 'resnet.onnx'"):
        bundled.path("resnet.onnx")


def _python(code, *, pythonpath=(), cwd=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, pythonpath), str(REPO)]),
               OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_import_pyconv_imports_neither_onnx_nor_the_extras():
    r = _python("import sys, pyconv; print(sorted(m for m in ('onnx', 'PIL', "
                "'onnxruntime', 'google.protobuf', 'pyconv.models', 'pyconv.cli') "
                "if m in sys.modules))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_onnx_comes_in_when_a_model_is_loaded():
    r = _python("import sys, pyconv, pyconv.models as m; "
                "pyconv.InferenceSession(m.path(m.CLASSIFIER)); print('onnx' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"


@pytest.fixture
def without_pillow(tmp_path):
    """A PYTHONPATH entry on which `import PIL` fails, as where Pillow is not installed."""
    fake = tmp_path / "no_pillow" / "PIL"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'PIL'\", "
                                      "name='PIL')\n")
    return fake.parent


def test_image_input_without_pillow_names_the_extra(without_pillow, tmp_path):
    picture = tmp_path / "picture.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n")
    r = _python("import sys, pyconv.cli; sys.exit(pyconv.cli.main(['--help']))",
                pythonpath=[without_pillow])
    assert r.returncode == 0, r.stderr      # the CLI imports Pillow only when it needs it
    code = ("import sys, pyconv.cli, pyconv.models as m; sys.exit(pyconv.cli.main(["
            f"'run', m.path(m.CLASSIFIER), '--input', 'input={picture}']))")
    r = _python(code, pythonpath=[without_pillow])
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "reading images needs Pillow" in lines[0] and "pyconv[images]" in lines[0]


def test_demo_without_pillow_reports_its_figures_and_skips_the_picture(without_pillow,
                                                                        tmp_path):
    code = ("import sys, pyconv.cli; sys.exit(pyconv.cli.main(['demo', '--samples', '60', "
            "'--seed', '7']))")
    r = _python(code, pythonpath=[without_pillow], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED" in r.stdout
    assert "no picture" in r.stderr and "pyconv[images]" in r.stderr
    assert not (tmp_path / "pyconv_demo.png").exists()
