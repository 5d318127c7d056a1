"""Charts of the command line, drawn with matplotlib (the optional ``pyconv[plot]`` extra).

matplotlib is imported here only, when a chart is asked for; figures are drawn on the
Agg canvas directly (no pyplot state, no display needed).
"""
import numpy as np

from pyconv.errors import InvalidArgument

#: Engine colours, the same in every chart.
ENGINE_COLOURS = {"pyconv": "#2e6db4", "onnxruntime": "#e67e22"}


def require_matplotlib(option):
    """Imports matplotlib, or raises InvalidArgument naming ``option`` and the extra."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        raise InvalidArgument(f"{option} draws with matplotlib, which is not installed: "
                              f"pip install 'pyconv[plot]' (or pip install matplotlib)") \
            from None


def _figure(width, height):
    require_matplotlib("charts")
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def bench_chart(path, results, peaks, model_name, runs, warmup):
    """Latency per run, one box per engine and thread count (quartiles, whiskers at the
    5th and 95th percentiles, median line, mean marker), grouped by thread count.

    Parameters
    ----------
    results : dict (engine, threads) -> ndarray of seconds
    peaks : dict threads -> PeakMeter

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.patches import Patch
    from pyconv.cli._engines import machine_description

    thread_counts = sorted({t for _, t in results})
    engines = [e for e in ENGINE_COLOURS if any(e == k[0] for k in results)]
    fig = _figure(max(6.0, 1.6 + 1.4 * len(thread_counts) * len(engines)), 4.8)
    ax = fig.add_subplot()
    width = 0.8 / len(engines)
    for j, engine in enumerate(engines):
        keys = [(engine, t) for t in thread_counts if (engine, t) in results]
        positions = [thread_counts.index(t) + (j - (len(engines) - 1) / 2) * width
                     for _, t in keys]
        boxes = ax.boxplot([results[k] * 1e3 for k in keys], positions=positions,
                           widths=width * 0.8, whis=(5, 95), showmeans=True,
                           patch_artist=True, showfliers=True)
        for box in boxes["boxes"]:
            box.set(facecolor=ENGINE_COLOURS[engine], alpha=0.75)
        for median in boxes["medians"]:
            median.set(color="black")
        for k, x in zip(keys, positions):     # the median, along the bottom of the axes
            ax.text(x, 0.02, f"{np.median(results[k]) * 1e3:.3g} ms", ha="center",
                    va="bottom", fontsize=8, transform=ax.get_xaxis_transform())
    ax.set_xticks(range(len(thread_counts)))
    ax.set_xticklabels([f"{t} thread{'s' if t > 1 else ''}" for t in thread_counts])
    ax.set_xlim(-0.6, len(thread_counts) - 0.4)
    ax.set_ylabel("latency per run (ms), lower is better")
    every = np.concatenate([v for v in results.values()]) * 1e3
    if every.max() > 10 * every.min():
        ax.set_yscale("log")            # outliers of a busy machine would flatten the boxes
        ax.set_ylim(bottom=every.min() / 2)   # room for the median labels
    else:
        ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{model_name}: {runs} timed runs after {warmup} warm-up")
    ax.legend(handles=[Patch(facecolor=ENGINE_COLOURS[e], alpha=0.75, label=e)
                       for e in engines], title="engine", loc="best")
    peak_text = ", ".join(f"{p.gflops:.0f} GFLOP/s on {t} thread{'s' if t > 1 else ''}"
                          for t, p in sorted(peaks.items()))
    fig.supxlabel(f"{machine_description()}\nmeasured FP32 peak (best of several FMA "
                  f"windows): {peak_text}\nbox: quartiles; whiskers: 5th-95th percentile; "
                  f"line: median (labelled); triangle: mean; circles: runs outside the whiskers",
                  fontsize=8)
    fig.savefig(path)
    return fig


def demo_picture(path, shapes, palette, data, preds, figures, count=6):
    """Inputs, true masks and each engine's predicted masks, then the classifier's inputs
    with true and predicted labels; a legend of class colours; per engine the accuracy,
    mean IoU and latencies in the title.

    Parameters
    ----------
    shapes : module
        models/shapes.py (``CLASSES``, ``denormalize``).
    palette : ndarray (classes + 1, 3) uint8
        Mask colours: background, then one per shape class.
    data : (cls_x, cls_y, seg_x, seg_y)
    preds, figures : dict engine -> (labels, masks) / dict of figures

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.patches import Patch

    cls_x, cls_y, seg_x, seg_y = data
    engines = list(preds)
    count = min(count, len(seg_x), len(cls_x))
    rows = [("input", None), ("ground truth", None)] + [(e, e) for e in engines]
    fig = _figure(1.55 * count + 1.2, 1.45 * (len(rows) + 1) + 1.6)
    grid = fig.add_gridspec(len(rows) + 1, count)

    def image(x):
        return shapes.denormalize(x).transpose(1, 2, 0)

    for r, (label, engine) in enumerate(rows):
        for i in range(count):
            ax = fig.add_subplot(grid[r, i])
            if r == 0:
                ax.imshow(image(seg_x[i]))
            elif engine is None:
                ax.imshow(palette[seg_y[i] % len(palette)], interpolation="nearest")
            else:
                ax.imshow(palette[preds[engine][1][i] % len(palette)],
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label if engine is None else f"{label}\nmask", fontsize=9)
    for i in range(count):
        ax = fig.add_subplot(grid[len(rows), i])
        ax.imshow(image(cls_x[i]))
        ax.set_xticks([])
        ax.set_yticks([])
        truth = shapes.CLASSES[cls_y[i]]
        lines = [f"true: {truth}"] + [
            f"{e}: {shapes.CLASSES[preds[e][0][i]]}" for e in engines]
        wrong = any(preds[e][0][i] != cls_y[i] for e in engines)
        ax.set_xlabel("\n".join(lines), fontsize=7.5, color="#b00000" if wrong else "black")
        if i == 0:
            ax.set_ylabel("classifier", fontsize=9)
    names = ["background"] + list(shapes.CLASSES)
    fig.legend(handles=[Patch(facecolor=palette[k] / 255.0, edgecolor="grey", label=n)
                        for k, n in enumerate(names)], loc="outside lower center",
               ncol=len(names), fontsize=8, title="mask colours", title_fontsize=8)
    n = len(cls_x)
    lines = [f"pyconv demo: bundled classifier and segmenter on {n} fresh images each"]
    for e in engines:
        f = figures[e]
        lines.append(f"{e}: accuracy {f['accuracy']:.3f}, mean IoU {f['miou']:.3f}, "
                     f"latency (batch 1) classify {f['cls_ms']:.2f} ms, segment "
                     f"{f['seg_ms']:.2f} ms")
    fig.suptitle("\n".join(lines), fontsize=9.5)
    fig.savefig(path)
    return fig
