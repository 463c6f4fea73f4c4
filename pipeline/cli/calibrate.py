"""The ``calibrate`` verb: options and result printing over :mod:`calibration.calibrate`."""
from __future__ import annotations

import argparse
import dataclasses
from pipeline.cli.options import add_dataclass_arguments, dataclass_from_args
from calibration.calibrate import CalibrateOptions, calibrate_file


#: list-valued options: nargs and metavar (argparse details the dataclass does not carry)
_LISTS = {"op_types": ("+", "OP"), "exclude": ("+", "NAME"), "exclude_op_types": ("+", "OP"),
          "include": ("+", "NAME"), "keep_fp32_ops": ("*", "OP"), "keep_fp32": ("+", "NAME")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True, help="exported standard-op graph (model.onnx)")
    parser.add_argument("--precision", required=True, choices=("fp16", "int8"))
    parser.add_argument("-o", "--output", required=True, help="where to write the new ONNX")
    add_dataclass_arguments(parser, CalibrateOptions, exclude=_LISTS)
    for field in dataclasses.fields(CalibrateOptions):
        if field.name in _LISTS:
            nargs, metavar = _LISTS[field.name]
            parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name, nargs=nargs, metavar=metavar,
                                default=list(field.default), help=field.metadata["help"])
    parser.add_argument("--report", help="write a JSON summary (quantized/excluded nodes, cache, timing) here")


def run(args: argparse.Namespace) -> int:
    calibrate_file(args.onnx, args.output, args.precision, dataclass_from_args(CalibrateOptions, args), args.report)
    return 0
