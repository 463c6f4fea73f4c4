"""SG-Former's variants and input-size rules as data (no torch needed, so build/run/verify can validate early).

Facts (docs/sgformer.md): four stages at strides 4, 8, 16, 32; stages 1-3 alternate hybrid-scale and
significance-guided blocks with reduction ratios 8, 4, 2; stage 4 is global attention. The 7x7 local windows,
the reduction ratios and the token groups need each side of the input (H x W, not necessarily square) to be a
multiple of 224.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from pipeline.core.errors import ConfigError

__all__ = ["FOREIGN", "VARIANTS", "BASE_IMG_SIZE", "MAX_IMG_SIZE", "IMAGENET_MEAN", "IMAGENET_STD", "ImageSize",
           "valid_img_sizes", "nearest_valid_sizes", "check_img_size", "check_variant", "StageGrid", "stage_grids",
           "STRIDES", "TEST_VARIANTS", "TEST_VARIANTS_ENV"]

#: Architecture arguments per variant name (docs/sgformer.md, "Variants").
VARIANTS: dict[str, dict] = {
    "s": dict(embed_dims=(64, 128, 256, 512), num_heads=(2, 4, 8, 16), depths=(2, 4, 16, 1)),
    "m": dict(embed_dims=(64, 128, 256, 512), num_heads=(2, 4, 8, 16), depths=(2, 6, 28, 2)),
    "b": dict(embed_dims=(96, 192, 384, 768), num_heads=(4, 6, 12, 24), depths=(4, 6, 24, 2)),
    # Smallest network the architecture allows (one hybrid + significance pair per stage): for tests.
    "tiny-test": dict(embed_dims=(16, 32, 64, 64), num_heads=(2, 2, 2, 2), depths=(2, 2, 2, 1)),
}
#: Variants for the test suite only: ``sgformer-trt engine`` (``make engine``) refuses them unless the environment
#: holds TEST_VARIANTS_ENV=1, which tests/conftest.py sets (library calls and the per-stage verbs take them).
TEST_VARIANTS = ("tiny-test",)
TEST_VARIANTS_ENV = "SGFORMER_TEST_VARIANTS"
#: Reduction ratio per stage (fixed by the official weights; 1 = global attention).
SR_RATIOS = (8, 4, 2, 1)
#: Output stride of each stage (the stem is stride 4, every later stage halves the grid).
STRIDES = (4, 8, 16, 32)
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


class ImageSize(NamedTuple):
    """The input size of a network, an ONNX graph or an engine: ``(height, width)`` in pixels.

    The one typed value of the input shape (the name is ``img_size`` everywhere, as in timm). Parsed once at the
    edge by :meth:`parse` from an int (a square side, what older records hold), ``"224"``, ``"448x672"`` (H x W),
    or a pair. ``str()`` gives the text form the records and folder names use: ``"224"`` for a square, else
    ``"448x672"``.
    """

    height: int
    width: int

    @classmethod
    def parse(cls, value: object, what: str = "input size") -> "ImageSize":
        """An ``ImageSize`` from an int, ``"S"``, ``"HxW"`` or ``(H, W)``; ConfigError naming the form otherwise.

        Only the form is checked here; :func:`check_img_size` checks what the architecture can run.
        """
        if isinstance(value, ImageSize):
            return value
        if isinstance(value, str):
            parts = value.strip().lower().replace("*", "x").split("x")
            if len(parts) in (1, 2) and all(p.strip().isdigit() for p in parts):
                nums = [int(p) for p in parts]
                return cls(nums[0], nums[-1])
        elif isinstance(value, int) and not isinstance(value, bool):
            return cls(value, value)
        elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            return cls(int(value[0]), int(value[1]))
        raise ConfigError(f"{what} {value!r} is not a size; write one number for a square (e.g. 224) or HxW "
                          f"(e.g. 448x672)")

    @property
    def is_square(self) -> bool:
        return self.height == self.width

    @property
    def pixels(self) -> int:
        return self.height * self.width

    def grid(self, stride: int) -> tuple[int, int]:
        """(rows, cols) of the token grid at ``stride`` (4, 8, 16, 32)."""
        return self.height // stride, self.width // stride

    def __str__(self) -> str:
        return str(self.height) if self.is_square else f"{self.height}x{self.width}"


def valid_img_sizes(limit: int = 5) -> list[int]:
    return [BASE_IMG_SIZE * m for m in range(1, limit + 1)]


def _round_side(side: int, up: bool) -> int:
    """The nearest valid side at or below (``up=False``) / at or above ``side``, within [224, MAX_IMG_SIZE]."""
    m = -(-side // BASE_IMG_SIZE) if up else side // BASE_IMG_SIZE
    return min(max(m, 1), MAX_IMG_SIZE // BASE_IMG_SIZE) * BASE_IMG_SIZE


def nearest_valid_sizes(size: ImageSize) -> list[ImageSize]:
    """Valid sizes next to ``size``: every side rounded down (crop / resize) and up (pad), nearest first."""
    h, w = size
    cands = {ImageSize(_round_side(h, up_h), _round_side(w, up_w)) for up_h in (False, True) for up_w in (False, True)}
    return sorted(cands, key=lambda c: (abs(c.height - h) + abs(c.width - w), -c.pixels))


def _show(value: object) -> str:
    return str(value) if isinstance(value, ImageSize) else repr(value)


def check_img_size(img_size: object) -> ImageSize:
    """Refuse input sizes the architecture cannot run; returns the parsed :class:`ImageSize`.

    Each side must be a multiple of 224 (docs/dense.md derives it): the stage-3 grid (side / 16) holds whole 7x7
    windows (side % 112 == 0), every stage 1-3 grid divides by its reduction ratio (side / 4 by 8, side / 8 by 4,
    side / 16 by 2: side % 32 == 0), and lcm(112, 32) = 224. The token groups then cover every grid exactly.
    """
    size = ImageSize.parse(img_size)
    if size.height <= 0 or size.width <= 0 or size.height % BASE_IMG_SIZE or size.width % BASE_IMG_SIZE:
        near = ", ".join(str(s) for s in nearest_valid_sizes(ImageSize(max(size.height, 1), max(size.width, 1)))[:3])
        raise ConfigError(
            f"input size {_show(img_size)} is not supported: SG-Former's 7x7 windows, reduction ratios and token groups "
            f"need each side (H and W) to be a multiple of {BASE_IMG_SIZE}; the nearest valid sizes are {near} "
            f"(resize, crop or pad your images to one of these)"
        )
    if max(size) > MAX_IMG_SIZE:
        raise ConfigError(
            f"input size {_show(img_size)} is too large: the largest supported side is {MAX_IMG_SIZE} "
            f"({MAX_IMG_SIZE // BASE_IMG_SIZE} x {BASE_IMG_SIZE}; stage 1's attention map alone is 6 GB per image "
            f"there); use multiples of {BASE_IMG_SIZE} up to {MAX_IMG_SIZE}"
        )
    return size


def check_variant(variant: object) -> str:
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    return str(variant)


@dataclass(frozen=True)
class StageGrid:
    """One stage: token grid (rows x cols), reduction ratio, number of blocks."""

    height: int
    width: int
    sr_ratio: int
    depth: int

    @property
    def significance_blocks(self) -> int:
        return self.depth // 2 if self.sr_ratio > 1 else 0


def stage_grids(variant: str, img_size: object) -> tuple[StageGrid, ...]:
    """The four stages of ``variant`` at ``img_size`` (stride 4, then each stage halves the grid)."""
    check_variant(variant)
    size = check_img_size(img_size)
    return tuple(StageGrid(*size.grid(stride), sr_ratio=sr, depth=depth)
                 for stride, depth, sr in zip(STRIDES, VARIANTS[variant]["depths"], SR_RATIOS))
