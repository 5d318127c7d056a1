"""Prints a summary after a benchmark run: GFLOP/s, % of measured peak, ratio to reference."""
from _bench import _PEAK, peak_gflops


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks or config.getoption("benchmark_disable"):
        return
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
