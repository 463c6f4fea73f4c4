"""SG-Former's building blocks, from small parts to the block (the network itself: ``pipeline.model.sgformer``).

Shapes: tokens are ``[B, H*W, C]`` in row-major order; every module that needs the 2-D layout takes the grid's
``height`` and ``width`` (which differ for non-square inputs). See ``pipeline.model.sgformer`` for the parts.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.core.errors import ConfigError
from pipeline.iam.reference import IamLayout, iam_aggregate
from pipeline.iam.torch_op import iam_fused

__all__ = ["WINDOW_SIZE", "ConvNorm", "Stem", "PatchMerging", "Mlp", "HybridScaleAttention", "SignificanceAttention",
           "GlobalAttention", "Block", "to_tokens", "to_image"]

WINDOW_SIZE = 7  # local-attention window of the hybrid-scale blocks (fixed upstream)


class ConvNorm(nn.Module):
    """Conv2d (no bias) + GroupNorm(1, C) (upstream calls the norm ``bn``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.GroupNorm(1, out_chs, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.c(x))


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C], row-major tokens."""
    return x.flatten(2).transpose(1, 2)


def to_image(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
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
        return self.norm(to_tokens(x)), height, width


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
        return to_tokens(x), height, width


class DWConv(nn.Module):
    """Depthwise 3x3 conv with bias over tokens."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=True)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return to_tokens(self.dwconv(to_image(x, height, width)))


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
        return to_tokens(self.lepe_conv(to_image(self.lepe_linear(x), height, width)))

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
        reduced = to_tokens(self.sr(to_image(x, height, width)))  # [B, HW/sr^2, C]
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
