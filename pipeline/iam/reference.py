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

from typing import Sequence

import torch
import torch.nn.functional as F

from pipeline.iam.layout import IamLayout, check_layout, iam_layout

__all__ = ["IamLayout", "iam_layout", "check_layout", "sort_importance", "iam_aggregate"]


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
