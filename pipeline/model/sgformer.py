"""SG-Former (Self-Guided Transformer) in PyTorch, state_dict-compatible with the official checkpoints.

Paper: "SG-Former: Self-guided Transformer with Evolving Token Reallocation", Ren et al., ICCV 2023,
arXiv 2308.12216. Written for sgformer-trt from the facts in ``docs/sgformer.md`` (measured on the official code; the official
repository has no license; nothing here is taken from it).

The network, from small parts to the whole:

- ``ConvNorm``: conv without bias + GroupNorm with one group (named ``c`` / ``bn`` upstream).
- ``Stem``: three 3x3 conv units (stride 2, 1, 2; GELU after the first two), tokens, LayerNorm.
- ``PatchMerging``: 1x1 conv unit, GELU, 3x3 stride-2 depthwise unit, GELU, 1x1 unit, tokens.
- ``Mlp``: fc1, then GELU(h + depthwise3x3(h)), then fc2.
- ``HybridScaleAttention`` (even blocks of stages 1-3): half the heads attend globally to an
  sr x sr-reduced token set, the other half attend inside 7x7 windows. Both attention maps are
  averaged into a per-token significance map that the next block consumes.
- ``SignificanceAttention`` (odd blocks of stages 1-3): queries from all tokens; keys and values
  from a short sequence made by sorting tokens by significance and merging runs of sorted tokens
  with learned weights (``pipeline.iam.reference``): many tokens merge where significance is low, few
  where it is high. Done for the row-major and for the column-major token order (kv1 / kv2).
- ``GlobalAttention`` (stage 4): plain multi-head attention.
- Every attention adds a locally-enhanced positional term (linear + depthwise 3x3) before ``proj``.
- ``Block``: pre-norm attention and MLP with residuals. ``SGFormer``: stem, 4 stages of blocks with
  a LayerNorm after each, token-mean pooling, linear head; or, as a backbone (``features_only``), the NCHW map of
  each stage after its LayerNorm (strides 4, 8, 16, 32).

The parts live in ``pipeline.model.layers``; this module holds the network, its initialization and the factory.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn as nn

from pipeline.core.variants import (  # noqa: F401  (re-exported: pipeline.model.sgformer.check_img_size etc.)
    BASE_IMG_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_IMG_SIZE,
    SR_RATIOS,
    VARIANTS,
    check_img_size,
    valid_img_sizes,
)
from pipeline.core.errors import ConfigError
from pipeline.core.variants import STRIDES, ImageSize
from pipeline.iam.reference import iam_layout
from pipeline.iam.torch_op import IAM_IMPLS
from pipeline.model.checkpoint import load_weights
from pipeline.model.layers import Block, PatchMerging, Stem, to_image

__all__ = ["SGFormer", "FeatureInfo", "create_model", "VARIANTS", "PRETRAINED_CFG", "valid_img_sizes",
           "check_img_size"]

_logger = logging.getLogger("pipeline.model.sgformer")

def sincos_pos_embed(dim: int, grid: int | tuple[int, int]) -> torch.Tensor:
    """2-D sin-cos table [1, rows*cols, dim]: first half of channels encodes the column, second the row.

    ``grid``: rows x cols (an int for a square). Within each half: sin(p * w_i) for i < dim/4, then cos(p * w_i),
    w_i = 10000^(-i / (dim/4)); float64, row-major.
    """
    rows_n, cols_n = (grid, grid) if isinstance(grid, int) else grid
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(rows_n, dtype=torch.float64), torch.arange(cols_n, dtype=torch.float64),
                                indexing="ij")

    def encode(p: torch.Tensor) -> torch.Tensor:
        angle = p.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    table = torch.cat([encode(cols), encode(rows)], dim=1)
    return table.float().unsqueeze(0)


@dataclass(frozen=True)
class FeatureInfo:
    """One backbone output (timm's ``feature_info`` entry): channels, reduction (stride) and module name."""

    num_chs: int
    reduction: int
    module: str


class SGFormer(nn.Module):
    """SG-Former classifier or backbone. ``img_size`` (H x W, each side a multiple of 224; an int for a square) is
    fixed at construction, the batch size is free.

    ``features_only`` (timm's convention): ``forward`` returns the maps of the stages in ``out_indices`` (0-based)
    as NCHW tensors ``[B, C_i, H / s_i, W / s_i]`` (strides 4, 8, 16, 32), each taken after its stage's LayerNorm;
    there is no classifier head then.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 128, 256, 512),
        num_heads: Sequence[int] = (2, 4, 8, 16),
        depths: Sequence[int] = (2, 4, 16, 1),
        sr_ratios: Sequence[int] = SR_RATIOS,
        mlp_ratio: float = 4.0,
        features_only: bool = False,
        out_indices: Sequence[int] = (0, 1, 2, 3),
    ) -> None:
        super().__init__()
        size = check_img_size(img_size)
        if not (len(embed_dims) == len(num_heads) == len(depths) == len(sr_ratios) == 4):
            raise ConfigError("SG-Former has 4 stages: embed_dims, num_heads, depths and sr_ratios need 4 entries")
        if any(d % 2 for d in depths[:3]) or min(depths) < 1:
            raise ConfigError(f"stage 1-3 depths must be even (hybrid + significance pairs); got {tuple(depths)}")
        out_indices = tuple(int(i) for i in out_indices)
        if not out_indices or any(i not in range(4) for i in out_indices) or list(out_indices) != sorted(set(out_indices)):
            raise ConfigError(f"out_indices {out_indices}: expected distinct increasing stage indices out of 0..3")
        self.img_size = size
        self.pos_grid = size.grid(STRIDES[0])
        self.num_classes = 0 if features_only else num_classes
        self.embed_dims = tuple(embed_dims)
        self.depths = tuple(depths)
        self.sr_ratios = tuple(sr_ratios)
        self.num_features = embed_dims[-1]
        self.features_only = bool(features_only)
        self.out_indices = out_indices
        self.feature_info = [FeatureInfo(int(embed_dims[i]), STRIDES[i], f"norm{i + 1}") for i in out_indices]

        self.pos_embed = nn.Parameter(sincos_pos_embed(embed_dims[0], self.pos_grid))
        for i in range(4):
            stage = i + 1
            if i == 0:
                setattr(self, "patch_embed1", Stem(embed_dims[0]))
            else:
                setattr(self, f"patch_embed{stage}", PatchMerging(embed_dims[i - 1], embed_dims[i]))
            rows, cols = size.grid(STRIDES[i])
            blocks = []
            for j in range(depths[i]):
                kind = ("hybrid" if j % 2 == 0 else "significance") if sr_ratios[i] > 1 else "global"
                layout = iam_layout(sr_ratios[i], rows, cols) if kind == "significance" else None
                blocks.append(Block(embed_dims[i], num_heads[i], mlp_ratio, kind, sr_ratios[i], layout))
            setattr(self, f"block{stage}", nn.ModuleList(blocks))
            setattr(self, f"norm{stage}", nn.LayerNorm(embed_dims[i], eps=1e-6))
        has_head = self.num_classes > 0
        self.head = nn.Linear(embed_dims[-1], self.num_classes) if has_head else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm-style init: truncated-normal linear weights (std .02), zero biases, unit norms, fan-out convs."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.pos_embed.copy_(sincos_pos_embed(self.embed_dims[0], self.pos_grid))

    def significance_blocks(self) -> list[Block]:
        return [b for i in range(1, 5) for b in getattr(self, f"block{i}") if b.kind == "significance"]

    def set_iam(self, iam: str) -> "SGFormer":
        """Route every significance block's merge through ``iam``: "reference" (default) or "fused"."""
        if iam not in IAM_IMPLS:
            raise ConfigError(f"iam={iam!r} is not an IAM implementation; expected one of {', '.join(IAM_IMPLS)}")
        for block in self.significance_blocks():
            block.attn.iam_impl = iam
        return self

    def _check_input(self, x: torch.Tensor) -> None:
        height, width = self.img_size
        if not torch.jit.is_tracing() and (
            x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != height or x.shape[3] != width
        ):
            raise ConfigError(
                f"expected images [B, 3, {height}, {width}], got {list(x.shape)}; this model was "
                f"built for img_size={self.img_size} (valid sizes: each side a multiple of {BASE_IMG_SIZE})"
            )

    def forward_stages(self, x: torch.Tensor, return_importance: bool = False
                       ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Images [B, 3, H, W] -> (each stage's tokens after its norm, [B, h_i*w_i, C_i]; significance maps).

        The significance maps (one per hybrid block, [B, h, w]) are collected only with ``return_importance``.
        """
        self._check_input(x)
        maps: list[torch.Tensor] = []
        stages: list[torch.Tensor] = []
        x, height, width = self.patch_embed1(x)
        x = x + self.pos_embed
        for stage in range(1, 5):
            if stage > 1:
                x, height, width = getattr(self, f"patch_embed{stage}")(to_image(x, height, width))
            importance = None
            for block in getattr(self, f"block{stage}"):
                x, new_importance = block(x, height, width, importance)
                importance = new_importance
                if new_importance is not None and return_importance:
                    maps.append(new_importance.reshape(-1, height, width))
            x = getattr(self, f"norm{stage}")(x)
            stages.append(x)
        return stages, maps

    def forward_features(
        self, x: torch.Tensor, return_importance: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Images [B, 3, H, W] -> final-stage tokens [B, (H/32)*(W/32), C4] (after ``norm4``).

        With ``return_importance`` also returns every hybrid block's significance map as [B, h, w].
        """
        stages, maps = self.forward_stages(x, return_importance)
        return (stages[-1], maps) if return_importance else stages[-1]

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images [B, 3, H, W] -> the maps of the stages in ``out_indices``, NCHW [B, C_i, H/s_i, W/s_i]."""
        height, width = self.img_size
        stages, _ = self.forward_stages(x)
        return [to_image(stages[i], height // STRIDES[i], width // STRIDES[i]) for i in self.out_indices]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_intermediates(x)
        return self.forward_head(self.forward_features(x))


# Variants are data (``pipeline.core.variants.VARIANTS``, re-exported here): architecture arguments per name.

# Evaluation preprocessing of the official checkpoints (timm 0.3.4 ViT default cfg, docs/sgformer.md §8).
PRETRAINED_CFG: dict[str, object] = dict(
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    crop_pct=0.9,
    interpolation="bicubic",
    num_classes=1000,
)


def condition_for_parity_(model: SGFormer, seed: int = 0) -> SGFormer:
    """Make random weights that keep parity tests meaningful (docs/sgformer.md §9), in place.

    With plain random init the significance map is nearly uniform, so last-ulp rounding differences
    reorder tokens and even real bugs change logits by only ~1e-3. This adds bias and norm-affine noise,
    sets the merge weights f* to the group mean (1/k, so order inside a group cannot matter) and doubles
    the q/kv projections, which spreads the map out.
    """
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 2)
            if name.endswith(".bias") or isinstance(_owner(model, name), (nn.LayerNorm, nn.GroupNorm)):
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
            if len(leaf) >= 2 and leaf[-2] in ("q", "q1", "q2", "kv", "kv1", "kv2") and leaf[-1] == "weight":
                p.mul_(2.0)
        for block in model.significance_blocks():
            for f in block.attn.merge_layers():
                f.weight.fill_(1.0 / f.in_features)
    return model


def _owner(model: nn.Module, param_name: str) -> nn.Module:
    return model.get_submodule(param_name.rsplit(".", 1)[0]) if "." in param_name else model


def create_model(
    variant: str = "s",
    img_size: int | tuple[int, int] | str = 224,
    checkpoint: Optional[str | Path] = None,
    num_classes: int = 1000,
    seed: int = 0,
    trust_pickle: bool = False,
    iam: str = "reference",
    features_only: bool = False,
    out_indices: Sequence[int] = (0, 1, 2, 3),
) -> SGFormer:
    """Build SG-Former ``variant`` ("s", "m", "b") for ``img_size`` (an int for a square, ``(H, W)`` or ``"HxW"``;
    each side a multiple of 224) in eval mode.

    With ``checkpoint`` the official weights (training checkpoint, bare state_dict, ``model``/``module.``
    layouts; EMA preferred) are loaded strictly; ``pos_embed`` is resampled to the (H/4) x (W/4) grid. Without it
    the weights are deterministic random ones (``seed``), conditioned for parity tests (see ``condition_for_parity_``).
    ``iam`` selects the IAM merge of the significance blocks: "reference" (``pipeline.iam.reference``, the
    definition) or "fused" (the ``sgformer::iam`` op of ``pipeline.iam.torch_op``: the C++ host reference on CPU,
    the plugin's CUDA kernel on GPU); see ``SGFormer.set_iam``. ``features_only`` / ``out_indices`` (timm's
    convention): a backbone returning the NCHW maps of those stages (see ``SGFormer``).
    """
    if iam not in IAM_IMPLS:
        raise ConfigError(f"iam={iam!r} is not an IAM implementation; expected one of {', '.join(IAM_IMPLS)}")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; expected one of {', '.join(v for v in VARIANTS)}")
    size = check_img_size(img_size)
    torch.manual_seed(seed)
    model = SGFormer(img_size=size, num_classes=num_classes, features_only=features_only, out_indices=out_indices,
                     **VARIANTS[variant])
    if checkpoint is not None:
        load_weights(model, checkpoint, variant=variant, trust_pickle=trust_pickle)
    else:
        condition_for_parity_(model, seed)
        _logger.warning("variant %s: no checkpoint given, using random weights (seed %d, parity-conditioned)", variant, seed)
    return model.set_iam(iam).eval()
