"""Options of ``sgformer-trt verify``."""
from __future__ import annotations

import argparse

from pipeline.cli.options import add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("artifact (one of)")
    one = target.add_mutually_exclusive_group(required=True)
    one.add_argument("--onnx", help="ONNX graph to check in onnxruntime (standard-op, rewritten or quantized)")
    one.add_argument("--engine", help="engine directory (engines/<variant>-<precision>-<res>/) or its .engine file: "
                                      "the engine on a GPU, else its ONNX in onnxruntime; the result is written into "
                                      "its manifest.json")
    parser.add_argument("--against", metavar="ORIGINAL",
                        help="with --onnx: compare against this graph instead of PyTorch (any two graphs of one "
                             "model, e.g. a rewritten foreign model and its original): both run in onnxruntime on "
                             "the same inputs, every output checked against the tolerance table")
    parser.add_argument("--cpu", action="store_true", help="with --engine: use the CPU stand-in even if a GPU is present")
    add_model_arguments(parser, from_metadata=True)
    parser.add_argument("--images", help="folder of images (default: scikit-image's bundled sample photos)")
    parser.add_argument("--num-images", type=int, default=4, help="how many images (default 4)")
    parser.add_argument("--batch", type=int, default=2, help="batch size of both runs (default 2)")
    parser.add_argument("--atol", type=float, default=None,
                        help="override the pass rule with max abs logit difference ATOL (default: the rule for the "
                             "graph's precision and size from pipeline.core.tolerances, e.g. 1e-4 for fp32 at 224, "
                             "cosine/top-1 agreement for fp16 and int8)")
    parser.add_argument("--no-top5", action="store_true", help="do not require identical top-5")
    parser.add_argument("--report", help="also write the report as JSON here")
