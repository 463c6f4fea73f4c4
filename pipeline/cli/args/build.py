"""Options of ``sgformer-trt build`` (the builder settings: ``pipeline.core.configs.BuildConfig``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.cli.options import add_dataclass_arguments, add_renamed, image_size_arg
from pipeline.core.artifact import META_VARIANT, Precision
from pipeline.core.configs import BuildConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True, type=Path, help="ONNX to build (exported, rewritten or calibrated)")
    parser.add_argument("-o", "--output", type=Path, default=Path("engines"), metavar="DIR",
                        help="root folder; the engine goes to DIR/<variant>-<precision>-<res>/ (default engines)")
    parser.add_argument("--name", default=None,
                        help="engine folder name under DIR (default <variant>-<precision>-<res>; the native-TopK "
                             "comparison engine of make engine-topk is <variant>-fp32-topk-224)")
    add_dataclass_arguments(parser, BuildConfig)
    parser.add_argument("--variant", default=None,
                        help=f"label (default: ONNX metadata {META_VARIANT}; must agree with it when recorded)")
    parser.add_argument("--img-size", type=image_size_arg, default=None,
                        help="input size label, S or HxW (default: ONNX metadata or the graph's input size)")
    parser.add_argument("--precision", choices=("auto", *Precision.values()), default="auto",
                        help="expected precision; auto reads the graph (Q/DQ -> int8, fp16 casts -> fp16). A value "
                             "the graph does not hold is an error (precision comes from the calibrate stage)")
    parser.add_argument("--weights", default=None,
                        help='provenance, e.g. "sgformer_s.pth sha256:<hex>" (default: ONNX metadata, else "unknown")')
    parser.add_argument("--calibration-sha256", default=None, help="hash of the calibration set (int8/fp16 ONNX)")
    parser.add_argument("--calibration-method", default=None, help="e.g. entropy, percentile, max")
    add_renamed(parser, "--out-dir", "output", type=Path)
    add_renamed(parser, "--resolution", "img_size", type=image_size_arg)
