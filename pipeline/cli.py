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

from .errors import PipelineError
from .interrupts import Terminated, command_guard, exit_after_cancel
from .storage import describe as describe_os_error

# verb -> (module, one-line help). Each module supplies add_arguments(parser) and run(args).
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("pipeline.info", "build a model (optionally from a checkpoint) and print its summary"),
    "export": ("pipeline.export", "export PyTorch SG-Former to ONNX"),
    "rewrite": ("pipeline.rewrite", "replace every IAM sort/gather region with the SGFormerIAM custom op"),
    "calibrate": ("calibration.cli", "make the fp16 (casts) or int8 (Q/DQ) ONNX from calibration images"),
    "evaluate": ("calibration.evaluate", "accuracy of fp32/fp16/int8 ONNX graphs in onnxruntime vs PyTorch"),
    "build": ("pipeline.build", "build a TensorRT engine (+ manifest) from an ONNX and the plugin library"),
    "verify": ("pipeline.verify", "check an ONNX graph or engine against the PyTorch reference"),
    "run": ("pipeline.runtime", "classify images with an engine"),
    "bench": ("pipeline.bench", "latency / throughput / memory benchmarks"),
    "explain": ("pipeline.explain", "overlay the per-stage importance maps on an image"),
    "package": ("pipeline.package", "package an engine directory for Triton (--triton) or DeepStream (--deepstream)"),
}


def add_model_arguments(parser: argparse.ArgumentParser, *, from_metadata: bool = False,
                        seed_help: str = "seed of the random weights without --checkpoint") -> None:
    """The options that name the PyTorch network: --variant, --img-size, --checkpoint, --trust-checkpoint, --seed.

    ``from_metadata``: variant and size default to None, for commands that read them from an ONNX's metadata.
    """
    from .model import VARIANTS

    if from_metadata:
        parser.add_argument("--variant", choices=list(VARIANTS), help="SG-Former variant (default: ONNX metadata)")
        parser.add_argument("--img-size", type=int, help="input side (default: ONNX metadata, else 224)")
    else:
        parser.add_argument("--variant", default="s", choices=list(VARIANTS), help="SG-Former variant (default s)")
        parser.add_argument("--img-size", type=int, default=224, help="input side, a multiple of 224 (default 224)")
    parser.add_argument("--checkpoint", help="official .pth / .pth.tar checkpoint (default: seeded random weights)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow arbitrary pickled objects in the checkpoint (trusted files only)")
    parser.add_argument("--seed", type=int, default=0, help=seed_help)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(prog="sgformer-trt", description=__doc__.splitlines()[0])
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
        with command_guard():  # SIGTERM -> KeyboardInterrupt, per-run temp folder (pipeline.interrupts)
            return int(modules[args.command].run(args) or 0)
    except PipelineError as exc:
        print(f"sgformer-trt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permissions, read-only disk: one line naming the path (pipeline.storage)
        print(f"sgformer-trt {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("terminated" if isinstance(exc, Terminated) else "interrupted", file=sys.stderr)
        exit_after_cancel(143 if isinstance(exc, Terminated) else 130)  # a cancelled TensorRT build: os._exit
        return 143 if isinstance(exc, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
