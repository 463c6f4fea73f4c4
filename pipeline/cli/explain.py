"""The ``explain`` verb: options and result printing over :mod:`pipeline.apps.explain`."""
from __future__ import annotations

from pipeline.cli.args.explain import add_arguments  # noqa: F401  (the options: a light module)

import argparse
from pipeline.apps.explain import explain


def run(args: argparse.Namespace) -> int:
    result = explain(
        args.image, args.variant, _size(args), args.checkpoint, args.output, reduce=args.reduce, stage=args.stage,
        alpha=args.alpha, seed=args.seed, trust_checkpoint=args.trust_checkpoint, onnx=args.onnx,
        per_panel_scale=args.per_panel_scale,
    )
    width, height = result.image_size
    left, top, right, bottom = result.crop_box
    pw, ph = result.picture_size
    print(f"wrote {result.output} ({pw}x{ph} picture of the {width}x{height} image); maps from {result.source}, "
          f"reduce={result.reduce}")
    print(f"model's crop in the image: ({left:.0f}, {top:.0f}) - ({right:.0f}, {bottom:.0f}); dimmed outside")
    for s in result.stages:
        print(f"  stage {s.stage}: {s.label} grid, {s.blocks} hybrid block(s), "
              f"raw range {float(s.values.min()):.3g} .. {float(s.values.max()):.3g}")
    if result.caveat:  # also drawn on the picture itself
        print(f"note: {result.caveat}")
    return 0


def _size(args: argparse.Namespace):
    """--img-size; without it, the ONNX's record (--onnx) or, for the PyTorch model, 224 (the option's help says so)."""
    if args.img_size is None and not args.onnx:
        return 224
    return args.img_size
