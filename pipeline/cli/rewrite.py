"""The ``rewrite`` verb: options and result printing over :mod:`pipeline.stages.rewrite`."""
from __future__ import annotations

from pipeline.cli.args.rewrite import add_arguments  # noqa: F401  (the options: a light module)

import logging

import argparse
import time
from pipeline.iam import spec
from pipeline.stages.rewrite import rewrite_iam
from pipeline.store.io import load_onnx, save_onnx

_logger = logging.getLogger("pipeline.cli.rewrite")


def run(args: argparse.Namespace) -> int:

    start = time.perf_counter()
    _logger.info("rewrite start: %s", args.input)
    report = rewrite_iam(load_onnx(args.input), variant=args.variant, img_size=args.img_size)
    path = save_onnx(report.model, args.output)
    size = path.stat().st_size
    _logger.info("rewrite finish: %s (%.1f MB) in %.1f s", path, size / 1e6, time.perf_counter() - start)
    print(report.histogram_table())
    print(f"wrote {path} ({size / 1e6:.1f} MB): {len(report.regions)} {spec.PLUGIN_NAME} nodes")
    return 0
