"""Importance-guided token aggregation (IAM) of SG-Former's significance-guided blocks.

This module is the PyTorch reference of the ``SGFormerIAM`` custom op (contract in
``plugins/sgformer_iam/README.md``). The model calls it, so the exported graph, the onnxruntime
CPU op, the C++ host reference and the CUDA kernel all implement this one function.

What it computes, per batch row:

1. Sort the importance map ascending. Ties are broken by the lower token index first (a stable
   sort). For the row-major sequence the index is ``h * W + w``; for the column-major sequence
   the map and the tokens are first relaid column-major (index ``w * H + h``) and then sorted,
   so ties there are broken by the lower column-major index.
2. Split the sorted order into tiers (lowest significance first). Tier ``t`` holds
   ``tier_sizes[t]`` consecutive sorted tokens, cut into groups of ``group_sizes[t]``
   consecutive tokens.
3. Merge each group into one token: ``out[c] = sum_j w_t[j] * tok[j][c] + b_t`` (the
   upstream ``f1/f2/f3`` Linear(k, 1) layers, shared over channels).
4. Concatenate the merged tokens of all tiers: ``T = sum_t tier_sizes[t] / group_sizes[t]``.

Both sequences are returned: ``seq_row`` from the row-major order and ``seq_col`` from the
column-major order. They hold the same tokens and differ only where importance values tie.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from pipeline.core.errors import ConfigError

__all__ = ["IamLayout", "iam_layout", "check_layout", "sort_importance", "iam_aggregate"]

#: Largest token grid height*width an op accepts (makeIamParams: indices and counts stay in int32 arithmetic).
MAX_TOKENS = 0x3FFFFFFF

#: Group sizes (the in_features of f1, f2, f3) per reduction ratio, fixed by the official weights.
GROUP_SIZES = {8: (196, 56, 28), 4: (49, 14, 7), 2: (2, 1)}


@dataclass(frozen=True)
class IamLayout:
    """Static shape of one IAM region: the token grid and how the sorted tokens are grouped."""

    height: int
    width: int
    group_sizes: tuple[int, ...]
    tier_sizes: tuple[int, ...]

    @property
    def num_tokens(self) -> int:
        return self.height * self.width

    @property
    def num_groups(self) -> tuple[int, ...]:
        return tuple(n // k for n, k in zip(self.tier_sizes, self.group_sizes))

    @property
    def out_tokens(self) -> int:
        """T, the length of each merged sequence."""
        return sum(self.num_groups)


def iam_layout(sr_ratio: int, height: int, width: int) -> IamLayout:
    """The tier layout SG-Former uses for reduction ratio ``sr_ratio`` on a ``height x width`` grid.

    Group counts follow the official formulas (e.g. sr 8: ``(N//196)//4, (N//56)//2, (N//28)//4``);
    they cover all N tokens exactly for every input size that is a multiple of 224.
    """
    if sr_ratio not in GROUP_SIZES:
        raise ConfigError(f"IAM: reduction ratio {sr_ratio} has no significance-guided layout; expected 8, 4 or 2")
    n = height * width
    ks = GROUP_SIZES[sr_ratio]
    if sr_ratio == 2:
        counts = ((n // 2) // 2, n // 2)
    else:
        counts = ((n // ks[0]) // 4, (n // ks[1]) // 2, (n // ks[2]) // 4)
    tiers = tuple(c * k for c, k in zip(counts, ks))
    if sum(tiers) != n or min(counts) < 1:
        raise ConfigError(
            f"IAM: a {height}x{width} token grid (N={n}) cannot be split into groups of {ks} at reduction ratio "
            f"{sr_ratio}; SG-Former needs input sizes that are multiples of 224"
        )
    return IamLayout(height=height, width=width, group_sizes=ks, tier_sizes=tiers)


def check_layout(height: int, width: int, group_sizes: Sequence[int], tier_sizes: Sequence[int], *,
                 who: str = "SGFormerIAM") -> IamLayout:
    """An op's layout attributes checked by the rules of ``makeIamParams`` (``sgformerIamMath.h``), in pure Python.

    For callers that must validate without loading a native library (the torch op's fake implementation under
    ``torch.compile``). Anything else can ask the library itself (``pipeline.iam.host.host_layout``);
    tests/plugins/test_iam_host_ref.py checks that both accept and refuse the same layouts. ``ConfigError`` names
    the attribute, prefixed with ``who``.
    """
    if height <= 0 or width <= 0:
        raise ConfigError(f"{who}: height={height} and width={width} must be positive")
    if height * width > MAX_TOKENS:
        raise ConfigError(f"{who}: height*width={height * width} exceeds the supported token count {MAX_TOKENS}")
    group_sizes, tier_sizes = tuple(int(k) for k in group_sizes), tuple(int(n) for n in tier_sizes)
    if len(group_sizes) != len(tier_sizes) or not 2 <= len(group_sizes) <= 3:
        raise ConfigError(f"{who}: group_sizes {list(group_sizes)} and tier_sizes {list(tier_sizes)} must "
                          f"both have 2 or 3 entries")
    for t, (k, n) in enumerate(zip(group_sizes, tier_sizes)):
        if k <= 0 or n <= 0 or n % k:
            raise ConfigError(f"{who}: tier_sizes[{t}]={n} must be a positive multiple of group_sizes[{t}]={k}")
    if sum(tier_sizes) != height * width:
        raise ConfigError(f"{who}: tier_sizes sum to {sum(tier_sizes)} but height*width is {height * width}")
    return IamLayout(height=int(height), width=int(width), group_sizes=group_sizes, tier_sizes=tier_sizes)


def sort_importance(importance: torch.Tensor) -> torch.Tensor:
    """Ascending sort indices of ``importance [B, N]`` with ties broken by the lower index first.

    Eager PyTorch uses a stable sort. The TorchScript ONNX exporter cannot export ``stable=True``,
    so while exporting the plain sort is traced: it becomes ``TopK(largest=0)``, and ONNX TopK
    is specified to put the lower index first among equal values, which is the same order.
    """
    if torch.onnx.is_in_onnx_export():
        return torch.sort(importance, dim=1).indices
    return torch.sort(importance, dim=1, stable=True).indices


def _to_column_major(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, H*W, ...] in row-major token order -> [B, W*H, ...] in column-major order."""
    b = x.shape[0]
    rest = x.shape[2:]
    return x.reshape(b, height, width, *rest).transpose(1, 2).reshape(b, height * width, *rest)


def _merge(
    tokens: torch.Tensor,
    order: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    layout: IamLayout,
) -> torch.Tensor:
    b, _, c = tokens.shape
    merged = []
    start = 0
    for k, n, w, bias in zip(layout.group_sizes, layout.tier_sizes, weights, biases):
        idx = order[:, start : start + n]
        start += n
        picked = torch.gather(tokens, 1, idx.unsqueeze(-1).expand(-1, -1, c))  # [B, n, C]
        groups = picked.reshape(b, n // k, k, c).transpose(2, 3)  # [B, groups, C, k]
        merged.append(F.linear(groups, w.reshape(1, k), bias.reshape(1)).squeeze(-1))  # [B, groups, C]
    return torch.cat(merged, dim=1)  # [B, T, C]


def iam_aggregate(
    tokens: torch.Tensor,
    importance: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    layout: IamLayout,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference IAM: ``tokens [B, N, C]``, ``importance [B, N]`` (row-major) -> ``(seq_row, seq_col)``, each [B, T, C].

    ``weights[t]`` has ``group_sizes[t]`` elements (any shape, e.g. the [1, k] Linear weight) and
    ``biases[t]`` one element.
    """
    seq_row = _merge(tokens, sort_importance(importance), weights, biases, layout)
    tokens_col = _to_column_major(tokens, layout.height, layout.width)
    importance_col = _to_column_major(importance, layout.height, layout.width)
    seq_col = _merge(tokens_col, sort_importance(importance_col), weights, biases, layout)
    return seq_row, seq_col
