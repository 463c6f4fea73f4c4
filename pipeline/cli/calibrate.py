"""The ``calibrate`` verb: options and result printing over :mod:`calibration.calibrate`."""
from __future__ import annotations

from pipeline.cli.args.calibrate import add_arguments  # noqa: F401  (the options: a light module)

import argparse

from pipeline.cli.options import dataclass_from_args
from pipeline.core.artifact import Precision
from pipeline.core.configs import CalibrateOptions
from calibration.calibrate import calibrate_file


def run(args: argparse.Namespace) -> int:
    calibrate_file(args.onnx, args.output, Precision.parse(args.precision), dataclass_from_args(CalibrateOptions, args), args.report)
    return 0
