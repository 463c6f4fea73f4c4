"""An independent SG-Former, written from the seed article's formulation: a "foreign" model for the rewrite tests.

Why it exists: users arrive with SG-Former exported from *their* code, not from ``pipeline.model``. This module
follows the seed article (/work/shared/seeds, the formulation of the official code) and spells the significance
block the way that code does, deliberately unlike ``pipeline.model.sgformer``:

- ``torch.sort`` of both importance maps (mask_1 row-major ``view``, mask_2 from ``permute(0, 2, 1)``);
- one ``torch.gather(x, 1, idx[:, a:b].unsqueeze(-1).repeat(1, 1, C))`` per tier, with the tier bounds and the
  group counts computed from ``H * W`` at run time;
- the merge as ``Linear(k, 1)`` on ``p.permute(0, 2, 1).reshape(B, C, T, k)``, concatenated on the last axis and
  permuted back to ``[B, T, C]``;
- the column-major tokens from ``x.view(B, H, W, C).permute(0, 2, 1, 3).reshape(B, H * W, C)``.

Parameter names equal the official ones (and so ``pipeline.model``'s), so ``load_state_dict`` takes a
``pipeline.model.create_model(...).state_dict()`` strictly; the tests use that as a fidelity check of both
implementations. ``img_size`` may be an int or an ``(H, W)`` pair (each a multiple of 224 for the stock layouts).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.core.variants import SR_RATIOS, VARIANTS

__all__ = ["SeedSGFormer", "create_seed_model", "SeedDetector", "create_seed_detector"]


class _ConvUnit(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.GroupNorm(1, cout)

    def forward(self, x):
        return self.bn(self.c(x))


class Head(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_ConvUnit(3, dim, 3, 2), nn.GELU(), _ConvUnit(dim, dim, 3, 1), nn.GELU(),
                                  _ConvUnit(dim, dim, 3, 2))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.conv(x)
        _, _, H, W = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), H, W


class PatchMerging(nn.Module):
    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv1 = _ConvUnit(dim, out_dim, 1)
        self.conv2 = _ConvUnit(out_dim, out_dim, 3, 2, groups=out_dim)
        self.conv3 = _ConvUnit(out_dim, out_dim, 1)
        self.act = nn.GELU()

    def forward(self, x):
        x = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        _, _, H, W = x.shape
        return x.flatten(2).transpose(1, 2), H, W


class _DW(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x, H, W):
        B, N, C = x.shape
        return self.dwconv(x.transpose(1, 2).view(B, C, H, W)).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = _DW(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, H, W):
        x = self.fc1(x)
        return self.fc2(self.act(x + self.dwconv(x, H, W)))


def _windows(t, ws, H, W):
    """[B, heads, N, d] -> [B*heads*nW, ws*ws, d] (windows row-major, tokens row-major inside)."""
    B, h, N, d = t.shape
    t = t.reshape(B * h, H // ws, ws, W // ws, ws, d).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(-1, ws * ws, d)


def _unwindows(t, ws, H, W, heads):
    """[B*heads*nW, ws*ws, d] -> [B, N, heads*d]."""
    d = t.shape[-1]
    t = t.view(-1, heads, H // ws, W // ws, ws, ws, d).permute(0, 2, 4, 3, 5, 1, 6)
    return t.reshape(-1, H * W, heads * d)


class Attention(nn.Module):
    """All three attention kinds of the article in one class (``mask`` picks the significance-guided one)."""

    def __init__(self, dim: int, mask: bool, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.num_heads, self.sr_ratio, self.scale = num_heads, sr_ratio, (dim // num_heads) ** -0.5
        if sr_ratio > 1 and mask:
            self.q, self.kv1, self.kv2 = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
            sizes = {8: (196, 56, 28), 4: (49, 14, 7), 2: (2, 1)}[sr_ratio]
            for i, k in enumerate(sizes, start=1):
                setattr(self, f"f{i}", nn.Linear(k, 1))
        elif sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)
            self.act = nn.GELU()
            self.q1, self.kv1 = nn.Linear(dim, dim // 2), nn.Linear(dim, dim)
            self.q2, self.kv2 = nn.Linear(dim, dim // 2), nn.Linear(dim, dim)
        else:
            self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, dim * 2)
        self.lepe_linear = nn.Linear(dim, dim)
        self.lepe_conv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.proj = nn.Linear(dim, dim)

    def _softmax_attend(self, q, k, v):
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return attn @ v, attn

    def _hybrid(self, x, H, W):
        B, N, C = x.shape
        h2, d = self.num_heads // 2, C // self.num_heads
        q1 = self.q1(x).reshape(B, N, h2, d).permute(0, 2, 1, 3)
        x_ = x.permute(0, 2, 1).reshape(B, C, H, W)
        x1_ = self.act(self.norm(self.sr(x_).reshape(B, C, -1).permute(0, 2, 1)))
        kv1 = self.kv1(x1_).reshape(B, -1, 2, h2, d).permute(2, 0, 3, 1, 4)
        x1, attn1 = self._softmax_attend(q1, kv1[0], kv1[1])
        x1 = x1.transpose(1, 2).reshape(B, N, C // 2)
        g = attn1.detach().mean(1).mean(1).view(B, 1, H // self.sr_ratio, W // self.sr_ratio)
        global_mask = F.interpolate(g, (H, W), mode="nearest")[:, 0]
        q2 = self.q2(x).reshape(B, N, h2, d).permute(0, 2, 1, 3)
        kv2 = self.kv2(x).reshape(B, -1, 2, h2, d).permute(2, 0, 3, 1, 4)
        q2, k2, v2 = (_windows(t, 7, H, W) for t in (q2, kv2[0], kv2[1]))
        x2, attn2 = self._softmax_attend(q2, k2, v2)
        x2 = _unwindows(x2, 7, H, W, h2)
        nw = (H // 7) * (W // 7)
        local = attn2.detach().view(B, h2, nw, 49, 49).mean(1).mean(2)  # [B, nW, 49]: per key token
        local = local.view(B, H // 7, W // 7, 7, 7).permute(0, 1, 3, 2, 4).reshape(B, H, W)
        mask = local + global_mask  # [B, H, W]
        return torch.cat([x1, x2], dim=-1), [mask.view(B, H * W), mask.permute(0, 2, 1).reshape(B, H * W)]

    def _merge(self, x, idx, C, B, bounds, counts):
        parts = []
        for i, ((a, b), t) in enumerate(zip(bounds, counts), start=1):
            p = torch.gather(x, 1, idx[:, a:b].unsqueeze(-1).repeat(1, 1, C))
            parts.append(getattr(self, f"f{i}")(p.permute(0, 2, 1).reshape(B, C, t, -1)).squeeze(-1))
        return torch.cat(parts, dim=-1).permute(0, 2, 1)

    def _significance(self, x, H, W, mask):
        B, N, C = x.shape
        mask_1, mask_2 = mask
        _, index1 = torch.sort(mask_1, dim=1)
        _, index2 = torch.sort(mask_2, dim=1)
        n = H * W
        if self.sr_ratio == 2:
            counts = ((n // 2) // 2, n // 2)
            bounds = ((0, n // 2), (n // 2, n))
        else:
            k1, k2, k3 = (196, 56, 28) if self.sr_ratio == 8 else (49, 14, 7)
            counts = ((n // k1) // 4, (n // k2) // 2, (n // k3) // 4)
            bounds = ((0, n // 4), (n // 4, n // 4 * 3), (n // 4 * 3, n))
        seq1 = self._merge(x, index1, C, B, bounds, counts)
        x_ = x.view(B, H, W, C).permute(0, 2, 1, 3).reshape(B, H * W, C)
        seq2 = self._merge(x_, index2, C, B, bounds, counts)
        h2, d = self.num_heads // 2, C // self.num_heads
        kv1 = self.kv1(seq1).reshape(B, -1, 2, h2, d).permute(2, 0, 3, 1, 4)
        kv2 = self.kv2(seq2).reshape(B, -1, 2, h2, d).permute(2, 0, 3, 1, 4)
        kv = torch.cat([kv1, kv2], dim=2)
        q = self.q(x).reshape(B, N, self.num_heads, d).permute(0, 2, 1, 3)
        out, _ = self._softmax_attend(q, kv[0], kv[1])
        return out.transpose(1, 2).reshape(B, N, C)

    def forward(self, x, H, W, mask):
        B, N, C = x.shape
        lepe = self.lepe_conv(self.lepe_linear(x).transpose(1, 2).reshape(B, C, H, W)).view(B, C, -1).transpose(1, 2)
        new_mask = None
        if self.sr_ratio > 1 and mask is None:
            x, new_mask = self._hybrid(x, H, W)
        elif self.sr_ratio > 1:
            x = self._significance(x, H, W, mask)
        else:
            d = C // self.num_heads
            q = self.q(x).reshape(B, N, self.num_heads, d).permute(0, 2, 1, 3)
            kv = self.kv(x).reshape(B, -1, 2, self.num_heads, d).permute(2, 0, 3, 1, 4)
            x, _ = self._softmax_attend(q, kv[0], kv[1])
            x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x + lepe), new_mask


class Block(nn.Module):
    def __init__(self, dim: int, mask: bool, num_heads: int, sr_ratio: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, mask, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, H, W, mask):
        y, mask = self.attn(self.norm1(x), H, W, mask)
        x = x + y
        return x + self.mlp(self.norm2(x), H, W), mask


class SeedSGFormer(nn.Module):
    """Classifier (``num_classes > 0``) or backbone (``features=True``: the four stage maps [B, C_i, H_i, W_i])."""

    def __init__(self, img_size: int | tuple[int, int], embed_dims: Sequence[int], num_heads: Sequence[int],
                 depths: Sequence[int], num_classes: int = 1000, features: bool = False) -> None:
        super().__init__()
        ih, iw = (img_size, img_size) if isinstance(img_size, int) else img_size
        self.features = features
        self.pos_embed = nn.Parameter(torch.zeros(1, (ih // 4) * (iw // 4), embed_dims[0]))
        for i in range(4):
            emb = Head(embed_dims[0]) if i == 0 else PatchMerging(embed_dims[i - 1], embed_dims[i])
            setattr(self, f"patch_embed{i + 1}", emb)
            setattr(self, f"block{i + 1}", nn.ModuleList(
                Block(embed_dims[i], j % 2 == 1 and i < 3, num_heads[i], SR_RATIOS[i]) for j in range(depths[i])))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i], eps=1e-6))
        self.head = nn.Linear(embed_dims[3], num_classes) if num_classes > 0 and not features else nn.Identity()

    def forward(self, x):
        B = x.shape[0]
        maps = []
        mask = None
        for i in range(4):
            x, H, W = getattr(self, f"patch_embed{i + 1}")(x)
            if i == 0:
                x = x + self.pos_embed
            for blk in getattr(self, f"block{i + 1}"):
                x, mask = blk(x, H, W, mask)
            x = getattr(self, f"norm{i + 1}")(x)
            if i != 3 or self.features:
                x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
                maps.append(x)
        if self.features:
            return tuple(maps)
        return self.head(x.mean(dim=1))


def _condition_(model: nn.Module, seed: int) -> None:
    """Seeded weights that spread the importance map (q/kv doubled, bias noise) and distinct merge weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
            leaf = name.split(".")
            if len(leaf) >= 2 and leaf[-2] in ("q", "q1", "q2", "kv", "kv1", "kv2") and leaf[-1] == "weight":
                p.mul_(2.0)
            if len(leaf) >= 2 and leaf[-2] in ("f1", "f2", "f3") and leaf[-1] == "weight":
                k = p.shape[-1]
                p.copy_((0.5 + torch.rand(p.shape, generator=gen)) / k)


def create_seed_model(variant: str = "s", img_size: int | tuple[int, int] = 224, num_classes: int = 1000, *,
                      features: bool = False, seed: int = 0, state_dict: Optional[dict] = None) -> SeedSGFormer:
    """Build the foreign SG-Former ``variant`` (a name of ``pipeline.core.variants.VARIANTS``) in eval mode.

    Weights: ``state_dict`` (official / ``pipeline.model`` keys, loaded strictly), else seeded random ones.
    """
    arch = VARIANTS[variant]
    torch.manual_seed(seed)
    model = SeedSGFormer(img_size, arch["embed_dims"], arch["num_heads"], arch["depths"], num_classes, features)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=not features)
    else:
        _condition_(model, seed)
    return model.eval()


class SeedDetector(nn.Module):
    """Detector-shaped wrapper: backbone -> four stage maps -> FPN-like neck -> class and box heads (two outputs)."""

    def __init__(self, backbone: SeedSGFormer, dims: Sequence[int], width: int = 32, classes: int = 5) -> None:
        super().__init__()
        self.backbone = backbone
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in dims)
        self.smooth = nn.Conv2d(width, width, 3, padding=1)
        self.cls_head = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, classes, 1))
        self.box_head = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 4, 1))

    def forward(self, x):
        x = x * 0.5 + 0.1  # some preprocessing in the graph before the backbone
        feats = self.backbone(x)
        p = self.lateral[3](feats[3])
        for level in (2, 1):
            p = self.lateral[level](feats[level]) + F.interpolate(p, scale_factor=2.0, mode="nearest")
        p = self.smooth(p)
        return self.cls_head(p).sigmoid(), self.box_head(p).flatten(2).transpose(1, 2)


def create_seed_detector(variant: str = "tiny-test", img_size: int | tuple[int, int] = 224, *, seed: int = 0,
                         state_dict: Optional[dict] = None) -> SeedDetector:
    backbone = create_seed_model(variant, img_size, features=True, seed=seed, state_dict=state_dict)
    torch.manual_seed(seed + 7)
    detector = SeedDetector(backbone, VARIANTS[variant]["embed_dims"])
    return detector.eval()


if __name__ == "__main__":  # pragma: no cover - manual smoke run
    m = create_seed_model("tiny-test")
    print(m(torch.randn(1, 3, 224, 224)).shape, math.prod((1, 2)))
