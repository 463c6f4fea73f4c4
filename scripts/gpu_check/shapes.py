"""The IAM op shapes of the model and seeded inputs for them (the workers' common ground)."""
from __future__ import annotations

from pipeline.core.variants import SR_RATIOS, VARIANTS
from pipeline.iam.layout import iam_layout


def iam_shapes(variants=("s", "m", "b"), resolutions=(224, 448)) -> list[dict]:
    """Every IAM op shape of the model (stage 1-3 significance blocks), merged where variants share it."""
    shapes: dict[tuple, dict] = {}
    for variant in variants:
        args = VARIANTS[variant]
        for stage, sr in enumerate(SR_RATIOS[:3], start=1):
            for res in resolutions:
                side = res // 4 // 2 ** (stage - 1)
                channels = int(args["embed_dims"][stage - 1])
                key = (channels, side, sr)
                entry = shapes.setdefault(key, {"variants": [], "stage": stage, "res": res, "channels": channels,
                                                "side": side, "sr": sr, "layout": iam_layout(sr, side, side),
                                                "blocks": {}})
                entry["variants"].append(variant)
                entry["blocks"][variant] = int(args["depths"][stage - 1]) // 2
    return list(shapes.values())


def shape_id(shape: dict) -> str:
    if not shape["stage"]:  # a single shape: its label names it
        return f"{shape['variants'][0]} C{shape['channels']} N{shape['side'] ** 2}"
    return f"{'/'.join(shape['variants'])} stage{shape['stage']} {shape['res']} C{shape['channels']} N{shape['side'] ** 2}"


def single_shape(sr: int, side: int, channels: int, label: str) -> dict:
    """One op shape outside the model table (the issue-25 cases pick theirs by what they must provoke)."""
    return {"variants": [label], "stage": 0, "res": 0, "channels": channels, "side": side, "sr": sr,
            "layout": iam_layout(sr, side, side), "blocks": {}}


def merge_inputs(shape: dict, batch: int, dtype, device: str, seed: int):
    """Seeded tokens, importance (few distinct values: many ties), merge weights and biases of ``shape``."""
    import torch

    layout = shape["layout"]
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, layout.num_tokens, shape["channels"], generator=gen).to(dtype)
    # Few distinct values: many ties, so the tie order is exercised.
    importance = (torch.randint(0, 6, (batch, layout.num_tokens), generator=gen) / 8.0).to(torch.float32)
    weights = [(torch.rand(k, generator=gen) - 0.5) / k ** 0.5 for k in layout.group_sizes]
    biases = [torch.randn(1, generator=gen) * 0.1 for _ in layout.group_sizes]
    move = lambda t: t.to(device)  # noqa: E731
    return move(tokens), move(importance), [move(w) for w in weights], [move(b) for b in biases]


def bit_mismatches(got, want) -> int:
    """Elements whose bits differ between two tensor lists (fp16 compared as int16, fp32 as int32)."""
    import torch

    total = 0
    for g, w in zip(got, want):
        g, w = g.detach().cpu().contiguous(), w.detach().cpu().contiguous()
        if g.shape != w.shape or g.dtype != w.dtype:
            return max(g.numel(), w.numel(), 1)
        bits = torch.int16 if g.dtype == torch.float16 else torch.int32
        total += int((g.view(bits) != w.view(bits)).sum())
    return total
