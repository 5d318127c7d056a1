"""The package as it ships: sdist file list, wheel contents, import cost, optional extras
and the stubs of the compiled modules.

Building a wheel takes minutes (the extensions), so the wheel's pure part is checked with
``setup.py build_py`` (what bdist_wheel copies besides the extensions) in a copy of the
checkout, and the sdist with ``setup.py sdist`` there (no Cython run, seconds).
"""
import ast
import inspect
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import pyconv
from pyconv import models as bundled
from pyconv.errors import InvalidArgument

REPO = Path(pyconv.__file__).resolve().parent.parent
COMPILED = ("gemm", "conv", "pool", "eltwise", "resize", "qgemm")
#: Files of the repository root that the sdist must carry.
ROOT_FILES = ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE",
              "CHANGELOG.md")
#: What the build reads under pyconv/: Python, Cython sources, stubs, package data.
PACKAGE_SOURCES = (".py", ".pyx", ".pxd", ".pxi", ".pyi", ".onnx", ".typed")


def _tracked_files():
    """The checkout's tracked files (relative paths), or a skip outside a git checkout."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout: the tracked files are the sources to ship")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                         check=True).stdout.decode()
    return sorted(f for f in out.split("\0") if f and (REPO / f).is_file())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(sdist member paths, build_py file paths, tracked files) from a copy of the checkout
    (its tracked files as they are in the working tree; the real tree is not touched)."""
    pytest.importorskip("setuptools", minversion="77",
                        reason="setup.py needs setuptools >= 77 (pyproject's build-system)")
    tracked = _tracked_files()
    tmp = tmp_path_factory.mktemp("package")
    src = tmp / "src"
    for rel in tracked:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    r = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp),
                        "build_py", "--build-lib", str(tmp / "lib")],
                       cwd=src, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    (archive,) = tmp.glob("pyconv-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    top = names[0].split("/")[0]
    sdist = {n[len(top) + 1:] for n in names if n.startswith(top + "/")}
    wheel_py = {p.relative_to(tmp / "lib").as_posix()
                for p in (tmp / "lib").rglob("*") if p.is_file()}
    return sdist, wheel_py, tracked


def test_sdist_carries_every_source_and_no_generated_c(built):
    sdist, _, tracked = built
    needed = [f for f in tracked if f.startswith("src/")
              or (f.startswith("pyconv/") and f.endswith(PACKAGE_SOURCES))]
    needed += list(ROOT_FILES)
    assert any(f.endswith(".inc") for f in needed) and any(f.endswith(".pxi") for f in needed)
    missing = sorted(set(needed) - sdist)
    assert not missing, f"the sdist lacks sources the build needs: {missing}"
    generated = sorted(f for f in sdist if f.startswith("pyconv/")
                       and f.endswith((".c", ".cpp", ".html", ".so", ".pyd")))
    assert not generated, f"the sdist carries generated files: {generated}"


def test_wheel_gets_models_stubs_and_no_sources(built):
    _, wheel_py, _ = built
    for name in bundled.BUNDLED:
        assert f"pyconv/models/{name}" in wheel_py
    for module in COMPILED:
        assert f"pyconv/_ext/{module}.pyi" in wheel_py
    assert "pyconv/py.typed" in wheel_py
    assert {"pyconv/models/shapes.py", "pyconv/models/evaluate.py"} <= wheel_py
    sources = sorted(f for f in wheel_py if f.endswith((".c", ".h", ".inc", ".pyx", ".pxd",
                                                        ".pxi", ".html")))
    assert not sources, f"the wheel would carry sources it does not need: {sources}"


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
                "'onnxruntime', 'google.protobuf', 'pyconv.models', 'pyconv.cli', "
                "'pyconv.batch', 'ray', 'pyarrow') if m in sys.modules))")
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


def test_demo_runs_without_pillow(without_pillow, tmp_path):
    """The demo's figures need no Pillow (the picture does: matplotlib draws with it, so it
    is skipped with a note)."""
    code = ("import sys, pyconv.cli; sys.exit(pyconv.cli.main(['demo', '--samples', '60', "
            "'--seed', '7']))")
    r = _python(code, pythonpath=[without_pillow], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED" in r.stdout
    assert "no picture" in r.stdout and "pyconv[plot]" in r.stdout
    assert not (tmp_path / "pyconv_demo.png").exists()


# ------------------------------------------------------------------ stubs of _ext modules

def _stub_definitions(module):
    """{name: ast node} of what the module's .pyi defines (imports without `as` excluded:
    they are not re-exported)."""
    tree = ast.parse((REPO / "pyconv" / "_ext" / f"{module}.pyi").read_text())
    defs = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defs[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defs[node.target.id] = node
    return defs


def _runtime_public(mod):
    """Public names a module defines: its functions and classes, and its data constants
    (not what it imports: modules, pyconv.errors' exceptions)."""
    return {n for n, v in vars(mod).items() if not n.startswith("_")
            and not inspect.ismodule(v)
            and (getattr(v, "__module__", None) == mod.__name__ or not callable(v))}


def _params(node):
    a = node.args
    return [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]


@pytest.mark.parametrize("module", COMPILED)
def test_stubs_match_the_compiled_module(module):
    mod = __import__(f"pyconv._ext.{module}", fromlist=["_"])
    defs = _stub_definitions(module)
    public = _runtime_public(mod)
    assert set(defs) == public, (sorted(set(defs) - public), sorted(public - set(defs)))
    for name, node in defs.items():
        obj = getattr(mod, name)
        if isinstance(node, ast.FunctionDef):
            got = list(inspect.signature(obj).parameters)
            assert _params(node) == got, f"{module}.{name}: stub {_params(node)}, real {got}"
        elif isinstance(node, ast.ClassDef) and not issubclass(obj, int):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("__"):
                    real = getattr(obj, item.name)
                    if isinstance(real, property) or not callable(real):
                        continue
                    got = list(inspect.signature(real).parameters)
                    assert _params(item) == got, f"{module}.{name}.{item.name}: {got}"
