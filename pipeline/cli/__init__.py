"""``sgformer-trt``: one subcommand per pipeline stage, each a thin layer over a library function.

Each stage module that has a verb defines ``add_arguments(parser)`` and ``run(args) -> int``; this file only
wires them up, configures logging, and turns ``PipelineError`` into a one-line message and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from pipeline.cli.options import CliParser
from pipeline.core.errors import PipelineError
from pipeline.store.interrupts import Terminated, command_guard, exit_after_cancel
from pipeline.store.storage import describe as describe_os_error

# verb -> (module, one-line help). Each module supplies add_arguments(parser) and run(args).
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("pipeline.cli.info", "build a model (optionally from a checkpoint) and print its summary"),
    "export": ("pipeline.cli.export", "export PyTorch SG-Former to ONNX"),
    "rewrite": ("pipeline.cli.rewrite", "replace every IAM sort/gather region with the SGFormerIAM custom op"),
    "calibrate": ("pipeline.cli.calibrate", "make the fp16 (casts) or int8 (Q/DQ) ONNX from calibration images"),
    "evaluate": ("pipeline.cli.evaluate", "accuracy of fp32/fp16/int8 ONNX graphs in onnxruntime vs PyTorch"),
    "build": ("pipeline.cli.build", "build a TensorRT engine (+ manifest) from an ONNX and the plugin library"),
    "verify": ("pipeline.cli.verify", "check an ONNX graph or engine against the PyTorch reference"),
    "run": ("pipeline.cli.run", "classify images with an engine"),
    "bench": ("pipeline.cli.bench", "latency / throughput / memory benchmarks"),
    "explain": ("pipeline.cli.explain", "overlay the per-stage importance maps on an image"),
    "package": ("pipeline.cli.package", "package an engine directory for Triton (--triton) or DeepStream (--deepstream)"),
    "engine": ("pipeline.cli.engine", "every stage in order (export, calibrate, rewrite, build, verify), reusing "
                                "up-to-date artifacts: what `make engine` runs"),
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = CliParser(prog="sgformer-trt", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for verb, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(verb, help=help_text, description=help_text)
        module.add_arguments(p)
        modules[verb] = module
    return parser, modules


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("matplotlib", "PIL", "onnxslim"):  # third-party DEBUG output would drown ours at -vv
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if not args.command:
        parser.print_help()
        return 1
    try:
        with command_guard():  # SIGTERM -> KeyboardInterrupt, per-run temp folder (pipeline.store.interrupts)
            return int(modules[args.command].run(args) or 0)
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
