"""The zoo runner's check, failure handling and table on two tiny onnx.helper models (one
pyconv runs, one with an op it has no operator for), without torch or exported models."""
import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("onnxruntime", reason="the runner compares against onnxruntime")

from benchmarks.zoo import run  # noqa: E402
from pyconv.ops import lookup  # noqa: E402

# Ops onnxruntime runs; the test takes the first one pyconv still lacks.
LACKING_CANDIDATES = ["Det", "Hardmax", "CumSum", "Einsum", "Trilu"]


def _conv_relu():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])], "conv_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _lacking(op):
    node = {"Det": helper.make_node("Det", ["x"], ["y"]),
            "Hardmax": helper.make_node("Hardmax", ["x"], ["y"]),
            "CumSum": helper.make_node("CumSum", ["x", "axis"], ["y"]),
            "Einsum": helper.make_node("Einsum", ["x"], ["y"], equation="ij->ji"),
            "Trilu": helper.make_node("Trilu", ["x"], ["y"])}[op]
    shape_out = [] if op == "Det" else [4, 4]
    init = [numpy_helper.from_array(np.array(0, np.int64), "axis")] if op == "CumSum" else []
    g = helper.make_graph(
        [helper.make_node("Relu", ["a"], ["x"]), node], "lacking",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape_out)], init)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    lacking = next((op for op in LACKING_CANDIDATES if lookup(op) is None), None)
    if lacking is None:
        pytest.skip(f"pyconv now runs every candidate op {LACKING_CANDIDATES}: add one")
    d = tmp_path_factory.mktemp("zoo")
    onnx.save(_conv_relu(), d / "conv_relu.onnx")
    onnx.save(_lacking(lacking), d / "lacking.onnx")
    manifest = {"models": [
        {"name": "conv_relu", "file": "conv_relu.onnx", "exporter": "helper",
         "inputs": [{"name": "x", "shape": [1, 3, 8, 8]}]},
        {"name": "lacking", "file": "lacking.onnx", "exporter": "helper",
         "inputs": [{"name": "a", "shape": [4, 4]}]}]}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d, lacking


def test_runner_checks_times_and_records_failures(zoo, capsys):
    d, lacking = zoo
    out, js = d / "table.md", d / "records.json"
    assert run.main(["--manifest", str(d / "manifest.json"), "--threads", "1",
                     "--rounds", "1", "--out", str(out), "--json", str(js)]) == 0
    ok, bad = json.loads(js.read_text())
    assert ok["model"] == "conv_relu" and ok["status"] == "ok" and ok["missing_ops"] == []
    assert 0 <= ok["rel_diff"] <= run.TOLERANCE
    for key in ("pyconv_1", "onnxruntime_1"):
        assert 0 < ok["times"][key]["min_ms"] <= ok["times"][key]["median_ms"]
    # The model pyconv cannot load: recorded with the op it lacks, onnxruntime still timed.
    assert bad["status"] == "pyconv error" and bad["missing_ops"] == [lacking]
    assert lacking in bad["error"] and bad["rel_diff"] is None
    assert "pyconv_1" not in bad["times"] and "onnxruntime_1" in bad["times"]
    table = out.read_text()
    assert table in capsys.readouterr().out          # printed as well as written
    rows = [ln for ln in table.splitlines() if ln.startswith("| ")]
    assert rows[1].startswith("| conv_relu | helper | ok |")
    assert rows[2].startswith(f"| lacking | helper | pyconv error: lacks {lacking} |")
    assert "1 of 2 models match onnxruntime" in table
    assert "at 1T: **" in table and "over 1 models" in table
    # The same table again from the saved records, without running anything.
    again = d / "again.md"
    assert run.main(["--from-json", str(js), "--threads", "1", "--out", str(again)]) == 0
    assert again.read_text() == table.split("\n\nMeasured")[0] + "\n"


def test_relative_diff():
    r = [np.array([[1.0, -2.0]], np.float32)]
    assert run.relative_diff(r, r) == 0
    assert run.relative_diff(r, [np.array([[1.0, -2.002]], np.float32)]) == \
        pytest.approx(1e-3, rel=1e-3)
    # Outputs near zero are scaled by the floor, not by their own tiny maximum.
    z = [np.array([1e-6], np.float32)]
    assert run.relative_diff(z, [np.array([2e-6], np.float32)]) == \
        pytest.approx(1e-6 / run.FLOOR, rel=1e-3)
    assert run.relative_diff(r, [np.zeros((2, 1), np.float32)]) == math.inf      # shape
    assert run.relative_diff(r, r + r) == math.inf                              # count
    assert run.relative_diff([np.array([3], np.int64)], [np.array([4], np.int64)]) == math.inf
    assert run.relative_diff([np.array([np.nan], np.float32)],
                             [np.array([0.0], np.float32)]) == math.inf


def test_missing_ops_looks_into_subgraphs():
    inner = helper.make_graph([helper.make_node("Det", ["m"], ["d"])], "body", [],
                              [helper.make_tensor_value_info("d", TensorProto.FLOAT, [])])
    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=inner),
         helper.make_node("Relu", ["y"], ["z"])], "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [])])
    model = helper.make_model(g)
    expected = sorted(op for op in ("If", "Det") if lookup(op) is None)
    assert run.missing_ops(model) == expected


def test_geomean_and_ratio():
    rec = {"times": {"pyconv_1": {"median_ms": 2.0, "min_ms": 1.0},
                     "onnxruntime_1": {"median_ms": 1.0, "min_ms": 1.0}}}
    assert run.ratio(rec, 1) == 2.0 and run.ratio(rec, 1, "min_ms") == 1.0
    assert run.ratio(rec, 2) is None
    assert run.geomean([2.0, 8.0, None]) == pytest.approx(4.0)
    assert run.geomean([]) is None


def test_wheel_end_results_ctc_and_nms():
    from benchmarks.zoo import wheels
    # CTC: repeats collapse, blanks (0) split them and vanish.
    assert wheels._ctc([0, 1, 1, 0, 1, 2, 2, 0], ["-", "a", "b"]) == "aab"
    # NMS: the overlapping lower-scored box goes, the separate one stays; ddddocr's
    # inclusive-pixel areas (+1) as in its detection engine.
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float64)
    assert sorted(wheels._nms(boxes, np.array([0.9, 0.8, 0.7]), 0.45)) == [0, 2]
    assert sorted(wheels._nms(boxes, np.array([0.7, 0.8, 0.9]), 0.45)) == [1, 2]


def test_merge_records_keeps_times_and_takes_the_later_check(tmp_path):
    timed = [{"model": "a", "status": "mismatch", "rel_diff": 1.0, "missing_ops": [],
              "error": "", "times": {"pyconv_1": {"min_ms": 1.0, "median_ms": 2.0}}},
             {"model": "b", "status": "ok", "rel_diff": 0.0, "missing_ops": [], "error": "",
              "times": {}}]
    checked = [{"model": "a", "status": "ok", "rel_diff": 1e-6, "missing_ops": [],
                "error": "", "times": {}}]
    (tmp_path / "t.json").write_text(json.dumps(timed))
    (tmp_path / "c.json").write_text(json.dumps(checked))
    a, b = run.merge_records([tmp_path / "t.json", tmp_path / "c.json"])
    assert a["model"] == "a" and a["status"] == "ok" and a["rel_diff"] == 1e-6
    assert a["times"] == timed[0]["times"] and b == timed[1]
