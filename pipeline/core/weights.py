"""Where an artifact's weights came from: ``WeightsRef`` (a checkpoint file, seeded random init, or unknown).

Part of the artifact record (``pipeline.core.artifact.ArtifactInfo``), kept in its own module; import it from
either place.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Optional

from pipeline.core.errors import ConfigError
from pipeline.core.hashing import sha256_file

__all__ = ["WeightsRef", "WeightsMismatchError"]


class WeightsMismatchError(ConfigError):
    """A checkpoint given to verify/evaluate is not the one the artifact was made from."""


_HEX64 = r"[0-9a-fA-F]{64}"


@dataclasses.dataclass(frozen=True)
class WeightsRef:
    """Where the weights came from: a checkpoint file (name + sha256), seeded random init, or unknown.

    One serialization (:meth:`to_text`): ``"<file name> sha256:<hex>"``, ``"random-init, seed N"`` or ``"unknown"``.
    :meth:`parse` also reads every form the project has written before: ``"checkpoint sha256 <hex>"`` (the
    documented manifest form), a bare file name (bench), and the ``--weights`` free text of ``build``.
    """

    kind: str  # "checkpoint" | "random" | "unknown"
    name: Optional[str] = None
    sha256: Optional[str] = None
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        if self.kind not in ("checkpoint", "random", "unknown"):
            raise ConfigError(f"weights kind {self.kind!r}: expected checkpoint, random or unknown")
        if self.kind == "random" and self.seed is None:
            raise ConfigError("random weights need a seed")
        if self.sha256 is not None:
            if not re.fullmatch(_HEX64, self.sha256):
                raise ConfigError(f"weights sha256 {self.sha256!r} is not 64 hex digits")
            object.__setattr__(self, "sha256", self.sha256.lower())

    # ---------------------------------------------------------------- constructors

    @classmethod
    def random(cls, seed: int) -> "WeightsRef":
        return cls("random", seed=int(seed))

    @classmethod
    def unknown(cls) -> "WeightsRef":
        return cls("unknown")

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> "WeightsRef":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"checkpoint {path} does not exist (or is not a file); check the path")
        return cls("checkpoint", name=path.name, sha256=sha256_file(path))

    @classmethod
    def parse(cls, text: Optional[str]) -> "WeightsRef":
        """Read any weights record the project has written (see the class docstring); never raises on old text."""
        text = (text or "").strip()
        if not text or text.lower() in ("unknown", "unspecified", "none"):
            return cls.unknown()
        m = re.fullmatch(r"random[- ]init(?:ialized)?\s*[,(]?\s*seed[ =]?(\d+)\)?(?:,.*)?", text, flags=re.I)
        if m:
            return cls.random(int(m.group(1)))
        m = re.fullmatch(rf"checkpoint\s+sha256[: ]\s*({_HEX64})", text, flags=re.I)
        if m:
            return cls("checkpoint", sha256=m.group(1))
        m = re.fullmatch(rf"(.+?)\s+sha256[: ]\s*({_HEX64})", text, flags=re.I)
        if m:
            return cls("checkpoint", name=Path(m.group(1)).name, sha256=m.group(2))
        m = re.fullmatch(rf"sha256[: ]\s*({_HEX64})", text, flags=re.I)
        if m:
            return cls("checkpoint", sha256=m.group(1))
        return cls("checkpoint", name=Path(text).name)  # a bare checkpoint name (no hash recorded)

    # ---------------------------------------------------------------- use

    def to_text(self) -> str:
        if self.kind == "random":
            return f"random-init, seed {self.seed}"
        if self.kind == "unknown":
            return "unknown"
        if self.sha256 is None:
            return str(self.name)
        return f"{self.name or 'checkpoint'} sha256:{self.sha256}"

    __str__ = to_text

    @property
    def is_random(self) -> bool:
        return self.kind == "random"

    def check_checkpoint(self, checkpoint: Optional[str | Path]) -> bool:
        """Is ``checkpoint`` (None: random weights) the source of these weights? Raises :class:`WeightsMismatchError`.

        Returns False when the record cannot prove it either way (unknown weights, or a bare name whose file
        name matches but whose hash was never recorded); True when the sha256 (or seed) was checked.
        """
        if checkpoint is None:
            if self.kind == "checkpoint":
                raise WeightsMismatchError(
                    f"the artifact was made from the checkpoint '{self.to_text()}'; pass that file "
                    f"(--checkpoint, make: CKPT=) to rebuild its PyTorch reference"
                )
            return self.kind == "random"
        if self.kind == "random":
            raise WeightsMismatchError(
                f"the artifact was made from random weights ('{self.to_text()}'); check it without --checkpoint / CKPT"
            )
        if self.kind == "unknown":
            return False
        if self.sha256 is not None:
            found = sha256_file(checkpoint)
            if found != self.sha256:
                raise WeightsMismatchError(
                    f"{checkpoint} (sha256 {found[:12]}...) is not the checkpoint the artifact was made from "
                    f"('{self.to_text()}'); pass that file"
                )
            return True
        if self.name and Path(checkpoint).name != self.name:
            raise WeightsMismatchError(
                f"{checkpoint} is not the checkpoint the artifact was made from ('{self.name}', no sha256 recorded); "
                f"pass that file"
            )
        return False
