"""Options of ``sgformer-trt calibrate`` (the calibration settings: ``pipeline.core.configs.CalibrateOptions``)."""
from __future__ import annotations

import argparse

from pipeline.cli.options import add_dataclass_arguments
from pipeline.core.artifact import Precision
from pipeline.core.configs import CalibrateOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True, help="exported standard-op graph (model.onnx)")
    parser.add_argument("--precision", required=True, choices=(Precision.FP16.value, Precision.INT8.value),
                        help="fp16: explicit casts; int8: explicit Q/DQ from calibration images")
    parser.add_argument("-o", "--output", required=True, help="where to write the new ONNX")
    add_dataclass_arguments(parser, CalibrateOptions)
    parser.add_argument("--report", help="write a JSON summary (quantized/excluded nodes, cache, timing) here")
