"""``sgformer-trt info``: build SG-Former (optionally from a checkpoint) and print what was built."""
from __future__ import annotations

from pipeline.cli.args.info import add_arguments  # noqa: F401  (the options: a light module)

import argparse

from pipeline.model.sgformer import create_model


def run(args: argparse.Namespace) -> int:
    model = create_model(args.variant, img_size=args.img_size, checkpoint=args.checkpoint, seed=args.seed,
                         trust_pickle=args.trust_checkpoint)
    n_params = sum(p.numel() for p in model.parameters())
    kinds = [b.kind for i in range(1, 5) for b in getattr(model, f"block{i}")]
    print(f"SG-Former-{args.variant.upper()} @ {args.img_size}: {n_params:,} parameters, {len(model.state_dict())} tensors")
    print(f"blocks: {kinds.count('hybrid')} hybrid-scale, {kinds.count('significance')} significance-guided, {kinds.count('global')} global")
    for block in model.significance_blocks():
        lay = block.attn.layout
        print(f"  IAM {lay.height}x{lay.width}: groups {lay.group_sizes}, tiers {lay.tier_sizes} -> {lay.out_tokens} tokens")
    print(f"weights: {args.checkpoint or f'random-init (seed {args.seed}, parity-conditioned)'}")
    return 0
