"""The ``export`` verb: options and result printing over :mod:`pipeline.stages.export`."""
from __future__ import annotations

import logging

import argparse
import time
from pipeline.core.artifact import InputFormat, WeightsRef
from pipeline.stages.export import DEFAULT_OPSET, export_onnx
from pipeline.cli.options import add_model_arguments
from pipeline.store.io import save_onnx
from pipeline.model.sgformer import create_model

_logger = logging.getLogger("pipeline.cli.export")


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


def run(args: argparse.Namespace) -> int:

    start = time.perf_counter()
    _logger.info("export start: variant %s, img_size %s, opset %d", args.variant, args.img_size, args.opset)
    model = create_model(
        args.variant, img_size=args.img_size, checkpoint=args.checkpoint, seed=args.seed,
        trust_pickle=args.trust_checkpoint, features_only=args.task == "features",
    )
    weights = WeightsRef.from_checkpoint(args.checkpoint) if args.checkpoint else WeightsRef.random(args.seed)
    onnx_model = export_onnx(
        model, batch=args.batch, opset=args.opset, simplify=not args.no_simplify, weights=weights,
        variant=args.variant, input_format=getattr(args, "input_format", InputFormat.NORMALIZED),
    )
    path = save_onnx(onnx_model, args.output)
    _logger.info(
        "export finish: %s (%.1f MB, %d nodes) in %.1f s",
        path, path.stat().st_size / 1e6, len(onnx_model.graph.node), time.perf_counter() - start,
    )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {len(onnx_model.graph.node)} nodes)")
    return 0
