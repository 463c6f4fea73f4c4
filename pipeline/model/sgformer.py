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
  a LayerNorm after each, token-mean pooling, linear head.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

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
from pipeline.iam.reference import IamLayout, iam_aggregate, iam_layout
from pipeline.iam.torch_op import IAM_IMPLS, iam_fused
from pipeline.model.checkpoint import load_weights

__all__ = ["SGFormer", "create_model", "VARIANTS", "PRETRAINED_CFG", "valid_img_sizes", "check_img_size"]

_logger = logging.getLogger("pipeline.model.sgformer")

WINDOW_SIZE = 7  # local-attention window of the hybrid-scale blocks (fixed upstream)


class ConvNorm(nn.Module):
    """Conv2d (no bias) + GroupNorm(1, C) (upstream calls the norm ``bn``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.GroupNorm(1, out_chs, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.c(x))


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C], row-major tokens."""
    return x.flatten(2).transpose(1, 2)


def _to_image(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, H*W, C] -> [B, C, H, W]."""
    return x.transpose(1, 2).reshape(x.shape[0], -1, height, width)


class Stem(nn.Module):
    """Overall stride 4: conv units 3->C (s2), C->C (s1), C->C (s2); GELU after the first two; LayerNorm(1e-5)."""

    def __init__(self, out_chs: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            ConvNorm(3, out_chs, 3, stride=2),
            nn.GELU(),
            ConvNorm(out_chs, out_chs, 3, stride=1),
            nn.GELU(),
            ConvNorm(out_chs, out_chs, 3, stride=2),
        )
        self.norm = nn.LayerNorm(out_chs, eps=1e-5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.conv(x)
        height, width = x.shape[2], x.shape[3]
        return self.norm(_to_tokens(x)), height, width


class PatchMerging(nn.Module):
    """Stride-2 downsampling between stages; no LayerNorm after it."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(in_chs, out_chs, 1)
        self.conv2 = ConvNorm(out_chs, out_chs, 3, stride=2, groups=out_chs)
        self.conv3 = ConvNorm(out_chs, out_chs, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        height, width = x.shape[2], x.shape[3]
        return _to_tokens(x), height, width


class DWConv(nn.Module):
    """Depthwise 3x3 conv with bias over tokens."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=True)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return _to_tokens(self.dwconv(_to_image(x, height, width)))


class Mlp(nn.Module):
    """fc1 -> GELU(h + dwconv(h)) -> fc2."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        h = self.fc1(x)
        return self.fc2(self.act(h + self.dwconv(h, height, width)))


class _AttentionBase(nn.Module):
    """Shared pieces: head split and the locally-enhanced positional term (added before ``proj``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5

    def _init_lepe_proj(self, dim: int) -> None:
        self.lepe_linear = nn.Linear(dim, dim)
        self.lepe_conv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.proj = nn.Linear(dim, dim)

    def _lepe(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return _to_tokens(self.lepe_conv(_to_image(self.lepe_linear(x), height, width)))

    def _heads(self, x: torch.Tensor, num_heads: int) -> torch.Tensor:
        """[B, L, num_heads * d] -> [B, num_heads, L, d] (head-major channels)."""
        b, length, _ = x.shape
        return x.reshape(b, length, num_heads, self.head_dim).transpose(1, 2)

    def _kv_heads(self, kv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Split a K|V projection (K = first half of the features) into per-head K and V."""
        b, length, _ = kv.shape
        kv = kv.reshape(b, length, 2, num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return kv[0], kv[1]

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return probs @ v, probs

    @staticmethod
    def _merge_heads(x: torch.Tensor) -> torch.Tensor:
        """[B, heads, L, d] -> [B, L, heads * d]."""
        b, heads, length, d = x.shape
        return x.transpose(1, 2).reshape(b, length, heads * d)


class HybridScaleAttention(_AttentionBase):
    """Global half over an sr-reduced token set + local half in 7x7 windows; emits the significance map.

    The map is (per token) the global half's attention probability of the reduced token covering it,
    averaged over heads and queries and copied to its sr x sr block, plus the local half's probability
    of the token as a key, averaged over heads and over the queries of its window.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__(dim, num_heads)
        if num_heads % 2:
            raise ConfigError(f"hybrid-scale attention splits heads in two halves; got {num_heads} heads")
        self.sr_ratio = sr_ratio
        self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.act = nn.GELU()
        self.q1 = nn.Linear(dim, dim // 2)
        self.kv1 = nn.Linear(dim, dim)
        self.q2 = nn.Linear(dim, dim // 2)
        self.kv2 = nn.Linear(dim, dim)
        self._init_lepe_proj(dim)

    def _global(self, x: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.num_heads // 2
        q = self._heads(self.q1(x), half)
        reduced = _to_tokens(self.sr(_to_image(x, height, width)))  # [B, HW/sr^2, C]
        k, v = self._kv_heads(self.kv1(self.act(self.norm(reduced))), half)
        out, probs = self._attend(q, k, v)  # probs [B, h/2, N, n_r]
        hr, wr = height // self.sr_ratio, width // self.sr_ratio
        score = probs.mean(dim=1).mean(dim=1).reshape(-1, 1, hr, wr)  # heads, then queries
        score = F.interpolate(score, scale_factor=float(self.sr_ratio), mode="nearest")
        return self._merge_heads(out), score.reshape(-1, height * width)

    def _local(self, x: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.num_heads // 2
        ws = WINDOW_SIZE
        nh, nw = height // ws, width // ws

        def partition(t: torch.Tensor) -> torch.Tensor:  # [B, N, D] -> [B*nh*nw, ws*ws, D], window-row-major
            d = t.shape[-1]
            t = t.reshape(-1, nh, ws, nw, ws, d).permute(0, 1, 3, 2, 4, 5)
            return t.reshape(-1, ws * ws, d)

        def reverse(t: torch.Tensor) -> torch.Tensor:  # inverse of partition
            d = t.shape[-1]
            t = t.reshape(-1, nh, nw, ws, ws, d).permute(0, 1, 3, 2, 4, 5)
            return t.reshape(-1, height * width, d)

        q = self._heads(partition(self.q2(x)), half)
        k, v = self._kv_heads(partition(self.kv2(x)), half)
        out, probs = self._attend(q, k, v)  # probs [B*nW, h/2, 49, 49]
        score = probs.mean(dim=1).mean(dim=1)  # heads, then the window's queries -> one value per key token
        return reverse(self._merge_heads(out)), reverse(score.unsqueeze(-1)).squeeze(-1)

    def forward(self, x: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        out_g, score_g = self._global(x, height, width)
        out_l, score_l = self._local(x, height, width)
        out = torch.cat([out_g, out_l], dim=-1)
        importance = score_l + score_g  # [B, N], row-major
        return self.proj(out + self._lepe(x, height, width)), importance.detach()


class SignificanceAttention(_AttentionBase):
    """All heads query every token; keys/values come from the significance-merged sequences.

    kv1 projects the row-major merged sequence (heads 0..h/2-1), kv2 the column-major one
    (heads h/2..h-1). The merge weights are the Linear(k, 1) layers f1, f2 (, f3). ``iam_impl`` picks the
    merge: "reference" (``pipeline.iam.reference.iam_aggregate``, the definition) or "fused" (the ``sgformer::iam`` op).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, layout: IamLayout) -> None:
        super().__init__(dim, num_heads)
        self.sr_ratio = sr_ratio
        self.layout = layout
        self.iam_impl = "reference"
        self.q = nn.Linear(dim, dim)
        self.kv1 = nn.Linear(dim, dim)
        self.kv2 = nn.Linear(dim, dim)
        for i, k in enumerate(layout.group_sizes, start=1):
            setattr(self, f"f{i}", nn.Linear(k, 1))
        self._init_lepe_proj(dim)

    def merge_layers(self) -> list[nn.Linear]:
        return [getattr(self, f"f{i}") for i in range(1, len(self.layout.group_sizes) + 1)]

    def forward(self, x: torch.Tensor, height: int, width: int, importance: torch.Tensor) -> torch.Tensor:
        # Shape checks are skipped while tracing: the exporter traces at the built size, and comparing traced
        # shapes would only emit TracerWarnings.
        if not torch.jit.is_tracing() and importance.shape[-1] != self.layout.num_tokens:
            raise ConfigError(
                f"significance block built for {self.layout.height}x{self.layout.width} tokens got a map of "
                f"{importance.shape[-1]}; build the model for this input size (img_size)"
            )
        half = self.num_heads // 2
        layers = self.merge_layers()
        # The ONNX export always traces the reference path (standard ops); `rewrite` then makes SGFormerIAM nodes.
        fused = self.iam_impl == "fused" and not torch.onnx.is_in_onnx_export()
        aggregate = iam_fused if fused else iam_aggregate
        seq_row, seq_col = aggregate(x, importance, [f.weight for f in layers], [f.bias for f in layers], self.layout)
        k1, v1 = self._kv_heads(self.kv1(seq_row), half)
        k2, v2 = self._kv_heads(self.kv2(seq_col), half)
        q = self._heads(self.q(x), self.num_heads)
        out, _ = self._attend(q, torch.cat([k1, k2], dim=1), torch.cat([v1, v2], dim=1))
        return self.proj(self._merge_heads(out) + self._lepe(x, height, width))


class GlobalAttention(_AttentionBase):
    """Plain multi-head attention (stage 4, sr = 1)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__(dim, num_heads)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self._init_lepe_proj(dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        q = self._heads(self.q(x), self.num_heads)
        k, v = self._kv_heads(self.kv(x), self.num_heads)
        out, _ = self._attend(q, k, v)
        return self.proj(self._merge_heads(out) + self._lepe(x, height, width))


class Block(nn.Module):
    """Pre-norm transformer block. ``kind`` is "hybrid", "significance" or "global"."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        kind: str,
        sr_ratio: int = 1,
        layout: Optional[IamLayout] = None,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if kind == "hybrid":
            self.attn = HybridScaleAttention(dim, num_heads, sr_ratio)
        elif kind == "significance":
            if layout is None:
                raise ConfigError("a significance block needs its IAM layout (pipeline.iam.reference.iam_layout)")
            self.attn = SignificanceAttention(dim, num_heads, sr_ratio, layout)
        else:
            self.attn = GlobalAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self, x: torch.Tensor, height: int, width: int, importance: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Returns the new tokens and, for a hybrid block, the significance map [B, N] for the next block."""
        y = self.norm1(x)
        new_importance = None
        if self.kind == "hybrid":
            y, new_importance = self.attn(y, height, width)
        elif self.kind == "significance":
            if importance is None:
                raise ConfigError("significance block has no importance map: it must follow a hybrid block")
            y = self.attn(y, height, width, importance)
        else:
            y = self.attn(y, height, width)
        x = x + y
        x = x + self.mlp(self.norm2(x), height, width)
        return x, new_importance


def sincos_pos_embed(dim: int, grid: int) -> torch.Tensor:
    """2-D sin-cos table [1, grid*grid, dim]: first half of channels encodes the column, second the row.

    Within each half: sin(p * w_i) for i < dim/4, then cos(p * w_i), w_i = 10000^(-i / (dim/4)); float64, row-major.
    """
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    pos = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")

    def encode(p: torch.Tensor) -> torch.Tensor:
        angle = p.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    table = torch.cat([encode(cols), encode(rows)], dim=1)
    return table.float().unsqueeze(0)


class SGFormer(nn.Module):
    """SG-Former classifier. ``img_size`` (a multiple of 224) is fixed at construction, batch size is free."""

    def __init__(
        self,
        img_size: int = 224,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 128, 256, 512),
        num_heads: Sequence[int] = (2, 4, 8, 16),
        depths: Sequence[int] = (2, 4, 16, 1),
        sr_ratios: Sequence[int] = SR_RATIOS,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        check_img_size(img_size)
        if not (len(embed_dims) == len(num_heads) == len(depths) == len(sr_ratios) == 4):
            raise ConfigError("SG-Former has 4 stages: embed_dims, num_heads, depths and sr_ratios need 4 entries")
        if any(d % 2 for d in depths[:3]) or min(depths) < 1:
            raise ConfigError(f"stage 1-3 depths must be even (hybrid + significance pairs); got {tuple(depths)}")
        self.img_size = img_size
        self.num_classes = num_classes
        self.embed_dims = tuple(embed_dims)
        self.depths = tuple(depths)
        self.sr_ratios = tuple(sr_ratios)
        self.num_features = embed_dims[-1]

        grid = img_size // 4
        self.pos_embed = nn.Parameter(sincos_pos_embed(embed_dims[0], grid))
        side = grid
        for i in range(4):
            stage = i + 1
            if i == 0:
                setattr(self, "patch_embed1", Stem(embed_dims[0]))
            else:
                setattr(self, f"patch_embed{stage}", PatchMerging(embed_dims[i - 1], embed_dims[i]))
                side //= 2
            blocks = []
            for j in range(depths[i]):
                if sr_ratios[i] > 1:
                    kind = "hybrid" if j % 2 == 0 else "significance"
                else:
                    kind = "global"
                layout = iam_layout(sr_ratios[i], side, side) if kind == "significance" else None
                blocks.append(Block(embed_dims[i], num_heads[i], mlp_ratio, kind, sr_ratios[i], layout))
            setattr(self, f"block{stage}", nn.ModuleList(blocks))
            setattr(self, f"norm{stage}", nn.LayerNorm(embed_dims[i], eps=1e-6))
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
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
            self.pos_embed.copy_(sincos_pos_embed(self.embed_dims[0], self.img_size // 4))

    def significance_blocks(self) -> list[Block]:
        return [b for i in range(1, 5) for b in getattr(self, f"block{i}") if b.kind == "significance"]

    def set_iam(self, iam: str) -> "SGFormer":
        """Route every significance block's merge through ``iam``: "reference" (default) or "fused"."""
        if iam not in IAM_IMPLS:
            raise ConfigError(f"iam={iam!r} is not an IAM implementation; expected one of {', '.join(IAM_IMPLS)}")
        for block in self.significance_blocks():
            block.attn.iam_impl = iam
        return self

    def forward_features(
        self, x: torch.Tensor, return_importance: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Images [B, 3, S, S] -> final-stage tokens [B, (S/32)^2, C4] (after ``norm4``).

        With ``return_importance`` also returns every hybrid block's significance map as [B, H, W].
        """
        if not torch.jit.is_tracing() and (
            x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != self.img_size or x.shape[3] != self.img_size
        ):
            raise ConfigError(
                f"expected images [B, 3, {self.img_size}, {self.img_size}], got {list(x.shape)}; this model was "
                f"built for img_size={self.img_size} (valid sizes: multiples of {BASE_IMG_SIZE})"
            )
        maps: list[torch.Tensor] = []
        x, height, width = self.patch_embed1(x)
        x = x + self.pos_embed
        for stage in range(1, 5):
            if stage > 1:
                x, height, width = getattr(self, f"patch_embed{stage}")(_to_image(x, height, width))
            importance = None
            for block in getattr(self, f"block{stage}"):
                x, new_importance = block(x, height, width, importance)
                importance = new_importance
                if new_importance is not None and return_importance:
                    maps.append(new_importance.reshape(-1, height, width))
            x = getattr(self, f"norm{stage}")(x)
        return (x, maps) if return_importance else x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
    img_size: int = 224,
    checkpoint: Optional[str | Path] = None,
    num_classes: int = 1000,
    seed: int = 0,
    trust_pickle: bool = False,
    iam: str = "reference",
) -> SGFormer:
    """Build SG-Former ``variant`` ("s", "m", "b") for ``img_size`` in eval mode.

    With ``checkpoint`` the official weights (training checkpoint, bare state_dict, ``model``/``module.``
    layouts; EMA preferred) are loaded strictly. Without it the weights are deterministic random ones
    (``seed``), conditioned for parity tests (see ``condition_for_parity_``). ``iam`` selects the IAM merge of the
    significance blocks: "reference" (``pipeline.iam.reference``, the definition) or "fused" (the ``sgformer::iam`` op of
    ``pipeline.iam.torch_op``: the C++ host reference on CPU, the plugin's CUDA kernel on GPU); see ``SGFormer.set_iam``.
    """
    if iam not in IAM_IMPLS:
        raise ConfigError(f"iam={iam!r} is not an IAM implementation; expected one of {', '.join(IAM_IMPLS)}")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; expected one of {', '.join(v for v in VARIANTS)}")
    check_img_size(img_size)
    torch.manual_seed(seed)
    model = SGFormer(img_size=img_size, num_classes=num_classes, **VARIANTS[variant])
    if checkpoint is not None:

        load_weights(model, checkpoint, variant=variant, trust_pickle=trust_pickle)
    else:
        condition_for_parity_(model, seed)
        _logger.warning("variant %s: no checkpoint given, using random weights (seed %d, parity-conditioned)", variant, seed)
    return model.set_iam(iam).eval()
