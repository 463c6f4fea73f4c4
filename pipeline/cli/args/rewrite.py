"""Options of ``sgformer-trt rewrite``."""
from __future__ import annotations

import argparse

from pipeline.core.variants import VARIANTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="exported standard-op ONNX (model.onnx)")
    parser.add_argument("-o", "--output", required=True, help="path of the rewritten ONNX (model.iam.onnx)")
    parser.add_argument("--variant", choices=list(VARIANTS), help="expected variant (default: from the ONNX metadata)")
    parser.add_argument("--img-size", type=int, help="expected input side (default: from the ONNX metadata)")
