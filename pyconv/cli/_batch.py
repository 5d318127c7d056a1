"""`pyconv batch`: a model over many input files, in this process or on a Ray cluster,
into one Parquet file with a row per input, sorted by path."""
import glob
import logging
import os

import numpy as np

from pyconv._optional import require
from pyconv.batch import Predictor, Preprocess
from pyconv.cli._engines import Progress
from pyconv.cli._inputs import IMAGE_SUFFIXES
from pyconv.errors import InvalidArgument, PyconvError, RunFailed

ARRAY_SUFFIXES = (".npy", ".npz")


def list_inputs(spec):
    """Sorted absolute paths of the inputs: the image or array files of a directory (not
    its subdirectories), or the files a glob pattern matches (``**`` recursive); and their
    kind, "image" or "array" (one kind per run)."""
    if os.path.isdir(spec):
        paths = [os.path.join(spec, f) for f in os.listdir(spec)]
    else:
        paths = glob.glob(spec, recursive=True)
        if not paths and not glob.has_magic(spec):
            raise InvalidArgument(f"--inputs {spec!r}: no such file or directory")
    paths = sorted(os.path.abspath(p) for p in paths if os.path.isfile(p)
                   and p.lower().endswith(IMAGE_SUFFIXES + ARRAY_SUFFIXES))
    if not paths:
        raise InvalidArgument(f"--inputs {spec!r}: no image ({', '.join(IMAGE_SUFFIXES)}) "
                              f"or array (.npy, .npz) files")
    images = sum(p.lower().endswith(IMAGE_SUFFIXES) for p in paths)
    if 0 < images < len(paths):
        raise InvalidArgument(f"--inputs {spec!r}: {images} images and "
                              f"{len(paths) - images} .npy/.npz files; give one kind per run")
    return paths, "image" if images else "array"


class ParquetRows:
    """Batches of rows (dicts of equal-length columns) appended to one Parquet file:
    ``path`` first, N-d columns as Arrow fixed-shape tensors. Rows are expected in path
    order (they are read that way); if they come out of order the file is sorted when
    closed."""

    def __init__(self, path):
        self.pa = require("pyarrow", "writing Parquet")
        self.pq = require("pyarrow.parquet", "writing Parquet")
        self.path, self.writer, self.last, self.ordered, self.rows = path, None, None, True, 0

    def table(self, batch):
        pa = self.pa
        columns = {"path": pa.array([str(p) for p in batch["path"]], pa.string())}
        for name, value in batch.items():
            if name == "path":
                continue
            value = np.ascontiguousarray(value)
            columns[name] = pa.FixedShapeTensorArray.from_numpy_ndarray(value) \
                if value.ndim > 1 else pa.array(value)
        return pa.table(columns)

    def write(self, batch):
        table = self.table(batch)
        paths = table["path"].to_pylist()
        if self.last is not None and paths and paths[0] < self.last or paths != sorted(paths):
            self.ordered = False
        if paths:
            self.last = paths[-1]
        if self.writer is None:
            self.writer = self.pq.ParquetWriter(self.path, table.schema)
        elif table.schema != self.writer.schema:
            raise InvalidArgument(f"outputs of different shapes in one run: {table.schema} "
                                  f"and {self.writer.schema} (give the images one size "
                                  f"with a model of fixed input size)")
        self.writer.write_table(table)
        self.rows += table.num_rows

    def close(self):
        if self.writer is not None:
            self.writer.close()
            if not self.ordered:
                self.pq.write_table(self.pq.read_table(self.path).sort_by("path"), self.path)


def read_local(paths, kind, mode):
    """A batch as Ray Data's readers give it: ``path`` and ``image`` (Pillow-decoded
    pixels, converted to `mode`) or ``bytes`` (the file's contents)."""
    if kind == "array":
        data = []
        for p in paths:
            with open(p, "rb") as f:
                data.append(f.read())
        return {"path": np.array(paths), "bytes": data}
    Image = require("PIL.Image", "reading images")
    pixels = []
    for p in paths:
        try:
            with Image.open(p) as img:
                pixels.append(np.asarray(img if img.mode == mode else img.convert(mode)))
        except OSError as exc:
            raise InvalidArgument(f"{p}: not a readable image ({exc})") from None
    return {"path": np.array(paths), "image": pixels}


def run_local(predictor, paths, kind, batch_size, rows, bar):
    mode = predictor.image_mode if kind == "image" else None
    if kind == "image" and mode is None:
        raise InvalidArgument("images feed a 4-D input of 1 or 3 channels; this model's "
                              "input is not one")
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        rows.write(predictor(read_local(chunk, kind, mode)))
        bar.step(len(chunk))


def run_ray(model, predictor, paths, kind, batch_size, rows, bar, address, workers):
    ray = require("ray", "--engine ray")
    require("ray.data", "--engine ray")
    mode = predictor.image_mode if kind == "image" else None
    if kind == "image" and mode is None:
        raise InvalidArgument("images feed a 4-D input of 1 or 3 channels; this model's "
                              "input is not one")
    logging.getLogger("ray.data").setLevel(logging.ERROR)   # its plan and timing lines
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise RunFailed(f"cannot start or reach a Ray cluster"
                            f"{f' at {address}' if address else ''}: {exc}") from None
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True     # rows come back in path order
        context.enable_progress_bars = False                # ours counts rows
        cpus = ray.cluster_resources().get("CPU", 1.0)
        workers = workers or max(1, int(cpus))
        # Readers take no CPU slot: the workers hold every CPU and reading must go on
        # beside them (decoding is small next to a CNN's run). Without a slot nothing
        # bounds how many run at once (Ray started 8 reader processes on 2 CPUs), so they
        # are bounded here: one per worker.
        read = dict(include_paths=True, num_cpus=0, concurrency=workers)
        if kind == "image":
            ds = ray.data.read_images(paths, mode=mode, **read)
        else:
            ds = ray.data.read_binary_files(paths, **read)
        if address:       # no shared disk assumed: the model travels with the workers
            with open(model, "rb") as f:
                model = f.read()
        ds = ds.map_batches(
            Predictor, fn_constructor_args=(model, predictor.preprocess),
            fn_constructor_kwargs={"top_k": predictor.top_k,
                                   "samples_per_run": predictor.samples_per_run},
            batch_size=batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus / workers)
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                rows.write(batch)
                bar.step(len(batch["path"]))
        except ray.exceptions.RayError as exc:
            raise RunFailed(f"Ray: {_cause(exc)}") from None
    finally:
        if started:
            ray.shutdown()


def _cause(exc):
    """The worker's own error message, not Ray's traceback of it."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, PyconvError):
        return str(cause)
    lines = [line for line in str(cause or exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def cmd_batch(args):
    if not os.path.isfile(args.model):
        raise InvalidArgument(f"no such model file: {args.model!r}")
    if args.engine == "local" and (args.address or args.workers):
        raise InvalidArgument("--address and --workers go with --engine ray")
    require("pyarrow", "writing Parquet")       # before reading anything
    paths, kind = list_inputs(args.inputs)
    preprocess = Preprocess(input_name=args.input_name, mean=args.mean, std=args.std,
                            layout=args.layout)
    # The driver's own session checks the model and the input before any work starts; the
    # local engine runs on it.
    predictor = Predictor(args.model, preprocess, top_k=args.top,
                          threads=args.threads if args.engine == "local" else 1)
    predictor.session
    rows = ParquetRows(args.output)
    bar = Progress(len(paths), f"pyconv batch ({args.engine})")
    try:
        if args.engine == "local":
            run_local(predictor, paths, kind, args.batch_size, rows, bar)
        else:
            run_ray(args.model, predictor, paths, kind, args.batch_size, rows, bar,
                    args.address, args.workers)
    finally:
        rows.close()
    if rows.rows != len(paths):
        raise RunFailed(f"{rows.rows} rows written for {len(paths)} inputs")
    print(f"wrote {rows.rows} rows to {args.output}")
    return 0
