"""SG-Former's variants and input-size rules as data (no torch needed, so build/run/verify can validate early).

Facts (docs/sgformer.md): four stages at strides 4, 8, 16, 32; stages 1-3 alternate hybrid-scale and
significance-guided blocks with reduction ratios 8, 4, 2; stage 4 is global attention. The 7x7 local windows
and the token groups need a square input whose side is a multiple of 224.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.errors import ConfigError

__all__ = ["FOREIGN", "VARIANTS", "BASE_IMG_SIZE", "MAX_IMG_SIZE", "IMAGENET_MEAN", "IMAGENET_STD", "valid_img_sizes",
           "check_img_size", "check_variant", "StageGrid", "stage_grids"]

#: Architecture arguments per variant name (docs/sgformer.md, "Variants").
VARIANTS: dict[str, dict] = {
    "s": dict(embed_dims=(64, 128, 256, 512), num_heads=(2, 4, 8, 16), depths=(2, 4, 16, 1)),
    "m": dict(embed_dims=(64, 128, 256, 512), num_heads=(2, 4, 8, 16), depths=(2, 6, 28, 2)),
    "b": dict(embed_dims=(96, 192, 384, 768), num_heads=(4, 6, 12, 24), depths=(4, 6, 24, 2)),
    # Smallest network the architecture allows (one hybrid + significance pair per stage): for tests.
    "tiny-test": dict(embed_dims=(16, 32, 64, 64), num_heads=(2, 2, 2, 2), depths=(2, 2, 2, 1)),
}
#: Reduction ratio per stage (fixed by the official weights; 1 = global attention).
SR_RATIOS = (8, 4, 2, 1)
#: The variant label of an engine built from a graph that `export` did not make (a user's own model, rewritten):
#: no PyTorch reference exists for it, so it is verified against its original graph (`verify --onnx --against`).
FOREIGN = "foreign"
BASE_IMG_SIZE = 224
#: Largest input side (10 x 224). Stage 1's global attention is (S/4)^2 queries x (S/32)^2 keys: at 2240 one
#: fp32 map per image is 313,600 x 4,900 x 4 B = 6.1 GB, so larger sides only exhaust memory.
MAX_IMG_SIZE = 10 * BASE_IMG_SIZE
#: ImageNet normalization of the official checkpoints (timm's default cfg; docs/sgformer.md "Preprocessing").
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def valid_img_sizes(limit: int = 5) -> list[int]:
    return [BASE_IMG_SIZE * m for m in range(1, limit + 1)]


def check_img_size(img_size: object) -> None:
    """Refuse input sizes the architecture cannot run (7x7 windows and token groups need 224 * m)."""
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size <= 0 or img_size % BASE_IMG_SIZE:
        raise ConfigError(
            f"input size {img_size!r} is not supported: SG-Former's 7x7 windows and token groups need a square "
            f"input whose side is a multiple of {BASE_IMG_SIZE} (e.g. {', '.join(map(str, valid_img_sizes(3)))}); "
            f"resize or crop your images to one of these"
        )
    if img_size > MAX_IMG_SIZE:
        raise ConfigError(
            f"input size {img_size} is too large: the largest supported side is {MAX_IMG_SIZE} "
            f"({MAX_IMG_SIZE // BASE_IMG_SIZE} x {BASE_IMG_SIZE}; stage 1's attention map alone is 6 GB per image "
            f"there); use a multiple of {BASE_IMG_SIZE} up to {MAX_IMG_SIZE}"
        )


def check_variant(variant: object) -> str:
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    return str(variant)


@dataclass(frozen=True)
class StageGrid:
    """One stage: token grid side, reduction ratio, number of blocks."""

    side: int
    sr_ratio: int
    depth: int

    @property
    def significance_blocks(self) -> int:
        return self.depth // 2 if self.sr_ratio > 1 else 0


def stage_grids(variant: str, img_size: int) -> tuple[StageGrid, ...]:
    """The four stages of ``variant`` at ``img_size`` (stride 4, then each stage halves the grid)."""
    check_variant(variant)
    check_img_size(img_size)
    side = img_size // 4
    out = []
    for stage, (depth, sr) in enumerate(zip(VARIANTS[variant]["depths"], SR_RATIOS)):
        if stage:
            side //= 2
        out.append(StageGrid(side=side, sr_ratio=sr, depth=depth))
    return tuple(out)
