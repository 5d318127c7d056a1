"""The `pyconv` command line (also `python -m pyconv`).

    pyconv info MODEL [--shape NAME=1x3x224x224]
    pyconv run MODEL --input NAME=FILE ... [--output out.npz]
    pyconv profile MODEL
    pyconv bench MODEL [--compare onnxruntime] [--threads 1,2] [--runs N] [--plot FILE.png]
    pyconv batch MODEL --inputs DIR_OR_GLOB --output OUT.parquet [--engine local|ray]
    pyconv demo
    pyconv config

Errors are one line on stderr and a non-zero exit status (2: bad command line, 1: the
model or the inputs are wrong)."""
import argparse
import os
import sys

import pyconv
from pyconv.errors import PyconvError

EPILOG = """examples:
  pyconv info pyconv/models/shapes_unet.onnx --shape input=2x3x64x64
  pyconv run pyconv/models/shapes_classifier.onnx --input input=picture.png --mean 0.5 --std 0.5 --top 3
  pyconv profile resnet50.onnx --threads 2
  pyconv bench resnet50.onnx --compare onnxruntime --threads 1,2 --plot bench.png
  pyconv batch resnet50.onnx --inputs 'photos/*.jpg' --output out.parquet --engine ray
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, like every other pyconv error (argparse would print the usage too).
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _threads_list(text):
    try:
        values = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {text!r}")
    return values


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _floats(text):
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")


def build_parser():
    from pyconv.cli import _commands

    parser = _Parser(prog="pyconv", epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="pyconv: a CPU inference engine for convolutional networks "
                                 "(ONNX models, onnxruntime-compatible API).")
    parser.add_argument("--version", action="version", version=f"pyconv {pyconv.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def model_command(name, help_text, func):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("model", metavar="MODEL", help="path to an .onnx file")
        p.add_argument("--shape", action="append", default=[], metavar="NAME=DIMS",
                       help="concrete shape of an input with symbolic dims, e.g. "
                            "input=1x3x64x64 (repeatable; a symbolic batch dim defaults to 1)")
        p.set_defaults(func=func)
        return p

    model_command("info", "per-node table: op, output shape, parameters, MACs",
                  _commands.cmd_info)

    p = model_command("run", "run a model on inputs from files and summarise the outputs",
                      _commands.cmd_run)
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE",
                   help=".npy, .npz or an image (PNG/JPEG...); repeat for each input")
    p.add_argument("--output", metavar="FILE.npz", help="save every output to an .npz file")
    p.add_argument("--threads", type=_positive, default=None, help="kernel threads")
    p.add_argument("--top", type=_positive, default=5, metavar="K",
                   help="classes to list for classifier outputs (default 5)")
    p.add_argument("--mean", type=_floats, default=(0.0,), metavar="M[,M,M]",
                   help="images: per-channel mean subtracted after scaling to [0, 1]")
    p.add_argument("--std", type=_floats, default=(1.0,), metavar="S[,S,S]",
                   help="images: per-channel std divided by after the mean (default 1)")
    p.add_argument("--labels", metavar="FILE", help="text file with one class name per line")

    p = model_command("profile", "per-node time table sorted by cost, with GFLOP/s vs peak",
                      _commands.cmd_profile)
    p.add_argument("--threads", type=_positive, default=None, help="kernel threads")
    p.add_argument("--runs", type=_positive, default=10, help="profiled runs (default 10)")
    p.add_argument("--top", type=_positive, default=25, metavar="K",
                   help="rows to show (default 25)")

    p = model_command("bench", "latency (median, p90) at each thread count, beside "
                               "onnxruntime", _commands.cmd_bench)
    p.add_argument("--compare", choices=["onnxruntime"], action="append", default=[],
                   help="also time this engine in the same run")
    p.add_argument("--threads", type=_threads_list, default=None, metavar="N[,N...]",
                   help="thread counts to time (default: the current setting)")
    p.add_argument("--runs", type=_positive, default=20, help="timed runs (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="write a chart of the latencies: spread per engine and thread count "
                        "(needs matplotlib: pip install 'pyconv[plot]')")

    p = sub.add_parser("batch", help="run a model over many input files (images, .npy, "
                                     ".npz) into a Parquet file, here or on a Ray cluster",
                       description="Runs a model over many input files and writes one "
                                   "Parquet row per input (path, outputs, top-k or mask), "
                                   "sorted by path. --engine ray needs the pyconv[ray] extra.")
    p.add_argument("model", metavar="MODEL", help="path to an .onnx file")
    p.add_argument("--inputs", required=True, metavar="DIR_OR_GLOB",
                   help="a directory of images or .npy/.npz files, or a glob pattern "
                        "(quote it; ** is recursive)")
    p.add_argument("--output", required=True, metavar="OUT.parquet",
                   help="the Parquet file to write")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process (default); ray: Ray Data on a cluster")
    p.add_argument("--address", default=None, metavar="ray://HOST:PORT",
                   help="the Ray cluster to use (default: start a local one)")
    p.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="Ray workers (default: one per CPU of the cluster); each gets "
                        "CPUs / N CPUs and as many threads")
    p.add_argument("--batch-size", type=_positive, default=32, metavar="B",
                   help="inputs per batch (default 32)")
    p.add_argument("--threads", type=_positive, default=None,
                   help="--engine local: kernel threads (default: the process's CPUs)")
    p.add_argument("--input-name", default=None, metavar="NAME",
                   help="the model input to feed (default: its only input)")
    p.add_argument("--layout", choices=["NCHW", "NHWC"], default="NCHW",
                   help="the model input's layout (default NCHW)")
    p.add_argument("--top", type=_positive, default=5, metavar="K",
                   help="classes kept per row for classifier outputs (default 5)")
    p.add_argument("--mean", type=_floats, default=(0.0,), metavar="M[,M,M]",
                   help="images: per-channel mean subtracted after scaling to [0, 1]")
    p.add_argument("--std", type=_floats, default=(1.0,), metavar="S[,S,S]",
                   help="images: per-channel std divided by after the mean (default 1)")
    p.set_defaults(func=_commands.cmd_batch)

    p = sub.add_parser("demo", help="the main job: bundled classifier and segmenter on "
                                    "fresh synthetic images, accuracy, latency and a picture",
                       description="Runs the bundled models on freshly generated images.")
    p.add_argument("--samples", type=_positive, default=200,
                   help="images per model (default 200)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the generated images (default: a fresh one)")
    p.add_argument("--picture", default=None, metavar="FILE.png",
                   help="where to write the picture (default pyconv_demo.png; needs "
                        "matplotlib: pip install 'pyconv[plot]')")
    p.add_argument("--threads", type=_positive, default=None, help="kernel threads")
    p.add_argument("--models", default=None, metavar="DIR",
                   help="directory of the bundled models (default: the ones installed "
                        "with pyconv, package data of pyconv.models)")
    p.set_defaults(func=_commands.cmd_demo)

    p = sub.add_parser("selfcheck", help="engine self-check: every ISA path against NumPy, "
                                         "GEMM throughput against the machine's peak")
    p.add_argument("--threads", type=_positive, default=None, help="kernel threads")
    p.set_defaults(func=_commands.cmd_selfcheck)

    p = sub.add_parser("config", help="show the ISA path, threading, threads and blocking")
    p.set_defaults(func=_commands.cmd_config)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:
        # Output piped into `head` and closed: not an error. Point stdout at devnull so
        # the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (PyconvError, OSError) as exc:
        print(f"pyconv: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pyconv: interrupted", file=sys.stderr)
        return 130
