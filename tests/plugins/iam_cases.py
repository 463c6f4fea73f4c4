"""Shapes and inputs shared by the SGFormerIAM plugin tests (imported by path-qualified name)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.iam.reference import IamLayout, iam_layout
from pipeline.model.sgformer import VARIANTS

#: Reduction ratio of the significance-guided blocks of stages 1-3 (stage 4 has none).
SR_RATIOS = (8, 4, 2)
RESOLUTIONS = (224, 448)


@dataclass(frozen=True)
class IamCase:
    variant: str
    stage: int  # 1..3
    resolution: int
    channels: int
    layout: IamLayout

    @property
    def id(self) -> str:
        return f"{self.variant}-stage{self.stage}-{self.resolution}-C{self.channels}-N{self.layout.num_tokens}"


def all_cases() -> list[IamCase]:
    """Every (variant, stage, resolution) the model produces, from the variant registry."""
    cases = []
    for variant, args in VARIANTS.items():
        for stage, sr in enumerate(SR_RATIOS, start=1):
            for res in RESOLUTIONS:
                grid = res // 4 // 2 ** (stage - 1)
                cases.append(IamCase(variant, stage, res, int(args["embed_dims"][stage - 1]),
                                     iam_layout(sr, grid, grid)))
    return cases


def layout_cases() -> list[IamCase]:
    """One case per distinct (layout), channels irrelevant (order tests)."""
    seen, out = set(), []
    for case in all_cases():
        key = (case.layout.height, case.layout.group_sizes)
        if key not in seen:
            seen.add(key)
            out.append(case)
    return out


def importance_map(kind: str, batch: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Importance maps with many ties ("few_values", "all_equal", "signed_zeros") or none ("distinct")."""
    if kind == "few_values":
        return (rng.integers(0, 6, size=(batch, n)) / 8.0).astype(np.float32)
    if kind == "all_equal":
        return np.full((batch, n), 0.0408, dtype=np.float32)
    if kind == "signed_zeros":
        return rng.choice(np.array([0.0, -0.0, 0.5], dtype=np.float32), size=(batch, n))
    if kind == "distinct":
        return rng.permutation(np.arange(batch * n, dtype=np.float32)).reshape(batch, n) / (batch * n)
    raise ValueError(kind)


def random_merge_params(layout: IamLayout, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Linear(k, 1)-style weights U(-1/sqrt(k), 1/sqrt(k)) and biases per tier."""
    weights, biases = [], []
    for k in layout.group_sizes:
        bound = 1.0 / np.sqrt(k)
        weights.append(rng.uniform(-bound, bound, size=k).astype(np.float32))
        biases.append(rng.uniform(-bound, bound, size=1).astype(np.float32))
    return weights, biases


def order_probe_tokens(batch: int, n: int) -> np.ndarray:
    """[B, N, 4] tokens whose channels are the base-16 digits of the token index (all < 16).

    With weights w_j = j + 1 every group sum is an integer below 2^24, exact in fp32 in any summation
    order, so torch and the host reference must agree bit for bit -- and a swap of two tokens at group
    positions j1 != j2 changes the channel of a differing digit by (j1 - j2) * (digit difference) != 0.
    """
    index = np.arange(n, dtype=np.int64)
    digits = np.stack([(index >> (4 * d)) & 15 for d in range(4)], axis=-1).astype(np.float32)
    assert n < 16 ** 4
    return np.broadcast_to(digits, (batch, n, 4)).copy()


def report_mismatch(got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> str:
    """Max abs/rel error, where it occurred, and the tolerance that would have passed."""
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    err = np.abs(got64 - want64)
    where = np.unravel_index(int(np.argmax(err)), err.shape)
    rel = err / np.maximum(np.abs(want64), 1e-30)
    needed_atol = float(np.max(err - rtol * np.abs(want64)))
    return (f"max abs err {err.max():.3e} at {tuple(int(i) for i in where)} (got {got64[where]!r}, want "
            f"{want64[where]!r}); max rel err {rel.max():.3e}; tolerance atol={atol} rtol={rtol}; "
            f"atol needed with this rtol: {needed_atol:.3e}")
