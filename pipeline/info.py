"""``sgformer-trt info``: build SG-Former (optionally from a checkpoint) and print what was built."""
from __future__ import annotations

import argparse

from .model import VARIANTS, create_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", default="s", choices=[v for v in VARIANTS if v != "tiny-test"])
    parser.add_argument("--img-size", type=int, default=224, help="input side, a multiple of 224")
    parser.add_argument("--checkpoint", help="official .pth / .pth.tar checkpoint (default: random weights)")
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow arbitrary pickled objects (trusted files only)")


def run(args: argparse.Namespace) -> int:
    model = create_model(args.variant, img_size=args.img_size, checkpoint=args.checkpoint, trust_pickle=args.trust_checkpoint)
    n_params = sum(p.numel() for p in model.parameters())
    kinds = [b.kind for i in range(1, 5) for b in getattr(model, f"block{i}")]
    print(f"SG-Former-{args.variant.upper()} @ {args.img_size}: {n_params:,} parameters, {len(model.state_dict())} tensors")
    print(f"blocks: {kinds.count('hybrid')} hybrid-scale, {kinds.count('significance')} significance-guided, {kinds.count('global')} global")
    for block in model.significance_blocks():
        lay = block.attn.layout
        print(f"  IAM {lay.height}x{lay.width}: groups {lay.group_sizes}, tiers {lay.tier_sizes} -> {lay.out_tokens} tokens")
    print(f"weights: {args.checkpoint or 'random-init (seed 0, parity-conditioned)'}")
    return 0
