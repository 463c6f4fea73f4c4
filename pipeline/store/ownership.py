"""Which weights an engine folder belongs to, so that no run replaces a folder made from other weights silently.

An engine folder holds the artifacts of one set of weights: a checkpoint (its sha256) or seeded random weights.
``.weights.json`` records them (with the checkpoint's path, so that a later run without ``CKPT`` can reuse it);
folders made before that record existed are read from their ``manifest.json``. :func:`resolve_weights` decides what
a run uses:

- the run names no weights (no checkpoint, no seed): the folder's own weights (its recorded checkpoint when that file
  is still there with the recorded sha256); an empty folder gets seeded random weights (seed 0);
- the run names the folder's weights: those;
- the run names other weights: a :class:`ConfigError` saying which weights the folder holds and how to replace them
  on purpose (``--replace``, make ``REPLACE=1``), unless ``replace`` is set.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional

from pipeline.core.artifact import WeightsRef
from pipeline.core.errors import ConfigError
from pipeline.core.hashing import sha256_file
from pipeline.store.io import write_json
from pipeline.store.manifest import MANIFEST_NAME

__all__ = ["OWNER_FILE", "FolderWeights", "read_owner", "write_owner", "resolve_weights", "same_weights"]

_logger = logging.getLogger("pipeline.store.ownership")

OWNER_FILE = ".weights.json"
REPLACE_HINT = "to replace them on purpose pass REPLACE=1 (--replace), or build into another folder (--out-dir)"


@dataclasses.dataclass(frozen=True)
class FolderWeights:
    """The weights of a run (or of a folder): the record, the checkpoint file when there is one, and the seed."""

    weights: WeightsRef
    checkpoint: Optional[Path] = None

    @property
    def seed(self) -> int:
        return int(self.weights.seed) if self.weights.is_random else 0


def same_weights(a: WeightsRef, b: WeightsRef) -> bool:
    """The same weights: equal seeds, or equal checkpoint sha256 (the file name may differ)."""
    if a.kind != b.kind:
        return False
    if a.kind == "random":
        return a.seed == b.seed
    if a.kind == "checkpoint" and a.sha256 and b.sha256:
        return a.sha256 == b.sha256
    return False


def read_owner(folder: Path) -> Optional[FolderWeights]:
    """The folder's weights: ``.weights.json``, else its manifest's ``weights``; None for a folder without either."""
    record = folder / OWNER_FILE
    if record.is_file():
        try:
            data = json.loads(record.read_text())
            path = data.get("checkpoint")
            return FolderWeights(WeightsRef.parse(data["weights"]), Path(path) if path else None)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            _logger.warning("%s is unreadable; reading the folder's weights from %s", record, MANIFEST_NAME)
    manifest = folder / MANIFEST_NAME
    if manifest.is_file():
        try:
            text = json.loads(manifest.read_text()).get("weights")
        except (OSError, ValueError, AttributeError):
            return None
        if text:
            return FolderWeights(WeightsRef.parse(text))
    return None


def write_owner(folder: Path, weights: FolderWeights) -> None:
    path = weights.checkpoint.resolve() if weights.checkpoint is not None else None
    write_json(folder / OWNER_FILE, {"weights": weights.weights.to_text(), "checkpoint": str(path) if path else None})


def _folder_checkpoint(folder: Path, owner: FolderWeights) -> Path:
    """The folder's recorded checkpoint file, if still there with the recorded sha256; else a ConfigError."""
    path = owner.checkpoint
    if path is not None and path.is_file() and owner.weights.sha256 and sha256_file(path) == owner.weights.sha256:
        _logger.info("%s: using its recorded checkpoint %s", folder, path)
        return path
    where = ("" if path is None else f" (recorded at {path}, which is " +
             ("changed" if path.is_file() else "gone") + ")")
    raise ConfigError(
        f"{folder} holds an engine of the checkpoint '{owner.weights.to_text()}'{where}; pass that file to verify or "
        f"reuse it (CKPT=<file>, --checkpoint), or {REPLACE_HINT}")


def resolve_weights(folder: Path, checkpoint: Optional[Path], seed: Optional[int], *,
                    replace: bool = False) -> FolderWeights:
    """The weights a run into ``folder`` uses (module docstring); never a silent replacement of the folder's."""
    if checkpoint is not None:
        requested: Optional[WeightsRef] = WeightsRef.from_checkpoint(checkpoint)
    else:
        requested = None if seed is None else WeightsRef.random(seed)
    owner = read_owner(folder)
    if requested is None:
        if owner is None or replace:
            return FolderWeights(WeightsRef.random(0))
        if owner.weights.is_random:
            return FolderWeights(owner.weights)
        if owner.weights.kind == "checkpoint":
            return FolderWeights(owner.weights, _folder_checkpoint(folder, owner))
        raise ConfigError(f"{folder} holds an engine of unknown weights ('{owner.weights.to_text()}'); {REPLACE_HINT}")
    if owner is not None and not same_weights(requested, owner.weights):
        if not replace:
            raise ConfigError(f"{folder} holds an engine of the weights '{owner.weights.to_text()}', not "
                              f"'{requested.to_text()}'; {REPLACE_HINT}")
        _logger.warning("%s: replacing the weights '%s' with '%s' (--replace)", folder, owner.weights.to_text(),
                        requested.to_text())
    return FolderWeights(requested, checkpoint)
