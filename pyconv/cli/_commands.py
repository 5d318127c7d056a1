"""The subcommands of the `pyconv` command line."""
import os
import time

import numpy as np
import onnx

import pyconv
from pyconv.cli import _engines
from pyconv.cli._info import ModelSummary, format_table, print_info
from pyconv.cli._inputs import concrete_shape, load_feed, parse_shape, random_feed
from pyconv._optional import require
from pyconv.errors import InvalidArgument, InvalidModel
from pyconv.session import NodeArg


def _check_file(path):
    if not os.path.isfile(path):
        raise InvalidArgument(f"no such model file: {path!r}")


def _load_model(path):
    """The ModelProto without external data (the CLI's static views need only dims)."""
    _check_file(path)
    try:
        return onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise InvalidModel(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None


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
    return print_info(model, concrete, args.model)


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
    from pyconv._ext import gemm

    model = _load_model(args.model)
    threads = _threads(args)
    session = _engines.open_session("pyconv", args.model, threads, profiling=True)
    feed = random_feed(session.get_inputs(), _shape_overrides(args))
    for _ in range(args.runs + 1):
        session.run(None, feed)
    # session.profile: one record per node and run; run 0 prepared the plans, leave it out.
    times = {}
    for r in session.profile:
        if r["run"] > 0:
            times.setdefault(r["node"], (r["op_type"], []))[1].append(r["duration_us"] * 1e-6)
    summary = ModelSummary(model, {k: v.shape for k, v in feed.items()})
    peak = gemm.measure_peak_gflops(threads=threads, seconds=0.2)
    rows = []
    for name, (op, durations) in times.items():
        rows.append((name, op, float(np.median(durations))))
    total = sum(r[2] for r in rows) or 1e-12
    rows.sort(key=lambda r: -r[2])
    table = []
    for name, op, t in rows[:args.top]:
        macs = summary.macs_by_node.get(name, 0)
        gflops = 2 * macs / t / 1e9 if macs and t > 0 else None
        table.append([name, op, f"{t * 1e3:.3f}", f"{100 * t / total:.1f}",
                      f"{gflops:.1f}" if gflops else "", f"{100 * gflops / peak:.0f}"
                      if gflops else ""])
    print(f"{args.model}: {len(rows)} nodes, {threads} thread(s), median of {args.runs} runs; "
          f"machine peak {peak:.1f} GFLOP/s")
    print(format_table(["node", "op", "ms", "share %", "GFLOP/s", "% peak"], table, "llrrrr"))
    by_op = {}
    for _, op, t in rows:
        by_op[op] = by_op.get(op, 0.0) + t
    print(f"\nnode total {total * 1e3:.3f} ms; by op: " + ", ".join(
        f"{op} {100 * t / total:.1f}%" for op, t in sorted(by_op.items(), key=lambda kv: -kv[1])))
    return 0


def cmd_bench(args):
    _check_file(args.model)
    if args.plot:   # before the timing, not after it
        require("PIL", "bench --plot")
    thread_counts = args.threads or [pyconv.get_num_threads()]
    engines = ["pyconv"] + [e for e in args.compare if e != "pyconv"]
    overrides = _shape_overrides(args)
    results = {}
    for threads in thread_counts:
        pyconv.set_num_threads(threads)
        feed = None
        for engine in engines:
            session = _engines.open_session(engine, args.model, threads)
            if feed is None:
                feed = random_feed(session.get_inputs(), overrides)
            times = _engines.time_runs(session, feed, args.runs, args.warmup,
                                       f"{engine} {threads} thread(s)")
            results[engine, threads] = times
    rows = []
    for (engine, threads), t in results.items():
        ratio = ""
        if engine == "pyconv" and ("onnxruntime", threads) in results:
            ratio = f"{np.median(t) / np.median(results['onnxruntime', threads]):.2f}"
        rows.append([engine, threads, f"{np.median(t) * 1e3:.3f}",
                     f"{np.percentile(t, 90) * 1e3:.3f}", f"{t.min() * 1e3:.3f}", ratio])
    print(f"{args.model}: {args.runs} runs after {args.warmup} warm-up")
    print(format_table(["engine", "threads", "median ms", "p90 ms", "min ms",
                        "pyconv/onnxruntime"], rows, "lrrrrr"))
    if args.plot:
        _plot(args.plot, results, os.path.basename(args.model))
        print(f"wrote {args.plot}")
    return 0


def _plot(path, results, title):
    """A bar chart of median latencies (Pillow, no plotting library needed)."""
    require("PIL", "bench --plot")
    from PIL import Image, ImageDraw

    items = [(f"{e} x{t}", float(np.median(v)) * 1e3) for (e, t), v in results.items()]
    width, bar_h, pad, label_w = 720, 34, 12, 170
    height = pad * 3 + 20 + len(items) * (bar_h + pad)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((pad, pad), f"{title}: median latency (ms), lower is better", fill="black")
    top = max(v for _, v in items) or 1.0
    colours = {"pyconv": (46, 109, 180), "onnxruntime": (230, 126, 34)}
    for i, (label, v) in enumerate(items):
        y = pad * 2 + 20 + i * (bar_h + pad)
        length = int((width - label_w - 90) * v / top)
        draw.text((pad, y + bar_h // 3), label, fill="black")
        draw.rectangle([label_w, y, label_w + max(length, 1), y + bar_h],
                       fill=colours.get(label.split()[0], (120, 120, 120)))
        draw.text((label_w + length + 6, y + bar_h // 3), f"{v:.2f}", fill="black")
    img.save(path)


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
    from pyconv._ext import gemm

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
    threads = pyconv.get_num_threads()
    peak = gemm.measure_peak_gflops(threads=threads, seconds=0.2)
    print(f"\nthroughput on {threads} thread(s), measured FP32 peak {peak:.1f} GFLOP/s:")
    for m, k, n in [(1024, 1024, 1024), (64, 576, 3136), (256, 2304, 196)]:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        tp = _median_seconds(lambda: pyconv.matmul(a, b))
        tn = _median_seconds(lambda: a @ b)
        g = 2.0 * m * n * k / 1e9
        print(f"  gemm {m}x{k}x{n}: pyconv {g / tp:6.1f} GFLOP/s ({100 * g / tp / peak:4.1f}% "
              f"of peak), numpy {g / tn:6.1f} GFLOP/s, ratio {tn / tp:.2f}")
    ok = worst < 1e-4
    print("\nself-check", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


def cmd_config(args):
    pyconv.show_config()
    return 0


def cmd_demo(args):
    from pyconv.cli._demo import run_demo
    _threads(args)
    return run_demo(args)
