"""Batch inference over many inputs: a predictor for Ray Data, multiprocessing or Dask.

:class:`Predictor` is a picklable callable that maps a batch (a dict of NumPy arrays, as
Ray Data's ``map_batches`` passes it, or a pandas DataFrame, as Dask's ``map_partitions``
does) to a batch with the model's outputs::

    import ray
    from pyconv.batch import Predictor, Preprocess
    ds = ray.data.read_images("s3://bucket/images/", mode="RGB", include_paths=True,
                              num_cpus=0, concurrency=4)   # the workers hold every CPU
    ds.map_batches(Predictor, fn_constructor_args=("resnet50.onnx", Preprocess(
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))),
        compute=ray.data.ActorPoolStrategy(size=4), num_cpus=4,
        batch_size=32).write_parquet("out/")

It opens one session per worker process, on first use (an instance sent to a worker
carries the model path, or bytes, and the preprocessing, never a session), with as many
kernel threads as the CPUs the worker was given: Ray's assignment (``num_cpus``) inside a
Ray worker, the process's CPU affinity elsewhere; never more.

Nothing here imports Ray: the predictor only asks Ray for the worker's CPUs when Ray is
already loaded in the process.
"""
import hashlib
import io
import math
import os
import sys
import threading
import warnings
from dataclasses import dataclass

import numpy as np

from pyconv.errors import InvalidArgument

__all__ = ["Predictor", "Preprocess", "worker_cpus", "pixels_to_tensor", "INPUT_COLUMNS"]

#: Columns a batch's inputs are looked for in, in order, when ``Preprocess.column`` is not
#: set: Ray Data's ``read_images`` ("image"), ``read_numpy`` ("data") and
#: ``read_binary_files`` ("bytes": an .npy / .npz file's contents).
INPUT_COLUMNS = ("image", "data", "bytes")


@dataclass(frozen=True)
class Preprocess:
    """How raw inputs become the model's input tensor.

    Parameters
    ----------
    input_name : str, optional
        The model input to feed (default: its only input).
    size : (int, int), optional
        (height, width) images are resized to, bilinear (default: the model input's fixed
        H x W; images of that size are taken as they are).
    mean, std : tuple of float
        Per-channel (one value, or one per channel) normalisation of images after scaling
        to [0, 1]: ``(x - mean) / std``.
    layout : {"NCHW", "NHWC"}
        The model input's layout.
    column : str, optional
        The batch column holding the inputs (default: the first of :data:`INPUT_COLUMNS`
        present).

    Images (uint8 arrays, (H, W) grey or (H, W, C)) are resized, scaled and normalised;
    float arrays are samples already in the model's layout and are fed as they are
    (without a batch dim, or with a batch dim of 1); bytes are the contents of an .npy or
    .npz file (an .npz: the array named like the input, or its only array).
    """
    input_name: str = None
    size: tuple = None
    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    layout: str = "NCHW"
    column: str = None

    def __post_init__(self):
        if self.layout not in ("NCHW", "NHWC"):
            raise InvalidArgument(f"Preprocess layout {self.layout!r}: expected 'NCHW' or "
                                  f"'NHWC'")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise InvalidArgument(f"Preprocess size {self.size!r}: expected (height, width) "
                                  f"of positive integers")
        if not all(s != 0 for s in self.std):
            raise InvalidArgument(f"Preprocess std {self.std!r}: a standard deviation is 0")


def pixels_to_tensor(pixels, channels, mean=(0.0,), std=(1.0,), size=None, where="image"):
    """An image's uint8 pixels ((H, W) or (H, W, C)) as a float32 (C, H, W) array.

    Resized to ``size`` = (H, W) first when given and different (Pillow, bilinear), then
    scaled to [0, 1] and normalised per channel with ``(x - mean) / std``. `pyconv run`
    and the batch predictor both prepare images here, so they feed the same numbers."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise InvalidArgument(f"{where}: expected uint8 pixels of shape (H, W) or (H, W, C), "
                              f"got {pixels.dtype} {pixels.shape}")
    have = 1 if pixels.ndim == 2 else pixels.shape[2]
    if have != channels and not (pixels.ndim == 3 and have == 1 and channels == 1):
        raise InvalidArgument(f"{where}: {have} channel(s), the model input wants {channels} "
                              f"(read images as {'grey (L)' if channels == 1 else 'RGB'})")
    if size is not None and tuple(pixels.shape[:2]) != tuple(size):
        from pyconv._optional import require
        Image = require("PIL.Image", "resizing images")
        img = Image.fromarray(pixels.reshape(pixels.shape[:2]) if have == 1 else pixels)
        pixels = np.asarray(img.resize((size[1], size[0]), Image.BILINEAR))
    arr = np.asarray(pixels, dtype=np.float32) / 255.0
    arr = arr.reshape(arr.shape[:2])[None] if have == 1 else arr.transpose(2, 0, 1)
    mean, std = (_per_channel(name, values, channels) for name, values in
                 (("mean", mean), ("std", std)))
    return ((arr - mean) / std).astype(np.float32)


def _per_channel(name, values, channels):
    if len(values) not in (1, channels):
        raise InvalidArgument(f"{name} {','.join(f'{v:g}' for v in values)}: {len(values)} "
                              f"values for an input with {channels} channel(s): give 1 "
                              f"value or {channels}")
    return np.asarray(values, np.float32).reshape(-1, 1, 1)


def worker_cpus():
    """The CPUs this process may use: Ray's assignment inside a Ray worker (at least 1,
    rounded down: ``num_cpus=0.5`` gives 1), the process's CPU affinity elsewhere."""
    ray = sys.modules.get("ray")       # never imported here: only asked when present
    if ray is not None and ray.is_initialized():
        ctx = ray.get_runtime_context()
        if ctx.worker.mode == ray.WORKER_MODE:
            cpus = ctx.get_assigned_resources().get("CPU", 0.0)
            return max(1, int(math.floor(cpus)))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:             # macOS, Windows: no affinity call
        return os.cpu_count() or 1


# One session per process and model: a predictor that is pickled again for every task
# (multiprocessing's map, Dask) finds the session the process already opened.
_SESSIONS = {}
_SESSIONS_LOCK = threading.Lock()


class Predictor:
    """A picklable callable running an ONNX model over batches of inputs.

    Parameters
    ----------
    model : str, os.PathLike or bytes
        Path of the .onnx file (it must exist at that path on every worker), or its bytes
        (sent with the predictor: for clusters without a shared file system).
    preprocess : Preprocess, optional
        How inputs become the model's tensor (default: ``Preprocess()``).
    top_k : int
        Classes listed per row for classifier outputs (``(N, classes)``).
    threads : int, optional
        Kernel threads of the session (default: the CPUs of the worker,
        :func:`worker_cpus`). More than the worker's CPUs is lowered to them, with a
        warning.
    samples_per_run : int
        Samples per session run (default 1). pyconv gives one sample the same bits at any
        thread count, but a batched run of the final Gemm can round differently from a
        single-sample one; with 1, a row's outputs do not depend on how rows were grouped
        into batches. A model with a fixed batch dim runs that many per run.

    Calling it on a batch -- a dict of equal-length columns (NumPy arrays or lists) or a
    pandas DataFrame -- returns the same kind of batch: the columns other than the inputs,
    then for each model output ``name`` its values per row (float32, the output's shape
    without the batch dim), and

    - for a classifier output (N, classes): ``name_top_k`` (int64, (N, k), best first)
      and ``name_top_k_scores`` (float32 probabilities: softmax of logits, or the row as
      it is when it already sums to 1);
    - for a segmenter output (N, classes, H, W) (NHWC: (N, H, W, classes)):
      ``name_mask``, the argmax class per pixel (uint8, or int32 above 256 classes).
    """

    def __init__(self, model, preprocess=None, *, top_k=5, threads=None, samples_per_run=1):
        if isinstance(model, (bytes, bytearray)):
            self._model = bytes(model)
        elif isinstance(model, (str, os.PathLike)):
            self._model = os.fspath(model)
            if not os.path.isfile(self._model):
                raise InvalidArgument(f"Predictor: no such model file {self._model!r}")
        else:
            raise InvalidArgument(f"Predictor model: expected a path or bytes, got "
                                  f"{type(model).__name__}")
        self.preprocess = preprocess if preprocess is not None else Preprocess()
        if not isinstance(self.preprocess, Preprocess):
            raise InvalidArgument(f"Predictor preprocess: expected a Preprocess, got "
                                  f"{type(self.preprocess).__name__}")
        for name, value in (("top_k", top_k), ("samples_per_run", samples_per_run)) + \
                ((("threads", threads),) if threads is not None else ()):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgument(f"Predictor {name}: expected a positive integer, "
                                      f"got {value!r}")
        self.top_k, self.requested_threads = top_k, threads
        self.samples_per_run = samples_per_run
        self._session = None

    # -- pickling: the model and the settings travel, the session does not
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_session"] = None
        return state

    @property
    def threads(self):
        """Kernel threads of this process's session (None before the first call)."""
        return None if self._session is None else \
            self._session.get_session_options().intra_op_num_threads

    @property
    def image_mode(self):
        """The Pillow mode images should be read in for this model: "L" (1 channel),
        "RGB" (3), or None when the input is not an image (opens the session)."""
        self.session
        want = self._sample_shape
        if len(want) != 3:
            return None
        channels = want[0] if self.preprocess.layout == "NCHW" else want[2]
        return {1: "L", 3: "RGB"}.get(channels)

    @property
    def session(self):
        """The process's session for this model, opened on first use."""
        if self._session is None:
            self._session = self._open_session()
        return self._session

    def _open_session(self):
        import pyconv
        cpus = worker_cpus()
        threads = self.requested_threads or cpus
        if threads > cpus:
            warnings.warn(f"Predictor threads={threads}: this worker was given {cpus} "
                          f"CPU(s); running {cpus} thread(s)", RuntimeWarning, stacklevel=3)
            threads = cpus
        threads = min(threads, pyconv.config()["max_threads"])
        if isinstance(self._model, bytes):
            key = ("bytes", hashlib.sha1(self._model).hexdigest(), threads)
        else:
            st = os.stat(self._model)
            key = (os.path.realpath(self._model), st.st_size, st.st_mtime_ns, threads)
        with _SESSIONS_LOCK:
            session = _SESSIONS.get(key)
            if session is None:
                opts = pyconv.SessionOptions()
                opts.intra_op_num_threads = threads
                session = _SESSIONS[key] = pyconv.InferenceSession(self._model, opts)
        self._describe_input(session)
        return session

    def _describe_input(self, session):
        """The fed input and what a sample of it looks like (shape without the batch)."""
        inputs = session.get_inputs()
        p = self.preprocess
        names = [i.name for i in inputs]
        if p.input_name is None:
            if len(inputs) != 1:
                raise InvalidArgument(f"Predictor: the model has {len(inputs)} inputs "
                                      f"({', '.join(names)}); name one in Preprocess("
                                      f"input_name=...)")
            arg = inputs[0]
        elif p.input_name in names:
            arg = inputs[names.index(p.input_name)]
        else:
            raise InvalidArgument(f"Predictor: the model has no input {p.input_name!r} "
                                  f"(inputs: {', '.join(names)})")
        shape = list(arg.shape)
        self._input_name = arg.name
        self._input_batch = shape[0] if shape and isinstance(shape[0], int) and \
            shape[0] > 0 else None
        self._sample_shape = tuple(d if isinstance(d, int) and d > 0 else None
                                   for d in shape[1:])
        self._input_dtype = np.float64 if arg.type == "tensor(double)" else np.float32

    # -- one batch
    def __call__(self, batch):
        frame = None
        if hasattr(batch, "to_dict") and hasattr(batch, "columns"):     # pandas DataFrame
            frame, batch = batch, {c: batch[c].to_numpy() for c in batch.columns}
        if not isinstance(batch, dict):
            raise InvalidArgument(f"Predictor: expected a batch as a dict of columns or a "
                                  f"pandas DataFrame, got {type(batch).__name__}")
        session = self.session
        column = self._input_column(batch)
        values = batch[column]
        rows = len(values)
        samples = [self._sample(values[i], f"row {i} of column {column!r}")
                   for i in range(rows)]
        names = [o.name for o in session.get_outputs()]
        outputs = [[] for _ in names]
        per_run = self._input_batch or self.samples_per_run
        for start in range(0, rows, per_run):
            chunk = samples[start:start + per_run]
            x = np.stack(chunk)
            if self._input_batch and len(chunk) < self._input_batch:   # fixed batch: pad
                x = np.concatenate([x, np.zeros((self._input_batch - len(chunk),) +
                                                x.shape[1:], x.dtype)])
            for out, value in zip(outputs, session.run(None, {self._input_name: x})):
                out.append(np.asarray(value)[:len(chunk)])
        result = {k: v for k, v in batch.items() if k != column}
        for name, parts in zip(names, outputs):
            value = np.concatenate(parts) if parts else np.zeros((0,), np.float32)
            result[name] = value
            result.update(self._derived(name, value))
        if frame is not None:
            import pandas as pd
            return pd.DataFrame({k: list(v) if np.ndim(v) > 1 else v
                                 for k, v in result.items()}, index=frame.index)
        return result

    def _input_column(self, batch):
        column = self.preprocess.column
        if column is None:
            column = next((c for c in INPUT_COLUMNS if c in batch), None)
            if column is None:
                raise InvalidArgument(f"Predictor: the batch has none of the input columns "
                                      f"{', '.join(INPUT_COLUMNS)} (columns: "
                                      f"{', '.join(map(str, batch))}); name one in "
                                      f"Preprocess(column=...)")
        elif column not in batch:
            raise InvalidArgument(f"Predictor: the batch has no column {column!r} (columns: "
                                  f"{', '.join(map(str, batch))})")
        return column

    def _sample(self, value, where):
        """One input (pixels, a float array, or an .npy/.npz file's bytes) as the model's
        sample tensor (its input shape without the batch dim)."""
        p = self.preprocess
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = self._decode(bytes(value), where)
        value = np.asarray(value)
        want = self._sample_shape
        if value.dtype == np.uint8:
            if len(want) != 3:
                raise InvalidArgument(f"{where}: an image feeds a 4-D input, the model's "
                                      f"{self._input_name!r} has {len(want) + 1} dims")
            if p.layout == "NCHW":
                channels, hw = want[0], want[1:]
            else:
                channels, hw = want[2], want[:2]
            if channels not in (1, 3):
                raise InvalidArgument(f"{where}: images give 1 or 3 channels, the input "
                                      f"{self._input_name!r} wants {channels}")
            size = p.size or (hw if None not in hw else None)
            chw = pixels_to_tensor(value, channels, p.mean, p.std, size, where)
            return (chw if p.layout == "NCHW" else chw.transpose(1, 2, 0)).astype(
                self._input_dtype, copy=False)
        if not (np.issubdtype(value.dtype, np.floating) or
                np.issubdtype(value.dtype, np.integer)):
            raise InvalidArgument(f"{where}: expected uint8 pixels, a numeric array or .npy/"
                                  f".npz bytes, got {value.dtype}")
        if value.ndim == len(want) + 1 and value.shape[0] == 1:
            value = value[0]
        if value.ndim != len(want) or any(w is not None and w != d
                                          for w, d in zip(want, value.shape)):
            raise InvalidArgument(f"{where}: an array of shape {value.shape}; the input "
                                  f"{self._input_name!r} takes samples of shape "
                                  f"({', '.join('?' if w is None else str(w) for w in want)})")
        return value.astype(self._input_dtype, copy=False)

    def _decode(self, data, where):
        try:
            loaded = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"{where}: not an .npy or .npz file ({exc})") from None
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:
            keys = list(loaded.keys())
            key = self._input_name if self._input_name in keys else \
                (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise InvalidArgument(f"{where}: the .npz holds {keys}; name one array "
                                      f"{self._input_name!r} or store only one")
            return loaded[key]

    def _derived(self, name, value):
        """Top-k of a classifier output, the argmax mask of a segmenter output."""
        if not np.issubdtype(value.dtype, np.floating):
            return {}
        if value.ndim == 2 and value.shape[1] > 1:
            k = min(self.top_k, value.shape[1])
            rows = value.astype(np.float64)
            # Per row, so that a row's scores do not depend on the rest of its batch.
            is_prob = (rows.min(axis=1) >= 0) & (np.abs(rows.sum(axis=1) - 1) <= 1e-3)
            shifted = np.exp(rows - rows.max(axis=1, keepdims=True))
            probs = np.where(is_prob[:, None], rows,
                             shifted / shifted.sum(axis=1, keepdims=True))
            top = np.argsort(-probs, axis=1, kind="stable")[:, :k].astype(np.int64)
            return {f"{name}_top_k": top,
                    f"{name}_top_k_scores": np.take_along_axis(probs, top, 1).astype(
                        np.float32)}
        if value.ndim == 4:
            axis = 1 if self.preprocess.layout == "NCHW" else 3
            classes = value.shape[axis]
            if classes > 1:
                mask = value.argmax(axis=axis)
                return {f"{name}_mask": mask.astype(np.uint8 if classes <= 256 else np.int32)}
        return {}
