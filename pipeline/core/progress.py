"""Progress wording shared by long loops (sensitivity, bench): "ETA 3 min 20 s" from the mean time per item."""
from __future__ import annotations

__all__ = ["eta_text"]


def eta_text(elapsed: float, done: int, total: int) -> str:
    """"ETA 3 min 20 s" from the mean time per finished item (for items that cost about the same)."""
    left = round(elapsed / max(done, 1) * (total - done))
    return "done" if done >= total else f"ETA {left // 60} min {left % 60} s" if left >= 60 else f"ETA {left} s"
