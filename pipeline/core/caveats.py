"""The one wording of the random-weights caveat, for every output that shows a prediction or a picture.

Without an official checkpoint the network has seeded random weights: the pipeline (export, plugin, engine,
parity) is exercised end to end, but its class scores and importance maps mean nothing. ``run``, ``evaluate``,
``explain`` (on the image itself), the package READMEs, ``make engine`` and the Python runners' results say so.
"""
from __future__ import annotations

from typing import Optional

__all__ = ["CHECKPOINT_SOURCE", "RANDOM_WEIGHTS", "random_weights_caveat", "is_random_weights_text"]

#: Where the official SG-Former checkpoints come from (the upstream README's release links).
CHECKPOINT_SOURCE = ("the official SG-Former ImageNet-1k checkpoints linked from the README of "
                     "github.com/OliverRensu/SG-Former")
RANDOM_WEIGHTS = ("RANDOM WEIGHTS (no checkpoint): predictions and maps are meaningless; get a checkpoint from "
                  f"{CHECKPOINT_SOURCE} and rebuild with make engine CKPT=path/to/sgformer_s.pth")


def is_random_weights_text(weights: Optional[str]) -> bool:
    """True for the record text of seeded random weights ("random-init, seed N")."""
    return bool(weights) and str(weights).startswith("random-init")


def random_weights_caveat(weights: Optional[str]) -> Optional[str]:
    """The caveat line for a weights record text, or None for a checkpoint (or unknown weights)."""
    return RANDOM_WEIGHTS if is_random_weights_text(weights) else None
