"""Options of ``sgformer-trt explain``."""
from __future__ import annotations

import argparse

from pipeline.cli.options import add_model_arguments
from pipeline.core.configs import EXPLAIN_REDUCTIONS, EXPLAIN_STAGES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image file (JPEG, PNG, ...)")
    add_model_arguments(parser, from_metadata=True)
    parser.add_argument("--reduce", choices=EXPLAIN_REDUCTIONS, default="mean",
                        help="per stage: mean of its hybrid blocks' maps (default) or the last block's map")
    parser.add_argument("--stage", choices=EXPLAIN_STAGES, default="all",
                        help="all: 2x2 mosaic (input + stages 1-3); 1/2/3: that stage alone at full size")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the map over the image (default 0.5)")
    parser.add_argument("--per-panel-scale", action="store_true",
                        help="stretch each panel to its own min..max (default: one absolute scale shared by all "
                             "panels, shown by the colour bar)")
    parser.add_argument("--onnx", help="read the maps from this rewritten ONNX (SGFormerIAM inputs) instead of PyTorch")
    parser.add_argument("-o", "--output", required=True, help="picture to write, .png or .jpg (other suffixes are refused)")
