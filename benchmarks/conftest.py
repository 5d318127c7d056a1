"""Prints a summary after a benchmark run: GFLOP/s, % of measured peak, ratio to reference."""
import math

from benchmarks._bench import _PEAK, peak_gflops


def _model_summary(tr, benchmarks):
    """pyconv / onnxruntime latency per model and thread count, with geometric means: the
    ratio of medians, and of minimums (what is left when a shared machine's noise, which
    moves medians by tens of percent from one minute to the next, is taken out)."""
    rows = {}
    for b in benchmarks:
        info = b.extra_info
        if info.get("kind") != "latency" or not b.stats:
            continue
        rows.setdefault((info["threads"], info["model"]), {})[info["impl"]] = b.stats
    if not rows:
        return
    tr.section("models: pyconv / onnxruntime latency (median, batch 1; < 1 is faster)")
    ratios = {}
    for (threads, model), st in sorted(rows.items()):
        if "pyconv" in st and "onnxruntime" in st:
            p, o = st["pyconv"], st["onnxruntime"]
            r, rmin = p.median / o.median, p.min / o.min
            ratios.setdefault(threads, []).append((r, rmin))
            tr.write_line(f"{model:28s} {threads}thr  pyconv {p.median * 1e3:9.2f} ms  "
                          f"onnxruntime {o.median * 1e3:9.2f} ms  ratio {r:5.2f}  "
                          f"(of minimums {rmin:5.2f})")
    for threads, rs in sorted(ratios.items()):
        g = math.exp(sum(math.log(r) for r, _ in rs) / len(rs))
        gmin = math.exp(sum(math.log(r) for _, r in rs) / len(rs))
        tr.write_line(f"{threads} thread(s): geometric mean {g:.2f}, worst {max(rs)[0]:.2f} "
                      f"over {len(rs)} models (of minimums: {gmin:.2f}, worst "
                      f"{max(r for _, r in rs):.2f})")


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks or config.getoption("benchmark_disable"):
        return
    _model_summary(terminalreporter, session.benchmarks)
    groups = {}
    for bench in session.benchmarks:
        if bench.extra_info.get("flops") is None or not bench.stats:
            continue
        groups.setdefault(bench.group, []).append(bench)
    if not groups:
        return
    tr = terminalreporter
    tr.section("pyconv summary (median times; ratio = reference time / this time, >1 is faster)")
    tr.write_line(f"{'group':52s} {'impl':12s} {'median ms':>10s} {'GFLOP/s':>8s} "
                  f"{'% peak':>7s} {'ratio':>6s}")
    for group, benches in groups.items():
        ref = [b for b in benches if b.extra_info["impl"] == b.extra_info["reference"]]
        ref_median = ref[0].stats.median if ref else None
        for b in sorted(benches, key=lambda b: b.extra_info["impl"] != "pyconv"):
            info, median = b.extra_info, b.stats.median
            gflops = info["flops"] / median / 1e9
            pct = 100 * gflops / peak_gflops(info["threads"])
            ratio = f"{ref_median / median:6.2f}" if ref_median else "     -"
            tr.write_line(f"{group:52s} {info['impl']:12s} {median * 1e3:10.3f} {gflops:8.1f} "
                          f"{pct:6.1f}% {ratio}")
    tr.write_line("peak (measured FMA loop): " + ", ".join(
        f"{t} thread(s) {p:.1f} GFLOP/s" for t, p in sorted(_PEAK.items())))
