"""Options of ``sgformer-trt evaluate``."""
from __future__ import annotations

import argparse

from pipeline.cli.options import add_model_arguments, add_renamed
from pipeline.core.configs import CALIBRATION_METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, from_metadata=True)
    parser.add_argument("--onnx-fp32", help="fp32 graph (exported or rewritten)")
    parser.add_argument("--onnx-fp16", help="fp16 graph")
    parser.add_argument("--onnx-int8", help="int8 Q/DQ graph")
    parser.add_argument("--onnx", action="append", default=[], metavar="NAME=PATH", help="any further graph")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--images", help="image folder (recursive); labels come from WordNet-id class folders "
                                      "(n01440764/), official ILSVRC2012 val file names, or --labels")
    src.add_argument("--list", dest="list_file", help="file with one image path per line")
    parser.add_argument("--labels", help="CSV of file,label_index for top-1/top-5 accuracy")
    parser.add_argument("--num-images", type=int, help="evaluate a deterministic sample of N images")
    parser.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images with a warning")
    parser.add_argument("--batch", type=int, default=8, help="images per onnxruntime call (default 8)")
    parser.add_argument("--report", help="write the report as JSON here")
    add_renamed(parser, "--json", "report")
    parser.add_argument("--sensitivity", action="store_true",
                        help="int8 per-layer-group sensitivity of --onnx-fp32 (the exported standard-op graph): "
                             "quantize one group at a time, most sensitive first; calibrates on the same images")
    parser.add_argument("--method", choices=CALIBRATION_METHODS, default="entropy",
                        help="calibration method for --sensitivity (default entropy)")
