"""`pyconv batch --engine ray` on a local Ray cluster (2 CPUs, 2 workers) against the
single-process run, row by row; the predictor's threads inside Ray workers."""
import os
import subprocess
import sys

import pytest

from pyconv import models as bundled
from pyconv.batch import Predictor
from pyconv.cli import main

from test_batch import HALF, REPO, pixels, write_pngs

ray = pytest.importorskip("ray", reason="Ray is the pyconv[ray] extra (in the test extra)")
pytest.importorskip("ray.data", reason="Ray Data is the ray[data] part of pyconv[ray]")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is the pyconv[ray] extra")

CLASSIFIER = bundled.path(bundled.CLASSIFIER)


@pytest.fixture(scope="module")
def cluster(request):
    """A local Ray cluster of 2 CPUs for this module, shut down after it."""
    if ray.is_initialized():
        pytest.skip("a Ray session is already open in this process")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    request.addfinalizer(ray.shutdown)
    # The workers cannot import this test module: its functions travel by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return ray.get_runtime_context().gcs_address


def test_ray_engine_gives_the_rows_of_the_local_engine(cluster, tmp_path):
    """300 generated 32x32 images, resized to the classifier's 64x64: the Parquet files of
    the two engines are equal, every row and column."""
    paths = write_pngs(tmp_path / "imgs", pixels(300, seed=21))
    common = [sys.executable, "-m", "pyconv", "batch", CLASSIFIER, "--inputs",
              str(tmp_path / "imgs"), "--mean", "0.5", "--std", "0.5", "--batch-size", "16"]
    assert main(common[3:] + ["--output", str(tmp_path / "local.parquet")]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # The command as a user runs it against an existing cluster (here the fixture's).
    distributed = subprocess.run(
        common + ["--output", str(tmp_path / "ray.parquet"), "--engine", "ray",
                  "--address", cluster, "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=300)
    assert distributed.returncode == 0, distributed.stderr
    assert "wrote 300 rows" in distributed.stdout
    a, b = pq.read_table(tmp_path / "local.parquet"), pq.read_table(tmp_path / "ray.parquet")
    assert a.column_names == b.column_names == ["path", "logits", "logits_top_k",
                                                "logits_top_k_scores"]
    assert a["path"].to_pylist() == paths
    for name in a.column_names:
        assert a[name].to_pylist() == b[name].to_pylist(), name
    assert a.equals(b)


def _threads(predictor, batch):
    predictor(batch)
    return predictor.threads


@pytest.mark.parametrize("cpus, threads", [(1, 1), (2, 2), (0.5, 1)])
def test_threads_are_the_cpus_ray_assigned(cluster, cpus, threads):
    probe = ray.remote(num_cpus=cpus)(_threads)
    batch = {"image": pixels(1, seed=0)}
    assert ray.get(probe.remote(Predictor(CLASSIFIER, HALF), batch)) == threads
