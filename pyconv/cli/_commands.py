"""The subcommands of the `pyconv` command line."""
import os
import time

import numpy as np
import onnx

import pyconv
from pyconv.cli import _engines
from pyconv.cli._info import ModelSummary, format_table, print_info, unsupported_ops
from pyconv.cli._inputs import concrete_shape, load_feed, parse_shape, random_feed
from pyconv.errors import InvalidArgument, InvalidModel
from pyconv.session import NodeArg


def _check_file(path):
    if not os.path.isfile(path):
        raise InvalidArgument(f"no such model file: {path!r}")


def _load_model(path):
    """The ModelProto without external data (the CLI's static views need only dims)."""
    _check_file(path)
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise InvalidModel(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    # An empty or foreign file can parse as an empty message: no graph, no IR version.
    if model.ir_version <= 0 or not model.HasField("graph"):
        size = os.path.getsize(path)
        raise InvalidModel(f"{path}: not an ONNX model ({'an empty file' if size == 0 else f'{size} bytes without a graph or IR version'})")
    return model


def _shape_overrides(args):
    return dict(parse_shape(s) for s in args.shape)


def _threads(args):
    n = getattr(args, "threads", None)
    if n is not None:
        pyconv.set_num_threads(n)
    return pyconv.get_num_threads()


def cmd_info(args):
    model = _load_model(args.model)
    overrides = _shape_overrides(args)
    weights = {t.name for t in model.graph.initializer}   # old exporters list them as inputs
    inputs = {}
    for vi in model.graph.input:
        if vi.name not in weights:
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                    for d in vi.type.tensor_type.shape.dim]
            inputs[vi.name] = NodeArg(vi.name, dims, "")
    unknown = set(overrides) - set(inputs)
    if unknown:
        raise InvalidArgument(f"--shape {', '.join(sorted(unknown))}: no such input "
                              f"(inputs: {', '.join(inputs)})")
    concrete = {name: concrete_shape(arg, overrides) for name, arg in inputs.items()}
    print_info(model, concrete, args.model)
    missing = unsupported_ops(model)
    if missing:
        print(f"pyconv cannot run this model: {len(missing)} operator type(s) not "
              f"implemented: " + "; ".join(
                  f"{op} (nodes: {', '.join(repr(n) for n in names[:5])}"
                  f"{', ...' if len(names) > 5 else ''})" for op, names in missing.items()))
    return 0


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _summarise(name, value, top, labels):
    value = np.asarray(value)
    print(f"{name}: shape {'x'.join(map(str, value.shape)) or 'scalar'} {value.dtype}", end="")
    if value.size and np.issubdtype(value.dtype, np.number):
        print(f", min {value.min():.4g}, mean {value.mean():.4g}, max {value.max():.4g}")
    else:
        print()
    if value.ndim == 2 and value.shape[1] > 1 and np.issubdtype(value.dtype, np.floating):
        probs = value if (value.min() >= 0 and np.allclose(value.sum(1), 1, atol=1e-3)) \
            else _softmax(value.astype(np.float64))
        for i, row in enumerate(probs[:8]):
            order = np.argsort(-row)[:top]
            picks = ", ".join(f"{labels[c] if labels and c < len(labels) else c} "
                              f"{row[c]:.3f}" for c in order)
            print(f"  sample {i}: top-{len(order)}: {picks}")


def cmd_run(args):
    _check_file(args.model)
    _threads(args)
    session = _engines.open_session("pyconv", args.model, pyconv.get_num_threads())
    feed = load_feed(args.input, session.get_inputs(), (args.mean, args.std))
    labels = None
    if args.labels:
        with open(args.labels) as f:
            labels = [line.strip() for line in f if line.strip()]
    outputs = session.run(None, feed)
    names = [o.name for o in session.get_outputs()]
    for name, value in zip(names, outputs):
        _summarise(name, value, args.top, labels)
    if args.output:
        np.savez(args.output, **dict(zip(names, outputs)))
        print(f"saved {len(names)} output(s) to {args.output}")
    return 0


def cmd_profile(args):
    model = _load_model(args.model)
    threads = _threads(args)
    session = _engines.open_session("pyconv", args.model, threads, profiling=True)
    feed = random_feed(session.get_inputs(), _shape_overrides(args))
    peak = _engines.PeakMeter(threads)
    peak.sample(3)
    for _ in range(args.runs + 1):
        session.run(None, feed)
    # session.profile: one record per node and run; run 0 prepared the plans, leave it out.
    times = {}
    for r in session.profile:
        if r["run"] > 0:
            times.setdefault(r["node"], (r["op_type"], []))[1].append(r["duration_us"] * 1e-6)
    summary = ModelSummary(model, {k: v.shape for k, v in feed.items()})
    peak.sample(2)
    rows = []
    for name, (op, durations) in times.items():
        rows.append((name, op, float(np.median(durations))))
    total = sum(r[2] for r in rows) or 1e-12
    rows.sort(key=lambda r: -r[2])
    table, above = [], 0
    for name, op, t in rows[:args.top]:
        macs = summary.macs_by_node.get(name, 0)
        gflops = 2 * macs / t / 1e9 if macs and t > 0 else None
        share, note = peak.percent(gflops) if gflops else (None, "")
        above += bool(note)
        table.append([name, op, f"{t * 1e3:.3f}", f"{100 * t / total:.1f}",
                      f"{gflops:.1f}" if gflops else "",
                      f"{share:.0f}{'*' if note else ''}" if gflops else ""])
    print(f"{args.model}: {len(rows)} nodes, {threads} thread(s), median of {args.runs} runs; "
          f"{peak.describe()}")
    print(format_table(["node", "op", "ms", "share %", "GFLOP/s", "% peak"], table, "llrrrr"))
    if above:
        print(f"* {above} node(s) above 100 % of the measured peak: the machine was busier "
              f"while the peak was measured")
    by_op = {}
    for _, op, t in rows:
        by_op[op] = by_op.get(op, 0.0) + t
    print(f"\nnode total {total * 1e3:.3f} ms; by op: " + ", ".join(
        f"{op} {100 * t / total:.1f}%" for op, t in sorted(by_op.items(), key=lambda kv: -kv[1])))
    return 0


def cmd_bench(args):
    _check_file(args.model)
    thread_counts = args.threads or [pyconv.get_num_threads()]
    engines = ["pyconv"] + [e for e in args.compare if e != "pyconv"]
    overrides = _shape_overrides(args)
    if args.plot:
        from pyconv.cli import _plot
        _plot.require_matplotlib("--plot")     # before minutes of timing, not after
    results, peaks = {}, {}
    for threads in thread_counts:
        pyconv.set_num_threads(threads)
        peaks[threads] = peak = _engines.PeakMeter(threads)
        peak.sample(2)
        feed = None
        for engine in engines:
            session = _engines.open_session(engine, args.model, threads)
            if feed is None:
                feed = random_feed(session.get_inputs(), overrides)
            times = _engines.time_runs(session, feed, args.runs, args.warmup,
                                       f"{engine} {threads} thread(s)")
            results[engine, threads] = times
            peak.sample()
    compared = "onnxruntime" in engines
    rows = []
    for (engine, threads), t in results.items():
        row = [engine, threads, f"{np.median(t) * 1e3:.3f}",
               f"{np.percentile(t, 90) * 1e3:.3f}", f"{t.min() * 1e3:.3f}"]
        if compared:
            row.append(f"{np.median(t) / np.median(results['onnxruntime', threads]):.2f}"
                       if engine == "pyconv" else "")
        rows.append(row)
    headers = ["engine", "threads", "median ms", "p90 ms", "min ms"]
    if compared:
        headers.append("pyconv/onnxruntime")
    print(f"{args.model}: {args.runs} runs after {args.warmup} warm-up; " + "; ".join(
        p.describe() for p in peaks.values()))
    print(format_table(headers, rows, "lr" + "r" * (len(headers) - 2)))
    if args.plot:
        from pyconv.cli import _plot
        _plot.bench_chart(args.plot, results, peaks, os.path.basename(args.model),
                          args.runs, args.warmup)
        print(f"wrote {args.plot}")
    return 0


def _median_seconds(fn, min_time=0.2):
    fn()
    times, start = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def cmd_selfcheck(args):
    """Engine self-check: every ISA path against NumPy, then throughput against peak."""
    threads = _threads(args)
    pyconv.show_config()
    rng = np.random.default_rng(0)
    shapes = [(1, 1, 1), (7, 300, 49), (64, 576, 3136), (256, 2304, 196), (1000, 512, 1)]
    start_isa = pyconv.get_isa()
    print("\ncorrectness (max relative error vs float64 NumPy):")
    worst = 0.0
    try:
        for isa in pyconv.supported_isas():
            pyconv.set_isa(isa)
            errs = []
            for m, k, n in shapes:
                a = rng.standard_normal((m, k), dtype=np.float32)
                b = rng.standard_normal((k, n), dtype=np.float32)
                ref = a.astype(np.float64) @ b
                err = np.abs(pyconv.matmul(a, b) - ref).max() / (np.abs(ref).max() + 1e-30)
                errs.append(err)
            worst = max(worst, max(errs))
            print(f"  {isa:8s} {max(errs):.2e}  ({len(shapes)} shapes)")
    finally:
        pyconv.set_isa(start_isa)
    # Peak windows before and between the timings; figures printed against the best.
    peak = _engines.PeakMeter(threads)
    peak.sample(3)
    timings = []
    for m, k, n in [(1024, 1024, 1024), (64, 576, 3136), (256, 2304, 196)]:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        tp = _median_seconds(lambda: pyconv.matmul(a, b))
        tn = _median_seconds(lambda: a @ b)
        timings.append((m, k, n, tp, tn))
        peak.sample()
    print(f"\nthroughput on {threads} thread(s), {peak.describe()}:")
    for m, k, n, tp, tn in timings:
        g = 2.0 * m * n * k / 1e9
        share, note = peak.percent(g / tp)
        print(f"  gemm {m}x{k}x{n}: pyconv {g / tp:6.1f} GFLOP/s ({share:4.1f}% of peak"
              f"{note}), numpy {g / tn:6.1f} GFLOP/s, ratio {tn / tp:.2f}")
    ok = worst < 1e-4
    print("\nself-check", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


def cmd_config(args):
    pyconv.show_config()
    return 0


def cmd_batch(args):
    from pyconv.cli._batch import cmd_batch
    return cmd_batch(args)


def cmd_demo(args):
    from pyconv.cli._demo import run_demo
    _threads(args)
    return run_demo(args)
