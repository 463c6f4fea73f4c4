"""The static shape of one IAM op, the one layout class of the project (Python, the host library, the tests).

:class:`IamLayout` is the token grid and how the sorted tokens are grouped; :func:`iam_layout` builds SG-Former's
layout for a reduction ratio; :func:`check_layout` validates an op's layout attributes by the rules of
``makeIamParams`` (``plugins/sgformer_iam/sgformerIamMath.h``). Imports only the standard library and
``pipeline.core.errors`` (no torch, no numpy), so the kernel tests' subprocesses can use it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from pipeline.core.errors import ConfigError

__all__ = ["IamLayout", "iam_layout", "check_layout", "GROUP_SIZES", "MAX_TOKENS"]

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
