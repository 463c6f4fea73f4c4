"""sha256 of files and bytes: the one digest every record, manifest and reuse key uses."""
from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["sha256_file", "sha256_bytes"]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
