"""Options of ``sgformer-trt export``."""
from __future__ import annotations

import argparse

from pipeline.cli.options import add_model_arguments
from pipeline.core.artifact import InputFormat
from pipeline.core.configs import DEFAULT_OPSET


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--batch", type=int, default=None, help="fixed batch size (default: dynamic)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--no-simplify", action="store_true", help="skip the onnxslim simplification")
    parser.add_argument("--input-format", choices=InputFormat.values(), default=InputFormat.NORMALIZED.value,
                        help="what the images input holds: normalized (ImageNet mean/std applied, default), "
                             "rgb-float01 (RGB in [0, 1]) or rgb-uint8 (RGB 0..255); the last two put the "
                             "normalization into the graph")
    parser.add_argument("--task", choices=("classify", "features"), default="classify",
                        help="classify: logits (default); features: a backbone with outputs stage1..stage4 "
                             "(NCHW maps after each stage norm, strides 4, 8, 16, 32)")
    parser.add_argument("-o", "--output", required=True, help="path of the ONNX file to write")
