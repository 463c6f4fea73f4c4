"""``sgformer-trt``: one subcommand per pipeline stage, each a thin layer over a library function.

Each verb has a light options module ``pipeline.cli.args.<verb>`` (``add_arguments(parser)``, no torch) and a run
part ``pipeline.cli.<verb>`` (``run(args) -> int``), imported only when that verb runs; this file wires them up,
configures logging, and turns ``PipelineError`` into a one-line message and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from pipeline.cli.options import CliParser, add_log_arguments
from pipeline.core.errors import PipelineError
from pipeline.store.interrupts import Terminated, command_guard, exit_after_cancel
from pipeline.store.storage import describe as describe_os_error

# verb -> one-line help (plain text). Options: pipeline.cli.args.<verb> (light: no torch); the run part
# pipeline.cli.<verb> (run(args)) is imported only for the verb that runs.
COMMANDS: dict[str, str] = {
    "info": "build a model (optionally from a checkpoint) and print its summary",
    "export": "export PyTorch SG-Former to ONNX",
    "rewrite": "replace every IAM sort/gather region with the SGFormerIAM custom op",
    "calibrate": "make the fp16 (casts) or int8 (Q/DQ) ONNX from calibration images",
    "evaluate": "accuracy of fp32/fp16/int8 ONNX graphs in onnxruntime vs PyTorch",
    "build": "build a TensorRT engine (+ manifest) from an ONNX and the plugin library",
    "verify": "check an ONNX graph or engine against the PyTorch reference",
    "run": "classify images with an engine",
    "bench": "latency / throughput / memory benchmarks",
    "explain": "overlay the per-stage importance maps on an image",
    "package": "package an engine directory for Triton (--triton) or DeepStream (--deepstream)",
    "engine": "every stage in order (export, calibrate, rewrite, build, verify), reusing up-to-date artifacts: "
              "what make engine runs",
}


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; imports only the light option modules (``--help`` never imports torch)."""
    parser = CliParser(prog="sgformer-trt", description=__doc__.splitlines()[0])
    add_log_arguments(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for verb, help_text in COMMANDS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        importlib.import_module(f"pipeline.cli.args.{verb}").add_arguments(p)
        add_log_arguments(p)
    return parser


def _log_level(args: argparse.Namespace) -> int:
    """INFO by default; -v debug; -q warnings; -qq errors."""
    return min(max(logging.INFO + 10 * (args.quiet - args.verbose), logging.DEBUG), logging.ERROR)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = _log_level(args)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("matplotlib", "PIL", "onnxslim"):  # third-party DEBUG output would drown ours at -v
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if not args.command:
        parser.print_help()
        return 1
    try:
        verb = importlib.import_module(f"pipeline.cli.{args.command}")  # the run part: heavy imports happen here
        with command_guard():  # SIGTERM -> KeyboardInterrupt, per-run temp folder (pipeline.store.interrupts)
            return int(verb.run(args) or 0)
    except PipelineError as exc:
        print(f"sgformer-trt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permissions, read-only disk: one line naming the path (pipeline.store.storage)
        print(f"sgformer-trt {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("terminated" if isinstance(exc, Terminated) else "interrupted", file=sys.stderr)
        exit_after_cancel(143 if isinstance(exc, Terminated) else 130)  # a cancelled TensorRT build: os._exit
        return 143 if isinstance(exc, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
