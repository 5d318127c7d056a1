"""Checks every zoo model against onnxruntime and times both engines at 1 and 2 threads.

    python benchmarks/zoo/run.py                          # every model of the manifests
    python benchmarks/zoo/run.py --models resnet18 efficientnet_b0 --rounds 3
    python benchmarks/zoo/run.py --threads 1 --json zoo.json --out zoo.md
    python benchmarks/zoo/run.py --no-time                # correctness only
    python benchmarks/zoo/run.py --from-json a.json b.json   # one table of earlier runs

Manifests: `manifest.json` of the zoo folder (benchmarks/zoo/export.py) and of its
`wheels/` subfolder (benchmarks/zoo/wheels.py) where present, or those named by
--manifest. Feeds: the entry's `feeds` .npz where it has one (realistic inputs), else
standard-normal data from a fixed seed in the declared shape.

Protocol (as benchmarks/busy_host.py): per model, every (engine, threads) pair runs in its
own worker process holding one session; the 1-thread workers each save one run's outputs
and the parent compares them (max|diff| / max(max|ref|, 1e-2) <= 1e-4 over every output);
then the parent interleaves the workers, round after round, each timing a block of runs
in turn, and reports the min and median latency per pair. A model pyconv cannot load or
run is recorded with the error (and the ONNX ops pyconv has no operator for) and the run
goes on. Output: a Markdown table with geometric means, printed and written to --out.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
from benchmarks.busy_host import Workers, block_size, open_session, samples, serve  # noqa: E402

DEFAULT_DIR = os.environ.get("PYCONV_ZOO", os.path.join(os.path.expanduser("~"), ".cache",
                                                         "pyconv", "zoo"))
TOLERANCE = 1e-4
# Quantized models (quantize.py's and the dynamically quantized wheels): a few output
# quanta, 2 ** -6 of the range (the step of a 7-bit signal); see quantize.py.
QUANTIZED_TOLERANCE = 2.0 ** -6
# Operators that requantize activations at run time: a value on a rounding tie may land
# one quantum away from onnxruntime's and carry on through the layers.
QUANTIZING_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "DynamicQuantizeLSTM",
                  "DynamicQuantizeMatMul", "QLinearConv", "QLinearMatMul"}
FLOOR = 1e-2          # max|ref| below this is taken as this: all-but-zero outputs


def load_entries(manifests):
    """The manifests' model records, each with `path` (absolute) and `manifest` added."""
    entries = []
    for m in manifests:
        with open(m) as f:
            data = json.load(f)
        base = os.path.dirname(os.path.abspath(m))
        for r in data["models"]:
            r = dict(r, path=os.path.join(base, r["file"]), manifest=m)
            if r.get("feeds"):
                r["feeds"] = os.path.join(base, r["feeds"])
            entries.append(r)
    return entries


def make_feeds(entry, seed=0):
    """The entry's saved feeds, or standard-normal float32 in each declared shape."""
    if entry.get("feeds"):
        with np.load(entry["feeds"]) as z:
            return {k: z[k] for k in z.files}
    rng = np.random.default_rng(seed)
    return {i["name"]: rng.standard_normal(i["shape"]).astype(i.get("dtype", "float32"))
            for i in entry["inputs"]}


def missing_ops(model):
    """Sorted ONNX op types (with their domain where not the default one) that pyconv has
    no operator for, in the graph and its subgraphs."""
    from pyconv.ops import lookup
    missing = set()

    def walk(graph):
        for node in graph.node:
            if lookup(node.op_type, node.domain) is None:
                dom = node.domain if node.domain not in ("", "ai.onnx") else ""
                missing.add(f"{dom}.{node.op_type}" if dom else node.op_type)
            for a in node.attribute:
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    walk(g)
    walk(model.graph)
    return sorted(missing)


def relative_diff(ref, got):
    """max over outputs of max|got - ref| / max(max|ref|, FLOOR); inf when an output's
    count, shape or (non-float) values differ."""
    if len(ref) != len(got):
        return math.inf
    worst = 0.0
    for r, g in zip(ref, got):
        r, g = np.asarray(r), np.asarray(g)
        if r.shape != g.shape:
            return math.inf
        if r.size == 0:
            continue
        if not np.issubdtype(r.dtype, np.floating):
            if not np.array_equal(r, g):
                return math.inf
            continue
        r64, g64 = r.astype(np.float64), g.astype(np.float64)
        if not (np.isfinite(r64) == np.isfinite(g64)).all():
            return math.inf
        fin = np.isfinite(r64)
        if not fin.any():
            continue
        scale = max(float(np.abs(r64[fin]).max()), FLOOR)
        worst = max(worst, float(np.abs(g64[fin] - r64[fin]).max()) / scale)
    return worst


def ort_self_diff(entry, ref):
    """relative_diff between onnxruntime's outputs with and without its graph
    optimisations: how far float32 rounding alone moves this model's outputs."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(entry["path"], opts, providers=["CPUExecutionProvider"])
    return relative_diff(ref, sess.run(None, make_feeds(entry)))


def _worker_argv(entry_json):
    def argv(engine, threads):
        return [sys.executable, os.path.abspath(__file__), "--worker", engine, str(threads),
                entry_json]
    return argv


def worker(engine, threads, entry_json):
    entry = json.loads(entry_json)
    with open(entry["path"], "rb") as f:
        data = f.read()
    serve(open_session(engine, data, threads), make_feeds(entry))


def _first_line(msg):
    lines = [ln.strip() for ln in str(msg).splitlines() if ln.strip()]
    return lines[0][:300] if lines else ""


def check_and_time(entry, threads=(1, 2), rounds=5, time_it=True):
    """One model's record: status ('ok', 'mismatch', 'ill-conditioned', 'pyconv error',
    'reference error'), error, missing ops, max relative diff, and per (engine, threads)
    min/median ms."""
    import onnx
    rec = {"model": entry["name"], "exporter": entry.get("exporter", ""),
           "family": entry.get("family", ""), "status": "ok", "error": "", "missing_ops": [],
           "rel_diff": None, "times": {}}
    try:
        model = onnx.load(entry["path"], load_external_data=False)
        rec["missing_ops"] = missing_ops(model)
    except Exception as e:           # noqa: BLE001 - an unreadable file is a record too
        rec.update(status="reference error", error=f"onnx.load: {_first_line(e)}")
        return rec
    quantized = any(n.op_type in QUANTIZING_OPS for n in model.graph.node)
    threads = sorted(set(threads) | {1})          # the check runs on the 1-thread workers
    pairs = [(e, t) for t in threads for e in ("pyconv", "onnxruntime")]
    workers = Workers(entry["name"], pairs=pairs, argv=_worker_argv(json.dumps(entry)))
    try:
        if ("onnxruntime", 1) in workers.failed:
            rec.update(status="reference error", error=workers.failed[("onnxruntime", 1)])
            return rec
        if ("pyconv", 1) in workers.failed:
            rec.update(status="pyconv error", error=workers.failed[("pyconv", 1)])
        else:
            with tempfile.TemporaryDirectory() as tmp:
                outs = {}
                for eng in ("onnxruntime", "pyconv"):
                    path = os.path.join(tmp, eng + ".npz")
                    try:
                        workers.save_outputs((eng, 1), path)
                    except Exception as e:    # noqa: BLE001 - a dead worker is recorded
                        rec.update(status=f"{eng} error" if eng == "pyconv"
                                   else "reference error", error=_first_line(e))
                        return rec
                    with np.load(path) as z:
                        outs[eng] = [z[f"output_{i}"] for i in range(len(z.files))]
            rec["rel_diff"] = relative_diff(outs["onnxruntime"], outs["pyconv"])
            # A quantized model's entry names the tolerance its quantization implies; a
            # model that quantizes at run time without one (a quantized wheel) takes it.
            tolerance = entry.get("tolerance",
                                  QUANTIZED_TOLERANCE if quantized else TOLERANCE)
            if not rec["rel_diff"] <= tolerance:
                rec["ort_self_diff"] = ort_self_diff(entry, outs["onnxruntime"])
                # onnxruntime disagreeing with itself as much: float32 rounding amplified
                # by the weights, not an engine error.
                within = rec["ort_self_diff"] > tolerance and \
                    rec["rel_diff"] <= 2 * rec["ort_self_diff"]
                # A statically quantized model: onnxruntime's fused integer kernels and
                # its Q/DQ-as-written run differ by a quantum wherever a value sits on a
                # rounding tie; pyconv within that spread is what the quantization implies.
                rec["status"] = ("ok" if entry.get("quantization") or quantized
                                 else "ill-conditioned") if within else "mismatch"
        for pair, err in workers.failed.items():
            if pair[1] != 1 and not rec["error"]:
                rec["error"] = f"{pair[0]} {pair[1]}T: {err}"
        if time_it and workers.procs:
            n = block_size(workers)
            for (eng, t), v in samples(workers, rounds, n).items():
                rec["times"][f"{eng}_{t}"] = {"min_ms": float(np.min(v)) * 1e3,
                                             "median_ms": float(np.median(v)) * 1e3}
            rec["block"] = n
    finally:
        workers.close()
    return rec


def merge_records(paths):
    """Records of several --json runs, one per model in first-seen order. For a model in
    several files the later file's check (status, diff, error) wins, and its times are
    added to the earlier ones: a check-only run (--no-time) after a timed one keeps the
    times."""
    merged = {}
    for path in paths:
        with open(path) as f:
            for r in json.load(f):
                old = merged.get(r["model"])
                if old is not None:
                    r = dict(r, times=dict(old["times"], **r["times"]))
                merged[r["model"]] = r
    return list(merged.values())


def ratio(rec, t, stat="median_ms"):
    """pyconv / onnxruntime latency at t threads, or None."""
    p, o = rec["times"].get(f"pyconv_{t}"), rec["times"].get(f"onnxruntime_{t}")
    return p[stat] / o[stat] if p and o and o[stat] > 0 else None


def geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _ms(rec, key):
    v = rec["times"].get(key)
    return f"{v['min_ms']:.2f} / {v['median_ms']:.2f}" if v else "-"


def format_table(records, threads=(1, 2), note=""):
    """Markdown table: one row per model, then geometric means of the ratios."""
    head = ["model", "exporter", "status", "max rel diff"]
    for t in threads:
        head += [f"pyconv {t}T ms (min / med)", f"ORT {t}T ms (min / med)", f"ratio {t}T"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        status = r["status"]
        if r["missing_ops"]:
            status += ": lacks " + ", ".join(r["missing_ops"])
        elif r["status"] != "ok" and r["error"]:
            status += ": " + r["error"].replace("|", "/")[:120]
        if r.get("ort_self_diff") is not None:
            status += f" (ORT opt vs no-opt {r['ort_self_diff']:.1e})"
        diff = "-" if r["rel_diff"] is None else f"{r['rel_diff']:.1e}"
        row = [r["model"], r["exporter"], status, diff]
        for t in threads:
            q = ratio(r, t)
            row += [_ms(r, f"pyconv_{t}"), _ms(r, f"onnxruntime_{t}"),
                    f"{q:.2f}" if q else "-"]
        lines.append("| " + " | ".join(row) + " |")
    ok = sum(r["status"] == "ok" for r in records)
    lines.append("")
    lines.append(f"{ok} of {len(records)} models match onnxruntime "
                 f"(max|diff| / max(max|ref|, {FLOOR:g}) <= {TOLERANCE:g}, or the "
                 f"tolerance a quantized model's entry names).")
    for t in threads:
        qs = [q for q in (ratio(r, t) for r in records) if q]
        if qs:
            lines.append(f"Geometric mean pyconv/ORT at {t}T: **{geomean(qs):.2f}** (of "
                         f"minimums {geomean([ratio(r, t, 'min_ms') for r in records]):.2f}) "
                         f"over {len(qs)} models; {sum(q > 1.5 for q in qs)} above 1.5x; "
                         f"slowest {max(qs):.2f}x.")
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def default_manifests(folder):
    found = [os.path.join(folder, "manifest.json"),
             os.path.join(folder, "wheels", "manifest.json")]
    return [m for m in found if os.path.exists(m)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=DEFAULT_DIR, help=f"zoo folder (default {DEFAULT_DIR})")
    ap.add_argument("--manifest", nargs="+", help="manifests (default: the zoo folder's)")
    ap.add_argument("--models", nargs="+", help="model names (default: all)")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--no-time", action="store_true", help="check correctness only")
    ap.add_argument("--json", help="also write the records here")
    ap.add_argument("--out", help="Markdown file (default: <dir>/results.md)")
    ap.add_argument("--from-json", nargs="+", metavar="JSON",
                    help="no run: one table of the records of earlier --json runs (a "
                         "model in several: the later check, the times of all)")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.worker[2])
        return 0
    out = args.out or os.path.join(args.dir, "results.md")
    if args.from_json:
        records = merge_records(args.from_json)
        table = format_table(records, args.threads)
        print(table)
        with open(out, "w") as f:
            f.write(table)
        return 0
    manifests = args.manifest or default_manifests(args.dir)
    if not manifests:
        ap.error(f"no manifest in {args.dir}: run benchmarks/zoo/export.py first")
    entries = load_entries(manifests)
    if args.models:
        unknown = sorted(set(args.models) - {e["name"] for e in entries})
        if unknown:
            ap.error(f"not in the manifests: {unknown}")
        entries = [e for e in entries if e["name"] in args.models]
    records = []
    for e in entries:
        rec = check_and_time(e, args.threads, args.rounds, not args.no_time)
        records.append(rec)
        q = " ".join(f"{t}T {ratio(rec, t):.2f}" for t in args.threads if ratio(rec, t))
        diff = "-" if rec["rel_diff"] is None else f"{rec['rel_diff']:.1e}"
        print(f"{rec['model']:<30} {rec['status']:<15} diff {diff:<8} {q}"
              f"{'  ' + rec['error'][:150] if rec['error'] else ''}", flush=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    note = (f"Measured {stamp}, {len(os.sched_getaffinity(0))} cores, {args.rounds} "
            f"interleaved rounds; ratios of median latencies; each engine and thread count "
            f"in its own process.")
    table = format_table(records, args.threads, note)
    print()
    print(table)
    with open(out, "w") as f:
        f.write(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
