"""Read a merge from what it computes: group sizes, weights and biases of the tiers, by probing.

``read_merge(run, perm, tiers, channels)`` is given ``run(X)``: the candidate merged sequence computed by the graph's
own nodes from gathered-token data ``X [B, N, C]`` (with the sort order fixed to ``perm``). The merge of SG-Former
is affine and shared over channels, so each channel can probe one sorted position at a time:

1. ``run(0)`` gives the biases (one value per output token);
2. a one at sorted position ``p`` in channel ``c`` shows which output token ``p`` feeds and with which weight;
   each tier is probed from its start until a position feeds the next output token: that gives ``k`` and the
   weights of the first group, and the tiers must follow each other in sort order;
3. every output token of a tier must carry the same scalar bias;
4. finally a random ``X`` is run and compared with the merge rebuilt from what was read: this checks every
   other group (same ``k``, same weights, consecutive sorted tokens) and that channels are not mixed.

Anything else (a channel mix, another grouping, tiers in another order) raises ``MergeMismatch``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = ["Merge", "MergeMismatch", "read_merge"]

#: Relative tolerance of the final check: the graph's float32 constants are applied in float64 on both sides,
#: so only summation order differs (measured < 1e-12 relative); 1e-7 leaves room without hiding a wrong weight.
_RTOL = 1e-7


class MergeMismatch(Exception):
    """The candidate tensor is not SG-Former's merged sequence (the message says which assumption failed)."""


@dataclass(frozen=True)
class Merge:
    group_sizes: tuple[int, ...]
    tier_sizes: tuple[int, ...]
    weights: tuple[np.ndarray, ...]
    biases: tuple[float, ...]


def _probe(run, perm: np.ndarray, positions: np.ndarray, c: int, y0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One run: channel i holds a one at sorted position ``positions[i]``; returns (merged token, weight) per position."""
    batch, n = perm.shape
    count = len(positions)
    x = np.zeros((batch, n, c), np.float64)
    chans = np.arange(count)
    for b in range(batch):
        x[b, perm[b, positions], chans] = 1.0
    d = run(x) - y0  # [B, M, C]
    if d.shape != y0.shape:
        raise MergeMismatch(f"changes shape with its input ({list(d.shape)} vs {list(y0.shape)})")
    hit = d[:, :, :count] != 0
    counts = hit.sum(axis=1)  # [B, count]
    where = hit.argmax(axis=1)  # [B, count]
    bad = (counts != 1).any(axis=0) | (where != where[:1]).any(axis=0)
    if bad.any():
        ch = int(np.flatnonzero(bad)[0])
        raise MergeMismatch(
            f"sorted position {positions[ch]} reaches {sorted(set(counts[:, ch].tolist()))} merged tokens in its "
            f"channel, expected exactly one (a merge shared over channels, one weight per position)"
        )
    values = np.take_along_axis(d[:, :, :count], where[:, None, :], axis=1)[:, 0, :]  # [B, count]
    if not np.allclose(values, values[:1], rtol=_RTOL, atol=0.0):
        raise MergeMismatch("weighs one sorted position differently per batch row")
    return where[0], values[0]


def _first_groups(run, perm, tiers, c: int, y0: np.ndarray) -> list[tuple[int, np.ndarray, int]]:
    """Per tier: (first merged token, weights of its first group, k), probing from the tier start to the first
    position that feeds another merged token (channels are shared among the tiers still open)."""
    seen: list[list[tuple[int, float]]] = [[] for _ in tiers]
    done: list[bool] = [False] * len(tiers)
    while not all(done):
        open_tiers = [t for t in range(len(tiers)) if not done[t]]
        share = max(1, c // len(open_tiers))
        plan = []
        for t in open_tiers[:c]:
            start, size = tiers[t]
            first = start + len(seen[t])
            plan += [(t, p) for p in range(first, min(first + share, start + size))]
        groups, weights = _probe(run, perm, np.array([p for _, p in plan]), c, y0)
        for (t, _), g, w in zip(plan, groups, weights):
            if not done[t]:
                seen[t].append((int(g), float(w)))
                done[t] = seen[t][-1][0] != seen[t][0][0] or len(seen[t]) == tiers[t][1]
    out = []
    for t, obs in enumerate(seen):
        g0 = obs[0][0]
        k = next((i for i, (g, _) in enumerate(obs) if g != g0), len(obs))
        if k < len(obs) and obs[k][0] != g0 + 1:
            raise MergeMismatch(f"tier {t + 1} sends sorted position {tiers[t][0] + k} to merged token {obs[k][0]}, "
                                f"expected {g0 + 1} (groups of consecutive sorted tokens)")
        out.append((g0, np.array([w for _, w in obs[:k]]), k))
    return out


def read_merge(run: Callable[[np.ndarray], np.ndarray], perm: np.ndarray, tiers: Sequence[tuple[int, int]],
               channels: int) -> Merge:
    """Group sizes, weights and biases of the merge ``run`` computes (see the module doc)."""
    batch, n = perm.shape
    y0 = run(np.zeros((batch, n, channels), np.float64))
    if y0.ndim != 3 or y0.shape[0] != batch or y0.shape[2] != channels or y0.shape[1] >= n:
        raise MergeMismatch(f"has shape {list(y0.shape)}, expected [B, T, C] with T < {n}")
    sizes, ks, weights, biases = [], [], [], []
    offset = 0
    for t, ((start, size), (g0, w, k)) in enumerate(zip(tiers, _first_groups(run, perm, tiers, channels, y0))):
        if g0 != offset:
            raise MergeMismatch(f"tier {t + 1} starts at merged token {g0}, expected {offset} (tiers in sort order)")
        if size % k:
            raise MergeMismatch(f"tier {t + 1} of {size} tokens is not a multiple of its group size {k}")
        bias = y0[:, offset:offset + size // k, :]
        if not np.allclose(bias, bias.flat[0], rtol=_RTOL, atol=1e-12):
            raise MergeMismatch(f"tier {t + 1} adds a bias that is not one scalar")
        sizes.append(size)
        ks.append(k)
        weights.append(w.astype(np.float32))
        biases.append(float(bias.flat[0]))
        offset += size // k
    if offset != y0.shape[1]:
        raise MergeMismatch(f"has {y0.shape[1]} tokens, but the tiers merge into {offset}")
    merge = Merge(tuple(ks), tuple(sizes), tuple(weights), tuple(biases))
    _final_check(run, perm, tiers, merge, channels)
    return merge


def _final_check(run, perm, tiers, merge: Merge, channels: int) -> None:
    batch, n = perm.shape
    x = np.random.default_rng(7).standard_normal((batch, n, channels))
    got = run(x)
    sorted_x = np.take_along_axis(x, perm[:, :, None], axis=1)
    parts = []
    for (start, size), k, w, b in zip(tiers, merge.group_sizes, merge.weights, merge.biases):
        groups = sorted_x[:, start:start + size].reshape(batch, size // k, k, channels)
        parts.append(np.einsum("bgkc,k->bgc", groups, w.astype(np.float64)) + b)
    want = np.concatenate(parts, axis=1)
    if got.shape != want.shape or not np.allclose(got, want, rtol=_RTOL, atol=1e-9):
        raise MergeMismatch("does not equal the merge read from it on random tokens (not affine per group)")
