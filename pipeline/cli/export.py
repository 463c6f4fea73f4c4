"""The ``export`` verb: options and result printing over :mod:`pipeline.stages.export`."""
from __future__ import annotations

from pipeline.cli.args.export import add_arguments  # noqa: F401  (the options: a light module)

import logging

import argparse
import time
from pipeline.core.artifact import InputFormat, WeightsRef
from pipeline.stages.export import export_onnx
from pipeline.store.io import save_onnx
from pipeline.model.sgformer import create_model

_logger = logging.getLogger("pipeline.cli.export")


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
