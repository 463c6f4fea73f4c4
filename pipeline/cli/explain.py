"""The ``explain`` verb: options and result printing over :mod:`pipeline.apps.explain`."""
from __future__ import annotations

import argparse
from pipeline.apps.explain import REDUCTIONS, STAGE_CHOICES, explain
from pipeline.cli.options import add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:

    parser.add_argument("image", help="image file (JPEG, PNG, ...)")
    add_model_arguments(parser, from_metadata=True)
    parser.add_argument("--reduce", choices=REDUCTIONS, default="mean",
                        help="per stage: mean of its hybrid blocks' maps (default) or the last block's map")
    parser.add_argument("--stage", choices=STAGE_CHOICES, default="all",
                        help="all: 2x2 mosaic (input + stages 1-3); 1/2/3: that stage alone at full size")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the map over the image (default 0.5)")
    parser.add_argument("--onnx", help="read the maps from this rewritten ONNX (SGFormerIAM inputs) instead of PyTorch")
    parser.add_argument("-o", "--output", required=True, help="picture to write, .png or .jpg (same size as the image)")


def run(args: argparse.Namespace) -> int:
    result = explain(
        args.image, args.variant, _size(args), args.checkpoint, args.output, reduce=args.reduce, stage=args.stage,
        alpha=args.alpha, seed=args.seed, trust_checkpoint=args.trust_checkpoint, onnx=args.onnx,
    )
    width, height = result.image_size
    left, top, right, bottom = result.crop_box
    print(f"wrote {result.output} ({width}x{height}); maps from {result.source}, reduce={result.reduce}")
    print(f"model's crop in the image: ({left:.0f}, {top:.0f}) - ({right:.0f}, {bottom:.0f}); dimmed outside")
    for s in result.stages:
        print(f"  stage {s.stage}: {s.side}x{s.side} grid, {s.blocks} hybrid block(s), "
              f"raw range {float(s.values.min()):.3g} .. {float(s.values.max()):.3g}")
    if args.checkpoint is None and args.onnx is None:
        print("note: random weights (no --checkpoint): the maps show the mechanism, not a trained model's attention")
    return 0


def _size(args: argparse.Namespace):
    """--img-size; without it, the ONNX's record (--onnx) or, for the PyTorch model, 224 (the option's help says so)."""
    if args.img_size is None and not args.onnx:
        return 224
    return args.img_size
